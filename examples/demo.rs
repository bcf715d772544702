//! A self-contained tour of tower-token.
//!
//! Starts, on loopback ephemeral ports, a small authorization server (client
//! credentials with 2-second tokens, and a revocation endpoint) and a
//! protected API, then drives a hyper-util client through `TokenLayer`:
//!
//! 1. 50 concurrent calls share one token fetch;
//! 2. the token nears expiry and is refreshed, calls keep succeeding;
//! 3. the token is revoked on the server; the next call is answered 401,
//!    the layer fetches a new token and retries, and the caller sees 200.
//!
//! Run with `cargo run --example demo`. Exits 0 when every step behaved.

use axum::{
    Form, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_token::{ClientCredentials, TokenLayer};

const CLIENT_ID: &str = "demo-client";
const CLIENT_SECRET: &str = "demo-secret";
const LIFETIME_SECS: u64 = 2;

#[derive(Default)]
struct AuthServer {
    issued: Mutex<HashMap<String, Instant>>,
    revoked: Mutex<HashSet<String>>,
    api_calls: Mutex<u64>,
}

type Shared = Arc<AuthServer>;

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    if !authorized || form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut issued = s.issued.lock().unwrap();
    let token = format!("tok-{}", issued.len() + 1);
    issued.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(LIFETIME_SECS),
    );
    axum::Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": LIFETIME_SECS,
    }))
    .into_response()
}

async fn revoke(State(s): State<Shared>, Form(form): Form<HashMap<String, String>>) -> StatusCode {
    if let Some(token) = form.get("token") {
        s.revoked.lock().unwrap().insert(token.clone());
    }
    StatusCode::OK
}

async fn api(State(s): State<Shared>, headers: HeaderMap) -> Response {
    *s.api_calls.lock().unwrap() += 1;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let valid = s
        .issued
        .lock()
        .unwrap()
        .get(&token)
        .is_some_and(|exp| Instant::now() < *exp)
        && !s.revoked.lock().unwrap().contains(&token);
    if valid {
        (StatusCode::OK, format!("hello, holder of {token}")).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
        )
            .into_response()
    }
}

async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

type ApiClient = tower_token::TokenService<
    Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
>;

async fn call(svc: ApiClient, url: String) -> Result<(StatusCode, String), tower_token::BoxError> {
    let req = http::Request::get(&url).body(Empty::<Bytes>::new())?;
    let res = svc.oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn check(ok: bool, what: &str, failures: &mut u32) {
    if ok {
        println!("  ok: {what}");
    } else {
        println!("  FAILED: {what}");
        *failures += 1;
    }
}

#[tokio::main]
async fn main() -> Result<(), tower_token::BoxError> {
    let server: Shared = Arc::default();
    let auth_addr = serve(
        Router::new()
            .route("/oauth/token", post(token))
            .route("/oauth/revoke", post(revoke))
            .with_state(server.clone()),
    )
    .await?;
    let api_addr = serve(
        Router::new()
            .route("/orders", get(api))
            .with_state(server.clone()),
    )
    .await?;
    println!("authorization server on http://{auth_addr}, API on http://{api_addr}");

    let source = ClientCredentials::builder(
        format!("http://{auth_addr}/oauth/token"),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()?;
    let layer = TokenLayer::new(source);
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let api_client = ServiceBuilder::new().layer(layer.clone()).service(client);
    let url = format!("http://{api_addr}/orders");
    let call = |svc: ApiClient| call(svc, url.clone());
    let mut failures = 0;

    println!("\n1. 50 concurrent calls on an empty cache");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(tokio::spawn(call(api_client.clone())));
    }
    let mut ok = 0;
    for task in tasks {
        if matches!(task.await?, Ok((StatusCode::OK, _))) {
            ok += 1;
        }
    }
    let stats = layer.stats();
    println!(
        "  API calls made: {}, succeeded: {ok}, tokens fetched: {}",
        server.api_calls.lock().unwrap(),
        stats.tokens_fetched
    );
    check(ok == 50, "every call succeeded", &mut failures);
    check(
        stats.tokens_fetched == 1,
        "one token served all 50 calls",
        &mut failures,
    );

    println!("\n2. calls across the token's expiry ({LIFETIME_SECS} s lifetime)");
    let mut holders = Vec::new();
    let started = Instant::now();
    let mut all_ok = true;
    while started.elapsed() < Duration::from_millis(2500) {
        let (status, body) = call(api_client.clone()).await?;
        all_ok &= status == StatusCode::OK;
        if holders.last() != Some(&body) {
            println!("  {:>5} ms: {status} {body}", started.elapsed().as_millis());
            holders.push(body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = layer.stats();
    println!(
        "  API calls made: {}, tokens fetched: {}",
        server.api_calls.lock().unwrap(),
        stats.tokens_fetched
    );
    check(all_ok, "every call succeeded across expiry", &mut failures);
    check(
        stats.tokens_fetched >= 2 && holders.len() >= 2,
        "the token was refreshed before it expired",
        &mut failures,
    );

    println!("\n3. the server revokes the current token");
    // Start from a token that was just fetched, so that no refresh ahead
    // replaces it before the call below (the demo's tokens live 2 s).
    let fetched = layer.stats().tokens_fetched;
    let deadline = Instant::now() + Duration::from_secs(10);
    while layer.stats().tokens_fetched == fetched && Instant::now() < deadline {
        call(api_client.clone()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let current = layer.cache().token().await?;
    let mut revoke_client =
        Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let form = format!("token={}", current.secret());
    let req = http::Request::post(format!("http://{auth_addr}/oauth/revoke"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from(form)))?;
    let revoked = revoke_client.ready().await?.call(req).await?.status();
    println!("  revocation answered {revoked}");
    let before = layer.stats();
    let (status, body) = call(api_client.clone()).await?;
    let after = layer.stats();
    println!("  next call: {status} {body}");
    println!(
        "  401-triggered refreshes: {}, tokens fetched: {} -> {}",
        after.unauthorized_refreshes, before.tokens_fetched, after.tokens_fetched
    );
    check(
        status == StatusCode::OK,
        "the caller saw 200 after the 401 was handled",
        &mut failures,
    );
    check(
        after.unauthorized_refreshes == before.unauthorized_refreshes + 1,
        "the 401 invalidated the token once",
        &mut failures,
    );
    check(
        after.tokens_fetched == before.tokens_fetched + 1,
        "one new token was fetched",
        &mut failures,
    );

    println!(
        "\ntotal: {} API calls, {} tokens fetched, {} failed checks",
        server.api_calls.lock().unwrap(),
        layer.stats().tokens_fetched,
        failures
    );
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
