// The browser package and the demo page in real Chromium (popup blocker on), against the
// Worker under `wrangler dev` and the local bank, clicking through the bank's own pages.
// Needs ./scripts/build-pkg first (the demo page loads www/vendor/consentry/).
//
//   NODE_NO_WARNINGS=1 node --test tests/browser/popup.test.mjs
//
// A screenshot of the demo after the grants, with balances, is written to test-output/.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { bankLogin, evaluateWithoutGesture, launchBrowser } from '../lib/browser.mjs';
import { ROOT, sqlString, startStack } from '../lib/worker-harness.mjs';

const TEST_TIMEOUT = 90_000;
const OUTPUT = path.join(ROOT, 'test-output');
const USERS = [
  { id: 'usr_alice', login: 'alice', name: 'Alice Martin' },
  { id: 'usr_bob', login: 'bob', name: 'Bob Nguyen' },
  { id: 'usr_carol', login: 'carol', name: 'Carol Okafor' },
];

// Every consentry event the page sees, for the tests to read (installed before the page's
// own scripts, so nothing is missed; an init script gives the page no user activation).
const RECORDER = `addEventListener('consentry-granted', (event) => (window.__events ??= []).push({ type: 'granted', user: event.target.getAttribute('user'), consent: event.detail }));
import('/vendor/consentry/consentry.js').then((module) => { window.__consentry = module; });
addEventListener('securitypolicyviolation', (event) => (window.__violations ??= []).push(\`\${event.violatedDirective} \${event.blockedURI}\`));
addEventListener('consentry-failed', (event) => (window.__events ??= []).push({ type: 'failed', user: event.target.getAttribute('user'), code: event.detail.code, description: event.detail.description, isConsentError: event.detail instanceof Error && event.detail.name === 'ConsentError' }));`;

let stack;
let browser;
const verifiers = new Set(); // every code_verifier a popup POSTed to /auth/start
const states = []; // every state a popup POSTed to /auth/start, in order

before(async () => {
  assert.ok(existsSync(path.join(ROOT, 'www', 'vendor', 'consentry', 'wasm', 'consentry_bg.wasm')), 'run ./scripts/build-pkg first');
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A fresh browser profile on the demo page, ready (users and their consents loaded). */
async function openDemo() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const bodies = [];
  context.on('request', (request) => {
    if (request.method() === 'POST' && new URL(request.url()).pathname === '/auth/start') {
      const form = new URLSearchParams(request.postData() ?? '');
      if (form.get('code_verifier')) verifiers.add(form.get('code_verifier'));
      states.push(form.get('state'));
    }
  });
  // Everything the Worker's origin sent to this browser: the app page's responses and the
  // popup's (the start redirect, the outcome page). The bank's own pages are not ours.
  context.on('response', (response) => {
    if (new URL(response.url()).origin !== stack.publicOrigin) return;
    bodies.push(response.body().then((body) => ({ url: response.url(), body: body.toString('latin1') }), () => null));
  });
  const page = await context.newPage();
  await page.addInitScript(RECORDER);
  await page.goto(`${stack.publicOrigin}/`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  return { context, page, bodies: async () => (await Promise.all(bodies)).filter(Boolean) };
}

const card = (user) => `article[data-user="${user}"]`;
const button = (user, provider = 'local-bank') => `${card(user)} consentry-connect[provider="${provider}"]`;

/** Clicks a user's Connect button (a real gesture) and resolves to the popup page. */
async function clickConnect(page, user, provider = 'local-bank') {
  const popup = page.context().waitForEvent('page', { timeout: 10_000 });
  await page.click(button(user, provider));
  return popup;
}

/** Waits for the next consentry event on the page after `count` events, and returns it. */
async function nextEvent(page, count, timeout = 30_000) {
  await page.waitForFunction((n) => (window.__events ?? []).length > n, count, { timeout, polling: 100 });
  return page.evaluate((n) => window.__events[n], count);
}

const eventCount = (page) => page.evaluate(() => (window.__events ?? []).length);

/** Every `GET /auth/outcome` the page makes from now on (the times), in an array it fills. */
function watchOutcomeAsks(page) {
  const asks = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/auth/outcome') asks.push(Date.now());
  });
  return asks;
}

async function tableIds(page, user) {
  return page.$$eval(`${card(user)} tbody tr`, (rows) => rows.map((row) => row.dataset.consent));
}

async function noticeOf(page) {
  return page.$eval('#notice', (node) => ({ kind: node.dataset.kind, text: node.textContent, hidden: node.hidden }));
}

test('each demo user connects a bank through the popup and sees the consent in their table', { timeout: TEST_TIMEOUT * 2 }, async () => {
  const { context, page } = await openDemo();
  const names = await page.$$eval('article[data-user] .name', (nodes) => nodes.map((node) => node.textContent));
  assert.deepEqual(names, USERS.map((user) => user.name), 'the three demo users from the database');

  for (const user of USERS) {
    const before = await eventCount(page);
    const popup = await clickConnect(page, user.id);
    await bankLogin(popup, { user: user.login });
    const event = await nextEvent(page, before);
    assert.equal(event.type, 'granted', JSON.stringify(event));
    assert.equal(event.user, user.id);
    assert.equal(event.consent.user, user.id);
    assert.equal(event.consent.provider, 'local-bank');
    assert.ok(event.consent.scopes.includes('accounts'), `scopes: ${event.consent.scopes}`);
    assert.deepEqual(Object.keys(event.consent).sort(), ['expires_at', 'granted_at', 'id', 'provider', 'scopes', 'user']);
    await page.waitForSelector(`${card(user.id)} tr[data-consent="${event.consent.id}"]`, { timeout: 10_000 });
    assert.equal(await page.getAttribute(button(user.id), 'status'), 'granted');
    assert.equal((await noticeOf(page)).kind, 'ok');
    await popup.waitForEvent('close', { timeout: 10_000 }).catch(() => {});
    assert.ok(popup.isClosed(), 'the outcome page closed the popup');
  }
  // Each table holds only its own user's consents.
  const consents = await page.evaluate(() => window.__events.filter((event) => event.type === 'granted').map((event) => event.consent));
  for (const user of USERS) {
    const ids = await tableIds(page, user.id);
    const own = consents.filter((consent) => consent.user === user.id).map((consent) => consent.id);
    const others = consents.filter((consent) => consent.user !== user.id).map((consent) => consent.id);
    assert.ok(own.every((id) => ids.includes(id)), `${user.id}'s table lists their consent`);
    assert.ok(others.every((id) => !ids.includes(id)), `${user.id}'s table lists no one else's`);
  }
  const row = await page.$eval(`${card('usr_alice')} tbody tr`, (tr) => [...tr.cells].map((td) => td.textContent.trim()));
  assert.equal(row[0], 'Local Bank');
  assert.equal(row[1], 'alice', 'the bank account the consent reaches');
  assert.match(row[2], /accounts/);
  assert.equal(row[3], 'active');

  // Each person's accounts, balances and latest transactions, read through /api.
  for (const user of USERS) {
    await page.waitForSelector(`${card(user.id)} section.data .account .balance`, { timeout: 20_000 });
  }
  const alice = await page.$$eval(`${card('usr_alice')} section.data .account`, (nodes) => nodes.map((node) => ({
    id: node.dataset.account,
    balance: node.querySelector('.balance').textContent,
    transactions: node.querySelectorAll('.transactions li').length,
  })));
  assert.deepEqual(alice.map((account) => account.id).sort(), ['acc-alice-current', 'acc-alice-savings'], 'alice\'s current and savings accounts');
  for (const account of alice) {
    assert.match(account.balance, /\d/, `a balance for ${account.id}`);
    assert.equal(account.transactions, 5, 'the latest five transactions');
  }
  const bob = await page.$$eval(`${card('usr_bob')} section.data .account`, (nodes) => nodes.map((node) => node.dataset.account));
  assert.deepEqual(bob, ['acc-bob-current'], 'bob sees only his own account');

  await mkdir(OUTPUT, { recursive: true });
  const shot = path.join(OUTPUT, 'demo-with-balances.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));

  // Revoke from the table.
  const id = consents.find((consent) => consent.user === 'usr_bob').id;
  await page.click(`${card('usr_bob')} tr[data-consent="${id}"] button.revoke`);
  await page.waitForSelector(`${card('usr_bob')} tr[data-consent="${id}"] .status.revoked`, { timeout: 10_000 });
  assert.match((await noticeOf(page)).text, /disconnected for Bob/);
  await context.close();
});

test('a denial at the bank rejects with access_denied and adds no consent', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  const rowsBefore = await tableIds(page, 'usr_alice');
  const popup = await clickConnect(page, 'usr_alice');
  await bankLogin(popup, { user: 'alice', decision: 'deny' });
  const event = await nextEvent(page, 0);
  assert.equal(event.type, 'failed');
  assert.equal(event.code, 'access_denied');
  assert.ok(event.isConsentError, 'the detail is a ConsentError');
  assert.equal(await page.getAttribute(button('usr_alice'), 'status'), 'failed');
  const notice = await noticeOf(page);
  assert.equal(notice.kind, 'warn');
  assert.match(notice.text, /cancelled at the bank/);
  assert.match(notice.text, /access_denied/);
  assert.deepEqual(await tableIds(page, 'usr_alice'), rowsBefore);
  await context.close();
});

test('closing the popup at the bank rejects with popup_closed after asking the Worker', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  const outcomeAsks = watchOutcomeAsks(page);
  const popup = await clickConnect(page, 'usr_carol');
  await popup.waitForSelector('form input[name="login"]');
  // The user reads the bank's page for a while, then closes the window. (A close within the
  // first seconds looks like a COOP severance to the SDK; see the COOP test.)
  await page.waitForTimeout(10_500);
  await popup.close();
  const event = await nextEvent(page, 0, 15_000);
  assert.equal(event.type, 'failed');
  assert.equal(event.code, 'popup_closed');
  assert.ok(outcomeAsks.length >= 1, 'the Worker was asked for the outcome before popup_closed');
  assert.match((await noticeOf(page)).text, /window was closed/);
  await context.close();
});

test('closing the popup at once, as the app window takes the focus back, rejects with popup_closed', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  const popup = await clickConnect(page, 'usr_bob');
  await popup.waitForSelector('form input[name="login"]');
  await popup.close();
  // A real browser focuses the opener when its popup closes; headless Chromium under
  // Playwright emulates focus and sends no such event, so the test sends the one it would.
  await page.evaluate(() => window.dispatchEvent(new FocusEvent('focus')));
  const event = await nextEvent(page, 0, 10_000);
  assert.equal(event.type, 'failed');
  assert.equal(event.code, 'popup_closed', 'a close within the first seconds is not mistaken for a COOP severance');
  await context.close();
});

test('a popup that closes after the grant landed still resolves: the Worker has the outcome', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  // Outcome messages never reach the page: as if the popup were closed right after the callback.
  await page.evaluate(() => {
    window.addEventListener('message', (event) => event.stopImmediatePropagation(), { capture: true });
  });
  const popup = await clickConnect(page, 'usr_bob');
  await bankLogin(popup, { user: 'bob' });
  const event = await nextEvent(page, 0);
  assert.equal(event.type, 'granted', JSON.stringify(event));
  assert.equal(event.consent.user, 'usr_bob');
  await context.close();
});

test('a short configured timeout rejects with timeout and closes the popup', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  await page.$eval(button('usr_alice'), (element) => element.setAttribute('timeout-ms', '3000'));
  const started = Date.now();
  const popup = await clickConnect(page, 'usr_alice');
  await popup.waitForSelector('form input[name="login"]');
  const event = await nextEvent(page, 0, 15_000);
  assert.equal(event.type, 'failed');
  assert.equal(event.code, 'timeout');
  assert.ok(Date.now() - started >= 2_900, 'not before the configured 3 s');
  await popup.waitForEvent('close', { timeout: 5_000 }).catch(() => {});
  assert.ok(popup.isClosed(), 'the SDK closed the popup');
  assert.match((await noticeOf(page)).text, /took too long/);
  const disabled = await page.evaluate(() => document.querySelector('consentry-connect[user="usr_alice"][provider="local-bank"]').shadowRoot.querySelector('button').disabled);
  assert.equal(disabled, false, 'the button is usable again');
  await context.close();
});

test('connect() without a user gesture rejects with popup_blocked and opens nothing', { timeout: TEST_TIMEOUT }, async () => {
  // Not openDemo: Playwright's own waits evaluate with a user gesture, which would give the
  // page transient activation. Everything here runs without one.
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript(RECORDER);
  await page.goto(`${stack.publicOrigin}/`);
  const deadline = Date.now() + 30_000;
  while (!(await evaluateWithoutGesture(page, `document.body.dataset.ready === 'true' && window.__consentry !== undefined`))) {
    assert.ok(Date.now() < deadline, 'the demo page got ready');
    await new Promise((resolve) => { setTimeout(resolve, 100); });
  }
  assert.equal(await evaluateWithoutGesture(page, 'navigator.userActivation.isActive'), false, 'the page has no user activation');
  const code = await evaluateWithoutGesture(page, `new window.__consentry.ConsentClient()
    .connect({ provider: 'local-bank', user: 'usr_alice' })
    .then(() => 'resolved', (error) => error.code)`);
  assert.equal(code, 'popup_blocked');
  assert.equal(context.pages().length, 1, 'no popup opened');
  await context.close();
});

test('connect() checks its fields in Wasm before any popup opens, and a second connect() is refused while one is pending', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  const codes = await page.evaluate(async () => {
    const { ConsentClient } = await import('/vendor/consentry/consentry.js');
    const client = new ConsentClient();
    const codeOf = (promise) => promise.then(() => 'resolved', (error) => error.code);
    const badProvider = await codeOf(client.connect({ provider: 'Not A Provider', user: 'usr_alice' }));
    const noUser = await codeOf(client.connect({ provider: 'local-bank', user: '' }));
    // A C1 control character (U+0085, two bytes in UTF-8) and a multi-byte neighbour.
    const controlUser = await codeOf(client.connect({ provider: 'local-bank', user: 'usr_\u0085' }));
    const badScope = await codeOf(client.connect({ provider: 'local-bank', user: 'usr_alice', scope: ['accounts', 'a"b'] }));
    const badHint = await codeOf(client.connect({ provider: 'local-bank', user: 'usr_alice', providerHint: 'bank\nx' }));
    const described = await client.connect({ provider: 'local-bank', user: 'é'.repeat(2049) }).catch((error) => error.description);
    // Without a CSPRNG the module refuses to start a flow (and works again once it is back).
    const platformCrypto = window.crypto;
    Object.defineProperty(window, 'crypto', { value: undefined, configurable: true });
    const noRandom = await codeOf(client.connect({ provider: 'local-bank', user: 'usr_alice' }));
    Object.defineProperty(window, 'crypto', { value: platformCrypto, configurable: true });
    const first = client.connect({ provider: 'local-bank', user: 'usr_alice' });
    first.catch(() => {});
    const second = await codeOf(client.connect({ provider: 'local-bank', user: 'usr_alice' }));
    return { badProvider, noUser, controlUser, badScope, badHint, described, noRandom, second };
  });
  assert.deepEqual(codes, {
    badProvider: 'unknown_provider',
    noUser: 'invalid_user',
    controlUser: 'invalid_user',
    badScope: 'invalid_parameter',
    badHint: 'invalid_parameter',
    described: 'the user reference is empty, too long or has control characters',
    noRandom: 'invalid_configuration',
    second: 'flow_in_progress',
  });
  assert.equal(context.pages().length, 2, 'one popup: the first flow\'s');
  await context.close();
});

test('messages not from our popup, from a foreign, look-alike or the null origin, or not this flow\'s outcome, are ignored and the listener stays armed', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  const popup = await clickConnect(page, 'usr_alice');
  await popup.waitForSelector('form input[name="login"]');
  const atBank = popup.url();
  const state = states.at(-1);
  assert.ok(state, 'the popup POSTed the start form');
  const outcome = { type: 'consentry:outcome', v: 1, state, status: 'failed', error: 'access_denied' };
  // A message the SDK accepts makes it ask the Worker at once: none of these may.
  const outcomeAsks = watchOutcomeAsks(page);
  // Every message the page receives, by origin, to show the foreign ones below arrived.
  await page.evaluate(() => {
    window.__origins = [];
    window.addEventListener('message', (event) => window.__origins.push(event.origin));
  });
  // From the page itself: the right state, but not our popup.
  await page.evaluate((message) => window.postMessage(message, '*'), outcome);
  // From our popup while it is at the bank (a foreign origin), and from a sandboxed frame
  // in it (the null origin): the right message from the wrong origin.
  await popup.evaluate((message) => {
    window.opener.postMessage(message, '*');
    const frame = document.createElement('iframe');
    frame.sandbox = 'allow-scripts';
    frame.srcdoc = `<script>parent.opener.postMessage(${JSON.stringify(message)}, '*')</${'script'}>`;
    document.body.append(frame);
  }, outcome);
  await page.waitForFunction(() => window.__origins.includes('null'), null, { timeout: 5000 });
  const origins = await page.evaluate(() => window.__origins);
  assert.ok(origins.includes(new URL(stack.issuer).origin), `a message from the bank's origin arrived: ${origins}`);
  // From our popup on the Worker's own origin (so origin and source pass): near misses of
  // the outcome schema, each of which must be refused.
  await popup.goto(`${stack.publicOrigin}/app.css`);
  await popup.evaluate(({ outcome }) => {
    const consent = { id: 'c1', provider: 'local-bank', user: 'usr_alice', scopes: ['accounts'], granted_at: '2026-01-01T00:00:00Z', expires_at: null };
    for (const message of [
      { ...outcome, state: `${outcome.state}x` },
      { ...outcome, v: 2 },
      { ...outcome, type: 'consentry:other' },
      { ...outcome, status: 'maybe' },
      { ...outcome, error: '' },
      { ...outcome, error_description: 42 },
      { ...outcome, status: 'granted', consent: { ...consent, scopes: 'accounts' } },
      { ...outcome, status: 'granted', consent: { ...consent, user: undefined } },
      JSON.stringify(outcome),
    ]) window.opener.postMessage(message, '*');
  }, { outcome });
  // D3: look-alikes of the Worker's origin (the same server by another name, a suffix, https,
  // another port), each the popup's own page, posting the right outcome: exact origins only.
  const { port } = new URL(stack.publicOrigin);
  const lookAlikes = [`http://127.0.0.1:${port}`, `http://localhost.evil.example:${port}`, `https://localhost:${port}`, `http://localhost:${Number(port) + 1}`];
  await context.route((url) => lookAlikes.includes(url.origin), (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>look-alike</title>' }));
  // The popup's own navigations (as a page's link would make them): one the browser started
  // itself, to another site, would put the popup in a new browsing context group without
  // its opener.
  const navigate = (url) => Promise.all([
    popup.waitForURL(url),
    popup.evaluate((target) => { setTimeout(() => { window.location.href = target; }, 0); }, url),
  ]);
  for (const origin of lookAlikes) {
    await navigate(`${origin}/`);
    await popup.evaluate((message) => window.opener.postMessage(message, '*'), { ...outcome, status: 'denied' });
  }
  await page.waitForFunction((expected) => expected.every((origin) => window.__origins.includes(origin)), lookAlikes, { timeout: 5000 });
  await page.waitForTimeout(500);
  assert.equal(await eventCount(page), 0, 'nothing settled the flow');
  assert.deepEqual(outcomeAsks, [], 'no message was taken for our popup\'s outcome');
  await navigate(atBank);
  await bankLogin(popup, { user: 'alice' });
  const event = await nextEvent(page, 0);
  assert.equal(event.type, 'granted', 'the listener stayed armed for the real outcome');
  await context.close();
});

test('D6, D7: a message from our popup only wakes the flow, which settles once on the Worker\'s record; a forged outcome, and what arrives after, settle nothing', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  // The outcome page closes its popup; here it stays open, so that it can post again after.
  await context.addInitScript(() => { window.close = () => {}; });
  const outcomeAsks = watchOutcomeAsks(page);
  const popup = await clickConnect(page, 'usr_bob');
  await popup.waitForSelector('form input[name="login"]');
  const atBank = popup.url();
  const state = states.at(-1);
  const consent = { id: 'forged', provider: 'local-bank', user: 'usr_bob', scopes: ['accounts'], granted_at: '2026-01-01T00:00:00Z', expires_at: null };
  const granted = { type: 'consentry:outcome', v: 1, state, status: 'granted', consent };
  const denied = { type: 'consentry:outcome', v: 1, state, status: 'denied', error: 'access_denied' };
  // D6: on the Worker's origin, as the outcome page is, well-formed outcomes of this flow
  // that the Worker has not recorded: each makes the SDK ask, none settles the flow.
  await popup.goto(`${stack.publicOrigin}/app.css`);
  const asksBefore = outcomeAsks.length;
  await popup.evaluate(([one, two]) => {
    window.opener.postMessage(one, '*');
    window.opener.postMessage(two, '*');
  }, [granted, denied]);
  // Longer than the 10 s a posted error waits for a Worker that cannot answer: this one
  // answers that the flow is pending, and then no message stands.
  await page.waitForTimeout(11_000);
  assert.ok(outcomeAsks.length > asksBefore, 'the message made the SDK ask the Worker');
  assert.equal(await eventCount(page), 0, 'a message the Worker has no record of settles nothing');
  // The real ending: a grant at the bank, recorded by the Worker, posted by its page.
  await popup.goto(atBank);
  await bankLogin(popup, { user: 'bob' });
  const event = await nextEvent(page, 0);
  assert.equal(event.type, 'granted', JSON.stringify(event));
  assert.notEqual(event.consent.id, 'forged', 'the Worker\'s record, not the forged grant');
  const [stored] = await stack.d1(`SELECT user_id FROM consents WHERE id = ${sqlString(event.consent.id)}`);
  assert.equal(stored?.user_id, 'usr_bob');
  // D7: the outcome page is still open on the Worker's origin; what it posts now (the same
  // outcome, a denial, a forged grant) arrives when no flow is pending.
  await popup.evaluate(([one, two, three]) => {
    for (const message of [one, two, three]) window.opener.postMessage(message, '*');
  }, [denied, { ...denied, status: 'failed', error: 'server_error' }, granted]);
  await page.waitForTimeout(1_000);
  assert.equal(await eventCount(page), 1, 'the flow settled once');
  assert.equal(await page.getAttribute(button('usr_bob'), 'status'), 'granted');
  await context.close();
});

test('after a grant, nothing the page can read holds a token, code or verifier, no storage holds the state, and the page ran under its CSP', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page, bodies } = await openDemo();
  const codesBefore = stack.issued.codes.length;
  const tokensBefore = stack.issued.tokens.length;
  const verifiersBefore = new Set(verifiers);
  const popup = await clickConnect(page, 'usr_carol');
  await bankLogin(popup, { user: 'carol' });
  const event = await nextEvent(page, 0);
  assert.equal(event.type, 'granted');
  await page.waitForSelector(`${card('usr_carol')} tr[data-consent="${event.consent.id}"]`);
  await page.waitForSelector(`${card('usr_carol')} section.data[data-consent="${event.consent.id}"] .balance`, { timeout: 20_000 });

  const secrets = [
    ...stack.issued.codes.slice(codesBefore).map((issued) => issued.code),
    ...stack.issued.tokens.slice(tokensBefore).map((issued) => issued.value),
    ...[...verifiers].filter((verifier) => !verifiersBefore.has(verifier)),
  ];
  assert.ok(stack.issued.codes.length > codesBefore && stack.issued.tokens.length > tokensBefore, 'the bank issued a code and tokens');
  assert.ok(verifiers.size > verifiersBefore.size, 'a verifier was sent');
  const readable = await page.evaluate(async () => ({
    cookie: document.cookie,
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
    indexedDB: JSON.stringify(await indexedDB.databases()),
    events: JSON.stringify(window.__events),
    html: document.documentElement.outerHTML,
  }));
  assert.equal(readable.cookie, '', 'the page reads no cookie: both of consentry\'s are HttpOnly');
  assert.equal(readable.indexedDB, '[]', 'no IndexedDB database');
  // D14: the flow's state is in no storage either (the page and its events may name it).
  const state = states.at(-1);
  assert.ok(state, 'the flow\'s state was seen');
  for (const where of ['cookie', 'local', 'session', 'indexedDB']) assert.ok(!readable[where].includes(state), `the state appears in ${where}`);
  // D15: all of it ran under the demo's CSP: Wasm through 'wasm-unsafe-eval', no 'unsafe-eval'.
  const policy = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', 'content');
  assert.match(policy, /script-src 'self' 'wasm-unsafe-eval';/);
  assert.ok(!policy.includes("'unsafe-eval'") && !policy.includes("'unsafe-inline'"), policy);
  assert.deepEqual(await page.evaluate(() => window.__violations ?? []), [], 'no CSP violation');
  const received = await bodies();
  assert.ok(received.some((body) => body.url.includes('/auth/consents')), 'the page\'s responses were captured');
  assert.ok(received.some((body) => new URL(body.url).pathname === '/auth/callback/local-bank'), 'the popup\'s outcome page was captured');
  assert.ok(received.some((body) => new URL(body.url).pathname.startsWith('/api/local-bank/accounts/')), 'the data API\'s answers were captured');
  const haystacks = [...Object.entries(readable), ...received.map((body) => [body.url, body.body])];
  for (const secret of secrets) {
    for (const [where, text] of haystacks) {
      assert.ok(!text.includes(secret), `a secret (${secret.slice(0, 4)}…) appears in ${where}`);
    }
  }
  await context.close();
});

test('a FAPI 2.0 flow from the demo page: PAR, DPoP, and the Open Finance data through /api', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  const popup = await clickConnect(page, 'usr_alice', 'open-finance');
  await bankLogin(popup, { user: 'alice' });
  const event = await nextEvent(page, 0);
  assert.equal(event.type, 'granted', JSON.stringify(event));
  assert.equal(event.consent.provider, 'open-finance');
  await page.waitForSelector(`${card('usr_alice')} section.data[data-consent="${event.consent.id}"] .account .balance`, { timeout: 20_000 });
  const accounts = await page.$$eval(`${card('usr_alice')} section.data[data-consent="${event.consent.id}"] .account`, (nodes) => nodes.map((node) => node.dataset.account));
  assert.deepEqual(accounts.sort(), ['acc-alice-current', 'acc-alice-savings']);
  const pushed = stack.fapiBank.issued.pushes.at(-1);
  assert.equal(pushed.authorization_details[0].consent.dp_id, 'harbour-bank', 'the element\'s provider-hint chose the bank');
  assert.equal(stack.fapiBank.issued.tokens.filter((token) => token.type === 'access_token').at(-1).token_type, 'DPoP');
  await mkdir(OUTPUT, { recursive: true });
  await page.screenshot({ path: path.join(OUTPUT, 'demo-open-finance.png'), fullPage: true });
  await context.close();
});

test('one popup flow per provider from the demo page, each with its bank picker: TrueLayer (form_post), Moneyhub, Connect', { timeout: TEST_TIMEOUT * 2 }, async () => {
  const { context, page } = await openDemo();
  const flows = [
    { provider: 'truelayer', bank: 'ob-monzo', user: 'usr_bob', login: 'bob', accounts: ['acc-bob-current'] },
    { provider: 'moneyhub', bank: '1ffe704d39629a929c8e293880fb449a', user: 'usr_carol', login: 'carol', accounts: 1 },
    { provider: 'connect', user: 'usr_alice', login: 'alice', profile: 'alice@bank.example' },
  ];
  for (const [index, flow] of flows.entries()) {
    if (flow.bank) await page.selectOption(`${card(flow.user)} select[data-hint-for="${flow.provider}"]`, flow.bank);
    const popup = await clickConnect(page, flow.user, flow.provider);
    const { url } = await bankLogin(popup, { user: flow.login });
    if (url) assert.equal(new URL(url).pathname, `/auth/callback/${flow.provider}`);
    const event = await nextEvent(page, index);
    assert.equal(event.type, 'granted', `${flow.provider}: ${JSON.stringify(event)}`);
    assert.equal(event.consent.provider, flow.provider);
    const section = `${card(flow.user)} section.data[data-consent="${event.consent.id}"]`;
    if (flow.profile) {
      await page.waitForSelector(`${section} dl.profile`, { timeout: 20_000 });
      assert.ok((await page.textContent(`${section} dl.profile`)).includes(flow.profile), flow.provider);
    } else {
      await page.waitForSelector(`${section} .account .balance`, { timeout: 20_000 });
      const accounts = await page.$$eval(`${section} .account`, (nodes) => nodes.map((node) => node.dataset.account));
      if (Array.isArray(flow.accounts)) assert.deepEqual(accounts, flow.accounts, flow.provider);
      else assert.equal(accounts.length, flow.accounts, flow.provider);
    }
  }
  // The pickers chose the banks: TrueLayer's provider_id, Moneyhub's id: scope.
  assert.equal(stack.truelayer.issued.connections.at(-1).providerId, 'ob-monzo');
  const carol = [...stack.moneyhub.profiles.values()].find((profile) => profile.clientUserId === 'usr_carol');
  assert.deepEqual([...carol.connections.values()].map((connection) => connection.bankId), ['1ffe704d39629a929c8e293880fb449a']);
  await mkdir(OUTPUT, { recursive: true });
  await page.screenshot({ path: path.join(OUTPUT, 'demo-providers.png'), fullPage: true });
  await context.close();
});

test('a start the Worker refuses rejects with the code its popup posted, which the Worker has no flow to confirm', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  // Well-formed, so the module lets it through; the Worker does not know it, stores nothing
  // and posts its error from the popup (page.evaluate carries a user gesture).
  const startsBefore = states.length;
  const code = await page.evaluate(async () => {
    const { ConsentClient } = await import('/vendor/consentry/consentry.js');
    return new ConsentClient().connect({ provider: 'no-such-bank', user: 'usr_alice' }).then(() => 'resolved', (error) => error.code);
  });
  assert.equal(states.length, startsBefore + 1, 'the popup POSTed the start: the Worker refused it, not the module');
  assert.equal(code, 'unknown_provider');
  await context.close();
});

test('D6: a grant the popup posts but the Worker does not confirm is not believed: network_error, not a consent', { timeout: TEST_TIMEOUT }, async () => {
  const { context, page } = await openDemo();
  // The Worker's record, out of reach: every read of it fails as storage down would.
  await context.route(`${stack.publicOrigin}/auth/outcome?*`, (route) => route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ code: 'storage_failed', description: 'withheld by the test' }) }));
  const exchangesBefore = stack.issued.exchanges.length;
  const consentsBefore = (await stack.d1(`SELECT COUNT(*) AS n FROM consents WHERE user_id = 'usr_bob'`))[0].n;
  const popup = await clickConnect(page, 'usr_bob');
  await bankLogin(popup, { user: 'bob' });
  const event = await nextEvent(page, 0, 30_000);
  assert.deepEqual({ type: event.type, code: event.code }, { type: 'failed', code: 'network_error' });
  // What the page was not told: the bank granted, and the Worker recorded the consent.
  assert.deepEqual(stack.issued.exchanges.slice(exchangesBefore).map((exchange) => exchange.status), [200]);
  const consentsAfter = (await stack.d1(`SELECT COUNT(*) AS n FROM consents WHERE user_id = 'usr_bob'`))[0].n;
  assert.equal(consentsAfter, consentsBefore + 1);
  await context.close();
});

test('D9: an app page served with COOP same-origin (cross-origin isolated) has its popup severed, and the flow resolves through /auth/outcome', { timeout: TEST_TIMEOUT }, async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  // The demo page, as an app that isolates itself serves it.
  await context.route(`${stack.publicOrigin}/`, async (route) => {
    const response = await route.fetch();
    await route.fulfill({ response, headers: { ...response.headers(), 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' } });
  });
  const page = await context.newPage();
  await page.addInitScript(RECORDER);
  await page.goto(`${stack.publicOrigin}/`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  assert.equal(await page.evaluate(() => window.crossOriginIsolated), true, 'the page is cross-origin isolated');
  // The start held back past the SDK's window for guessing a severance from timing: the
  // popup reads closed only then, so only the page's isolation tells the SDK it was severed.
  await context.route(`${stack.publicOrigin}/auth/start`, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 11_000));
    await route.continue();
  });
  const popup = await clickConnect(page, 'usr_carol');
  await popup.waitForSelector('form input[name="login"]', { timeout: 30_000 });
  assert.equal(await popup.evaluate(() => window.opener), null, 'the app\'s COOP severed the popup');
  // Longer than the SDK's grace for a popup that was really closed: a severed one is not.
  await page.waitForTimeout(3_000);
  assert.equal(await eventCount(page), 0, 'no false popup_closed while the user is at the bank');
  await bankLogin(popup, { user: 'carol' });
  const event = await nextEvent(page, 0, 30_000);
  assert.equal(event.type, 'granted', `resolved: ${JSON.stringify(event)}`);
  assert.equal(event.consent.user, 'usr_carol');
  await context.close();
});

// Restarts the bank with COOP: keep this the last test.
test('a bank page with COOP same-origin severs the popup, and the flow still resolves through /auth/outcome', { timeout: TEST_TIMEOUT }, async () => {
  await stack.restartBank({ coop: 'same-origin' });
  try {
    const { context, page } = await openDemo();
    const popup = await clickConnect(page, 'usr_alice');
    await popup.waitForSelector('form input[name="login"]');
    assert.equal(await popup.evaluate(() => window.opener), null, 'COOP severed the popup from the app');
    await bankLogin(popup, { user: 'alice' });
    const event = await nextEvent(page, 0, 30_000);
    assert.equal(event.type, 'granted', `not a false popup_closed: ${JSON.stringify(event)}`);
    assert.equal(event.consent.user, 'usr_alice');
    await context.close();
  } finally {
    await stack.restartBank({ coop: '' });
  }
});
