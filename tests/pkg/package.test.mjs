// The npm package as a user gets it: `npm pack` on pkg/, installed into a fresh Vite +
// TypeScript project, type-checked strictly, built with `vite build`, and the built app loaded
// in Chromium, where init() must load the Wasm and define <consentry-connect>.
// Needs ./scripts/build-pkg first (pkg/wasm/).
//
//   NODE_NO_WARNINGS=1 node --test tests/pkg/package.test.mjs

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';

import { launchBrowser } from '../lib/browser.mjs';
import { ROOT } from '../lib/worker-harness.mjs';

const run = promisify(execFile);
const PKG = path.join(ROOT, 'pkg');
// What the fresh project installs from the registry (Vite 7 is the newest on Node 20.19).
const VITE = '7.3.8';
const TYPESCRIPT = '5.9.3';

let work;
let tarball;
let app;

before(async () => {
  assert.ok(existsSync(path.join(PKG, 'wasm', 'consentry_bg.wasm')), 'run ./scripts/build-pkg first');
  work = await mkdtemp(path.join(tmpdir(), 'consentry-pkg-'));
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: PKG });
  tarball = path.join(work, JSON.parse(stdout)[0].filename);
  app = path.join(work, 'app');
  await mkdir(path.join(app, 'src'), { recursive: true });
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test('npm pack ships exactly the package files', async () => {
  const { stdout } = await run('tar', ['tzf', tarball]);
  assert.deepEqual(stdout.trim().split('\n').sort(), [
    'package/README.md',
    'package/consentry.d.ts',
    'package/consentry.js',
    'package/package.json',
    'package/wasm/consentry_bg.wasm',
  ]);
});

test('the tarball installs, type-checks and builds in a fresh Vite project, and its Wasm loads', { timeout: 300_000 }, async () => {
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }, null, 2));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, `vite@${VITE}`, `typescript@${TYPESCRIPT}`], { cwd: app, maxBuffer: 16 << 20 });

  await writeFile(path.join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'ESNext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM'],
      strict: true, noEmit: true, skipLibCheck: false, noImplicitAny: true,
    },
    include: ['src'],
  }, null, 2));
  await writeFile(path.join(app, 'index.html'), '<!doctype html><html><body><consentry-connect provider="local-bank" user="usr_alice">Connect</consentry-connect><script type="module" src="/src/main.ts"></script></body></html>');
  // Uses every public name with its declared types; the @ts-expect-error lines fail the
  // type check if the types were loose (an `any` would accept them).
  await writeFile(path.join(app, 'src', 'main.ts'), `import { ConsentClient, ConsentError, init, type Consent, type ConsentList, type Revocation } from 'consentry';

const client = new ConsentClient({ authBase: '/auth', timeoutMs: 60_000, popup: { width: 500 } });
async function connectBank(): Promise<Consent> {
  return client.connect({ provider: 'local-bank', user: 'usr_alice', scope: ['openid', 'accounts'] });
}
async function account(): Promise<[ConsentList, Revocation]> {
  const list = await client.consents({ user: 'usr_alice' });
  const status: 'active' | 'revoked' | 'expired' = list.consents[0].status;
  void status;
  return [list, await client.revoke(list.consents[0].id)];
}
interface Accounts { accounts: { id: string; name: string }[] }
async function balances(consent: string): Promise<string[]> {
  const { accounts } = await client.api<Accounts>('local-bank', '/accounts', { consent, user: 'usr_alice' });
  const account: string | null = list0?.consents[0].account ?? null;
  void account;
  return accounts.map((entry) => entry.id);
}
let list0: ConsentList | undefined;
function describe(error: unknown): string {
  return error instanceof ConsentError ? error.code + ' ' + error.description + ' ' + (error.status ?? '') : 'other';
}
const button = document.querySelector('consentry-connect');
button?.addEventListener('consentry-granted', (event) => console.log(event.detail.scopes.join(' ')));
button?.addEventListener('consentry-failed', (event) => console.log(event.detail.code));
// @ts-expect-error provider must be a string
void client.connect({ provider: 1, user: 'usr_alice' });
// @ts-expect-error a consent list's status is one of three
const badStatus: ConsentList['consents'][number]['status'] = 'pending';
void badStatus;
// @ts-expect-error a consent's scopes are strings
const wrong: Consent = { id: '', provider: '', user: '', scopes: [1], granted_at: '', expires_at: null };
// @ts-expect-error api() methods are the HTTP methods a data API takes
void client.api('local-bank', '/accounts', { method: 'BREW' });
void wrong; void connectBank; void account; void describe; void balances;

init().then(() => {
  document.body.dataset.wasm = customElements.get('consentry-connect') ? 'loaded' : 'no-element';
}, (error: ConsentError) => {
  document.body.dataset.wasm = 'failed: ' + error.code;
});
`);

  await run(path.join(app, 'node_modules', '.bin', 'tsc'), ['-p', '.'], { cwd: app }).catch((error) => {
    assert.fail(`tsc found type errors:\n${error.stdout}${error.stderr}`);
  });
  await run(path.join(app, 'node_modules', '.bin', 'vite'), ['build', '--logLevel', 'warn'], { cwd: app });

  const assets = await readdir(path.join(app, 'dist', 'assets'));
  const wasm = assets.filter((name) => name.endsWith('.wasm'));
  assert.equal(wasm.length, 1, `one .wasm asset: ${assets}`);
  assert.deepEqual(await readFile(path.join(app, 'dist', 'assets', wasm[0])), await readFile(path.join(PKG, 'wasm', 'consentry_bg.wasm')), 'the package\'s Wasm, byte for byte');
  const js = assets.filter((name) => name.endsWith('.js'));
  const bundle = (await Promise.all(js.map((name) => readFile(path.join(app, 'dist', 'assets', name), 'utf8')))).join('\n');
  assert.ok(bundle.includes(wasm[0]), 'the bundle refers to the emitted .wasm');

  // Serve dist/ and load it: init() must fetch and instantiate the Wasm.
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
  const server = createServer(async (request, response) => {
    const file = path.join(app, 'dist', new URL(request.url, 'http://x').pathname.replace(/\/$/, '/index.html'));
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'Content-Type': types[path.extname(file)] ?? 'application/octet-stream' });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction(() => document.body.dataset.wasm !== undefined, null, { timeout: 20_000 });
    assert.equal(await page.evaluate(() => document.body.dataset.wasm), 'loaded');
    const rendered = await page.$eval('consentry-connect', (element) => ({
      button: element.shadowRoot?.querySelector('button[part="button"]') !== null,
      label: element.shadowRoot?.querySelector('slot')?.assignedNodes().map((node) => node.textContent).join(''),
    }));
    assert.deepEqual(rendered, { button: true, label: 'Connect' }, 'the element renders its button with the page\'s label');
  } finally {
    await browser.close();
    server.close();
  }
});
