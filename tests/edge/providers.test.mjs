// The providers themselves, end to end against real workerd (wrangler dev) and a local
// emulation of each, written to shared/PROVIDERS.md: TrueLayer (bank/truelayer.mjs: no
// discovery, no id_token, a form_post callback, JWT access tokens, the `results` envelope),
// Moneyhub (bank/moneyhub.mjs: profiles made with a user:create token, PAR with a signed
// request object and `claims`, the connection in the id_token, data tokens minted with
// client_credentials + sub, connections deleted one by one) and Connect (bank/connect.mjs:
// JWT access tokens signed HS256 with the client secret, or RS256 against its JWKS, rotating
// refresh tokens, a 255-character state limit).
//
//   node --test tests/edge/providers.test.mjs

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BANKS } from '../../bank/moneyhub.mjs';
import { answerAtProvider } from '../lib/bank-user.mjs';
import {
  apiError, describe, expireAccessToken as expireAccessTokenOf, findLeaks, outcomePage, sleep, testControl, userHeaders, waitFor,
} from '../lib/edge.mjs';
import { BANK_ACCOUNT, grantConsent, returnToWorker, startFlow } from '../lib/flow.mjs';
import { CookieJar, parseSetCookie, randomToken, sqlString, startStack } from '../lib/worker-harness.mjs';

const TEST_TIMEOUT = 120_000;
const DAY = 86_400;

let stack;

before(async () => { stack = await startStack(); }, { timeout: 30 * 60_000 });
after(async () => { await stack?.stop(); });

const headers = (user, extra) => userHeaders(stack, user, extra);
const expireAccessToken = (consentId) => expireAccessTokenOf(stack, consentId);
const start = (options) => startFlow(stack, options);

/** `GET /api/{provider}{path}` as `user`, for `consent` when given. */
function api(provider, path, { user = 'usr_alice', consent } = {}) {
  return stack.workerFetch(`/api/${provider}${path}`, { headers: headers(user, consent ? { 'X-Consentry-Consent': consent } : {}) });
}

async function consentsOf(user) {
  const res = await stack.workerFetch('/auth/consents', { headers: headers(user) });
  assert.equal(res.status, 200, describe(res));
  return res.json().consents;
}

const consentOf = async (user, id) => (await consentsOf(user)).find((consent) => consent.id === id);

async function storedConsents() {
  const [row] = await stack.d1('SELECT COUNT(*) AS n FROM consents');
  return row.n;
}

/** A whole flow that may fail: resolves to the outcome it posts (and the page). */
async function flowOutcome({ user = 'usr_alice', provider, hint }) {
  const flow = await start({ user, provider, hint });
  assert.equal(flow.res.status, 303, describe(flow.res));
  const back = await answerAtProvider(flow.location, { user: BANK_ACCOUNT[user], redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  const page = await returnToWorker(stack, back, { jar: flow.jar });
  return { page, outcome: outcomePage(page).outcome, flow };
}

/** The claims of a JWT, unverified (what the test reads off the wire). */
const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));

// --- TrueLayer -----------------------------------------------------------------------------

const truelayerTokenRequests = (grant) => stack.truelayer.requests.filter((req) => req.method === 'POST' && req.path === '/connect/token' && req.form?.grant_type === grant);

test('truelayer: a form_post flow for each demo user, the auth link TrueLayer takes, its credentials_id as the account, 90 days', { timeout: TEST_TIMEOUT }, async () => {
  for (const user of ['usr_alice', 'usr_bob', 'usr_carol']) {
    const exchangesBefore = truelayerTokenRequests('authorization_code').length;
    const { outcome, location, url } = await grantConsent(stack, { user, provider: 'truelayer', hint: 'mock' });
    const link = new URL(location);
    assert.equal(`${link.origin}${link.pathname}`, `${stack.truelayer.url}/`, 'the auth dialog is at the host root');
    const params = Object.fromEntries(link.searchParams);
    assert.equal(params.response_type, 'code');
    assert.equal(params.client_id, 'consentry-truelayer');
    assert.equal(params.redirect_uri, `${stack.publicOrigin}/auth/callback/truelayer`);
    assert.equal(params.scope, 'info accounts balance transactions offline_access');
    assert.equal(params.providers, 'uk-cs-mock uk-ob-all uk-oauth-all');
    assert.equal(params.provider_id, 'mock', 'the start form\'s provider_hint');
    assert.equal(params.response_mode, 'form_post');
    assert.equal(params.code_challenge_method, 'S256');
    assert.ok(params.nonce && params.code_challenge && params.state, 'nonce, challenge and state on the link');
    assert.equal(url, `${stack.publicOrigin}/auth/callback/truelayer`, 'the way back was a POST to the callback');

    const [exchange] = truelayerTokenRequests('authorization_code').slice(exchangesBefore);
    assert.equal(exchange.authorization, null, 'no Basic header: client_secret_post');
    assert.equal(exchange.form.client_id, 'consentry-truelayer');
    assert.equal(exchange.form.client_secret, stack.secrets.truelayerClientSecret);
    assert.ok(exchange.form.code_verifier, 'PKCE verifier');

    const connection = stack.truelayer.issued.connections.at(-1);
    assert.equal(connection.holder, BANK_ACCOUNT[user]);
    const consent = await consentOf(user, outcome.consent.id);
    assert.equal(consent.account, connection.credentialsId, 'the connection read from /data/v1/me');
    assert.deepEqual(consent.scopes, ['info', 'accounts', 'balance', 'transactions', 'offline_access']);
    const lasts = (Date.parse(consent.expires_at) - Date.parse(consent.granted_at)) / 1000;
    assert.equal(lasts, 90 * DAY, 'a TrueLayer connection lasts 90 days');
  }
  const me = stack.truelayer.requests.filter((req) => req.path === '/data/v1/me');
  assert.equal(me.length, 3, 'one /me per grant');
  assert.ok(me.every((req) => /^Bearer /.test(req.authorization)));
});

test('truelayer: a form_post callback without the binding cookie is refused and consumes nothing', { timeout: TEST_TIMEOUT }, async () => {
  const flow = await start({ provider: 'truelayer', hint: 'ob-monzo' });
  assert.equal(flow.res.status, 303, describe(flow.res));
  // E2: a form_post provider's binding cookie is SameSite=None (Lax would not come back on
  // its cross-site POST), and lives the flow's 10 minutes.
  const binding = flow.res.setCookies.map(parseSetCookie).find((cookie) => cookie.name.startsWith('__Host-consentry-tx-'));
  assert.deepEqual([binding?.sameSite, binding?.attributes['max-age']], ['none', '600']);
  const back = await answerAtProvider(flow.location, { user: 'alice', redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  assert.equal(back.method, 'POST', 'form_post: a cross-site POST');
  const exchanges = truelayerTokenRequests('authorization_code').length;
  const foreign = await returnToWorker(stack, back, { jar: new CookieJar() });
  assert.equal(foreign.status, 400, describe(foreign));
  assert.match(foreign.body, /data-error="transaction_not_bound"/);
  assert.equal(truelayerTokenRequests('authorization_code').length, exchanges, 'no code exchange');
  // The cross-site POST carries the SameSite=None binding cookie, and the flow was not used up.
  const own = await returnToWorker(stack, back, { jar: flow.jar });
  assert.equal(own.status, 200, describe(own));
  assert.equal(outcomePage(own).outcome.status, 'granted');
});

test('truelayer: data in its results envelope, refresh as TrueLayer does it, 401 refreshes, 403 access_denied and an ended connection expire the consent', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_bob', provider: 'truelayer', hint: 'oauth-starling' });
  const consent = outcome.consent.id;
  const accounts = await api('truelayer', '/accounts', { user: 'usr_bob', consent });
  assert.equal(accounts.status, 200, describe(accounts));
  const { results, status } = accounts.json();
  assert.equal(status, 'Succeeded');
  assert.deepEqual(results.map((account) => account.account_id), ['acc-bob-current']);
  const balance = await api('truelayer', '/accounts/acc-bob-current/balance', { user: 'usr_bob', consent });
  assert.equal(typeof balance.json().results[0].current, 'number');
  const transactions = await api('truelayer', '/accounts/acc-bob-current/transactions', { user: 'usr_bob', consent });
  assert.ok(transactions.json().results.length > 0);

  // A token about to run out is refreshed: grant_type=refresh_token with the secret in the
  // body; only the newest access token works at TrueLayer afterwards.
  const refreshesBefore = truelayerTokenRequests('refresh_token').length;
  const before = stack.truelayer.issued.accessTokens.at(-1);
  await expireAccessToken(consent);
  const after = await api('truelayer', '/accounts', { user: 'usr_bob', consent });
  assert.equal(after.status, 200, describe(after));
  const [refresh] = truelayerTokenRequests('refresh_token').slice(refreshesBefore);
  assert.ok(refresh, 'a refresh');
  assert.equal(refresh.authorization, null);
  assert.equal(refresh.form.client_secret, stack.secrets.truelayerClientSecret);
  assert.equal(refresh.form.client_id, 'consentry-truelayer');
  const superseded = await fetch(`${stack.truelayer.url}/data/v1/accounts`, { headers: { Authorization: `Bearer ${before}` } });
  assert.equal(superseded.status, 401, 'the Worker uses the newest token, the old one is dead at TrueLayer');

  // The consent withdrawn at TrueLayer: 403 access_denied ends it here too.
  const connection = stack.truelayer.issued.connections.at(-1).credentialsId;
  await testControl(stack.truelayer.url, 'revoke-connection', connection);
  await apiError(await api('truelayer', '/accounts', { user: 'usr_bob', consent }), 401, 'consent_expired');
  assert.equal((await consentOf('usr_bob', consent)).status, 'expired', 'listed as expired: reconnect');
  assert.deepEqual(await stack.d1(`SELECT consent_id FROM token_sets WHERE consent_id = ${sqlString(consent)}`), [], 'its tokens are forgotten');
  await apiError(await api('truelayer', '/accounts', { user: 'usr_bob', consent }), 403, 'consent_expired');

  // A connection past its 90 days: data calls answer 401, the refresh that follows is
  // invalid_grant, and the consent lapses.
  const second = (await grantConsent(stack, { user: 'usr_bob', provider: 'truelayer', hint: 'mock' })).outcome.consent.id;
  await testControl(stack.truelayer.url, 'expire-connection', stack.truelayer.issued.connections.at(-1).credentialsId);
  const refreshes = truelayerTokenRequests('refresh_token').length;
  await apiError(await api('truelayer', '/accounts', { user: 'usr_bob', consent: second }), 401, 'consent_expired');
  assert.equal(truelayerTokenRequests('refresh_token').length, refreshes + 1, 'the 401 got one refresh, which TrueLayer refused');
  assert.equal((await consentOf('usr_bob', second)).status, 'expired');
});

test('truelayer: revoking forgets the tokens; TrueLayer offers no RFC 7009 endpoint to tell', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_carol', provider: 'truelayer', hint: 'ob-lloyds' });
  const res = await stack.workerFetch(`/auth/consents/${outcome.consent.id}`, { method: 'DELETE', headers: headers('usr_carol') });
  assert.equal(res.status, 200, describe(res));
  assert.equal(res.json().status, 'revoked');
  assert.equal(res.json().provider_revoked, false);
  await apiError(await api('truelayer', '/accounts', { user: 'usr_carol', consent: outcome.consent.id }), 403, 'consent_expired');
});

// --- Moneyhub ------------------------------------------------------------------------------

const [MODELO, HARBOUR] = BANKS;
const moneyhubRequests = (method, path) => stack.moneyhub.requests.filter((req) => req.method === method && (typeof path === 'string' ? req.path === path : path.test(req.path)));
const moneyhubGrants = (grant) => moneyhubRequests('POST', '/oidc/token').filter((req) => req.form?.grant_type === grant);
const mints = () => moneyhubGrants('client_credentials').filter((req) => req.form.sub);
const moneyhubConsents = new Map(); // bank id -> consent id (alice's)

async function aliceProfile() {
  const [row] = await stack.d1("SELECT subject FROM provider_users WHERE user_id = 'usr_alice' AND provider = 'moneyhub'");
  return row?.subject;
}

test('moneyhub: the first flow makes the user\'s profile, the second reuses it: two banks are two consents under one profile', { timeout: TEST_TIMEOUT }, async () => {
  assert.equal(await aliceProfile(), undefined);
  const pushesBefore = moneyhubRequests('POST', '/oidc/request').length;
  const first = await grantConsent(stack, { user: 'usr_alice', provider: 'moneyhub', hint: MODELO.id });
  const created = moneyhubRequests('POST', '/users');
  assert.equal(created.length, 1, 'one profile made');
  assert.deepEqual(created[0].json, { clientUserId: 'usr_alice' });
  assert.match(created[0].authorization, /^Bearer /);
  const userCreate = moneyhubGrants('client_credentials').find((req) => req.form.scope === 'user:create');
  assert.ok(userCreate, 'with a user:create client_credentials token');
  assert.equal(userCreate.form.client_assertion_type, 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', 'private_key_jwt');
  const profile = await aliceProfile();
  assert.ok(stack.moneyhub.profiles.get(profile), 'the Worker keeps the profile Moneyhub made');
  assert.equal(stack.moneyhub.profiles.get(profile).clientUserId, 'usr_alice');

  // The request: pushed, signed, with the bank as id: scope and the profile as the claims' sub.
  const front = new URL(first.location);
  assert.deepEqual([...front.searchParams.keys()].sort(), ['client_id', 'request_uri']);
  const [push] = moneyhubRequests('POST', '/oidc/request').slice(pushesBefore);
  const requestObject = claimsOf(push.form.request);
  assert.equal(requestObject.scope, `openid id:${MODELO.id}`);
  assert.equal(requestObject.prompt, 'consent');
  const claims = typeof requestObject.claims === 'string' ? JSON.parse(requestObject.claims) : requestObject.claims;
  assert.deepEqual(claims.id_token.sub, { essential: true, value: profile });
  assert.deepEqual(claims.id_token['mh:con_id'], { essential: true });
  const exchange = moneyhubGrants('authorization_code').at(-1);
  assert.equal(exchange.form.sub, profile, 'Moneyhub\'s sub on the exchange');

  const second = await grantConsent(stack, { user: 'usr_alice', provider: 'moneyhub', hint: HARBOUR.id });
  assert.equal(moneyhubRequests('POST', '/users').length, 1, 'the second connection reuses the profile');
  const connections = [...stack.moneyhub.profiles.get(profile).connections.values()];
  assert.deepEqual(connections.map((connection) => connection.bankId).sort(), [MODELO.id, HARBOUR.id].sort());
  const listed = (await consentsOf('usr_alice')).filter((consent) => consent.provider === 'moneyhub');
  assert.equal(listed.length, 2, 'two consents');
  assert.deepEqual(listed.map((consent) => consent.account).sort(), connections.map((connection) => connection.id).sort(), 'each consent is one connection (mh:con_id)');
  assert.ok(listed.every((consent) => consent.status === 'active'));
  for (const consent of listed) {
    const connection = connections.find((known) => known.id === consent.account);
    assert.equal(Date.parse(consent.expires_at), Math.floor(Date.parse(connection.expiresAt) / 1000) * 1000, 'the consent ends when mh:consent says');
  }
  moneyhubConsents.set(MODELO.id, first.outcome.consent.id);
  moneyhubConsents.set(HARBOUR.id, second.outcome.consent.id);
});

test('moneyhub: data through /api with client_credentials tokens minted with the profile as sub, reused until they lapse, one mint at a time', { timeout: TEST_TIMEOUT }, async () => {
  const consent = moneyhubConsents.get(MODELO.id);
  assert.ok(consent, 'needs the flows above');
  const profile = await aliceProfile();
  const mintsBefore = mints().length;
  const accounts = await api('moneyhub', '/accounts', { consent });
  assert.equal(accounts.status, 200, describe(accounts));
  const [mint] = mints().slice(mintsBefore);
  assert.equal(mint.form.sub, profile);
  assert.equal(mint.form.scope, 'accounts:read transactions:read:all');
  const { data } = accounts.json();
  assert.ok(data.length > 0 && data.every((account) => typeof account.balance.amount.value === 'number'));
  const connection = (await consentOf('usr_alice', consent)).account;
  const account = data.find((entry) => entry.connectionId === connection);
  assert.ok(account, 'the connection\'s accounts are there');
  const transactions = await api('moneyhub', `/transactions?accountId=${encodeURIComponent(account.id)}&limit=5`, { consent });
  assert.equal(transactions.status, 200, describe(transactions));
  assert.ok(transactions.json().data.length > 0);
  assert.equal(mints().length, mintsBefore + 1, 'the data token is reused');

  // Lapsed: ten calls at once, one mint.
  await expireAccessToken(consent);
  const burst = await Promise.all(Array.from({ length: 10 }, () => api('moneyhub', '/accounts', { consent })));
  assert.ok(burst.every((res) => res.status === 200), burst.map(describe).join('\n'));
  assert.equal(mints().length, mintsBefore + 2, 'one mint for ten callers');

  // Moneyhub stops taking the data tokens: a 401, one fresh mint, and the call goes through.
  await testControl(stack.moneyhub.url, 'expire-data-tokens', '');
  const again = await api('moneyhub', '/accounts', { consent });
  assert.equal(again.status, 200, describe(again));
  assert.equal(mints().length, mintsBefore + 3);
});

test('moneyhub: an id_token whose sub is not the profile, or that names no connection, is refused: nothing stored, the tokens revoked', { timeout: TEST_TIMEOUT }, async () => {
  assert.ok(await aliceProfile(), 'needs the flows above');
  const revocations = () => moneyhubRequests('POST', '/oidc/token/revocation').length;
  for (const [name, body] of [['next-id-token-sub', 'somebody-elses-profile'], ['next-id-token-without-con-id', '']]) {
    const stored = await storedConsents();
    const revokedBefore = revocations();
    await testControl(stack.moneyhub.url, name, body);
    const { outcome } = await flowOutcome({ provider: 'moneyhub', hint: HARBOUR.id });
    assert.equal(outcome.status, 'failed', name);
    assert.equal(outcome.error, 'id_token_invalid', `${name}: ${outcome.error_description}`);
    assert.equal(await storedConsents(), stored, `${name}: no consent stored`);
    assert.equal(revocations(), revokedBefore + 1, `${name}: the tokens Moneyhub issued were revoked there (RFC 7009)`);
  }
});

test('moneyhub: two first starts at once for one user make one profile', { timeout: TEST_TIMEOUT }, async () => {
  const made = () => moneyhubRequests('POST', '/users').filter((req) => req.json?.clientUserId === 'usr_bob').length;
  assert.equal(made(), 0);
  const starts = await Promise.all([MODELO, HARBOUR].map((bank) => start({ user: 'usr_bob', provider: 'moneyhub', hint: bank.id })));
  for (const flow of starts) assert.equal(flow.res.status, 303, describe(flow.res));
  assert.equal(made(), 1, 'exactly one POST /users');
  const [row] = await stack.d1("SELECT subject FROM provider_users WHERE user_id = 'usr_bob' AND provider = 'moneyhub'");
  const pushed = moneyhubRequests('POST', '/oidc/request').slice(-2).map((push) => claimsOf(push.form.request));
  for (const requestObject of pushed) {
    const claims = typeof requestObject.claims === 'string' ? JSON.parse(requestObject.claims) : requestObject.claims;
    assert.equal(claims.id_token.sub.value, row.subject, 'both flows ask for the one profile');
  }
});

test('moneyhub: the browser names the bank, never the profile', { timeout: TEST_TIMEOUT }, async () => {
  const pushes = () => moneyhubRequests('POST', '/oidc/request').length;
  const before = pushes();
  for (const hint of [undefined, 'a b', 'id:other', 'x'.repeat(65)]) {
    const flow = await start({ provider: 'moneyhub', hint });
    assert.equal(flow.res.status, 400, `${hint}: ${describe(flow.res)}`);
    assert.match(flow.res.body, /data-error="invalid_parameter"/, `${hint}`);
  }
  assert.equal(pushes(), before, 'nothing pushed to Moneyhub');
});

test('moneyhub: revoking one consent deletes that connection at Moneyhub and leaves the other', { timeout: TEST_TIMEOUT }, async () => {
  const gone = moneyhubConsents.get(MODELO.id);
  const kept = moneyhubConsents.get(HARBOUR.id);
  assert.ok(gone && kept, 'needs the flows above');
  const profile = await aliceProfile();
  const goneAccount = (await consentOf('usr_alice', gone)).account;
  // Moneyhub failing to delete it: the consent is not called revoked (the connection would
  // stay readable through the profile), and the user can try again.
  await testControl(stack.moneyhub.url, 'connection-deletes', 'fail');
  await apiError(await stack.workerFetch(`/auth/consents/${gone}`, { method: 'DELETE', headers: headers('usr_alice') }), 502, 'revocation_failed');
  assert.equal((await consentOf('usr_alice', gone)).status, 'active');
  assert.ok(stack.moneyhub.profiles.get(profile).connections.has(goneAccount));
  await testControl(stack.moneyhub.url, 'connection-deletes', 'normal');
  const res = await stack.workerFetch(`/auth/consents/${gone}`, { method: 'DELETE', headers: headers('usr_alice') });
  assert.equal(res.status, 200, describe(res));
  assert.equal(res.json().provider_revoked, true, 'Moneyhub confirmed');
  const deletes = moneyhubRequests('DELETE', /^\/users\//);
  assert.equal(deletes.length, 2, 'the failed delete, and the one that went through');
  assert.ok(deletes.every((req) => decodeURIComponent(req.path) === `/users/${profile}/connections/${goneAccount}`));
  const connectionDelete = moneyhubGrants('client_credentials').find((req) => req.form.scope === 'connection:delete');
  assert.ok(connectionDelete, 'with a connection:delete token');
  const left = [...stack.moneyhub.profiles.get(profile).connections.keys()];
  assert.ok(!left.includes(goneAccount), 'that connection is gone at Moneyhub');
  assert.ok(left.includes((await consentOf('usr_alice', kept)).account), 'the other connection stays');
  await apiError(await api('moneyhub', '/accounts', { consent: gone }), 403, 'consent_expired');
  const still = await api('moneyhub', '/accounts', { consent: kept });
  assert.equal(still.status, 200, describe(still));
  assert.ok(still.json().data.length > 0);
  assert.ok(still.json().data.every((account) => account.connectionId !== goneAccount), 'no account of the deleted connection');
});

// --- Connect -------------------------------------------------------------------------------

const connectTokenRequests = (emulation, grant) => emulation.requests.filter((req) => req.path === '/oauth/token' && req.form?.grant_type === grant);

test('connect: a flow for each demo user with client_secret_post; the JWT access token verified; its sub is the account', { timeout: TEST_TIMEOUT }, async () => {
  for (const user of ['usr_alice', 'usr_bob', 'usr_carol']) {
    const before = connectTokenRequests(stack.connect, 'authorization_code').length;
    const { outcome, location } = await grantConsent(stack, { user, provider: 'connect' });
    const link = new URL(location);
    assert.equal(`${link.origin}${link.pathname}`, `${stack.connect.issuer}/oauth/authorize`);
    const [exchange] = connectTokenRequests(stack.connect, 'authorization_code').slice(before);
    assert.equal(exchange.authorization, null, 'client_secret_post: no Basic header');
    assert.equal(exchange.form.client_secret, stack.secrets.connectClientSecret);
    const accessToken = stack.connect.issued.accessTokens.at(-1).value;
    assert.ok(accessToken.length > 255, 'Connect\'s tokens are long');
    const consent = await consentOf(user, outcome.consent.id);
    assert.equal(consent.account, claimsOf(accessToken).sub);
  }
  const info = await api('connect', '/userinfo', { user: 'usr_bob' });
  assert.equal(info.status, 200, describe(info));
  assert.equal(info.json().email, 'bob@bank.example');
  // Without openid there is no id_token: the verified access token alone names the account.
  const { outcome } = await grantConsent(stack, { user: 'usr_alice', provider: 'connect-rs256' });
  assert.equal(stack.connectRs256.issued.idTokens.length, 0, '(the setup: connect-rs256 asks no openid, so no id_token)');
  const accessToken = stack.connectRs256.issued.accessTokens.at(-1).value;
  assert.equal((await consentOf('usr_alice', outcome.consent.id)).account, claimsOf(accessToken).sub);
});

test('connect: our state stays within its 255 characters; a longer one is refused before Connect sees it', { timeout: TEST_TIMEOUT }, async () => {
  const authorizations = () => stack.connect.requests.filter((req) => req.path === '/oauth/authorize').length;
  const before = authorizations();
  const long = await start({ provider: 'connect', state: 's'.repeat(256) });
  assert.equal(long.res.status, 400, describe(long.res));
  assert.match(long.res.body, /data-error="invalid_state"/);
  assert.equal(authorizations(), before, 'nothing reached Connect');
  // The longest state we accept is one Connect takes.
  const jar = new CookieJar();
  const flow = await start({ provider: 'connect', state: `${randomToken()}${'s'.repeat(255 - 43)}`, jar });
  assert.equal(flow.res.status, 303, describe(flow.res));
  assert.equal(new URL(flow.location).searchParams.get('state').length, 255);
  const back = await answerAtProvider(flow.location, { user: 'alice', redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  const page = await returnToWorker(stack, back, { jar });
  assert.equal(outcomePage(page).outcome.status, 'granted', describe(page));
});

test('connect: an access token with a bad signature, wrong aud, past exp (or wrong iss, future iat, no sub, alg none, HS256 from an RS256 provider) is refused with nothing stored', { timeout: TEST_TIMEOUT }, async () => {
  const faults = ['bad-signature', 'wrong-aud', 'expired', 'wrong-iss', 'future-iat', 'no-sub', 'alg-none'];
  // hs256-secret: an RS256 provider's token signed HS256 with the client secret (alg confusion).
  for (const [emulation, provider, extra] of [[stack.connect, 'connect', []], [stack.connectRs256, 'connect-rs256', ['hs256-secret']]]) {
    for (const fault of [...faults, ...extra]) {
      const stored = await storedConsents();
      await testControl(emulation.issuer, 'next-access-token', fault);
      const { outcome } = await flowOutcome({ provider });
      assert.equal(emulation.issued.accessTokens.at(-1).fault, fault, `${provider} ${fault}: the emulation issued the fault`);
      assert.equal(outcome.status, 'failed', `${provider} ${fault}`);
      assert.equal(outcome.error, 'token_exchange_failed', `${provider} ${fault}: ${outcome.error_description}`);
      assert.equal(await storedConsents(), stored, `${provider} ${fault}: nothing stored`);
    }
  }
});

test('connect: userinfo through /api; refresh rotates the refresh token, and a refreshed access token is verified too', { timeout: TEST_TIMEOUT }, async () => {
  for (const [emulation, provider] of [[stack.connect, 'connect'], [stack.connectRs256, 'connect-rs256']]) {
    const { outcome } = await grantConsent(stack, { user: 'usr_carol', provider });
    const consent = outcome.consent.id;
    const info = await api(provider, '/userinfo', { user: 'usr_carol', consent });
    assert.equal(info.status, 200, describe(info));
    assert.equal(info.json().email, 'carol@bank.example');
    // Two refreshes in a row: the second presents the refresh token the first got (Connect
    // revokes the whole grant when a rotated-away one comes back).
    for (let round = 1; round <= 2; round += 1) {
      const before = connectTokenRequests(emulation, 'refresh_token').length;
      const presented = emulation.issued.refreshTokens.at(-1).value;
      await expireAccessToken(consent);
      const after = await api(provider, '/userinfo', { user: 'usr_carol', consent });
      assert.equal(after.status, 200, `${provider} round ${round}: ${describe(after)}`);
      const [refresh] = connectTokenRequests(emulation, 'refresh_token').slice(before);
      assert.equal(refresh.form.refresh_token, presented, `${provider} round ${round}: the newest refresh token`);
    }
    // A refresh that brings back an access token that does not verify ends the consent.
    await testControl(emulation.issuer, 'next-access-token', 'bad-signature');
    await expireAccessToken(consent);
    await apiError(await api(provider, '/userinfo', { user: 'usr_carol', consent }), 401, 'consent_expired');
    assert.equal((await consentOf('usr_carol', consent)).status, 'expired', provider);
  }
});

test('connect-rs256: a refreshed token that cannot be checked just now (a new key within the JWKS cooldown, then the JWKS down) fails the refresh but keeps the rotated refresh token', { timeout: 3 * TEST_TIMEOUT }, async () => {
  const emulation = stack.connectRs256;
  // When the Worker last fetched this JWKS successfully, and a wait until a minute after it.
  const lastFetch = () => emulation.issued.jwksFetches.filter((fetch) => fetch.status === 200).at(-1)?.at ?? 0;
  const cooledDown = () => sleep(Math.max(0, lastFetch() + 61_000 - Date.now()));
  const refreshed = () => connectTokenRequests(emulation, 'refresh_token').length;
  const failedWith = (code) => new RegExp(`consentry: refresh provider=connect-rs256 failed code=${code}\\b`).test(stack.logs());
  const { outcome } = await grantConsent(stack, { user: 'usr_bob', provider: 'connect-rs256' });
  const consent = outcome.consent.id;
  assert.equal((await api('connect-rs256', '/userinfo', { user: 'usr_bob', consent })).status, 200);
  // A new key met with a JWKS copy over a minute old: fetched again, and the refresh lands.
  await cooledDown();
  await testControl(emulation.issuer, 'rotate-key', '');
  await expireAccessToken(consent);
  let fetches = emulation.issued.jwksFetches.length;
  assert.equal((await api('connect-rs256', '/userinfo', { user: 'usr_bob', consent })).status, 200);
  assert.equal(emulation.issued.jwksFetches.length - fetches, 1, 'one refetch for the new key');
  await testControl(emulation.issuer, 'rotate-key', '');
  await testControl(emulation.issuer, 'jwks', 'down');
  try {
    // Another new key within the minute: not fetched again (C10), so the token cannot be
    // checked yet; the refresh fails, and the consent stands.
    fetches = emulation.issued.jwksFetches.length;
    let before = refreshed();
    await expireAccessToken(consent);
    await apiError(await api('connect-rs256', '/userinfo', { user: 'usr_bob', consent }), 502, 'refresh_failed');
    assert.equal(refreshed(), before + 1, 'the refresh was made; its token could not be checked');
    assert.equal(emulation.issued.jwksFetches.length, fetches, 'no fetch within the minute');
    assert.equal(emulation.issued.idTokens.length, 0, '(the setup: no id_token, so the access token was what could not be checked)');
    assert.equal((await consentOf('usr_bob', consent)).status, 'active', 'not lapsed: nothing was wrong with the token');
    await waitFor(() => failedWith('jwk_not_yet_known'), 5000, 'the refresh failed as jwk_not_yet_known');
    // A minute on, the Worker tries the JWKS again, and finds it down (503): the same.
    await cooledDown();
    before = refreshed();
    await apiError(await api('connect-rs256', '/userinfo', { user: 'usr_bob', consent }), 502, 'refresh_failed');
    assert.equal(refreshed(), before + 1);
    assert.equal(emulation.issued.jwksFetches.at(-1).status, 503, 'the JWKS was tried');
    assert.equal((await consentOf('usr_bob', consent)).status, 'active');
    await waitFor(() => failedWith('jwk_invalid'), 5000, 'the refresh failed as jwk_invalid (the JWKS answered 503)');
  } finally {
    await testControl(emulation.issuer, 'jwks', 'up');
  }
  // The refresh token that refresh got was kept: the next refresh presents it (Connect would
  // revoke the grant for a rotated-away one) and its token checks out against the new key.
  const rotated = emulation.issued.refreshTokens.at(-1).value;
  const again = await api('connect-rs256', '/userinfo', { user: 'usr_bob', consent });
  assert.equal(again.status, 200, describe(again));
  assert.equal(connectTokenRequests(emulation, 'refresh_token').at(-1).form.refresh_token, rotated);
});

test('connect: revoking forgets the tokens (no revocation endpoint is configured), and the consent reads no more', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_alice', provider: 'connect' });
  const res = await stack.workerFetch(`/auth/consents/${outcome.consent.id}`, { method: 'DELETE', headers: headers('usr_alice') });
  assert.equal(res.status, 200, describe(res));
  assert.equal(res.json().status, 'revoked');
  assert.equal(res.json().provider_revoked, false);
  await apiError(await api('connect', '/userinfo', { consent: outcome.consent.id }), 403, 'consent_expired');
});

test('leak scan: no TrueLayer, Moneyhub or Connect token, code, client secret or key in anything the Worker said, logged or stored', async () => {
  await new Promise((resolve) => { setTimeout(resolve, 500); }); // the last request log lines
  const jwtParts = (kind, token) => {
    const [, payload, signature] = token.split('.');
    return signature ? [[kind, token], [`${kind} signature`, signature], [`${kind} payload`, payload]] : [[kind, token]];
  };
  const { truelayer, moneyhub, connect, connectRs256 } = stack;
  const secrets = [
    ...truelayer.issued.codes.map((code) => ['TrueLayer code', code]),
    ...truelayer.issued.accessTokens.flatMap((token) => jwtParts('TrueLayer access token', token)),
    ...truelayer.issued.refreshTokens.map((token) => ['TrueLayer refresh token', token]),
    ...moneyhub.issued.codes.map((code) => ['Moneyhub code', code]),
    ...moneyhub.issued.accessTokens.map((token) => ['Moneyhub access token', token]),
    ...moneyhub.issued.idTokens.flatMap((token) => jwtParts('Moneyhub id_token', token)),
    ...moneyhub.issued.dataTokens.map((token) => ['Moneyhub data token', token]),
    ...[connect, connectRs256].flatMap((emulation) => [
      ...emulation.issued.codes.map(({ code }) => ['Connect code', code]),
      ...emulation.issued.accessTokens.flatMap(({ value }) => jwtParts('Connect access token', value)),
      ...emulation.issued.refreshTokens.map(({ value }) => ['Connect refresh token', value]),
      ...emulation.issued.idTokens.flatMap(({ value }) => jwtParts('Connect id_token', value)),
    ]),
    // The verifiers the Worker sent the providers (each exchange's code_verifier).
    ...[truelayer, moneyhub, connect, connectRs256].flatMap((emulation) => emulation.requests)
      .map((req) => req.form?.code_verifier).filter(Boolean).map((verifier) => ['code_verifier', verifier]),
    ['TrueLayer client secret', stack.secrets.truelayerClientSecret],
    ['Connect client secret', stack.secrets.connectClientSecret],
    ['Moneyhub client key (d)', stack.secrets.moneyhubPrivateJwk.d],
  ];
  for (const [kind, minimum] of [['TrueLayer access token', 3], ['Moneyhub data token', 1], ['Connect access token', 3], ['code_verifier', 3]]) {
    assert.ok(secrets.filter(([k]) => k === kind).length >= minimum, `the scan has ${kind}s to look for`);
  }
  // The Worker's own log lines reach the scanned logs (else the log scan proves nothing).
  assert.match(stack.logs(), /consentry: callback provider=truelayer http=200/);
  assert.match(stack.logs(), /consentry: callback provider=moneyhub http=400 code=id_token_invalid/);
  assert.deepEqual(await findLeaks(stack, secrets, { atRest: true }), []);
});
