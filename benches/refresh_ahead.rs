//! P4 refresh ahead: steady load on a short-lived token (1 s lifetime, token
//! server answering after 50 ms), against the same load on a token that
//! never expires. Reports the latency distribution of API calls; the target
//! is that no call's latency includes a token fetch (none near 50 ms).
//!
//! Run: `cargo bench --bench refresh_ahead`.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tower::{Layer, ServiceExt};
use tower_token::{ClientCredentials, TokenLayer};

const WORKERS: usize = 4;
const RUN: Duration = Duration::from_secs(4);
const DELAY: Duration = Duration::from_millis(50);

struct Run {
    latencies: Vec<Duration>,
    fetches: u64,
}

async fn steady_load(lifetime: Duration) -> Run {
    let server = support::TokenServer::start(DELAY, lifetime).await;
    let source = ClientCredentials::builder(
        server.url(),
        tower_token::Credentials::new("bench", "secret"),
    )
    .build()
    .unwrap();
    let layer = TokenLayer::new(source);
    // Fill the cache first: the first fetch is not what P4 measures.
    layer.cache().token().await.unwrap();
    let inner = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let svc = layer.layer(inner);
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    svc.clone()
                        .oneshot(http::Request::new(Empty::new()))
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    latencies.sort();
    Run {
        latencies,
        fetches: server.hits(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, run: &Run) {
    let l = &run.latencies;
    let slow = l.iter().filter(|d| **d >= DELAY / 2).count();
    println!(
        "{name:<28} calls {:>7}  token fetches {:>2}  p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}  calls >= 25 ms: {slow}",
        l.len(),
        run.fetches,
        pct(l, 0.5),
        pct(l, 0.99),
        l[l.len() - 1],
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either way: run the measurement in both cases.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("P4: {WORKERS} workers, {RUN:?} of steady load, token server delay {DELAY:?}");
    let short = rt.block_on(steady_load(Duration::from_secs(1)));
    let long = rt.block_on(steady_load(Duration::from_secs(3600)));
    report("1 s token (refreshed ahead)", &short);
    report("token that never expires", &long);
    let slow = short.latencies.iter().filter(|d| **d >= DELAY / 2).count();
    println!(
        "P4 {}: {} of {} calls on the short-lived token took 25 ms or more (a call that waited for a 50 ms fetch would)",
        if slow == 0 { "met" } else { "MISSED" },
        slow,
        short.latencies.len()
    );
}
