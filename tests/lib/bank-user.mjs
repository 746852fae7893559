// An account holder at the local bank, over plain HTTP: follows the authorization request
// through the bank's login and consent pages, and stops at the redirect back to the client.

import { CookieJar } from './worker-harness.mjs';

/**
 * Walks `authorizationUrl` as `user` (password = username unless given), allowing or denying
 * consent. Resolves to the URL the bank redirects to (the client's callback, not fetched).
 */
export async function consentAtBank(authorizationUrl, { user, password = user, decision = 'allow', redirectPrefix }) {
  const jar = new CookieJar();
  let url = authorizationUrl;
  let form = null;
  for (let hop = 0; hop < 20; hop += 1) {
    const response = await fetch(url, {
      method: form ? 'POST' : 'GET',
      redirect: 'manual',
      headers: { cookie: jar.header(), ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      body: form ? new URLSearchParams(form).toString() : undefined,
    });
    jar.store(response);
    form = null;
    if (response.status >= 300 && response.status < 400) {
      const next = new URL(response.headers.get('location'), url).toString();
      if (redirectPrefix && next.startsWith(redirectPrefix)) return next;
      url = next;
      continue;
    }
    const html = await response.text();
    if (html.includes('name="prompt" value="login"')) {
      form = { prompt: 'login', login: user, password };
    } else if (html.includes('name="prompt" value="consent"')) {
      form = { prompt: 'consent', decision };
    } else {
      throw new Error(`unexpected page at the bank (HTTP ${response.status})`);
    }
  }
  throw new Error('too many redirects at the bank');
}
