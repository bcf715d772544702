//! Proofs as a verifier reads them: the header, the claims, and the
//! signature checked with the public key of the header's `jwk` by the crypto
//! library itself.

use super::*;
use crate::jose::{self, base64url_decode};
#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs as lib;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
use ring as lib;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// The header, the claims and the signature of a compact JWS, after
/// checking the signature with the header's `jwk`.
fn verify(proof: &str) -> (Value, Value) {
    let mut parts = proof.split('.');
    let (h, c, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert!(parts.next().is_none());
    let header: Value = serde_json::from_slice(&base64url_decode(h).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&base64url_decode(c).unwrap()).unwrap();
    let signature = base64url_decode(s).unwrap();
    let jwk = &header["jwk"];
    let coord = |name: &str| base64url_decode(jwk[name].as_str().unwrap()).unwrap();
    let input = format!("{h}.{c}");
    let (algorithm, public): (&dyn lib::signature::VerificationAlgorithm, Vec<u8>) =
        match header["alg"].as_str().unwrap() {
            "ES256" => {
                let mut point = vec![4];
                point.extend(coord("x"));
                point.extend(coord("y"));
                (&lib::signature::ECDSA_P256_SHA256_FIXED, point)
            }
            "EdDSA" => (&lib::signature::ED25519, coord("x")),
            other => panic!("unexpected alg {other}"),
        };
    lib::signature::UnparsedPublicKey::new(algorithm, &public)
        .verify(input.as_bytes(), &signature)
        .expect("the signature verifies with the header's jwk");
    assert!(jwk.get("d").is_none(), "no private member in the header");
    (header, claims)
}

fn proof_for(dpop: &Dpop, method: Method, uri: &str, token: Option<&str>) -> (Value, Value) {
    let value = dpop.proof(&method, &uri.parse().unwrap(), token).unwrap();
    assert!(value.is_sensitive());
    verify(value.to_str().unwrap())
}

#[test]
fn an_api_proof_has_every_claim_and_verifies_with_its_jwk() {
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let dpop = Dpop::generate(alg).unwrap();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (header, claims) = proof_for(
            &dpop,
            Method::POST,
            "https://API.example.com:443/v1/orders?page=2",
            Some("tok-123"),
        );
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], alg.as_str());
        let jwk: Value = serde_json::from_str(dpop.key().public_jwk()).unwrap();
        assert_eq!(header["jwk"], jwk);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://api.example.com/v1/orders");
        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat >= before && iat <= before + 5, "{iat} vs {before}");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 24);
        // RFC 9449 §4.2: base64url(SHA-256(ASCII(token))).
        assert_eq!(claims["ath"], jose::base64url(&jose::sha256(b"tok-123")));
        assert!(claims.get("nonce").is_none());
        let names: Vec<&String> = claims.as_object().unwrap().keys().collect();
        assert_eq!(names.len(), 5, "{names:?}");
    }
}

#[test]
fn a_token_request_proof_has_no_ath_and_each_proof_its_own_jti() {
    let dpop = Dpop::generate(Algorithm::EdDSA).unwrap();
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..100 {
        let (_, claims) = proof_for(&dpop, Method::POST, "https://as.example/token", None);
        assert!(claims.get("ath").is_none());
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
    // The same key in another `Dpop` (another process, say): other jtis.
    let again = Dpop::new(dpop.key().clone()).unwrap();
    for _ in 0..100 {
        let (_, claims) = proof_for(&again, Method::POST, "https://as.example/token", None);
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
}

#[test]
fn the_nonce_of_the_origin_goes_in_and_no_other() {
    let dpop = Dpop::generate(Algorithm::ES256).unwrap();
    let api: Uri = "https://api.example/a".parse().unwrap();
    let mut answer = HeaderMap::new();
    answer.insert(DPOP_NONCE, HeaderValue::from_static("n-1"));
    assert!(dpop.remember_nonce(&api, &answer));
    let (_, claims) = proof_for(&dpop, Method::GET, "https://api.example/b?x", Some("t"));
    assert_eq!(claims["nonce"], "n-1");
    let (_, claims) = proof_for(&dpop, Method::GET, "https://as.example/token", None);
    assert!(claims.get("nonce").is_none());
    assert_eq!(dpop.nonce(&api).as_deref(), Some("n-1"));
}

#[test]
fn an_htu_with_a_quote_is_escaped() {
    let dpop = Dpop::generate(Algorithm::EdDSA).unwrap();
    let uri = Uri::builder()
        .scheme("https")
        .authority("e.com")
        .path_and_query("/a\"b")
        .build();
    if let Ok(uri) = uri {
        let value = dpop.proof(&Method::GET, &uri, None).unwrap();
        let (_, claims) = verify(value.to_str().unwrap());
        assert_eq!(claims["htu"], "https://e.com/a\"b");
    }
}

#[test]
fn no_proof_without_a_full_uri() {
    let dpop = Dpop::generate(Algorithm::EdDSA).unwrap();
    let err = dpop
        .proof(&Method::GET, &"/pkg.Svc/Call".parse().unwrap(), Some("t"))
        .unwrap_err();
    assert_eq!(err, DpopError::NoTargetUri);
}

#[test]
fn keys_load_from_pem_and_jwk_and_symmetric_ones_are_refused() {
    let jwk = r#"{"kty":"OKP","crv":"Ed25519",
      "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
      "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
    let dpop = Dpop::from_jwk(jwk).unwrap();
    assert_eq!(dpop.algorithm(), Algorithm::EdDSA);
    assert_eq!(
        dpop.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    proof_for(&dpop, Method::GET, "https://e.com/", Some("t"));
    assert!(
        Dpop::from_pem("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----").is_err()
    );
}

#[test]
fn no_key_material_in_debug_or_errors() {
    let jwk = r#"{"kty":"OKP","crv":"Ed25519",
      "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
      "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
    let dpop = Dpop::from_jwk(jwk).unwrap();
    let shown = format!("{dpop:?} {:?}", dpop.key());
    assert!(!shown.contains("nWGxne"), "{shown}");
    assert!(shown.contains(dpop.thumbprint()));
    let bad = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2"}"#;
    if let Err(e) = Dpop::from_jwk(bad) {
        assert!(!format!("{e} {e:?}").contains("nWGxne"));
    }
}

#[test]
fn admission_needs_the_token_type_the_request_asked_for() {
    let dpop = Dpop::generate(Algorithm::EdDSA).unwrap();
    assert!(Dpop::admit(Some(&dpop), true).is_ok());
    assert!(Dpop::admit(None, false).is_ok());
    assert_eq!(
        Dpop::admit(Some(&dpop), false),
        Err(InvalidResponse::DpopDowngrade)
    );
    assert!(Dpop::admit(Some(&dpop.clone().allow_bearer_downgrade(true)), false).is_ok());
    assert_eq!(
        Dpop::admit(None, true),
        Err(InvalidResponse::UnsupportedTokenType("DPoP".into()))
    );
}
