//! P5 end to end on loopback: hyper-util client → axum server, with keep-alive
//! and a fixed concurrency; `TokenLayer` against tower-http's
//! `SetRequestHeader` with a static value. Reports requests per second of
//! each and their ratio (target ≥ 0.97).
//!
//! Run: `cargo bench --bench end_to_end`.

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
use tower_token::{ClientCredentials, TokenLayer};

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, token_svc, static_svc) = rt.block_on(async {
        let url = api().await;
        let server = support::TokenServer::start(Duration::ZERO, Duration::from_secs(3600)).await;
        let source = ClientCredentials::builder(server.url(), "bench", "secret")
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

    // Interleaved runs, so both see the same machine.
    let (mut t_token, mut t_static) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        t_token += rt.block_on(drive(token_svc.clone(), &url, BATCH));
        t_static += rt.block_on(drive(static_svc.clone(), &url, BATCH));
    }
    let rps = |t: Duration| (10 * BATCH) as f64 / t.as_secs_f64();
    println!(
        "P5: token layer {:.0} req/s, static header {:.0} req/s, ratio {:.3} (target >= 0.97)",
        rps(t_token),
        rps(t_static),
        rps(t_token) / rps(t_static)
    );
}

criterion_group!(benches, p5);
criterion_main!(benches);
