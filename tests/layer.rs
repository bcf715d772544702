//! The layer over real HTTP: attach, cache, expiry, refresh ahead, single
//! flight, and 401/403 handling (R1–R6).
//!
//! The token endpoint is an in-process axum server reached through
//! `ClientCredentials`; the inner service is hyper-util's legacy client
//! talking to an in-process axum "protected API", except in the 10,000-caller
//! test, where the inner service is a `service_fn` that records the header.

mod bounded;
mod common;

use bytes::Bytes;
use common::{ApiServer, Chunks, TokenBehaviour, TokenServer, eventually, http_client, send};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt};
use tower_token::TokenLayer;

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// R1, R2: one token serves 1,000 requests made through 50 clones of one
/// service, and every request carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_requests_through_clones_use_one_token() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Empty<Bytes>>());

    let mut tasks = JoinSet::new();
    for clone in 0..50 {
        let svc = svc.clone();
        let url = api.url(&format!("/orders/{clone}"));
        tasks.spawn(async move {
            for _ in 0..20 {
                let (status, body) = send(&svc, get(&url)).await.unwrap();
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, "ok");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    assert_eq!(token.hits(), 1, "exactly one token request");
    let issued = token.issued();
    assert_eq!(issued.len(), 1);
    let expected = format!("Bearer {}", issued[0]);
    let seen = api.requests();
    assert_eq!(seen.len(), 1000);
    for request in &seen {
        assert_eq!(request.authorization.as_deref(), Some(expected.as_str()));
    }
    assert_eq!(layer.stats().tokens_fetched, 1);
}

/// R1: a request that already has the header is left alone unless
/// `override_existing` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_header_is_kept_unless_override() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let own = || {
        Request::get(api.url("/x"))
            .header("authorization", "Bearer mine")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    let keep = TokenLayer::new(common::source(&token)).layer(http_client());
    let (status, _) = send(&keep, own()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.requests()[0].token(), Some("mine"));
    assert_eq!(
        token.hits(),
        0,
        "no token needed for a request that has one"
    );

    let layer = TokenLayer::builder(common::source(&token))
        .override_existing(true)
        .build()
        .unwrap();
    let replace = layer.layer(http_client());
    send(&replace, own()).await.unwrap();
    assert_eq!(api.requests()[1].token(), Some("tok-1"));
}

/// R3: with `expires_in: 2` (leeway capped at 1 s), a token serves many
/// requests, is never sent inside its leeway, and after it expires the next
/// request carries a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_token_is_reused_then_replaced_never_sent_in_leeway() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        expires_in: Some(serde_json::json!(2)),
        ..TokenBehaviour::default()
    })
    .await;
    let api = ApiServer::start().await;
    // No refresh ahead: each token is sent right up to the end of its usable
    // period, so a missing leeway would show.
    let layer = TokenLayer::builder(common::source(&token))
        .refresh_ahead(0.0)
        .build()
        .unwrap();
    // Records each request as it leaves the layer (right after the token
    // was attached), before the hyper client sends it.
    let sent: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let record = Arc::clone(&sent);
    let inner = tower::ServiceBuilder::new()
        .map_request(move |req: Request<Empty<Bytes>>| {
            let auth = req.headers()[http::header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            record.lock().unwrap().push((Instant::now(), auth));
            req
        })
        .service(http_client::<Empty<Bytes>>());
    let svc = layer.layer(inner);

    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3200) {
        let (status, _) = send(&svc, get(&api.url("/poll"))).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();

    let fetches = token.requests();
    let issued_at: HashMap<String, (usize, Instant)> = fetches
        .iter()
        .map(|r| (r.issued.clone().unwrap(), (r.number, r.at)))
        .collect();
    let sent = sent.lock().unwrap().clone();
    let seen = api.requests();
    assert!(seen.len() >= 50, "only {} requests", seen.len());
    let on_wire: Vec<_> = seen
        .iter()
        .map(|r| r.authorization.clone().unwrap())
        .collect();
    let attached: Vec<_> = sent.iter().map(|(_, auth)| auth.clone()).collect();
    assert_eq!(on_wire, attached, "the API got what the layer attached");

    // Leeway: min(30 s, 2 s / 2) = 1 s, so each token is usable until 1 s
    // after its fetch started, which is before the token server got the
    // request. Without the leeway it would be sent until 2 s after.
    let margin = Duration::from_millis(400);
    let mut per_token: HashMap<&str, usize> = HashMap::new();
    let mut last_number = 0;
    for (at_send, auth) in &sent {
        let t = auth.strip_prefix("Bearer ").expect("a bearer token");
        let (number, issued) = issued_at[t];
        let age = at_send.duration_since(issued);
        assert!(
            age < Duration::from_secs(1) + margin,
            "{t} sent {age:?} after it was issued (inside its leeway)"
        );
        assert!(number >= last_number, "an older token was sent again");
        last_number = number;
        *per_token.entry(t).or_default() += 1;
    }

    // After expiry the next request carries a new token...
    assert!(
        per_token.len() >= 2,
        "expected the token to be replaced: {per_token:?}"
    );
    // ...and a token serves many requests: one fetch per usable period
    // (1 s each, so at most one more than the whole seconds elapsed), not
    // one per request.
    let bound = elapsed.as_secs() as usize + 1;
    assert!(
        fetches.len() <= bound,
        "{} fetches in {elapsed:?} (at most {bound})",
        fetches.len()
    );
    let last = format!("tok-{last_number}");
    for (t, n) in &per_token {
        if *t != last {
            assert!(*n >= 10, "{t} served only {n} requests");
        }
    }
    assert_eq!(layer.stats().tokens_fetched as usize, fetches.len());
}

/// R4: in the refresh-ahead window one background refresh starts; while its
/// token request is held at the server, requests complete with the current
/// token; once it lands the following requests carry the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_does_not_block_requests() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        delay: Duration::from_millis(300),
        ..TokenBehaviour::default()
    })
    .await;
    let api = ApiServer::start().await;
    // With the window covering the whole lifetime, every token is in its
    // refresh-ahead window as soon as it arrives.
    let layer = TokenLayer::builder(common::source(&token))
        .refresh_ahead(1.0)
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Empty<Bytes>>());

    // The first token (an empty cache waits for it).
    send(&svc, get(&api.url("/warm"))).await.unwrap();
    assert_eq!(token.issued(), ["tok-1"]);

    // Hold every further token request at the server.
    token.close_gate();
    let (status, _) = send(&svc, get(&api.url("/trigger"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    token.wait_hits(2).await;
    let refresh = token.requests()[1].clone();
    assert_eq!(refresh.seq_end, None);

    // 50 concurrent requests while the refresh is pending.
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let svc = svc.clone();
        let url = api.url("/during");
        tasks.spawn(async move { send(&svc, get(&url)).await.unwrap() });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().0, StatusCode::OK);
    }
    // Every one of them was answered while the token request was pending.
    assert_eq!(token.completed(), 1, "the refresh is still pending");
    assert_eq!(token.in_flight(), 1);
    assert_eq!(
        token.hits(),
        2,
        "one background refresh, not one per request"
    );
    assert_eq!(layer.stats().tokens_fetched, 1);
    let during: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/during")
        .collect();
    assert_eq!(during.len(), 50);
    for request in &during {
        assert_eq!(request.token(), Some("tok-1"));
        assert!(request.seq > refresh.seq_start);
    }

    // Let the refresh (only it) through; the next requests carry its token.
    token.release(1);
    eventually("the refreshed token", || layer.stats().tokens_fetched == 2).await;
    let answered = token.requests()[1].seq_end.expect("refresh answered");
    assert!(during.iter().all(|r| r.seq < answered));
    for _ in 0..10 {
        send(&svc, get(&api.url("/after"))).await.unwrap();
    }
    for request in api.requests().iter().filter(|r| r.path == "/after") {
        assert_eq!(request.token(), Some("tok-2"));
    }
    token.open_gate();
}

/// R5: 10,000 callers on an empty cache share one token request; the caller
/// that started it is dropped mid-fetch and the others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_one_fetch_and_starter_cancelled() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    token.close_gate();
    let layer = TokenLayer::new(common::source(&token));

    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: Request<Empty<Bytes>>| {
        let record = Arc::clone(&record);
        async move {
            let auth = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            *record.lock().unwrap().entry(auth).or_default() += 1;
            Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
        }
    });
    let svc = layer.layer(inner);

    // The first caller starts the fetch...
    let starter = tokio::spawn(svc.clone().oneshot(Request::new(Empty::new())));
    token.wait_hits(1).await;

    // ...10,000 more arrive while it is in flight...
    let mut callers = JoinSet::new();
    for _ in 0..10_000 {
        callers.spawn(svc.clone().oneshot(Request::new(Empty::new())));
    }
    // Give them time to park on the fetch (correctness does not depend on
    // it: the fetch cannot finish before the gate opens).
    tokio::time::sleep(Duration::from_millis(200)).await;

    // ...and the starter is dropped before the token arrives.
    starter.abort();
    assert!(starter.await.unwrap_err().is_cancelled());
    assert_eq!(token.completed(), 0);

    token.open_gate();
    let mut served = 0;
    while let Some(done) = callers.join_next().await {
        done.unwrap().unwrap();
        served += 1;
    }
    assert_eq!(served, 10_000);
    assert_eq!(token.hits(), 1, "exactly one token request");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, HashMap::from([("Bearer tok-1".to_owned(), 10_000)]));
    assert_eq!(layer.stats().tokens_fetched, 1);
}

/// Warms the cache with `tok-1` and makes the API reject it.
async fn warm_then_reject<S>(svc: &S, token: &TokenServer, api: &ApiServer)
where
    S: tower::Service<
            Request<Empty<Bytes>>,
            Response = http::Response<tower_token::layer::ResponseBody<hyper::body::Incoming>>,
            Error = tower_token::BoxError,
        > + Clone,
{
    let (status, _) = send(svc, get(&api.url("/warm"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token.issued(), ["tok-1"]);
    api.reject("tok-1");
}

/// R6: a 401 to a request whose body is `Full<Bytes>` causes one refresh and
/// one retry with the new token and the same body bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_full_body_is_retried_with_new_token_and_same_bytes() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Full<Bytes>>());

    let (status, _) = send(
        &svc,
        Request::get(api.url("/warm"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    api.reject("tok-1");

    let payload = Bytes::from_static(br#"{"order":42,"note":"caf\u00e9"}"#);
    let request = Request::post(api.url("/orders"))
        .header("content-type", "application/json")
        .header("x-request-id", "r-7")
        .body(Full::new(payload.clone()))
        .unwrap();
    let (status, body) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::OK, "the caller sees the retry's 200");
    assert_eq!(body, "ok");

    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/orders")
        .collect();
    assert_eq!(posts.len(), 2, "one attempt and one retry");
    assert_eq!(posts[0].token(), Some("tok-1"));
    assert_eq!(posts[1].token(), Some("tok-2"));
    for post in &posts {
        assert_eq!(post.method, http::Method::POST);
        assert_eq!(post.body, payload);
        assert_eq!(post.headers["content-type"], "application/json");
        assert_eq!(post.headers["x-request-id"], "r-7");
    }
    assert_eq!(token.hits(), 2, "one refresh");
    let stats = layer.stats();
    assert_eq!(stats.unauthorized_refreshes, 1);
    assert_eq!(stats.tokens_fetched, 2);
}

/// R6: an empty body (`Empty<Bytes>`) is replayable too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_empty_body_is_retried() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Empty<Bytes>>());
    warm_then_reject(&svc, &token, &api).await;

    let request = Request::delete(api.url("/orders/9"))
        .body(Empty::new())
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let deletes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/orders/9")
        .collect();
    assert_eq!(deletes.len(), 2);
    assert_eq!(deletes[0].token(), Some("tok-1"));
    assert_eq!(deletes[1].token(), Some("tok-2"));
    assert!(deletes.iter().all(|r| r.body.is_empty()));
    assert_eq!(token.hits(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
}

/// R6: a streaming body cannot be replayed: the caller gets the 401, the
/// token is invalidated, and the next request carries the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_streaming_body_returns_401_and_next_request_uses_new_token() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Chunks>());

    let (status, _) = send(
        &svc,
        Request::get(api.url("/warm"))
            .body(Chunks::new(&[]))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    api.reject("tok-1");

    let request = Request::post(api.url("/upload"))
        .body(Chunks::new(&["part one, ", "part two"]))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a stream is not retried");
    let uploads: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/upload")
        .collect();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].token(), Some("tok-1"));
    assert_eq!(uploads[0].body, "part one, part two");
    assert_eq!(layer.stats().unauthorized_refreshes, 1);

    let request = Request::post(api.url("/upload-again"))
        .body(Chunks::new(&["again"]))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let last = api.requests().pop().unwrap();
    assert_eq!(last.path, "/upload-again");
    assert_eq!(last.token(), Some("tok-2"));
    assert_eq!(token.hits(), 2);
}

/// R18: a type-erased body (`BoxBody`) is recorded while it is sent and
/// replayed with the same bytes after a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_boxed_body_is_recorded_and_replayed() {
    bounded::watchdog!();
    type Boxed = http_body_util::combinators::BoxBody<Bytes, Infallible>;
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Boxed>());
    let boxed = |s: &'static str| Full::new(Bytes::from_static(s.as_bytes())).boxed();

    send(
        &svc,
        Request::get(api.url("/warm")).body(boxed("")).unwrap(),
    )
    .await
    .unwrap();
    api.reject("tok-1");
    let (status, _) = send(&svc, Request::put(api.url("/a")).body(boxed("x")).unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.token().map(str::to_owned), r.body.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/warm".to_owned(), Some("tok-1".to_owned()), Bytes::new()),
            ("/a".to_owned(), Some("tok-1".to_owned()), Bytes::from("x")),
            ("/a".to_owned(), Some("tok-2".to_owned()), Bytes::from("x")),
        ]
    );
}

/// R6: 100 concurrent requests answered 401 for the same token cause one
/// refresh; each is retried once with the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_401s_cause_one_refresh() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Empty<Bytes>>());
    warm_then_reject(&svc, &token, &api).await;
    // The API holds its 401s until all 100 requests with tok-1 are in, so
    // every one of them is sent with the old token.
    api.set(|b| b.hold_rejected = Some(Arc::new(Barrier::new(100))));

    let mut tasks = JoinSet::new();
    for i in 0..100 {
        let svc = svc.clone();
        let url = api.url(&format!("/burst/{i}"));
        tasks.spawn(async move { send(&svc, get(&url)).await.unwrap() });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().0, StatusCode::OK);
    }

    assert_eq!(token.hits(), 2, "one refresh for the whole burst");
    let burst: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/burst/"))
        .collect();
    let count = |t: &str| burst.iter().filter(|r| r.token() == Some(t)).count();
    assert_eq!(count("tok-1"), 100);
    assert_eq!(count("tok-2"), 100, "each request retried exactly once");
    assert_eq!(burst.len(), 200);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
}

/// R6: a 401 to the retry is returned, not retried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_retry_is_returned_not_retried() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    api.set(|b| b.reject_all = true);
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Full<Bytes>>());

    let request = Request::post(api.url("/once"))
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let seen = api.requests();
    assert_eq!(seen.len(), 2, "the first attempt and one retry, no more");
    assert_eq!(seen[0].token(), Some("tok-1"));
    assert_eq!(seen[1].token(), Some("tok-2"));
    assert!(seen.iter().all(|r| r.body == "payload"));
    assert_eq!(token.hits(), 2);
}

/// R6: a 403 is not a refresh trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_not_a_refresh_trigger() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Empty<Bytes>>());
    send(&svc, get(&api.url("/warm"))).await.unwrap();

    api.set(|b| b.forbid = true);
    let (status, _) = send(&svc, get(&api.url("/secret"))).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(api.count(), 2, "not retried");
    api.set(|b| b.forbid = false);
    send(&svc, get(&api.url("/after"))).await.unwrap();

    assert_eq!(token.hits(), 1, "no refresh");
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
    assert_eq!(layer.stats().unauthorized_refreshes, 0);
}

/// R6: a 401 with `WWW-Authenticate: Bearer error="insufficient_scope"` is
/// not a refresh trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_scope_is_not_a_refresh_trigger() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(common::source(&token));
    let svc = layer.layer(http_client::<Full<Bytes>>());
    send(
        &svc,
        Request::get(api.url("/warm"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();

    api.set(|b| b.insufficient_scope = true);
    let request = Request::post(api.url("/orders"))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let (status, _) = send(&svc, request).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.count(), 2, "not retried");
    api.set(|b| b.insufficient_scope = false);
    send(
        &svc,
        Request::get(api.url("/after"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();

    assert_eq!(token.hits(), 1, "no refresh");
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
    assert_eq!(layer.stats().unauthorized_refreshes, 0);
}

/// P2: each long-lived clone sends header bytes of its own (cloning them
/// writes no reference count another clone shares), made once, at its
/// second request with a token; a clone used for one request (`svc.clone().oneshot`)
/// sends the copy of the clone it was made from and copies nothing; a new
/// token gives each clone a new copy, and every request carries the
/// current token.
#[tokio::test(flavor = "current_thread")]
async fn clones_send_header_bytes_of_their_own() {
    bounded::watchdog!();
    let fetched = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let layer = TokenLayer::builder(tower_token::source::from_fn({
        let fetched = fetched.clone();
        move |_| {
            let n = fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move {
                Ok::<_, Infallible>(
                    tower_token::Token::new(format!("t-{n}"))
                        .with_expires_in(Duration::from_secs(3600)),
                )
            }
        }
    }))
    .retry_unauthorized(false)
    .build()
    .unwrap();
    // The inner service answers with where the header's bytes are, and
    // what they say.
    let inner = tower::service_fn(|req: Request<Empty<Bytes>>| async move {
        let value = &req.headers()[http::header::AUTHORIZATION];
        let seen = (
            value.as_bytes().as_ptr() as usize,
            value.to_str().unwrap().to_owned(),
        );
        Ok::<_, Infallible>(http::Response::new(seen))
    });
    let svc = layer.layer(inner);
    async fn seen<S>(svc: &mut S) -> (usize, String)
    where
        S: tower::Service<
                Request<Empty<Bytes>>,
                Response = http::Response<tower_token::layer::ResponseBody<(usize, String)>>,
            >,
        S::Error: std::fmt::Debug,
    {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(Empty::new()))
            .await;
        res.unwrap().into_body().into_inner()
    }
    let (mut a, mut b) = (svc.clone(), svc.clone());
    let mut a_seen = Vec::new();
    let mut b_seen = Vec::new();
    for _ in 0..4 {
        a_seen.push(seen(&mut a).await);
        b_seen.push(seen(&mut b).await);
    }
    for (_, value) in a_seen.iter().chain(&b_seen) {
        assert_eq!(value, "Bearer t-1");
    }
    assert_ne!(
        a_seen[3].0, b_seen[3].0,
        "each clone sends bytes of its own"
    );
    assert_eq!(a_seen[2].0, a_seen[3].0, "a clone copies once");
    // One request through a clone of `a`: `a`'s copy, no new one.
    let mut once = a.clone();
    assert_eq!(seen(&mut once).await.0, a_seen[3].0);
    // A new token: each clone takes a copy of it.
    let current = layer.cache().acquire().await.unwrap();
    layer.cache().invalidate_if_current(&current);
    // This request waits for the fetch and sends what it fetched.
    assert_eq!(seen(&mut a).await.1, "Bearer t-2");
    let a_new = seen(&mut a).await;
    let b_new = seen(&mut b).await;
    assert_eq!(a_new.1, "Bearer t-2");
    assert_eq!(b_new.1, "Bearer t-2");
    assert_ne!(a_new.0, b_new.0);
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 2);
}
