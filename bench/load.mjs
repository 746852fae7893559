// Load: full consent flows at the local bank through the Worker under wrangler dev, many at
// once, then a check of every outcome and of every user's consent list: nothing lost,
// nothing duplicated, no consent crossed to another user, no 5xx. Prints flows per second and
// p50/p99 of each route. A script, not a timed test: the figures are printed, and only the
// correctness counts make it exit non-zero.
//
//   ./scripts/load [flows] [concurrency]        (default 1000 flows, 50 at once)

import { consentAtBank } from '../tests/lib/bank-user.mjs';
import { outcomePage } from '../tests/lib/edge.mjs';
import { BANK_ACCOUNT } from '../tests/lib/flow.mjs';
import { CookieJar, randomToken, startStack } from '../tests/lib/worker-harness.mjs';

const flows = Number(process.argv[2] || 1000);
const concurrency = Number(process.argv[3] || 50);
const users = Object.keys(BANK_ACCOUNT);

function quantile(samples, q) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

const stack = await startStack({ workerPort: 8790, bankPort: 9110, timeoutMs: 20_000, logLevel: 'warn' });
const times = { start: [], callback: [], api: [] };
const statuses = new Map();
const granted = []; // { user, consent }
const failures = [];

async function timed(route, url, init) {
  const started = performance.now();
  const response = await fetch(url, { redirect: 'manual', ...init });
  const body = await response.text();
  times[route].push(performance.now() - started);
  statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
  return { response, body, status: response.status };
}

async function flow(index) {
  const user = users[index % users.length];
  const jar = new CookieJar();
  const started = await timed('start', `${stack.workerUrl}/auth/start`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: stack.publicOrigin },
    body: new URLSearchParams({ provider: 'local-bank', state: randomToken(), code_verifier: randomToken(), user }).toString(),
  });
  if (started.status !== 303) throw new Error(`start: HTTP ${started.status}`);
  jar.store(started.response.headers.getSetCookie());
  const back = new URL(await consentAtBank(started.response.headers.get('location'), { user: BANK_ACCOUNT[user], redirectPrefix: `${stack.publicOrigin}/auth/callback/` }));
  const callback = await timed('callback', `${stack.workerUrl}${back.pathname}${back.search}`, { headers: { Cookie: jar.header({ crossSite: true }) } });
  const { outcome } = outcomePage({ status: callback.status, body: callback.body });
  if (callback.status !== 200 || outcome?.status !== 'granted' || outcome.consent.user !== user) {
    throw new Error(`callback: HTTP ${callback.status} ${outcome?.status ?? ''} ${outcome?.error ?? ''}`);
  }
  granted.push({ user, consent: outcome.consent.id });
  const api = await timed('api', `${stack.workerUrl}/api/local-bank/accounts`, {
    headers: { 'X-Consentry': '1', Origin: stack.publicOrigin, Authorization: `Bearer ${user}`, 'X-Consentry-Consent': outcome.consent.id },
  });
  if (api.status !== 200) {
    let code = '';
    try { code = JSON.parse(api.body).code ?? ''; } catch { /* not the Worker's JSON */ }
    throw new Error(`/api: HTTP ${api.status} ${code}`.trim());
  }
}

let exitCode = 0;
try {
  const began = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < flows) {
      const index = next;
      next += 1;
      try {
        await flow(index);
      } catch (error) {
        failures.push(error.message.split('\n')[0]);
      }
    }
  }));
  const seconds = (performance.now() - began) / 1000;

  // Every user's consent list against the flows that granted them.
  const listed = new Map();
  for (const user of users) {
    const res = await fetch(`${stack.workerUrl}/auth/consents`, { headers: { 'X-Consentry': '1', Origin: stack.publicOrigin, Authorization: `Bearer ${user}` } });
    const { consents } = await res.json();
    listed.set(user, consents);
  }
  const owner = new Map(granted.map(({ user, consent }) => [consent, user]));
  let lost = 0;
  let duplicated = 0;
  let crossed = 0;
  for (const user of users) {
    const ids = listed.get(user).map((consent) => consent.id);
    duplicated += ids.length - new Set(ids).size;
    crossed += ids.filter((id) => owner.has(id) && owner.get(id) !== user).length;
    const accounts = new Set(listed.get(user).map((consent) => consent.account));
    if (accounts.size > 1) crossed += accounts.size - 1; // one bank person per app user
    lost += granted.filter((grant) => grant.user === user && !ids.includes(grant.consent)).length;
  }
  const serverErrors = [...statuses].filter(([status]) => status >= 500).reduce((sum, [, count]) => sum + count, 0);

  console.log(`\nload: ${flows} full flows, ${concurrency} at once, local bank, wrangler dev, this machine`);
  console.log(`  granted ${granted.length}, failed ${failures.length}, in ${seconds.toFixed(1)} s: ${(granted.length / seconds).toFixed(1)} flows per second`);
  for (const [route, label] of [['start', '/auth/start'], ['callback', '/auth/callback'], ['api', '/api']]) {
    console.log(`  ${label.padEnd(16)} p50 ${quantile(times[route], 0.5).toFixed(1)} ms   p99 ${quantile(times[route], 0.99).toFixed(1)} ms   (n=${times[route].length})`);
  }
  console.log(`  lost ${lost}, duplicated ${duplicated}, crossed ${crossed}, 5xx ${serverErrors}`);
  console.log(`  statuses: ${[...statuses].sort(([a], [b]) => a - b).map(([status, count]) => `${status}: ${count}`).join(', ')}`);
  // Why flows failed, most common first (a flow fails at its first wrong answer).
  const reasons = new Map();
  for (const failure of failures) reasons.set(failure, (reasons.get(failure) ?? 0) + 1);
  for (const [reason, count] of [...reasons].sort(([, a], [, b]) => b - a)) console.log(`  ${count} failed: ${reason}`);
  // The bank's own word on the code exchanges it refused.
  const refused = new Map();
  for (const exchange of stack.issued.exchanges.filter((e) => e.status !== 200)) {
    const why = exchange.error_description ?? `HTTP ${exchange.status}`;
    refused.set(why, (refused.get(why) ?? 0) + 1);
  }
  for (const [why, count] of refused) console.log(`  ${count} code exchanges refused by the bank: ${why}`);
  if (lost || duplicated || crossed || serverErrors || failures.length) exitCode = 1;
} finally {
  await stack.stop();
}
process.exit(exitCode);
