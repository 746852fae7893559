// Using a consent: /api/{provider}/{path} against real workerd (wrangler dev) with a local
// D1 and the local bank's data API, which answers only to its own live access tokens. Token
// refresh one at a time (also across two wrangler dev processes on one D1), upstream 401s,
// refused refreshes, refused paths, and what an upstream may and may not pass back.
//
//   node --test tests/edge/api.test.mjs

import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';

import {
  apiError, describe, expireAccessToken as expireAccessTokenOf, findLeaks, sleep, testControl, userHeaders, waitFor,
} from '../lib/edge.mjs';
import { grantConsent } from '../lib/flow.mjs';
import { BANK_CLIENT_SECRET, CookieJar, sqlString, startStack } from '../lib/worker-harness.mjs';

const TEST_TIMEOUT = 120_000;
const EVIL_ORIGIN = 'https://evil.example';

let stack;
const consents = new Map(); // user -> { jar, id }

before(async () => { stack = await startStack(); }, { timeout: 30 * 60_000 });
after(async () => { await stack?.stop(); });


const headers = (user, extra) => userHeaders(stack, user, extra);

/** `GET /api/local-bank{path}` as `user` (the Authorization: Bearer user reference). */
function api(path, { user = 'usr_alice', consent, method = 'GET', extra = {}, base } = {}) {
  const sent = headers(user, extra);
  if (consent) sent['X-Consentry-Consent'] = consent;
  return stack.workerFetch(`${base ?? ''}/api/local-bank${path}`, { method, headers: sent });
}

const setTokenMode = (mode) => testControl(stack.issuer, 'token-mode', mode);
const setRotation = (mode) => testControl(stack.issuer, 'rotation', mode);
const setDataMode = (mode) => testControl(stack.issuer, 'data-mode', mode);

/** A consent for `user` (made once, by a flow, then reused). */
async function consentOf(user) {
  if (!consents.has(user)) {
    const { jar, outcome } = await grantConsent(stack, { user });
    consents.set(user, { jar, id: outcome.consent.id });
  }
  return consents.get(user).id;
}

const expireAccessToken = (consentId) => expireAccessTokenOf(stack, consentId);

const dataRequests = () => stack.issued.dataRequests.length;
const refreshes = () => stack.issued.refreshes.length;

test('each user reads only their own accounts, balances and transactions', { timeout: TEST_TIMEOUT }, async () => {
  const owners = { usr_alice: 'alice', usr_bob: 'bob', usr_carol: 'carol' };
  for (const [user, owner] of Object.entries(owners)) {
    const consent = await consentOf(user);
    const res = await api('/accounts', { user });
    assert.equal(res.status, 200, describe(res));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('x-consentry-upstream'), '1');
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const { accounts } = res.json();
    assert.ok(accounts.length >= 1, `${user} has accounts`);
    assert.ok(accounts.every((account) => account.id.startsWith(`acc-${owner}-`)), `${user} sees only ${owner}'s accounts: ${JSON.stringify(accounts)}`);
    const [first] = accounts;
    const balance = await api(`/accounts/${first.id}/balance`, { user, consent });
    assert.equal(balance.status, 200, describe(balance));
    assert.equal(typeof balance.json().current, 'number');
    const transactions = await api(`/accounts/${first.id}/transactions?limit=5`, { user });
    assert.equal(transactions.status, 200, describe(transactions));
    assert.equal(transactions.json().transactions.length, 5);
  }
  assert.equal((await api('/accounts')).json().accounts.length, 2, 'alice has a current and a savings account');

  // Another user's account, through one's own consent: the bank says no.
  const bobAccount = (await api('/accounts', { user: 'usr_bob' })).json().accounts[0].id;
  const foreign = await api(`/accounts/${bobAccount}/balance`);
  assert.equal(foreign.status, 404, describe(foreign));

  // Another user's consent, named: 404 and no upstream request.
  const before = dataRequests();
  await apiError(await api('/accounts', { consent: await consentOf('usr_bob') }), 404, 'consent_not_found');
  await apiError(await api('/accounts', { consent: 'cns_nope' }), 404, 'consent_not_found');
  assert.equal(dataRequests(), before, 'nothing reached the bank');

  // The listing shows which bank account each consent reaches.
  const listed = await stack.workerFetch('/auth/consents', { headers: headers('usr_alice') });
  const mine = listed.json().consents.find((consent) => consent.id === consents.get('usr_alice').id);
  assert.equal(mine.account, 'alice');
});

test('without a consent, with several, or with a revoked one, /api says which', { timeout: TEST_TIMEOUT }, async () => {
  await consentOf('usr_carol');
  // No consent at all with a provider (local-bank-pkjwt has a data API too).
  const before = dataRequests();
  await apiError(await stack.workerFetch('/api/local-bank-pkjwt/accounts', { headers: headers('usr_carol') }), 403, 'consent_required');
  // Carol's second consent makes two active ones.
  const { outcome } = await grantConsent(stack, { user: 'usr_carol' });
  await apiError(await api('/accounts', { user: 'usr_carol' }), 409, 'consent_ambiguous');
  assert.equal(dataRequests(), before, 'nothing reached the bank');
  const named = await api('/accounts', { user: 'usr_carol', consent: outcome.consent.id });
  assert.equal(named.status, 200, describe(named));
  const revoked = await stack.workerFetch(`/auth/consents/${outcome.consent.id}`, { method: 'DELETE', headers: headers('usr_carol') });
  assert.equal(revoked.status, 200, describe(revoked));
  await apiError(await api('/accounts', { user: 'usr_carol', consent: outcome.consent.id }), 403, 'consent_expired');
  assert.equal((await api('/accounts', { user: 'usr_carol' })).status, 200, 'the one active consent is used again');
  // Neither a session nor a user reference: 401.
  await apiError(await stack.workerFetch('/api/local-bank/accounts', { headers: { 'X-Consentry': '1' } }), 401, 'session_required');
  // A well-formed id of no user (its consents are read beside it, and never used), and a
  // reference that is no id at all: 400 either way.
  await apiError(await api('/accounts', { user: 'usr_nobody' }), 400, 'invalid_user');
  await apiError(await api('/accounts', { user: 'not an id!' }), 400, 'invalid_user');
  assert.equal(dataRequests(), before + 2, 'only the two named calls reached the bank');
});

test('an expired token: 50 concurrent calls, exactly one refresh; the rotated refresh token is the next one used', { timeout: TEST_TIMEOUT }, async () => {
  const consent = await consentOf('usr_alice');
  await expireAccessToken(consent);
  const refreshesBefore = refreshes();
  const answers = await Promise.all(Array.from({ length: 50 }, () => api('/accounts')));
  const failed = answers.filter((res) => res.status !== 200);
  assert.deepEqual(failed.map(describe), [], 'all 50 succeed');
  const made = stack.issued.refreshes.slice(refreshesBefore);
  assert.equal(made.length, 1, `exactly one refresh at the bank: ${JSON.stringify(made.map((r) => r.status))}`);
  assert.equal(made[0].status, 200);
  assert.ok(made[0].rotated && made[0].rotated !== made[0].presented, 'the bank rotated the refresh token');
  const tokensUsed = new Set(stack.issued.dataRequests.slice(-50).map((request) => request.token));
  assert.equal(tokensUsed.size, 1, 'all 50 used the one refreshed access token');

  // The next refresh presents the rotated token (the bank revokes the grant on reuse).
  await expireAccessToken(consent);
  const again = await api('/accounts');
  assert.equal(again.status, 200, describe(again));
  const next = stack.issued.refreshes.slice(refreshesBefore + 1);
  assert.equal(next.length, 1);
  assert.equal(next[0].presented, made[0].rotated, 'the rotated refresh token was stored and used');
  assert.equal(next[0].status, 200);
  const [row] = await stack.d1(`SELECT generation FROM token_sets WHERE consent_id = ${sqlString(consent)}`);
  assert.equal(row.generation, 2, 'two refreshes stored, one generation each');
});

test('the refresh lease holds across isolates: a second Worker process waits for the first one\'s refresh', { timeout: TEST_TIMEOUT }, async () => {
  // Two wrangler dev processes on one persisted D1 share nothing but D1. (Local D1 is a
  // SQLite file that two processes cannot write at the same moment, so the calls are laid
  // out in time: one process refreshes while the other waits on the lease in D1.)
  const consent = await consentOf('usr_bob');
  const second = await stack.startSecondWorker();
  await expireAccessToken(consent);
  const refreshesBefore = refreshes();
  const tokenPosts = () => stack.bankRequests.filter((req) => req.method === 'POST' && req.path === '/token').length;
  const postsBefore = tokenPosts();
  await setTokenMode('slow:1500');
  let answers;
  try {
    const first = api('/accounts', { user: 'usr_bob' });
    const deadline = Date.now() + 10_000;
    while (tokenPosts() === postsBefore && Date.now() < deadline) await sleep(20);
    assert.equal(tokenPosts(), postsBefore + 1, 'the first process is refreshing');
    const waiting = Array.from({ length: 5 }, () => api('/accounts', { user: 'usr_bob', base: second }));
    answers = await Promise.all([first, ...waiting]);
  } finally {
    await setTokenMode('normal');
  }
  assert.deepEqual(answers.filter((res) => res.status !== 200).map(describe), [], 'all six succeed');
  assert.equal(stack.issued.refreshes.length - refreshesBefore, 1, 'the second process did not refresh again');
  const tokensUsed = new Set(stack.issued.dataRequests.slice(-6).map((request) => request.token));
  assert.equal(tokensUsed.size, 1, 'both processes used the one refreshed token');
});

test('an upstream 401 on a live-looking token: one refresh, one retry; a second 401 reaches the SPA', { timeout: TEST_TIMEOUT }, async () => {
  await consentOf('usr_bob');
  let refreshesBefore = refreshes();
  let dataBefore = dataRequests();
  await setDataMode('401-once');
  const recovered = await api('/accounts', { user: 'usr_bob' });
  assert.equal(recovered.status, 200, describe(recovered));
  assert.equal(refreshes() - refreshesBefore, 1, 'one forced refresh');
  assert.equal(dataRequests() - dataBefore, 2, 'the call and one retry');
  const [first, retry] = stack.issued.dataRequests.slice(dataBefore);
  assert.notEqual(first.token, retry.token, 'the retry carries the refreshed token');

  refreshesBefore = refreshes();
  dataBefore = dataRequests();
  await setDataMode('401');
  try {
    const refused = await api('/accounts', { user: 'usr_bob' });
    assert.equal(refused.status, 401, describe(refused));
    assert.equal(refused.headers.get('x-consentry-upstream'), '1', 'the data API\'s own 401, passed through');
  } finally {
    await setDataMode('normal');
  }
  assert.equal(refreshes() - refreshesBefore, 1, 'one refresh');
  assert.equal(dataRequests() - dataBefore, 2, 'no third request');
});

test('a refresh refused with invalid_grant: the consent lapses, /api says 401 consent_expired, nothing retried', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_carol' });
  const consent = outcome.consent.id;
  await api('/accounts', { user: 'usr_carol', consent }); // live: no refresh
  // The bank forgets the grant's refresh token (as when its 90 days are over).
  const lastRefresh = stack.issued.tokens.filter((token) => token.type === 'refresh_token').at(-1).value;
  const revoked = await fetch(`${stack.issuer}/token/revocation`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Basic ${Buffer.from(`consentry-demo:${BANK_CLIENT_SECRET}`).toString('base64')}` },
    body: new URLSearchParams({ token: lastRefresh, token_type_hint: 'refresh_token' }).toString(),
  });
  assert.equal(revoked.status, 200);
  await expireAccessToken(consent);
  const refreshesBefore = refreshes();
  const dataBefore = dataRequests();
  await apiError(await api('/accounts', { user: 'usr_carol', consent }), 401, 'consent_expired');
  assert.equal(refreshes() - refreshesBefore, 1, 'one refresh attempt');
  assert.equal(stack.issued.refreshes.at(-1).status, 400);
  assert.equal(dataRequests(), dataBefore, 'no data request');
  await apiError(await api('/accounts', { user: 'usr_carol', consent }), 403, 'consent_expired');
  assert.equal(refreshes() - refreshesBefore, 1, 'nothing retried');
  const listed = (await stack.workerFetch('/auth/consents', { headers: headers('usr_carol') })).json().consents.find((c) => c.id === consent);
  assert.equal(listed.status, 'expired');
  const [row] = await stack.d1(`SELECT COUNT(*) AS n FROM token_sets WHERE consent_id = ${sqlString(consent)}`);
  assert.equal(row.n, 0, 'its tokens are forgotten');
});

test('a crash between the bank\'s refresh answer and the store ends in one clean invalid_grant, never a loop', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_alice' });
  const consent = outcome.consent.id;
  await expireAccessToken(consent);
  const refreshesBefore = refreshes();
  // The bank answers the refresh (rotating its refresh token) but the new set cannot be
  // stored: as if the Worker died right after the answer.
  await stack.d1("CREATE TRIGGER refuse_refresh BEFORE UPDATE OF sealed ON token_sets BEGIN SELECT RAISE(ABORT, 'injected crash before the store'); END");
  try {
    await apiError(await api('/accounts', { consent }), 503, 'storage_failed');
  } finally {
    await stack.d1('DROP TRIGGER refuse_refresh');
  }
  assert.equal(refreshes() - refreshesBefore, 1);
  assert.equal(stack.issued.refreshes.at(-1).status, 200, 'the bank did rotate');
  // The stored refresh token is the rotated-away one: the bank refuses it (and revokes the
  // grant, as reuse detection does); the consent lapses, once.
  await apiError(await api('/accounts', { consent }), 401, 'consent_expired');
  assert.equal(refreshes() - refreshesBefore, 2);
  assert.equal(stack.issued.refreshes.at(-1).status, 400);
  for (let i = 0; i < 3; i += 1) await apiError(await api('/accounts', { consent }), 403, 'consent_expired');
  assert.equal(refreshes() - refreshesBefore, 2, 'no refresh is tried again');
});

test('F7: the same crash with a reusable refresh token (no rotation) recovers on the next call', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_alice' });
  const consent = outcome.consent.id;
  await expireAccessToken(consent);
  const refreshesBefore = refreshes();
  await setRotation('off');
  try {
    await stack.d1("CREATE TRIGGER refuse_refresh BEFORE UPDATE OF sealed ON token_sets BEGIN SELECT RAISE(ABORT, 'injected crash before the store'); END");
    try {
      await apiError(await api('/accounts', { consent }), 503, 'storage_failed');
    } finally {
      await stack.d1('DROP TRIGGER refuse_refresh');
    }
    assert.equal(stack.issued.refreshes.at(-1).status, 200, 'the bank did answer');
    // The stored refresh token is still good: the next call refreshes with it and reads.
    const res = await api('/accounts', { consent });
    assert.equal(res.status, 200, describe(res));
    assert.equal(refreshes() - refreshesBefore, 2, 'one refresh more, no loop');
    assert.equal(stack.issued.refreshes.at(-1).status, 200);
  } finally {
    await setRotation('on');
  }
});

test('G2: a 5xx HTML page from the token endpoint during a refresh fails that call with refresh_failed, is neither passed on nor logged, lapses nothing, and is not retried on its own', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_carol' });
  const consent = outcome.consent.id;
  await expireAccessToken(consent);
  const tokenPosts = () => stack.bankRequests.filter((req) => req.method === 'POST' && req.path === '/token').length;
  const postsBefore = tokenPosts();
  const dataBefore = dataRequests();
  await setTokenMode('500');
  let failed;
  try {
    failed = await api('/accounts', { user: 'usr_carol', consent });
  } finally {
    await setTokenMode('normal');
  }
  await apiError(failed, 502, 'refresh_failed');
  // The bank's HTML page is neither passed on nor logged (the Worker's own line, which says
  // the refresh failed, is awaited first: logs arrive after the answer), and the Worker does
  // not retry on its own: the next try is the app's.
  assert.ok(!failed.body.includes('bank-internal-error-page'), 'the provider\'s body is not passed on');
  await waitFor(() => /consentry: refresh provider=local-bank failed code=/.test(stack.logs()), 5000, 'the Worker\'s log line for the failed refresh');
  assert.ok(!stack.logs().includes('bank-internal-error-page'), 'nor logged');
  assert.equal(tokenPosts() - postsBefore, 1, 'one refresh request, no retry');
  assert.equal(dataRequests(), dataBefore, 'no data call without a live token');
  const [row] = await stack.d1(`SELECT lapsed_at FROM consents WHERE id = ${sqlString(consent)}`);
  assert.equal(row.lapsed_at, null, 'a provider error is not a refusal: the consent stands');
  const res = await api('/accounts', { user: 'usr_carol', consent });
  assert.equal(res.status, 200, describe(res));
  assert.equal(tokenPosts() - postsBefore, 2);
});

/**
 * Rewrites a consent's sealed token set as the Worker would seal it (AES-256-GCM under
 * CONSENTRY_KEY, the consent id as associated data): `change` gets the plaintext set and
 * gives the new one. Gives the set as it was.
 */
async function resealTokens(consentId, change) {
  const [{ sealed }] = await stack.d1(`SELECT sealed FROM token_sets WHERE consent_id = ${sqlString(consentId)}`);
  const [keyId, payload] = sealed.split('.');
  const bytes = Buffer.from(payload, 'base64url');
  const key = Buffer.from(stack.secrets.consentryKey, 'base64url');
  const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12));
  decipher.setAAD(Buffer.from(consentId));
  decipher.setAuthTag(bytes.subarray(bytes.length - 16));
  const set = JSON.parse(Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]).toString('utf8'));
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(consentId));
  const sealedAgain = Buffer.concat([iv, cipher.update(JSON.stringify(change(set))), cipher.final(), cipher.getAuthTag()]);
  await stack.d1(`UPDATE token_sets SET sealed = ${sqlString(`${keyId}.${sealedAgain.toString('base64url')}`)} WHERE consent_id = ${sqlString(consentId)}`);
  return set;
}

/**
 * The consent's next /api call refreshes once, the bank answers 200, and the Worker refuses
 * what came back: 401 consent_expired, the new tokens never used, and the consent's tokens
 * forgotten.
 */
async function assertRefreshEndsConsent(user, consent) {
  await expireAccessToken(consent);
  const refreshesBefore = refreshes();
  const dataBefore = dataRequests();
  await apiError(await api('/accounts', { user, consent }), 401, 'consent_expired');
  assert.equal(refreshes() - refreshesBefore, 1);
  assert.equal(stack.issued.refreshes.at(-1).status, 200, 'the bank did answer');
  assert.equal(dataRequests(), dataBefore, 'the new tokens were never used');
  const [row] = await stack.d1(`SELECT COUNT(*) AS n FROM token_sets WHERE consent_id = ${sqlString(consent)}`);
  assert.equal(row.n, 0, 'and are forgotten');
}

test('B11: a refreshed id_token from another authentication (an auth_time not the first id_token\'s) is refused and ends the consent (OIDC Core §12.2)', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_carol' });
  const consent = outcome.consent.id;
  const idToken = stack.issued.tokens.filter((token) => token.type === 'id_token').at(-1).value;
  const first = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString('utf8')).auth_time;
  assert.equal(typeof first, 'number', 'the bank names auth_time (require_auth_time)');
  // The Worker kept the first auth_time with the tokens; as if the grant had come from a
  // login an hour earlier, the refreshed id_token's (the bank's session's) no longer fits.
  const kept = await resealTokens(consent, (set) => ({ ...set, auth_time: first - 3600 }));
  assert.equal(kept.auth_time, first, 'sealed with the tokens at the grant');
  await assertRefreshEndsConsent('usr_carol', consent);
  // Refused as an invalid id_token (the log names the code, not which claim failed).
  await waitFor(() => /consentry: refresh provider=local-bank lapsed code=id_token_invalid\b/.test(stack.logs()), 5000, 'the lapse logged as id_token_invalid');
});

test('a refreshed id_token for another end-user is refused and ends the consent (OIDC Core §12.2)', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_bob' });
  const consent = outcome.consent.id;
  // As if the grant had been made for someone else: the bank's refreshed id_token names bob.
  await stack.d1(`UPDATE consents SET provider_subject = 'mallory' WHERE id = ${sqlString(consent)}`);
  await assertRefreshEndsConsent('usr_bob', consent);
});

test('a refresh answer without a refresh token keeps the old one (RFC 6749 §6)', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_alice' });
  const consent = outcome.consent.id;
  const refreshesBefore = refreshes();
  await setRotation('off');
  try {
    await expireAccessToken(consent);
    assert.equal((await api('/accounts', { consent })).status, 200);
    await expireAccessToken(consent);
    assert.equal((await api('/accounts', { consent })).status, 200);
  } finally {
    await setRotation('on');
  }
  const [first, second] = stack.issued.refreshes.slice(refreshesBefore);
  assert.equal(first.rotated, undefined, 'the bank sent no new refresh token');
  assert.equal(second.presented, first.presented, 'the old one was kept and used again');
  assert.equal(second.status, 200);
});

test('an upstream 401 on a grant without a refresh token passes through and ends nothing', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await grantConsent(stack, { user: 'usr_carol', provider: 'local-bank-no-refresh' });
  const consent = outcome.consent.id;
  const path = '/api/local-bank-no-refresh/accounts';
  const call = () => stack.workerFetch(path, { headers: headers('usr_carol', { 'X-Consentry-Consent': consent }) });
  assert.equal((await call()).status, 200);
  const refreshesBefore = refreshes();
  const dataBefore = dataRequests();
  await setDataMode('401-once');
  let refused;
  try {
    refused = await call();
  } finally {
    await setDataMode('normal');
  }
  assert.equal(refused.status, 401, describe(refused));
  assert.equal(refused.headers.get('x-consentry-upstream'), '1', 'the data API\'s own 401');
  assert.equal(dataRequests() - dataBefore, 1, 'nothing to retry with');
  assert.equal(refreshes(), refreshesBefore);
  assert.equal((await call()).status, 200, 'the consent is still good');
});

/**
 * A raw request, path sent byte for byte (fetch would normalize `..` away first). The
 * runtime's URL parser still resolves `..` and `%2e%2e` before the Worker sees the path, so
 * those cases land outside `api_paths` here; the core's own dot checks are its unit tests'.
 */
function rawRequest(path, { method = 'GET', headers: extra = {} } = {}) {
  const url = new URL(stack.workerUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers: extra }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, body, json: () => JSON.parse(body) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('paths, methods and callers that must not reach the bank do not', { timeout: TEST_TIMEOUT }, async () => {
  await consentOf('usr_alice');
  const before = dataRequests();
  const alice = headers('usr_alice');
  for (const path of [
    '/api/local-bank/accounts/../admin',
    '/api/local-bank/accounts/%2e%2e/admin',
    '/api/local-bank/accounts/%2E%2E/%2e%2e/admin',
    '/api/local-bank/accounts%2fadmin',
    '/api/local-bank/accounts/a%2Fb/balance',
    '/api/local-bank/accounts/a%5cb/balance',
    '/api/local-bank/accounts/@evil/balance',
    '/api/local-bank/@evil/accounts',
    '/api/local-bank//evil/accounts',
    '/api/local-bank/accounts//evil',
    '/api/local-bank/accounts/https://evil/x',
    '/api/local-bank/https://evil',
    '/api/local-bank/accountsx',
    '/api/local-bank/admin',
    '/api/local-bank/',
  ]) {
    const res = await rawRequest(path, { headers: alice });
    assert.equal(res.status, 400, `${path}: HTTP ${res.status} ${res.body}`);
    assert.equal(res.json().code, 'invalid_api_path', path);
  }
  await apiError(await api('/accounts', { method: 'POST', extra: { 'Content-Type': 'application/json' } }), 400, 'invalid_api_path');
  await apiError(await api('/accounts', { method: 'DELETE' }), 400, 'invalid_api_path');
  await apiError(await stack.workerFetch('/api/local-bank/accounts', { headers: { Origin: stack.publicOrigin, Authorization: 'Bearer usr_alice' } }), 403, 'csrf_header_missing');
  await apiError(await stack.workerFetch('/api/local-bank/accounts', { headers: headers('usr_alice', { Origin: EVIL_ORIGIN }) }), 403, 'origin_not_allowed');
  await apiError(await stack.workerFetch('/api/no-such-bank/accounts', { headers: alice }), 404, 'unknown_provider');
  await apiError(await stack.workerFetch('/api/plain-bank/accounts', { headers: alice }), 404, 'not_found');
  assert.equal(dataRequests(), before, 'not one request reached the bank\'s data API');

  // A foreign origin gets no CORS grant; the app's own does.
  const preflight = await stack.workerFetch('/api/local-bank/accounts', { method: 'OPTIONS', headers: { Origin: stack.publicOrigin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'x-consentry, x-consentry-consent' } });
  assert.equal(preflight.headers.get('access-control-allow-origin'), stack.publicOrigin);
  assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /X-Consentry-Consent/i);
  const evil = await stack.workerFetch('/api/local-bank/accounts', { method: 'OPTIONS', headers: { Origin: EVIL_ORIGIN, 'Access-Control-Request-Method': 'GET' } });
  assert.equal(evil.headers.get('access-control-allow-origin'), null);
});

test('what the data API sends back: no redirect followed, no Set-Cookie passed, a hang cut at the timeout, a flood cut at the cap', { timeout: TEST_TIMEOUT }, async () => {
  const consent = await consentOf('usr_alice');
  const cases = [
    ['redirect', 502, 'upstream_redirect'],
    ['hang', 504, 'upstream_timeout'],
    ['huge', 502, 'upstream_too_large'],
  ];
  for (const [mode, status, code] of cases) {
    await setDataMode(mode);
    let res;
    try {
      res = await api('/accounts', { consent });
    } finally {
      await setDataMode('normal');
    }
    await apiError(res, status, code);
    if (mode === 'hang') assert.ok(res.elapsedMs < 6_000, `given up on within the 2 s timeout (${Math.round(res.elapsedMs)} ms)`);
  }
  await setDataMode('set-cookie');
  let res;
  try {
    res = await api('/accounts', { consent });
  } finally {
    await setDataMode('normal');
  }
  assert.equal(res.status, 200, describe(res));
  assert.deepEqual(res.setCookies, [], 'no upstream Set-Cookie');
  const sent = stack.issued.dataRequests.at(-1);
  assert.equal(sent.mode, 'set-cookie');
});

test('the browser\'s own credentials never reach the bank; revoking a refreshed consent still works', { timeout: TEST_TIMEOUT }, async () => {
  const { jar, outcome } = await grantConsent(stack, { user: 'usr_bob' });
  const consent = outcome.consent.id;
  await expireAccessToken(consent);
  const dataBefore = dataRequests();
  // With the session cookie (no Authorization): the cookie is the Worker's, not the bank's.
  const res = await stack.workerFetch('/api/local-bank/accounts', { headers: { 'X-Consentry': '1', Origin: stack.publicOrigin, 'X-Consentry-Consent': consent }, jar });
  assert.equal(res.status, 200, describe(res));
  const sent = stack.issued.dataRequests.slice(dataBefore);
  assert.equal(sent.length, 1);
  const issuedAccess = new Set(stack.issued.tokens.filter((token) => token.type === 'access_token').map((token) => token.value));
  assert.ok(issuedAccess.has(sent[0].token), 'the bank saw one of its own access tokens, not a cookie or a user reference');
  for (const name of ['cookie', 'origin', 'referer', 'x-consentry', 'x-consentry-consent']) {
    assert.ok(!sent[0].headers.includes(name), `the browser's ${name} header is not forwarded: ${sent[0].headers}`);
  }
  const revoked = await stack.workerFetch(`/auth/consents/${consent}`, { method: 'DELETE', headers: { 'X-Consentry': '1', Origin: stack.publicOrigin }, jar });
  assert.equal(revoked.status, 200, describe(revoked));
  assert.equal(revoked.json().provider_revoked, true, 'the refreshed token set revokes at the bank');
  assert.equal(stack.issued.revocations.at(-1).status, 200);
  await apiError(await stack.workerFetch('/api/local-bank/accounts', { headers: { 'X-Consentry': '1', 'X-Consentry-Consent': consent }, jar: new CookieJar() }), 401, 'session_required');
  // A session cookie of no live session: the same (the user and the consents are read together).
  const unknownSession = new CookieJar().set('__Host-consentry-session', 'not-a-live-session', { sameSite: 'strict' });
  await apiError(await stack.workerFetch('/api/local-bank/accounts', { headers: { 'X-Consentry': '1', 'X-Consentry-Consent': consent }, jar: unknownSession }), 401, 'session_required');
});

test('leak scan: no token in any /api answer or in the logs', async () => {
  await sleep(500);
  const secrets = [
    ...stack.issued.tokens.map((token) => [token.type, token.value]),
    ...stack.issued.refreshes.filter((r) => r.rotated).map((r) => ['rotated refresh_token', r.rotated]),
  ];
  assert.ok(secrets.length > 0 && stack.responses.length > 0);
  // The Worker's own log lines reach the scanned logs (else the log scan proves nothing).
  assert.match(stack.logs(), /consentry: api provider=local-bank upstream=401 refreshing/);
  assert.deepEqual(await findLeaks(stack, secrets), []);
});
