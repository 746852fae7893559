// The whole stack for the Worker's integration tests, on one machine, no browser needed:
// the local bank (oidc-provider, in this process, with test controls on) and the Worker under
// `wrangler dev` (workerd + a local D1 in a temporary directory, migrations applied). Beside
// the bank, for the mix-up tests: a second honest bank that sends no RFC 9207 `iss` (the
// "plain bank", as TrueLayer is) and an attacker's authorization server
// (tests/lib/attacker-as.mjs), each one more provider of the Worker's.
//
//   const stack = await startStack();            // ports 8788 (Worker), 9100-9107 (banks)
//   const res = await stack.workerFetch('/auth/demo/users', { headers: { 'X-Consentry': '1' } });
//   ...
//   await stack.stop();
//
// Requests go to http://127.0.0.1:<workerPort> (where wrangler listens); the Worker's public
// origin, and so the origin the tests send as `Origin`, is http://localhost:<workerPort>.
//
// Configuration reaches the Worker through one env file (`wrangler dev --env-file FILE`):
// wrangler 4.86 loads it after the [vars] of the config, so its values win, and with an env
// file given it ignores .dev.vars, so a developer's local secrets never leak into a run.
// Every value in it arrives in the Worker as a string (wrangler marks them secret_text and
// prints them as "(hidden)").
//
// The build: startStack runs ./scripts/build-worker once itself, then starts wrangler dev on
// a copy of wrangler.toml (read with wrangler's own parser) whose paths are made absolute and
// whose [build] section is dropped. Run on wrangler.toml as it is, wrangler 4.86 runs the
// build twice on start (once before serving, once more when its watcher on `crates/` is
// ready) and again on every change under `crates/`, which restarts the Worker under running
// tests and competes with other builds for the CPU. Everything else (entry, assets, D1,
// vars, compatibility date) is wrangler.toml's.

import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startBank } from '../../bank/bank.mjs';
import { startConnect } from '../../bank/connect.mjs';
import { startFapiBank } from '../../bank/fapi-bank.mjs';
import { startMoneyhub } from '../../bank/moneyhub.mjs';
import { startTrueLayer } from '../../bank/truelayer.mjs';
import { startAttackerAs } from './attacker-as.mjs';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WRANGLER = path.join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js');
const BUILD_WORKER = path.join(ROOT, 'scripts', 'build-worker');

/** The bank's default secret for the client_secret_basic client `consentry-demo`. */
export const BANK_CLIENT_SECRET = 'consentry-demo-secret-change-me-0123456789';
/** The Worker's client secret at the attacker's authorization server (the attacker knows it). */
const ATTACKER_CLIENT_SECRET = 'consentry-at-the-attacker-0123456789';
/** The Worker's client secrets at the TrueLayer and Connect emulations. */
export const TRUELAYER_CLIENT_SECRET = 'consentry-truelayer-secret-change-me-0123';
export const CONNECT_CLIENT_SECRET = 'consentry-connect-secret-change-me-01234567';

export function randomToken(bytes = 32) {
  return randomBytes(bytes).toString('base64url');
}

/** A SQL string literal for `stack.d1()` (single quotes doubled). */
export function sqlString(value) {
  return `'${String(value).replaceAll("'", "''")}'`;
}

/**
 * A browser's cookies for one site, good enough for the Worker: stores every Set-Cookie,
 * forgets cookies that are cleared (Max-Age <= 0 or Expires in the past), and sends the
 * rest back. `Secure` and `__Host-` are not enforced (the tests speak plain HTTP to
 * 127.0.0.1). On cross-site requests (`header({ crossSite: true, method })`) a browser's
 * SameSite rules apply: `Strict` cookies are held back, and `Lax` ones (the default) too
 * unless the request is a GET (a top-level navigation, as the bank's redirect to the callback
 * is; a form_post callback is a cross-site POST, which only `SameSite=None` cookies reach).
 */
export class CookieJar {
  #cookies = new Map();

  /** Parses Set-Cookie lines (from a Response, a Headers, or an array of strings). */
  store(source) {
    const lines = Array.isArray(source) ? source
      : typeof source?.getSetCookie === 'function' ? source.getSetCookie()
        : source?.headers?.getSetCookie?.() ?? [];
    for (const line of lines) {
      const cookie = parseSetCookie(line);
      if (!cookie) continue;
      if (cookie.cleared) this.#cookies.delete(cookie.name);
      else this.#cookies.set(cookie.name, cookie);
    }
    return this;
  }

  header({ crossSite = false, method = 'GET' } = {}) {
    const held = (cookie) => crossSite && (cookie.sameSite === 'strict' || (cookie.sameSite === 'lax' && method !== 'GET'));
    return [...this.#cookies.values()]
      .filter((cookie) => !held(cookie))
      .map((cookie) => `${cookie.name}=${cookie.value}`)
      .join('; ');
  }

  get(name) { return this.#cookies.get(name)?.value; }

  has(name) { return this.#cookies.has(name); }

  names() { return [...this.#cookies.keys()]; }

  set(name, value, { sameSite = 'lax' } = {}) {
    this.#cookies.set(name, { name, value, sameSite, attributes: {} });
    return this;
  }

  delete(name) { this.#cookies.delete(name); return this; }

  clone() {
    const copy = new CookieJar();
    for (const cookie of this.#cookies.values()) copy.#cookies.set(cookie.name, { ...cookie });
    return copy;
  }
}

/** One Set-Cookie line: `{ name, value, attributes (lower-cased names), sameSite, cleared }`. */
export function parseSetCookie(line) {
  const [pair, ...rest] = line.split(';');
  const eq = pair.indexOf('=');
  if (eq < 1) return null;
  const attributes = {};
  for (const part of rest) {
    const [key, ...value] = part.split('=');
    if (key.trim()) attributes[key.trim().toLowerCase()] = value.join('=').trim();
  }
  const maxAge = attributes['max-age'] !== undefined ? Number(attributes['max-age']) : undefined;
  const expires = attributes.expires !== undefined ? Date.parse(attributes.expires) : undefined;
  const cleared = (maxAge !== undefined && maxAge <= 0) || (maxAge === undefined && expires !== undefined && expires <= Date.now());
  return {
    name: pair.slice(0, eq).trim(),
    value: pair.slice(eq + 1).trim(),
    attributes,
    sameSite: (attributes.samesite || 'lax').toLowerCase(),
    cleared,
  };
}

/** A dotenv line that wrangler's loader (dotenv + dotenv-expand) reads back verbatim. */
function dotenvLine(name, value) {
  if (/['\r\n$\\]/.test(value)) throw new Error(`${name}: value cannot be written to an env file as-is`);
  return `${name}='${value}'`;
}

function portTaken(port) {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Starts the banks and the Worker. Resolves to
 * `{ workerUrl, publicOrigin, bank, issuer, issued, bankRequests, plainBank, attacker, fapiBank,
 * truelayer, moneyhub, connect, connectRs256, logs, stop, workerFetch, responses, secrets, tmpDir,
 * persistDir, configPath, d1, restartBank }`
 * (`persistDir` holds the local D1's SQLite files, `configPath` the generated wrangler config).
 *
 * The Worker's providers: `local-bank` (client_secret_basic; its data API under /data/v1),
 * `local-bank-no-refresh` (the same without offline_access: no refresh token), `local-bank-pkjwt` and
 * `local-bank-pkjwt-wrongkey` (private_key_jwt, ES256), all at the bank; `plain-bank` (no
 * `iss`, no openid, no data API) at `plainBank`; `attacker-as` at `attacker`;
 * `open-finance` (the fapi2 profile: PAR + PS256 request object, private_key_jwt, DPoP,
 * authorization_details with the hint as dp_id) and `open-finance-wrongkey` (a client key the
 * FAPI bank does not know) at `fapiBank` (bank/fapi-bank.mjs, port bankPort + 3).
 * The providers' own emulations, each with one provider of the Worker's: `truelayer`
 * (bank/truelayer.mjs, port bankPort + 4: explicit endpoints, client_secret_post, form_post,
 * its data API under /data/v1), `moneyhub` (bank/moneyhub.mjs, bankPort + 5: PAR with a PS256
 * request object, private_key_jwt, profiles made with user:create, data tokens minted with
 * client_credentials + sub, its data API under /v3), `connect` (bank/connect.mjs, bankPort + 6:
 * HS256 JWT access tokens and id_tokens signed with the client secret, userinfo through /api)
 * and `connect-rs256` (bankPort + 7: the same signed RS256 and checked against its JWKS, and
 * without openid, so that the access token alone names the user).
 * Each bank has exactly its own providers' redirect URIs registered.
 *
 * - `workerFetch(pathOrUrl, { method, headers, body, jar, crossSite })`: a request to the Worker
 *   (`redirect: 'manual'`); a URL on `publicOrigin` is sent to `workerUrl`. The cookie jar, if
 *   given, is sent and updated. Every response is read in full and recorded in `responses`
 *   (`{ method, url, status, statusText, headers: [[name, value]], body, raw }`, `raw` being
 *   status line + headers + body as one string) so a test can scan everything the Worker said.
 *   Resolves to `{ status, headers, body, setCookies, elapsedMs, json() }`.
 * - `issued`: what the bank handed out (see bank/bank.mjs), across restarts of the bank.
 * - `bankRequests`: `{ method, path }` of every request the bank received, across restarts
 *   (e.g. to count the Worker's discovery and JWKS fetches).
 * - `d1(sql)`: runs one SQL statement on the Worker's local D1 with `wrangler d1 execute
 *   --local` (a second workerd on the same SQLite files; about 1.5 s) and resolves to its result
 *   rows. The running Worker sees the write at once: miniflare keeps D1 in an ordinary SQLite
 *   database in WAL mode with its -shm file on disk, so both processes share one WAL index and
 *   one set of POSIX locks. Only while the Worker is idle: a test awaits its requests first.
 * - `restartBank({ coop })`: closes the bank and starts a new one on the same port with the same
 *   options. It signs with a fresh RS256 key under a new kid (bank/bank.mjs draws one at every
 *   start) and knows none of the old codes, grants or tokens; `issued` keeps accumulating.
 *   `stack.bank` is the new one afterwards. `coop`, if given, replaces the bank's
 *   Cross-Origin-Opener-Policy from then on (`''` for none).
 * - `logs()`: wrangler's stdout and stderr so far (build output, Worker console, request log).
 * - `stop()`: ends wrangler's process group, closes the bank, removes the temporary directory.
 *
 * Options: `workerPort` (8788), `bankPort` (9100; the plain bank, the attacker, the FAPI bank
 * and the four emulations take the next seven ports), `timeoutMs` (the Worker's outbound HTTP
 * timeout, 2000), `build` (run ./scripts/build-worker first; false serves build/ as it is),
 * `readyTimeoutMs` (how long wrangler may take to serve, after the build; 120 s), `logLevel`
 * (wrangler's; the default `log` keeps the Worker's console.log, which `info` drops), `bankCoop`
 * (the Cross-Origin-Opener-Policy the bank sends on its pages, e.g. `same-origin`; default none,
 * whatever BANK_COOP says).
 */
export async function startStack({
  workerPort = 8788,
  bankPort = 9100,
  timeoutMs = 2000,
  build = true,
  readyTimeoutMs = 120_000,
  logLevel = 'log',
  bankCoop = '',
  extraRedirectUris = [],
  // { CONSENTRY_LIMIT_START: { limit, period }, ... }: wrangler.toml's [[ratelimits]] as a
  // test needs them; each one not named is set too high to be met.
  rateLimits = {},
} = {}) {
  const publicOrigin = `http://localhost:${workerPort}`;
  const workerUrl = `http://127.0.0.1:${workerPort}`;
  for (const port of [workerPort, ...Array.from({ length: 8 }, (_, i) => bankPort + i)]) {
    if (await portTaken(port)) throw new Error(`port ${port} is already in use; is another stack still running?`);
  }
  if (!existsSync(WRANGLER)) throw new Error(`wrangler not found at ${WRANGLER}; run npm install`);

  const cleanups = [];
  let output = '';
  const logs = () => output;
  const cleanup = async () => {
    for (const step of cleanups.splice(0).reverse()) {
      try { await step(); } catch { /* keep cleaning */ }
    }
  };

  try {
    // 1. The private_key_jwt client's key: public half to the bank, private half to the Worker.
    // A second private key under the same kid, which the bank does not know, plays a client
    // that signs with the wrong key (provider `local-bank-pkjwt-wrongkey`).
    const kid = `consentry-pkjwt-${randomBytes(4).toString('hex')}`;
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pkjwtJwks = { keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }] };
    const pkjwtPrivateJwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256' };
    const wrongKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const pkjwtWrongKeyPrivateJwk = { ...wrongKey.export({ format: 'jwk' }), kid, alg: 'ES256' };

    // 2. The Worker's providers, and the banks, in this process. A restart (restartBank)
    // starts another bank with the same options and has it record into the same `issued`
    // arrays. prompt=login consent as in wrangler.toml's demo provider: oidc-provider drops
    // offline_access (so issues no refresh token) without consent, and the login prompt
    // makes each flow sign in afresh.
    const issuer = `http://localhost:${bankPort}`;
    const plainIssuer = `http://localhost:${bankPort + 1}`;
    const attackerIssuer = `http://localhost:${bankPort + 2}`;
    const fapiIssuer = `http://localhost:${bankPort + 3}`;
    // The FAPI 2.0 client's key (PS256): public half to the FAPI bank, private to the Worker.
    // A second key under the same kid, unknown to the bank, plays a client with the wrong key.
    const fapiKid = `consentry-fapi-${randomBytes(4).toString('hex')}`;
    const fapiKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const fapiJwks = { keys: [{ ...fapiKeys.publicKey.export({ format: 'jwk' }), kid: fapiKid, alg: 'PS256', use: 'sig' }] };
    const fapiPrivateJwk = { ...fapiKeys.privateKey.export({ format: 'jwk' }), kid: fapiKid, alg: 'PS256' };
    const fapiWrongPrivateJwk = { ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), kid: fapiKid, alg: 'PS256' };
    const ofpDetails = [{ type: 'urn:openfinance-ml:account-access-consent:v1.2', consent: { dp_id: '{provider_hint}', permissions: ['read_accounts', 'read_balances', 'read_transactions'] } }];
    const fapiProvider = (id, name) => ({ id, name, profile: 'fapi2', issuer: fapiIssuer, client_id: 'consentry-fapi', signing_alg: 'PS256', key_id: fapiKid, scopes: ['openid', 'accounts', 'balance', 'transactions', 'offline_access'], authorization_params: { prompt: 'login consent' }, authorization_details: ofpDetails, api_base_url: `${fapiIssuer}/data/v1`, api_paths: ['/accounts'] });
    const authorizationParams = { prompt: 'login consent' };
    // The providers' emulations. Moneyhub's client key (PS256): public half to it, private
    // to the Worker.
    const truelayerUrl = `http://localhost:${bankPort + 4}`;
    const moneyhubUrl = `http://localhost:${bankPort + 5}`;
    const moneyhubIssuer = `${moneyhubUrl}/oidc`;
    const connectIssuer = `http://localhost:${bankPort + 6}`;
    const connectRs256Issuer = `http://localhost:${bankPort + 7}`;
    const moneyhubKid = `consentry-moneyhub-${randomBytes(4).toString('hex')}`;
    const moneyhubKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const moneyhubJwks = { keys: [{ ...moneyhubKeys.publicKey.export({ format: 'jwk' }), kid: moneyhubKid, alg: 'PS256', use: 'sig' }] };
    const moneyhubPrivateJwk = { ...moneyhubKeys.privateKey.export({ format: 'jwk' }), kid: moneyhubKid, alg: 'PS256' };
    const connectProvider = (id, name, issuer, extra = {}) => ({ id, name, profile: 'connect', issuer, client_id: 'consentry-connect', scopes: ['openid', 'email', 'profile', 'offline_access'], authorization_endpoint: `${issuer}/oauth/authorize`, token_endpoint: `${issuer}/oauth/token`, id_token_signing_algs: ['HS256'], api_base_url: `${issuer}/oauth`, api_paths: ['/userinfo'], ...extra });
    const providers = [
      { id: 'local-bank', name: 'Local Bank', profile: 'generic', issuer, client_id: 'consentry-demo', auth_method: 'client_secret_basic', scopes: ['openid', 'profile', 'accounts', 'balance', 'transactions', 'offline_access'], authorization_params: authorizationParams, api_base_url: `${issuer}/data/v1`, api_paths: ['/accounts'] },
      { id: 'local-bank-pkjwt', name: 'Local Bank (private_key_jwt)', profile: 'generic', issuer, client_id: 'consentry-pkjwt', auth_method: 'private_key_jwt', signing_alg: 'ES256', key_id: kid, scopes: ['openid', 'accounts', 'offline_access'], authorization_params: authorizationParams, api_base_url: `${issuer}/data/v1`, api_paths: ['/accounts'] },
      { id: 'local-bank-pkjwt-wrongkey', name: 'Local Bank (private_key_jwt, wrong key)', profile: 'generic', issuer, client_id: 'consentry-pkjwt', auth_method: 'private_key_jwt', signing_alg: 'ES256', key_id: kid, scopes: ['openid', 'accounts', 'offline_access'], authorization_params: authorizationParams },
      { id: 'local-bank-no-refresh', name: 'Local Bank (no refresh token)', profile: 'generic', issuer, client_id: 'consentry-demo', auth_method: 'client_secret_basic', scopes: ['openid', 'accounts'], authorization_params: authorizationParams, api_base_url: `${issuer}/data/v1`, api_paths: ['/accounts'] },
      { id: 'plain-bank', name: 'Plain Bank', profile: 'generic', issuer: plainIssuer, client_id: 'consentry-demo', auth_method: 'client_secret_basic', scopes: ['accounts', 'balance'] },
      fapiProvider('open-finance', 'Open Finance hub'),
      fapiProvider('open-finance-wrongkey', 'Open Finance hub (wrong client key)'),
      { id: 'attacker-as', name: 'Attacker', profile: 'generic', issuer: attackerIssuer, client_id: 'consentry-at-attacker', auth_method: 'client_secret_basic', scopes: ['accounts', 'balance'] },
      { id: 'truelayer', name: 'TrueLayer', profile: 'truelayer', issuer: truelayerUrl, client_id: 'consentry-truelayer', scopes: ['info', 'accounts', 'balance', 'transactions', 'offline_access'], authorization_endpoint: `${truelayerUrl}/`, token_endpoint: `${truelayerUrl}/connect/token`, authorization_params: { providers: 'uk-cs-mock uk-ob-all uk-oauth-all', response_mode: 'form_post' }, api_base_url: `${truelayerUrl}/data/v1`, api_paths: ['/me', '/info', '/accounts'] },
      { id: 'moneyhub', name: 'Moneyhub', profile: 'moneyhub', issuer: moneyhubIssuer, client_id: 'consentry-moneyhub', signing_alg: 'PS256', key_id: moneyhubKid, scopes: ['openid'], data_scopes: ['accounts:read', 'transactions:read:all'], api_base_url: `${moneyhubUrl}/v3`, api_paths: ['/accounts', '/transactions'] },
      connectProvider('connect', 'Connect', connectIssuer),
      // Without openid: no id_token, so the access token alone names the user and is checked.
      connectProvider('connect-rs256', 'Connect (RS256)', connectRs256Issuer, { scopes: ['email', 'profile', 'offline_access'], jwks_uri: `${connectRs256Issuer}/.well-known/jwks.json`, id_token_signing_algs: ['RS256'], access_token_signing_algs: ['RS256'] }),
    ];
    const redirectUrisAt = (at) => providers.filter((p) => p.issuer === at).map((p) => `${publicOrigin}/auth/callback/${p.id}`);
    const bankOptions = {
      port: bankPort,
      redirectUris: [...redirectUrisAt(issuer), ...extraRedirectUris],
      clientSecret: BANK_CLIENT_SECRET,
      testControls: true,
      pkjwtJwks,
      coop: bankCoop,
      requireAuthTime: true, // its every provider asks for openid
    };
    const bankRequests = [];
    const watchBank = (started) => {
      started.server.on('request', (req) => { bankRequests.push({ method: req.method, path: new URL(req.url, started.issuer).pathname, at: Date.now() }); });
      return started;
    };
    let bank = watchBank(await startBank(bankOptions));
    cleanups.push(() => bank.close());
    const { issued } = bank;
    const plainBank = await startBank({ port: bankPort + 1, redirectUris: redirectUrisAt(plainIssuer), clientSecret: BANK_CLIENT_SECRET, testControls: true, iss: false });
    cleanups.push(() => plainBank.close());
    const attacker = await startAttackerAs({ port: bankPort + 2 });
    cleanups.push(() => attacker.close());
    const fapiBank = await startFapiBank({ port: bankPort + 3, redirectUris: redirectUrisAt(fapiIssuer), clientJwks: fapiJwks, testControls: true });
    cleanups.push(() => fapiBank.close());
    const truelayer = await startTrueLayer({ port: bankPort + 4, redirectUris: redirectUrisAt(truelayerUrl), clientSecret: TRUELAYER_CLIENT_SECRET, testControls: true });
    cleanups.push(() => truelayer.close());
    const moneyhub = await startMoneyhub({ port: bankPort + 5, redirectUris: redirectUrisAt(moneyhubIssuer), clientJwks: moneyhubJwks, testControls: true });
    cleanups.push(() => moneyhub.close());
    const connect = await startConnect({ port: bankPort + 6, redirectUris: redirectUrisAt(connectIssuer), clientSecret: CONNECT_CLIENT_SECRET, testControls: true });
    cleanups.push(() => connect.close());
    const connectRs256 = await startConnect({ port: bankPort + 7, redirectUris: redirectUrisAt(connectRs256Issuer), clientSecret: CONNECT_CLIENT_SECRET, signing: 'RS256', testControls: true });
    cleanups.push(() => connectRs256.close());

    // 3. A temporary directory: the Worker's config and env file, a fresh local D1.
    const tmpDir = await mkdtemp(path.join(tmpdir(), 'consentry-stack-'));
    cleanups.push(() => rm(tmpDir, { recursive: true, force: true }));
    const persistDir = path.join(tmpDir, 'state');
    const childEnv = {
      ...process.env,
      CI: 'true',
      NODE_NO_WARNINGS: '1',
      FORCE_COLOR: '0',
      WRANGLER_SEND_METRICS: 'false',
      CLOUDFLARE_CF_FETCH_ENABLED: 'false', // no request.cf download (no internet needed)
      WRANGLER_LOG_PATH: path.join(tmpDir, 'wrangler-logs'), // wrangler's debug log file
    };
    // The Worker, built once, and wrangler.toml without its [build] (see the top of this file).
    if (build) {
      const built = await run(BUILD_WORKER, [], { cwd: ROOT, env: childEnv, onOutput: (chunk) => { output += chunk; } });
      if (built.code !== 0) throw new Error(`./scripts/build-worker failed (exit ${built.code})`);
    }
    const configPath = path.join(tmpDir, 'wrangler.json');
    await writeFile(configPath, JSON.stringify(await testConfig(childEnv, rateLimits), null, 2));

    const migration = await run(process.execPath, [WRANGLER, 'd1', 'migrations', 'apply', 'consentry', '--local', '--config', configPath, '--persist-to', persistDir], { cwd: ROOT, env: childEnv });
    if (migration.code !== 0) throw new Error(`D1 migrations failed (exit ${migration.code}):\n${migration.output}`);

    // 4. The Worker's configuration.
    const consentryKey = randomToken(32);
    const vars = {
      CONSENTRY_PUBLIC_URL: publicOrigin,
      CONSENTRY_ALLOWED_ORIGINS: publicOrigin,
      CONSENTRY_DEMO_USERS: 'true',
      CONSENTRY_HTTP_TIMEOUT_MS: String(timeoutMs),
      CONSENTRY_PROVIDERS: JSON.stringify(providers),
      LOCAL_BANK_CLIENT_SECRET: BANK_CLIENT_SECRET,
      LOCAL_BANK_PKJWT_PRIVATE_JWK: JSON.stringify(pkjwtPrivateJwk),
      LOCAL_BANK_PKJWT_WRONGKEY_PRIVATE_JWK: JSON.stringify(pkjwtWrongKeyPrivateJwk),
      LOCAL_BANK_NO_REFRESH_CLIENT_SECRET: BANK_CLIENT_SECRET,
      PLAIN_BANK_CLIENT_SECRET: BANK_CLIENT_SECRET,
      ATTACKER_AS_CLIENT_SECRET: ATTACKER_CLIENT_SECRET,
      OPEN_FINANCE_PRIVATE_JWK: JSON.stringify(fapiPrivateJwk),
      OPEN_FINANCE_WRONGKEY_PRIVATE_JWK: JSON.stringify(fapiWrongPrivateJwk),
      TRUELAYER_CLIENT_SECRET,
      MONEYHUB_PRIVATE_JWK: JSON.stringify(moneyhubPrivateJwk),
      CONNECT_CLIENT_SECRET,
      CONNECT_RS256_CLIENT_SECRET: CONNECT_CLIENT_SECRET,
      CONSENTRY_KEY: consentryKey,
    };
    const envFile = path.join(tmpDir, 'worker.env');
    await writeFile(envFile, `${Object.entries(vars).map(([name, value]) => dotenvLine(name, value)).join('\n')}\n`, { mode: 0o600 });

    // 5. wrangler dev, in its own process group so stop() can end all of it (workerd too).
    // A second one on the same persisted D1 (startSecondWorker) is another set of isolates
    // that shares nothing with the first but D1.
    const append = (chunk) => { output += chunk.toString('utf8'); };
    const serveWorker = async (port, file = envFile, config = configPath) => {
      const wrangler = spawnWrangler({ configPath: config, port, persistDir, envFile: file, logLevel, env: childEnv, onOutput: append, tmpDir });
      cleanups.push(wrangler.stop);
      await waitUntilServed({ workerUrl: `http://127.0.0.1:${port}`, isRunning: wrangler.isRunning, readyTimeoutMs });
      return wrangler;
    };
    await serveWorker(workerPort);

    const responses = [];
    async function workerFetch(target, { method = 'GET', headers = {}, body, jar, crossSite = false, signal, duplex } = {}) {
      const url = new URL(String(target).startsWith(publicOrigin) ? String(target).slice(publicOrigin.length) || '/' : target, workerUrl);
      const sent = new Headers(headers);
      const cookie = jar?.header({ crossSite, method });
      if (cookie && !sent.has('cookie')) sent.set('cookie', cookie);
      const started = performance.now();
      const response = await fetch(url, { method, headers: sent, body, redirect: 'manual', signal, ...(duplex ? { duplex } : {}) });
      const text = await response.text();
      const elapsedMs = performance.now() - started;
      const headerList = [...response.headers];
      const setCookies = response.headers.getSetCookie();
      const raw = `HTTP ${response.status} ${response.statusText}\n${headerList.map(([name, value]) => `${name}: ${value}`).join('\n')}\n\n${text}`;
      responses.push({ method, url: url.toString(), status: response.status, statusText: response.statusText, headers: headerList, body: text, raw });
      jar?.store(setCookies);
      return {
        status: response.status,
        headers: response.headers,
        body: text,
        setCookies,
        elapsedMs,
        json: () => JSON.parse(text),
      };
    }

    async function d1(sql) {
      const result = await run(process.execPath, [
        WRANGLER, 'd1', 'execute', 'consentry', '--local',
        '--config', configPath, '--persist-to', persistDir, '--json', '--command', sql,
      ], { cwd: ROOT, env: childEnv, separateStderr: true });
      let parsed;
      try { parsed = JSON.parse(result.output); } catch { parsed = null; }
      if (result.code !== 0 || !Array.isArray(parsed) || parsed.length === 0 || !parsed.every((statement) => statement.success)) {
        throw new Error(`wrangler d1 execute failed (exit ${result.code}) for ${sql}:\n${result.output}${result.stderr}`);
      }
      return parsed.at(-1).results;
    }

    const stack = {
      workerUrl,
      publicOrigin,
      bank,
      issuer,
      issued,
      bankRequests,
      plainBank,
      attacker,
      fapiBank,
      truelayer,
      moneyhub,
      connect,
      connectRs256,
      logs,
      workerFetch,
      responses,
      secrets: { clientSecret: BANK_CLIENT_SECRET, consentryKey, pkjwtPrivateJwk, pkjwtWrongKeyPrivateJwk, fapiPrivateJwk, moneyhubPrivateJwk, truelayerClientSecret: TRUELAYER_CLIENT_SECRET, connectClientSecret: CONNECT_CLIENT_SECRET },
      tmpDir,
      persistDir,
      configPath,
      d1,
      /**
       * A second `wrangler dev` (another workerd, other isolates) on the same persisted D1 and
       * configuration, at `port` (workerPort + 1). Resolves to its base URL; stop() ends it.
       */
      async startSecondWorker(port = workerPort + 1) {
        return (await stack.startWorker({ port })).url;
      },
      /**
       * Another `wrangler dev` on the same persisted D1 and configuration at `port`, its
       * vars and secrets changed by `vars` (a value of null leaves one out), as an operator
       * redeploying would; `main` serves another entry module (tests/lib/counting-worker.mjs
       * wraps the built Worker). Resolves to `{ url, stop, pgid }` (`pgid`: the process
       * group of its wrangler and workerd).
       */
      async startWorker({ port = workerPort + 1, vars: changed = {}, main } = {}) {
        if (await portTaken(port)) throw new Error(`port ${port} is already in use`);
        let file = envFile;
        if (Object.keys(changed).length) {
          file = path.join(tmpDir, `worker-${port}-${randomToken(6)}.env`);
          const lines = Object.entries({ ...vars, ...changed }).filter(([, value]) => value !== null);
          await writeFile(file, `${lines.map(([name, value]) => dotenvLine(name, value)).join('\n')}\n`, { mode: 0o600 });
        }
        let config = configPath;
        if (main) {
          config = path.join(tmpDir, `wrangler-${port}.json`);
          await writeFile(config, JSON.stringify({ ...JSON.parse(await readFile(configPath, 'utf8')), main }, null, 2));
        }
        const { stop, pgid } = await serveWorker(port, file, config);
        return { url: `http://127.0.0.1:${port}`, stop, pgid };
      },
      /**
       * Another Worker (`main`, JavaScript) under the same wrangler and settings, with a D1
       * of its own (`migrationsDir`) and `vars`, at `port`: the benchmark's peer. Resolves to
       * its base URL; stop() ends it.
       */
      async startPeerWorker({ port, main, migrationsDir, vars }) {
        if (await portTaken(port)) throw new Error(`port ${port} is already in use`);
        const peerDir = path.join(tmpDir, `peer-${port}`);
        await mkdir(peerDir);
        const { compatibility_date: compatibilityDate } = await testConfig(childEnv);
        const peerConfig = path.join(peerDir, 'wrangler.json');
        await writeFile(peerConfig, JSON.stringify({
          name: 'consentry-peer',
          main,
          compatibility_date: compatibilityDate,
          d1_databases: [{ binding: 'DB', database_name: 'peer', database_id: 'peer', migrations_dir: migrationsDir }],
        }, null, 2));
        const peerState = path.join(peerDir, 'state');
        const migrated = await run(process.execPath, [WRANGLER, 'd1', 'migrations', 'apply', 'peer', '--local', '--config', peerConfig, '--persist-to', peerState], { cwd: ROOT, env: childEnv });
        if (migrated.code !== 0) throw new Error(`peer D1 migrations failed (exit ${migrated.code}):\n${migrated.output}`);
        const peerEnv = path.join(peerDir, 'peer.env');
        await writeFile(peerEnv, `${Object.entries(vars).map(([name, value]) => dotenvLine(name, value)).join('\n')}\n`, { mode: 0o600 });
        const wrangler = spawnWrangler({ configPath: peerConfig, port, persistDir: peerState, envFile: peerEnv, logLevel, env: childEnv, onOutput: append, tmpDir });
        cleanups.push(wrangler.stop);
        await waitUntilServed({ workerUrl: `http://127.0.0.1:${port}`, isRunning: wrangler.isRunning, readyTimeoutMs });
        return `http://127.0.0.1:${port}`;
      },
      async restartBank({ coop } = {}) {
        if (coop !== undefined) bankOptions.coop = coop;
        await bank.close();
        bank = watchBank(await startBank(bankOptions));
        // bank.mjs pushes into the arrays of the `issued` object it returned: point the new
        // bank's at the ones the tests already hold.
        Object.assign(bank.issued, issued);
        stack.bank = bank;
        return bank;
      },
      stop: cleanup,
    };
    return stack;
  } catch (error) {
    await cleanup();
    if (output && !String(error.message).includes(output.slice(-200))) {
      error.message += `\n--- wrangler output (last 4000 chars) ---\n${output.slice(-4000)}`;
    }
    throw error;
  }
}

// Starts `wrangler dev` in its own process group. `{ isRunning, stop, pgid }`: stop() ends the
// whole group (wrangler and workerd), and a test process that dies without stop() takes the
// group down with it (and the temporary directory) rather than leave the port held.
function spawnWrangler({ configPath, port, persistDir, envFile, logLevel, env, onOutput, tmpDir }) {
  const child = spawn(process.execPath, [
    WRANGLER, 'dev',
    '--config', configPath,
    '--port', String(port), '--ip', '127.0.0.1',
    '--persist-to', persistDir,
    '--env-file', envFile,
    '--show-interactive-dev-session=false',
    '--log-level', logLevel,
  ], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => { child.once('exit', (code, signal) => resolve({ code, signal })); });
  let running = true;
  exited.then(() => { running = false; });
  child.stdout.on('data', onOutput);
  child.stderr.on('data', onOutput);
  const killGroup = (signal) => {
    try { process.kill(-child.pid, signal); } catch { /* already gone */ }
  };
  const abandon = () => {
    killGroup('SIGKILL');
    try { rmSync(tmpDir, { recursive: true, force: true }); } catch { /* best effort */ }
  };
  const onExit = () => abandon();
  const onSignal = (signal) => {
    abandon();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  process.once('exit', onExit).on('SIGINT', onSignal).on('SIGTERM', onSignal);
  const stop = async () => {
    process.off('exit', onExit).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    if (running) {
      killGroup('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!done) killGroup('SIGKILL');
      await Promise.race([exited, sleep(5000)]);
    }
    // workerd may outlive wrangler for a moment: nothing of the group may stay behind.
    for (let i = 0; i < 50 && groupAlive(child.pid); i += 1) {
      killGroup(i < 10 ? 'SIGTERM' : 'SIGKILL');
      await sleep(100);
    }
  };
  return { isRunning: () => running, stop, pgid: child.pid };
}

function groupAlive(pgid) {
  try { process.kill(-pgid, 0); return true; } catch { return false; }
}

// Runs a command to its end: `{ code, output }` (stdout and stderr together, unless
// `separateStderr`: then stdout in `output`, stderr in `stderr`).
function run(command, args, { onOutput, separateStderr = false, ...options }) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => { output += chunk; onOutput?.(chunk.toString('utf8')); });
    child.stderr.on('data', (chunk) => {
      if (separateStderr) stderr += chunk; else output += chunk;
      onOutput?.(chunk.toString('utf8'));
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output, stderr }));
  });
}

// Served = `/` answers (wrangler holds requests until workerd has loaded the Worker).
async function waitUntilServed({ workerUrl, isRunning, readyTimeoutMs }) {
  const deadline = Date.now() + readyTimeoutMs;
  while (Date.now() < deadline) {
    if (!isRunning()) throw new Error('wrangler dev exited before the Worker was served');
    try {
      const response = await fetch(`${workerUrl}/`, { signal: AbortSignal.timeout(5000), redirect: 'manual' });
      await response.arrayBuffer();
      return;
    } catch { /* not up yet */ }
    await sleep(250);
  }
  throw new Error(`the Worker was not served within ${readyTimeoutMs} ms`);
}

// wrangler.toml as wrangler reads it, with absolute paths (the copy lives in a temporary
// directory) and without [build]: wrangler then serves build/worker/shim.mjs as built.
// wrangler's parser runs in a child process: loading wrangler here would install its signal
// handlers in the test process.
async function testConfig(env, rateLimits = {}) {
  const script = `const { experimental_readRawConfig: read } = require(${JSON.stringify(path.join(ROOT, 'node_modules', 'wrangler'))});
process.stdout.write(JSON.stringify(read({ config: ${JSON.stringify(path.join(ROOT, 'wrangler.toml'))} }).rawConfig));`;
  const read = await run(process.execPath, ['-e', script], { cwd: ROOT, env, separateStderr: true });
  if (read.code !== 0) throw new Error(`reading wrangler.toml failed: ${read.stderr}`);
  const rawConfig = JSON.parse(read.output);
  const config = structuredClone(rawConfig);
  const known = new Set(['name', 'main', 'compatibility_date', 'compatibility_flags', 'build', 'assets', 'd1_databases', 'ratelimits', 'vars']);
  const unknown = Object.keys(config).filter((key) => !known.has(key));
  if (unknown.length) throw new Error(`worker-harness: teach testConfig() about wrangler.toml keys ${unknown.join(', ')}`);
  const absolute = (p) => path.resolve(ROOT, p);
  delete config.build;
  config.main = absolute(config.main);
  if (config.assets?.directory) config.assets.directory = absolute(config.assets.directory);
  for (const db of config.d1_databases ?? []) db.migrations_dir = absolute(db.migrations_dir ?? 'migrations');
  // The rate limits, as the test asks (startStack's rateLimits); by default high enough
  // that no test that is not about them meets one.
  for (const limiter of config.ratelimits ?? []) {
    limiter.simple = rateLimits[limiter.name] ?? { limit: 100_000, period: 60 };
  }
  return config;
}

