// Prints how long /auth/start and /auth/callback take for a plain provider (the local bank:
// client_secret_basic, query request, Bearer tokens) and for the FAPI 2.0 hub (PAR with a
// PS256 request object, private_key_jwt, a DPoP key made per consent, DPoP-bound tokens and
// the server's nonce), under wrangler dev against the local banks, rounds alternating. The
// bank's own login pages are not timed. A benchmark, not a test: it asserts nothing.
//
//   ./scripts/flow-latency            (or: node bench/flow-latency.mjs [rounds])

import { consentAtBank } from '../tests/lib/bank-user.mjs';
import { BANK_ACCOUNT } from '../tests/lib/flow.mjs';
import { CookieJar, randomToken, startStack } from '../tests/lib/worker-harness.mjs';

const rounds = Number(process.argv[2] || 15);

function figures(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return `median ${median.toFixed(1)} ms, p90 ${at(0.9).toFixed(1)} ms (n=${sorted.length})`;
}

async function flow(stack, provider, user) {
  const jar = new CookieJar();
  const started = await stack.workerFetch('/auth/start', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.publicOrigin },
    body: new URLSearchParams({ provider, state: randomToken(), code_verifier: randomToken(), user }).toString(),
    jar,
  });
  if (started.status !== 303) throw new Error(`${provider} start: HTTP ${started.status}`);
  const url = await consentAtBank(started.headers.get('location'), { user: BANK_ACCOUNT[user], redirectPrefix: `${stack.publicOrigin}/auth/callback/` });
  const callback = await stack.workerFetch(url, { jar, crossSite: true });
  if (callback.status !== 200) throw new Error(`${provider} callback: HTTP ${callback.status}`);
  return { start: started.elapsedMs, callback: callback.elapsedMs };
}

const stack = await startStack({ workerPort: 8790, bankPort: 9110 });
try {
  const providers = ['local-bank', 'open-finance'];
  const times = Object.fromEntries(providers.map((provider) => [provider, { start: [], callback: [] }]));
  for (const provider of providers) await flow(stack, provider, 'usr_alice'); // warm: discovery, JWKS, isolate
  const users = Object.keys(BANK_ACCOUNT);
  for (let i = 0; i < rounds; i += 1) {
    for (const provider of i % 2 ? [...providers].reverse() : providers) {
      const { start, callback } = await flow(stack, provider, users[i % users.length]);
      times[provider].start.push(start);
      times[provider].callback.push(callback);
    }
  }
  for (const provider of providers) {
    console.log(`${provider.padEnd(13)} /auth/start:    ${figures(times[provider].start)}`);
    console.log(`${provider.padEnd(13)} /auth/callback: ${figures(times[provider].callback)}`);
  }
} finally {
  await stack.stop();
}
