//! P1 (hot path) and P2 (contention): one request through `TokenService`
//! over a no-op inner service, against what a user would otherwise write.
//!
//! P1: single thread, per-request cost. P2: the same with 1 and 2 threads
//! calling clones of one shared service; criterion reports elements/second.
//!
//! Run: `cargo bench --bench hot_path`.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, header::AUTHORIZATION};
use http_body_util::Empty;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower::{Layer, Service};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_token::{Token, TokenLayer, source};

type Body = Empty<Bytes>;

/// Answers every request at once with an empty response.
#[derive(Clone, Copy)]
struct Noop;

impl Service<Request<Body>> for Noop {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        black_box(req.headers().len());
        ready(Ok(Response::new(())))
    }
}

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

/// Calls `svc` once, driving the future to completion without a runtime
/// (every service here answers on the first poll).
#[inline]
fn call_once<S>(svc: &mut S)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let fut = pin!(svc.call(Request::new(Body::new())));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("a no-op call must be ready on the first poll"),
    }
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
    let mut static_header =
        SetRequestHeaderLayer::overriding(AUTHORIZATION, HeaderValue::from_static(TOKEN))
            .layer(Noop);
    group.bench_function("set_request_header_static", |b| {
        b.iter(|| call_once(&mut static_header))
    });
    let mut token = token_layer().layer(Noop);
    group.bench_function("token_service", |b| b.iter(|| call_once(&mut token)));
    let mut token_no_replay = token_layer_with(false).layer(Noop);
    group.bench_function("token_service_no_401_replay", |b| {
        b.iter(|| call_once(&mut token_no_replay))
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
    let static_header =
        SetRequestHeaderLayer::overriding(AUTHORIZATION, HeaderValue::from_static(TOKEN))
            .layer(Noop);
    // The same layer with a header value built at run time: its bytes are
    // reference counted, and every clone of it touches one shared counter.
    let shared_header = SetRequestHeaderLayer::overriding(
        AUTHORIZATION,
        HeaderValue::from_maybe_shared(Bytes::from(TOKEN.to_owned())).unwrap(),
    )
    .layer(Noop);
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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = p1_hot_path, p2_contention
}
criterion_main!(benches);
