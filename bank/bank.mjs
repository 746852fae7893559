// The local bank: an OpenID provider built on oidc-provider (OpenID Certified), playing the
// bank for the demo and the end-to-end tests. PKCE is required, the RFC 9207 `iss` response
// parameter is on, PAR and revocation are enabled, refresh tokens come with offline_access
// and rotate at every refresh (a rotated-away one presented again revokes the whole grant,
// as reuse detection does). It also serves a data API (bank/data-api.mjs) under /data/v1.
//
// Configuration (environment):
//   BANK_PORT             port to listen on (default 9000); the issuer is http://localhost:PORT
//   BANK_REDIRECT_URIS    comma-separated redirect URIs (default
//                         http://localhost:8787/auth/callback/local-bank, the demo Worker's
//                         redirect URI for this bank)
//   BANK_CLIENT_SECRET    secret of the client_secret_basic client `consentry-demo`
//   BANK_PKJWT_JWKS       JSON JWKS (public) of the private_key_jwt client `consentry-pkjwt`
//   BANK_COOP             if set, sent as Cross-Origin-Opener-Policy on the bank's pages
//   BANK_ACCESS_TOKEN_TTL access tokens' lifetime in seconds (default 3600; the demo runs 120,
//                         so that a person sees a refresh happen)
//
//   BANK_TEST_CONTROLS    `1` turns on fault injection for tests (off for the demo):
//                         POST /__test/token-mode with a body of `normal`, `500` (an HTML
//                         page with Retry-After), `hang`,
//                         `garbage` or `slow:<ms>` (answer normally, <ms> late) changes how the
//                         token endpoint answers; POST /__test/data-mode with `normal`,
//                         `401` (every data call), `401-once`, `redirect`, `set-cookie`, `hang`
//                         or `huge` (an endless chunked body) changes how the data API does;
//                         POST /__test/rotation with `off` (or `on`) stops (or resumes)
//                         rotating refresh tokens (not rotating, a refresh answers with no
//                         refresh_token).
//                         It also records what the bank hands out, and the client
//                         assertions it was sent, on `issued` (see `startBank`), so tests
//                         can check that none of it reaches a browser or a log.
//
// `startBank({ iss: false })` plays a provider that does not implement RFC 9207 (as TrueLayer
// does not): no `iss` on its redirects, none advertised in its metadata.

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
// oidc-provider's own in-memory store, made larger: its default keeps 1,000 entries (sessions,
// interactions, codes, grants and tokens share them), so 1,000 flows at once (scripts/load)
// evicted codes still in use: "authorization code not found".
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

import { answerDataRequest, buildLedger } from './data-api.mjs';
import { escapeHtml, listen, providerPage } from './server.mjs';

export const ACCOUNTS = {
  alice: { password: 'alice', name: 'Alice Martin', email: 'alice@bank.example' },
  bob: { password: 'bob', name: 'Bob Nguyen', email: 'bob@bank.example' },
  carol: { password: 'carol', name: 'Carol Okafor', email: 'carol@bank.example' },
};

function page(title, body) {
  return providerPage({ title, body, accent: '#1f7a5c', background: '#0f3d3e' });
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export async function startBank({
  port = Number(process.env.BANK_PORT || 9000),
  redirectUris = (process.env.BANK_REDIRECT_URIS || 'http://localhost:8787/auth/callback/local-bank').split(','),
  clientSecret = process.env.BANK_CLIENT_SECRET || 'consentry-demo-secret-change-me-0123456789',
  pkjwtJwks = process.env.BANK_PKJWT_JWKS ? JSON.parse(process.env.BANK_PKJWT_JWKS) : null,
  coop = process.env.BANK_COOP || '',
  testControls = process.env.BANK_TEST_CONTROLS === '1',
  accessTokenTtl = Number(process.env.BANK_ACCESS_TOKEN_TTL || 3600),
  iss = true,
  // Every id_token for consentry-demo names its authentication (auth_time), refreshed ones
  // included. oidc-provider then refuses that client's requests without openid.
  requireAuthTime = false,
} = {}) {
  const issuer = `http://localhost:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `bank-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };

  const clients = [{
    client_id: 'consentry-demo',
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'openid profile accounts balance transactions offline_access',
    ...(requireAuthTime ? { require_auth_time: true } : {}),
  }];
  if (pkjwtJwks) {
    clients.push({
      client_id: 'consentry-pkjwt',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: pkjwtJwks,
      scope: 'openid profile accounts balance transactions offline_access',
    });
  }

  const store = new LRU({ maxSize: 200_000 });
  const provider = new Provider(issuer, {
    adapter: (model) => new MemoryAdapter(model, store),
    clients,
    jwks: { keys: [signingKey] },
    pkce: { required: () => true },
    scopes: ['openid', 'profile', 'accounts', 'balance', 'transactions', 'offline_access'],
    rotateRefreshToken: () => rotateRefreshTokens,
    claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      pushedAuthorizationRequests: { enabled: true },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: (_ctx, id) => (ACCOUNTS[id] ? {
      accountId: id,
      claims: () => ({ sub: id, name: ACCOUNTS[id].name, email: ACCOUNTS[id].email }),
    } : undefined),
    ttl: { AccessToken: accessTokenTtl, AuthorizationCode: 60, RefreshToken: 30 * 24 * 3600, Interaction: 600, Session: 3600, Grant: 3600 },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Something went wrong</h1><p class="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description || '')}</p>`);
    },
  });
  provider.proxy = false;

  let tokenMode = 'normal';
  let slowMs = 0;
  let dataMode = 'normal';
  let rotateRefreshTokens = true;
  const ledger = buildLedger();
  // With test controls on, what the bank hands out (never read by the demo):
  //   codes:       { code, client_id, state } for every authorization code sent to a client
  //   tokens:      { type: 'access_token' | 'refresh_token' | 'id_token', value, grant_type, client_id }
  //   exchanges:   { code, client_id, status, mode, error_description } for every token request
  //                with a code (why the bank refused it, when it did)
  //                (mode is the token mode it met; status 200 with mode `normal` = success)
  //   revocations: { token, status } for every revocation request
  //   refreshes:   { presented, status, rotated } for every refresh token grant (the refresh
  //                token presented, the status, the new refresh token when it rotated)
  //   dataRequests: { method, path, token, status, mode, headers (names) } for every data API request
  const issued = testControls ? { codes: [], tokens: [], exchanges: [], revocations: [], refreshes: [], dataRequests: [], assertions: [] } : null;
  // oidc-provider says why it refused a grant only here (`invalid_grant` is all the client hears).
  provider.on('grant.error', (ctx, error) => { ctx.state.grantError = error.error_detail; });
  provider.use(async (ctx, next) => {
    if (coop) ctx.set('Cross-Origin-Opener-Policy', coop);
    if (ctx.path === '/token' && ctx.method === 'POST' && tokenMode === 'slow') {
      await new Promise((resolve) => { setTimeout(resolve, slowMs); });
    } else if (ctx.path === '/token' && ctx.method === 'POST' && tokenMode !== 'normal') {
      const mode = tokenMode;
      if (issued) {
        const chunks = [];
        for await (const chunk of ctx.req) chunks.push(chunk);
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        if (form.has('code')) {
          const basic = /^Basic (.+)$/i.exec(ctx.get('Authorization'));
          const clientId = basic ? decodeURIComponent(Buffer.from(basic[1], 'base64').toString('utf8').split(':')[0]) : form.get('client_id');
          issued.exchanges.push({ code: form.get('code'), client_id: clientId, status: mode === 'garbage' ? 200 : 500, mode });
        }
      }
      if (mode === 'hang') {
        await new Promise((resolve) => {
          setTimeout(resolve, 120_000).unref();
          ctx.req.socket.once('close', resolve);
        });
      }
      ctx.status = mode === 'garbage' ? 200 : 500;
      ctx.type = 'text/html';
      if (mode !== 'garbage') ctx.set('Retry-After', '30');
      ctx.body = mode === 'garbage' ? '<html>definitely not a token response</html>' : '<html><body><h1>500 bank-internal-error-page</h1></body></html>';
      return;
    }
    await next();
    // Not rotating, the bank answers a refresh without a refresh token at all, as providers
    // that keep the first one do (the client must keep it).
    if (!rotateRefreshTokens && ctx.path === '/token' && ctx.oidc?.params?.grant_type === 'refresh_token' && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.refresh_token;
    }
    if (!iss) withoutIss(ctx);
    if (issued) record(ctx);
  });

  // A provider without RFC 9207: the parameter off its redirects and out of its metadata.
  function withoutIss(ctx) {
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.authorization_response_iss_parameter_supported;
    }
    const location = ctx.response.get('Location');
    if (location && redirectUris.some((uri) => location.startsWith(uri))) {
      const target = new URL(location);
      target.searchParams.delete('iss');
      ctx.set('Location', target.toString());
    }
  }

  function record(ctx) {
    const params = ctx.oidc?.params || {};
    const clientId = ctx.oidc?.client?.clientId;
    if (typeof params.client_assertion === 'string') issued.assertions.push(params.client_assertion);
    if (ctx.path === '/token' && ctx.method === 'POST') {
      let body = ctx.body;
      if (typeof body === 'string' || Buffer.isBuffer(body)) {
        try { body = JSON.parse(String(body)); } catch { body = null; }
      }
      if (params.code) issued.exchanges.push({ code: params.code, client_id: clientId, status: ctx.status, mode: 'normal', error_description: ctx.status === 200 ? undefined : ctx.state.grantError ?? body?.error_description });
      if (params.grant_type === 'refresh_token') {
        issued.refreshes.push({ presented: params.refresh_token, status: ctx.status, rotated: ctx.status === 200 && body ? body.refresh_token : undefined });
      }
      if (ctx.status === 200 && body && typeof body === 'object') {
        for (const type of ['access_token', 'refresh_token', 'id_token']) {
          if (typeof body[type] === 'string') issued.tokens.push({ type, value: body[type], grant_type: params.grant_type, client_id: clientId });
        }
      }
    } else if (ctx.path === '/token/revocation' && ctx.method === 'POST') {
      issued.revocations.push({ token: params.token, status: ctx.status });
    }
    const location = ctx.response.get('Location');
    if (location) {
      const target = new URL(location, issuer);
      const code = target.searchParams.get('code');
      if (code && redirectUris.some((uri) => location.startsWith(uri))) {
        issued.codes.push({ code, client_id: clientId, state: target.searchParams.get('state') });
      }
    }
  }

  async function interaction(req, res, uid) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const action = `/interaction/${escapeHtml(uid)}`;
    if (req.method === 'GET') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('Cache-Control', 'no-store');
      if (coop) res.setHeader('Cross-Origin-Opener-Policy', coop);
      if (details.prompt.name === 'login') {
        res.end(page('Sign in to Local Bank', `<h1>Local Bank</h1><p>Sign in to continue</p>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="login">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="allow" type="submit">Sign in</button></form>`));
      } else {
        const scopes = String(details.params.scope || '').split(' ').filter(Boolean);
        res.end(page('Share your data', `<h1>Share your data?</h1><p><b>${escapeHtml(details.params.client_id)}</b> asks for:</p>
<ul>${scopes.map((s) => `<li>${escapeHtml(s)}</li>`).join('')}</ul>
<form method="post" action="${action}"><input type="hidden" name="prompt" value="consent">
<button class="allow" name="decision" value="allow" type="submit">Allow</button><button class="deny" name="decision" value="deny" type="submit">Deny</button></form>`));
      }
      return;
    }
    const form = await readForm(req);
    if (form.get('prompt') === 'login') {
      const account = ACCOUNTS[form.get('login')];
      if (!account || account.password !== form.get('password')) {
        res.statusCode = 303;
        res.setHeader('Location', action);
        res.end();
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: form.get('login') } }, { mergeWithLastSubmission: false });
      return;
    }
    if (form.get('decision') !== 'allow') {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The account holder declined to share their data' }, { mergeWithLastSubmission: false });
      return;
    }
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
    if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
    for (const [indicator, scope] of Object.entries(details.prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }

  // The data API: a live access token of this bank's, the owner's accounts only.
  async function dataApi(req, res, url) {
    const mode = dataMode;
    if (mode === '401-once') dataMode = 'normal';
    const bearer = /^Bearer ([\x21-\x7e]+)$/.exec(req.headers.authorization || '');
    const value = bearer?.[1];
    const token = value ? await provider.AccessToken.find(value) : undefined;
    let answer = req.method === 'GET'
      ? answerDataRequest({ ledger, path: url.pathname, search: url.search, token })
      : { status: 405, body: '{"error":"method_not_allowed"}', headers: { 'Content-Type': 'application/json' } };
    if (mode === '401' || mode === '401-once') {
      answer = { status: 401, body: '{"error":"invalid_token"}', headers: { 'Content-Type': 'application/json', 'WWW-Authenticate': 'Bearer error="invalid_token"' } };
    } else if (mode === 'redirect') {
      answer = { status: 302, body: '', headers: { Location: 'http://127.0.0.1:9/elsewhere' } };
    } else if (mode === 'set-cookie') {
      answer = { ...answer, headers: { ...answer.headers, 'Set-Cookie': 'bank-tracker=1; Path=/' } };
    }
    issued?.dataRequests.push({ method: req.method, path: url.pathname, token: value, status: mode === 'hang' ? 0 : answer.status, mode, headers: Object.keys(req.headers) });
    if (mode === 'hang') {
      await new Promise((resolve) => {
        setTimeout(resolve, 120_000).unref();
        req.socket.once('close', resolve);
      });
      res.destroy();
      return;
    }
    if (mode === 'huge') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      let sent = 0;
      const pump = () => {
        while (sent < 4 * 1024 * 1024 && res.write(chunk)) sent += chunk.length;
        if (sent < 4 * 1024 * 1024) res.once('drain', pump); else res.end();
      };
      res.on('error', () => {});
      req.socket.once('close', () => { sent = Infinity; });
      pump();
      return;
    }
    res.writeHead(answer.status, answer.headers);
    res.end(answer.body);
  }

  const handle = provider.callback();
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      if (testControls && url.pathname === '/__test/token-mode' && req.method === 'POST') {
        const asked = (await readForm(req)).keys().next().value || 'normal';
        const [mode, ms] = asked.split(':');
        tokenMode = ['normal', '500', 'hang', 'garbage', 'slow'].includes(mode) ? mode : 'normal';
        slowMs = tokenMode === 'slow' ? Number(ms) || 1000 : 0;
        res.end(tokenMode === 'slow' ? `slow:${slowMs}` : tokenMode);
        return;
      }
      if (testControls && url.pathname === '/__test/rotation' && req.method === 'POST') {
        rotateRefreshTokens = (await readForm(req)).keys().next().value !== 'off';
        res.end(rotateRefreshTokens ? 'on' : 'off');
        return;
      }
      if (testControls && url.pathname === '/__test/data-mode' && req.method === 'POST') {
        const asked = (await readForm(req)).keys().next().value || 'normal';
        dataMode = ['normal', '401', '401-once', 'redirect', 'set-cookie', 'hang', 'huge'].includes(asked) ? asked : 'normal';
        res.end(dataMode);
        return;
      }
      if (url.pathname.startsWith('/data/v1/')) {
        await dataApi(req, res, url);
        return;
      }
      const match = url.pathname.match(/^\/interaction\/([\w-]+)$/);
      if (match) {
        await interaction(req, res, match[1]);
        return;
      }
      handle(req, res);
    } catch (error) {
      res.statusCode = 400;
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page('Error', `<h1>Something went wrong</h1><p class="error">${escapeHtml(error.message)}</p>`));
    }
  });
  const close = await listen(server, port);
  return {
    issuer,
    server,
    issued,
    close,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { issuer } = await startBank();
  console.log(`local bank listening at ${issuer} (accounts: ${Object.keys(ACCOUNTS).join(', ')}; password = username)`);
}
