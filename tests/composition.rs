//! `TokenService` composes like any tower middleware (R16): it is
//! `Clone + Send + Sync` when its inner service is, `poll_ready` is the inner
//! service's, it works under and over `Timeout`, `ConcurrencyLimit` and
//! `Buffer` with 1,000 concurrent calls, under tower's `Retry` (whose policy
//! sees a 401 only when the layer could not handle it), and with tower-http
//! layers.

mod bounded;
mod common;

use bytes::Bytes;
use common::{ApiServer, TokenServer, http_client, send, source};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Empty, Full};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tower::retry::{Policy, RetryLayer};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_token::adapter::ReqwestService;
use tower_token::{Token, TokenLayer, TokenService, source as token_source};

// ---------------------------------------------------------------------------
// Auto traits
// ---------------------------------------------------------------------------

fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
fn assert_send<T: Send + 'static>() {}

/// For every inner service that is `Clone + Send + Sync`, so is the
/// `TokenService` around it (this compiles only if that holds generically).
fn token_service_of<S: Clone + Send + Sync + 'static>() {
    assert_clone_send_sync::<TokenService<S>>();
}

/// The response future is `Send` whenever the inner one is, so a
/// `TokenService` can be called from spawned tasks and axum handlers.
fn future_of<S, B>()
where
    S: Service<Request<B>, Response = Response<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: tower_token::replay::ReplayBody + Send + 'static,
{
    assert_send::<<TokenService<S> as Service<Request<B>>>::Future>();
}

#[test]
fn token_service_is_clone_send_sync_when_inner_is() {
    token_service_of::<common::HttpClient<Full<Bytes>>>();
    token_service_of::<ReqwestService>();
    token_service_of::<tonic::transport::Channel>();
    token_service_of::<
        tower::buffer::Buffer<
            Request<Empty<Bytes>>,
            <Gate as Service<Request<Empty<Bytes>>>>::Future,
        >,
    >();
    assert_clone_send_sync::<TokenLayer>();
    assert_send::<
        <TokenService<common::HttpClient<Full<Bytes>>> as Service<Request<Full<Bytes>>>>::Future,
    >();
    assert_send::<
        <TokenService<tonic::transport::Channel> as Service<Request<tonic::body::Body>>>::Future,
    >();
    future_of::<Gate, Empty<Bytes>>();
}

// ---------------------------------------------------------------------------
// poll_ready delegates
// ---------------------------------------------------------------------------

/// An inner service whose readiness the test controls.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

impl Service<Request<Empty<Bytes>>> for Gate {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err("inner service broken".into()));
        }
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn call(&mut self, req: Request<Empty<Bytes>>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut res = Response::new(());
        if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
            res.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        std::future::ready(Ok(res))
    }
}

fn static_token_layer(fetches: Arc<AtomicUsize>) -> TokenLayer {
    TokenLayer::new(token_source::from_fn(move |_| {
        let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, std::io::Error>(
                Token::new(format!("t-{n}")).with_expires_in(Duration::from_secs(3600)),
            )
        }
    }))
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    bounded::watchdog!();
    let fetches = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let mut svc = static_token_layer(fetches.clone()).layer(gate.clone());

    // Not ready inside, not ready outside; the inner service got the waker.
    let first = poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await;
    assert!(first.is_pending());
    assert_eq!(gate.polls.load(Ordering::SeqCst), 1);
    assert!(gate.waker.lock().unwrap().is_some());
    // Readiness does not fetch a token: only calls do.
    assert_eq!(fetches.load(Ordering::SeqCst), 0);

    // Opening the gate wakes the task waiting on the outer service.
    let waiting = tokio::spawn({
        let mut svc = svc.clone();
        async move {
            svc.ready().await.unwrap();
            svc.call(Request::new(Empty::new())).await.unwrap()
        }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    gate.open();
    let res = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken when the inner service became ready")
        .unwrap();
    assert_eq!(res.headers()[header::AUTHORIZATION], "Bearer t-1");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);

    // Ready now, on this handle too.
    let ready = poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await;
    assert!(matches!(ready, Poll::Ready(Ok(()))));

    // An inner readiness error is the outer one.
    gate.broken.store(true, Ordering::SeqCst);
    let err = svc.ready().await.unwrap_err();
    assert_eq!(err.to_string(), "inner service broken");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Under and over Timeout, ConcurrencyLimit, Buffer: 1,000 concurrent calls
// ---------------------------------------------------------------------------

const CALLS: usize = 1000;

/// Sends `CALLS` POSTs with distinct bodies at once through clones of `svc`
/// and returns each answer's status.
async fn hammer<S, R>(svc: S, url: String) -> Vec<StatusCode>
where
    R: Send + 'static,
    S: Service<Request<Full<Bytes>>, Response = Response<R>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut tasks = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let svc = svc.clone();
        let req = Request::post(&url)
            .body(Full::new(Bytes::from(format!("call {i}"))))
            .unwrap();
        tasks.push(tokio::spawn(svc.oneshot(req)));
    }
    let mut statuses = Vec::with_capacity(CALLS);
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap().status());
    }
    statuses
}

/// The servers for one run: the API rejects the first token, so the first
/// wave of calls is answered 401 and replayed with the second.
async fn servers() -> (TokenServer, ApiServer) {
    let tokens = TokenServer::start().await;
    let api = ApiServer::start().await;
    api.reject("tok-1");
    (tokens, api)
}

fn check_run(statuses: &[StatusCode], tokens: &TokenServer, api: &ApiServer, layer: &TokenLayer) {
    assert_eq!(statuses.len(), CALLS);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // One fetch before the 401s, one after, however many calls saw a 401.
    assert_eq!(tokens.hits(), 2);
    let stats = layer.stats();
    assert_eq!(stats.tokens_fetched, 2);
    assert_eq!(stats.unauthorized_refreshes, 1);
    // Every call reached the API with the second token, with its own body.
    let requests = api.requests();
    let mut ok_bodies: Vec<_> = requests
        .iter()
        .filter(|r| r.token() == Some("tok-2"))
        .map(|r| r.body.clone())
        .collect();
    ok_bodies.sort();
    let mut expected: Vec<_> = (0..CALLS)
        .map(|i| Bytes::from(format!("call {i}")))
        .collect();
    expected.sort();
    assert_eq!(ok_bodies, expected);
    // The rest were the rejected first attempts with the first token.
    assert!(
        requests
            .iter()
            .all(|r| matches!(r.token(), Some("tok-1" | "tok-2")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_over_timeout_concurrency_limit_buffer() {
    bounded::watchdog!();
    let (tokens, api) = servers().await;
    let layer = TokenLayer::new(source(&tokens));
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .timeout(Duration::from_secs(30))
        .concurrency_limit(32)
        .buffer(CALLS)
        .service(http_client::<Full<Bytes>>());
    let statuses = hammer(svc, api.url("/orders")).await;
    check_run(&statuses, &tokens, &api, &layer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_concurrency_limit_timeout_over_token() {
    bounded::watchdog!();
    let (tokens, api) = servers().await;
    let layer = TokenLayer::new(source(&tokens));
    let svc = ServiceBuilder::new()
        .buffer(CALLS)
        .concurrency_limit(32)
        .timeout(Duration::from_secs(30))
        .layer(layer.clone())
        .service(http_client::<Full<Bytes>>());
    let statuses = hammer(svc, api.url("/orders")).await;
    check_run(&statuses, &tokens, &api, &layer);
}

// ---------------------------------------------------------------------------
// tower's Retry around TokenLayer
// ---------------------------------------------------------------------------

/// Retries 401 answers up to `budget` times, and counts how often it was
/// asked.
#[derive(Clone)]
struct RetryUnauthorized {
    budget: usize,
    consulted: Arc<AtomicUsize>,
}

impl RetryUnauthorized {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            consulted: Arc::default(),
        }
    }

    fn consulted(&self) -> usize {
        self.consulted.load(Ordering::SeqCst)
    }
}

impl<R, E> Policy<Request<Full<Bytes>>, Response<R>, E> for RetryUnauthorized {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<Self::Future> {
        self.consulted.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(res) if res.status() == StatusCode::UNAUTHORIZED && self.budget > 0 => {
                self.budget -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// Runs one POST through `Retry(policy) → TokenLayer → hyper-util client`.
async fn through_retry(
    policy: RetryUnauthorized,
    tokens: &TokenServer,
    api: &ApiServer,
) -> StatusCode {
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(TokenLayer::new(source(tokens)))
        .service(http_client::<Full<Bytes>>());
    let req = Request::post(api.url("/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    send(&svc, req).await.unwrap().0
}

#[tokio::test]
async fn outer_retry_policy_does_not_see_a_401_the_layer_handled() {
    bounded::watchdog!();
    // Even a policy that would retry a 401 never sees this one: the layer
    // replayed the request with a fresh token and got a 200.
    let (tokens, api) = servers().await;
    let policy = RetryUnauthorized::new(3);
    let status = through_retry(policy.clone(), &tokens, &api).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policy.consulted(), 1);
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| r.token().map(str::to_owned))
        .collect();
    assert_eq!(seen, vec![Some("tok-1".into()), Some("tok-2".into())]);
}

#[tokio::test]
async fn outer_retry_policy_that_does_not_retry_401_sends_nothing_more() {
    bounded::watchdog!();
    // The API rejects every token: the layer retries once, the caller gets
    // the 401, and a policy that does not retry 401s adds no request.
    let (tokens, api) = servers().await;
    api.set(|b| b.reject_all = true);
    let policy = RetryUnauthorized::new(0);
    let status = through_retry(policy.clone(), &tokens, &api).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(policy.consulted(), 1);
    assert_eq!(
        api.count(),
        2,
        "the first attempt and the layer's one retry"
    );
}

#[tokio::test]
async fn outer_retry_policy_that_retries_401_gets_what_it_asked_for() {
    bounded::watchdog!();
    // A policy that retries a 401 once. The layer's own attempt and retry
    // both got a 401: the API rejected two tokens in a row, so the cache
    // backs off, and the policy's second attempt fails at once with
    // `TokenRejected` instead of fetching a third token for an API that
    // rejects them all.
    let (tokens, api) = servers().await;
    api.set(|b| b.reject_all = true);
    let policy = RetryUnauthorized::new(1);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .layer(TokenLayer::new(source(&tokens)))
        .service(http_client::<Full<Bytes>>());
    let req = Request::post(api.url("/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = send(&svc, req).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<tower_token::Error>(),
            Some(tower_token::Error::TokenRejected { consecutive: 2 })
        ),
        "{err}"
    );
    assert_eq!(policy.consulted(), 2);
    assert_eq!(api.count(), 2);
    assert_eq!(tokens.hits(), 2);
    assert!(api.requests().iter().all(|r| r.body == "{}"));
}

// ---------------------------------------------------------------------------
// tower-http layers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn works_with_tower_http_layers_on_either_side() {
    bounded::watchdog!();
    let (tokens, api) = servers().await;
    let layer = TokenLayer::new(source(&tokens));
    let svc = ServiceBuilder::new()
        .layer(SetRequestHeaderLayer::overriding(
            header::USER_AGENT,
            HeaderValue::from_static("composition-test"),
        ))
        .layer(layer.clone())
        .layer(SetRequestHeaderLayer::if_not_present(
            http::HeaderName::from_static("x-request-source"),
            HeaderValue::from_static("inner"),
        ))
        .service(http_client::<Full<Bytes>>());
    let req = Request::post(api.url("/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (status, _) = send(&svc, req).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // Both attempts (401 with tok-1, then tok-2) went through both layers.
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    for (request, token) in requests.iter().zip(["tok-1", "tok-2"]) {
        assert_eq!(request.token(), Some(token));
        assert_eq!(request.headers[header::USER_AGENT], "composition-test");
        assert_eq!(request.headers["x-request-source"], "inner");
    }

    // A tower-http layer outside that sets `Authorization` wins: the token
    // layer leaves a request that already has the header alone.
    let svc = ServiceBuilder::new()
        .layer(SetRequestHeaderLayer::if_not_present(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer static"),
        ))
        .layer(layer.clone())
        .service(http_client::<Full<Bytes>>());
    let (status, _) = send(
        &svc,
        Request::get(api.url("/x")).body(Full::default()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.requests()[2].token(), Some("static"));
    assert_eq!(tokens.hits(), 2);
}
