// The local TrueLayer (bank/truelayer.mjs) behaves as PROVIDERS.md says TrueLayer's Data API
// does. This test plays the client itself, in Node, with fetch (no Worker): the auth link at
// the root, the bank picker, login and consent, the redirect (query and form_post), the code
// exchange with client_secret_post and PKCE, the Data API, refreshes, and what the emulation
// must refuse. Lifetimes (5 min codes, 10 min interactions, 30 and 90 days) are tested by
// moving Date.now ahead: the server runs in this process.
//
//   NODE_NO_WARNINGS=1 node --test tests/bank/truelayer.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { decodeJwt, decodeProtectedHeader } from 'jose';

import { PROVIDERS, startTrueLayer } from '../../bank/truelayer.mjs';
import { consentAtBank } from '../lib/bank-user.mjs';
import { postForm as postFormTo } from '../lib/http.mjs';

const PORT = 9160;
const BASE = `http://localhost:${PORT}`;
const CLIENT_ID = 'consentry-truelayer';
const SECRET = 'test-truelayer-secret-0123456789abcdef';
const REDIRECT_URI = 'http://localhost:8787/auth/callback/truelayer';
const OTHER_REDIRECT_URI = 'http://localhost:8787/auth/callback/truelayer-other';
const ALL_SCOPES = 'info accounts balance transactions offline_access';
const DAY = 86_400_000;

let truelayer;
before(async () => {
  truelayer = await startTrueLayer({ port: PORT, redirectUris: [REDIRECT_URI, OTHER_REDIRECT_URI], clientSecret: SECRET, testControls: true });
});
after(async () => { await truelayer?.close(); });

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');

/** Runs `fn` with Date.now `ms` ahead (the emulation reads its clock from Date.now). */
async function withClockAhead(ms, fn) {
  const real = Date.now;
  Date.now = () => real() + ms;
  try {
    return await fn();
  } finally {
    Date.now = real;
  }
}

/** An auth link; `params` override the defaults (undefined drops one). PKCE on by default. */
function authLink(params = {}) {
  const verifier = b64url(randomBytes(32));
  const all = {
    response_type: 'code',
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    scope: ALL_SCOPES,
    state: b64url(randomBytes(16)),
    nonce: b64url(randomBytes(16)),
    providers: 'uk-ob-all uk-oauth-all uk-cs-mock',
    provider_id: 'ob-monzo',
    code_challenge: sha256(verifier),
    code_challenge_method: 'S256',
    ...params,
  };
  const url = new URL(`${BASE}/`);
  for (const [name, value] of Object.entries(all)) if (value !== undefined) url.searchParams.set(name, value);
  return { url: url.toString(), verifier, state: all.state, params: all };
}

/**
 * Plays the account holder from `link` to the redirect: picks `pick` at the bank picker, signs
 * in (a wrong `password` is retried once with the right one), answers the consent page. Resolves to `{ callback }` (the redirect URL) or, when a page
 * is not one of the flow's, `{ status, headers, html }`; both with `seen`, the pages met, and
 * `at`, the last URL fetched.
 */
async function walk(link, { user = 'alice', password = user, decision = 'allow', pick } = {}) {
  const cookies = new Map();
  const seen = [];
  let url = link;
  let form = null;
  for (let hop = 0; hop < 12; hop += 1) {
    const response = await fetch(url, {
      method: form ? 'POST' : 'GET',
      redirect: 'manual',
      headers: {
        cookie: [...cookies].map(([name, value]) => `${name}=${value}`).join('; '),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      body: form ? new URLSearchParams(form).toString() : undefined,
    });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      cookies.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1));
    }
    const at = url;
    form = null;
    if (response.status >= 300 && response.status < 400) {
      const next = new URL(response.headers.get('location'), url);
      if (!next.href.startsWith(BASE)) return { callback: next, seen, at, headers: response.headers };
      url = next.href;
      continue;
    }
    const html = await response.text();
    const page = { status: response.status, headers: response.headers, html, seen, at, cookies };
    if (response.status !== 200) return page;
    if (html.includes('name="prompt" value="select_provider"')) {
      seen.push('select_provider');
      form = { prompt: 'select_provider', provider_id: pick };
    } else if (html.includes('name="prompt" value="login"')) {
      seen.push(html.includes('class="error"') ? 'login_again' : 'login');
      if (seen.filter((step) => step.startsWith('login')).length > 2) return page;
      form = { prompt: 'login', login: user, password: seen.at(-1) === 'login_again' ? user : password };
    } else if (html.includes('name="prompt" value="consent"')) {
      seen.push('consent');
      form = { prompt: 'consent', decision };
    } else {
      return page;
    }
  }
  throw new Error('too many hops');
}

const postForm = (path, form, headers) => postFormTo(`${BASE}${path}`, form, headers);

const clientAuth = { client_id: CLIENT_ID, client_secret: SECRET };

function exchange(code, { verifier, redirectUri = REDIRECT_URI, auth = clientAuth, headers } = {}) {
  return postForm('/connect/token', {
    grant_type: 'authorization_code', code, redirect_uri: redirectUri, ...(verifier ? { code_verifier: verifier } : {}), ...auth,
  }, headers);
}

const refresh = (refreshToken) => postForm('/connect/token', { grant_type: 'refresh_token', refresh_token: refreshToken, ...clientAuth });

async function dataGet(path, accessToken) {
  const response = await fetch(`${BASE}${path}`, { headers: accessToken ? { Authorization: `Bearer ${accessToken}` } : {} });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: text ? JSON.parse(text) : null };
}

/** A flow (walk) from an auth link of `params`, asserted to end at the redirect with a code. */
async function authorize(params = {}, options = {}) {
  const link = authLink(params);
  const walked = await walk(link.url, options);
  assert.ok(walked.callback, `the flow ends at the redirect (got HTTP ${walked.status})`);
  assert.ok(walked.callback.searchParams.get('code'), `a code (${walked.callback})`);
  return { ...link, ...walked, code: walked.callback.searchParams.get('code') };
}

/** A connection: authorize + exchange, asserted to succeed. */
async function connect(params = {}, options = {}) {
  const flow = await authorize(params, options);
  const tokens = await exchange(flow.code, { verifier: flow.verifier });
  assert.equal(tokens.status, 200, tokens.text);
  return { ...flow, tokens: tokens.json };
}

function assertRedirectError(walked, state, error, descriptionPattern) {
  assert.ok(walked.callback, `a redirect to the client (got HTTP ${walked.status})`);
  assert.ok(walked.callback.href.startsWith(`${REDIRECT_URI}?`), walked.callback.href);
  assert.equal(walked.callback.searchParams.get('error'), error);
  assert.equal(walked.callback.searchParams.get('state'), state);
  assert.equal(walked.callback.searchParams.get('code'), null);
  assert.equal(walked.callback.searchParams.get('iss'), null);
  if (descriptionPattern) assert.match(walked.callback.searchParams.get('error_description') ?? '', descriptionPattern);
}

function assertDataError(answer, status, error) {
  assert.equal(answer.status, status, JSON.stringify(answer.json));
  assert.equal(answer.json.error, error);
  assert.equal(answer.json.results, undefined);
  assert.equal(answer.headers.get('content-type'), 'application/json');
  assert.equal(answer.headers.get('cache-control'), 'no-store');
}

test('no discovery: /.well-known/openid-configuration is 404', async () => {
  const answer = await fetch(`${BASE}/.well-known/openid-configuration`);
  assert.equal(answer.status, 404);
});

let first; // the first connection: alice at Monzo, every scope

test('query mode with provider_id (walked by consentAtBank): code, state, scope, no iss; client_secret_post + PKCE give a JWT, no id_token', async () => {
  const link = authLink();
  const callback = new URL(await consentAtBank(link.url, { user: 'alice', redirectPrefix: 'http://localhost:8787/auth/callback/' }));
  assert.ok(callback.href.startsWith(`${REDIRECT_URI}?`), callback.href);
  assert.deepEqual([...callback.searchParams.keys()], ['code', 'state', 'scope']);
  assert.equal(callback.searchParams.get('state'), link.state);
  assert.equal(callback.searchParams.get('scope'), ALL_SCOPES);
  const code = callback.searchParams.get('code');
  assert.equal(truelayer.issued.codes.at(-1), code);

  // The pages: straight to the login (provider_id given), then the consent, all at one path.
  const pages = truelayer.requests.slice(truelayer.requests.findLastIndex((r) => r.path === '/' && r.query.state === link.state));
  assert.equal(pages[0].method, 'GET');
  assert.equal(pages[0].query.provider_id, 'ob-monzo');
  const posted = pages.filter((r) => r.method === 'POST').map((r) => r.form.prompt);
  assert.deepEqual(posted, ['login', 'consent']);
  const interactionPaths = new Set(pages.slice(1).map((r) => r.path));
  assert.equal(interactionPaths.size, 1);
  assert.match([...interactionPaths][0], /^\/interaction\/[\w-]{22}$/);

  const answer = await exchange(code, { verifier: link.verifier });
  assert.equal(answer.status, 200, answer.text);
  assert.equal(answer.headers.get('cache-control'), 'no-store');
  assert.match(answer.headers.get('content-type'), /^application\/json/);
  const body = answer.json;
  assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'refresh_token', 'scope', 'token_type']);
  assert.equal(body.token_type, 'Bearer');
  assert.equal(body.expires_in, 3600);
  assert.equal(body.scope, ALL_SCOPES);
  assert.equal(body.id_token, undefined);
  const tokenRequest = truelayer.requests.at(-1);
  assert.equal(tokenRequest.path, '/connect/token');
  assert.equal(tokenRequest.authorization, null);
  assert.equal(tokenRequest.form.client_secret, SECRET);

  // The access token read from the response alone: a JWT with the connection in it.
  assert.equal(decodeProtectedHeader(body.access_token).alg, 'RS256');
  const claims = decodeJwt(body.access_token);
  assert.equal(claims.iss, BASE);
  assert.equal(claims.client_id, CLIENT_ID);
  assert.equal(claims.scope, ALL_SCOPES);
  assert.equal(claims.connector_id, 'ob-monzo');
  assert.equal(claims.exp - claims.iat, 3600);
  assert.ok(Math.abs(claims.iat - Date.now() / 1000) < 10);
  assert.equal(typeof claims.jti, 'string');
  const connection = truelayer.issued.connections.at(-1);
  assert.equal(claims.sub, connection.credentialsId);
  assert.deepEqual(connection, {
    credentialsId: claims.sub, providerId: 'ob-monzo', holder: 'alice', scopes: ALL_SCOPES.split(' '), createdAt: connection.createdAt,
  });
  assert.equal(truelayer.issued.accessTokens.at(-1), body.access_token);
  assert.equal(truelayer.issued.refreshTokens.at(-1), body.refresh_token);
  first = { tokens: body, credentialsId: claims.sub };
});

test('the Data API: /me names the connection, info, accounts, balance and transactions in the results envelope', async () => {
  const at = first.tokens.access_token;
  const me = await dataGet('/data/v1/me', at);
  assert.equal(me.status, 200);
  assert.equal(me.headers.get('content-type'), 'application/json');
  assert.equal(me.headers.get('cache-control'), 'no-store');
  assert.equal(me.json.status, 'Succeeded');
  const [connection] = me.json.results;
  assert.equal(connection.credentials_id, first.credentialsId);
  assert.equal(connection.client_id, CLIENT_ID);
  assert.equal(connection.consent_status, 'Authorised');
  assert.deepEqual(connection.scopes, ALL_SCOPES.split(' '));
  assert.equal(connection.provider.provider_id, 'ob-monzo');
  assert.equal(connection.provider.display_name, PROVIDERS['ob-monzo'].name);
  assert.equal((await fetch(connection.provider.logo_uri)).status, 200);
  const days = (Date.parse(connection.consent_expires_at) - Date.parse(connection.consent_created_at)) / DAY;
  assert.equal(days, 90);

  const info = await dataGet('/data/v1/info', at);
  assert.equal(info.status, 200);
  assert.equal(info.json.results[0].full_name, 'Alice Martin');
  assert.deepEqual(info.json.results[0].emails, ['alice@bank.example']);

  const accounts = await dataGet('/data/v1/accounts', at);
  assert.equal(accounts.status, 200);
  assert.equal(accounts.json.status, 'Succeeded');
  assert.deepEqual(accounts.json.results.map((a) => [a.account_id, a.account_type]), [['acc-alice-current', 'TRANSACTION'], ['acc-alice-savings', 'SAVINGS']]);
  const [current] = accounts.json.results;
  assert.equal(current.currency, 'GBP');
  assert.match(current.account_number.number, /^\d{8}$/);
  assert.match(current.account_number.sort_code, /^\d{2}-\d{2}-\d{2}$/);
  assert.match(current.account_number.iban, /^GB\d{2}MONZ\d{14}$/);
  assert.deepEqual(current.provider, { provider_id: 'ob-monzo', display_name: 'Monzo' });
  const one = await dataGet('/data/v1/accounts/acc-alice-savings', at);
  assert.equal(one.json.results[0].display_name, 'Rainy Day Saver');

  const balance = await dataGet('/data/v1/accounts/acc-alice-current/balance', at);
  assert.equal(balance.status, 200);
  assert.equal(balance.json.status, 'Succeeded');
  assert.deepEqual(Object.keys(balance.json.results[0]).sort(), ['available', 'currency', 'current', 'update_timestamp']);
  assert.equal(typeof balance.json.results[0].current, 'number');

  const all = await dataGet('/data/v1/accounts/acc-alice-current/transactions', at);
  assert.equal(all.status, 200);
  const transactions = all.json.results;
  assert.equal(transactions.length, 36);
  for (const txn of transactions) {
    assert.equal(txn.currency, 'GBP');
    assert.equal(txn.transaction_type, txn.amount < 0 ? 'DEBIT' : 'CREDIT');
    assert.ok(txn.transaction_id && txn.description && txn.transaction_category && !Number.isNaN(Date.parse(txn.timestamp)), JSON.stringify(txn));
  }
  assert.ok(transactions.some((txn) => txn.amount < 0) && transactions.some((txn) => txn.amount > 0));
  assert.ok(transactions.some((txn) => txn.description === 'Salary' && txn.transaction_category === 'CREDIT' && !('merchant_name' in txn)));

  // from/to filter (inclusive), on dates or date-times.
  const dates = transactions.map((txn) => txn.timestamp.slice(0, 10)).sort();
  const [from, to] = [dates[5], dates[20]];
  const ranged = await dataGet(`/data/v1/accounts/acc-alice-current/transactions?from=${from}&to=${to}T00:00:00Z`, at);
  assert.equal(ranged.status, 200);
  const expected = transactions.filter((txn) => txn.timestamp.slice(0, 10) >= from && txn.timestamp.slice(0, 10) <= to);
  assert.ok(expected.length > 0 && expected.length < transactions.length);
  assert.deepEqual(ranged.json.results, expected);
  assertDataError(await dataGet('/data/v1/accounts/acc-alice-current/transactions?from=yesterday', at), 400, 'invalid_date_range');
  assertDataError(await dataGet(`/data/v1/accounts/acc-alice-current/transactions?from=${to}&to=${from}`, at), 400, 'invalid_date_range');

  // Someone else's account, an unknown one.
  assertDataError(await dataGet('/data/v1/accounts/acc-bob-current/balance', at), 404, 'account_not_found');
  assertDataError(await dataGet('/data/v1/accounts/acc-nobody/transactions', at), 404, 'account_not_found');
});

test('the Data API refuses a missing, tampered or foreign token with 401 unauthorized', async () => {
  const at = first.tokens.access_token;
  const expect401 = (answer) => {
    assertDataError(answer, 401, 'unauthorized');
    assert.equal(answer.headers.get('www-authenticate'), 'Bearer error="invalid_token"');
    assert.ok(answer.json.error_description);
  };
  expect401(await dataGet('/data/v1/me'));
  const [header, payload, signature] = at.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const forged = `${header}.${b64url(JSON.stringify({ ...claims, scope: `${claims.scope} cards` }))}.${signature}`;
  expect401(await dataGet('/data/v1/me', forged));
  expect401(await dataGet('/data/v1/me', `${at.slice(0, -4)}AAAA`));
  const unsigned = `${b64url(JSON.stringify({ alg: 'none' }))}.${payload}.`;
  expect401(await dataGet('/data/v1/me', unsigned));
  assert.equal((await dataGet('/data/v1/me', at)).status, 200, 'the genuine token still works');
});

test('without offline_access no refresh token; a scope not granted is 403 insufficient_scope', async () => {
  const { tokens } = await connect({ scope: 'accounts' }, { user: 'bob' });
  assert.equal(tokens.refresh_token, undefined);
  assert.equal(tokens.scope, 'accounts');
  assert.equal(decodeJwt(tokens.access_token).scope, 'accounts');
  const accounts = await dataGet('/data/v1/accounts', tokens.access_token);
  assert.deepEqual(accounts.json.results.map((a) => a.account_id), ['acc-bob-current']);
  assertDataError(await dataGet('/data/v1/accounts/acc-bob-current/balance', tokens.access_token), 403, 'insufficient_scope');
  assertDataError(await dataGet('/data/v1/accounts/acc-bob-current/transactions', tokens.access_token), 403, 'insufficient_scope');
  assertDataError(await dataGet('/data/v1/info', tokens.access_token), 403, 'insufficient_scope');
  assert.equal((await dataGet('/data/v1/me', tokens.access_token)).status, 200);
});

test('a refresh gives new tokens; the old access token then gets 401 and the old refresh token is refused', async () => {
  const { tokens } = await connect({}, { user: 'carol' });
  const refreshed = await refresh(tokens.refresh_token);
  assert.equal(refreshed.status, 200, refreshed.text);
  assert.equal(refreshed.headers.get('cache-control'), 'no-store');
  const body = refreshed.json;
  assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'refresh_token', 'scope', 'token_type']);
  assert.notEqual(body.access_token, tokens.access_token);
  assert.notEqual(body.refresh_token, tokens.refresh_token);
  assert.equal(decodeJwt(body.access_token).sub, decodeJwt(tokens.access_token).sub, 'the same connection');
  assert.equal((await dataGet('/data/v1/accounts', body.access_token)).status, 200);
  assertDataError(await dataGet('/data/v1/accounts', tokens.access_token), 401, 'unauthorized');

  const old = await refresh(tokens.refresh_token);
  assert.equal(old.status, 400);
  assert.equal(old.json.error, 'invalid_grant');

  // And again: only the latest access token of the connection works.
  const again = await refresh(body.refresh_token);
  assert.equal(again.status, 200, again.text);
  assertDataError(await dataGet('/data/v1/me', body.access_token), 401, 'unauthorized');
  assert.equal((await dataGet('/data/v1/me', again.json.access_token)).status, 200);
});

test('response_mode=form_post: an auto-posting form with code, state and scope, under a CSP allowing its script', async () => {
  const link = authLink({ response_mode: 'form_post' });
  const walked = await walk(link.url);
  assert.equal(walked.status, 200);
  assert.deepEqual(walked.seen, ['login', 'consent']);
  const { html } = walked;
  assert.ok(html.includes(`<form method="post" action="${REDIRECT_URI}">`), html);
  const fields = Object.fromEntries([...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map(([, name, value]) => [name, value]));
  assert.deepEqual(Object.keys(fields), ['code', 'state', 'scope']);
  assert.equal(fields.state, link.state);
  assert.equal(fields.scope, ALL_SCOPES);
  assert.equal(fields.code, truelayer.issued.codes.at(-1));
  assert.match(html, /<button[^>]*type="submit"/);
  const script = /<script nonce="([^"]+)">([^<]*)<\/script>/.exec(html);
  assert.ok(script, 'an inline script');
  assert.match(script[2], /submit\(\)/);
  const csp = walked.headers.get('content-security-policy');
  assert.ok(csp.includes(`script-src 'nonce-${script[1]}'`), csp);
  assert.ok(csp.includes('form-action http://localhost:8787'), csp);
  assert.equal(walked.headers.get('cache-control'), 'no-store');
  const tokens = await exchange(fields.code, { verifier: link.verifier });
  assert.equal(tokens.status, 200, tokens.text);

  // A denial in form_post mode is a form too.
  const denied = await walk(authLink({ response_mode: 'form_post', state: 'deny-me' }).url, { decision: 'deny' });
  const deniedFields = Object.fromEntries([...denied.html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map(([, name, value]) => [name, value]));
  assert.deepEqual(deniedFields, { error: 'access_denied', state: 'deny-me' });
});

test('without provider_id the bank picker comes first, offering the banks the providers cover', async () => {
  const link = authLink({ provider_id: undefined, providers: 'uk-ob-all uk-oauth-all' });
  const start = await fetch(link.url, { redirect: 'manual' });
  assert.equal(start.status, 303);
  const at = new URL(start.headers.get('location'), BASE).href;
  const cookie = start.headers.getSetCookie()[0].split(';')[0];
  const picker = await (await fetch(at, { headers: { cookie } })).text();
  assert.ok(picker.includes('name="prompt" value="select_provider"'));
  const offered = [...picker.matchAll(/<button[^>]* type="submit" name="provider_id" value="([^"]+)"/g)].map(([, id]) => id);
  assert.deepEqual(offered, ['ob-lloyds', 'ob-monzo', 'oauth-starling']);
  // A bank the providers do not cover is not taken: the picker again.
  const wrongPick = await fetch(at, {
    method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: 'prompt=select_provider&provider_id=mock',
  });
  assert.equal(wrongPick.status, 303);
  assert.ok((await (await fetch(at, { headers: { cookie } })).text()).includes('value="select_provider"'));

  const picked = await authorize({ provider_id: undefined, providers: 'uk-ob-all uk-oauth-all' }, { pick: 'oauth-starling', user: 'bob' });
  assert.deepEqual(picked.seen, ['select_provider', 'login', 'consent']);
  const tokens = await exchange(picked.code, { verifier: picked.verifier });
  assert.equal(decodeJwt(tokens.json.access_token).connector_id, 'oauth-starling');
  const me = await dataGet('/data/v1/me', tokens.json.access_token);
  assert.equal(me.json.results[0].provider.provider_id, 'oauth-starling');
  assert.equal(me.json.results[0].provider.display_name, 'Starling Bank');

  // A single provider id in providers works as well.
  const single = await authorize({ provider_id: undefined, providers: 'mock' }, { pick: 'mock' });
  assert.deepEqual(single.seen, ['select_provider', 'login', 'consent']);
});

test('an unknown client or an unregistered redirect_uri gets an error page, never a redirect', async () => {
  for (const params of [
    { client_id: 'someone-else' },
    { client_id: undefined },
    { redirect_uri: 'https://evil.example/callback' },
    { redirect_uri: `${REDIRECT_URI}/` },
    { redirect_uri: undefined },
  ]) {
    const answer = await fetch(authLink(params).url, { redirect: 'manual' });
    assert.equal(answer.status, 400, JSON.stringify(params));
    assert.equal(answer.headers.get('location'), null, JSON.stringify(params));
    assert.match(answer.headers.get('content-type'), /^text\/html/);
    assert.match(await answer.text(), /Something went wrong/);
  }
});

test('other bad auth links come back as invalid_request with the state (query or form_post)', async () => {
  const cases = [
    [{ provider_id: 'ob-lloyds', providers: 'uk-oauth-all' }, /provider_id/],
    [{ provider_id: 'ob-nowhere' }, /provider_id/],
    [{ nonce: undefined }, /nonce/],
    [{ providers: undefined }, /providers/],
    [{ providers: 'xx-unknown-all', provider_id: undefined }, /providers/],
    [{ scope: 'accounts payments' }, /scope/],
    [{ scope: '' }, /scope/],
    [{ scope: 'openid accounts' }, /scope/],
    [{ response_type: 'token' }, /response_type/],
    [{ code_challenge_method: 'plain' }, /S256/],
    [{ code_challenge_method: undefined }, /S256/],
    [{ response_mode: 'fragment' }, /response_mode/],
  ];
  for (const [params, description] of cases) {
    const link = authLink(params);
    const answer = await fetch(link.url, { redirect: 'manual' });
    assert.equal(answer.status, 302, JSON.stringify(params));
    assertRedirectError({ callback: new URL(answer.headers.get('location')) }, link.state, 'invalid_request', description);
  }
  const codes = truelayer.issued.codes.length;
  const formPost = await walk(authLink({ response_mode: 'form_post', nonce: undefined, state: 'kept as is' }).url);
  assert.equal(formPost.status, 200);
  assert.ok(formPost.html.includes(`action="${REDIRECT_URI}"`));
  assert.ok(formPost.html.includes('name="error" value="invalid_request"'));
  assert.ok(formPost.html.includes('name="state" value="kept as is"'));
  assert.equal(truelayer.issued.codes.length, codes);
});

test('the token endpoint takes client_secret_post only: Basic, a wrong or missing secret are 401 invalid_client', async () => {
  const flow = await authorize();
  const basic = `Basic ${Buffer.from(`${CLIENT_ID}:${SECRET}`).toString('base64')}`;
  const attempts = [
    await exchange(flow.code, { verifier: flow.verifier, auth: {}, headers: { Authorization: basic } }),
    await exchange(flow.code, { verifier: flow.verifier, headers: { Authorization: basic } }),
    await exchange(flow.code, { verifier: flow.verifier, auth: { client_id: CLIENT_ID, client_secret: `${SECRET}x` } }),
    await exchange(flow.code, { verifier: flow.verifier, auth: { client_id: CLIENT_ID } }),
    await exchange(flow.code, { verifier: flow.verifier, auth: { client_id: 'someone-else', client_secret: SECRET } }),
  ];
  for (const [i, answer] of attempts.entries()) {
    assert.equal(answer.status, 401, `attempt ${i}: ${answer.text}`);
    assert.equal(answer.json.error, 'invalid_client', `attempt ${i}`);
    assert.equal(answer.json.access_token, undefined);
  }
  // None of those spent the code.
  const good = await exchange(flow.code, { verifier: flow.verifier });
  assert.equal(good.status, 200, good.text);
});

test('a code is single use and lives 5 minutes: invalid_grant (invalid_authorization_code)', async () => {
  const flow = await authorize();
  assert.equal((await exchange(flow.code, { verifier: flow.verifier })).status, 200);
  const again = await exchange(flow.code, { verifier: flow.verifier });
  assert.equal(again.status, 400);
  assert.deepEqual(again.json, { error: 'invalid_grant', error_description: 'invalid_authorization_code' });
  const unknown = await exchange('made-up-code', { verifier: flow.verifier });
  assert.deepEqual(unknown.json, { error: 'invalid_grant', error_description: 'invalid_authorization_code' });

  const late = await authorize();
  const expired = await withClockAhead(301_000, () => exchange(late.code, { verifier: late.verifier }));
  assert.equal(expired.status, 400);
  assert.deepEqual(expired.json, { error: 'invalid_grant', error_description: 'invalid_authorization_code' });
  const inTime = await authorize();
  assert.equal((await withClockAhead(290_000, () => exchange(inTime.code, { verifier: inTime.verifier }))).status, 200);
});

test('PKCE: a wrong or missing verifier is invalid_grant, and so is a verifier when no challenge was sent', async () => {
  const wrong = await authorize();
  const wrongAnswer = await exchange(wrong.code, { verifier: b64url(randomBytes(32)) });
  assert.equal(wrongAnswer.status, 400);
  assert.equal(wrongAnswer.json.error, 'invalid_grant');
  assert.match(wrongAnswer.json.error_description, /code_verifier/);

  const missing = await authorize();
  const missingAnswer = await exchange(missing.code);
  assert.equal(missingAnswer.status, 400);
  assert.equal(missingAnswer.json.error, 'invalid_grant');

  const plain = await authorize({ code_challenge: undefined, code_challenge_method: undefined });
  const downgrade = await exchange(plain.code, { verifier: plain.verifier });
  assert.equal(downgrade.status, 400);
  assert.equal(downgrade.json.error, 'invalid_grant');
  const withoutPkce = await authorize({ code_challenge: undefined, code_challenge_method: undefined });
  assert.equal((await exchange(withoutPkce.code)).status, 200, 'PKCE is optional when the link had no challenge');
});

test('a redirect_uri at the token endpoint other than the auth link\'s is invalid_grant', async () => {
  const flow = await authorize();
  const answer = await exchange(flow.code, { verifier: flow.verifier, redirectUri: OTHER_REDIRECT_URI });
  assert.equal(answer.status, 400);
  assert.equal(answer.json.error, 'invalid_grant');
  assert.match(answer.json.error_description, /redirect_uri/);
  const other = await authorize({ redirect_uri: OTHER_REDIRECT_URI });
  assert.ok(other.callback.href.startsWith(`${OTHER_REDIRECT_URI}?`));
  assert.equal((await exchange(other.code, { verifier: other.verifier, redirectUri: OTHER_REDIRECT_URI })).status, 200);
});

test('unknown grant types are unsupported_grant_type', async () => {
  const answer = await postForm('/connect/token', { grant_type: 'client_credentials', ...clientAuth });
  assert.equal(answer.status, 400);
  assert.equal(answer.json.error, 'unsupported_grant_type');
});

test('a denied consent redirects with error=access_denied and the state, and issues no code', async () => {
  const codes = truelayer.issued.codes.length;
  const link = authLink();
  const walked = await walk(link.url, { decision: 'deny' });
  assertRedirectError(walked, link.state, 'access_denied');
  assert.deepEqual([...walked.callback.searchParams.keys()], ['error', 'state']);
  assert.equal(truelayer.issued.codes.length, codes);
});

test('a wrong password shows the login page again with an error; the interaction is bound to its browser and lives 10 minutes', async () => {
  const walked = await walk(authLink().url, { password: 'not-alices' });
  assert.ok(walked.callback?.searchParams.get('code'));
  assert.deepEqual(walked.seen, ['login', 'login_again', 'consent']);

  const link = authLink();
  const start = await fetch(link.url, { redirect: 'manual' });
  const at = new URL(start.headers.get('location'), BASE).href;
  const cookie = start.headers.getSetCookie()[0].split(';')[0];
  const stranger = await fetch(at);
  assert.equal(stranger.status, 400, 'no cookie, no interaction');
  assert.ok(!(await stranger.text()).includes('name="prompt"'));
  assert.equal((await fetch(at, { headers: { cookie } })).status, 200);
  const late = await withClockAhead(601_000, () => fetch(at, { headers: { cookie } }));
  assert.equal(late.status, 400, 'expired after 10 minutes');
});

test('revoke-connection: every data call of that connection is 403 access_denied, others still work', async () => {
  const revoked = await connect({}, { user: 'bob' });
  const kept = await connect({}, { user: 'bob' });
  const { sub } = decodeJwt(revoked.tokens.access_token);
  const control = await fetch(`${BASE}/__test/revoke-connection`, { method: 'POST', body: sub });
  assert.equal(control.status, 200);
  for (const path of ['/data/v1/me', '/data/v1/accounts', '/data/v1/accounts/acc-bob-current/balance', '/data/v1/accounts/acc-bob-current/transactions']) {
    const answer = await dataGet(path, revoked.tokens.access_token);
    assertDataError(answer, 403, 'access_denied');
    assert.ok(answer.json.error_description);
  }
  assert.equal((await dataGet('/data/v1/accounts', kept.tokens.access_token)).status, 200);
  const unknown = await fetch(`${BASE}/__test/revoke-connection`, { method: 'POST', body: 'no-such-connection' });
  assert.equal(unknown.status, 404);
});

test('expire-connection: the refresh is 400 invalid_grant (and the data calls 401)', async () => {
  const { tokens } = await connect();
  const { sub } = decodeJwt(tokens.access_token);
  assert.equal((await fetch(`${BASE}/__test/expire-connection`, { method: 'POST', body: sub })).status, 200);
  const answer = await refresh(tokens.refresh_token);
  assert.equal(answer.status, 400);
  assert.equal(answer.json.error, 'invalid_grant');
  assertDataError(await dataGet('/data/v1/me', tokens.access_token), 401, 'unauthorized');
});

test('a connection lasts 90 days, a refresh token must be used within 30 days', async () => {
  const idle = await connect();
  const tooLate = await withClockAhead(31 * DAY, () => refresh(idle.tokens.refresh_token));
  assert.equal(tooLate.status, 400);
  assert.equal(tooLate.json.error, 'invalid_grant');

  const { tokens } = await connect();
  let refreshToken = tokens.refresh_token;
  for (const day of [29, 58, 87]) {
    const answer = await withClockAhead(day * DAY, () => refresh(refreshToken));
    assert.equal(answer.status, 200, `day ${day}: ${answer.text}`);
    refreshToken = answer.json.refresh_token;
  }
  const nearTheEnd = await withClockAhead(89 * DAY + 23 * 3_600_000 + 1_800_000, () => refresh(refreshToken));
  assert.equal(nearTheEnd.status, 200);
  assert.ok(nearTheEnd.json.expires_in <= 1800, `the access token does not outlive the connection (${nearTheEnd.json.expires_in})`);
  const over = await withClockAhead(90 * DAY + 1000, () => refresh(nearTheEnd.json.refresh_token));
  assert.equal(over.status, 400);
  assert.equal(over.json.error, 'invalid_grant');
});

test('next-authorization-error ends the next flow, after login, with that error and the state', async () => {
  assert.equal((await fetch(`${BASE}/__test/next-authorization-error`, { method: 'POST', body: 'temporarily_unavailable' })).status, 200);
  const link = authLink();
  const failed = await walk(link.url);
  assert.deepEqual(failed.seen, ['login']);
  assertRedirectError(failed, link.state, 'temporarily_unavailable');
  const fine = await authorize();
  assert.ok(fine.code);
  assert.equal((await fetch(`${BASE}/__test/next-authorization-error`, { method: 'POST', body: 'two words' })).status, 400);
});

test('the test controls are off unless asked for', async () => {
  const plain = await startTrueLayer({ port: PORT + 2, redirectUris: [REDIRECT_URI], clientSecret: SECRET });
  try {
    for (const path of ['/__test/revoke-connection', '/__test/expire-connection', '/__test/next-authorization-error']) {
      const answer = await fetch(`http://localhost:${PORT + 2}${path}`, { method: 'POST', body: 'all' });
      assert.equal(answer.status, 404, path);
    }
  } finally {
    await plain.close();
  }
});
