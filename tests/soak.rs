//! Soak: 200,000 requests (more with `SOAK_REQUESTS=<n>`) through token
//! expiry, 401s and revocations, without a failed request and without a
//! growing number of live tasks (R3–R8).
//!
//! - The token endpoint (axum, reached through the crate's reqwest client)
//!   issues tokens that live 1 or 2 seconds, and revokes tokens (RFC 7009).
//! - The API (a cheap inner service) answers 401 to a token it does not
//!   know, a revoked one, or one past its stated expiry.
//! - Two `TokenLayer`s share them: one with the default refresh ahead
//!   (tokens are replaced in the background) and one without (requests wait
//!   for the new token at expiry).
//! - 64 workers send requests in loops; a revoker revokes the token one
//!   layer or the other holds, in turn, every 600 ms. The revoker waits for the requests in
//!   flight to finish first (a read/write gate), so that every 401 it causes
//!   comes from a request sent before the revocation — a request whose
//!   retry got a fresh token and must then succeed.
//!
//! At the end, one layer is shut down (its token revoked, waiting for the
//! answer) and the other dropped with `revoke_on_drop`; then no more tasks
//! are alive than before the soak.

mod bounded;
mod support_robust;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use support_robust::{Reply, Scripted, alive_tasks, eventually, settle_tasks, token_json, within};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};
use tower_token::dialect::Credentials;
use tower_token::{ClientCredentials, RevokeRequest, RevokeService, TokenLayer};

const WORKERS: usize = 64;
/// Each layer's token is revoked every other time, so a layer sees a
/// revocation every 1.2 s: its tokens (usable 0.5–1 s) also expire between.
const REVOKE_EVERY: Duration = Duration::from_millis(600);
const CLIENT_ID: &str = "soak-client";
const CLIENT_SECRET: &str = "soak-secret";

fn requests_wanted() -> u64 {
    std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// What the authorization server knows: tokens issued (when, for how long)
/// and tokens revoked.
#[derive(Default)]
struct Ledger {
    next: AtomicU64,
    issued: RwLock<HashMap<u64, (Instant, Duration)>>,
    revoked: RwLock<HashSet<u64>>,
    revocations: AtomicU64,
}

fn number(token: &str) -> Option<u64> {
    token.strip_prefix("soak-")?.parse().ok()
}

async fn authorization_server(ledger: Arc<Ledger>) -> Scripted {
    Scripted::start(move |_, seen| {
        if seen.path == "/revoke" {
            if let Some(n) = seen.form("token").as_deref().and_then(number) {
                write(&ledger.revoked).insert(n);
            }
            ledger.revocations.fetch_add(1, Ordering::SeqCst);
            return Reply::with(200, "", "");
        }
        let n = ledger.next.fetch_add(1, Ordering::SeqCst) + 1;
        let lifetime = if n.is_multiple_of(2) { 1 } else { 2 };
        write(&ledger.issued).insert(n, (Instant::now(), Duration::from_secs(lifetime)));
        Reply::json(200, token_json(&format!("soak-{n}"), lifetime))
    })
    .await
}

/// The protected API: 200 for a known, unrevoked, unexpired token; 401
/// otherwise.
#[derive(Clone)]
struct Api {
    ledger: Arc<Ledger>,
    served: Arc<AtomicU64>,
    revoked: Arc<AtomicU64>,
    expired: Arc<AtomicU64>,
    unknown: Arc<AtomicU64>,
}

impl<B> Service<http::Request<B>> for Api {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let n = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(number);
        let verdict = match n {
            None => Some(&self.unknown),
            Some(n) if read(&self.ledger.revoked).contains(&n) => Some(&self.revoked),
            Some(n) => match read(&self.ledger.issued).get(&n) {
                None => Some(&self.unknown),
                Some((at, lifetime)) if at.elapsed() > *lifetime => Some(&self.expired),
                Some(_) => None,
            },
        };
        let mut response = http::Response::new(String::new());
        match verdict {
            None => {
                self.served.fetch_add(1, Ordering::Relaxed);
            }
            Some(counter) => {
                counter.fetch_add(1, Ordering::Relaxed);
                *response.status_mut() = http::StatusCode::UNAUTHORIZED;
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
        }
        std::future::ready(Ok(response))
    }
}

fn credentials() -> Credentials {
    Credentials::new(CLIENT_ID, CLIENT_SECRET)
}

/// The watchdog's limit (`tests/bounded`): a backstop past the soak's 300 s
/// `within`, which fails first with its own message.
const LIMIT: Duration = Duration::from_secs(360);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_expiry_401s_and_revocations() {
    bounded::watchdog!(LIMIT);
    within(Duration::from_secs(300), "the soak", soak()).await;
}

async fn soak() {
    let wanted = requests_wanted();
    let ledger = Arc::new(Ledger::default());
    let server = authorization_server(Arc::clone(&ledger)).await;
    let revoker = RevokeService::rfc(server.url("/revoke"), credentials())
        .build()
        .unwrap();
    let source = || {
        ClientCredentials::builder(
            server.url("/token"),
            tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
        )
        .build()
        .unwrap()
    };
    // One layer refreshes ahead (the default), the other only at expiry.
    let ahead = TokenLayer::builder(source())
        .revoker(revoker.clone())
        .build()
        .unwrap();
    let at_expiry = TokenLayer::builder(source())
        .refresh_ahead(0.0)
        .revoker(revoker.clone())
        .revoke_on_drop(true)
        .build()
        .unwrap();
    let api = Api {
        ledger: Arc::clone(&ledger),
        served: Arc::default(),
        revoked: Arc::default(),
        expired: Arc::default(),
        unknown: Arc::default(),
    };
    let services = [ahead.layer(api.clone()), at_expiry.layer(api.clone())];
    for svc in &services {
        let response = svc.clone().oneshot(http::Request::new(String::new())).await;
        assert_eq!(response.unwrap().status(), http::StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = alive_tasks();

    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut workers = JoinSet::new();
    for i in 0..WORKERS {
        let mut svc = services[i % 2].clone();
        let (gate, sent, failed, stop) = (
            Arc::clone(&gate),
            Arc::clone(&sent),
            Arc::clone(&failed),
            Arc::clone(&stop),
        );
        workers.spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let result = {
                    let _pass = gate.read().await;
                    match ServiceExt::<http::Request<String>>::ready(&mut svc).await {
                        Ok(ready) => ready.call(http::Request::new(String::new())).await,
                        Err(e) => Err(e),
                    }
                };
                sent.fetch_add(1, Ordering::Relaxed);
                let ok = matches!(&result, Ok(r) if r.status() == http::StatusCode::OK);
                if !ok && failed.fetch_add(1, Ordering::SeqCst) < 5 {
                    eprintln!("request failed: {:?}", result.map(|r| r.status()));
                }
                round += 1;
                if round.is_multiple_of(32) {
                    tokio::task::yield_now().await;
                }
            }
        });
    }

    // Revoke the token one layer or the other holds, a few times a second.
    let revoked_by_us = Arc::new(AtomicU64::new(0));
    let revoking = {
        let (gate, stop, revoked_by_us) = (
            Arc::clone(&gate),
            Arc::clone(&stop),
            Arc::clone(&revoked_by_us),
        );
        let caches = [ahead.cache().clone(), at_expiry.cache().clone()];
        let revoker = revoker.clone();
        tokio::spawn(async move {
            let mut turn = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(REVOKE_EVERY).await;
                let _quiet = gate.write().await;
                let token = caches[turn % 2].token().await.unwrap();
                revoker
                    .clone()
                    .oneshot(RevokeRequest::access(token))
                    .await
                    .unwrap();
                revoked_by_us.fetch_add(1, Ordering::SeqCst);
                turn += 1;
            }
        })
    };

    // Sample the live tasks while it runs.
    let (mut least, mut most) = (usize::MAX, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let alive = alive_tasks();
        least = least.min(alive);
        most = most.max(alive);
        let enough = sent.load(Ordering::Relaxed) >= wanted
            && revoked_by_us.load(Ordering::SeqCst) >= 6
            && started.elapsed() >= Duration::from_secs(3);
        if enough || failed.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    revoking.await.unwrap();
    let elapsed = started.elapsed();

    let sent = sent.load(Ordering::Relaxed);
    let (ahead_stats, expiry_stats) = (ahead.stats(), at_expiry.stats());
    let served = api.served.load(Ordering::Relaxed);
    let rejected = [
        api.revoked.load(Ordering::Relaxed),
        api.expired.load(Ordering::Relaxed),
        api.unknown.load(Ordering::Relaxed),
    ];
    eprintln!(
        "soak: {sent} requests in {elapsed:?}; API served {served}, 401 for revoked/expired/unknown {rejected:?}; \
         {} revocations; fetches {} (ahead) + {} (at expiry); 401 refreshes {} + {}; tasks {baseline} before, {least}..{most} during",
        revoked_by_us.load(Ordering::SeqCst),
        ahead_stats.tokens_fetched,
        expiry_stats.tokens_fetched,
        ahead_stats.unauthorized_refreshes,
        expiry_stats.unauthorized_refreshes,
    );

    // Not one request failed.
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed");
    assert!(sent >= wanted, "{sent} requests");
    // Every request was served once; the 401s were answered on first
    // attempts and retried. (+2: the warm-up requests.)
    assert_eq!(served, sent + 2);
    assert_eq!(rejected[2], 0, "a token the server never issued was sent");
    // A token past its stated expiry was never sent (R3): the layer stops
    // at expiry minus the leeway, measured from before the request.
    assert_eq!(rejected[1], 0, "an expired token was sent");
    // It went through what it was meant to.
    assert!(rejected[0] >= 1, "no request met a revoked token");
    let revocations = revoked_by_us.load(Ordering::SeqCst);
    assert!(revocations >= 6);
    assert!(ahead_stats.unauthorized_refreshes + expiry_stats.unauthorized_refreshes >= 1);
    // Tokens replaced because they were expiring, not because of a 401
    // (the first fetch aside).
    for stats in [&ahead_stats, &expiry_stats] {
        let by_expiry = stats.tokens_fetched - stats.unauthorized_refreshes - 1;
        assert!(by_expiry >= 2, "too few token lifetimes: {stats:?}");
    }
    assert_eq!(ahead_stats.fetch_failures + expiry_stats.fetch_failures, 0);
    // The number of live tasks stayed put: the servers' and clients', the
    // workers, the revoker and the sampler's view of fetches in flight.
    assert!(
        most <= baseline + WORKERS + 16,
        "{most} tasks alive during the soak, {baseline} before"
    );

    // Shut one layer down (revokes and waits), drop the other (revokes in
    // the background); then no task outlives them.
    let before_end = ledger.revocations.load(Ordering::SeqCst);
    ahead.shutdown().await.unwrap();
    assert_eq!(ledger.revocations.load(Ordering::SeqCst), before_end + 1);
    drop((services, ahead, at_expiry, revoker));
    eventually("the revocation on drop", || {
        ledger.revocations.load(Ordering::SeqCst) == before_end + 2
    })
    .await;
    let after = settle_tasks(baseline).await;
    assert!(
        after <= baseline,
        "{after} tasks alive after, {baseline} before"
    );
}
