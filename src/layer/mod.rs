//! The layer: attach a cached token to every request, refresh it after a 401.
//!
//! [`TokenLayer`] wraps any tower HTTP client service
//! (`Service<http::Request<B>, Response = http::Response<R>>`) in a
//! [`TokenService`]. For each request it:
//!
//! 1. leaves it alone if it already carries the token header (unless
//!    [`override_existing`](TokenLayerBuilder::override_existing)), or if an
//!    origin allow-list is set ([`allow_origin`](TokenLayerBuilder::allow_origin))
//!    and the request is for another origin;
//! 2. inserts `Authorization: Bearer <token>` from the cache (a lock-free load
//!    and a clone of a header value built once per token), or waits for the
//!    one fetch in flight when the cache has no usable token;
//! 3. when the answer is 401 (without `error="insufficient_scope"`), or
//!    carries `grpc-status: 16` in its headers, invalidates the token it
//!    sent — only if it is still the cached one, so a burst of 401s causes one
//!    refresh — and, when the body can be replayed, sends the request once
//!    more with the new token on a clone of the inner service made ready
//!    first. A 403 is returned as it is.
//!
//! Which bodies are sent again is up to their type, through
//! [`ReplayBody`](crate::replay::ReplayBody): byte bodies are copied up
//! front (by reference count for `Full<Bytes>` and `Bytes`), type-erased
//! bodies (`BoxBody`, `UnsyncBoxBody`, `axum::body::Body`, `tonic::body::Body`,
//! a streamed `reqwest::Body`) are recorded while they are sent, up to
//! [`replay_limit`](TokenLayerBuilder::replay_limit) (64 KiB), and other
//! types opt in or out; see [`crate::replay`]. A request that cannot be sent
//! again gets the 401 back, and the next request carries the new token.
//!
//! The response body is the inner service's, in a [`ResponseBody`] that
//! watches a streamed gRPC answer's trailers: `grpc-status: 16` there drops
//! the token the call carried, so the next call carries a fresh one.
//!
//! A request that waits for a token holds no capacity of the inner service:
//! the instance its `poll_ready` made ready is dropped (giving back a
//! `Buffer` slot or a `ConcurrencyLimit` permit), and a clone is made ready
//! once the token is there. Waiting in `poll_ready` instead was rejected:
//! `poll_ready` does not know the request, so requests that pass through
//! untouched (another origin, their own header) would wait for a token too.
//!
//! If no token can be had, the request fails with an [`Error`](crate::Error)
//! (as a `BoxError`) and the inner service is not called: a request is never
//! sent without its token.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_token::{source, Token, TokenLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! let layer = TokenLayer::builder(source::from_fn(|_| async {
//!     Ok::<_, std::io::Error>(Token::new("t-1").with_expires_in(Duration::from_secs(3600)))
//! }))
//! .leeway(Duration::from_secs(60))
//! .build()?;
//!
//! // Any HTTP client service; here one that echoes the header it got.
//! let client = tower::service_fn(|req: http::Request<Empty<Bytes>>| async move {
//!     let auth = req.headers()[http::header::AUTHORIZATION].clone();
//!     Ok::<_, std::convert::Infallible>(http::Response::new(auth))
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .timeout(Duration::from_secs(5))
//!     .service(client);
//!
//! let response = svc.ready().await?.call(http::Request::new(Empty::new())).await?;
//! assert_eq!(response.body().get_ref(), "Bearer t-1");
//! # Ok(()) }
//! ```

mod body;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod local;
mod service;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::{TokenLayer, TokenLayerBuilder};
pub(crate) use self::local::Local;
pub use self::service::TokenService;
pub(crate) use self::service::attach_and_call;
