//! A tonic `Channel` under `TokenLayer`, calling the standard gRPC health
//! service (`tonic-health` ships its generated code: no `protoc` needed).
//!
//! Starts an in-process token endpoint (`examples/support`) and a tonic
//! health server whose interceptor accepts only the bearer tokens the token
//! endpoint issued and did not revoke, then:
//!
//! 1. checks the health of the `orders` service: the first call fetches a
//!    token;
//! 2. the server revokes the token: the call is answered `UNAUTHENTICATED`,
//!    which invalidates the token, and the layer sends the call again with a
//!    fresh token (its request body was recorded while it was sent): the
//!    caller sees the answer;
//! 3. the call after that carries the fresh token too.
//!
//! Run with `cargo run --features tonic --example tonic_client`. Exits 0 when
//! every step behaved.

mod support;

use support::{CLIENT_ID, CLIENT_SECRET, Checks, Servers};
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::{BoxError, ServiceBuilder};
use tower_token::{ClientCredentials, TokenLayer};

/// A health server on loopback that checks `authorization: Bearer <token>`.
async fn grpc_server(servers: Servers) -> Result<String, BoxError> {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status("orders", ServingStatus::Serving)
        .await;
    let check_token = move |req: tonic::Request<()>| {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(token) if servers.is_valid(token) => {
                println!("  server: call with {token} accepted");
                Ok(req)
            }
            other => {
                println!("  server: call with {other:?} rejected");
                Err(tonic::Status::unauthenticated("invalid token"))
            }
        }
    };
    let service =
        HealthServer::with_interceptor(HealthService::from_health_reporter(reporter), check_token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(Server::builder().serve_with_incoming(service, TcpIncoming::from(listener)));
    Ok(format!("http://{addr}"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let servers = Servers::start().await?;
    let grpc_url = grpc_server(servers.clone()).await?;
    let mut checks = Checks::default();

    // The stack: TokenLayer → tonic Channel, under the generated client.
    let source = ClientCredentials::builder(
        servers.token_url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()?;
    let layer = TokenLayer::new(source);
    let channel = Endpoint::from_shared(grpc_url)?.connect().await?;
    let channel = ServiceBuilder::new().layer(layer.clone()).service(channel);
    let mut health = HealthClient::new(channel);
    let orders = || HealthCheckRequest {
        service: "orders".into(),
    };

    println!("1. two health checks");
    for _ in 0..2 {
        let answer = health.check(orders()).await;
        println!(
            "  client: {:?}",
            answer.as_ref().map(|r| r.get_ref().status())
        );
        checks.check(answer.is_ok(), "the call succeeded");
    }
    checks.check(servers.tokens_issued() == 1, "one token served both calls");

    println!("\n2. the server revokes the token");
    servers.revoke_all();
    let answer = health.check(orders()).await;
    println!(
        "  client: {:?}",
        answer
            .as_ref()
            .map_err(|s| s.code())
            .map(|r| r.get_ref().status())
    );
    checks.check(
        answer.is_ok(),
        "the call was answered UNAUTHENTICATED, then sent again with a fresh token",
    );
    checks.check(
        layer.stats().unauthorized_refreshes == 1,
        "the answer invalidated the token",
    );

    println!("\n3. the next call");
    let answer = health.check(orders()).await;
    println!(
        "  client: {:?}",
        answer.as_ref().map(|r| r.get_ref().status())
    );
    checks.check(
        answer.is_ok(),
        "the next call succeeded with the fresh token",
    );
    checks.check(
        servers.tokens_issued() == 2,
        "exactly one new token was fetched",
    );

    let stats = layer.stats();
    println!(
        "\nstats: {} tokens fetched, {} UNAUTHENTICATED-triggered refreshes",
        stats.tokens_fetched, stats.unauthorized_refreshes
    );
    checks.finish();
    Ok(())
}
