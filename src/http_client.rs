//! The HTTP client that talks to token and revocation endpoints.
//!
//! Anything that implements [`HttpClient`] can be used. Two are built in:
//!
//! - [`ReqwestClient`] (feature `reqwest`, on by default): reqwest with
//!   rustls, redirects off.
//! - [`TowerClient`]: any tower HTTP service, such as hyper-util's legacy
//!   `Client`, for users who build with `--no-default-features`.
//!
//! Whatever the client, the crate applies the transport rules itself (R12):
//! redirects are never followed (a 3xx is an
//! [`Error::Redirect`]), the response body is read
//! through a cap (64 KiB by default) and never buffered past it, and the
//! whole exchange times out (10 s by default). See [`Limits`]. The client
//! and the limits are set for every builder at once with a
//! [`Transport`](crate::Transport).
//!
//! # Example
//!
//! ```
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower_token::http_client::TowerClient;
//!
//! // Any `Service<http::Request<Full<Bytes>>>` that is `Clone + Send + Sync`.
//! let svc = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let client = TowerClient::new(svc);
//! # let _ = client;
//! ```

use crate::error::{BoxError, Endpoint, Error};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};
use tower_service::Service;

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The response body an [`HttpClient`] returns.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Sends one request to a token or revocation endpoint.
///
/// Implementations only send; the caller applies [`Limits`] and refuses
/// redirects. They must not follow redirects themselves.
pub trait HttpClient: Send + Sync + 'static {
    /// Sends `request` and returns the response with its body unread.
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, Result<http::Response<ResponseBody>, BoxError>>;
}

impl<T: HttpClient + ?Sized> HttpClient for Arc<T> {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, Result<http::Response<ResponseBody>, BoxError>> {
        (**self).send(request)
    }
}

/// Transport limits for token and revocation requests (R12).
///
/// Set with [`Transport::timeout`](crate::Transport::timeout) and
/// [`Transport::max_response_bytes`](crate::Transport::max_response_bytes);
/// read back with [`Transport::limits`](crate::Transport::limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The whole exchange, from sending to the last body byte. Default 10 s.
    pub timeout: Duration,
    /// The largest response body read. Default 64 KiB.
    pub max_response_bytes: usize,
}

impl Limits {
    /// Limits with the given timeout and cap.
    pub fn new(timeout: Duration, max_response_bytes: usize) -> Self {
        Self {
            timeout,
            max_response_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
        }
    }
}

/// Sends `request` through `client` under `limits`: a 3xx is an error, the
/// body is collected up to the cap, and the whole exchange times out.
pub(crate) async fn execute(
    client: &dyn HttpClient,
    request: http::Request<Bytes>,
    limits: Limits,
    endpoint: Endpoint,
) -> Result<http::Response<Bytes>, Error> {
    let exchange = exchange(client, request, limits.max_response_bytes, endpoint);
    match tokio::time::timeout(limits.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            endpoint,
            timeout: limits.timeout,
        }),
    }
}

async fn exchange(
    client: &dyn HttpClient,
    request: http::Request<Bytes>,
    max_response_bytes: usize,
    endpoint: Endpoint,
) -> Result<http::Response<Bytes>, Error> {
    let response = match client.send(request).await {
        Ok(response) => response,
        Err(e) => return Err(Error::transport(endpoint, e)),
    };
    if response.status().is_redirection() {
        return Err(Error::Redirect {
            endpoint,
            status: response.status(),
        });
    }
    let (parts, mut body) = response.into_parts();
    let too_large = Error::BodyTooLarge {
        endpoint,
        limit: max_response_bytes,
    };
    if usize::try_from(http_body::Body::size_hint(&body).lower()).unwrap_or(usize::MAX)
        > max_response_bytes
    {
        return Err(too_large);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Err(Error::transport(endpoint, e)),
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max_response_bytes {
                return Err(too_large);
            }
            buf.extend_from_slice(&data);
        }
    }
    let body = buf.freeze();
    Ok(http::Response::from_parts(parts, body))
}

/// An [`HttpClient`] made from any tower HTTP service, such as hyper-util's
/// legacy `Client`.
///
/// Each request is sent on a clone of the service, made ready first.
#[derive(Clone)]
pub struct TowerClient<S> {
    inner: S,
}

impl<S> TowerClient<S> {
    /// Wraps a service.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> fmt::Debug for TowerClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerClient").finish_non_exhaustive()
    }
}

impl<S, B> HttpClient for TowerClient<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, Result<http::Response<ResponseBody>, BoxError>> {
        let mut svc = self.inner.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = svc.call(request.map(Full::new)).await.map_err(Into::into)?;
            Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()))
        })
    }
}

#[cfg(feature = "reqwest")]
pub use self::reqwest_client::ReqwestClient;

#[cfg(feature = "reqwest")]
mod reqwest_client {
    use super::*;
    use crate::error::ConfigError;

    /// The default [`HttpClient`]: reqwest with the TLS backend the crate's
    /// features choose (rustls with aws-lc-rs by default), redirects off.
    #[derive(Clone, Debug)]
    pub struct ReqwestClient {
        client: reqwest::Client,
    }

    impl ReqwestClient {
        /// A client with redirects off.
        pub fn new() -> Result<Self, ConfigError> {
            // With `rustls-no-provider` alone, reqwest panics when the
            // application has installed no rustls crypto provider: an error instead.
            #[cfg(all(
                feature = "rustls-no-provider",
                not(feature = "rustls"),
                not(feature = "native-tls")
            ))]
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                return Err(ConfigError::HttpClient(
                    "feature `rustls-no-provider`: install a rustls CryptoProvider \
                     (`CryptoProvider::install_default`) before building"
                        .into(),
                ));
            }
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
            Ok(Self { client })
        }

        /// Uses a client the application already has. It must not follow
        /// redirects: build it with `redirect(reqwest::redirect::Policy::none())`.
        /// (A 3xx answer is refused either way, but a client that follows
        /// redirects would send the request on before this crate sees it.)
        pub fn from_client(client: reqwest::Client) -> Self {
            Self { client }
        }
    }

    impl HttpClient for ReqwestClient {
        fn send(
            &self,
            request: http::Request<Bytes>,
        ) -> BoxFuture<'static, Result<http::Response<ResponseBody>, BoxError>> {
            let client = self.client.clone();
            Box::pin(async move {
                let request = reqwest::Request::try_from(request)?;
                let response = client.execute(request).await?;
                let response: http::Response<reqwest::Body> = response.into();
                Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()))
            })
        }
    }
}

/// The default client: reqwest when the feature is on. Built by
/// [`Transport`](crate::Transport) on first use.
pub(crate) fn default_client() -> Result<Arc<dyn HttpClient>, crate::error::ConfigError> {
    #[cfg(feature = "reqwest")]
    {
        Ok(Arc::new(ReqwestClient::new()?))
    }
    #[cfg(not(feature = "reqwest"))]
    {
        Err(crate::error::ConfigError::NoHttpClient)
    }
}
