// Real Chromium for the browser tests, driven by playwright-core (no browser download: the
// system's Chromium, Debian's `chromium` package, at /usr/bin/chromium).
//
//   const browser = await launchBrowser();
//   const context = await browser.newContext();
//   const page = await context.newPage();
//   await page.goto(stack.publicOrigin + '/');      // http://localhost:8788, not 127.0.0.1
//   const popupEvent = context.waitForEvent('page');
//   await page.click('#login');                       // a real user gesture
//   const popup = await popupEvent;
//   await bankLogin(popup, { user: 'alice', decision: 'allow' });
//   ...
//   await browser.close();
//
// The popup blocker is ON, as in a browser people use: Playwright passes
// --disable-popup-blocking by default, and launchBrowser takes it out again.
//
// Beware: Playwright runs `page.evaluate(fn)` with CDP's `userGesture: true`, so code run that
// way has transient user activation and may open popups. To run code without a gesture (to see
// the popup blocker at work), use `evaluateWithoutGesture` below or let the page's own code
// (a timer, an event from the network) do it.

import { chromium } from 'playwright-core';

/** The system Chromium (Debian's wrapper script; CONSENTRY_CHROMIUM overrides it). */
export const CHROMIUM = process.env.CONSENTRY_CHROMIUM || '/usr/bin/chromium';

/** Switches on top of Playwright's own (which already include most of them). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox', // the tests run as root in a container, where Chromium's sandbox cannot start
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * Launches Chromium with the popup blocker on. Options: `executablePath` (CHROMIUM), `args`
 * (added to CHROMIUM_ARGS), `timeout` (launch timeout, 30 s), and any other option of
 * Playwright's `chromium.launch` (e.g. `slowMo`).
 */
export async function launchBrowser({ executablePath = CHROMIUM, args = [], timeout = 30_000, ...options } = {}) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    ignoreDefaultArgs: ['--disable-popup-blocking'],
    timeout,
    ...options,
  });
}

/**
 * Evaluates `expression` (a string of JavaScript) in the page's main world WITHOUT user
 * activation (CDP Runtime.evaluate, `userGesture: false`), unlike `page.evaluate`. Resolves to
 * the result by value. Note that the page keeps any activation it already has (Chromium's
 * transient activation lasts 5 s after a click or a `page.evaluate`), so use it on a page no
 * gesture has touched recently.
 */
export async function evaluateWithoutGesture(page, expression) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { result, exceptionDetails } = await cdp.send('Runtime.evaluate', {
      expression,
      returnByValue: true,
      awaitPromise: true,
      userGesture: false,
    });
    if (exceptionDetails) throw new Error(`evaluation failed: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
    return result.value;
  } finally {
    await cdp.detach().catch(() => {});
  }
}

/**
 * Plays the account holder in the consent popup `popupPage`: signs in at the bank (bank/bank.mjs:
 * a login form with `login` and `password`; skipped when the bank session is still alive),
 * answers the consent page (`decision`: 'allow' or 'deny'), then waits until the popup has
 * reached the Worker's callback (`callbackPrefix`, default: any URL whose path is under
 * `/auth/callback/`, one per provider) or has closed (the outcome page closes itself 100 ms after posting).
 *
 * Resolves to `{ url, closed }`: the callback URL the popup reached (null if it closed before
 * it could be seen) and whether it is closed by then.
 */
export async function bankLogin(popupPage, { user, password = user, decision = 'allow', callbackPrefix, timeout = 30_000 } = {}) {
  if (!user) throw new Error('bankLogin: user is required');
  if (decision !== 'allow' && decision !== 'deny') throw new Error(`bankLogin: decision must be 'allow' or 'deny', not ${decision}`);
  const deadline = Date.now() + timeout;
  const left = () => Math.max(1, deadline - Date.now());
  const atCallback = (url) => (callbackPrefix ? String(url).startsWith(callbackPrefix) : new URL(url).pathname.startsWith('/auth/callback/'));

  let closed = popupPage.isClosed();
  const closedEvent = new Promise((resolve) => { popupPage.once('close', () => { closed = true; resolve('closed'); }); });

  const login = popupPage.locator('form input[name="login"]');
  const decide = popupPage.locator(`form button[name="decision"][value="${decision}"]`);
  let loggedIn = false;
  // Each step: wait for the login page, the consent page or the callback, whichever comes.
  for (;;) {
    if (closed) return { url: null, closed: true };
    const url = popupPage.url();
    if (url.startsWith('http') && atCallback(url)) break;
    const next = await Promise.race([
      login.waitFor({ state: 'visible', timeout: left() }).then(() => 'login'),
      decide.waitFor({ state: 'visible', timeout: left() }).then(() => 'consent'),
      popupPage.waitForURL(atCallback, { timeout: left(), waitUntil: 'commit' }).then(() => 'callback'),
      closedEvent,
    ].map((step) => step.catch((error) => (closed ? 'closed' : Promise.reject(error)))))
      .catch((error) => {
        throw new Error(`bankLogin: the popup reached neither the bank's pages nor the callback within ${timeout} ms (at ${closed ? '(closed)' : popupPage.url()}): ${error.message}`);
      });
    if (next === 'closed') return { url: null, closed: true };
    if (next === 'callback') break;
    if (next === 'login') {
      if (loggedIn) throw new Error(`bankLogin: the bank showed its login page again: it refused ${user}'s password`);
      await login.fill(user, { timeout: left() });
      await popupPage.locator('form input[name="password"]').fill(password, { timeout: left() });
      // The bank answers the POST with a redirect to its consent page (or the login again).
      await Promise.all([
        popupPage.waitForNavigation({ waitUntil: 'domcontentloaded', timeout: left() }),
        popupPage.locator('form button[type="submit"]').click({ timeout: left() }),
      ]);
      loggedIn = true;
      continue;
    }
    // The consent page: the answer ends at the Worker's callback, whose page closes the popup.
    await Promise.all([
      popupPage.waitForURL(atCallback, { timeout: left(), waitUntil: 'commit' }).catch((error) => {
        if (!closed) throw error;
      }),
      decide.click({ timeout: left() }).catch((error) => {
        if (!closed) throw error;
      }),
    ]);
    break;
  }
  // Origin and path only: the callback's query carries the authorization code.
  return { url: closed ? null : urlWithoutQuery(popupPage.url()), closed };
}

function urlWithoutQuery(url) {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}
