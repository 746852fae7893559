// A browserless consent flow against a started stack (tests/lib/worker-harness.mjs): the
// popup's form POST to /auth/start, the account holder at the bank, the bank's redirect to
// the callback. For tests that need consents to use rather than flows to inspect (the flow
// itself is tested in tests/edge/worker.test.mjs).

import { answerAtProvider } from './bank-user.mjs';
import { CookieJar, randomToken } from './worker-harness.mjs';

/** Text from an HTML attribute, as the outcome page escapes it. */
export function unescapeHtml(text) {
  return text
    .replace(/&#x([0-9a-f]+);/gi, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
    .replace(/&#(\d+);/g, (_, dec) => String.fromCodePoint(Number(dec)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** The bank account each demo user signs in with. */
export const BANK_ACCOUNT = { usr_alice: 'alice', usr_bob: 'bob', usr_carol: 'carol' };

/**
 * Sends the browser back to the Worker as the provider asked (`back`, from
 * answerAtProvider): the redirect's GET, or the form_post page's cross-site POST. Resolves to
 * the Worker's answer.
 */
export function returnToWorker(stack, back, { jar, crossSite = true } = {}) {
  return back.method === 'POST'
    ? stack.workerFetch(back.url, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: back.body, jar, crossSite })
    : stack.workerFetch(back.url, { jar, crossSite });
}

/** The outcome an outcome page posts, or null. */
export function outcomeOf(page) {
  const main = /data-outcome="([^"]*)"/.exec(page.body);
  return main && JSON.parse(unescapeHtml(main[1]));
}

/**
 * Runs a flow for `user` at `provider` in `jar` (a new browser unless given; `hint` is the
 * start form's provider_hint) and resolves to `{ jar, outcome, url, location }` (`location`:
 * where /auth/start sent the popup; `url`: where the provider sent it back, a redirect or a
 * form_post); throws unless the outcome is a grant.
 */
export async function grantConsent(stack, { user, provider = 'local-bank', jar = new CookieJar(), account = BANK_ACCOUNT[user], hint }) {
  const fields = { provider, state: randomToken(), code_verifier: randomToken(), user };
  if (hint) fields.provider_hint = hint;
  const started = await stack.workerFetch('/auth/start', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.publicOrigin },
    body: new URLSearchParams(fields).toString(),
    jar,
  });
  if (started.status !== 303) throw new Error(`start: HTTP ${started.status}`);
  const back = await answerAtProvider(started.headers.get('location'), { user: account, redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  const page = await returnToWorker(stack, back, { jar });
  const outcome = outcomeOf(page);
  if (page.status !== 200 || outcome?.status !== 'granted') throw new Error(`callback: HTTP ${page.status} ${outcome?.error ?? ''} ${outcome?.error_description ?? ''}`);
  return { jar, outcome, url: back.url, location: started.headers.get('location') };
}
