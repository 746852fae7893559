// consentry against its peers, in one run on this machine (scripts/bench). Prints, asserts
// nothing about time:
//
//   1. Sizes as users receive them, gzip -9: our browser package as an app ships it (esbuild
//      bundle, minified, plus the .wasm) beside oidc-client-ts, oauth4webapi (whole, and the
//      part a code flow uses) and auth0-spa-js, installed from npm into a temporary folder and
//      measured the same way; our Worker's Wasm and glue as built, beside the JavaScript
//      peer Worker (bench/peer/worker.mjs, on oauth4webapi) bundled and minified by esbuild.
//   2. Cold start: compiling and instantiating the Worker's Wasm in V8 (Chromium's: Node 20's
//      V8 lacks the exception handling workerd's has; workerd itself refuses to compile Wasm
//      at run time), and each Worker's first answer after wrangler dev says it is ready.
//   3. Latency of /auth/start, /auth/callback (exchange, id_token checks) and /api (a live
//      token) for our Worker and for the peer, under the same wrangler dev against the same
//      bank, rounds alternating; the ratio is the peer's median over ours (above 1: we are
//      faster). Beside them, what one D1 read costs there (the peer's /bench/d1 route).
//   4. The demo's first impression: ./scripts/demo started, then its page and an account
//      route asked for as soon as wrangler says it is ready.
//
//   ./scripts/bench [rounds]        (default 30 flows per Worker)

import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { consentAtBank } from '../tests/lib/bank-user.mjs';
import { launchBrowser } from '../tests/lib/browser.mjs';
import { outcomePage } from '../tests/lib/edge.mjs';
import { BANK_ACCOUNT } from '../tests/lib/flow.mjs';
import { BANK_CLIENT_SECRET, CookieJar, ROOT, randomToken, startStack } from '../tests/lib/worker-harness.mjs';

const rounds = Number(process.argv[2] || 30);
const exec = promisify(execFile);
const ESBUILD = path.join(ROOT, 'node_modules', '.bin', 'esbuild');
const PEERS = ['oidc-client-ts', 'oauth4webapi', '@auth0/auth0-spa-js'];
// What a single-page app's code flow with PKCE takes from oauth4webapi.
const OAUTH4WEBAPI_CODE_FLOW = [
  'discoveryRequest', 'processDiscoveryResponse', 'generateRandomCodeVerifier', 'calculatePKCECodeChallenge',
  'generateRandomState', 'generateRandomNonce', 'validateAuthResponse', 'authorizationCodeGrantRequest',
  'processAuthorizationCodeResponse', 'None',
];
const WORKER_PORT = 8790;
const PEER_PORT = 8791;
const BANK_PORT = 9110;

const kb = (bytes) => `${(bytes / 1000).toFixed(1)} KB`;
// gzip -9 itself, as scripts/size measures (zlib's level 9 differs by a few bytes).
const gz = (bytes) => {
  const gzip = spawnSync('gzip', ['-9c'], { input: bytes, maxBuffer: 64 << 20 });
  if (gzip.status !== 0) throw new Error(`gzip failed: ${gzip.stderr}`);
  return gzip.stdout.length;
};
const row = (name, value, note = '') => console.log(`  ${name.padEnd(44)} ${String(value).padStart(10)}${note ? `  ${note}` : ''}`);

async function bundled(entry, cwd) {
  const { stdout } = await exec(ESBUILD, [entry, '--bundle', '--minify', '--format=esm', '--platform=browser', '--log-level=error'], { cwd, maxBuffer: 64 << 20, encoding: 'buffer' });
  return stdout;
}

async function sizes() {
  console.log('\nsizes (gzip -9; browser code bundled and minified by esbuild, as an app ships it)');
  const wasm = await readFile(path.join(ROOT, 'pkg', 'wasm', 'consentry_bg.wasm'));
  const loader = await bundled(path.join(ROOT, 'pkg', 'consentry.js'), ROOT);
  const ours = gz(wasm) + gz(loader);
  row('consentry (browser: JS + Wasm)', kb(ours), `JS ${gz(loader)} B + Wasm ${gz(wasm)} B`);

  const dir = await mkdtemp(path.join(tmpdir(), 'consentry-peers-'));
  try {
    await writeFile(path.join(dir, 'package.json'), '{"private":true,"type":"module"}');
    await exec('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', ...PEERS], { cwd: dir, maxBuffer: 16 << 20 });
    const entries = PEERS.map((name) => [name, `export * from '${name}';`]);
    entries.push(['oauth4webapi (code flow part)', `export { ${OAUTH4WEBAPI_CODE_FLOW.join(', ')} } from 'oauth4webapi';`]);
    for (const [name, source] of entries) {
      const entry = path.join(dir, `${name.replace(/[^a-z0-9]+/gi, '_')}.mjs`);
      await writeFile(entry, source);
      const base = name.split(' ')[0];
      const { version } = JSON.parse(await readFile(path.join(dir, 'node_modules', base, 'package.json'), 'utf8'));
      const size = gz(await bundled(entry, dir));
      row(`${name} ${version}`, kb(size), `${(size / ours).toFixed(2)} x ours`);
    }
  } catch (error) {
    row('peers', 'unavailable', `npm install failed: ${String(error.message).split('\n')[0]}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const workerWasm = await readFile(path.join(ROOT, 'build', 'index_bg.wasm'));
  const glue = await readFile(path.join(ROOT, 'build', 'index.js'));
  row('consentry Worker (Wasm + glue)', kb(gz(workerWasm) + gz(glue)), `Wasm ${gz(workerWasm)} B + glue ${gz(glue)} B`);
  const { stdout: peer } = await exec(ESBUILD, [path.join(ROOT, 'bench', 'peer', 'worker.mjs'), '--bundle', '--minify', '--format=esm', '--platform=neutral', '--log-level=error'], { cwd: ROOT, maxBuffer: 64 << 20, encoding: 'buffer' });
  row('peer Worker (oauth4webapi, bundled)', kb(gz(peer)));
  return workerWasm;
}

async function compileFigures(workerWasm) {
  console.log('\ncold start');
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const figures = await page.evaluate(async (base64) => {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      const compile = [];
      const instantiate = [];
      for (let i = 0; i < 10; i += 1) {
        let started = performance.now();
        const module = await WebAssembly.compile(bytes);
        compile.push(performance.now() - started);
        // The glue's imports as stubs: there is no start function, so instantiating runs no
        // Rust code and measures what V8 itself does.
        const imports = {};
        for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
          imports[from] ??= {};
          if (kind === 'function') imports[from][name] = () => {};
          if (kind === 'tag') imports[from][name] = WebAssembly.JSTag; // JavaScript exceptions
        }
        started = performance.now();
        await WebAssembly.instantiate(module, imports);
        instantiate.push(performance.now() - started);
      }
      return { compile, instantiate, v8: navigator.userAgent.match(/Chrome\/[\d.]+/)?.[0] };
    }, workerWasm.toString('base64'));
    row('Worker Wasm: compile', `${median(figures.compile).toFixed(1)} ms`, `median of 10, V8 of ${figures.v8}, ${(workerWasm.length / 1000).toFixed(0)} KB raw`);
    row('Worker Wasm: instantiate', `${median(figures.instantiate).toFixed(2)} ms`, 'median of 10');
  } finally {
    await browser.close();
  }
}

function median(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
}

function p90(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(0.9 * sorted.length))];
}

async function timed(url, init) {
  const started = performance.now();
  const response = await fetch(url, { redirect: 'manual', ...init });
  const body = await response.text();
  return { response, body, ms: performance.now() - started };
}

// One full flow at a Worker (`base`, seen by the browser as `origin`) for `user`: start,
// the bank's consent (not timed), the callback, then one /api call.
async function flow({ base, origin }, user) {
  const jar = new CookieJar();
  const verifier = randomToken();
  const started = await timed(`${base}/auth/start`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: origin },
    body: new URLSearchParams({ provider: 'local-bank', state: randomToken(), code_verifier: verifier, user }).toString(),
  });
  if (started.response.status !== 303) throw new Error(`${base} start: HTTP ${started.response.status} ${started.body}`);
  jar.store(started.response.headers.getSetCookie());
  const back = await consentAtBank(started.response.headers.get('location'), { user: BANK_ACCOUNT[user], redirectPrefix: `${origin}/auth/callback/` });
  const callback = await timed(`${base}${new URL(back).pathname}${new URL(back).search}`, { headers: { Cookie: jar.header({ crossSite: true }) } });
  const { outcome } = outcomePage({ status: callback.response.status, body: callback.body });
  if (callback.response.status !== 200 || outcome?.status !== 'granted') throw new Error(`${base} callback: HTTP ${callback.response.status} ${callback.body.slice(0, 300)}`);
  const api = await timed(`${base}/api/local-bank/accounts`, { headers: { 'X-Consentry': '1', Origin: origin, Authorization: `Bearer ${user}`, 'X-Consentry-Consent': outcome.consent.id } });
  if (api.response.status !== 200) throw new Error(`${base} /api: HTTP ${api.response.status} ${api.body.slice(0, 300)}`);
  return { start: started.ms, callback: callback.ms, api: api.ms };
}

async function firstAnswer(url) {
  const started = performance.now();
  const response = await fetch(url, { redirect: 'manual' });
  await response.arrayBuffer();
  return performance.now() - started;
}

async function latency() {
  const peerOrigin = `http://localhost:${PEER_PORT}`;
  const stack = await startStack({ workerPort: WORKER_PORT, bankPort: BANK_PORT, extraRedirectUris: [`${peerOrigin}/auth/callback/local-bank`], logLevel: 'warn' });
  try {
    const ours = { base: stack.workerUrl, origin: stack.publicOrigin };
    const oursFirst = await firstAnswer(`${stack.workerUrl}/auth/consents`);
    const peerUrl = await stack.startPeerWorker({
      port: PEER_PORT,
      main: path.join(ROOT, 'bench', 'peer', 'worker.mjs'),
      migrationsDir: path.join(ROOT, 'bench', 'peer', 'migrations'),
      vars: {
        PEER_ISSUER: stack.issuer,
        PEER_CLIENT_ID: 'consentry-demo',
        PEER_CLIENT_SECRET: BANK_CLIENT_SECRET,
        PEER_PUBLIC_URL: peerOrigin,
        PEER_SCOPES: 'openid profile accounts balance transactions offline_access',
        PEER_API_BASE: `${stack.issuer}/data/v1`,
        PEER_KEY: randomToken(32),
      },
    });
    const peerFirst = await firstAnswer(`${peerUrl}/api/local-bank/accounts`);
    row('consentry Worker: first answer after ready', `${oursFirst.toFixed(0)} ms`, 'wrangler dev, workerd (the answer itself is a 401)');
    row('peer Worker: first answer after ready', `${peerFirst.toFixed(0)} ms`, 'wrangler dev, workerd (the answer itself is a 401)');

    const peer = { base: peerUrl, origin: peerOrigin };
    const workers = { consentry: ours, peer };
    const times = { consentry: { start: [], callback: [], api: [] }, peer: { start: [], callback: [], api: [] } };
    for (const worker of Object.values(workers)) await flow(worker, 'usr_alice'); // warm: discovery, JWKS, isolates
    const users = Object.keys(BANK_ACCOUNT);
    for (let i = 0; i < rounds; i += 1) {
      for (const name of i % 2 ? ['peer', 'consentry'] : ['consentry', 'peer']) {
        const sample = await flow(workers[name], users[i % users.length]);
        for (const route of ['start', 'callback', 'api']) times[name][route].push(sample[route]);
      }
    }
    // What one D1 round trip costs under this wrangler dev: the peer's route making n reads.
    const d1 = {};
    for (const n of [0, 1, 3]) {
      d1[n] = [];
      for (let i = 0; i < 20; i += 1) d1[n].push((await timed(`${peerUrl}/bench/d1/${n}`)).ms);
    }
    console.log(`\nlatency (${rounds} flows each, rounds alternating; local bank, wrangler dev, this machine)`);
    console.log(`  ${'route'.padEnd(16)} ${'consentry median / p90'.padStart(24)} ${'peer median / p90'.padStart(22)} ${'ratio'.padStart(7)}`);
    for (const [route, label] of [['start', '/auth/start'], ['callback', '/auth/callback'], ['api', '/api']]) {
      const [a, b] = [times.consentry[route], times.peer[route]];
      const cell = (samples) => `${median(samples).toFixed(1)} / ${p90(samples).toFixed(1)} ms`;
      console.log(`  ${label.padEnd(16)} ${cell(a).padStart(24)} ${cell(b).padStart(22)} ${(median(b) / median(a)).toFixed(2).padStart(7)}`);
    }
    const perRead = (median(d1[3]) - median(d1[0])) / 3;
    console.log(`  one D1 read: ${perRead.toFixed(1)} ms (a route doing 0, 1, 3 reads: ${[0, 1, 3].map((n) => median(d1[n]).toFixed(1)).join(', ')} ms)`);
  } finally {
    await stack.stop();
  }
}

function portTaken(port) {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' }, () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

// ./scripts/demo, timed from wrangler's "Ready" line to its first answers.
async function demo() {
  console.log('\nthe demo (./scripts/demo)');
  for (const port of [8787, 9000, 9001, 9002, 9003, 9004]) {
    if (await portTaken(port)) {
      row('first page', 'skipped', `port ${port} is in use`);
      return;
    }
  }
  const child = spawn(path.join(ROOT, 'scripts', 'demo'), [], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
  let output = '';
  try {
    const launched = performance.now();
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "Ready" within 10 minutes:\n${output.slice(-2000)}`)), 600_000);
      const watch = (chunk) => {
        output += chunk;
        if (/Ready on/.test(output)) { clearTimeout(timer); resolve(); }
      };
      child.stdout.on('data', watch);
      child.stderr.on('data', watch);
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`./scripts/demo exited (${code}):\n${output.slice(-2000)}`)); });
    });
    const ready = performance.now();
    const page = await firstAnswer('http://localhost:8787/');
    const route = await firstAnswer('http://localhost:8787/auth/consents');
    row('from launch to "Ready"', `${((ready - launched) / 1000).toFixed(1)} s`, 'builds included (warm cache)');
    row('first page after "Ready"', `${page.toFixed(0)} ms`);
    row('first account route after it', `${route.toFixed(0)} ms`);
  } finally {
    try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
    await new Promise((resolve) => { setTimeout(resolve, 2000); });
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

const workerWasm = await sizes();
await compileFigures(workerWasm);
await latency();
await demo();
