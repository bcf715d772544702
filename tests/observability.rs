//! Observability (R15) and secrecy of what is observed (R13):
//!
//! - all `tracing` output at TRACE level — of this crate and of everything
//!   under it (reqwest, hyper, axum) — across token fetches, a failed fetch,
//!   401 invalidation, the retry, revocation and a failed revocation
//!   contains neither the client secret nor any token;
//! - `stats()` counts match what the servers saw.

mod bounded;
mod common;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use bytes::Bytes;
use common::{ApiServer, CLIENT_ID, CLIENT_SECRET, Canned, TokenServer, http_client, send};
use http::Request;
use http_body_util::Full;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tower::ServiceBuilder;
use tower_token::cache::Backoff;
use tower_token::dialect::Credentials;
use tower_token::{ClientCredentials, RevokeService, TokenLayer};
use tracing_subscriber::fmt::MakeWriter;

// ---------------------------------------------------------------------------
// Capturing tracing output
// ---------------------------------------------------------------------------

/// Everything written by the global subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs (once per test binary) a global TRACE subscriber writing into
/// a buffer, so that events from spawned tasks on any thread are captured.
fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(captured.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
            captured
        })
        .clone()
}

// ---------------------------------------------------------------------------
// A revocation endpoint
// ---------------------------------------------------------------------------

#[derive(Default)]
struct RevokeState {
    /// The `token` form field of every request.
    tokens: Mutex<Vec<String>>,
    /// When set, answer 400 and echo the token in the body.
    fail: Mutex<bool>,
}

#[derive(Clone)]
struct RevokeServer {
    addr: SocketAddr,
    state: Arc<RevokeState>,
}

impl RevokeServer {
    async fn start() -> Self {
        let state = Arc::new(RevokeState::default());
        let router = axum::Router::new()
            .fallback(revoke_handler)
            .with_state(state.clone());
        let addr = common::serve(router).await;
        Self { addr, state }
    }

    fn service(&self) -> RevokeService {
        RevokeService::rfc(
            format!("http://{}/revoke", self.addr),
            Credentials::new(CLIENT_ID, CLIENT_SECRET),
        )
        .build()
        .unwrap()
    }

    fn revoked(&self) -> Vec<String> {
        self.state.tokens.lock().unwrap().clone()
    }
}

async fn revoke_handler(
    State(state): State<Arc<RevokeState>>,
    body: Bytes,
) -> axum::response::Response {
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    state.tokens.lock().unwrap().push(token.clone());
    if *state.fail.lock().unwrap() {
        let body = serde_json::json!({
            "error": "invalid_request",
            "error_description": format!("cannot revoke {token} for {CLIENT_SECRET}"),
        });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    StatusCode::OK.into_response()
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// Distinctive token values, so that any of them in the output is a leak.
const TOKEN_PREFIX: &str = "at-7f3c9e-";
const REFRESH_TOKEN: &str = "rt-5d2a8b-refresh";

fn source(tokens: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder(
        tokens.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap()
}

fn post(url: String) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_output_carries_no_secret() {
    bounded::watchdog!();
    let captured = capture();
    let tokens = TokenServer::start().await;
    tokens.set(|b| {
        b.prefix = TOKEN_PREFIX.to_owned();
        b.refresh_token = Some(REFRESH_TOKEN.to_owned());
    });
    let api = ApiServer::start().await;
    let revoker = RevokeServer::start().await;
    let layer = TokenLayer::builder(source(&tokens))
        .revoker(revoker.service())
        .backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(20),
        ))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(http_client::<Full<Bytes>>());

    // Fetch, use.
    let (status, _) = send(&client, post(api.url("/a"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // 401: invalidation, a refresh (with the refresh token), the retry.
    api.reject(&format!("{TOKEN_PREFIX}1"));
    let (status, _) = send(&client, post(api.url("/b"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // A failed fetch whose answer echoes the client secret.
    tokens.set(|b| {
        b.canned = Some(Canned::json(
            401,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("client {CLIENT_ID} with secret {CLIENT_SECRET} and refresh token {REFRESH_TOKEN} unknown"),
            }),
        ))
    });
    layer.cache().invalidate();
    let err = send(&client, post(api.url("/c"))).await.unwrap_err();
    assert!(common::token_error(&err).oauth_code().is_some(), "{err}");
    tokens.set(|b| b.canned = None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _) = send(&client, post(api.url("/d"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // Revocation: one that works, then one whose answer echoes the token.
    layer.shutdown().await.unwrap();
    assert!(!revoker.revoked().is_empty());
    let (status, _) = send(&client, post(api.url("/e"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    *revoker.state.fail.lock().unwrap() = true;
    layer.shutdown().await.unwrap_err();

    // Every token this run saw, access and refresh.
    let mut secrets: Vec<String> = tokens.issued();
    secrets.push(REFRESH_TOKEN.to_owned());
    assert!(secrets.len() >= 5, "{secrets:?}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_urlencoded::byte_serialize(CLIENT_ID.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect::<String>(),
    ));
    secrets.push(CLIENT_SECRET.to_owned());
    secrets.push(form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect());
    secrets.push(basic);
    secrets.push(TOKEN_PREFIX.to_owned());

    let text = captured.text();
    // The capture works, and the crate's events are there.
    for expected in [
        "tower_token::fetch",
        "token fetched",
        "token rejected by the server (401)",
        "retrying the request with a fresh token",
        "token fetch failed",
        "tower_token::revoke",
        "token revoked",
        "token revocation failed",
    ] {
        assert!(
            text.contains(expected),
            "no `{expected}` in the output:\n{text}"
        );
    }
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "`{secret}` leaked into the tracing output:\n{}",
            text.lines()
                .filter(|l| l.contains(secret.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_the_servers_saw() {
    bounded::watchdog!();
    let _ = capture();
    let tokens = TokenServer::start().await;
    let api = ApiServer::start().await;
    let revoker = RevokeServer::start().await;
    let layer = TokenLayer::builder(source(&tokens))
        .revoker(revoker.service())
        .backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(20),
        ))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(http_client::<Full<Bytes>>());
    let stats = layer.stats();
    assert_eq!(
        (
            stats.tokens_fetched,
            stats.fetch_failures,
            stats.unauthorized_refreshes,
            stats.revocations
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.token_expires_at, None);

    // 20 concurrent calls: one fetch.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let req = post(api.url("/a"));
            tokio::spawn(async move { send(&client, req).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
    }
    let stats = layer.stats();
    assert_eq!(stats.tokens_fetched as usize, tokens.hits());
    assert_eq!(stats.tokens_fetched, 1);
    // The server said 3600 s.
    let expires_at = stats.token_expires_at.expect("a token is cached");
    let expected = SystemTime::now() + Duration::from_secs(3600);
    let gap = expected
        .duration_since(expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        gap < Duration::from_secs(5),
        "{expires_at:?} vs {expected:?}"
    );

    // The API rejects tok-1, then tok-2, each seen by a burst of calls: one
    // refresh per rejected token.
    for rejected in ["tok-1", "tok-2"] {
        api.reject(rejected);
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let client = client.clone();
                let req = post(api.url("/b"));
                tokio::spawn(async move { send(&client, req).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
        }
    }
    let rejected_tokens: std::collections::HashSet<_> = api
        .requests()
        .iter()
        .filter(|r| r.token().is_some_and(|t| t == "tok-1" || t == "tok-2"))
        .filter(|r| r.path == "/b")
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    let stats = layer.stats();
    assert_eq!(stats.unauthorized_refreshes as usize, rejected_tokens.len());
    assert_eq!(stats.unauthorized_refreshes, 2);
    assert_eq!(stats.tokens_fetched as usize, tokens.hits());
    assert_eq!(stats.tokens_fetched, 3);

    // Two failed fetches (the second after the backoff), then a good one.
    tokens.set(|b| b.canned = Some(Canned::new(503, "down")));
    layer.cache().invalidate();
    send(&client, post(api.url("/c"))).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&client, post(api.url("/c"))).await.unwrap_err();
    let failed_answers = tokens.hits() - tokens.issued().len();
    tokens.set(|b| b.canned = None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&client, post(api.url("/d"))).await.unwrap();
    let stats = layer.stats();
    assert_eq!(stats.fetch_failures as usize, failed_answers);
    assert_eq!(stats.fetch_failures, 2);
    assert_eq!(stats.tokens_fetched as usize, tokens.issued().len());
    assert_eq!(
        (stats.tokens_fetched + stats.fetch_failures) as usize,
        tokens.hits()
    );

    // Revocations: one per shutdown that revoked a token.
    layer.shutdown().await.unwrap();
    send(&client, post(api.url("/e"))).await.unwrap();
    layer.shutdown().await.unwrap();
    let stats = layer.stats();
    assert_eq!(stats.revocations as usize, revoker.revoked().len());
    // The tokens fetched after the outage, each revoked once.
    assert_eq!(revoker.revoked(), tokens.issued()[3..].to_vec());
    assert_eq!(
        stats.token_expires_at, None,
        "the cache is empty after shutdown"
    );
}
