//! Presets: a provider's token source and revocation service from a base
//! URL and client credentials.
//!
//! | preset | token endpoint | revocation endpoint |
//! |---|---|---|
//! | [`kopokopo`] | `{base}/oauth/token` ([`ProviderSource`]) | `{base}/oauth/revoke` |
//! | [`onelogin`] | `https://<subdomain>/auth/oauth2/v2/token` ([`ProviderSource`], with refresh) | `https://<subdomain>/auth/oauth2/revoke` |
//! | [`korap`](fn@korap) | `{root}/oauth2/token` ([`ClientCredentials`], credentials in the body) | `{root}/oauth2/revoke` |
//! | [`rfc`] | the given URL ([`ClientCredentials`], Basic) | the given URL (RFC 7009, Basic) |
//!
//! The functions build with the defaults; [`Provider`]'s constructors return
//! a [`ProviderBuilder`] to set a scope, the client authentication, or the
//! [`Transport`] (HTTP client, timeout, body cap, plain http) that both
//! endpoints share: `Provider::rfc(…).transport(transport).build()`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_token::{preset, TokenLayer};
//!
//! # fn main() -> Result<(), tower_token::BoxError> {
//! let k2 = preset::kopokopo("https://sandbox.kopokopo.com", tower_token::Credentials::new("my-app", "s3cr3t"))?;
//! assert_eq!(k2.revoker().endpoint().url().as_str(), "https://sandbox.kopokopo.com/oauth/revoke");
//!
//! let (source, revoker) = k2.into_parts();
//! let api = ServiceBuilder::new()
//!     .layer(TokenLayer::new(source))
//!     .timeout(Duration::from_secs(10))
//!     .service(tower::service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     }));
//! # let _ = (api, revoker);
//! # Ok(()) }
//! ```

use crate::dialect::{self, ClientAuth, Credentials, Dialect, korap};
use crate::error::ConfigError;
use crate::revoke::{RevokeService, RevokeServiceBuilder};
use crate::secret::ClientSecret;
use crate::source::{ClientCredentials, ProviderSource, ProviderSourceBuilder, TokenSource};
use crate::transport::Transport;
use std::{fmt, sync::Arc};

/// A provider's token source and revocation service.
#[derive(Clone)]
pub struct Provider {
    source: Arc<dyn TokenSource>,
    revoker: RevokeService,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("revoker", &self.revoker)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Kopo Kopo at `base_url` (e.g. `https://sandbox.kopokopo.com`).
    pub fn kopokopo(base_url: impl Into<String>, credentials: Credentials) -> ProviderBuilder {
        ProviderBuilder::new(Kind::KopoKopo(base_url.into()), credentials)
    }

    /// OneLogin: `acme.onelogin.com`, `acme`, or a full base URL.
    pub fn onelogin(
        subdomain_or_base_url: impl Into<String>,
        credentials: Credentials,
    ) -> ProviderBuilder {
        ProviderBuilder::new(Kind::OneLogin(subdomain_or_base_url.into()), credentials)
    }

    /// KorAP/Kustvakt at its service root (e.g.
    /// `https://korap.example/api/v1.0`). Kustvakt grants client
    /// credentials to confidential clients only; a public client's source
    /// sends just its `client_id`.
    pub fn korap(root: impl Into<String>, credentials: Credentials) -> ProviderBuilder {
        ProviderBuilder::new(Kind::Korap(root.into()), credentials)
    }

    /// A standard RFC 6749 token endpoint and RFC 7009 revocation endpoint,
    /// both with HTTP Basic client authentication unless changed with
    /// [`ProviderBuilder::auth`]. Public credentials mean no client
    /// authentication.
    pub fn rfc(
        token_url: impl Into<String>,
        revoke_url: impl Into<String>,
        credentials: Credentials,
    ) -> ProviderBuilder {
        ProviderBuilder::new(Kind::Rfc(token_url.into(), revoke_url.into()), credentials)
    }

    /// Puts a token source and a revocation service together.
    pub fn new(source: impl TokenSource, revoker: RevokeService) -> Self {
        Self {
            source: Arc::new(source),
            revoker,
        }
    }

    /// The token source.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    /// The revocation service.
    pub fn revoker(&self) -> &RevokeService {
        &self.revoker
    }

    /// The token source and the revocation service.
    pub fn into_parts(self) -> (Arc<dyn TokenSource>, RevokeService) {
        (self.source, self.revoker)
    }
}

#[derive(Debug)]
enum Kind {
    KopoKopo(String),
    OneLogin(String),
    Korap(String),
    Rfc(String, String),
}

/// Builds a [`Provider`]; start with one of its constructors.
#[derive(Debug)]
pub struct ProviderBuilder {
    kind: Kind,
    credentials: Credentials,
    auth: ClientAuth,
    scope: Option<String>,
    transport: Transport,
}

impl ProviderBuilder {
    fn new(kind: Kind, credentials: Credentials) -> Self {
        Self {
            kind,
            credentials,
            auth: ClientAuth::Basic,
            scope: None,
            transport: Transport::default(),
        }
    }

    /// The client authentication of the [`Provider::rfc`] preset (Basic by
    /// default). The other presets fix their own and ignore this.
    pub fn auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The `scope` of token requests, for the presets whose token endpoint
    /// takes one ([`Provider::rfc`], [`Provider::korap`]).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The HTTP client, limits and plain-http permission of both endpoints
    /// (default: [`Transport::default`]). Both use one HTTP client, the
    /// default one included.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Checks the configuration and builds both endpoints.
    pub fn build(self) -> Result<Provider, ConfigError> {
        let transport = &self.transport;
        let revoker = |b: RevokeServiceBuilder| b.transport(transport.clone()).build();
        let provider_source = |b: ProviderSourceBuilder| b.transport(transport.clone()).build();
        // A client without a secret sends none: a secret method becomes
        // `none`; keys and certificates are kept as they are.
        let effective = |auth: ClientAuth| {
            let needs_secret = matches!(
                auth,
                ClientAuth::Basic
                    | ClientAuth::RequestBody
                    | ClientAuth::AutoDetect
                    | ClientAuth::ClientSecretJwt
            );
            if needs_secret && self.credentials.client_secret().is_none() {
                ClientAuth::None
            } else {
                auth
            }
        };
        let client_credentials = |token_url: String, auth: ClientAuth| {
            let mut b = ClientCredentials::builder(token_url, self.credentials.clone())
                .auth(effective(auth))
                .transport(transport.clone());
            if let Some(scope) = &self.scope {
                b = b.scope(scope.clone());
            }
            b.build()
        };
        let creds = self.credentials.clone();
        let secret = || {
            creds
                .client_secret()
                .cloned()
                .unwrap_or_else(|| ClientSecret::new(""))
        };
        match &self.kind {
            Kind::KopoKopo(base) => Ok(Provider::new(
                provider_source(ProviderSource::kopokopo(
                    base.as_str(),
                    crate::Credentials::new(creds.client_id(), secret()),
                ))?,
                revoker(RevokeService::kopokopo(
                    base.as_str(),
                    crate::Credentials::new(creds.client_id(), secret()),
                ))?,
            )),
            Kind::OneLogin(base) => Ok(Provider::new(
                provider_source(ProviderSource::onelogin(
                    base.as_str(),
                    crate::Credentials::new(creds.client_id(), secret()),
                ))?,
                revoker(RevokeService::onelogin(
                    base.as_str(),
                    crate::Credentials::new(creds.client_id(), secret()),
                ))?,
            )),
            Kind::Korap(root) => {
                let base =
                    dialect::resolve_base(Dialect::Korap, root, transport.allows_insecure_http())?;
                Ok(Provider::new(
                    client_credentials(korap::token_url(&base).into(), ClientAuth::RequestBody)?,
                    revoker(RevokeService::korap(root.as_str(), creds.clone()))?,
                ))
            }
            Kind::Rfc(token_url, revoke_url) => {
                let auth = effective(self.auth);
                Ok(Provider::new(
                    client_credentials(token_url.clone(), auth)?,
                    revoker(RevokeService::rfc(revoke_url.as_str(), creds.clone()).auth(auth))?,
                ))
            }
        }
    }
}

/// Kopo Kopo's endpoints under `base_url`, with the defaults; see
/// [`Provider::kopokopo`].
pub fn kopokopo(
    base_url: impl Into<String>,
    credentials: Credentials,
) -> Result<Provider, ConfigError> {
    Provider::kopokopo(base_url, credentials).build()
}

/// OneLogin's endpoints, with the defaults; see [`Provider::onelogin`].
pub fn onelogin(
    subdomain_or_base_url: impl Into<String>,
    credentials: Credentials,
) -> Result<Provider, ConfigError> {
    Provider::onelogin(subdomain_or_base_url, credentials).build()
}

/// KorAP/Kustvakt's endpoints under `root`, with the defaults; see
/// [`Provider::korap`].
pub fn korap(root: impl Into<String>, credentials: Credentials) -> Result<Provider, ConfigError> {
    Provider::korap(root, credentials).build()
}

/// Standard endpoints with HTTP Basic client authentication; see
/// [`Provider::rfc`].
pub fn rfc(
    token_url: impl Into<String>,
    revoke_url: impl Into<String>,
    credentials: Credentials,
) -> Result<Provider, ConfigError> {
    Provider::rfc(token_url, revoke_url, credentials).build()
}
