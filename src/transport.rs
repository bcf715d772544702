//! How the crate reaches token, revocation and discovery endpoints.
//!
//! A [`Transport`] holds the settings every builder that talks to an
//! endpoint needs, in one value:
//!
//! - the HTTP client ([`http_client`](Transport::http_client); by default
//!   reqwest, when the `reqwest` feature is on);
//! - the timeout of one exchange ([`timeout`](Transport::timeout), 10 s by
//!   default) and the largest answer read
//!   ([`max_response_bytes`](Transport::max_response_bytes), 64 KiB by
//!   default): the [`Limits`];
//! - whether plain `http` is allowed to hosts other than loopback
//!   ([`allow_insecure_http`](Transport::allow_insecure_http), off by
//!   default; see [`endpoint`](crate::endpoint)).
//!
//! Build it once and hand it to each builder with `.transport(…)`:
//! [`ClientCredentialsBuilder`](crate::source::ClientCredentialsBuilder),
//! [`ProviderSourceBuilder`](crate::source::ProviderSourceBuilder),
//! [`RevokeServiceBuilder`](crate::revoke::RevokeServiceBuilder),
//! [`ProviderBuilder`](crate::preset::ProviderBuilder) and
//! [`Discovery`](crate::discovery::Discovery). A builder not given one uses
//! [`Transport::default`].
//!
//! A transport is cheap to clone, and its clones share one HTTP client: the
//! one given, or the default client, which is built the first time a
//! builder needs it and then reused by every builder handed a clone. So a
//! token source and a revocation service built from one transport share a
//! connection pool. Without the `reqwest` feature there is no default
//! client, and building without one given is
//! [`ConfigError::NoHttpClient`].
//!
//! # Example
//!
//! A token source and a revocation service reaching one authorization
//! server through one client (here a tower service standing in for the
//! server), with a shorter timeout.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token::dialect::Credentials;
//! use tower_token::http_client::TowerClient;
//! use tower_token::{ClientCredentials, RevokeRequest, RevokeService, TokenLayer, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! // A stand-in for the authorization server.
//! let server = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     let body = match req.uri().path() {
//!         "/oauth/token" => r#"{"access_token":"t-1","token_type":"Bearer","expires_in":3600}"#,
//!         _ => "",
//!     };
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
//! });
//!
//! let transport = Transport::new()
//!     .http_client(TowerClient::new(server))
//!     .timeout(Duration::from_secs(5))
//!     .max_response_bytes(16 * 1024);
//!
//! let source = ClientCredentials::builder("https://auth.example.com/oauth/token", tower_token::Credentials::new("my-client", "s3cr3t"))
//!     .transport(transport.clone())
//!     .build()?;
//! let revoker = RevokeService::rfc("https://auth.example.com/oauth/revoke", Credentials::new("my-client", "s3cr3t"))
//!     .transport(transport)
//!     .build()?;
//!
//! let api = ServiceBuilder::new()
//!     .layer(TokenLayer::builder(source).revoker(revoker.clone()).build()?)
//!     .service(tower::service_fn(|req: http::Request<String>| async move {
//!         let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(auth))
//!     }));
//! let response = api.oneshot(http::Request::new(String::new())).await?;
//! assert_eq!(response.body().get_ref(), "Bearer t-1");
//!
//! revoker.oneshot(RevokeRequest::access("t-1")).await?;
//! # Ok(()) }
//! ```

use crate::error::ConfigError;
use crate::http_client::{HttpClient, Limits};
use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

/// The transport settings shared by every builder that talks to an
/// endpoint: HTTP client, [`Limits`] and the plain-http permission. See
/// the [module docs](self).
///
/// Cheap to clone; clones share one HTTP client.
#[derive(Clone, Default)]
pub struct Transport {
    limits: Limits,
    allow_insecure_http: bool,
    /// The client given, or the default one once a builder has needed it.
    /// Shared by clones, so the default client is built at most once per
    /// transport.
    http: Arc<OnceLock<Arc<dyn HttpClient>>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("limits", &self.limits)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field(
                "http_client",
                &if self.http.get().is_some() {
                    "ready"
                } else {
                    "default, not built yet"
                },
            )
            .finish()
    }
}

impl Transport {
    /// The defaults: the default HTTP client, a 10 s timeout, a 64 KiB cap
    /// on answers, and `https` required except to loopback.
    pub fn new() -> Self {
        Self::default()
    }

    /// The HTTP client (default: reqwest with redirects off, when the
    /// `reqwest` feature is on). It must not follow redirects.
    pub fn http_client(mut self, client: impl HttpClient) -> Self {
        let client: Arc<dyn HttpClient> = Arc::new(client);
        self.http = Arc::new(OnceLock::from(client));
        self
    }

    /// The timeout of one exchange, from sending the request to the last
    /// byte of the answer (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = timeout;
        self
    }

    /// The largest answer read (default 64 KiB); a longer one is
    /// [`Error::BodyTooLarge`](crate::Error::BodyTooLarge).
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.limits.max_response_bytes = max;
        self
    }

    /// Allows plain-http endpoints on hosts other than loopback (loopback
    /// is always allowed; see [`endpoint`](crate::endpoint)).
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// The timeout and the cap on answers.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether plain http to hosts other than loopback is allowed.
    pub fn allows_insecure_http(&self) -> bool {
        self.allow_insecure_http
    }

    /// The HTTP client: the one given, or the default one, built on first
    /// use and shared by this transport's clones.
    pub(crate) fn client(&self) -> Result<Arc<dyn HttpClient>, ConfigError> {
        if let Some(client) = self.http.get() {
            return Ok(Arc::clone(client));
        }
        // Two builders racing here may both build a client; one is kept.
        let client = crate::http_client::default_client()?;
        Ok(Arc::clone(self.http.get_or_init(|| client)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Credentials;
    use crate::http_client::TowerClient;
    use crate::revoke::{RevokeRequest, RevokeService};
    use crate::source::{
        ClientCredentials, FetchReason, FetchRequest, ProviderSource, TokenSource,
    };
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_service::Service;

    /// A client that answers every request with a token and counts them.
    fn counting(hits: Arc<AtomicUsize>) -> impl HttpClient {
        TowerClient::new(tower::service_fn(
            move |_req: http::Request<Full<Bytes>>| {
                hits.fetch_add(1, Ordering::SeqCst);
                async {
                    let body = r#"{"access_token":"t","token_type":"Bearer","expires_in":60}"#;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(body.as_bytes()),
                    )))
                }
            },
        ))
    }

    #[tokio::test]
    async fn one_client_for_every_builder() {
        let hits = Arc::new(AtomicUsize::new(0));
        let transport = Transport::new().http_client(counting(Arc::clone(&hits)));
        let source = ClientCredentials::builder(
            "https://as.example/token",
            crate::Credentials::new("i", "s"),
        )
        .transport(transport.clone())
        .build()
        .unwrap();
        let mut revoker =
            RevokeService::rfc("https://as.example/revoke", Credentials::new("i", "s"))
                .transport(transport.clone().timeout(Duration::from_secs(1)))
                .build()
                .unwrap();
        let provider =
            ProviderSource::kopokopo("https://k2.example", crate::Credentials::new("i", "s"))
                .transport(transport.clone())
                .build()
                .unwrap();
        assert!(Arc::ptr_eq(&transport.client().unwrap(), &source.http));
        assert!(Arc::ptr_eq(&source.http, &revoker.endpoint().http));
        assert!(Arc::ptr_eq(&source.http, &provider.http));
        assert_eq!(revoker.endpoint().limits().timeout, Duration::from_secs(1));

        source
            .fetch(FetchRequest::new(FetchReason::Initial))
            .await
            .unwrap();
        revoker.call(RevokeRequest::access("t")).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // Another client replaces the shared one in this clone only.
        let other = Arc::new(AtomicUsize::new(0));
        let replaced = transport.clone().http_client(counting(Arc::clone(&other)));
        assert!(!Arc::ptr_eq(
            &replaced.client().unwrap(),
            &transport.client().unwrap()
        ));
    }

    #[tokio::test]
    async fn a_preset_sends_both_requests_through_the_transport() {
        let hits = Arc::new(AtomicUsize::new(0));
        let transport = Transport::new().http_client(counting(Arc::clone(&hits)));
        let (source, revoker) = crate::preset::Provider::kopokopo(
            "https://k2.example",
            crate::Credentials::new("i", "s"),
        )
        .transport(transport)
        .build()
        .unwrap()
        .into_parts();
        let token = source
            .fetch(FetchRequest::new(FetchReason::Initial))
            .await
            .unwrap();
        revoker.revoke_token(&token).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn default_client_is_built_once_per_transport() {
        let transport = Transport::new();
        assert!(transport.http.get().is_none());
        let a = transport.clone().client().unwrap();
        let b = transport
            .clone()
            .timeout(Duration::from_secs(1))
            .client()
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A fresh transport has a client of its own.
        assert!(!Arc::ptr_eq(&a, &Transport::new().client().unwrap()));
    }

    #[cfg(not(feature = "reqwest"))]
    #[test]
    fn no_default_client_without_reqwest() {
        assert!(matches!(
            Transport::new().client(),
            Err(ConfigError::NoHttpClient)
        ));
    }

    #[test]
    fn plain_http_rule_follows_the_transport() {
        let no_client = || Transport::new().http_client(counting(Arc::default()));
        let revoke = |url: &str, transport: Transport| {
            RevokeService::rfc(url, Credentials::new("i", "s"))
                .transport(transport)
                .build()
        };
        assert!(matches!(
            revoke("http://as.example/revoke", no_client()),
            Err(ConfigError::InsecureUrl { .. })
        ));
        assert!(revoke("http://127.0.0.1:9/revoke", no_client()).is_ok());
        assert!(
            revoke(
                "http://as.example/revoke",
                no_client().allow_insecure_http()
            )
            .is_ok()
        );
        assert!(matches!(
            revoke("ftp://as.example/revoke", no_client().allow_insecure_http()),
            Err(ConfigError::InvalidUrl { .. })
        ));
    }
}
