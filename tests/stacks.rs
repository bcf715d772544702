//! `TokenLayer` over every client stack it is meant for, each against a real
//! server on loopback (R16), and origin binding (R13):
//!
//! - hyper-util's legacy `Client` → axum API;
//! - `reqwest::Client` (through `adapter::ReqwestService`) → axum API,
//!   including a 401 retry of a POST with a JSON body;
//! - tonic's `Channel` → tonic health server whose interceptor checks the
//!   bearer token and answers `UNAUTHENTICATED` for a revoked one;
//! - an axum handler → downstream API, through a `TokenService` in the
//!   app state;
//! - an origin allow-list: requests to other origins carry no token.

mod bounded;
mod common;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{ApiServer, TokenServer, http_client, send, source};
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Full};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tower::{ServiceBuilder, ServiceExt};
use tower_token::adapter::ReqwestService;
use tower_token::{BoxError, TokenLayer, TokenService};

const ORDER: &str = r#"{"item":"widget","quantity":3}"#;

// ---------------------------------------------------------------------------
// hyper-util
// ---------------------------------------------------------------------------

#[tokio::test]
async fn hyper_util_client_to_axum_api() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(source(&tokens));
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(http_client::<Full<Bytes>>());

    // Concurrent GETs share one token.
    let mut calls = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        let req = Request::get(api.url("/orders"))
            .body(Full::default())
            .unwrap();
        calls.push(tokio::spawn(async move { send(&client, req).await }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(tokens.hits(), 1);
    assert!(
        api.requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer tok-1"))
    );

    // The server stops accepting tok-1: a POST with a body is answered 401,
    // and the layer sends it again, same body, with a new token.
    api.reject("tok-1");
    let req = Request::post(api.url("/orders"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(ORDER.as_bytes())))
        .unwrap();
    let (status, _) = send(&client, req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::POST)
        .collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].token(), Some("tok-1"));
    assert_eq!(posts[1].token(), Some("tok-2"));
    for post in &posts {
        assert_eq!(post.body, ORDER);
        assert_eq!(post.headers[header::CONTENT_TYPE], "application/json");
    }
    assert_eq!(tokens.hits(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
}

// ---------------------------------------------------------------------------
// reqwest
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reqwest_client_to_axum_api() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(source(&tokens));
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .timeout(Duration::from_secs(10))
        .service(ReqwestService::new(reqwest::Client::new()));

    let req = Request::get(api.url("/orders"))
        .body(reqwest::Body::from(Vec::new()))
        .unwrap();
    let (status, body) = send(&client, req).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(api.requests()[0].token(), Some("tok-1"));

    // A POST with a JSON body, answered 401: sent again with the same body
    // and a new token; the caller sees only the 200.
    api.reject("tok-1");
    let req = Request::post(api.url("/orders"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(reqwest::Body::from(
            serde_json::to_vec(&serde_json::json!({"item": "widget", "quantity": 3})).unwrap(),
        ))
        .unwrap();
    let (status, _) = send(&client, req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::POST)
        .collect();
    assert_eq!(posts.len(), 2, "one 401, one retry");
    assert_eq!(posts[0].token(), Some("tok-1"));
    assert_eq!(posts[1].token(), Some("tok-2"));
    for post in &posts {
        assert_eq!(post.body, ORDER);
        assert_eq!(post.headers[header::CONTENT_TYPE], "application/json");
    }
    assert_eq!(tokens.hits(), 2);
    let stats = layer.stats();
    assert_eq!(stats.tokens_fetched, 2);
    assert_eq!(stats.unauthorized_refreshes, 1);
}

#[tokio::test]
async fn reqwest_adapter_takes_any_body_reqwest_takes() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let api = ApiServer::start().await;
    let layer = TokenLayer::new(source(&tokens));
    api.reject("tok-1");

    // `String` bodies are replayed too.
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ReqwestService::default().with_body::<String>());
    let req = Request::put(api.url("/notes/1"))
        .body(String::from("remember the milk"))
        .unwrap();
    let (status, _) = send(&client, req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let bodies: Vec<_> = api
        .requests()
        .into_iter()
        .map(|r| (r.token().map(str::to_owned), r.body))
        .collect();
    assert_eq!(
        bodies,
        vec![
            (Some("tok-1".to_owned()), Bytes::from("remember the milk")),
            (Some("tok-2".to_owned()), Bytes::from("remember the milk")),
        ]
    );

    // A relative URI is reqwest's builder error, and no request is sent.
    let err = client
        .clone()
        .oneshot(Request::get("/relative").body(String::new()).unwrap())
        .await
        .unwrap_err();
    let err = err
        .downcast_ref::<reqwest::Error>()
        .expect("a reqwest::Error");
    assert!(err.is_builder());
    assert_eq!(api.count(), 2);
}

// ---------------------------------------------------------------------------
// tonic
// ---------------------------------------------------------------------------

/// A tonic health server whose interceptor accepts the bearer tokens the
/// token server issued, except revoked ones, and records what it saw.
struct GrpcServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    revoked: Arc<Mutex<HashSet<String>>>,
    /// The token of every call, and whether it was accepted.
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The token a gRPC call carried, and whether the interceptor accepted it.
type Seen = (Option<String>, bool);

impl GrpcServer {
    async fn start() -> Self {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status("orders", tonic_health::ServingStatus::Serving)
            .await;
        let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let interceptor = {
            let revoked = revoked.clone();
            let seen = seen.clone();
            move |req: tonic::Request<()>| {
                let token = req
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                let ok = token
                    .as_ref()
                    .is_some_and(|t| t.starts_with("tok-") && !revoked.lock().unwrap().contains(t));
                seen.lock().unwrap().push((token, ok));
                if ok {
                    Ok(req)
                } else {
                    Err(tonic::Status::unauthenticated("invalid token"))
                }
            }
        };
        let svc = HealthServer::with_interceptor(
            HealthService::from_health_reporter(reporter.clone()),
            interceptor,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(Server::builder().serve_with_incoming(svc, TcpIncoming::from(listener)));
        Self {
            addr,
            reporter,
            revoked,
            seen,
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn revoke(&self, token: &str) {
        self.revoked.lock().unwrap().insert(token.to_owned());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

fn seen(token: &str, ok: bool) -> Seen {
    (Some(token.to_owned()), ok)
}

#[tokio::test]
async fn tonic_channel_to_health_server() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let grpc = GrpcServer::start().await;
    let layer = TokenLayer::new(source(&tokens));
    let channel = ServiceBuilder::new()
        .layer(layer.clone())
        .service(grpc.channel().await);
    let mut client = HealthClient::new(channel);

    let answer = client.check(check("orders")).await.unwrap().into_inner();
    assert_eq!(answer.status(), PbStatus::Serving);
    assert_eq!(grpc.seen(), vec![seen("tok-1", true)]);

    // Concurrent calls on clones of the client share the token.
    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut client = client.clone();
        calls.push(tokio::spawn(
            async move { client.check(check("orders")).await },
        ));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(tokens.hits(), 1);

    // The server revokes tok-1: the next call is answered UNAUTHENTICATED,
    // the token is invalidated, and the call (its body recorded while it
    // was sent) goes again with a new one: the caller sees the answer.
    grpc.revoke("tok-1");
    let answer = client.check(check("orders")).await.unwrap().into_inner();
    assert_eq!(answer.status(), PbStatus::Serving);
    let seen_now = grpc.seen();
    assert_eq!(seen_now.len(), 23);
    assert_eq!(seen_now[21], seen("tok-1", false));
    assert_eq!(seen_now[22], seen("tok-2", true));
    assert_eq!(tokens.hits(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);

    // A server-streaming call works through the layer too.
    let mut updates = client.watch(check("orders")).await.unwrap().into_inner();
    let first: HealthCheckResponse = updates.message().await.unwrap().unwrap();
    assert_eq!(first.status(), PbStatus::Serving);
    grpc.reporter
        .set_service_status("orders", tonic_health::ServingStatus::NotServing)
        .await;
    let second = updates.message().await.unwrap().unwrap();
    assert_eq!(second.status(), PbStatus::NotServing);
    assert_eq!(grpc.seen().last(), Some(&seen("tok-2", true)));
}

/// tonic with DPoP: the client is given the `Channel`'s origin
/// (`with_origin`), so the layer sees absolute URIs and each call's proof
/// names the method's URL; without it the URI has no scheme and host, no
/// proof can be made, and the call fails before it is sent.
#[cfg(feature = "jose")]
#[tokio::test]
async fn tonic_channel_with_dpop_proofs() {
    bounded::watchdog!();
    use base64::Engine as _;
    let reporter = HealthReporter::new();
    reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    // The `authorization` and `dpop` metadata of every call.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let interceptor = {
        let seen = seen.clone();
        move |req: tonic::Request<()>| {
            let text = |name| {
                req.metadata()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            seen.lock()
                .unwrap()
                .push((text("authorization"), text("dpop")));
            Ok(req)
        }
    };
    let svc = HealthServer::with_interceptor(
        HealthService::from_health_reporter(reporter.clone()),
        interceptor,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Server::builder().serve_with_incoming(svc, TcpIncoming::from(listener)));

    let layer = TokenLayer::builder(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(tower_token::Token::new("bound-1").with_dpop(true))
    }))
    .dpop(tower_token::dpop::Dpop::generate(tower_token::jose::Algorithm::ES256).unwrap())
    .build()
    .unwrap();
    let channel = Endpoint::from_shared(origin.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let channel = ServiceBuilder::new().layer(layer.clone()).service(channel);

    let mut client = HealthClient::with_origin(channel.clone(), origin.parse().unwrap());
    for _ in 0..2 {
        let answer = client.check(check("orders")).await.unwrap().into_inner();
        assert_eq!(answer.status(), PbStatus::Serving);
    }
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let claims = |proof: &str| -> serde_json::Value {
        let part = proof.split('.').nth(1).expect("a compact JWS");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    for (authorization, proof) in &calls {
        assert_eq!(authorization, "DPoP bound-1");
        let claims = claims(proof);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(
            claims["htu"],
            format!("{origin}/grpc.health.v1.Health/Check")
        );
    }
    assert_ne!(claims(&calls[0].1)["jti"], claims(&calls[1].1)["jti"]);

    // Without the origin: the call fails and nothing is sent.
    let mut bare = HealthClient::new(channel);
    let status = bare.check(check("orders")).await.unwrap_err();
    let error = std::error::Error::source(&status)
        .and_then(|e| e.downcast_ref::<tower_token::Error>())
        .expect("the layer's error");
    assert!(
        matches!(
            error,
            tower_token::Error::Dpop(tower_token::dpop::DpopError::NoTargetUri)
        ),
        "{error:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------
// axum handler → downstream API
// ---------------------------------------------------------------------------

type Downstream = TokenService<common::HttpClient<Empty<Bytes>>>;

#[derive(Clone)]
struct AppState {
    orders: Downstream,
    orders_url: String,
}

async fn order_summary(State(state): State<AppState>) -> axum::response::Response {
    let req = Request::get(&state.orders_url)
        .body(Empty::new())
        .expect("a valid request");
    let result: Result<_, BoxError> = async {
        let response = state.orders.clone().oneshot(req).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
    .await;
    match result {
        Ok((status, body)) => (
            status,
            format!("downstream said: {}", String::from_utf8_lossy(&body)),
        )
            .into_response(),
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}

#[tokio::test]
async fn axum_handler_calls_downstream_api() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let downstream = ApiServer::start().await;
    let layer = TokenLayer::new(source(&tokens));
    let state = AppState {
        orders: ServiceBuilder::new()
            .layer(layer.clone())
            .service(http_client()),
        orders_url: downstream.url("/orders"),
    };
    let app = axum::Router::new()
        .route("/summary", axum::routing::get(order_summary))
        .with_state(state);
    let front = common::serve(app).await;

    // The front app's callers send no token; its handler's calls carry one.
    let caller = http_client::<Empty<Bytes>>();
    let mut calls = Vec::new();
    for _ in 0..20 {
        let caller = caller.clone();
        let url = format!("http://{front}/summary");
        calls.push(tokio::spawn(async move {
            let res = caller
                .request(Request::get(url).body(Empty::new()).unwrap())
                .await
                .unwrap();
            let status = res.status();
            (status, res.into_body().collect().await.unwrap().to_bytes())
        }));
    }
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "downstream said: ok");
    }
    assert_eq!(tokens.hits(), 1);
    assert_eq!(downstream.count(), 20);
    assert!(
        downstream
            .requests()
            .iter()
            .all(|r| r.token() == Some("tok-1"))
    );

    // A 401 downstream is handled inside the handler's call.
    downstream.reject("tok-1");
    let res = caller
        .request(
            Request::get(format!("http://{front}/summary"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(downstream.requests().last().unwrap().token(), Some("tok-2"));
    assert_eq!(layer.stats().unauthorized_refreshes, 1);

    // A token endpoint that fails is the handler's typed error, and the
    // downstream API is not called without a token.
    tokens.set(|b| {
        b.canned = Some(common::Canned::json(
            400,
            serde_json::json!({"error": "invalid_client"}),
        ))
    });
    layer.cache().invalidate();
    let before = downstream.count();
    let res = caller
        .request(
            Request::get(format!("http://{front}/summary"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(downstream.count(), before);
}

// ---------------------------------------------------------------------------
// Origin binding (R13)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_goes_only_to_allowed_origins() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let allowed = ApiServer::start().await;
    let other = ApiServer::start().await;
    let layer = TokenLayer::builder(source(&tokens))
        .allow_origin(&allowed.url(""))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(http_client::<Empty<Bytes>>());
    let get = |url: String| Request::get(url).body(Empty::new()).unwrap();

    // Another origin (same host, other port): no token, and none fetched.
    let (status, _) = send(&client, get(other.url("/x"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(other.requests()[0].authorization, None);
    assert_eq!(tokens.hits(), 0);

    // The same port under another host name is another origin too.
    let by_name = format!("http://localhost:{}/y", allowed.addr.port());
    let (status, _) = send(&client, get(by_name)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed.requests()[0].authorization, None);
    assert_eq!(tokens.hits(), 0);

    // The allowed origin gets the token.
    let (status, _) = send(&client, get(allowed.url("/z"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed.requests()[1].token(), Some("tok-1"));
    assert_eq!(tokens.hits(), 1);

    // A 401 from another origin is not the token's business.
    other.set(|b| b.reject_all = true);
    let (status, _) = send(&client, get(other.url("/x"))).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.count(), 2);
    assert_eq!(layer.stats().unauthorized_refreshes, 0);
    assert_eq!(tokens.hits(), 1);

    // Same through reqwest.
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ReqwestService::default().with_body::<String>());
    let (status, _) = send(
        &client,
        Request::get(other.url("/r")).body(String::new()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.requests()[2].authorization, None);
    let (status, _) = send(
        &client,
        Request::get(allowed.url("/r")).body(String::new()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed.requests()[2].token(), Some("tok-1"));
}
