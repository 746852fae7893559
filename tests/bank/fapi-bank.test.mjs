// The local FAPI 2.0 platform (bank/fapi-bank.mjs) behaves as PROVIDERS.md says a FAPI 2.0
// Open Finance Platform does. This test plays the client itself, in Node, with jose and
// node:crypto (no Worker): PAR with a PS256 request object and private_key_jwt, the front
// channel with client_id + request_uri only, the account holder's login and consent, the code
// exchange with a DPoP proof and the server's nonce, the data API with DPoP proofs of its own
// nonce, a refresh, and what the platform must refuse.
//
//   NODE_NO_WARNINGS=1 node --test tests/bank/fapi-bank.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import {
  calculateJwkThumbprint, createRemoteJWKSet, decodeProtectedHeader, exportJWK, generateKeyPair,
  jwtVerify, SignJWT, UnsecuredJWT,
} from 'jose';

import { CONSENT_TYPE, startFapiBank } from '../../bank/fapi-bank.mjs';
import { consentAtBank } from '../lib/bank-user.mjs';
import { postForm } from '../lib/http.mjs';

const PORT = 9150;
const CLIENT_ID = 'consentry-fapi';
const REDIRECT_URI = 'http://localhost:8787/auth/callback/open-finance';
const ISSUER = `http://localhost:${PORT}`;
const FOR_ALICE = {
  type: CONSENT_TYPE,
  consent: {
    dp_id: 'harbour-bank',
    permissions: ['read_accounts', 'read_balances', 'read_transactions'],
    expiration_datetime: new Date(Date.now() + 30 * 86_400_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    consent_purpose: 'Show my balances in the demo',
  },
};

let bank;
let metadata;
let clientKey; // { privateKey, kid }
let dpopKey; // { privateKey, publicJwk, jkt }
let otherDpopKey;
const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest('base64url');
const epoch = () => Math.floor(Date.now() / 1000);

async function makeDpopKey(alg = 'ES256') {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const publicJwk = await exportJWK(publicKey);
  return { alg, privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
}

before(async () => {
  const { privateKey, publicKey } = await generateKeyPair('PS256');
  const kid = `test-${randomBytes(4).toString('hex')}`;
  clientKey = { privateKey, kid };
  const clientJwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'PS256', use: 'sig' }] };
  bank = await startFapiBank({ port: PORT, redirectUris: [REDIRECT_URI], clientJwks, testControls: true });
  metadata = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
  dpopKey = await makeDpopKey('ES256');
  otherDpopKey = await makeDpopKey('PS256');
});
after(async () => { await bank?.close(); });

function clientAssertion({ aud = ISSUER } = {}) {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'PS256', kid: clientKey.kid })
    .setIssuer(CLIENT_ID).setSubject(CLIENT_ID).setAudience(aud)
    .setJti(randomUUID()).setIssuedAt().setExpirationTime('60s')
    .sign(clientKey.privateKey);
}

function clientAuth() {
  return clientAssertion().then((assertion) => ({
    client_id: CLIENT_ID,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
  }));
}

/** An authorization request's parameters, its PKCE verifier, state and nonce. */
function authorizationParams({ details = [FOR_ALICE], jkt = dpopKey.jkt } = {}) {
  const verifier = b64url(randomBytes(32));
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const params = {
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'openid accounts balance transactions',
    state,
    nonce,
    code_challenge: sha256(verifier),
    code_challenge_method: 'S256',
    max_age: 600,
    ...(jkt ? { dpop_jkt: jkt } : {}),
    ...(details ? { authorization_details: details } : {}),
  };
  return { params, verifier, state, nonce };
}

function requestObject(params, { lifetime = 600 } = {}) {
  const now = epoch();
  return new SignJWT(params)
    .setProtectedHeader({ alg: 'PS256', kid: clientKey.kid, typ: 'oauth-authz-req+jwt' })
    .setIssuer(CLIENT_ID).setAudience(ISSUER)
    .setIssuedAt(now).setNotBefore(now).setExpirationTime(now + lifetime)
    .setJti(randomUUID())
    .sign(clientKey.privateKey);
}

async function par(form) {
  return postForm(metadata.pushed_authorization_request_endpoint, form);
}

function dpopProof(key, { htm, htu, nonce, accessToken, jti = randomUUID(), iat = epoch() }) {
  return new SignJWT({
    htm, htu, jti, iat, ...(nonce ? { nonce } : {}), ...(accessToken ? { ath: sha256(accessToken) } : {}),
  }).setProtectedHeader({ alg: key.alg, typ: 'dpop+jwt', jwk: key.publicJwk }).sign(key.privateKey);
}

/** A token request with private_key_jwt and a DPoP proof, obeying use_dpop_nonce once. */
async function tokenRequest(form, key = dpopKey) {
  let nonce;
  const attempts = [];
  for (let i = 0; i < 2; i += 1) {
    const proof = await dpopProof(key, { htm: 'POST', htu: metadata.token_endpoint, nonce });
    const answer = await postForm(metadata.token_endpoint, { ...form, ...(await clientAuth()) }, { DPoP: proof });
    attempts.push(answer);
    if (answer.status === 400 && answer.json?.error === 'use_dpop_nonce' && !nonce) {
      nonce = answer.headers.get('dpop-nonce');
      assert.ok(nonce, 'use_dpop_nonce comes with a DPoP-Nonce');
      continue;
    }
    return { ...answer, attempts };
  }
  return { ...attempts.at(-1), attempts };
}

let dataNonce;
/** GET on the data API with a DPoP proof of `key`, obeying use_dpop_nonce once. */
async function dataGet(path, accessToken, { key = dpopKey, scheme = 'DPoP', proof: givenProof, noProof = false } = {}) {
  const url = `${ISSUER}${path}`;
  const htu = url.split('?')[0];
  for (let i = 0; ; i += 1) {
    const proof = givenProof ?? await dpopProof(key, { htm: 'GET', htu, nonce: dataNonce, accessToken });
    const headers = { Authorization: `${scheme} ${accessToken}` };
    if (!noProof) headers.DPoP = proof;
    const response = await fetch(url, { headers });
    const text = await response.text();
    const www = response.headers.get('www-authenticate') || '';
    if (response.headers.get('dpop-nonce')) dataNonce = response.headers.get('dpop-nonce');
    if (response.status === 401 && /error="use_dpop_nonce"/.test(www) && i === 0 && !givenProof) continue;
    return { status: response.status, www, text, json: text ? JSON.parse(text) : null, proof, headers: response.headers };
  }
}

/** PAR + front channel + login and consent: the redirect URL the platform sends back. */
async function authorize({ user = 'alice', details, jkt } = {}) {
  const request = authorizationParams({ details, jkt });
  const pushed = await par({ ...(await clientAuth()), request: await requestObject(request.params) });
  assert.equal(pushed.status, 201, pushed.text);
  const front = new URL(metadata.authorization_endpoint);
  front.searchParams.set('client_id', CLIENT_ID);
  front.searchParams.set('request_uri', pushed.json.request_uri);
  const callback = new URL(await consentAtBank(front.toString(), { user, redirectPrefix: REDIRECT_URI }));
  return { ...request, pushed, front: front.toString(), callback };
}

function exchange(flow, key = dpopKey) {
  return tokenRequest({
    grant_type: 'authorization_code',
    code: flow.callback.searchParams.get('code'),
    redirect_uri: REDIRECT_URI,
    code_verifier: flow.verifier,
  }, key);
}

test('discovery says what a FAPI 2.0 platform needs', () => {
  assert.equal(metadata.issuer, ISSUER);
  assert.equal(metadata.require_pushed_authorization_requests, true);
  assert.equal(metadata.require_signed_request_object, true);
  assert.equal(metadata.authorization_response_iss_parameter_supported, true);
  assert.deepEqual(metadata.token_endpoint_auth_methods_supported, ['private_key_jwt']);
  assert.ok(metadata.token_endpoint_auth_signing_alg_values_supported.includes('PS256'));
  assert.ok(metadata.request_object_signing_alg_values_supported.includes('PS256'));
  assert.ok(!metadata.request_object_signing_alg_values_supported.includes('none'));
  assert.ok(metadata.id_token_signing_alg_values_supported.includes('PS256'));
  for (const alg of ['ES256', 'PS256']) assert.ok(metadata.dpop_signing_alg_values_supported.includes(alg), alg);
  assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
  assert.deepEqual(metadata.response_types_supported, ['code']);
  assert.ok(metadata.authorization_details_types_supported.includes(CONSENT_TYPE));
});

let tokens; // the first flow's token response
let flow;

test('PAR, front channel, consent, code exchange with DPoP: a DPoP-bound token set with the granted details', async () => {
  flow = await authorize();
  assert.match(flow.pushed.json.request_uri, /^urn:ietf:params:oauth:request_uri:/);
  assert.ok(flow.pushed.json.expires_in >= 595 && flow.pushed.json.expires_in <= 600, `request_uri lives 600 s (${flow.pushed.json.expires_in})`);
  const pushedRecord = bank.issued.pushes.at(-1);
  assert.equal(pushedRecord.status, 201);
  assert.equal(pushedRecord.requestObjectAlg, 'PS256');
  assert.equal(pushedRecord.clientAssertionAlg, 'PS256');
  assert.equal(pushedRecord.dpop_jkt, dpopKey.jkt);
  assert.deepEqual(pushedRecord.authorization_details, [FOR_ALICE]);

  // The redirect: code, state and iss (RFC 9207), nothing else of the request.
  assert.ok(flow.callback.toString().startsWith(`${REDIRECT_URI}?`));
  assert.ok(flow.callback.searchParams.get('code'));
  assert.equal(flow.callback.searchParams.get('state'), flow.state);
  assert.equal(flow.callback.searchParams.get('iss'), ISSUER);
  assert.equal(flow.callback.searchParams.get('error'), null);
  assert.equal(bank.issued.codes.at(-1).code, flow.callback.searchParams.get('code'));

  tokens = await exchange(flow);
  assert.equal(tokens.attempts.length, 2, 'the first proof, without a nonce, is answered use_dpop_nonce');
  assert.equal(tokens.attempts[0].json.error, 'use_dpop_nonce');
  assert.equal(tokens.status, 200, tokens.text);
  const body = tokens.json;
  assert.equal(body.token_type, 'DPoP');
  assert.equal(body.expires_in, 600);
  assert.equal(typeof body.access_token, 'string');
  assert.equal(typeof body.refresh_token, 'string', 'a refresh token without offline_access');
  assert.deepEqual(new Set(body.scope.split(' ')), new Set(['accounts', 'balance', 'transactions']));
  const proofs = bank.issued.dpopProofs.filter((p) => p.endpoint === 'token').slice(-2);
  assert.equal(proofs[0].nonce, undefined);
  assert.ok(proofs[1].nonce);
  assert.ok(proofs.every((p) => p.jkt === dpopKey.jkt && p.htm === 'POST' && p.htu === metadata.token_endpoint));
  assert.ok(bank.issued.tokens.some((t) => t.value === body.access_token && t.token_type === 'DPoP' && t.grant_type === 'authorization_code'));
  assert.deepEqual(bank.issued.exchanges.map((e) => e.status).slice(-2), [400, 200]);

  // The id_token: PS256 under the platform's JWKS, for this client, with the request's nonce.
  assert.equal(decodeProtectedHeader(body.id_token).alg, 'PS256');
  const { payload: idToken } = await jwtVerify(body.id_token, createRemoteJWKSet(new URL(metadata.jwks_uri)), {
    issuer: ISSUER, audience: CLIENT_ID, algorithms: ['PS256'],
  });
  assert.equal(idToken.nonce, flow.nonce);
  assert.equal(idToken.sub, 'alice');

  // The granted details: as asked, plus the platform's consent id, status and expiry.
  assert.equal(body.authorization_details.length, 1);
  const [granted] = body.authorization_details;
  assert.equal(granted.type, CONSENT_TYPE);
  assert.match(granted.consent_id, /^ofp-consent-[0-9a-f-]{36}$/);
  assert.equal(granted.status, 'Authorized');
  assert.equal(granted.expiration_datetime, FOR_ALICE.consent.expiration_datetime);
  assert.equal(granted.consent.dp_id, 'harbour-bank');
  assert.deepEqual(granted.consent.permissions, FOR_ALICE.consent.permissions);
  assert.equal(granted.consent.consent_purpose, FOR_ALICE.consent.consent_purpose);

});

test('the data API answers a DPoP-bound token with a proof of its own nonce: alice\'s accounts', async () => {
  dataNonce = undefined;
  const answer = await dataGet('/data/v1/accounts', tokens.json.access_token);
  assert.equal(answer.status, 200, answer.text);
  assert.deepEqual(answer.json.accounts.map((a) => a.id), ['acc-alice-current', 'acc-alice-savings']);
  const [nonceAsked, ok] = bank.issued.dataRequests.slice(-2);
  assert.equal(nonceAsked.reason, 'use_dpop_nonce');
  assert.equal(nonceAsked.status, 401);
  assert.equal(ok.reason, 'ok');
  const proof = bank.issued.dpopProofs.filter((p) => p.endpoint === 'data').at(-1);
  assert.equal(proof.jkt, dpopKey.jkt);
  assert.equal(proof.htu, `${ISSUER}/data/v1/accounts`);
  assert.equal(proof.htm, 'GET');

  const balance = await dataGet('/data/v1/accounts/acc-alice-current/balance', tokens.json.access_token);
  assert.equal(balance.status, 200, balance.text);
  assert.equal(balance.json.account_id, 'acc-alice-current');
  const transactions = await dataGet('/data/v1/accounts/acc-alice-current/transactions?limit=3', tokens.json.access_token);
  assert.equal(transactions.status, 200, transactions.text);
  assert.equal(transactions.json.transactions.length, 3);
  const bobs = await dataGet('/data/v1/accounts/acc-bob-current/balance', tokens.json.access_token);
  assert.equal(bobs.status, 404);

  // Without a nonce of the data API's (here one from the token endpoint): use_dpop_nonce.
  const proofWithoutNonce = await dpopProof(dpopKey, { htm: 'GET', htu: `${ISSUER}/data/v1/accounts`, accessToken: tokens.json.access_token, nonce: tokens.attempts[1].headers.get('dpop-nonce') || 'made-up' });
  const refused = await dataGet('/data/v1/accounts', tokens.json.access_token, { proof: proofWithoutNonce });
  assert.equal(refused.status, 401);
  assert.match(refused.www, /^DPoP error="use_dpop_nonce"/);
  assert.ok(refused.headers.get('dpop-nonce'));
});

test('the data API refuses the token as Bearer, without a proof, with another key\'s proof, a replayed or a wrong proof', async () => {
  const at = tokens.json.access_token;
  const url = `${ISSUER}/data/v1/accounts`;
  const expectRefusal = (answer, error, reason) => {
    assert.equal(answer.status, 401, `${reason}: ${answer.text}`);
    assert.match(answer.www, new RegExp(`^DPoP error="${error}"`), reason);
    assert.equal(bank.issued.dataRequests.at(-1).reason.split(':')[0], reason);
    assert.equal(answer.json.accounts, undefined);
  };

  expectRefusal(await dataGet('/data/v1/accounts', at, { scheme: 'Bearer' }), 'invalid_token', 'bearer');
  const bare = await fetch(url, { headers: { Authorization: `Bearer ${at}` } });
  assert.equal(bare.status, 401);
  assert.match(bare.headers.get('www-authenticate'), /^DPoP error="invalid_token"/);
  expectRefusal(await dataGet('/data/v1/accounts', at, { noProof: true }), 'invalid_dpop_proof', 'no_proof');
  expectRefusal(await dataGet('/data/v1/accounts', at, { key: otherDpopKey }), 'invalid_token', 'key_mismatch');
  expectRefusal(await dataGet('/data/v1/accounts', `${at}x`), 'invalid_token', 'unknown_token');

  // A proof that worked once does not work twice (same jti).
  const good = await dataGet('/data/v1/accounts', at);
  assert.equal(good.status, 200);
  expectRefusal(await dataGet('/data/v1/accounts', at, { proof: good.proof }), 'invalid_dpop_proof', 'replay');

  // Proofs for another method, another URL, another token, or too old.
  const wrong = async (claims) => dataGet('/data/v1/accounts', at, {
    proof: await dpopProof(dpopKey, { htm: 'GET', htu: url, nonce: dataNonce, accessToken: at, ...claims }),
  });
  expectRefusal(await wrong({ htm: 'POST' }), 'invalid_dpop_proof', 'bad_proof');
  expectRefusal(await wrong({ htu: `${ISSUER}/data/v1/accounts/acc-alice-current/balance` }), 'invalid_dpop_proof', 'bad_proof');
  expectRefusal(await wrong({ accessToken: 'another-token' }), 'invalid_dpop_proof', 'bad_proof');
  expectRefusal(await wrong({ iat: epoch() - 120 }), 'invalid_dpop_proof', 'bad_proof');
  const unsigned = new UnsecuredJWT({ htm: 'GET', htu: url, jti: randomUUID(), iat: epoch(), nonce: dataNonce, ath: sha256(at) }).encode();
  expectRefusal(await dataGet('/data/v1/accounts', at, { proof: unsigned }), 'invalid_dpop_proof', 'bad_proof');
  // The query string is not part of htu: a proof for the path alone is right.
  const withQuery = await dataGet('/data/v1/accounts/acc-alice-current/transactions?limit=1', at);
  assert.equal(withQuery.status, 200, withQuery.text);
});

test('a refresh with a DPoP proof keeps the refresh token (no rotation) and the granted details', async () => {
  const refreshed = await tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.json.refresh_token });
  assert.equal(refreshed.status, 200, refreshed.text);
  assert.equal(refreshed.json.token_type, 'DPoP');
  assert.equal(refreshed.json.refresh_token, tokens.json.refresh_token, 'not rotated');
  assert.notEqual(refreshed.json.access_token, tokens.json.access_token);
  assert.deepEqual(refreshed.json.authorization_details, tokens.json.authorization_details);
  const record = bank.issued.refreshes.at(-1);
  assert.equal(record.status, 200);
  assert.equal(record.rotated, undefined);
  assert.equal(record.authorization_details[0].consent_id, tokens.json.authorization_details[0].consent_id);
  const answer = await dataGet('/data/v1/accounts', refreshed.json.access_token);
  assert.equal(answer.status, 200, answer.text);

  // The same refresh token works again (kept), and a refresh without a proof is refused.
  const second = await tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.json.refresh_token });
  assert.equal(second.status, 200, second.text);
  assert.equal(second.json.refresh_token, tokens.json.refresh_token);
  const withoutProof = await postForm(metadata.token_endpoint, { grant_type: 'refresh_token', refresh_token: tokens.json.refresh_token, ...(await clientAuth()) });
  assert.equal(withoutProof.status, 400);
  assert.equal(withoutProof.json.error, 'invalid_grant');
});

test('the bank picker: no dp_id gives demo-bank, no expiry gives 90 days', async () => {
  const details = [{ type: CONSENT_TYPE, consent: { permissions: ['read_accounts'] } }];
  const picked = await authorize({ user: 'bob', details });
  const answer = await exchange(picked);
  assert.equal(answer.status, 200, answer.text);
  const [granted] = answer.json.authorization_details;
  assert.equal(granted.consent.dp_id, 'demo-bank');
  assert.equal(granted.status, 'Authorized');
  assert.notEqual(granted.consent_id, tokens.json.authorization_details[0].consent_id);
  const days = (Date.parse(granted.expiration_datetime) - Date.now()) / 86_400_000;
  assert.ok(days > 89.9 && days <= 90, `${days} days`);
  const accounts = await dataGet('/data/v1/accounts', answer.json.access_token);
  assert.deepEqual(accounts.json.accounts.map((a) => a.id), ['acc-bob-current']);
});

test('a code exchanged with another DPoP key than dpop_jkt is refused', async () => {
  const bound = await authorize({ user: 'carol' });
  const answer = await exchange(bound, otherDpopKey);
  assert.equal(answer.status, 400);
  assert.equal(answer.json.error, 'invalid_grant');
});

test('a code is single use: a second exchange is refused and revokes what the first one got', async () => {
  const once = await authorize({ user: 'carol' });
  const first = await exchange(once);
  assert.equal(first.status, 200, first.text);
  assert.equal((await dataGet('/data/v1/accounts', first.json.access_token)).status, 200);
  const again = await exchange(once);
  assert.equal(again.status, 400);
  assert.equal(again.json.error, 'invalid_grant');
  const revoked = await dataGet('/data/v1/accounts', first.json.access_token);
  assert.equal(revoked.status, 401);
  assert.equal(bank.issued.dataRequests.at(-1).reason, 'unknown_token');
});

test('a plain (non-PAR) authorization request is refused at the platform, with no redirect', async () => {
  const { params } = authorizationParams();
  const plain = new URL(metadata.authorization_endpoint);
  for (const [name, value] of Object.entries(params)) {
    plain.searchParams.set(name, typeof value === 'string' ? value : JSON.stringify(value));
  }
  const answer = await fetch(plain, { redirect: 'manual' });
  assert.equal(answer.status, 400);
  assert.equal(answer.headers.get('location'), null);
  assert.match(await answer.text(), /invalid_request/);

  // A signed request object on the front channel, without PAR: refused too.
  const jar = new URL(metadata.authorization_endpoint);
  jar.searchParams.set('client_id', CLIENT_ID);
  jar.searchParams.set('request', await requestObject(params));
  const viaJar = await fetch(jar, { redirect: 'manual' });
  assert.equal(viaJar.status, 400);
  assert.equal(viaJar.headers.get('location'), null);

  // A request_uri is single use: the second visit gets an error page, not a redirect.
  const pushed = await par({ ...(await clientAuth()), request: await requestObject(params) });
  const front = `${metadata.authorization_endpoint}?client_id=${CLIENT_ID}&request_uri=${encodeURIComponent(pushed.json.request_uri)}`;
  await consentAtBank(front, { user: 'alice', redirectPrefix: REDIRECT_URI });
  const reused = await fetch(front, { redirect: 'manual' });
  assert.equal(reused.status, 400);
  assert.equal(reused.headers.get('location'), null);
});

test('PAR refuses an unsigned request object, no request object, a missing client assertion, and bad request objects', async () => {
  const { params } = authorizationParams();
  const now = epoch();
  const unsigned = new UnsecuredJWT(params).setIssuer(CLIENT_ID).setAudience(ISSUER)
    .setIssuedAt(now).setNotBefore(now).setExpirationTime(now + 300).setJti(randomUUID()).encode();
  const none = await par({ ...(await clientAuth()), request: unsigned });
  assert.equal(none.status, 400, none.text);
  assert.equal(none.json.error, 'invalid_request_object');
  assert.equal(bank.issued.pushes.at(-1).requestObjectAlg, 'none');

  const plainParams = await par({
    ...(await clientAuth()),
    ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])),
  });
  assert.equal(plainParams.status, 400, plainParams.text);
  assert.equal(plainParams.json.error, 'invalid_request');

  const noAssertion = await par({ client_id: CLIENT_ID, request: await requestObject(params) });
  assert.equal(noAssertion.status, 401, noAssertion.text);
  assert.equal(noAssertion.json.error, 'invalid_client');
  assert.equal(bank.issued.pushes.at(-1).clientAssertionAlg, null);

  const wrongAudience = await par({
    client_id: CLIENT_ID,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await clientAssertion({ aud: metadata.token_endpoint }),
    request: await requestObject(params),
  });
  assert.equal(wrongAudience.status, 401, wrongAudience.text);

  const tooLong = await par({ ...(await clientAuth()), request: await requestObject(params, { lifetime: 601 }) });
  assert.equal(tooLong.status, 400, tooLong.text);
  assert.equal(tooLong.json.error, 'invalid_request_object');

  const sameJti = await requestObject(params);
  assert.equal((await par({ ...(await clientAuth()), request: sameJti })).status, 201);
  const replayed = await par({ ...(await clientAuth()), request: sameJti });
  assert.equal(replayed.status, 400, replayed.text);
  assert.equal(replayed.json.error, 'invalid_request_object');

  for (const consent of [
    { permissions: ['read_accounts', 'make_payments'] },
    { dp_id: 'demo-bank' },
    { permissions: [] },
    { permissions: ['read_accounts'], expiration_datetime: 'tomorrow' },
  ]) {
    const bad = authorizationParams({ details: [{ type: CONSENT_TYPE, consent }] });
    const answer = await par({ ...(await clientAuth()), request: await requestObject(bad.params) });
    assert.equal(answer.status, 400, answer.text);
    assert.equal(answer.json.error, 'invalid_authorization_details', JSON.stringify(consent));
  }
  const otherType = authorizationParams({ details: [{ type: 'payment_initiation', consent: { permissions: ['read_accounts'] } }] });
  const answer = await par({ ...(await clientAuth()), request: await requestObject(otherType.params) });
  assert.equal(answer.json.error, 'invalid_authorization_details');
});

test('next-authorization-error ends the next flow, after login, with that error at the redirect URI', async () => {
  for (const error of ['temporarily_unavailable', 'access_denied', 'server_error', 'invalid_request']) {
    const set = await fetch(`${ISSUER}/__test/next-authorization-error`, { method: 'POST', body: error });
    assert.equal(set.status, 200);
    const failed = await authorize();
    assert.equal(failed.callback.searchParams.get('error'), error);
    assert.equal(failed.callback.searchParams.get('state'), failed.state);
    assert.equal(failed.callback.searchParams.get('iss'), ISSUER);
    assert.equal(failed.callback.searchParams.get('code'), null);
  }
  // Only the next one: the flow after it succeeds.
  const fine = await authorize();
  assert.ok(fine.callback.searchParams.get('code'));
  const unknown = await fetch(`${ISSUER}/__test/next-authorization-error`, { method: 'POST', body: 'invalid_grant' });
  assert.equal(unknown.status, 400);
});
