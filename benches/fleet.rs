//! P7: a fleet of replicas sharing one token store.
//!
//! Replicas are separate `TokenLayer`s in this process sharing one
//! `MemoryStore` (the Redis suite does the same with processes and a real
//! Redis). The token source is `source::from_fn`: it counts its calls and
//! answers after `FETCH_DELAY` with a token of 1 s (`expires_in`), sent
//! with a leeway of 250 ms.
//!
//! 1. Tokens per lifetime: 8 replicas × 32 callers, each caller sending
//!    requests through its replica's `TokenService` over a no-op inner
//!    service for 10 token lifetimes (10 s); once with the store, once
//!    without. Then the stampede: 8 replicas × 250 callers, one request
//!    each, on an empty store (and, for comparison, without a store).
//! 2. Hot path: criterion time per request of `TokenService` over a no-op
//!    inner service with a warm token, with a store configured and without.
//!
//! Run: `cargo bench --features store --bench fleet` (criterion options
//! after `--`).
//!
//! Instruction counts: `FLEET_CALLGRIND=N` runs N requests of one variant
//! in `callgrind_requests` and exits; `FLEET_VARIANT` is `store` (default)
//! or `none`:
//!
//! ```sh
//! FLEET_CALLGRIND=200000 FLEET_VARIANT=store valgrind --tool=callgrind \
//!     --toggle-collect='*callgrind_requests*' target/release/deps/fleet-<hash>
//! ```
//!
//! counts the requests only (total instructions / N).

mod support;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response, header::AUTHORIZATION};
use http_body_util::Empty;
use std::convert::Infallible;
use std::future::{Future, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use support::Noop;
use tower::{Layer, Service, ServiceExt};
use tower_token::store::{MemoryStore, StoreKeys};
use tower_token::{Token, TokenLayer, TokenLayerBuilder, source};

type Body = Empty<Bytes>;

const KEY: [u8; 32] = [7; 32];
const REPLICAS: usize = 8;
const CALLERS: usize = 32;
const STAMPEDE_CALLERS: usize = 250;
/// The token's lifetime. A replica takes a stored token only with at least
/// 1 s of it left (`cache::fleet`), and a refresh ahead starts at
/// `LEEWAY` + 10 % of the rest before expiry: with 1 s tokens no stored
/// token is ever taken, so the lifetime is 3 s and the leeway 1.25 s (a
/// refresh starts with 1.425 s left). `FLEET_LIFETIME_MS` and
/// `FLEET_LEEWAY_MS` override them.
const LIFETIME: Duration = Duration::from_secs(3);
const LEEWAY: Duration = Duration::from_millis(1250);
const LIFETIMES: u32 = 10;
/// How long the token source takes to answer.
const FETCH_DELAY: Duration = Duration::from_millis(20);
/// How long a caller of the steady run waits between two requests.
const PAUSE: Duration = Duration::from_millis(5);

fn millis_env(name: &str, default: Duration) -> Duration {
    std::env::var(name).map_or(default, |v| {
        Duration::from_millis(v.parse().expect("a number of milliseconds"))
    })
}

fn lifetime() -> Duration {
    millis_env("FLEET_LIFETIME_MS", LIFETIME)
}

fn leeway() -> Duration {
    millis_env("FLEET_LEEWAY_MS", LEEWAY)
}

/// A builder over a source that counts its calls in `fetches`.
fn builder(fetches: &Arc<AtomicU64>, lifetime: Duration, delay: Duration) -> TokenLayerBuilder {
    let fetches = Arc::clone(fetches);
    TokenLayer::builder(source::from_fn(move |_| {
        let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Token::new(format!("tok-{n}")).with_expires_in(lifetime))
        }
    }))
    .leeway(leeway())
}

fn with_store(b: TokenLayerBuilder, store: Option<&MemoryStore>) -> TokenLayer {
    match store {
        Some(store) => b
            .store(store.clone(), StoreKeys::new(1, &KEY).unwrap())
            .store_key("p7-bench"),
        None => b,
    }
    .build()
    .unwrap()
}

/// What one run of the fleet did.
#[derive(Debug, Default)]
struct Outcome {
    fetches: u64,
    requests: u64,
    without_token: u64,
    errors: u64,
    from_store: u64,
    won: u64,
    store_errors: u64,
}

/// `replicas` × `callers` callers, through a no-op inner service that counts
/// the requests it sees without an `Authorization` header. Each caller sends
/// one request (`run` = None) or keeps sending for `run`.
fn fleet(store: bool, callers: usize, run: Option<Duration>, delay: Duration) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fetches = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let without_token = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let memory = MemoryStore::new();
        let layers: Vec<_> = (0..REPLICAS)
            .map(|_| {
                with_store(
                    builder(&fetches, lifetime(), delay),
                    store.then_some(&memory),
                )
            })
            .collect();
        let deadline = run.map(|run| tokio::time::Instant::now() + run);
        let mut tasks = Vec::new();
        for layer in &layers {
            let (requests, without_token) = (Arc::clone(&requests), Arc::clone(&without_token));
            let svc = layer.layer(tower::service_fn(move |req: Request<Body>| {
                requests.fetch_add(1, Ordering::Relaxed);
                if !req.headers().contains_key(AUTHORIZATION) {
                    without_token.fetch_add(1, Ordering::Relaxed);
                }
                ready(Ok::<_, Infallible>(Response::new(())))
            }));
            for _ in 0..callers {
                let (svc, errors) = (svc.clone(), Arc::clone(&errors));
                tasks.push(tokio::spawn(async move {
                    loop {
                        if svc
                            .clone()
                            .oneshot(Request::new(Body::new()))
                            .await
                            .is_err()
                        {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        match deadline {
                            Some(d) if tokio::time::Instant::now() + PAUSE < d => {
                                tokio::time::sleep(PAUSE).await;
                            }
                            _ => break,
                        }
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        Outcome {
            fetches: fetches.load(Ordering::SeqCst),
            requests: requests.load(Ordering::Relaxed),
            without_token: without_token.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
            from_store: layers.iter().map(|l| l.stats().tokens_from_store).sum(),
            won: layers.iter().map(|l| l.stats().fleet_fetches_won).sum(),
            store_errors: layers
                .iter()
                .map(|l| l.stats().store_errors + l.stats().store_fallbacks)
                .sum(),
        }
    })
}

fn token_table() {
    let (lifetime, leeway) = (lifetime(), leeway());
    let run = lifetime * LIFETIMES;
    let usable = lifetime.saturating_sub(leeway);
    println!();
    println!(
        "P7 tokens per lifetime: {REPLICAS} replicas × {CALLERS} callers (a request, then \
         {PAUSE:?}), token lifetime {lifetime:?}, leeway {leeway:?}, source answers in \
         {FETCH_DELAY:?}, {run:?} ({:.1} usable lifetimes)",
        run.as_secs_f64() / usable.as_secs_f64()
    );
    println!();
    println!(
        "| run | token requests | per token lifetime | fleet fetches won | taken from store | store errors + fallbacks | requests | without token | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, store, callers, run, delay) in [
        ("steady, with store", true, CALLERS, Some(run), FETCH_DELAY),
        ("steady, no store", false, CALLERS, Some(run), FETCH_DELAY),
        (
            "stampede (8 × 250, empty), with store",
            true,
            STAMPEDE_CALLERS,
            None,
            Duration::from_millis(100),
        ),
        (
            "stampede (8 × 250, empty), no store",
            false,
            STAMPEDE_CALLERS,
            None,
            Duration::from_millis(100),
        ),
    ] {
        let o = fleet(store, callers, run, delay);
        let per = match run {
            Some(_) => format!("{:.1}", o.fetches as f64 / f64::from(LIFETIMES)),
            None => "–".into(),
        };
        println!(
            "| {label} | {} | {per} | {} | {} | {} | {} | {} | {} |",
            o.fetches, o.won, o.from_store, o.store_errors, o.requests, o.without_token, o.errors
        );
    }
}

// ---------------------------------------------------------------------------
// Hot path
// ---------------------------------------------------------------------------

type Svc = tower_token::TokenService<Noop>;

/// A service over `Noop` whose cache holds a token of an hour, with or
/// without a store.
fn warm(store: bool) -> Svc {
    let fetches = Arc::new(AtomicU64::new(0));
    let memory = MemoryStore::new();
    let layer = with_store(
        builder(&fetches, Duration::from_secs(3600), Duration::ZERO),
        store.then_some(&memory),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(layer.cache().token()).unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    layer.layer(Noop)
}

/// Calls `svc` once, driving the future without a runtime (the token is
/// warm and the inner service answers on the first poll).
#[inline]
fn call_once(svc: &mut Svc) {
    let mut cx = Context::from_waker(Waker::noop());
    let fut = pin!(svc.call(Request::new(Body::new())));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("a warm call must be ready on the first poll"),
    }
}

fn p7_hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("p7_hot_path");
    let mut none = warm(false);
    let mut store = warm(true);
    group.bench_function("no_store", |b| b.iter(|| call_once(&mut none)));
    group.bench_function("store", |b| b.iter(|| call_once(&mut store)));
    group.finish();
}

/// The same two services interleaved, best of 15 rounds of 200,000 requests
/// (robust on a shared machine).
fn interleaved() {
    let mut none = warm(false);
    let mut store = warm(true);
    let mut best = [f64::MAX; 2];
    const N: u32 = 200_000;
    for _ in 0..15 {
        for (i, svc) in [&mut none, &mut store].into_iter().enumerate() {
            let start = Instant::now();
            for _ in 0..N {
                call_once(svc);
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
            best[i] = best[i].min(ns);
        }
    }
    println!();
    println!(
        "P7 hot path, interleaved, best of 15 × {N}: no store {:.1} ns, store {:.1} ns ({:.3}×)",
        best[0],
        best[1],
        best[1] / best[0]
    );
}

/// The requests callgrind counts (`--toggle-collect='*callgrind_requests*'`).
#[inline(never)]
fn callgrind_requests(svc: &mut Svc, n: usize) {
    for _ in 0..n {
        call_once(svc);
    }
}

fn callgrind(n: usize) {
    let variant = std::env::var("FLEET_VARIANT").unwrap_or_else(|_| "store".into());
    let store = match variant.as_str() {
        "store" => true,
        "none" => false,
        other => panic!("FLEET_VARIANT: `store` or `none`, not {other:?}"),
    };
    let mut svc = warm(store);
    for _ in 0..1_000 {
        call_once(&mut svc); // warm up, outside `callgrind_requests`
    }
    callgrind_requests(&mut svc, n);
    println!("P7 callgrind: {n} requests, variant {variant}");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    targets = p7_hot_path
}

fn main() {
    if let Ok(n) = std::env::var("FLEET_CALLGRIND") {
        callgrind(n.parse().expect("FLEET_CALLGRIND: a number of requests"));
        return;
    }
    if std::env::var_os("FLEET_TABLE_ONLY").is_some() {
        token_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--list") {
        interleaved();
        token_table();
    }
}
