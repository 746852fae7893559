// A local TrueLayer (Data API) for the end-to-end tests and the demo: the auth dialog, the
// token endpoint and the Data API, as /work/shared/PROVIDERS.md ("TrueLayer (Data API)")
// describes them, not as our client happens to expect. Plain node:http, no OAuth library.
//
// - No discovery (`/.well-known/openid-configuration` is 404), no JWKS, no id_token, no RFC
//   9207 `iss` on any redirect.
// - The auth dialog is at the root: `GET /?response_type=code&client_id&redirect_uri&scope
//   &state&nonce&providers[&provider_id][&response_mode=form_post][&code_challenge
//   &code_challenge_method=S256]`. An unknown client_id or a redirect_uri not registered
//   exactly gets an error page (400), no redirect; any other problem a redirect with
//   `error=invalid_request`, `error_description` and `state`. `nonce` and `providers` are
//   required; `provider_id` (skips the bank picker) must be covered by `providers`.
// - `providers` is space-separated groups or provider ids of the catalogue (PROVIDERS below:
//   `uk-cs-mock` = mock, `uk-ob-all` = ob-lloyds ob-monzo, `uk-oauth-all` = oauth-starling);
//   unknown entries are ignored (TrueLayer has many more groups), but it must cover one bank.
// - `GET /` answers 303 to `/interaction/{id}` (bound to the browser by a cookie, 10 minutes);
//   every page of the flow is served at that path and posts back to it: the bank picker
//   (only without provider_id), the login at the bank (the account holders of bank/bank.mjs,
//   password = name), the consent page, then the redirect: 302 to `redirect_uri?code&state
//   &scope`, or `error=access_denied&state` when the holder denies; with
//   `response_mode=form_post` an auto-submitting POST form carrying the same fields.
// - `POST /connect/token`, client_secret_post only (`client_id` + `client_secret` in the form
//   body; an Authorization header is refused): `authorization_code` (code 5 min, single use,
//   burnt by its first authenticated presentation, even when the exchange then fails;
//   `redirect_uri` must match; `code_verifier` required when the link had a
//   `code_challenge`, refused when it had none) and `refresh_token`. The answer: `access_token` (a JWT, RS256 with a key drawn at
//   start: iss, sub = credentials_id, client_id, scope, connector_id, iat, exp, jti),
//   `expires_in`, `token_type: Bearer`, `refresh_token` only with offline_access, `scope`.
// - Each code exchange makes a connection (`credentials_id`) of 90 days. A refresh answers a
//   new access token and a new refresh token: the old refresh token stops working (whether
//   TrueLayer rotates is unconfirmed) and so does every access token issued before (only the
//   latest works). A refresh after the 90 days, or of a refresh token unused for 30 days, is
//   `invalid_grant`. Access tokens never outlive their connection.
// - The Data API under /data/v1 (Bearer): `/me`, `/info` (scope info), `/accounts` and
//   `/accounts/{id}` (accounts), `/accounts/{id}/balance` (balance),
//   `/accounts/{id}/transactions?from=&to=` (transactions), in the `{"results": [...],
//   "status": "Succeeded"}` envelope, from bank/data-api.mjs's HOLDINGS and ledger (pounds,
//   debits negative). Errors: 401 `unauthorized` (bad, expired or superseded token, or an
//   expired connection: refresh), 403 `access_denied` (consent revoked: reconnect), 403
//   `insufficient_scope`, 404 `account_not_found`.
//
// Differences from the real TrueLayer, where we know them: one port serves both hosts (the
// real auth dialog and token endpoint are on auth.truelayer.com, the Data API on
// api.truelayer.com); one client; `cards`, `direct_debits` and `standing_orders` can be
// granted but their endpoints are not emulated; the banks share the same demo accounts (the
// account ids are HOLDINGS' ids); a revoked consent can still be refreshed (its data calls
// stay 403); errors of the auth link other than `access_denied` are unconfirmed.
//
//   const truelayer = await startTrueLayer({ port, redirectUris, clientSecret, testControls: true });
//   ... truelayer.url, truelayer.requests, truelayer.issued ...
//   await truelayer.close();
//
// Recorded in memory with `testControls`: `requests`, `{ method, path, query, form,
// authorization }` for every request (form: the body fields of a form body, else null),
// and `issued`, `{ codes, accessTokens, refreshTokens, connections }` (values handed out;
// connections as `{ credentialsId, providerId, holder, scopes, createdAt }`), so that tests
// can check that none of it reaches a browser.
//
// With `testControls`, POSTs with a text body (404 otherwise):
//   /__test/revoke-connection        body: a credentials_id or `all`: its data calls answer
//                                    403 access_denied from then on
//   /__test/expire-connection        body: a credentials_id or `all`: the connection is over
//                                    (refresh: 400 invalid_grant; data calls: 401)
//   /__test/next-authorization-error body: an error code: the NEXT authorization ends, right
//                                    after login, with a redirect carrying it and the state
//
// Run directly (`node bank/truelayer.mjs`), configured by the environment:
//   TRUELAYER_PORT               port (default 9002); the URL is http://localhost:PORT
//   TRUELAYER_REDIRECT_URIS      comma-separated redirect URIs of `consentry-truelayer`
//                                (default http://localhost:8787/auth/callback/truelayer)
//   TRUELAYER_CLIENT_SECRET      the client's secret (default consentry-truelayer-secret-change-me-0123)
//   TRUELAYER_ACCESS_TOKEN_TTL   access tokens' lifetime in seconds (default 3600)
//   TRUELAYER_TEST_CONTROLS      `1` turns the test controls on

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { generateKeyPair, jwtVerify, SignJWT } from 'jose';

import { ACCOUNTS } from './bank.mjs';
import { buildLedger, HOLDINGS } from './data-api.mjs';
import { escapeHtml, listen, providerPage, recording, readBody as readBodyUpTo } from './server.mjs';

export const SCOPES = ['info', 'accounts', 'balance', 'cards', 'transactions', 'direct_debits', 'standing_orders', 'offline_access'];
/** The banks ("providers") the auth dialog offers, with the provider group covering each. */
export const PROVIDERS = {
  mock: { name: 'Mock Bank', group: 'uk-cs-mock', bankCode: 'MOCK', sortCode: '00-99-01' },
  'ob-lloyds': { name: 'Lloyds', group: 'uk-ob-all', bankCode: 'LOYD', sortCode: '30-94-57' },
  'ob-monzo': { name: 'Monzo', group: 'uk-ob-all', bankCode: 'MONZ', sortCode: '04-00-04' },
  'oauth-starling': { name: 'Starling Bank', group: 'uk-oauth-all', bankCode: 'SRLG', sortCode: '60-83-71' },
};

const INTERACTION_TTL = 600_000;
const CODE_TTL = 300_000;
const DAY = 86_400_000;
const CONNECTION_TTL = 90 * DAY;
const REFRESH_IDLE = 30 * DAY;
const MAX_BODY = 64 * 1024;
const COOKIE = 'tl_interaction';
const SCOPE_NAMES = {
  info: 'Your name and contact details',
  accounts: 'Your account details',
  balance: 'Your balances',
  cards: 'Your card details',
  transactions: 'Your transactions',
  direct_debits: 'Your direct debits',
  standing_orders: 'Your standing orders',
  offline_access: 'Access while you are not using the app (up to 90 days)',
};
// How the ledger's descriptions map to TrueLayer's transaction categories.
const NON_MERCHANT_CATEGORIES = { Salary: 'CREDIT', Interest: 'INTEREST', 'Transfer from current': 'TRANSFER' };
const DIRECT_DEBITS = new Set(['City Energy', 'Streamly']);

const now = () => Date.now();
const token = (bytes) => randomBytes(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest();
const pounds = (pence) => Math.round(pence) / 100;
const isoNow = () => new Date(now()).toISOString();

/** Compares two secrets in constant time (whatever their lengths). */
function safeEqual(given, expected) {
  return typeof given === 'string' && timingSafeEqual(sha256(given), sha256(expected));
}

function page(title, body, nonce) {
  return providerPage({ title, body, brand: 'TrueLayer', accent: '#0d6e6e', background: '#1b1f3b', css: '.bank{display:block;width:100%;margin-top:10px;background:#eef2f7;text-align:left}', nonce });
}

/**
 * Answers an HTML page under a CSP allowing its own style (and `script`, if any) by nonce and
 * forms posting to `formAction` only.
 */
function sendPage(res, { status = 200, title, body, formAction = "'none'", script, headers = {} }) {
  const nonce = token(16);
  const scriptTag = script ? `<script nonce="${nonce}">${script}</script>` : '';
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'Content-Security-Policy': `default-src 'none'; style-src 'nonce-${nonce}'; script-src ${script ? `'nonce-${nonce}'` : "'none'"}; form-action ${formAction}; base-uri 'none'; frame-ancestors 'none'`,
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    ...headers,
  });
  res.end(page(title, body + scriptTag, nonce));
}

function sendErrorPage(res, status, message) {
  sendPage(res, { status, title: 'Error', body: `<h1>Something went wrong</h1><p class="error">${escapeHtml(message)}</p>` });
}

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

/** The request body as text, or null when it is over MAX_BODY. */
const readBody = (req) => readBodyUpTo(req, MAX_BODY);

const isFormBody = (req) => /^application\/x-www-form-urlencoded\s*(;|$)/i.test(req.headers['content-type'] ?? '');

/** A parameter named more than once, if any. */
function repeatedParam(params) {
  return [...new Set(params.keys())].find((name) => params.getAll(name).length > 1);
}

function cookieValues(req, name) {
  return (req.headers.cookie ?? '').split(';').map((part) => part.trim().split('='))
    .filter(([key]) => key === name).map(([, ...value]) => value.join('='));
}

/** The ids of the catalogue's banks that a `providers` value (groups or ids) covers. */
function banksCoveredBy(providers) {
  const asked = new Set(providers.split(' ').filter(Boolean));
  return Object.entries(PROVIDERS).filter(([id, bank]) => asked.has(id) || asked.has(bank.group)).map(([id]) => id);
}

/** What is wrong with an authorization request of a known client and redirect URI, if anything. */
function authorizationProblem(q) {
  const repeated = repeatedParam(q);
  if (repeated) return `${repeated} is repeated`;
  const mode = q.get('response_mode');
  if (mode !== null && mode !== 'form_post') return 'response_mode must be form_post, or absent';
  if (q.get('response_type') !== 'code') return 'response_type must be code';
  const scopes = (q.get('scope') ?? '').split(' ').filter(Boolean);
  if (!scopes.length) return 'scope is required';
  const unknown = scopes.find((scope) => !SCOPES.includes(scope));
  if (unknown) return `unknown scope ${unknown}`;
  if (!q.get('nonce')) return 'nonce is required';
  if (!q.get('providers')) return 'providers is required';
  const covered = banksCoveredBy(q.get('providers'));
  if (!covered.length) return 'providers covers no provider';
  const providerId = q.get('provider_id');
  if (providerId !== null && !covered.includes(providerId)) return 'provider_id is not covered by providers';
  const challenge = q.get('code_challenge');
  const method = q.get('code_challenge_method');
  if (challenge === null && method !== null) return 'code_challenge_method without code_challenge';
  if (challenge !== null && method !== 'S256') return 'code_challenge_method must be S256';
  if (challenge !== null && !/^[A-Za-z0-9_-]{43}$/.test(challenge)) return 'code_challenge must be a base64url SHA-256';
  return null;
}

/** Why a code_verifier does not answer the authorization request's code_challenge, if it does not. */
function pkceProblem(challenge, verifier) {
  // RFC 9700 section 2.1.1: a verifier without a challenge is refused (no PKCE downgrade).
  if (challenge === null) return verifier === null ? null : 'code_verifier given, but the authorization request had no code_challenge';
  if (verifier === null) return 'code_verifier is required';
  if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) return 'code_verifier is malformed';
  return sha256(verifier).toString('base64url') === challenge ? null : 'code_verifier does not match the code_challenge';
}

/** An IBAN for a GB sort code and account number (ISO 13616 check digits). */
function ibanOf(bankCode, sortCode, number) {
  const bban = `${bankCode}${sortCode.replaceAll('-', '')}${number}`;
  const digits = `${bban}GB00`.replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  const check = 98 - Number(BigInt(digits) % 97n);
  return `GB${String(check).padStart(2, '0')}${bban}`;
}

function accountOf(account, providerId) {
  const bank = PROVIDERS[providerId];
  const number = String(sha256(account.id).readUInt32BE(0) % 100_000_000).padStart(8, '0');
  const transaction = account.type !== 'savings';
  return {
    account_id: account.id,
    account_type: transaction ? 'TRANSACTION' : 'SAVINGS',
    display_name: account.name,
    currency: 'GBP',
    account_number: {
      number,
      sort_code: bank.sortCode,
      ...(transaction ? { iban: ibanOf(bank.bankCode, bank.sortCode, number) } : {}),
    },
    provider: { provider_id: providerId, display_name: bank.name },
    update_timestamp: isoNow(),
  };
}

function transactionOf(txn) {
  const refund = /^Refund: (.+)$/.exec(txn.description);
  const nonMerchant = NON_MERCHANT_CATEGORIES[txn.description];
  const category = nonMerchant ?? (refund ? 'CREDIT' : DIRECT_DEBITS.has(txn.description) ? 'DIRECT_DEBIT' : 'PURCHASE');
  return {
    transaction_id: txn.id,
    timestamp: `${txn.booked_on}T00:00:00+00:00`,
    description: txn.description,
    amount: pounds(txn.amount_pence),
    currency: 'GBP',
    transaction_type: txn.amount_pence < 0 ? 'DEBIT' : 'CREDIT',
    transaction_category: category,
    ...(nonMerchant ? {} : { merchant_name: refund?.[1] ?? txn.description }),
  };
}

/**
 * `from` and `to` of a transactions query as epoch ms (a date or a date-time, UTC unless it
 * has an offset), or null when one is not an ISO 8601 date or `from` is after `to`.
 */
function dateRange(search) {
  const bound = (value, fallback) => {
    if (value === null) return fallback;
    const parts = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/.exec(value);
    if (!parts) return NaN;
    return Date.parse(parts[1] && !parts[4] ? `${value}Z` : value);
  };
  const from = bound(search.get('from'), -Infinity);
  const to = bound(search.get('to'), Infinity);
  return Number.isNaN(from) || Number.isNaN(to) || from > to ? null : { from, to };
}

function logoSvg(name) {
  const initials = name.split(' ').map((word) => word[0]).join('').slice(0, 2);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64"><rect width="64" height="64" rx="12" fill="#0d6e6e"/><text x="32" y="41" font-family="sans-serif" font-size="24" fill="#fff" text-anchor="middle">${escapeHtml(initials)}</text></svg>`;
}

export async function startTrueLayer({
  port,
  redirectUris,
  clientId = 'consentry-truelayer',
  clientSecret,
  testControls = false,
  accessTokenTtl = 3600,
}) {
  if (!Number.isInteger(port)) throw new TypeError('startTrueLayer: port must be an integer');
  if (!Array.isArray(redirectUris) || !redirectUris.length) throw new TypeError('startTrueLayer: redirectUris must be a non-empty array');
  if (typeof clientSecret !== 'string' || !clientSecret) throw new TypeError('startTrueLayer: clientSecret is required');
  if (!Number.isInteger(accessTokenTtl) || accessTokenTtl < 1) throw new TypeError('startTrueLayer: accessTokenTtl must be a positive integer (seconds)');

  const url = `http://localhost:${port}`;
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const kid = `truelayer-${token(6)}`;
  const ledger = buildLedger();

  const interactions = new Map(); // id -> { binding, request, providerId, holder, loginError, expiresAt }
  const codes = new Map(); // code -> { request, providerId, holder, expiresAt }
  const connections = new Map(); // credentials_id -> connection
  const refreshTokens = new Map(); // the current refresh token of each connection -> credentials_id
  let nextAuthorizationError = null;

  const { requests } = recording(testControls, ['requests']);
  const issued = recording(testControls, ['codes', 'accessTokens', 'refreshTokens', 'connections']);

  function sweep(map) {
    for (const [key, entry] of map) if (entry.expiresAt <= now()) map.delete(key);
  }

  // ---- The auth dialog ----

  /** Sends `fields` to the client's redirect URI: a 302 with a query, or a form_post page. */
  function sendToClient(res, request, fields) {
    if (request.formPost) {
      const inputs = Object.entries(fields).map(([name, value]) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`).join('');
      sendPage(res, {
        title: 'Returning to the app',
        body: `<h1>Returning to the app…</h1><p>If nothing happens, continue below.</p>
<form method="post" action="${escapeHtml(request.redirectUri)}">${inputs}<button class="allow" type="submit">Continue</button></form>`,
        formAction: new URL(request.redirectUri).origin,
        script: 'document.forms[0].submit();',
      });
      return;
    }
    const target = new URL(request.redirectUri);
    for (const [name, value] of Object.entries(fields)) target.searchParams.append(name, value);
    res.writeHead(302, { Location: target.toString(), 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer' });
    res.end();
  }

  const stateOf = (request) => (request.state === null ? {} : { state: request.state });

  function authorize(res, q) {
    if (q.getAll('client_id').length !== 1 || q.get('client_id') !== clientId) {
      sendErrorPage(res, 400, 'invalid_client: unknown client_id');
      return;
    }
    if (q.getAll('redirect_uri').length !== 1 || !redirectUris.includes(q.get('redirect_uri'))) {
      sendErrorPage(res, 400, 'invalid_request: redirect_uri is not registered for this client');
      return;
    }
    const request = {
      redirectUri: q.get('redirect_uri'),
      state: q.getAll('state').length === 1 ? q.get('state') : null,
      formPost: q.get('response_mode') === 'form_post' && q.getAll('response_mode').length === 1,
    };
    const problem = authorizationProblem(q);
    if (problem) {
      sendToClient(res, request, { error: 'invalid_request', error_description: problem, ...stateOf(request) });
      return;
    }
    Object.assign(request, {
      scopes: q.get('scope').split(' ').filter(Boolean),
      covered: banksCoveredBy(q.get('providers')),
      codeChallenge: q.get('code_challenge'),
    });
    sweep(interactions);
    const id = token(16);
    const binding = token(24);
    interactions.set(id, {
      binding, request, providerId: q.get('provider_id'), holder: null, loginError: null, expiresAt: now() + INTERACTION_TTL,
    });
    res.writeHead(303, {
      Location: `/interaction/${id}`,
      'Cache-Control': 'no-store',
      'Set-Cookie': `${COOKIE}=${binding}; Path=/interaction/${id}; Max-Age=${INTERACTION_TTL / 1000}; HttpOnly; SameSite=Lax`,
    });
    res.end();
  }

  const stepOf = (interaction) => (!interaction.providerId ? 'select_provider' : !interaction.holder ? 'login' : 'consent');

  function showStep(res, id, interaction) {
    const action = `/interaction/${id}`;
    const formAction = `'self' ${new URL(interaction.request.redirectUri).origin}`;
    const step = stepOf(interaction);
    if (step === 'select_provider') {
      const banks = interaction.request.covered.map((bankId) => `<button class="bank" type="submit" name="provider_id" value="${escapeHtml(bankId)}">${escapeHtml(PROVIDERS[bankId].name)}</button>`).join('');
      sendPage(res, {
        title: 'Choose your bank',
        formAction,
        body: `<h1>Choose your bank</h1><p><b>${escapeHtml(clientId)}</b> asks to read your account data through TrueLayer.</p>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="select_provider">${banks}</form>`,
      });
      return;
    }
    const bank = PROVIDERS[interaction.providerId];
    if (step === 'login') {
      const error = interaction.loginError ? `<p class="error">${escapeHtml(interaction.loginError)}</p>` : '';
      interaction.loginError = null;
      sendPage(res, {
        title: `Sign in to ${bank.name}`,
        formAction,
        body: `<h1>${escapeHtml(bank.name)}</h1><p>Sign in to continue</p>${error}
<form method="post" action="${action}"><input type="hidden" name="prompt" value="login">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="allow" type="submit">Sign in</button></form>`,
      });
      return;
    }
    const permissions = interaction.request.scopes.map((scope) => `<li>${escapeHtml(SCOPE_NAMES[scope])}</li>`).join('');
    sendPage(res, {
      title: 'Share your data',
      formAction,
      body: `<h1>Share your data?</h1><p><b>${escapeHtml(clientId)}</b> asks to read, at <b>${escapeHtml(bank.name)}</b>:</p>
<ul>${permissions}</ul>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="consent">
<button class="allow" name="decision" value="allow" type="submit">Allow</button><button class="deny" name="decision" value="deny" type="submit">Deny</button></form>`,
    });
  }

  function finish(res, id, interaction, fields) {
    interactions.delete(id);
    sendToClient(res, interaction.request, fields);
  }

  function issueCode(res, id, interaction) {
    sweep(codes);
    const code = token(32);
    codes.set(code, {
      request: interaction.request, providerId: interaction.providerId, holder: interaction.holder, expiresAt: now() + CODE_TTL,
    });
    issued.codes.push(code);
    finish(res, id, interaction, { code, ...stateOf(interaction.request), scope: interaction.request.scopes.join(' ') });
  }

  /** Applies a POST of the current step's form; true when it ended the interaction. */
  function advance(res, id, interaction, form) {
    const step = stepOf(interaction);
    if (form.get('prompt') !== step) return false;
    if (step === 'select_provider') {
      if (interaction.request.covered.includes(form.get('provider_id'))) interaction.providerId = form.get('provider_id');
      return false;
    }
    if (step === 'login') {
      const account = Object.hasOwn(ACCOUNTS, form.get('login') ?? '') ? ACCOUNTS[form.get('login')] : null;
      if (!account || !safeEqual(form.get('password'), account.password)) {
        interaction.loginError = 'Wrong username or password';
        return false;
      }
      interaction.holder = form.get('login');
      if (nextAuthorizationError) {
        const error = nextAuthorizationError;
        nextAuthorizationError = null;
        finish(res, id, interaction, { error, ...stateOf(interaction.request) });
        return true;
      }
      return false;
    }
    if (form.get('decision') === 'allow') {
      issueCode(res, id, interaction);
      return true;
    }
    if (form.get('decision') === 'deny') {
      finish(res, id, interaction, { error: 'access_denied', ...stateOf(interaction.request) });
      return true;
    }
    return false;
  }

  function interactionRequest(req, res, id, body) {
    const interaction = interactions.get(id);
    const bound = interaction && cookieValues(req, COOKIE).some((value) => safeEqual(value, interaction.binding));
    if (!bound || interaction.expiresAt <= now()) {
      sendErrorPage(res, 400, 'This sign-in has expired or was started in another browser. Go back to the app and start again.');
      return;
    }
    if (req.method === 'GET') {
      showStep(res, id, interaction);
      return;
    }
    if (req.method !== 'POST' || !isFormBody(req)) {
      sendErrorPage(res, 400, 'invalid_request: the form could not be read');
      return;
    }
    if (advance(res, id, interaction, new URLSearchParams(body))) return;
    res.writeHead(303, { Location: `/interaction/${id}`, 'Cache-Control': 'no-store' });
    res.end();
  }

  // ---- The token endpoint ----

  async function issueTokens(connection) {
    const iat = Math.floor(now() / 1000);
    const exp = Math.min(iat + accessTokenTtl, Math.floor(connection.expiresAt / 1000));
    const jti = token(16);
    const accessToken = await new SignJWT({ client_id: clientId, scope: connection.scopes.join(' '), connector_id: connection.providerId })
      .setProtectedHeader({ alg: 'RS256', kid })
      .setIssuer(url).setSubject(connection.credentialsId)
      .setIssuedAt(iat).setExpirationTime(exp).setJti(jti)
      .sign(privateKey);
    connection.latestJti = jti;
    issued.accessTokens.push(accessToken);
    const answer = { access_token: accessToken, expires_in: exp - iat, token_type: 'Bearer' };
    if (connection.scopes.includes('offline_access')) {
      refreshTokens.delete(connection.refreshToken);
      connection.refreshToken = token(32);
      connection.refreshIssuedAt = now();
      refreshTokens.set(connection.refreshToken, connection.credentialsId);
      issued.refreshTokens.push(connection.refreshToken);
      answer.refresh_token = connection.refreshToken;
    }
    answer.scope = connection.scopes.join(' ');
    return answer;
  }

  // PROVIDERS.md names the refusal of a bad code `invalid_authorization_code`; it is kept as
  // the description, with the RFC 6749 code `invalid_grant` as the error.
  const badCode = { status: 400, body: { error: 'invalid_grant', error_description: 'invalid_authorization_code' } };

  async function exchangeCode(form) {
    const code = form.get('code');
    const redirectUri = form.get('redirect_uri');
    if (!code || !redirectUri) return { status: 400, body: { error: 'invalid_request', error_description: 'code and redirect_uri are required' } };
    const grant = codes.get(code);
    codes.delete(code);
    if (!grant || grant.expiresAt <= now()) return badCode;
    if (redirectUri !== grant.request.redirectUri) {
      return { status: 400, body: { error: 'invalid_grant', error_description: 'redirect_uri does not match the authorization request' } };
    }
    const pkce = pkceProblem(grant.request.codeChallenge, form.get('code_verifier'));
    if (pkce) return { status: 400, body: { error: 'invalid_grant', error_description: pkce } };
    const createdAt = now();
    const connection = {
      credentialsId: token(16),
      providerId: grant.providerId,
      holder: grant.holder,
      scopes: grant.request.scopes,
      createdAt,
      expiresAt: createdAt + CONNECTION_TTL,
      revoked: false,
      latestJti: null,
      refreshToken: null,
      refreshIssuedAt: null,
    };
    connections.set(connection.credentialsId, connection);
    issued.connections.push({
      credentialsId: connection.credentialsId, providerId: connection.providerId, holder: connection.holder, scopes: [...connection.scopes], createdAt: new Date(createdAt).toISOString(),
    });
    return { status: 200, body: await issueTokens(connection) };
  }

  async function refresh(form) {
    const presented = form.get('refresh_token');
    if (!presented) return { status: 400, body: { error: 'invalid_request', error_description: 'refresh_token is required' } };
    const connection = connections.get(refreshTokens.get(presented));
    if (!connection) return { status: 400, body: { error: 'invalid_grant', error_description: 'the refresh token is unknown or was replaced' } };
    if (now() >= connection.expiresAt) return { status: 400, body: { error: 'invalid_grant', error_description: 'the connection has expired: reconnect' } };
    if (now() - connection.refreshIssuedAt > REFRESH_IDLE) return { status: 400, body: { error: 'invalid_grant', error_description: 'the refresh token was not used within 30 days: reconnect' } };
    return { status: 200, body: await issueTokens(connection) };
  }

  async function tokenEndpoint(req, res, body) {
    if (req.method !== 'POST') {
      sendJson(res, 405, { error: 'invalid_request', error_description: 'POST only' }, { Allow: 'POST' });
      return;
    }
    if (req.headers.authorization !== undefined) {
      sendJson(res, 401, { error: 'invalid_client', error_description: 'client_secret_post only: send client_id and client_secret in the form body' });
      return;
    }
    if (!isFormBody(req)) {
      sendJson(res, 400, { error: 'invalid_request', error_description: 'the body must be application/x-www-form-urlencoded' });
      return;
    }
    const form = new URLSearchParams(body);
    const repeated = repeatedParam(form);
    if (repeated) {
      sendJson(res, 400, { error: 'invalid_request', error_description: `${repeated} is repeated` });
      return;
    }
    if (form.get('client_id') !== clientId || !safeEqual(form.get('client_secret'), clientSecret)) {
      sendJson(res, 401, { error: 'invalid_client' });
      return;
    }
    const grantType = form.get('grant_type');
    let answer;
    if (grantType === 'authorization_code') answer = await exchangeCode(form);
    else if (grantType === 'refresh_token') answer = await refresh(form);
    else if (!grantType) answer = { status: 400, body: { error: 'invalid_request', error_description: 'grant_type is required' } };
    else answer = { status: 400, body: { error: 'unsupported_grant_type' } };
    sendJson(res, answer.status, answer.body, { Pragma: 'no-cache' });
  }

  // ---- The Data API ----

  /** The connection of the request's Bearer token, or `{ problem }` when there is none. */
  async function bearerConnection(req) {
    const match = /^Bearer ([\w.~+/-]+=*)$/i.exec(req.headers.authorization ?? '');
    if (!match) return { problem: 'a Bearer access token is required' };
    let payload;
    try {
      ({ payload } = await jwtVerify(match[1], publicKey, {
        issuer: url, algorithms: ['RS256'], requiredClaims: ['exp', 'sub', 'jti'], currentDate: new Date(now()),
      }));
    } catch {
      return { problem: 'the access token is invalid or expired' };
    }
    const connection = connections.get(payload.sub);
    if (!connection || payload.jti !== connection.latestJti) return { problem: 'the access token was replaced by a newer one' };
    if (now() >= connection.expiresAt) return { problem: 'the connection has expired' };
    return { connection };
  }

  function meOf(connection) {
    const bank = PROVIDERS[connection.providerId];
    return {
      client_id: clientId,
      credentials_id: connection.credentialsId,
      consent_status: 'Authorised',
      consent_created_at: new Date(connection.createdAt).toISOString(),
      consent_expires_at: new Date(connection.expiresAt).toISOString(),
      provider: { display_name: bank.name, logo_uri: `${url}/logos/${connection.providerId}.svg`, provider_id: connection.providerId },
      scopes: [...connection.scopes],
    };
  }

  /** The answer to a data request of a live, consented connection: `{ status, body }`. */
  function dataAnswer(connection, path, search) {
    const ok = (results) => ({ status: 200, body: { results, status: 'Succeeded' } });
    const lacks = (scope) => (connection.scopes.includes(scope) ? null
      : { status: 403, body: { error: 'insufficient_scope', error_description: `this needs the ${scope} scope` } });
    const holdings = HOLDINGS[connection.holder] ?? [];
    if (path === '/data/v1/me') return ok([meOf(connection)]);
    if (path === '/data/v1/info') {
      const holder = ACCOUNTS[connection.holder];
      return lacks('info') ?? ok([{ full_name: holder.name, emails: [holder.email], update_timestamp: isoNow() }]);
    }
    if (path === '/data/v1/accounts') return lacks('accounts') ?? ok(holdings.map((account) => accountOf(account, connection.providerId)));
    const match = /^\/data\/v1\/accounts\/([^/]+)(?:\/(balance|transactions))?$/.exec(path);
    if (!match) return { status: 404, body: { error: 'not_found', error_description: 'no such endpoint' } };
    const [, id, what = 'accounts'] = match;
    const refused = lacks(what);
    if (refused) return refused;
    const account = holdings.find((held) => held.id === id);
    if (!account) return { status: 404, body: { error: 'account_not_found', error_description: 'no such account' } };
    const book = ledger.get(account.id);
    if (what === 'accounts') return ok([accountOf(account, connection.providerId)]);
    if (what === 'balance') {
      return ok([{ currency: 'GBP', available: pounds(book.balance), current: pounds(book.balance), update_timestamp: book.asOf }]);
    }
    const range = dateRange(search);
    if (!range) return { status: 400, body: { error: 'invalid_date_range', error_description: 'from and to must be ISO 8601 dates, from not after to' } };
    return ok(book.transactions.map(transactionOf).filter((txn) => {
      const at = Date.parse(txn.timestamp);
      return at >= range.from && at <= range.to;
    }));
  }

  async function dataApi(req, res, target) {
    const { connection, problem } = await bearerConnection(req);
    if (!connection) {
      sendJson(res, 401, { error: 'unauthorized', error_description: problem }, { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
      return;
    }
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'method_not_allowed' }, { Allow: 'GET' });
      return;
    }
    if (connection.revoked) {
      sendJson(res, 403, { error: 'access_denied', error_description: 'the account holder has revoked the consent: reconnect' });
      return;
    }
    const answer = dataAnswer(connection, target.pathname, target.searchParams);
    sendJson(res, answer.status, answer.body);
  }

  // ---- Test controls ----

  /** The connections a control's body names (a credentials_id or `all`). */
  const connectionsNamed = (name) => (name === 'all' ? [...connections.values()] : [connections.get(name)].filter(Boolean));

  function testControl(res, path, body) {
    const value = body.trim();
    const text = (status, message) => {
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(message);
    };
    if (path === '/__test/next-authorization-error') {
      if (!/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(value)) return text(400, 'expected an error code (RFC 6749 characters, no spaces)');
      nextAuthorizationError = value;
      return text(200, value);
    }
    const named = connectionsNamed(value);
    if (!named.length && value !== 'all') return text(404, 'no such connection');
    if (path === '/__test/revoke-connection') {
      for (const connection of named) connection.revoked = true;
      return text(200, `revoked ${named.length}`);
    }
    for (const connection of named) connection.expiresAt = Math.min(connection.expiresAt, now());
    return text(200, `expired ${named.length}`);
  }

  const CONTROLS = ['/__test/revoke-connection', '/__test/expire-connection', '/__test/next-authorization-error'];

  // ---- Routing ----

  async function route(req, res) {
    const target = new URL(req.url, url);
    const body = await readBody(req);
    requests.push({
      method: req.method,
      path: target.pathname,
      query: Object.fromEntries(target.searchParams),
      form: body !== null && isFormBody(req) ? Object.fromEntries(new URLSearchParams(body)) : null,
      authorization: req.headers.authorization ?? null,
    });
    if (body === null) {
      sendJson(res, 413, { error: 'invalid_request', error_description: 'the body is too large' });
      return;
    }
    const path = target.pathname;
    const interaction = /^\/interaction\/([\w-]{22})$/.exec(path);
    const logo = /^\/logos\/([\w-]+)\.svg$/.exec(path);
    if (path === '/' && req.method === 'GET') authorize(res, target.searchParams);
    else if (interaction) interactionRequest(req, res, interaction[1], body);
    else if (path === '/connect/token') await tokenEndpoint(req, res, body);
    else if (path.startsWith('/data/v1/')) await dataApi(req, res, target);
    else if (logo && Object.hasOwn(PROVIDERS, logo[1]) && req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'image/svg+xml', 'Cache-Control': 'public, max-age=86400', 'Content-Security-Policy': "default-src 'none'" });
      res.end(logoSvg(PROVIDERS[logo[1]].name));
    } else if (testControls && CONTROLS.includes(path) && req.method === 'POST') testControl(res, path, body);
    else sendJson(res, 404, { error: 'not_found' });
  }

  const server = createServer((req, res) => {
    route(req, res).catch((error) => {
      console.error(`truelayer: ${req.method} ${new URL(req.url, url).pathname} failed: ${error.stack}`);
      if (res.headersSent) res.destroy();
      else sendJson(res, 500, { error: 'server_error' });
    });
  });
  const close = await listen(server, port);
  return {
    url,
    server,
    issued,
    requests,
    close,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { url } = await startTrueLayer({
    port: Number(process.env.TRUELAYER_PORT || 9002),
    redirectUris: (process.env.TRUELAYER_REDIRECT_URIS || 'http://localhost:8787/auth/callback/truelayer').split(','),
    clientSecret: process.env.TRUELAYER_CLIENT_SECRET || 'consentry-truelayer-secret-change-me-0123',
    testControls: process.env.TRUELAYER_TEST_CONTROLS === '1',
    accessTokenTtl: Number(process.env.TRUELAYER_ACCESS_TOKEN_TTL || 3600),
  });
  console.log(`TrueLayer emulation listening at ${url} (client consentry-truelayer; providers: ${Object.keys(PROVIDERS).join(', ')}; accounts: ${Object.keys(ACCOUNTS).join(', ')}; password = username)`);
}
