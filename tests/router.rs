//! One layer, several tokens (R24): each request goes to the cache of its
//! API, by origin or by a request extension. The token endpoints are real
//! HTTP servers on loopback.

mod bounded;
mod common;

use bytes::Bytes;
use common::{ApiServer, TokenBehaviour, TokenServer, http_client, send, source};
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::convert::Infallible;
use tower::{Layer, ServiceExt};
use tower_token::TokenLayer;
use tower_token::router::{Route, TokenRouterLayer};

async fn token_server(prefix: &str) -> TokenServer {
    TokenServer::with(TokenBehaviour {
        prefix: prefix.to_owned(),
        delay: std::time::Duration::from_millis(20),
        ..TokenBehaviour::default()
    })
    .await
}

/// An inner service that answers with the `Authorization` it received.
fn echo() -> impl tower::Service<
    Request<Empty<Bytes>>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|req: Request<Empty<Bytes>>| async move {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Ok(http::Response::new(auth))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_across_two_origins_causes_one_token_request_per_origin() {
    bounded::watchdog!();
    let (orders_tokens, billing_tokens) = (
        token_server("orders-").await,
        token_server("billing-").await,
    );
    let (orders, billing) = (
        TokenLayer::new(source(&orders_tokens)),
        TokenLayer::new(source(&billing_tokens)),
    );
    let router = TokenRouterLayer::builder()
        .origin("https://orders.example.com", &orders)
        .origin("https://billing.example.com:8443", &billing)
        .build()
        .unwrap();
    let svc = router.layer(echo());

    let calls: Vec<_> = (0..10_000)
        .map(|i| {
            let svc = svc.clone();
            let url = if i % 2 == 0 {
                format!("https://orders.example.com/orders/{i}")
            } else {
                format!("https://billing.example.com:8443/invoices/{i}")
            };
            tokio::spawn(async move {
                let response = svc
                    .oneshot(Request::get(url).body(Empty::new()).unwrap())
                    .await
                    .unwrap();
                (i, response.into_body().into_inner())
            })
        })
        .collect();
    for call in calls {
        let (i, auth) = call.await.unwrap();
        let expected = if i % 2 == 0 {
            "Bearer orders-1"
        } else {
            "Bearer billing-1"
        };
        assert_eq!(auth, expected, "request {i}");
    }
    assert_eq!(orders_tokens.hits(), 1);
    assert_eq!(billing_tokens.hits(), 1);
    // Each route has its own cache and stats.
    assert_eq!(orders.stats().tokens_fetched, 1);
    assert_eq!(billing.stats().tokens_fetched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_extension_picks_the_cache() {
    bounded::watchdog!();
    let (a_tokens, b_tokens) = (token_server("a-").await, token_server("b-").await);
    let (a, b) = (
        TokenLayer::new(source(&a_tokens)),
        TokenLayer::new(source(&b_tokens)),
    );
    let router = TokenRouterLayer::builder()
        .origin("https://api.example.com", &a)
        .route("admin", &b)
        .build()
        .unwrap();
    let svc = router.layer(echo());
    let call = |route: Option<&'static str>, url: &'static str| {
        let svc = svc.clone();
        async move {
            let mut req = Request::get(url).body(Empty::new()).unwrap();
            if let Some(route) = route {
                req.extensions_mut().insert(Route::new(route));
            }
            svc.oneshot(req).await.unwrap().into_body().into_inner()
        }
    };
    assert_eq!(call(None, "https://api.example.com/x").await, "Bearer a-1");
    assert_eq!(
        call(Some("admin"), "https://api.example.com/x").await,
        "Bearer b-1",
        "the extension wins over the origin"
    );
    assert_eq!(
        call(Some("admin"), "https://elsewhere.example.com/").await,
        "Bearer b-1"
    );
    // No route: passed through without a token; an unknown route too.
    assert_eq!(call(None, "https://elsewhere.example.com/").await, "");
    assert_eq!(call(Some("nobody"), "https://api.example.com/x").await, "");
    assert_eq!((a_tokens.hits(), b_tokens.hits()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_handles_its_own_401_over_real_http() {
    bounded::watchdog!();
    let (a_tokens, b_tokens) = (token_server("a-").await, token_server("b-").await);
    let (a_api, b_api) = (ApiServer::start().await, ApiServer::start().await);
    let (a, b) = (
        TokenLayer::new(source(&a_tokens)),
        TokenLayer::new(source(&b_tokens)),
    );
    let router = TokenRouterLayer::builder()
        .origin(&a_api.url(""), &a)
        .fallback(&b)
        .build()
        .unwrap();
    let svc = router.layer(http_client::<Empty<Bytes>>());
    let get = |url: String| Request::get(url).body(Empty::new()).unwrap();

    assert_eq!(
        send(&svc, get(a_api.url("/1"))).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, get(b_api.url("/1"))).await.unwrap().0,
        StatusCode::OK
    );
    a_api.reject("a-1");
    assert_eq!(
        send(&svc, get(a_api.url("/2"))).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, get(b_api.url("/2"))).await.unwrap().0,
        StatusCode::OK
    );
    let a_seen: Vec<_> = a_api
        .requests()
        .iter()
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    let b_seen: Vec<_> = b_api
        .requests()
        .iter()
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(a_seen, ["a-1", "a-1", "a-2"]);
    assert_eq!(
        b_seen,
        ["b-1", "b-1"],
        "the other route's token is untouched"
    );
    assert_eq!(a.stats().unauthorized_refreshes, 1);
    assert_eq!(b.stats().unauthorized_refreshes, 0);
}

#[test]
fn a_bad_origin_is_a_config_error() {
    bounded::watchdog!();
    let layer = TokenLayer::new(tower_token::source::from_fn(|_| async {
        Ok::<_, Infallible>(tower_token::Token::new("t"))
    }));
    let err = TokenRouterLayer::builder()
        .origin("not an origin", &layer)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, tower_token::ConfigError::InvalidUrl { .. }),
        "{err}"
    );
}
