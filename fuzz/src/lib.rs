//! What the fuzz targets share: reading an input as an HTTP answer that may
//! carry a planted client secret, and the invariants every parser keeps.
//!
//! # Inputs
//!
//! An input is an answer as text:
//!
//! ```text
//! 401
//! retry-after: 120
//! www-authenticate: Bearer error="invalid_client"
//!
//! {"error":"invalid_client","error_description":"bad secret $S"}
//! ```
//!
//! The first line is the status when it is three digits; then come header
//! lines up to the first empty line, and the body. An input whose first line
//! is not a status is a 200 answer with no headers whose body is the whole
//! input. Markers stand for the planted credentials in the forms a server
//! may echo them: `$S` the client secret, `$P`/`$p` percent-encoded
//! (upper/lower-case hex), `$F` form-urlencoded, `$J` JSON `\u` escapes,
//! `$B`/`$b` the HTTP Basic credentials (form-encoded first / raw), `$I` the
//! client id and `$T` the token being revoked.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, Instant, SystemTime};
use tower_token::__fuzz::{backoff_delay, deadlines};
use tower_token::{Backoff, Credentials, Error, Token};

/// The planted client id.
pub const CLIENT_ID: &str = "fuzz-client";
/// The planted client secret: a space, `+`, `/`, `:`, `%` and a non-ASCII
/// letter, so that every encoding of it differs from it.
pub const SECRET: &str = "PLANTED s3cr+t/:%é";
/// The planted token a revocation names.
pub const TOKEN: &str = "PLANTED-revoked-token";

/// The planted confidential client.
pub fn credentials() -> Credentials {
    Credentials::new(CLIENT_ID, SECRET)
}

/// `base64(id ":" secret)`, each form-urlencoded first when `form_encode`.
pub fn basic(form_encode: bool) -> String {
    let pair = if form_encode {
        format!("{}:{}", form(CLIENT_ID), form(SECRET))
    } else {
        format!("{CLIENT_ID}:{SECRET}")
    };
    base64::engine::general_purpose::STANDARD.encode(pair)
}

fn form(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn percent(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn json_escaped(s: &str) -> String {
    s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect()
}

/// What a `$` marker stands for.
fn expansion(marker: u8) -> Option<String> {
    Some(match marker {
        b'S' => SECRET.to_owned(),
        b'P' => percent(SECRET, true),
        b'p' => percent(SECRET, false),
        b'F' => form(SECRET),
        b'J' => json_escaped(SECRET),
        b'B' => basic(true),
        b'b' => basic(false),
        b'I' => CLIENT_ID.to_owned(),
        b'T' => TOKEN.to_owned(),
        _ => return None,
    })
}

/// `data` with its markers replaced.
pub fn expand(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b == b'$'
            && let Some(text) = data.get(i + 1).and_then(|&m| expansion(m))
        {
            out.extend_from_slice(text.as_bytes());
            i += 2;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && first.is_ascii_whitespace()
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && last.is_ascii_whitespace()
    {
        s = rest;
    }
    s
}

/// Reads an input as an answer (see the crate docs).
pub fn answer(data: &[u8]) -> http::Response<Bytes> {
    let data = expand(data);
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..], &[][..]),
    };
    let status = Some(trim(first))
        .filter(|s| s.len() == 3)
        .and_then(|s| StatusCode::from_bytes(s).ok());
    let Some(status) = status else {
        return http::Response::new(Bytes::from(data));
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&[][..], rest),
    };
    let mut response = http::Response::new(Bytes::copy_from_slice(body));
    *response.status_mut() = status;
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(trim(&line[..colon])),
            HeaderValue::from_bytes(trim(&line[colon + 1..])),
        ) else {
            continue;
        };
        response.headers_mut().append(name, value);
    }
    response
}

/// The strings no error may show: the secret (as it is and as `Debug`
/// escapes it), the Basic credentials, and `extra` (a revoked token).
fn forbidden(extra: &[&str]) -> Vec<String> {
    let mut all = vec![
        SECRET.to_owned(),
        SECRET.escape_debug().to_string(),
        basic(true),
        basic(false),
    ];
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

/// An error keeps none of the planted secrets in its `Display` or `Debug`
/// output, and its `Retry-After` goes through the backoff without panicking.
pub fn check_error(error: &Error, extra: &[&str]) {
    let shown = [
        error.to_string(),
        format!("{error:?}"),
        format!("{error:#?}"),
    ];
    for text in &shown {
        for secret in forbidden(extra) {
            assert!(
                !text.contains(&secret),
                "an error shows a planted secret {secret:?}: {text}"
            );
        }
    }
    check_error_shape(error);
}

/// What is asked of every error, planted secrets or not: its accessors do
/// not panic, and its `Retry-After` goes through the backoff.
pub fn check_error_shape(error: &Error) {
    let _ = (error.to_string(), error.is_retriable());
    let _ = (error.oauth_code(), error.status());
    check_retry_after(error.retry_after());
}

/// A `Retry-After` delay through the cache's backoff: a floor (up to the
/// cap of 300 s), never a panic, whatever the backoff settings.
pub fn check_retry_after(after: Option<Duration>) {
    let cap = Duration::from_secs(300);
    let default = Backoff::default();
    for failures in [0, 1, 2, 21, u32::MAX] {
        let delay = backoff_delay(default, failures, after);
        assert!(delay <= default.max.max(cap), "{failures}: {delay:?}");
        if let Some(after) = after {
            assert!(delay >= after.min(cap), "{after:?} → {delay:?}");
        }
        for backoff in [
            Backoff::new(Duration::MAX, Duration::MAX),
            Backoff::new(Duration::ZERO, Duration::ZERO),
            Backoff::new(Duration::MAX, Duration::ZERO),
        ] {
            let _ = backoff_delay(backoff, failures, after);
        }
    }
}

/// A token a parser accepted can go in an `Authorization` header, and its
/// lifetime goes through the cache's deadline arithmetic.
pub fn check_token(token: &Token) {
    let value = token.access_token().secret();
    assert!(
        !value.is_empty() && value.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "an accepted token is not header-safe: {value:?}"
    );
    let header = HeaderValue::from_str(&format!("Bearer {value}"));
    assert!(header.is_ok(), "an accepted token is no header value");
    check_lifetime(token.expires_in());
}

/// The cache's deadlines for a parsed lifetime, with the default settings
/// and with extreme ones: in order, and, for a stated lifetime (at least a
/// second), after the fetch, so no sum overflowed into "expired at once".
pub fn check_lifetime(expires_in: Option<Duration>) {
    let (now, wall) = (Instant::now(), SystemTime::now());
    if let Some(lifetime) = expires_in {
        assert!(
            lifetime >= Duration::from_secs(1),
            "a parsed lifetime below a second: {lifetime:?}"
        );
    }
    let settings = [
        (Duration::from_secs(300), Duration::from_secs(30), 0.1),
        (Duration::MAX, Duration::MAX, 1.0),
        (Duration::ZERO, Duration::ZERO, 0.0),
        (Duration::from_nanos(1), Duration::MAX, f64::NAN),
        (Duration::from_secs(u64::MAX), Duration::ZERO, f64::INFINITY),
    ];
    for (default_lifetime, leeway, ahead) in settings {
        let d = deadlines(expires_in, default_lifetime, leeway, ahead, now, wall);
        assert!(
            now <= d.refresh_at && d.refresh_at <= d.usable_until,
            "{d:?}"
        );
        assert!(
            wall <= d.refresh_at_wall && d.refresh_at_wall <= d.usable_until_wall,
            "{d:?}"
        );
        assert!(d.usable_until_wall <= d.expires_at_wall, "{d:?}");
        if expires_in.is_some() {
            assert!(
                d.usable_until > now,
                "unusable at once: {expires_in:?} {d:?}"
            );
            assert!(
                d.usable_until_wall > wall,
                "unusable at once: {expires_in:?} {d:?}"
            );
        }
    }
}
