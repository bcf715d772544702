//! Answers the fuzz targets in `fuzz/` found mishandled, each kept as a test
//! (and as an input in the target's corpus, `fuzz/corpus/<target>/`).
//!
//! The parsers are pure functions, so these are plain tests: no runtime, no
//! server.

use bytes::Bytes;
use http::StatusCode;
use tower_token::dialect::{Credentials, kopokopo, onelogin, rfc};
use tower_token::{Error, InvalidResponse};

/// A secret with a space and characters that every encoding changes, as the
/// fuzz targets plant it.
const SECRET: &str = "PLANTED s3cr+t/:%é";

fn answer(status: u16, body: impl Into<Bytes>) -> http::Response<Bytes> {
    let mut response = http::Response::new(body.into());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

fn credentials() -> Credentials {
    Credentials::new("fuzz-client", SECRET)
}

/// Every way the error can be shown.
fn shown(error: &Error) -> String {
    format!("{error}\n{error:?}\n{error:#?}")
}

/// `fuzz/corpus/token_rfc/token_type_secret`: a server that echoes the
/// client secret as the `token_type` of a 200 answer. The error named the
/// unsupported type as it came, secret and all.
#[test]
fn an_unsupported_token_type_is_redacted() {
    let body = format!(r#"{{"access_token":"a","token_type":"{SECRET}"}}"#);
    type Parse = fn(&http::Response<Bytes>, &Credentials) -> Result<tower_token::Token, Error>;
    let parsers: [(&str, Parse); 3] = [
        ("rfc", rfc::parse_token_response),
        ("onelogin", onelogin::parse_token_response),
        ("kopokopo", kopokopo::parse_token_response),
    ];
    for (dialect, parse) in parsers {
        let error = parse(&answer(200, body.clone()), &credentials()).unwrap_err();
        let text = shown(&error);
        assert!(!text.contains(SECRET), "{dialect}: {text}");
        assert!(
            matches!(
                &error,
                Error::InvalidResponse {
                    reason: InvalidResponse::UnsupportedTokenType(t),
                    ..
                } if t == "[redacted]"
            ),
            "{dialect}: {error:?}"
        );
    }
}

/// The type is cut to 32 characters: it is redacted before the cut, so the
/// first 32 characters of a longer secret do not survive either.
#[test]
fn a_long_secret_in_token_type_is_redacted_before_the_cut() {
    let secret = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
    let credentials = Credentials::new("fuzz-client", secret);
    let body = format!(r#"{{"access_token":"a","token_type":"{secret}"}}"#);
    let error = rfc::parse_token_response(&answer(200, body), &credentials).unwrap_err();
    let text = shown(&error);
    assert!(!text.contains(&secret[..32]), "{text}");

    // A long type that is no secret is still cut.
    let body = format!(
        r#"{{"access_token":"a","token_type":"{}"}}"#,
        "N".repeat(100)
    );
    let error = rfc::parse_token_response(&answer(200, body), &credentials).unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidResponse {
                reason: InvalidResponse::UnsupportedTokenType(t),
                ..
            } if t == "N".repeat(32)
        ),
        "{text}"
    );
}

/// `fuzz/corpus/token_rfc/excerpt_tab`: the body excerpt of an error turns
/// control characters into spaces, which it did after redacting, so the
/// secret sent back with a tab (or a NUL, a CR) where it has a space came
/// out as the secret itself.
#[test]
fn a_secret_with_a_control_character_for_its_space_is_redacted() {
    for sep in ["\t", "\r", "\0", "\u{7f}", "\u{85}"] {
        let echoed = SECRET.replace(' ', sep);
        let body = format!("<html>bad client {echoed}</html>");
        let error =
            rfc::parse_token_response(&answer(500, body.clone()), &credentials()).unwrap_err();
        let text = shown(&error);
        assert!(!text.contains(SECRET), "{sep:?}: {text}");
        assert!(
            matches!(&error, Error::Status { body, .. } if body.contains("[redacted]")),
            "{sep:?}: {text}"
        );

        let secrets = [SECRET];
        for error in [
            rfc::parse_revoke_response(&answer(500, body.clone()), &secrets).unwrap_err(),
            onelogin::parse_revoke_response(&answer(500, body.clone()), &secrets).unwrap_err(),
            onelogin::parse_token_response(&answer(502, body.clone()), &credentials()).unwrap_err(),
        ] {
            let text = shown(&error);
            assert!(!text.contains(SECRET), "{sep:?}: {text}");
        }
    }
}

/// `fuzz/corpus/jwk/regression_alg_echo`: a JWK whose `alg` (or `kty`,
/// `crv`) is not a name was echoed into the error, up to 32 characters of
/// it: whatever text stood there (a private member pasted in the wrong
/// place) reached the error. Only name-like values are named now.
#[cfg(feature = "jose")]
#[test]
fn a_jwk_error_names_only_values_that_look_like_names() {
    use tower_token::jose::{KeyError, SigningKey};
    let private = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    for member in ["alg", "kty", "crv"] {
        let mut jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"});
        jwk[member] = serde_json::Value::from(format!("{private} pasted here"));
        let err = SigningKey::from_jwk(&jwk.to_string()).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("nWGxne"), "{member}: {shown}");
    }
    // A name is still named, to say what is not supported.
    let err = SigningKey::from_jwk(r#"{"kty":"oct","k":"AA"}"#).unwrap_err();
    assert_eq!(err, KeyError::UnsupportedKeyType("oct".into()));
}
