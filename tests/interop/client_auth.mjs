// The authorization server of tower-token's client-authentication interop
// tests: oidc-provider (OpenID Certified) over HTTPS, with clients that
// authenticate by private_key_jwt, client_secret_jwt, tls_client_auth,
// self_signed_tls_client_auth and client_secret_post, and a protected API
// that checks each token by introspection and, for certificate-bound tokens
// (RFC 8705 §3), that the caller presents the certificate the token is
// bound to.
//
//   node tests/interop/client_auth.mjs DIR [--methods m1,m2,…]
//
// DIR holds what the test generated (nothing is committed):
//   ca.pem                     the test CA (trusted for tls_client_auth)
//   server.pem, server.key     the servers' certificate (127.0.0.1), from the CA
//   self-signed.pem            the self-signed client certificate to register
//   clients.json               {"rs256":{"jwk":…},"es256":…,"ps256":…,"es384":…}:
//                              the public JWKs (with kid and alg) to register
//
// --methods limits the provider's client authentication methods (and so
// its metadata's token_endpoint_auth_methods_supported); clients using other
// methods are not registered, and the API is not served.
//
// Listeners, all HTTPS with server.pem:
//   issuer        no client certificate asked
//   mtls alias    asks for a client certificate (mtls_endpoint_aliases)
//   api           asks for a client certificate
//
// The ready line on stdout:
//   {"issuer":…,"mtls_token_endpoint":…,"api":…,"stats":…,
//    "clients":{"rs256":"id",…},"secrets":{"csjwt":…,"post":…},
//    "eddsa_jwk"|"rsa_jwk"|"ec_jwk":{private JWKs generated here}}
//
// The process exits when its stdin closes.

import { X509Certificate, createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import process from 'node:process';

const HOST = '127.0.0.1';
const SCOPES = ['api:read'];

const dir = process.argv[2];
if (!dir) throw new Error('usage: client_auth.mjs DIR [--methods m1,m2]');
const methodsArg = process.argv.indexOf('--methods');
const onlyMethods = methodsArg > 0 ? process.argv[methodsArg + 1].split(',') : undefined;

const read = (name) => fs.readFileSync(path.join(dir, name), 'utf8');
const caPem = read('ca.pem');
const serverCert = read('server.pem');
const serverKey = read('server.key');
const selfSignedPem = read('self-signed.pem');
const keys = JSON.parse(read('clients.json'));

// Shutdown when the test closes stdin.
const servers = [];
function shutdown() {
  for (const server of servers) {
    server.close();
    server.closeAllConnections();
  }
  setTimeout(() => process.exit(0), 500).unref();
}
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.resume();

const { default: Provider } = await import('oidc-provider');

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

const stats = {
  // client id -> { method: n } for tokens issued
  tokens: {},
  // client id (or '?') -> { error code: n } for token requests refused
  token_errors: {},
  // body fields and Authorization scheme of each token request, in order
  token_requests: [],
  api: { hits: 0, ok: 0, inactive: 0, wrong_certificate: 0, no_token: 0 },
};
const bump = (map, key) => {
  map[key] = (map[key] ?? 0) + 1;
};

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

let providerCallback = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const tls = { key: serverKey, cert: serverCert };
const mtls = { ...tls, ca: [caPem], requestCert: true, rejectUnauthorized: false };
const issuerServer = https.createServer(tls, (req, res) => providerCallback(req, res));
const aliasServer = https.createServer(mtls, (req, res) => providerCallback(req, res));
const apiServer = https.createServer(mtls, (req, res) => {
  handleApi(req, res).catch((err) => {
    console.error('api error:', err);
    if (!res.headersSent) res.statusCode = 500;
    res.end();
  });
});
servers.push(issuerServer, aliasServer, apiServer);

const listen = (server) => new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen({ host: HOST, port: 0 }, () => resolve(server.address().port));
});
const [pIssuer, pAlias, pApi] = await Promise.all(servers.map(listen));
const ISSUER = `https://${HOST}:${pIssuer}`;
const ALIAS = `https://${HOST}:${pAlias}`;
const API = `https://${HOST}:${pApi}/api`;

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

// Private keys generated here and handed to the test as JWKs (the test
// loads them with SigningKey::from_jwk); their public halves are registered.
const privateJwk = (type, options, kid, alg) => ({
  ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
  kid,
  alg,
});
const publicJwk = (jwk) => {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...rest } = jwk;
  return rest;
};
const eddsaJwk = privateJwk('ed25519', undefined, 'eddsa-1', 'EdDSA');
const eddsaPublic = publicJwk(eddsaJwk);
const rsaJwk = privateJwk('rsa', { modulusLength: 2048 }, 'jwk-rsa-1', 'RS256');
const ecJwk = privateJwk('ec', { namedCurve: 'P-256' }, 'jwk-ec-1', 'ES256');

const selfSigned = new X509Certificate(selfSignedPem);
const selfSignedJwk = {
  ...selfSigned.publicKey.export({ format: 'jwk' }),
  x5c: [selfSigned.raw.toString('base64')],
  'x5t#S256': createHash('sha256').update(selfSigned.raw).digest('base64url'),
};

const secrets = {
  csjwt: randomBytes(32).toString('base64url'),
  post: 'post-secret-8d1f',
  rs: 'resource-secret-2b7c',
};

const base = {
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: SCOPES.join(' '),
};
const jwtClient = (name, jwk) => ({
  ...base,
  client_id: `pkjwt-${name}`,
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: jwk.alg,
  jwks: { keys: [jwk] },
});
const CLIENTS = {
  rs256: jwtClient('rs256', keys.rs256.jwk),
  ps256: jwtClient('ps256', keys.ps256.jwk),
  es256: jwtClient('es256', keys.es256.jwk),
  es384: jwtClient('es384', keys.es384.jwk),
  eddsa: jwtClient('eddsa', eddsaPublic),
  jwk_rsa: jwtClient('jwk-rsa', publicJwk(rsaJwk)),
  jwk_ec: jwtClient('jwk-ec', publicJwk(ecJwk)),
  csjwt: {
    ...base,
    client_id: 'csjwt',
    client_secret: secrets.csjwt,
    token_endpoint_auth_method: 'client_secret_jwt',
    token_endpoint_auth_signing_alg: 'HS256',
  },
  tls: {
    ...base,
    client_id: 'tls-client',
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: 'CN=tls-client',
    tls_client_certificate_bound_access_tokens: true,
  },
  self_signed: {
    ...base,
    client_id: 'self-signed-client',
    token_endpoint_auth_method: 'self_signed_tls_client_auth',
    jwks: { keys: [selfSignedJwk] },
    tls_client_certificate_bound_access_tokens: true,
  },
  post: {
    ...base,
    client_id: 'post-only',
    client_secret: secrets.post,
    token_endpoint_auth_method: 'client_secret_post',
  },
  resource_server: {
    ...base,
    client_id: 'resource-server',
    client_secret: secrets.rs,
    token_endpoint_auth_method: 'client_secret_basic',
  },
};

const methods = onlyMethods ?? [
  'client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt',
  'tls_client_auth', 'self_signed_tls_client_auth', 'none',
];
const registered = Object.fromEntries(
  Object.entries(CLIENTS).filter(([, c]) => methods.includes(c.token_endpoint_auth_method)),
);

// ---------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const provider = new Provider(ISSUER, {
  clients: Object.values(registered),
  clientAuthMethods: methods,
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'op', use: 'sig', alg: 'RS256' }] },
  scopes: SCOPES,
  enabledJWA: {
    clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'],
  },
  discovery: {
    mtls_endpoint_aliases: { token_endpoint: `${ALIAS}/token` },
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => API,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: SCOPES.join(' '),
        audience: API,
        accessTokenFormat: 'opaque',
        accessTokenTTL: 300,
      }),
    },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate: (ctx) => ctx.socket.getPeerX509Certificate?.() ?? undefined,
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => {
        const cert = ctx.socket.getPeerX509Certificate?.();
        return property === 'tls_client_auth_subject_dn' && cert?.subject === expected.replace(/,\s*/g, '\n');
      },
    },
  },
});

provider.on('grant.error', (ctx, err) => {
  const id = ctx.oidc?.client?.clientId ?? ctx.oidc?.body?.client_id ?? '?';
  bump((stats.token_errors[id] ??= {}), err.error ?? 'unknown');
});

// What each token request carried over the wire (the Authorization scheme,
// the names of the body's fields, the client_assertion: the test checks jti
// and iat across requests), and each token issued, by client and method.
// oidc-provider accepts a secret in either place for both secret methods;
// the `post-only` client stands for the servers that take the secret in the
// body only and refuse Basic with invalid_client.
const BODY_ONLY = 'post-only';
function refusesBasic(ctx) {
  const [scheme, value] = (ctx.headers.authorization ?? '').split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !value) return false;
  const id = decodeURIComponent(Buffer.from(value, 'base64').toString('utf8').split(':')[0]);
  return id === BODY_ONLY;
}

provider.use(async (ctx, next) => {
  const token = ctx.path === '/token' && ctx.method === 'POST';
  if (token && refusesBasic(ctx)) {
    ctx.status = 401;
    ctx.body = { error: 'invalid_client', error_description: 'send the client secret in the body' };
    ctx.set('www-authenticate', 'Basic realm="token"');
  } else {
    await next();
  }
  if (!token) return;
  const body = ctx.oidc?.body ?? {};
  stats.token_requests.push({
    authorization: (ctx.headers.authorization ?? '').split(' ')[0] || null,
    fields: Object.keys(body),
    client_id: body.client_id ?? null,
    client_assertion: body.client_assertion ?? null,
    certificate: Boolean(ctx.socket.getPeerX509Certificate?.()),
    status: ctx.status,
    error: ctx.status === 200 ? null : (ctx.body?.error ?? null),
  });
  if (ctx.status === 200 && ctx.oidc?.client) {
    bump((stats.tokens[ctx.oidc.client.clientId] ??= {}), ctx.oidc.client.clientAuthMethod);
  }
});

providerCallback = provider.callback();

// ---------------------------------------------------------------------------
// The protected API
// ---------------------------------------------------------------------------

const introspectionAgent = new https.Agent({ keepAlive: true, ca: [caPem] });
function introspect(token) {
  const body = new URLSearchParams({ token }).toString();
  return new Promise((resolve, reject) => {
    const req = https.request(`${ISSUER}/token/introspection`, {
      method: 'POST',
      agent: introspectionAgent,
      headers: {
        authorization: `Basic ${Buffer.from(`resource-server:${secrets.rs}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': Buffer.byteLength(body),
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
}

async function handleApi(req, res) {
  for await (const _ of req);
  const { pathname } = new URL(req.url, API);
  if (pathname === '/stats') {
    send(res, 200, stats);
    return;
  }
  stats.api.hits += 1;
  const match = /^Bearer ([\x21-\x7e]+)$/i.exec(req.headers.authorization ?? '');
  if (!match) {
    stats.api.no_token += 1;
    send(res, 401, { error: 'no token' }, { 'www-authenticate': 'Bearer' });
    return;
  }
  const info = await introspect(match[1]);
  if (info.active !== true) {
    stats.api.inactive += 1;
    send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return;
  }
  const bound = info.cnf?.['x5t#S256'];
  if (bound) {
    const cert = req.socket.getPeerX509Certificate?.();
    const presented = cert ? createHash('sha256').update(cert.raw).digest('base64url') : undefined;
    if (presented !== bound) {
      stats.api.wrong_certificate += 1;
      send(res, 401, { error: 'invalid_token' }, {
        'www-authenticate': 'Bearer error="invalid_token", error_description="certificate-bound token, other certificate"',
      });
      return;
    }
  }
  stats.api.ok += 1;
  send(res, 200, { client_id: info.client_id, bound: bound ?? null });
}

process.stdout.write(`${JSON.stringify({
  issuer: ISSUER,
  mtls_token_endpoint: `${ALIAS}/token`,
  api: API,
  stats: `https://${HOST}:${pApi}/stats`,
  clients: Object.fromEntries(Object.entries(registered).map(([k, c]) => [k, c.client_id])),
  secrets: { csjwt: secrets.csjwt, post: secrets.post },
  eddsa_jwk: eddsaJwk,
  rsa_jwk: rsaJwk,
  ec_jwk: ecJwk,
})}\n`);
