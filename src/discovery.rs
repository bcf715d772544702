//! Endpoints from an issuer URL: RFC 8414 authorization server metadata,
//! with OpenID Connect discovery as the fallback.
//!
//! [`discover`] (or [`Discovery`], to set the [`Transport`]) fetches
//! the metadata document of an issuer, trying in turn (see
//! [`metadata_urls`]):
//!
//! 1. `https://host/.well-known/oauth-authorization-server{/path}` (RFC 8414
//!    §3.1: the well-known segment goes between host and path);
//! 2. `https://host/.well-known/openid-configuration{/path}` (RFC 8414 §5);
//! 3. `https://host{/path}/.well-known/openid-configuration` (OpenID Connect
//!    Discovery 1.0 §4);
//! 4. `https://host{/path}/.well-known/oauth-authorization-server` (what
//!    some servers serve instead of 1).
//!
//! The next URL is tried when one is answered with an error status, a
//! redirect or an unusable document; an unreachable server ends the search.
//! The document's `issuer` must be identical to the issuer identifier asked
//! for, character for character (RFC 8414 §3.3): `https://as.example` and
//! `https://as.example/` are different issuers.
//! [`Discovery::allow_issuer_mismatch`] turns the check off.
//!
//! From the [`Metadata`] come the token endpoint, the revocation endpoint
//! and the client authentication to use with each: Basic when
//! `client_secret_basic` is supported (it is the default when the list is
//! absent), else the form body for `client_secret_post`, else none for
//! `none`. [`Metadata::client_credentials`] and [`Metadata::revoke_service`]
//! start the builders with all of that filled in; hand them the transport
//! discovery used, so that all three share one HTTP client.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_token::discovery::Discovery;
//! use tower_token::dialect::{ClientAuth, Credentials};
//! use tower_token::http_client::TowerClient;
//! use tower_token::Transport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! // A stand-in for the authorization server.
//! let server = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri(), "https://auth.example.com/.well-known/oauth-authorization-server");
//!     let doc = r#"{
//!         "issuer": "https://auth.example.com",
//!         "token_endpoint": "https://auth.example.com/oauth/token",
//!         "revocation_endpoint": "https://auth.example.com/oauth/revoke",
//!         "token_endpoint_auth_methods_supported": ["client_secret_post"]
//!     }"#;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(doc))))
//! });
//!
//! let transport = Transport::new().http_client(TowerClient::new(server));
//! let metadata = Discovery::new("https://auth.example.com")
//!     .transport(transport.clone())
//!     .fetch()
//!     .await?;
//! assert_eq!(metadata.token_auth(), Some(ClientAuth::RequestBody));
//! assert_eq!(metadata.revocation_auth(), Some(ClientAuth::Basic));
//!
//! let source = metadata
//!     .client_credentials(tower_token::Credentials::new("my-client", "s3cr3t"))?
//!     .transport(transport.clone())
//!     .build()?;
//! let revoke = metadata
//!     .revoke_service(Credentials::new("my-client", "s3cr3t"))?
//!     .transport(transport)
//!     .build()?;
//! assert_eq!(source.token_url().as_str(), "https://auth.example.com/oauth/token");
//! assert_eq!(revoke.endpoint().url().as_str(), "https://auth.example.com/oauth/revoke");
//! # Ok(()) }
//! ```

use crate::auth;
use crate::dialect::{ClientAuth, Credentials, rfc};
use crate::endpoint::endpoint_url;
use crate::error::{ConfigError, Endpoint, Error, InvalidResponse};
use crate::http_client::execute;
use crate::revoke::{RevokeService, RevokeServiceBuilder};
use crate::source::{ClientCredentials, ClientCredentialsBuilder};
use crate::transport::Transport;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde_json::{Map, Value};
use url::Url;

/// Fetches the metadata of `issuer` with the default [`Transport`]. See
/// the [module docs](self) and [`Discovery`].
pub async fn discover(issuer: &str) -> Result<Metadata, Error> {
    Discovery::new(issuer).fetch().await
}

/// What an authorization server's metadata document says (RFC 8414 §2),
/// as far as this crate uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// `issuer`.
    pub issuer: String,
    /// `token_endpoint`.
    pub token_endpoint: Url,
    /// `revocation_endpoint` (RFC 7009), if the server has one.
    pub revocation_endpoint: Option<Url>,
    /// `token_endpoint_auth_methods_supported`; absent means
    /// `client_secret_basic`.
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `revocation_endpoint_auth_methods_supported`; absent means
    /// `client_secret_basic`.
    pub revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `scopes_supported`.
    pub scopes_supported: Option<Vec<String>>,
    /// `grant_types_supported`; absent means `authorization_code` and
    /// `implicit`.
    pub grant_types_supported: Option<Vec<String>>,
    /// `mtls_endpoint_aliases.token_endpoint` (RFC 8705 §5): where token
    /// requests authenticated by mutual TLS go.
    pub mtls_token_endpoint: Option<Url>,
    /// `mtls_endpoint_aliases.revocation_endpoint` (RFC 8705 §5).
    pub mtls_revocation_endpoint: Option<Url>,
}

impl Metadata {
    /// The client authentication to use at the token endpoint; `None` when
    /// the server supports none of Basic, body and `none`.
    pub fn token_auth(&self) -> Option<ClientAuth> {
        select_auth(self.token_endpoint_auth_methods_supported.as_deref())
    }

    /// The client authentication to use at the revocation endpoint; `None`
    /// when the server supports none of Basic, body and `none`.
    pub fn revocation_auth(&self) -> Option<ClientAuth> {
        select_auth(self.revocation_endpoint_auth_methods_supported.as_deref())
    }

    /// A [`ClientCredentials`] builder for the token endpoint, with the
    /// first method of [`auth::DEFAULT_PREFERENCE`] that the server lists
    /// in `token_endpoint_auth_methods_supported` and `credentials` have
    /// the material for (see [`auth::select`]); mutual TLS goes to the
    /// `mtls_endpoint_aliases` token endpoint when the server has one.
    pub fn client_credentials(
        &self,
        credentials: Credentials,
    ) -> Result<ClientCredentialsBuilder, ConfigError> {
        self.client_credentials_preferring(credentials, auth::DEFAULT_PREFERENCE)
    }

    /// As [`client_credentials`](Self::client_credentials), picking in the
    /// order of `preference` (methods left out of it are never used).
    pub fn client_credentials_preferring(
        &self,
        credentials: Credentials,
        preference: &[ClientAuth],
    ) -> Result<ClientCredentialsBuilder, ConfigError> {
        let auth = auth::select(
            self.token_endpoint_auth_methods_supported.as_deref(),
            &credentials,
            preference,
        )?;
        let url = match (&self.mtls_token_endpoint, auth.is_mtls()) {
            (Some(alias), true) => alias,
            _ => &self.token_endpoint,
        };
        Ok(ClientCredentials::builder(url.as_str(), credentials).auth(auth))
    }

    /// A [`RevokeService`] builder for the revocation endpoint, with the
    /// method picked as for [`client_credentials`](Self::client_credentials)
    /// from `revocation_endpoint_auth_methods_supported` (none for a public
    /// client with neither key nor certificate).
    pub fn revoke_service(
        &self,
        credentials: Credentials,
    ) -> Result<RevokeServiceBuilder, ConfigError> {
        self.revoke_service_preferring(credentials, auth::DEFAULT_PREFERENCE)
    }

    /// As [`revoke_service`](Self::revoke_service), picking in the order
    /// of `preference`.
    pub fn revoke_service_preferring(
        &self,
        credentials: Credentials,
        preference: &[ClientAuth],
    ) -> Result<RevokeServiceBuilder, ConfigError> {
        let url = self
            .revocation_endpoint
            .as_ref()
            .ok_or(ConfigError::Missing("revocation_endpoint"))?;
        let public = credentials.client_secret().is_none()
            && auth::missing_material(ClientAuth::PrivateKeyJwt, &credentials).is_some()
            && !credentials.has_client_certificate();
        let auth = if public {
            ClientAuth::None
        } else {
            auth::select(
                self.revocation_endpoint_auth_methods_supported.as_deref(),
                &credentials,
                preference,
            )?
        };
        let url = match (&self.mtls_revocation_endpoint, auth.is_mtls()) {
            (Some(alias), true) => alias,
            _ => url,
        };
        Ok(RevokeService::rfc(url.as_str(), credentials).auth(auth))
    }
}

/// Picks the client authentication from an `…_auth_methods_supported` list:
/// Basic if `client_secret_basic` is listed or the list is absent (the
/// RFC 8414 default), else the body for `client_secret_post`, else none for
/// `none`.
pub fn select_auth(methods: Option<&[String]>) -> Option<ClientAuth> {
    let Some(methods) = methods else {
        return Some(ClientAuth::Basic);
    };
    let has = |m: &str| methods.iter().any(|x| x == m);
    if has("client_secret_basic") {
        Some(ClientAuth::Basic)
    } else if has("client_secret_post") {
        Some(ClientAuth::RequestBody)
    } else if has("none") {
        Some(ClientAuth::None)
    } else {
        None
    }
}

/// The metadata URLs of `issuer`, in the order they are tried (see the
/// [module docs](self)).
pub fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut urls: Vec<Url> = Vec::with_capacity(4);
    for suffix in [
        format!("/.well-known/oauth-authorization-server{path}"),
        format!("/.well-known/openid-configuration{path}"),
        format!("{path}/.well-known/openid-configuration"),
        format!("{path}/.well-known/oauth-authorization-server"),
    ] {
        let mut url = issuer.clone();
        url.set_path(&suffix);
        url.set_query(None);
        url.set_fragment(None);
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// Builds the `GET` for one metadata URL.
pub fn metadata_request(url: &Url) -> Result<http::Request<Bytes>, Error> {
    http::Request::builder()
        .method(Method::GET)
        .uri(url.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Bytes::new())
        .map_err(|e| Error::Request {
            endpoint: Endpoint::Discovery,
            reason: e.to_string(),
        })
}

/// Parses a metadata document. `token_endpoint` is required; the lists
/// must be lists of strings when present. Unknown fields are ignored.
pub fn parse_metadata(response: &http::Response<Bytes>) -> Result<Metadata, Error> {
    let status = response.status();
    if !status.is_success() {
        return Err(rfc::error_response(Endpoint::Discovery, response, &[]));
    }
    let invalid = |reason| Error::invalid(Endpoint::Discovery, status, reason);
    let object = rfc::json_object(response.body()).map_err(invalid)?;
    metadata_from_object(&object).map_err(invalid)
}

fn metadata_from_object(object: &Map<String, Value>) -> Result<Metadata, InvalidResponse> {
    fn string<'a>(
        object: &'a Map<String, Value>,
        name: &'static str,
    ) -> Result<Option<&'a str>, InvalidResponse> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(InvalidResponse::InvalidField(name)),
        }
    }
    fn url(
        object: &Map<String, Value>,
        name: &'static str,
    ) -> Result<Option<Url>, InvalidResponse> {
        string(object, name)?
            .map(|s| Url::parse(s).map_err(|_| InvalidResponse::InvalidField(name)))
            .transpose()
    }
    fn list(
        object: &Map<String, Value>,
        name: &'static str,
    ) -> Result<Option<Vec<String>>, InvalidResponse> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or(InvalidResponse::InvalidField(name)),
            Some(_) => Err(InvalidResponse::InvalidField(name)),
        }
    }
    fn alias(object: &Map<String, Value>, name: &str) -> Result<Option<Url>, InvalidResponse> {
        const ALIASES: &str = "mtls_endpoint_aliases";
        match object.get(ALIASES) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(aliases)) => match aliases.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Url::parse(s)
                    .map(Some)
                    .map_err(|_| InvalidResponse::InvalidField(ALIASES)),
                Some(_) => Err(InvalidResponse::InvalidField(ALIASES)),
            },
            Some(_) => Err(InvalidResponse::InvalidField(ALIASES)),
        }
    }
    Ok(Metadata {
        issuer: string(object, "issuer")?
            .ok_or(InvalidResponse::MissingField("issuer"))?
            .to_owned(),
        token_endpoint: url(object, "token_endpoint")?
            .ok_or(InvalidResponse::MissingField("token_endpoint"))?,
        revocation_endpoint: url(object, "revocation_endpoint")?,
        token_endpoint_auth_methods_supported: list(
            object,
            "token_endpoint_auth_methods_supported",
        )?,
        revocation_endpoint_auth_methods_supported: list(
            object,
            "revocation_endpoint_auth_methods_supported",
        )?,
        scopes_supported: list(object, "scopes_supported")?,
        grant_types_supported: list(object, "grant_types_supported")?,
        mtls_token_endpoint: alias(object, "token_endpoint")?,
        mtls_revocation_endpoint: alias(object, "revocation_endpoint")?,
    })
}

/// Whether a document's `issuer` is the issuer identifier asked for: the
/// string as the caller gave it (not `Url`'s serialization, which adds a
/// `/` to an empty path), compared exactly (RFC 8414 §3.3).
fn same_issuer(asked: &str, stated: &str) -> bool {
    asked == stated
}

/// Fetches an issuer's metadata through a chosen [`Transport`].
#[derive(Debug)]
pub struct Discovery {
    issuer: String,
    transport: Transport,
    check_issuer: bool,
}

impl Discovery {
    /// Discovery for the issuer identifier `issuer` (an `https` URL).
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            transport: Transport::default(),
            check_issuer: true,
        }
    }

    /// The HTTP client, limits (of each metadata request) and plain-http
    /// permission (default: [`Transport::default`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Accepts a document whose `issuer` differs from the issuer asked for
    /// (RFC 8414 §3.3 says to reject it; some servers get it wrong, often by
    /// a trailing slash).
    pub fn allow_issuer_mismatch(mut self) -> Self {
        self.check_issuer = false;
        self
    }

    /// Fetches and parses the metadata, trying the URLs of
    /// [`metadata_urls`] in turn.
    pub async fn fetch(self) -> Result<Metadata, Error> {
        let config = |e: ConfigError| Error::Request {
            endpoint: Endpoint::Discovery,
            reason: e.to_string(),
        };
        let issuer =
            endpoint_url(&self.issuer, self.transport.allows_insecure_http()).map_err(config)?;
        let http = self.transport.client().map_err(config)?;
        let limits = self.transport.limits();
        let mut first_error: Option<Error> = None;
        let mut informative: Option<Error> = None;
        for url in metadata_urls(&issuer) {
            let outcome = async {
                let response =
                    execute(&*http, metadata_request(&url)?, limits, Endpoint::Discovery).await?;
                let metadata = parse_metadata(&response)?;
                if self.check_issuer && !same_issuer(&self.issuer, &metadata.issuer) {
                    return Err(Error::invalid(
                        Endpoint::Discovery,
                        response.status(),
                        InvalidResponse::IssuerMismatch,
                    ));
                }
                Ok(metadata)
            }
            .await;
            let err = match outcome {
                Ok(metadata) => {
                    tracing::debug!(url = %url, "authorization server metadata found");
                    return Ok(metadata);
                }
                Err(err) => err,
            };
            tracing::debug!(url = %url, error = %err, "no usable metadata here");
            if matches!(err, Error::Transport { .. } | Error::Timeout { .. }) {
                return Err(err);
            }
            if informative.is_none() && err.status() != Some(StatusCode::NOT_FOUND) {
                informative = Some(err.clone());
            }
            first_error.get_or_insert(err);
        }
        Err(informative
            .or(first_error)
            .unwrap_or_else(|| Error::Request {
                endpoint: Endpoint::Discovery,
                reason: "no metadata URL to try".into(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> Vec<String> {
        metadata_urls(&Url::parse(issuer).unwrap())
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn well_known_urls() {
        assert_eq!(
            urls("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://as.example/tenant/1/"),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant/1",
                "https://as.example/.well-known/openid-configuration/tenant/1",
                "https://as.example/tenant/1/.well-known/openid-configuration",
                "https://as.example/tenant/1/.well-known/oauth-authorization-server",
            ]
        );
    }

    #[test]
    fn auth_selection() {
        let list = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(select_auth(None), Some(ClientAuth::Basic));
        assert_eq!(
            select_auth(Some(&list(&["client_secret_post", "client_secret_basic"]))),
            Some(ClientAuth::Basic)
        );
        assert_eq!(
            select_auth(Some(&list(&["private_key_jwt", "client_secret_post"]))),
            Some(ClientAuth::RequestBody)
        );
        assert_eq!(select_auth(Some(&list(&["none"]))), Some(ClientAuth::None));
        assert_eq!(select_auth(Some(&list(&["private_key_jwt"]))), None);
    }

    fn doc(body: &str) -> Result<Metadata, Error> {
        parse_metadata(&http::Response::new(Bytes::from(body.to_owned())))
    }

    #[test]
    fn documents() {
        let m =
            doc(r#"{"issuer":"https://as.example","token_endpoint":"https://as.example/t","x":1}"#)
                .unwrap();
        assert_eq!(m.token_endpoint.as_str(), "https://as.example/t");
        assert_eq!(m.revocation_endpoint, None);
        assert!(matches!(
            m.revoke_service(Credentials::new("i", "s")),
            Err(ConfigError::Missing("revocation_endpoint"))
        ));
        for (body, reason) in [
            (
                r#"{"issuer":"https://as.example"}"#,
                InvalidResponse::MissingField("token_endpoint"),
            ),
            (
                r#"{"token_endpoint":"https://as.example/t"}"#,
                InvalidResponse::MissingField("issuer"),
            ),
            (
                r#"{"issuer":"i","token_endpoint":"not a url"}"#,
                InvalidResponse::InvalidField("token_endpoint"),
            ),
            (
                r#"{"issuer":"i","token_endpoint":"https://a/t","token_endpoint_auth_methods_supported":"client_secret_basic"}"#,
                InvalidResponse::InvalidField("token_endpoint_auth_methods_supported"),
            ),
            ("<html/>", InvalidResponse::NotJson),
        ] {
            match doc(body) {
                Err(Error::InvalidResponse { reason: r, .. }) => assert_eq!(r, reason, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(same_issuer("https://as.example", "https://as.example"));
        assert!(same_issuer("https://as.example/", "https://as.example/"));
        assert!(!same_issuer("https://as.example", "https://as.example/"));
        assert!(!same_issuer("https://as.example/", "https://as.example"));
        assert!(!same_issuer("https://as.example", "https://evil.example"));
        assert!(!same_issuer("https://as.example", "https://AS.example"));
    }
}
