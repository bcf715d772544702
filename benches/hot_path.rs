//! P1 (hot path) and P2 (contention): one request through `TokenService`
//! over a no-op inner service, against what a user would otherwise write.
//!
//! P1: single thread, per-request cost, with 0 and with 8 request headers:
//! `TokenService` with replay off against tower-http's `SetRequestHeader`
//! with a static value; with replay on (the defaults) against the same
//! `SetRequestHeader` under tower's `Retry` with a policy whose
//! `clone_request` copies the request; and the per-call clone idiom
//! (`svc.clone().oneshot(req)`) and a clone alone. P2: the same with 1 and
//! all threads calling clones of one shared service; criterion reports
//! elements/second.
//!
//! Run: `cargo bench --bench hot_path`.
//!
//! Instructions per request: `HOT_PATH_CALLGRIND=N HOT_PATH_VARIANT=<name>`
//! runs N requests of one variant in `callgrind_requests` and exits (the
//! names are in [`VARIANTS`]); `benches/callgrind.sh` runs them all under
//! `valgrind --tool=callgrind --toggle-collect='*callgrind_requests*'` and
//! prints the table. `HOT_PATH_P2=rounds` runs P2 alone, interleaved, and
//! prints its table (see [`p2_interleaved`]).

mod support;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header, header::AUTHORIZATION};
use http_body_util::Empty;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use support::Noop;
use tower::retry::{Policy, Retry};
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_token::{Token, TokenLayer, source};

type Body = Empty<Bytes>;

/// A hand-written cache in `std::sync::RwLock<Arc<Token>>` (baseline b).
#[derive(Clone)]
struct StdRwLockCache<S> {
    inner: S,
    token: Arc<std::sync::RwLock<Arc<(HeaderValue, Instant)>>>,
}

impl<S: Service<Request<Body>>> Service<Request<Body>> for StdRwLockCache<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> S::Future {
        let token = match self.token.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        if Instant::now() < token.1 {
            req.headers_mut().insert(AUTHORIZATION, token.0.clone());
        }
        self.inner.call(req)
    }
}

/// A hand-written cache in `tokio::sync::RwLock<Token>` (baseline c).
#[derive(Clone)]
struct TokioRwLockCache<S> {
    inner: S,
    token: Arc<tokio::sync::RwLock<(HeaderValue, Instant)>>,
}

impl<S> Service<Request<Body>> for TokioRwLockCache<S>
where
    S: Service<Request<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let token = Arc::clone(&self.token);
        let mut inner = self.inner.clone();
        Box::pin(async move {
            {
                let token = token.read().await;
                if Instant::now() < token.1 {
                    req.headers_mut().insert(AUTHORIZATION, token.0.clone());
                }
            }
            inner.call(req).await
        })
    }
}

/// The 8 headers of the "8 headers" variants: what a JSON API client
/// typically sends besides the token.
static HEADERS: [(HeaderName, &str); 8] = [
    (header::HOST, "api.example.com"),
    (header::USER_AGENT, "bench-client/1.0"),
    (header::ACCEPT, "application/json"),
    (header::ACCEPT_ENCODING, "gzip, br"),
    (header::CONTENT_TYPE, "application/json"),
    (header::CACHE_CONTROL, "no-cache"),
    (
        HeaderName::from_static("x-request-id"),
        "6f1c2a9e-8d3b-4e57-a1c0-3b9d2f7e5a10",
    ),
    (
        HeaderName::from_static("traceparent"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
];

/// A request as a caller builds it, with the first `headers` of [`HEADERS`].
#[inline]
fn request(headers: usize) -> Request<Body> {
    let mut req = Request::new(Body::new());
    for (name, value) in &HEADERS[..headers] {
        req.headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
    }
    req
}

/// Calls `svc` once, driving the future to completion without a runtime
/// (every service here answers on the first poll).
#[inline]
fn call_once<S>(svc: &mut S)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    call_with(svc, 0)
}

/// [`call_once`] with `headers` request headers.
#[inline]
fn call_with<S>(svc: &mut S, headers: usize)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let fut = pin!(svc.call(request(headers)));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("a no-op call must be ready on the first poll"),
    }
}

/// The per-call clone idiom, `svc.clone().oneshot(req)`: a clone made
/// ready, called once and dropped.
#[inline]
fn oneshot_with<S>(svc: &S, headers: usize)
where
    S: Service<Request<Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let fut = pin!(svc.clone().oneshot(request(headers)));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("a no-op call must be ready on the first poll"),
    }
}

/// A clone of `svc`, dropped at once.
#[inline]
fn clone_drop<S: Clone>(svc: &S) {
    drop(black_box(svc.clone()));
}

/// Retries a request answered 401 once: the replay a user composes from
/// tower. `clone_request` copies the request (head and body) before every
/// call, as it must to be able to send it again.
#[derive(Clone, Copy)]
struct RetryOn401;

impl<B: Clone, Res, E> Policy<Request<B>, Response<Res>, E> for RetryOn401 {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<B>,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<Ready<()>> {
        match result {
            Ok(res) if res.status() == StatusCode::UNAUTHORIZED => Some(ready(())),
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

type StaticHeader = tower_http::set_header::SetRequestHeader<Noop, HeaderValue>;

fn static_header() -> StaticHeader {
    SetRequestHeaderLayer::overriding(AUTHORIZATION, HeaderValue::from_static(TOKEN)).layer(Noop)
}

fn static_header_retry() -> Retry<RetryOn401, StaticHeader> {
    Retry::new(RetryOn401, static_header())
}

const TOKEN: &str = "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.bench-token.signature";

fn token_layer() -> TokenLayer {
    token_layer_with(true)
}

/// A layer whose cache already holds a token; `replay` turns the 401 replay
/// (and the per-request copy it needs) on or off.
fn token_layer_with(replay: bool) -> TokenLayer {
    let layer = TokenLayer::builder(source::from_fn(|_| async {
        Ok::<_, Infallible>(
            Token::new(TOKEN.trim_start_matches("Bearer "))
                .with_expires_in(Duration::from_secs(3600)),
        )
    }))
    .retry_unauthorized(replay)
    .build()
    .unwrap();
    // Fill the cache once; the benchmark measures the hot path.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(layer.cache().token()).unwrap();
    layer
}

fn std_cache() -> StdRwLockCache<Noop> {
    StdRwLockCache {
        inner: Noop,
        token: Arc::new(std::sync::RwLock::new(Arc::new((
            HeaderValue::from_static(TOKEN),
            Instant::now() + Duration::from_secs(3600),
        )))),
    }
}

fn tokio_cache() -> TokioRwLockCache<Noop> {
    TokioRwLockCache {
        inner: Noop,
        token: Arc::new(tokio::sync::RwLock::new((
            HeaderValue::from_static(TOKEN),
            Instant::now() + Duration::from_secs(3600),
        ))),
    }
}

fn p1_hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("p1_hot_path");
    let mut inner = Noop;
    group.bench_function("inner_alone", |b| b.iter(|| call_once(&mut inner)));
    let mut static_header = static_header();
    let mut static_retry = static_header_retry();
    let mut token = token_layer().layer(Noop);
    let mut token_no_replay = token_layer_with(false).layer(Noop);
    for headers in [0, 8] {
        group.bench_with_input(
            BenchmarkId::new("set_request_header_static", headers),
            &headers,
            |b, &h| b.iter(|| call_with(&mut static_header, h)),
        );
        group.bench_with_input(
            BenchmarkId::new("token_service_no_401_replay", headers),
            &headers,
            |b, &h| b.iter(|| call_with(&mut token_no_replay, h)),
        );
        group.bench_with_input(
            BenchmarkId::new("set_request_header_static_under_retry", headers),
            &headers,
            |b, &h| b.iter(|| call_with(&mut static_retry, h)),
        );
        group.bench_with_input(
            BenchmarkId::new("token_service", headers),
            &headers,
            |b, &h| b.iter(|| call_with(&mut token, h)),
        );
    }
    group.bench_function("clone/set_request_header_static", |b| {
        b.iter(|| clone_drop(&static_header))
    });
    group.bench_function("clone/token_service", |b| b.iter(|| clone_drop(&token)));
    group.bench_function("oneshot/set_request_header_static", |b| {
        b.iter(|| oneshot_with(&static_header, 0))
    });
    group.bench_function("oneshot/token_service_no_401_replay", |b| {
        b.iter(|| oneshot_with(&token_no_replay, 0))
    });
    group.bench_function("oneshot/token_service", |b| {
        b.iter(|| oneshot_with(&token, 0))
    });
    let mut std_rw = std_cache();
    group.bench_function("std_rwlock_cache", |b| b.iter(|| call_once(&mut std_rw)));
    let mut tokio_rw = tokio_cache();
    group.bench_function("tokio_rwlock_cache", |b| {
        b.iter(|| call_once(&mut tokio_rw))
    });
    group.finish();
}

/// Runs `iters` calls on each of `threads` threads, each with its own clone.
fn contended<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<Request<Body>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    call_once(&mut svc);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn p2_contention(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut group = c.benchmark_group("p2_contention");
    let token = token_layer().layer(Noop);
    let token_no_replay = token_layer_with(false).layer(Noop);
    let std_rw = std_cache();
    let tokio_rw = tokio_cache();
    let static_header = static_header();
    // The same layer with a header value built at run time: its bytes are
    // reference counted, and every clone of it touches one shared counter.
    let shared_header = shared_header();
    for threads in [1, cores] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_with_input(
            BenchmarkId::new("token_service", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| contended(&token, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("token_service_no_401_replay", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| contended(&token_no_replay, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("set_request_header_static", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| contended(&static_header, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("set_request_header_refcounted", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| contended(&shared_header, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("std_rwlock_cache", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| contended(&std_rw, t, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("tokio_rwlock_cache", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| contended(&tokio_rw, t, iters)),
        );
    }
    group.finish();
}

/// The variants `HOT_PATH_VARIANT` names, for `benches/callgrind.sh`.
const VARIANTS: [&str; 16] = [
    "inner/0",
    "static/0",
    "static/8",
    "static_retry/0",
    "static_retry/8",
    "token_no_replay/0",
    "token_no_replay/8",
    "token/0",
    "token/8",
    "clone/static",
    "clone/token",
    "oneshot/static",
    "oneshot/static_retry",
    "oneshot/token_no_replay",
    "oneshot/token",
    "shared_header/0",
];

/// Where callgrind counts: `--toggle-collect='*callgrind_requests*'`.
#[inline(never)]
fn callgrind_requests(n: u64, mut f: impl FnMut()) {
    for _ in 0..n {
        f();
    }
}

/// `HOT_PATH_CALLGRIND=N`: N requests of `HOT_PATH_VARIANT`, after as many
/// uncounted (the first fills the service's own copy of the token).
fn callgrind(n: u64) {
    let variant = std::env::var("HOT_PATH_VARIANT").unwrap_or_else(|_| "token/0".to_owned());
    let headers = if variant.ends_with("/8") { 8 } else { 0 };
    let mut inner = Noop;
    let mut static_header = static_header();
    let mut static_retry = static_header_retry();
    let mut token = token_layer().layer(Noop);
    let mut token_no_replay = token_layer_with(false).layer(Noop);
    let mut shared_header = shared_header();
    // Each service has sent a request before it is cloned or measured, as
    // in a running client: it holds its own copy of the token.
    call_with(&mut token, 0);
    call_with(&mut token_no_replay, 0);
    let run = |f: &mut dyn FnMut()| {
        for _ in 0..n {
            f();
        }
        callgrind_requests(n, f);
    };
    match variant.as_str() {
        "inner/0" => run(&mut || call_with(&mut inner, headers)),
        "static/0" | "static/8" => run(&mut || call_with(&mut static_header, headers)),
        "static_retry/0" | "static_retry/8" => run(&mut || call_with(&mut static_retry, headers)),
        "token_no_replay/0" | "token_no_replay/8" => {
            run(&mut || call_with(&mut token_no_replay, headers))
        }
        "token/0" | "token/8" => run(&mut || call_with(&mut token, headers)),
        "shared_header/0" => run(&mut || call_with(&mut shared_header, headers)),
        "clone/static" => run(&mut || clone_drop(&static_header)),
        "clone/token" => run(&mut || clone_drop(&token)),
        "oneshot/static" => run(&mut || oneshot_with(&static_header, 0)),
        "oneshot/static_retry" => run(&mut || oneshot_with(&static_retry, 0)),
        "oneshot/token_no_replay" => run(&mut || oneshot_with(&token_no_replay, 0)),
        "oneshot/token" => run(&mut || oneshot_with(&token, 0)),
        other => panic!("HOT_PATH_VARIANT={other}: expected one of {VARIANTS:?}"),
    }
}

/// tower-http's `SetRequestHeader` with a header value built at run time:
/// its bytes are reference counted, and every clone of it touches one
/// shared counter.
fn shared_header() -> StaticHeader {
    SetRequestHeaderLayer::overriding(
        AUTHORIZATION,
        HeaderValue::from_maybe_shared(Bytes::from(TOKEN.to_owned())).unwrap(),
    )
    .layer(Noop)
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = p1_hot_path, p2_contention
}

/// `HOT_PATH_P2=rounds`: P2 without criterion. In each round every
/// service runs 1 thread, then all threads, `HOT_PATH_P2_ITERS` requests
/// per thread (default 2,000,000), the services taking turns; the best
/// round of each counts (what the machine gives when nobody else takes a
/// core). Prints the throughput, each service's gain from 1 thread to all,
/// that gain against the static header's, and all threads against the
/// `tokio::sync::RwLock` cache.
fn p2_interleaved(rounds: u32) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let iters = std::env::var("HOT_PATH_P2_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000u64);
    type Run = Box<dyn Fn(usize) -> Duration>;
    let boxed =
        |svc: Box<dyn Fn(usize, u64) -> Duration>| -> Run { Box::new(move |t| svc(t, iters)) };
    let token = token_layer().layer(Noop);
    let token_no_replay = token_layer_with(false).layer(Noop);
    let (static_h, shared_h, std_rw, tokio_rw) =
        (static_header(), shared_header(), std_cache(), tokio_cache());
    let services: Vec<(&str, Run)> = vec![
        (
            "set_request_header_static",
            boxed(Box::new(move |t, n| contended(&static_h, t, n))),
        ),
        (
            "set_request_header_refcounted",
            boxed(Box::new(move |t, n| contended(&shared_h, t, n))),
        ),
        (
            "token_service",
            boxed(Box::new(move |t, n| contended(&token, t, n))),
        ),
        (
            "token_service_no_401_replay",
            boxed(Box::new(move |t, n| contended(&token_no_replay, t, n))),
        ),
        (
            "std_rwlock_cache",
            boxed(Box::new(move |t, n| contended(&std_rw, t, n))),
        ),
        (
            "tokio_rwlock_cache",
            boxed(Box::new(move |t, n| contended(&tokio_rw, t, n))),
        ),
    ];
    // Requests per second: best round, 1 thread and all threads.
    let mut best = vec![[0f64; 2]; services.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in services.iter().enumerate() {
            for (slot, threads) in [1, cores].into_iter().enumerate() {
                let rps = (iters * threads as u64) as f64 / run(threads).as_secs_f64();
                best[i][slot] = best[i][slot].max(rps);
            }
        }
    }
    let gain = |i: usize| best[i][1] / best[i][0];
    println!("P2, {rounds} interleaved rounds, {iters} requests per thread, best round of each:");
    println!(
        "| service | 1 thread | {cores} threads | gain | gain vs static | {cores} threads vs tokio RwLock |"
    );
    println!("|---|---|---|---|---|---|");
    let tokio_all = best[services.len() - 1][1];
    for (i, (name, _)) in services.iter().enumerate() {
        println!(
            "| {name} | {:.2} M/s | {:.2} M/s | {:.2}× | {:.2} | {:.2}× |",
            best[i][0] / 1e6,
            best[i][1] / 1e6,
            gain(i),
            gain(i) / gain(0),
            best[i][1] / tokio_all
        );
    }
}

fn main() {
    if let Ok(rounds) = std::env::var("HOT_PATH_P2") {
        let rounds = rounds
            .parse()
            .unwrap_or_else(|_| panic!("HOT_PATH_P2={rounds}: expected a count of rounds"));
        p2_interleaved(rounds);
        return;
    }
    if let Ok(n) = std::env::var("HOT_PATH_CALLGRIND") {
        let n = n
            .parse()
            .unwrap_or_else(|_| panic!("HOT_PATH_CALLGRIND={n}: expected a count"));
        callgrind(n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
