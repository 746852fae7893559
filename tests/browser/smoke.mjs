// Groundwork check for the browser tests (issue 4), not a test suite: real Chromium against the
// real stack (wrangler dev + the local bank), with a few lines of plain JavaScript standing in
// for the future browser package. Run it by hand:
//
//   NODE_NO_WARNINGS=1 node tests/browser/smoke.mjs
//
// It prints what it observes and exits 1 if an expectation fails. What it looks at:
//   1. the popup flow with messaging: click (a user gesture) -> window.open + form POST into the
//      popup -> the bank's login and consent -> the Worker's outcome page posts the outcome to
//      the opener; the __Host- cookies on http://localhost; /auth/outcome and /auth/consents;
//   2. a denied flow (bankLogin with decision 'deny');
//   (a) window.open without a user gesture (the popup blocker is on), and how long Chromium's
//      transient activation lasts after a click;
//   (b) the bank sending Cross-Origin-Opener-Policy: same-origin: what the opener and the popup
//      see (window.opener, popup.closed, messages), and /auth/outcome as the fallback.

import { bankLogin, evaluateWithoutGesture, launchBrowser } from '../lib/browser.mjs';
import { startStack } from '../lib/worker-harness.mjs';

// The stand-in for the browser package: a button whose click handler, in the same tick, opens
// the named popup and POSTs the start form into it; it records every message from the
// Worker's origin and samples `popup.closed` every 50 ms.
// Installed as an init script on the app page only (path '/'): unlike addScriptTag, which runs
// through page.evaluate, it leaves the page without user activation (see (a)).
const STANDIN = String.raw`if (location.pathname === '/' && !window.__standin) addEventListener('DOMContentLoaded', () => {
  const origin = location.origin;
  const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const random = () => b64url(crypto.getRandomValues(new Uint8Array(32)));
  const standin = window.__standin = { flows: [], messages: [], t0: performance.now() };
  const now = () => Math.round(performance.now() - standin.t0);
  window.addEventListener('message', (event) => {
    const flow = standin.flows.find((f) => f.popup && event.source === f.popup);
    standin.messages.push({ at: now(), origin: event.origin, fromOwnPopup: Boolean(flow), sourceIsNull: event.source === null, data: event.data });
  });
  standin.start = ({ user = 'usr_alice', provider = 'local-bank', delayMs = 0 } = {}) => {
    const go = () => {
      const state = random();
      const verifier = random();
      const activation = navigator.userActivation ? navigator.userActivation.isActive : null;
      const popup = window.open('', 'consentry', 'popup,width=480,height=720');
      const flow = { state, popup, blocked: !popup, activationBeforeOpen: activation, openedAt: now(), closedLog: [] };
      standin.flows.push(flow);
      if (!popup) return;
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = origin + '/auth/start';
      form.target = 'consentry';
      for (const [name, value] of Object.entries({ provider, state, code_verifier: verifier, user })) {
        const input = document.createElement('input');
        input.type = 'hidden';
        input.name = name;
        input.value = value;
        form.append(input);
      }
      document.body.append(form);
      form.submit();
      form.remove();
      let last = null;
      const sample = () => {
        let closed;
        try { closed = popup.closed; } catch (e) { closed = 'threw: ' + e.name; }
        if (closed !== last) { flow.closedLog.push({ at: now(), closed }); last = closed; }
        if (now() - flow.openedAt > 60000) clearInterval(flow.timer);
      };
      sample();
      flow.timer = setInterval(sample, 50);
    };
    if (delayMs > 0) setTimeout(go, delayMs); else go();
  };
  standin.flow = (i = standin.flows.length - 1) => {
    const f = standin.flows[i];
    return f ? { state: f.state, blocked: f.blocked, activationBeforeOpen: f.activationBeforeOpen, closedNow: f.popup ? f.popup.closed : null, closedLog: f.closedLog } : null;
  };
  standin.outcome = async (state) => {
    const response = await fetch(origin + '/auth/outcome?state=' + encodeURIComponent(state), { headers: { 'X-Consentry': '1' }, credentials: 'include' });
    return { status: response.status, body: await response.json() };
  };
  const button = document.createElement('button');
  button.id = 'consentry-login';
  button.textContent = 'Connect your bank';
  button.addEventListener('click', () => standin.start({ user: button.dataset.user, delayMs: Number(button.dataset.delay || 0) }));
  document.body.append(button);
});`;

// Logs, in every page of a context (the popup too, before any script of the page), where the
// page is and whether it has an opener. Injected by CDP, so the outcome page's CSP does not
// stop it; it only reads window.opener.
const PROBE = `console.log('[probe] ' + location.href.split('?')[0] + ' opener=' + (window.opener ? 'set' : 'null'));`;

const failures = [];
function check(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` -- ${detail}` : ''}`);
  if (!ok) failures.push(name);
}
const note = (text) => console.log(`     ${text}`);
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function newStandinPage(browser, origin, { probe = true } = {}) {
  const context = await browser.newContext();
  await context.addInitScript({ content: STANDIN });
  const probes = [];
  if (probe) {
    await context.addInitScript({ content: PROBE });
    context.on('console', (message) => { if (message.text().startsWith('[probe]')) probes.push(message.text().slice(8)); });
  }
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  return { context, page, probes };
}

async function clickAndCatchPopup(context, page, { user = 'usr_alice', delay = 0 } = {}) {
  await page.evaluate(({ u, d }) => {
    const button = document.getElementById('consentry-login');
    button.dataset.user = u;
    button.dataset.delay = String(d);
  }, { u: user, d: delay });
  const popupEvent = context.waitForEvent('page', { timeout: delay + 10_000 });
  await page.click('#consentry-login');
  return popupEvent;
}

const started = performance.now();
const stack = await startStack();
console.log(`stack up in ${Math.round(performance.now() - started)} ms: Worker ${stack.publicOrigin}, bank ${stack.issuer}`);
const origin = stack.publicOrigin;

let browser;
try {
  const launchStart = performance.now();
  browser = await launchBrowser();
  const launchMs = Math.round(performance.now() - launchStart);
  console.log(`Chromium ${browser.version()} launched in ${launchMs} ms`);
  const leaked = (text) => stack.issued.tokens.some(({ value }) => text.includes(value))
    || stack.issued.codes.some(({ code }) => text.includes(code));

  // 1. The flow with messaging ------------------------------------------------------------
  console.log('\n== 1. granted flow, bank without COOP');
  {
    const { context, page, probes } = await newStandinPage(browser, origin);
    const pages = [];
    context.on('page', (p) => pages.push(p));
    const flowStart = performance.now();
    const popup = await clickAndCatchPopup(context, page);
    const flow = await page.evaluate(() => window.__standin.flow());
    check('click opens the popup (blocker on, gesture present)', !flow.blocked, `userActivation.isActive before open: ${flow.activationBeforeOpen}`);
    const popupClosed = new Promise((resolve) => { popup.once('close', () => resolve(performance.now())); });

    // The binding cookie, set by /auth/start over http://localhost.
    await popup.waitForURL((url) => url.origin === stack.issuer, { waitUntil: 'commit' });
    const afterStart = await context.cookies(origin);
    const binding = afterStart.find((c) => c.name.startsWith('__Host-consentry-tx-'));
    check('__Host- Secure binding cookie is stored for http://localhost', Boolean(binding), binding ? `${binding.name.slice(0, 28)}... secure=${binding.secure} sameSite=${binding.sameSite} httpOnly=${binding.httpOnly} path=${binding.path} domain=${binding.domain}` : `cookies: ${afterStart.map((c) => c.name).join(', ') || 'none'}`);
    const pending = await page.evaluate((s) => window.__standin.outcome(s), flow.state);
    check('/auth/outcome before the bank answers: 404 outcome_pending (binding cookie sent by fetch)', pending.status === 404 && pending.body.code === 'outcome_pending', JSON.stringify(pending));

    const reached = await bankLogin(popup, { user: 'alice', decision: 'allow' });
    note(`bankLogin -> ${JSON.stringify(reached)}`);
    await page.waitForFunction(() => window.__standin.messages.length > 0, null, { timeout: 10_000 }).catch(() => {});
    const { messages } = await page.evaluate(() => window.__standin);
    const message = messages[0];
    check('opener received one message', messages.length === 1, JSON.stringify(messages));
    if (message) {
      const { data } = message;
      check('message is {type: consentry:outcome, status: granted, state}', data?.type === 'consentry:outcome' && data.status === 'granted' && data.state === flow.state, JSON.stringify(data));
      check('message comes from the Worker origin and from our own popup', message.origin === origin && message.fromOwnPopup, `origin=${message.origin} fromOwnPopup=${message.fromOwnPopup} after ${Math.round(performance.now() - flowStart)} ms`);
      check('message carries no code or token', !leaked(JSON.stringify(data)));
    }
    const closedAt = await Promise.race([popupClosed, sleep(5000).then(() => null)]);
    check('popup closes itself after posting', closedAt !== null);
    await sleep(200); // a few of the stand-in's 50 ms samples
    const after = await page.evaluate(() => window.__standin.flow());
    note(`popup.closed timeline (ms since stand-in load): ${JSON.stringify(after.closedLog)}`);
    note(`probes (page, opener): ${probes.join(' | ')}`);
    const cookies = await context.cookies(origin);
    const session = cookies.find((c) => c.name === '__Host-consentry-session');
    check('__Host- session cookie (SameSite=Strict) is stored after the callback', Boolean(session), session ? `secure=${session.secure} sameSite=${session.sameSite} httpOnly=${session.httpOnly}` : `cookies: ${cookies.map((c) => c.name).join(', ')}`);
    const outcome = await page.evaluate((s) => window.__standin.outcome(s), flow.state);
    check('/auth/outcome (fetch, credentials include) returns the granted outcome', outcome.status === 200 && outcome.body.status === 'granted' && outcome.body.state === flow.state, `${outcome.status} ${JSON.stringify(outcome.body).slice(0, 160)}`);
    const consents = await page.evaluate(async () => {
      const response = await fetch('/auth/consents', { headers: { 'X-Consentry': '1' }, credentials: 'include' });
      return { status: response.status, body: await response.json() };
    });
    check('/auth/consents answers 200 with the session cookie', consents.status === 200 && consents.body.consents?.length === 1, `${consents.status} user=${consents.body.user?.id ?? JSON.stringify(consents.body.user)} consents=${consents.body.consents?.length}`);
    check('only one popup page opened', pages.length === 1, `${pages.length}`);
    await context.close();
  }

  // 2. Deny -------------------------------------------------------------------------------
  console.log('\n== 2. denied flow (bob)');
  {
    const { context, page } = await newStandinPage(browser, origin, { probe: false });
    const popup = await clickAndCatchPopup(context, page, { user: 'usr_bob' });
    const flow = await page.evaluate(() => window.__standin.flow());
    const reached = await bankLogin(popup, { user: 'bob', decision: 'deny' });
    note(`bankLogin -> ${JSON.stringify(reached)}`);
    await page.waitForFunction(() => window.__standin.messages.length > 0, null, { timeout: 10_000 }).catch(() => {});
    const data = (await page.evaluate(() => window.__standin.messages))[0]?.data;
    check('denied outcome posted: status denied, error access_denied', data?.status === 'denied' && data.error === 'access_denied' && data.state === flow.state, JSON.stringify(data));
    await context.close();
  }

  // (a) No user gesture ------------------------------------------------------------------
  console.log('\n== (a) window.open without a user gesture');
  {
    const { context, page } = await newStandinPage(browser, origin, { probe: false });
    const pages = [];
    context.on('page', (p) => pages.push(p));
    // Nothing has given this page activation yet: goto and init scripts carry no gesture.
    const cdp = await evaluateWithoutGesture(page, `({ active: navigator.userActivation.isActive, hasBeenActive: navigator.userActivation.hasBeenActive, opened: window.open('', 'probe-a', 'popup,width=480,height=720') !== null })`);
    check('window.open with no user activation (CDP userGesture:false) returns null', cdp.opened === false, JSON.stringify(cdp));
    await evaluateWithoutGesture(page, 'window.__standin.start()');
    const blocked = await evaluateWithoutGesture(page, 'window.__standin.flow()');
    check('the stand-in sees the popup blocked (null) without a gesture', blocked.blocked === true, JSON.stringify({ blocked: blocked.blocked, activation: blocked.activationBeforeOpen }));
    const viaEvaluate = await page.evaluate(() => {
      const w = window.open('', 'probe-b', 'popup,width=480,height=720');
      const opened = w !== null;
      if (w) w.close();
      return { active: navigator.userActivation.isActive, opened };
    });
    note(`page.evaluate(() => window.open(...)) without a click: ${JSON.stringify(viaEvaluate)} (Playwright evaluates with userGesture: true)`);
    check('page.evaluate counts as a user gesture in Playwright (so it cannot test the blocker)', viaEvaluate.opened === true);

    // How long a click's activation lasts: open 1 s after the click, then 5.5 s after.
    await evaluateWithoutGesture(page, 'window.__standin.flows.length = 0');
    const late1 = await clickAndCatchPopup(context, page, { delay: 1000 }).catch(() => null);
    const f1 = await evaluateWithoutGesture(page, 'window.__standin.flow()');
    check('window.open 1 s after the click still opens (transient activation)', late1 !== null && f1.blocked === false, JSON.stringify({ blocked: f1.blocked, activation: f1.activationBeforeOpen }));
    if (late1) await late1.close();
    await evaluateWithoutGesture(page, 'window.__standin.flows.length = 0');
    await evaluateWithoutGesture(page, "document.getElementById('consentry-login').dataset.delay = '5500'");
    await page.click('#consentry-login');
    await sleep(6000);
    const f2 = await evaluateWithoutGesture(page, 'window.__standin.flow()');
    check('window.open 5.5 s after the click is blocked (activation expired)', f2?.blocked === true, JSON.stringify({ blocked: f2?.blocked, activation: f2?.activationBeforeOpen }));
    note(`pages opened in this context: ${pages.length} (expected 2: the one page.evaluate opened, the 1 s late one)`);
    await context.close();
  }

  // (b) COOP at the bank -----------------------------------------------------------------
  console.log('\n== (b) bank with Cross-Origin-Opener-Policy: same-origin');
  {
    await stack.restartBank({ coop: 'same-origin' });
    const coopHeader = (await fetch(`${stack.issuer}/.well-known/openid-configuration`)).headers.get('cross-origin-opener-policy');
    note(`bank now sends Cross-Origin-Opener-Policy: ${coopHeader}`);
    const { context, page, probes } = await newStandinPage(browser, origin);
    const pages = [];
    context.on('page', (p) => pages.push(p));
    const popup = await clickAndCatchPopup(context, page);
    const flow = await page.evaluate(() => window.__standin.flow());
    const popupClosed = new Promise((resolve) => { popup.once('close', () => resolve(true)); });
    await popup.waitForURL((url) => url.origin === stack.issuer, { waitUntil: 'load' });
    await sleep(300);
    const atBank = await page.evaluate(() => window.__standin.flow());
    note(`opener while the popup is at the bank: popup.closed=${atBank.closedNow}`);
    const openerInPopupAtBank = await popup.evaluate(() => (window.opener === null ? 'null' : 'set'));
    note(`popup's window.opener at the bank page: ${openerInPopupAtBank}`);
    const pendingAtBank = await page.evaluate((s) => window.__standin.outcome(s), flow.state);
    note(`/auth/outcome while at the bank: ${pendingAtBank.status} ${pendingAtBank.body.code ?? pendingAtBank.body.status}`);

    const reached = await bankLogin(popup, { user: 'alice', decision: 'allow' });
    note(`bankLogin -> ${JSON.stringify(reached)}`);
    const selfClosed = await Promise.race([popupClosed, sleep(3000).then(() => false)]);
    const { messages } = await page.evaluate(() => window.__standin);
    check('opener gets no message under COOP', messages.length === 0, JSON.stringify(messages));
    const afterFlow = await page.evaluate(() => window.__standin.flow());
    note(`popup.closed timeline (ms since stand-in load): ${JSON.stringify(afterFlow.closedLog)}`);
    note(`popup closed itself (outcome page's window.close()): ${selfClosed}; popup page still open in Playwright: ${!popup.isClosed()}${popup.isClosed() ? '' : ` at ${popup.url().split('?')[0]}`}`);
    note(`probes (page, opener): ${probes.join(' | ')}`);
    note(`'page' events in the context: ${pages.length}`);
    const outcome = await page.evaluate((s) => window.__standin.outcome(s), flow.state);
    check('/auth/outcome under COOP returns the granted outcome', outcome.status === 200 && outcome.body.status === 'granted' && outcome.body.state === flow.state, `${outcome.status} ${JSON.stringify(outcome.body).slice(0, 160)}`);
    check('outcome carries no code or token', !leaked(JSON.stringify(outcome.body)));
    if (!popup.isClosed()) await popup.close();
    await context.close();
  }
} catch (error) {
  failures.push(`crashed: ${error.message}`);
  console.error(error);
} finally {
  await browser?.close();
  await stack.stop();
}

console.log(failures.length ? `\n${failures.length} FAILED: ${failures.join('; ')}` : `\nall ok (${Math.round((performance.now() - started) / 1000)} s)`);
process.exit(failures.length ? 1 : 0);
