//! A Node.js peer of the interop suites: `node tests/interop/<script> …`,
//! started, read until its ready line, and stopped.
//!
//! The scripts print one JSON object with an `issuer` on stdout when they
//! listen, and exit when their stdin closes. [`NodeProcess::start`] waits for
//! that line; a peer that cannot start (no `node`, no
//! `npm ci --prefix tests/interop`) fails the test with the peer's stderr,
//! nothing is skipped. Dropping a [`NodeProcess`] closes its stdin, waits up
//! to 5 s, then kills it.

#![allow(dead_code)]

use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long to wait for a peer's ready line, and for any one HTTP exchange
/// with it: `INTEROP_TIMEOUT_SECS`, default 30. Raise it on a slow machine.
pub fn timeout() -> Duration {
    let secs = std::env::var("INTEROP_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A running `node` process of `tests/interop`.
pub struct NodeProcess {
    /// The process, for signals.
    pub child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Runs `node tests/interop/<script> <args…>` and returns it with its
    /// ready line, waiting up to `wait`. Blocking: call it from
    /// `spawn_blocking` in async tests. Panics (fails the test) when the peer
    /// does not start.
    pub fn start<S: AsRef<OsStr>>(script: &str, args: &[S], wait: Duration) -> (Self, Value) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run `node` ({e}): the interop tests need Node.js 20+ on PATH \
                     and `npm ci --prefix tests/interop`"
                )
            });

        // stderr: kept, to be shown when a test fails.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() < 256 * 1024 {
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });

        // stdout: the ready line, then drained until the peer exits.
        let (tx, rx) = mpsc::channel::<Value>();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(sender) = &tx
                    && let Ok(value) = serde_json::from_str::<Value>(&line)
                    && value.get("issuer").is_some()
                {
                    let _ = sender.send(value);
                    tx = None;
                }
            }
        });

        let stdin = child.stdin.take();
        let mut process = NodeProcess {
            child,
            stdin,
            stderr,
        };
        match rx.recv_timeout(wait) {
            Ok(ready) => (process, ready),
            Err(e) => {
                let _ = process.child.kill();
                let status = process.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the interop peer `{script}` did not start ({e}; exit: {status:?}). \
                     Did `npm ci --prefix tests/interop` run? Its stderr:\n{}",
                    process.stderr()
                );
            }
        }
    }

    /// What the peer wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the peer's stdin and waits (up to 5 s) for it to exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        drop(self.stdin.take());
        self.wait_exit()
    }

    /// Waits (up to 5 s) for the peer to exit.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.stop().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- interop peer stderr ---\n{}", self.stderr());
        }
    }
}
