//! [`SigningKey`]: a private key that signs JWS (RFC 7515), loaded from PEM
//! or a JWK, or generated.

use super::backend::{self, lib};
use super::{Algorithm, KeyError, base64url, sha256};
use lib::signature::{self as sig, KeyPair as _};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A private signing key for client assertions (`private_key_jwt`) and DPoP
/// proofs: RSA (RS256, PS256), EC (ES256 on P-256, ES384 on P-384) or
/// Ed25519 (EdDSA).
///
/// Load one from a PKCS#8 PEM ([`from_pem`](Self::from_pem)) or a private
/// JWK ([`from_jwk`](Self::from_jwk)), or [`generate`](Self::generate) an
/// EC or Ed25519 key. Cloning is cheap (a reference count). `Debug` prints
/// the algorithm, the `kid` and the public key's thumbprint, never key
/// material.
///
/// ```
/// use tower_token::jose::{Algorithm, SigningKey};
///
/// let key = SigningKey::generate(Algorithm::ES256).unwrap().with_kid("key-1");
/// assert_eq!(key.algorithm(), Algorithm::ES256);
/// assert!(key.public_jwk().starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
/// assert_eq!(key.thumbprint().len(), 43);
/// let shown = format!("{key:?}");
/// assert!(shown.contains("key-1") && !shown.contains(r#""d""#));
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<Inner>,
}

struct Inner {
    pair: Arc<Pair>,
    algorithm: Algorithm,
    kid: Option<String>,
    public_jwk: String,
    thumbprint: String,
}

enum Pair {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.inner.algorithm)
            .field("kid", &self.inner.kid)
            .field("thumbprint", &self.inner.thumbprint)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key: [`Algorithm::ES256`], [`Algorithm::ES384`] or
    /// [`Algorithm::EdDSA`] (RSA keys are not generated here).
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        let rng = backend::rng();
        let failed = |_| KeyError::Generate;
        match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = ec_signing(algorithm).ok_or(KeyError::Generate)?;
                let doc = sig::EcdsaKeyPair::generate_pkcs8(curve, &rng).map_err(failed)?;
                let pair = backend::ecdsa_from_pkcs8(curve, doc.as_ref())
                    .map_err(|_| KeyError::Generate)?;
                Self::new(Pair::Ec(pair), algorithm, None)
            }
            Algorithm::EdDSA => {
                let doc = sig::Ed25519KeyPair::generate_pkcs8(&rng).map_err(failed)?;
                let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(doc.as_ref())
                    .map_err(|_| KeyError::Generate)?;
                Self::new(Pair::Ed25519(pair), algorithm, None)
            }
            other => Err(KeyError::UnsupportedAlgorithm(other.as_str().to_owned())),
        }
    }

    /// Loads an unencrypted private key from PEM: a PKCS#8 `PRIVATE KEY`
    /// (RSA, EC on P-256 or P-384, Ed25519) or a PKCS#1 `RSA PRIVATE KEY`.
    /// RSA keys sign with RS256 (see [`with_algorithm`](Self::with_algorithm)
    /// for PS256), P-256 with ES256, P-384 with ES384, Ed25519 with EdDSA.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_block(pem)?;
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => {
                let pair = sig::RsaKeyPair::from_der(&der).map_err(rejected)?;
                Self::new(Pair::Rsa(pair), Algorithm::RS256, None)
            }
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
            "EC PRIVATE KEY" => Err(KeyError::Format(
                "SEC1 `EC PRIVATE KEY`: convert it to PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)",
            )),
            _ => Err(KeyError::Format("no PEM `PRIVATE KEY` block")),
        }
    }

    /// Loads an unencrypted PKCS#8 private key in DER form (see
    /// [`from_pem`](Self::from_pem) for the key types).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(pair) = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Self::new(Pair::Ed25519(pair), Algorithm::EdDSA, None);
        }
        for algorithm in [Algorithm::ES256, Algorithm::ES384] {
            if let Some(curve) = ec_signing(algorithm)
                && let Ok(pair) = backend::ecdsa_from_pkcs8(curve, der)
            {
                return Self::new(Pair::Ec(pair), algorithm, None);
            }
        }
        let pair = sig::RsaKeyPair::from_pkcs8(der).map_err(rejected)?;
        Self::new(Pair::Rsa(pair), Algorithm::RS256, None)
    }

    /// Loads a private key from a JWK (RFC 7517) as JSON text: `kty` `RSA`
    /// (`n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`), `EC` (`crv` `P-256` or
    /// `P-384`, `x`, `y`, `d`) or `OKP` (`crv` `Ed25519`, `x`, `d`). The
    /// JWK's `kid` becomes the key's, and its `alg`, when present, the
    /// signing algorithm.
    pub fn from_jwk(jwk: &str) -> Result<Self, KeyError> {
        let value: Value =
            serde_json::from_str(jwk).map_err(|_| KeyError::Format("not a JSON object"))?;
        let Value::Object(object) = value else {
            return Err(KeyError::Format("not a JSON object"));
        };
        // The parsed members (`d`, `p`, …) are wiped when this returns,
        // whichever way it returns.
        let object = WipeOnDrop(object);
        let object = &object.0;
        let text = |name: &'static str| -> Result<&str, KeyError> {
            object
                .get(name)
                .and_then(Value::as_str)
                .ok_or(KeyError::MissingMember(name))
        };
        let bytes = |name: &'static str| -> Result<Zeroizing<Vec<u8>>, KeyError> {
            super::base64url_decode(text(name)?)
                .map(Zeroizing::new)
                .ok_or(KeyError::InvalidMember(name))
        };
        let kid = match object.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(KeyError::InvalidMember("kid")),
        };
        let stated = match object.get("alg") {
            None | Some(Value::Null) => None,
            Some(Value::String(alg)) => Some(
                Algorithm::parse(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(short(alg)))?,
            ),
            Some(_) => return Err(KeyError::InvalidMember("alg")),
        };
        let key = match text("kty")? {
            "RSA" => {
                let components = lib::rsa::KeyPairComponents {
                    public_key: lib::rsa::PublicKeyComponents {
                        n: bytes("n")?,
                        e: bytes("e")?,
                    },
                    d: bytes("d")?,
                    p: bytes("p")?,
                    q: bytes("q")?,
                    dP: bytes("dp")?,
                    dQ: bytes("dq")?,
                    qInv: bytes("qi")?,
                };
                let pair = sig::RsaKeyPair::from_components(&components).map_err(rejected)?;
                Self::new(Pair::Rsa(pair), Algorithm::RS256, kid)?
            }
            "EC" => {
                let algorithm = match text("crv")? {
                    "P-256" => Algorithm::ES256,
                    "P-384" => Algorithm::ES384,
                    other => return Err(KeyError::UnsupportedCurve(short(other))),
                };
                let curve = ec_signing(algorithm).ok_or(KeyError::InvalidMember("crv"))?;
                let (x, y) = (bytes("x")?, bytes("y")?);
                let mut point = Zeroizing::new(Vec::with_capacity(1 + x.len() + y.len()));
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let pair =
                    backend::ecdsa_from_parts(curve, &bytes("d")?, &point).map_err(rejected)?;
                Self::new(Pair::Ec(pair), algorithm, kid)?
            }
            "OKP" => {
                match text("crv")? {
                    "Ed25519" => {}
                    other => return Err(KeyError::UnsupportedCurve(short(other))),
                }
                let pair =
                    sig::Ed25519KeyPair::from_seed_and_public_key(&bytes("d")?, &bytes("x")?)
                        .map_err(rejected)?;
                Self::new(Pair::Ed25519(pair), Algorithm::EdDSA, kid)?
            }
            other => return Err(KeyError::UnsupportedKeyType(short(other))),
        };
        match stated {
            Some(algorithm) => key.with_algorithm(algorithm),
            None => Ok(key),
        }
    }

    fn new(pair: Pair, algorithm: Algorithm, kid: Option<String>) -> Result<Self, KeyError> {
        let public_jwk = public_jwk(&pair)?;
        let thumbprint = base64url(&sha256(public_jwk.as_bytes()));
        Ok(Self {
            inner: Arc::new(Inner {
                pair: Arc::new(pair),
                algorithm,
                kid,
                public_jwk,
                thumbprint,
            }),
        })
    }

    /// The same key with a key id, sent as the JWS `kid` header so the
    /// server picks the right key of the client's set.
    pub fn with_kid(self, kid: impl Into<String>) -> Self {
        let algorithm = self.inner.algorithm;
        self.rebuild(algorithm, Some(kid.into()))
    }

    /// The same key signing with another algorithm of its type: RS256 or
    /// PS256 for RSA; EC and Ed25519 keys have one algorithm each.
    pub fn with_algorithm(self, algorithm: Algorithm) -> Result<Self, KeyError> {
        let fits = match &*self.inner.pair {
            Pair::Rsa(_) => matches!(algorithm, Algorithm::RS256 | Algorithm::PS256),
            Pair::Ec(_) | Pair::Ed25519(_) => algorithm == self.inner.algorithm,
        };
        if !fits {
            return Err(KeyError::AlgorithmMismatch(algorithm));
        }
        Ok(self.rebuild(algorithm, self.inner.kid.clone()))
    }

    fn rebuild(&self, algorithm: Algorithm, kid: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pair: self.inner.pair.clone(),
                algorithm,
                kid,
                public_jwk: self.inner.public_jwk.clone(),
                thumbprint: self.inner.thumbprint.clone(),
            }),
        }
    }

    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The key id, if one was given.
    pub fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    /// The public key as a JWK: its required members only, in
    /// lexicographic order and without whitespace (RFC 7638 §3.2), e.g.
    /// `{"crv":"P-256","kty":"EC","x":"…","y":"…"}`.
    pub fn public_jwk(&self) -> &str {
        &self.inner.public_jwk
    }

    /// The RFC 7638 thumbprint of the public key: base64url of the SHA-256
    /// of [`public_jwk`](Self::public_jwk).
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// Signs a JWS signing input (`BASE64URL(header) "." BASE64URL(payload)`)
    /// and returns the signature as JWS puts it: `r || s` for ECDSA, the
    /// 64 bytes of Ed25519, the modulus-sized RSA signature.
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, KeyError> {
        sign_with(&self.inner.pair, self.inner.algorithm, signing_input)
    }
}

/// A parsed JWK whose string members are zeroized on drop.
struct WipeOnDrop(serde_json::Map<String, Value>);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for value in self.0.values_mut() {
            if let Value::String(text) = value {
                text.zeroize();
            }
        }
    }
}

fn ec_signing(algorithm: Algorithm) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    match algorithm {
        Algorithm::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => None,
    }
}

fn rejected(e: lib::error::KeyRejected) -> KeyError {
    KeyError::Rejected(backend::rejected_reason(&e))
}

/// An unknown `kty`, `crv` or `alg` as an error names it: the value when
/// it looks like a name (at most 16 ASCII letters, digits, `-`, `_`, `+`),
/// else a placeholder, so that nothing else of the input (a misplaced
/// private member, say) reaches an error.
fn short(s: &str) -> String {
    let name_like = !s.is_empty()
        && s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+'));
    if name_like {
        s.to_owned()
    } else {
        "(not a name)".to_owned()
    }
}

fn sign_with(pair: &Pair, algorithm: Algorithm, input: &[u8]) -> Result<Vec<u8>, KeyError> {
    match pair {
        Pair::Ec(pair) => pair
            .sign(&backend::rng(), input)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Sign),
        Pair::Ed25519(pair) => Ok(pair.sign(input).as_ref().to_vec()),
        Pair::Rsa(pair) => {
            let padding: &'static dyn sig::RsaEncoding = match algorithm {
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                _ => &sig::RSA_PKCS1_SHA256,
            };
            let mut out = vec![0; backend::rsa_modulus_len(pair)];
            pair.sign(padding, &backend::rng(), input, &mut out)
                .map_err(|_| KeyError::Sign)?;
            Ok(out)
        }
    }
}

/// The RFC 7638 form of the public key: required members, sorted.
fn public_jwk(pair: &Pair) -> Result<String, KeyError> {
    Ok(match pair {
        Pair::Ec(pair) => {
            let point = pair.public_key().as_ref();
            let crv = if point.len() == 65 { "P-256" } else { "P-384" };
            let half = (point.len().saturating_sub(1)) / 2;
            let (x, y) = point
                .get(1..)
                .map(|xy| xy.split_at(half))
                .ok_or_else(|| KeyError::Rejected("empty public key".into()))?;
            format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                base64url(x),
                base64url(y)
            )
        }
        Pair::Ed25519(pair) => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            base64url(pair.public_key().as_ref())
        ),
        Pair::Rsa(pair) => {
            let (n, e) = rsa_public(pair.public_key().as_ref())
                .ok_or_else(|| KeyError::Rejected("unreadable RSA public key".into()))?;
            format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                base64url(e),
                base64url(n)
            )
        }
    })
}

/// `n` and `e` of a DER `RSAPublicKey` (RFC 8017 A.1.1), without leading
/// zero bytes.
fn rsa_public(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, body, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, n, rest) = der_item(body)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, e, _) = der_item(rest)?;
    if tag != 0x02 {
        return None;
    }
    Some((strip_zeros(n), strip_zeros(e)))
}

fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        if rest.is_empty() {
            break;
        }
        b = rest;
    }
    b
}

/// One DER item: its tag, its contents and what follows it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((tag, body, rest))
}

/// The label and decoded bytes of the first PEM block.
fn pem_block(pem: &str) -> Result<(&str, Zeroizing<Vec<u8>>), KeyError> {
    use base64::Engine as _;
    let start = pem
        .find("-----BEGIN ")
        .ok_or(KeyError::Format("no PEM `PRIVATE KEY` block"))?;
    let after = &pem[start + "-----BEGIN ".len()..];
    let label_end = after
        .find("-----")
        .ok_or(KeyError::Format("a malformed PEM header"))?;
    let label = &after[..label_end];
    let body = &after[label_end + "-----".len()..];
    let end_marker = format!("-----END {label}-----");
    let end = body
        .find(&end_marker)
        .ok_or(KeyError::Format("a PEM block without its END line"))?;
    let text: Zeroizing<String> = Zeroizing::new(
        body[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| KeyError::Format("PEM contents that are not base64"))?;
    Ok((label, Zeroizing::new(der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_items_are_read_and_bounded() {
        assert_eq!(
            der_item(&[0x02, 0x01, 0x05]),
            Some((2, &[5u8][..], &[][..]))
        );
        assert_eq!(der_item(&[0x02, 0x05, 0x05]), None);
        assert_eq!(der_item(&[0x02, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_item(&[]), None);
        assert_eq!(strip_zeros(&[0, 0, 1]), &[1]);
        assert_eq!(strip_zeros(&[0]), &[0]);
    }

    #[test]
    fn pem_errors_name_the_problem_not_the_contents() {
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            SigningKey::from_pem(encrypted),
            Err(KeyError::Encrypted)
        ));
        let garbage =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(garbage).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("secret-key"),
            "{shown}"
        );
        assert!(SigningKey::from_pem("nothing here").is_err());
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA").is_err());
    }
}
