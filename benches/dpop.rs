//! P8: what a DPoP proof costs.
//!
//! - **Proof vs signature**, ES256 and Ed25519: building a proof with the
//!   public API (`Dpop::proof`: claims, `jti`, `htu`, `ath`, encoding,
//!   signing) and the layer's request path with a DPoP-bound token over a
//!   no-op service (the proof with a precomputed `ath`, plus the layer),
//!   each against the bare signature of an input as long as a proof's
//!   signing input, with the same key. Target: proof ≤ 1.15 × signature.
//! - **End to end** on loopback (hyper-util client → axum server, keep-alive,
//!   32 requests in flight): `TokenLayer` with a DPoP-bound token (ES256,
//!   Ed25519) against the same layer with a bearer token. The server only
//!   reads the headers: this is the client's cost of DPoP.
//!
//! Besides criterion's figures, interleaved runs print the ratios:
//! `cargo bench --bench dpop`.
//!
//! Instructions, which a busy machine does not blur: with
//! `P8_CALLGRIND=<n>`, `P8_ALG=es256|ed25519` and
//! `P8_WHAT=signature|proof|layer`, the bench makes `n` of that after as
//! many uncounted, and nothing else; under
//! `valgrind --tool=callgrind --toggle-collect='*callgrind_measured*'`
//! the count divided by `n` is the cost of one.

mod support;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{StreamExt, stream};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use support::Noop;
use tower::{Layer, Service, ServiceExt};
use tower_token::dpop::Dpop;
use tower_token::jose::Algorithm;
use tower_token::{Token, TokenLayer, source};

type Body = Empty<Bytes>;

/// A 43-character opaque token, as oidc-provider issues them.
const TOKEN: &str = "mWhziKcywhZ5V72lAWJqh9dPgdQqA2LGSNleu_VJx3L";
const URI: &str = "https://api.example.com/v1/orders/12345?page=2";

/// A layer whose cache holds a token, DPoP-bound when `dpop` is given.
fn layer(rt: &tokio::runtime::Runtime, dpop: Option<&Dpop>) -> TokenLayer {
    let bound = dpop.is_some();
    let mut builder = TokenLayer::builder(source::from_fn(move |_| async move {
        Ok::<_, Infallible>(
            Token::new(TOKEN)
                .with_expires_in(Duration::from_secs(3600))
                .with_dpop(bound),
        )
    }))
    .refresh_ahead(0.0);
    if let Some(dpop) = dpop {
        builder = builder.dpop(dpop.clone());
    }
    let layer = builder.build().unwrap();
    rt.block_on(layer.cache().token()).unwrap();
    layer
}

/// One request through `svc`, driven without a runtime (the no-op service
/// answers on the first poll).
fn call_once<S>(svc: &mut S, uri: &Uri)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut req = Request::new(Body::new());
    *req.uri_mut() = uri.clone();
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("a no-op call must be ready on the first poll"),
    }
}

/// The time `f` takes `n` times.
fn time(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed()
}

/// Where callgrind counts: `--toggle-collect='*callgrind_measured*'`.
#[inline(never)]
fn callgrind_measured<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// The callgrind mode (see the module docs), if asked for.
fn callgrind_only() -> Option<(u32, Algorithm, String)> {
    let n = std::env::var("P8_CALLGRIND").ok()?.parse().ok()?;
    let alg = match std::env::var("P8_ALG").ok()?.as_str() {
        "es256" => Algorithm::ES256,
        "ed25519" => Algorithm::EdDSA,
        other => panic!("P8_ALG: es256 or ed25519, not {other}"),
    };
    Some((n, alg, std::env::var("P8_WHAT").ok()?))
}

fn p8_callgrind(n: u32, alg: Algorithm, what: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri: Uri = URI.parse().unwrap();
    let dpop = Dpop::generate(alg).unwrap();
    let sample = dpop.proof(&Method::GET, &uri, Some(TOKEN)).unwrap();
    let sample = sample.to_str().unwrap();
    let input = sample.as_bytes()[..sample.rfind('.').unwrap()].to_vec();
    let key = dpop.key().clone();
    let mut svc = layer(&rt, Some(&dpop)).layer(Noop);
    let mut one: Box<dyn FnMut()> = match what {
        "signature" => Box::new(|| {
            black_box(key.sign(black_box(&input)).unwrap());
        }),
        "proof" => Box::new(|| {
            black_box(dpop.proof(&Method::GET, &uri, Some(TOKEN)).unwrap());
        }),
        "layer" => Box::new(|| call_once(&mut svc, &uri)),
        other => panic!("P8_WHAT: signature, proof or layer, not {other}"),
    };
    for _ in 0..n {
        one();
    }
    callgrind_measured(|| {
        for _ in 0..n {
            one();
        }
    });
    println!("P8 callgrind: {n} × {what} ({alg:?}) measured");
}

fn p8_proof(c: &mut Criterion) {
    if let Some((n, alg, what)) = callgrind_only() {
        p8_callgrind(n, alg, &what);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uri: Uri = URI.parse().unwrap();
    let mut summary = Vec::new();
    for (name, alg) in [("es256", Algorithm::ES256), ("ed25519", Algorithm::EdDSA)] {
        let dpop = Dpop::generate(alg).unwrap();
        // The signing input of a real proof: the bare signature signs as
        // many bytes.
        let sample = dpop.proof(&Method::GET, &uri, Some(TOKEN)).unwrap();
        let sample = sample.to_str().unwrap();
        let input = sample.as_bytes()[..sample.rfind('.').unwrap()].to_vec();
        let key = dpop.key().clone();
        let mut svc = layer(&rt, Some(&dpop)).layer(Noop);

        let mut group = c.benchmark_group(format!("p8_proof/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("bare_signature", |b| {
            b.iter(|| key.sign(black_box(&input)).unwrap())
        });
        group.bench_function("proof", |b| {
            b.iter(|| {
                dpop.proof(black_box(&Method::GET), black_box(&uri), Some(TOKEN))
                    .unwrap()
            })
        });
        group.bench_function("layer_request_with_proof", |b| {
            b.iter(|| call_once(&mut svc, &uri))
        });
        group.finish();

        // Interleaved rounds, so that all three see the same machine.
        let (mut t_sign, mut t_proof, mut t_layer) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let n = 2_000;
        for _ in 0..20 {
            t_sign += time(n, || {
                black_box(key.sign(black_box(&input)).unwrap());
            });
            t_proof += time(n, || {
                black_box(dpop.proof(&Method::GET, &uri, Some(TOKEN)).unwrap());
            });
            t_layer += time(n, || call_once(&mut svc, &uri));
        }
        let per = |t: Duration| t.as_secs_f64() * 1e6 / f64::from(20 * n);
        summary.push(format!(
            "P8 {name}: signature {:.2} µs, proof {:.2} µs ({:.3}×), layer request with proof {:.2} µs ({:.3}×) (target <= 1.15)",
            per(t_sign),
            per(t_proof),
            per(t_proof) / per(t_sign),
            per(t_layer),
            per(t_layer) / per(t_sign),
        ));
    }
    for line in summary {
        println!("{line}");
    }
}

const CONCURRENCY: usize = 32;
const BATCH: u64 = 2_000;

async fn api() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        if headers.contains_key(http::header::AUTHORIZATION) {
            "ok"
        } else {
            "no token"
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/v1/orders?page=2")
}

/// Sends `n` requests through `svc` with `CONCURRENCY` in flight.
async fn drive<S, R>(svc: S, url: &str, n: u64) -> Duration
where
    R: http_body::Body,
    R::Error: std::fmt::Debug,
    S: Service<Request<Body>, Response = Response<R>> + Clone,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |_| {
            let svc = svc.clone();
            async move {
                let req = Request::get(url).body(Empty::new()).unwrap();
                let res = svc.oneshot(req).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"ok");
            }
        })
        .await;
    start.elapsed()
}

fn p8_end_to_end(c: &mut Criterion) {
    if callgrind_only().is_some() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(api());
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let es256 = Dpop::generate(Algorithm::ES256).unwrap();
    let ed25519 = Dpop::generate(Algorithm::EdDSA).unwrap();
    let stacks = [
        ("bearer", layer(&rt, None).layer(client.clone())),
        ("dpop_es256", layer(&rt, Some(&es256)).layer(client.clone())),
        (
            "dpop_ed25519",
            layer(&rt, Some(&ed25519)).layer(client.clone()),
        ),
    ];
    let mut group = c.benchmark_group("p8_end_to_end");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    for (name, svc) in &stacks {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(drive(svc.clone(), &url, BATCH)))
                    .sum()
            })
        });
    }
    group.finish();

    let mut totals = [Duration::ZERO; 3];
    for _ in 0..10 {
        for (total, (_, svc)) in totals.iter_mut().zip(&stacks) {
            *total += rt.block_on(drive(svc.clone(), &url, BATCH));
        }
    }
    let rps = |t: Duration| (10 * BATCH) as f64 / t.as_secs_f64();
    println!(
        "P8 end to end: bearer {:.0} req/s, DPoP ES256 {:.0} req/s ({:.3}×), DPoP Ed25519 {:.0} req/s ({:.3}×)",
        rps(totals[0]),
        rps(totals[1]),
        rps(totals[1]) / rps(totals[0]),
        rps(totals[2]),
        rps(totals[2]) / rps(totals[0]),
    );
}

criterion_group!(benches, p8_proof, p8_end_to_end);
criterion_main!(benches);
