//! Client assertions (RFC 7523 §2.2, OpenID Connect Core §9): a JWT the
//! client signs for each token or revocation request, with its private key
//! (`private_key_jwt`) or its secret (`client_secret_jwt`).

use crate::jose::{self, Algorithm, KeyError, SigningKey};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How an assertion is signed.
pub(crate) enum Signer<'a> {
    /// `private_key_jwt`.
    Key(&'a SigningKey),
    /// `client_secret_jwt`: HS256 keyed by the client secret.
    Secret(&'a str),
}

/// The claims of one assertion.
pub(crate) struct Claims<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) lifetime: Duration,
    pub(crate) not_before: bool,
}

/// A fresh assertion: a new `jti` and the current `iat` every time.
pub(crate) fn sign(signer: Signer<'_>, claims: &Claims<'_>) -> Result<String, KeyError> {
    let (algorithm, kid) = match &signer {
        Signer::Key(key) => (key.algorithm(), key.kid()),
        Signer::Secret(_) => (Algorithm::HS256, None),
    };
    let mut header = format!(r#"{{"alg":"{algorithm}","typ":"JWT""#);
    if let Some(kid) = kid {
        header.push_str(r#","kid":"#);
        header.push_str(&jose::json_string(kid));
    }
    header.push('}');

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = now.saturating_add(claims.lifetime.as_secs().max(1));
    let jti = jose::random_id().ok_or(KeyError::Sign)?;
    let id = jose::json_string(claims.client_id);
    let mut body = format!(
        r#"{{"iss":{id},"sub":{id},"aud":{},"jti":"{jti}","iat":{now},"exp":{exp}"#,
        jose::json_string(claims.audience)
    );
    if claims.not_before {
        body.push_str(&format!(r#","nbf":{now}"#));
    }
    body.push('}');

    jose::compact(&header, &body, |input| match signer {
        Signer::Key(key) => key.sign(input),
        Signer::Secret(secret) => Ok(jose::hmac_sha256(secret.as_bytes(), input)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::backend_for_tests as lib;
    use serde_json::Value;

    fn parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
        let mut it = jwt.split('.');
        let (h, c, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(it.next().is_none());
        let decode = |p: &str| jose::base64url_decode(p).unwrap();
        (
            serde_json::from_slice(&decode(h)).unwrap(),
            serde_json::from_slice(&decode(c)).unwrap(),
            decode(s),
            format!("{h}.{c}"),
        )
    }

    fn claims() -> Claims<'static> {
        Claims {
            client_id: "client \"1\"",
            audience: "https://as.example.com/token",
            lifetime: Duration::from_secs(90),
            not_before: true,
        }
    }

    /// Verifies `signature` over `input` with the key's public half, read
    /// back from its public JWK as a verifier would.
    fn verify(key: &SigningKey, input: &[u8], signature: &[u8]) {
        use lib::signature::{self as sig, UnparsedPublicKey};
        let jwk: Value = serde_json::from_str(key.public_jwk()).unwrap();
        let b = |name: &str| jose::base64url_decode(jwk[name].as_str().unwrap()).unwrap();
        let ok = match key.algorithm() {
            Algorithm::ES256 | Algorithm::ES384 => {
                let mut point = vec![4];
                point.extend(b("x"));
                point.extend(b("y"));
                let alg: &dyn sig::VerificationAlgorithm = if key.algorithm() == Algorithm::ES256 {
                    &sig::ECDSA_P256_SHA256_FIXED
                } else {
                    &sig::ECDSA_P384_SHA384_FIXED
                };
                UnparsedPublicKey::new(alg, point).verify(input, signature)
            }
            Algorithm::EdDSA => {
                UnparsedPublicKey::new(&sig::ED25519, b("x")).verify(input, signature)
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let params = if key.algorithm() == Algorithm::RS256 {
                    &sig::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &sig::RSA_PSS_2048_8192_SHA256
                };
                sig::RsaPublicKeyComponents {
                    n: b("n"),
                    e: b("e"),
                }
                .verify(params, input, signature)
            }
            other => panic!("unexpected {other}"),
        };
        assert!(ok.is_ok(), "{} signature does not verify", key.algorithm());
    }

    fn keys() -> Vec<SigningKey> {
        let mut keys = vec![
            SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .with_kid("ec-1"),
            SigningKey::generate(Algorithm::ES384)
                .unwrap()
                .with_kid("ec-2"),
            SigningKey::generate(Algorithm::EdDSA)
                .unwrap()
                .with_kid("ed-1"),
        ];
        if let Some(rsa) = crate::jose::test_rsa_key() {
            keys.push(rsa.clone().with_kid("rsa-1"));
            keys.push(
                rsa.with_algorithm(Algorithm::PS256)
                    .unwrap()
                    .with_kid("rsa-2"),
            );
        }
        keys
    }

    #[test]
    fn every_algorithm_signs_the_claims_and_the_header_a_server_checks() {
        for key in keys() {
            let jwt = sign(Signer::Key(&key), &claims()).unwrap();
            let (header, body, signature, input) = parts(&jwt);
            assert_eq!(header["alg"], key.algorithm().as_str());
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["kid"], key.kid().unwrap());
            assert_eq!(body["iss"], "client \"1\"");
            assert_eq!(body["sub"], "client \"1\"");
            assert_eq!(body["aud"], "https://as.example.com/token");
            let iat = body["iat"].as_u64().unwrap();
            assert_eq!(body["exp"].as_u64().unwrap(), iat + 90);
            assert_eq!(body["nbf"].as_u64().unwrap(), iat);
            assert_eq!(body["jti"].as_str().unwrap().len(), 22);
            verify(&key, input.as_bytes(), &signature);
        }
    }

    #[test]
    fn client_secret_jwt_is_hs256_over_the_signing_input() {
        let jwt = sign(Signer::Secret("the-secret"), &claims()).unwrap();
        let (header, _, signature, input) = parts(&jwt);
        assert_eq!(header["alg"], "HS256");
        assert!(header.get("kid").is_none());
        let key = lib::hmac::Key::new(lib::hmac::HMAC_SHA256, b"the-secret");
        lib::hmac::verify(&key, input.as_bytes(), &signature).unwrap();
        assert!(!jwt.contains("the-secret"));
    }

    #[test]
    fn two_assertions_never_share_a_jti() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let jwt = sign(Signer::Key(&key), &claims()).unwrap();
            let (_, body, _, _) = parts(&jwt);
            assert!(seen.insert(body["jti"].as_str().unwrap().to_owned()));
        }
    }
}
