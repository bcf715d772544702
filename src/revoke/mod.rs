//! Token revocation as a tower service.
//!
//! [`RevokeService`] is a `tower_service::Service<`[`RevokeRequest`]`>`:
//! each call revokes one token, named together with its [`TokenKind`], and
//! answers `Ok(())` once the server confirmed it. Being a service, it
//! composes with tower's `Timeout`, `Retry`, `ConcurrencyLimit` and
//! `Buffer`; it is cheap to clone and always ready.
//!
//! The service speaks one of the [dialects](crate::dialect):
//!
//! | constructor | request |
//! |---|---|
//! | [`RevokeService::rfc`] | RFC 7009: form `token`, `token_type_hint`; client auth Basic, in the body, or none |
//! | [`RevokeService::kopokopo`] | `POST {base}/oauth/revoke`, form `client_id`, `client_secret`, `token` |
//! | [`RevokeService::korap`] | `POST {root}/oauth2/revoke`, form `client_id`, `client_secret` (confidential clients), `token`, `token_type` |
//! | [`RevokeService::onelogin`] | `POST https://<subdomain>/auth/oauth2/revoke`, JSON `{"access_token":…}`, `Authorization: client_id:…, client_secret:…` |
//!
//! Any 2xx is success — per RFC 7009 also for a token the server does not
//! know. A 503 (or 429) with `Retry-After` is an
//! [`Error::Status`](crate::Error::Status) carrying the delay, which
//! [`is_retriable`](crate::Error::is_retriable); any other answer is a typed
//! [`Error`](crate::Error) with the status and a body excerpt from which the
//! client secret and the token are redacted. Endpoints must be `https`
//! unless the host is loopback or plain http is allowed explicitly, and
//! requests follow the transport rules of [`http_client`](crate::http_client)
//! (no redirects, capped body, timeout), set with a
//! [`Transport`](crate::Transport).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token::dialect::Credentials;
//! use tower_token::http_client::TowerClient;
//! use tower_token::{RevokeRequest, RevokeService, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! // A stand-in for the authorization server: 200 to everything.
//! let server = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
//! });
//!
//! let revoke = RevokeService::rfc("https://auth.example.com/oauth/revoke", Credentials::new("my-client", "s3cr3t"))
//!     .transport(Transport::new().http_client(TowerClient::new(server)))
//!     .build()?;
//!
//! let revoke = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(5))
//!     .concurrency_limit(4)
//!     .service(revoke);
//! revoke.oneshot(RevokeRequest::access("eyJhbGciOi")).await?;
//! # Ok(()) }
//! ```

mod future;
mod request;
mod service;

pub use future::ResponseFuture;
pub use request::{RevokeRequest, TokenKind};
pub use service::{RevocationEndpoint, RevokeService, RevokeServiceBuilder};
