// What the Worker's integration tests (tests/edge) share: reading its answers (an HTTP
// summary for assertion messages, the outcome page, the `{code, description}` error shape),
// the headers a caller acting for an app user sends, a consent's token made stale, the
// providers' test controls, and the leak scan over everything the Worker said, logged and
// stored.

import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

import { sqlString } from './worker-harness.mjs';

/** An answer in a line, for assertion messages. */
export function describe(res) {
  return `HTTP ${res.status}: ${res.body.slice(0, 400)}`;
}

/** Text from an HTML attribute or body, as the Worker's and the providers' pages escape it. */
export function unescapeHtml(text) {
  return text
    .replace(/&#x([0-9a-f]+);/gi, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
    .replace(/&#(\d+);/g, (_, dec) => String.fromCodePoint(Number(dec)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** The outcome page's `<main id="consentry-outcome">`: `{ error, outcome, targetOrigin }`. */
export function outcomePage(res) {
  const main = res.body.match(/<main\b[^>]*\bid="consentry-outcome"[^>]*>/);
  assert.ok(main, `no <main id="consentry-outcome"> in ${describe(res)}`);
  const attributes = {};
  for (const [, name, value] of main[0].matchAll(/([\w-]+)="([^"]*)"/g)) attributes[name] = unescapeHtml(value);
  const outcomeText = attributes['data-outcome'] ?? '';
  let outcome = null;
  if (outcomeText) {
    try { outcome = JSON.parse(outcomeText); } catch { assert.fail(`data-outcome is not JSON: ${outcomeText}`); }
  }
  return { error: attributes['data-error'] ?? '', outcome, targetOrigin: attributes['data-target-origin'] ?? '' };
}

/** An error answer of a JSON route: this status, and `{code, description}` with this code. */
export async function apiError(res, status, code) {
  assert.equal(res.status, status, describe(res));
  let body;
  try { body = res.json(); } catch { assert.fail(`not JSON: ${describe(res)}`); }
  assert.equal(body.code, code, describe(res));
  assert.equal(typeof body.description, 'string');
}

/** What the app sends to act for `user`: the anti-CSRF header, its Origin, the user reference. */
export function userHeaders(stack, user, extra = {}) {
  return { 'X-Consentry': '1', Origin: stack.publicOrigin, Authorization: `Bearer ${user}`, ...extra };
}

/** The consent's stored access token lapses: the next call must refresh (or mint) first. */
export async function expireAccessToken(stack, consentId) {
  await stack.d1(`UPDATE token_sets SET access_expires_at = ${Math.floor(Date.now() / 1000) - 1} WHERE consent_id = ${sqlString(consentId)}`);
}

/**
 * The CPU time (user and system, ms) the workerd processes of a wrangler process group have
 * used so far, from /proc (Linux): a figure for scripts and test output, never an assertion.
 */
export async function workerdCpuMs(pgid) {
  const ticksPerMs = 100 / 1000; // USER_HZ is 100 on Linux
  let ticks = 0;
  for (const pid of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid pgrp ...: the name may hold spaces, so split after its ')'.
    const close = stat.lastIndexOf(')');
    if (close < 0 || !stat.slice(stat.indexOf('(') + 1, close).startsWith('workerd')) continue;
    const fields = stat.slice(close + 2).split(' ');
    if (Number(fields[2]) !== pgid) continue;
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / ticksPerMs;
}

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Waits until `condition()` holds, checking every 50 ms, for at most `ms`; else fails naming `what`. */
export async function waitFor(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A provider's test control: `POST {base}/__test/{name}` with `body`, which must be taken. */
export async function testControl(base, name, body = '') {
  const res = await fetch(`${base}/__test/${name}`, { method: 'POST', body });
  assert.equal(res.status, 200, `${name}: ${await res.text()}`);
}

/**
 * Where each of `secrets` (`[kind, value]` pairs) shows: in any answer the Worker gave (status
 * line, headers, body), in its logs, and with `atRest`, in the local D1's files. Gives the
 * leaks found, to be empty. Empty values are skipped; each value is shown by its first bytes.
 */
export async function findLeaks(stack, secrets, { atRest = false } = {}) {
  const places = [
    ...stack.responses.map((res, i) => [`response #${i} (${res.method} ${new URL(res.url).pathname} -> ${res.status})`, res.raw]),
    ['wrangler logs', stack.logs()],
  ];
  if (atRest) {
    for (const [name, bytes] of await storedFiles(stack)) places.push([`${name} (at rest)`, bytes.toString('latin1')]);
  }
  const leaks = [];
  for (const [kind, value] of secrets) {
    if (!value) continue;
    for (const [where, text] of places) if (text.includes(value)) leaks.push(`${kind} ${value.slice(0, 8)}... in ${where}`);
  }
  return leaks;
}

/** The local D1's files, `[name relative to the persist directory, bytes]`. */
export async function storedFiles(stack) {
  const files = [];
  const walk = async (dir) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(full); else files.push(full);
    }
  };
  await walk(stack.persistDir);
  return Promise.all(files.map(async (file) => [path.relative(stack.persistDir, file), await readFile(file)]));
}
