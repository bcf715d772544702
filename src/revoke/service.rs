//! The revocation service and its builder.

use super::{ResponseFuture, RevokeRequest, TokenKind};
use crate::dialect::{self, ClientAuth, Credentials, Dialect, kopokopo, korap, onelogin, rfc};
use crate::error::{ConfigError, Endpoint, Error};
use crate::http_client::{HttpClient, Limits, execute};
use crate::token::Token;
use crate::transport::Transport;
use bytes::Bytes;
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;
use tracing::Instrument as _;
use url::Url;

/// A revocation endpoint: its dialect, URL and client credentials, and the
/// HTTP client and limits used to reach it.
///
/// [`request`](Self::request) and [`parse`](Self::parse) are pure; the
/// [`RevokeService`] that owns the endpoint sends what the first builds and
/// hands the answer to the second.
pub struct RevocationEndpoint {
    dialect: Dialect,
    url: Url,
    credentials: Credentials,
    limits: Limits,
    pub(crate) http: Arc<dyn HttpClient>,
}

impl fmt::Debug for RevocationEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationEndpoint")
            .field("dialect", &self.dialect)
            .field("url", &self.url.as_str())
            .field("credentials", &self.credentials)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RevocationEndpoint {
    /// The wire format.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The client's credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The transport limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Builds the HTTP request for `revoke` in this endpoint's dialect.
    ///
    /// OneLogin revokes an access token together with its refresh token and
    /// has no way to revoke a refresh token alone: asking it to is an
    /// [`Error::Request`].
    pub fn request(&self, revoke: &RevokeRequest) -> Result<http::Request<Bytes>, Error> {
        self.request_in(self.dialect, revoke)
    }

    fn request_in(
        &self,
        dialect: Dialect,
        revoke: &RevokeRequest,
    ) -> Result<http::Request<Bytes>, Error> {
        let (url, creds, token) = (&self.url, &self.credentials, revoke.secret());
        match dialect {
            Dialect::Rfc { auth } => rfc::revoke_request(url, creds, auth, token, revoke.hint()),
            Dialect::KopoKopo => kopokopo::revoke_request(url, creds, token),
            Dialect::Korap => korap::revoke_request(url, creds, token, revoke.hint()),
            Dialect::OneLogin => match revoke.kind() {
                TokenKind::Access => onelogin::revoke_request(url, creds, token),
                TokenKind::Refresh => Err(Error::Request {
                    endpoint: Endpoint::Revocation,
                    reason: "OneLogin revokes a refresh token only with its access token; \
                             revoke the access token"
                        .into(),
                }),
            },
        }
    }

    /// Reads the answer to `revoke` in this endpoint's dialect: `Ok(())` for
    /// a confirmed revocation, a typed [`Error`] otherwise (with the client
    /// secret and the token redacted).
    pub fn parse(
        &self,
        revoke: &RevokeRequest,
        response: &http::Response<Bytes>,
    ) -> Result<(), Error> {
        let mut secrets = self.credentials.secrets();
        secrets.push(revoke.secret());
        match self.dialect {
            Dialect::Rfc { .. } => rfc::parse_revoke_response(response, &secrets),
            Dialect::KopoKopo => kopokopo::parse_revoke_response(response, &secrets),
            Dialect::Korap => korap::parse_revoke_response(response, &secrets),
            Dialect::OneLogin => onelogin::parse_revoke_response(response, &secrets),
        }
    }

    async fn revoke(&self, revoke: RevokeRequest) -> Result<(), Error> {
        match self.dialect {
            Dialect::Rfc { auth } => {
                crate::auth::detecting(auth, &self.credentials, &self.url, |auth| {
                    self.revoke_with(Dialect::Rfc { auth }, &revoke)
                })
                .await
            }
            dialect => self.revoke_with(dialect, &revoke).await,
        }
    }

    async fn revoke_with(&self, dialect: Dialect, revoke: &RevokeRequest) -> Result<(), Error> {
        let request = self.request_in(dialect, revoke)?;
        let assertion = crate::auth::assertion_in(request.body());
        let result = match execute(&*self.http, request, self.limits, Endpoint::Revocation).await {
            Ok(response) => self.parse(revoke, &response),
            Err(e) => Err(e),
        };
        match (result, assertion) {
            (Err(e), Some(assertion)) => Err(e.redacted(&[&assertion])),
            (result, _) => result,
        }
    }
}

/// Revokes tokens: a `tower_service::Service<RevokeRequest>` answering
/// `Ok(())` once the server confirmed the revocation.
///
/// Cheap to clone (one `Arc`); always ready, so concurrency and rate limits
/// come from the middleware around it. See the [module docs](crate::revoke).
#[derive(Clone)]
pub struct RevokeService {
    endpoint: Arc<RevocationEndpoint>,
}

impl fmt::Debug for RevokeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeService")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl RevokeService {
    /// An RFC 7009 endpoint at `url`. Client authentication is HTTP Basic
    /// unless changed with [`RevokeServiceBuilder::auth`].
    pub fn rfc(url: impl Into<String>, credentials: Credentials) -> RevokeServiceBuilder {
        RevokeServiceBuilder::new(
            Dialect::Rfc {
                auth: ClientAuth::Basic,
            },
            url.into(),
            credentials,
        )
    }

    /// Kopo Kopo's endpoint, `{base_url}/oauth/revoke`.
    pub fn kopokopo(base_url: impl Into<String>, credentials: Credentials) -> RevokeServiceBuilder {
        RevokeServiceBuilder::new(Dialect::KopoKopo, base_url.into(), credentials)
    }

    /// KorAP/Kustvakt's endpoint, `{root}/oauth2/revoke`, for a confidential
    /// ([`Credentials::new`]) or public ([`Credentials::public`]) client.
    pub fn korap(root: impl Into<String>, credentials: Credentials) -> RevokeServiceBuilder {
        RevokeServiceBuilder::new(Dialect::Korap, root.into(), credentials)
    }

    /// OneLogin's endpoint, `https://<subdomain>/auth/oauth2/revoke`.
    ///
    /// `subdomain_or_base_url` is read by [`onelogin::base_url`]:
    /// `acme.onelogin.com`, `acme`, or a full URL.
    pub fn onelogin(
        subdomain_or_base_url: impl Into<String>,
        credentials: Credentials,
    ) -> RevokeServiceBuilder {
        RevokeServiceBuilder::new(Dialect::OneLogin, subdomain_or_base_url.into(), credentials)
    }

    /// The endpoint this service talks to.
    pub fn endpoint(&self) -> &RevocationEndpoint {
        &self.endpoint
    }

    /// The requests that revoke `token` and its refresh token (if any) in
    /// this dialect, in the order to send them.
    ///
    /// - RFC 7009: the refresh token, then the access token (a server may
    ///   or may not revoke the access tokens of a revoked refresh token).
    /// - KorAP: the refresh token, which revokes its access tokens; the
    ///   access token when there is no refresh token.
    /// - OneLogin, Kopo Kopo: the access token (OneLogin revokes its refresh
    ///   token with it; Kopo Kopo has none).
    pub fn requests_for(&self, token: &Token) -> Vec<RevokeRequest> {
        let access = RevokeRequest::access(token.access_token().clone());
        let refresh = token
            .refresh_token()
            .map(|r| RevokeRequest::refresh(r.clone()));
        match (self.endpoint.dialect, refresh) {
            (Dialect::Rfc { .. }, Some(refresh)) => vec![refresh, access],
            (Dialect::Korap, Some(refresh)) => vec![refresh],
            _ => vec![access],
        }
    }

    /// Revokes `token` and its refresh token, sending the requests of
    /// [`requests_for`](Self::requests_for) one after the other. Every
    /// request is sent even if one fails; the first error is returned.
    pub async fn revoke_token(&self, token: &Token) -> Result<(), Error> {
        let mut first_error = None;
        for request in self.requests_for(token) {
            if let Err(e) = self.call_inner(request).await
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn call_inner(&self, request: RevokeRequest) -> ResponseFuture {
        let endpoint = Arc::clone(&self.endpoint);
        let span = tracing::debug_span!(
            "revoke",
            dialect = endpoint.dialect.name(),
            kind = request.kind().as_str(),
        );
        ResponseFuture::new(Box::pin(
            async move {
                let result = endpoint.revoke(request).await;
                match &result {
                    Ok(()) => tracing::debug!("token revoked"),
                    Err(e) => tracing::debug!(error = %e, "revocation failed"),
                }
                result
            }
            .instrument(span),
        ))
    }
}

impl Service<RevokeRequest> for RevokeService {
    type Response = ();
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RevokeRequest) -> Self::Future {
        self.call_inner(request)
    }
}

/// Builds a [`RevokeService`]; start with one of its constructors.
#[derive(Debug)]
pub struct RevokeServiceBuilder {
    dialect: Dialect,
    url: String,
    credentials: Credentials,
    transport: Transport,
}

impl RevokeServiceBuilder {
    fn new(dialect: Dialect, url: String, credentials: Credentials) -> Self {
        Self {
            dialect,
            url,
            credentials,
            transport: Transport::default(),
        }
    }

    /// How the client authenticates to an RFC 7009 endpoint: Basic (the
    /// default), in the body, a signed assertion, mutual TLS, not at all
    /// (public client), or detected (see [`auth`](crate::auth)). The other
    /// dialects fix their own client authentication and ignore this.
    pub fn auth(mut self, auth: ClientAuth) -> Self {
        if let Dialect::Rfc { .. } = self.dialect {
            self.dialect = Dialect::Rfc { auth };
        }
        self
    }

    /// The HTTP client, limits and plain-http permission (default:
    /// [`Transport::default`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Checks the configuration and builds the service.
    pub fn build(self) -> Result<RevokeService, ConfigError> {
        let base = dialect::resolve_base(
            self.dialect,
            &self.url,
            self.transport.allows_insecure_http(),
        )?;
        if let Dialect::Rfc { auth } = self.dialect {
            crate::auth::check(auth, &self.credentials)?;
        }
        Ok(RevokeService {
            endpoint: Arc::new(RevocationEndpoint {
                dialect: self.dialect,
                url: dialect::revoke_url(self.dialect, &base),
                credentials: self.credentials,
                limits: self.transport.limits(),
                http: self.transport.client()?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;
    use crate::http_client::{BoxFuture, ResponseBody};

    struct NoClient;

    impl HttpClient for NoClient {
        fn send(
            &self,
            _request: http::Request<Bytes>,
        ) -> BoxFuture<'static, Result<http::Response<ResponseBody>, BoxError>> {
            Box::pin(async { Err("offline".into()) })
        }
    }

    fn no_client() -> Transport {
        Transport::new().http_client(NoClient)
    }

    fn build(builder: RevokeServiceBuilder) -> RevokeService {
        builder.transport(no_client()).build().unwrap()
    }

    #[test]
    fn urls_per_dialect() {
        let svc = build(RevokeService::kopokopo(
            "https://sandbox.kopokopo.com",
            crate::Credentials::new("i", "s"),
        ));
        assert_eq!(
            svc.endpoint().url().as_str(),
            "https://sandbox.kopokopo.com/oauth/revoke"
        );
        let svc = build(RevokeService::korap(
            "http://localhost:8089/api/v1.0",
            Credentials::public("i"),
        ));
        assert_eq!(
            svc.endpoint().url().as_str(),
            "http://localhost:8089/api/v1.0/oauth2/revoke"
        );
        let svc = build(RevokeService::onelogin(
            "acme",
            crate::Credentials::new("i", "s"),
        ));
        assert_eq!(
            svc.endpoint().url().as_str(),
            "https://acme.onelogin.com/auth/oauth2/revoke"
        );
        let svc = build(
            RevokeService::rfc("https://as.example/revoke", Credentials::new("i", "s"))
                .auth(ClientAuth::RequestBody),
        );
        assert_eq!(
            svc.endpoint().dialect(),
            Dialect::Rfc {
                auth: ClientAuth::RequestBody
            }
        );
        assert!(matches!(
            RevokeService::rfc("http://as.example/revoke", Credentials::new("i", "s"))
                .transport(no_client())
                .build(),
            Err(ConfigError::InsecureUrl { .. })
        ));
        assert!(
            RevokeService::onelogin("http://as.example", crate::Credentials::new("i", "s"))
                .transport(no_client().allow_insecure_http())
                .build()
                .is_ok()
        );
        assert!(!format!("{svc:?}").contains("\"s\""));
    }

    #[test]
    fn requests_per_dialect() {
        let token = Token::new("a").with_refresh_token("r");
        let kinds = |svc: RevokeService| {
            svc.requests_for(&token)
                .iter()
                .map(RevokeRequest::kind)
                .collect::<Vec<_>>()
        };
        use TokenKind::*;
        let creds = || Credentials::new("i", "s");
        assert_eq!(
            kinds(build(RevokeService::rfc("https://a.example/r", creds()))),
            [Refresh, Access]
        );
        assert_eq!(
            kinds(build(RevokeService::korap("https://a.example", creds()))),
            [Refresh]
        );
        assert_eq!(
            kinds(build(RevokeService::onelogin(
                "acme",
                crate::Credentials::new("i", "s")
            ))),
            [Access]
        );
        assert_eq!(
            kinds(build(RevokeService::kopokopo(
                "https://a.example",
                crate::Credentials::new("i", "s")
            ))),
            [Access]
        );
        let svc = build(RevokeService::onelogin(
            "acme",
            crate::Credentials::new("i", "s"),
        ));
        assert!(matches!(
            svc.endpoint().request(&RevokeRequest::refresh("r")),
            Err(Error::Request { .. })
        ));
    }

    #[tokio::test]
    async fn transport_errors_are_typed() {
        let svc = build(RevokeService::kopokopo(
            "https://a.example",
            crate::Credentials::new("i", "s"),
        ));
        let err = svc.revoke_token(&Token::new("a")).await.unwrap_err();
        assert!(matches!(
            err,
            Error::Transport {
                endpoint: Endpoint::Revocation,
                ..
            }
        ));
    }
}
