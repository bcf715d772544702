//! P9: recording a streamed request body for a possible replay.
//!
//! A 4 KiB body streamed as `UnsyncBoxBody<Bytes, Infallible>` goes through
//! `TokenService` over an inner service that reads every frame of it, as a
//! real client sends it, and answers 200:
//!
//! - (a) defaults: 401 replay on, so the body is recorded while it is read
//!   and the recording is released when the answer (200) arrives;
//! - (b) `retry_unauthorized(false)`: nothing recorded;
//! - (c) the same inner service without the layer (baseline).
//!
//! Criterion reports the time per request; after it, the same variants
//! run interleaved, best of 15 rounds (robust on a shared machine). Then a
//! counting global
//! allocator measures allocations and bytes allocated per request for
//! (a), (b) and (c) with three body shapes: 8 frames of 512 B (the P9
//! body), 64 frames of 64 B (the same 4 KiB in more frames) and 8 frames of
//! 4 KiB (a body 8 times larger in the same frames). What (a) adds over (b)
//! must not depend on the size of the body (no byte is copied).
//!
//! Run: `cargo bench --bench replay` (criterion options after `--`, such as
//! `-- --warm-up-time 1 --measurement-time 3`).
//!
//! Instruction counts: `REPLAY_CALLGRIND=N` runs N requests of one variant
//! and exits, without criterion. `REPLAY_VARIANT` is `on` (a, default),
//! `off` (b) or `none` (c); `REPLAY_CHUNKS` the number of frames (default
//! 8) and `REPLAY_BODY_LEN` the body's size (default 4096 B). The requests
//! run in `callgrind_requests`, so
//!
//! ```sh
//! REPLAY_CALLGRIND=200000 REPLAY_VARIANT=on valgrind --tool=callgrind \
//!     --toggle-collect='*callgrind_requests*' target/release/deps/replay-<hash>
//! ```
//!
//! counts the requests only (total instructions / N).

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use http::{Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower::{Layer, Service};
use tower_token::{Token, TokenLayer, source};

// ---------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts. `realloc` keeps
// the default (alloc, copy, dealloc), so a growing buffer counts as one
// allocation of its new size.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Counters {
    live: isize,
    allocs: usize,
    bytes: usize,
}

fn counters() -> Counters {
    Counters {
        live: LIVE.load(Ordering::Relaxed),
        allocs: ALLOCS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------
// The body and the inner service
// ---------------------------------------------------------------------------

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The P9 body: 4 KiB.
const BODY_LEN: usize = 4096;

/// A body shape: `chunks` frames of `chunk` bytes each.
#[derive(Clone, Copy)]
struct Shape {
    chunks: usize,
    chunk: usize,
}

impl Shape {
    const fn new(chunks: usize, chunk: usize) -> Self {
        Self { chunks, chunk }
    }

    fn len(self) -> usize {
        self.chunks * self.chunk
    }

    fn label(self) -> String {
        format!("{} × {} B", self.chunks, self.chunk)
    }
}

/// The payload the bodies are cut from: allocated once, shared by reference
/// count, so building a body per request copies no byte either.
fn payload(len: usize) -> Bytes {
    let bytes = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
    // The first clone of a `Bytes` made from a `Vec` allocates its shared
    // header; do it here, outside any measurement.
    drop(bytes.clone());
    bytes
}

/// A streamed body of `shape.chunks` frames, each a slice of `payload` (a
/// reference count, no copy), type-erased as clients erase their bodies.
fn streamed(payload: &Bytes, shape: Shape) -> Body {
    let payload = payload.clone();
    let Shape { chunks, chunk } = shape;
    let frames = (0..chunks)
        .map(move |i| Ok::<_, Infallible>(Frame::data(payload.slice(i * chunk..(i + 1) * chunk))));
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// Reads the whole request body, frame by frame, then answers 200 with the
/// number of body bytes it read.
#[derive(Clone, Copy)]
struct ReadAll;

impl Service<Request<Body>> for ReadAll {
    type Response = Response<usize>;
    type Error = Infallible;
    type Future = ReadBody;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ReadBody {
        black_box(req.headers().len());
        ReadBody {
            body: req.into_body(),
            read: 0,
        }
    }
}

/// The inner service's future: polls every frame to the end of the body.
struct ReadBody {
    body: Body,
    read: usize,
}

impl Future for ReadBody {
    type Output = Result<Response<usize>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.read += data.len();
                    }
                    black_box(frame);
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => return Poll::Ready(Ok(Response::new(this.read))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What the services answer with: the number of body bytes the inner
/// service read.
trait BytesRead {
    fn bytes_read(&self) -> usize;
}

impl BytesRead for usize {
    fn bytes_read(&self) -> usize {
        *self
    }
}

impl BytesRead for tower_token::layer::ResponseBody<usize> {
    fn bytes_read(&self) -> usize {
        *self.get_ref()
    }
}

/// Sends one request with a streamed body of `shape`, driving it to the end
/// without a runtime (every frame is ready at once), and checks that the
/// inner service read the whole body.
#[inline]
fn call_once<S, R>(svc: &mut S, payload: &Bytes, shape: Shape)
where
    S: Service<Request<Body>, Response = Response<R>>,
    S::Error: std::fmt::Debug,
    R: BytesRead,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the services here are always ready"),
    }
    let fut = pin!(svc.call(Request::new(streamed(payload, shape))));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            assert_eq!(res.body().bytes_read(), shape.len(), "body read whole");
            black_box(res);
        }
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("a request whose frames are all ready completes at once"),
    }
}

// ---------------------------------------------------------------------------
// The services
// ---------------------------------------------------------------------------

/// A layer whose cache already holds a long-lived token: the benchmark
/// measures the request path only.
fn token_layer(replay: bool) -> TokenLayer {
    let layer = TokenLayer::builder(source::from_fn(|_| async {
        Ok::<_, Infallible>(Token::new("bench-token").with_expires_in(Duration::from_secs(3600)))
    }))
    .retry_unauthorized(replay)
    .build()
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(layer.cache().token()).unwrap();
    layer
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// (a) `TokenService`, defaults: 401 replay on, the body recorded.
    ReplayOn,
    /// (b) `TokenService`, `retry_unauthorized(false)`.
    ReplayOff,
    /// (c) the inner service alone.
    NoLayer,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::ReplayOn, Variant::ReplayOff, Variant::NoLayer];

    fn name(self) -> &'static str {
        match self {
            Variant::ReplayOn => "token_service_replay_on",
            Variant::ReplayOff => "token_service_replay_off",
            Variant::NoLayer => "inner_alone",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::ReplayOn => "(a) `TokenService`, defaults (replay on)",
            Variant::ReplayOff => "(b) `TokenService`, `retry_unauthorized(false)`",
            Variant::NoLayer => "(c) inner service alone",
        }
    }

    fn from_env(value: &str) -> Self {
        match value {
            "on" | "a" => Variant::ReplayOn,
            "off" | "b" => Variant::ReplayOff,
            "none" | "c" => Variant::NoLayer,
            other => panic!("REPLAY_VARIANT: `on`, `off` or `none`, not {other:?}"),
        }
    }
}

/// One variant, ready to call.
enum Svc {
    Layered(tower_token::TokenService<ReadAll>),
    Bare(ReadAll),
}

impl Svc {
    fn new(variant: Variant) -> Self {
        match variant {
            Variant::ReplayOn => Svc::Layered(token_layer(true).layer(ReadAll)),
            Variant::ReplayOff => Svc::Layered(token_layer(false).layer(ReadAll)),
            Variant::NoLayer => Svc::Bare(ReadAll),
        }
    }

    #[inline]
    fn call_once(&mut self, payload: &Bytes, shape: Shape) {
        match self {
            Svc::Layered(svc) => call_once(svc, payload, shape),
            Svc::Bare(svc) => call_once(svc, payload, shape),
        }
    }

    fn run(&mut self, payload: &Bytes, shape: Shape, n: usize) {
        for _ in 0..n {
            self.call_once(payload, shape);
        }
    }
}

// ---------------------------------------------------------------------------
// Criterion: time per request
// ---------------------------------------------------------------------------

/// The body shapes measured: the P9 body, the same bytes in 64 frames, and
/// a body 8 times larger in 8 frames.
const P9: Shape = Shape::new(8, 512);
const SHAPES: [Shape; 3] = [P9, Shape::new(64, 64), Shape::new(8, 4096)];

fn p9_replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("p9_replay");
    group.throughput(Throughput::Elements(1));
    for shape in [P9, Shape::new(64, 64)] {
        let payload = payload(shape.len());
        for variant in Variant::ALL {
            let mut svc = Svc::new(variant);
            group.bench_with_input(
                BenchmarkId::new(variant.name(), format!("{}x{}B", shape.chunks, shape.chunk)),
                &shape,
                |b, &shape| b.iter(|| svc.call_once(&payload, shape)),
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = p9_replay
}

// ---------------------------------------------------------------------------
// Allocations per request
// ---------------------------------------------------------------------------

struct Row {
    shape: Shape,
    variant: Variant,
    allocs: f64,
    bytes: f64,
    growth: isize,
}

/// Allocations and bytes allocated per request over `n` requests, after a
/// warm-up; live heap growth over the `n` requests.
fn count(variant: Variant, shape: Shape, n: usize) -> Row {
    let payload = payload(shape.len());
    let mut svc = Svc::new(variant);
    svc.run(&payload, shape, 1_000);
    let before = counters();
    svc.run(&payload, shape, n);
    let after = counters();
    Row {
        shape,
        variant,
        allocs: (after.allocs - before.allocs) as f64 / n as f64,
        bytes: (after.bytes - before.bytes) as f64 / n as f64,
        growth: after.live - before.live,
    }
}

/// Time per request of each variant, interleaved: `ROUNDS` rounds in which
/// every variant runs `PER_ROUND` requests in turn; the best round of each
/// counts. On a shared machine the best round is what the code costs, and
/// interleaving exposes every variant to the same load.
fn interleaved_table() {
    const ROUNDS: usize = 15;
    const PER_ROUND: usize = 20_000;
    println!();
    println!(
        "P9: time per request, interleaved ({ROUNDS} rounds of {PER_ROUND} requests per \
         variant, best round)"
    );
    println!();
    println!("| body | (a) replay on | (b) replay off | (c) inner alone | (a) / (b) | (a) − (b) |");
    println!("|---|---|---|---|---|---|");
    for shape in [P9, Shape::new(64, 64)] {
        let payload = payload(shape.len());
        let mut svcs = Variant::ALL.map(Svc::new);
        let mut best = [f64::INFINITY; 3];
        for svc in &mut svcs {
            svc.run(&payload, shape, PER_ROUND); // warm up
        }
        for _ in 0..ROUNDS {
            for (svc, best) in svcs.iter_mut().zip(&mut best) {
                let start = Instant::now();
                svc.run(&payload, shape, PER_ROUND);
                let ns = start.elapsed().as_nanos() as f64 / PER_ROUND as f64;
                *best = best.min(ns);
            }
        }
        let [on, off, none] = best;
        println!(
            "| {} | {on:.0} ns | {off:.0} ns | {none:.0} ns | {:.2}× | {:+.0} ns |",
            shape.label(),
            on / off,
            on - off
        );
    }
}

fn allocation_table() {
    const N: usize = 100_000;
    let rows: Vec<Row> = SHAPES
        .iter()
        .flat_map(|&shape| Variant::ALL.map(|variant| count(variant, shape, N)))
        .collect();
    println!();
    println!("P9: allocations per request, counting allocator, {N} requests each");
    println!();
    println!(
        "| body | service | allocations / request | bytes allocated / request | live heap growth |"
    );
    println!("|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {:.2} | {:.1} B | {} B |",
            row.shape.label(),
            row.variant.label(),
            row.allocs,
            row.bytes,
            row.growth
        );
    }
    println!();
    println!("What recording adds, (a) − (b):");
    println!();
    println!(
        "| body | body bytes | extra allocations / request | extra bytes allocated / request |"
    );
    println!("|---|---|---|---|");
    for shape in SHAPES {
        let find = |v: Variant| {
            rows.iter()
                .find(|r| {
                    r.variant == v && r.shape.chunks == shape.chunks && r.shape.chunk == shape.chunk
                })
                .expect("every shape and variant is counted")
        };
        let (on, off) = (find(Variant::ReplayOn), find(Variant::ReplayOff));
        println!(
            "| {} | {} B | {:+.2} | {:+.1} B |",
            shape.label(),
            shape.len(),
            on.allocs - off.allocs,
            on.bytes - off.bytes
        );
    }
    for row in &rows {
        assert_eq!(row.growth, 0, "live heap grew over {N} requests");
    }
    let extra_bytes = |shape: Shape| {
        let find = |v: Variant| {
            rows.iter()
                .find(|r| {
                    r.variant == v && r.shape.chunks == shape.chunks && r.shape.chunk == shape.chunk
                })
                .map_or(0.0, |r| r.bytes)
        };
        find(Variant::ReplayOn) - find(Variant::ReplayOff)
    };
    let small = extra_bytes(P9);
    let large = extra_bytes(Shape::new(8, 4096));
    println!();
    println!(
        "P9: recording the {BODY_LEN} B body in 8 frames allocates {small:.0} B more than no \
         recording; the same 8 frames carrying 8× the bytes: {large:.0} B more (no byte copied)."
    );
}

// ---------------------------------------------------------------------------
// Callgrind mode
// ---------------------------------------------------------------------------

/// The requests callgrind counts (`--toggle-collect='*callgrind_requests*'`).
#[inline(never)]
fn callgrind_requests(svc: &mut Svc, payload: &Bytes, shape: Shape, n: usize) {
    svc.run(payload, shape, n);
}

fn callgrind(n: usize) {
    let variant =
        Variant::from_env(&std::env::var("REPLAY_VARIANT").unwrap_or_else(|_| "on".into()));
    let chunks: usize = std::env::var("REPLAY_CHUNKS")
        .ok()
        .map_or(8, |c| c.parse().expect("REPLAY_CHUNKS: a number"));
    let len: usize = std::env::var("REPLAY_BODY_LEN").ok().map_or(BODY_LEN, |l| {
        l.parse().expect("REPLAY_BODY_LEN: a number of bytes")
    });
    assert!(
        chunks > 0 && len.is_multiple_of(chunks),
        "REPLAY_CHUNKS divides REPLAY_BODY_LEN"
    );
    let shape = Shape::new(chunks, len / chunks);
    let payload = payload(shape.len());
    let mut svc = Svc::new(variant);
    svc.run(&payload, shape, 1_000); // warm up
    callgrind_requests(&mut svc, &payload, shape, n);
    println!(
        "P9 callgrind: {n} requests, {}, body {}",
        variant.label(),
        shape.label()
    );
}

fn main() {
    if let Ok(n) = std::env::var("REPLAY_CALLGRIND") {
        callgrind(n.parse().expect("REPLAY_CALLGRIND: a number of requests"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--list") {
        interleaved_table();
        allocation_table();
    }
}
