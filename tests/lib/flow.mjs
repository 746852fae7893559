// A browserless consent flow against a started stack (tests/lib/worker-harness.mjs): the
// popup's form POST to /auth/start, the account holder at the provider, the provider's way
// back to the callback (a redirect, or a form_post). For tests that need consents to use
// rather than flows to inspect (the flow itself is tested in tests/edge/worker.test.mjs).

import { answerAtProvider } from './bank-user.mjs';
import { outcomePage } from './edge.mjs';
import { CookieJar, randomToken } from './worker-harness.mjs';

/** The bank account each demo user signs in with. */
export const BANK_ACCOUNT = { usr_alice: 'alice', usr_bob: 'bob', usr_carol: 'carol' };

/**
 * The popup's `POST /auth/start` for `user` at `provider` in `jar` (`hint`: the start form's
 * provider_hint). Resolves to `{ res, location, jar, state }` (`location`: where the Worker
 * sent the popup, when it did).
 */
export async function startFlow(stack, { user = 'usr_alice', provider = 'local-bank', hint, state = randomToken(), jar = new CookieJar() }) {
  const fields = { provider, state, code_verifier: randomToken(), user };
  if (hint) fields.provider_hint = hint;
  const res = await stack.workerFetch('/auth/start', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.publicOrigin },
    body: new URLSearchParams(fields).toString(),
    jar,
  });
  return { res, location: res.headers.get('location'), jar, state };
}

/**
 * Sends the browser back to the Worker as the provider asked (`back`, from
 * answerAtProvider): the redirect's GET, or the form_post page's cross-site POST. Resolves to
 * the Worker's answer.
 */
export function returnToWorker(stack, back, { jar }) {
  return back.method === 'POST'
    ? stack.workerFetch(back.url, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: back.body, jar, crossSite: true })
    : stack.workerFetch(back.url, { jar, crossSite: true });
}

/**
 * Runs a flow for `user` at `provider` (`hint`: the start form's provider_hint) in a new
 * browser and resolves to `{ jar, outcome, url, location }` (`location`: where /auth/start
 * sent the popup; `url`: where the provider sent it back, a redirect or a form_post);
 * throws unless the outcome is a grant.
 */
export async function grantConsent(stack, { user, provider = 'local-bank', hint }) {
  const started = await startFlow(stack, { user, provider, hint });
  if (started.res.status !== 303) throw new Error(`start: HTTP ${started.res.status}`);
  const back = await answerAtProvider(started.location, { user: BANK_ACCOUNT[user], redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  const page = await returnToWorker(stack, back, { jar: started.jar });
  const { outcome } = outcomePage(page);
  if (page.status !== 200 || outcome?.status !== 'granted') throw new Error(`callback: HTTP ${page.status} ${outcome?.error ?? ''} ${outcome?.error_description ?? ''}`);
  return { jar: started.jar, outcome, url: back.url, location: started.location };
}
