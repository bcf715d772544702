//! P3 stampede: 10,000 concurrent callers on an empty cache against a token
//! server that answers after 20 ms. Counts token requests (must be 1) and
//! measures the time until the last caller is served, against tokio's own
//! floor for the same shape, interleaved run by run: 10,000 tasks waiting on
//! one `watch` channel that is filled once the same round trip to the same
//! server (a new `reqwest::Client`, as each stampede's new cache has, so the
//! connection is set up in both) has come back. Target: ≤ 1.2× the floor.
//!
//! Run: `cargo bench --bench stampede`.

mod support;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::Empty;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tower::{Layer, ServiceExt};
use tower_token::{ClientCredentials, TokenLayer};

const CALLERS: usize = 10_000;
const DELAY: Duration = Duration::from_millis(20);

/// One stampede: a fresh layer, `CALLERS` tasks calling at once. Returns
/// the time until the last caller was served.
async fn stampede(server: &support::TokenServer) -> Duration {
    let source = ClientCredentials::builder(
        server.url(),
        tower_token::Credentials::new("bench", "secret"),
    )
    .build()
    .unwrap();
    let layer = TokenLayer::new(source);
    let inner = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let svc = layer.layer(inner);
    let before = server.hits();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS + 1));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                svc.oneshot(http::Request::new(Empty::new())).await.unwrap();
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let fetches = server.hits() - before;
    assert_eq!(
        fetches, 1,
        "a stampede must cause exactly one token request"
    );
    elapsed
}

/// The runtime's own floor for the same shape: `CALLERS` tasks waiting on
/// one channel that is filled when one POST to the token server, on a new
/// client, has been answered; no token cache involved.
async fn floor(server: &support::TokenServer) -> Duration {
    let url = server.url();
    let (tx, rx) = tokio::sync::watch::channel(None::<u32>);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS + 1));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut rx = rx.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let _ = rx.wait_for(Option::is_some).await.map(|v| *v);
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let answer = client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        let body = answer.bytes().await.unwrap();
        let _ = tx.send(Some(body.len() as u32));
    });
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn p3(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(support::TokenServer::start(
        DELAY,
        Duration::from_secs(3600),
    ));
    let mut group = c.benchmark_group("p3_stampede");
    group.sample_size(20);
    group.bench_function("10000_callers_20ms_token_server", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(stampede(&server));
            }
            total
        })
    });
    group.finish();
    let runs = 20;
    let mut worst = Duration::ZERO;
    let mut sum = Duration::ZERO;
    let mut floor_sum = Duration::ZERO;
    for _ in 0..runs {
        let t = rt.block_on(stampede(&server));
        worst = worst.max(t);
        sum += t;
        floor_sum += rt.block_on(floor(&server));
    }
    println!(
        "P3 floor: {CALLERS} tasks woken by one channel after one round trip to the same server \
         ({DELAY:?} delay), no cache: {:?} on average",
        floor_sum / runs
    );
    println!(
        "P3: {CALLERS} callers, token server delay {DELAY:?}: 1 token request per stampede; \
         last caller served after {:?} on average ({:.2}× the delay), worst {:?}; \
         {:.2}× the floor (target ≤ 1.2×)",
        sum / runs,
        (sum / runs).as_secs_f64() / DELAY.as_secs_f64(),
        worst,
        sum.as_secs_f64() / floor_sum.as_secs_f64()
    );
}

criterion_group!(benches, p3);
criterion_main!(benches);
