// The local Moneyhub (bank/moneyhub.mjs) behaves as PROVIDERS.md says Moneyhub does. This test
// plays the client itself, in Node, with jose and node:crypto (no Worker): a user:create token
// and POST /users, PAR with a signed request object (`openid id:<bank>`, claims with the
// profile as sub and mh:con_id, PKCE) and private_key_jwt, the front channel with request_uri,
// the account holder's login and consent, the code exchange with Moneyhub's `sub`, the
// id_token, data tokens (client_credentials + sub) on the Data API, a second connection,
// deleting a connection, and what Moneyhub must refuse.
//
//   NODE_NO_WARNINGS=1 node --test tests/bank/moneyhub.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import {
  createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, UnsecuredJWT,
} from 'jose';

import { BANKS, startMoneyhub } from '../../bank/moneyhub.mjs';
import { consentAtBank } from '../lib/bank-user.mjs';
import { CookieJar } from '../lib/worker-harness.mjs';

const PORT = 9170;
const SECRET_PORT = 9171;
const CLIENT_ID = 'consentry-moneyhub';
const REDIRECT_URI = 'http://localhost:8787/auth/callback/moneyhub';
const URL_ROOT = `http://localhost:${PORT}`;
const ISSUER = `${URL_ROOT}/oidc`;
const [MODELO, HARBOUR] = BANKS;

let moneyhub;
let metadata;
let clientKey; // { privateKey, kid }
const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');
const epoch = () => Math.floor(Date.now() / 1000);

before(async () => {
  const { privateKey, publicKey } = await generateKeyPair('PS256');
  const kid = `test-${randomBytes(4).toString('hex')}`;
  clientKey = { privateKey, kid };
  const clientJwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'PS256', use: 'sig' }] };
  moneyhub = await startMoneyhub({ port: PORT, redirectUris: [REDIRECT_URI], clientJwks, testControls: true });
  metadata = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
});
after(async () => { await moneyhub?.close(); });

async function clientAuth() {
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg: 'PS256', kid: clientKey.kid })
    .setIssuer(CLIENT_ID).setSubject(CLIENT_ID).setAudience(ISSUER)
    .setJti(randomUUID()).setIssuedAt().setExpirationTime('60s')
    .sign(clientKey.privateKey);
  return {
    client_id: CLIENT_ID,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
  };
}

async function answerOf(response) {
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, headers: response.headers, text, json };
}

async function postForm(url, form, headers = {}) {
  return answerOf(await fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  }));
}

async function api(path, { token, method = 'GET', body } = {}) {
  return answerOf(await fetch(`${URL_ROOT}${path}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  }));
}

/** A client_credentials token request (private_key_jwt); `sub` is Moneyhub's extra parameter. */
async function clientCredentials(scope, sub) {
  return postForm(metadata.token_endpoint, {
    grant_type: 'client_credentials', scope, ...(sub === undefined ? {} : { sub }), ...(await clientAuth()),
  });
}

async function tokenFor(scope, sub) {
  const answer = await clientCredentials(scope, sub);
  assert.equal(answer.status, 200, answer.text);
  return answer.json.access_token;
}

async function createUser(clientUserId) {
  const answer = await api('/users', { method: 'POST', token: await tokenFor('user:create'), body: { clientUserId } });
  assert.equal(answer.status, 201, answer.text);
  return answer.json;
}

/** The claims parameter asking for `userId` as sub and for the new connection's id. */
const claimsFor = (userId) => ({ id_token: { sub: { essential: true, value: userId }, 'mh:con_id': { essential: true } } });

/** An authorization request's parameters, its PKCE verifier, state and nonce. */
function authorizationParams({ userId, bank = MODELO, scope = `openid id:${bank.id}`, claims = claimsFor(userId) }) {
  const verifier = b64url(randomBytes(32));
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const params = {
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope,
    state,
    nonce,
    prompt: 'consent',
    max_age: 600,
    code_challenge: sha256(verifier),
    code_challenge_method: 'S256',
    claims,
  };
  return { params, verifier, state, nonce };
}

function requestObject(params) {
  const now = epoch();
  return new SignJWT(params)
    .setProtectedHeader({ alg: 'PS256', kid: clientKey.kid })
    .setIssuer(CLIENT_ID).setAudience(ISSUER)
    .setIssuedAt(now).setNotBefore(now).setExpirationTime(now + 300)
    .setJti(randomUUID())
    .sign(clientKey.privateKey);
}

async function par(params) {
  return postForm(metadata.pushed_authorization_request_endpoint, { ...(await clientAuth()), request: await requestObject(params) });
}

/** PAR + front channel + login and consent at the bank: the redirect back to the client. */
async function authorize({ user = 'alice', decision = 'allow', ...request }) {
  const flow = authorizationParams(request);
  const pushed = await par(flow.params);
  assert.equal(pushed.status, 201, pushed.text);
  const front = new URL(metadata.authorization_endpoint);
  front.searchParams.set('client_id', CLIENT_ID);
  front.searchParams.set('request_uri', pushed.json.request_uri);
  const callback = new URL(await consentAtBank(front.toString(), { user, decision, redirectPrefix: REDIRECT_URI }));
  return { ...flow, pushed, callback };
}

async function exchange(flow, { sub } = {}) {
  return postForm(metadata.token_endpoint, {
    grant_type: 'authorization_code',
    code: flow.callback.searchParams.get('code'),
    redirect_uri: REDIRECT_URI,
    code_verifier: flow.verifier,
    ...(sub === undefined ? {} : { sub }),
    ...(await clientAuth()),
  });
}

async function verifyIdToken(idToken) {
  const { payload } = await jwtVerify(idToken, createRemoteJWKSet(new URL(metadata.jwks_uri)), { issuer: ISSUER, audience: CLIENT_ID });
  return payload;
}

/** A profile of another API client, made directly (the emulation serves one client). */
function foreignProfile() {
  const userId = randomBytes(12).toString('hex');
  moneyhub.profiles.set(userId, {
    userId, clientId: 'another-client', clientUserId: 'theirs', createdAt: new Date().toISOString(), connections: new Map(),
  });
  return userId;
}

/**
 * Walks the authorization at `url` as `user` in a browser whose cookies are `jar` (kept
 * across walks): the redirect back, how many times the bank's login page was shown, and how
 * many of oidc-provider's self-submitting sign-out forms were posted (as their script would).
 */
async function walkWithJar(url, jar, user) {
  let form = null;
  let logins = 0;
  let signOuts = 0;
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
      url = new URL(response.headers.get('location'), url).toString();
      if (url.startsWith(REDIRECT_URI)) return { callback: new URL(url), logins, signOuts };
      continue;
    }
    const html = await response.text();
    const autoPost = /<title>Submitting Callback<\/title>[\s\S]*<form method="post" action="([^"]+)">/.exec(html);
    if (autoPost) {
      signOuts += 1;
      url = new URL(autoPost[1].replaceAll('&amp;', '&'), url).toString();
      form = Object.fromEntries([...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"\/>/g)].map((m) => [m[1], m[2]]));
    } else if (html.includes('name="prompt" value="login"')) {
      logins += 1;
      form = { prompt: 'login', login: user, password: user };
    } else if (html.includes('name="prompt" value="consent"')) {
      form = { prompt: 'consent', decision: 'allow' };
    } else {
      throw new Error(`unexpected page (HTTP ${response.status}) at ${url}: ${html.match(/class="error">([^<]*)/)?.[1] ?? 'no error shown'}`);
    }
  }
  throw new Error('too many redirects');
}

/** A profile with one connection of `user` at `bank`: { userId, conId }. */
async function connectedUser({ user = 'carol', bank = MODELO } = {}) {
  const { userId } = await createUser(`app-${randomUUID()}`);
  const flow = await authorize({ userId, user, bank });
  const tokens = await exchange(flow, { sub: userId });
  assert.equal(tokens.status, 200, tokens.text);
  return { userId, conId: (await verifyIdToken(tokens.json.id_token))['mh:con_id'] };
}

test('discovery: the identity service under /oidc, as Moneyhub\'s', () => {
  assert.equal(metadata.issuer, ISSUER);
  assert.equal(metadata.authorization_endpoint, `${ISSUER}/auth`);
  assert.equal(metadata.token_endpoint, `${ISSUER}/token`);
  assert.equal(metadata.jwks_uri, `${ISSUER}/certs`);
  assert.equal(metadata.pushed_authorization_request_endpoint, `${ISSUER}/request`);
  assert.ok(metadata.token_endpoint_auth_methods_supported.includes('private_key_jwt'));
  assert.ok(metadata.request_object_signing_alg_values_supported.includes('PS256'));
  assert.ok(!metadata.request_object_signing_alg_values_supported.includes('none'));
  assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
  assert.equal(metadata.claims_parameter_supported, true);
  assert.ok(metadata.grant_types_supported.includes('client_credentials'));
});

// Shared by the tests that follow, in order: one profile with connections at two banks.
let profile; // POST /users answer
let first; // { flow, tokens, idToken }
let dataToken;

test('POST /users with a user:create token makes a profile; the same clientUserId again makes another', async () => {
  const before = moneyhub.requests.filter((r) => r.method === 'POST' && r.path === '/users').length;
  profile = await createUser('app-user-1');
  assert.match(profile.userId, /^[0-9a-f]{24}$/);
  assert.equal(profile.clientId, CLIENT_ID);
  assert.equal(profile.clientUserId, 'app-user-1');
  assert.deepEqual(profile.connectionIds, []);
  assert.deepEqual(profile.scopes, []);
  assert.equal(profile.managedBy, 'client');
  assert.ok(Number.isFinite(Date.parse(profile.createdAt)));
  const again = await createUser('app-user-1');
  assert.notEqual(again.userId, profile.userId, 'not deduplicated');
  const posts = moneyhub.requests.filter((r) => r.method === 'POST' && r.path === '/users');
  assert.equal(posts.length - before, 2);
  assert.deepEqual(posts.at(-1).json, { clientUserId: 'app-user-1' });
  assert.match(posts.at(-1).authorization, /^Bearer /);
  assert.equal(moneyhub.profiles.get(profile.userId).clientUserId, 'app-user-1');
  const tokenRequest = moneyhub.requests.findLast((r) => r.path === '/oidc/token');
  assert.equal(tokenRequest.form.grant_type, 'client_credentials');
  assert.equal(tokenRequest.form.scope, 'user:create');
});

test('PAR, front channel, login and consent at the bank, exchange with sub: the id_token names the profile and the new connection', async () => {
  const flow = await authorize({ userId: profile.userId, bank: MODELO, user: 'alice' });
  assert.match(flow.pushed.json.request_uri, /^urn:ietf:params:oauth:request_uri:/);
  assert.ok(flow.callback.toString().startsWith(`${REDIRECT_URI}?`));
  const code = flow.callback.searchParams.get('code');
  assert.ok(code);
  assert.equal(flow.callback.searchParams.get('state'), flow.state);
  assert.equal(flow.callback.searchParams.get('iss'), ISSUER);
  assert.ok(moneyhub.issued.codes.includes(code));
  const frontRequest = moneyhub.requests.findLast((r) => r.path === '/oidc/auth');
  assert.deepEqual(Object.keys(frontRequest.query).sort(), ['client_id', 'request_uri']);

  const tokens = await exchange(flow, { sub: profile.userId });
  assert.equal(tokens.status, 200, tokens.text);
  assert.equal(tokens.json.token_type, 'Bearer');
  assert.equal(tokens.json.refresh_token, undefined);
  assert.ok(!/accounts:read|transactions/.test(tokens.json.scope ?? ''), `no data scopes (${tokens.json.scope})`);
  assert.ok(moneyhub.issued.accessTokens.includes(tokens.json.access_token));
  assert.ok(moneyhub.issued.idTokens.includes(tokens.json.id_token));
  assert.equal(moneyhub.requests.findLast((r) => r.path === '/oidc/token').form.sub, profile.userId);

  const idToken = await verifyIdToken(tokens.json.id_token);
  assert.equal(idToken.sub, profile.userId);
  assert.equal(idToken.nonce, flow.nonce);
  assert.match(idToken['mh:con_id'], new RegExp(`^${MODELO.id}:[0-9a-f-]{36}$`));
  const days = (Date.parse(idToken['mh:consent'].expirationDateTime) - Date.now()) / 86_400_000;
  assert.ok(days > 89.9 && days <= 90, `${days} days`);
  const connection = moneyhub.profiles.get(profile.userId).connections.get(idToken['mh:con_id']);
  assert.equal(connection.holder, 'alice');
  assert.equal(connection.bankId, MODELO.id);
  first = { flow, tokens, idToken };

  const user = await api(`/users/${profile.userId}`, { token: await tokenFor('user:read') });
  assert.equal(user.status, 200, user.text);
  assert.deepEqual(user.json.connectionIds, [idToken['mh:con_id']]);

  // The code's access token carries no data scopes: the Data API refuses it.
  const refused = await api('/v3/accounts', { token: tokens.json.access_token });
  assert.equal(refused.status, 403, refused.text);
});

test('a code is single use', async () => {
  const again = await exchange(first.flow, { sub: profile.userId });
  assert.equal(again.status, 400, again.text);
  assert.equal(again.json.error, 'invalid_grant');
});

test('a data token (client_credentials + sub) reads the profile\'s accounts and transactions', async () => {
  const answer = await clientCredentials('accounts:read transactions:read:all', profile.userId);
  assert.equal(answer.status, 200, answer.text);
  assert.equal(answer.json.expires_in, 7200);
  assert.deepEqual(new Set(answer.json.scope.split(' ')), new Set(['accounts:read', 'transactions:read:all']));
  dataToken = answer.json.access_token;
  assert.ok(moneyhub.issued.dataTokens.includes(dataToken));

  const accounts = await api('/v3/accounts', { token: dataToken });
  assert.equal(accounts.status, 200, accounts.text);
  assert.equal(accounts.json.data.length, 2, 'alice\'s two accounts');
  assert.deepEqual(accounts.json.data.map((a) => a.type).sort(), ['cash:current', 'savings']);
  for (const account of accounts.json.data) {
    assert.match(account.id, /^[\w-]+$/, 'URL-path safe');
    assert.equal(account.currency, 'GBP');
    assert.equal(account.connectionId, first.idToken['mh:con_id']);
    assert.equal(account.providerName, MODELO.name);
    assert.ok(Number.isInteger(account.balance.amount.value), 'minor units');
    assert.equal(account.balance.amount.currency, 'GBP');
    assert.ok(Number.isFinite(Date.parse(account.balance.date)));
    assert.equal(typeof account.accountName, 'string');
  }
  assert.ok(accounts.json.links.self.endsWith('/v3/accounts'));
  assert.deepEqual(accounts.json.meta, {});

  const [current] = accounts.json.data.filter((a) => a.type === 'cash:current');
  const one = await api(`/v3/accounts/${current.id}`, { token: dataToken });
  assert.equal(one.status, 200, one.text);
  assert.deepEqual(one.json.data, current);

  const transactions = await api(`/v3/transactions?accountId=${current.id}&limit=5`, { token: dataToken });
  assert.equal(transactions.status, 200, transactions.text);
  assert.equal(transactions.json.data.length, 5);
  for (const txn of transactions.json.data) {
    assert.equal(txn.accountId, current.id);
    assert.ok(Number.isInteger(txn.amount.value));
    assert.equal(txn.amount.currency, 'GBP');
    assert.equal(txn.status, 'posted');
    assert.equal(typeof txn.longDescription, 'string');
    assert.equal(typeof txn.shortDescription, 'string');
    assert.ok(Number.isFinite(Date.parse(txn.date)));
  }
  const dates = transactions.json.data.map((t) => t.date);
  assert.deepEqual(dates, [...dates].sort().reverse(), 'newest first');
  assert.ok(transactions.json.links.next, 'more pages');

  // Each route needs its scope.
  const accountsOnly = await tokenFor('accounts:read', profile.userId);
  const noTransactions = await api('/v3/transactions', { token: accountsOnly });
  assert.equal(noTransactions.status, 403);
  assert.equal(noTransactions.json.code, 403);
  assert.match(noTransactions.headers.get('www-authenticate'), /insufficient_scope/);
});

test('a second connection of the same profile at another bank: two connections, /v3/accounts lists both banks', async () => {
  const flow = await authorize({ userId: profile.userId, bank: HARBOUR, user: 'bob' });
  const tokens = await exchange(flow); // no sub: optional
  assert.equal(tokens.status, 200, tokens.text);
  const idToken = await verifyIdToken(tokens.json.id_token);
  assert.equal(idToken.sub, profile.userId);
  assert.match(idToken['mh:con_id'], new RegExp(`^${HARBOUR.id}:`));
  assert.notEqual(idToken['mh:con_id'], first.idToken['mh:con_id']);

  const user = await api(`/users/${profile.userId}`, { token: await tokenFor('user:read') });
  assert.deepEqual(new Set(user.json.connectionIds), new Set([first.idToken['mh:con_id'], idToken['mh:con_id']]));

  const accounts = await api('/v3/accounts', { token: dataToken });
  assert.equal(accounts.status, 200, accounts.text);
  assert.equal(accounts.json.data.length, 3, 'alice\'s two at Modelo, bob\'s one at Harbour');
  assert.deepEqual(new Set(accounts.json.data.map((a) => a.providerName)), new Set([MODELO.name, HARBOUR.name]));
  assert.equal(new Set(accounts.json.data.map((a) => a.id)).size, 3);
  const all = await api('/v3/transactions?limit=1000', { token: dataToken });
  assert.equal(new Set(all.json.data.map((t) => t.accountId)).size, 3);
});

test('DELETE /users/{userId}/connections/{connectionId} needs connection:delete; the connection\'s data goes, the other stays', async () => {
  const conId = first.idToken['mh:con_id'];
  const path = `/users/${profile.userId}/connections/${encodeURIComponent(conId)}`;
  const modeloIds = (await api('/v3/accounts', { token: dataToken })).json.data.filter((a) => a.connectionId === conId).map((a) => a.id);
  assert.equal(modeloIds.length, 2);

  const withoutScope = await api(path, { method: 'DELETE', token: await tokenFor('user:read user:delete') });
  assert.equal(withoutScope.status, 403, withoutScope.text);
  assert.ok(moneyhub.profiles.get(profile.userId).connections.has(conId));
  const noToken = await api(path, { method: 'DELETE' });
  assert.equal(noToken.status, 401);
  assert.match(noToken.headers.get('www-authenticate'), /^Bearer error="invalid_token"/);

  const deleter = await tokenFor('connection:delete');
  const deleted = await api(path, { method: 'DELETE', token: deleter });
  assert.equal(deleted.status, 204, deleted.text);
  assert.ok(!moneyhub.profiles.get(profile.userId).connections.has(conId));
  const again = await api(path, { method: 'DELETE', token: deleter });
  assert.equal(again.status, 404);
  const unknownUser = await api(`/users/${'0'.repeat(24)}/connections/${encodeURIComponent(conId)}`, { method: 'DELETE', token: deleter });
  assert.equal(unknownUser.status, 404);

  const accounts = await api('/v3/accounts', { token: dataToken });
  assert.deepEqual(accounts.json.data.map((a) => a.providerName), [HARBOUR.name]);
  assert.equal((await api(`/v3/accounts/${modeloIds[0]}`, { token: dataToken })).status, 404);
  const gone = await api(`/v3/transactions?accountId=${modeloIds[0]}`, { token: dataToken });
  assert.equal(gone.status, 200);
  assert.deepEqual(gone.json.data, []);
  const user = await api(`/users/${profile.userId}`, { token: await tokenFor('user:read') });
  assert.equal(user.json.connectionIds.length, 1);
});

test('client_credentials refuses data scopes without sub, a sub of another client or of no one, unknown scopes', async () => {
  const noSub = await clientCredentials('accounts:read');
  assert.equal(noSub.status, 400, noSub.text);
  assert.equal(noSub.json.error, 'invalid_request');
  const unknown = await clientCredentials('accounts:read', 'f'.repeat(24));
  assert.equal(unknown.status, 400, unknown.text);
  assert.equal(unknown.json.error, 'invalid_request');
  const dataTokens = moneyhub.issued.dataTokens.length;
  const other = await clientCredentials('accounts:read transactions:read:all', foreignProfile());
  assert.equal(other.status, 400, other.text);
  assert.equal(other.json.error, 'invalid_request');
  const badScope = await clientCredentials('payments:write');
  assert.equal(badScope.json.error, 'invalid_scope');
  const openid = await clientCredentials('openid');
  assert.equal(openid.json.error, 'invalid_scope');
  const noAuth = await postForm(metadata.token_endpoint, { grant_type: 'client_credentials', scope: 'user:create', client_id: CLIENT_ID });
  assert.equal(noAuth.status, 401);
  assert.equal(noAuth.json.error, 'invalid_client');
  assert.equal(moneyhub.issued.dataTokens.length, dataTokens, 'no data token for a refused request');
});

test('the authorization request refuses data scopes, two id: scopes, an unknown bank, no PKCE, plain parameters', async () => {
  const { userId } = profile;
  for (const scope of [
    `openid id:${MODELO.id} accounts:read`,
    `openid id:${MODELO.id} user:create`,
    `openid id:${MODELO.id} id:${HARBOUR.id}`,
    `openid id:${'0'.repeat(32)}`,
    'openid',
    `id:${MODELO.id}`,
  ]) {
    const answer = await par(authorizationParams({ userId, scope }).params);
    assert.equal(answer.status, 400, `${scope}: ${answer.text}`);
    assert.equal(answer.json.error, 'invalid_scope', scope);
  }
  const { params } = authorizationParams({ userId });
  const { code_challenge: _challenge, code_challenge_method: _method, ...withoutPkce } = params;
  const noPkce = await par(withoutPkce);
  assert.equal(noPkce.status, 400, noPkce.text);
  assert.equal(noPkce.json.error, 'invalid_request');
  const plain = await postForm(metadata.pushed_authorization_request_endpoint, {
    ...(await clientAuth()),
    ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])),
  });
  assert.equal(plain.status, 400, plain.text);
  assert.equal(plain.json.error, 'invalid_request');
  const unsigned = await postForm(metadata.pushed_authorization_request_endpoint, {
    ...(await clientAuth()),
    request: new UnsecuredJWT(params).setIssuer(CLIENT_ID).setAudience(ISSUER).setExpirationTime('5m').encode(),
  });
  assert.equal(unsigned.status, 400, unsigned.text);
});

test('claims asking for an unknown profile, another client\'s or none end the authorization with invalid_request', async () => {
  for (const claims of [claimsFor('f'.repeat(24)), claimsFor(foreignProfile()), { id_token: { 'mh:con_id': { essential: true } } }]) {
    const codes = moneyhub.issued.codes.length;
    const failed = await authorize({ claims });
    assert.equal(failed.callback.searchParams.get('error'), 'invalid_request', JSON.stringify(claims));
    assert.equal(failed.callback.searchParams.get('state'), failed.state);
    assert.equal(failed.callback.searchParams.get('code'), null);
    assert.equal(moneyhub.issued.codes.length, codes);
  }
});

test('an exchange with another user\'s sub is invalid_grant; the code then still works with the right one', async () => {
  const { userId } = await createUser('app-user-2');
  const flow = await authorize({ userId, user: 'carol' });
  const wrong = await exchange(flow, { sub: profile.userId });
  assert.equal(wrong.status, 400, wrong.text);
  assert.equal(wrong.json.error, 'invalid_grant');
  assert.equal(wrong.json.access_token, undefined);
  const right = await exchange(flow, { sub: userId });
  assert.equal(right.status, 200, right.text);
  assert.equal((await verifyIdToken(right.json.id_token)).sub, userId);
});

test('one browser, several profiles and connections in a row: each connection signs in at its bank', async () => {
  const jar = new CookieJar();
  const alice = (await createUser('app-alice')).userId;
  const bob = (await createUser('app-bob')).userId;
  const steps = [
    { userId: alice, user: 'alice', bank: MODELO, signOuts: 0 },
    // Another profile in the same browser: oidc-provider signs the earlier one out first.
    { userId: bob, user: 'bob', bank: HARBOUR, signOuts: 1 },
    // The same profile again, another bank: the bank's login again, no sign-out.
    { userId: bob, user: 'bob', bank: MODELO, signOuts: 0 },
  ];
  for (const step of steps) {
    const flow = authorizationParams(step);
    const pushed = await par(flow.params);
    const front = `${metadata.authorization_endpoint}?client_id=${CLIENT_ID}&request_uri=${encodeURIComponent(pushed.json.request_uri)}`;
    const { callback, logins, signOuts } = await walkWithJar(front, jar, step.user);
    assert.equal(logins, 1, `${step.user} signs in at ${step.bank.name}`);
    assert.equal(signOuts, step.signOuts);
    const tokens = await exchange({ ...flow, callback }, { sub: step.userId });
    assert.equal(tokens.status, 200, tokens.text);
    const idToken = await verifyIdToken(tokens.json.id_token);
    assert.equal(idToken.sub, step.userId);
    const connection = moneyhub.profiles.get(step.userId).connections.get(idToken['mh:con_id']);
    assert.deepEqual([connection.holder, connection.bankId], [step.user, step.bank.id]);
  }
  assert.equal(moneyhub.profiles.get(bob).connections.size, 2);
});

test('the account holder denying consent: access_denied, no connection', async () => {
  const { userId } = await createUser('app-user-3');
  const denied = await authorize({ userId, user: 'bob', decision: 'deny' });
  assert.equal(denied.callback.searchParams.get('error'), 'access_denied');
  assert.equal(denied.callback.searchParams.get('state'), denied.state);
  assert.equal(moneyhub.profiles.get(userId).connections.size, 0);
});

test('next-id-token-sub: the next id_token (only) carries that sub', async () => {
  const set = await fetch(`${URL_ROOT}/__test/next-id-token-sub`, { method: 'POST', body: 'someone-else' });
  assert.equal(set.status, 200);
  const { userId } = await createUser('app-user-4');
  const flow = await authorize({ userId, user: 'carol' });
  const tokens = await exchange(flow);
  assert.equal(tokens.status, 200, tokens.text);
  assert.equal((await verifyIdToken(tokens.json.id_token)).sub, 'someone-else');
  const next = await exchange(await authorize({ userId, user: 'carol' }));
  assert.equal((await verifyIdToken(next.json.id_token)).sub, userId);
});

test('next-id-token-without-con-id: the next id_token (only) names no connection', async () => {
  const set = await fetch(`${URL_ROOT}/__test/next-id-token-without-con-id`, { method: 'POST' });
  assert.equal(set.status, 200);
  const { userId } = await createUser('app-user-6');
  const tokens = await exchange(await authorize({ userId, user: 'bob' }));
  assert.equal(tokens.status, 200, tokens.text);
  const claims = await verifyIdToken(tokens.json.id_token);
  assert.equal(claims.sub, userId);
  assert.equal(claims['mh:con_id'], undefined);
  const next = await exchange(await authorize({ userId, user: 'bob' }));
  assert.ok((await verifyIdToken(next.json.id_token))['mh:con_id']);
});

test('connection-deletes: fail makes a connection delete answer 503 and keep the connection', async () => {
  const { userId } = await createUser('app-user-7');
  const tokens = await exchange(await authorize({ userId, user: 'alice' }));
  const connection = (await verifyIdToken(tokens.json.id_token))['mh:con_id'];
  assert.equal(await (await fetch(`${URL_ROOT}/__test/connection-deletes`, { method: 'POST', body: 'fail' })).text(), 'fail');
  const token = await tokenFor('connection:delete');
  const del = () => fetch(`${URL_ROOT}/users/${userId}/connections/${encodeURIComponent(connection)}`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
  assert.equal((await del()).status, 503);
  assert.ok(moneyhub.profiles.get(userId).connections.has(connection));
  assert.equal(await (await fetch(`${URL_ROOT}/__test/connection-deletes`, { method: 'POST', body: 'normal' })).text(), 'normal');
  assert.equal((await del()).status, 204);
  assert.ok(!moneyhub.profiles.get(userId).connections.has(connection));
});

test('next-authorization-error: the next authorization ends after the login with that error', async () => {
  const set = await fetch(`${URL_ROOT}/__test/next-authorization-error`, { method: 'POST', body: 'temporarily_unavailable' });
  assert.equal(set.status, 200);
  const { userId } = await createUser('app-user-5');
  const failed = await authorize({ userId, user: 'alice' });
  assert.equal(failed.callback.searchParams.get('error'), 'temporarily_unavailable');
  assert.equal(failed.callback.searchParams.get('state'), failed.state);
  assert.equal(moneyhub.profiles.get(userId).connections.size, 0);
  const fine = await authorize({ userId, user: 'alice' });
  assert.ok(fine.callback.searchParams.get('code'));
});

test('expire-data-tokens: earlier data tokens get 401 invalid_token, a new one works', async () => {
  assert.equal((await api('/v3/accounts', { token: dataToken })).status, 200);
  const expire = await fetch(`${URL_ROOT}/__test/expire-data-tokens`, { method: 'POST' });
  assert.equal(expire.status, 200);
  const refused = await api('/v3/accounts', { token: dataToken });
  assert.equal(refused.status, 401, refused.text);
  assert.equal(refused.json.code, 401);
  assert.equal(typeof refused.json.message, 'string');
  assert.match(refused.headers.get('www-authenticate'), /^Bearer error="invalid_token"/);
  const fresh = await tokenFor('accounts:read', profile.userId);
  assert.equal((await api('/v3/accounts', { token: fresh })).status, 200);
  // Other tokens are not data tokens and keep working.
  assert.equal((await api(`/users/${profile.userId}`, { token: await tokenFor('user:read') })).status, 200);
});

test('the Users API refuses a missing or unknown token (401) and a token without the scope (403)', async () => {
  const none = await api(`/users/${profile.userId}`);
  assert.equal(none.status, 401);
  assert.equal(none.json.code, 401);
  const unknown = await api(`/users/${profile.userId}`, { token: 'not-a-token' });
  assert.equal(unknown.status, 401);
  const wrongScope = await api('/users', { method: 'POST', token: await tokenFor('user:read'), body: { clientUserId: 'x' } });
  assert.equal(wrongScope.status, 403);
  assert.equal(wrongScope.json.code, 403);
  const noBody = await api('/users', { method: 'POST', token: await tokenFor('user:create'), body: {} });
  assert.equal(noBody.status, 400);
  const { userId, conId } = await connectedUser();
  assert.equal((await api(`/users/${userId}`, { token: await tokenFor('user:read') })).json.connectionIds[0], conId);
  const removed = await api(`/users/${userId}`, { method: 'DELETE', token: await tokenFor('user:delete') });
  assert.equal(removed.status, 204);
  assert.equal((await api(`/users/${userId}`, { token: await tokenFor('user:read') })).status, 404);
});

test('with a client secret: client_secret_basic, and no test controls unless asked', async () => {
  const { publicKey } = await generateKeyPair('PS256');
  const secret = randomBytes(24).toString('hex');
  const other = await startMoneyhub({
    port: SECRET_PORT,
    redirectUris: [REDIRECT_URI],
    clientJwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'PS256' }] },
    clientSecret: secret,
  });
  try {
    const basic = `Basic ${Buffer.from(`${CLIENT_ID}:${secret}`).toString('base64')}`;
    const token = await postForm(`${other.issuer}/token`, { grant_type: 'client_credentials', scope: 'user:create' }, { Authorization: basic });
    assert.equal(token.status, 200, token.text);
    const wrong = await postForm(`${other.issuer}/token`, { grant_type: 'client_credentials', scope: 'user:create' }, { Authorization: `Basic ${Buffer.from(`${CLIENT_ID}:nope`).toString('base64')}` });
    assert.equal(wrong.status, 401);
    const control = await fetch(`${other.url}/__test/expire-data-tokens`, { method: 'POST' });
    assert.equal(control.status, 404);
  } finally {
    await other.close();
  }
});
