//! Where tokens come from.
//!
//! A [`TokenSource`] fetches a fresh [`Token`]. The cache calls it, at most
//! once at a time, and hands it the refresh token it holds (if any) so that
//! sources which support the refresh-token grant can use it.
//!
//! Built in:
//!
//! - [`ClientCredentials`]: the OAuth 2.0 client credentials grant
//!   (RFC 6749 §4.4), with the refresh-token grant (§6) when the server issued
//!   a refresh token.
//! - [`ProviderSource`]: the token endpoints of providers with a dialect of
//!   their own (Kopo Kopo, OneLogin).
//! - [`from_fn`]: a user's async closure.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_token::{source, Token};
//!
//! # async fn demo() -> Result<(), tower_token::Error> {
//! let source = source::from_fn(|_request| async {
//!     // Read the token from wherever the application keeps it.
//!     Ok::<_, std::io::Error>(Token::new("static-token").with_expires_in(Duration::from_secs(60)))
//! });
//! # let _ = source;
//! # Ok(()) }
//! ```

use crate::error::Error;
use crate::http_client::BoxFuture;
use crate::secret::RefreshToken;
use crate::token::Token;
use std::{fmt, future::Future, sync::Arc};

mod client_credentials;
mod provider;

pub use client_credentials::{ClientCredentials, ClientCredentialsBuilder};
pub use provider::{ProviderSource, ProviderSourceBuilder};

/// Why the cache asks for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchReason {
    /// The cache is empty.
    Initial,
    /// The cached token expired (or entered its leeway).
    Expired,
    /// The cached token entered its refresh-ahead window.
    RefreshAhead,
    /// A request with the cached token was answered 401.
    Unauthorized,
}

/// What the cache passes to [`TokenSource::fetch`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FetchRequest {
    /// Why the token is needed.
    pub reason: FetchReason,
    /// The refresh token the cache holds, if the last token came with one.
    pub refresh_token: Option<RefreshToken>,
    /// The DPoP key of the layer (see [`crate::dpop`]), when it has one: the
    /// token request carries a proof made with it, and the token must come
    /// back DPoP-bound ([`Token::with_dpop`]).
    #[cfg(feature = "jose")]
    pub dpop: Option<crate::dpop::Dpop>,
}

impl FetchRequest {
    /// A request with no refresh token.
    pub fn new(reason: FetchReason) -> Self {
        Self {
            reason,
            refresh_token: None,
            #[cfg(feature = "jose")]
            dpop: None,
        }
    }
}

/// Sends a token request: with a DPoP proof, and the nonce retry, when the
/// cache has a DPoP key (see [`crate::dpop`]); as it is otherwise.
pub(crate) async fn send_token_request(
    http: &dyn crate::http_client::HttpClient,
    request: http::Request<bytes::Bytes>,
    limits: crate::http_client::Limits,
    fetch: &FetchRequest,
) -> Result<http::Response<bytes::Bytes>, Error> {
    #[cfg(feature = "jose")]
    return crate::dpop::execute_token_request(http, request, limits, fetch.dpop.as_ref()).await;
    #[cfg(not(feature = "jose"))]
    {
        let _ = fetch;
        crate::http_client::execute(http, request, limits, crate::error::Endpoint::Token).await
    }
}

/// Anything that can fetch a token.
///
/// The cache guarantees that at most one `fetch` per cache is running at a
/// time, and runs it in a task of its own, so it is not cancelled when the
/// request that started it is dropped.
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a fresh token.
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<Token, Error>>;

    /// Everything that shapes this source's tokens (endpoint, client,
    /// grant, scope, audience, resource, extra parameters), as one string:
    /// a shared token store keys its entries by it, so two sources that
    /// differ in any of them never share a token. `None` (the default) when
    /// the source cannot tell; a store then needs an explicit key.
    fn token_shape(&self) -> Option<String> {
        None
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<Token, Error>> {
        (**self).fetch(request)
    }

    fn token_shape(&self) -> Option<String> {
        (**self).token_shape()
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<Token, Error>> {
        (**self).fetch(request)
    }

    fn token_shape(&self) -> Option<String> {
        (**self).token_shape()
    }
}

/// A [`TokenSource`] from an async closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnSource<F> {
    f: F,
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

/// A [`TokenSource`] from an async closure.
///
/// The closure's error may be any error type; an [`Error`] is passed through
/// as it is, anything else becomes [`Error::Source`] (retried with backoff).
pub fn from_fn<F, Fut, E>(f: F) -> FnSource<F>
where
    F: Fn(FetchRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<crate::BoxError>,
{
    FnSource { f }
}

impl<F, Fut, E> TokenSource for FnSource<F>
where
    F: Fn(FetchRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<crate::BoxError>,
{
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<Token, Error>> {
        let fut = (self.f)(request);
        Box::pin(async move {
            fut.await.map_err(|e| {
                let e: crate::BoxError = e.into();
                match e.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(other) => Error::Source(Arc::from(other)),
                }
            })
        })
    }
}
