//! The servers the stack examples talk to, in process on loopback ports:
//! an OAuth 2.0 token endpoint (client credentials, HTTP Basic client
//! authentication) and a protected HTTP API that accepts the tokens it
//! issued unless they were revoked. The examples' own code is the client
//! side; this is only their backdrop.

#![allow(dead_code)]

use axum::{
    Form, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine as _;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub const CLIENT_ID: &str = "example-client";
pub const CLIENT_SECRET: &str = "example-secret";

#[derive(Default)]
struct Inner {
    issued: Vec<String>,
    revoked: HashSet<String>,
    /// Every API request: method, path, the bearer token it carried, body.
    api_calls: Vec<ApiCall>,
}

/// One request the API received.
#[derive(Clone, Debug)]
pub struct ApiCall {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub body: Bytes,
}

/// The authorization server and the API, sharing what was issued and revoked.
#[derive(Clone, Default)]
pub struct Servers {
    inner: Arc<Mutex<Inner>>,
    token_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
}

impl Servers {
    /// Starts both servers.
    pub async fn start() -> std::io::Result<Self> {
        let mut servers = Self::default();
        let token = Router::new()
            .route("/oauth/token", post(token))
            .with_state(servers.clone());
        servers.token_addr = Some(serve(token).await?);
        let api = Router::new().fallback(api).with_state(servers.clone());
        servers.api_addr = Some(serve(api).await?);
        Ok(servers)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.token_addr.expect("started"))
    }

    /// A URL of the protected API.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_addr.expect("started"))
    }

    /// Whether `token` was issued and not revoked.
    pub fn is_valid(&self, token: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        inner.issued.iter().any(|t| t == token) && !inner.revoked.contains(token)
    }

    /// Revokes every token issued so far, as an administrator would.
    pub fn revoke_all(&self) {
        let mut inner = self.inner.lock().unwrap();
        let issued = inner.issued.clone();
        inner.revoked.extend(issued);
    }

    /// How many tokens the token endpoint issued.
    pub fn tokens_issued(&self) -> usize {
        self.inner.lock().unwrap().issued.len()
    }

    /// The requests the API received, in order.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.inner.lock().unwrap().api_calls.clone()
    }
}

async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

async fn token(
    State(s): State<Servers>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized || form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        let error = serde_json::json!({"error": "invalid_client"});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    let mut inner = s.inner.lock().unwrap();
    let token = format!("tok-{}", inner.issued.len() + 1);
    inner.issued.push(token.clone());
    axum::Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
    .into_response()
}

async fn api(
    State(s): State<Servers>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let valid = token.as_deref().is_some_and(|t| s.is_valid(t));
    s.inner.lock().unwrap().api_calls.push(ApiCall {
        method,
        path: uri.path().to_owned(),
        token: token.clone(),
        body: body.clone(),
    });
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
        )
            .into_response();
    }
    let token = token.unwrap_or_default();
    if body.is_empty() {
        format!("{} served with {token}", uri.path()).into_response()
    } else {
        let body = String::from_utf8_lossy(&body);
        format!("{} stored {body} with {token}", uri.path()).into_response()
    }
}

/// Prints a check and remembers failures.
#[derive(Default)]
pub struct Checks {
    failed: u32,
}

impl Checks {
    pub fn check(&mut self, ok: bool, what: &str) {
        if ok {
            println!("  ok: {what}");
        } else {
            println!("  FAILED: {what}");
            self.failed += 1;
        }
    }

    /// Exits 1 if any check failed.
    pub fn finish(self) {
        if self.failed > 0 {
            println!("\n{} check(s) failed", self.failed);
            std::process::exit(1);
        }
        println!("\nall checks passed");
    }
}
