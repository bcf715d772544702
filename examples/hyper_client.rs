//! hyper-util's legacy `Client` under `TokenLayer`: it is a
//! `Service<http::Request<B>>` already, so it needs no adapter.
//!
//! Starts an in-process token endpoint and a protected API on loopback
//! (`examples/support`), then:
//!
//! 1. GETs an order: the first call fetches a token, later ones reuse it;
//! 2. the server revokes the token; a POST with a JSON body is answered
//!    401, and the layer sends it again, same body, with a fresh token.
//!
//! Run with `cargo run --example hyper_client`. Exits 0 when every step behaved.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::Duration;
use support::{CLIENT_ID, CLIENT_SECRET, Checks, Servers};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_token::{ClientCredentials, TokenLayer};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let servers = Servers::start().await?;
    let mut checks = Checks::default();

    // The stack: TokenLayer → Timeout → hyper-util client.
    let source = ClientCredentials::builder(
        servers.token_url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()?;
    let layer = TokenLayer::new(source);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut api = ServiceBuilder::new()
        .layer(layer.clone())
        .timeout(Duration::from_secs(10))
        .service(client);

    println!("1. three GETs");
    for _ in 0..3 {
        let req = Request::get(servers.api_url("/orders/17")).body(Full::default())?;
        let res = api.ready().await?.call(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!("  {status} {}", String::from_utf8_lossy(&body));
        checks.check(status == StatusCode::OK, "the API accepted the token");
    }
    checks.check(
        servers.tokens_issued() == 1,
        "one token served all three calls",
    );

    println!("\n2. the server revokes the token; a POST with a JSON body");
    servers.revoke_all();
    let order = r#"{"item":"widget","quantity":3}"#;
    let req = Request::post(servers.api_url("/orders"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(order.as_bytes())))?;
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
        posts.len() == 2 && posts.iter().all(|p| p.body == order),
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
