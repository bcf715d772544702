//! The `rustls-no-provider` feature on its own: the crate brings no crypto
//! provider, so until the application installs one, building the default
//! HTTP client fails with a `ConfigError` instead of reqwest's panic.
//!
//! Run with `cargo test --no-default-features --features rustls-no-provider --test tls_provider`;
//! with any other features this file compiles to nothing.
#![cfg(all(
    feature = "rustls-no-provider",
    not(feature = "rustls"),
    not(feature = "native-tls")
))]

use tower_token::{ClientCredentials, ConfigError, RevokeService, dialect::Credentials};

#[test]
fn without_an_installed_provider_the_default_client_is_a_config_error() {
    let err = ClientCredentials::builder(
        "https://auth.example.com/oauth/token",
        Credentials::new("id", "secret"),
    )
    .build()
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::HttpClient(ref m) if m.contains("CryptoProvider")),
        "{err:?}"
    );

    let err = RevokeService::rfc(
        "https://auth.example.com/oauth/revoke",
        Credentials::new("id", "secret"),
    )
    .build()
    .unwrap_err();
    assert!(matches!(err, ConfigError::HttpClient(_)), "{err:?}");
}
