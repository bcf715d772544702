//! In-process HTTP servers shared by the integration tests.
//!
//! - [`TokenServer`]: an OAuth 2.0 token endpoint (axum on `127.0.0.1:0`)
//!   whose answers are configurable per test (delay, `expires_in`,
//!   `token_type`, a canned status/headers/body), that can hold requests at
//!   a gate the test opens, and that records every token request (headers,
//!   raw body, decoded form, the token it issued, and when).
//! - [`ApiServer`]: a protected API that records the `Authorization` header
//!   and body of every request, and answers 401 for given tokens (or all),
//!   403, or a 401 `insufficient_scope` challenge.
//!
//! Every recorded event gets a number from one process-wide sequence, so a
//! test can assert the order of events across both servers.

#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Barrier, Semaphore};
use tower::ServiceExt;
use tower_token::{BoxError, ClientCredentials};

pub const CLIENT_ID: &str = "my client:1";
pub const CLIENT_SECRET: &str = "a+b/c:d%e f";

static SEQ: AtomicU64 = AtomicU64::new(1);

/// The next number of the process-wide event sequence.
pub fn seq() -> u64 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// Serves `router` on an ephemeral loopback port, on the current runtime.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// Polls `cond` until it holds; panics after 20 s (a hang guard, not a
/// timing assertion).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How far [`wall_after_suspend`] is ahead of the real wall clock, in
/// seconds: what a system suspend does (the monotonic clock does not count
/// it). Each test binary has its own; a test that sets it owns it.
pub static SUSPENDED_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A wall clock for `TokenLayerBuilder::wall_clock` that a test moves
/// forward through [`SUSPENDED_SECS`].
pub fn wall_after_suspend() -> std::time::SystemTime {
    std::time::SystemTime::now()
        + Duration::from_secs(SUSPENDED_SECS.load(std::sync::atomic::Ordering::SeqCst))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Token server
// ---------------------------------------------------------------------------

/// A fixed answer that replaces the normal token answer.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::new(status, body.to_string()).header("content-type", "application/json")
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// How the token server answers.
#[derive(Clone, Debug)]
pub struct TokenBehaviour {
    /// Waited before answering (after the gate).
    pub delay: Duration,
    /// `expires_in` of the answer; `None` leaves the field out.
    pub expires_in: Option<serde_json::Value>,
    /// `token_type` of the answer; `None` leaves the field out.
    pub token_type: Option<serde_json::Value>,
    /// Issued tokens are `<prefix><request number>`.
    pub prefix: String,
    /// A `refresh_token` to include, if any.
    pub refresh_token: Option<String>,
    /// When set, answered instead of a token.
    pub canned: Option<Canned>,
}

impl Default for TokenBehaviour {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            expires_in: Some(serde_json::json!(3600)),
            token_type: Some(serde_json::json!("Bearer")),
            prefix: "tok-".to_owned(),
            refresh_token: None,
            canned: None,
        }
    }
}

/// One request the token server received.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// 1-based number of the request.
    pub number: usize,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub form: Vec<(String, String)>,
    /// When it arrived, and its event number.
    pub at: Instant,
    pub seq_start: u64,
    /// When the answer was produced (None while pending).
    pub seq_end: Option<u64>,
    /// The access token issued, if the answer was a token.
    pub issued: Option<String>,
}

impl TokenRequest {
    /// The values of a form field, in order.
    pub fn form_values(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct TokenState {
    behaviour: Mutex<TokenBehaviour>,
    requests: Mutex<Vec<TokenRequest>>,
    hits: AtomicUsize,
    completed: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    gate: Mutex<Option<Arc<Semaphore>>>,
}

/// An OAuth 2.0 token endpoint at `http://127.0.0.1:<port>/token`.
#[derive(Clone)]
pub struct TokenServer {
    pub addr: SocketAddr,
    state: Arc<TokenState>,
}

impl TokenServer {
    pub async fn start() -> Self {
        Self::with(TokenBehaviour::default()).await
    }

    pub async fn with(behaviour: TokenBehaviour) -> Self {
        let state = Arc::new(TokenState {
            behaviour: Mutex::new(behaviour),
            ..TokenState::default()
        });
        let router = Router::new()
            .fallback(token_handler)
            .with_state(Arc::clone(&state));
        let addr = serve(router).await;
        Self { addr, state }
    }

    /// The token endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Changes how the server answers from now on.
    pub fn set(&self, f: impl FnOnce(&mut TokenBehaviour)) {
        f(&mut lock(&self.state.behaviour));
    }

    /// Token requests received (including ones still pending).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Token requests answered.
    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// Token requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most token requests ever handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.requests).clone()
    }

    /// The tokens issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|r| r.issued)
            .collect()
    }

    /// From now on, requests wait at a gate until [`release`](Self::release)
    /// or [`open_gate`](Self::open_gate).
    pub fn close_gate(&self) {
        *lock(&self.state.gate) = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets `n` requests through the gate.
    pub fn release(&self, n: usize) {
        if let Some(gate) = lock(&self.state.gate).as_ref() {
            gate.add_permits(n);
        }
    }

    /// Lets every waiting and future request through.
    pub fn open_gate(&self) {
        if let Some(gate) = lock(&self.state.gate).take() {
            gate.close();
        }
    }

    pub async fn wait_hits(&self, n: usize) {
        eventually(&format!("{n} token requests"), || self.hits() >= n).await;
    }

    pub async fn wait_completed(&self, n: usize) {
        eventually(&format!("{n} token answers"), || self.completed() >= n).await;
    }
}

async fn token_handler(
    State(state): State<Arc<TokenState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let number = state.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let form = form_urlencoded::parse(&body).into_owned().collect();
    let index = {
        let mut requests = lock(&state.requests);
        requests.push(TokenRequest {
            number,
            method,
            path: uri.path().to_owned(),
            headers,
            body,
            form,
            at: Instant::now(),
            seq_start: seq(),
            seq_end: None,
            issued: None,
        });
        requests.len() - 1
    };

    let gate = lock(&state.gate).clone();
    if let Some(gate) = gate {
        // A closed semaphore means the gate was opened for good.
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
    }
    let behaviour = lock(&state.behaviour).clone();
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }

    let (response, issued) = match behaviour.canned {
        Some(canned) => {
            let mut response = (canned.status, canned.body).into_response();
            for (name, value) in canned.headers {
                response.headers_mut().insert(
                    HeaderName::try_from(name).unwrap(),
                    HeaderValue::try_from(value).unwrap(),
                );
            }
            (response, None)
        }
        None => {
            let token = format!("{}{number}", behaviour.prefix);
            let mut answer = serde_json::Map::new();
            answer.insert("access_token".into(), token.clone().into());
            if let Some(t) = behaviour.token_type {
                answer.insert("token_type".into(), t);
            }
            if let Some(e) = behaviour.expires_in {
                answer.insert("expires_in".into(), e);
            }
            if let Some(r) = behaviour.refresh_token {
                answer.insert("refresh_token".into(), r.into());
            }
            answer.insert("unknown_field".into(), serde_json::json!({"ignored": true}));
            let response = axum::Json(serde_json::Value::Object(answer)).into_response();
            (response, Some(token))
        }
    };
    {
        let mut requests = lock(&state.requests);
        requests[index].seq_end = Some(seq());
        requests[index].issued = issued;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.completed.fetch_add(1, Ordering::SeqCst);
    response
}

/// A [`ClientCredentials`] source for `server`, with the default (Basic)
/// client authentication and the crate's default HTTP client.
pub fn source(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder(
        server.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap()
}

// ---------------------------------------------------------------------------
// Protected API server
// ---------------------------------------------------------------------------

/// One request the API server received.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub seq: u64,
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub authorization: Option<String>,
    pub body: Bytes,
}

impl ApiRequest {
    /// The bearer token the request carried, if any.
    pub fn token(&self) -> Option<&str> {
        self.authorization.as_deref()?.strip_prefix("Bearer ")
    }
}

/// How the API server answers.
#[derive(Clone, Debug, Default)]
pub struct ApiBehaviour {
    /// Bearer tokens answered 401 (`error="invalid_token"`).
    pub reject: HashSet<String>,
    /// Answer every request 401.
    pub reject_all: bool,
    /// Answer every request 403.
    pub forbid: bool,
    /// Answer every request 401 with `error="insufficient_scope"`.
    pub insufficient_scope: bool,
    /// When set, a request about to be answered 401 waits here first.
    pub hold_rejected: Option<Arc<Barrier>>,
}

#[derive(Default)]
struct ApiState {
    behaviour: Mutex<ApiBehaviour>,
    requests: Mutex<Vec<ApiRequest>>,
}

/// A protected API (any path, any method) at `http://127.0.0.1:<port>`.
#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<ApiState>,
}

impl ApiServer {
    pub async fn start() -> Self {
        let state = Arc::new(ApiState::default());
        let router = Router::new()
            .fallback(api_handler)
            .with_state(Arc::clone(&state));
        let addr = serve(router).await;
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, f: impl FnOnce(&mut ApiBehaviour)) {
        f(&mut lock(&self.state.behaviour));
    }

    /// Answer 401 to requests carrying `token`.
    pub fn reject(&self, token: &str) {
        self.set(|b| {
            b.reject.insert(token.to_owned());
        });
    }

    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.state.requests).len()
    }
}

async fn api_handler(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let record = ApiRequest {
        seq: seq(),
        at: Instant::now(),
        method,
        path: uri.path().to_owned(),
        headers,
        authorization,
        body,
    };
    let token = record.token().map(str::to_owned);
    lock(&state.requests).push(record);

    let behaviour = lock(&state.behaviour).clone();
    if behaviour.forbid {
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    }
    if behaviour.insufficient_scope {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                axum::http::header::WWW_AUTHENTICATE,
                r#"Bearer realm="api", error="insufficient_scope", scope="orders:write""#,
            )],
            "insufficient scope",
        )
            .into_response();
    }
    let rejected =
        behaviour.reject_all || token.as_ref().is_some_and(|t| behaviour.reject.contains(t));
    if rejected {
        if let Some(barrier) = behaviour.hold_rejected {
            barrier.wait().await;
        }
        return (
            StatusCode::UNAUTHORIZED,
            [(
                axum::http::header::WWW_AUTHENTICATE,
                r#"Bearer realm="api", error="invalid_token""#,
            )],
            "unauthorized",
        )
            .into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

pub type HttpClient<B> = Client<HttpConnector, B>;

/// hyper-util's legacy client for request bodies of type `B`.
pub fn http_client<B>() -> HttpClient<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` through `svc` and reads the whole answer.
pub async fn send<S, B, R>(svc: &S, req: http::Request<B>) -> Result<(StatusCode, Bytes), BoxError>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>, Error = BoxError> + Clone,
    R: http_body::Body,
    R::Error: Into<BoxError>,
{
    let response = svc.clone().oneshot(req).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    Ok((status, body))
}

/// The `tower_token::Error` inside a `TokenService` error.
pub fn token_error(err: &BoxError) -> &tower_token::Error {
    err.downcast_ref::<tower_token::Error>()
        .unwrap_or_else(|| panic!("not a tower_token::Error: {err:?}"))
}

/// A request body that is a stream: its bytes are not known up front, so a
/// request carrying it cannot be replayed.
pub struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
}

impl Chunks {
    pub fn new(chunks: &[&'static str]) -> Self {
        Self {
            chunks: chunks
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
        }
    }
}

/// A body type of the application's own that opts out of replay.
impl tower_token::replay::ReplayBody for Chunks {}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.chunks
                .pop_front()
                .map(|c| Ok(http_body::Frame::data(c))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

/// Captured `tracing` output: everything a subscriber writing to it wrote.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The capture of this test binary's global `tracing` subscriber, at every
/// level, installed on first use.
pub fn global_capture() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}
