//! P6 memory: a million requests through one `TokenService` (no-op inner
//! service), counting allocations with a global allocator. Live heap bytes
//! before and after must be equal: memory per cache is constant.
//!
//! Run: `cargo bench --bench memory`.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
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
}
