// A local Connect: a Fewlines-style identity provider for the end-to-end tests and the demo,
// hand-written (no oidc-provider) so that its wire is Connect's as /work/shared/PROVIDERS.md
// ("Connect (Fewlines-style identity provider)") describes it, not as our client expects:
//
// - `GET /oauth/authorize?response_type=code&client_id&redirect_uri&scope[&state][&nonce]
//   [&code_challenge&code_challenge_method=S256]`. An unknown client, an unregistered
//   redirect_uri or a `state` over 255 characters gets an HTML error page (400) and no
//   redirect; any other bad parameter a redirect with `error=invalid_request` (and `state`).
//   Scopes: `openid email profile offline_access` and any of the application's own. PKCE is
//   optional (S256 only), checked at the token endpoint when a challenge was sent.
// - The account holder signs in and consents at `/interaction/{id}` (bound to the browser by
//   a cookie); allowing redirects (302) to `redirect_uri?code=...&state=...`, denying to
//   `redirect_uri?error=access_denied&state=...`; no `iss` parameter. A code lives 10 minutes
//   and is single use (a second exchange revokes what the first one got).
// - `POST /oauth/token`, client authentication in the body (`client_id` + `client_secret`)
//   or HTTP Basic. The access token is a JWT signed HS256 with the client secret, or RS256
//   with a key drawn at start and published at `/.well-known/jwks.json`; header `typ: JWT`;
//   claims `iss`, `aud` ([client_id]), `sub` (a UUID per account holder), `scope`, `exp`,
//   `iat`, `jti`, `client_id`, `auth_time`; always over 255 characters. Every token response
//   carries a refresh token (opaque, also over 255 characters) and, with `openid`, an
//   id_token signed the same way (living as long as the access token). A refresh rotates
//   the refresh token; presenting a rotated-away one revokes the whole grant (reuse
//   detection).
// - `GET /oauth/userinfo` with a Bearer access token of this provider: `sub`, and `email`
//   + `email_verified` with `email`, `name` with `profile`.
// - `GET /.well-known/openid-configuration`: PROVIDERS.md does not say Connect serves one;
//   this one describes what is here.
//
// Where it may differ from a real Connect (unconfirmed in PROVIDERS.md): that an array `aud`
// is what its access tokens carry; how it refuses a long `state` (here an error page, no
// redirect); `invalid_request` for every other bad authorization parameter (RFC 6749 would
// say `unsupported_response_type` for a wrong response_type); the refresh token's format
// and 30-day lifetime; the discovery document. There is no single sign-on session: every
// authorization asks for the password again.
//
//   const connect = await startConnect({ port, redirectUris, clientSecret, testControls: true });
//   ... connect.issuer, connect.issued, connect.requests ...
//   await connect.close();
//
// With `testControls`, in memory: `requests` ({ method, path, query, form, authorization } of every
// request, client secrets included: for tests, never logged) and `issued` (`codes`:
// { code, state }; `accessTokens`: { value, grant_type, fault }; `refreshTokens` and
// `idTokens`: { value, grant_type }).
//
// With `testControls` (404 otherwise):
//   POST /__test/next-access-token   text body: bad-signature | wrong-aud | wrong-iss |
//                                    expired | future-iat | no-sub | alg-none | hs256-secret |
//                                    normal
// makes the NEXT token response (code or refresh) carry an access token with that one fault
// (signed with another secret or key; `aud` another client's; `iss` another issuer's; `exp`
// 5 minutes past, beyond any clock tolerance; `iat` 10 minutes ahead; no `sub`; `alg: none`
// and no signature; in RS256 mode, HS256 with the client secret, the algorithm-confusion
// token), the rest of the response as usual;
//   POST /__test/expire-refresh
// makes every refresh token issued so far answer `invalid_grant` (later ones work);
//   POST /__test/rotate-key          (RS256 mode) signs from now on with a new key under a
//                                    new kid, published beside the old one;
//   POST /__test/jwks                text body: down (the JWKS answers 503) | up.
//
// Run directly (`node bank/connect.mjs`), configured by the environment:
//   CONNECT_PORT              port (default 9004); the issuer is http://localhost:PORT
//   CONNECT_REDIRECT_URIS     comma-separated redirect URIs of `consentry-connect` (default
//                             http://localhost:8787/auth/callback/connect)
//   CONNECT_CLIENT_SECRET     its client secret, at least 32 characters (default
//                             consentry-connect-secret-change-me-01234567)
//   CONNECT_SIGNING           HS256 (default) or RS256
//   CONNECT_ACCESS_TOKEN_TTL  access tokens' lifetime in seconds (default 3600)
//   CONNECT_TEST_CONTROLS     `1` turns the test controls on

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';

import { ACCOUNTS } from './bank.mjs';
import { escapeHtml, listen, providerPage, recording, readBody as readBodyUpTo } from './server.mjs';

export const SCOPES = ['openid', 'email', 'profile', 'offline_access'];
export const TOKEN_FAULTS = ['bad-signature', 'wrong-aud', 'wrong-iss', 'expired', 'future-iat', 'no-sub', 'alg-none', 'hs256-secret', 'normal'];
export const STATE_MAX_LENGTH = 255;

const CODE_TTL = 600;
const INTERACTION_TTL = 600;
const REFRESH_TTL = 30 * 86_400;
const CLOCK_SKEW = 60;
const MAX_BODY = 64 * 1024;
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
const PKCE_VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;
const SUBJECT_NAMESPACE = Buffer.from('5f1c3a7e9b2d4c608e4a1b7d3c9f2e61', 'hex');
const SCOPE_NAMES = {
  openid: 'Sign you in with your Connect account',
  email: 'Your email address',
  profile: 'Your name',
  offline_access: 'Keep access while you are away',
};

class OAuthError extends Error {
  constructor(status, error, description, headers = {}) {
    super(description);
    Object.assign(this, { status, error, headers });
  }
}

const epoch = () => Math.floor(Date.now() / 1000);
const randomToken = (bytes) => randomBytes(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');
const base64urlJson = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function safeEqual(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A stable UUID (version 5 layout) for an account holder: the same at every start. */
function subjectOf(login) {
  const hash = createHash('sha1').update(SUBJECT_NAMESPACE).update(login).digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function page(title, body) {
  return providerPage({ title, body, brand: 'Connect', accent: '#6b3fa0', background: '#3b1f5c' });
}

function sendHtml(res, status, html, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
  res.end(html);
}

function errorPage(res, status, title, message) {
  sendHtml(res, status, page(title, `<h1>${escapeHtml(title)}</h1><p class="error">${escapeHtml(message)}</p>`));
}

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', Pragma: 'no-cache', ...headers });
  res.end(JSON.stringify(body));
}

function sendText(res, status, text) {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}

function redirect(res, status, location, headers = {}) {
  res.writeHead(status, { Location: location, 'Cache-Control': 'no-store', ...headers });
  res.end();
}

/** The request body as text, or null when it is over MAX_BODY. */
const readBody = (req) => readBodyUpTo(req, MAX_BODY);

const isForm = (req) => /^application\/x-www-form-urlencoded\s*(;|$)/i.test(req.headers['content-type'] || '');

function repeatedNames(params) {
  const seen = new Set();
  const repeated = new Set();
  for (const name of params.keys()) (seen.has(name) ? repeated : seen).add(name);
  return repeated;
}

function cookieOf(req, name) {
  for (const part of (req.headers.cookie || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** `redirectUri` with the given parameters (undefined ones left out). */
function clientRedirect(redirectUri, params) {
  const url = new URL(redirectUri);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined) url.searchParams.set(name, value);
  }
  return url.toString();
}

/** What is wrong with an authorization request beyond client, redirect_uri and state. */
function authorizationProblem(params, repeated) {
  if (repeated.size) return `${[...repeated][0]} is repeated`;
  if (!params.has('response_type')) return 'response_type is required';
  if (params.get('response_type') !== 'code') return 'response_type must be code';
  const scope = params.get('scope');
  if (!scope) return 'scope is required';
  if (!scope.split(' ').every((token) => SCOPE_TOKEN.test(token))) return 'scope is malformed';
  const challenge = params.get('code_challenge');
  const method = params.get('code_challenge_method');
  if (challenge === null && method !== null) return 'code_challenge_method without code_challenge';
  if (challenge !== null && method !== 'S256') return 'code_challenge_method must be S256';
  if (challenge !== null && !S256_CHALLENGE.test(challenge)) return 'code_challenge is malformed';
  return null;
}

/** HS256 with the client secret, or RS256 with a key drawn now; `otherKey` signs bad signatures. */
async function makeSigner(signing, clientSecret, testControls) {
  if (signing === 'HS256') {
    const key = new TextEncoder().encode(clientSecret);
    return { alg: 'HS256', key, verifyKey: key, jwks: null, otherKey: testControls ? randomBytes(32) : null };
  }
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const kid = `connect-${randomToken(6)}`;
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }] };
  const otherKey = testControls ? (await generateKeyPair('RS256')).privateKey : null;
  return { alg: 'RS256', kid, key: privateKey, verifyKey: publicKey, jwks, otherKey };
}

export async function startConnect({
  port,
  redirectUris,
  clientId = 'consentry-connect',
  clientSecret,
  signing = 'HS256',
  testControls = false,
  accessTokenTtl = 3600,
}) {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError('startConnect: port must be an integer from 1 to 65535');
  if (!Array.isArray(redirectUris) || !redirectUris.length || !redirectUris.every((uri) => URL.canParse(uri) && !uri.includes('#'))) {
    throw new TypeError('startConnect: redirectUris must be a non-empty array of absolute URLs without fragment');
  }
  if (typeof clientId !== 'string' || !clientId) throw new TypeError('startConnect: clientId must be a non-empty string');
  if (typeof clientSecret !== 'string' || clientSecret.length < 32) throw new TypeError('startConnect: clientSecret must be a string of at least 32 characters');
  if (signing !== 'HS256' && signing !== 'RS256') throw new TypeError('startConnect: signing must be HS256 or RS256');
  if (!Number.isInteger(accessTokenTtl) || accessTokenTtl < 1) throw new TypeError('startConnect: accessTokenTtl must be a positive integer');

  const issuer = `http://localhost:${port}`;
  const signer = await makeSigner(signing, clientSecret, testControls);
  const interactions = new Map(); // id -> { id, browser, expiresAt, stage, login, authTime, request }
  const grants = new Map(); // id -> { id, login, sub, scope, nonce, authTime, revoked }
  const codes = new Map(); // code -> { grantId, redirectUri, codeChallenge, expiresAt, used }
  const refreshTokens = new Map(); // token -> { grantId, expiresAt, rotated }
  const accessTokenGrants = new Map(); // jti -> grant id
  const { requests } = recording(testControls, ['requests']);
  const issued = recording(testControls, ['codes', 'accessTokens', 'refreshTokens', 'idTokens', 'jwksFetches']);
  let nextFault = 'normal';
  let jwksDown = false;

  /** A new signing key under a new kid; the JWKS keeps the old one beside it. */
  async function rotateKey() {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    signer.kid = `connect-${randomToken(6)}`;
    signer.key = privateKey;
    signer.verifyKey = publicKey;
    signer.jwks = { keys: [...signer.jwks.keys, { ...(await exportJWK(publicKey)), kid: signer.kid, alg: 'RS256', use: 'sig' }] };
  }

  // --- Authorization: the request, the login and consent pages, the redirect back ---

  function authorize(res, params) {
    const repeated = repeatedNames(params);
    if (repeated.has('client_id') || params.get('client_id') !== clientId) {
      errorPage(res, 400, 'Unknown application', 'The application asking you to sign in is not known to Connect.');
      return;
    }
    const redirectUri = params.get('redirect_uri');
    if (repeated.has('redirect_uri') || !redirectUris.includes(redirectUri)) {
      errorPage(res, 400, 'Invalid redirect URI', 'The application gave a redirect_uri it did not register.');
      return;
    }
    const state = params.get('state') ?? undefined;
    if (repeated.has('state')) {
      errorPage(res, 400, 'Invalid request', 'state is repeated.');
      return;
    }
    // The real provider refuses a state over 255 characters; HOW it refuses (an error page,
    // an error redirect, a truncated state) is unconfirmed. Here: an error page, no redirect.
    if (state !== undefined && state.length > STATE_MAX_LENGTH) {
      errorPage(res, 400, 'Invalid request', `state too long (at most ${STATE_MAX_LENGTH} characters).`);
      return;
    }
    const problem = authorizationProblem(params, repeated);
    if (problem) {
      redirect(res, 302, clientRedirect(redirectUri, { error: 'invalid_request', error_description: problem, state }));
      return;
    }
    const interaction = {
      id: randomToken(16),
      browser: randomToken(24),
      expiresAt: Date.now() + INTERACTION_TTL * 1000,
      stage: 'login',
      request: {
        redirectUri,
        scope: params.get('scope'),
        state,
        nonce: params.get('nonce') ?? undefined,
        codeChallenge: params.get('code_challenge') ?? undefined,
      },
    };
    interactions.set(interaction.id, interaction);
    redirect(res, 303, `/interaction/${interaction.id}`, { 'Set-Cookie': interactionCookie(interaction.id, interaction.browser, INTERACTION_TTL) });
  }

  const cookieName = (id) => `connect_interaction_${id}`;
  const interactionCookie = (id, value, maxAge) => `${cookieName(id)}=${value}; Path=/interaction/${id}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax`;

  function loginPage(interaction, error) {
    const action = `/interaction/${interaction.id}`;
    return page('Sign in to Connect', `<h1>Sign in</h1><p>to continue to <b>${escapeHtml(clientId)}</b></p>
${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}<form method="post" action="${action}"><input type="hidden" name="prompt" value="login">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="allow" type="submit">Sign in</button></form>`);
  }

  function consentPage(interaction) {
    const action = `/interaction/${interaction.id}`;
    const scopes = interaction.request.scope.split(' ');
    return page('Allow access', `<h1>Allow access?</h1><p>Signed in as <b>${escapeHtml(ACCOUNTS[interaction.login].name)}</b>. <b>${escapeHtml(clientId)}</b> asks for:</p>
<ul>${scopes.map((s) => `<li>${escapeHtml(SCOPE_NAMES[s] || s)}</li>`).join('')}</ul>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="consent">
<button class="allow" name="decision" value="allow" type="submit">Allow</button><button class="deny" name="decision" value="deny" type="submit">Deny</button></form>`);
  }

  /** The interaction `id` if it is live and this browser's, else undefined. */
  function liveInteraction(req, id) {
    const interaction = interactions.get(id);
    if (!interaction || interaction.expiresAt <= Date.now()) return undefined;
    return safeEqual(cookieOf(req, cookieName(id)) ?? '', interaction.browser) ? interaction : undefined;
  }

  function interactionRoute(req, res, id, form) {
    const interaction = liveInteraction(req, id);
    if (!interaction) {
      errorPage(res, 400, 'Sign-in expired', 'This sign-in is unknown or has expired. Start again from the application.');
      return;
    }
    if (req.method === 'GET') {
      sendHtml(res, 200, interaction.stage === 'login' ? loginPage(interaction) : consentPage(interaction));
      return;
    }
    if (req.method !== 'POST') {
      errorPage(res, 405, 'Method not allowed', 'This page takes GET and POST only.');
      return;
    }
    if (form?.get('prompt') !== interaction.stage) {
      errorPage(res, 400, 'Page out of date', 'This form is not the step this sign-in is at. Reload the page.');
      return;
    }
    if (interaction.stage === 'login') signIn(res, interaction, form);
    else decide(res, interaction, form.get('decision'));
  }

  function signIn(res, interaction, form) {
    const login = form.get('login') || '';
    const account = Object.hasOwn(ACCOUNTS, login) ? ACCOUNTS[login] : undefined;
    if (!account || !safeEqual(form.get('password') || '', account.password)) {
      sendHtml(res, 200, loginPage(interaction, 'Wrong username or password.'));
      return;
    }
    Object.assign(interaction, { stage: 'consent', login, authTime: epoch() });
    redirect(res, 303, `/interaction/${interaction.id}`);
  }

  function decide(res, interaction, decision) {
    if (decision !== 'allow' && decision !== 'deny') {
      errorPage(res, 400, 'Invalid decision', 'Choose Allow or Deny.');
      return;
    }
    interactions.delete(interaction.id);
    const { request } = interaction;
    const clearCookie = { 'Set-Cookie': interactionCookie(interaction.id, '', 0) };
    if (decision === 'deny') {
      redirect(res, 302, clientRedirect(request.redirectUri, { error: 'access_denied', state: request.state }), clearCookie);
      return;
    }
    const grant = {
      id: randomUUID(),
      login: interaction.login,
      sub: subjectOf(interaction.login),
      scope: request.scope,
      nonce: request.nonce,
      authTime: interaction.authTime,
      revoked: false,
    };
    grants.set(grant.id, grant);
    const code = randomToken(32);
    codes.set(code, {
      grantId: grant.id, redirectUri: request.redirectUri, codeChallenge: request.codeChallenge, expiresAt: Date.now() + CODE_TTL * 1000, used: false,
    });
    issued.codes.push({ code, state: request.state });
    redirect(res, 302, clientRedirect(request.redirectUri, { code, state: request.state }), clearCookie);
  }

  // --- The token endpoint ---

  /** Checks client_secret_post or client_secret_basic (exactly one of them). */
  function authenticateClient(req, form) {
    const challenge = { 'WWW-Authenticate': 'Basic realm="connect"' };
    const header = req.headers.authorization;
    const basic = /^Basic ([A-Za-z0-9+/]+=*)$/i.exec(header || '');
    if (header && !basic) throw new OAuthError(401, 'invalid_client', 'unsupported Authorization header', challenge);
    if (basic && form.has('client_secret')) throw new OAuthError(400, 'invalid_request', 'use one client authentication method, not two');
    let id = form.get('client_id');
    let secret = form.get('client_secret');
    if (basic) {
      const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      try {
        // RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
        const basicId = decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
        if (id !== null && id !== basicId) throw new OAuthError(401, 'invalid_client', 'client_id differs from the Basic credentials', challenge);
        id = basicId;
        secret = colon < 0 ? null : decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' '));
      } catch (error) {
        if (error instanceof OAuthError) throw error;
        throw new OAuthError(401, 'invalid_client', 'malformed Basic credentials', challenge);
      }
    }
    if (!id || !secret) throw new OAuthError(401, 'invalid_client', 'client authentication is required', challenge);
    if (id !== clientId || !safeEqual(secret, clientSecret)) throw new OAuthError(401, 'invalid_client', 'client authentication failed', challenge);
  }

  function required(form, name) {
    const value = form.get(name);
    if (!value) throw new OAuthError(400, 'invalid_request', `${name} is required`);
    return value;
  }

  async function tokenRoute(req, res, form) {
    if (req.method !== 'POST') throw new OAuthError(405, 'invalid_request', 'the token endpoint takes POST only', { Allow: 'POST' });
    if (!form) throw new OAuthError(400, 'invalid_request', 'the body must be application/x-www-form-urlencoded');
    const repeated = repeatedNames(form);
    if (repeated.size) throw new OAuthError(400, 'invalid_request', `${[...repeated][0]} is repeated`);
    authenticateClient(req, form);
    const grantType = required(form, 'grant_type');
    let body;
    if (grantType === 'authorization_code') body = await codeGrant(form);
    else if (grantType === 'refresh_token') body = await refreshGrant(form);
    else throw new OAuthError(400, 'unsupported_grant_type', `grant_type ${grantType} is not supported`);
    sendJson(res, 200, body);
  }

  async function codeGrant(form) {
    const code = required(form, 'code');
    const redirectUri = required(form, 'redirect_uri');
    const record = codes.get(code);
    if (!record) throw new OAuthError(400, 'invalid_grant', 'unknown authorization code');
    const grant = grants.get(record.grantId);
    if (record.used) {
      grant.revoked = true; // RFC 6749 section 4.1.2: what the code got is revoked
      throw new OAuthError(400, 'invalid_grant', 'authorization code already used');
    }
    if (record.expiresAt <= Date.now()) throw new OAuthError(400, 'invalid_grant', 'authorization code expired');
    if (redirectUri !== record.redirectUri) throw new OAuthError(400, 'invalid_grant', 'redirect_uri does not match the authorization request');
    const verifier = form.get('code_verifier');
    if (record.codeChallenge === undefined && verifier !== null) {
      throw new OAuthError(400, 'invalid_grant', 'code_verifier sent but no code_challenge was');
    }
    if (record.codeChallenge !== undefined && !(verifier && PKCE_VERIFIER.test(verifier) && sha256(verifier) === record.codeChallenge)) {
      throw new OAuthError(400, 'invalid_grant', 'PKCE verification failed');
    }
    record.used = true;
    return tokenResponse(grant, 'authorization_code', grant.scope);
  }

  async function refreshGrant(form) {
    const value = required(form, 'refresh_token');
    const record = refreshTokens.get(value);
    const grant = record && grants.get(record.grantId);
    if (!grant) throw new OAuthError(400, 'invalid_grant', 'unknown refresh token');
    if (record.rotated) {
      grant.revoked = true; // reuse detection: a rotated-away token ends the whole grant
      throw new OAuthError(400, 'invalid_grant', 'refresh token already used');
    }
    if (grant.revoked) throw new OAuthError(400, 'invalid_grant', 'the grant is revoked');
    if (record.expiresAt <= Date.now()) throw new OAuthError(400, 'invalid_grant', 'refresh token expired');
    const scope = form.get('scope') ?? grant.scope;
    const granted = grant.scope.split(' ');
    if (!scope.split(' ').every((token) => granted.includes(token))) {
      throw new OAuthError(400, 'invalid_scope', 'scope exceeds what was granted');
    }
    record.rotated = true;
    return tokenResponse(grant, 'refresh_token', scope);
  }

  async function tokenResponse(grant, grantType, scope) {
    const fault = nextFault;
    nextFault = 'normal';
    const now = epoch();
    const claims = {
      iss: issuer,
      aud: [clientId], // an array, as Fewlines' tokens carry (unconfirmed)
      sub: grant.sub,
      scope,
      client_id: clientId,
      auth_time: grant.authTime,
      iat: now,
      exp: now + accessTokenTtl,
      jti: randomUUID(),
    };
    const accessToken = await encodeAccessToken(withFault(claims, fault), fault);
    accessTokenGrants.set(claims.jti, grant.id);
    const refreshToken = randomToken(200);
    refreshTokens.set(refreshToken, { grantId: grant.id, expiresAt: Date.now() + REFRESH_TTL * 1000, rotated: false });
    issued.accessTokens.push({ value: accessToken, grant_type: grantType, fault });
    issued.refreshTokens.push({ value: refreshToken, grant_type: grantType });
    const body = { access_token: accessToken, token_type: 'Bearer', expires_in: accessTokenTtl, refresh_token: refreshToken, scope };
    const scopes = scope.split(' ');
    if (scopes.includes('openid')) {
      body.id_token = await sign(idTokenClaims(grant, scopes, now, grantType === 'authorization_code'));
      issued.idTokens.push({ value: body.id_token, grant_type: grantType });
    }
    return body;
  }

  /** OpenID Connect Core 12.2: a refreshed id_token carries no nonce. */
  function idTokenClaims(grant, scopes, now, withNonce) {
    const account = ACCOUNTS[grant.login];
    return {
      iss: issuer,
      sub: grant.sub,
      aud: clientId,
      iat: now,
      exp: now + accessTokenTtl,
      auth_time: grant.authTime,
      ...(withNonce && grant.nonce !== undefined ? { nonce: grant.nonce } : {}),
      ...(scopes.includes('email') ? { email: account.email, email_verified: true } : {}),
      ...(scopes.includes('profile') ? { name: account.name } : {}),
    };
  }

  function withFault(claims, fault) {
    switch (fault) {
      case 'wrong-aud': return { ...claims, aud: ['another-application'] };
      case 'wrong-iss': return { ...claims, iss: 'https://connect.elsewhere.example' };
      case 'expired': return { ...claims, iat: claims.iat - accessTokenTtl - 300, exp: claims.iat - 300 }; // past any clock tolerance
      case 'future-iat': return { ...claims, iat: claims.iat + 600, exp: claims.exp + 600 };
      case 'no-sub': {
        const { sub: _sub, ...rest } = claims;
        return rest;
      }
      default: return claims;
    }
  }

  function sign(claims, key = signer.key) {
    return new SignJWT(claims)
      .setProtectedHeader({ alg: signer.alg, typ: 'JWT', ...(signer.kid ? { kid: signer.kid } : {}) })
      .sign(key);
  }

  function encodeAccessToken(claims, fault) {
    if (fault === 'alg-none') return `${base64urlJson({ alg: 'none', typ: 'JWT' })}.${base64urlJson(claims)}.`;
    if (fault === 'hs256-secret') {
      return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(clientSecret));
    }
    return sign(claims, fault === 'bad-signature' ? signer.otherKey : signer.key);
  }

  // --- Userinfo, discovery, JWKS ---

  /** The claims of a live access token of this provider's, or throws. */
  async function verifyAccessToken(token) {
    const { payload } = await jwtVerify(token, signer.jwks ? createLocalJWKSet(signer.jwks) : signer.verifyKey, {
      issuer, audience: clientId, algorithms: [signer.alg], typ: 'JWT', requiredClaims: ['sub', 'iat', 'exp', 'jti'],
    });
    if (payload.iat > epoch() + CLOCK_SKEW) throw new Error('issued in the future');
    const grant = grants.get(accessTokenGrants.get(payload.jti));
    if (!grant || grant.revoked) throw new Error('unknown or revoked grant');
    return { payload, grant };
  }

  async function userinfoRoute(req, res) {
    const refuse = (description) => sendJson(res, 401, { error: 'invalid_token', error_description: description }, {
      'WWW-Authenticate': 'Bearer error="invalid_token"',
    });
    const bearer = /^Bearer ([\x21-\x7e]+)$/i.exec(req.headers.authorization || '');
    if (!bearer) {
      refuse('a Bearer access token is required');
      return;
    }
    let verified;
    try {
      verified = await verifyAccessToken(bearer[1]);
    } catch {
      refuse('the access token is invalid, expired or revoked');
      return;
    }
    const { payload, grant } = verified;
    const scopes = String(payload.scope || '').split(' ');
    const account = ACCOUNTS[grant.login];
    sendJson(res, 200, {
      sub: payload.sub,
      ...(scopes.includes('email') ? { email: account.email, email_verified: true } : {}),
      ...(scopes.includes('profile') ? { name: account.name } : {}),
    });
  }

  function discovery() {
    return {
      issuer,
      authorization_endpoint: `${issuer}/oauth/authorize`,
      token_endpoint: `${issuer}/oauth/token`,
      userinfo_endpoint: `${issuer}/oauth/userinfo`,
      ...(signer.jwks ? { jwks_uri: `${issuer}/.well-known/jwks.json` } : {}),
      response_types_supported: ['code'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: [signer.alg],
      scopes_supported: SCOPES,
      claims_supported: ['sub', 'email', 'email_verified', 'name', 'auth_time', 'nonce'],
      token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
      code_challenge_methods_supported: ['S256'],
    };
  }

  // --- Test controls ---

  function testControlRoute(res, path, text) {
    if (path === '/__test/next-access-token') {
      const asked = text.trim();
      if (!TOKEN_FAULTS.includes(asked)) {
        sendText(res, 400, `expected one of ${TOKEN_FAULTS.join(', ')}`);
        return;
      }
      nextFault = asked;
      sendText(res, 200, asked);
      return;
    }
    for (const record of refreshTokens.values()) record.expiresAt = 0;
    sendText(res, 200, 'expired');
  }

  // --- Routing ---

  async function route(req, res) {
    const url = new URL(req.url, issuer);
    const text = req.method === 'POST' ? await readBody(req) : '';
    if (text === null) {
      sendText(res, 413, 'request body too large');
      return;
    }
    const form = isForm(req) ? new URLSearchParams(text) : null;
    requests.push({
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      form: form && Object.fromEntries(form),
      authorization: req.headers.authorization ?? null,
    });
    const { pathname } = url;
    const interaction = /^\/interaction\/([\w-]+)$/.exec(pathname);
    if (pathname === '/oauth/authorize' && req.method === 'GET') {
      authorize(res, url.searchParams);
    } else if (interaction) {
      interactionRoute(req, res, interaction[1], form);
    } else if (pathname === '/oauth/token') {
      await tokenRoute(req, res, form);
    } else if (pathname === '/oauth/userinfo' && (req.method === 'GET' || req.method === 'POST')) {
      await userinfoRoute(req, res);
    } else if (pathname === '/.well-known/openid-configuration' && req.method === 'GET') {
      sendJson(res, 200, discovery());
    } else if (pathname === '/.well-known/jwks.json' && req.method === 'GET' && signer.jwks) {
      issued.jwksFetches.push({ at: Date.now(), status: jwksDown ? 503 : 200 });
      if (jwksDown) sendText(res, 503, 'unavailable');
      else sendJson(res, 200, signer.jwks);
    } else if (testControls && req.method === 'POST' && ['/__test/next-access-token', '/__test/expire-refresh'].includes(pathname)) {
      testControlRoute(res, pathname, text);
    } else if (testControls && req.method === 'POST' && pathname === '/__test/rotate-key' && signer.jwks) {
      await rotateKey();
      sendText(res, 200, signer.kid);
    } else if (testControls && req.method === 'POST' && pathname === '/__test/jwks' && ['down', 'up'].includes(text.trim())) {
      jwksDown = text.trim() === 'down';
      sendText(res, 200, text.trim());
    } else {
      sendText(res, 404, 'not found');
    }
  }

  const server = createServer((req, res) => {
    route(req, res).catch((error) => {
      if (res.headersSent) {
        res.destroy();
      } else if (error instanceof OAuthError) {
        sendJson(res, error.status, { error: error.error, error_description: error.message }, error.headers);
      } else {
        sendText(res, 500, 'internal error');
      }
    });
  });
  const close = await listen(server, port);
  return {
    issuer,
    server,
    issued,
    requests,
    close,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const signing = process.env.CONNECT_SIGNING || 'HS256';
  const { issuer } = await startConnect({
    port: Number(process.env.CONNECT_PORT || 9004),
    redirectUris: (process.env.CONNECT_REDIRECT_URIS || 'http://localhost:8787/auth/callback/connect').split(','),
    clientSecret: process.env.CONNECT_CLIENT_SECRET || 'consentry-connect-secret-change-me-01234567',
    signing,
    testControls: process.env.CONNECT_TEST_CONTROLS === '1',
    accessTokenTtl: Number(process.env.CONNECT_ACCESS_TOKEN_TTL || 3600),
  });
  console.log(`Connect listening at ${issuer} (client consentry-connect, ${signing}; accounts: ${Object.keys(ACCOUNTS).join(', ')}; password = username)`);
}
