// The authorization server of tower-token's interoperability tests:
// oidc-provider (OpenID Certified) issuing client-credentials tokens, plus a
// protected API that checks them by RFC 7662 introspection, in one process.
//
//   node tests/interop/server.mjs [ISSUER_PORT [RESOURCE_PORT]] [--no-stdin]
//
// Ports come from the arguments, else from INTEROP_PORT and
// INTEROP_RESOURCE_PORT, else 0 (the system picks). When both listen, one JSON
// line goes to stdout:
//
//   {"issuer":"http://127.0.0.1:P1","resource":"http://127.0.0.1:P2/api",
//    "stats":"http://127.0.0.1:P2/stats","control":"http://127.0.0.1:P2/control",
//    "introspection_endpoint":"…",
//    "clients":{"basic":{"id":"…","secret":"…"},…}}
//
// Nothing else is written to stdout (oidc-provider's warnings go to stderr).
// The process exits when its stdin closes (the tests hold the pipe; pass
// --no-stdin to run it by hand in the background), or on SIGTERM/SIGINT.
//
// The provider: features clientCredentials, introspection, revocation and
// resourceIndicators (the protected API is the default resource, with scopes
// `api:read api:write`), opaque access tokens, an unbounded in-memory store
// (the default one forgets entries past ~1,000), tokens that live 300 s, or
// 2 s for the `short-lived` client.
//
// The protected API (on the second port):
//   GET|POST /api   200 {"client_id","scope"} for an active token
//                   whose audience is this API; 401 with
//                   `WWW-Authenticate: Bearer error="invalid_token"` otherwise
//                   (plain `Bearer realm=…` when no token was sent).
//   GET /stats      the counters below, as JSON.
//
//   POST /control   switches, as a JSON object (any subset; the answer is
//                   the switches as they are): `as_nonce` (the token endpoint
//                   demands a DPoP nonce), `rs_nonce` (the API demands one),
//                   `rotate_rs_nonce` (the API's nonce changes now).
//
// DPoP (RFC 9449): the `dpop` client is registered with
// `dpop_bound_access_tokens`, so its tokens are bound to the key of the
// proof its token request carried (`token_type: DPoP`, `cnf.jkt` at
// introspection). The provider has a nonce secret, so it hands out
// `DPoP-Nonce` values, and demands them while `as_nonce` is on. The API
// takes `Authorization: DPoP <token>` with a `DPoP` proof and checks, on
// every request, with `jose`: the signature by the proof's own `jwk`, `typ`,
// `htm`, `htu` (query and fragment ignored), `iat` within 60 s, a `jti` never
// seen before, `ath`, the nonce while `rs_nonce` is on, and that the proof's
// key is the one the token is bound to (`cnf.jkt` from introspection). A
// bound token sent as `Bearer` is refused.
//
// Counters: tokens issued per client (with the time of each issue and the
// client authentication the token request used), token requests rejected per
// error code, revocation requests, tokens revoked per client, introspection
// requests, resource hits by outcome, and for DPoP: requests accepted,
// distinct `jti`s, nonce challenges, proofs refused by reason, `htu`s that
// carried a query or fragment, and the last `htu`.

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';

const HOST = '127.0.0.1';
const SCOPES = ['api:read', 'api:write'];
const SHORT_TTL = 2;
const DEFAULT_TTL = 300;

// The clients. The ids and secrets are printed in the ready line so that the
// tests take them from here.
const CLIENTS = {
  basic: {
    id: 'basic-client',
    secret: 'basic-secret-7f3a',
    method: 'client_secret_basic',
  },
  post: {
    id: 'post-client',
    secret: 'post-secret-91c2',
    method: 'client_secret_post',
  },
  // Characters that must be form-urlencoded before base64 (RFC 6749 §2.3.1).
  special: {
    id: 'special client:1',
    secret: 'a+b/c:d%e f',
    method: 'client_secret_basic',
  },
  short: {
    id: 'short-lived',
    secret: 'short-secret-44d0',
    method: 'client_secret_basic',
  },
  // Tokens bound to the key of a DPoP proof (RFC 9449).
  dpop: {
    id: 'dpop-client',
    secret: 'dpop-secret-5b9e',
    method: 'client_secret_basic',
    dpop: true,
  },
  // The protected API's own client, for introspection.
  resource_server: {
    id: 'resource-server',
    secret: 'resource-secret-c81e',
    method: 'client_secret_basic',
  },
};

function ttlFor(client) {
  return client?.clientId === CLIENTS.short.id ? SHORT_TTL : DEFAULT_TTL;
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

const args = process.argv.slice(2);
const watchStdin = !args.includes('--no-stdin');
const ports = args.filter((a) => !a.startsWith('--'));

function port(value, name) {
  if (value === undefined || value === '') return 0;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new Error(`${name}: not a port: ${value}`);
  }
  return n;
}

const issuerPort = port(ports[0] ?? process.env.INTEROP_PORT, 'issuer port');
const resourcePort = port(ports[1] ?? process.env.INTEROP_RESOURCE_PORT, 'resource port');

// ---------------------------------------------------------------------------
// Shutdown: on SIGTERM/SIGINT, or when stdin closes (set up first, so that a
// peer stopped while it starts still exits cleanly)
// ---------------------------------------------------------------------------

const servers = [];
let stopping = false;
function shutdown(why) {
  if (stopping) return;
  stopping = true;
  console.error(`interop peer: stopping (${why})`);
  for (const server of servers) {
    server.close();
    server.closeAllConnections();
  }
  // Exit even if something still holds the event loop.
  setTimeout(() => process.exit(0), 1_000).unref();
  if (servers.length === 0) process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (watchStdin) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

// Loaded after the handlers above are in place: the import is most of the
// start-up time.
const { default: Provider, errors } = await import('oidc-provider');
const { calculateJwkThumbprint, EmbeddedJWK, jwtVerify } = await import('jose');

// The switches of POST /control.
const control = {
  as_nonce: false,
  rs_nonce: false,
  rs_nonce_value: randomBytes(16).toString('base64url'),
};

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

const started = Date.now();
const stats = {
  // client id -> { count, times: [ms since the epoch], methods: { method: n } }
  tokens_issued: {},
  // OAuth error code -> n, for token requests that failed
  token_errors: {},
  revocation_requests: 0,
  // client id -> n, for tokens that existed and were revoked
  tokens_revoked: {},
  introspection_requests: 0,
  resource: { hits: 0, ok: 0, unauthorized: 0, no_token: 0 },
  dpop: {
    // requests whose proof and token were accepted
    ok: 0,
    // distinct `jti`s seen in proofs (each accepted request has one)
    jtis: 0,
    // 401 `use_dpop_nonce` answers of the API
    nonce_challenges: 0,
    // reason -> n, for proofs or bound tokens the API refused
    rejected: {},
    // proofs whose `htu` had a query or a fragment
    htu_with_query: 0,
    last_htu: null,
  },
};

function bump(map, key, by = 1) {
  map[key] = (map[key] ?? 0) + by;
}

// ---------------------------------------------------------------------------
// An unbounded in-memory store (oidc-provider's adapter interface)
// ---------------------------------------------------------------------------

const store = new Map(); // key -> { payload, expiresAt (ms, or Infinity) }
const grants = new Map(); // grantId -> Set of keys
const byUid = new Map(); // uid -> id
const byUserCode = new Map(); // userCode -> id

function live(entry) {
  return entry !== undefined && entry.expiresAt > Date.now() ? entry : undefined;
}

class UnboundedAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
      grants.get(payload.grantId).add(key);
    }
    if (payload.uid) byUid.set(payload.uid, id);
    if (payload.userCode) byUserCode.set(payload.userCode, id);
  }

  async find(id) {
    return live(store.get(this.key(id)))?.payload;
  }

  async findByUid(uid) {
    const id = byUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = byUserCode.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = live(store.get(this.key(id)));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) ?? []) store.delete(key);
    grants.delete(grantId);
  }
}

// Expired entries are dropped now and then, so a long run stays small.
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt <= now) store.delete(key);
  }
  for (const [grantId, keys] of grants) {
    for (const key of keys) if (!store.has(key)) keys.delete(key);
    if (keys.size === 0) grants.delete(grantId);
  }
}, 10_000).unref();

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

// Both servers listen first, so that the issuer and the resource URL are known
// when the provider is configured.
let providerCallback = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const issuerServer = http.createServer((req, res) => providerCallback(req, res));
const resourceServer = http.createServer((req, res) => {
  handleResource(req, res).catch((err) => {
    console.error('resource server error:', err);
    if (!res.headersSent) res.statusCode = 500;
    res.end();
  });
});
// Many concurrent clients: keep the accept queue deep and connections alive.
for (const server of [issuerServer, resourceServer]) {
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 35_000;
  servers.push(server);
}

function listen(server, wanted) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: HOST, port: wanted, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

const [p1, p2] = await Promise.all([
  listen(issuerServer, issuerPort),
  listen(resourceServer, resourcePort),
]);
const ISSUER = `http://${HOST}:${p1}`;
const RESOURCE = `http://${HOST}:${p2}/api`;

// ---------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });

const provider = new Provider(ISSUER, {
  adapter: UnboundedAdapter,
  clients: Object.values(CLIENTS).map((c) => ({
    client_id: c.id,
    client_secret: c.secret,
    token_endpoint_auth_method: c.method,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: SCOPES.join(' '),
    ...(c.dpop ? { dpop_bound_access_tokens: true } : {}),
  })),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'interop', use: 'sig', alg: 'RS256' }] },
  scopes: SCOPES,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: () => control.as_nonce,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator, client) => {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: SCOPES.join(' '),
          audience: RESOURCE,
          // Opaque, so that revocation and introspection accept it (JWT access
          // tokens answer `unsupported_token_type` there).
          accessTokenFormat: 'opaque',
          accessTokenTTL: ttlFor(client),
        };
      },
    },
  },
  ttl: {
    ClientCredentials: (_ctx, _token, client) => ttlFor(client),
  },
});

provider.on('client_credentials.saved', (token) => {
  const entry = (stats.tokens_issued[token.clientId] ??= { count: 0, times: [], methods: {} });
  entry.count += 1;
  entry.times.push(Date.now());
});
provider.on('client_credentials.destroyed', (token) => {
  bump(stats.tokens_revoked, token.clientId);
});
provider.on('grant.error', (_ctx, err) => bump(stats.token_errors, err.error ?? 'unknown'));
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

// Which client authentication each token request used, and the revocation and
// introspection requests (known or unknown token alike).
provider.use(async (ctx, next) => {
  await next();
  const route = ctx.oidc?.route;
  if (route === 'token' && ctx.status === 200 && ctx.oidc.client) {
    const method = ctx.headers.authorization !== undefined ? 'client_secret_basic' : 'client_secret_post';
    const entry = stats.tokens_issued[ctx.oidc.client.clientId];
    if (entry) bump(entry.methods, method);
  } else if (route === 'revocation') {
    stats.revocation_requests += 1;
  } else if (route === 'introspection') {
    stats.introspection_requests += 1;
  }
});

providerCallback = provider.callback();

// ---------------------------------------------------------------------------
// The protected API
// ---------------------------------------------------------------------------

const INTROSPECTION = `${ISSUER}/token/introspection`;
const RS_AUTH = `Basic ${Buffer.from(
  `${encodeURIComponent(CLIENTS.resource_server.id)}:${encodeURIComponent(CLIENTS.resource_server.secret)}`,
).toString('base64')}`;

// Keep-alive connections to the introspection endpoint, a bounded number of
// them: a stampede of API calls then reuses warm sockets instead of opening
// one connection per call.
const introspectionAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });

function introspect(token) {
  const body = new URLSearchParams({ token, token_type_hint: 'access_token' }).toString();
  return new Promise((resolve, reject) => {
    const req = http.request(INTROSPECTION, {
      method: 'POST',
      agent: introspectionAgent,
      headers: {
        authorization: RS_AUTH,
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': Buffer.byteLength(body),
        accept: 'application/json',
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) {
          reject(new Error(`introspection answered ${res.statusCode}: ${text}`));
          return;
        }
        try {
          resolve(JSON.parse(text));
        } catch (err) {
          reject(err);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function audienceMatches(aud) {
  return Array.isArray(aud) ? aud.includes(RESOURCE) : aud === RESOURCE;
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

// The `jti`s of accepted proofs, with when they were seen (ms); forgotten
// after two minutes, by which time `iat` alone refuses the proof.
const seenJtis = new Map();
const IAT_WINDOW = 60;
setInterval(() => {
  const old = Date.now() - 120_000;
  for (const [jti, at] of seenJtis) if (at < old) seenJtis.delete(jti);
}, 10_000).unref();

function ath(token) {
  return createHash('sha256').update(token).digest('base64url');
}

// A request with `Authorization: DPoP <token>` (RFC 9449 §7).
async function handleDpop(req, res, token) {
  const refuse = (reason, error = 'invalid_dpop_proof') => {
    bump(stats.dpop.rejected, reason);
    stats.resource.unauthorized += 1;
    sendJson(res, 401, { error, reason }, {
      'www-authenticate': `DPoP error="${error}", error_description="${reason}", algs="ES256 EdDSA"`,
    });
  };
  const proof = req.headers.dpop;
  if (typeof proof !== 'string' || proof.includes(',')) {
    refuse('no proof, or more than one');
    return;
  }
  let payload;
  let protectedHeader;
  try {
    ({ payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, {
      typ: 'dpop+jwt',
      algorithms: ['ES256', 'EdDSA', 'Ed25519'],
    }));
  } catch (err) {
    refuse(`proof not verified (${err.code ?? err.message})`);
    return;
  }
  if (payload.htm !== req.method) {
    refuse('htm');
    return;
  }
  if (typeof payload.htu === 'string') {
    stats.dpop.last_htu = payload.htu;
    if (/[?#]/.test(payload.htu)) stats.dpop.htu_with_query += 1;
  }
  const htu = typeof payload.htu === 'string' ? URL.parse(payload.htu) : null;
  if (htu) {
    htu.search = '';
    htu.hash = '';
  }
  if (htu?.href !== RESOURCE) {
    refuse('htu');
    return;
  }
  if (typeof payload.iat !== 'number' || Math.abs(Date.now() / 1000 - payload.iat) > IAT_WINDOW) {
    refuse('iat');
    return;
  }
  if (typeof payload.jti !== 'string' || payload.jti.length === 0) {
    refuse('jti missing');
    return;
  }
  if (seenJtis.has(payload.jti)) {
    refuse('jti replayed');
    return;
  }
  seenJtis.set(payload.jti, Date.now());
  stats.dpop.jtis += 1;
  if (payload.ath !== ath(token)) {
    refuse('ath');
    return;
  }
  if (control.rs_nonce && payload.nonce !== control.rs_nonce_value) {
    stats.dpop.nonce_challenges += 1;
    stats.resource.unauthorized += 1;
    sendJson(res, 401, { error: 'use_dpop_nonce' }, {
      'www-authenticate': 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"',
      'dpop-nonce': control.rs_nonce_value,
    });
    return;
  }
  const info = await introspect(token);
  if (info.active !== true || !audienceMatches(info.aud)) {
    refuse('the access token is not active', 'invalid_token');
    return;
  }
  if (info.cnf?.jkt !== await calculateJwkThumbprint(protectedHeader.jwk)) {
    refuse('the proof key is not the key the token is bound to', 'invalid_token');
    return;
  }
  stats.resource.ok += 1;
  stats.dpop.ok += 1;
  const headers = control.rs_nonce ? { 'dpop-nonce': control.rs_nonce_value } : {};
  sendJson(res, 200, { client_id: info.client_id, scope: info.scope ?? null, jkt: info.cnf.jkt }, headers);
}

async function handleResource(req, res) {
  const { pathname } = new URL(req.url, `http://${HOST}`);
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);

  if (pathname === '/control' && req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    } catch {
      sendJson(res, 400, { error: 'not JSON' });
      return;
    }
    if (typeof body.as_nonce === 'boolean') control.as_nonce = body.as_nonce;
    if (typeof body.rs_nonce === 'boolean') control.rs_nonce = body.rs_nonce;
    if (body.rotate_rs_nonce === true) control.rs_nonce_value = randomBytes(16).toString('base64url');
    sendJson(res, 200, control);
    return;
  }
  if (pathname === '/stats' && req.method === 'GET') {
    sendJson(res, 200, { ...stats, uptime_ms: Date.now() - started, now_ms: Date.now() });
    return;
  }
  if (pathname !== '/api') {
    sendJson(res, 404, { error: 'not_found' });
    return;
  }

  stats.resource.hits += 1;
  const dpop = /^DPoP ([\x21-\x7e]+)$/i.exec(req.headers.authorization ?? '');
  if (dpop) {
    await handleDpop(req, res, dpop[1]);
    return;
  }
  const match = /^Bearer ([\x21-\x7e]+)$/i.exec(req.headers.authorization ?? '');
  if (!match) {
    stats.resource.no_token += 1;
    sendJson(res, 401, { error: 'no token' }, { 'www-authenticate': 'Bearer realm="interop"' });
    return;
  }
  const info = await introspect(match[1]);
  if (info.cnf?.jkt !== undefined) {
    // RFC 9449 §7.2: a DPoP-bound token is no bearer token.
    bump(stats.dpop.rejected, 'bound token sent as Bearer');
    stats.resource.unauthorized += 1;
    sendJson(res, 401, { error: 'invalid_token' }, {
      'www-authenticate': 'Bearer realm="interop", error="invalid_token", error_description="a DPoP-bound token needs a DPoP proof"',
    });
    return;
  }
  if (info.active !== true || !audienceMatches(info.aud)) {
    stats.resource.unauthorized += 1;
    sendJson(res, 401, { error: 'invalid_token' }, {
      'www-authenticate': 'Bearer realm="interop", error="invalid_token", error_description="the access token is not active"',
    });
    return;
  }
  stats.resource.ok += 1;
  sendJson(res, 200, { client_id: info.client_id, scope: info.scope ?? null });
}

// ---------------------------------------------------------------------------
// Ready
// ---------------------------------------------------------------------------

process.stdout.write(`${JSON.stringify({
  issuer: ISSUER,
  resource: RESOURCE,
  stats: `http://${HOST}:${p2}/stats`,
  control: `http://${HOST}:${p2}/control`,
  introspection_endpoint: INTROSPECTION,
  clients: Object.fromEntries(Object.entries(CLIENTS).map(([k, c]) => [k, { id: c.id, secret: c.secret }])),
})}\n`);
