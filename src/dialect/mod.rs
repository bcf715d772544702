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

/// Client id and, for confidential clients, the client secret.
#[derive(Clone)]
pub struct Credentials {
    client_id: String,
    client_secret: Option<ClientSecret>,
    /// Encoded forms of the credentials that a server might echo back
    /// (the Basic credentials), redacted from errors like the secret.
    encoded: Vec<ClientSecret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
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
        }
    }

    /// A public client: an id and no secret.
    pub fn public(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            encoded: Vec::new(),
        }
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

/// How a client authenticates to a standard (RFC 6749) endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
