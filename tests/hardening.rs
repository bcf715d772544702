//! The core at its edges (R17, R19): bounded stacks, an API that rejects
//! every token, `shutdown()` racing a fetch, revoke on exit, extreme
//! settings, a suspended machine, refresh ahead through `token()`, and a
//! fetch abandoned by a runtime shutting down.
//!
//! Every server is real HTTP on loopback; the revoke-on-exit tests run the
//! client in a child process (this test binary, started again).

mod bounded;
mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use common::{
    ApiServer, CLIENT_ID, CLIENT_SECRET, SUSPENDED_SECS, TokenServer, eventually, http_client,
    send, source, token_error, wall_after_suspend,
};
use http::{Request, StatusCode};
use http_body_util::{Empty, Full};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tower::{Layer, ServiceBuilder};
use tower_token::cache::Backoff;
use tower_token::dialect::Credentials;
use tower_token::http_client::TowerClient;
use tower_token::{
    ClientCredentials, ConfigError, Error, RevokeService, Token, TokenLayer, Transport,
};

// ---------------------------------------------------------------------------
// A revocation endpoint that records what it was sent
// ---------------------------------------------------------------------------

#[derive(Default)]
struct RevokeState {
    forms: Mutex<Vec<HashMap<String, String>>>,
    /// Never answer (the request hangs).
    silent: AtomicBool,
}

#[derive(Clone)]
struct Revoker {
    addr: SocketAddr,
    state: Arc<RevokeState>,
}

impl Revoker {
    async fn start() -> Self {
        let state = Arc::new(RevokeState::default());
        let router = Router::new()
            .fallback(revoke_handler)
            .with_state(Arc::clone(&state));
        let addr = common::serve(router).await;
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/revoke", self.addr)
    }

    fn service(&self) -> RevokeService {
        RevokeService::rfc(self.url(), Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .build()
            .unwrap()
    }

    /// The tokens revoked so far, in order.
    fn revoked(&self) -> Vec<String> {
        self.state
            .forms
            .lock()
            .unwrap()
            .iter()
            .map(|f| f["token"].clone())
            .collect()
    }
}

async fn revoke_handler(State(state): State<Arc<RevokeState>>, body: Bytes) -> StatusCode {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    state.forms.lock().unwrap().push(form);
    if state.silent.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    StatusCode::OK
}

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

// ---------------------------------------------------------------------------
// 1. Bounded stacks never starve the token fetch
// ---------------------------------------------------------------------------

/// 50 concurrent requests on an empty cache, through `stack`, whose clones
/// also carry the token requests: all succeed, with one token request.
async fn fifty_requests_through_one_bounded_stack<S>(
    stack: S,
    tokens: &TokenServer,
    api: &ApiServer,
) where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = tower_token::BoxError,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let token_source = ClientCredentials::builder(
        tokens.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .transport(
        Transport::new()
            .http_client(TowerClient::new(stack.clone()))
            .timeout(Duration::from_secs(5)),
    )
    .build()
    .unwrap();
    let svc = TokenLayer::new(token_source).layer(stack);
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let svc = svc.clone();
            let url = api.url(&format!("/orders/{i}"));
            tokio::spawn(async move { send(&svc, get(url)).await })
        })
        .collect();
    for call in calls {
        let (status, _) = call.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(tokens.hits(), 1, "one token request for 50 callers");
    assert_eq!(api.count(), 50);
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
}

#[tokio::test]
async fn the_token_endpoint_behind_the_same_concurrency_limit_is_reached() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let stack = ServiceBuilder::new()
        .map_err(tower_token::BoxError::from)
        .concurrency_limit(1)
        .service(http_client::<Full<Bytes>>());
    fifty_requests_through_one_bounded_stack(stack, &tokens, &api).await;
}

#[tokio::test]
async fn the_token_endpoint_behind_the_same_buffer_is_reached() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let stack = ServiceBuilder::new()
        .buffer(1)
        .service(http_client::<Full<Bytes>>());
    fifty_requests_through_one_bounded_stack(stack, &tokens, &api).await;
}

// ---------------------------------------------------------------------------
// 2. An API that rejects every token is no herd against the token endpoint
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_api_that_rejects_every_token_gets_fetches_only_as_the_backoff_allows() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    api.set(|b| b.reject_all = true);
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(800));
    let layer = TokenLayer::builder(source(&tokens))
        .backoff(backoff)
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Full<Bytes>>());

    let started = Instant::now();
    let mut unauthorized = 0;
    let mut rejected_errors = 0;
    for i in 0..100 {
        match send(&svc, get(api.url(&format!("/{i}")))).await {
            Ok((status, _)) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                unauthorized += 1;
            }
            Err(err) => {
                assert!(
                    matches!(token_error(&err), Error::TokenRejected { .. }),
                    "{err}"
                );
                rejected_errors += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();

    // The bound, from the backoff: the first token and its immediate
    // successor, then one fetch per backoff period. The n-th backoff
    // (n ≥ 1) lasts at least half of min(initial × 2ⁿ⁻¹, max).
    let mut bound = 2;
    let mut waited = Duration::ZERO;
    for n in 1.. {
        let ceiling = backoff
            .initial
            .saturating_mul(1 << (n - 1).min(16))
            .min(backoff.max);
        waited += ceiling / 2;
        if waited > elapsed {
            break;
        }
        bound += 1;
    }
    let fetched = tokens.hits();
    assert!(
        fetched <= bound,
        "{fetched} token requests in {elapsed:?}; the backoff allows {bound}"
    );
    assert!(fetched >= 3, "the cache kept trying: {fetched}");
    assert_eq!(unauthorized + rejected_errors, 100);
    assert_eq!(layer.stats().tokens_rejected as usize, fetched);

    // No request carried a token that the API had already rejected:
    // every token went out once (the API rejects each one it sees).
    let mut by_token: HashMap<String, usize> = HashMap::new();
    for request in api.requests() {
        *by_token
            .entry(request.token().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        by_token.values().all(|&n| n == 1),
        "a rejected token was sent again: {by_token:?}"
    );
    assert_eq!(by_token.len(), fetched);

    // The API accepts tokens again: once the backoff has passed, the
    // next request succeeds.
    api.set(|b| b.reject_all = false);
    tokio::time::sleep(backoff.max).await;
    let (status, _) = send(&svc, get(api.url("/after"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // The streak is over: a later rejection refreshes at once again.
    let next = api.requests().last().unwrap().token().unwrap().to_owned();
    api.reject(&next);
    let (status, _) = send(&svc, get(api.url("/again"))).await.unwrap();
    assert_eq!(status, StatusCode::OK, "a single rejection is retried");
}

#[tokio::test]
async fn a_401_on_the_retry_drops_the_token_the_retry_carried() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    api.reject("tok-1");
    api.reject("tok-2");
    let layer = TokenLayer::new(source(&tokens));
    let svc = layer.layer(http_client::<Full<Bytes>>());
    let (status, _) = send(&svc, get(api.url("/a"))).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["tok-1", "tok-2"]);
    assert_eq!(layer.stats().tokens_rejected, 2);
    // tok-2 is never sent again: the next request waits for the
    // backoff, then carries tok-3.
    let err = send(&svc, get(api.url("/b"))).await.unwrap_err();
    assert!(matches!(
        token_error(&err),
        Error::TokenRejected { consecutive: 2 }
    ));
    tokio::time::sleep(Backoff::default().initial).await;
    let (status, _) = send(&svc, get(api.url("/c"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.requests().last().unwrap().token(), Some("tok-3"));
}

// ---------------------------------------------------------------------------
// 6. shutdown() leaves nothing live
// ---------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_during_a_background_refresh_revokes_every_token() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let revoker = Revoker::start().await;
    tokens.set(|b| b.refresh_token = Some("rt-1".into()));
    let layer = TokenLayer::builder(source(&tokens))
        // The whole lifetime is the refresh-ahead window.
        .refresh_ahead(1.0)
        .revoker(revoker.service())
        .build()
        .unwrap();
    let cache = layer.cache().clone();
    assert_eq!(cache.token().await.unwrap().secret(), "tok-1");

    // The next call starts a background refresh, held at the server.
    tokens.close_gate();
    assert_eq!(cache.token().await.unwrap().secret(), "tok-1");
    tokens.wait_hits(2).await;

    let shutdown = tokio::spawn({
        let cache = cache.clone();
        async move { cache.shutdown().await }
    });
    eventually("tok-1 revoked", || {
        revoker.revoked().contains(&"tok-1".to_owned())
    })
    .await;
    tokens.open_gate();
    shutdown.await.unwrap().unwrap();

    let revoked = revoker.revoked();
    for token in tokens.issued() {
        assert!(revoked.contains(&token), "{token} not revoked: {revoked:?}");
    }
    assert!(revoked.contains(&"rt-1".to_owned()), "{revoked:?}");
    assert_eq!(tokens.issued(), ["tok-1", "tok-2"]);
    assert_eq!(layer.stats().token_expires_at, None, "the cache is empty");
    // Still usable: a later request fetches a new token.
    assert_eq!(cache.token().await.unwrap().secret(), "tok-3");
}

// ---------------------------------------------------------------------------
// 7. Revoke on exit: the last handle dropped at the end of #[tokio::main]
// ---------------------------------------------------------------------------

const CHILD_FLAVOR: &str = "TOWER_TOKEN_TEST_CHILD_FLAVOR";
const CHILD_TOKEN_URL: &str = "TOWER_TOKEN_TEST_TOKEN_URL";
const CHILD_REVOKE_URL: &str = "TOWER_TOKEN_TEST_REVOKE_URL";

fn child_layer() -> TokenLayer {
    let var = |name| std::env::var(name).unwrap();
    let source = ClientCredentials::builder(
        var(CHILD_TOKEN_URL),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap();
    let revoker = RevokeService::rfc(
        var(CHILD_REVOKE_URL),
        Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap();
    TokenLayer::builder(source)
        .revoker(revoker)
        .revoke_on_drop(true)
        .build()
        .unwrap()
}

async fn child_body() {
    let layer = child_layer();
    layer.cache().token().await.unwrap();
    println!("child: dropping the last handle");
    // `layer` is dropped here, as the last statement of main.
}

#[tokio::main(flavor = "current_thread")]
async fn child_main_current_thread() {
    child_body().await
}

#[tokio::main]
async fn child_main_multi_thread() {
    child_body().await
}

/// Not a test of its own: the body of the child process that the tests
/// below start.
#[test]
#[ignore = "runs only as the child process of the revoke-on-exit tests"]
fn revoke_on_exit_child() {
    match std::env::var(CHILD_FLAVOR).as_deref() {
        Ok("current_thread") => child_main_current_thread(),
        Ok("multi_thread") => child_main_multi_thread(),
        _ => {}
    }
}

/// The child's token reached the revocation endpoint before the child
/// exited. At least once: a request in flight when the runtime shuts down is
/// sent again from the revoking thread, since nobody can tell whether the
/// server got it (revoking twice is harmless, RFC 7009 §2.2).
fn assert_revoked_once_or_more(revoker: &Revoker) {
    let revoked = revoker.revoked();
    assert!(!revoked.is_empty(), "not revoked");
    assert!(revoked.iter().all(|t| t == "tok-1"), "{revoked:?}");
}

/// Runs the child with `flavor`; returns how long it took to exit after it
/// said it was dropping the last handle.
async fn run_child(flavor: &str, tokens: &TokenServer, revoker: &Revoker) -> Duration {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "revoke_on_exit_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_FLAVOR, flavor)
        .env(CHILD_TOKEN_URL, tokens.url())
        .env(CHILD_REVOKE_URL, revoker.url())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dropped_at = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("child: dropping the last handle") {
            dropped_at = Some(Instant::now());
        }
    }
    let status = child.wait().await.unwrap();
    let dropped_at = dropped_at.expect("the child got a token");
    assert!(status.success(), "the child exited with {status}");
    dropped_at.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_at_the_end_of_a_current_thread_main_revokes() {
    bounded::watchdog!();
    let (tokens, revoker) = (TokenServer::start().await, Revoker::start().await);
    run_child("current_thread", &tokens, &revoker).await;
    assert_revoked_once_or_more(&revoker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_at_the_end_of_a_multi_thread_main_revokes() {
    bounded::watchdog!();
    let (tokens, revoker) = (TokenServer::start().await, Revoker::start().await);
    run_child("multi_thread", &tokens, &revoker).await;
    assert_revoked_once_or_more(&revoker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_endpoint_that_never_answers_delays_exit_by_the_bounded_wait_only() {
    bounded::watchdog!();
    let (tokens, revoker) = (TokenServer::start().await, Revoker::start().await);
    revoker.state.silent.store(true, Ordering::SeqCst);
    for flavor in ["current_thread", "multi_thread"] {
        let exit_after = run_child(flavor, &tokens, &revoker).await;
        // The default bounded wait is 2 s; 1 s more for the process
        // to end.
        assert!(
            exit_after < Duration::from_secs(3),
            "{flavor}: exited {exit_after:?} after the drop"
        );
    }
    assert!(!revoker.revoked().is_empty(), "the revocation was sent");
}

// ---------------------------------------------------------------------------
// 8. No configuration value can abort the process
// ---------------------------------------------------------------------------

#[tokio::test]
async fn extreme_settings_neither_panic_nor_abort() {
    bounded::watchdog!();
    let failing = || {
        tower_token::source::from_fn(|_| async {
            Err::<Token, _>(std::io::Error::other("token endpoint down"))
        })
    };
    let working = || {
        tower_token::source::from_fn(|_| async {
            Ok::<_, std::io::Error>(Token::new("t").with_expires_in(Duration::from_secs(60)))
        })
    };
    let backoffs = [
        Backoff::new(Duration::MAX, Duration::MAX),
        Backoff::new(Duration::MAX, Duration::ZERO),
        Backoff::new(Duration::ZERO, Duration::MAX),
    ];
    for backoff in backoffs {
        // A failed fetch computes the backoff deadline.
        let layer = TokenLayer::builder(failing())
            .backoff(backoff)
            .build()
            .unwrap();
        for _ in 0..3 {
            let err = layer.cache().token().await.unwrap_err();
            assert!(matches!(err, Error::Source(_)), "{err}");
        }
    }
    for d in [Duration::MAX, Duration::ZERO, Duration::from_nanos(1)] {
        let layer = TokenLayer::builder(working())
            .leeway(d)
            .refresh_ahead(f64::MAX)
            .revoke_on_drop_timeout(d)
            .build()
            .unwrap();
        assert_eq!(layer.cache().token().await.unwrap().secret(), "t");
        for fetch_timeout in [Duration::MAX, Duration::from_nanos(1)] {
            let layer = TokenLayer::builder(working())
                .default_lifetime(Duration::MAX)
                .fetch_timeout(fetch_timeout)
                .build()
                .unwrap();
            let _ = layer.cache().token().await;
        }
    }
    // Values that make no sense are typed errors.
    for (builder, setting) in [
        (
            TokenLayer::builder(working()).fetch_timeout(Duration::ZERO),
            "fetch_timeout",
        ),
        (
            TokenLayer::builder(working()).default_lifetime(Duration::ZERO),
            "default_lifetime",
        ),
    ] {
        match builder.build() {
            Err(ConfigError::OutOfRange { setting: s, .. }) => assert_eq!(s, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
    // A token whose lifetime is the largest a server can state.
    let layer = TokenLayer::new(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(Token::new("t").with_expires_in(Duration::MAX))
    }));
    assert_eq!(layer.cache().token().await.unwrap().secret(), "t");
    assert!(layer.stats().token_expires_at.is_some());
}

// ---------------------------------------------------------------------------
// 9. Deadlines survive a system suspend
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_suspend_longer_than_the_lifetime_does_not_send_the_expired_token() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let layer = TokenLayer::builder(source(&tokens))
        .wall_clock(wall_after_suspend)
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Full<Bytes>>());
    send(&svc, get(api.url("/before"))).await.unwrap();
    let expires = layer.stats().token_expires_at.unwrap();
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    assert!(expires <= in_an_hour && expires > in_an_hour - Duration::from_secs(60));

    // Two hours pass while suspended.
    SUSPENDED_SECS.store(2 * 3600, Ordering::SeqCst);
    send(&svc, get(api.url("/after"))).await.unwrap();
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["tok-1", "tok-2"], "the expired token is not sent");
    let expires = layer.stats().token_expires_at.unwrap();
    assert!(
        expires > wall_after_suspend() + Duration::from_secs(3500),
        "the new token's expiry is on the wall clock"
    );

    // A suspend that ends in the refresh-ahead window: the request keeps
    // the token, and a background refresh starts.
    SUSPENDED_SECS.store(2 * 3600 + 3600 - 60, Ordering::SeqCst);
    send(&svc, get(api.url("/window"))).await.unwrap();
    assert_eq!(api.requests().last().unwrap().token(), Some("tok-2"));
    tokens.wait_completed(3).await;
}

// ---------------------------------------------------------------------------
// 11. Smaller points
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_starts_the_refresh_ahead_like_a_request() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let layer = TokenLayer::builder(source(&tokens))
        .refresh_ahead(1.0)
        .build()
        .unwrap();
    assert_eq!(layer.cache().token().await.unwrap().secret(), "tok-1");
    assert_eq!(layer.cache().token().await.unwrap().secret(), "tok-1");
    // The server has answered before the cache publishes the token; the
    // counter moves after it does.
    eventually("a background refresh", || {
        tokens.completed() == 2 && layer.stats().tokens_fetched == 2
    })
    .await;
    assert_eq!(layer.cache().token().await.unwrap().secret(), "tok-2");
}

#[test]
fn a_fetch_dropped_by_a_runtime_shutdown_is_no_failure() {
    bounded::watchdog!();
    // The servers live on a runtime of their own.
    let servers = tokio::runtime::Runtime::new().unwrap();
    let tokens = servers.block_on(TokenServer::start());
    tokens.close_gate();

    let first = tokio::runtime::Runtime::new().unwrap();
    let layer = first.block_on(async {
        let layer = TokenLayer::new(source(&tokens));
        let cache = layer.cache().clone();
        tokio::spawn(async move { cache.token().await });
        tokens.wait_hits(1).await;
        layer
    });
    // The runtime goes, and the fetch task with it.
    drop(first);
    tokens.open_gate();

    let stats = layer.stats();
    assert_eq!(stats.fetch_failures, 0, "{stats:?}");
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        // No backoff: the next caller fetches at once.
        let token = layer.cache().token().await.unwrap();
        assert_eq!(token.secret(), "tok-2");
    });
    drop(servers);
}

#[tokio::test]
async fn a_request_waiting_for_a_token_holds_no_buffer_slot_of_a_unrelated_caller() {
    // Waiting callers give their reserved slot back: another caller with a
    // header of its own (passed through) is not blocked by them.
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    tokens.close_gate();
    let stack = ServiceBuilder::new()
        .buffer(1)
        .service(http_client::<Empty<Bytes>>());
    let svc = TokenLayer::new(source(&tokens)).layer(stack);
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            let url = api.url("/waits");
            tokio::spawn(
                async move { send(&svc, Request::get(url).body(Empty::new()).unwrap()).await },
            )
        })
        .collect();
    tokens.wait_hits(1).await;
    let own = Request::get(api.url("/own"))
        .header("authorization", "Bearer own")
        .body(Empty::new())
        .unwrap();
    let (status, _) = send(&svc, own).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    tokens.open_gate();
    for call in waiting {
        assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
    }
}
