//! Revokes a KorAP/Kustvakt access or refresh token.
//!
//! ```sh
//! KORAP_ROOT=http://localhost:8089/api/v1.0 KORAP_CLIENT_ID=… \
//! KORAP_CLIENT_SECRET=… KORAP_TOKEN=… KORAP_TOKEN_TYPE=refresh_token \
//! cargo run --example korap_revoke
//! ```
//!
//! Leave `KORAP_CLIENT_SECRET` unset for a public client. Revoking a refresh
//! token also revokes the access tokens issued with it.

use tower::ServiceExt;
use tower_token::dialect::Credentials;
use tower_token::{RevokeRequest, RevokeService, Transport};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), tower_token::BoxError> {
    let (Some(root), Some(id), Some(token)) = (
        env("KORAP_ROOT"),
        env("KORAP_CLIENT_ID"),
        env("KORAP_TOKEN"),
    ) else {
        eprintln!(
            "usage: KORAP_ROOT=http://localhost:8089/api/v1.0 KORAP_CLIENT_ID=… [KORAP_CLIENT_SECRET=…] \
             KORAP_TOKEN=… [KORAP_TOKEN_TYPE=access_token|refresh_token] cargo run --example korap_revoke"
        );
        std::process::exit(2);
    };
    let credentials = match env("KORAP_CLIENT_SECRET") {
        Some(secret) => Credentials::new(id, secret),
        None => Credentials::public(id),
    };
    let request = match env("KORAP_TOKEN_TYPE").as_deref() {
        Some("refresh_token") => RevokeRequest::refresh(token),
        Some("access_token") | None => RevokeRequest::access(token),
        Some(other) => {
            eprintln!("KORAP_TOKEN_TYPE must be access_token or refresh_token, not {other}");
            std::process::exit(2);
        }
    };
    let mut transport = Transport::new();
    if env("KORAP_ALLOW_HTTP").is_some() {
        transport = transport.allow_insecure_http();
    }
    RevokeService::korap(root, credentials)
        .transport(transport)
        .build()?
        .oneshot(request)
        .await?;
    println!("revoked");
    Ok(())
}
