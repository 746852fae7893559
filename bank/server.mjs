// What every local provider in bank/ shares: the look of its pages (one stylesheet, a colour
// and a name per provider), HTML escaping, and starting and stopping its HTTP server.

/** Text made safe for HTML text and attribute values. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A provider's page: `body` inside the shared card, in the provider's `accent` colour on its
 * `background`, under its `brand` name (none for the local bank), with `css` added and the
 * style element carrying `nonce` when the page's CSP asks for one.
 */
export function providerPage({ title, body, brand, accent, background, width = 320, css = '', nonce }) {
  const nonceAttribute = nonce ? ` nonce="${nonce}"` : '';
  const brandLine = brand ? `<div class="brand">${escapeHtml(brand)}</div>` : '';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style${nonceAttribute}>body{font:16px system-ui,sans-serif;background:${background};margin:0;display:grid;place-items:center;min-height:100vh}
main{background:#fff;border-radius:12px;padding:28px 32px;width:${width}px;box-shadow:0 8px 30px #0004}
h1{font-size:20px;margin:0 0 4px}p{color:#555;margin:0 0 16px}label{display:block;margin:10px 0 4px;font-size:14px}
input,select{width:100%;box-sizing:border-box;padding:9px;border:1px solid #bbb;border-radius:6px}
button{margin-top:16px;padding:10px 14px;border:0;border-radius:6px;font-weight:600;cursor:pointer}
.allow{background:${accent};color:#fff}.deny{background:#eee;margin-left:8px}.error{color:#b00020}
.brand{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:${accent};margin-bottom:8px}
ul{padding-left:20px;color:#333}${css}</style></head><body><main>${brandLine}${body}</main></body></html>`;
}

/**
 * Starts `server` on `port` (all interfaces) and resolves once it listens, to a `close()` that
 * drops every open connection and stops it.
 */
export async function listen(server, port) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => { server.off('error', reject); resolve(); });
  });
  return () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); });
}

/** An array-like that records nothing: `push` is all a provider calls on its records. */
const DISCARD = Object.freeze({ push: () => 0 });

/**
 * A provider's records (`names`, each an array: what it issued, the requests it saw), kept
 * only when `on` (the test controls): a provider run for the demo holds no tokens, codes or
 * request bodies in memory.
 */
export function recording(on, names) {
  return Object.fromEntries(names.map((name) => [name, on ? [] : DISCARD]));
}

/** A request's body as text, or null once it is over `maxBytes` (reading stops there). */
export async function readBody(req, maxBytes) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > maxBytes) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
