// A local FAPI 2.0 authorization server: an Ozone-style Open Finance Platform (OFP) for the
// end-to-end tests and the demo, built on oidc-provider (OpenID Certified, FAPI 2.0 profile).
// It behaves as /work/shared/PROVIDERS.md ("FAPI 2.0 platforms") describes a platform, not as
// our client happens to expect:
//
// - PAR is required (`require_pushed_authorization_requests`), with a request object signed
//   PS256 (`aud` = the issuer, `iss` = `client_id`, `exp`, `nbf`, `jti`; `exp` at most 600 s
//   after `nbf`, `nbf` at most 600 s old) carrying every authorization parameter (anything
//   outside it is ignored); client authentication `private_key_jwt` (PS256, `aud` = the
//   issuer). The `request_uri` lives 600 s (never longer than the request object).
// - The front channel is `GET /auth?client_id=...&request_uri=...`; PKCE S256 and
//   `redirect_uri` are required; the answer is a 303 to the redirect URI with `code` (60 s),
//   `state` and `iss` (RFC 9207), or `error` + `state` + `iss`. A malformed or tampered
//   request (no PAR, bad signature, expired `request_uri`) gets an error page, no redirect.
// - Consent details as RFC 9396 `authorization_details` of one type,
//   `urn:openfinance-ml:account-access-consent:v1.2`:
//   `{ type, consent: { dp_id?, permissions: [read_accounts|read_balances|read_transactions],
//   expiration_datetime?, consent_purpose? } }`. Without `dp_id` the consent page is the
//   platform's bank picker (default `demo-bank`). The token response echoes the granted
//   details, each with the platform's `consent_id` (one per grant), `status: "Authorized"`
//   and `expiration_datetime` (the asked one, or 90 days), on refreshes too.
// - Tokens are DPoP-bound (RFC 9449): the token endpoint requires a proof with a server nonce
//   (`use_dpop_nonce` + `DPoP-Nonce` first); `dpop_jkt` in the PAR binds the code. Access
//   tokens live 600 s by default; refresh tokens are issued without `offline_access`, last as
//   long as the consent and are NOT rotated (a refresh answers the same refresh token).
//   id_tokens are signed PS256.
// - The data API under /data/v1 (bank/data-api.mjs: same paths and JSON) answers only to
//   `Authorization: DPoP <token>` with a valid `DPoP` proof of the token's key (typ, alg ES256
//   or PS256, public jwk, htm, htu, iat within 60 s, unseen jti, ath, and a nonce the data API
//   issued: without one, 401 `use_dpop_nonce` with a `DPoP-Nonce`).
// - The OAuth endpoints and the data API answer with `x-fapi-interaction-id` (the request's,
//   or a fresh UUID).
//
// Not emulated: mTLS (client auth and token binding), signed data API requests
// (`x-signature`), encrypted responses, `POST /consents/{consent_id}/revoke`.
//
//   const bank = await startFapiBank({ port, redirectUris, clientJwks, testControls: true });
//   ... bank.issuer, bank.issued ...
//   await bank.close();
//
// With `testControls`, `issued` records what the platform hands out and sees (see below), and
//   POST /__test/next-authorization-error   body: access_denied | invalid_request |
//                                           server_error | temporarily_unavailable
// makes the NEXT authorization end, right after a successful login, with a redirect carrying
// that error (with `state` and `iss`), and
//   POST /__test/token-type                 body: Bearer (or normal)
// makes the token endpoint answer with that token_type (the tokens stay DPoP-bound).
//
// Run directly (`node bank/fapi-bank.mjs`), configured by the environment:
//   FAPI_BANK_PORT            port (default 9001); the issuer is http://localhost:PORT
//   FAPI_BANK_REDIRECT_URIS   comma-separated redirect URIs of `consentry-fapi` (default
//                             http://localhost:8787/auth/callback/open-finance)
//   FAPI_BANK_CLIENT_JWKS     JSON public JWKS of `consentry-fapi` (PS256 RSA keys, with kid);
//                             required
//   FAPI_BANK_ACCESS_TOKEN_TTL access tokens' lifetime in seconds (default 600)
//   FAPI_BANK_TEST_CONTROLS   `1` turns the test controls on

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
import {
  calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, EmbeddedJWK, jwtVerify,
} from 'jose';

import { ACCOUNTS } from './bank.mjs';
import { answerDataRequest, buildLedger } from './data-api.mjs';
import { escapeHtml, listen, providerPage } from './server.mjs';

export const CLIENT_ID = 'consentry-fapi';
export const CONSENT_TYPE = 'urn:openfinance-ml:account-access-consent:v1.2';
export const PERMISSIONS = ['read_accounts', 'read_balances', 'read_transactions'];
export const AUTHORIZATION_ERRORS = ['access_denied', 'invalid_request', 'server_error', 'temporarily_unavailable'];
/** The data providers (banks) the platform's picker offers; the first is the default. */
export const DATA_PROVIDERS = { 'demo-bank': 'Demo Bank', 'harbour-bank': 'Harbour Bank', 'summit-bank': 'Summit Bank' };

const PAR_TTL = 600;
const CODE_TTL = 60;
const CONSENT_DAYS = 90;
const REQUEST_OBJECT_MAX_LIFETIME = 600;
const DPOP_ALGS = ['ES256', 'PS256'];
const DPOP_IAT_WINDOW = 60;
const DATA_NONCE_TTL = 300;
const PERMISSION_NAMES = {
  read_accounts: 'Your accounts (names and types)',
  read_balances: 'Your balances',
  read_transactions: 'Your transactions',
};
const ERROR_DESCRIPTIONS = {
  access_denied: 'The account holder did not authorize the consent',
  invalid_request: 'The authorization request could not be processed',
  server_error: 'The platform met an unexpected condition',
  temporarily_unavailable: 'The platform is temporarily unavailable, try again later',
};

function page(title, body) {
  return providerPage({ title, body, brand: 'Open Finance Platform', accent: '#2746a8', background: '#1d2b53', width: 340 });
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** The request's `x-fapi-interaction-id` if it is 1-64 of `A-Za-z0-9_-` (a UUID is), else a fresh UUID. */
const interactionIdOf = (value) => (typeof value === 'string' && /^[\w-]{1,64}$/.test(value) ? value : randomUUID());
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');
const epoch = () => Math.floor(Date.now() / 1000);

/** Seconds until the earliest `expiration_datetime` of granted details (90 days without). */
function consentLifetime(details) {
  const ends = (details || []).map((detail) => Date.parse(detail.expiration_datetime)).filter(Number.isFinite);
  if (!ends.length) return CONSENT_DAYS * 86_400;
  return Math.max(60, Math.floor((Math.min(...ends) - Date.now()) / 1000));
}

/** Validates one requested detail of CONSENT_TYPE (oidc-provider has checked `type`). */
function validateConsentDetail(_ctx, detail) {
  const fail = (why) => { throw new errors.InvalidAuthorizationDetails(why); };
  const { consent } = detail;
  if (!consent || typeof consent !== 'object' || Array.isArray(consent)) fail('consent must be an object');
  const known = new Set(['dp_id', 'permissions', 'expiration_datetime', 'consent_purpose']);
  for (const key of Object.keys(consent)) {
    if (!known.has(key)) fail(`unknown consent member ${key}`);
  }
  const { permissions } = consent;
  if (!Array.isArray(permissions) || !permissions.length) fail('consent.permissions must be a non-empty array');
  for (const permission of permissions) {
    if (!PERMISSIONS.includes(permission)) fail(`unknown permission ${typeof permission === 'string' ? permission : typeof permission}`);
  }
  if (new Set(permissions).size !== permissions.length) fail('consent.permissions has a duplicate');
  if ('dp_id' in consent && (typeof consent.dp_id !== 'string' || !/^[\w.-]{1,64}$/.test(consent.dp_id))) {
    fail('consent.dp_id must be an identifier of 1 to 64 characters');
  }
  if ('expiration_datetime' in consent) {
    const at = typeof consent.expiration_datetime === 'string' ? Date.parse(consent.expiration_datetime) : NaN;
    if (!/^\d{4}-\d{2}-\d{2}T/.test(consent.expiration_datetime) || !Number.isFinite(at)) fail('consent.expiration_datetime must be an ISO 8601 date-time');
    if (at <= Date.now() + 60_000) fail('consent.expiration_datetime must be in the future');
  }
  if ('consent_purpose' in consent) {
    const purposes = Array.isArray(consent.consent_purpose) ? consent.consent_purpose : [consent.consent_purpose];
    if (!purposes.length || purposes.some((p) => typeof p !== 'string' || !p.length || p.length > 256)) {
      fail('consent.consent_purpose must be a string or an array of strings');
    }
  }
  const common = new Set(['type', 'consent', 'locations', 'actions', 'datatypes', 'identifier', 'privileges']); // RFC 9396
  for (const key of Object.keys(detail)) {
    if (!common.has(key)) fail(`unknown authorization details member ${key}`);
  }
}

export async function startFapiBank({
  port,
  redirectUris,
  clientJwks,
  testControls = false,
  accessTokenTtl = 600,
}) {
  if (!Number.isInteger(port)) throw new TypeError('startFapiBank: port must be an integer');
  if (!Array.isArray(redirectUris) || !redirectUris.length) throw new TypeError('startFapiBank: redirectUris must be a non-empty array');
  if (!clientJwks || !Array.isArray(clientJwks.keys) || !clientJwks.keys.length) throw new TypeError('startFapiBank: clientJwks must be a JWKS ({ keys: [...] })');

  const issuer = `http://localhost:${port}`;
  const dataResource = `${issuer}/data/v1`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `ofp-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'PS256' };

  const client = {
    client_id: CLIENT_ID,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'PS256',
    request_object_signing_alg: 'PS256',
    require_signed_request_object: true,
    require_pushed_authorization_requests: true,
    id_token_signed_response_alg: 'PS256',
    dpop_bound_access_tokens: true,
    authorization_details_types: [CONSENT_TYPE],
    jwks: clientJwks,
    scope: 'openid accounts balance transactions offline_access',
  };

  const requestObjectJtis = new Map(); // jti -> exp, for request objects pushed
  // FAPI 2.0 (and the OFP) on request objects: aud, iss, exp, nbf, jti; exp at most 10
  // minutes after nbf, nbf at most 10 minutes in the past; a jti pushed once only.
  async function assertJwtClaimsAndHeader(ctx, claims) {
    for (const claim of ['aud', 'iss', 'exp', 'nbf', 'jti']) {
      if (claims[claim] === undefined) throw new errors.InvalidRequestObject(`Request Object is missing the '${claim}' claim`);
    }
    if (typeof claims.jti !== 'string' || !claims.jti.length) throw new errors.InvalidRequestObject("Request Object 'jti' must be a non-empty string");
    const lifetime = claims.exp - claims.nbf;
    if (!(lifetime > 0) || lifetime > REQUEST_OBJECT_MAX_LIFETIME) {
      throw new errors.InvalidRequestObject("Request Object 'exp' claim must be at most 600 seconds after its 'nbf' claim");
    }
    if (claims.nbf < epoch() - REQUEST_OBJECT_MAX_LIFETIME) throw new errors.InvalidRequestObject("Request Object 'nbf' claim is too far in the past");
    if (ctx.oidc.route === 'pushed_authorization_request') {
      const now = epoch();
      for (const [jti, exp] of requestObjectJtis) if (exp < now) requestObjectJtis.delete(jti);
      const key = `${ctx.oidc.client.clientId}\u0000${claims.jti}`;
      if (requestObjectJtis.has(key)) throw new errors.InvalidRequestObject("Request Object 'jti' was already used");
      requestObjectJtis.set(key, claims.exp + 60);
    }
  }

  const provider = new Provider(issuer, {
    clients: [client],
    jwks: { keys: [signingKey] },
    scopes: ['openid', 'accounts', 'balance', 'transactions', 'offline_access'],
    responseTypes: ['code'],
    clientAuthMethods: ['private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['PS256', 'ES256'],
      requestObjectSigningAlgValues: ['PS256', 'ES256'],
      idTokenSigningAlgValues: ['PS256'],
      dPoPSigningAlgValues: DPOP_ALGS,
    },
    claims: { openid: ['sub'] },
    features: {
      devInteractions: { enabled: false },
      fapi: { enabled: true, profile: '2.0' },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
      requestObjects: { enabled: true, requireSignedRequestObject: true, assertJwtClaimsAndHeader },
      claimsParameter: { enabled: true },
      dPoP: {
        enabled: true,
        nonceSecret: randomBytes(32),
        requireNonce: (ctx) => ctx.oidc.route === 'token',
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => dataResource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator) => {
          if (resourceIndicator !== dataResource) throw new errors.InvalidTarget();
          return { scope: 'accounts balance transactions', accessTokenFormat: 'opaque', accessTokenTTL: accessTokenTtl };
        },
      },
      richAuthorizationRequests: {
        enabled: true,
        types: { [CONSENT_TYPE]: { validate: validateConsentDetail } },
        // The code carries what the account holder granted (kept on the grant at consent).
        authorizationDetailsForGrantSource: (ctx) => ctx.oidc.grant?.rar,
        // Access tokens (from a code or a refresh token) carry the granted details unchanged.
        authorizationDetailsForAccessToken: (_ctx, _token, source) => source?.rar,
        authorizationDetailsForIntrospection: (_ctx, token) => token.rar,
      },
    },
    // A platform issues a refresh token with every grant (no offline_access needed), living
    // as long as the consent, and keeps it across refreshes.
    issueRefreshToken: (_ctx, cl) => cl.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: false,
    expiresWithSession: () => false,
    // Every authorization is a new consent: a grant from an earlier one is never reused.
    loadExistingGrant: (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: (_ctx, id) => (ACCOUNTS[id] ? {
      accountId: id,
      claims: () => ({ sub: id, name: ACCOUNTS[id].name, email: ACCOUNTS[id].email }),
    } : undefined),
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: CODE_TTL,
      IdToken: 3600,
      RefreshToken: (_ctx, token) => consentLifetime(token.rar),
      Grant: (_ctx, grant) => consentLifetime(grant.rar) + 86_400,
      Interaction: 600,
      Session: 3600,
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Something went wrong</h1><p class="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description || '')}</p>`);
    },
  });
  provider.proxy = false;

  const ledger = buildLedger();
  let nextAuthorizationError = null;
  // With test controls on, what the platform hands out and sees (never read by the demo):
  //   codes:       { code, client_id, state } for every code sent to a redirect URI
  //   tokens:      { type: 'access_token' | 'refresh_token' | 'id_token', value, grant_type, token_type, client_id }
  //   exchanges:   { code, client_id, status, error } for every token request with a code
  //   refreshes:   { presented, status, error, rotated, authorization_details }
  //   pushes:      { status, error, request_uri, expires_in, requestObjectAlg, clientAssertionAlg,
  //                  dpop_jkt, authorization_details } for every PAR request
  //   dpopProofs:  { endpoint: 'par' | 'token' | 'data', htm, htu, nonce, jkt } for every DPoP
  //                header seen (decoded, whether or not it was valid)
  //   dataRequests: { method, path, token, status, reason } for every data API request
  //   revocations: { token, status } for every revocation request (RFC 7009)
  //   (tokens also record `jkt`: the key an access token is bound to)
  const issued = testControls ? {
    codes: [], tokens: [], exchanges: [], refreshes: [], pushes: [], dpopProofs: [], dataRequests: [], revocations: [],
  } : null;

  let tokenTypeOverride = null;

  async function recordProof(endpoint, proof) {
    if (!issued || !proof) return;
    const entry = { endpoint, htm: undefined, htu: undefined, nonce: undefined, jkt: undefined };
    try {
      const header = decodeProtectedHeader(proof);
      const payload = decodeJwt(proof);
      Object.assign(entry, { htm: payload.htm, htu: payload.htu, nonce: payload.nonce });
      if (header.jwk) entry.jkt = await calculateJwkThumbprint(header.jwk);
    } catch { /* recorded as unreadable */ }
    issued.dpopProofs.push(entry);
  }

  provider.use(async (ctx, next) => {
    ctx.set('x-fapi-interaction-id', interactionIdOf(ctx.get('x-fapi-interaction-id')));
    // The front channel takes client_id + request_uri only (PAR required). oidc-provider
    // would send a request without request_uri back to its redirect_uri with an error; the
    // platform shows an error page instead, as it does for any malformed request.
    if (ctx.path === '/auth' && (ctx.method === 'POST' || (ctx.method === 'GET' && !ctx.query.request_uri))) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.set('Cache-Control', 'no-store');
      ctx.body = page('Error', '<h1>Something went wrong</h1><p class="error">invalid_request: Pushed Authorization Request must be used</p>');
      return;
    }
    const isPar = ctx.path === '/request' && ctx.method === 'POST';
    const isToken = ctx.path === '/token' && ctx.method === 'POST';
    if (isPar || isToken) await recordProof(isPar ? 'par' : 'token', ctx.get('DPoP'));
    await next();
    // oidc-provider caps a request_uri at 60 s; the platform keeps it 600 s (FAPI 2.0 allows
    // up to 600), never beyond the request object's own exp.
    const par = ctx.oidc?.entities?.PushedAuthorizationRequest;
    if (isPar && ctx.status === 201 && par && ctx.body && typeof ctx.body === 'object') {
      let exp;
      try { ({ exp } = decodeJwt(par.request)); } catch { exp = undefined; }
      const ttl = Number.isInteger(exp) ? Math.max(1, Math.min(PAR_TTL, exp - epoch())) : PAR_TTL;
      await par.save(ttl);
      ctx.body.expires_in = ttl;
    }
    // A test control: answer with another token_type than the tokens have (a client must
    // refuse a Bearer answer to a DPoP-proved request).
    if (isToken && tokenTypeOverride && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      ctx.body.token_type = tokenTypeOverride;
    }
    if (issued) await record(ctx, { isPar, isToken });
  });

  async function record(ctx, { isPar, isToken }) {
    const params = ctx.oidc?.params || {};
    if (ctx.path === '/token/revocation' && ctx.method === 'POST') {
      issued.revocations.push({ token: params.token, status: ctx.status });
    }
    const clientId = ctx.oidc?.client?.clientId;
    let body = ctx.body;
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      try { body = JSON.parse(String(body)); } catch { body = null; }
    }
    if (isPar) {
      const form = ctx.oidc?.body || {};
      const entry = {
        status: ctx.status,
        error: body?.error,
        request_uri: body?.request_uri,
        expires_in: body?.expires_in,
        requestObjectAlg: null,
        clientAssertionAlg: null,
        dpop_jkt: typeof form.dpop_jkt === 'string' ? form.dpop_jkt : undefined,
        authorization_details: undefined,
      };
      try { entry.clientAssertionAlg = decodeProtectedHeader(form.client_assertion).alg ?? null; } catch { /* none */ }
      try {
        entry.requestObjectAlg = decodeProtectedHeader(form.request).alg ?? null;
        const payload = decodeJwt(form.request);
        entry.dpop_jkt = payload.dpop_jkt ?? entry.dpop_jkt;
        entry.authorization_details = payload.authorization_details;
      } catch { /* no request object */ }
      issued.pushes.push(entry);
    }
    if (isToken) {
      if (params.grant_type === 'authorization_code') {
        issued.exchanges.push({ code: params.code, client_id: clientId, status: ctx.status, error: body?.error });
      }
      if (params.grant_type === 'refresh_token') {
        issued.refreshes.push({
          presented: params.refresh_token,
          status: ctx.status,
          error: body?.error,
          rotated: ctx.status === 200 && body?.refresh_token && body.refresh_token !== params.refresh_token ? body.refresh_token : undefined,
          authorization_details: body?.authorization_details,
        });
      }
      if (ctx.status === 200 && body && typeof body === 'object') {
        for (const type of ['access_token', 'refresh_token', 'id_token']) {
          if (typeof body[type] === 'string') {
            // The key an access token is bound to (its cnf.jkt), as the platform stored it.
            const jkt = type === 'access_token' ? (await provider.AccessToken.find(body[type]))?.jkt : undefined;
            issued.tokens.push({ type, value: body[type], grant_type: params.grant_type, token_type: body.token_type, client_id: clientId, jkt });
          }
        }
      }
    }
    const location = ctx.response.get('Location');
    if (location && redirectUris.some((uri) => location.startsWith(uri))) {
      const target = new URL(location);
      const code = target.searchParams.get('code');
      if (code) issued.codes.push({ code, client_id: clientId, state: target.searchParams.get('state') });
    }
  }

  /** The details the account holder grants: the platform's consent id, status and expiry added. */
  function grantedDetails(requested, consentId, chosenDpId) {
    return requested.map((detail) => {
      const expiration = detail.consent.expiration_datetime
        ?? new Date(Date.now() + CONSENT_DAYS * 86_400_000).toISOString();
      return {
        ...detail,
        consent: { ...detail.consent, dp_id: detail.consent.dp_id ?? chosenDpId, expiration_datetime: expiration },
        consent_id: consentId,
        status: 'Authorized',
        expiration_datetime: expiration,
      };
    });
  }

  function consentPage(details, action) {
    const requested = details.prompt.details.rar || [];
    const clientName = escapeHtml(details.params.client_id);
    const needsPicker = requested.some((detail) => detail.consent && !detail.consent.dp_id);
    const banks = [...new Set(requested.map((detail) => detail.consent?.dp_id).filter(Boolean))];
    const permissions = [...new Set(requested.flatMap((detail) => detail.consent?.permissions || []))];
    const expiries = requested.map((detail) => detail.consent?.expiration_datetime).filter(Boolean);
    const purposes = requested.flatMap((detail) => [].concat(detail.consent?.consent_purpose ?? []));
    let intro;
    if (!requested.length) {
      const scopes = String(details.params.scope || '').split(' ').filter(Boolean);
      intro = `<p><b>${clientName}</b> asks for:</p><ul>${scopes.map((s) => `<li>${escapeHtml(s)}</li>`).join('')}</ul>`;
    } else {
      const where = banks.length
        ? `<p><b>${clientName}</b> asks to read your data at <b>${banks.map((b) => escapeHtml(DATA_PROVIDERS[b] ? `${DATA_PROVIDERS[b]} (${b})` : b)).join(', ')}</b>:</p>`
        : `<p><b>${clientName}</b> asks to read your data. Choose your bank:</p>`;
      intro = `${where}<ul>${permissions.map((p) => `<li>${escapeHtml(PERMISSION_NAMES[p] || p)}</li>`).join('')}</ul>
<p>Until ${escapeHtml(expiries.length ? expiries.join(', ') : `${CONSENT_DAYS} days from today`)}${purposes.length ? `, for: ${escapeHtml(purposes.join('; '))}` : ''}.</p>`;
    }
    const picker = needsPicker
      ? `<label for="dp_id">Your bank</label><select id="dp_id" name="dp_id">${Object.entries(DATA_PROVIDERS).map(([id, name]) => `<option value="${escapeHtml(id)}">${escapeHtml(name)}</option>`).join('')}</select>`
      : '';
    return page('Share your data', `<h1>Share your account data?</h1>${intro}
<form method="post" action="${action}"><input type="hidden" name="prompt" value="consent">${picker}
<button class="allow" name="decision" value="allow" type="submit">Allow</button><button class="deny" name="decision" value="deny" type="submit">Deny</button></form>`);
  }

  async function interaction(req, res, uid) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const action = `/interaction/${escapeHtml(uid)}`;
    if (req.method === 'GET') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('Cache-Control', 'no-store');
      if (details.prompt.name === 'login') {
        res.end(page('Sign in to the Open Finance Platform', `<h1>Sign in</h1><p>Sign in to your bank to continue</p>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="login">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="allow" type="submit">Sign in</button></form>`));
      } else {
        res.end(consentPage(details, action));
      }
      return;
    }
    const form = await readForm(req);
    if (form.get('prompt') === 'login') {
      const account = ACCOUNTS[form.get('login')];
      if (!account || account.password !== form.get('password')) {
        res.statusCode = 303;
        res.setHeader('Location', action);
        res.end();
        return;
      }
      if (nextAuthorizationError) {
        const error = nextAuthorizationError;
        nextAuthorizationError = null;
        await provider.interactionFinished(req, res, { error, error_description: ERROR_DESCRIPTIONS[error] }, { mergeWithLastSubmission: false });
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: form.get('login') } }, { mergeWithLastSubmission: false });
      return;
    }
    if (details.prompt.name !== 'consent') throw new errors.InvalidRequest('no consent is being asked');
    if (form.get('decision') !== 'allow') {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The account holder declined to share their data' }, { mergeWithLastSubmission: false });
      return;
    }
    const chosen = Object.hasOwn(DATA_PROVIDERS, form.get('dp_id') || '') ? form.get('dp_id') : Object.keys(DATA_PROVIDERS)[0];
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const prompt = details.prompt.details;
    if (prompt.missingOIDCScope) grant.addOIDCScope(prompt.missingOIDCScope.join(' '));
    if (prompt.missingOIDCClaims) grant.addOIDCClaims(prompt.missingOIDCClaims);
    for (const [indicator, scope] of Object.entries(prompt.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
    const consentId = `ofp-consent-${randomUUID()}`;
    for (const detail of grantedDetails(prompt.rar || [], consentId, chosen)) grant.addRar(detail);
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }

  // The data API's own DPoP nonces (RFC 9449 section 9) and the proof jtis it has seen.
  const dataNonces = new Map(); // nonce -> { issuedAt, expiresAt } (ms)
  const seenJtis = new Map(); // jkt + jti -> expiresAt (ms)
  function currentNonce() {
    const now = Date.now();
    for (const [nonce, { expiresAt }] of dataNonces) if (expiresAt <= now) dataNonces.delete(nonce);
    for (const [jti, expiresAt] of seenJtis) if (expiresAt <= now) seenJtis.delete(jti);
    const latest = [...dataNonces.entries()].at(-1);
    if (latest && now - latest[1].issuedAt < (DATA_NONCE_TTL * 1000) / 2) return latest[0];
    const nonce = randomBytes(24).toString('base64url');
    dataNonces.set(nonce, { issuedAt: now, expiresAt: now + DATA_NONCE_TTL * 1000 });
    return nonce;
  }

  const challenge = (error, description) => `DPoP error="${error}", error_description="${description.replace(/["\\]/g, '')}", algs="${DPOP_ALGS.join(' ')}"`;

  /** Checks an `Authorization: DPoP` request; resolves to { token } or { status, error, ... }. */
  async function checkDpopRequest(req, url, authorization, proof) {
    const deny = (error, description, reason, extra = {}) => ({ status: 401, error, description, reason, ...extra });
    const scheme = /^(\S+) ([\x21-\x7e]+)$/.exec(authorization || '');
    if (!scheme) return deny('invalid_token', 'an access token is required', 'no_token');
    const [, kind, value] = scheme;
    const token = await provider.AccessToken.find(value);
    if (kind.toLowerCase() === 'bearer') {
      return deny('invalid_token', 'this API takes DPoP-bound access tokens only, as Authorization: DPoP with a DPoP proof', 'bearer', { value });
    }
    if (kind.toLowerCase() !== 'dpop') return deny('invalid_token', 'unsupported authorization scheme', 'scheme', { value });
    if (!token || token.clientId !== CLIENT_ID) return deny('invalid_token', 'the access token is unknown or expired', 'unknown_token', { value });
    if (!token.jkt) return deny('invalid_token', 'the access token is not DPoP-bound', 'unbound_token', { value });
    if (typeof proof !== 'string' || !proof || proof.includes(',')) return deny('invalid_dpop_proof', 'exactly one DPoP proof is required', 'no_proof', { value });
    await recordProof('data', proof);
    let payload; let protectedHeader;
    try {
      ({ payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: DPOP_ALGS }));
    } catch (cause) {
      return deny('invalid_dpop_proof', 'the DPoP proof is not a valid dpop+jwt', `bad_proof: ${cause.code || cause.message}`, { value });
    }
    const now = epoch();
    if (typeof payload.jti !== 'string' || !payload.jti) return deny('invalid_dpop_proof', 'the DPoP proof needs a jti', 'bad_proof: jti', { value });
    if (payload.htm !== req.method) return deny('invalid_dpop_proof', 'DPoP proof htm mismatch', 'bad_proof: htm', { value });
    const htu = typeof payload.htu === 'string' ? URL.parse(payload.htu) : null;
    if (htu) { htu.search = ''; htu.hash = ''; }
    if (!htu || htu.href !== `${issuer}${url.pathname}`) return deny('invalid_dpop_proof', 'DPoP proof htu mismatch', 'bad_proof: htu', { value });
    if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > DPOP_IAT_WINDOW) return deny('invalid_dpop_proof', 'DPoP proof iat is not recent', 'bad_proof: iat', { value });
    if (payload.ath !== sha256(value)) return deny('invalid_dpop_proof', 'DPoP proof ath mismatch', 'bad_proof: ath', { value });
    const jkt = await calculateJwkThumbprint(protectedHeader.jwk);
    if (jkt !== token.jkt) return deny('invalid_token', 'the access token is not bound to the DPoP proof key', 'key_mismatch', { value });
    if (typeof payload.nonce !== 'string' || !dataNonces.has(payload.nonce) || dataNonces.get(payload.nonce).expiresAt <= Date.now()) {
      return deny('use_dpop_nonce', 'a DPoP nonce from this resource server is required', 'use_dpop_nonce', { value, nonce: true });
    }
    const jtiKey = `${jkt}\u0000${payload.jti}`;
    if (seenJtis.has(jtiKey)) return deny('invalid_dpop_proof', 'DPoP proof replayed', 'replay', { value });
    seenJtis.set(jtiKey, Date.now() + (2 * DPOP_IAT_WINDOW + 60) * 1000);
    return { token, value };
  }

  async function dataApi(req, res, url) {
    const interactionId = interactionIdOf(req.headers['x-fapi-interaction-id']);
    const checked = await checkDpopRequest(req, url, req.headers.authorization, req.headers.dpop);
    let answer;
    if (!checked.token) {
      const headers = {
        'Content-Type': 'application/json',
        'Cache-Control': 'no-store',
        'WWW-Authenticate': challenge(checked.error, checked.description),
      };
      if (checked.nonce) headers['DPoP-Nonce'] = currentNonce();
      answer = { status: checked.status, headers, body: JSON.stringify({ error: checked.error, error_description: checked.description }) };
    } else if (req.method !== 'GET') {
      answer = { status: 405, body: '{"error":"method_not_allowed"}', headers: { 'Content-Type': 'application/json', Allow: 'GET' } };
    } else {
      answer = answerDataRequest({ ledger, path: url.pathname, search: url.search, token: checked.token });
      const www = answer.headers['WWW-Authenticate'];
      if (www) answer.headers['WWW-Authenticate'] = www.replace(/^Bearer /, 'DPoP ');
      // A fresh nonce ahead of the current one's expiry (RFC 9449 section 9).
      const nonce = currentNonce();
      answer.headers['DPoP-Nonce'] = nonce;
    }
    issued?.dataRequests.push({
      method: req.method, path: url.pathname, token: checked.value, status: answer.status, reason: checked.token ? 'ok' : checked.reason,
    });
    res.writeHead(answer.status, { ...answer.headers, 'x-fapi-interaction-id': interactionId });
    res.end(answer.body);
  }

  const handle = provider.callback();
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      if (testControls && url.pathname === '/__test/token-type' && req.method === 'POST') {
        const asked = (await readForm(req)).keys().next().value || '';
        tokenTypeOverride = asked === 'normal' ? null : asked;
        res.end(asked);
        return;
      }
      if (testControls && url.pathname === '/__test/next-authorization-error' && req.method === 'POST') {
        const asked = (await readForm(req)).keys().next().value || '';
        if (!AUTHORIZATION_ERRORS.includes(asked)) {
          res.statusCode = 400;
          res.end(`expected one of ${AUTHORIZATION_ERRORS.join(', ')}`);
          return;
        }
        nextAuthorizationError = asked;
        res.end(asked);
        return;
      }
      if (url.pathname.startsWith('/data/v1/')) {
        await dataApi(req, res, url);
        return;
      }
      const match = url.pathname.match(/^\/interaction\/([\w-]+)$/);
      if (match) {
        await interaction(req, res, match[1]);
        return;
      }
      handle(req, res);
    } catch (error) {
      if (res.headersSent) { res.destroy(); return; }
      res.statusCode = 400;
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page('Error', `<h1>Something went wrong</h1><p class="error">${escapeHtml(error.message)}</p>`));
    }
  });
  const close = await listen(server, port);
  return {
    issuer,
    server,
    issued,
    close,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const raw = process.env.FAPI_BANK_CLIENT_JWKS;
  if (!raw) {
    console.error('fapi-bank: set FAPI_BANK_CLIENT_JWKS to the public JWKS (JSON, {"keys":[...]}, PS256 RSA keys with kid) of client consentry-fapi');
    process.exit(1);
  }
  let clientJwks;
  try {
    clientJwks = JSON.parse(raw);
    if (!Array.isArray(clientJwks?.keys) || !clientJwks.keys.length) throw new Error('it needs a non-empty "keys" array');
    if (clientJwks.keys.some((key) => 'd' in key)) throw new Error('it holds a private key; give the public keys only');
  } catch (error) {
    console.error(`fapi-bank: FAPI_BANK_CLIENT_JWKS is not a usable public JWKS: ${error.message}`);
    process.exit(1);
  }
  const { issuer } = await startFapiBank({
    port: Number(process.env.FAPI_BANK_PORT || 9001),
    redirectUris: (process.env.FAPI_BANK_REDIRECT_URIS || 'http://localhost:8787/auth/callback/open-finance').split(','),
    clientJwks,
    testControls: process.env.FAPI_BANK_TEST_CONTROLS === '1',
    accessTokenTtl: Number(process.env.FAPI_BANK_ACCESS_TOKEN_TTL || 600),
  });
  console.log(`FAPI 2.0 bank (Open Finance Platform) listening at ${issuer} (client ${CLIENT_ID}; accounts: ${Object.keys(ACCOUNTS).join(', ')}; password = username)`);
}
