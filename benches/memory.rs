//! P6 memory: a million requests through one `TokenService` (no-op inner
//! service), counting allocations with a global allocator. Live heap bytes
//! before and after must be equal: memory per cache is constant.
//!
//! A second run does the same with replay of streamed bodies on (P6 as
//! stage two states it): each request carries a 4 KiB body streamed in 8
//! frames as `UnsyncBoxBody<Bytes, Infallible>`, recorded while the inner
//! service reads it to the end, and released when the answer (200) comes.
//!
//! Run: `cargo bench --bench memory`.

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tower::{Layer, Service};
use tower_token::{Token, TokenLayer, source};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
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
struct Noop;

impl Service<Request<Empty<Bytes>>> for Noop {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Empty<Bytes>>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

fn run<S>(svc: &mut S, n: usize)
where
    S: Service<Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        let fut = pin!(svc.call(Request::new(Empty::new())));
        match fut.poll(&mut cx) {
            Poll::Ready(r) => drop(r.unwrap()),
            Poll::Pending => panic!("no-op calls are ready at once"),
        }
    }
}

fn main() {
    const N: usize = 1_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, replay) in [("default (401 replay on)", true), ("401 replay off", false)] {
        let layer = TokenLayer::builder(source::from_fn(|_| async {
            Ok::<_, Infallible>(
                Token::new("bench-token").with_expires_in(Duration::from_secs(3600)),
            )
        }))
        .retry_unauthorized(replay)
        .build()
        .unwrap();
        rt.block_on(layer.cache().token()).unwrap();
        let mut svc = layer.layer(Noop);
        run(&mut svc, 10_000); // warm up
        let live_before = LIVE.load(Ordering::Relaxed);
        let allocs_before = ALLOCS.load(Ordering::Relaxed);
        run(&mut svc, N);
        let live_after = LIVE.load(Ordering::Relaxed);
        let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
        println!(
            "P6 {name}: live heap before {live_before} B, after {N} requests {live_after} B \
             (growth {} B); {:.2} allocations per request (the request's own header map included)",
            live_after - live_before,
            allocs as f64 / N as f64
        );
        assert_eq!(live_after, live_before, "memory grew over {N} requests");
    }
    streamed_run(&rt, N);
}

// ---------------------------------------------------------------------------
// Second run: streamed bodies, recorded for a replay
// ---------------------------------------------------------------------------

type Streamed = UnsyncBoxBody<Bytes, Infallible>;

/// 4 KiB in 8 frames of 512 B.
const CHUNKS: usize = 8;
const CHUNK: usize = 512;

/// A streamed body of 8 frames, each a slice of `payload` (a reference
/// count: building it copies no byte).
fn streamed(payload: &Bytes) -> Streamed {
    let payload = payload.clone();
    let frames = (0..CHUNKS)
        .map(move |i| Ok::<_, Infallible>(Frame::data(payload.slice(i * CHUNK..(i + 1) * CHUNK))));
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// Reads every frame of the request body, then answers 200 with the number
/// of body bytes read.
#[derive(Clone, Copy)]
struct ReadAll;

impl Service<Request<Streamed>> for ReadAll {
    type Response = Response<usize>;
    type Error = Infallible;
    type Future = ReadBody;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Streamed>) -> ReadBody {
        ReadBody {
            body: req.into_body(),
            read: 0,
        }
    }
}

struct ReadBody {
    body: Streamed,
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
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => return Poll::Ready(Ok(Response::new(this.read))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn run_streamed<S>(svc: &mut S, payload: &Bytes, n: usize)
where
    S: Service<Request<Streamed>, Response = Response<tower_token::layer::ResponseBody<usize>>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        let fut = pin!(svc.call(Request::new(streamed(payload))));
        match fut.poll(&mut cx) {
            Poll::Ready(r) => {
                let read = *r.unwrap().body().get_ref();
                assert_eq!(
                    read,
                    CHUNKS * CHUNK,
                    "the inner service read the whole body"
                );
            }
            Poll::Pending => panic!("bodies whose frames are all ready complete at once"),
        }
    }
}

fn streamed_run(rt: &tokio::runtime::Runtime, n: usize) {
    let layer = TokenLayer::builder(source::from_fn(|_| async {
        Ok::<_, Infallible>(Token::new("bench-token").with_expires_in(Duration::from_secs(3600)))
    }))
    .build()
    .unwrap();
    rt.block_on(layer.cache().token()).unwrap();
    let mut svc = layer.layer(ReadAll);
    let payload = Bytes::from(vec![7u8; CHUNKS * CHUNK]);
    // A `Bytes` made from a `Vec` allocates its shared header on its first
    // clone: done here, before any counting.
    drop(payload.clone());
    run_streamed(&mut svc, &payload, 10_000); // warm up
    let live_before = LIVE.load(Ordering::Relaxed);
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    run_streamed(&mut svc, &payload, n);
    let live_after = LIVE.load(Ordering::Relaxed);
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    println!(
        "P6 streamed bodies, 401 replay on ({CHUNKS} frames of {CHUNK} B, recorded): live heap \
         before {live_before} B, after {n} requests {live_after} B (growth {} B); {:.2} \
         allocations per request (the body's own box and the request's header map included)",
        live_after - live_before,
        allocs as f64 / n as f64
    );
    assert_eq!(live_after, live_before, "memory grew over {n} requests");
}
