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
//!
//! # Converting between reqwest and `http` types
//!
//! reqwest converts both ways itself, and [`ReqwestService`] does, per call,
//! what the first and the third of these do:
//!
//! - `reqwest::Request::try_from(http::Request<B>)`, for any
//!   `B: Into<reqwest::Body>`: method, headers, version, extensions and body
//!   are kept; the URI must be absolute, or the result is an error whose
//!   `is_builder()` is true;
//! - `http::Request::<reqwest::Body>::try_from(reqwest::Request)`: the URL
//!   becomes the URI, and a request without a body gets an empty one;
//! - `http::Response::<reqwest::Body>::from(reqwest::Response)`: status,
//!   version, headers, extensions, and the body as it streams in; reqwest's
//!   `Response::url()` (where redirects ended) is not kept;
//! - `reqwest::Response::from(http::Response<T>)`, for any
//!   `T: Into<reqwest::Body>`: its `url()` is a placeholder unless the
//!   response was built with `reqwest::ResponseBuilderExt::url`.
//!
//! Settings that reqwest keeps in private extensions, such as a per-request
//! timeout (`reqwest::Request::timeout_mut`), have no `http` form: use the
//! client's (`reqwest::ClientBuilder::timeout`) or a tower `Timeout` layer,
//! as above.
//!
//! ```
//! use http_body_util::BodyExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! // `http` to reqwest, and back.
//! let request = http::Request::post("https://api.example.com/orders?page=2")
//!     .header(http::header::CONTENT_TYPE, "application/json")
//!     .body(reqwest::Body::from(r#"{"item":42}"#))?;
//! let request = reqwest::Request::try_from(request)?;
//! assert_eq!(request.url().as_str(), "https://api.example.com/orders?page=2");
//! assert_eq!(request.body().and_then(|b| b.as_bytes()), Some(&br#"{"item":42}"#[..]));
//! let request = http::Request::<reqwest::Body>::try_from(request)?;
//! assert_eq!(request.uri().to_string(), "https://api.example.com/orders?page=2");
//! assert_eq!(request.headers()[http::header::CONTENT_TYPE], "application/json");
//!
//! // A relative URI is an error, not a panic.
//! let relative = http::Request::get("/orders").body(reqwest::Body::default())?;
//! assert!(reqwest::Request::try_from(relative).unwrap_err().is_builder());
//!
//! // Responses: `http` to reqwest, and back.
//! let response = reqwest::Response::from(
//!     http::Response::builder().status(201).header("x-id", "7").body("made")?,
//! );
//! assert_eq!(response.status(), http::StatusCode::CREATED);
//! let response = http::Response::<reqwest::Body>::from(response);
//! assert_eq!(response.headers()["x-id"], "7");
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "made");
//! # Ok(()) }
//! ```

mod reqwest;

pub use self::reqwest::{ReqwestService, ResponseFuture};
