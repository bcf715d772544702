//! Building one proof (RFC 9449 §4.2) from the parts that are computed once:
//! the encoded JWS header with the public key, per key; `ath`, per token.
//! Per proof: the claims are written into one buffer, encoded into the
//! output, signed, and the signature appended — four allocations (the
//! claims, the `jti`, the output, the signature) besides what the crypto
//! library does.

use super::DpopError;
use super::htu::write_htu;
use crate::jose::{self, SigningKey};
use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// A key with its encoded proof header.
pub(crate) struct Prover {
    key: SigningKey,
    /// `BASE64URL({"typ":"dpop+jwt","alg":…,"jwk":…})`.
    header: String,
}

/// What one proof claims besides `jti` and `iat`.
pub(crate) struct Claims<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) ath: Option<&'a str>,
    pub(crate) nonce: Option<&'a str>,
}

impl Prover {
    pub(crate) fn new(key: SigningKey) -> Self {
        let json = format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{}}}"#,
            key.algorithm().as_str(),
            key.public_jwk()
        );
        Self {
            header: jose::base64url(json.as_bytes()),
            key,
        }
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A proof for `claims`, issued now.
    pub(crate) fn proof(&self, claims: &Claims<'_>) -> Result<HeaderValue, DpopError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let jwt = self.proof_at(claims, iat)?;
        let mut value =
            HeaderValue::from_maybe_shared(Bytes::from(jwt)).map_err(|_| DpopError::NotAHeader)?;
        // Not a secret, but a credential for one request: kept out of
        // HPACK tables and logs like the token it goes with.
        value.set_sensitive(true);
        Ok(value)
    }

    /// The compact JWS of a proof issued at `iat` (seconds since the epoch).
    pub(crate) fn proof_at(&self, claims: &Claims<'_>, iat: u64) -> Result<String, DpopError> {
        let jti = jose::random_id().ok_or(DpopError::Random)?;
        let mut json = String::with_capacity(
            96 + claims.uri.path().len()
                + claims.uri.authority().map_or(0, |a| a.as_str().len())
                + claims.ath.map_or(0, |a| a.len() + 9)
                + claims.nonce.map_or(0, |n| n.len() + 11),
        );
        json.push_str(r#"{"jti":""#);
        json.push_str(&jti);
        json.push_str(r#"","htm":""#);
        // A method is an RFC 9110 token: nothing to escape in JSON.
        json.push_str(claims.method.as_str());
        json.push_str(r#"","htu":""#);
        let start = json.len();
        if !write_htu(claims.uri, &mut json) {
            return Err(DpopError::NoTargetUri);
        }
        if json[start..].bytes().any(|b| b == b'"' || b == b'\\') {
            let htu = json.split_off(start);
            for c in htu.chars() {
                if matches!(c, '"' | '\\') {
                    json.push('\\');
                }
                json.push(c);
            }
        }
        json.push_str(r#"","iat":"#);
        let _ = write!(json, "{iat}");
        if let Some(ath) = claims.ath {
            // base64url: nothing to escape.
            json.push_str(r#","ath":""#);
            json.push_str(ath);
            json.push('"');
        }
        if let Some(nonce) = claims.nonce {
            // Only `NQCHAR`s are kept (see `nonce::parse`): no `"`, no `\`.
            json.push_str(r#","nonce":""#);
            json.push_str(nonce);
            json.push('"');
        }
        json.push('}');

        let signature_len = match self.key.algorithm() {
            jose::Algorithm::ES384 => 128,
            jose::Algorithm::RS256 | jose::Algorithm::PS256 => 700,
            _ => 86,
        };
        let mut out = String::with_capacity(
            self.header.len() + 2 + json.len().div_ceil(3) * 4 + signature_len,
        );
        out.push_str(&self.header);
        out.push('.');
        jose::base64url_into(json.as_bytes(), &mut out);
        let signature = self.key.sign(out.as_bytes()).map_err(DpopError::Sign)?;
        out.push('.');
        jose::base64url_into(&signature, &mut out);
        Ok(out)
    }
}

/// `ath` (RFC 9449 §4.2): base64url of the SHA-256 of the access token.
pub(crate) fn ath(access_token: &str) -> String {
    jose::base64url(&jose::sha256(access_token.as_bytes()))
}
