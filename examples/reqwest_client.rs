//! A `reqwest::Client` under `TokenLayer`, through
//! `tower_token::adapter::ReqwestService` (reqwest's own `Service` takes
//! `reqwest::Request`; the adapter takes `http::Request<B>` for any body
//! reqwest takes).
//!
//! Starts an in-process token endpoint and a protected API on loopback
//! (`examples/support`), then:
//!
//! 1. GETs an order;
//! 2. the server revokes the token; a POST with a JSON `reqwest::Body`
//!    made from bytes is answered 401, and the layer replays it with a
//!    fresh token.
//!
//! Run with `cargo run --example reqwest_client`. Exits 0 when every step behaved.

mod support;

use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use std::time::Duration;
use support::{CLIENT_ID, CLIENT_SECRET, Checks, Servers};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_token::adapter::ReqwestService;
use tower_token::{ClientCredentials, TokenLayer};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let servers = Servers::start().await?;
    let mut checks = Checks::default();

    // The stack: TokenLayer → Timeout → reqwest (through the adapter).
    let source = ClientCredentials::builder(
        servers.token_url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()?;
    let layer = TokenLayer::new(source);
    let reqwest = reqwest::Client::builder().build()?;
    let mut api = ServiceBuilder::new()
        .layer(layer.clone())
        .timeout(Duration::from_secs(10))
        .service(ReqwestService::new(reqwest));

    println!("1. a GET");
    let req = Request::get(servers.api_url("/orders/17")).body(reqwest::Body::from(""))?;
    let res = api.ready().await?.call(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!("  {status} {}", String::from_utf8_lossy(&body));
    checks.check(status == StatusCode::OK, "the API accepted the token");

    println!("\n2. the server revokes the token; a POST with a JSON body");
    servers.revoke_all();
    let order = serde_json::json!({"item": "widget", "quantity": 3});
    let req = Request::post(servers.api_url("/orders"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(reqwest::Body::from(serde_json::to_vec(&order)?))?;
    let res = api.ready().await?.call(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!("  {status} {}", String::from_utf8_lossy(&body));
    let posts: Vec<_> = servers
        .api_calls()
        .into_iter()
        .filter(|c| c.method == http::Method::POST)
        .collect();
    for post in &posts {
        println!(
            "  the API saw: POST with {:?}, body {:?}",
            post.token, post.body
        );
    }
    checks.check(status == StatusCode::OK, "the caller saw 200");
    checks.check(
        posts.len() == 2 && posts[0].body == posts[1].body && !posts[0].body.is_empty(),
        "the 401 was answered by sending the same body again",
    );
    checks.check(
        posts.last().and_then(|p| p.token.as_deref()) == Some("tok-2"),
        "the retry carried a fresh token",
    );

    let stats = layer.stats();
    println!(
        "\nstats: {} tokens fetched, {} 401-triggered refreshes",
        stats.tokens_fetched, stats.unauthorized_refreshes
    );
    checks.check(
        stats.tokens_fetched == 2 && stats.unauthorized_refreshes == 1,
        "stats match",
    );
    checks.finish();
    Ok(())
}
