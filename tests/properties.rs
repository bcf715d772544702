//! Property tests (proptest) of the code that reads what servers send and
//! builds what goes on the wire (R13, R14):
//!
//! - the RFC 6749 token-response parser and the RFC 7009 revocation parser;
//! - the OneLogin token and revocation parsers (with the `status`/`data`
//!   envelopes);
//! - the `WWW-Authenticate` reader, `challenge::bearer_error`;
//! - the header value the layer builds from a token.
//!
//! Arbitrary input never panics, whatever it yields is well-formed, valid
//! input round-trips, and secrets do not come back out in errors. Case
//! counts are kept moderate so the suite stays fast; raise them with
//! `PROPTEST_CASES`.

mod bounded;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, ServiceExt};
use tower_token::challenge::bearer_error;
use tower_token::dialect::{Credentials, onelogin, rfc};
use tower_token::error::{Endpoint, Error, InvalidResponse, ProviderError};
use tower_token::{Token, TokenLayer, source};

const SECRET: &str = "Pr0p+Secret/:%&= x";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        // No regression files in the source tree; a failure prints its
        // minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn credentials() -> Credentials {
    Credentials::new("prop-client", SECRET)
}

fn answer(status: u16, body: impl Into<Bytes>) -> http::Response<Bytes> {
    let mut response = http::Response::new(body.into());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

fn statuses() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => prop::sample::select(vec![201u16, 204, 302, 400, 401, 403, 404, 429, 500, 503]),
        1 => 100u16..=999,
    ]
}

/// Whether the token is one the layer may send.
fn header_safe(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What every parsed token must satisfy.
fn check_token(token: &Token) -> Result<(), TestCaseError> {
    prop_assert!(header_safe(token.access_token().secret()));
    if let Some(lifetime) = token.expires_in() {
        prop_assert!(lifetime > Duration::ZERO);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// JSON-ish values
// ---------------------------------------------------------------------------

/// Field names the parsers look at, and a few they do not.
const KEYS: &[&str] = &[
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "scope",
    "error",
    "error_description",
    "error_uri",
    "status",
    "data",
    "message",
    "statusCode",
    "name",
    "code",
    "type",
    "x",
];

/// Any string of up to `max` characters (cheaper to generate than a regex).
fn chars(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        chars(12).prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "0",
            "-1",
            "1.5",
            "3600",
            " 60 ",
            "1e400",
            "18446744073709551616",
            "Bearer",
            "bearer",
            "mac",
            "tok-1",
            "a\r\nb",
            "é",
            "Authentication Failure",
            "Access Token missing",
            "invalid_client",
            "true",
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            object_of(inner),
        ]
    })
}

fn object_of(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => chars(8),
    ];
    prop::collection::vec((key, values), 0..7)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
}

/// Objects shaped like token answers, error answers and OneLogin envelopes.
fn answer_object() -> impl Strategy<Value = Value> {
    object_of(json_value())
}

// ---------------------------------------------------------------------------
// RFC 6749 token answers and RFC 7009 revocation answers
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn rfc_parsers_never_panic_on_bytes(
        status in statuses(),
        body in prop::collection::vec(any::<u8>(), 0..300),
        retry_after in prop::option::of("[ -~]{0,30}"),
    ) {
        let mut response = answer(status, body);
        if let Some(value) = retry_after.and_then(|v| HeaderValue::try_from(v).ok()) {
            response.headers_mut().insert(http::header::RETRY_AFTER, value);
        }
        if let Ok(token) = rfc::parse_token_response(&response, &credentials()) {
            check_token(&token)?;
        }
        let _ = rfc::parse_revoke_response(&response, &[SECRET, "tok"]);
        let _ = onelogin::parse_token_response(&response, &credentials());
        let _ = onelogin::parse_revoke_response(&response, &[SECRET]);
    }

    /// A valid answer comes back field for field.
    #[test]
    fn rfc_valid_token_round_trips(
        access_token in "[!-~]{1,64}",
        expires_in in 1u64..=u64::MAX,
        as_string in any::<bool>(),
        token_type in prop::option::of(prop::sample::select(vec!["Bearer", "bearer", "BEARER", "bEaReR"])),
        refresh_token in prop::option::of(".{1,40}"),
        scope in prop::option::of(".{0,40}"),
        status in prop::sample::select(vec![200u16, 201, 203]),
        extra in prop::option::of(json_value()),
    ) {
        let mut object = Map::new();
        object.insert("access_token".into(), json!(access_token));
        object.insert(
            "expires_in".into(),
            if as_string { json!(format!(" {expires_in}")) } else { json!(expires_in) },
        );
        if let Some(t) = token_type { object.insert("token_type".into(), json!(t)); }
        if let Some(r) = &refresh_token { object.insert("refresh_token".into(), json!(r)); }
        if let Some(s) = &scope { object.insert("scope".into(), json!(s)); }
        if let Some(x) = extra { object.insert("x_vendor_extension".into(), x); }
        let body = Value::Object(object).to_string();

        let token = rfc::parse_token_response(&answer(status, body), &credentials()).unwrap();
        prop_assert_eq!(token.access_token().secret(), access_token.as_str());
        prop_assert_eq!(token.expires_in(), Some(Duration::from_secs(expires_in)));
        prop_assert_eq!(token.refresh_token().map(|r| r.secret()), refresh_token.as_deref());
        prop_assert_eq!(token.scope(), scope.as_deref());
    }

    /// Non-2xx answers and 2xx error bodies never carry the client secret
    /// or the revoked token into the error, wherever the server echoes them.
    #[test]
    fn echoed_secrets_are_redacted(
        status in prop::sample::select(vec![200u16, 400, 401, 500, 503]),
        before in "[a-z ]{0,60}",
        after in "[a-z ]{0,60}",
        token in "[A-Z0-9]{12,24}",
        shape in 0..4u8,
    ) {
        let echo = format!("{before}{SECRET}{after} {token}");
        let body = match shape {
            0 => json!({"error": "invalid_request", "error_description": echo}).to_string(),
            1 => json!({"error": echo}).to_string(),
            2 => echo.clone(),
            _ => json!({"status": {"error": true, "code": status, "type": echo, "message": echo}}).to_string(),
        };
        let response = answer(status, body);
        let secrets = [SECRET, token.as_str()];
        let mut errors = Vec::new();
        errors.extend(rfc::parse_revoke_response(&response, &secrets).err());
        errors.extend(onelogin::parse_revoke_response(&response, &secrets).err());
        errors.extend(rfc::parse_token_response(&response, &credentials()).err());
        errors.extend(onelogin::parse_token_response(&response, &credentials()).err());
        for err in &errors {
            let shown = format!("{err} {err:?}");
            prop_assert!(!shown.contains(SECRET), "{}", shown);
            // The revocation parsers were told about the token too (the
            // token parsers were not: it is not theirs to know).
            let revocation = matches!(err, Error::OAuth { endpoint: Endpoint::Revocation, .. }
                    | Error::Status { endpoint: Endpoint::Revocation, .. }
                    | Error::Provider { endpoint: Endpoint::Revocation, .. });
            if revocation {
                prop_assert!(!shown.contains(&token), "{}", shown);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// OneLogin
// ---------------------------------------------------------------------------

fn envelope(data: Value) -> Value {
    json!({
        "status": {"error": false, "code": 200, "type": "success", "message": "Success"},
        "data": [data],
    })
}

proptest! {
    #![proptest_config(config(500))]

    /// A OneLogin token, bare or in the v1 envelope, comes back field for
    /// field; without `expires_in` it lives `TOKEN_LIFETIME`.
    #[test]
    fn onelogin_valid_token_round_trips(
        access_token in "[!-~]{1,64}",
        expires_in in prop::option::of(1u64..=u64::MAX),
        refresh_token in prop::option::of("[!-~]{1,40}"),
        wrapped in any::<bool>(),
        extra in prop::option::of("[ -~]{0,20}"),
    ) {
        let mut object = json!({
            "access_token": access_token,
            "token_type": "bearer",
            "created_at": "2015-11-11T03:36:18.714Z",
            "account_id": 555555,
        });
        if let Some(e) = expires_in { object["expires_in"] = json!(e); }
        if let Some(r) = &refresh_token { object["refresh_token"] = json!(r); }
        if let Some(x) = extra { object["x_extra"] = json!(x); }
        let object = if wrapped { envelope(object) } else { object };

        let token = onelogin::parse_token_response(&answer(200, object.to_string()), &credentials()).unwrap();
        prop_assert_eq!(token.access_token().secret(), access_token.as_str());
        prop_assert_eq!(
            token.expires_in(),
            Some(expires_in.map_or(onelogin::TOKEN_LIFETIME, Duration::from_secs))
        );
        prop_assert_eq!(token.refresh_token().map(|r| r.secret()), refresh_token.as_deref());
    }

    /// The documented messages are typed whatever their case, spacing and
    /// trailing text; a 2xx without an error envelope is success.
    #[test]
    fn onelogin_revoke_messages_are_typed(
        which in 0usize..5,
        upper in any::<bool>(),
        spaces in 1usize..4,
        trailing in "[a-z .]{0,20}",
        envelope_shape in any::<bool>(),
        ok_body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (status, message, kind) = [
            (400u16, "Content Type is not specified or specified incorrectly", ProviderError::ContentType),
            (400, "Access Token missing", ProviderError::AccessTokenMissing),
            (400, "The authorization information is missing", ProviderError::AuthorizationMissing),
            (401, "Authentication Failure", ProviderError::AuthenticationFailure),
            (404, "No Route Exists", ProviderError::NoRoute),
        ][which].clone();
        let mut message = message.split(' ').collect::<Vec<_>>().join(&" ".repeat(spaces));
        if upper { message = message.to_uppercase(); }
        message.push_str(&trailing);
        let body = if envelope_shape {
            json!({"status": {"error": true, "code": status, "type": "bad request", "message": message}})
        } else {
            json!({"statusCode": status, "name": "BadRequest", "message": message})
        };
        match onelogin::parse_revoke_response(&answer(status, body.to_string()), &[SECRET]) {
            Err(Error::Provider { kind: got, status: s, .. }) => {
                prop_assert_eq!(got, kind);
                prop_assert_eq!(s.as_u16(), status);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // Any 2xx whose body is not an error envelope is success.
        let looks_like_error = serde_json::from_slice::<Value>(&ok_body)
            .ok()
            .is_some_and(|v| v.get("status").is_some() || v.get("error").is_some() || v.get("message").is_some());
        if !looks_like_error {
            prop_assert!(onelogin::parse_revoke_response(&answer(200, ok_body), &[SECRET]).is_ok());
        }
    }
}

// Arbitrary JSON objects are slower to generate: fewer cases.
proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rfc_parsers_never_panic_on_json_objects(status in statuses(), object in answer_object()) {
        let response = answer(status, object.to_string());
        match rfc::parse_token_response(&response, &credentials()) {
            Ok(token) => {
                check_token(&token)?;
                prop_assert!((200..300).contains(&status));
                prop_assert_eq!(object.get("access_token").and_then(Value::as_str), Some(token.access_token().secret()));
            }
            Err(Error::InvalidResponse { reason, .. }) => {
                prop_assert!((200..300).contains(&status), "{:?} for {}", reason, status);
            }
            Err(_) => {}
        }
        let revoked = rfc::parse_revoke_response(&response, &[SECRET]);
        if (200..300).contains(&status) && !object.get("error").is_some_and(Value::is_string) {
            prop_assert!(revoked.is_ok(), "{:?}", revoked);
        }
    }

    #[test]
    fn onelogin_parsers_never_panic_on_json_objects(
        status in statuses(),
        object in answer_object(),
        wrap in any::<bool>(),
    ) {
        let object = if wrap { envelope(object) } else { object };
        let response = answer(status, object.to_string());
        if let Ok(token) = onelogin::parse_token_response(&response, &credentials()) {
            check_token(&token)?;
            prop_assert!((200..300).contains(&status));
        }
        if let Err(err) = onelogin::parse_revoke_response(&response, &[SECRET]) {
            let shown = format!("{err} {err:?}");
            prop_assert!(!shown.contains(SECRET), "{}", shown);
        }
    }
}

// ---------------------------------------------------------------------------
// WWW-Authenticate
// ---------------------------------------------------------------------------

fn token68() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~/-]{1,16}"
}

/// A quoted string holding any text, with `"` and `\` escaped.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An auth-param `name=value` whose name is not `error`.
fn param() -> impl Strategy<Value = String> {
    (
        "[a-z_]{1,10}".prop_filter("not error", |n| !n.eq_ignore_ascii_case("error")),
        prop_oneof![token68(), "[^\u{0}]{0,16}".prop_map(|t| quoted(&t))],
        0usize..3,
    )
        .prop_map(|(name, value, pad)| {
            format!("{name}{}={}{value}", " ".repeat(pad), " ".repeat(pad))
        })
}

/// A challenge of another scheme, whose own `error` must be ignored.
fn other_challenge() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["Basic", "Digest", "DPoP", "Negotiate", "Newauth"]),
        prop::collection::vec(param(), 0..3),
        prop::option::of(token68()),
    )
        .prop_map(|(scheme, mut params, error)| {
            if let Some(e) = error {
                params.push(format!("error={e}"));
            }
            format!("{scheme} {}", params.join(", "))
        })
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn bearer_error_never_panics(header in ".{0,80}") {
        let _ = bearer_error(&header);
    }

    #[test]
    fn bearer_error_never_panics_on_near_syntax(header in "[ \t,=\"\\\\a-zA-Z]{0,60}") {
        let _ = bearer_error(&header);
    }

    /// `Bearer … error=X …`, after any other challenges, yields X, quoted
    /// or not, wherever the `error` parameter sits.
    #[test]
    fn bearer_error_finds_the_error(
        before in prop::collection::vec(other_challenge(), 0..3),
        scheme in prop::sample::select(vec!["Bearer", "bearer", "BEARER"]),
        params_before in prop::collection::vec(param(), 0..3),
        params_after in prop::collection::vec(param(), 0..3),
        error in prop_oneof![token68(), "[^\u{0}]{0,24}"],
        quote in any::<bool>(),
        name in prop::sample::select(vec!["error", "ERROR", "Error"]),
        after in prop::collection::vec(other_challenge(), 0..2),
    ) {
        let is_token = !error.is_empty()
            && error.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
        let value = if quote || !is_token { quoted(&error) } else { error.clone() };
        let mut params = params_before;
        params.push(format!("{name}={value}"));
        params.extend(params_after);
        let mut challenges = before;
        challenges.push(format!("{scheme} {}", params.join(", ")));
        challenges.extend(after);
        let header = challenges.join(", ");
        prop_assert_eq!(bearer_error(&header), Some(error), "{}", header);
    }

    /// Without a Bearer challenge there is no Bearer error.
    #[test]
    fn no_bearer_no_error(challenges in prop::collection::vec(other_challenge(), 0..4)) {
        prop_assert_eq!(bearer_error(&challenges.join(", ")), None);
    }
}

// ---------------------------------------------------------------------------
// The header value the layer builds
// ---------------------------------------------------------------------------

fn access_tokens() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[!-~]{1,48}",
        2 => ".{0,24}",
        1 => "[ -~]{0,24}",
        1 => ("[!-~]{0,12}", prop::sample::select(vec!['\r', '\n', '\0', ' ', '\t', '\u{7f}', 'é', '\u{2028}']), "[!-~]{0,12}")
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Scheme {
    Bearer,
    Raw,
    Custom,
}

proptest! {
    #![proptest_config(config(256))]

    /// A token source handing out any string: the request either fails with
    /// a typed error and never reaches the inner service, or carries exactly
    /// `<scheme> <token>` in a valid, sensitive header.
    #[test]
    fn header_is_exact_or_a_typed_error(
        token in access_tokens(),
        scheme in prop::sample::select(vec![Scheme::Bearer, Scheme::Raw, Scheme::Custom]),
    ) {
        bounded::watchdog!();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let handed_out = token.clone();
        let builder = TokenLayer::builder(source::from_fn(move |_| {
            let token = handed_out.clone();
            async move { Ok::<_, std::io::Error>(Token::new(token).with_expires_in(Duration::from_secs(60))) }
        }));
        let (layer, expected) = match scheme {
            Scheme::Bearer => (builder.build().unwrap(), format!("Bearer {token}")),
            Scheme::Raw => (builder.raw().build().unwrap(), token.clone()),
            Scheme::Custom => (builder.scheme("DPoP").build().unwrap(), format!("DPoP {token}")),
        };
        let seen: Arc<Mutex<Vec<HeaderValue>>> = Arc::default();
        let record = Arc::clone(&seen);
        let inner = tower::service_fn(move |req: http::Request<String>| {
            record.lock().unwrap().extend(req.headers().get(http::header::AUTHORIZATION).cloned());
            async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
        });
        let svc = layer.layer(inner);
        let result = runtime.block_on(svc.oneshot(http::Request::new(String::new())));
        let seen = seen.lock().unwrap();
        match result {
            Ok(_) => {
                prop_assert!(header_safe(&token), "{:?} was sent", token);
                prop_assert_eq!(seen.len(), 1);
                let value = &seen[0];
                prop_assert_eq!(value.as_bytes(), expected.as_bytes());
                prop_assert_eq!(value.to_str().ok(), Some(expected.as_str()));
                prop_assert!(value.is_sensitive());
            }
            Err(err) => {
                prop_assert!(seen.is_empty(), "a request was sent without a good token");
                prop_assert!(!header_safe(&token), "{:?} was refused: {}", token, err);
                let reason = match err.downcast_ref::<Error>() {
                    Some(Error::InvalidResponse { reason, .. }) => reason.clone(),
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                };
                let expected_reason = if token.is_empty() {
                    InvalidResponse::EmptyAccessToken
                } else {
                    InvalidResponse::AccessTokenNotHeaderSafe
                };
                prop_assert_eq!(reason, expected_reason);
            }
        }
    }
}

/// A secret placed around the excerpt's cut, after multi-byte text, leaves
/// no part of itself in `Error::Status::body`: the whole body is redacted
/// before it is cut.
#[test]
fn excerpt_keeps_no_part_of_a_secret() {
    let secret = "SECRETVALUE0123456789ABCDEFGHIJ";
    for lead in 240..256 {
        let body = format!("{}{secret} tail", "😀".repeat(lead));
        let err = rfc::parse_revoke_response(&answer(500, body), &[secret]).unwrap_err();
        let shown = format!("{err:?}");
        assert!(
            !shown.contains(&secret[..4]),
            "{lead}: part of the secret shows: {shown}"
        );
    }
}
