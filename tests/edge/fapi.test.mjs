// FAPI 2.0 at the edge against real workerd (wrangler dev) and a FAPI 2.0 authorization
// server (bank/fapi-bank.mjs: oidc-provider with the FAPI 2.0 profile, PAR and signed request
// objects required, private_key_jwt PS256, DPoP with server nonces, rich authorization
// requests, and a data API that takes only DPoP-bound tokens with a valid proof).
//
//   node --test tests/edge/fapi.test.mjs

import assert from 'node:assert/strict';
import { generateKeyPairSync, createHash, randomUUID, sign as rsaSign } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { consentAtBank } from '../lib/bank-user.mjs';
import {
  describe, expireAccessToken as expireAccessTokenOf, findLeaks, outcomePage, storedFiles, testControl, userHeaders, workerdCpuMs,
} from '../lib/edge.mjs';
import { BANK_ACCOUNT, grantConsent, startFlow } from '../lib/flow.mjs';
import { CookieJar, randomToken, ROOT, startStack } from '../lib/worker-harness.mjs';

const TEST_TIMEOUT = 120_000;

let stack;
const flows = []; // { user, consent, location }

before(async () => { stack = await startStack(); }, { timeout: 30 * 60_000 });
after(async () => { await stack?.stop(); });

const headers = (user, extra) => userHeaders(stack, user, extra);
const api = (path, { user = 'usr_alice', consent } = {}) => stack.workerFetch(`/api/open-finance${path}`, { headers: headers(user, consent ? { 'X-Consentry-Consent': consent } : {}) });
const fapi = () => stack.fapiBank.issued;

const expireAccessToken = (consentId) => expireAccessTokenOf(stack, consentId);

test('each demo user completes a FAPI 2.0 flow: PAR with a PS256 request object, private_key_jwt, DPoP-bound tokens', { timeout: TEST_TIMEOUT }, async () => {
  for (const user of Object.keys(BANK_ACCOUNT)) {
    const pushesBefore = fapi().pushes.length;
    const proofsBefore = fapi().dpopProofs.length;
    const { outcome, location } = await grantConsent(stack, { user, provider: 'open-finance', hint: 'harbour-bank' });
    // The front channel carries exactly client_id and request_uri.
    const front = new URL(location);
    assert.deepEqual([...front.searchParams.keys()].sort(), ['client_id', 'request_uri']);
    assert.equal(front.searchParams.get('client_id'), 'consentry-fapi');
    // The push: a PS256 request object, a PS256 client assertion, the key's thumbprint, the details.
    const [push] = fapi().pushes.slice(pushesBefore);
    assert.equal(push.status, 201, JSON.stringify(push));
    assert.equal(push.requestObjectAlg, 'PS256');
    assert.equal(push.clientAssertionAlg, 'PS256');
    assert.match(push.dpop_jkt ?? '', /^[A-Za-z0-9_-]{43}$/);
    flows.push({ user, consent: outcome.consent.id, location, jkt: push.dpop_jkt });
    assert.equal(push.authorization_details[0].consent.dp_id, 'harbour-bank', 'the hint became the dp_id');
    // The token request: proofs by the key the code was bound to; the bank's nonce obeyed.
    const proofs = fapi().dpopProofs.slice(proofsBefore).filter((proof) => proof.endpoint === 'token');
    assert.ok(proofs.length >= 1 && proofs.every((proof) => proof.jkt === push.dpop_jkt), 'proofs signed by the consent key');
    assert.ok(proofs.at(-1).nonce, 'the accepted proof carried the bank\'s nonce');
    const issued = fapi().tokens.filter((token) => token.type === 'access_token').at(-1);
    assert.equal(issued.jkt, push.dpop_jkt, 'the access token is bound (cnf.jkt) to the consent\'s key');
  }
  // The consent shows the platform's consent id as its account, its expiry as the details say.
  const listed = await stack.workerFetch('/auth/consents', { headers: headers('usr_alice') });
  const mine = listed.json().consents.find((consent) => consent.id === flows[0].consent);
  assert.match(mine.account ?? '', /^ofp-consent-/, 'the OFP consent id (from the granted details) is the account');
  assert.ok(mine.expires_at && Date.parse(mine.expires_at) > Date.now() + 80 * 86_400_000, `expires_at from the details: ${mine.expires_at}`);
});

test('/api reads a FAPI consent\'s data with a DPoP proof, obeying the data API\'s nonce', { timeout: TEST_TIMEOUT }, async () => {
  const { consent } = flows[0];
  const proofsBefore = fapi().dpopProofs.length;
  const res = await api('/accounts', { consent });
  assert.equal(res.status, 200, describe(res));
  const { accounts } = res.json();
  assert.ok(accounts.length > 0 && accounts.every((account) => account.id.startsWith('acc-alice-')));
  const proofs = fapi().dpopProofs.slice(proofsBefore).filter((proof) => proof.endpoint === 'data');
  assert.ok(proofs.length >= 1, 'a proof went with the call');
  assert.ok(proofs.at(-1).nonce, 'with the data API\'s nonce');
  const dataBefore = fapi().dataRequests.length;
  const again = await api('/accounts', { consent });
  assert.equal(again.status, 200, 'the remembered nonce works for the next call');
  assert.deepEqual(fapi().dataRequests.slice(dataBefore).map((request) => request.reason), ['ok'], 'one request, no nonce challenge');
});

test('the binding is real: the access token without a proof, or with another key\'s, is refused by the data API', { timeout: TEST_TIMEOUT }, async () => {
  const token = fapi().tokens.filter((issued) => issued.type === 'access_token').at(-1).value;
  const url = `${stack.fapiBank.issuer}/data/v1/accounts`;
  const reason = () => fapi().dataRequests.at(-1).reason;
  const asBearer = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(asBearer.status, 401);
  assert.equal(reason(), 'bearer');
  const noProof = await fetch(url, { headers: { Authorization: `DPoP ${token}` } });
  assert.equal(noProof.status, 401);
  assert.equal(reason(), 'no_proof');
  // A well-formed proof, signed by a key the token is not bound to.
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' });
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const header = b64({ typ: 'dpop+jwt', alg: 'PS256', jwk: { kty: jwk.kty, n: jwk.n, e: jwk.e } });
  const claims = b64({ jti: randomUUID(), htm: 'GET', htu: url, iat: Math.floor(Date.now() / 1000), ath: createHash('sha256').update(token).digest('base64url') });
  const signature = rsaSign('sha256', Buffer.from(`${header}.${claims}`), { key: privateKey, padding: 6, saltLength: 32 }).toString('base64url');
  const otherKey = await fetch(url, { headers: { Authorization: `DPoP ${token}`, DPoP: `${header}.${claims}.${signature}` } });
  assert.equal(otherKey.status, 401);
  assert.equal(reason(), 'key_mismatch', 'refused for its key, not for anything else');
});

test('a FAPI refresh carries a proof of the consent key; the refreshed token still works', { timeout: TEST_TIMEOUT }, async () => {
  const { consent } = flows[1];
  await expireAccessToken(consent);
  const refreshesBefore = fapi().refreshes.length;
  const proofsBefore = fapi().dpopProofs.length;
  const res = await api('/accounts', { user: flows[1].user, consent });
  assert.equal(res.status, 200, describe(res));
  // One refresh: a first answer asking for a fresh nonce (use_dpop_nonce, the bank's nonce
  // having moved on since the code exchange), if any, is the protocol's one retry.
  const refreshed = fapi().refreshes.slice(refreshesBefore);
  assert.ok(refreshed.length === 1 || (refreshed.length === 2 && refreshed[0].error === 'use_dpop_nonce'), JSON.stringify(refreshed.map((r) => [r.status, r.error])));
  assert.equal(refreshed.at(-1).status, 200);
  // A refresh right after does not spend its retry on the data API's nonce.
  await expireAccessToken(consent);
  const more = fapi().refreshes.length;
  assert.equal((await api('/accounts', { user: flows[1].user, consent })).status, 200);
  assert.deepEqual(fapi().refreshes.slice(more).map((r) => r.status), [200], 'the authorization server\'s own nonce was used');
  const proofs = fapi().dpopProofs.slice(proofsBefore).filter((proof) => proof.endpoint === 'token');
  assert.ok(proofs.length >= 1, 'the refresh carried a proof');
  assert.ok(proofs.every((proof) => proof.jkt === flows[1].jkt), 'signed by this consent\'s key');
  assert.equal(fapi().tokens.filter((token) => token.type === 'access_token').at(-1).jkt, flows[1].jkt, 'the new token is bound to it too');
});

test('a PAR the platform refuses (a client key it does not know) ends the flow clearly, with nothing stored', { timeout: TEST_TIMEOUT }, async () => {
  const pushesBefore = fapi().pushes.length;
  const [before] = await stack.d1('SELECT COUNT(*) AS n FROM transactions');
  const state = randomToken();
  const res = await stack.workerFetch('/auth/start', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.publicOrigin },
    body: new URLSearchParams({ provider: 'open-finance-wrongkey', state, code_verifier: randomToken(), user: 'usr_alice' }).toString(),
    jar: new CookieJar(),
  });
  assert.equal(res.status, 400, describe(res));
  const page = outcomePage(res);
  assert.equal(page.error, 'invalid_client', 'the platform\'s RFC error, kept');
  assert.equal(page.outcome?.state, state, 'posted to the opener for its flow');
  assert.equal(page.outcome?.error, 'invalid_client');
  assert.equal(fapi().pushes.slice(pushesBefore)[0]?.status, 401);
  const [after] = await stack.d1('SELECT COUNT(*) AS n FROM transactions');
  assert.equal(after.n, before.n, 'no flow stored');
});

test('the platform\'s access_denied, invalid_request and server_error redirects reach the SPA with their codes', { timeout: TEST_TIMEOUT }, async () => {
  for (const code of ['access_denied', 'invalid_request', 'server_error']) {
    await testControl(stack.fapiBank.issuer, 'next-authorization-error', code);
    const { res: started, location, jar, state } = await startFlow(stack, { provider: 'open-finance', user: 'usr_bob' });
    assert.equal(started.status, 303, describe(started));
    const url = await consentAtBank(location, { user: 'bob', redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
    assert.equal(new URL(url).searchParams.get('error'), code);
    const cb = await stack.workerFetch(url, { jar, crossSite: true });
    assert.equal(cb.status, 400, describe(cb));
    const page = outcomePage(cb);
    assert.equal(page.outcome?.error, code);
    assert.equal(page.outcome?.status, code === 'access_denied' ? 'denied' : 'failed');
    const outcome = await stack.workerFetch(`/auth/outcome?state=${state}`, { headers: { 'X-Consentry': '1' }, jar });
    assert.equal(outcome.json().error, code);
  }
});

test('a Bearer answer to a DPoP-proved token request is refused, and its tokens revoked', { timeout: TEST_TIMEOUT }, async () => {
  const [before] = await stack.d1('SELECT COUNT(*) AS n FROM consents');
  const revocationsBefore = fapi().revocations.length;
  await testControl(stack.fapiBank.issuer, 'token-type', 'Bearer');
  let failure;
  try {
    await grantConsent(stack, { user: 'usr_carol', provider: 'open-finance' });
  } catch (error) {
    failure = error;
  } finally {
    await testControl(stack.fapiBank.issuer, 'token-type', 'normal');
  }
  assert.match(String(failure?.message), /invalid_token_response/);
  const [after] = await stack.d1('SELECT COUNT(*) AS n FROM consents');
  assert.equal(after.n, before.n, 'no consent stored');
  // The refused answer's refresh token (which ends the grant) was revoked at the platform.
  const refreshToken = fapi().tokens.filter((token) => token.type === 'refresh_token').at(-1).value;
  const revoked = fapi().revocations.slice(revocationsBefore);
  assert.deepEqual(revoked.map(({ token, status }) => ({ token, status })), [{ token: refreshToken, status: 200 }]);
});

test('H5: the worst /api path, a FAPI refresh in a cold isolate, stays within the Free plan: 50 subrequests, 6 open connections, 50 D1 statements (counted around the Worker); its CPU is printed', { timeout: 4 * TEST_TIMEOUT }, async () => {
  const user = 'usr_carol';
  const { outcome } = await grantConsent(stack, { user, provider: 'open-finance', hint: 'harbour-bank' });
  const consent = outcome.consent.id;
  // A new wrangler dev: nothing cached (discovery, JWKS, DPoP nonces), the built Worker
  // wrapped in tests/lib/counting-worker.mjs.
  const counting = await stack.startWorker({ main: path.join(ROOT, 'tests', 'lib', 'counting-worker.mjs') });
  try {
    const tally = async () => (await stack.workerFetch(`${counting.url}/auth/__counts`)).json();
    const worstCall = async () => {
      await expireAccessToken(consent);
      await tally(); // a fresh tally for this call only
      const res = await stack.workerFetch(`${counting.url}/api/open-finance/accounts`, { headers: headers(user, { 'X-Consentry-Consent': consent }) });
      assert.equal(res.status, 200, describe(res));
      // What runs under waitUntil after the answer counts too: the tally is read once nothing
      // is open and it has stopped changing.
      let last = '';
      let peeks = 0;
      let settled = false;
      while (!settled && peeks < 40) {
        await sleep(100);
        peeks += 1;
        const peek = await (await stack.workerFetch(`${counting.url}/auth/__counts?peek`)).json();
        const now = JSON.stringify(peek);
        settled = peek.open === 0 && now === last;
        last = now;
      }
      assert.ok(settled, `the Worker's work after the answer settled: ${last}`);
      // `requests`: how many requests the call made of the tally, the /api call aside.
      return { ...(await tally()), requests: peeks + 2 };
    };
    const cold = await worstCall();
    console.log(`worst /api path, cold isolate: ${cold.fetches.length} subrequests (${cold.fetches.join(', ')}), at most ${cold.maxOpen} open at once, ${cold.d1.length} D1 statements`);
    assert.ok(cold.fetches.some((line) => line.startsWith('POST') && line.endsWith('/token')), `a refresh was made: ${cold.fetches}`);
    assert.ok(cold.fetches.some((line) => line.includes('/data/v1/accounts')), `the data API was called: ${cold.fetches}`);
    assert.ok(cold.fetches.some((line) => line.includes('openid-configuration')), `discovery ran (a cold isolate): ${cold.fetches}`);
    assert.ok(cold.fetches.length <= 50, `subrequests: ${cold.fetches.length}`);
    assert.ok(cold.maxOpen >= 1 && cold.maxOpen <= 6, `open connections: ${cold.maxOpen}`);
    assert.ok(cold.d1.length >= 1 && cold.d1.length <= 50, `D1 statements: ${cold.d1.length} (${cold.d1})`);
    // CPU, as figures: workerd's CPU time a request, warm (the runtime compiles hot Wasm
    // functions again, optimized, in the background, and that counts too). It holds the
    // runtime, wrangler's dev proxy and miniflare's JavaScript simulators of D1 and the rate
    // limits, none of which production bills to the Worker; so the same process is timed
    // doing only the platform's part of the worst path (a request that does no work, as
    // many D1 statements, as many fetches of the bank), and the difference estimates the
    // Worker's own CPU.
    const rounds = 20;
    const warmTallies = [];
    for (let i = 0; i < rounds; i += 1) warmTallies.push(await worstCall());
    const statements = Math.round(warmTallies.reduce((sum, t) => sum + t.d1.length, 0) / rounds);
    const fetches = Math.round(warmTallies.reduce((sum, t) => sum + t.fetches.length, 0) / rounds);
    const requests = Math.round(warmTallies.reduce((sum, t) => sum + t.requests, 0) / rounds);
    const cpuOf = async (call) => {
      const before = await workerdCpuMs(counting.pgid);
      for (let i = 0; i < rounds; i += 1) await call();
      return ((await workerdCpuMs(counting.pgid)) - before) / rounds;
    };
    const probe = (route) => async () => {
      const res = await stack.workerFetch(`${counting.url}/auth/${route}`);
      assert.equal(res.status, 204, describe(res));
    };
    const worst = await cpuOf(async () => {
      const warm = await worstCall();
      assert.ok(warm.fetches.length <= 50 && warm.maxOpen <= 6 && warm.d1.length <= 50, JSON.stringify(warm));
    });
    // As many requests as the worst call makes: its tally reads less one, and two probes
    // in place of its /api call.
    const platform = await cpuOf(async () => {
      for (let i = 1; i < requests; i += 1) await tally();
      await probe(`__d1?n=${statements}`)();
      await probe(`__fetch?n=${fetches}&url=${encodeURIComponent(`${stack.fapiBank.issuer}/.well-known/openid-configuration`)}`)();
    });
    console.log(`workerd CPU a request, warm, over ${rounds} each: the worst /api path (${fetches} fetches, ${statements} D1 statements) ${worst.toFixed(1)} ms; the platform doing as many, with no Worker, ${platform.toFixed(1)} ms; the Worker's own, estimated, ${(worst - platform).toFixed(1)} ms (Free plan: 10 ms)`);
  } finally {
    await counting.stop();
  }
});

test('leak scan: no token, code or private key (DPoP or client) in any answer, log or row in clear', async () => {
  await new Promise((resolve) => { setTimeout(resolve, 500); });
  const issued = fapi();
  const secrets = [
    ...issued.tokens.map((token) => [token.type, token.value]),
    ...issued.codes.map(({ code }) => ['code', code]),
    ['FAPI client key (d)', stack.secrets.fapiPrivateJwk.d],
  ];
  assert.ok(issued.tokens.length > 0 && issued.codes.length > 0);
  const leaks = await findLeaks(stack, secrets, { atRest: true });
  // A DPoP private key is made inside the Worker: no private JWK member may show anywhere.
  const privateMember = /"d"\s*:\s*"/;
  for (const [i, res] of stack.responses.entries()) if (privateMember.test(res.raw)) leaks.push(`a private JWK member in response #${i}`);
  if (privateMember.test(stack.logs())) leaks.push('a private JWK member in the logs');
  for (const [name, bytes] of await storedFiles(stack)) {
    if (privateMember.test(bytes.toString('latin1'))) leaks.push(`a private JWK member at rest in ${name}`);
  }
  assert.deepEqual(leaks, []);
});
