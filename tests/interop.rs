//! Interoperability: the whole token life cycle against a real, certified
//! authorization server — `oidc-provider` 9.13.3 (OpenID Certified), run by
//! `tests/interop/server.mjs` on loopback, with a protected API in the same
//! Node process that checks every bearer token by RFC 7662 introspection.
//!
//! Each test starts its own peer (`node tests/interop/server.mjs`), reads the
//! JSON line it prints when ready (issuer, resource URL, stats URL,
//! introspection endpoint, client credentials), and stops it when the
//! [`Peer`] guard drops (stdin closed, then killed if it lingers). A peer
//! that cannot start — no `node`, no `npm ci` in `tests/interop` — fails the
//! test; nothing is skipped. `INTEROP_TIMEOUT_SECS` (default 30) bounds the
//! wait for the ready line and for each HTTP exchange; raise it on a slow
//! machine.
//!
//! Only the crate's public API is used, over hyper-util's client.
//!
//! Run by hand: `bash tests/interop/run.sh`.

mod bounded;
mod node_peer;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use node_peer::NodeProcess;
use serde_json::Value;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower::{ServiceBuilder, ServiceExt};
use tower_token::dialect::{ClientAuth, Credentials};
use tower_token::discovery::{Discovery, Metadata, discover};
use tower_token::error::{Endpoint, ErrorCode};
use tower_token::{
    BoxError, ClientCredentials, Error, RevokeRequest, RevokeService, TokenLayer, TokenService,
    Transport,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type Api = TokenService<HttpClient>;

/// Taken shared by every test and exclusively by the timing test, so that
/// the 1,000-request stampede does not starve the 2 s token life cycle of
/// CPU on a small machine.
static QUIET: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// ---------------------------------------------------------------------------
// The peer
// ---------------------------------------------------------------------------

/// A client registered at the peer.
#[derive(Clone, Debug)]
struct Registered {
    id: String,
    secret: String,
}

impl Registered {
    fn credentials(&self) -> Credentials {
        Credentials::new(self.id.clone(), self.secret.as_str())
    }
}

/// `node tests/interop/server.mjs`, running; stopped on drop.
struct Peer {
    process: NodeProcess,
    issuer: String,
    resource: String,
    stats_url: String,
    introspection_endpoint: String,
    basic: Registered,
    post: Registered,
    special: Registered,
    short: Registered,
    resource_server: Registered,
    http: HttpClient,
}

/// How long to wait for the peer to start, and for any one HTTP exchange.
fn timeout() -> Duration {
    node_peer::timeout()
}

/// The watchdog's limit for each test (`tests/bounded`): a test may first
/// wait for the timing test to release `QUIET`, then start a peer and make
/// a few exchanges, each bounded by [`timeout`].
fn limit() -> Duration {
    (timeout() * 6).max(Duration::from_secs(180))
}

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

impl Peer {
    /// Starts a peer and waits for its ready line. Panics (fails the test)
    /// when it cannot start.
    async fn start() -> Peer {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("starting the peer panicked")
    }

    fn start_blocking() -> Peer {
        let (process, ready) = NodeProcess::start::<&str>("server.mjs", &[], timeout());

        let text = |key: &str| -> String {
            ready[key]
                .as_str()
                .unwrap_or_else(|| panic!("ready line without `{key}`: {ready}"))
                .to_owned()
        };
        let client = |name: &str| -> Registered {
            let c = &ready["clients"][name];
            Registered {
                id: c["id"].as_str().expect("client id").to_owned(),
                secret: c["secret"].as_str().expect("client secret").to_owned(),
            }
        };
        Peer {
            process,
            issuer: text("issuer"),
            resource: text("resource"),
            stats_url: text("stats"),
            introspection_endpoint: text("introspection_endpoint"),
            basic: client("basic"),
            post: client("post"),
            special: client("special"),
            short: client("short"),
            resource_server: client("resource_server"),
            http: http_client(),
        }
    }

    /// Closes the peer's stdin and waits (up to 5 s) for it to exit.
    fn stop(&mut self) -> Option<ExitStatus> {
        self.process.stop()
    }

    /// Waits (up to 5 s) for the peer to exit.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        self.process.wait_exit()
    }

    fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// The issuer's metadata, found by discovery.
    async fn metadata(&self) -> Metadata {
        discover(&self.issuer).await.expect("discovery")
    }

    /// A `TokenLayer` stack over hyper-util's client.
    fn api(&self, layer: &TokenLayer) -> Api {
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(self.http.clone())
    }

    /// The peer's counters.
    async fn stats(&self) -> Value {
        let request = Request::get(&self.stats_url).body(Full::default()).unwrap();
        let (status, body) = send(&self.http, request).await;
        assert_eq!(status, StatusCode::OK, "GET /stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// RFC 7662 introspection of `token`, as the resource server's client.
    async fn introspect(&self, token: &str) -> Value {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.introspection_endpoint)
            .header(header::AUTHORIZATION, basic(&self.resource_server))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let (status, body) = send(&self.http, request).await;
        assert_eq!(status, StatusCode::OK, "introspection: {body}");
        serde_json::from_str(&body).expect("introspection JSON")
    }

    async fn active(&self, token: &str) -> bool {
        self.introspect(token).await["active"] == Value::Bool(true)
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic(client: &Registered) -> String {
    use base64::Engine as _;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(&client.id), enc(&client.secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Sends a request without a token; the status and the body as text.
async fn send(http: &HttpClient, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = http.request(request).await.expect("request to the peer");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body");
    (
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    )
}

/// One GET of the protected API through a `TokenLayer` stack.
async fn call(api: &Api, url: &str) -> Result<(StatusCode, String), BoxError> {
    let request = Request::get(url).body(Full::default())?;
    let exchange = async {
        let response = api.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout(), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {:?}", timeout()))
}

/// The number of tokens the peer issued to `client`.
fn issued(stats: &Value, client: &Registered) -> u64 {
    stats["tokens_issued"][&client.id]["count"]
        .as_u64()
        .unwrap_or(0)
}

fn revoked(stats: &Value, client: &Registered) -> u64 {
    stats["tokens_revoked"][&client.id].as_u64().unwrap_or(0)
}

fn resource(stats: &Value, what: &str) -> u64 {
    stats["resource"][what].as_u64().expect("resource counter")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

// ---------------------------------------------------------------------------
// 1. Discovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn discovery_finds_the_token_and_revocation_endpoints() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;

    let metadata = discover(&peer.issuer).await.expect("discover()");
    assert_eq!(metadata.issuer, peer.issuer);
    assert_eq!(
        metadata.token_endpoint.as_str(),
        format!("{}/token", peer.issuer)
    );
    assert_eq!(
        metadata.revocation_endpoint.as_ref().map(|u| u.as_str()),
        Some(format!("{}/token/revocation", peer.issuer).as_str())
    );
    // oidc-provider lists client_secret_basic first among others.
    assert_eq!(metadata.token_auth(), Some(ClientAuth::Basic));
    assert_eq!(metadata.revocation_auth(), Some(ClientAuth::Basic));
    let grants = metadata.grant_types_supported.clone().unwrap_or_default();
    assert!(
        grants.iter().any(|g| g == "client_credentials"),
        "{grants:?}"
    );
    let scopes = metadata.scopes_supported.clone().unwrap_or_default();
    assert!(scopes.iter().any(|s| s == "api:read"), "{scopes:?}");

    // The builder form finds the same document.
    let again = Discovery::new(peer.issuer.as_str())
        .transport(Transport::new().timeout(Duration::from_secs(5)))
        .fetch()
        .await
        .expect("Discovery::fetch");
    assert_eq!(again, metadata);

    // And what it finds works: a token from the discovered endpoint, and
    // its revocation at the discovered revocation endpoint.
    let source = metadata
        .client_credentials(tower_token::Credentials::new(
            peer.basic.id.clone(),
            peer.basic.secret.as_str(),
        ))
        .unwrap()
        .build()
        .unwrap();
    let layer = TokenLayer::new(source);
    let token = layer.cache().token().await.expect("token");
    assert!(peer.active(token.secret()).await);
    let revoke = metadata
        .revoke_service(peer.basic.credentials())
        .unwrap()
        .build()
        .unwrap();
    revoke
        .oneshot(RevokeRequest::access(token.clone()))
        .await
        .expect("revoke");
    assert!(!peer.active(token.secret()).await);
}

// ---------------------------------------------------------------------------
// 2. Client authentication: Basic, body, and a secret that needs encoding
//    (with either), at the token and the revocation endpoint
// ---------------------------------------------------------------------------

#[tokio::test]
async fn basic_body_and_special_secret_clients_get_tokens_that_the_api_accepts() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let metadata = peer.metadata().await;
    assert_eq!(peer.special.secret, "a+b/c:d%e f");

    let cases = [
        (&peer.basic, ClientAuth::Basic, "client_secret_basic"),
        (&peer.post, ClientAuth::RequestBody, "client_secret_post"),
        (&peer.special, ClientAuth::Basic, "client_secret_basic"),
        (&peer.special, ClientAuth::RequestBody, "client_secret_post"),
    ];
    for (n, (client, auth, method)) in cases.into_iter().enumerate() {
        let before = peer.stats().await;
        let source = metadata
            .client_credentials(tower_token::Credentials::new(
                client.id.clone(),
                client.secret.as_str(),
            ))
            .unwrap()
            .auth(auth)
            .scope("api:read")
            // RFC 8707: the peer's default resource, named explicitly.
            .resource(peer.resource.clone())
            .build()
            .unwrap();
        let layer = TokenLayer::new(source);
        let api = peer.api(&layer);

        let (status, body) = call(&api, &peer.resource).await.expect("call");
        assert_eq!(status, StatusCode::OK, "{} ({auth:?}): {body}", client.id);
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["client_id"], client.id.as_str());
        assert_eq!(seen["scope"], "api:read");

        let token = layer.cache().token().await.expect("cached token");
        assert!(!token.secret().is_empty());
        let info = peer.introspect(token.secret()).await;
        assert_eq!(info["active"], true);
        assert_eq!(info["client_id"], client.id.as_str());
        assert_eq!(info["aud"], peer.resource.as_str());

        let stats = peer.stats().await;
        let methods =
            |stats: &Value| stats["tokens_issued"][&client.id]["methods"][method].as_u64();
        assert_eq!(
            issued(&stats, client),
            issued(&before, client) + 1,
            "{}: {stats}",
            client.id
        );
        assert_eq!(
            methods(&stats).unwrap_or(0),
            methods(&before).unwrap_or(0) + 1,
            "{} authenticated with {method}: {stats}",
            client.id
        );
        assert_eq!(layer.stats().tokens_fetched, 1);

        // The revocation endpoint takes the same client authentication.
        let revoke = metadata
            .revoke_service(client.credentials())
            .unwrap()
            .auth(auth)
            .build()
            .unwrap();
        revoke
            .oneshot(RevokeRequest::access(token.clone()))
            .await
            .unwrap_or_else(|e| panic!("revocation by {} ({auth:?}): {e}", client.id));
        assert!(!peer.active(token.secret()).await);
        assert_eq!(
            revoked(&peer.stats().await, client),
            revoked(&before, client) + 1
        );
        assert_eq!(resource(&stats, "ok"), n as u64 + 1);
    }
    let stats = peer.stats().await;
    assert_eq!(resource(&stats, "unauthorized"), 0);
}

// ---------------------------------------------------------------------------
// 3. Stampede: 1,000 concurrent calls, one token
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_cause_exactly_one_token_request() {
    bounded::watchdog!(limit());
    const CALLS: usize = 1_000;
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let source = peer
        .metadata()
        .await
        .client_credentials(tower_token::Credentials::new(
            peer.basic.id.clone(),
            peer.basic.secret.as_str(),
        ))
        .unwrap()
        .build()
        .unwrap();
    let layer = TokenLayer::new(source);
    let api = peer.api(&layer);

    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let started = Instant::now();
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (api, url, barrier) = (api.clone(), peer.resource.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                call(&api, &url).await
            })
        })
        .collect();
    let mut ok = 0;
    for handle in calls {
        let (status, body) = handle.await.unwrap().expect("call");
        assert_eq!(status, StatusCode::OK, "{body}");
        ok += 1;
    }
    let elapsed = started.elapsed();

    let stats = peer.stats().await;
    eprintln!(
        "stampede: {ok} calls in {elapsed:?}; peer issued {} token(s), resource hits {}",
        issued(&stats, &peer.basic),
        resource(&stats, "hits")
    );
    assert_eq!(ok, CALLS);
    assert_eq!(issued(&stats, &peer.basic), 1, "{stats}");
    assert_eq!(layer.stats().tokens_fetched, 1);
    assert_eq!(resource(&stats, "hits"), CALLS as u64);
    assert_eq!(resource(&stats, "ok"), CALLS as u64);
}

// ---------------------------------------------------------------------------
// 4. A 2 s token, over 6 s of calls
// ---------------------------------------------------------------------------

/// The `short-lived` client's tokens say `expires_in: 2`, but oidc-provider
/// sets `exp = floor(now) + 2`, so each really lives between 1 and 2 s.
/// The layer's leeway is 1 s (the cap, half the lifetime): it sends a token
/// until 1 s after it asked for it, which is always before the real expiry,
/// so it uses each token for all of its guaranteed 1 s of life. Refresh
/// ahead is 5 % of the lifetime (0.1 s): the next token is fetched in the
/// background from 0.9 s on, while requests keep the current one.
///
/// So, with calls every few milliseconds, the peer sees one token request
/// every ~0.9–1.0 s of the client's clock:
/// - never more than one per usable lifetime: consecutive issues are at
///   least 0.6 s apart (0.9 s by construction, less up to 0.3 s of
///   difference in how long two token requests took to arrive);
/// - a new token each lifetime: consecutive issues are less than 2 s apart,
///   the first comes at the first call and the last within 2 s of the end;
/// - no token was sent past its real expiry: the API answered no 401;
/// - in count: 1 + 6 s / (0.9 … 1.0 s) gives 6 or 7; the assertion allows
///   5 to 8 for scheduling noise on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_token_is_renewed_once_per_lifetime_over_six_seconds() {
    bounded::watchdog!(limit());
    const RUN: Duration = Duration::from_secs(6);
    const CALLERS: usize = 2;
    const PAUSE: Duration = Duration::from_millis(20);
    let _alone = QUIET.write().await;
    let peer = Peer::start().await;
    let source = peer
        .metadata()
        .await
        .client_credentials(tower_token::Credentials::new(
            peer.short.id.clone(),
            peer.short.secret.as_str(),
        ))
        .unwrap()
        .build()
        .unwrap();
    let layer = TokenLayer::builder(source)
        .leeway(Duration::from_secs(1))
        .refresh_ahead(0.05)
        .build()
        .unwrap();
    let api = peer.api(&layer);

    let start_ms = unix_ms(SystemTime::now());
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (api, url) = (api.clone(), peer.resource.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while started.elapsed() < RUN {
                    statuses.push(call(&api, &url).await.map(|(s, _)| s));
                    tokio::time::sleep(PAUSE).await;
                }
                statuses
            })
        })
        .collect();
    let mut calls = 0;
    for caller in callers {
        for status in caller.await.unwrap() {
            assert_eq!(status.expect("call"), StatusCode::OK);
            calls += 1;
        }
    }
    let end_ms = unix_ms(SystemTime::now());

    let stats = peer.stats().await;
    let times: Vec<u64> = stats["tokens_issued"][&peer.short.id]["times"]
        .as_array()
        .expect("issue times")
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let n = times.len() as u64;
    eprintln!(
        "2 s tokens: {calls} calls over {} ms, {n} tokens issued, gaps between issues (ms): {gaps:?}, \
         first issue +{} ms, last issue {} ms before the end; layer stats {:?}",
        end_ms - start_ms,
        times[0].saturating_sub(start_ms),
        end_ms.saturating_sub(times[times.len() - 1]),
        layer.stats()
    );

    assert!(calls >= 100, "only {calls} calls in 6 s");
    assert_eq!(resource(&stats, "unauthorized"), 0, "{stats}");
    assert_eq!(resource(&stats, "ok"), calls);
    let layer_stats = layer.stats();
    assert_eq!(layer_stats.unauthorized_refreshes, 0);
    assert_eq!(layer_stats.fetch_failures, 0);
    assert_eq!(
        layer_stats.tokens_fetched, n,
        "every fetch reached the peer"
    );

    assert!(
        times[0] - start_ms < 1_000,
        "first token {} ms after the first call",
        times[0] - start_ms
    );
    for gap in &gaps {
        assert!(*gap >= 600, "two tokens {gap} ms apart: {gaps:?}");
        assert!(*gap < 2_000, "no new token for {gap} ms: {gaps:?}");
    }
    assert!(end_ms - times[times.len() - 1] < 2_000);
    assert!((5..=8).contains(&n), "{n} tokens in 6 s: {gaps:?}");
}

// ---------------------------------------------------------------------------
// 5. Revocation, then a 401, a refresh and a 200
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_revoked_token_is_refused_once_and_replaced_transparently() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let metadata = peer.metadata().await;
    let source = metadata
        .client_credentials(tower_token::Credentials::new(
            peer.basic.id.clone(),
            peer.basic.secret.as_str(),
        ))
        .unwrap()
        .build()
        .unwrap();
    let layer = TokenLayer::new(source);
    let api = peer.api(&layer);
    let revoke = metadata
        .revoke_service(peer.basic.credentials())
        .unwrap()
        .build()
        .unwrap();

    let (status, _) = call(&api, &peer.resource).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let first = layer.cache().token().await.unwrap();
    assert!(peer.active(first.secret()).await);

    revoke
        .clone()
        .oneshot(RevokeRequest::access(first.clone()))
        .await
        .expect("revocation");
    let info = peer.introspect(first.secret()).await;
    assert_eq!(info, serde_json::json!({ "active": false }));
    let stats = peer.stats().await;
    assert_eq!(revoked(&stats, &peer.basic), 1);

    // The layer still holds the revoked token: the API answers 401, the
    // layer invalidates it, fetches a new one and sends the request again.
    let (status, body) = call(&api, &peer.resource).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    let stats = peer.stats().await;
    assert_eq!(issued(&stats, &peer.basic), 2, "one new token: {stats}");
    assert_eq!(resource(&stats, "unauthorized"), 1, "{stats}");
    assert_eq!(resource(&stats, "ok"), 2, "{stats}");
    let layer_stats = layer.stats();
    assert_eq!(layer_stats.tokens_fetched, 2);
    assert_eq!(layer_stats.unauthorized_refreshes, 1);

    let second = layer.cache().token().await.unwrap();
    assert_ne!(second.secret(), first.secret());
    assert!(peer.active(second.secret()).await);
    assert!(!peer.active(first.secret()).await);
}

// ---------------------------------------------------------------------------
// 6. Revoke on drop, and shutdown()
// ---------------------------------------------------------------------------

#[tokio::test]
async fn dropping_the_last_clone_revokes_the_token_within_two_seconds() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let metadata = peer.metadata().await;
    let source = metadata
        .client_credentials(tower_token::Credentials::new(
            peer.basic.id.clone(),
            peer.basic.secret.as_str(),
        ))
        .unwrap()
        .build()
        .unwrap();
    let revoker = metadata
        .revoke_service(peer.basic.credentials())
        .unwrap()
        .build()
        .unwrap();
    let layer = TokenLayer::builder(source)
        .revoker(revoker)
        .revoke_on_drop(true)
        .build()
        .unwrap();
    let api = peer.api(&layer);
    let clone = layer.clone();

    let (status, _) = call(&api, &peer.resource).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let token = layer.cache().token().await.unwrap();
    assert!(peer.active(token.secret()).await);

    // Not the last clone yet: nothing is revoked.
    drop(layer);
    drop(api);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(peer.active(token.secret()).await, "revoked too early");
    assert_eq!(peer.stats().await["revocation_requests"], 0);

    drop(clone);
    let dropped = Instant::now();
    while peer.active(token.secret()).await {
        assert!(
            dropped.elapsed() < Duration::from_secs(2),
            "still active 2 s after the last clone was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = dropped.elapsed();
    let stats = peer.stats().await;
    eprintln!("revoke on drop: inactive {after:?} after the drop");
    assert_eq!(revoked(&stats, &peer.basic), 1, "{stats}");
    assert_eq!(stats["revocation_requests"], 1, "{stats}");
}

#[tokio::test]
async fn shutdown_revokes_the_token_before_it_returns() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let metadata = peer.metadata().await;
    let source = metadata
        .client_credentials(tower_token::Credentials::new(
            peer.post.id.clone(),
            peer.post.secret.as_str(),
        ))
        .unwrap()
        .auth(ClientAuth::RequestBody)
        .build()
        .unwrap();
    let revoker = metadata
        .revoke_service(peer.post.credentials())
        .unwrap()
        .auth(ClientAuth::RequestBody)
        .build()
        .unwrap();
    let layer = TokenLayer::builder(source)
        .revoker(revoker)
        .revoke_on_drop(true)
        .build()
        .unwrap();
    let api = peer.api(&layer);

    let (status, _) = call(&api, &peer.resource).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let token = layer.cache().token().await.unwrap();
    assert!(peer.active(token.secret()).await);

    layer.cache().shutdown().await.expect("shutdown");
    // No waiting: the revocation was answered before shutdown() returned.
    assert!(!peer.active(token.secret()).await);
    let stats = peer.stats().await;
    assert_eq!(revoked(&stats, &peer.post), 1, "{stats}");
    assert_eq!(stats["revocation_requests"], 1, "{stats}");
    assert_eq!(layer.stats().revocations, 1);

    // The cache is empty now: dropping the last clone revokes nothing more.
    drop(api);
    drop(layer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(peer.stats().await["revocation_requests"], 1);
}

// ---------------------------------------------------------------------------
// 7. A wrong client secret
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_client_secret_is_a_typed_invalid_client_and_no_request_is_sent() {
    bounded::watchdog!(limit());
    const WRONG: &str = "not-the-secret";
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let metadata = peer.metadata().await;

    for (client, auth) in [
        (&peer.basic, ClientAuth::Basic),
        (&peer.post, ClientAuth::RequestBody),
    ] {
        let source = metadata
            .client_credentials(tower_token::Credentials::new(client.id.clone(), WRONG))
            .unwrap()
            .auth(auth)
            .build()
            .unwrap();
        let layer = TokenLayer::new(source);
        let api = peer.api(&layer);

        let err = call(&api, &peer.resource)
            .await
            .expect_err("no token, no request");
        let err = err
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("not a tower_token::Error: {err}"));
        match err {
            Error::OAuth {
                endpoint: Endpoint::Token,
                code: ErrorCode::InvalidClient,
                status,
                ..
            } => assert_eq!(*status, StatusCode::UNAUTHORIZED),
            other => panic!("expected invalid_client, got {other:?}"),
        }
        assert!(!err.to_string().contains(WRONG));
        assert!(!err.is_retriable());

        // The cache says the same.
        let err = layer.cache().token().await.expect_err("no token");
        assert_eq!(err.oauth_code(), Some(&ErrorCode::InvalidClient));
    }

    let stats = peer.stats().await;
    assert_eq!(
        resource(&stats, "hits"),
        0,
        "the API saw a request: {stats}"
    );
    assert_eq!(stats["tokens_issued"], serde_json::json!({}), "{stats}");
    assert!(
        stats["token_errors"]["invalid_client"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{stats}"
    );
}

// ---------------------------------------------------------------------------
// 8. Revoking an unknown token
// ---------------------------------------------------------------------------

#[tokio::test]
async fn revoking_an_unknown_token_is_ok() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let peer = Peer::start().await;
    let metadata = peer.metadata().await;
    let revoke: RevokeService = metadata
        .revoke_service(peer.basic.credentials())
        .unwrap()
        .build()
        .unwrap();

    revoke
        .clone()
        .oneshot(RevokeRequest::access("never-issued-access-token"))
        .await
        .expect("RFC 7009 §2.2: an unknown token is still a success");
    revoke
        .clone()
        .oneshot(RevokeRequest::refresh("never-issued-refresh-token"))
        .await
        .expect("unknown refresh token");
    revoke
        .oneshot(RevokeRequest::access("never-issued-either").without_hint())
        .await
        .expect("unknown token without hint");

    let stats = peer.stats().await;
    assert_eq!(stats["revocation_requests"], 3, "{stats}");
    assert_eq!(stats["tokens_revoked"], serde_json::json!({}), "{stats}");
}

// ---------------------------------------------------------------------------
// The peer itself
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_peer_stops_when_its_stdin_closes() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let mut peer = Peer::start().await;
    let metadata = peer.metadata().await;
    assert!(metadata.token_endpoint.as_str().starts_with(&peer.issuer));

    let status = peer
        .stop()
        .expect("the peer did not exit within 5 s of its stdin closing");
    assert!(status.success(), "{status:?}");
    assert!(peer.stderr().contains("stopping (stdin closed)"));
    // Nobody listens on the issuer's port any more.
    let err = Discovery::new(peer.issuer.as_str())
        .transport(Transport::new().timeout(Duration::from_secs(2)))
        .fetch()
        .await
        .expect_err("the peer is gone");
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let source = ClientCredentials::builder(
        metadata.token_endpoint.as_str(),
        tower_token::Credentials::new(peer.basic.id.clone(), peer.basic.secret.as_str()),
    )
    .build()
    .unwrap();
    assert!(TokenLayer::new(source).cache().token().await.is_err());
}

#[tokio::test]
async fn the_peer_stops_on_sigterm() {
    bounded::watchdog!(limit());
    let _shared = QUIET.read().await;
    let mut peer = Peer::start().await;
    let killed = Command::new("kill")
        .args(["-TERM", &peer.process.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = peer
        .wait_exit()
        .expect("the peer did not exit within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(peer.stderr().contains("stopping (SIGTERM)"));
}
