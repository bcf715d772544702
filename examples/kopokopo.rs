//! Gets a Kopo Kopo application token, shows what the cache holds, and
//! revokes it on shutdown.
//!
//! ```sh
//! KOPOKOPO_BASE_URL=https://sandbox.kopokopo.com \
//! KOPOKOPO_CLIENT_ID=… KOPOKOPO_CLIENT_SECRET=… \
//! cargo run --example kopokopo
//! ```

use tower_token::{TokenLayer, preset};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), tower_token::BoxError> {
    let (Some(base), Some(id), Some(secret)) = (
        env("KOPOKOPO_BASE_URL"),
        env("KOPOKOPO_CLIENT_ID"),
        env("KOPOKOPO_CLIENT_SECRET"),
    ) else {
        eprintln!(
            "usage: KOPOKOPO_BASE_URL=https://sandbox.kopokopo.com KOPOKOPO_CLIENT_ID=… KOPOKOPO_CLIENT_SECRET=… cargo run --example kopokopo"
        );
        std::process::exit(2);
    };
    let layer = TokenLayer::from_provider(preset::kopokopo(
        base,
        tower_token::Credentials::new(id, secret),
    )?)
    .revoke_on_drop(true)
    .build()?;

    // The layer would attach this token to every request of the client it
    // wraps; here we only fetch it.
    let token = layer.cache().token().await?;
    let stats = layer.stats();
    println!(
        "got an application token ({} characters); expires at {:?}",
        token.secret().len(),
        stats.token_expires_at
    );

    layer.shutdown().await?;
    println!("token revoked");
    Ok(())
}
