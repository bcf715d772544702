//! The client credentials grant (RFC 6749 §4.4).

use super::{FetchRequest, TokenSource};
use crate::dialect::{ClientAuth, Credentials, Grant, rfc};
use crate::endpoint::endpoint_url;
use crate::error::{ConfigError, Error, ErrorCode};
use crate::http_client::{BoxFuture, HttpClient, Limits};
use crate::token::Token;
use crate::transport::Transport;
use http::StatusCode;
use std::{fmt, sync::Arc};
use url::Url;

/// Fetches tokens with the client credentials grant, and with the
/// refresh-token grant when the cache holds a refresh token.
///
/// A refresh-token grant answered with an OAuth error (`invalid_grant`,
/// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, or any
/// other code) falls back to the client credentials grant, once per fetch:
/// the refresh token is not worth asking with again, and the answer to the
/// client credentials grant replaces it in the cache. The exception is an
/// answer that asks the client to slow down (429, or a `Retry-After`): that
/// error is returned as it is, so the cache waits as told before the next
/// attempt.
///
/// # Example
///
/// ```
/// use tower_token::{ClientCredentials, dialect::ClientAuth};
///
/// let source = ClientCredentials::builder("https://auth.example.com/oauth/token", tower_token::Credentials::new("my-client", "s3cr3t"))
///     .auth(ClientAuth::RequestBody)
///     .scope("orders:read")
///     .audience("https://api.example.com")
///     .build()
///     .unwrap();
/// assert!(!format!("{source:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    url: Url,
    credentials: Credentials,
    auth: ClientAuth,
    scope: Option<String>,
    params: Vec<(String, String)>,
    limits: Limits,
    pub(crate) http: Arc<dyn HttpClient>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("url", &self.url.as_str())
            .field("credentials", &self.credentials)
            .field("auth", &self.auth)
            .field("scope", &self.scope)
            .field("params", &self.params)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Starts a builder for a confidential client at `token_url`.
    pub fn builder(
        token_url: impl Into<String>,
        credentials: Credentials,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            url: token_url.into(),
            credentials,
            auth: ClientAuth::Basic,
            scope: None,
            params: Vec::new(),
            transport: Transport::default(),
        }
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.url
    }

    /// The client's credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    async fn request(&self, grant: Grant<'_>, fetch: &FetchRequest) -> Result<Token, Error> {
        crate::auth::detecting(self.auth, &self.credentials, &self.url, |auth| {
            self.request_with(auth, grant, fetch)
        })
        .await
    }

    async fn request_with(
        &self,
        auth: ClientAuth,
        grant: Grant<'_>,
        fetch: &FetchRequest,
    ) -> Result<Token, Error> {
        let request = rfc::token_request(
            &self.url,
            &self.credentials,
            auth,
            grant,
            self.scope.as_deref(),
            &self.params,
        )?;
        // A client assertion is a credential for its short life: never in
        // an error.
        let assertion = crate::auth::assertion_in(request.body());
        let result = match super::send_token_request(&*self.http, request, self.limits, fetch).await
        {
            Ok(response) => rfc::parse_token_response(&response, &self.credentials),
            Err(e) => Err(e),
        };
        match (result, assertion) {
            (Err(e), Some(assertion)) => Err(e.redacted(&[&assertion])),
            (result, _) => result,
        }
    }
}

impl TokenSource for ClientCredentials {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<Token, Error>> {
        Box::pin(async move {
            if let Some(refresh) = &request.refresh_token {
                match self.request(Grant::RefreshToken(refresh), &request).await {
                    Err(e) if refresh_rejected(&e) => {
                        let e = e.redacted(&[refresh.secret()]);
                        tracing::debug!(
                            code = e.oauth_code().map_or("", ErrorCode::as_str),
                            status = e.status().map_or(0, |s| s.as_u16()),
                            "refresh-token grant answered with an OAuth error; using client credentials"
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
            self.request(Grant::ClientCredentials, &request)
                .await
                .map_err(|e| e.redacted(&secrets))
        })
    }

    fn token_shape(&self) -> Option<String> {
        // The parameters in a stable order, each length-prefixed so that no
        // two different sets read the same.
        let mut params = self.params.clone();
        params.sort();
        let mut shape = String::from("client_credentials");
        let scope = self.scope.as_deref().unwrap_or("");
        for part in [self.url.as_str(), self.credentials.client_id(), scope] {
            shape.push_str(&format!("|{}:{part}", part.len()));
        }
        shape.push_str(&format!("|auth:{:?}", self.auth));
        for (name, value) in &params {
            shape.push_str(&format!("|{}:{name}={}:{value}", name.len(), value.len()));
        }
        Some(shape)
    }
}

/// Whether a refresh-token grant's failure calls for the client credentials
/// grant: any OAuth error, unless the server asked to be left alone for a
/// while (429, or a `Retry-After`), which the cache honours instead.
pub(super) fn refresh_rejected(err: &Error) -> bool {
    match err {
        Error::OAuth {
            status,
            retry_after,
            ..
        } => retry_after.is_none() && *status != StatusCode::TOO_MANY_REQUESTS,
        _ => false,
    }
}

/// Builds a [`ClientCredentials`] source.
#[derive(Debug)]
pub struct ClientCredentialsBuilder {
    url: String,
    credentials: Credentials,
    auth: ClientAuth,
    scope: Option<String>,
    params: Vec<(String, String)>,
    transport: Transport,
}

impl fmt::Debug for dyn HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpClient")
    }
}

impl ClientCredentialsBuilder {
    /// How the client authenticates: Basic (the default), in the body, a
    /// signed assertion, mutual TLS, not at all, or detected (see
    /// [`auth`](crate::auth)).
    pub fn auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The `scope` parameter (space-separated scopes).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds an `audience` parameter.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.param("audience", audience)
    }

    /// Adds an RFC 8707 `resource` parameter (may be given more than once).
    pub fn resource(self, resource: impl Into<String>) -> Self {
        self.param("resource", resource)
    }

    /// Adds any other form parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The HTTP client, limits and plain-http permission (default:
    /// [`Transport::default`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Checks the configuration and builds the source.
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        let url = endpoint_url(&self.url, self.transport.allows_insecure_http())?;
        crate::auth::check(self.auth, &self.credentials)?;
        Ok(ClientCredentials {
            url,
            credentials: self.credentials,
            auth: self.auth,
            scope: self.scope,
            params: self.params,
            limits: self.transport.limits(),
            http: self.transport.client()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Endpoint;
    use std::time::Duration;

    fn oauth(status: u16, code: &str, retry_after: Option<u64>) -> Error {
        Error::OAuth {
            endpoint: Endpoint::Token,
            status: StatusCode::from_u16(status).unwrap(),
            code: ErrorCode::parse(code),
            description: None,
            uri: None,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn refresh_fallback_classes() {
        for code in [
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_request",
            "invalid_client",
            "made_up",
        ] {
            assert!(refresh_rejected(&oauth(400, code, None)), "{code}");
        }
        assert!(refresh_rejected(&oauth(401, "invalid_client", None)));
        assert!(refresh_rejected(&oauth(500, "server_error", None)));
        assert!(refresh_rejected(&oauth(200, "invalid_scope", None)));
        // The server asked to slow down: honour it rather than ask again.
        assert!(!refresh_rejected(&oauth(429, "slow_down", None)));
        assert!(!refresh_rejected(&oauth(
            503,
            "temporarily_unavailable",
            Some(2)
        )));
        assert!(!refresh_rejected(&Error::Status {
            endpoint: Endpoint::Token,
            status: StatusCode::BAD_REQUEST,
            retry_after: None,
            body: String::new(),
        }));
        assert!(!refresh_rejected(&Error::Aborted));
    }
}
