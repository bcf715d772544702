//! An axum handler that calls a downstream, token-protected API through a
//! `TokenService` held in the app state: one token cache for the whole app,
//! shared by every request the handler serves.
//!
//! Starts an in-process token endpoint and the downstream API on loopback
//! (`examples/support`), then the app itself, and calls the app's
//! `/dashboard` (which needs no token) 20 times at once; each call makes
//! the handler call the downstream API's `/orders` with the token.
//!
//! Run with `cargo run --example axum_downstream`. Exits 0 when every step behaved.

mod support;

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use support::{CLIENT_ID, CLIENT_SECRET, Checks, Servers};
use tower::{BoxError, ServiceBuilder, ServiceExt, timeout::Timeout};
use tower_token::{ClientCredentials, TokenLayer, TokenService};

/// The downstream client: token, then timeout, then hyper-util.
type Downstream = TokenService<Timeout<Client<HttpConnector, Empty<Bytes>>>>;

#[derive(Clone)]
struct AppState {
    orders: Downstream,
    orders_url: String,
}

/// `GET /dashboard`: fetches the orders downstream and summarizes them.
async fn dashboard(State(state): State<AppState>) -> Response {
    match fetch_orders(&state).await {
        Ok((StatusCode::OK, body)) => format!("dashboard: {body}").into_response(),
        Ok((status, _)) => {
            (StatusCode::BAD_GATEWAY, format!("orders answered {status}")).into_response()
        }
        // A token that could not be had is a typed `tower_token::Error`.
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}

async fn fetch_orders(state: &AppState) -> Result<(StatusCode, String), BoxError> {
    let request = http::Request::get(&state.orders_url).body(Empty::new())?;
    // Cloning the service is cheap, and every clone shares the one cache.
    let response = state.orders.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let servers = Servers::start().await?;
    let mut checks = Checks::default();

    let source = ClientCredentials::builder(
        servers.token_url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()?;
    let layer = TokenLayer::new(source);
    let state = AppState {
        orders: ServiceBuilder::new()
            .layer(layer.clone())
            .timeout(Duration::from_secs(10))
            .service(Client::builder(TokioExecutor::new()).build_http()),
        orders_url: servers.api_url("/orders"),
    };
    let app = Router::new()
        .route("/dashboard", get(dashboard))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}/dashboard", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!("20 concurrent calls to {app_url}");
    let browser = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut calls = Vec::new();
    for _ in 0..20 {
        let browser = browser.clone();
        let url = app_url.clone();
        calls.push(tokio::spawn(async move {
            let res = browser
                .request(http::Request::get(url).body(Empty::new())?)
                .await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, String::from_utf8_lossy(&body).into_owned()))
        }));
    }
    let mut ok = 0;
    for call in calls {
        let (status, body) = call.await??;
        if ok == 0 {
            println!("  {status} {body}");
        }
        ok += usize::from(status == StatusCode::OK);
    }
    let downstream = servers.api_calls();
    println!(
        "  {ok} of 20 succeeded; the downstream API saw {} calls, the token endpoint issued {} token(s)",
        downstream.len(),
        servers.tokens_issued()
    );
    checks.check(ok == 20, "every dashboard call succeeded");
    checks.check(
        downstream.len() == 20
            && downstream
                .iter()
                .all(|c| c.token.as_deref() == Some("tok-1")),
        "every downstream call carried the token",
    );
    checks.check(
        servers.tokens_issued() == 1,
        "the whole app shared one token",
    );
    checks.finish();
    Ok(())
}
