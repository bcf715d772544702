//! A time limit for every test: a hang (a retry loop that never ends, a
//! deadlock, a server that never answers) fails the run, naming the test,
//! instead of stalling it.
//!
//! Every `#[tokio::test]`, and every `#[test]` that blocks on a runtime,
//! starts with one of
//!
//! ```ignore
//! bounded::watchdog!(); // the default limit, 60 s
//! bounded::watchdog!(LIMIT); // a suite's own limit
//! ```
//!
//! which arms a watchdog for the current test. If the test's thread has not
//! ended when the limit passes, the watchdog prints
//!
//! ```text
//! bounded: test `layer::some_test` did not finish within 60s (hung?); aborting the test process
//! ```
//!
//! to stderr and aborts the process, so the run fails. `tests/bounded_guard.rs`
//! checks that no test lacks the line, and that hanging tests are aborted.
//!
//! Limits: 60 s for ordinary tests (each takes well under 5 s); the
//! outage tests 120 s and the soak 360 s (backstops past their own
//! `within` limits of 60 s and 300 s, which fail first with a panic of
//! their own); the interop tests 180 s, or 6 × `INTEROP_TIMEOUT_SECS` if
//! that is more (a test may wait for others before it starts its peer).
//! `BOUNDED_TIMEOUT_SCALE=<factor>` multiplies every limit (a slow
//! machine, a run under valgrind).
//!
//! Why a watchdog thread, and not `tokio::time::timeout` around the body:
//!
//! - It keeps real time. Under paused time (`start_paused`,
//!   `time::pause`), tokio's clock jumps ahead whenever the runtime idles,
//!   so a tokio timeout would fire at once while the test waits on real I/O.
//! - It fires when the test's thread is blocked (a `std` lock, a blocking
//!   call in async code), where a tokio timeout would never be polled.
//! - It covers the runtime's teardown after the body (dropping a runtime
//!   waits for its blocking tasks): a watch is disarmed when the test's
//!   thread ends (the harness runs each test on a thread of its own) or
//!   arms the next watch (the next case of a property test), not when the
//!   body returns.
//! - It is one line at the top of a test: no test body is re-indented.
//!
//! The cost: a hang aborts the whole test binary rather than failing one
//! test. It only happens where the run would otherwise stall, and the
//! message names the test.
//!
//! One thread watches all the tests of a binary; arming a watch is a push
//! onto a list.

#![allow(dead_code)]

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The limit of `watchdog!()`: far above what any ordinary test here takes
/// (well under 5 s), so that a loaded 2-core machine never reaches it.
pub const DEFAULT: Duration = Duration::from_secs(60);

/// Arms a watchdog for the current test: the test's thread must end within
/// the limit (default [`DEFAULT`]), or the process aborts with the test's
/// name. Use it as the first statement of the test.
macro_rules! watchdog {
    () => {
        $crate::bounded::watchdog!($crate::bounded::DEFAULT)
    };
    ($limit:expr) => {
        let _watchdog = $crate::bounded::arm(
            {
                fn here() {}
                $crate::bounded::test_name(::std::any::type_name_of_val(&here))
            },
            $limit,
        );
    };
}
pub(crate) use watchdog;

/// `<crate>::<test>::{{closure}}::here` -> `<crate>::<test>`.
pub fn test_name(path: &'static str) -> &'static str {
    let mut name = path.strip_suffix("::here").unwrap_or(path);
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name
}

struct Watch {
    id: u64,
    test: &'static str,
    limit: Duration,
    deadline: Instant,
}

#[derive(Default)]
struct Watches {
    next_id: u64,
    armed: Vec<Watch>,
}

struct Watchdog {
    watches: Mutex<Watches>,
    changed: Condvar,
}

impl Watchdog {
    fn lock(&self) -> MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one watching thread of this test binary, started on first use.
fn shared() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            watches: Mutex::new(Watches::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("bounded-watchdog".into())
            .spawn(move || watch(dog))
            .expect("spawn the watchdog thread");
        dog
    })
}

fn watch(dog: &Watchdog) -> ! {
    let mut watches = dog.lock();
    loop {
        let now = Instant::now();
        let expired: Vec<&Watch> = watches.armed.iter().filter(|w| w.deadline <= now).collect();
        if !expired.is_empty() {
            // Straight to the process's stderr: `eprintln!` from a thread
            // the harness captures would be lost with the abort.
            let mut out = std::io::stderr().lock();
            for w in expired {
                let _ = writeln!(
                    out,
                    "\nbounded: test `{}` did not finish within {:?} (hung?); \
                     aborting the test process",
                    w.test, w.limit
                );
            }
            let _ = out.flush();
            std::process::abort();
        }
        let next = watches.armed.iter().map(|w| w.deadline).min();
        watches = match next {
            Some(deadline) => {
                dog.changed
                    .wait_timeout(watches, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => dog.changed.wait(watches).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// The factor of `BOUNDED_TIMEOUT_SCALE`, 1 when unset or not a number > 0.
fn scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var("BOUNDED_TIMEOUT_SCALE")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f > 0.0)
            .unwrap_or(1.0)
    })
}

/// An armed watch; use [`watchdog!`] rather than this.
#[must_use = "the watch is disarmed when this is dropped"]
pub struct Armed {
    id: u64,
}

/// Arms a watch for `test`; see [`watchdog!`].
pub fn arm(test: &'static str, limit: Duration) -> Armed {
    let limit = limit.mul_f64(scale());
    // Watches this thread left armed past their scope: the thread has moved
    // on (e.g. the next case of a property test), so they are done.
    let done = THREAD_WATCHES
        .try_with(|w| std::mem::take(&mut *w.0.borrow_mut()))
        .unwrap_or_default();
    let dog = shared();
    let mut watches = dog.lock();
    watches.armed.retain(|w| !done.contains(&w.id));
    watches.next_id += 1;
    let id = watches.next_id;
    watches.armed.push(Watch {
        id,
        test,
        limit,
        deadline: Instant::now() + limit,
    });
    drop(watches);
    dog.changed.notify_one();
    Armed { id }
}

fn disarm(ids: &[u64]) {
    shared().lock().armed.retain(|w| !ids.contains(&w.id));
}

/// The watches dropped on this thread: disarmed when the thread ends, or
/// arms a new watch.
struct ThreadWatches(RefCell<Vec<u64>>);

impl Drop for ThreadWatches {
    fn drop(&mut self) {
        disarm(&self.0.borrow());
    }
}

thread_local! {
    static THREAD_WATCHES: ThreadWatches = const { ThreadWatches(RefCell::new(Vec::new())) };
}

impl Drop for Armed {
    /// Leaves the watch armed until the thread ends or arms another: what
    /// runs after the test body on this thread (the runtime's teardown) is
    /// still watched. At the thread's end (thread-locals gone), disarms now.
    fn drop(&mut self) {
        let id = self.id;
        if THREAD_WATCHES
            .try_with(|w| w.0.borrow_mut().push(id))
            .is_err()
        {
            disarm(&[id]);
        }
    }
}
