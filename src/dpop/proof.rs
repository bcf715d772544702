//! Building one proof (RFC 9449 §4.2) from the parts that are computed once:
//! the encoded JWS header with the public key, per key; `ath`, per token.
//! Per proof: the claims are written into a buffer the thread keeps,
//! encoded into the output, signed, and the signature appended — two
//! allocations (the output, the signature) besides what the crypto library
//! does.
//!
//! `jti` is 96 random bits drawn once per key and a 48-bit counter, in
//! base64url: unique for every proof of the key (RFC 9449 §4.2 asks for a
//! negligible chance of a repeat; here there is none within a process, and
//! 96 random bits between processes), without a call to the system's random
//! number generator per proof.

use super::DpopError;
use super::htu::write_htu;
use crate::jose::{self, SigningKey};
use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The claims of the proof being built on this thread.
    static CLAIMS: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// A key with its encoded proof header.
pub(crate) struct Prover {
    key: SigningKey,
    /// `BASE64URL({"typ":"dpop+jwt","alg":…,"jwk":…})`.
    header: String,
    /// The random part of every `jti`.
    salt: [u8; 12],
    /// The counted part of every `jti`.
    proofs: AtomicU64,
}

/// What one proof claims besides `jti` and `iat`.
pub(crate) struct Claims<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) ath: Option<&'a str>,
    pub(crate) nonce: Option<&'a str>,
}

impl Prover {
    /// `None` when the system's random number generator fails.
    pub(crate) fn new(key: SigningKey) -> Option<Self> {
        let json = format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{}}}"#,
            key.algorithm().as_str(),
            key.public_jwk()
        );
        let random = jose::base64url_decode(&jose::random_id()?)?;
        let salt = random.get(..12)?.try_into().ok()?;
        Some(Self {
            header: jose::base64url(json.as_bytes()),
            key,
            salt,
            proofs: AtomicU64::new(0),
        })
    }

    /// The next `jti`, as its 18 bytes.
    fn jti(&self) -> [u8; 18] {
        let n = self.proofs.fetch_add(1, Ordering::Relaxed);
        let mut jti = [0u8; 18];
        jti[..12].copy_from_slice(&self.salt);
        jti[12..].copy_from_slice(&n.to_be_bytes()[2..]);
        jti
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
    pub(crate) fn proof_at(&self, claims: &Claims<'_>, iat: u64) -> Result<Vec<u8>, DpopError> {
        CLAIMS.with(|json| match json.try_borrow_mut() {
            Ok(mut json) => self.proof_in(&mut json, claims, iat),
            // Not reached (nothing here calls back in); a buffer of its own.
            Err(_) => self.proof_in(&mut String::new(), claims, iat),
        })
    }

    /// [`proof_at`](Self::proof_at), with `json` as the claims' buffer.
    fn proof_in(
        &self,
        json: &mut String,
        claims: &Claims<'_>,
        iat: u64,
    ) -> Result<Vec<u8>, DpopError> {
        json.clear();
        json.push_str(r#"{"jti":""#);
        let mut jti = [0u8; 24];
        let jti = encode(&self.jti(), &mut jti);
        // base64url is ASCII.
        json.push_str(std::str::from_utf8(jti).unwrap_or_default());
        json.push_str(r#"","htm":""#);
        // A method is an RFC 9110 token: nothing to escape in JSON.
        json.push_str(claims.method.as_str());
        json.push_str(r#"","htu":""#);
        let start = json.len();
        if !write_htu(claims.uri, json) {
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
        let mut out =
            Vec::with_capacity(self.header.len() + 2 + json.len().div_ceil(3) * 4 + signature_len);
        out.extend_from_slice(self.header.as_bytes());
        out.push(b'.');
        extend(json.as_bytes(), &mut out);
        let signature = self.key.sign(&out).map_err(DpopError::Sign)?;
        out.push(b'.');
        extend(&signature, &mut out);
        Ok(out)
    }
}

/// Unpadded base64url of `bytes` into `buf`, which must be large enough;
/// the encoded part of `buf`. (Straight into the caller's buffer: the
/// `String` encoders go through a zeroed scratch buffer of their own.)
fn encode<'a>(bytes: &[u8], buf: &'a mut [u8]) -> &'a [u8] {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(bytes, buf)
        .unwrap_or(0);
    &buf[..n]
}

/// Appends the unpadded base64url of `bytes` to `out`.
fn extend(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let n = encode(bytes, &mut out[start..]).len();
    out.truncate(start + n);
}

/// `ath` (RFC 9449 §4.2): base64url of the SHA-256 of the access token.
pub(crate) fn ath(access_token: &str) -> String {
    jose::base64url(&jose::sha256(access_token.as_bytes()))
}
