//! P5 end to end on loopback, with keep-alive and a fixed concurrency, against
//! one axum server.
//!
//! - hyper-util client: `TokenLayer` against tower-http's `SetRequestHeader`
//!   with a static value (criterion, then interleaved runs; target ≥ 0.97).
//! - reqwest, seven stacks in interleaved rounds over one `reqwest::Client`:
//!   (a) plain reqwest with a static `Authorization` header set per request,
//!   (b) `ClientWithMiddleware` with `TokenMiddleware` (target ≥ 0.97 × (a)),
//!   (c) `TokenLayer` over `adapter::ReqwestService`, (d) `ReqwestService`
//!   under `SetRequestHeader` with a static value (the adapter's own cost),
//!   and (e) `ClientWithMiddleware` with no middleware and a static header
//!   (reqwest-middleware's own cost, to read (b) by), and `ClientWithMiddleware`
//!   with a middleware that only inserts a static header: (f) awaiting the
//!   next hop in a future of its own and reading the answer (the least a
//!   middleware that must see the answer costs), (g) handing the next hop's
//!   future back (the least any middleware costs). (b), (f) and (g) need the
//!   `reqwest-middleware` feature and are skipped without it. Besides
//!   requests per second, each stack's CPU time per request (all threads of
//!   the process: client and server) is read from `/proc/self/task`.
//!
//! Run: `cargo bench --bench end_to_end --features reqwest-middleware`.
//! `P5_HYPER_ROUNDS` (default 40) sets the interleaved hyper rounds of
//! 2,000 requests per stack; `P5_REQWEST_ROUNDS` (default 60) and `P5_REQWEST_BATCH` (default 1,000
//! requests per stack per round) size the reqwest part.
//!
//! Instructions per request, which a busy machine does not blur: with
//! `P5_REQWEST_ONLY=a` (… `g`) the bench runs that reqwest stack alone on
//! one thread, `P5_REQWEST_BATCH` requests after as many uncounted, and
//! nothing else; under
//! `valgrind --tool=callgrind --toggle-collect='*callgrind_measured*'`
//! the count divided by the batch is the cost of a request, client and
//! server together.

mod support;

use axum::{Router, routing::get};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{StreamExt, stream};
use http::{HeaderValue, header::AUTHORIZATION};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_token::{ClientCredentials, Token, TokenLayer, adapter::ReqwestService, source};

const CONCURRENCY: usize = 32;
const BATCH: u64 = 2_000;

async fn api() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/",
        get(|headers: http::HeaderMap| async move {
            if headers.contains_key(AUTHORIZATION) {
                "ok"
            } else {
                "no token"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/")
}

/// Sends `n` requests through `svc` with `CONCURRENCY` in flight.
async fn drive<S, R>(svc: S, url: &str, n: u64) -> Duration
where
    R: http_body::Body,
    R::Error: std::fmt::Debug,
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<R>> + Clone,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |_| {
            let svc = svc.clone();
            async move {
                let req = http::Request::get(url).body(Empty::new()).unwrap();
                let res = svc.oneshot(req).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"ok");
            }
        })
        .await;
    start.elapsed()
}

fn p5(c: &mut Criterion) {
    if only_stack().is_some() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, token_svc, static_svc) = rt.block_on(async {
        let url = api().await;
        let server = support::TokenServer::start(Duration::ZERO, Duration::from_secs(3600)).await;
        let source = ClientCredentials::builder(
            server.url(),
            tower_token::Credentials::new("bench", "secret"),
        )
        .build()
        .unwrap();
        let layer = TokenLayer::new(source);
        layer.cache().token().await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let token_svc = layer.layer(client.clone());
        let static_svc = SetRequestHeaderLayer::overriding(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer bench-token-1"),
        )
        .layer(client);
        (url, token_svc, static_svc)
    });
    let mut group = c.benchmark_group("p5_end_to_end");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("token_layer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(drive(token_svc.clone(), &url, BATCH)))
                .sum()
        })
    });
    group.bench_function("set_request_header_static", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(drive(static_svc.clone(), &url, BATCH)))
                .sum()
        })
    });
    group.finish();

    // Interleaved runs, so both see the same machine, after one uncounted
    // round of each (the client's pool holds its connections by then); the
    // stack that goes first alternates from round to round.
    let rounds = env_or("P5_HYPER_ROUNDS", 40).max(1);
    rt.block_on(drive(token_svc.clone(), &url, BATCH));
    rt.block_on(drive(static_svc.clone(), &url, BATCH));
    let (mut t_token, mut t_static) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        if round % 2 == 0 {
            t_token += rt.block_on(drive(token_svc.clone(), &url, BATCH));
            t_static += rt.block_on(drive(static_svc.clone(), &url, BATCH));
        } else {
            t_static += rt.block_on(drive(static_svc.clone(), &url, BATCH));
            t_token += rt.block_on(drive(token_svc.clone(), &url, BATCH));
        }
    }
    let rps = |t: Duration| (rounds * BATCH) as f64 / t.as_secs_f64();
    println!(
        "P5: token layer {:.0} req/s, static header {:.0} req/s, ratio {:.3} (target >= 0.97)",
        rps(t_token),
        rps(t_static),
        rps(t_token) / rps(t_static)
    );
}

/// The reqwest stacks, in the order of the table.
const REQWEST_STACKS: [&str; N_STACKS] = [
    "(a) reqwest, static header",
    "(b) reqwest-middleware + TokenMiddleware",
    "(c) TokenLayer over ReqwestService",
    "(d) SetRequestHeader over ReqwestService",
    "(e) reqwest-middleware, no middleware, static header",
    "(f) reqwest-middleware + a static-header middleware that sees the answer",
    "(g) reqwest-middleware + a static-header middleware that does not",
];
const N_STACKS: usize = 7;

/// Stacks (f) and (g): a middleware that inserts a static header, written
/// by hand, in the two least costly ways there are. `looks` (f): it boxes
/// a future of its own that awaits the next hop and reads the answer's
/// status, the least a middleware that must see the answer does (a token
/// middleware must, to drop a rejected token). Otherwise (g): it hands the
/// next hop's future back as it is, the least any middleware does.
#[cfg(feature = "reqwest-middleware")]
struct StaticHeader {
    value: HeaderValue,
    looks: bool,
}

#[cfg(feature = "reqwest-middleware")]
impl reqwest_middleware::Middleware for StaticHeader {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut req: reqwest::Request,
        extensions: &'life1 mut http::Extensions,
        next: reqwest_middleware::Next<'life2>,
    ) -> std::pin::Pin<
        Box<
            dyn Future<Output = reqwest_middleware::Result<reqwest::Response>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        req.headers_mut().insert(AUTHORIZATION, self.value.clone());
        let answer = next.run(req, extensions);
        if !self.looks {
            return answer;
        }
        Box::pin(async move {
            let response = answer.await?;
            std::hint::black_box(response.status());
            Ok(response)
        })
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `n` requests made by `one` with `CONCURRENCY` in flight.
async fn drive_with<F, Fut>(n: u64, one: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |_| one())
        .await;
    start.elapsed()
}

/// `P5_REQWEST_ONLY=a` … `g`: run that reqwest stack alone, once, on one
/// thread, inside [`callgrind_measured`]; nothing else runs.
fn only_stack() -> Option<usize> {
    let only = std::env::var("P5_REQWEST_ONLY").ok()?;
    let stack = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .position(|s| *s == only);
    Some(stack.unwrap_or_else(|| panic!("P5_REQWEST_ONLY={only}: expected a letter from a to g")))
}

/// Where callgrind counts: `--toggle-collect='*callgrind_measured*'`.
#[inline(never)]
fn callgrind_measured<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// CPU time used so far by all threads of this process (client and server
/// alike), from `/proc/self/task/*/schedstat`; `None` where that is missing.
fn process_cpu() -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// A request for the tower stacks over `ReqwestService`.
fn http_get(url: &str) -> http::Request<reqwest::Body> {
    http::Request::get(url)
        .body(reqwest::Body::default())
        .unwrap()
}

fn p5_reqwest(_: &mut Criterion) {
    let rounds = env_or("P5_REQWEST_ROUNDS", 60).max(1);
    let batch = env_or("P5_REQWEST_BATCH", 1_000).max(1);
    let only = only_stack();
    // For callgrind, one thread runs client and server alike.
    let rt = match only {
        Some(_) => tokio::runtime::Builder::new_current_thread(),
        None => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .unwrap();
    let url = rt.block_on(api());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let bearer = HeaderValue::from_static("Bearer bench-token");
    let layer = TokenLayer::new(source::from_fn(|_| async {
        Ok::<_, std::io::Error>(
            Token::new("bench-token").with_expires_in(Duration::from_secs(86_400)),
        )
    }));
    rt.block_on(layer.cache().token()).unwrap();
    #[cfg(feature = "reqwest-middleware")]
    let with_middleware = reqwest_middleware::ClientBuilder::new(client.clone())
        .with(tower_token::middleware::TokenMiddleware::new(&layer))
        .build();
    // reqwest-middleware's own cost, for reading (b): no middleware at all.
    let no_middleware = reqwest_middleware::ClientBuilder::new(client.clone()).build();
    #[cfg(feature = "reqwest-middleware")]
    let static_middleware = |looks| {
        reqwest_middleware::ClientBuilder::new(client.clone())
            .with(StaticHeader {
                value: bearer.clone(),
                looks,
            })
            .build()
    };
    #[cfg(feature = "reqwest-middleware")]
    let (looking, passing) = (static_middleware(true), static_middleware(false));
    let token_svc = layer.layer(ReqwestService::new(client.clone()));
    let static_svc = SetRequestHeaderLayer::overriding(AUTHORIZATION, bearer.clone())
        .layer(ReqwestService::new(client.clone()));

    let run = |stack: usize, n: u64| -> Option<Duration> {
        let url = url.as_str();
        let t = match stack {
            0 => rt.block_on(drive_with(n, || async {
                let res = client
                    .get(url)
                    .header(AUTHORIZATION, bearer.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(&res.bytes().await.unwrap()[..], b"ok");
            })),
            #[cfg(feature = "reqwest-middleware")]
            1 => rt.block_on(drive_with(n, || async {
                let res = with_middleware.get(url).send().await.unwrap();
                assert_eq!(&res.bytes().await.unwrap()[..], b"ok");
            })),
            #[cfg(not(feature = "reqwest-middleware"))]
            1 => return None,
            2 => rt.block_on(drive_with(n, || async {
                let res = token_svc.clone().oneshot(http_get(url)).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"ok");
            })),
            3 => rt.block_on(drive_with(n, || async {
                let res = static_svc.clone().oneshot(http_get(url)).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"ok");
            })),
            4 => rt.block_on(drive_with(n, || async {
                let res = no_middleware
                    .get(url)
                    .header(AUTHORIZATION, bearer.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(&res.bytes().await.unwrap()[..], b"ok");
            })),
            #[cfg(feature = "reqwest-middleware")]
            5 | 6 => {
                let client = if stack == 5 { &looking } else { &passing };
                rt.block_on(drive_with(n, || async {
                    let res = client.get(url).send().await.unwrap();
                    assert_eq!(&res.bytes().await.unwrap()[..], b"ok");
                }))
            }
            #[cfg(not(feature = "reqwest-middleware"))]
            5 | 6 => return None,
            _ => unreachable!("{} stacks", N_STACKS),
        };
        Some(t)
    };

    // Wall time and the process's CPU time (client and server) of a batch.
    let measure = |stack: usize, n: u64| {
        let cpu = process_cpu();
        let wall = run(stack, n)?;
        let cpu = cpu.zip(process_cpu()).map(|(a, b)| b.saturating_sub(a));
        Some((wall, cpu))
    };

    if let Some(stack) = only {
        run(stack, batch);
        let t = callgrind_measured(|| run(stack, batch));
        if t.is_some() {
            println!(
                "P5 reqwest, {} only: {batch} requests after as many uncounted",
                REQWEST_STACKS[stack]
            );
        }
        return;
    }

    // One uncounted round opens the connections and warms the caches.
    for stack in 0..REQWEST_STACKS.len() {
        measure(stack, batch);
    }
    // Interleaved rounds, the starting stack rotating from round to round so
    // that none is always first or last.
    let mut wall = [Duration::ZERO; N_STACKS];
    let mut cpu = [Some(Duration::ZERO); N_STACKS];
    let mut ratios: [Vec<f64>; N_STACKS] = Default::default();
    for round in 0..rounds as usize {
        let mut this = [None; N_STACKS];
        for i in 0..REQWEST_STACKS.len() {
            let stack = (round + i) % REQWEST_STACKS.len();
            this[stack] = measure(stack, batch);
        }
        let (anchor, _) = this[0].unwrap();
        for (stack, m) in this.iter().enumerate() {
            if let Some((t, c)) = m {
                wall[stack] += *t;
                cpu[stack] = cpu[stack].zip(*c).map(|(a, b)| a + b);
                // Throughput ratio: the anchor's time over this stack's.
                ratios[stack].push(anchor.as_secs_f64() / t.as_secs_f64());
            }
        }
    }

    let requests = (rounds * batch) as f64;
    let anchor = requests / wall[0].as_secs_f64();
    println!(
        "\nP5 reqwest: {rounds} interleaved rounds x {batch} requests per stack, {CONCURRENCY} in flight"
    );
    println!(
        "| stack | req/s | ratio vs (a) | per-round ratio min / median / max | CPU per request (client + server) |"
    );
    println!("|---|---|---|---|---|");
    for (stack, name) in REQWEST_STACKS.iter().enumerate() {
        if ratios[stack].is_empty() {
            println!("| {name} | skipped: needs --features reqwest-middleware | | | |");
            continue;
        }
        let rps = requests / wall[stack].as_secs_f64();
        let r = &mut ratios[stack];
        r.sort_by(f64::total_cmp);
        let cpu = match cpu[stack] {
            Some(c) => format!("{:.1} µs", c.as_secs_f64() * 1e6 / requests),
            None => "n/a".to_owned(),
        };
        println!(
            "| {name} | {rps:.0} | {:.3} | {:.3} / {:.3} / {:.3} | {cpu} |",
            rps / anchor,
            r[0],
            r[r.len() / 2],
            r[r.len() - 1]
        );
    }
    println!("target: (b) >= 0.97 x (a)");
    if !ratios[1].is_empty() && !ratios[5].is_empty() {
        let rps = |stack: usize| requests / wall[stack].as_secs_f64();
        println!(
            "(b) / (f), the middleware against the least a middleware that sees the answer costs: {:.3}",
            rps(1) / rps(5)
        );
    }
}

criterion_group!(benches, p5, p5_reqwest);
criterion_main!(benches);
