// A local Moneyhub: its identity service (node-oidc-provider, as Moneyhub's own is) and its
// Data API, for the end-to-end tests and the demo. It behaves as /work/shared/PROVIDERS.md
// ("Moneyhub (identity service + Data API)") describes Moneyhub, not as our client expects.
// One port serves what Moneyhub splits over two hosts: the identity service
// (identity.moneyhub.co.uk: OpenID provider under /oidc, Users API at the root) and the Data
// API (api.moneyhub.co.uk: /v3/...).
//
// Ongoing access, in order (the only use emulated):
//  1. client_credentials with `scope=user:create`, then `POST /users` `{"clientUserId"}` with
//     that Bearer token: 201 with the new profile's `userId`. Every POST makes a new profile,
//     even for a clientUserId seen before (the client must remember its userId).
//  2. An authorization request as a signed request object (PS256, RS256 or ES256 with the
//     client's keys), pushed to /oidc/request or sent by value, holding `scope=openid
//     id:<bankId>` (exactly one `id:` scope naming a bank of BANKS; any other scope is
//     invalid_scope, answered by PAR with a 400), PKCE S256, and `claims` `{"id_token":{"sub":{"essential":true,"value":
//     "<userId>"},"mh:con_id":{"essential":true}}}`. A userId that is not a profile of this
//     client ends the authorization with an `invalid_request` redirect (with `state`). The
//     account holder signs in at the bank (alice, bob, carol of bank/bank.mjs; password =
//     name) and consents on a page naming the bank; that creates a connection under the
//     profile (`mh:con_id` = `<bankId>:<uuid>`, 90 days), and the redirect carries `code`
//     (10 min, single use), `state` and `iss`.
//  3. The code exchange, optionally with Moneyhub's `sub=<userId>` (another user than the
//     code's is invalid_grant): an access token without data scopes and an id_token (RS256,
//     /oidc/certs) with `sub` = the profile, `mh:con_id` = the new connection and
//     `mh:consent` `{ expirationDateTime }` (the Data API answers that access token 403). No
//     refresh token: a client mints data tokens.
//  4. client_credentials with data scopes (accounts:read, transactions:read:all) and
//     `sub=<userId>` (required with data scopes, else invalid_request; a userId of another
//     client or none is invalid_request too): a token of `dataTokenTtl` seconds (7200) for
//     `GET /v3/accounts`, `/v3/accounts/{id}`, `/v3/transactions?accountId=&limit=&offset=`
//     over every live connection of that profile (amounts in minor units).
//  `DELETE /users/{userId}/connections/{connectionId}` (scope connection:delete) removes a
//  connection and its data; `GET /users/{userId}` (user:read) shows the profile,
//  `DELETE /users/{userId}` (user:delete) removes it. Errors of these APIs are JSON
//  `{"code","message"}`: 401 (missing, unknown or expired token, with `WWW-Authenticate:
//  Bearer error="invalid_token"`), 403 (scope missing), 404, 400.
//
// Client authentication is oidc-provider's: `private_key_jwt` (PS256, RS256, ES256, `aud` the
// issuer or an endpoint). oidc-provider registers ONE method per client, so with
// `clientSecret` the client is registered `client_secret_basic` instead (Moneyhub's "getting
// started" method); request objects are still signed with the client's keys.
//
// How `sub` reaches the token endpoint: client_credentials is replaced, through oidc-provider's
// registerGrantType (the maintainer's way to change a built-in grant), by a handler that takes
// `scope` and `sub`; the token keeps `sub` in its extra claims (extraTokenClaims).
// authorization_code keeps oidc-provider's own handler (imported from its lib/, pinned
// 9.13.3), registered again with `sub` among its parameters behind a check of `sub` against
// the code, done before the code is consumed.
//
// Differences from the real Moneyhub, where known: one-time access (no profile) is not
// emulated; each authorization signs in at the bank afresh (a browser still signed in for
// another profile first gets oidc-provider's self-submitting sign-out form); account and
// transaction ids are UUID-shaped hashes; transactions have no categories; the default page
// size (100, at most 1000) is a guess; non-data client_credentials tokens live 3600 s.
//
//   const moneyhub = await startMoneyhub({ port, redirectUris, clientJwks, testControls: true });
//   ... moneyhub.issuer, moneyhub.profiles, moneyhub.issued, moneyhub.requests ...
//   await moneyhub.close();
//
// Recorded in memory with `testControls`: `requests` ({ method, path, query, form, json,
// authorization } of every request, oidc-provider's too), `issued` (every code, access token,
// refresh token, id_token and data token handed out, as strings). Always: `profiles` (userId -> { userId, clientId,
// clientUserId, createdAt, connections: Map connectionId -> { id, holder, bankId, bankName,
// createdAt, expiresAt } }).
//
// With `testControls` (404 otherwise):
//   POST /__test/expire-data-tokens        every data token issued so far stops working
//   POST /__test/next-id-token-sub         body: the `sub` the NEXT id_token carries instead
//                                          of the profile's userId
//   POST /__test/next-id-token-without-con-id  the NEXT id_token carries no `mh:con_id`
//   POST /__test/connection-deletes        body: fail (connection deletes answer 503) | normal
//   POST /__test/next-authorization-error  body: an error code (e.g. access_denied) that ends
//                                          the NEXT authorization right after the sign-in
//
// Run directly (`node bank/moneyhub.mjs`), configured by the environment:
//   MONEYHUB_PORT            port (default 9003); the issuer is http://localhost:PORT/oidc
//   MONEYHUB_REDIRECT_URIS   comma-separated redirect URIs of `consentry-moneyhub` (default
//                            http://localhost:8787/auth/callback/moneyhub)
//   MONEYHUB_CLIENT_JWKS     JSON public JWKS of `consentry-moneyhub` (keys with kid); required
//   MONEYHUB_CLIENT_SECRET   if set, the client authenticates with client_secret_basic
//   MONEYHUB_TEST_CONTROLS   `1` turns the test controls on

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import Provider, { errors, interactionPolicy } from 'oidc-provider';
// oidc-provider's own authorization_code grant and the helpers it is built with (no public
// export; the package has no exports map, and package.json pins the version).
import {
  handler as authorizationCodeHandler,
  parameters as authorizationCodeParameters,
} from 'oidc-provider/lib/actions/grants/authorization_code.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';

import { ACCOUNTS } from './bank.mjs';
import { buildLedger, HOLDINGS } from './data-api.mjs';
import { escapeHtml, listen, providerPage, recording } from './server.mjs';

/** The banks a profile can connect (`id:<id>` scopes), with Moneyhub-like hex ids. */
export const BANKS = [
  { id: '5233db2a04fe41dd01d3308ea92e8bd7', name: 'Modelo Sandbox' },
  { id: '1ffe704d39629a929c8e293880fb449a', name: 'Harbour Bank' },
];
export const USER_SCOPES = ['user:create', 'user:read', 'user:delete', 'connection:delete'];
export const DATA_SCOPES = ['accounts:read', 'transactions:read:all'];

const CONSENT_DAYS = 90;
const CODE_TTL = 600;
const OTHER_CLIENT_CREDENTIALS_TTL = 3600;
const PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;
const BODY_LIMIT = 64 * 1024;
const SIGNING_ALGS = ['PS256', 'RS256', 'ES256'];
const BANK_BY_ID = new Map(BANKS.map((bank) => [bank.id, bank]));

function page(title, body) {
  return providerPage({ title, body, brand: 'Moneyhub', accent: '#00a3a1', background: '#0b2a4a', width: 340 });
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > BODY_LIMIT) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The form or JSON a body holds, as the request's content type says. */
function parseBody(req, text) {
  const type = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return { form: Object.fromEntries(new URLSearchParams(text)) };
  if (type === 'application/json' && text) {
    try { return { json: JSON.parse(text) }; } catch { return { badJson: true }; }
  }
  return {};
}

/** A UUID-shaped id derived from `text` (stable, URL-path safe). */
function hashId(text) {
  const h = createHash('sha256').update(text).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${'89ab'[Number.parseInt(h[16], 16) % 4]}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const scopesOf = (scope) => String(scope ?? '').split(' ').filter(Boolean);
const hasDataScope = (scope) => scopesOf(scope).some((s) => DATA_SCOPES.includes(s));
const isLive = (connection) => Date.parse(connection.expiresAt) > Date.now();

/**
 * The authorization request's scope, as Moneyhub takes it: `openid` and exactly one
 * `id:<bankId>` of a known bank, nothing else (data scopes come with client_credentials).
 */
function checkAuthorizationScope(scope) {
  const scopes = scopesOf(scope);
  if (!scopes.includes('openid')) throw new errors.InvalidScope('the openid scope is required');
  const banks = scopes.filter((s) => s.startsWith('id:'));
  if (banks.length !== 1) throw new errors.InvalidScope('exactly one id:<bankId> scope names the bank to connect');
  if (!BANK_BY_ID.has(banks[0].slice(3))) throw new errors.InvalidScope('unknown bank', banks[0]);
  const other = scopes.find((s) => s !== 'openid' && !s.startsWith('id:'));
  if (other) throw new errors.InvalidScope('only openid and one id:<bankId> scope are asked at authorization', other);
}

const bankOfScope = (scope) => BANK_BY_ID.get(scopesOf(scope).find((s) => s.startsWith('id:')).slice(3));

/**
 * The interaction policy with one more login check: every authorization signs in at the bank
 * (the holder's bank login makes the connection), whatever sign-in session the browser has.
 */
function signInForEveryConnection(policy) {
  policy.get('login').checks.push(new interactionPolicy.Check(
    'bank_sign_in',
    'each connection signs in at the bank',
    (ctx) => !ctx.oidc.result?.login,
  ));
  return policy;
}

/** The userId that the authorization's claims parameter asks for as id_token `sub`. */
function requestedUserId(params) {
  try {
    const value = JSON.parse(params.claims || '{}')?.id_token?.sub?.value;
    return typeof value === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

export async function startMoneyhub({
  port,
  redirectUris,
  clientId = 'consentry-moneyhub',
  clientJwks,
  clientSecret,
  testControls = false,
  dataTokenTtl = 7200,
}) {
  if (!Number.isInteger(port)) throw new TypeError('startMoneyhub: port must be an integer');
  if (!Array.isArray(redirectUris) || !redirectUris.length) throw new TypeError('startMoneyhub: redirectUris must be a non-empty array');
  if (!clientJwks || !Array.isArray(clientJwks.keys) || !clientJwks.keys.length) throw new TypeError('startMoneyhub: clientJwks must be a JWKS ({ keys: [...] })');

  const url = `http://localhost:${port}`;
  const issuer = `${url}/oidc`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `mh-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };

  const profiles = new Map();
  const connectionsByGrant = new Map(); // grantId -> connection made at that consent
  const ledger = buildLedger();
  const { requests } = recording(testControls, ['requests']);
  const issued = recording(testControls, ['codes', 'accessTokens', 'refreshTokens', 'idTokens', 'dataTokens']);
  const entries = new WeakMap(); // req -> its record in `requests`
  let nextIdTokenSub = null;
  let dropNextConId = false;
  let failConnectionDeletes = false;
  let nextAuthorizationError = null;

  const profileOfClient = (userId, ofClient) => {
    const profile = typeof userId === 'string' ? profiles.get(userId) : undefined;
    return profile?.clientId === ofClient ? profile : undefined;
  };

  const allScopes = ['openid', ...BANKS.map((bank) => `id:${bank.id}`), ...USER_SCOPES, ...DATA_SCOPES];
  const client = {
    client_id: clientId,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'client_credentials'],
    response_types: ['code'],
    require_signed_request_object: true,
    jwks: clientJwks,
    scope: allScopes.join(' '),
    ...(clientSecret
      ? { token_endpoint_auth_method: 'client_secret_basic', client_secret: clientSecret }
      : { token_endpoint_auth_method: 'private_key_jwt' }),
  };

  const provider = new Provider(issuer, {
    clients: [client],
    jwks: { keys: [signingKey] },
    scopes: allScopes,
    responseTypes: ['code'],
    clientAuthMethods: ['private_key_jwt', 'client_secret_basic'],
    enabledJWA: {
      clientAuthSigningAlgValues: SIGNING_ALGS,
      requestObjectSigningAlgValues: SIGNING_ALGS,
    },
    pkce: { required: () => true },
    claims: { openid: ['sub', 'mh:consent'], 'mh:con_id': null },
    // The id_token carries the openid scope's claims (mh:consent) with a code, too.
    conformIdTokenClaims: false,
    routes: { jwks: '/certs', pushed_authorization_request: '/request' },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      claimsParameter: { enabled: true },
      dPoP: { enabled: false },
      pushedAuthorizationRequests: { enabled: true },
      requestObjects: {
        enabled: true,
        assertJwtClaimsAndHeader: (_ctx, claims) => checkAuthorizationScope(claims.scope),
      },
      revocation: { enabled: true },
    },
    // Every authorization is a new connection: a grant from an earlier one is never reused.
    loadExistingGrant: (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    interactions: {
      policy: signInForEveryConnection(interactionPolicy.base()),
      url: (_ctx, interaction) => `/oidc/interaction/${interaction.uid}`,
    },
    // The account is the profile; the id_token's sub is its accountId (at a code exchange,
    // the next-id-token-sub test control's value instead, once).
    findAccount: (_ctx, userId, token) => {
      if (!profiles.has(userId)) return undefined;
      let accountId = userId;
      let withConId = true;
      if (token?.kind === 'AuthorizationCode' && nextIdTokenSub !== null) {
        accountId = nextIdTokenSub;
        nextIdTokenSub = null;
      }
      if (token?.kind === 'AuthorizationCode' && dropNextConId) {
        withConId = false;
        dropNextConId = false;
      }
      const connection = connectionsByGrant.get(token?.grantId);
      return {
        accountId,
        claims: () => ({
          sub: accountId,
          ...(connection ? { 'mh:consent': { expirationDateTime: connection.expiresAt } } : {}),
          ...(connection && withConId ? { 'mh:con_id': connection.id } : {}),
        }),
      };
    },
    extraTokenClaims: (ctx, token) => (token.kind === 'ClientCredentials' && ctx.oidc.params.sub !== undefined
      ? { sub: ctx.oidc.params.sub } : undefined),
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: CODE_TTL,
      ClientCredentials: (_ctx, token) => (hasDataScope(token.scope) ? dataTokenTtl : OTHER_CLIENT_CREDENTIALS_TTL),
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: CONSENT_DAYS * 86_400,
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Something went wrong</h1><p class="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description || '')}</p>`);
    },
  });
  provider.proxy = false;

  // client_credentials with Moneyhub's `sub` (the profile whose data the token reads).
  provider.registerGrantType('client_credentials', async (ctx) => {
    const { client: authenticated, params } = ctx.oidc;
    const scopes = [...new Set(scopesOf(params.scope))];
    if (!scopes.length) throw new errors.InvalidScope('scope is required');
    const refused = scopes.find((s) => !USER_SCOPES.includes(s) && !DATA_SCOPES.includes(s));
    if (refused) throw new errors.InvalidScope('requested scope is not allowed', refused);
    if (params.sub === undefined && hasDataScope(params.scope)) {
      throw new errors.InvalidRequest('data scopes need the sub parameter (the userId whose data is read)');
    }
    if (params.sub !== undefined && !profileOfClient(params.sub, authenticated.clientId)) {
      throw new errors.InvalidRequest('sub is not a user of this client');
    }
    const token = new provider.ClientCredentials({ client: authenticated, scope: scopes.join(' ') });
    const value = await token.save();
    ctx.body = { access_token: value, expires_in: token.expiration, token_type: 'Bearer', scope: token.scope };
  }, ['scope', 'sub']);

  // authorization_code as oidc-provider has it, plus Moneyhub's optional `sub`, checked
  // before the code is consumed (a code of another client or none is left to the grant).
  const boundHelpers = Object.fromEntries(Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]));
  provider.registerGrantType('authorization_code', async (ctx) => {
    const { params } = ctx.oidc;
    if (params.sub !== undefined && params.code) {
      const code = await provider.AuthorizationCode.find(params.code, { ignoreExpiration: true });
      if (code && code.clientId === ctx.oidc.client.clientId && code.accountId !== params.sub) {
        throw new errors.InvalidGrant('sub does not match the user of the authorization code');
      }
    }
    await authorizationCodeHandler(provider, boundHelpers, ctx);
  }, [...authorizationCodeParameters, 'sub']);

  provider.use(async (ctx, next) => {
    await next();
    const entry = entries.get(ctx.req);
    if (entry && ctx.oidc?.body) entry.form = { ...ctx.oidc.body };
    recordIssued(ctx);
  });

  function recordIssued(ctx) {
    const body = ctx.body;
    if (ctx.path === '/token' && ctx.method === 'POST' && ctx.status === 200 && body && typeof body === 'object') {
      if (typeof body.access_token === 'string') issued.accessTokens.push(body.access_token);
      if (typeof body.refresh_token === 'string') issued.refreshTokens.push(body.refresh_token);
      if (typeof body.id_token === 'string') issued.idTokens.push(body.id_token);
      if (ctx.oidc.params.grant_type === 'client_credentials' && hasDataScope(body.scope)) {
        issued.dataTokens.push(body.access_token);
      }
    }
    const location = ctx.response.get('Location');
    if (location && redirectUris.some((uri) => location.startsWith(uri))) {
      const code = new URL(location).searchParams.get('code');
      if (code) issued.codes.push(code);
    }
  }

  /** Why this authorization cannot go on, or null: the profile its claims ask for. */
  function authorizationProblem(details) {
    const userId = requestedUserId(details.params);
    if (userId === undefined) return 'claims must ask for the id_token sub with the userId as value';
    if (!profileOfClient(userId, details.params.client_id)) return 'claims.id_token.sub.value is not a user of this client';
    return null;
  }

  function loginPage(bank, action) {
    return page(`Sign in to ${bank.name}`, `<h1>Connect ${escapeHtml(bank.name)}</h1><p>Sign in to ${escapeHtml(bank.name)} to continue</p>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="login">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="allow" type="submit">Sign in</button></form>`);
  }

  function consentPage(bank, holder, requester, action) {
    return page('Share your data', `<h1>Connect ${escapeHtml(bank.name)}?</h1>
<p><b>${escapeHtml(requester)}</b> asks to read, through Moneyhub, the data of ${escapeHtml(ACCOUNTS[holder]?.name ?? holder)} at <b>${escapeHtml(bank.name)}</b>:</p>
<ul><li>Your accounts and balances</li><li>Your transactions</li></ul>
<p>For ${CONSENT_DAYS} days, until you disconnect.</p>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="consent">
<button class="allow" name="decision" value="allow" type="submit">Allow</button><button class="deny" name="decision" value="deny" type="submit">Deny</button></form>`);
  }

  /** A new connection of `holder` at `bank` under the profile `userId`. */
  function connect(userId, holder, bank) {
    const now = Date.now();
    const connection = {
      id: `${bank.id}:${randomUUID()}`,
      holder,
      bankId: bank.id,
      bankName: bank.name,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + CONSENT_DAYS * 86_400_000).toISOString(),
    };
    profiles.get(userId).connections.set(connection.id, connection);
    return connection;
  }

  async function interaction(req, res, uid, form) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const action = `/oidc/interaction/${escapeHtml(uid)}`;
    const bank = bankOfScope(details.params.scope);
    const finish = (result, mergeWithLastSubmission = false) => provider.interactionFinished(req, res, result, { mergeWithLastSubmission });
    if (details.prompt.name === 'login') {
      const problem = authorizationProblem(details);
      if (problem) return finish({ error: 'invalid_request', error_description: problem });
    }
    if (req.method === 'GET') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('Cache-Control', 'no-store');
      res.end(details.prompt.name === 'login'
        ? loginPage(bank, action)
        : consentPage(bank, details.lastSubmission?.holder, details.params.client_id, action));
      return undefined;
    }
    if (form.prompt === 'login') {
      const account = ACCOUNTS[form.login];
      if (!account || account.password !== form.password) {
        res.writeHead(303, { Location: action }).end();
        return undefined;
      }
      if (nextAuthorizationError) {
        const error = nextAuthorizationError;
        nextAuthorizationError = null;
        return finish({ error, error_description: 'the authorization could not be completed' });
      }
      // The session's account is the profile (the id_token's sub); the holder is kept for the consent.
      return finish({ login: { accountId: requestedUserId(details.params) }, holder: form.login });
    }
    if (details.prompt.name !== 'consent') throw new errors.InvalidRequest('no consent is being asked');
    if (form.decision !== 'allow') {
      return finish({ error: 'access_denied', error_description: 'the account holder declined to connect the bank' });
    }
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const prompt = details.prompt.details;
    if (prompt.missingOIDCScope) grant.addOIDCScope(prompt.missingOIDCScope.join(' '));
    if (prompt.missingOIDCClaims) grant.addOIDCClaims(prompt.missingOIDCClaims);
    const grantId = await grant.save();
    connectionsByGrant.set(grantId, connect(details.session.accountId, details.lastSubmission.holder, bank));
    return finish({ consent: { grantId } }, true);
  }

  // The Users API and the Data API: JSON answers, Bearer client_credentials tokens.
  const json = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  };
  const noContent = (res) => res.writeHead(204, { 'Cache-Control': 'no-store' }).end();
  const failure = (res, status, message, headers) => json(res, status, { code: status, message }, headers);

  /**
   * The token of a request and its profile (`sub`), if it has `scope`; else answers the
   * refusal and resolves to null.
   */
  async function authorized(req, res, scope) {
    const bearer = /^Bearer ([\x21-\x7e]+)$/i.exec(req.headers.authorization || '');
    const value = bearer?.[1];
    const token = value
      ? (await provider.ClientCredentials.find(value)) ?? (await provider.AccessToken.find(value))
      : undefined;
    if (!token || token.clientId !== clientId) {
      failure(res, 401, 'the access token is missing, unknown or expired', { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
      return null;
    }
    if (!scopesOf(token.scope).includes(scope)) {
      failure(res, 403, `this needs the ${scope} scope`, { 'WWW-Authenticate': `Bearer error="insufficient_scope", scope="${scope}"` });
      return null;
    }
    return { token, sub: token.extra?.sub };
  }

  const profileView = (profile) => ({
    userId: profile.userId,
    clientId: profile.clientId,
    clientUserId: profile.clientUserId,
    connectionIds: [...profile.connections.keys()],
    scopes: [],
    managedBy: 'client',
    createdAt: profile.createdAt,
  });

  async function usersApi(req, res, path, body) {
    const [, userId, connections, connectionId, extra] = path.split('/').slice(1).map(decodeURIComponent);
    if (path === '/users' && req.method === 'POST') {
      if (!(await authorized(req, res, 'user:create'))) return;
      const clientUserId = body.json?.clientUserId;
      if (typeof clientUserId !== 'string' || !clientUserId.length || clientUserId.length > 256) {
        failure(res, 400, 'clientUserId (a string of 1 to 256 characters) is required');
        return;
      }
      const profile = {
        userId: randomBytes(12).toString('hex'), clientId, clientUserId, createdAt: new Date().toISOString(), connections: new Map(),
      };
      profiles.set(profile.userId, profile);
      json(res, 201, profileView(profile));
      return;
    }
    const method = req.method;
    let scope;
    if (connections === undefined && method === 'GET') scope = 'user:read';
    else if (connections === undefined && method === 'DELETE') scope = 'user:delete';
    else if (connections === 'connections' && connectionId && extra === undefined && method === 'DELETE') scope = 'connection:delete';
    if (!userId || !scope) {
      failure(res, 404, 'not found');
      return;
    }
    if (!(await authorized(req, res, scope))) return;
    const profile = profileOfClient(userId, clientId);
    if (!profile) {
      failure(res, 404, 'no such user');
      return;
    }
    if (scope === 'user:read') {
      json(res, 200, profileView(profile));
    } else if (scope === 'user:delete') {
      profiles.delete(userId);
      noContent(res);
    } else if (failConnectionDeletes) {
      failure(res, 503, 'connection deletion is unavailable');
    } else if (profile.connections.delete(connectionId)) {
      noContent(res);
    } else {
      failure(res, 404, 'no such connection');
    }
  }

  /** Every account of every live connection of the profile, with its book. */
  function accountsOf(profile) {
    return [...profile.connections.values()].filter(isLive).flatMap((connection) => (HOLDINGS[connection.holder] || []).map((holding) => {
      const book = ledger.get(holding.id);
      const id = hashId(`${connection.id}\u0000${holding.id}`);
      return {
        book,
        view: {
          id,
          accountName: holding.name,
          type: holding.type === 'savings' ? 'savings' : 'cash:current',
          currency: 'GBP',
          balance: { date: book.asOf, amount: { value: book.balance, currency: 'GBP' } },
          connectionId: connection.id,
          providerId: connection.bankId,
          providerName: connection.bankName,
          accountReference: String(Number.parseInt(id.slice(0, 8), 16) % 10_000).padStart(4, '0'),
          dateAdded: connection.createdAt,
        },
      };
    }));
  }

  function transactionsOf(accounts) {
    return accounts.flatMap(({ book, view }) => book.transactions.map((txn) => ({
      id: hashId(`${view.id}\u0000${txn.id}`),
      accountId: view.id,
      amount: { value: txn.amount_pence, currency: 'GBP' },
      date: new Date(`${txn.booked_on}T00:00:00Z`).toISOString(),
      longDescription: txn.description.toUpperCase(),
      shortDescription: txn.description,
      status: 'posted',
    }))).sort((a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : a.id < b.id ? -1 : 1));
  }

  async function dataApi(req, res, target) {
    const path = target.pathname;
    const self = target.href;
    if (req.method !== 'GET') {
      failure(res, 405, 'method not allowed', { Allow: 'GET' });
      return;
    }
    const accountMatch = /^\/v3\/accounts(?:\/([^/]+))?$/.exec(path);
    if (!accountMatch && path !== '/v3/transactions') {
      failure(res, 404, 'not found');
      return;
    }
    const auth = await authorized(req, res, accountMatch ? 'accounts:read' : 'transactions:read:all');
    if (!auth) return;
    const profile = profileOfClient(auth.sub, clientId);
    if (!profile) {
      failure(res, 401, 'the access token names no user (sub) of this client', { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
      return;
    }
    const accounts = accountsOf(profile);
    if (accountMatch?.[1]) {
      const account = accounts.find(({ view }) => view.id === decodeURIComponent(accountMatch[1]));
      if (account) json(res, 200, { data: account.view, links: { self }, meta: {} });
      else failure(res, 404, 'no such account');
      return;
    }
    if (accountMatch) {
      json(res, 200, { data: accounts.map(({ view }) => view), links: { self }, meta: {} });
      return;
    }
    const query = target.searchParams;
    const limit = Math.min(Math.max(Number.parseInt(query.get('limit'), 10) || PAGE_SIZE, 1), MAX_PAGE_SIZE);
    const offset = Math.max(Number.parseInt(query.get('offset'), 10) || 0, 0);
    const accountId = query.get('accountId');
    const all = transactionsOf(accountId ? accounts.filter(({ view }) => view.id === accountId) : accounts);
    const links = { self };
    if (offset + limit < all.length) {
      const next = new URL(target);
      next.searchParams.set('offset', String(offset + limit));
      next.searchParams.set('limit', String(limit));
      links.next = next.href;
    }
    json(res, 200, { data: all.slice(offset, offset + limit), links, meta: { total: all.length } });
  }

  async function testControl(res, path, text) {
    const value = text.trim();
    if (path === '/__test/expire-data-tokens') {
      for (const token of issued.dataTokens) await (await provider.ClientCredentials.find(token))?.destroy();
      res.end('expired');
    } else if (path === '/__test/connection-deletes' && ['fail', 'normal'].includes(value)) {
      failConnectionDeletes = value === 'fail';
      res.end(value);
    } else if (path === '/__test/next-id-token-without-con-id') {
      dropNextConId = true;
      res.end('without mh:con_id');
    } else if (path === '/__test/next-id-token-sub' && value) {
      nextIdTokenSub = value;
      res.end(value);
    } else if (path === '/__test/next-authorization-error' && /^[a-z_]{1,64}$/.test(value)) {
      nextAuthorizationError = value;
      res.end(value);
    } else {
      res.statusCode = 400;
      res.end('unknown control or missing value');
    }
  }

  const handleOidc = provider.callback();
  const server = createServer(async (req, res) => {
    try {
      const target = new URL(req.url, url);
      const path = target.pathname;
      const entry = {
        method: req.method, path, query: Object.fromEntries(target.searchParams), form: undefined, json: undefined, authorization: req.headers.authorization,
      };
      requests.push(entry);
      const interactionMatch = /^\/oidc\/interaction\/([\w-]+)$/.exec(path);
      if ((path === '/oidc' || path.startsWith('/oidc/')) && !interactionMatch) {
        entries.set(req, entry);
        req.originalUrl = req.url;
        req.url = req.url.slice('/oidc'.length) || '/';
        handleOidc(req, res);
        return;
      }
      const text = await readBody(req);
      const body = parseBody(req, text);
      entry.form = body.form;
      entry.json = body.json;
      if (interactionMatch) {
        await interaction(req, res, interactionMatch[1], body.form || {});
      } else if (path.startsWith('/__test/') && testControls && req.method === 'POST') {
        await testControl(res, path, text);
      } else if (path.startsWith('/v3/')) {
        await dataApi(req, res, target);
      } else if (path === '/users' || path.startsWith('/users/')) {
        if (body.badJson) failure(res, 400, 'the body is not JSON');
        else await usersApi(req, res, path, body);
      } else {
        failure(res, 404, 'not found');
      }
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
    url,
    server,
    issued,
    requests,
    profiles,
    close,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const raw = process.env.MONEYHUB_CLIENT_JWKS;
  if (!raw) {
    console.error('moneyhub: set MONEYHUB_CLIENT_JWKS to the public JWKS (JSON, {"keys":[...]}, keys with kid) of client consentry-moneyhub');
    process.exit(1);
  }
  let clientJwks;
  try {
    clientJwks = JSON.parse(raw);
    if (!Array.isArray(clientJwks?.keys) || !clientJwks.keys.length) throw new Error('it needs a non-empty "keys" array');
    if (clientJwks.keys.some((key) => 'd' in key)) throw new Error('it holds a private key; give the public keys only');
  } catch (error) {
    console.error(`moneyhub: MONEYHUB_CLIENT_JWKS is not a usable public JWKS: ${error.message}`);
    process.exit(1);
  }
  const { issuer, url } = await startMoneyhub({
    port: Number(process.env.MONEYHUB_PORT || 9003),
    redirectUris: (process.env.MONEYHUB_REDIRECT_URIS || 'http://localhost:8787/auth/callback/moneyhub').split(','),
    clientJwks,
    clientSecret: process.env.MONEYHUB_CLIENT_SECRET || undefined,
    testControls: process.env.MONEYHUB_TEST_CONTROLS === '1',
  });
  console.log(`Moneyhub listening: identity service ${issuer}, Users API and Data API at ${url} (banks: ${BANKS.map((b) => b.name).join(', ')}; account holders: ${Object.keys(ACCOUNTS).join(', ')}, password = username)`);
}
