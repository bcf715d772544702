//! Wire formats of token and revocation endpoints.
//!
//! A dialect is data (how the client authenticates, where the credentials
//! go) plus small pure functions that build the `http::Request` and parse
//! the answer. None of them does I/O, so each can be tested, and fuzzed,
//! without a server.
//!
//! - [`rfc`]: RFC 6749 (client credentials §4.4, refresh §6) and RFC 7009.
//! - [`kopokopo`]: Kopo Kopo's token and revocation endpoints (form bodies,
//!   credentials always in the body, no refresh tokens).
//! - [`korap`]: KorAP/Kustvakt's revocation endpoint (the hint is called
//!   `token_type`); its token endpoint is the standard one.
//! - [`onelogin`]: OneLogin's JSON token and revocation endpoints, with the
//!   `client_id:…, client_secret:…` header and the `status` envelope.
//!
//! [`Dialect`] names one of them, for the services that pick the functions
//! to call at run time ([`RevokeService`](crate::RevokeService),
//! [`ProviderSource`](crate::source::ProviderSource)).
//!
//! # Example
//!
//! ```
//! use tower_token::dialect::{rfc, ClientAuth, Credentials, Grant};
//!
//! let url = url::Url::parse("https://auth.example.com/oauth/token").unwrap();
//! let creds = Credentials::new("my-client", "a+b/c:d%e f");
//! let req = rfc::token_request(&url, &creds, ClientAuth::Basic, Grant::ClientCredentials, Some("read"), &[])
//!     .unwrap();
//! assert_eq!(req.method(), http::Method::POST);
//! assert_eq!(req.body().as_ref(), b"grant_type=client_credentials&scope=read");
//! ```

use crate::secret::{ClientSecret, RefreshToken};
use url::Url;

pub mod kopokopo;
pub mod korap;
pub mod onelogin;
pub mod rfc;

/// What a client authenticates with: its id and, as the method needs, a
/// client secret, a signing key (`private_key_jwt`, features `aws-lc-rs` or
/// `ring`) or a TLS client certificate its HTTP client presents (mutual
/// TLS). See [`auth`](crate::auth) for the methods and what each needs.
///
/// ```
/// use tower_token::Credentials;
///
/// let secret = Credentials::new("my-client", "s3cr3t");
/// let public = Credentials::public("my-app");
/// let mtls = Credentials::public("my-service").with_client_certificate();
/// assert!(mtls.has_client_certificate() && !secret.has_client_certificate());
/// assert!(!format!("{secret:?}").contains("s3cr3t"));
/// # let _ = public;
/// ```
#[derive(Clone)]
pub struct Credentials {
    client_id: String,
    client_secret: Option<ClientSecret>,
    /// Encoded forms of the credentials that a server might echo back
    /// (the Basic credentials), redacted from errors like the secret.
    encoded: Vec<ClientSecret>,
    #[cfg(feature = "jose")]
    signing_key: Option<crate::jose::SigningKey>,
    client_certificate: bool,
    assertion: crate::auth::AssertionSettings,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Credentials");
        d.field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret);
        #[cfg(feature = "jose")]
        d.field("signing_key", &self.signing_key);
        d.field("client_certificate", &self.client_certificate)
            .field("assertion", &self.assertion)
            .finish()
    }
}

impl Credentials {
    /// A confidential client.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<ClientSecret>) -> Self {
        let client_id = client_id.into();
        let client_secret: ClientSecret = client_secret.into();
        // Both the RFC 6749 §2.3.1 form and the raw form, as a server might
        // echo either back.
        let encoded = vec![
            ClientSecret::new(basic_credentials(&client_id, client_secret.secret(), true)),
            ClientSecret::new(basic_credentials(&client_id, client_secret.secret(), false)),
        ];
        Self {
            client_id,
            client_secret: Some(client_secret),
            encoded,
            #[cfg(feature = "jose")]
            signing_key: None,
            client_certificate: false,
            assertion: Default::default(),
        }
    }

    /// A public client: an id and no secret.
    pub fn public(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            encoded: Vec::new(),
            #[cfg(feature = "jose")]
            signing_key: None,
            client_certificate: false,
            assertion: Default::default(),
        }
    }

    /// These credentials with a private key for `private_key_jwt`: each
    /// token and revocation request carries a fresh assertion signed with
    /// it (RFC 7523 §2.2).
    #[cfg(feature = "jose")]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "aws-lc-rs", feature = "ring"))))]
    pub fn with_signing_key(mut self, key: crate::jose::SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// The private key for `private_key_jwt`, if one was given.
    #[cfg(feature = "jose")]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "aws-lc-rs", feature = "ring"))))]
    pub fn signing_key(&self) -> Option<&crate::jose::SigningKey> {
        self.signing_key.as_ref()
    }

    /// States that the HTTP client these credentials are used with presents
    /// a TLS client certificate (mutual TLS, RFC 8705): `tls_client_auth`
    /// and `self_signed_tls_client_auth` need it. The crate cannot look
    /// inside an HTTP client, so discovery relies on this to know the
    /// client can use those methods.
    pub fn with_client_certificate(mut self) -> Self {
        self.client_certificate = true;
        self
    }

    /// Whether [`with_client_certificate`](Self::with_client_certificate)
    /// was called.
    pub fn has_client_certificate(&self) -> bool {
        self.client_certificate
    }

    /// The `aud` of client assertions (`private_key_jwt`,
    /// `client_secret_jwt`); [`Audience::Endpoint`](crate::auth::Audience::Endpoint)
    /// by default.
    pub fn with_assertion_audience(mut self, audience: crate::auth::Audience) -> Self {
        self.assertion.audience = audience;
        self
    }

    /// How long a client assertion is valid (`exp` − `iat`): 60 s by
    /// default, kept within 1 s and 10 min.
    pub fn with_assertion_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.assertion.lifetime = lifetime.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(600),
        );
        self
    }

    /// Whether client assertions carry `nbf` (equal to `iat`); off by
    /// default.
    pub fn with_assertion_not_before(mut self, not_before: bool) -> Self {
        self.assertion.not_before = not_before;
        self
    }

    #[cfg(feature = "jose")]
    pub(crate) fn assertion_settings(&self) -> &crate::auth::AssertionSettings {
        &self.assertion
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret, if this is a confidential client.
    pub fn client_secret(&self) -> Option<&ClientSecret> {
        self.client_secret.as_ref()
    }

    /// The strings that must never appear in an error or a log.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        self.client_secret
            .iter()
            .chain(&self.encoded)
            .map(|s| s.secret())
            .collect()
    }
}

/// The base64 credentials of HTTP Basic: `id:secret`, each form-urlencoded
/// first when `form_encode` (RFC 6749 §2.3.1).
pub(crate) fn basic_credentials(id: &str, secret: &str, form_encode: bool) -> String {
    use base64::Engine as _;
    let pair = if form_encode {
        let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!("{}:{}", form(id), form(secret))
    } else {
        format!("{id}:{secret}")
    };
    base64::engine::general_purpose::STANDARD.encode(pair)
}

/// How a client authenticates to a standard (RFC 6749) endpoint. See
/// [`auth`](crate::auth) for what each method needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret
    /// (`client_secret_basic`, RFC 6749 §2.3.1). The default.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    RequestBody,
    /// A public client: `client_id` in the form body, no secret (`none`).
    None,
    /// A JWT signed with the client's private key (`private_key_jwt`,
    /// RFC 7523 §2.2): needs [`Credentials::with_signing_key`].
    PrivateKeyJwt,
    /// A JWT signed with HS256 keyed by the client secret
    /// (`client_secret_jwt`): needs a secret.
    ClientSecretJwt,
    /// Mutual TLS with a certificate from a CA (`tls_client_auth`,
    /// RFC 8705 §2.1): `client_id` in the body, no secret; needs
    /// [`Credentials::with_client_certificate`].
    TlsClientAuth,
    /// Mutual TLS with a self-signed certificate registered with the server
    /// (`self_signed_tls_client_auth`, RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
    /// Basic first; if the server answers `invalid_client`, the secret in
    /// the body. What works is remembered per endpoint and client id, so
    /// later requests go straight to it; when both fail, the error carries
    /// both answers ([`Error::ClientAuthFailed`](crate::Error::ClientAuthFailed)).
    AutoDetect,
}

impl ClientAuth {
    /// The method's name in `token_endpoint_auth_methods_supported`
    /// (RFC 8414); `None` for [`AutoDetect`](Self::AutoDetect), which is no
    /// method of its own.
    pub fn method_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Basic => "client_secret_basic",
            Self::RequestBody => "client_secret_post",
            Self::None => "none",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::ClientSecretJwt => "client_secret_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            Self::AutoDetect => return Option::None,
        })
    }

    /// The method a `…_auth_methods_supported` name stands for.
    pub fn from_method_name(name: &str) -> Option<Self> {
        Some(match name {
            "client_secret_basic" => Self::Basic,
            "client_secret_post" => Self::RequestBody,
            "none" => Self::None,
            "private_key_jwt" => Self::PrivateKeyJwt,
            "client_secret_jwt" => Self::ClientSecretJwt,
            "tls_client_auth" => Self::TlsClientAuth,
            "self_signed_tls_client_auth" => Self::SelfSignedTlsClientAuth,
            _ => return Option::None,
        })
    }

    /// Whether the method sends the client over mutual TLS.
    pub fn is_mtls(self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }
}

/// What a token request asks for.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Grant<'a> {
    /// `grant_type=client_credentials` (RFC 6749 §4.4).
    ClientCredentials,
    /// `grant_type=refresh_token` (RFC 6749 §6).
    RefreshToken(&'a RefreshToken),
}

/// Which wire format an endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// RFC 6749 / RFC 7009, with the given client authentication.
    Rfc {
        /// How the client authenticates.
        auth: ClientAuth,
    },
    /// Kopo Kopo: see [`kopokopo`].
    KopoKopo,
    /// KorAP/Kustvakt: see [`korap`].
    Korap,
    /// OneLogin: see [`onelogin`].
    OneLogin,
}

impl Dialect {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Dialect::Rfc { .. } => "rfc",
            Dialect::KopoKopo => "kopokopo",
            Dialect::Korap => "korap",
            Dialect::OneLogin => "onelogin",
        }
    }
}

/// `base` with `suffix` (which starts with `/`) appended to its path; query
/// and fragment dropped. `https://h/api/` + `/oauth/token` is
/// `https://h/api/oauth/token`.
pub(crate) fn join(base: &Url, suffix: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}{suffix}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Parses the base URL a provider constructor was given and applies the
/// plain-http rule. For [`Dialect::Rfc`] the "base" is the endpoint itself.
pub(crate) fn resolve_base(
    dialect: Dialect,
    given: &str,
    allow_insecure_http: bool,
) -> Result<Url, crate::error::ConfigError> {
    match dialect {
        Dialect::OneLogin => {
            let url = onelogin::base_url(given)?;
            crate::endpoint::check_url(&url, allow_insecure_http)?;
            Ok(url)
        }
        _ => crate::endpoint::endpoint_url(given, allow_insecure_http),
    }
}

/// The token endpoint of `dialect` under `base`.
pub(crate) fn token_url(dialect: Dialect, base: &Url) -> Url {
    match dialect {
        Dialect::Rfc { .. } => base.clone(),
        Dialect::KopoKopo => kopokopo::token_url(base),
        Dialect::Korap => korap::token_url(base),
        Dialect::OneLogin => onelogin::token_url(base),
    }
}

/// The revocation endpoint of `dialect` under `base`.
pub(crate) fn revoke_url(dialect: Dialect, base: &Url) -> Url {
    match dialect {
        Dialect::Rfc { .. } => base.clone(),
        Dialect::KopoKopo => kopokopo::revoke_url(base),
        Dialect::Korap => korap::revoke_url(base),
        Dialect::OneLogin => onelogin::revoke_url(base),
    }
}
