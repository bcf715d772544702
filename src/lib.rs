//! A token that is always there and always fresh, for any tower HTTP client.
//!
//! `tower-token` gives a tower client stack (hyper-util, reqwest, tonic,
//! clients inside axum apps) an OAuth 2.0 access token:
//!
//! - [`TokenLayer`] attaches the cached token to every request, refreshes it
//!   in the background before it expires, and after a 401 invalidates it and
//!   retries the request once with a fresh one;
//! - the cache ([`TokenCache`]) keeps one token per layer in an
//!   [`arc_swap`] cell, so the per-request path takes no lock; concurrent
//!   callers on an empty cache share a single fetch;
//! - [`ClientCredentials`] fetches tokens with the client credentials grant
//!   (RFC 6749 §4.4), and [`source::from_fn`] from any async closure;
//! - [`RevokeService`] revokes tokens (RFC 7009, Kopo Kopo, KorAP,
//!   OneLogin) as a `tower::Service`; the [`dialect`]s hold the wire
//!   formats, [`preset`] builds a provider's token source and revocation
//!   service in one go, and [`discovery`] finds the endpoints of an issuer
//!   (RFC 8414, OpenID discovery);
//! - errors are typed ([`Error`], with RFC 6749 §5.2 codes), and secrets are
//!   secret types whose `Debug` output is `[redacted]`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token::{ClientCredentials, TokenLayer};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! let source = ClientCredentials::builder("https://auth.example.com/oauth/token", "my-client", "s3cr3t")
//!     .scope("orders:read")
//!     .build()?;
//!
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<http_body_util::Full<bytes::Bytes>>();
//!
//! let api = ServiceBuilder::new()
//!     .layer(TokenLayer::new(source))
//!     .timeout(Duration::from_secs(10))
//!     .service(client);
//!
//! let request = http::Request::get("http://api.example.com/orders")
//!     .body(http_body_util::Full::default())?;
//! let response = api.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `reqwest` (default): reqwest with rustls as the HTTP client for token
//!   endpoints. Without it, pass any tower HTTP service through
//!   [`http_client::TowerClient`].
#![warn(missing_docs, rust_2018_idioms)]
#![deny(unsafe_code, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod adapter;
pub mod cache;
pub mod challenge;
pub mod dialect;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod http_client;
pub mod layer;
pub mod preset;
pub mod revoke;
pub mod secret;
pub mod source;
pub mod token;

pub use cache::{Stats, TokenCache};
pub use error::{BoxError, ConfigError, Error};
pub use layer::{TokenLayer, TokenLayerBuilder, TokenService};
pub use preset::Provider;
pub use revoke::{RevokeRequest, RevokeService, TokenKind};
pub use secret::{AccessToken, ClientSecret, RefreshToken};
pub use source::{ClientCredentials, TokenSource};
pub use token::Token;

/// The README's examples, compiled as doc-tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
