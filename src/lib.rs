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
//! - one [`Transport`] (HTTP client, timeout, body cap, plain-http
//!   permission) is shared by every builder that talks to an endpoint;
//! - errors are typed ([`Error`], with RFC 6749 §5.2 codes), and secrets are
//!   secret types whose `Debug` output is `[redacted]`.
//!
//! # Stacks
//!
//! [`TokenLayer`] wraps any `Service<http::Request<B>, Response =
//! http::Response<R>>`, and composes with `ServiceBuilder`, tower's
//! `Timeout`, `Retry`, `ConcurrencyLimit`, `Buffer` and tower-http layers:
//!
//! - **hyper-util**'s legacy `Client`: as it is (the example below);
//! - **reqwest**: [`middleware::TokenMiddleware`] (feature
//!   `reqwest-middleware`) keeps `ClientWithMiddleware`, `RequestBuilder`
//!   and `reqwest::Response`; or [`adapter::ReqwestService`] puts a
//!   `reqwest::Client` under the layer;
//! - **tonic** (feature `tonic`): around a `Channel`
//!   (`HealthClient::new(layer.layer(channel))`); a call answered
//!   `UNAUTHENTICATED` (`grpc-status: 16`) is sent again with a fresh token,
//!   its body recorded while it was sent ([`replay`]);
//! - **axum**: keep a [`TokenService`] in the app state and clone it in
//!   handlers that call downstream APIs; every clone shares one cache;
//! - **several APIs, several tokens**: [`router::TokenRouterLayer`] sends
//!   each request to the cache of its API, by origin or by a
//!   [`router::Route`] extension.
//!
//! A request answered 401 is sent again with a fresh token when its body
//! can be: byte bodies are copied up front, streamed bodies recorded while
//! sent, up to a limit ([`replay`]). A custom face — a tonic `Interceptor`,
//! a middleware of your own — uses [`TokenCache::current`],
//! [`TokenCache::acquire`] and [`TokenCache::invalidate_if_current`].
//!
//! Each has a runnable example in `examples/` (`hyper_client`,
//! `reqwest_client`, `tonic_client`, `axum_downstream`). With
//! [`allow_origin`](TokenLayerBuilder::allow_origin), the token goes only to
//! the listed origins. Every layer counts what it did: [`TokenLayer::stats`].
//!
//! # Features
//!
//! - `reqwest` (default): reqwest as the HTTP client for token endpoints, and
//!   [`adapter::ReqwestService`] to put a `reqwest::Client` under the layer.
//!   It brings no TLS backend by itself; one of the next three does. Without
//!   it, give the token source a [`Transport`] with any tower HTTP service as
//!   its client, through [`http_client::TowerClient`].
//! - `rustls` (default): reqwest's TLS is rustls with aws-lc-rs.
//! - `rustls-no-provider`: reqwest's TLS is rustls with no crypto provider
//!   from this crate; the application installs its own (ring or aws-lc-rs)
//!   with `CryptoProvider::install_default` before building a token source.
//! - `native-tls`: reqwest's TLS is native-tls (OpenSSL on Linux).
//! - `reqwest-middleware`: [`middleware::TokenMiddleware`].
//! - `axum`, `tonic`: replay of those crates' request bodies after a
//!   rejected token.
//! - `store`: a token store shared by the replicas of a service
//!   ([`store`]); `redis`: that store on Redis or a Redis Cluster.
//!
//! The crate never installs a process-wide crypto provider. The README has
//! the table of what each feature pulls in.
//!
//! # Example
//!
//! A hyper-util client whose requests carry a token from a client
//! credentials grant (here both servers run on loopback).
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token::{ClientCredentials, TokenLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! # use axum::{routing::{get, post}, Json, Router};
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let base = format!("http://{}", listener.local_addr()?);
//! # let app = Router::new()
//! #     .route("/oauth/token", post(|| async {
//! #         Json(serde_json::json!({"access_token": "t-1", "token_type": "Bearer", "expires_in": 3600}))
//! #     }))
//! #     .route("/orders", get(|headers: http::HeaderMap| async move {
//! #         format!("orders for {}", headers["authorization"].to_str().unwrap())
//! #     }));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! # let (token_url, orders_url) = (format!("{base}/oauth/token"), format!("{base}/orders"));
//! let source = ClientCredentials::builder(token_url, tower_token::Credentials::new("my-client", "s3cr3t"))
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
//! let request = http::Request::get(orders_url).body(http_body_util::Full::default())?;
//! let response = api.oneshot(request).await?;
//! let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
//! assert_eq!(body, "orders for Bearer t-1");
//! # Ok(()) }
//! ```
#![warn(missing_docs, rust_2018_idioms)]
#![deny(unsafe_code, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod adapter;
pub mod auth;
pub mod cache;
pub mod challenge;
pub mod dialect;
pub mod discovery;
#[cfg(feature = "jose")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "aws-lc-rs", feature = "ring"))))]
pub mod dpop;
pub mod endpoint;
pub mod error;
mod face;
pub mod http_client;
#[cfg(feature = "jose")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "aws-lc-rs", feature = "ring"))))]
pub mod jose;
pub mod layer;
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub mod middleware;
mod origin;
pub mod preset;
pub mod replay;
pub mod revoke;
pub mod router;
pub mod secret;
pub mod source;
#[cfg(feature = "store")]
#[cfg_attr(docsrs, doc(cfg(feature = "store")))]
pub mod store;
pub mod token;
pub mod transport;

// Internal computations the fuzz targets in `fuzz/` check; only in builds
// with `--cfg fuzzing` (as cargo-fuzz makes them), never part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;

pub use cache::{Backoff, CurrentToken, Stats, TokenCache};
pub use dialect::{ClientAuth, Credentials};
pub use error::{BoxError, ConfigError, Endpoint, Error, ErrorCode, InvalidResponse};
pub use layer::{TokenLayer, TokenLayerBuilder, TokenService};
pub use preset::Provider;
pub use replay::ReplayBody;
pub use revoke::{RevokeRequest, RevokeService, TokenKind};
pub use router::TokenRouterLayer;
pub use secret::{AccessToken, ClientSecret, RefreshToken};
pub use source::{ClientCredentials, FetchReason, FetchRequest, TokenSource};
pub use token::Token;
pub use transport::Transport;

/// The README's examples, compiled as doc-tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
