//! Replay of gRPC calls after a rejected token, over a real tonic `Channel`
//! to real servers on loopback:
//!
//! - a unary call answered `UNAUTHENTICATED` by a tonic-health server is
//!   sent again with a fresh token, and the caller sees the answer;
//! - a client-streaming call whose sent part outgrew the replay limit gets
//!   the rejection back and is not sent again (nothing truncated goes out);
//!   one under the limit is sent again, byte for byte;
//! - `grpc-status: 16` in the trailers of a streamed answer drops the token
//!   (and `grpc-status: 0` there keeps it);
//! - a stream answered `UNAUTHENTICATED` before it ended, without the
//!   server reading it, is sent again whole: the part sent before the
//!   answer, then the rest.
//!
//! No protoc here: the streaming calls are made at the HTTP level through
//! the `Channel` (`http::Request<tonic::body::Body>`), against an HTTP/2
//! server of this file's own (hyper, prior knowledge, like a gRPC server).
//!
//! Needs the `tonic` feature (the replay of `tonic::body::Body`), as its
//! `required-features` in Cargo.toml say.

mod bounded;
mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{TokenServer, eventually, source};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::{ServiceBuilder, ServiceExt};
use tower_token::{TokenLayer, TokenService};

/// The path of the client-streaming method of [`UploadServer`].
const PUT: &str = "/test.Upload/Put";

/// The replay limit the layer uses by default.
const DEFAULT_LIMIT: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The layer under test: the defaults (retries on, 64 KiB replay limit).
fn layer(tokens: &TokenServer) -> TokenLayer {
    TokenLayer::builder(source(tokens)).build().unwrap()
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The bearer token in `headers`, if any.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------
// gRPC messages and streamed request bodies
// ---------------------------------------------------------------------------

/// One gRPC message on the wire: uncompressed flag, big-endian length, the
/// payload.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(payload.len()).unwrap());
    buf.put_slice(payload);
    buf.freeze()
}

/// `count` gRPC messages of `size` payload bytes each, one data frame each,
/// with contents that differ from message to message and from seed to seed.
fn messages(count: usize, size: usize, seed: u8) -> Vec<Bytes> {
    (0..count)
        .map(|m| {
            let payload: Vec<u8> = (0..size)
                .map(|i| {
                    let x = (i as u32)
                        .wrapping_add((m as u32) << 20)
                        .wrapping_mul(2_654_435_761);
                    (x >> 24) as u8 ^ seed
                })
                .collect();
            grpc_message(&payload)
        })
        .collect()
}

fn concat(frames: &[Bytes]) -> Bytes {
    frames.concat().into()
}

/// A `tonic::body::Body` streaming `frames`: its size is not known up front,
/// so the layer records it while it is sent.
fn streamed(frames: Vec<Bytes>) -> tonic::body::Body {
    let stream = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<_, Infallible>(Frame::data(f))),
    );
    tonic::body::Body::new(StreamBody::new(stream))
}

/// A client-streaming call to [`PUT`], named `name` for the server's record.
fn put(name: &str, body: tonic::body::Body) -> Request<tonic::body::Body> {
    Request::post(PUT)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header("x-call", name)
        .body(body)
        .unwrap()
}

/// A gRPC answer as the caller read it.
#[derive(Debug)]
struct Answer {
    http: StatusCode,
    /// `grpc-status` in the response headers (a trailers-only answer).
    in_headers: Option<String>,
    /// `grpc-status` in the trailers (a streamed answer).
    in_trailers: Option<String>,
    data: Bytes,
}

impl Answer {
    /// The call's gRPC status, wherever the answer carried it.
    fn grpc_status(&self) -> Option<&str> {
        self.in_headers.as_deref().or(self.in_trailers.as_deref())
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
}

type Client = TokenService<Channel>;

/// Sends `req` through `client` and reads the whole answer, trailers too.
async fn call(client: &Client, req: Request<tonic::body::Body>) -> Answer {
    let response = client.clone().oneshot(req).await.unwrap();
    let http = response.status();
    let in_headers = grpc_status(response.headers());
    let collected = response.into_body().collect().await.unwrap();
    let in_trailers = collected.trailers().and_then(grpc_status);
    Answer {
        http,
        in_headers,
        in_trailers,
        data: collected.to_bytes(),
    }
}

// ---------------------------------------------------------------------------
// An HTTP/2 server for client-streaming calls
// ---------------------------------------------------------------------------

/// One call the upload server received.
#[derive(Clone, Debug)]
struct Call {
    /// The `x-call` header.
    name: String,
    token: Option<String>,
    /// The whole request body; `None` when the server answered without
    /// reading it (or reading it failed).
    body: Option<Bytes>,
}

/// Makes the server answer an unread rejection at a set point: it waits for
/// `wait`, and signals `then` once it has answered.
#[derive(Clone)]
struct Hold {
    wait: Arc<Notify>,
    then: Arc<Notify>,
}

/// How the upload server answers, by the call's bearer token.
#[derive(Default)]
struct Behaviour {
    /// Read the whole body, then answer trailers-only `grpc-status: 16`.
    revoked: HashSet<String>,
    /// Read the whole body, then stream one message and trailers
    /// `grpc-status: 16`.
    revoked_in_trailers: HashSet<String>,
    /// Answer trailers-only `grpc-status: 16` at once, without reading the
    /// body (the body is dropped unread).
    revoked_unread: HashSet<String>,
    hold_unread: Option<Hold>,
}

#[derive(Default)]
struct UploadState {
    behaviour: Mutex<Behaviour>,
    calls: Mutex<Vec<Call>>,
}

/// An HTTP/2 (prior knowledge) server on loopback answering every request
/// as a gRPC call; anything not rejected gets a streamed answer: one
/// message (`ok`), then trailers `grpc-status: 0`.
struct UploadServer {
    addr: SocketAddr,
    state: Arc<UploadState>,
}

type ResBody = BoxBody<Bytes, Infallible>;

impl UploadServer {
    async fn start() -> Self {
        let state = Arc::new(UploadState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                let svc = hyper::service::service_fn(move |req| answer(Arc::clone(&state), req));
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut lock(&self.state.behaviour));
    }

    fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }

    /// The calls named `name`, in order.
    fn named(&self, name: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.name == name)
            .collect()
    }
}

async fn answer(
    state: Arc<UploadState>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let name = req
        .headers()
        .get("x-call")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let token = bearer(req.headers());
    let has = |set: &HashSet<String>| token.as_ref().is_some_and(|t| set.contains(t));
    let (unread, hold, revoked, in_trailers) = {
        let b = lock(&state.behaviour);
        (
            has(&b.revoked_unread),
            b.hold_unread.clone(),
            has(&b.revoked),
            has(&b.revoked_in_trailers),
        )
    };

    if unread {
        if let Some(hold) = &hold {
            hold.wait.notified().await;
        }
        drop(req);
        lock(&state.calls).push(Call {
            name,
            token,
            body: None,
        });
        if let Some(hold) = &hold {
            hold.then.notify_one();
        }
        return Ok(trailers_only("16"));
    }

    let body = req.into_body().collect().await.ok().map(|c| c.to_bytes());
    lock(&state.calls).push(Call { name, token, body });
    Ok(if revoked {
        trailers_only("16")
    } else if in_trailers {
        streamed_answer("16")
    } else {
        streamed_answer("0")
    })
}

fn grpc_response(body: ResBody) -> Response<ResBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(body)
        .unwrap()
}

/// A trailers-only gRPC answer: the status in the headers, no body.
fn trailers_only(status: &'static str) -> Response<ResBody> {
    let mut response = grpc_response(Empty::new().boxed());
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from_static(status));
    headers.insert("grpc-message", HeaderValue::from_static("token%20rejected"));
    response
}

/// A streamed gRPC answer: headers without a status, one message, then the
/// status in the trailers.
fn streamed_answer(status: &'static str) -> Response<ResBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    let frames = vec![
        Ok(Frame::data(grpc_message(b"ok"))),
        Ok(Frame::trailers(trailers)),
    ];
    grpc_response(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))))
}

// ---------------------------------------------------------------------------
// 1. A unary call, answered UNAUTHENTICATED by a tonic server
// ---------------------------------------------------------------------------

/// A tonic-health server whose interceptor answers `UNAUTHENTICATED` to
/// every call carrying the first token it sees, and records every call's
/// token.
struct HealthServerUnderTest {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl HealthServerUnderTest {
    async fn start() -> Self {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status("orders", tonic_health::ServingStatus::Serving)
            .await;
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let first: Arc<Mutex<Option<String>>> = Arc::default();
        let interceptor = {
            let seen = Arc::clone(&seen);
            move |req: tonic::Request<()>| {
                let token = req
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                lock(&seen).push(token.clone());
                let mut first = lock(&first);
                if first.is_none() {
                    first.clone_from(&token);
                }
                if token.is_some() && *first == token {
                    Err(tonic::Status::unauthenticated("token rejected"))
                } else {
                    Ok(req)
                }
            }
        };
        let svc = HealthServer::with_interceptor(
            HealthService::from_health_reporter(reporter),
            interceptor,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(Server::builder().serve_with_incoming(svc, TcpIncoming::from(listener)));
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Option<String>> {
        lock(&self.seen).clone()
    }
}

#[tokio::test]
async fn unary_call_answered_unauthenticated_is_replayed_with_a_fresh_token() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let grpc = HealthServerUnderTest::start().await;
    let layer = layer(&tokens);
    let channel = ServiceBuilder::new()
        .layer(layer.clone())
        .service(channel(grpc.addr).await);
    let mut client = HealthClient::new(channel);

    let answer = client
        .check(HealthCheckRequest {
            service: "orders".to_owned(),
        })
        .await
        .expect("the replay's answer, not the rejection")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    assert_eq!(
        grpc.seen(),
        vec![Some("tok-1".to_owned()), Some("tok-2".to_owned())],
        "the call went twice: rejected with tok-1, accepted with tok-2"
    );
    assert_eq!(tokens.hits(), 2);
    let stats = layer.stats();
    assert_eq!(stats.unauthorized_refreshes, 1);
    assert_eq!(stats.tokens_rejected, 1);
}

// ---------------------------------------------------------------------------
// 2. Client-streaming calls, over and under the replay limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn client_stream_over_the_limit_gets_the_rejection_back_unreplayed() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let server = UploadServer::start().await;
    let layer = layer(&tokens);
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(channel(server.addr).await);

    // A first call goes through with tok-1.
    let small = messages(2, 100, 1);
    let answer = call(&client, put("first", streamed(small.clone()))).await;
    assert_eq!(answer.grpc_status(), Some("0"), "{answer:?}");
    assert_eq!(server.named("first")[0].token.as_deref(), Some("tok-1"));

    // tok-1 is revoked. A 200 KiB stream (25 frames): the server reads it
    // whole, then answers UNAUTHENTICATED. The sent part outgrew the limit,
    // so the caller gets the rejection back.
    server.set(|b| {
        b.revoked.insert("tok-1".to_owned());
    });
    let big = messages(25, 8192, 2);
    let big_bytes = concat(&big);
    assert!(big_bytes.len() >= 200 * 1024);
    assert!(big_bytes.len() > DEFAULT_LIMIT);
    let answer = call(&client, put("big", streamed(big))).await;
    assert_eq!(answer.http, StatusCode::OK);
    assert_eq!(
        answer.in_headers.as_deref(),
        Some("16"),
        "the rejection itself reaches the caller: {answer:?}"
    );
    assert!(answer.data.is_empty());

    // The server saw that call once, with all its bytes: nothing truncated
    // was sent again.
    let bigs = server.named("big");
    assert_eq!(bigs.len(), 1, "not replayed: {} calls", bigs.len());
    assert_eq!(bigs[0].token.as_deref(), Some("tok-1"));
    assert_eq!(bigs[0].body.as_ref().map(Bytes::len), Some(big_bytes.len()));
    assert_eq!(bigs[0].body.as_ref(), Some(&big_bytes));

    // The rejected token is gone: the next call carries tok-2.
    let answer = call(&client, put("next", streamed(small.clone()))).await;
    assert_eq!(answer.grpc_status(), Some("0"), "{answer:?}");
    let next = server.named("next");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].token.as_deref(), Some("tok-2"));
    assert_eq!(next[0].body.as_ref(), Some(&concat(&small)));
    assert_eq!(server.calls().len(), 3);
    assert_eq!(tokens.hits(), 2);
    assert_eq!(layer.stats().tokens_rejected, 1);
}

#[tokio::test]
async fn client_stream_under_the_limit_is_replayed_byte_for_byte() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let server = UploadServer::start().await;
    let layer = layer(&tokens);
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(channel(server.addr).await);

    let answer = call(&client, put("first", streamed(messages(2, 100, 3)))).await;
    assert_eq!(answer.grpc_status(), Some("0"), "{answer:?}");

    // tok-1 is revoked. A 16 KiB stream in 4 frames, read whole by the
    // server and answered UNAUTHENTICATED, goes again with tok-2.
    server.set(|b| {
        b.revoked.insert("tok-1".to_owned());
    });
    let upload = messages(4, 4096, 4);
    let upload_bytes = concat(&upload);
    assert!(upload_bytes.len() >= 16 * 1024 && upload_bytes.len() < DEFAULT_LIMIT);
    let answer = call(&client, put("upload", streamed(upload))).await;
    assert_eq!(answer.http, StatusCode::OK);
    assert_eq!(answer.in_headers, None, "not the rejection: {answer:?}");
    assert_eq!(answer.in_trailers.as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.data, grpc_message(b"ok"));

    let uploads = server.named("upload");
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[0].token.as_deref(), Some("tok-1"));
    assert_eq!(uploads[1].token.as_deref(), Some("tok-2"));
    assert_eq!(uploads[0].body.as_ref(), Some(&upload_bytes));
    assert_eq!(
        uploads[1].body, uploads[0].body,
        "the replay carries the same bytes"
    );
    assert_eq!(tokens.hits(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
}

// ---------------------------------------------------------------------------
// 3. UNAUTHENTICATED in the trailers of a streamed answer
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unauthenticated_in_trailers_drops_the_token() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let server = UploadServer::start().await;
    server.set(|b| {
        b.revoked_in_trailers.insert("tok-1".to_owned());
    });
    let layer = layer(&tokens);
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(channel(server.addr).await);

    // The answer streams: headers without a status, a message, then
    // trailers with grpc-status 16. Its call is not sent again, but reading
    // the trailers drops the token.
    let answer = call(&client, put("streamed", streamed(messages(1, 100, 5)))).await;
    assert_eq!(answer.http, StatusCode::OK);
    assert_eq!(answer.in_headers, None);
    assert_eq!(answer.in_trailers.as_deref(), Some("16"), "{answer:?}");
    assert_eq!(answer.data, grpc_message(b"ok"));
    assert_eq!(server.named("streamed").len(), 1);
    assert_eq!(layer.stats().tokens_rejected, 1);

    let answer = call(&client, put("next", streamed(messages(1, 100, 6)))).await;
    assert_eq!(answer.grpc_status(), Some("0"), "{answer:?}");
    let tokens_seen: Vec<_> = server.calls().into_iter().map(|c| c.token).collect();
    assert_eq!(
        tokens_seen,
        vec![Some("tok-1".to_owned()), Some("tok-2".to_owned())]
    );
    eventually("2 token requests", || tokens.hits() == 2).await;
    assert_eq!(tokens.hits(), 2);
}

#[tokio::test]
async fn ok_in_trailers_keeps_the_token() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let server = UploadServer::start().await;
    let layer = layer(&tokens);
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(channel(server.addr).await);

    for name in ["one", "two", "three"] {
        let answer = call(&client, put(name, streamed(messages(1, 100, 7)))).await;
        assert_eq!(answer.in_headers, None);
        assert_eq!(answer.in_trailers.as_deref(), Some("0"), "{answer:?}");
    }
    let tokens_seen: Vec<_> = server.calls().into_iter().map(|c| c.token).collect();
    assert_eq!(tokens_seen, vec![Some("tok-1".to_owned()); 3]);
    assert_eq!(tokens.hits(), 1);
    assert_eq!(layer.stats().tokens_rejected, 0);
}

// ---------------------------------------------------------------------------
// 4. A stream answered before it ends
// ---------------------------------------------------------------------------

/// A body that yields `frames` one by one; after the first one is taken it
/// signals `taken` and waits for `resume` before going on, then pauses
/// ~100 ms before each further frame: it is still being produced when the
/// server answers.
fn paused_stream(frames: Vec<Bytes>, taken: Arc<Notify>, resume: Arc<Notify>) -> tonic::body::Body {
    let stream = futures_util::stream::unfold(0usize, move |next| {
        let frames = frames.clone();
        let taken = Arc::clone(&taken);
        let resume = Arc::clone(&resume);
        async move {
            let frame = frames.get(next)?.clone();
            if next == 1 {
                // Asked for the second frame: the first has been sent.
                taken.notify_one();
                resume.notified().await;
            }
            if next > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(frame)), next + 1))
        }
    });
    tonic::body::Body::new(StreamBody::new(stream))
}

#[tokio::test]
async fn stream_answered_unauthenticated_before_it_ends_is_replayed_whole() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let server = UploadServer::start().await;
    let taken = Arc::new(Notify::new());
    let answered = Arc::new(Notify::new());
    // tok-1 is answered UNAUTHENTICATED at once, the body unread, once the
    // first frame was sent and while the rest is still to come.
    server.set(|b| {
        b.revoked_unread.insert("tok-1".to_owned());
        b.hold_unread = Some(Hold {
            wait: Arc::clone(&taken),
            then: Arc::clone(&answered),
        });
    });
    let layer = layer(&tokens);
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(channel(server.addr).await);

    let frames = messages(3, 1000, 8);
    let all = concat(&frames);
    assert!(all.len() < DEFAULT_LIMIT);
    let body = paused_stream(frames, taken, answered);
    let answer = call(&client, put("bidi", body)).await;
    assert_eq!(answer.http, StatusCode::OK);
    assert_eq!(answer.in_headers, None, "not the rejection: {answer:?}");
    assert_eq!(answer.in_trailers.as_deref(), Some("0"), "{answer:?}");

    let calls = server.named("bidi");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].token.as_deref(), Some("tok-1"));
    assert_eq!(calls[0].body, None, "the rejection came before any read");
    assert_eq!(calls[1].token.as_deref(), Some("tok-2"));
    let replayed = calls[1].body.clone().expect("the replay's body was read");
    assert_eq!(
        replayed.len(),
        all.len(),
        "the replay carries the part sent before the answer and the rest"
    );
    assert_eq!(replayed, all, "byte for byte");
    assert_eq!(tokens.hits(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
}
