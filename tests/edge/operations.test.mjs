// Running the Worker under attack and under change, against real workerd (wrangler dev), a
// local D1 and the local bank: rate limits (per client IP on the popup's pages, per session
// on /api) with 429 and Retry-After, legitimate retries still landing; CONSENTRY_KEY rotated
// with CONSENTRY_KEY_PREVIOUS (old records open, new seals and re-seals use the new key, a
// tampered record never opens); one callback through two Worker processes at once, and a
// logout seen by another process; storage (D1) down on every route (503 or an outcome,
// nothing half-written, everything usable once it is back); a spoofed Host; logout's CSRF
// header.
//
// Its own stack: the rate limits are set low and to 10-second windows, so that they can be
// met and waited out. wrangler dev runs Cloudflare's rate-limiting binding in memory, with
// windows aligned to the clock (a new one every 10 s); the tests that must meet a limit start
// at the beginning of a window. Each test speaks from its own client IP (CF-Connecting-IP,
// which wrangler dev keeps when the request has one), so that no test spends another's budget.
//
//   node --test tests/edge/operations.test.mjs

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';

import { answerAtProvider } from '../lib/bank-user.mjs';
import { apiError, describe, outcomePage, sleep, userHeaders } from '../lib/edge.mjs';
import { BANK_ACCOUNT, grantConsent, returnToWorker, startFlow } from '../lib/flow.mjs';
import { randomToken, sqlString, startStack } from '../lib/worker-harness.mjs';

const TEST_TIMEOUT = 180_000;
const WINDOW_MS = 10_000;
const LIMITS = {
  CONSENTRY_LIMIT_START: { limit: 4, period: WINDOW_MS / 1000 },
  CONSENTRY_LIMIT_CALLBACK: { limit: 6, period: WINDOW_MS / 1000 },
  CONSENTRY_LIMIT_API: { limit: 5, period: WINDOW_MS / 1000 },
};
const TABLES = ['users', 'transactions', 'consents', 'token_sets', 'sessions', 'provider_users', 'provider_user_claims'];

let stack;
let clientIp = '192.0.2.1';
let carolSession; // a browser with carol's session, from the second test

before(async () => {
  stack = await startStack({ rateLimits: LIMITS });
  // Every request of this file comes from `clientIp`, unless it names another.
  const workerFetch = stack.workerFetch;
  stack.workerFetch = (target, options = {}) => workerFetch(target, { ...options, headers: { 'CF-Connecting-IP': clientIp, ...options.headers } });
}, { timeout: 30 * 60_000 });
after(async () => { await stack?.stop(); });


/** Waits for a new rate-limit window, so that a test meets its limit within one window. */
async function windowStart() {
  await sleep(WINDOW_MS - (Date.now() % WINDOW_MS) + 150);
}

const tokenPosts = () => stack.bankRequests.filter((req) => req.method === 'POST' && req.path === '/token').length;
const redirectPrefix = () => `${stack.publicOrigin}/auth/callback/`;
const madeUpCallback = () => stack.workerFetch(`/auth/callback/local-bank?code=${randomToken()}&state=${randomToken()}&iss=${encodeURIComponent(stack.issuer)}`);

function assertRetryAfter(res) {
  const retryAfter = res.headers.get('retry-after');
  assert.match(retryAfter ?? '', /^\d+$/, `Retry-After in ${describe(res)}`);
  assert.ok(Number(retryAfter) > 0 && Number(retryAfter) <= 60, retryAfter);
}

/** The key id a sealed value names: 8 base64url characters of SHA-256 over a label and the key. */
function keyId(key) {
  return createHash('sha256').update(Buffer.concat([Buffer.from('consentry sealing key id\0'), Buffer.from(key, 'base64url')])).digest('base64url').slice(0, 8);
}

async function sealedTokens(consentId) {
  const rows = await stack.d1(`SELECT sealed FROM token_sets WHERE consent_id = ${sqlString(consentId)}`);
  assert.equal(rows.length, 1, `token set of ${consentId}`);
  return rows[0].sealed;
}

const setSealed = (consentId, sealed) => stack.d1(`UPDATE token_sets SET sealed = ${sqlString(sealed)} WHERE consent_id = ${sqlString(consentId)}`);

const accounts = (user, base = '', consent = undefined) => stack.workerFetch(`${base}/api/local-bank/accounts`, { headers: userHeaders(stack, user, consent ? { 'X-Consentry-Consent': consent } : {}) });

test('A17: a flood of made-up callbacks from one IP is cut off with 429 and Retry-After, and sends nothing to the bank', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '203.0.113.7';
  await windowStart();
  const postsBefore = tokenPosts();
  const answers = [];
  for (let i = 0; i < 30; i += 1) answers.push(await madeUpCallback());
  const statuses = answers.map((res) => res.status);
  // Within one window: the first 6 are looked up (and refused), the rest never are.
  assert.deepEqual(statuses.slice(0, 6), Array(6).fill(400), statuses.join(' '));
  const limited = answers.slice(6);
  assert.ok(limited.every((res) => res.status === 429), statuses.join(' '));
  for (const res of limited) {
    assertRetryAfter(res);
    const page = outcomePage(res);
    assert.equal(page.error, 'rate_limited');
    assert.equal(page.targetOrigin, '', 'a refused callback posts nothing to any window');
    assert.equal(res.headers.get('cache-control'), 'no-store');
  }
  assert.equal(tokenPosts(), postsBefore, 'no token request for any of them');
});

test('H7: over the callback limit, another IP still connects, and the refused callback lands when retried after the window', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '203.0.113.8';
  const started = await startFlow(stack, { user: 'usr_carol' });
  assert.equal(started.res.status, 303, describe(started.res));
  const back = await answerAtProvider(started.location, { user: BANK_ACCOUNT.usr_carol, redirectPrefix: redirectPrefix() });

  await windowStart();
  for (let i = 0; i < LIMITS.CONSENTRY_LIMIT_CALLBACK.limit; i += 1) await madeUpCallback();
  const refused = await returnToWorker(stack, back, { jar: started.jar });
  assert.equal(refused.status, 429, describe(refused));
  assertRetryAfter(refused);

  // Someone else, elsewhere, in the same window.
  clientIp = '203.0.113.9';
  const other = await grantConsent(stack, { user: 'usr_bob' });
  assert.equal(other.outcome.status, 'granted');

  // The refused callback spent nothing: retried in the next window, it lands.
  clientIp = '203.0.113.8';
  const pending = await stack.workerFetch(`/auth/outcome?state=${encodeURIComponent(started.state)}`, { headers: { 'X-Consentry': '1', Origin: stack.publicOrigin }, jar: started.jar });
  assert.equal(pending.status, 404, `the flow is still pending: ${describe(pending)}`);
  assert.equal(pending.json().code, 'outcome_pending');
  await windowStart();
  const landed = await returnToWorker(stack, back, { jar: started.jar });
  assert.equal(landed.status, 200, describe(landed));
  assert.equal(outcomePage(landed).outcome.status, 'granted');
  carolSession = started.jar;
});

test('H7: /auth/start over its limit per IP answers 429 and tells the opener rate_limited; /api is limited per session and per user reference, made-up ones not counted', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '203.0.113.10';
  await windowStart();
  for (let i = 0; i < LIMITS.CONSENTRY_LIMIT_START.limit; i += 1) {
    const { res } = await startFlow(stack, { user: 'usr_carol' });
    assert.equal(res.status, 303, describe(res));
  }
  const over = await startFlow(stack, { user: 'usr_carol' });
  assert.equal(over.res.status, 429, describe(over.res));
  assertRetryAfter(over.res);
  assert.equal(over.res.setCookies.length, 0, 'no binding cookie for a flow that did not start');
  const page = outcomePage(over.res);
  assert.equal(page.targetOrigin, stack.publicOrigin);
  assert.deepEqual({ status: page.outcome.status, error: page.outcome.error, state: page.outcome.state }, { status: 'failed', error: 'rate_limited', state: over.state });

  // /api: carol's session-less calls (her user reference) count together; bob's do not.
  await windowStart();
  const dataBefore = stack.issued.dataRequests.length;
  for (let i = 0; i < LIMITS.CONSENTRY_LIMIT_API.limit; i += 1) {
    const res = await accounts('usr_carol');
    assert.equal(res.status, 200, describe(res));
  }
  const limited = await accounts('usr_carol');
  await apiError(limited, 429, 'rate_limited');
  assertRetryAfter(limited);
  assert.equal(stack.issued.dataRequests.length - dataBefore, LIMITS.CONSENTRY_LIMIT_API.limit, 'the limited call reached no bank');
  const bob = await accounts('usr_bob');
  assert.equal(bob.status, 200, describe(bob));

  // Carol's session counts apart from her user reference; made-up sessions get no bucket of
  // their own: they are refused as unknown (401), never counted.
  assert.ok(carolSession, 'the second test left carol a session');
  const json = { 'X-Consentry': '1', Origin: stack.publicOrigin };
  const bySession = () => stack.workerFetch('/api/local-bank/accounts', { headers: json, jar: carolSession });
  for (let i = 0; i < LIMITS.CONSENTRY_LIMIT_API.limit; i += 1) {
    const res = await bySession();
    assert.equal(res.status, 200, describe(res));
  }
  await apiError(await bySession(), 429, 'rate_limited');
  // One made-up session, past the limit: were it counted, the last would be 429.
  const madeUp = `__Host-consentry-session=${randomToken()}`;
  for (let i = 0; i <= LIMITS.CONSENTRY_LIMIT_API.limit; i += 1) {
    const res = await stack.workerFetch('/api/local-bank/accounts', { headers: { ...json, Cookie: madeUp } });
    await apiError(res, 401, 'session_required');
  }
});

test('F3: CONSENTRY_KEY rotated with CONSENTRY_KEY_PREVIOUS: old records open and move to the new key; a retired key or a flipped byte never opens', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '198.51.100.1';
  const oldKey = stack.secrets.consentryKey;
  const newKey = randomToken(32);
  const alice = (await grantConsent(stack, { user: 'usr_alice' })).outcome.consent.id;
  const bob = (await grantConsent(stack, { user: 'usr_bob' })).outcome.consent.id;
  const aliceOld = await sealedTokens(alice);
  const bobOld = await sealedTokens(bob);
  assert.ok(aliceOld.startsWith(`${keyId(oldKey)}.`), `sealed under the key it names: ${aliceOld.slice(0, 12)}`);
  assert.ok(!aliceOld.includes(oldKey));
  // Bob's set as a Worker from before key ids wrote it: no `id.` prefix.
  await setSealed(bob, bobOld.slice(bobOld.indexOf('.') + 1));

  // The operator's rotation: the new key, the old one kept as the previous.
  const rotated = await stack.startWorker({ vars: { CONSENTRY_KEY: newKey, CONSENTRY_KEY_PREVIOUS: oldKey } });
  try {
    for (const [user, consent] of [['usr_alice', alice], ['usr_bob', bob]]) {
      const res = await accounts(user, rotated.url, consent);
      assert.equal(res.status, 200, `${user}: a record sealed under the previous key opens: ${describe(res)}`);
      assert.ok((await sealedTokens(consent)).startsWith(`${keyId(newKey)}.`), `${user}: read once, it is sealed again under the new key`);
    }
    // A Worker that has only the old key (a rollback) cannot open it, and says which key it needs.
    const rolledBack = await accounts('usr_alice', '', alice);
    await apiError(rolledBack, 500, 'invalid_configuration');
    assert.ok(rolledBack.json().description.includes(keyId(newKey)), describe(rolledBack));
    assert.ok(!rolledBack.body.includes(newKey) && !rolledBack.body.includes(oldKey));
  } finally {
    await rotated.stop();
  }

  // The rotation done: CONSENTRY_KEY_PREVIOUS removed.
  const done = await stack.startWorker({ vars: { CONSENTRY_KEY: newKey } });
  try {
    assert.equal((await accounts('usr_alice', done.url, alice)).status, 200);

    // A value from before key ids that the current key opens is read, and left as it is.
    const current = await sealedTokens(alice);
    const legacy = current.slice(current.indexOf('.') + 1);
    await setSealed(alice, legacy);
    assert.equal((await accounts('usr_alice', done.url, alice)).status, 200);
    assert.equal(await sealedTokens(alice), legacy, 'no write without a rotation');

    // One flipped byte: the record never opens (AES-GCM's tag), and nothing reaches the bank.
    const at = current.length - 10;
    const flipped = `${current.slice(0, at)}${current[at] === 'A' ? 'B' : 'A'}${current.slice(at + 1)}`;
    await setSealed(alice, flipped);
    const dataBefore = stack.issued.dataRequests.length;
    const refused = await accounts('usr_alice', done.url, alice);
    await apiError(refused, 500, 'record_unreadable');
    assert.equal(refused.headers.get('retry-after'), null, 'retrying does not help');
    assert.equal(stack.issued.dataRequests.length, dataBefore);
    assert.equal(await sealedTokens(alice), flipped, 'a record that does not open is left as it is');
    await setSealed(alice, current);
    assert.equal((await accounts('usr_alice', done.url, alice)).status, 200);
  } finally {
    await done.stop();
    // The main Worker's key again, for what follows.
    await setSealed(alice, aliceOld);
    await setSealed(bob, bobOld);
  }
});

test('A5: one callback sent at once through two Worker processes on one D1 makes one code exchange, never two', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '198.51.100.5';
  const second = await stack.startWorker();
  try {
    for (let round = 0; round < 3; round += 1) {
      const flow = await startFlow(stack, { user: 'usr_carol' });
      const back = await answerAtProvider(flow.location, { user: BANK_ACCOUNT.usr_carol, redirectPrefix: redirectPrefix() });
      const target = new URL(back.url);
      const postsBefore = tokenPosts();
      const pages = await Promise.all([
        stack.workerFetch(back.url, { jar: flow.jar, crossSite: true }),
        stack.workerFetch(`${second.url}${target.pathname}${target.search}`, { jar: flow.jar, crossSite: true }),
      ]);
      // Under wrangler dev the two processes share one SQLite file, and a write that meets
      // the other's lock fails (production D1 has one primary): the loser may then read
      // storage_failed (503, consuming nothing) rather than transaction_replayed, and a
      // winner's grant that cannot be stored ends as storage_failed, its tokens revoked.
      // What must hold either way: one code exchange, at most one grant.
      const endings = pages.map((page) => `${page.status} ${outcomePage(page).error || outcomePage(page).outcome?.error || outcomePage(page).outcome?.status}`).join(', ');
      assert.equal(tokenPosts() - postsBefore, 1, `one code exchange: ${endings}`);
      assert.ok(pages.filter((page) => page.status === 200).length <= 1, endings);
      for (const page of pages.filter((page) => page.status !== 200)) {
        const { error, outcome } = outcomePage(page);
        assert.ok(['transaction_replayed', 'storage_failed'].includes(error || outcome?.error), endings);
      }
    }
  } finally {
    await second.stop();
  }
});

test('F2: a logout through one Worker process ends the session at once for an /api call through another', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '198.51.100.6';
  const second = await stack.startWorker();
  try {
    const { jar, outcome } = await grantConsent(stack, { user: 'usr_carol' });
    // Carol holds several consents with the bank by now: name this one.
    const headers = { 'X-Consentry': '1', Origin: stack.publicOrigin, Cookie: jar.header({ method: 'GET' }), 'X-Consentry-Consent': outcome.consent.id };
    const before = await stack.workerFetch(`${second.url}/api/local-bank/accounts`, { headers });
    assert.equal(before.status, 200, `the session works there first: ${describe(before)}`);
    const logout = await stack.workerFetch('/auth/logout', { method: 'POST', headers: { 'X-Consentry': '1', Origin: stack.publicOrigin }, jar });
    assert.equal(logout.status, 204, describe(logout));
    await apiError(await stack.workerFetch(`${second.url}/api/local-bank/accounts`, { headers }), 401, 'session_required');
  } finally {
    await second.stop();
  }
});

test('storage down on every route: 503 with Retry-After or an outcome, nothing half-written, and all of it usable once storage is back', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '198.51.100.2';
  const granted = await grantConsent(stack, { user: 'usr_bob' });
  const consentsBefore = await stack.d1("SELECT count(*) AS n FROM consents WHERE user_id = 'usr_bob'");
  const pending = await startFlow(stack, { user: 'usr_bob' });
  const back = await answerAtProvider(pending.location, { user: BANK_ACCOUNT.usr_bob, redirectPrefix: redirectPrefix() });
  const json = { 'X-Consentry': '1', Origin: stack.publicOrigin };
  const postsBefore = tokenPosts();

  await stack.d1(TABLES.map((table) => `ALTER TABLE ${table} RENAME TO down_${table}`).join('; '));
  try {
    const started = await startFlow(stack, { user: 'usr_bob' });
    const startPage = outcomePage(started.res);
    assert.equal(startPage.outcome?.error, 'storage_failed', describe(started.res));
    assert.equal(started.res.setCookies.length, 0);

    const callback = await returnToWorker(stack, back, { jar: pending.jar });
    assert.equal(outcomePage(callback).error, 'storage_failed', describe(callback));
    assert.equal(callback.status, 503, describe(callback));
    assertRetryAfter(callback);

    const routes = [
      ['GET', `/auth/outcome?state=${encodeURIComponent(pending.state)}`, pending.jar],
      ['GET', '/auth/consents', granted.jar],
      ['DELETE', `/auth/consents/${granted.outcome.consent.id}`, granted.jar],
      ['POST', '/auth/logout', granted.jar],
      ['GET', '/auth/demo/users', undefined],
      ['GET', '/api/local-bank/accounts', granted.jar],
    ];
    for (const [method, route, jar] of routes) {
      const res = await stack.workerFetch(route, { method, headers: json, jar });
      await apiError(res, 503, 'storage_failed');
      assertRetryAfter(res);
    }
  } finally {
    await stack.d1(TABLES.map((table) => `ALTER TABLE down_${table} RENAME TO ${table}`).join('; '));
  }
  assert.equal(tokenPosts(), postsBefore, 'no code was spent while storage was down');
  assert.deepEqual(await stack.d1("SELECT count(*) AS n FROM consents WHERE user_id = 'usr_bob'"), consentsBefore);

  // Back: the session, the consent and the pending flow are as they were.
  const list = await stack.workerFetch('/auth/consents', { headers: json, jar: granted.jar });
  assert.equal(list.status, 200, describe(list));
  assert.ok(list.json().consents.some((c) => c.id === granted.outcome.consent.id && c.status === 'active'), describe(list));
  const landed = await returnToWorker(stack, back, { jar: pending.jar });
  assert.equal(landed.status, 200, describe(landed));
  assert.equal(outcomePage(landed).outcome.status, 'granted');
});

/** A request to the Worker with headers fetch would not send as given (Host). */
function rawRequest({ method = 'GET', path, headers, body = '' }) {
  const url = new URL(stack.workerUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers: { ...headers, 'Content-Length': Buffer.byteLength(body) } }, (answer) => {
      const chunks = [];
      answer.on('data', (chunk) => chunks.push(chunk));
      answer.on('end', () => resolve({ status: answer.statusCode, headers: answer.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('A15: a spoofed Host or X-Forwarded-Host changes neither the redirect_uri sent at the start nor the one the callback exchanges the code with', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '198.51.100.3';
  const spoofed = { Host: 'evil.example', 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https', 'CF-Connecting-IP': clientIp };
  const form = new URLSearchParams({ provider: 'local-bank', state: randomToken(), code_verifier: randomToken(), user: 'usr_alice' }).toString();
  const res = await rawRequest({ method: 'POST', path: '/auth/start', headers: { ...spoofed, Origin: stack.publicOrigin, 'Content-Type': 'application/x-www-form-urlencoded' }, body: form });
  assert.equal(res.status, 303, res.body);
  const location = new URL(res.headers.location);
  assert.equal(location.origin, stack.issuer);
  assert.equal(location.searchParams.get('redirect_uri'), `${stack.publicOrigin}/auth/callback/local-bank`);
  assert.ok(!res.headers.location.includes('evil.example'));

  // The callback too: the code is exchanged with the configured redirect_uri (the bank would
  // refuse any other), and the outcome goes to the flow's own origin.
  const flow = await startFlow(stack, { user: 'usr_alice' });
  const back = await answerAtProvider(flow.location, { user: BANK_ACCOUNT.usr_alice, redirectPrefix: redirectPrefix() });
  const target = new URL(back.url);
  const page = await rawRequest({ path: `${target.pathname}${target.search}`, headers: { ...spoofed, Cookie: flow.jar.header({ crossSite: true, method: 'GET' }) } });
  assert.equal(page.status, 200, page.body.slice(0, 300));
  const { outcome, targetOrigin } = outcomePage(page);
  assert.equal(outcome.status, 'granted');
  assert.equal(targetOrigin, stack.publicOrigin);
});

test('E8: logout without the anti-CSRF header is refused and ends nothing; with it, the session ends', { timeout: TEST_TIMEOUT }, async () => {
  clientIp = '198.51.100.4';
  const { jar } = await grantConsent(stack, { user: 'usr_carol' });
  const list = () => stack.workerFetch('/auth/consents', { headers: { 'X-Consentry': '1', Origin: stack.publicOrigin }, jar });
  const forged = await stack.workerFetch('/auth/logout', { method: 'POST', headers: { Origin: stack.publicOrigin }, jar });
  await apiError(forged, 403, 'csrf_header_missing');
  assert.equal(forged.setCookies.length, 0);
  assert.equal((await list()).status, 200, 'the session still stands');
  const logout = await stack.workerFetch('/auth/logout', { method: 'POST', headers: { 'X-Consentry': '1', Origin: stack.publicOrigin }, jar });
  assert.equal(logout.status, 204, describe(logout));
  await apiError(await list(), 401, 'session_required');
});
