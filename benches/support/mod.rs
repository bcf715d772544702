//! A token server for the benchmarks: client credentials on loopback, with
//! a fixed answer delay and a count of the requests it saw.

// Each benchmark uses a part of this module.
#![allow(dead_code)]

use axum::{Router, extract::State, routing::post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct TokenServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
}

impl TokenServer {
    /// Starts a server answering after `delay` with tokens of `lifetime`.
    pub async fn start(delay: Duration, lifetime: Duration) -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let state = (hits.clone(), delay, lifetime);
        let router = Router::new()
            .route(
                "/token",
                post(
                    |State((hits, delay, lifetime)): State<(
                        Arc<AtomicU64>,
                        Duration,
                        Duration,
                    )>| async move {
                        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(delay).await;
                        axum::Json(serde_json::json!({
                            "access_token": format!("bench-token-{n}"),
                            "token_type": "Bearer",
                            "expires_in": lifetime.as_secs().max(1),
                        }))
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The inner service of the hot-path benchmarks: answers every request at
/// once with an empty response, after reading its headers (so that nothing
/// done to them is optimised away).
#[derive(Clone, Copy)]
pub struct Noop;

impl<B> tower::Service<http::Request<B>> for Noop {
    type Response = http::Response<()>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        std::hint::black_box(req.headers().len());
        std::future::ready(Ok(http::Response::new(())))
    }
}
