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
