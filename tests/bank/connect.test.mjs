// The local Connect (bank/connect.mjs) behaves as PROVIDERS.md says a Fewlines-style Connect
// does. This test plays the client itself, in Node, with fetch and jose (no Worker): the
// authorization request, the account holder's login and consent (tests/lib/bank-user.mjs and
// by hand), the code exchange with client_secret_post and with Basic, the JWT access token
// checked as a client must check it (HS256 with the client secret, or RS256 against the
// JWKS), the id_token, userinfo, refresh rotation with reuse detection, the 255-character
// state limit, and every fault the test controls inject.
//
//   NODE_NO_WARNINGS=1 node --test tests/bank/connect.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import {
  createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT,
} from 'jose';

import { startConnect, TOKEN_FAULTS } from '../../bank/connect.mjs';
import { consentAtBank } from '../lib/bank-user.mjs';
import { CookieJar } from '../lib/worker-harness.mjs';
import { postForm } from '../lib/http.mjs';

const CLIENT_ID = 'consentry-connect';
const SECRET = 'connect-test-secret-0123456789-abcdefghijkl';
const SECRET_KEY = new TextEncoder().encode(SECRET);
const REDIRECT_URI = 'http://localhost:8787/auth/callback/connect';
const ALL_SCOPES = 'openid email profile offline_access';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let hs; // HS256, test controls on (port 9180)
let rs; // RS256, test controls on (port 9181)
let plain; // HS256, test controls off (port 9182)

before(async () => {
  hs = await startConnect({ port: 9180, redirectUris: [REDIRECT_URI], clientSecret: SECRET, testControls: true });
  rs = await startConnect({ port: 9181, redirectUris: [REDIRECT_URI], clientSecret: SECRET, signing: 'RS256', testControls: true });
  plain = await startConnect({ port: 9182, redirectUris: [REDIRECT_URI], clientSecret: SECRET });
});
after(async () => {
  await Promise.all([hs?.close(), rs?.close(), plain?.close()]);
});

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');
const epoch = () => Math.floor(Date.now() / 1000);
const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

function authorizationUrl(connect, params = {}) {
  const url = new URL('/oauth/authorize', connect.issuer);
  const all = { response_type: 'code', client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, scope: ALL_SCOPES, ...params };
  for (const [name, value] of Object.entries(all)) if (value !== undefined) url.searchParams.set(name, value);
  return url.toString();
}

/** An authorization through consentAtBank: the callback URL and what the request carried. */
async function authorize(connect, { user = 'alice', decision = 'allow', pkce = true, ...params } = {}) {
  const verifier = pkce ? b64url(randomBytes(32)) : undefined;
  const request = {
    state: b64url(randomBytes(16)),
    nonce: b64url(randomBytes(16)),
    ...(pkce ? { code_challenge: sha256(verifier), code_challenge_method: 'S256' } : {}),
    ...params,
  };
  const callback = new URL(await consentAtBank(authorizationUrl(connect, request), { user, decision, redirectPrefix: REDIRECT_URI }));
  return { callback, verifier, state: request.state, nonce: request.nonce, code: callback.searchParams.get('code') };
}

/** A token request; `auth` is 'post' (client_id + client_secret in the body), 'basic' or 'none'. */
function tokenRequest(connect, form, { auth = 'post', secret = SECRET, id = CLIENT_ID } = {}) {
  const body = auth === 'post' ? { client_id: id, client_secret: secret, ...form } : form;
  const headers = auth === 'basic' ? { authorization: basic(id, secret) } : {};
  return postForm(`${connect.issuer}/oauth/token`, body, headers);
}

function exchange(connect, flow, options = {}, extra = {}) {
  return tokenRequest(connect, {
    grant_type: 'authorization_code',
    code: flow.code,
    redirect_uri: REDIRECT_URI,
    ...(flow.verifier ? { code_verifier: flow.verifier } : {}),
    ...extra,
  }, options);
}

const refresh = (connect, refreshToken, options, extra = {}) => tokenRequest(connect, { grant_type: 'refresh_token', refresh_token: refreshToken, ...extra }, options);

/** A live token set at `connect`: authorize and exchange. */
async function tokenSet(connect, options = {}) {
  const flow = await authorize(connect, options);
  const answer = await exchange(connect, flow);
  assert.equal(answer.status, 200, answer.text);
  return { flow, tokens: answer.json };
}

async function userinfo(connect, accessToken) {
  const response = await fetch(`${connect.issuer}/oauth/userinfo`, accessToken === undefined ? {} : { headers: { authorization: `Bearer ${accessToken}` } });
  const text = await response.text();
  return { status: response.status, www: response.headers.get('www-authenticate'), json: text ? JSON.parse(text) : null };
}

/** How a client checks a Connect access token signed with the client secret. */
const verifyHs = (token, options = {}) => jwtVerify(token, SECRET_KEY, {
  issuer: hs.issuer, audience: CLIENT_ID, algorithms: ['HS256'], typ: 'JWT', ...options,
});

function assertRefused(answer, status, error) {
  assert.equal(answer.status, status, answer.text);
  assert.equal(answer.json?.error, error, answer.text);
  assert.equal(answer.json.access_token, undefined);
}

async function setFault(connect, mode) {
  const response = await fetch(`${connect.issuer}/__test/next-access-token`, { method: 'POST', body: mode });
  assert.equal(response.status, 200, `next-access-token ${mode}`);
  assert.equal(await response.text(), mode);
}

test('discovery describes the endpoints; the JWKS is there in RS256 mode only', async () => {
  const metadata = await (await fetch(`${hs.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(metadata.issuer, hs.issuer);
  assert.equal(metadata.authorization_endpoint, `${hs.issuer}/oauth/authorize`);
  assert.equal(metadata.token_endpoint, `${hs.issuer}/oauth/token`);
  assert.equal(metadata.userinfo_endpoint, `${hs.issuer}/oauth/userinfo`);
  assert.deepEqual(metadata.token_endpoint_auth_methods_supported, ['client_secret_post', 'client_secret_basic']);
  assert.deepEqual(metadata.id_token_signing_alg_values_supported, ['HS256']);
  for (const scope of ALL_SCOPES.split(' ')) assert.ok(metadata.scopes_supported.includes(scope), scope);
  assert.equal(metadata.jwks_uri, undefined);
  assert.equal((await fetch(`${hs.issuer}/.well-known/jwks.json`)).status, 404);

  const rsMetadata = await (await fetch(`${rs.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(rsMetadata.jwks_uri, `${rs.issuer}/.well-known/jwks.json`);
  assert.deepEqual(rsMetadata.id_token_signing_alg_values_supported, ['RS256']);
  const jwks = await (await fetch(rsMetadata.jwks_uri)).json();
  assert.equal(jwks.keys.length, 1);
  assert.equal(jwks.keys[0].kty, 'RSA');
  assert.equal(jwks.keys[0].alg, 'RS256');
  assert.ok(jwks.keys[0].kid);
  assert.equal(jwks.keys[0].d, undefined, 'the public key only');
});

let first; // the first flow's { flow, tokens }

test('a full flow: code and state at the redirect URI, exchanged with client_secret_post for a JWT access token over 255 characters', async () => {
  const flow = await authorize(hs);
  assert.equal(`${flow.callback.origin}${flow.callback.pathname}`, REDIRECT_URI);
  assert.deepEqual([...flow.callback.searchParams.keys()].sort(), ['code', 'state'], 'code and state, no iss');
  assert.equal(flow.callback.searchParams.get('state'), flow.state);
  assert.deepEqual(hs.issued.codes.at(-1), { code: flow.code, state: flow.state });

  const answer = await exchange(hs, flow);
  assert.equal(answer.status, 200, answer.text);
  assert.equal(answer.headers.get('cache-control'), 'no-store');
  const tokens = answer.json;
  first = { flow, tokens };
  assert.deepEqual(Object.keys(tokens).sort(), ['access_token', 'expires_in', 'id_token', 'refresh_token', 'scope', 'token_type']);
  assert.equal(tokens.token_type, 'Bearer');
  assert.equal(tokens.expires_in, 3600);
  assert.equal(tokens.scope, ALL_SCOPES);
  assert.equal(typeof tokens.refresh_token, 'string');
  assert.ok(tokens.refresh_token.length > 255, 'the refresh token is long too');

  // The access token: HS256 with the client secret, typ JWT, the claims PROVIDERS.md lists.
  assert.ok(tokens.access_token.length > 255, `${tokens.access_token.length} characters`);
  assert.deepEqual(decodeProtectedHeader(tokens.access_token), { alg: 'HS256', typ: 'JWT' });
  const { payload } = await verifyHs(tokens.access_token);
  assert.equal(payload.iss, hs.issuer);
  assert.deepEqual(payload.aud, [CLIENT_ID]);
  assert.match(payload.sub, UUID);
  assert.equal(payload.scope, ALL_SCOPES);
  assert.equal(payload.exp - payload.iat, 3600);
  assert.ok(Math.abs(payload.iat - epoch()) <= 5);
  assert.equal(typeof payload.jti, 'string');
  await assert.rejects(jwtVerify(tokens.access_token, new TextEncoder().encode(`${SECRET}-not`), { algorithms: ['HS256'] }), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });

  // The id_token: signed the same way, aud the client id as a string, the request's nonce.
  const { payload: idToken } = await verifyHs(tokens.id_token);
  assert.equal(idToken.aud, CLIENT_ID);
  assert.equal(idToken.sub, payload.sub);
  assert.equal(idToken.nonce, flow.nonce);
  assert.equal(idToken.email, 'alice@bank.example');
  assert.equal(idToken.email_verified, true);
  assert.equal(idToken.name, 'Alice Martin');
  assert.equal(typeof idToken.auth_time, 'number');

  // Recorded: what was handed out, and the token request as it came.
  assert.equal(hs.issued.accessTokens.at(-1).value, tokens.access_token);
  assert.equal(hs.issued.accessTokens.at(-1).fault, 'normal');
  assert.equal(hs.issued.refreshTokens.at(-1).value, tokens.refresh_token);
  assert.equal(hs.issued.idTokens.at(-1).value, tokens.id_token);
  const recorded = hs.requests.filter((r) => r.path === '/oauth/token').at(-1);
  assert.equal(recorded.method, 'POST');
  assert.equal(recorded.form.client_secret, SECRET);
  assert.equal(recorded.form.code, flow.code);
  assert.equal(recorded.authorization, null);
  const authorizeRecord = hs.requests.filter((r) => r.path === '/oauth/authorize').at(-1);
  assert.equal(authorizeRecord.query.nonce, flow.nonce);
});

test('by hand: the login page, a wrong password, the consent page; the interaction is bound to its browser and ends with the decision', async () => {
  const jar = new CookieJar();
  const state = b64url(randomBytes(12));
  const start = await fetch(authorizationUrl(hs, { state }), { redirect: 'manual' });
  assert.equal(start.status, 303);
  const pageUrl = new URL(start.headers.get('location'), hs.issuer).toString();
  assert.match(new URL(pageUrl).pathname, /^\/interaction\/[\w-]+$/);
  assert.match(start.headers.get('set-cookie'), /HttpOnly/);
  jar.store(start);
  const get = (cookies = true) => fetch(pageUrl, { redirect: 'manual', headers: cookies ? { cookie: jar.header() } : {} });
  const post = (form, cookies = true) => fetch(pageUrl, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(cookies ? { cookie: jar.header() } : {}) },
    body: new URLSearchParams(form).toString(),
  });

  const stranger = await get(false);
  assert.equal(stranger.status, 400, 'another browser cannot use the interaction');
  assert.doesNotMatch(await stranger.text(), /name="login"/);

  const login = await get();
  assert.equal(login.status, 200);
  const loginHtml = await login.text();
  const action = new URL(pageUrl).pathname;
  assert.ok(loginHtml.includes(`<form method="post" action="${action}">`));
  assert.ok(loginHtml.includes('<input type="hidden" name="prompt" value="login">'));
  assert.match(loginHtml, /<input id="login" name="login"/);
  assert.match(loginHtml, /<input id="password" name="password" type="password"/);
  assert.equal(loginHtml.match(/<button[^>]*type="submit"/g).length, 1);

  const wrong = await post({ prompt: 'login', login: 'alice', password: 'bob' });
  assert.equal(wrong.status, 200);
  const wrongHtml = await wrong.text();
  assert.match(wrongHtml, /class="error">Wrong username or password/);
  assert.ok(wrongHtml.includes('name="prompt" value="login"'));
  assert.equal((await post({ prompt: 'login', login: 'mallory', password: 'mallory' })).status, 200);
  assert.equal((await post({ prompt: 'consent', decision: 'allow' })).status, 400, 'no consent before login');
  assert.equal((await post({ prompt: 'login', login: 'bob', password: 'bob' }, false)).status, 400);

  const signedIn = await post({ prompt: 'login', login: 'bob', password: 'bob' });
  assert.equal(signedIn.status, 303);
  assert.equal(new URL(signedIn.headers.get('location'), hs.issuer).toString(), pageUrl);
  const consentHtml = await (await get()).text();
  assert.ok(consentHtml.includes('<input type="hidden" name="prompt" value="consent">'));
  assert.match(consentHtml, /<button[^>]*name="decision" value="allow" type="submit">/);
  assert.match(consentHtml, /<button[^>]*name="decision" value="deny" type="submit">/);
  assert.match(consentHtml, /Bob Nguyen/);

  const allowed = await post({ prompt: 'consent', decision: 'allow' });
  assert.equal(allowed.status, 302);
  const callback = new URL(allowed.headers.get('location'));
  assert.equal(`${callback.origin}${callback.pathname}`, REDIRECT_URI);
  assert.equal(callback.searchParams.get('state'), state);
  assert.ok(callback.searchParams.get('code'));
  assert.equal((await post({ prompt: 'consent', decision: 'allow' })).status, 400, 'the interaction is over');

  // Bob's token, through the hand-driven flow; his sub differs from alice's.
  const answer = await exchange(hs, { code: callback.searchParams.get('code') });
  assert.equal(answer.status, 200, answer.text);
  const { payload } = await verifyHs(answer.json.access_token);
  assert.notEqual(payload.sub, decodeJwt(first.tokens.access_token).sub);
});

test('without state, the redirect carries none', async () => {
  const flow = await authorize(hs, { state: undefined, pkce: false });
  assert.equal(flow.callback.searchParams.has('state'), false);
  assert.ok(flow.code);
});

test('the sub is a stable UUID per account holder, the same at every instance', async () => {
  const again = await tokenSet(hs);
  const atRs = await tokenSet(rs, { user: 'alice' });
  const carol = await tokenSet(hs, { user: 'carol' });
  const sub = decodeJwt(first.tokens.access_token).sub;
  assert.equal(decodeJwt(again.tokens.access_token).sub, sub);
  assert.equal(decodeJwt(atRs.tokens.access_token).sub, sub);
  assert.notEqual(decodeJwt(carol.tokens.access_token).sub, sub);
  assert.match(decodeJwt(carol.tokens.access_token).sub, UUID);
});

test('the code exchanges with HTTP Basic too; one method only, and a wrong or missing secret is invalid_client', async () => {
  const flow = await authorize(hs);
  const wrongSecret = await exchange(hs, flow, { secret: `${SECRET}x` });
  assertRefused(wrongSecret, 401, 'invalid_client');
  assert.match(wrongSecret.headers.get('www-authenticate'), /^Basic/);
  assertRefused(await exchange(hs, flow, { auth: 'basic', secret: `${SECRET}x` }), 401, 'invalid_client');
  assertRefused(await exchange(hs, flow, { auth: 'basic', id: 'another-app' }), 401, 'invalid_client');
  assertRefused(await exchange(hs, flow, { auth: 'none' }), 401, 'invalid_client');
  assertRefused(await exchange(hs, flow, { auth: 'none' }, { client_id: CLIENT_ID }), 401, 'invalid_client');
  assertRefused(await exchange(hs, flow, { auth: 'basic' }, { client_secret: SECRET }), 400, 'invalid_request');

  // None of those spent the code.
  const answer = await exchange(hs, flow, { auth: 'basic' });
  assert.equal(answer.status, 200, answer.text);
  await verifyHs(answer.json.access_token);
  const recorded = hs.requests.filter((r) => r.path === '/oauth/token').at(-1);
  assert.equal(recorded.authorization, basic(CLIENT_ID, SECRET));
  assert.equal(recorded.form.client_secret, undefined);
});

test('the code: redirect_uri must match, PKCE is checked, and a second exchange is refused and revokes the first one\'s tokens', async () => {
  const flow = await authorize(hs);
  assertRefused(await exchange(hs, flow, {}, { redirect_uri: `${REDIRECT_URI}/other` }), 400, 'invalid_grant');
  assertRefused(await exchange(hs, { code: flow.code }), 400, 'invalid_grant');
  assertRefused(await exchange(hs, { ...flow, verifier: b64url(randomBytes(32)) }), 400, 'invalid_grant');
  assertRefused(await exchange(hs, { ...flow, code: 'no-such-code' }), 400, 'invalid_grant');
  assertRefused(await tokenRequest(hs, { grant_type: 'authorization_code', redirect_uri: REDIRECT_URI }), 400, 'invalid_request');
  assertRefused(await tokenRequest(hs, { grant_type: 'authorization_code', code: flow.code }), 400, 'invalid_request');

  const answer = await exchange(hs, flow);
  assert.equal(answer.status, 200, answer.text);
  assert.equal((await userinfo(hs, answer.json.access_token)).status, 200);
  assertRefused(await exchange(hs, flow), 400, 'invalid_grant');
  assert.equal((await userinfo(hs, answer.json.access_token)).status, 401, 'revoked with the grant');
  assertRefused(await refresh(hs, answer.json.refresh_token), 400, 'invalid_grant');

  // No challenge was sent: no verifier may come.
  const withoutPkce = await authorize(hs, { pkce: false });
  assertRefused(await exchange(hs, withoutPkce, {}, { code_verifier: b64url(randomBytes(32)) }), 400, 'invalid_grant');
  assert.equal((await exchange(hs, withoutPkce)).status, 200);
});

test('the token endpoint: unsupported_grant_type, invalid_request for a missing grant_type, a non-form body, a repeated parameter, GET', async () => {
  assertRefused(await tokenRequest(hs, { grant_type: 'password', username: 'alice', password: 'alice' }), 400, 'unsupported_grant_type');
  assertRefused(await tokenRequest(hs, {}), 400, 'invalid_request');
  const asJson = await fetch(`${hs.issuer}/oauth/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: 'refresh_token' }),
  });
  assert.equal(asJson.status, 400);
  assert.equal((await asJson.json()).error, 'invalid_request');
  const repeated = await postForm(`${hs.issuer}/oauth/token`, `client_id=${CLIENT_ID}&client_secret=${SECRET}&grant_type=refresh_token&refresh_token=a&refresh_token=b`);
  assertRefused(repeated, 400, 'invalid_request');
  const get = await fetch(`${hs.issuer}/oauth/token`);
  assert.equal(get.status, 405);
  assert.equal((await get.json()).error, 'invalid_request');
});

test('userinfo answers what the scopes grant, and refuses anything but a live access token of this provider', async () => {
  const full = await userinfo(hs, first.tokens.access_token);
  assert.equal(full.status, 200);
  assert.deepEqual(full.json, { sub: decodeJwt(first.tokens.access_token).sub, email: 'alice@bank.example', email_verified: true, name: 'Alice Martin' });

  const openidOnly = await tokenSet(hs, { scope: 'openid' });
  assert.ok(openidOnly.tokens.access_token.length > 255, 'long with the fewest claims too');
  assert.deepEqual((await userinfo(hs, openidOnly.tokens.access_token)).json, { sub: decodeJwt(first.tokens.access_token).sub });

  // Without openid: no id_token; the application's own scope is granted as asked.
  const noOpenid = await tokenSet(hs, { user: 'bob', scope: 'email accounts:read' });
  assert.equal(noOpenid.tokens.id_token, undefined);
  assert.equal(noOpenid.tokens.scope, 'email accounts:read');
  assert.equal(decodeJwt(noOpenid.tokens.access_token).scope, 'email accounts:read');
  const bob = (await userinfo(hs, noOpenid.tokens.access_token)).json;
  assert.deepEqual(Object.keys(bob).sort(), ['email', 'email_verified', 'sub']);
  assert.equal(bob.email, 'bob@bank.example');

  const refusals = [
    await userinfo(hs),
    await userinfo(hs, 'not-a-token'),
    await userinfo(hs, first.tokens.id_token),
    await userinfo(hs, first.tokens.refresh_token),
    await userinfo(hs, (await tokenSet(plain)).tokens.access_token), // same secret, other issuer
    // Signed with the secret (as the client could), with the right claims, never issued.
    await userinfo(hs, await new SignJWT({ ...decodeJwt(first.tokens.access_token), jti: 'forged' }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(SECRET_KEY)),
  ];
  for (const [index, refused] of refusals.entries()) {
    assert.equal(refused.status, 401, `refusal ${index}`);
    assert.equal(refused.www, 'Bearer error="invalid_token"');
    assert.equal(refused.json.error, 'invalid_token');
  }
});

test('a refresh rotates the refresh token; the old one is then refused, and presenting it revokes the grant', async () => {
  const { tokens } = await tokenSet(hs);
  const idToken = decodeJwt(tokens.id_token);
  const second = await refresh(hs, tokens.refresh_token);
  assert.equal(second.status, 200, second.text);
  assert.notEqual(second.json.refresh_token, tokens.refresh_token);
  assert.notEqual(second.json.access_token, tokens.access_token);
  assert.equal(second.json.scope, ALL_SCOPES);
  assert.equal(second.headers.get('cache-control'), 'no-store');
  const { payload } = await verifyHs(second.json.access_token);
  assert.equal(payload.sub, idToken.sub);
  const { payload: refreshedId } = await verifyHs(second.json.id_token);
  assert.equal(refreshedId.sub, idToken.sub);
  assert.equal(refreshedId.auth_time, idToken.auth_time, 'the time of the original login');
  assert.equal(refreshedId.nonce, undefined, 'no nonce on a refreshed id_token');
  assert.equal(hs.issued.refreshTokens.at(-1).grant_type, 'refresh_token');

  const third = await refresh(hs, second.json.refresh_token, { auth: 'basic' });
  assert.equal(third.status, 200, third.text);
  assert.equal((await userinfo(hs, third.json.access_token)).status, 200);

  // The first refresh token again: refused, and the whole grant with it.
  assertRefused(await refresh(hs, tokens.refresh_token), 400, 'invalid_grant');
  assertRefused(await refresh(hs, third.json.refresh_token), 400, 'invalid_grant');
  assert.equal((await userinfo(hs, third.json.access_token)).status, 401);
  assert.equal((await userinfo(hs, tokens.access_token)).status, 401);
  assertRefused(await refresh(hs, 'no-such-refresh-token'), 400, 'invalid_grant');
  assertRefused(await refresh(hs, ''), 400, 'invalid_request');
});

test('a refresh may narrow the scope, never widen it', async () => {
  const { tokens } = await tokenSet(hs);
  const narrowed = await refresh(hs, tokens.refresh_token, {}, { scope: 'email' });
  assert.equal(narrowed.status, 200, narrowed.text);
  assert.equal(narrowed.json.scope, 'email');
  assert.equal(narrowed.json.id_token, undefined);
  assert.equal(decodeJwt(narrowed.json.access_token).scope, 'email');
  assertRefused(await refresh(hs, narrowed.json.refresh_token, {}, { scope: 'openid admin' }), 400, 'invalid_scope');
  // The refresh token still holds the whole grant.
  const whole = await refresh(hs, narrowed.json.refresh_token);
  assert.equal(whole.json.scope, ALL_SCOPES);
});

test('a state of 255 characters comes back unchanged; 256 gets an error page and no redirect', async () => {
  const state255 = b64url(randomBytes(192)).slice(0, 255);
  assert.equal(state255.length, 255);
  const flow = await authorize(hs, { state: state255 });
  assert.equal(flow.callback.searchParams.get('state'), state255);

  const state256 = `${state255}x`;
  const interactionsBefore = hs.requests.filter((r) => r.path.startsWith('/interaction/')).length;
  const refused = await fetch(authorizationUrl(hs, { state: state256 }), { redirect: 'manual' });
  assert.equal(refused.status, 400);
  assert.equal(refused.headers.get('location'), null);
  assert.equal(refused.headers.get('set-cookie'), null);
  assert.match(refused.headers.get('content-type'), /^text\/html/);
  assert.match(await refused.text(), /state too long/);
  await assert.rejects(consentAtBank(authorizationUrl(hs, { state: state256 }), { user: 'alice', redirectPrefix: REDIRECT_URI }), /unexpected page/);
  assert.equal(hs.requests.filter((r) => r.path.startsWith('/interaction/')).length, interactionsBefore);
});

test('an unknown client or redirect_uri gets an error page; other bad parameters a redirect with invalid_request and the state', async () => {
  for (const params of [
    { client_id: 'another-app' },
    { client_id: undefined },
    { redirect_uri: 'http://localhost:8787/auth/callback/evil' },
    { redirect_uri: `${REDIRECT_URI}?x=1` },
    { redirect_uri: undefined },
  ]) {
    const answer = await fetch(authorizationUrl(hs, { state: 's', ...params }), { redirect: 'manual' });
    assert.equal(answer.status, 400, JSON.stringify(params));
    assert.equal(answer.headers.get('location'), null, JSON.stringify(params));
    assert.match(answer.headers.get('content-type'), /^text\/html/);
  }

  const badOnes = [
    { response_type: 'token' },
    { response_type: undefined },
    { scope: undefined },
    { scope: 'openid "email"' },
    { scope: 'openid  email' },
    { code_challenge: sha256('v'.repeat(43)), code_challenge_method: 'plain' },
    { code_challenge: sha256('v'.repeat(43)) },
    { code_challenge_method: 'S256' },
    { code_challenge: 'short', code_challenge_method: 'S256' },
  ];
  for (const params of badOnes) {
    const answer = await fetch(authorizationUrl(hs, { state: 'st-1', ...params }), { redirect: 'manual' });
    assert.equal(answer.status, 302, JSON.stringify(params));
    const location = new URL(answer.headers.get('location'));
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.equal(location.searchParams.get('error'), 'invalid_request', JSON.stringify(params));
    assert.equal(location.searchParams.get('state'), 'st-1');
    assert.equal(location.searchParams.get('code'), null);
    assert.equal(location.searchParams.get('iss'), null);
  }
  const repeated = await fetch(`${authorizationUrl(hs, { state: 'st-2' })}&scope=admin`, { redirect: 'manual' });
  assert.equal(new URL(repeated.headers.get('location')).searchParams.get('error'), 'invalid_request');
  const withoutState = await fetch(authorizationUrl(hs, { response_type: 'token' }), { redirect: 'manual' });
  assert.equal(new URL(withoutState.headers.get('location')).searchParams.has('state'), false);

  // An application's own scopes are fine.
  const own = await fetch(authorizationUrl(hs, { scope: 'openid accounts:read x-y_z!' }), { redirect: 'manual' });
  assert.equal(own.status, 303);
  assert.match(own.headers.get('location'), /^\/interaction\//);
});

test('denying consent redirects with access_denied and the state, no code', async () => {
  const flow = await authorize(hs, { decision: 'deny' });
  assert.equal(`${flow.callback.origin}${flow.callback.pathname}`, REDIRECT_URI);
  assert.deepEqual([...flow.callback.searchParams.keys()].sort(), ['error', 'state']);
  assert.equal(flow.callback.searchParams.get('error'), 'access_denied');
  assert.equal(flow.callback.searchParams.get('state'), flow.state);
});

/** Checks that the HS256 `token` has exactly the fault `mode` names, its other claims those of `normal`. */
async function assertFault(mode, token, normal) {
  const claims = decodeJwt(token);
  const header = decodeProtectedHeader(token);
  const same = (names) => { for (const name of names) assert.deepEqual(claims[name], normal[name], `${mode}: ${name}`); };
  const everythingBut = (skip) => same(['iss', 'aud', 'sub', 'scope', 'client_id'].filter((name) => !skip.includes(name)));
  switch (mode) {
    case 'bad-signature':
      assert.deepEqual(header, { alg: 'HS256', typ: 'JWT' });
      everythingBut([]);
      await assert.rejects(verifyHs(token), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
      break;
    case 'wrong-aud':
      everythingBut(['aud']);
      assert.notDeepEqual(claims.aud, [CLIENT_ID]);
      await verifyHs(token, { audience: undefined });
      await assert.rejects(verifyHs(token), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' });
      break;
    case 'wrong-iss':
      everythingBut(['iss']);
      await verifyHs(token, { issuer: undefined });
      await assert.rejects(verifyHs(token), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iss' });
      break;
    case 'expired':
      everythingBut([]);
      assert.ok(claims.exp < epoch());
      assert.ok(claims.iat < claims.exp);
      await verifyHs(token, { currentDate: new Date((claims.exp - 10) * 1000) });
      await assert.rejects(verifyHs(token), { code: 'ERR_JWT_EXPIRED' });
      break;
    case 'future-iat':
      everythingBut([]);
      assert.ok(claims.iat - epoch() >= 590 && claims.iat - epoch() <= 610, `iat ${claims.iat - epoch()} s ahead`);
      assert.ok(claims.exp > claims.iat);
      await verifyHs(token);
      await assert.rejects(verifyHs(token, { maxTokenAge: '2h' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iat' });
      break;
    case 'no-sub':
      everythingBut(['sub']);
      assert.equal('sub' in claims, false);
      await verifyHs(token);
      await assert.rejects(verifyHs(token, { requiredClaims: ['sub'] }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'sub' });
      break;
    case 'alg-none':
      assert.deepEqual(header, { alg: 'none', typ: 'JWT' });
      assert.equal(token.split('.')[2], '');
      everythingBut([]);
      await assert.rejects(verifyHs(token));
      break;
    default:
      assert.equal(mode, 'normal');
      everythingBut([]);
      await verifyHs(token);
  }
}

test('next-access-token: each mode gives the next token response exactly that fault, and only the next one', async () => {
  assert.deepEqual([...TOKEN_FAULTS].sort(), ['alg-none', 'bad-signature', 'expired', 'future-iat', 'hs256-secret', 'no-sub', 'normal', 'wrong-aud', 'wrong-iss']);
  let { tokens } = await tokenSet(hs);
  const normal = decodeJwt(tokens.access_token);
  // hs256-secret is a fault of RS256 mode only (tested below): in HS256 mode it is the norm.
  for (const mode of TOKEN_FAULTS.filter((fault) => fault !== 'hs256-secret')) {
    await setFault(hs, mode);
    const faulty = await refresh(hs, tokens.refresh_token);
    assert.equal(faulty.status, 200, `${mode}: ${faulty.text}`);
    await assertFault(mode, faulty.json.access_token, normal);
    assert.equal(hs.issued.accessTokens.at(-1).fault, mode);
    assert.equal((await userinfo(hs, faulty.json.access_token)).status, mode === 'normal' ? 200 : 401, `userinfo, ${mode}`);
    await verifyHs(faulty.json.id_token); // the rest of the response as usual

    const next = await refresh(hs, faulty.json.refresh_token);
    assert.equal(next.status, 200, next.text);
    await assertFault('normal', next.json.access_token, normal);
    assert.equal((await userinfo(hs, next.json.access_token)).status, 200);
    tokens = next.json;
  }

  // On a code exchange too.
  await setFault(hs, 'wrong-aud');
  const flow = await authorize(hs);
  const answer = await exchange(hs, flow);
  assert.equal(answer.status, 200, answer.text);
  await assertFault('wrong-aud', answer.json.access_token, normal);
  assert.equal((await verifyHs(answer.json.id_token)).payload.nonce, flow.nonce);

  const unknown = await fetch(`${hs.issuer}/__test/next-access-token`, { method: 'POST', body: 'wrong-sub' });
  assert.equal(unknown.status, 400);
  assert.equal(hs.issued.accessTokens.at(-1).fault, 'wrong-aud', 'an unknown mode changes nothing');
});

test('RS256: the tokens verify against /.well-known/jwks.json, not with the client secret; bad-signature fails there', async () => {
  const jwks = createRemoteJWKSet(new URL(`${rs.issuer}/.well-known/jwks.json`));
  const verifyRs = (token, options = {}) => jwtVerify(token, jwks, { issuer: rs.issuer, audience: CLIENT_ID, algorithms: ['RS256'], typ: 'JWT', ...options });
  const { flow, tokens } = await tokenSet(rs);
  const { kid } = (await (await fetch(`${rs.issuer}/.well-known/jwks.json`)).json()).keys[0];
  assert.deepEqual(decodeProtectedHeader(tokens.access_token), { alg: 'RS256', typ: 'JWT', kid });
  assert.ok(tokens.access_token.length > 255);
  const { payload } = await verifyRs(tokens.access_token);
  assert.deepEqual(payload.aud, [CLIENT_ID]);
  assert.equal(payload.exp - payload.iat, 3600);
  await assert.rejects(jwtVerify(tokens.access_token, SECRET_KEY, { algorithms: ['HS256'] }));
  const { payload: idToken } = await verifyRs(tokens.id_token);
  assert.equal(idToken.nonce, flow.nonce);
  assert.equal(idToken.aud, CLIENT_ID);
  assert.equal((await userinfo(rs, tokens.access_token)).json.email, 'alice@bank.example');
  assert.equal((await userinfo(hs, tokens.access_token)).status, 401, 'not a token of the HS256 instance');

  const refreshed = await refresh(rs, tokens.refresh_token);
  assert.equal(refreshed.status, 200, refreshed.text);
  await verifyRs(refreshed.json.access_token);
  assertRefused(await refresh(rs, tokens.refresh_token), 400, 'invalid_grant');

  await setFault(rs, 'bad-signature');
  const { tokens: faulty } = await tokenSet(rs);
  assert.deepEqual(decodeProtectedHeader(faulty.access_token), { alg: 'RS256', typ: 'JWT', kid });
  assert.equal(decodeJwt(faulty.access_token).iss, rs.issuer);
  await assert.rejects(verifyRs(faulty.access_token), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
  await verifyRs(faulty.id_token);
  assert.equal((await userinfo(rs, faulty.access_token)).status, 401);

  // The algorithm-confusion token: HS256 with the client secret, from an RS256 provider.
  await setFault(rs, 'hs256-secret');
  const { tokens: confused } = await tokenSet(rs);
  assert.deepEqual(decodeProtectedHeader(confused.access_token), { alg: 'HS256', typ: 'JWT' });
  await jwtVerify(confused.access_token, SECRET_KEY, { algorithms: ['HS256'] });
  await assert.rejects(verifyRs(confused.access_token));
  assert.equal((await userinfo(rs, confused.access_token)).status, 401);
});

test('RS256: a key rotation publishes the new key beside the old; the JWKS can be taken down', async () => {
  const { tokens: before } = await tokenSet(rs);
  const rotated = await fetch(`${rs.issuer}/__test/rotate-key`, { method: 'POST' });
  const kid = await rotated.text();
  assert.equal(rotated.status, 200);
  const { tokens: after } = await tokenSet(rs);
  assert.equal(decodeProtectedHeader(after.access_token).kid, kid, 'signed with the new key');
  assert.notEqual(decodeProtectedHeader(before.access_token).kid, kid);
  const { keys } = await (await fetch(`${rs.issuer}/.well-known/jwks.json`)).json();
  assert.ok(keys.length >= 2 && keys.some((key) => key.kid === kid));
  assert.equal((await userinfo(rs, before.access_token)).status, 200, 'tokens of the old key still work');
  assert.equal((await userinfo(rs, after.access_token)).status, 200);
  assert.equal(await (await fetch(`${rs.issuer}/__test/jwks`, { method: 'POST', body: 'down' })).text(), 'down');
  assert.equal((await fetch(`${rs.issuer}/.well-known/jwks.json`)).status, 503);
  assert.equal(await (await fetch(`${rs.issuer}/__test/jwks`, { method: 'POST', body: 'up' })).text(), 'up');
  assert.equal((await fetch(`${rs.issuer}/.well-known/jwks.json`)).status, 200);
});

test('test controls answer 404 unless turned on', async () => {
  for (const path of ['/__test/next-access-token', '/__test/expire-refresh']) {
    const response = await fetch(`${plain.issuer}${path}`, { method: 'POST', body: 'expired' });
    assert.equal(response.status, 404, path);
  }
  const { tokens } = await tokenSet(plain);
  await verifyHs(tokens.access_token, { issuer: plain.issuer });
  assert.equal((await refresh(plain, tokens.refresh_token)).status, 200, 'expire-refresh did nothing there');
});

test('expire-refresh: every refresh token issued so far answers invalid_grant; access tokens live on, later grants refresh', async () => {
  const one = await tokenSet(hs);
  const two = await tokenSet(hs, { user: 'bob' });
  const response = await fetch(`${hs.issuer}/__test/expire-refresh`, { method: 'POST' });
  assert.equal(response.status, 200);
  assertRefused(await refresh(hs, one.tokens.refresh_token), 400, 'invalid_grant');
  assertRefused(await refresh(hs, two.tokens.refresh_token, { auth: 'basic' }), 400, 'invalid_grant');
  assert.equal((await userinfo(hs, one.tokens.access_token)).status, 200);
  assert.equal((await refresh(rs, (await tokenSet(rs)).tokens.refresh_token)).status, 200, 'another instance is not touched');

  const later = await tokenSet(hs);
  const refreshed = await refresh(hs, later.tokens.refresh_token);
  assert.equal(refreshed.status, 200, refreshed.text);
});
