// A browserless consent flow against a started stack (tests/lib/worker-harness.mjs): the
// popup's form POST to /auth/start, the account holder at the bank, the bank's redirect to
// the callback. For tests that need consents to use rather than flows to inspect (the flow
// itself is tested in tests/edge/worker.test.mjs).

import { consentAtBank } from './bank-user.mjs';
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
 * Runs a flow for `user` at `provider` in `jar` (a new browser unless given; `hint` is the
 * start form's provider_hint) and resolves to `{ jar, outcome, url, location }` (`location`:
 * where /auth/start sent the popup); throws unless the outcome is a grant.
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
  const url = await consentAtBank(started.headers.get('location'), { user: account, redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  const page = await stack.workerFetch(url, { jar, crossSite: true });
  const main = /data-outcome="([^"]*)"/.exec(page.body);
  const outcome = main && JSON.parse(unescapeHtml(main[1]));
  if (page.status !== 200 || outcome?.status !== 'granted') throw new Error(`callback: HTTP ${page.status} ${outcome?.error ?? ''}`);
  return { jar, outcome, url, location: started.headers.get('location') };
}
