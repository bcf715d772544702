//! The test time limits of `tests/bounded`:
//!
//! - every `#[tokio::test]` in `tests/*.rs`, and every `#[test]` that blocks
//!   on a runtime, starts with `bounded::watchdog!(…)` (a scan of the
//!   sources, so that a new test cannot forget it);
//! - the watchdog aborts a hanging test, with its name, whether it waits on
//!   a future that never completes, blocks its thread, hangs in the
//!   runtime's teardown, or waits on real I/O under paused time; and it does
//!   not fire for a test that ended, nor for a thread that has moved on to
//!   its next watch.
//!
//! The hanging tests run in a child process (this binary, started again
//! with `BOUNDED_CHILD` set and `--exact <name>`); without that variable
//! they return at once.

mod bounded;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a test's first statement must start with.
const BOUND: &str = "bounded::watchdog!(";

/// Problems in one source file: each test that must be bounded and is not.
/// Returns the problems and the number of tests checked.
///
/// Relies on rustfmt's layout (checked in CI): a test's signature ends with
/// a line ending in `{`, and its body ends with a `}` line at the
/// signature's indentation.
fn unbounded_tests(file: &str, text: &str) -> (Vec<String>, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (at, line) in lines.iter().enumerate() {
        let attr = line.trim_start();
        let is_async = attr.starts_with("#[tokio::test");
        if !is_async && attr != "#[test]" {
            continue;
        }
        // The `fn` line, after any further attributes and comments.
        let Some(fn_at) = (at + 1..lines.len()).find(|&i| {
            let t = lines[i].trim_start();
            !(t.starts_with("#[") || t.starts_with("//") || t.is_empty())
        }) else {
            problems.push(format!("{file}:{}: a test attribute without a fn", at + 1));
            continue;
        };
        let fn_line = lines[fn_at];
        let indent = &fn_line[..fn_line.len() - fn_line.trim_start().len()];
        let name = fn_line
            .trim_start()
            .trim_start_matches("pub ")
            .trim_start_matches("async ")
            .trim_start_matches("fn ")
            .split(['(', '<'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let Some(open) = (fn_at..lines.len()).find(|&i| lines[i].trim_end().ends_with('{')) else {
            problems.push(format!("{file}:{}: `{name}` has no body", fn_at + 1));
            continue;
        };
        let close = format!("{indent}}}");
        let end = (open + 1..lines.len())
            .find(|&i| lines[i].trim_end() == close)
            .unwrap_or(lines.len());
        let body = &lines[open + 1..end];
        // A plain test needs the watchdog when it runs a runtime.
        if !is_async && !body.iter().any(|l| l.contains("block_on(")) {
            continue;
        }
        checked += 1;
        let first = body
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !l.starts_with("//"));
        if !first.is_some_and(|l| l.starts_with(BOUND)) {
            problems.push(format!(
                "{file}:{}: `{name}` must start with `{BOUND}…);` (see tests/bounded/mod.rs)",
                fn_at + 1
            ));
        }
    }
    (problems, checked)
}

#[test]
fn every_async_test_is_bounded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let file = format!("tests/{}", path.file_name().unwrap().to_string_lossy());
        let (found, n) = unbounded_tests(&file, &text);
        problems.extend(found);
        checked += n;
        if n > 0 && !text.lines().any(|l| l.trim() == "mod bounded;") {
            problems.push(format!("{file}: no `mod bounded;`"));
        }
    }
    assert!(checked > 0, "no test found under {}", dir.display());
    assert!(
        problems.is_empty(),
        "{} of {checked} tests are not bounded:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!("{checked} tests in {} files are bounded", files.len());
}

/// The scan finds an unbounded test, and accepts a bounded one, a comment
/// before the bound, and a plain test that runs no runtime.
#[test]
fn the_scan_tells_bounded_from_unbounded() {
    // Placeholders for the attributes, so that the scan of this very file
    // does not take the sample for tests.
    let source = r#"
#[TOKIO_TEST]
async fn bounded() {
    // why this test exists
    bounded::watchdog!();
    work().await;
}

#[TOKIO_TEST(flavor = "multi_thread", worker_threads = 2)]
async fn forgot() {
    work().await;
    bounded::watchdog!();
}

mod inner {
    #[TEST]
    fn plain() {
        assert!(true);
    }

    #[TEST]
    fn blocks() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(work());
    }
}
"#
    .replace("TOKIO_TEST", "tokio::test")
    .replace("TEST", "test");
    let (problems, checked) = unbounded_tests("x.rs", &source);
    assert_eq!(checked, 3);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("x.rs:10: `forgot`"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("x.rs:22: `blocks`"),
        "{problems:#?}"
    );
}

#[test]
fn test_names_lose_the_closure_path() {
    assert_eq!(
        bounded::test_name("layer::a_test::{{closure}}::{{closure}}::here"),
        "layer::a_test"
    );
    assert_eq!(bounded::test_name("layer::a_test::here"), "layer::a_test");
}

// ---------------------------------------------------------------------------
// The watchdog, in a child process
// ---------------------------------------------------------------------------

/// The limit of the hanging children.
const CHILD_LIMIT: Duration = Duration::from_secs(1);

/// True in the child process started by [`run_child`].
fn in_child() -> bool {
    std::env::var_os("BOUNDED_CHILD").is_some()
}

/// Runs this binary's test `name` alone in a child process; its exit
/// success, stderr, and how long it ran. Kills it after 60 s.
fn run_child(name: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("BOUNDED_CHILD", "1")
        .env_remove("BOUNDED_TIMEOUT_SCALE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: the watchdog did not end the child within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    (status.success(), reader.join().unwrap(), elapsed)
}

/// The child `name` was aborted by the watchdog: not before its limit, with
/// its name in the message.
fn assert_aborted(name: &str) {
    let (success, stderr, elapsed) = run_child(name);
    assert!(!success, "{name}: the hanging child succeeded:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "bounded: test `bounded_guard::{name}` did not finish within {CHILD_LIMIT:?}"
        )),
        "{name}: no watchdog message:\n{stderr}"
    );
    assert!(
        elapsed >= CHILD_LIMIT,
        "{name}: aborted after {elapsed:?}, before the limit"
    );
}

#[test]
fn a_test_waiting_on_a_future_that_never_completes_is_aborted() {
    assert_aborted("child_pending_future");
}

#[test]
fn a_test_blocking_its_thread_is_aborted() {
    assert_aborted("child_blocked_thread");
}

#[test]
fn a_test_hanging_in_the_runtime_teardown_is_aborted() {
    assert_aborted("child_hangs_in_teardown");
}

#[test]
fn a_test_under_paused_time_is_aborted_on_real_time() {
    assert_aborted("child_paused_time_waits_on_io");
}

#[test]
fn a_test_that_ended_is_not_aborted() {
    let (success, stderr, _) = run_child("child_ends_in_time");
    assert!(success, "{stderr}");
    assert!(!stderr.contains("bounded:"), "{stderr}");
}

#[test]
fn a_watch_ends_when_its_thread_arms_the_next() {
    let (success, stderr, _) = run_child("child_arms_again_in_a_loop");
    assert!(success, "{stderr}");
    assert!(!stderr.contains("bounded:"), "{stderr}");
}

#[tokio::test]
async fn child_pending_future() {
    bounded::watchdog!(CHILD_LIMIT);
    if in_child() {
        std::future::pending::<()>().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_blocked_thread() {
    bounded::watchdog!(CHILD_LIMIT);
    if in_child() {
        // A blocking call in async code: no tokio timeout is polled while
        // it waits.
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }
}

#[tokio::test]
async fn child_hangs_in_teardown() {
    bounded::watchdog!(CHILD_LIMIT);
    if in_child() {
        // The body returns; dropping the runtime waits for this task.
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(3600)));
    }
}

#[tokio::test(start_paused = true)]
async fn child_paused_time_waits_on_io() {
    bounded::watchdog!(CHILD_LIMIT);
    if in_child() {
        // The runtime idles on real I/O: paused time auto-advances, so a
        // tokio timeout of an hour would fire at once; the watchdog waits
        // for the real limit.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hour = tokio::time::timeout(Duration::from_secs(3600), listener.accept()).await;
        assert!(hour.is_err(), "nobody connects");
        std::future::pending::<()>().await;
    }
}

#[test]
fn child_ends_in_time() {
    if in_child() {
        // A watch armed on a thread that ends is disarmed with it.
        std::thread::spawn(|| {
            bounded::watchdog!(CHILD_LIMIT);
        })
        .join()
        .unwrap();
        std::thread::sleep(CHILD_LIMIT * 2);
    }
}

#[test]
fn child_arms_again_in_a_loop() {
    if in_child() {
        // Like the cases of a property test: each case is bounded, not the
        // whole run (twice the limit here).
        for _ in 0..4 {
            bounded::watchdog!(CHILD_LIMIT);
            std::thread::sleep(CHILD_LIMIT / 2);
        }
    }
}
