//! The reqwest-middleware face (R23): the same cache as the layer behind a
//! `ClientWithMiddleware`, against real servers on loopback.

mod bounded;
mod common;

use bytes::Bytes;
use common::{ApiServer, SUSPENDED_SECS, TokenServer, source, wall_after_suspend};
use http::StatusCode;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tower_token::TokenLayer;
use tower_token::middleware::TokenMiddleware;

fn client(layer: &TokenLayer) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(TokenMiddleware::new(layer))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_cause_one_token_request() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    tokens.set(|b| b.delay = Duration::from_millis(50));
    let layer = TokenLayer::new(source(&tokens));
    let client = client(&layer);
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let request = client.get(api.url(&format!("/orders/{i}")));
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(tokens.hits(), 1);
    assert_eq!(api.count(), 1000);
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
    assert_eq!(layer.stats().tokens_fetched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_at_expiry() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    tokens.set(|b| b.expires_in = Some(serde_json::json!(4)));
    let layer = TokenLayer::builder(source(&tokens))
        .refresh_ahead(0.0)
        .build()
        .unwrap();
    let client = client(&layer);
    client.get(api.url("/a")).send().await.unwrap();
    client.get(api.url("/b")).send().await.unwrap();
    // A 4 s token is used for 2 s (the leeway is capped at half of it).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    client.get(api.url("/c")).send().await.unwrap();
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["tok-1", "tok-1", "tok-2"]);
}

/// R17 through the middleware: after a suspend longer than the token's
/// lifetime, the token is not sent, though the monotonic clock says it is
/// young; the request waits for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_longer_than_the_lifetime_does_not_send_the_expired_token() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let layer = TokenLayer::builder(source(&tokens))
        .wall_clock(wall_after_suspend)
        .build()
        .unwrap();
    let client = client(&layer);
    client.get(api.url("/before")).send().await.unwrap();
    client.get(api.url("/still")).send().await.unwrap();
    // Two hours pass while suspended (the token lives one).
    SUSPENDED_SECS.store(2 * 3600, Ordering::SeqCst);
    client.get(api.url("/after")).send().await.unwrap();
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(
        seen,
        ["tok-1", "tok-1", "tok-2"],
        "the expired token is not sent"
    );
    assert_eq!(tokens.hits(), 2);
}

/// A token in its refresh-ahead window is still sent while one background
/// request fetches its successor, which the requests after it carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_fetches_in_the_background_while_requests_go_on() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    // Every token is in its refresh-ahead window as soon as it arrives.
    let layer = TokenLayer::builder(source(&tokens))
        .refresh_ahead(1.0)
        .build()
        .unwrap();
    let client = client(&layer);
    client.get(api.url("/warm")).send().await.unwrap();
    // Hold every further token request at the server.
    tokens.close_gate();
    for _ in 0..20 {
        let response = client.get(api.url("/during")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    tokens.wait_hits(2).await;
    assert_eq!(
        tokens.hits(),
        2,
        "one background refresh, not one per request"
    );
    assert_eq!(tokens.completed(), 1, "the refresh is still held");
    tokens.release(1);
    common::eventually("the refreshed token", || layer.stats().tokens_fetched == 2).await;
    client.get(api.url("/after")).send().await.unwrap();
    let seen: Vec<_> = api
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.token().unwrap().to_owned()))
        .collect();
    assert!(seen[..21].iter().all(|(_, t)| t == "tok-1"), "{seen:?}");
    assert_eq!(seen[21], ("/after".to_owned(), "tok-2".to_owned()));
    tokens.open_gate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_and_replays_a_json_post_with_the_same_bytes() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let client = client(&layer);
    client.get(api.url("/warm")).send().await.unwrap();
    api.reject("tok-1");

    let body = r#"{"item":42,"note":"same bytes"}"#;
    let response = client
        .post(api.url("/orders"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok");
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/orders")
        .collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].token(), Some("tok-1"));
    assert_eq!(posts[1].token(), Some("tok-2"));
    assert!(posts.iter().all(|p| p.body == body.as_bytes()));
    assert!(
        posts
            .iter()
            .all(|p| p.headers["content-type"] == "application/json")
    );
    assert_eq!(tokens.hits(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
}

/// An API that rejects every token: the request is sent twice (the second
/// time with a fresh token) and the caller gets the second 401; the fresh
/// token is dropped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_401_goes_back_to_the_caller() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let client = client(&layer);
    client.get(api.url("/warm")).send().await.unwrap();
    api.set(|b| b.reject_all = true);

    let response = client.get(api.url("/orders")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let seen: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/orders")
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["tok-1", "tok-2"]);
    assert_eq!(tokens.hits(), 2);
    assert!(layer.cache().current().is_none(), "tok-2 was dropped too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_get_the_token() {
    bounded::watchdog!();
    let (tokens, api, other) = (
        TokenServer::start().await,
        ApiServer::start().await,
        ApiServer::start().await,
    );
    let layer = TokenLayer::builder(source(&tokens))
        .allow_origin(&api.url(""))
        .build()
        .unwrap();
    let client = client(&layer);
    client.get(api.url("/mine")).send().await.unwrap();
    client.get(other.url("/theirs")).send().await.unwrap();
    assert_eq!(api.requests()[0].token(), Some("tok-1"));
    assert_eq!(other.requests()[0].authorization, None);
    assert_eq!(tokens.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_gets_the_401_back() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let limit = 4 * 1024;
    let layer = TokenLayer::builder(source(&tokens))
        .replay_limit(limit)
        .build()
        .unwrap();
    let client = client(&layer);
    client.get(api.url("/warm")).send().await.unwrap();
    api.reject("tok-1");

    let stream = |len: usize| {
        let chunks: Vec<Result<Bytes, Infallible>> = (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .chunks(512)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let response = client
        .put(api.url("/big"))
        .body(stream(limit + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let bigs: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/big")
        .collect();
    assert_eq!(bigs.len(), 1, "not replayed");
    assert_eq!(bigs[0].body.len(), limit + 1, "sent whole, once");

    // Under the limit, a streamed body is recorded and replayed whole. (A
    // request accepted first: two rejections in a row would back off.)
    client.get(api.url("/fine")).send().await.unwrap();
    api.reject("tok-2");
    let response = client
        .put(api.url("/small"))
        .body(stream(limit))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let smalls: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/small")
        .collect();
    assert_eq!(smalls.len(), 2);
    assert_eq!(smalls[0].token(), Some("tok-2"));
    assert_eq!(smalls[1].token(), Some("tok-3"));
    assert_eq!(smalls[0].body, smalls[1].body);
    assert_eq!(smalls[1].body.len(), limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_and_the_middleware_share_one_cache() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let layer = TokenLayer::new(source(&tokens));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(layer.middleware())
        .build();
    client.get(api.url("/a")).send().await.unwrap();
    let svc = tower::Layer::layer(
        &layer,
        common::http_client::<http_body_util::Empty<Bytes>>(),
    );
    common::send(
        &svc,
        http::Request::get(api.url("/b"))
            .body(http_body_util::Empty::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(tokens.hits(), 1);
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
}
