// The Worker's shipped configuration holds no secret (security checklist F4): secrets reach
// the Worker only through `wrangler secret put` (or a local .dev.vars, which .gitignore keeps out), so
// wrangler.toml's vars name none of the secrets the Worker reads, and no var's value looks
// like one (a private JWK, a key of 32 random bytes).
//
//   node --test tests/edge/config.test.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';

import { ROOT } from '../lib/worker-harness.mjs';

/** wrangler.toml as wrangler itself reads it. */
function wranglerConfig() {
  const script = `const { experimental_readRawConfig: read } = require(${JSON.stringify(path.join(ROOT, 'node_modules', 'wrangler'))});
process.stdout.write(JSON.stringify(read({ config: ${JSON.stringify(path.join(ROOT, 'wrangler.toml'))} }).rawConfig));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, WRANGLER_SEND_METRICS: 'false' } }));
}

/** The secrets the Worker reads, as config.rs names them. */
async function secretNames() {
  const config = await readFile(path.join(ROOT, 'crates', 'consentry', 'src', 'edge', 'config.rs'), 'utf8');
  const named = [...config.matchAll(/secret\(env, "([A-Z_]+)"\)|SealingKey::parse\("([A-Z_]+)"/g)].map((m) => m[1] ?? m[2]);
  return new Set(named);
}

test('F4: wrangler.toml\'s vars hold no secret, by name or by look', async () => {
  const config = wranglerConfig();
  const vars = { ...config.vars };
  for (const env of Object.values(config.env ?? {})) Object.assign(vars, env.vars ?? {});
  assert.ok(Object.keys(vars).includes('CONSENTRY_PROVIDERS'), 'the vars were read');
  const secrets = await secretNames();
  for (const name of ['CONSENTRY_KEY', 'CONSENTRY_KEY_PREVIOUS', 'CONSENTRY_USER_SECRET']) assert.ok(secrets.has(name), `config.rs reads the secret ${name}`);
  for (const [name, value] of Object.entries(vars)) {
    assert.ok(!secrets.has(name), `${name} is a secret: set it with wrangler secret put, not in [vars]`);
    assert.doesNotMatch(name, /(_PRIVATE_JWK|_SECRET|_KEY|_KEY_PREVIOUS)$/, `${name} is named as a secret`);
    // assert.ok, not doesNotMatch: a failure must not print the value into the CI log.
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    assert.ok(!/"d"\s*:\s*"/.test(text), `${name} holds a private JWK`);
    assert.ok(!/(^|[^A-Za-z0-9_-])[A-Za-z0-9_-]{43}={0,1}($|[^A-Za-z0-9_-])/.test(text), `${name} holds what looks like a 32-byte key`);
  }
});
