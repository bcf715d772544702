//! DPoP (RFC 9449): access tokens bound to a key the client holds, so that a
//! leaked token is useless without the key.
//!
//! Give the layer a key with [`TokenLayerBuilder::dpop`](crate::TokenLayerBuilder::dpop)
//! and every request carries a proof of possession of it, made for that
//! request alone:
//!
//! - **Token requests** ([`ClientCredentials`](crate::ClientCredentials))
//!   carry a `DPoP` proof (`htm`, `htu`, `iat`, a unique `jti`). The server
//!   binds the token to the key and answers `token_type: DPoP`.
//! - **API requests** carry `Authorization: DPoP <token>` and a `DPoP` proof
//!   with, besides those claims, `ath` (the hash of the token). `htu` is the
//!   request's URI without query and fragment, normalised as RFC 9449 §4.3
//!   says. A retry (after a 401, after a nonce challenge) carries a new proof
//!   made for the retried request, never the same one twice.
//! - **Nonces** (RFC 9449 §8, §9). An authorization server that answers 400
//!   `use_dpop_nonce` gets the token request once more with the nonce of its
//!   `DPoP-Nonce`; an API that answers 401 with
//!   `WWW-Authenticate: DPoP error="use_dpop_nonce"` gets the request once
//!   more (when its body can be replayed, as after any 401) with a proof
//!   carrying the nonce, and the token is kept. A `DPoP-Nonce` on any other
//!   answer replaces the nonce. Nonces are remembered per origin (the
//!   authorization server and each API apart), and read without a lock.
//!   [`Stats::dpop_nonce_retries`](crate::cache::Stats::dpop_nonce_retries)
//!   counts the requests sent again for a nonce.
//!
//! Keys: ES256 (P-256) and EdDSA (Ed25519), generated here or loaded from a
//! PKCS#8 PEM or a private JWK; ES384, RS256 and PS256 keys work too (see
//! [`crate::jose`]). The key is a secret: no `Debug`, error or log shows it.
//!
//! **A downgrade.** A server that answers a DPoP token request with
//! `token_type: Bearer` did not bind the token, and the fetch fails with
//! [`InvalidResponse::DpopDowngrade`]
//! (retried with backoff like any failed fetch), unless
//! [`allow_bearer_downgrade`](Dpop::allow_bearer_downgrade) lets the token be
//! sent as a bearer token (without proofs).
//!
//! **A nonce loop.** An API that challenges again the proof that carried its
//! own nonce gets no third attempt: the caller sees its 401 (with
//! `WWW-Authenticate: DPoP error="use_dpop_nonce"`), the token stays, and
//! the next request carries the last nonce the API sent.
//!
//! A request whose URI has no scheme and host (what a client bound to one
//! origin, such as tonic's `Channel`, receives) cannot be given an `htu`:
//! it fails with [`DpopError::NoTargetUri`]. With a
//! [shared store](crate::TokenLayerBuilder::store), DPoP is a
//! configuration error: a bound token is only of use with its key.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_token::dpop::Dpop;
//! use tower_token::jose::Algorithm;
//! use tower_token::{ClientCredentials, Credentials, TokenLayer};
//!
//! # async fn run() -> Result<(), tower_token::BoxError> {
//! let source = ClientCredentials::builder(
//!     "https://auth.example.com/oauth/token",
//!     Credentials::new("my-client", "s3cr3t"),
//! )
//! .build()?;
//! let layer = TokenLayer::builder(source)
//!     .dpop(Dpop::generate(Algorithm::ES256)?)
//!     .build()?;
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<http_body_util::Full<bytes::Bytes>>();
//! let api = ServiceBuilder::new()
//!     .layer(layer)
//!     .timeout(Duration::from_secs(10))
//!     .service(client);
//! // Every request through `api` carries `Authorization: DPoP <token>` and a
//! // `DPoP` proof of its own.
//! # let _ = api;
//! # Ok(()) }
//! ```

mod htu;
mod nonce;
mod proof;

use crate::error::{Endpoint, Error, InvalidResponse};
use crate::http_client::{HttpClient, Limits, execute};
use crate::jose::{Algorithm, KeyError, SigningKey};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use self::nonce::Nonces;
use self::proof::{Claims, Prover};

/// The `DPoP` request header (RFC 9449 §4.1).
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The `DPoP-Nonce` response header (RFC 9449 §8.1).
pub const DPOP_NONCE: HeaderName = nonce::DPOP_NONCE;

/// A DPoP key and what is remembered for it: the nonces servers handed
/// out. Cheap to clone; clones share the nonces. See the
/// [module docs](self).
#[derive(Clone)]
pub struct Dpop {
    shared: Arc<Shared>,
    allow_bearer: bool,
}

struct Shared {
    prover: Prover,
    nonces: Nonces,
    nonce_retries: AtomicU64,
}

impl fmt::Debug for Dpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("algorithm", &self.algorithm())
            .field("thumbprint", &self.thumbprint())
            .field("allow_bearer_downgrade", &self.allow_bearer)
            .finish_non_exhaustive()
    }
}

/// Why a proof could not be made. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// The request's URI has no scheme or host, so there is no `htu` to
    /// claim (a client bound to one origin, such as tonic's `Channel`).
    #[error("a DPoP proof needs the request's full URI (scheme and host) for `htu`")]
    NoTargetUri,
    /// The key could not sign.
    #[error("the DPoP proof could not be signed: {0}")]
    Sign(KeyError),
    /// The proof is not a valid header value (an `htu` with bytes a header
    /// cannot carry).
    #[error("the DPoP proof is not a valid header value")]
    NotAHeader,
}

impl Dpop {
    /// Proofs signed by `key`. A symmetric key (`HS256`) is refused: a
    /// proof must be verifiable with the public key it carries. Fails with
    /// [`KeyError::Generate`] only if the system's random number generator
    /// does (for the random part of each `jti`).
    pub fn new(key: SigningKey) -> Result<Self, KeyError> {
        if key.algorithm() == Algorithm::HS256 {
            return Err(KeyError::UnsupportedAlgorithm(
                "HS256 (DPoP needs an asymmetric key)".into(),
            ));
        }
        let prover = Prover::new(key).ok_or(KeyError::Generate)?;
        Ok(Self {
            shared: Arc::new(Shared {
                prover,
                nonces: Nonces::default(),
                nonce_retries: AtomicU64::new(0),
            }),
            allow_bearer: false,
        })
    }

    /// Proofs signed by a new key: [`Algorithm::ES256`] or
    /// [`Algorithm::EdDSA`] (or [`Algorithm::ES384`]). The key lives as long
    /// as the process, so tokens bound to it are too.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        Self::new(SigningKey::generate(algorithm)?)
    }

    /// Proofs signed by a PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        Self::new(SigningKey::from_pem(pem)?)
    }

    /// Proofs signed by a private JWK (`EC`, `OKP` or `RSA`).
    pub fn from_jwk(jwk: &str) -> Result<Self, KeyError> {
        Self::new(SigningKey::from_jwk(jwk)?)
    }

    /// Accepts a token that the server issued as `token_type: Bearer` in
    /// answer to a DPoP token request, and sends it as a bearer token,
    /// without proofs (default off: such an answer is
    /// [`InvalidResponse::DpopDowngrade`]).
    pub fn allow_bearer_downgrade(mut self, yes: bool) -> Self {
        self.allow_bearer = yes;
        self
    }

    /// Whether a `Bearer` answer to a DPoP token request is accepted.
    pub fn allows_bearer_downgrade(&self) -> bool {
        self.allow_bearer
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        self.shared.prover.key()
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key().algorithm()
    }

    /// The RFC 7638 thumbprint of the public key: the `jkt` a server binds
    /// tokens to (`cnf.jkt` at introspection).
    pub fn thumbprint(&self) -> &str {
        self.key().thumbprint()
    }

    /// A new proof for a `method` request to `uri`, with the nonce last
    /// remembered for its origin; with `ath` when `access_token` is given.
    /// For a [`TokenSource`](crate::TokenSource) or a client of your own;
    /// the layer makes its proofs itself.
    pub fn proof(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, DpopError> {
        let ath = access_token.map(proof::ath);
        self.proof_with_ath(method, uri, ath.as_deref())
    }

    /// Remembers the `DPoP-Nonce` of an answer from the origin of `uri`, if
    /// it has a usable one; returns whether it had.
    pub fn remember_nonce(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        self.shared.nonces.remember(uri, headers)
    }

    /// The nonce remembered for the origin of `uri`, if any.
    pub fn nonce(&self, uri: &Uri) -> Option<String> {
        self.shared.nonces.get(uri)
    }

    /// Requests sent again because a server asked for a nonce.
    pub(crate) fn nonce_retries(&self) -> u64 {
        self.shared.nonce_retries.load(Ordering::Relaxed)
    }

    pub(crate) fn count_nonce_retry(&self) {
        self.shared.nonce_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A proof with a precomputed `ath`.
    pub(crate) fn proof_with_ath(
        &self,
        method: &Method,
        uri: &Uri,
        ath: Option<&str>,
    ) -> Result<HeaderValue, DpopError> {
        self.shared.nonces.with(uri, |nonce| {
            self.shared.prover.proof(&Claims {
                method,
                uri,
                ath,
                nonce,
            })
        })
    }

    /// Puts a new proof for `req`, with `ath`, in its `DPoP` header.
    #[inline]
    pub(crate) fn attach<B>(&self, req: &mut Request<B>, ath: &str) -> Result<(), DpopError> {
        let proof = self.proof_with_ath(req.method(), req.uri(), Some(ath))?;
        req.headers_mut().insert(DPOP, proof);
        Ok(())
    }

    /// Checks a fetched token against the request that got it: a DPoP
    /// request needs a `DPoP` token (or a permitted downgrade).
    pub(crate) fn admit(dpop: Option<&Dpop>, dpop_token: bool) -> Result<(), InvalidResponse> {
        match (dpop, dpop_token) {
            (Some(_), true) | (None, false) => Ok(()),
            (None, true) => Err(InvalidResponse::UnsupportedTokenType("DPoP".into())),
            (Some(dpop), false) if dpop.allow_bearer => {
                tracing::warn!(
                    "the token endpoint answered a DPoP token request with a bearer token; \
                     sending it without proofs (allow_bearer_downgrade)"
                );
                Ok(())
            }
            (Some(_), false) => Err(InvalidResponse::DpopDowngrade),
        }
    }
}

/// `ath` of an access token (base64url of its SHA-256), once per token.
pub(crate) fn ath(access_token: &str) -> Arc<str> {
    Arc::from(proof::ath(access_token))
}

/// Sends a token request with a DPoP proof when `dpop` is given, and sends it
/// once more with the nonce when the server answers 400 `use_dpop_nonce`
/// with a `DPoP-Nonce` (RFC 9449 §8). Any `DPoP-Nonce` in the answer is
/// remembered. Without `dpop`, the request is sent as it is.
pub(crate) async fn execute_token_request(
    http: &dyn HttpClient,
    request: Request<Bytes>,
    limits: Limits,
    dpop: Option<&Dpop>,
) -> Result<Response<Bytes>, Error> {
    let Some(dpop) = dpop else {
        return execute(http, request, limits, Endpoint::Token).await;
    };
    let (parts, body) = request.into_parts();
    let mut retried = false;
    loop {
        let proof = dpop
            .proof_with_ath(&parts.method, &parts.uri, None)
            .map_err(|e| Error::Request {
                endpoint: Endpoint::Token,
                reason: e.to_string(),
            })?;
        let mut request = Request::new(body.clone());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        request.headers_mut().insert(DPOP, proof);
        let response = execute(http, request, limits, Endpoint::Token).await?;
        let has_nonce = dpop.remember_nonce(&parts.uri, response.headers());
        if !retried && has_nonce && asks_for_nonce(&response) {
            retried = true;
            dpop.count_nonce_retry();
            tracing::debug!("the token endpoint asked for a DPoP nonce; asking again with it");
            continue;
        }
        return Ok(response);
    }
}

/// 400 with `"error":"use_dpop_nonce"`.
fn asks_for_nonce(response: &Response<Bytes>) -> bool {
    response.status() == StatusCode::BAD_REQUEST
        && crate::dialect::rfc::json_object(response.body()).is_ok_and(|object| {
            object.get("error").and_then(|e| e.as_str()) == Some("use_dpop_nonce")
        })
}

#[cfg(test)]
mod tests;
