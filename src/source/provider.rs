//! Token sources that speak a provider's own dialect (Kopo Kopo, OneLogin).

use super::{FetchRequest, TokenSource};
use crate::dialect::{self, ClientAuth, Credentials, Dialect, Grant, kopokopo, onelogin, rfc};
use crate::error::{ConfigError, Endpoint, Error, ErrorCode};
use crate::http_client::{BoxFuture, HttpClient, Limits, execute};
use crate::token::Token;
use crate::transport::Transport;
use http::StatusCode;
use std::{fmt, sync::Arc};
use url::Url;

/// Fetches tokens from a provider whose token endpoint is not plain
/// RFC 6749: Kopo Kopo (form body, no refresh tokens) or OneLogin (JSON
/// body, its own `Authorization` header, refresh tokens).
///
/// For OneLogin, when the cache holds a refresh token the source uses the
/// refresh-token grant first, and falls back to the client credentials,
/// once per fetch, when that is answered with any OAuth error
/// (`invalid_grant`, `unauthorized_client`, `invalid_scope`, …) or a 401 —
/// unless the answer asks the client to slow down (429, or a
/// `Retry-After`), which the cache honours instead. Kopo Kopo always uses the
/// client credentials. See [`dialect::kopokopo`] and [`dialect::onelogin`]
/// for the wire formats.
///
/// # Example
///
/// ```
/// use tower_token::source::ProviderSource;
///
/// let source = ProviderSource::onelogin("acme.onelogin.com", tower_token::Credentials::new("my-client", "s3cr3t"))
///     .build()
///     .unwrap();
/// assert_eq!(source.token_url().as_str(), "https://acme.onelogin.com/auth/oauth2/v2/token");
/// assert!(!format!("{source:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct ProviderSource {
    dialect: Dialect,
    url: Url,
    credentials: Credentials,
    limits: Limits,
    pub(crate) http: Arc<dyn HttpClient>,
}

impl fmt::Debug for ProviderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSource")
            .field("dialect", &self.dialect)
            .field("url", &self.url.as_str())
            .field("credentials", &self.credentials)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ProviderSource {
    /// Kopo Kopo's token endpoint, `{base_url}/oauth/token`.
    pub fn kopokopo(
        base_url: impl Into<String>,
        credentials: Credentials,
    ) -> ProviderSourceBuilder {
        ProviderSourceBuilder::new(Dialect::KopoKopo, base_url.into(), credentials)
    }

    /// OneLogin's token endpoint, `https://<subdomain>/auth/oauth2/v2/token`.
    ///
    /// `subdomain_or_base_url` is read by [`onelogin::base_url`]:
    /// `acme.onelogin.com`, `acme`, or a full URL.
    pub fn onelogin(
        subdomain_or_base_url: impl Into<String>,
        credentials: Credentials,
    ) -> ProviderSourceBuilder {
        ProviderSourceBuilder::new(Dialect::OneLogin, subdomain_or_base_url.into(), credentials)
    }

    /// The wire format.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.url
    }

    /// The client's credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn supports_refresh(&self) -> bool {
        !matches!(self.dialect, Dialect::KopoKopo)
    }

    async fn request(&self, grant: Grant<'_>) -> Result<Token, Error> {
        let (url, creds) = (&self.url, &self.credentials);
        let request = match self.dialect {
            Dialect::KopoKopo => kopokopo::token_request(url, creds)?,
            Dialect::OneLogin => onelogin::token_request(url, creds, grant)?,
            Dialect::Rfc { auth } => rfc::token_request(url, creds, auth, grant, None, &[])?,
            Dialect::Korap => {
                rfc::token_request(url, creds, ClientAuth::RequestBody, grant, None, &[])?
            }
        };
        let response = execute(&*self.http, request, self.limits, Endpoint::Token).await?;
        match self.dialect {
            Dialect::KopoKopo => kopokopo::parse_token_response(&response, creds),
            Dialect::OneLogin => onelogin::parse_token_response(&response, creds),
            Dialect::Rfc { .. } | Dialect::Korap => rfc::parse_token_response(&response, creds),
        }
    }
}

/// Whether a refresh-token grant failed in a way that makes the client
/// credentials worth a try: any OAuth error (as for
/// [`ClientCredentials`](super::ClientCredentials)), or a 401 whatever its
/// body, unless the server asked to be left alone for a while.
fn refresh_rejected(err: &Error) -> bool {
    match err {
        Error::OAuth { .. } => super::client_credentials::refresh_rejected(err),
        Error::Provider {
            status,
            retry_after,
            ..
        }
        | Error::Status {
            status,
            retry_after,
            ..
        } => *status == StatusCode::UNAUTHORIZED && retry_after.is_none(),
        _ => false,
    }
}

impl TokenSource for ProviderSource {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<Token, Error>> {
        Box::pin(async move {
            if let Some(refresh) = &request.refresh_token
                && self.supports_refresh()
            {
                match self.request(Grant::RefreshToken(refresh)).await {
                    Err(e) if refresh_rejected(&e) => {
                        let e = e.redacted(&[refresh.secret()]);
                        tracing::debug!(
                            code = e.oauth_code().map_or("", ErrorCode::as_str),
                            error = %e,
                            "refresh-token grant rejected; using client credentials"
                        );
                    }
                    // RFC 6749 §6: without a new refresh token, the old one stays.
                    Ok(token) if token.refresh_token().is_none() => {
                        return Ok(token.with_refresh_token(refresh.clone()));
                    }
                    Ok(token) => return Ok(token),
                    Err(e) => return Err(e.redacted(&[refresh.secret()])),
                }
            }
            // The server saw the refresh token in the failed grant and may
            // echo it in its answer to this one too.
            let secrets: Vec<&str> = request.refresh_token.iter().map(|r| r.secret()).collect();
            self.request(Grant::ClientCredentials)
                .await
                .map_err(|e| e.redacted(&secrets))
        })
    }
}

/// Builds a [`ProviderSource`]; start with one of its constructors.
#[derive(Debug)]
pub struct ProviderSourceBuilder {
    dialect: Dialect,
    url: String,
    credentials: Credentials,
    transport: Transport,
}

impl ProviderSourceBuilder {
    fn new(dialect: Dialect, url: String, credentials: Credentials) -> Self {
        Self {
            dialect,
            url,
            credentials,
            transport: Transport::default(),
        }
    }

    /// The HTTP client, limits and plain-http permission (default:
    /// [`Transport::default`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Checks the configuration and builds the source.
    pub fn build(self) -> Result<ProviderSource, ConfigError> {
        let base = dialect::resolve_base(
            self.dialect,
            &self.url,
            self.transport.allows_insecure_http(),
        )?;
        Ok(ProviderSource {
            dialect: self.dialect,
            url: dialect::token_url(self.dialect, &base),
            credentials: self.credentials,
            limits: self.transport.limits(),
            http: self.transport.client()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_fallback_classes() {
        let provider = |status: u16| Error::Provider {
            endpoint: Endpoint::Token,
            status: StatusCode::from_u16(status).unwrap(),
            kind: crate::error::ProviderError::AuthenticationFailure,
            retry_after: None,
        };
        assert!(refresh_rejected(&provider(401)));
        assert!(!refresh_rejected(&provider(500)));
        let oauth = |code: ErrorCode| Error::OAuth {
            endpoint: Endpoint::Token,
            status: StatusCode::BAD_REQUEST,
            code,
            description: None,
            uri: None,
            retry_after: None,
        };
        for code in [
            ErrorCode::InvalidGrant,
            ErrorCode::UnauthorizedClient,
            ErrorCode::UnsupportedGrantType,
            ErrorCode::InvalidScope,
        ] {
            assert!(refresh_rejected(&oauth(code.clone())), "{code}");
        }
        assert!(!refresh_rejected(&Error::Aborted));
    }

    // Building needs an HTTP client: the default one is reqwest's.
    #[cfg(feature = "reqwest")]
    #[test]
    fn urls() {
        let s = ProviderSource::kopokopo(
            "https://sandbox.kopokopo.com/",
            crate::Credentials::new("i", "s"),
        )
        .build()
        .unwrap();
        assert_eq!(
            s.token_url().as_str(),
            "https://sandbox.kopokopo.com/oauth/token"
        );
        assert!(matches!(
            ProviderSource::kopokopo("http://k2.example", crate::Credentials::new("i", "s"))
                .build(),
            Err(ConfigError::InsecureUrl { .. })
        ));
    }
}
