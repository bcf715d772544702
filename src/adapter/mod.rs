//! Adapters that turn HTTP clients without an `http::Request` service into
//! one, so that [`TokenLayer`](crate::TokenLayer) can wrap them.
//!
//! [`TokenLayer`](crate::TokenLayer) wraps any
//! `Service<http::Request<B>, Response = http::Response<R>>`. hyper-util's
//! legacy `Client` and tonic's `Channel` are such services as they are;
//! reqwest's `Client` is a `Service<reqwest::Request>`, so it goes through
//! [`ReqwestService`] (feature `reqwest`, on by default):
//!
//! - it takes `http::Request<reqwest::Body>` (or, after
//!   [`with_body::<B>()`](ReqwestService::with_body), `http::Request<B>` for
//!   any `B: Into<reqwest::Body>`: `Bytes`, `Vec<u8>`, `String`…) and
//!   answers `http::Response<reqwest::Body>`;
//! - the request URI must be absolute (`https://host/path`), as reqwest
//!   needs a full URL;
//! - it is always ready and cheap to clone (a `reqwest::Client` is an `Arc`);
//! - a request answered 401 is sent again with a fresh token when its body
//!   can be replayed: a `reqwest::Body` made from bytes (`Body::from(vec)`,
//!   `Body::from(string)`…), `Bytes`, `Vec<u8>` or `String`. A streaming
//!   `reqwest::Body` gets the 401 back, and the next request carries the new
//!   token.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token::{adapter::ReqwestService, source, Token, TokenLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let url = format!("http://{}/orders", listener.local_addr()?);
//! # let app = axum::Router::new().route("/orders", axum::routing::post(
//! #     |headers: http::HeaderMap, body: String| async move {
//! #         format!("{} {body}", headers["authorization"].to_str().unwrap())
//! #     },
//! # ));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! let layer = TokenLayer::new(source::from_fn(|_| async {
//!     Ok::<_, std::io::Error>(Token::new("t-1").with_expires_in(Duration::from_secs(3600)))
//! }));
//! let api = ServiceBuilder::new()
//!     .layer(layer)
//!     .timeout(Duration::from_secs(10))
//!     .service(ReqwestService::new(reqwest::Client::new()));
//!
//! // `url` is an API on loopback that echoes the header and the body.
//! let request = http::Request::post(url)
//!     .header(http::header::CONTENT_TYPE, "application/json")
//!     .body(reqwest::Body::from(r#"{"item":42}"#))?;
//! let response = api.oneshot(request).await?;
//! let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
//! assert_eq!(body, r#"Bearer t-1 {"item":42}"#);
//! # Ok(()) }
//! ```

mod reqwest;

pub use self::reqwest::{ReqwestService, ResponseFuture};
