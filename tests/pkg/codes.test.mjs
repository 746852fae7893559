// Lists the package keeps beside the core's must not drift from it. The error codes have one
// source, consentry-core's error.rs: the package's types, the codes its loader raises, and the
// demo page's messages must name exactly those, so a code added in Rust and forgotten in
// TypeScript (or on the page) fails here, not in a user's app. Likewise the loopback hosts
// where plain http is allowed (url.rs).
//
//   node --test tests/pkg/codes.test.mjs

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';

import { ROOT } from '../lib/worker-harness.mjs';

const read = (file) => readFile(path.join(ROOT, file), 'utf8');
const errorRs = await read('crates/consentry-core/src/error.rs');
const types = await read('pkg/consentry.d.ts');
const loader = await read('pkg/consentry.js');
const demo = await read('www/app.js');

const between = (text, start, end) => {
  const from = text.indexOf(start);
  assert.ok(from >= 0, `found ${start}`);
  return text.slice(from, text.indexOf(end, from));
};
const sorted = (values) => [...new Set(values)].sort();

// sdk_error_codes! { ... Variant => "code", ... } and OAUTH_ERROR_CODES: &[("code", ...)]
const SDK = sorted([...between(errorRs, 'sdk_error_codes! {', '\n}').matchAll(/=> "([a-z_]+)"/g)].map((m) => m[1]));
const OAUTH = sorted([...between(errorRs, 'const OAUTH_ERROR_CODES', '];').matchAll(/"([a-z_]+)",/g)].map((m) => m[1]));
const union = (name) => sorted([...between(types, `export type ${name} =`, ';').matchAll(/'([a-z_]+)'/g)].map((m) => m[1]));

test('the core defines the codes this test reads', () => {
  assert.ok(SDK.includes('popup_closed') && SDK.length > 40, `SDK codes: ${SDK}`);
  assert.ok(OAUTH.includes('access_denied') && OAUTH.length > 15, `OAuth codes: ${OAUTH}`);
});

test('the TypeScript code unions are exactly the core\'s codes', () => {
  assert.deepEqual(union('ConsentryErrorCode'), SDK);
  assert.deepEqual(union('OAuthErrorCode'), OAUTH);
});

test('every code the loader raises is one of the core\'s', () => {
  const raised = sorted([...loader.matchAll(/new ConsentError\('([a-z_]+)'/g)].map((m) => m[1]));
  assert.ok(raised.includes('popup_blocked'), `raised: ${raised}`);
  for (const code of raised) assert.ok(SDK.includes(code), `${code} is not in error.rs`);
});

test('the demo page has a message for every code', () => {
  const messages = sorted([...between(demo, 'const MESSAGES = {', '\n};').matchAll(/^\s+([a-z_]+): \[/gm)].map((m) => m[1]));
  const missing = [...SDK, ...OAUTH].filter((code) => !messages.includes(code));
  assert.deepEqual(missing, [], 'codes without a message on the demo page');
});

test('the loader allows plain http on the same loopback hosts as the core', async () => {
  const urlRs = await read('crates/consentry-core/src/url.rs');
  const core = sorted([...between(urlRs, 'fn is_loopback_host', '}').matchAll(/"([^"]+)"/g)].map((m) => m[1]));
  const js = sorted([...between(loader, 'const LOOPBACK_HOSTS = [', ']').matchAll(/'([^']+)'/g)].map((m) => m[1]));
  assert.ok(core.includes('localhost'), `core: ${core}`);
  assert.deepEqual(js, core);
});
