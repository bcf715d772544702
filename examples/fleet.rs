//! A fleet of replica processes sharing one token through Redis (feature
//! `redis`).
//!
//! The parent process serves, on loopback, a token endpoint that issues
//! 2-second tokens and counts its requests, and a small API that accepts the
//! tokens it issued. It then starts `FLEET_REPLICAS` (default 4) copies of
//! itself as replicas: each is a `TokenLayer` sharing a `RedisStore`, calling
//! the API with 50 concurrent callers for a few seconds. For comparison, one
//! more copy runs the same load alone, without the store, against a token
//! endpoint of its own.
//!
//! The parent prints how many tokens the fleet was issued and how many API
//! calls succeeded, and exits 0 when every call succeeded and the whole
//! fleet needed fewer than twice the tokens of the lone replica (about as
//! many: the fleet refreshes when its first replica's refresh-ahead window
//! opens, which over a short run may cost a token or two more).
//!
//! Run with a Redis at hand:
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --features redis --example fleet
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{any, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::collections::HashSet;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tower::{BoxError, Layer, ServiceExt};
use tower_token::store::{RedisStore, StoreKeys};
use tower_token::{ClientCredentials, Credentials, TokenLayer};

const CLIENT_ID: &str = "fleet-example";
const CLIENT_SECRET: &str = "fleet-example-secret";
/// Marks a child process and says which role it plays.
const ROLE: &str = "TOWER_TOKEN_FLEET_ROLE";
const TOKEN_URL: &str = "TOWER_TOKEN_FLEET_TOKEN_URL";
const API_URL: &str = "TOWER_TOKEN_FLEET_API_URL";
/// The key that seals stored tokens; every replica of the fleet has it.
/// A real service reads it from its secret manager.
const STORE_KEY: [u8; 32] = *b"an example key, 32 bytes long..!";
const CALLERS: usize = 50;
/// How long the replicas call the API (`FLEET_SECONDS`, default 5).
fn run_for() -> Duration {
    let secs = std::env::var("FLEET_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(5))
}
const TOKEN_LIFETIME_SECS: u64 = 2;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = match std::env::var(ROLE).as_deref() {
        Ok("replica") => runtime.block_on(replica(true)),
        Ok("alone") => runtime.block_on(replica(false)),
        _ => return runtime.block_on(parent()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("replica failed: {err}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The parent: servers, replicas, the verdict

#[derive(Default)]
struct Servers {
    /// Token requests of the fleet, and of the replica without a store.
    fleet_tokens: AtomicU64,
    alone_tokens: AtomicU64,
    issued: Mutex<HashSet<String>>,
    next: AtomicU64,
    api_ok: AtomicUsize,
    api_rejected: AtomicUsize,
}

async fn issue(state: &Servers, counter: &AtomicU64) -> axum::Json<serde_json::Value> {
    counter.fetch_add(1, Ordering::SeqCst);
    let token = format!("tok-{}", state.next.fetch_add(1, Ordering::SeqCst) + 1);
    state.issued.lock().unwrap().insert(token.clone());
    axum::Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
    }))
}

async fn api(State(state): State<Arc<Servers>>, headers: HeaderMap) -> StatusCode {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = token.is_some_and(|t| state.issued.lock().unwrap().contains(t));
    if known {
        state.api_ok.fetch_add(1, Ordering::SeqCst);
        StatusCode::OK
    } else {
        state.api_rejected.fetch_add(1, Ordering::SeqCst);
        StatusCode::UNAUTHORIZED
    }
}

async fn parent() -> ExitCode {
    let Ok(redis_url) = std::env::var("REDIS_URL") else {
        eprintln!(
            "usage: REDIS_URL=redis://127.0.0.1:6379 [FLEET_REPLICAS=4] \
             cargo run --features redis --example fleet"
        );
        return ExitCode::from(2);
    };
    let replicas: usize = match std::env::var("FLEET_REPLICAS").map(|v| v.parse()) {
        Err(_) => 4,
        Ok(Ok(n)) if n > 0 => n,
        Ok(_) => {
            eprintln!("FLEET_REPLICAS must be a positive number");
            return ExitCode::from(2);
        }
    };
    match run_fleet(&redis_url, replicas).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_fleet(redis_url: &str, replicas: usize) -> Result<bool, BoxError> {
    let state = Arc::new(Servers::default());
    let router = Router::new()
        .route(
            "/token",
            post(|State(s): State<Arc<Servers>>| async move { issue(&s, &s.fleet_tokens).await }),
        )
        .route(
            "/alone/token",
            post(|State(s): State<Arc<Servers>>| async move { issue(&s, &s.alone_tokens).await }),
        )
        .route("/api/{*path}", any(api))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    // A fresh store prefix per run, so that a token left by an earlier run
    // is not taken.
    let prefix = format!("tower-token-fleet-example-{}", std::process::id());
    println!(
        "{replicas} replicas × {CALLERS} callers for {:?}, sharing {redis_url} \
         (tokens live {TOKEN_LIFETIME_SECS} s); one more replica without the store",
        run_for()
    );
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..=replicas {
        let (role, token_path) = if i < replicas {
            ("replica", "/token")
        } else {
            ("alone", "/alone/token")
        };
        let child = tokio::process::Command::new(&exe)
            .env(ROLE, role)
            .env(TOKEN_URL, format!("http://{addr}{token_path}"))
            .env(API_URL, format!("http://{addr}/api/"))
            .env("REDIS_URL", redis_url)
            .env("FLEET_PREFIX", &prefix)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        children.push((role, child));
    }

    let (mut ok, mut failed, mut all_exited) = (0u64, 0u64, true);
    for (i, (role, mut child)) in children.into_iter().enumerate() {
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        while let Some(line) = lines.next_line().await? {
            println!("  {role} {i}: {line}");
            if role == "replica" {
                let field = |name: &str| -> u64 {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name)?.parse().ok())
                        .unwrap_or(0)
                };
                ok += field("ok=");
                failed += field("failed=");
            }
        }
        let status = child.wait().await?;
        if !status.success() {
            println!("  {role} {i} exited with {status}");
            all_exited = false;
        }
    }

    let fleet_tokens = state.fleet_tokens.load(Ordering::SeqCst);
    let alone_tokens = state.alone_tokens.load(Ordering::SeqCst);
    println!(
        "done in {:.1?}: the token endpoint issued {fleet_tokens} token(s) to the fleet of \
         {replicas}, {alone_tokens} to the replica without the store",
        started.elapsed()
    );
    println!(
        "API calls of the fleet: {ok} succeeded, {failed} failed \
         (the API accepted {} calls in all, rejected {})",
        state.api_ok.load(Ordering::SeqCst),
        state.api_rejected.load(Ordering::SeqCst)
    );
    println!(
        "without the store, {replicas} replicas would have needed about {} tokens",
        replicas as u64 * alone_tokens
    );
    // The fleet refreshes about as often as one replica: its refresh starts
    // when the first replica's refresh-ahead window opens, so over a short
    // run it may need a token or two more than the lone replica, never
    // twice as many.
    let shared = fleet_tokens < 2 * alone_tokens;
    let passed = all_exited && failed == 0 && ok > 0 && shared;
    println!(
        "{}",
        if passed {
            "OK: every call succeeded, and the fleet shared its tokens"
        } else {
            "FAILED"
        }
    );
    Ok(passed)
}

// ---------------------------------------------------------------------------
// A replica

async fn replica(with_store: bool) -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let source =
        ClientCredentials::builder(var(TOKEN_URL)?, Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .build()?;
    let builder = TokenLayer::builder(source)
        .leeway(Duration::from_millis(500))
        .refresh_ahead(0.25);
    let layer = if with_store {
        let store = RedisStore::new(var("REDIS_URL")?.as_str())?.prefix(var("FLEET_PREFIX")?);
        builder.store(store, StoreKeys::new(1, &STORE_KEY)?)
    } else {
        builder
    }
    .build()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let svc = layer.layer(client);
    let api_url = var(API_URL)?;

    let until = Instant::now() + run_for();
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (svc, api_url) = (svc.clone(), api_url.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < until {
                    let req = http::Request::get(format!("{api_url}{c}"))
                        .body(Empty::new())
                        .expect("a valid request");
                    let status = match svc.clone().oneshot(req).await {
                        Ok(res) => {
                            let status = res.status();
                            let _ = res.into_body().collect().await;
                            status
                        }
                        Err(_) => StatusCode::BAD_GATEWAY,
                    };
                    if status == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for caller in callers {
        let (o, f) = caller.await?;
        ok += o;
        failed += f;
    }
    let stats = layer.stats();
    println!(
        "ok={ok} failed={failed} (tokens taken from the store: {}, fetched for the fleet: {}, \
         fetched alone: {})",
        stats.tokens_from_store, stats.fleet_fetches_won, stats.store_fallbacks
    );
    Ok(())
}
