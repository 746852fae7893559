// The Worker over plain HTTP: real workerd (wrangler dev) with a local D1, the local bank
// (oidc-provider), and simulated browsers (one cookie jar each). No browser engine: the
// popup's navigation is replayed by hand (start -> bank -> callback), which is enough to
// check everything a user of the popup would notice, and everything the browser must never
// see (codes, verifiers, tokens).
//
//   npm run test:edge      (node --test --test-concurrency=1 tests/edge/)

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { answerAtProvider, consentAtBank } from '../lib/bank-user.mjs';
import { apiError, describe, findLeaks, outcomePage, sleep, storedFiles, testControl, waitFor } from '../lib/edge.mjs';
import { BANK_ACCOUNT, returnToWorker, startFlow } from '../lib/flow.mjs';
import { CookieJar, parseSetCookie, randomToken, ROOT, sqlString, startStack } from '../lib/worker-harness.mjs';

const DEMO_USERS = [
  { id: 'usr_alice', name: 'Alice Martin' },
  { id: 'usr_bob', name: 'Bob Nguyen' },
  { id: 'usr_carol', name: 'Carol Okafor' },
];
const BINDING_PREFIX = '__Host-consentry-tx-';
const BINDING_NAME = /^__Host-consentry-tx-[A-Za-z0-9_-]{16}$/;
const SESSION = '__Host-consentry-session';
const EVIL_ORIGIN = 'https://evil.example';
const TEST_TIMEOUT = 90_000;
const TRANSACTION_SECS = 10 * 60; // a flow's deadline after /auth/start
// E2: the binding cookie lapses with the flow (at most 10 minutes), and the callback sets it
// again for as long, so that the SPA can read the outcome.
const BINDING_MAX_AGE = String(TRANSACTION_SECS);

let stack;
const sentVerifiers = new Set(); // every code_verifier a test sent to /auth/start
const seenCodes = new Set(); // every authorization code a test carried to /auth/callback
const callbackTimes = []; // wall time of each granted callback, ms
const sessions = new Map(); // app user -> a browser (cookie jar) holding that user's session

// Generous: startStack builds the Worker first, and waits for any other build to finish.
before(async () => { stack = await startStack(); }, { timeout: 30 * 60_000 });
after(async () => {
  // A figure, not an assertion: the median wall time of a granted callback.
  const times = [...callbackTimes].sort((a, b) => a - b);
  if (times.length) {
    const mid = Math.floor(times.length / 2);
    const median = times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;
    console.log(`median callback: ${Math.round(median)} ms over ${times.length} flows`);
  }
  await stack?.stop();
});

// ---------------------------------------------------------------------------------------
// Helpers: one simulated browser = one CookieJar; every request goes through
// stack.workerFetch, which records every response for the leak scan at the end.

function apiHeaders(extra = {}) {
  return { 'X-Consentry': '1', Origin: stack.publicOrigin, ...extra };
}

function bindingCookieOf(res) {
  return res.setCookies.map(parseSetCookie).find((cookie) => cookie?.name.startsWith(BINDING_PREFIX));
}

/** The callback page's headers: strict CSP whose script hash matches the one inline script, no COOP. */
function assertOutcomePageHeaders(res) {
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/i);
  const csp = res.headers.get('content-security-policy') ?? '';
  assert.match(csp, /frame-ancestors 'none'/, `CSP: ${csp}`);
  const scripts = [...res.body.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script\s*>/gi)];
  assert.equal(scripts.length, 1, 'the outcome page has exactly one <script>');
  assert.doesNotMatch(scripts[0][1], /\bsrc\s*=/i, 'the one script is inline');
  const hash = createHash('sha256').update(scripts[0][2], 'utf8').digest('base64');
  const scriptSrc = csp.split(';').map((directive) => directive.trim()).find((directive) => /^script-src\s/.test(directive)) ?? '';
  assert.ok(scriptSrc.split(/\s+/).includes(`'sha256-${hash}'`), `script-src allows the inline script by its hash 'sha256-${hash}': ${csp}`);
  assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
  assert.match(res.headers.get('cache-control') ?? '', /no-store/);
  // COOP same-origin on the popup's last page would sever it from the app: no postMessage.
  assert.doesNotMatch(res.headers.get('cross-origin-opener-policy') ?? '', /same-origin/, 'no COOP same-origin');
}

/** POST /auth/start as the popup's form does. Resolves to the flow (not asserted). */
async function start(jar, { provider = 'local-bank', user = 'usr_alice', state = randomToken(), verifier = randomToken(), origin = stack.publicOrigin, form } = {}) {
  const fields = form ?? { provider, state, code_verifier: verifier, user };
  if (fields.code_verifier) sentVerifiers.add(fields.code_verifier);
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  if (origin) headers.Origin = origin;
  const res = await stack.workerFetch('/auth/start', { method: 'POST', headers, body: new URLSearchParams(fields).toString(), jar });
  return { res, provider, user, state, verifier, location: res.headers.get('location'), binding: bindingCookieOf(res) };
}

/** A start that must succeed: 303 to the bank, with the binding cookie. */
async function startOk(jar, options) {
  const flow = await start(jar, options);
  assert.equal(flow.res.status, 303, `start: ${describe(flow.res)}`);
  assert.ok(flow.location?.startsWith(`${stack.issuer}/auth?`), `start redirects to the bank's authorization endpoint: ${flow.location}`);
  const challenge = new URL(flow.location).searchParams;
  assert.ok(!flow.location.includes(flow.verifier), 'the authorization URL does not carry the verifier');
  assert.equal(challenge.get('code_challenge'), createHash('sha256').update(flow.verifier).digest('base64url'), 'S256 challenge of the verifier the browser sent');
  assert.ok(flow.binding, 'start sets the binding cookie');
  assert.match(flow.binding.name, BINDING_NAME);
  assert.equal(flow.binding.attributes.path, '/');
  assert.equal(flow.binding.attributes['max-age'], BINDING_MAX_AGE);
  assert.ok('httponly' in flow.binding.attributes, 'binding cookie is HttpOnly');
  assert.ok('secure' in flow.binding.attributes, 'binding cookie is Secure');
  // E2: Lax, which the bank's redirect (a top-level GET) carries; None only for form_post
  // providers (providers.test.mjs, TrueLayer).
  assert.equal(flow.binding.sameSite, 'lax');
  return flow;
}

/** Walks the bank as the account holder; resolves to the callback URL (code recorded). */
async function atBank(flow, { account = BANK_ACCOUNT[flow.user], decision = 'allow' } = {}) {
  const url = await consentAtBank(flow.location, { user: account, decision, redirectPrefix: `${stack.publicOrigin}/auth/callback` });
  const code = new URL(url).searchParams.get('code');
  if (code) seenCodes.add(code);
  return url;
}

/**
 * The bank's redirect, as the popup follows it (cross-site: SameSite=Strict cookies stay
 * home). `formPost: true` sends the parameters as a response_mode=form_post page would: a
 * POST from the bank's origin.
 */
async function callback(jar, url, { formPost = false } = {}) {
  const target = new URL(url);
  const res = formPost
    ? await stack.workerFetch(`${target.origin}${target.pathname}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.issuer },
      body: target.searchParams.toString(),
      jar,
      crossSite: true,
    })
    : await stack.workerFetch(url, { jar, crossSite: true });
  const page = outcomePage(res);
  if (res.status === 200 && page.outcome?.status === 'granted') callbackTimes.push(res.elapsedMs);
  return { res, ...page };
}

function assertGranted(cb, flow) {
  assert.equal(cb.res.status, 200, `callback: ${describe(cb.res)}`);
  assertOutcomePageHeaders(cb.res);
  assert.equal(cb.error, '');
  assert.equal(cb.targetOrigin, stack.publicOrigin);
  const { outcome } = cb;
  assert.ok(outcome, 'the page carries the outcome');
  assert.equal(outcome.type, 'consentry:outcome');
  assert.equal(outcome.v, 1);
  assert.equal(outcome.state, flow.state);
  assert.equal(outcome.status, 'granted');
  const { consent } = outcome;
  assert.equal(typeof consent?.id, 'string');
  assert.ok(consent.id.length > 0);
  assert.equal(consent.provider, flow.provider);
  assert.equal(consent.user, flow.user);
  assert.ok(Array.isArray(consent.scopes) && consent.scopes.includes('accounts'), `scopes: ${JSON.stringify(consent.scopes)}`);
  assert.equal(typeof consent.granted_at, 'string');
  assert.ok(!Number.isNaN(Date.parse(consent.granted_at)), `granted_at is a date: ${consent.granted_at}`);
  assert.ok('expires_at' in consent);
  const session = cb.res.setCookies.map(parseSetCookie).find((cookie) => cookie?.name === SESSION);
  assert.ok(session, 'a granted callback sets the session cookie');
  assert.equal(session.attributes.path, '/');
  assert.equal(session.attributes['max-age'], '43200');
  assert.ok('httponly' in session.attributes, 'session cookie is HttpOnly');
  assert.ok('secure' in session.attributes, 'session cookie is Secure');
  assert.equal(session.sameSite, 'strict');
}

/**
 * A callback page that is not a grant: 400 and the code on the page. A consumed flow's page
 * (`outcome: 'required'`) carries its outcome for the opener; a page for a flow that was not
 * consumed (replayed, unknown, not bound: `outcome: 'absent'`) must carry none.
 */
function assertNotGranted(cb, { error, status = 'failed', state, outcome }) {
  assert.equal(cb.res.status, 400, `callback: ${describe(cb.res)}`);
  assertOutcomePageHeaders(cb.res);
  assert.equal(cb.error, error, `data-error: ${describe(cb.res)}`);
  assert.ok(!cb.res.setCookies.some((line) => line.startsWith(`${SESSION}=`) && !/max-age=0/i.test(line)), 'no session is handed out');
  assert.ok(outcome === 'required' || outcome === 'absent', 'say whether an outcome is expected');
  if (outcome === 'absent') {
    assert.equal(cb.outcome, null, 'nothing is posted for a flow this request did not consume');
    assert.equal(cb.targetOrigin, '', 'no target origin');
    return;
  }
  assert.ok(cb.outcome, 'the page carries the outcome');
  assert.equal(cb.targetOrigin, stack.publicOrigin, 'posted to the origin that started the flow');
  assert.equal(cb.outcome.type, 'consentry:outcome');
  assert.equal(cb.outcome.v, 1);
  assert.equal(cb.outcome.status, status);
  assert.equal(cb.outcome.error, error);
  assert.equal(typeof cb.outcome.error_description, 'string');
  assert.equal(cb.outcome.state, state, 'the outcome names its flow');
  assert.ok(!('consent' in cb.outcome), 'no consent in a failed outcome');
}

/** A full flow that must be granted, in `jar` (a new browser unless given). */
async function completeFlow({ user = 'usr_alice', provider = 'local-bank', jar = new CookieJar() } = {}) {
  const flow = await startOk(jar, { user, provider });
  const url = await atBank(flow);
  const cb = await callback(jar, url);
  assertGranted(cb, flow);
  return { jar, flow, url, cb, outcome: cb.outcome };
}

/** A browser with a session for `user` (made by a granted flow the first time). */
async function browserWithSession(user) {
  if (!sessions.has(user)) sessions.set(user, (await completeFlow({ user })).jar);
  return sessions.get(user);
}

async function listConsents(jar) {
  const res = await stack.workerFetch('/auth/consents', { headers: apiHeaders(), jar });
  assert.equal(res.status, 200, `consents: ${describe(res)}`);
  return res.json();
}

async function outcomeOf(jar, state, headers = apiHeaders()) {
  return stack.workerFetch(`/auth/outcome?state=${encodeURIComponent(state)}`, { headers, jar });
}

const setTokenMode = (mode) => testControl(stack.issuer, 'token-mode', mode);

function exchangesOf(code) {
  return stack.issued.exchanges.filter((exchange) => exchange.code === code);
}

function codeOf(url) {
  return new URL(url).searchParams.get('code');
}

/** A flow's row key in D1: base64url(SHA-256(state)). */
function stateKey(state) {
  return createHash('sha256').update(state).digest('base64url');
}

/** How many consents and token sets the local D1 holds (all users). */
async function storedCounts() {
  const [row] = await stack.d1('SELECT (SELECT COUNT(*) FROM consents) AS consents, (SELECT COUNT(*) FROM token_sets) AS token_sets');
  return row;
}

/** The `kid` in the header of the last id_token the bank issued. */
function lastIdTokenKid() {
  const idTokens = stack.issued.tokens.filter((token) => token.type === 'id_token');
  assert.ok(idTokens.length > 0, 'the bank issued an id_token');
  return JSON.parse(Buffer.from(idTokens.at(-1).value.split('.')[0], 'base64url').toString('utf8')).kid;
}

function bankHits(path) {
  return stack.bankRequests.filter((req) => req.method === 'GET' && req.path === path).length;
}


/** Waits until `condition()` holds, checking every 50 ms, for at most `ms`. */

/** The session cookie a browser holds, as the store keys it: base64url(SHA-256(value)). */
function sessionHashOf(jar) {
  const value = jar.get(SESSION);
  assert.ok(value, 'the browser holds a session cookie');
  return createHash('sha256').update(value).digest('base64url');
}

/** Which of these session hashes are live sessions in D1. */
async function liveSessions(hashes) {
  const rows = await stack.d1(`SELECT id_hash FROM sessions WHERE id_hash IN (${hashes.map(sqlString).join(', ')}) AND expires_at > ${Math.floor(Date.now() / 1000)}`);
  return rows.map((row) => row.id_hash).sort();
}

// ---------------------------------------------------------------------------------------

test('each demo user completes a flow and sees only their own consents', { timeout: TEST_TIMEOUT }, async () => {
  const granted = {};
  for (const { id: user, name } of DEMO_USERS) {
    const { jar, flow, outcome } = await completeFlow({ user });
    sessions.set(user, jar);
    granted[user] = outcome.consent.id;
    assert.equal(outcome.consent.provider, 'local-bank');

    const list = await listConsents(jar);
    assert.deepEqual(list.user, { id: user, name });
    const mine = list.consents.find((consent) => consent.id === outcome.consent.id);
    assert.ok(mine, `the new consent is listed for ${user}`);
    assert.equal(mine.status, 'active');
    assert.equal(mine.provider, 'local-bank');
    assert.ok(mine.scopes.includes('accounts'));
    assert.equal(mine.revoked_at, null);
    for (const consent of list.consents) assert.equal(consent.user, user, 'only the session user\'s consents');

    const res = await outcomeOf(jar, flow.state);
    assert.equal(res.status, 200, describe(res));
    assert.deepEqual(res.json(), outcome, '/auth/outcome returns the outcome the page carried');
  }
  assert.equal(new Set(Object.values(granted)).size, DEMO_USERS.length, 'three distinct consents');
  for (const { id: user } of DEMO_USERS) {
    const ids = (await listConsents(sessions.get(user))).consents.map((consent) => consent.id);
    for (const [other, id] of Object.entries(granted)) {
      if (other !== user) assert.ok(!ids.includes(id), `${user} does not see ${other}'s consent`);
    }
  }
});

test('a denial at the bank is reported as denied and stores no consent', { timeout: TEST_TIMEOUT }, async () => {
  const jar = await browserWithSession('usr_bob');
  const before = await listConsents(jar);
  const flow = await startOk(jar, { user: 'usr_bob' });
  const url = await atBank(flow, { decision: 'deny' });
  assert.equal(new URL(url).searchParams.get('error'), 'access_denied', 'the bank denied');
  const cb = await callback(jar, url);
  assertNotGranted(cb, { error: 'access_denied', status: 'denied', state: flow.state, outcome: 'required' });
  assert.equal(cb.targetOrigin, stack.publicOrigin);

  const after = await listConsents(jar);
  assert.deepEqual(after.consents.map((c) => c.id).sort(), before.consents.map((c) => c.id).sort(), 'no new consent');
  const res = await outcomeOf(jar, flow.state);
  assert.equal(res.status, 200, describe(res));
  assert.deepEqual(res.json(), cb.outcome);
});

test('a replayed callback is refused and spends nothing', { timeout: TEST_TIMEOUT }, async () => {
  const { jar, url, outcome, flow } = await completeFlow({ user: 'usr_alice' });
  const consentsBefore = (await listConsents(jar)).consents.length;
  const replay = await callback(jar, url);
  assertNotGranted(replay, { error: 'transaction_replayed', outcome: 'absent' });
  assert.equal(exchangesOf(codeOf(url)).length, 1, 'the code went to the bank once');
  assert.equal((await listConsents(jar)).consents.length, consentsBefore, 'no new consent');
  const res = await outcomeOf(jar, flow.state);
  assert.equal(res.status, 200, describe(res));
  assert.deepEqual(res.json(), outcome, 'the recorded outcome is still the grant');
});

test('a callback for a state never started is an unknown transaction', { timeout: TEST_TIMEOUT }, async () => {
  const code = randomToken();
  seenCodes.add(code);
  const url = `${stack.publicOrigin}/auth/callback/local-bank?${new URLSearchParams({ code, state: randomToken(), iss: stack.issuer })}`;
  const cb = await callback(new CookieJar(), url);
  assertNotGranted(cb, { error: 'unknown_transaction', outcome: 'absent' });
  assert.equal(exchangesOf(code).length, 0, 'nothing went to the bank');
});

test('two concurrent callbacks with one state: one grant, one replay, one code exchange', { timeout: TEST_TIMEOUT }, async () => {
  const jar = await browserWithSession('usr_carol');
  const before = (await listConsents(jar)).consents.map((c) => c.id);
  const flow = await startOk(jar, { user: 'usr_carol' });
  const url = await atBank(flow);
  const results = await Promise.all([callback(jar, url), callback(jar, url)]);
  assert.deepEqual(results.map((cb) => cb.res.status).sort(), [200, 400], results.map((cb) => describe(cb.res)).join('\n'));
  const granted = results.find((cb) => cb.res.status === 200);
  const refused = results.find((cb) => cb.res.status === 400);
  assertGranted(granted, flow);
  assertNotGranted(refused, { error: 'transaction_replayed', outcome: 'absent' });

  const exchanges = exchangesOf(codeOf(url));
  assert.equal(exchanges.length, 1, `the bank saw one token request for the code: ${JSON.stringify(exchanges)}`);
  assert.equal(exchanges[0].status, 200);
  const after = (await listConsents(jar)).consents.map((c) => c.id);
  const added = after.filter((id) => !before.includes(id));
  assert.deepEqual(added, [granted.outcome.consent.id], 'exactly one new consent');
});

test('a callback without the binding cookie is refused and leaves the flow usable', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const url = await atBank(flow);

  const missing = await callback(jar.clone().delete(flow.binding.name), url);
  assertNotGranted(missing, { error: 'transaction_not_bound', outcome: 'absent' });
  const wrong = await callback(jar.clone().set(flow.binding.name, randomToken(), { sameSite: 'none' }), url);
  assertNotGranted(wrong, { error: 'transaction_not_bound', outcome: 'absent' });
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'the code was not spent');

  const bound = await callback(jar, url);
  assertGranted(bound, flow);
  assert.equal(exchangesOf(codeOf(url)).length, 1);
});

test('a callback with a wrong or missing iss is refused', { timeout: TEST_TIMEOUT }, async () => {
  for (const [error, rewrite] of [
    ['iss_mismatch', (params) => params.set('iss', 'https://bank.evil.example')],
    ['iss_missing', (params) => params.delete('iss')],
  ]) {
    const jar = new CookieJar();
    const flow = await startOk(jar, { user: 'usr_alice' });
    const url = new URL(await atBank(flow));
    assert.equal(url.searchParams.get('iss'), stack.issuer, 'the bank sends iss');
    rewrite(url.searchParams);
    const cb = await callback(jar, url.toString());
    assertNotGranted(cb, { error, state: flow.state, outcome: 'required' });
    assert.equal(exchangesOf(codeOf(url)).length, 0, `${error}: the code was not exchanged`);
  }
});

test('the shared callback path is gone: /auth/callback and an unconfigured provider answer 404', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const redirect = new URL(flow.location).searchParams.get('redirect_uri');
  assert.equal(redirect, `${stack.publicOrigin}/auth/callback/local-bank`, 'each provider has its own redirect URI');
  const url = new URL(await atBank(flow));
  assert.equal(url.pathname, '/auth/callback/local-bank', 'the bank sends the code to that URI');
  for (const pathname of ['/auth/callback', '/auth/callback/', '/auth/callback/no-such-bank', '/auth/callback/local-bank/x']) {
    const res = await stack.workerFetch(`${pathname}${url.search}`, { jar, crossSite: true });
    await apiError(res, 404, 'not_found');
  }
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'nothing was exchanged');
  assertGranted(await callback(jar, url.toString()), flow);
});

test('a response on another provider\'s redirect URI is refused before any token request and consumes nothing', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_bob' });
  const url = new URL(await atBank(flow));
  const elsewhere = new URL(url);
  elsewhere.pathname = '/auth/callback/local-bank-pkjwt'; // same issuer, so iss cannot tell
  const cb = await callback(jar, elsewhere.toString());
  assertNotGranted(cb, { error: 'provider_mismatch', outcome: 'absent' });
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'no token request');
  await apiError(await outcomeOf(jar, flow.state), 404, 'outcome_pending');
  assertGranted(await callback(jar, url.toString()), flow);
  assert.equal(exchangesOf(codeOf(url)).length, 1);
});

test('mix-up (RFC 9700 §4.4): an attacker\'s authorization server cannot get an honest bank\'s code spent', { timeout: TEST_TIMEOUT }, async () => {
  const { attacker, plainBank } = stack;
  const plainExchanges = (code) => plainBank.issued.exchanges.filter((exchange) => exchange.code === code);
  const consentsOf = async (user) => (await stack.workerFetch('/auth/consents', { headers: apiHeaders({ Authorization: `Bearer ${user}` }) })).json().consents;

  // The attacker (app user bob) learns how the Worker speaks to the honest bank, which sends no
  // iss, by starting a flow there: client id, scope, and the redirect URI the bank knows.
  const attackerJar = new CookieJar();
  const probe = await start(attackerJar, { provider: 'plain-bank', user: 'usr_bob' });
  assert.equal(probe.res.status, 303, describe(probe.res));
  const probed = new URL(probe.location);
  attacker.plan = {
    authorizationEndpoint: `${probed.origin}${probed.pathname}`,
    clientId: probed.searchParams.get('client_id'),
    redirectUri: probed.searchParams.get('redirect_uri'),
    scope: probed.searchParams.get('scope'),
  };
  const bobsBefore = (await consentsOf('usr_bob')).filter((consent) => consent.provider === 'plain-bank').length;

  // The victim, alice, connects the attacker's provider. It sends her on to the honest bank
  // with her own state and challenge; she signs in there and consents.
  const victimJar = new CookieJar();
  const victim = await start(victimJar, { provider: 'attacker-as', user: 'usr_alice' });
  assert.equal(victim.res.status, 303, describe(victim.res));
  assert.ok(victim.location.startsWith(`${attacker.issuer}/authorize?`), victim.location);
  const url = await consentAtBank(victim.location, { user: 'alice', redirectPrefix: `${stack.publicOrigin}/auth/callback` });
  const code = codeOf(url);
  assert.ok(code, `the honest bank issued the victim a code: ${url}`);
  seenCodes.add(code);
  assert.equal(new URL(url).searchParams.get('iss'), null, 'the honest bank sends no iss');
  const cb = await callback(victimJar, url);

  // Had the code and verifier reached the attacker, it would now redeem them through a flow
  // of its own with the honest bank, its start form carrying the stolen verifier.
  const stolen = attacker.received.tokenRequests.find((request) => request.code === code);
  if (stolen) {
    const redeem = await start(attackerJar, { provider: 'plain-bank', user: 'usr_bob', verifier: stolen.code_verifier });
    const redeemUrl = new URL(attacker.plan.redirectUri);
    redeemUrl.search = new URLSearchParams({ code, state: redeem.state }).toString();
    await callback(attackerJar, redeemUrl.toString());
  }

  assert.deepEqual(plainExchanges(code), [], 'no token request for the victim\'s code reached the honest bank');
  assert.equal((await consentsOf('usr_bob')).filter((consent) => consent.provider === 'plain-bank').length, bobsBefore, 'no consent recorded for the attacker');
  assert.deepEqual(attacker.received.tokenRequests, [], 'nothing reached the attacker\'s token endpoint');
  assertNotGranted(cb, { error: 'provider_mismatch', outcome: 'absent' });

  // A check of the test's setup, not of the Worker: the attacker cannot aim the honest bank
  // at its own redirect URI either, because each bank knows only its own providers' URIs.
  attacker.plan.redirectUri = `${stack.publicOrigin}/auth/callback/attacker-as`;
  const again = await start(new CookieJar(), { provider: 'attacker-as', user: 'usr_alice' });
  await assert.rejects(
    consentAtBank(again.location, { user: 'alice', redirectPrefix: `${stack.publicOrigin}/auth/callback` }),
    /unexpected page at the provider/,
    'the honest bank refuses a redirect URI it has not registered',
  );
  assert.deepEqual(attacker.received.tokenRequests, []);
});

test('a popup closed while the token request is in flight still ends with its grant recorded', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_bob' });
  const url = await atBank(flow);
  const tokenPosts = () => stack.bankRequests.filter((req) => req.method === 'POST' && req.path === '/token').length;
  const before = tokenPosts();
  const controller = new AbortController();
  let closed;
  await setTokenMode('slow:1200');
  try {
    const pending = stack.workerFetch(url, { jar, crossSite: true, signal: controller.signal }).then(() => 'answered', (error) => error.name);
    await waitFor(() => tokenPosts() > before, 10_000, 'the token request at the bank');
    controller.abort(); // the popup goes away while the bank is still answering
    closed = await pending;
  } finally {
    await setTokenMode('normal');
  }
  assert.equal(closed, 'AbortError', 'the client went away before the callback answered');

  let res;
  const deadline = Date.now() + 20_000;
  for (;;) {
    res = await outcomeOf(jar, flow.state);
    if (res.status !== 404 || Date.now() > deadline) break;
    assert.equal(res.json().code, 'outcome_pending', describe(res));
    await sleep(200);
  }
  assert.equal(res.status, 200, `the outcome was recorded: ${describe(res)}`);
  const outcome = res.json();
  assert.equal(outcome.status, 'granted', describe(res));
  assert.equal(outcome.state, flow.state);
  const listed = await stack.workerFetch('/auth/consents', { headers: apiHeaders({ Authorization: 'Bearer usr_bob' }) });
  assert.ok(listed.json().consents.some((consent) => consent.id === outcome.consent.id), 'the consent is stored');
  const exchanges = exchangesOf(codeOf(url));
  assert.equal(exchanges.length, 1);
  assert.equal(exchanges[0].status, 200);
});

test('a flow consumed but never ended reads as pending, then as interrupted, never as expired', { timeout: TEST_TIMEOUT }, async () => {
  // What a Worker stopped mid-exchange leaves behind (production cancels a request whose
  // client went away; waitUntil only extends that by 30 s): consumed, no outcome.
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const key = stateKey(flow.state);
  const now = Math.floor(Date.now() / 1000);
  await stack.d1(`UPDATE transactions SET consumed_at = ${now - 5} WHERE state_key = ${sqlString(key)}`);
  await apiError(await outcomeOf(jar, flow.state), 404, 'outcome_pending'); // its ending may still be running
  // Past the longest an ending can take (5 x the 2 s HTTP timeout + 30 s), and past the deadline.
  await stack.d1(`UPDATE transactions SET consumed_at = ${now - 120}, expires_at = ${now - 60} WHERE state_key = ${sqlString(key)}`);
  const res = await outcomeOf(jar, flow.state);
  assert.equal(res.status, 200, describe(res));
  const outcome = res.json();
  assert.equal(outcome.status, 'failed');
  assert.equal(outcome.error, 'exchange_interrupted', 'a flow that came back in time is not called expired');
  assert.equal(outcome.state, flow.state);
});

test('two grants in one browser leave exactly one live session, side by side or one after another', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  await completeFlow({ user: 'usr_carol', jar });
  const first = sessionHashOf(jar);
  const stale = jar.clone();
  await completeFlow({ user: 'usr_carol', jar }); // the start carries the session; the callback cannot
  const second = sessionHashOf(jar);
  assert.notEqual(first, second, 'a fresh session at every grant');
  assert.deepEqual(await liveSessions([first, second]), [second], 'the first session ended');
  await apiError(await stack.workerFetch('/auth/consents', { headers: apiHeaders(), jar: stale }), 401, 'session_required');
  assert.equal((await listConsents(jar)).user.id, 'usr_carol');

  // Two flows started side by side from the second session: whichever lands last wins.
  const a = await startOk(jar, { user: 'usr_carol' });
  const b = await startOk(jar, { user: 'usr_carol' });
  const urlA = await atBank(a);
  const urlB = await atBank(b);
  assertGranted(await callback(jar, urlB), b);
  const third = sessionHashOf(jar);
  assertGranted(await callback(jar, urlA), a);
  const fourth = sessionHashOf(jar);
  assert.deepEqual(await liveSessions([first, second, third, fourth]), [fourth], 'one live session');
});

test('a provider error outside RFC 6749, or spelling one of our codes, is refused, recorded and logged escaped', { timeout: TEST_TIMEOUT }, async () => {
  const marker = `forged-${randomToken(6)}`;
  for (const error of [
    'transaction_replayed',
    `access_denied\nconsentry: callback provider=local-bank http=200 code=${marker}`,
    `${marker}${'x'.repeat(64)}`,
    `say "${marker}"`,
  ]) {
    const jar = new CookieJar();
    const flow = await startOk(jar, { user: 'usr_alice' });
    const url = `${stack.publicOrigin}/auth/callback/local-bank?${new URLSearchParams({ error, error_description: marker, state: flow.state, iss: stack.issuer })}`;
    const cb = await callback(jar, url);
    assertNotGranted(cb, { error: 'invalid_provider_response', state: flow.state, outcome: 'required' });
    assert.ok(!cb.res.body.includes(marker), 'the provider\'s text is not passed on');
    const res = await outcomeOf(jar, flow.state);
    assert.equal(res.json().error, 'invalid_provider_response', 'nor recorded as its own verdict');
  }
  // A description that tries to break lines arrives as one line of text.
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const url = `${stack.publicOrigin}/auth/callback/local-bank?${new URLSearchParams({ error: 'access_denied', error_description: `no\r\n${marker}`, state: flow.state, iss: stack.issuer })}`;
  const cb = await callback(jar, url);
  assertNotGranted(cb, { error: 'access_denied', status: 'denied', state: flow.state, outcome: 'required' });
  assert.equal(cb.outcome.error_description, `no  ${marker}`);
  await sleep(500); // the last log lines
  assert.ok(!stack.logs().includes(marker), 'no provider text in the logs');
  assert.match(stack.logs(), /consentry: callback provider=local-bank http=400 code=invalid_provider_response/);
});

test('an oversized or garbage code or state is refused before any lookup and spends nothing', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const url = new URL(await atBank(flow));
  for (const [error, rewrite] of [
    ['invalid_parameter', (params) => params.set('code', 'c'.repeat(4096))],
    ['invalid_parameter', (params) => params.set('code', `${params.get('code')}\u0000`)],
    ['invalid_parameter', (params) => params.set('code', `${params.get('code')}\n`)],
    ['invalid_state', (params) => params.set('state', `${flow.state}<`)],
    ['invalid_state', (params) => params.set('state', 's'.repeat(600))],
  ]) {
    const bad = new URL(url);
    rewrite(bad.searchParams);
    assertNotGranted(await callback(jar, bad.toString()), { error, outcome: 'absent' });
  }
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'no token request');
  await apiError(await outcomeOf(jar, flow.state), 404, 'outcome_pending');
  assertGranted(await callback(jar, url.toString()), flow);
});

test('a grant that cannot be stored ends as storage_failed, stores nothing, and is revoked at the bank', { timeout: TEST_TIMEOUT }, async () => {
  const stored = await storedCounts();
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_carol' });
  const url = await atBank(flow);
  const revocationsBefore = stack.issued.revocations.length;
  await stack.d1("CREATE TRIGGER refuse_consents BEFORE INSERT ON consents BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END");
  let cb;
  try {
    cb = await callback(jar, url);
  } finally {
    await stack.d1('DROP TRIGGER refuse_consents');
  }
  assertNotGranted(cb, { error: 'storage_failed', state: flow.state, outcome: 'required' });
  assert.deepEqual(await storedCounts(), stored, 'no consent or token set');
  const res = await outcomeOf(jar, flow.state);
  assert.equal(res.status, 200, describe(res));
  assert.equal(res.json().error, 'storage_failed');
  const issuedRefresh = stack.issued.tokens.filter((token) => token.type === 'refresh_token').at(-1);
  const revocations = stack.issued.revocations.slice(revocationsBefore);
  assert.equal(revocations.length, 1, 'the Worker revoked the grant it could not keep');
  assert.equal(revocations[0].token, issuedRefresh.value, 'the refresh token of that exchange');
  assert.equal(revocations[0].status, 200);
});

test('HTML in the provider\'s error_description is shown as text, never as markup', { timeout: TEST_TIMEOUT }, async () => {
  const payload = '<script>alert(1)</script><img src=x onerror=alert(2)>';
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const url = `${stack.publicOrigin}/auth/callback/local-bank?${new URLSearchParams({ error: 'access_denied', error_description: payload, state: flow.state, iss: stack.issuer })}`;
  const cb = await callback(jar, url);
  assertNotGranted(cb, { error: 'access_denied', status: 'denied', state: flow.state, outcome: 'required' });
  assert.ok(!cb.res.body.includes('<script>alert(1)'), 'no injected <script>');
  assert.ok(!/<img\b/i.test(cb.res.body), 'no injected <img>');
  assert.ok(!cb.res.body.includes(payload), 'the raw markup is not in the page');
  assert.equal(cb.outcome.error_description, payload, 'error_description round-trips as text');
});

test('a failing token endpoint fails the flow, stores nothing, and spends the state', { timeout: TEST_TIMEOUT }, async (t) => {
  const jar = await browserWithSession('usr_bob');
  for (const mode of ['500', 'hang', 'garbage']) {
    await t.test(`token endpoint: ${mode}`, async (st) => {
      const before = (await listConsents(jar)).consents.map((c) => c.id);
      const flow = await startOk(jar, { user: 'usr_bob' });
      const url = await atBank(flow);
      let cb;
      await setTokenMode(mode);
      try {
        cb = await callback(jar, url);
      } finally {
        await setTokenMode('normal');
      }
      assertNotGranted(cb, { error: 'token_exchange_failed', state: flow.state, outcome: 'required' });
      const attempts = exchangesOf(codeOf(url));
      assert.equal(attempts.length, 1, `the Worker tried the bank once: ${JSON.stringify(attempts)}`);
      assert.equal(attempts[0].mode, mode);
      if (mode === 'hang') {
        assert.ok(cb.res.elapsedMs < 10_000, `a hanging bank is given up on quickly (${Math.round(cb.res.elapsedMs)} ms)`);
        st.diagnostic(`hang: callback answered in ${Math.round(cb.res.elapsedMs)} ms`);
      }
      const after = (await listConsents(jar)).consents.map((c) => c.id);
      assert.deepEqual(after.sort(), before.sort(), 'no consent stored');
      const replay = await callback(jar, url);
      assertNotGranted(replay, { error: 'transaction_replayed', outcome: 'absent' });
      assert.equal(exchangesOf(codeOf(url)).length, 1, 'the replay did not reach the bank');
    });
  }
});

test('a callback after the flow\'s deadline is refused as expired, with or without its lapsed binding cookie, and /auth/outcome reports a lapsed flow', { timeout: TEST_TIMEOUT }, async () => {
  const stored = await storedCounts();
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });
  const url = await atBank(flow);
  const idle = await startOk(jar, { user: 'usr_alice' }); // never comes back from the bank
  const lateJar = new CookieJar();
  const late = await startOk(lateJar, { user: 'usr_alice' }); // comes back when its cookie has lapsed
  const lateUrl = await atBank(late);
  await apiError(await outcomeOf(jar, flow.state), 404, 'outcome_pending');
  await apiError(await outcomeOf(jar, idle.state), 404, 'outcome_pending');

  // The flows a minute past their deadline, written into the Worker's D1 from outside. Not
  // further back: the next /auth/start purges rows an hour past expires_at. The binding
  // cookie lapses with the flow (Max-Age is its lifetime; this jar does not age cookies): a
  // browser whose clock is behind the Worker's may still send it, and `late`'s browser no
  // longer does.
  assert.equal(Number(flow.binding.attributes['max-age']), TRANSACTION_SECS);
  const keys = [flow.state, idle.state, late.state].map(stateKey);
  const past = Math.floor(Date.now() / 1000) - 60;
  const updated = await stack.d1(`UPDATE transactions SET expires_at = ${past} WHERE state_key IN (${keys.map(sqlString).join(', ')}) AND consumed_at IS NULL RETURNING state_key`);
  assert.deepEqual(updated.map((row) => row.state_key).sort(), [...keys].sort(), 'the rows moved past their deadline');
  lateJar.delete(late.binding.name);

  // Without the cookie: told expired (not "another browser"), nothing consumed or exchanged.
  const lateCb = await callback(lateJar, lateUrl);
  assertNotGranted(lateCb, { error: 'transaction_expired', outcome: 'absent' });
  assert.equal(exchangesOf(codeOf(lateUrl)).length, 0, 'the late code was not exchanged');
  const [lateRow] = await stack.d1(`SELECT consumed_at FROM transactions WHERE state_key = ${sqlString(keys[2])}`);
  assert.equal(lateRow.consumed_at, null, 'a callback without the binding consumes nothing');
  // Its browser, the cookie gone, still hears why from /auth/outcome (as would anyone
  // naming the state: a flow that never came back says nothing else).
  const lateOutcome = await outcomeOf(lateJar, late.state);
  assert.equal(lateOutcome.status, 200, describe(lateOutcome));
  assert.deepEqual([lateOutcome.json().status, lateOutcome.json().error], ['failed', 'transaction_expired']);

  // The Worker sees the write: the flow that never came back now reads as expired, not pending.
  const lapsed = await outcomeOf(jar, idle.state);
  assert.equal(lapsed.status, 200, describe(lapsed));
  const lapsedOutcome = lapsed.json();
  assert.equal(lapsedOutcome.type, 'consentry:outcome');
  assert.equal(lapsedOutcome.v, 1);
  assert.equal(lapsedOutcome.state, idle.state);
  assert.equal(lapsedOutcome.status, 'failed');
  assert.equal(lapsedOutcome.error, 'transaction_expired');
  assert.equal(typeof lapsedOutcome.error_description, 'string');
  assert.ok(!('consent' in lapsedOutcome));

  const cb = await callback(jar, url);
  assertNotGranted(cb, { error: 'transaction_expired', state: flow.state, outcome: 'required' });
  assert.equal(cb.targetOrigin, stack.publicOrigin);
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'the code was not exchanged');
  const replay = await callback(jar, url);
  assertNotGranted(replay, { error: 'transaction_replayed', outcome: 'absent' });
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'nor by the replay');

  const recorded = await outcomeOf(jar, flow.state);
  assert.equal(recorded.status, 200, describe(recorded));
  assert.deepEqual(recorded.json(), cb.outcome, '/auth/outcome returns the recorded expiry');
  const [row] = await stack.d1(`SELECT consumed_at, sealed_verifier FROM transactions WHERE state_key = ${sqlString(keys[0])}`);
  assert.ok(row.consumed_at, 'the flow is consumed');
  assert.equal(row.sealed_verifier, null, 'its verifier is forgotten');
  assert.deepEqual(await storedCounts(), stored, 'no consent or token set stored');
});

test('a sealed verifier moved to another flow\'s row does not decrypt there', { timeout: TEST_TIMEOUT }, async () => {
  const jarA = new CookieJar();
  const jarB = new CookieJar();
  const a = await startOk(jarA, { user: 'usr_bob' });
  const b = await startOk(jarB, { user: 'usr_bob' });
  const urlB = await atBank(b);
  const [keyA, keyB] = [a.state, b.state].map(stateKey);
  const rows = await stack.d1(`SELECT state_key, sealed_verifier FROM transactions WHERE state_key IN (${sqlString(keyA)}, ${sqlString(keyB)})`);
  const sealedA = rows.find((row) => row.state_key === keyA)?.sealed_verifier;
  const sealedB = rows.find((row) => row.state_key === keyB)?.sealed_verifier;
  assert.ok(sealedA && sealedB && sealedA !== sealedB, 'each flow has its own sealed verifier');
  const moved = await stack.d1(`UPDATE transactions SET sealed_verifier = ${sqlString(sealedA)} WHERE state_key = ${sqlString(keyB)} AND consumed_at IS NULL RETURNING sealed_verifier`);
  assert.deepEqual(moved, [{ sealed_verifier: sealedA }]);

  // A's ciphertext is intact and sealed under the same key: only the associated data (B's
  // state key) keeps it from opening. Were it to open, A's verifier would go to the bank with
  // B's code (and fail there as invalid_grant).
  const stored = await storedCounts();
  const cb = await callback(jarB, urlB);
  assertNotGranted(cb, { error: 'record_unreadable', state: b.state, outcome: 'required' });
  assert.equal(exchangesOf(codeOf(urlB)).length, 0, 'no token request was made');
  assert.deepEqual(await storedCounts(), stored, 'no consent or token set stored');

  // A's own row still opens: its flow completes.
  const cbA = await callback(jarA, await atBank(a));
  assertGranted(cbA, a);
});

test('E2: a cross-site POST to the callback of a provider that redirects with a GET finds no Lax binding cookie and consumes nothing; the redirect then lands and sets the cookie again', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_carol' });
  const url = await atBank(flow);
  const posted = await callback(jar, url, { formPost: true });
  assertNotGranted(posted, { error: 'transaction_not_bound', outcome: 'absent' });
  assert.equal(exchangesOf(codeOf(url)).length, 0, 'no token request was made');
  const cb = await callback(jar, url);
  assertGranted(cb, flow);
  const again = cb.res.setCookies.map(parseSetCookie).find((cookie) => cookie.name === flow.binding.name);
  assert.ok(again, 'the callback sets the binding cookie again');
  assert.equal(again.value, flow.binding.value);
  assert.equal(again.attributes['max-age'], BINDING_MAX_AGE);
  assert.equal(again.sameSite, 'lax');
});

test('a private_key_jwt (ES256) client completes a flow', { timeout: TEST_TIMEOUT }, async () => {
  const { url, outcome } = await completeFlow({ user: 'usr_alice', provider: 'local-bank-pkjwt' });
  assert.equal(outcome.consent.provider, 'local-bank-pkjwt');
  const exchanges = exchangesOf(codeOf(url));
  assert.equal(exchanges.length, 1);
  assert.equal(exchanges[0].client_id, 'consentry-pkjwt');
  assert.equal(exchanges[0].status, 200);
});

test('a private_key_jwt client signing with a key the bank does not know fails as invalid_client', { timeout: TEST_TIMEOUT }, async () => {
  const stored = await storedCounts();
  const assertionsBefore = stack.issued.assertions.length;
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_carol', provider: 'local-bank-pkjwt-wrongkey' });
  assert.equal(new URL(flow.location).searchParams.get('client_id'), 'consentry-pkjwt');
  const url = await atBank(flow);
  const cb = await callback(jar, url);
  assertNotGranted(cb, { error: 'invalid_client', state: flow.state, outcome: 'required' });
  const exchanges = exchangesOf(codeOf(url));
  assert.equal(exchanges.length, 1, `the Worker tried the bank once: ${JSON.stringify(exchanges)}`);
  assert.equal(exchanges[0].status, 401, 'the bank refused the client assertion');
  assert.deepEqual(await storedCounts(), stored, 'no consent or token set stored');
  const res = await outcomeOf(jar, flow.state);
  assert.equal(res.status, 200, describe(res));
  assert.deepEqual(res.json(), cb.outcome);
  // B7: the operator sees it, by code (the leak scan below holds the logs to no assertion).
  await waitFor(() => /consentry: callback provider=local-bank-pkjwt-wrongkey http=400 code=invalid_client\b/.test(stack.logs()), 5000, 'the log line of the refused client');
  assert.equal(stack.issued.assertions.length - assertionsBefore, 1, 'the bank saw the refused client\'s assertion (held to no log by the leak scan)');
});

test('/auth/outcome answers only the browser that started the flow, and only when there is one', { timeout: TEST_TIMEOUT }, async () => {
  const jar = new CookieJar();
  const flow = await startOk(jar, { user: 'usr_alice' });

  await apiError(await outcomeOf(jar, flow.state, { Origin: stack.publicOrigin }), 403, 'csrf_header_missing');
  await apiError(await outcomeOf(jar, flow.state, apiHeaders({ Origin: EVIL_ORIGIN })), 403, 'origin_not_allowed');
  await apiError(await outcomeOf(new CookieJar(), flow.state), 403, 'transaction_not_bound');
  await apiError(await outcomeOf(jar.clone().set(flow.binding.name, randomToken(), { sameSite: 'none' }), flow.state), 403, 'transaction_not_bound');
  await apiError(await outcomeOf(jar, flow.state), 404, 'outcome_pending');
  await apiError(await outcomeOf(jar, randomToken()), 404, 'unknown_transaction');

  const cb = await callback(jar, await atBank(flow));
  assertGranted(cb, flow);
  const res = await outcomeOf(jar, flow.state);
  assert.equal(res.status, 200, describe(res));
  assert.deepEqual(res.json(), cb.outcome);
  // Without Origin (a same-origin GET from the SPA need not send one) it answers too.
  const bare = await outcomeOf(jar, flow.state, { 'X-Consentry': '1' });
  assert.equal(bare.status, 200, describe(bare));
  assert.deepEqual(bare.json(), cb.outcome);
  await apiError(await outcomeOf(new CookieJar(), flow.state), 403, 'transaction_not_bound');
});

test('/auth/start refuses bad requests with an error page and no binding', { timeout: TEST_TIMEOUT }, async (t) => {
  const cases = [
    ['no Origin', 403, 'origin_not_allowed', { origin: null }],
    ['a foreign Origin', 403, 'origin_not_allowed', { origin: EVIL_ORIGIN }],
    ['a short verifier (42 chars)', 400, 'invalid_verifier', { verifier: randomToken(32).slice(0, 42) }],
    ['an unknown provider', 400, 'unknown_provider', { provider: 'no-such-bank' }],
    ['an unknown user', 400, 'invalid_user', { user: 'usr_mallory' }],
    ['a code_challenge that is not the verifier\'s', 400, 'invalid_verifier', { form: { provider: 'local-bank', state: randomToken(), code_verifier: randomToken(), code_challenge: randomToken(), user: 'usr_alice' } }],
    ['no state', 400, 'missing_parameter', { form: { provider: 'local-bank', code_verifier: randomToken(), user: 'usr_alice' } }],
    ['a form over 16 KiB', 400, 'invalid_parameter', { form: { provider: 'local-bank', state: randomToken(), code_verifier: randomToken(), user: 'usr_alice', padding: 'x'.repeat(17 * 1024) } }],
  ];
  for (const [name, status, code, options] of cases) {
    await t.test(name, async () => {
      const flow = await start(new CookieJar(), options);
      assert.equal(flow.res.status, status, describe(flow.res));
      assert.match(flow.res.headers.get('content-type') ?? '', /^text\/html/i);
      assert.equal(outcomePage(flow.res).error, code);
      assert.equal(flow.location, null, 'no redirect');
      assert.equal(flow.binding, undefined, 'no binding cookie');
    });
  }
});

test('/auth/start refuses a body of undeclared length before reading it', { timeout: TEST_TIMEOUT }, async () => {
  // A chunked body has no Content-Length: the Worker must not buffer an unbounded body.
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(new URLSearchParams({ provider: 'local-bank', state: randomToken(), code_verifier: randomToken(), user: 'usr_alice' }).toString()));
      controller.close();
    },
  });
  const res = await stack.workerFetch('/auth/start', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.publicOrigin },
    body,
    duplex: 'half',
  });
  assert.equal(res.status, 400, describe(res));
  assert.equal(outcomePage(res).error, 'invalid_parameter');
  assert.equal(res.headers.get('location'), null);
});

test('revoking a consent and logging out', { timeout: TEST_TIMEOUT }, async () => {
  const { jar, outcome } = await completeFlow({ user: 'usr_alice' });
  const { id } = outcome.consent;
  const revocationsBefore = stack.issued.revocations.length;

  const res = await stack.workerFetch(`/auth/consents/${encodeURIComponent(id)}`, { method: 'DELETE', headers: apiHeaders(), jar });
  assert.equal(res.status, 200, describe(res));
  const body = res.json();
  assert.equal(body.id, id);
  assert.equal(body.status, 'revoked');
  assert.ok(body.revoked_at, 'revoked_at is set');
  assert.equal(body.provider_revoked, true);
  const revocations = stack.issued.revocations.slice(revocationsBefore);
  assert.ok(revocations.length >= 1 && revocations.every((r) => r.status === 200), `the bank was asked to revoke: ${JSON.stringify(revocations.map((r) => r.status))}`);
  const issuedValues = new Set(stack.issued.tokens.map((token) => token.value));
  assert.ok(revocations.every((r) => issuedValues.has(r.token)), 'what was revoked is a token the bank issued');

  const listed = (await listConsents(jar)).consents.find((consent) => consent.id === id);
  assert.equal(listed?.status, 'revoked');
  assert.ok(listed.revoked_at, 'the list shows when it was revoked');

  const bobJar = await browserWithSession('usr_bob');
  const bobConsent = (await listConsents(bobJar)).consents.find((consent) => consent.status === 'active');
  assert.ok(bobConsent, 'bob has an active consent');
  const foreign = await stack.workerFetch(`/auth/consents/${encodeURIComponent(bobConsent.id)}`, { method: 'DELETE', headers: apiHeaders(), jar });
  await apiError(foreign, 404, 'consent_not_found');
  assert.equal((await listConsents(bobJar)).consents.find((consent) => consent.id === bobConsent.id)?.status, 'active', 'bob\'s consent is untouched');
  await apiError(await stack.workerFetch(`/auth/consents/${randomToken(12)}`, { method: 'DELETE', headers: apiHeaders(), jar }), 404, 'consent_not_found');

  const stolen = jar.clone(); // the session cookie as it was before logout
  const logout = await stack.workerFetch('/auth/logout', { method: 'POST', headers: apiHeaders(), jar });
  assert.equal(logout.status, 204, describe(logout));
  const cleared = logout.setCookies.map(parseSetCookie).find((cookie) => cookie?.name === SESSION);
  assert.ok(cleared?.cleared, 'logout clears the session cookie (Max-Age=0)');
  assert.ok(!jar.has(SESSION));
  await apiError(await stack.workerFetch('/auth/consents', { headers: apiHeaders(), jar }), 401, 'session_required');
  await apiError(await stack.workerFetch('/auth/consents', { headers: apiHeaders(), jar: stolen }), 401, 'session_required');
  await apiError(await stack.workerFetch('/auth/consents', { headers: apiHeaders(), jar: new CookieJar() }), 401, 'session_required');
});

test('the consent routes act for the user Authorization: Bearer names, without a session', { timeout: TEST_TIMEOUT }, async () => {
  const { outcome } = await completeFlow({ user: 'usr_carol' });
  const asUser = (user) => apiHeaders({ Authorization: `Bearer ${user}` });
  const fresh = new CookieJar(); // no session at all
  const listed = await stack.workerFetch('/auth/consents', { headers: asUser('usr_carol'), jar: fresh });
  assert.equal(listed.status, 200, describe(listed));
  assert.equal(listed.json().user.id, 'usr_carol');
  assert.ok(listed.json().consents.some((consent) => consent.id === outcome.consent.id), 'carol\'s new consent is listed');
  assert.ok(listed.json().consents.every((consent) => consent.user === 'usr_carol'), 'only carol\'s');

  const asBob = await stack.workerFetch(`/auth/consents/${encodeURIComponent(outcome.consent.id)}`, { method: 'DELETE', headers: asUser('usr_bob'), jar: fresh });
  await apiError(asBob, 404, 'consent_not_found');
  await apiError(await stack.workerFetch('/auth/consents', { headers: asUser('usr_mallory'), jar: fresh }), 400, 'invalid_user');
  await apiError(await stack.workerFetch('/auth/consents', { headers: asUser('x'.repeat(5000)), jar: fresh }), 400, 'invalid_user');
  await apiError(await stack.workerFetch('/auth/consents', { headers: apiHeaders({ Authorization: 'Basic dXNyX2Nhcm9sOng=' }), jar: fresh }), 400, 'invalid_user');

  const revoked = await stack.workerFetch(`/auth/consents/${encodeURIComponent(outcome.consent.id)}`, { method: 'DELETE', headers: asUser('usr_carol'), jar: fresh });
  assert.equal(revoked.status, 200, describe(revoked));
  assert.equal(revoked.json().status, 'revoked');
  assert.equal(fresh.has(SESSION), false, 'acting for a named user sets no session');

  const preflight = await stack.workerFetch('/auth/consents', { method: 'OPTIONS', headers: { Origin: stack.publicOrigin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'x-consentry, authorization' } });
  assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
});

test('the demo page is served from the Worker\'s origin', { timeout: TEST_TIMEOUT }, async () => {
  const res = await stack.workerFetch('/');
  assert.equal(res.status, 200, describe(res));
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/i);
  assert.equal(res.body, await readFile(path.join(ROOT, 'www', 'index.html'), 'utf8'), 'www/index.html itself');
});

test('the demo user list', { timeout: TEST_TIMEOUT }, async () => {
  const res = await stack.workerFetch('/auth/demo/users', { headers: { 'X-Consentry': '1' } });
  assert.equal(res.status, 200, describe(res));
  const byId = (a, b) => a.id.localeCompare(b.id);
  assert.deepEqual(res.json().sort(byId), DEMO_USERS);
  await apiError(await stack.workerFetch('/auth/demo/users'), 403, 'csrf_header_missing');
});

// Restarts the bank: keep this the last test that talks to it.
test('after the bank rotates its signing key, the Worker refetches its JWKS once, and at most once a minute (C10)', { timeout: 4 * TEST_TIMEOUT }, async () => {
  const jwks = () => bankHits('/jwks');
  const discovery = () => bankHits('/.well-known/openid-configuration');
  // When the Worker last fetched the JWKS (wrangler dev serves it from one isolate).
  const lastFetch = () => stack.bankRequests.filter((req) => req.method === 'GET' && req.path === '/jwks').at(-1)?.at ?? 0;
  const cooledDown = () => sleep(Math.max(0, lastFetch() + 61_000 - Date.now()));
  await completeFlow({ user: 'usr_carol' }); // the JWKS is cached from here on, if not before
  const oldKid = lastIdTokenKid();
  let fetched = jwks();
  await completeFlow({ user: 'usr_carol' });
  assert.equal(jwks(), fetched, 'a known kid is verified with the cached JWKS');

  // A rotation met with a JWKS cached over a minute ago: one refetch, and the flow lands.
  await stack.restartBank();
  await cooledDown();
  fetched = jwks();
  const discovered = discovery();
  const { outcome } = await completeFlow({ user: 'usr_carol' }); // 200 granted
  assert.notEqual(lastIdTokenKid(), oldKid, 'the id_token is signed with the new key');
  assert.equal(jwks() - fetched, 1, 'an unknown kid makes the Worker fetch the JWKS once more');
  assert.equal(discovery(), discovered, 'the cached discovery document still fits the restarted bank (same issuer and endpoints)');
  assert.equal(outcome.consent.provider, 'local-bank');
  fetched = jwks();
  await completeFlow({ user: 'usr_carol' });
  assert.equal(jwks(), fetched, 'the refetched JWKS is cached in its turn');

  // Another rotation within the minute: the unknown kid is refused without a refetch, so a
  // stream of tokens naming made-up keys cannot become a stream of JWKS requests.
  await stack.restartBank();
  fetched = jwks();
  for (let i = 0; i < 3; i += 1) {
    const jar = new CookieJar();
    const flow = await startOk(jar, { user: 'usr_carol' });
    const cb = await callback(jar, await atBank(flow));
    assert.equal(cb.res.status, 400, describe(cb.res));
    assert.equal(cb.outcome?.status, 'failed', describe(cb.res));
    assert.equal(cb.outcome.error, 'jwk_not_yet_known', describe(cb.res));
  }
  assert.equal(jwks(), fetched, 'no refetch within a minute of the last one');

  // A minute after the last fetch, the next flow refetches and lands.
  await cooledDown();
  await completeFlow({ user: 'usr_carol' });
  assert.equal(jwks() - fetched, 1);
});


test('at rest: the local D1 holds no code, verifier, token or cookie value in clear', async () => {
  const files = await storedFiles(stack);
  assert.ok(files.some(([name]) => name.endsWith('.sqlite')), 'found the D1 database');
  const secrets = [
    ...stack.issued.tokens.map((token) => [token.type, token.value]),
    ...stack.issued.codes.map(({ code }) => ['authorization code', code]),
    ...[...sentVerifiers].map((verifier) => ['code_verifier', verifier]),
  ];
  for (const res of stack.responses) {
    for (const [name, value] of res.headers) {
      if (name !== 'set-cookie') continue;
      const cookie = parseSetCookie(value);
      if (cookie?.value && !cookie.cleared) secrets.push([`cookie ${cookie.name}`, cookie.value]);
    }
  }
  assert.ok(stack.issued.tokens.length > 0 && sentVerifiers.size > 0);
  const leaks = (await findLeaks(stack, secrets, { atRest: true })).filter((leak) => leak.endsWith('(at rest)'));
  assert.deepEqual(leaks, []);
});

test('leak scan: no code, verifier or token in anything the Worker said or logged', async () => {
  await new Promise((resolve) => { setTimeout(resolve, 1000); }); // the last request log lines
  const { issued } = stack;
  const secrets = new Map(); // value -> what it is
  const add = (kind, value) => { if (value && !secrets.has(value)) secrets.set(value, kind); };
  for (const token of issued.tokens) {
    add(token.type, token.value);
    if (token.value.split('.').length === 3) {
      const [, payload, signature] = token.value.split('.');
      add(`${token.type} payload`, payload);
      add(`${token.type} signature`, signature);
    }
  }
  for (const { code } of issued.codes) add('authorization code', code);
  for (const code of seenCodes) add('authorization code', code);
  for (const verifier of sentVerifiers) add('code_verifier', verifier);
  add('client secret', stack.secrets.clientSecret);
  add('CONSENTRY_KEY', stack.secrets.consentryKey);
  add('private_key_jwt key (d)', stack.secrets.pkjwtPrivateJwk.d);
  add('private_key_jwt wrong key (d)', stack.secrets.pkjwtWrongKeyPrivateJwk.d);
  for (const assertion of issued.assertions) {
    add('client assertion', assertion);
    add('client assertion signature', assertion.split('.')[2]);
  }

  const count = (type) => issued.tokens.filter((token) => token.type === type).length;
  assert.ok(count('access_token') > 0, 'the bank issued access tokens');
  assert.ok(count('id_token') > 0, 'the bank issued id tokens');
  assert.ok(count('refresh_token') > 0, 'the bank issued refresh tokens (offline_access with prompt=consent)');
  assert.ok(issued.codes.length > 0, 'the bank issued codes');
  assert.ok(sentVerifiers.size > 0, 'verifiers were sent');
  assert.ok(stack.responses.length > 0, 'responses were recorded');
  // The Worker's own log lines reach the scanned logs (else the log scan proves nothing).
  assert.match(stack.logs(), /consentry: callback provider=local-bank http=200/);
  assert.match(stack.logs(), /consentry: callback provider=local-bank http=400 code=token_exchange_failed/);
  console.log(`leak scan: ${secrets.size} secrets (${count('access_token')} access, ${count('refresh_token')} refresh, ${count('id_token')} id tokens, ${issued.codes.length} codes, ${sentVerifiers.size} verifiers) over ${stack.responses.length} responses and ${stack.logs().length} bytes of logs`);

  assert.deepEqual(await findLeaks(stack, [...secrets].map(([value, kind]) => [kind, value])), []);
  // F4: no cookie value the Worker set (sessions, flow bindings) is ever in its logs.
  const cookies = stack.responses.flatMap((res) => res.headers.filter(([name]) => name === 'set-cookie').map(([, value]) => parseSetCookie(value)?.value)).filter((value) => value && value.length >= 16);
  assert.ok(cookies.length > 0, 'cookies were set');
  assert.ok(issued.assertions.length > 0, 'client assertions were sent');
  const logs = stack.logs();
  assert.deepEqual(cookies.filter((value) => logs.includes(value)).map((value) => value.slice(0, 6)), [], 'cookie values in the logs');
});

test('two users\' flows interleaved in one Worker (start A, start B, callback B, callback A): each consent is its own user\'s, and each session its own', { timeout: TEST_TIMEOUT }, async () => {
  const redirectPrefix = `${stack.publicOrigin}/auth/callback/`;
  const alice = await startFlow(stack, { user: 'usr_alice' });
  const bob = await startFlow(stack, { user: 'usr_bob' });
  const backAlice = await answerAtProvider(alice.location, { user: BANK_ACCOUNT.usr_alice, redirectPrefix });
  const backBob = await answerAtProvider(bob.location, { user: BANK_ACCOUNT.usr_bob, redirectPrefix });
  const { outcome: bobs } = outcomePage(await returnToWorker(stack, backBob, { jar: bob.jar }));
  const { outcome: alices } = outcomePage(await returnToWorker(stack, backAlice, { jar: alice.jar }));
  assert.equal(bobs?.consent?.user, 'usr_bob');
  assert.equal(alices?.consent?.user, 'usr_alice');
  // Each browser's session is its own user's, and each list holds its own consent only.
  for (const [flow, user, mine, theirs] of [[alice, 'usr_alice', alices, bobs], [bob, 'usr_bob', bobs, alices]]) {
    const res = await stack.workerFetch('/auth/consents', { headers: apiHeaders(), jar: flow.jar });
    assert.equal(res.status, 200, describe(res));
    const listed = res.json();
    assert.equal(listed.user.id ?? listed.user, user, describe(res));
    const ids = listed.consents.map((consent) => consent.id);
    assert.ok(ids.includes(mine.consent.id), `${user} lists the consent of their flow`);
    assert.ok(!ids.includes(theirs.consent.id), `${user} does not list the other user's consent`);
    const account = listed.consents.find((consent) => consent.id === mine.consent.id).account;
    assert.equal(account, BANK_ACCOUNT[user], `${user}'s consent reaches their own bank account`);
  }
});
