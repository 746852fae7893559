// An account holder at a local provider (the bank, the FAPI hub, the TrueLayer, Moneyhub and
// Connect emulations), over plain HTTP: follows the authorization request through the
// provider's login and consent pages and stops at the way back to the client. Every
// provider's pages follow one convention: a form with a hidden `prompt` of `login`
// (`login`, `password`) or `consent` (buttons `name="decision"`, `allow` or `deny`). The
// flows name their bank (`provider_hint`), so no bank picker is met.

import { unescapeHtml } from './edge.mjs';
import { CookieJar } from './worker-harness.mjs';

/**
 * Walks `authorizationUrl` as `user` (password = username unless given), allowing or denying
 * consent. Resolves to
 * how the provider sends the browser back to the client, not yet sent:
 * `{ method: 'GET', url }` for a redirect, `{ method: 'POST', url, body }` for a `form_post`
 * page (its auto-submitting form, the body form-encoded).
 */
export async function answerAtProvider(authorizationUrl, { user, password = user, decision = 'allow', redirectPrefix }) {
  const jar = new CookieJar();
  let url = authorizationUrl;
  let form = null;
  for (let hop = 0; hop < 20; hop += 1) {
    const response = await fetch(url, {
      method: form ? 'POST' : 'GET',
      redirect: 'manual',
      headers: { cookie: jar.header(), ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      body: form ? new URLSearchParams(form).toString() : undefined,
    });
    jar.store(response);
    form = null;
    if (response.status >= 300 && response.status < 400) {
      const next = new URL(response.headers.get('location'), url).toString();
      if (redirectPrefix && next.startsWith(redirectPrefix)) return { method: 'GET', url: next };
      url = next;
      continue;
    }
    const html = await response.text();
    const posted = formPost(html, redirectPrefix);
    if (posted) return posted;
    if (html.includes('name="prompt" value="login"')) {
      form = { prompt: 'login', login: user, password };
    } else if (html.includes('name="prompt" value="consent"')) {
      form = { prompt: 'consent', decision };
    } else {
      throw new Error(`unexpected page at the provider (HTTP ${response.status})`);
    }
  }
  throw new Error('too many redirects at the provider');
}

/**
 * {@link answerAtProvider} for a provider that redirects back: resolves to the URL it
 * redirects to (the client's callback, not fetched).
 */
export async function consentAtBank(authorizationUrl, options) {
  const back = await answerAtProvider(authorizationUrl, options);
  if (back.method !== 'GET') throw new Error('the provider answered with a form_post page, not a redirect');
  return back.url;
}

/** The auto-submitting form of a `form_post` page (OAuth 2.0 Form Post Response Mode), if it posts to `redirectPrefix`. */
function formPost(html, redirectPrefix) {
  const form = /<form[^>]*method="post"[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/i.exec(html)
    ?? /<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) return null;
  const action = unescapeHtml(form[1]);
  if (!redirectPrefix || !action.startsWith(redirectPrefix)) return null;
  const fields = new URLSearchParams();
  for (const input of form[2].matchAll(/<input[^>]*>/gi)) {
    const name = /name="([^"]*)"/.exec(input[0]);
    const value = /value="([^"]*)"/.exec(input[0]);
    if (name && /type="hidden"/i.test(input[0])) fields.append(unescapeHtml(name[1]), unescapeHtml(value?.[1] ?? ''));
  }
  return { method: 'POST', url: action, body: fields.toString() };
}
