//! Signing keys and compact JWS (RFC 7515), for client assertions
//! (`private_key_jwt`, `client_secret_jwt`: see [`auth`](crate::auth)) and
//! DPoP proofs.
//!
//! The crypto library is the user's choice, by cargo feature: `aws-lc-rs`
//! (in the default features; the library rustls uses by default, so a
//! default build has one crypto library) or `ring` (for applications whose
//! rustls runs on ring). With both, aws-lc-rs signs.
//!
//! | key | JWS `alg` | from |
//! |---|---|---|
//! | RSA (2048 bits or more) | `RS256`, `PS256` | PKCS#8 or PKCS#1 PEM, JWK |
//! | EC P-256 | `ES256` | PKCS#8 PEM, JWK, [`SigningKey::generate`] |
//! | EC P-384 | `ES384` | PKCS#8 PEM, JWK, [`SigningKey::generate`] |
//! | Ed25519 | `EdDSA` | PKCS#8 PEM, JWK, [`SigningKey::generate`] |
//! | the client secret | `HS256` | [`Credentials::new`](crate::Credentials::new) (`client_secret_jwt`) |
//!
//! # Example
//!
//! ```
//! use tower_token::jose::{Algorithm, SigningKey};
//!
//! let jwk = r#"{"kty":"OKP","crv":"Ed25519","kid":"k1",
//!   "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
//!   "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
//! let key = SigningKey::from_jwk(jwk).unwrap();
//! assert_eq!(key.algorithm(), Algorithm::EdDSA);
//! assert_eq!(key.kid(), Some("k1"));
//! // RFC 8037 §A.3: the thumbprint of this key.
//! assert_eq!(key.thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
//! assert_eq!(key.sign(b"header.payload").unwrap().len(), 64);
//! ```

mod backend;
mod key;

pub use key::SigningKey;

use backend::lib;
use std::fmt;

/// A JWS signing algorithm (RFC 7518 §3.1, RFC 8037 §3.1).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256 (`client_secret_jwt`, keyed by the client secret).
    HS256,
}

impl Algorithm {
    /// The `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
        }
    }

    /// The algorithm an `alg` name stands for, if supported.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "PS256" => Self::PS256,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "HS256" => Self::HS256,
            _ => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be loaded or used. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The input is not in a format this crate reads.
    #[error("unreadable key: {0}")]
    Format(&'static str),
    /// An encrypted PKCS#8 key: decrypt it first.
    #[error("the key is encrypted; give the unencrypted PKCS#8 key")]
    Encrypted,
    /// A JWK member that must be there is missing.
    #[error("the JWK has no `{0}`")]
    MissingMember(&'static str),
    /// A JWK member has the wrong type or is not base64url.
    #[error("the JWK's `{0}` is not valid")]
    InvalidMember(&'static str),
    /// A `kty` this crate cannot sign with.
    #[error("key type `{0}` is not supported (RSA, EC, OKP)")]
    UnsupportedKeyType(String),
    /// A curve this crate cannot sign with.
    #[error("curve `{0}` is not supported (P-256, P-384, Ed25519)")]
    UnsupportedCurve(String),
    /// An `alg` this crate cannot sign with, or cannot generate a key for.
    #[error("algorithm `{0}` is not supported here")]
    UnsupportedAlgorithm(String),
    /// An algorithm that does not fit the key's type.
    #[error("algorithm {0} does not fit this key")]
    AlgorithmMismatch(Algorithm),
    /// The crypto library rejected the key (inconsistent components, too
    /// small, wrong curve, …).
    #[error("key rejected: {0}")]
    Rejected(String),
    /// Key generation failed.
    #[error("key generation failed")]
    Generate,
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}

/// Unpadded base64url (RFC 7515 §2).
pub(crate) fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    base64url_into(bytes, &mut out);
    out
}

/// Appends the unpadded base64url of `bytes` to `out`.
pub(crate) fn base64url_into(bytes: &[u8], out: &mut String) {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// Decodes unpadded (or padded) base64url; `None` if it is not.
pub(crate) fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = lib::digest::digest(&lib::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// HMAC-SHA-256 of `message` under `key`.
#[allow(dead_code)] // used by the client assertions
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = lib::hmac::Key::new(lib::hmac::HMAC_SHA256, key);
    lib::hmac::sign(&key, message).as_ref().to_vec()
}

/// 128 random bits in base64url: a `jti`. `None` only if the system's
/// random number generator fails.
#[allow(dead_code)] // used by the client assertions and DPoP proofs
pub(crate) fn random_id() -> Option<String> {
    use lib::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    backend::rng().fill(&mut bytes).ok()?;
    Some(base64url(&bytes))
}

/// A compact JWS: `header` and `claims` are JSON texts; `sign` signs the
/// signing input.
#[allow(dead_code)] // used by the client assertions
pub(crate) fn compact(
    header: &str,
    claims: &str,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, KeyError>,
) -> Result<String, KeyError> {
    let mut out =
        String::with_capacity((header.len() + claims.len()).div_ceil(3) * 4 + 2 + 512 / 3 * 4);
    base64url_into(header.as_bytes(), &mut out);
    out.push('.');
    base64url_into(claims.as_bytes(), &mut out);
    let signature = sign(out.as_bytes())?;
    out.push('.');
    base64url_into(&signature, &mut out);
    Ok(out)
}

/// JSON string literal of `s` (quotes and escapes included).
#[allow(dead_code)] // used by the client assertions
pub(crate) fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
pub(crate) use backend::lib as backend_for_tests;

/// A fresh 2048-bit RSA key for tests (aws-lc-rs generates RSA keys; ring
/// does not, so with ring alone the RSA cases are left to the interop
/// tests, which generate theirs).
#[cfg(test)]
pub(crate) fn test_rsa_key() -> Option<SigningKey> {
    #[cfg(feature = "aws-lc-rs")]
    {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).ok()?;
        let der: Pkcs8V1Der<'static> = pair.as_der().ok()?;
        SigningKey::from_pkcs8_der(der.as_ref()).ok()
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    None
}
