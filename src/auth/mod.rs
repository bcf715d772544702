//! Client authentication: how a client proves who it is to a token or
//! revocation endpoint.
//!
//! A method is a [`ClientAuth`] value; what it needs is in the
//! [`Credentials`]; one function puts both on a request, for every dialect,
//! every token and revocation request, and for discovery's choice.
//!
//! | method (`token_endpoint_auth_methods_supported`) | [`ClientAuth`] | the client needs | on the wire |
//! |---|---|---|---|
//! | `client_secret_basic` | [`Basic`](ClientAuth::Basic) (default) | a secret ([`Credentials::new`]) | `Authorization: Basic` (RFC 6749 §2.3.1) |
//! | `client_secret_post` | [`RequestBody`](ClientAuth::RequestBody) | a secret | `client_id`, `client_secret` in the form |
//! | `client_secret_jwt` | [`ClientSecretJwt`](ClientAuth::ClientSecretJwt) | a secret; feature `aws-lc-rs` or `ring` | a fresh HS256 assertion (`client_assertion`), the secret never sent |
//! | `private_key_jwt` | [`PrivateKeyJwt`](ClientAuth::PrivateKeyJwt) | a [`SigningKey`](crate::jose::SigningKey) ([`Credentials::with_signing_key`]) | a fresh RS256/PS256/ES256/ES384/EdDSA assertion |
//! | `tls_client_auth` | [`TlsClientAuth`](ClientAuth::TlsClientAuth) | an HTTP client with a CA-issued client certificate ([`Credentials::with_client_certificate`]) | TLS client certificate; `client_id` in the form |
//! | `self_signed_tls_client_auth` | [`SelfSignedTlsClientAuth`](ClientAuth::SelfSignedTlsClientAuth) | the same, with a self-signed certificate registered with the server | the same |
//! | `none` | [`None`](ClientAuth::None) | nothing ([`Credentials::public`]) | `client_id` in the form |
//! | (detect) | [`AutoDetect`](ClientAuth::AutoDetect) | a secret | Basic, then the body on `invalid_client`; remembered per endpoint and client |
//!
//! **Assertions** (RFC 7523 §2.2, OpenID Connect Core §9): `iss` and `sub`
//! are the client id; `aud` the URL of the endpoint the request goes to
//! (or a fixed value: [`Audience`]); a unique `jti` and the current `iat`
//! in every request; `exp` 60 s later (see
//! [`Credentials::with_assertion_lifetime`]); `nbf` on request. The key's
//! `kid` goes in the JWS header. An assertion is a credential for its short
//! life, so it is redacted from errors like a secret.
//!
//! **Mutual TLS** (RFC 8705): the certificate is the HTTP client's. With
//! reqwest, build a `reqwest::Client` with `Identity::from_pem` (and the
//! server's CA if it is private) and give it with
//! [`Transport::http_client`](crate::Transport::http_client) through
//! `ReqwestClient::from_client`; any other tower client that presents a
//! certificate works the same way. Tokens the server binds to the
//! certificate (`cnf.x5t#S256`) are then accepted only from a client that
//! presents the same certificate: build the API client of the
//! [`TokenLayer`](crate::TokenLayer) stack with the same identity.
//! [Discovery](crate::discovery) sends mTLS token requests to the
//! server's `mtls_endpoint_aliases` when it has them.
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "reqwest", any(feature = "aws-lc-rs", feature = "ring")))] {
//! use tower_token::{ClientAuth, ClientCredentials, Credentials};
//! use tower_token::jose::{Algorithm, SigningKey};
//!
//! let key = SigningKey::generate(Algorithm::ES256).unwrap().with_kid("2026-12");
//! let source = ClientCredentials::builder(
//!     "https://auth.example.com/oauth/token",
//!     Credentials::public("my-service").with_signing_key(key),
//! )
//! .auth(ClientAuth::PrivateKeyJwt)
//! .build()
//! .unwrap();
//! assert!(!format!("{source:?}").contains("\"d\""));
//! # }
//! ```

#[cfg(feature = "jose")]
mod assertion;

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub use crate::dialect::{ClientAuth, Credentials};

use crate::error::{ConfigError, Endpoint, Error, ErrorCode};
use http::{HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use url::Url;

/// The `aud` of client assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// The URL of the endpoint the request goes to: the token endpoint for
    /// token requests, the revocation endpoint for revocations (what
    /// OpenID Connect Core §9 and most servers expect). The default.
    #[default]
    Endpoint,
    /// A fixed value, such as the issuer identifier for servers that want
    /// it.
    Custom(String),
}

/// How client assertions are made (part of [`Credentials`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AssertionSettings {
    pub(crate) audience: Audience,
    pub(crate) lifetime: Duration,
    pub(crate) not_before: bool,
}

impl Default for AssertionSettings {
    fn default() -> Self {
        Self {
            audience: Audience::Endpoint,
            lifetime: Duration::from_secs(60),
            not_before: false,
        }
    }
}

/// Puts `auth` on a request to `url`: returns the `Authorization` header to
/// send, if any, and appends the method's form fields.
///
/// [`ClientAuth::AutoDetect`] applies as what was detected for this
/// endpoint and client, else as Basic; the fallback itself is
/// [`detecting`]'s.
pub(crate) fn apply(
    auth: ClientAuth,
    credentials: &Credentials,
    url: &Url,
    endpoint: Endpoint,
    form: &mut form_urlencoded::Serializer<'_, String>,
) -> Result<Option<HeaderValue>, Error> {
    let append_id = |form: &mut form_urlencoded::Serializer<'_, String>| {
        form.append_pair("client_id", credentials.client_id());
    };
    match auth {
        ClientAuth::AutoDetect => {
            let detected = detected(url, credentials.client_id()).unwrap_or(ClientAuth::Basic);
            apply(detected, credentials, url, endpoint, form)
        }
        ClientAuth::Basic => {
            crate::dialect::rfc::basic_authorization_for(credentials, endpoint).map(Some)
        }
        ClientAuth::RequestBody => {
            append_id(form);
            if let Some(secret) = credentials.client_secret() {
                form.append_pair("client_secret", secret.secret());
            }
            Ok(None)
        }
        ClientAuth::None | ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
            append_id(form);
            Ok(None)
        }
        ClientAuth::PrivateKeyJwt | ClientAuth::ClientSecretJwt => {
            append_id(form);
            let jwt = client_assertion(auth, credentials, url, endpoint)?;
            form.append_pair("client_assertion_type", ASSERTION_TYPE);
            form.append_pair("client_assertion", &jwt);
            Ok(None)
        }
    }
}

#[cfg(feature = "jose")]
fn client_assertion(
    auth: ClientAuth,
    credentials: &Credentials,
    url: &Url,
    endpoint: Endpoint,
) -> Result<String, Error> {
    let request_error = |reason: String| Error::Request { endpoint, reason };
    let signer = match auth {
        ClientAuth::PrivateKeyJwt => assertion::Signer::Key(
            credentials
                .signing_key()
                .ok_or_else(|| request_error(missing(auth).to_owned()))?,
        ),
        _ => assertion::Signer::Secret(
            credentials
                .client_secret()
                .ok_or_else(|| request_error(missing(auth).to_owned()))?
                .secret(),
        ),
    };
    let settings = credentials.assertion_settings();
    let audience = match &settings.audience {
        Audience::Endpoint => url.as_str(),
        Audience::Custom(aud) => aud.as_str(),
    };
    let claims = assertion::Claims {
        client_id: credentials.client_id(),
        audience,
        lifetime: settings.lifetime,
        not_before: settings.not_before,
    };
    assertion::sign(signer, &claims).map_err(|e| request_error(format!("client assertion: {e}")))
}

#[cfg(not(feature = "jose"))]
fn client_assertion(
    auth: ClientAuth,
    _: &Credentials,
    _: &Url,
    endpoint: Endpoint,
) -> Result<String, Error> {
    Err(Error::Request {
        endpoint,
        reason: missing(auth).to_owned(),
    })
}

/// What a method needs that `credentials` lack, if anything.
pub(crate) fn missing_material(
    auth: ClientAuth,
    credentials: &Credentials,
) -> Option<&'static str> {
    let has = match auth {
        ClientAuth::Basic
        | ClientAuth::RequestBody
        | ClientAuth::AutoDetect
        | ClientAuth::ClientSecretJwt => credentials.client_secret().is_some(),
        ClientAuth::PrivateKeyJwt => has_signing_key(credentials),
        ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
            credentials.has_client_certificate()
        }
        ClientAuth::None => true,
    };
    let needs_crypto = matches!(
        auth,
        ClientAuth::PrivateKeyJwt | ClientAuth::ClientSecretJwt
    );
    if !has || (needs_crypto && !cfg!(feature = "jose")) {
        Some(missing(auth))
    } else {
        None
    }
}

fn has_signing_key(credentials: &Credentials) -> bool {
    #[cfg(feature = "jose")]
    return credentials.signing_key().is_some();
    #[cfg(not(feature = "jose"))]
    {
        let _ = credentials;
        false
    }
}

fn missing(auth: ClientAuth) -> &'static str {
    match auth {
        ClientAuth::PrivateKeyJwt if !cfg!(feature = "jose") => {
            "private_key_jwt needs a crypto library: enable the `aws-lc-rs` or `ring` feature"
        }
        ClientAuth::ClientSecretJwt if !cfg!(feature = "jose") => {
            "client_secret_jwt needs a crypto library: enable the `aws-lc-rs` or `ring` feature"
        }
        ClientAuth::PrivateKeyJwt => {
            "private_key_jwt needs a signing key (Credentials::with_signing_key)"
        }
        ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
            "mutual TLS needs a TLS client certificate in the HTTP client (Credentials::with_client_certificate)"
        }
        ClientAuth::None => "nothing",
        _ => "a client secret (Credentials::new)",
    }
}

/// Checks, when a source or revocation service is built, that the
/// credentials have what `auth` needs.
pub(crate) fn check(auth: ClientAuth, credentials: &Credentials) -> Result<(), ConfigError> {
    match auth {
        // Stage one's secret methods accept a public client (an empty
        // secret), as before.
        ClientAuth::Basic | ClientAuth::RequestBody | ClientAuth::None => Ok(()),
        _ => match missing_material(auth, credentials) {
            Some(what) => Err(ConfigError::ClientAuth {
                method: auth.method_name().unwrap_or("auto-detection"),
                missing: what,
            }),
            None => Ok(()),
        },
    }
}

/// The order in which discovery picks a method among those the server
/// lists and the client has the material for: keys and certificates
/// before secrets, and a secret sent in a header before one in the body.
pub const DEFAULT_PREFERENCE: &[ClientAuth] = &[
    ClientAuth::PrivateKeyJwt,
    ClientAuth::TlsClientAuth,
    ClientAuth::SelfSignedTlsClientAuth,
    ClientAuth::Basic,
    ClientAuth::RequestBody,
    ClientAuth::ClientSecretJwt,
    ClientAuth::None,
];

/// Picks the first method of `preference` that the server lists in
/// `methods` (absent: `client_secret_basic`, RFC 8414) and the client has
/// the material for. When there is none, the error says what the server
/// accepts and what the client would need.
pub fn select(
    methods: Option<&[String]>,
    credentials: &Credentials,
    preference: &[ClientAuth],
) -> Result<ClientAuth, ConfigError> {
    let default = ["client_secret_basic".to_owned()];
    let methods = methods.unwrap_or(&default);
    let listed = |auth: ClientAuth| {
        auth.method_name()
            .is_some_and(|name| methods.iter().any(|m| m == name))
    };
    // A confidential client never falls back to `none`.
    let usable = |auth: ClientAuth| {
        missing_material(auth, credentials).is_none()
            && !(auth == ClientAuth::None && credentials.client_secret().is_some())
    };
    if let Some(auth) = preference.iter().copied().find(|&a| listed(a) && usable(a)) {
        return Ok(auth);
    }
    let known: Vec<ClientAuth> = DEFAULT_PREFERENCE
        .iter()
        .copied()
        .filter(|&a| listed(a))
        .collect();
    match known.first() {
        Some(&first) => Err(ConfigError::NoUsableClientAuth {
            offered: methods.join(", "),
            missing: missing_material(first, credentials).unwrap_or(
                "a method in the preference order (the server's methods are all left out of it)",
            ),
        }),
        None => Err(ConfigError::NoUsableClientAuth {
            offered: methods.join(", "),
            missing: "a method this crate supports",
        }),
    }
}

/// Sends with `auth`, or, for [`ClientAuth::AutoDetect`], with Basic and
/// then the body when the server answers `invalid_client`; what worked is
/// remembered for `url` and the client id.
pub(crate) async fn detecting<T, F, Fut>(
    auth: ClientAuth,
    credentials: &Credentials,
    url: &Url,
    mut send: F,
) -> Result<T, Error>
where
    F: FnMut(ClientAuth) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    if auth != ClientAuth::AutoDetect {
        return send(auth).await;
    }
    let id = credentials.client_id();
    if let Some(known) = detected(url, id) {
        let result = send(known).await;
        if matches!(&result, Err(e) if is_invalid_client(e)) {
            forget(url, id);
        }
        return result;
    }
    match send(ClientAuth::Basic).await {
        Ok(value) => {
            remember(url, id, ClientAuth::Basic);
            Ok(value)
        }
        Err(basic) if is_invalid_client(&basic) => match send(ClientAuth::RequestBody).await {
            Ok(value) => {
                tracing::debug!(
                    url = url.as_str(),
                    "client authentication detected: secret in the body"
                );
                remember(url, id, ClientAuth::RequestBody);
                Ok(value)
            }
            Err(body) if is_invalid_client(&body) => Err(Error::ClientAuthFailed {
                basic: Box::new(basic),
                body: Box::new(body),
            }),
            Err(other) => Err(other),
        },
        Err(other) => Err(other),
    }
}

/// An answer that means "this client authentication did not work".
fn is_invalid_client(error: &Error) -> bool {
    match error {
        Error::OAuth { code, .. } => *code == ErrorCode::InvalidClient,
        Error::Status { status, .. } => *status == StatusCode::UNAUTHORIZED,
        _ => false,
    }
}

type Detected = HashMap<(String, String), ClientAuth>;

/// What auto-detection found, per endpoint and client id, for the process.
fn memory() -> &'static Mutex<Detected> {
    static MEMORY: OnceLock<Mutex<Detected>> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

/// Entries kept at most; the memory starts over past it.
const MEMORY_CAP: usize = 1024;

fn detected(url: &Url, client_id: &str) -> Option<ClientAuth> {
    let memory = memory().lock().unwrap_or_else(|p| p.into_inner());
    memory
        .get(&(url.as_str().to_owned(), client_id.to_owned()))
        .copied()
}

fn remember(url: &Url, client_id: &str, auth: ClientAuth) {
    let mut memory = memory().lock().unwrap_or_else(|p| p.into_inner());
    if memory.len() >= MEMORY_CAP {
        memory.clear();
    }
    memory.insert((url.as_str().to_owned(), client_id.to_owned()), auth);
}

fn forget(url: &Url, client_id: &str) {
    let mut memory = memory().lock().unwrap_or_else(|p| p.into_inner());
    memory.remove(&(url.as_str().to_owned(), client_id.to_owned()));
}

/// The `client_assertion` of a form body, to redact it from errors.
pub(crate) fn assertion_in(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "client_assertion")
        .map(|(_, value)| value.into_owned())
}
