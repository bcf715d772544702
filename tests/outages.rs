//! Token-endpoint outages under 1,000 concurrent callers (R5, R7).
//!
//! One `TokenLayer` (with `refresh_ahead(1.0)`, so that every request made
//! while a token is cached would like a refresh) wraps a cheap inner
//! service. A token is fetched, then the token endpoint — a raw TCP server
//! behind the crate's default reqwest client — goes bad, 1,000 callers send
//! requests in loops, and later the endpoint comes back:
//!
//! - down: the listener is dropped (connection refused), then listens again
//!   on the same port;
//! - slow: answers come after the token request's timeout;
//! - flapping: every other token request fails with a 500.
//!
//! For each: every request succeeds with an issued token; token attempts
//! (counted at the client, and at the server when it listens) keep to the
//! backoff schedule — after the k-th consecutive failure the next attempt
//! waits at least half of `min(initial·2^(k−1), max)`; once the endpoint is
//! back, the first attempt made succeeds and its token is used; and after
//! everything is dropped, no more tasks are alive than before.

mod bounded;
mod support_robust;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use support_robust::{
    CountingClient, Raw, RawServer, alive_tasks, eventually, get, lock, settle_tasks, token_json,
    within,
};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};
use tower_token::cache::Backoff;
use tower_token::http_client::ReqwestClient;
use tower_token::{ClientCredentials, TokenLayer, Transport};

const CALLERS: usize = 1_000;
const OUTAGE: Duration = Duration::from_millis(1_200);
const TIMEOUT: Duration = Duration::from_millis(200);
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));

/// The inner service: answers 200, counts requests, and records the order in
/// which tokens `AT-<n>` first appear. A request without a token, or with
/// another header, is counted as unauthenticated.
#[derive(Clone, Default)]
struct Api {
    requests: Arc<AtomicU64>,
    unauthenticated: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
    order: Arc<Mutex<(Vec<u64>, HashSet<u64>)>>,
}

impl Api {
    fn first_seen(&self) -> Vec<u64> {
        lock(&self.order).0.clone()
    }

    fn seen_after(&self, number: u64) -> Option<u64> {
        self.first_seen().into_iter().find(|&n| n > number)
    }
}

impl<B> Service<http::Request<B>> for Api {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let number = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer AT-"))
            .and_then(|n| n.parse::<u64>().ok());
        match number {
            None => {
                self.unauthenticated.fetch_add(1, Ordering::Relaxed);
            }
            Some(n) if self.last.load(Ordering::Relaxed) == n => {}
            Some(n) => {
                self.last.store(n, Ordering::Relaxed);
                let mut order = lock(&self.order);
                if order.1.insert(n) {
                    order.0.push(n);
                }
            }
        }
        std::future::ready(Ok(http::Response::new(String::new())))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    Down,
    Slow,
    Flapping,
}

/// A good answer to the n-th token request.
fn good(n: usize) -> Raw {
    Raw::ok_json(token_json(&format!("AT-{n}"), 3600))
}

/// Whether the token request numbered `n` (at the server) fails while the
/// endpoint flaps.
fn flap_fails(n: usize) -> bool {
    n.is_multiple_of(2)
}

/// The least wait the backoff allows after the k-th consecutive failure.
fn least_wait(k: u32) -> Duration {
    BACKOFF
        .initial
        .saturating_mul(1 << (k - 1).min(20))
        .min(BACKOFF.max)
        / 2
}

async fn outage(kind: Outage) {
    let server = RawServer::start(good).await;
    let client = CountingClient::new(ReqwestClient::new().unwrap());
    let sent = client.log();
    let source = ClientCredentials::builder(
        server.url("/token"),
        tower_token::Credentials::new("outage-client", "outage-secret"),
    )
    .transport(Transport::new().timeout(TIMEOUT).http_client(client))
    .build()
    .unwrap();
    let layer = TokenLayer::builder(source)
        .refresh_ahead(1.0)
        .backoff(BACKOFF)
        .build()
        .unwrap();
    let api = Api::default();
    let svc = layer.layer(api.clone());

    // A valid token, then a quiet moment to count the tasks.
    svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(api.first_seen(), [1]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = alive_tasks();

    // The endpoint goes bad.
    let bad_at = Instant::now();
    match kind {
        Outage::Down => server.stop().await,
        Outage::Slow => server.script(|n| Raw::After(TIMEOUT * 4, Box::new(good(n)))),
        Outage::Flapping => server.script(|n| {
            if flap_fails(n) {
                Raw::Answer {
                    status: 500,
                    body: r#"{"error":"server_error"}"#.into(),
                }
            } else {
                good(n)
            }
        }),
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut callers = JoinSet::new();
    for i in 0..CALLERS {
        let mut svc = svc.clone();
        let stop = Arc::clone(&stop);
        let failed = Arc::clone(&failed);
        callers.spawn(async move {
            let mut served = 0u64;
            tokio::time::sleep(Duration::from_millis((i % 25) as u64)).await;
            while !stop.load(Ordering::Relaxed) {
                let result = match ServiceExt::<http::Request<String>>::ready(&mut svc).await {
                    Ok(ready) => ready.call(get()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(_) => served += 1,
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::SeqCst) == 0 {
                            eprintln!("a request failed: {e}");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20 + (i % 11) as u64)).await;
            }
            served
        });
    }

    tokio::time::sleep(OUTAGE).await;

    // The endpoint comes back.
    let back_at = Instant::now();
    let hits_at_back = server.hits();
    let failures_at_back = layer.stats().fetch_failures;
    match kind {
        Outage::Down => server.resume().await,
        Outage::Slow | Outage::Flapping => server.script(good),
    }
    eventually("a token issued after the endpoint came back", || {
        api.seen_after(hits_at_back as u64).is_some()
    })
    .await;
    let recovered = api.seen_after(hits_at_back as u64).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    while let Some(done) = callers.join_next().await {
        served += done.unwrap();
    }
    let stats = layer.stats();
    let attempts: Vec<Instant> = lock(&sent).clone();
    let requests = api.requests.load(Ordering::Relaxed);

    // Every request succeeded, with a token.
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed");
    assert_eq!(api.unauthenticated.load(Ordering::Relaxed), 0);
    assert_eq!(requests, served + 1);
    assert!(
        served >= CALLERS as u64,
        "only {served} requests were served"
    );

    // Attempts during the outage, in order, with their outcome.
    let during: Vec<(Instant, bool)> = attempts
        .iter()
        .enumerate()
        .filter(|(_, t)| **t >= bad_at && **t < back_at)
        .map(|(i, t)| {
            let failed = match kind {
                Outage::Down | Outage::Slow => true,
                // Attempt i+1 is the server's request i+1.
                Outage::Flapping => flap_fails(i + 1),
            };
            (*t, failed)
        })
        .collect();
    assert!(
        during.iter().filter(|(_, f)| *f).count() >= 2,
        "{kind:?}: the cache stopped trying: {} attempts",
        during.len()
    );
    let mut consecutive = 0;
    for pair in during.windows(2) {
        let ((at, failed), (next, _)) = (pair[0], pair[1]);
        if !failed {
            consecutive = 0;
            continue;
        }
        consecutive += 1;
        let mut least = least_wait(consecutive);
        if kind == Outage::Slow {
            // An attempt lasts its whole timeout before it fails.
            least += TIMEOUT;
        }
        let gap = next - at;
        assert!(
            gap >= least,
            "{kind:?}: attempt after failure {consecutive} came {gap:?} after the previous one; \
             the backoff allows no sooner than {least:?}"
        );
    }

    // Counted at the server too: every attempt reached it, except while it
    // was down. (The last attempt before it came back may have been read
    // only afterwards.)
    match kind {
        Outage::Down => assert_eq!(hits_at_back, 1, "a refused connection reached the server"),
        Outage::Slow | Outage::Flapping => assert!(
            (during.len()..=during.len() + 1).contains(&hits_at_back),
            "{kind:?}: {hits_at_back} requests at the server, {} attempts",
            during.len()
        ),
    }
    // Every failed attempt was counted, and none failed after the endpoint
    // came back (but one under way then, which may have gone either way).
    let failed_during = during.iter().filter(|(_, f)| *f).count() as u64;
    assert!(
        (failed_during.saturating_sub(1)..=failed_during).contains(&stats.fetch_failures),
        "{kind:?}: {failed_during} failed attempts, {} failures counted",
        stats.fetch_failures
    );
    assert!(failures_at_back <= stats.fetch_failures);

    // Recovery: the first request the endpoint got after it came back was
    // answered with a token, and that token went out.
    assert_eq!(
        recovered,
        hits_at_back as u64 + 1,
        "{kind:?}: tokens seen {:?}",
        api.first_seen()
    );
    if kind != Outage::Flapping {
        // Only the first token served until the endpoint came back.
        assert_eq!(api.first_seen()[..2], [1, recovered]);
    }

    // No task outlives the layer.
    drop((svc, layer, callers));
    let after = within(
        Duration::from_secs(30),
        "the tasks to settle",
        settle_tasks(baseline),
    )
    .await;
    assert!(after <= baseline);
    eprintln!(
        "{kind:?}: {served} requests, {} attempts during the outage, tasks {baseline} -> {after}",
        during.len()
    );
}

/// The watchdog's limit for each test (`tests/bounded`): a backstop past
/// the 60 s `within` of each outage, which fails first with its own message.
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down() {
    bounded::watchdog!(LIMIT);
    within(Duration::from_secs(60), "the outage", outage(Outage::Down)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_slow() {
    bounded::watchdog!(LIMIT);
    within(Duration::from_secs(60), "the outage", outage(Outage::Slow)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_flapping() {
    bounded::watchdog!(LIMIT);
    within(
        Duration::from_secs(60),
        "the outage",
        outage(Outage::Flapping),
    )
    .await;
}
