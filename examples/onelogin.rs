//! Gets a OneLogin API access token (with its refresh token), and revokes
//! the pair on shutdown.
//!
//! ```sh
//! ONELOGIN_SUBDOMAIN=acme.onelogin.com \
//! ONELOGIN_CLIENT_ID=… ONELOGIN_CLIENT_SECRET=… \
//! cargo run --example onelogin
//! ```

use tower_token::{TokenLayer, preset};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), tower_token::BoxError> {
    let (Some(subdomain), Some(id), Some(secret)) = (
        env("ONELOGIN_SUBDOMAIN"),
        env("ONELOGIN_CLIENT_ID"),
        env("ONELOGIN_CLIENT_SECRET"),
    ) else {
        eprintln!(
            "usage: ONELOGIN_SUBDOMAIN=acme.onelogin.com ONELOGIN_CLIENT_ID=… ONELOGIN_CLIENT_SECRET=… cargo run --example onelogin"
        );
        std::process::exit(2);
    };
    let layer = TokenLayer::from_provider(preset::onelogin(
        subdomain,
        tower_token::Credentials::new(id, secret),
    )?)
    .revoke_on_drop(true)
    .build()?;

    let token = layer.cache().token().await?;
    println!(
        "got an access token ({} characters); expires at {:?}",
        token.secret().len(),
        layer.stats().token_expires_at
    );

    layer.shutdown().await?;
    println!("access token and refresh token revoked");
    Ok(())
}
