// Prints how long /api/{provider}/{path} takes through the Worker under wrangler dev (workerd,
// local D1) against the local bank: with a live token, and with a token that must be
// refreshed first (a refresh token grant at the bank, the new set sealed and stored, then the
// call). Beside them, the bank's data API called directly with a live token: what the Worker
// adds. A benchmark, not a test: it asserts nothing about time.
//
//   ./scripts/api-latency            (or: node bench/api-latency.mjs [live-rounds] [refresh-rounds])

import { expireAccessToken } from '../tests/lib/edge.mjs';
import { grantConsent } from '../tests/lib/flow.mjs';
import { startStack } from '../tests/lib/worker-harness.mjs';

const liveRounds = Number(process.argv[2] || 40);
const refreshRounds = Number(process.argv[3] || 15);

function figures(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return `median ${median.toFixed(1)} ms, p90 ${at(0.9).toFixed(1)} ms, min ${sorted[0].toFixed(1)} ms (n=${sorted.length})`;
}

const stack = await startStack({ workerPort: 8790, bankPort: 9110 });
try {
  const { outcome } = await grantConsent(stack, { user: 'usr_alice' });
  const consent = outcome.consent.id;
  const headers = { 'X-Consentry': '1', Origin: stack.publicOrigin, Authorization: 'Bearer usr_alice', 'X-Consentry-Consent': consent };
  const call = async () => {
    const started = performance.now();
    const res = await fetch(`${stack.workerUrl}/api/local-bank/accounts`, { headers });
    await res.text();
    if (res.status !== 200) throw new Error(`/api answered ${res.status}`);
    return performance.now() - started;
  };
  for (let i = 0; i < 5; i += 1) await call(); // warm: discovery cached, isolate hot

  const live = [];
  for (let i = 0; i < liveRounds; i += 1) live.push(await call());

  const refreshed = [];
  for (let i = 0; i < refreshRounds; i += 1) {
    await expireAccessToken(stack, consent);
    const before = stack.issued.refreshes.length;
    refreshed.push(await call());
    if (stack.issued.refreshes.length !== before + 1) throw new Error('the call did not refresh exactly once');
  }

  const token = stack.issued.tokens.filter((issued) => issued.type === 'access_token').at(-1).value;
  const direct = [];
  for (let i = 0; i < liveRounds; i += 1) {
    const started = performance.now();
    const res = await fetch(`${stack.issuer}/data/v1/accounts`, { headers: { Authorization: `Bearer ${token}` } });
    await res.text();
    direct.push(performance.now() - started);
  }

  console.log(`/api with a live token:        ${figures(live)}`);
  console.log(`/api with a refresh first:     ${figures(refreshed)}`);
  console.log(`bank data API, called direct:  ${figures(direct)}`);
} finally {
  await stack.stop();
}
