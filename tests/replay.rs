//! Replay of any body (R18): streamed axum and reqwest bodies, a server
//! that answers 401 before reading the body, the limit, and body types of
//! the application's own that opt in or out. Real HTTP on loopback.

mod bounded;
mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{TokenServer, http_client, send, source};
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::Layer;
use tower_token::TokenLayer;
use tower_token::adapter::ReqwestService;
use tower_token::replay::{Replay, ReplayBody};

// ---------------------------------------------------------------------------
// An API that rejects some tokens before it reads the body
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ApiState {
    /// Tokens answered 401 at once, the body left unread.
    reject_unread: Mutex<HashSet<String>>,
    /// Tokens answered 401 after the whole body was read.
    reject_read: Mutex<HashSet<String>>,
    /// (token, body) of every request whose body was read.
    bodies: Mutex<Vec<(String, Bytes)>>,
    /// Tokens of every request, read or not.
    seen: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    state: Arc<ApiState>,
}

impl Api {
    async fn start() -> Self {
        let state = Arc::new(ApiState::default());
        let router = Router::new().fallback(api).with_state(Arc::clone(&state));
        let addr = common::serve(router).await;
        Self { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn reject_unread(&self, token: &str) {
        self.state
            .reject_unread
            .lock()
            .unwrap()
            .insert(token.to_owned());
    }

    fn reject_read(&self, token: &str) {
        self.state
            .reject_read
            .lock()
            .unwrap()
            .insert(token.to_owned());
    }

    fn bodies(&self) -> Vec<(String, Bytes)> {
        self.state.bodies.lock().unwrap().clone()
    }

    fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn api(State(state): State<Arc<ApiState>>, request: Request) -> axum::response::Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    state.seen.lock().unwrap().push(token.clone());
    if state.reject_unread.lock().unwrap().contains(&token) {
        // Authentication first: the body is never read.
        return (StatusCode::UNAUTHORIZED, "rejected before reading").into_response();
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    state.bodies.lock().unwrap().push((token.clone(), body));
    if state.reject_read.lock().unwrap().contains(&token) {
        return (StatusCode::UNAUTHORIZED, "rejected after reading").into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

/// Three chunks, the later two after pauses: a server that answers at once
/// answers while the body is still being produced.
fn slow_chunks() -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::iter(["chunk one|", "chunk two|", "chunk three"])
        .enumerate()
        .then(|(i, chunk)| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Bytes::from_static(chunk.as_bytes()))
        })
}

const SLOW_BODY: &[u8] = b"chunk one|chunk two|chunk three";

/// Fetches `tok-1` before the test's requests.
async fn warm(layer: &TokenLayer) {
    assert_eq!(layer.cache().token().await.unwrap().secret(), "tok-1");
}

// ---------------------------------------------------------------------------
// Streamed bodies, rejected before the server read them
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_stream_rejected_before_it_was_read_is_replayed_whole() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, Api::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let svc = layer.layer(http_client::<Body>());
    warm(&layer).await;
    api.reject_unread("tok-1");

    let request = http::Request::post(api.url("/upload"))
        .body(Body::from_stream(slow_chunks()))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.seen(), ["tok-1", "tok-2"]);
    assert_eq!(
        api.bodies(),
        [("tok-2".to_owned(), Bytes::from_static(SLOW_BODY))],
        "the replay carried the whole body, byte for byte"
    );
    assert_eq!(tokens.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reqwest_stream_rejected_before_it_was_read_is_replayed_whole() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, Api::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let svc = layer.layer(ReqwestService::new(reqwest::Client::new()));
    warm(&layer).await;
    api.reject_unread("tok-1");

    let request = http::Request::post(api.url("/upload"))
        .body(reqwest::Body::wrap_stream(slow_chunks()))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.seen(), ["tok-1", "tok-2"]);
    assert_eq!(
        api.bodies(),
        [("tok-2".to_owned(), Bytes::from_static(SLOW_BODY))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_in_full_then_rejected_is_replayed_whole() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, Api::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let svc = layer.layer(http_client::<Body>());
    warm(&layer).await;
    api.reject_read("tok-1");

    let request = http::Request::put(api.url("/doc"))
        .body(Body::from_stream(slow_chunks()))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let body = Bytes::from_static(SLOW_BODY);
    assert_eq!(
        api.bodies(),
        [
            ("tok-1".to_owned(), body.clone()),
            ("tok-2".to_owned(), body)
        ]
    );
}

// ---------------------------------------------------------------------------
// The limit
// ---------------------------------------------------------------------------

/// `len` bytes in chunks of 1 KiB, of a size not known up front.
fn stream_of(len: usize) -> Body {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Bytes, Infallible>> = data
        .chunks(1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_one_byte_over_the_limit_gets_the_401_back() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, Api::start().await);
    let limit = 8 * 1024;
    let layer = TokenLayer::builder(source(&tokens))
        .replay_limit(limit)
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Body>());
    warm(&layer).await;
    api.reject_read("tok-1");

    let request = http::Request::post(api.url("/big"))
        .body(stream_of(limit + 1))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not replayed");
    let bodies = api.bodies();
    assert_eq!(bodies.len(), 1, "sent once: nothing replayed");
    assert_eq!(bodies[0].1.len(), limit + 1, "and not truncated");
    // The token was dropped all the same: the next request carries tok-2.
    let request = http::Request::post(api.url("/small"))
        .body(stream_of(limit))
        .unwrap();
    assert_eq!(send(&svc, request).await.unwrap().0, StatusCode::OK);
    assert_eq!(api.seen().last().map(String::as_str), Some("tok-2"));

    // Exactly at the limit, a rejected body is replayed.
    api.reject_read("tok-2");
    let request = http::Request::post(api.url("/fits"))
        .body(stream_of(limit))
        .unwrap();
    assert_eq!(send(&svc, request).await.unwrap().0, StatusCode::OK);
    let bodies = api.bodies();
    let fits: Vec<_> = bodies.iter().rev().take(2).collect();
    assert_eq!(fits[0].0, "tok-3");
    assert_eq!(fits[0].1, fits[1].1);
    assert_eq!(fits[0].1.len(), limit);
}

// ---------------------------------------------------------------------------
// Body types of the application's own
// ---------------------------------------------------------------------------

/// A type-erased body of the application's own, opted in: recorded while
/// sent, through the public trait.
struct Mine(UnsyncBoxBody<Bytes, Infallible>);

impl Mine {
    fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
    {
        Mine(body.boxed_unsync())
    }
}

impl ReplayBody for Mine {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        Replay::record(self.0, limit, Mine::new, Mine::new)
    }
}

impl http_body::Body for Mine {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// The same body, opted out with the trait's default.
struct NotMine(Mine);

impl ReplayBody for NotMine {}

impl http_body::Body for NotMine {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
}

fn frames(chunks: &[&'static str]) -> Mine {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    Mine::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_type_opted_in_is_replayed_and_one_opted_out_is_not() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, Api::start().await);
    let layer = TokenLayer::new(source(&tokens));

    let mine = layer.layer(http_client::<Mine>());
    warm(&layer).await;
    api.reject_read("tok-1");
    let request = http::Request::post(api.url("/mine"))
        .body(frames(&["opted ", "in"]))
        .unwrap();
    assert_eq!(send(&mine, request).await.unwrap().0, StatusCode::OK);
    assert_eq!(
        api.bodies(),
        [
            ("tok-1".to_owned(), Bytes::from_static(b"opted in")),
            ("tok-2".to_owned(), Bytes::from_static(b"opted in")),
        ]
    );

    let not_mine = layer.layer(http_client::<NotMine>());
    api.reject_read("tok-2");
    let request = http::Request::post(api.url("/not-mine"))
        .body(NotMine(frames(&["opted ", "out"])))
        .unwrap();
    assert_eq!(
        send(&not_mine, request).await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.bodies().len(), 3, "sent once, not replayed");
    // The next request carries the fresh token.
    let request = http::Request::post(api.url("/next"))
        .body(NotMine(frames(&["next"])))
        .unwrap();
    assert_eq!(send(&not_mine, request).await.unwrap().0, StatusCode::OK);
    assert_eq!(api.seen().last().map(String::as_str), Some("tok-3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_a_rejection_releases_the_recording() {
    // A stream that is still being produced when the answer arrives goes on
    // being sent, untouched, after the recording is released.
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, Api::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let svc = layer.layer(http_client::<Body>());
    for _ in 0..5 {
        let request = http::Request::post(api.url("/ok"))
            .body(Body::from_stream(slow_chunks()))
            .unwrap();
        assert_eq!(send(&svc, request).await.unwrap().0, StatusCode::OK);
    }
    assert!(
        api.bodies()
            .iter()
            .all(|(t, b)| t == "tok-1" && b == SLOW_BODY)
    );
    assert_eq!(tokens.hits(), 1);
}
