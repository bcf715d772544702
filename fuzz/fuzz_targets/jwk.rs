//! `jose::SigningKey::from_jwk` and `from_pem`: private keys as a user (or
//! a key store) hands them over.
//!
//! Invariants: no panic; an error never shows the private members it was
//! given; a key that loads has a public JWK without private members, an
//! RFC 7638 thumbprint (43 base64url characters), a `Debug` without key
//! material, and signs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_token::jose::{KeyError, SigningKey};

/// The private members of a JWK (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
const PRIVATE: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let planted = private_values(&text);
    match SigningKey::from_jwk(&text) {
        Ok(key) => check_key(&key, &planted),
        Err(e) => check_error(&e, &planted),
    }
    match SigningKey::from_pem(&text) {
        Ok(key) => check_key(&key, &[]),
        Err(e) => {
            // Whatever the PEM held, the error is one of the crate's fixed
            // texts: never a piece of the input longer than a label.
            let shown = format!("{e} {e:?}");
            assert!(shown.len() < 300, "{shown}");
        }
    }
});

/// The string values of the private members, where the input is a JSON
/// object; the ones long enough to be told apart from ordinary words.
fn private_values(text: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    // A value that also stands in a public member may be shown as that
    // member; only what is private alone counts.
    let public: Vec<&str> = object
        .iter()
        .filter(|(name, _)| !PRIVATE.contains(&name.as_str()))
        .filter_map(|(_, value)| value.as_str())
        .collect();
    PRIVATE
        .iter()
        .filter_map(|name| object.get(*name)?.as_str())
        .filter(|value| value.len() >= 8)
        .filter(|value| {
            !public
                .iter()
                .any(|p| p.contains(*value) || value.contains(*p) && p.len() >= 8)
        })
        .map(str::to_owned)
        .collect()
}

/// Every `KeyError` is fixed text but for the name of an unsupported
/// `kty`, `crv` or `alg` (and the crypto library's fixed reason for a
/// rejected key): that name must look like one, and be no private value.
fn check_error(error: &KeyError, planted: &[String]) {
    let named = match error {
        KeyError::UnsupportedKeyType(name)
        | KeyError::UnsupportedCurve(name)
        | KeyError::UnsupportedAlgorithm(name) => name,
        _ => return,
    };
    if named == "(not a name)" {
        // The crate's own placeholder: nothing of the input.
        return;
    }
    let name_like = named.len() <= 16
        && named
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+'));
    assert!(name_like, "{named:?}");
    no_secret(named, planted);
}

fn no_secret(shown: &str, planted: &[String]) {
    for secret in planted {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
}

fn check_key(key: &SigningKey, planted: &[String]) {
    let public: serde_json::Value =
        serde_json::from_str(key.public_jwk()).expect("the public JWK is JSON");
    let object = public.as_object().expect("the public JWK is an object");
    for name in PRIVATE {
        assert!(!object.contains_key(name), "{}", key.public_jwk());
    }
    let thumbprint = key.thumbprint();
    assert_eq!(thumbprint.len(), 43, "{thumbprint}");
    assert!(
        thumbprint
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{thumbprint}"
    );
    no_secret(&format!("{key:?} {key:#?}"), planted);
    let signature = key.sign(b"header.payload").expect("a loaded key signs");
    assert!(!signature.is_empty());
}
