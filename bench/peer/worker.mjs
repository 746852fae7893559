// The benchmark's peer: a JavaScript Worker that does the work consentry's Worker does for
// the local bank, on oauth4webapi, so `scripts/bench` can race the two under the same
// wrangler dev against the same bank. Not a product and not a test double: the smallest
// honest Worker with the same duties, written as oauth4webapi's documentation shows.
//
//   POST /auth/start                   the start form (provider, state, code_verifier,
//                                      code_challenge, user): checks the pair, seals the
//                                      verifier (AES-GCM), stores the flow in D1, sets a
//                                      binding cookie, redirects to the bank with PKCE S256
//                                      and a nonce
//   GET  /auth/callback/local-bank     takes the flow once (the binding cookie must match),
//                                      checks the response (state, iss), redeems the code
//                                      (client_secret_basic), checks the id_token's claims and
//                                      its signature against the bank's JWKS, seals the tokens,
//                                      records the consent, answers with an outcome page
//   GET  /api/local-bank/{path}        the user's consent (Authorization: Bearer <demo user>,
//                                      X-Consentry-Consent), its token unsealed, the bank's
//                                      data API called with it
//   GET  /bench/d1/{n}                 n trivial D1 reads one after another: the bench's
//                                      measure of what one D1 round trip costs here
//
// Discovery and the JWKS are cached per isolate, as consentry caches them.
import * as oauth from 'oauth4webapi';

const PROVIDER = 'local-bank';
const FLOW_SECS = 600;
const insecure = { [oauth.allowInsecureRequests]: true }; // the local bank is plain http
const jwks = {}; // oauth4webapi's JWKS cache for this isolate
let server = null;
let sealKey = null;

const encoder = new TextEncoder();
const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const unb64url = (text) => Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
const sha256 = async (text) => b64url(await crypto.subtle.digest('SHA-256', encoder.encode(text)));
const randomId = () => b64url(crypto.getRandomValues(new Uint8Array(32)));
const now = () => Math.floor(Date.now() / 1000);
const json = (status, body) => Response.json(body, { status, headers: { 'Cache-Control': 'no-store' } });

async function bank(env) {
  if (!server) {
    const issuer = new URL(env.PEER_ISSUER);
    server = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
  }
  return server;
}

async function key(env) {
  sealKey ??= await crypto.subtle.importKey('raw', unb64url(env.PEER_KEY), 'AES-GCM', false, ['encrypt', 'decrypt']);
  return sealKey;
}

async function seal(env, text) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, await key(env), encoder.encode(text));
  return `${b64url(iv)}.${b64url(sealed)}`;
}

async function unseal(env, text) {
  const [iv, sealed] = text.split('.');
  return new TextDecoder().decode(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: unb64url(iv) }, await key(env), unb64url(sealed)));
}

function cookie(request, name) {
  for (const part of (request.headers.get('Cookie') ?? '').split(';')) {
    const [key, value] = part.trim().split('=');
    if (key === name) return value;
  }
  return undefined;
}

const client = (env) => ({ client_id: env.PEER_CLIENT_ID });
const redirectUri = (env) => `${env.PEER_PUBLIC_URL}/auth/callback/${PROVIDER}`;

async function start(request, env) {
  if (request.headers.get('Origin') !== env.PEER_PUBLIC_URL) return json(403, { code: 'origin_not_allowed' });
  const form = new URLSearchParams(await request.text());
  const [provider, state, verifier, challenge, user] = ['provider', 'state', 'code_verifier', 'code_challenge', 'user'].map((name) => form.get(name) ?? '');
  if (provider !== PROVIDER) return json(400, { code: 'unknown_provider' });
  if (!/^[A-Za-z0-9._~-]{22,255}$/.test(state) || !/^[A-Za-z0-9._~-]{43,128}$/.test(verifier) || !user) return json(400, { code: 'invalid_parameter' });
  const s256 = await oauth.calculatePKCECodeChallenge(verifier);
  if (challenge && challenge !== s256) return json(400, { code: 'invalid_verifier' });
  const as = await bank(env);
  const nonce = oauth.generateRandomNonce();
  const binding = randomId();
  await env.DB.prepare('INSERT INTO flows (state_key, binding_hash, user_id, nonce, sealed_verifier, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)')
    .bind(await sha256(state), await sha256(binding), user, nonce, await seal(env, verifier), now() + FLOW_SECS)
    .run();
  const url = new URL(as.authorization_endpoint);
  for (const [name, value] of Object.entries({
    response_type: 'code', client_id: env.PEER_CLIENT_ID, redirect_uri: redirectUri(env), scope: env.PEER_SCOPES,
    state, nonce, code_challenge: s256, code_challenge_method: 'S256', prompt: 'login consent',
  })) url.searchParams.set(name, value);
  return new Response(null, {
    status: 303,
    headers: { Location: url.href, 'Set-Cookie': `peer_binding=${binding}; Path=/auth/callback; HttpOnly; SameSite=Lax; Max-Age=${FLOW_SECS}` },
  });
}

async function callback(request, env) {
  const params = new URL(request.url).searchParams;
  const state = params.get('state') ?? '';
  const binding = cookie(request, 'peer_binding');
  if (!binding) return json(400, { code: 'transaction_not_bound' });
  const flow = await env.DB.prepare('UPDATE flows SET consumed_at = ?1 WHERE state_key = ?2 AND binding_hash = ?3 AND consumed_at IS NULL AND expires_at > ?1 RETURNING user_id, nonce, sealed_verifier')
    .bind(now(), await sha256(state), await sha256(binding))
    .first();
  if (!flow) return json(400, { code: 'unknown_transaction' });
  const as = await bank(env);
  let tokens;
  try {
    const checked = oauth.validateAuthResponse(as, client(env), params, state);
    const verifier = await unseal(env, flow.sealed_verifier);
    const answer = await oauth.authorizationCodeGrantRequest(as, client(env), oauth.ClientSecretBasic(env.PEER_CLIENT_SECRET), checked, redirectUri(env), verifier, insecure);
    tokens = await oauth.processAuthorizationCodeResponse(as, client(env), answer, { expectedNonce: flow.nonce, requireIdToken: true });
    await oauth.validateApplicationLevelSignature(as, answer, { ...insecure, [oauth.jwksCache]: jwks });
  } catch (error) {
    return json(502, { code: 'token_exchange_failed', description: error.code ?? error.name });
  }
  const claims = oauth.getValidatedIdTokenClaims(tokens);
  const consent = randomId();
  const grantedAt = now();
  const sealed = await seal(env, JSON.stringify({ access_token: tokens.access_token, refresh_token: tokens.refresh_token ?? null }));
  await env.DB.batch([
    env.DB.prepare('INSERT INTO consents (id, user_id, provider, subject, scopes, granted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)')
      .bind(consent, flow.user_id, PROVIDER, claims.sub, tokens.scope ?? env.PEER_SCOPES, grantedAt),
    env.DB.prepare('INSERT INTO token_sets (consent_id, sealed, access_expires_at) VALUES (?1, ?2, ?3)')
      .bind(consent, sealed, grantedAt + (tokens.expires_in ?? 3600)),
  ]);
  const outcome = { type: 'consentry:outcome', v: 1, state, status: 'granted', consent: { id: consent, provider: PROVIDER, user: flow.user_id, scopes: (tokens.scope ?? '').split(' '), granted_at: new Date(grantedAt * 1000).toISOString(), expires_at: null } };
  const attribute = JSON.stringify(outcome).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const script = 'const m=document.getElementById("consentry-outcome");window.opener&&window.opener.postMessage(JSON.parse(m.dataset.outcome),m.dataset.targetOrigin);window.close()';
  return new Response(`<!doctype html><meta charset="utf-8"><title>Connected</title><main id="consentry-outcome" data-outcome="${attribute}" data-target-origin="${env.PEER_PUBLIC_URL}"><p>Connected.</p></main><script>${script}</script>`, {
    headers: { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', 'Set-Cookie': 'peer_binding=; Path=/auth/callback; Max-Age=0' },
  });
}

async function api(request, env, path) {
  const user = /^Bearer (.+)$/.exec(request.headers.get('Authorization') ?? '')?.[1];
  if (!user) return json(401, { code: 'session_required' });
  const chosen = request.headers.get('X-Consentry-Consent');
  const row = await env.DB.prepare('SELECT t.sealed AS sealed, t.access_expires_at AS expires FROM consents c JOIN token_sets t ON t.consent_id = c.id WHERE c.user_id = ?1 AND c.provider = ?2 AND (?3 IS NULL OR c.id = ?3) ORDER BY c.granted_at DESC LIMIT 1')
    .bind(user, PROVIDER, chosen)
    .first();
  if (!row) return json(403, { code: 'consent_required' });
  if (row.expires <= now()) return json(401, { code: 'consent_expired' });
  const { access_token: token } = JSON.parse(await unseal(env, row.sealed));
  const answer = await oauth.protectedResourceRequest(token, 'GET', new URL(`${env.PEER_API_BASE}${path}`), undefined, undefined, insecure);
  return new Response(answer.body, { status: answer.status, headers: { 'Content-Type': answer.headers.get('Content-Type') ?? 'application/json', 'Cache-Control': 'no-store' } });
}

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (request.method === 'POST' && pathname === '/auth/start') return start(request, env);
    if (request.method === 'GET' && pathname === `/auth/callback/${PROVIDER}`) return callback(request, env);
    if (request.method === 'GET' && pathname.startsWith(`/api/${PROVIDER}/`)) return api(request, env, pathname.slice(`/api/${PROVIDER}`.length));
    const reads = /^\/bench\/d1\/(\d)$/.exec(pathname);
    if (request.method === 'GET' && reads) {
      for (let i = 0; i < Number(reads[1]); i += 1) await env.DB.prepare('SELECT count(*) AS n FROM flows WHERE expires_at > ?1').bind(i).first();
      return json(200, { reads: Number(reads[1]) });
    }
    return json(404, { code: 'not_found' });
  },
};
