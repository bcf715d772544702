//! Helpers for the robustness tests (bad answers, outages, soak, secrets).
//!
//! - [`Scripted`]: an axum endpoint on `127.0.0.1:0` (or another loopback
//!   address) whose every answer comes from a script: a status, headers and
//!   body, an endless or huge streaming body that counts the bytes it hands
//!   to the server, a body that stops in the middle and never ends, a delay,
//!   or no answer at all. It records every request it gets.
//! - [`RawServer`]: a bare `tokio` TCP listener that speaks just enough
//!   HTTP/1.1 to answer with raw bytes, then closes or resets the
//!   connection; it can be stopped (connection refused) and started again on
//!   the same port.
//! - [`Recorder`]: an inner service (the "API") that records the
//!   `Authorization` header of every request and answers 200.
//! - [`CountingClient`]: an [`HttpClient`] wrapper that records when each
//!   token request was sent, so attempts can be counted even when nothing
//!   listens.
//! - [`Capture`]: a `tracing` `MakeWriter` into a shared buffer.
//! - task counting and a hang guard.

#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_token::BoxError;
use tower_token::http_client::{BoxFuture, HttpClient, ResponseBody};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `cond` every few milliseconds until it holds; panics after 20 s.
/// A hang guard, not a timing assertion.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until no more tasks are alive than `baseline` (connections and
/// server tasks wind down on their own); panics with the count if they do
/// not within 20 s.
pub async fn settle_tasks(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive = alive_tasks();
        if alive <= baseline {
            return alive;
        }
        assert!(
            Instant::now() < deadline,
            "{alive} tasks still alive, {baseline} before: a task leaked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Scripted axum endpoint
// ---------------------------------------------------------------------------

/// One request a [`Scripted`] endpoint received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub number: usize,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn form(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// What a [`Scripted`] endpoint does with one request.
pub enum Reply {
    /// Answer at once.
    Now(Response),
    /// Wait, then answer.
    After(Duration, Box<Reply>),
    /// Never answer (the request hangs until the client gives up).
    Never,
}

impl Reply {
    /// `status`, `content-type` and `body`.
    pub fn with(status: u16, content_type: &str, body: impl Into<Body>) -> Self {
        let mut response = Response::new(body.into());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if !content_type.is_empty() {
            response
                .headers_mut()
                .insert("content-type", content_type.parse().unwrap());
        }
        Reply::Now(response)
    }

    /// A JSON body with `application/json`.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::with(status, "application/json", body.into())
    }

    /// Adds a header to an immediate answer.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Reply::Now(response) = &mut self {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        self
    }
}

/// The script: the answer to the n-th request (1-based).
pub type Script = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

struct ScriptState {
    hits: AtomicUsize,
    answered: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    script: Mutex<Script>,
}

/// An axum endpoint (any path, any method) that answers from a script.
#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    state: Arc<ScriptState>,
}

impl Scripted {
    /// Serves on `127.0.0.1:0`.
    pub async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", script).await
    }

    /// Serves on `bind` (for instance `127.0.0.2:0`, another loopback host).
    pub async fn start_on(
        bind: &str,
        script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(ScriptState {
            hits: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(script)),
        });
        let router = Router::new()
            .fallback(scripted_handler)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the script from now on.
    pub fn script(&self, script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) {
        *lock(&self.state.script) = Arc::new(script);
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests answered so far (headers sent).
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }
}

async fn scripted_handler(
    State(state): State<Arc<ScriptState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let number = state.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let seen = Seen {
        number,
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    };
    let script = Arc::clone(&lock(&state.script));
    let mut reply = script(number, &seen);
    lock(&state.seen).push(seen);
    loop {
        match reply {
            Reply::Now(response) => {
                state.answered.fetch_add(1, Ordering::SeqCst);
                return response;
            }
            Reply::After(delay, next) => {
                tokio::time::sleep(delay).await;
                reply = *next;
            }
            Reply::Never => std::future::pending::<()>().await,
        }
    }
}

/// A good token answer: `{"access_token":…,"token_type":"Bearer","expires_in":…}`.
pub fn token_json(access_token: &str, expires_in: u64) -> String {
    serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// Streaming bodies
// ---------------------------------------------------------------------------

/// What a streaming body reports: bytes handed to the server, and whether
/// the server dropped it (the connection is gone).
#[derive(Clone, Default)]
pub struct StreamStats {
    pub produced: Arc<AtomicU64>,
    pub dropped: Arc<AtomicBool>,
}

impl StreamStats {
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// A body that starts with `prefix` and then yields 16 KiB chunks of `x`:
/// forever (`total: None`, sent chunked), or up to `total` bytes with that
/// exact length announced in `Content-Length`.
pub struct Flood {
    prefix: Option<Bytes>,
    total: Option<u64>,
    stats: StreamStats,
}

const CHUNK: usize = 16 * 1024;

impl Flood {
    pub fn endless(prefix: &'static str, stats: &StreamStats) -> Self {
        Self {
            prefix: Some(Bytes::from_static(prefix.as_bytes())),
            total: None,
            stats: stats.clone(),
        }
    }

    pub fn sized(total: u64, stats: &StreamStats) -> Self {
        Self {
            prefix: None,
            total: Some(total),
            stats: stats.clone(),
        }
    }
}

impl http_body::Body for Flood {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let chunk = match self.prefix.take() {
            Some(prefix) => prefix,
            None => {
                let produced = self.stats.produced();
                let len = match self.total {
                    Some(total) if produced >= total => return Poll::Ready(None),
                    Some(total) => (total - produced).min(CHUNK as u64) as usize,
                    None => CHUNK,
                };
                Bytes::from(vec![b'x'; len])
            }
        };
        self.stats
            .produced
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.total {
            Some(total) => http_body::SizeHint::with_exact(total),
            None => http_body::SizeHint::default(),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stats.dropped.store(true, Ordering::SeqCst);
    }
}

/// A body that yields `prefix` and then never another byte, and never ends.
pub struct Stall {
    prefix: Option<Bytes>,
}

impl Stall {
    pub fn after(prefix: &'static str) -> Self {
        Self {
            prefix: Some(Bytes::from_static(prefix.as_bytes())),
        }
    }
}

impl http_body::Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.prefix.take() {
            Some(prefix) => Poll::Ready(Some(Ok(http_body::Frame::data(prefix)))),
            None => Poll::Pending,
        }
    }
}

/// A streaming answer with `content-type: application/json`.
pub fn streaming(
    status: u16,
    body: impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
) -> Reply {
    let mut response = Body::new(body).into_response();
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Reply::Now(response)
}

// ---------------------------------------------------------------------------
// Raw TCP server
// ---------------------------------------------------------------------------

/// What a [`RawServer`] writes, and how it ends the connection.
#[derive(Clone, Debug)]
pub enum Raw {
    /// A complete answer; the connection is closed after it.
    Answer { status: u16, body: String },
    /// These bytes, then a close (FIN) before the announced length.
    ThenClose(Vec<u8>),
    /// These bytes, then a reset (RST).
    ThenReset(Vec<u8>),
    /// Wait, then act.
    After(Duration, Box<Raw>),
}

impl Raw {
    pub fn ok_json(body: impl Into<String>) -> Self {
        Raw::Answer {
            status: 200,
            body: body.into(),
        }
    }

    /// A 200 head announcing `announced` body bytes, then `body` (shorter).
    pub fn partial(announced: usize, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {announced}\r\n\r\n{body}"
        )
        .into_bytes()
    }
}

pub type RawScript = Arc<dyn Fn(usize) -> Raw + Send + Sync>;

struct RawState {
    hits: AtomicUsize,
    arrivals: Mutex<Vec<Instant>>,
    script: Mutex<RawScript>,
}

/// A minimal HTTP/1.1 server on a bare `TcpListener`: reads one request per
/// connection (head and `Content-Length` body), answers from a script and
/// closes. [`stop`](Self::stop) drops the listener (the port then refuses
/// connections); [`resume`](Self::resume) listens on the same port again.
pub struct RawServer {
    pub addr: SocketAddr,
    state: Arc<RawState>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RawServer {
    pub async fn start(script: impl Fn(usize) -> Raw + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            addr,
            state: Arc::new(RawState {
                hits: AtomicUsize::new(0),
                arrivals: Mutex::new(Vec::new()),
                script: Mutex::new(Arc::new(script)),
            }),
            accept: Mutex::new(None),
        };
        server.listen(listener);
        server
    }

    fn listen(&self, listener: tokio::net::TcpListener) {
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let _ = raw_connection(stream, state).await;
                });
            }
        });
        *lock(&self.accept) = Some(task);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, script: impl Fn(usize) -> Raw + Send + Sync + 'static) {
        *lock(&self.state.script) = Arc::new(script);
    }

    /// Requests read so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.state.arrivals).clone()
    }

    /// Stops listening: new connections are refused.
    pub async fn stop(&self) {
        let task = lock(&self.accept).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again (retrying while the port is busy).
    pub async fn resume(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot bind {} again: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.listen(listener);
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept).take() {
            task.abort();
        }
    }
}

async fn raw_connection(mut stream: tokio::net::TcpStream, state: Arc<RawState>) -> io::Result<()> {
    // Read the head, then as many body bytes as announced.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let number = state.hits.fetch_add(1, Ordering::SeqCst) + 1;
    lock(&state.arrivals).push(Instant::now());
    let script = Arc::clone(&lock(&state.script));
    let mut raw = script(number);
    loop {
        match raw {
            Raw::After(delay, next) => {
                tokio::time::sleep(delay).await;
                raw = *next;
            }
            Raw::Answer { status, body } => {
                let reason = StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Whatever");
                let answer = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await?;
                return Ok(());
            }
            Raw::ThenClose(bytes) => {
                stream.write_all(&bytes).await?;
                stream.flush().await?;
                stream.shutdown().await?;
                return Ok(());
            }
            Raw::ThenReset(bytes) => {
                stream.write_all(&bytes).await?;
                stream.flush().await?;
                // Let the bytes reach the client before the reset.
                tokio::time::sleep(Duration::from_millis(20)).await;
                stream.set_zero_linger()?;
                drop(stream);
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Inner service ("the API")
// ---------------------------------------------------------------------------

/// Records the `Authorization` header of every request it gets, and answers
/// 200 with an empty body.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<Option<String>> {
        lock(&self.seen).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }
}

impl<B> tower::Service<http::Request<B>> for Recorder {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        lock(&self.seen).push(auth);
        std::future::ready(Ok(http::Response::new(String::new())))
    }
}

/// An empty GET request.
pub fn get() -> http::Request<String> {
    http::Request::get("http://api.test/resource")
        .body(String::new())
        .unwrap()
}

/// Sends one request through `svc`.
pub async fn call<S>(svc: &S) -> Result<http::Response<String>, BoxError>
where
    S: tower::Service<
            http::Request<String>,
            Response = http::Response<tower_token::layer::ResponseBody<String>>,
            Error = BoxError,
        > + Clone,
{
    let response = tower::ServiceExt::oneshot(svc.clone(), get()).await?;
    Ok(response.map(tower_token::layer::ResponseBody::into_inner))
}

/// The `tower_token::Error` inside a layer error.
pub fn typed(err: &BoxError) -> &tower_token::Error {
    err.downcast_ref::<tower_token::Error>()
        .unwrap_or_else(|| panic!("not a tower_token::Error: {err:?}"))
}

// ---------------------------------------------------------------------------
// Counting HTTP client
// ---------------------------------------------------------------------------

/// Wraps an [`HttpClient`] and records when each request was sent.
#[derive(Clone)]
pub struct CountingClient<C> {
    inner: C,
    sent: Arc<Mutex<Vec<Instant>>>,
}

impl<C> CountingClient<C> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            sent: Arc::default(),
        }
    }

    /// A handle that keeps reading the record after the client moved into a
    /// token source.
    pub fn log(&self) -> Arc<Mutex<Vec<Instant>>> {
        Arc::clone(&self.sent)
    }
}

impl<C: HttpClient> HttpClient for CountingClient<C> {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, Result<http::Response<ResponseBody>, BoxError>> {
        lock(&self.sent).push(Instant::now());
        self.inner.send(request)
    }
}

// ---------------------------------------------------------------------------
// Captured tracing output
// ---------------------------------------------------------------------------

/// A `tracing_subscriber` `MakeWriter` that appends everything to one
/// shared buffer.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `fut` to completion, or panics after `limit` (a hang guard).
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("hung: {what} did not finish within {limit:?}"),
    }
}
