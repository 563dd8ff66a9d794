// A real OpenID Provider for the SSO tests: `oidc-provider` (a certified OP) on 127.0.0.1, driven by
// tests/support/oidc_idp.py. Reads its configuration as JSON on stdin:
//   {"redirect_uris": [...], "confidential": {"client_id", "client_secret"}, "public": {"client_id"},
//    "accounts": {"alice": {"email", "name", "groups": [...], "amr": [...], "acr": "..."}}, "id_token_claims": bool}
// listens on a free loopback port and prints one JSON line {"issuer": "http://127.0.0.1:PORT"} once ready.
//
// Interactions: GET /interaction/:uid signs in the account named by `login_hint` at once, or shows a form whose
// POST /interaction/:uid/login takes `username`. Accounts have no passwords (this is a test IdP). Consent is implied
// for the registered clients (loadExistingGrant), so the flow goes straight back to the redirect_uri.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'interop', 'ts', 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const config = JSON.parse(await readStdin());
const accounts = config.accounts;
const scopes = 'openid email profile groups';

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => { text += chunk; });
    process.stdin.on('end', () => resolve(text));
    process.stdin.on('error', reject);
  });
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: 'op-rsa-1', use: 'sig', alg: 'RS256' };
}

let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const acrValues = [...new Set(Object.values(accounts).map((account) => account.acr).filter(Boolean))];
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.confidential.client_id,
      client_secret: config.confidential.client_secret,
      redirect_uris: config.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: config.public.client_id,
      redirect_uris: config.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
  ],
  jwks: { keys: [signingKey()] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: { openid: ['sub', 'acr', 'amr'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: scopes.split(' '),
  acrValues,
  // false: the ID token carries the scopes' claims itself; true (the default): they come from userinfo only.
  conformIdTokenClaims: !config.id_token_claims,
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: account.email, email_verified: true, name: account.name, groups: account.groups };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(scopes);
    await grant.save();
    return grant;
  },
});

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  let username = details.params.login_hint;
  if (action === 'login') {
    username = new URLSearchParams(await readBody(req)).get('username');
  }
  if (!username || !accounts[username]) {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(`<!doctype html><title>Sign in</title>${username ? '<p>Unknown account</p>' : ''}
<form method="post" action="/interaction/${uid}/login"><input name="username" autofocus><button>Sign in</button></form>`);
    return;
  }
  const account = accounts[username];
  await provider.interactionFinished(req, res, {
    login: { accountId: username, amr: account.amr, acr: account.acr },
  }, { mergeWithLastSubmission: false });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { text += chunk; });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

const callback = provider.callback();
handler = (req, res) => {
  const match = /^\/interaction\/([\w-]+)(\/login)?$/.exec(new URL(req.url, issuer).pathname);
  if (!match) {
    callback(req, res);
    return;
  }
  interaction(req, res, match[1], match[2] ? 'login' : 'show').catch((error) => {
    res.statusCode = 400;
    res.end(String(error.message));
  });
};

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
