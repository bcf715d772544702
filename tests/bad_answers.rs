//! Hostile and broken answers from the token endpoint and the revocation
//! endpoint (R7, R12, R13, R14), and the secret-handling rules (R13).
//!
//! Every token-endpoint case runs the same life: a `TokenLayer` with
//! `refresh_ahead(1.0)` fetches a good token, the endpoint turns bad, the
//! next request starts a background refresh that meets the bad answer, and
//! then:
//!
//! - requests keep carrying the still-valid token, `fetch_failures` rose by
//!   one and no second attempt is made within the backoff;
//! - once the token is dropped, a request fails with the typed error of that
//!   failed refresh, and the inner service is not called (never fail open).
//!
//! The case table with each outcome is in `docs/bad-answers.md`.
//!
//! All tests of this binary log into one captured buffer (a global
//! `tracing` subscriber at TRACE), which must never contain the client
//! secret, an access token or a refresh token.

mod bounded;
mod support_robust;

use base64::Engine as _;
use http::StatusCode;
use std::sync::OnceLock;
use std::time::Duration;
use support_robust::{
    Capture, Flood, Raw, RawServer, Recorder, Reply, Scripted, Stall, StreamStats, call,
    eventually, streaming, token_json, typed, within,
};
use tower::{Layer, ServiceExt};
use tower_token::cache::Backoff;
use tower_token::dialect::Credentials;
use tower_token::error::{Endpoint, ErrorCode, ExpiresInProblem, InvalidResponse, ProviderError};
use tower_token::revoke::RevokeServiceBuilder;
use tower_token::source::{ClientCredentialsBuilder, ProviderSource};
use tower_token::{
    ClientCredentials, ConfigError, Error, RevokeRequest, RevokeService, Token, TokenLayer,
    Transport,
};

const CLIENT_ID: &str = "robust client";
const CLIENT_SECRET: &str = "Sekrit+Cl1ent/:%&= pass";
/// Every access token in this binary starts with this, every refresh token
/// with `RT-sekrit`; neither may show in an error or a log.
const GOOD: &str = "AT-sekrit-good-4f2a";
const REFRESH: &str = "RT-sekrit-7c1d";

/// Every form in which a secret could leak.
fn forbidden() -> Vec<String> {
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        CLIENT_SECRET.to_owned(),
        form(CLIENT_SECRET),
        b64(format!("{}:{}", form(CLIENT_ID), form(CLIENT_SECRET))),
        b64(format!("{CLIENT_ID}:{CLIENT_SECRET}")),
        "AT-sekrit".to_owned(),
        "RT-sekrit".to_owned(),
    ]
}

#[track_caller]
fn assert_clean(what: &str, shown: &str) {
    for secret in forbidden() {
        assert!(
            !shown.contains(&secret),
            "{what} shows `{secret}`:\n{shown}"
        );
    }
}

/// `Debug`, pretty `Debug` and `Display` of an error are free of secrets.
#[track_caller]
fn assert_error_clean(err: &dyn std::fmt::Debug, display: &dyn std::fmt::Display) {
    assert_clean("Debug", &format!("{err:?}"));
    assert_clean("Debug", &format!("{err:#?}"));
    assert_clean("Display", &format!("{display}"));
}

/// The buffer every `tracing` event of this binary goes to.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(capture.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        capture
    })
}

fn builder(url: String) -> ClientCredentialsBuilder {
    ClientCredentials::builder(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
}

type Configure = fn(ClientCredentialsBuilder) -> ClientCredentialsBuilder;

fn defaults(b: ClientCredentialsBuilder) -> ClientCredentialsBuilder {
    b
}

fn short_timeout(b: ClientCredentialsBuilder) -> ClientCredentialsBuilder {
    b.transport(Transport::new().timeout(Duration::from_millis(300)))
}

fn small_cap(b: ClientCredentialsBuilder) -> ClientCredentialsBuilder {
    b.transport(Transport::new().max_response_bytes(4096))
}

/// The life described in the module docs, against the token endpoint at
/// `url`, which `go_bad` turns bad. Returns the typed error of the failed
/// refresh.
async fn keeps_valid_token(
    url: String,
    go_bad: impl FnOnce(),
    hits: impl Fn() -> usize,
    configure: Configure,
) -> Error {
    capture();
    let source = configure(builder(url)).build().unwrap();
    let layer = TokenLayer::builder(source)
        .refresh_ahead(1.0)
        .backoff(Backoff::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ))
        .build()
        .unwrap();
    let api = Recorder::default();
    let svc = layer.layer(api.clone());
    let bearer = format!("Bearer {GOOD}");

    call(&svc).await.unwrap();
    assert_eq!(api.seen(), [Some(bearer.clone())]);
    assert_eq!(layer.stats().tokens_fetched, 1);
    assert_eq!(hits(), 1);

    // The endpoint turns bad; this request starts a refresh ahead.
    go_bad();
    call(&svc).await.unwrap();
    eventually("the refresh ahead to fail", || {
        layer.stats().fetch_failures == 1
    })
    .await;

    // The still-valid token stays in service, with no new attempt.
    for _ in 0..5 {
        call(&svc).await.unwrap();
    }
    assert_eq!(api.count(), 7);
    assert!(
        api.seen().iter().all(|h| h.as_deref() == Some(&*bearer)),
        "{:?}",
        api.seen()
    );
    let stats = layer.stats();
    assert_eq!((stats.tokens_fetched, stats.fetch_failures), (1, 1));
    assert_eq!(hits(), 2, "one attempt, then the backoff holds");

    // With the token gone, a request fails with the refresh's typed error
    // and the inner service is not called.
    layer.cache().invalidate();
    let untouched = Recorder::default();
    let err = call(&layer.layer(untouched.clone())).await.unwrap_err();
    assert_eq!(untouched.count(), 0, "a request went out without its token");
    assert_eq!(hits(), 2);
    assert_error_clean(&err, &err);
    let err = typed(&err).clone();
    assert_error_clean(&err, &err);
    err
}

/// [`keeps_valid_token`] against an axum endpoint that answers `bad()` once
/// it turns bad.
async fn token_case(
    bad: impl Fn() -> Reply + Send + Sync + 'static,
    configure: Configure,
) -> Error {
    within(Duration::from_secs(30), "token case", async {
        let server = Scripted::start(|_, _| Reply::json(200, token_json(GOOD, 3600))).await;
        let switch = server.clone();
        let counter = server.clone();
        keeps_valid_token(
            server.url("/token"),
            move || switch.script(move |_, _| bad()),
            move || counter.hits(),
            configure,
        )
        .await
    })
    .await
}

/// [`keeps_valid_token`] against a raw TCP endpoint that answers `bad` once
/// it turns bad.
async fn raw_token_case(bad: Raw, configure: Configure) -> Error {
    within(Duration::from_secs(30), "raw token case", async {
        let server = RawServer::start(|_| Raw::ok_json(token_json(GOOD, 3600))).await;
        let url = server.url("/token");
        keeps_valid_token(
            url,
            || server.script(move |_| bad.clone()),
            || server.hits(),
            configure,
        )
        .await
    })
    .await
}

fn json200(body: &str) -> impl Fn() -> Reply + Send + Sync + 'static {
    let body = body.to_owned();
    move || Reply::json(200, body.clone())
}

fn reason(err: &Error) -> &InvalidResponse {
    match err {
        Error::InvalidResponse {
            endpoint: Endpoint::Token,
            status,
            reason,
        } => {
            assert_eq!(*status, StatusCode::OK);
            assert!(!err.is_retriable());
            reason
        }
        other => panic!("expected an invalid response, got {other:?}"),
    }
}

async fn invalid(body: &str) -> InvalidResponse {
    reason(&token_case(json200(body), defaults).await).clone()
}

// ---------------------------------------------------------------------------
// Token endpoint: bodies that are not a token
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_not_json() {
    bounded::watchdog!();
    let err = token_case(
        || Reply::with(200, "application/json", "OK, here is your token"),
        defaults,
    )
    .await;
    assert_eq!(reason(&err), &InvalidResponse::NotJson);
}

#[tokio::test]
async fn token_html_error_page_with_200() {
    bounded::watchdog!();
    let page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
                <body><h1>Bad Gateway</h1></body></html>";
    let err = token_case(move || Reply::with(200, "text/html", page), defaults).await;
    assert_eq!(reason(&err), &InvalidResponse::NotJson);
}

#[tokio::test]
async fn token_empty_body() {
    bounded::watchdog!();
    let err = token_case(|| Reply::with(200, "application/json", ""), defaults).await;
    assert_eq!(reason(&err), &InvalidResponse::EmptyBody);
}

#[tokio::test]
async fn token_whitespace_body() {
    bounded::watchdog!();
    assert_eq!(invalid(" \r\n\t ").await, InvalidResponse::EmptyBody);
}

#[tokio::test]
async fn token_truncated_json() {
    bounded::watchdog!();
    let body = r#"{"access_token":"AT-sekrit-trunc","token_type":"Bearer","expires_in":36"#;
    assert_eq!(invalid(body).await, InvalidResponse::Truncated);
}

#[tokio::test]
async fn token_json_with_trailing_garbage() {
    bounded::watchdog!();
    let body = format!("{} <html>", token_json("AT-sekrit-trailing", 3600));
    assert_eq!(invalid(&body).await, InvalidResponse::NotJson);
}

#[tokio::test]
async fn token_json_not_an_object() {
    bounded::watchdog!();
    assert_eq!(
        invalid(r#"["AT-sekrit-x"]"#).await,
        InvalidResponse::NotAnObject
    );
    assert_eq!(invalid("null").await, InvalidResponse::NotAnObject);
}

#[tokio::test]
async fn token_deeply_nested_json() {
    bounded::watchdog!();
    let body = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let err = token_case(json200(&body), |b| {
        b.transport(Transport::new().max_response_bytes(64 * 1024))
    })
    .await;
    assert_eq!(reason(&err), &InvalidResponse::NotJson);
}

#[tokio::test]
async fn token_invalid_utf8() {
    bounded::watchdog!();
    let err = token_case(
        || {
            Reply::with(
                200,
                "application/json",
                &b"{\"access_token\":\"AT-sekrit-\xff\xfe\"}"[..],
            )
        },
        defaults,
    )
    .await;
    assert_eq!(reason(&err), &InvalidResponse::NotJson);
}

// ---------------------------------------------------------------------------
// Token endpoint: access_token
// ---------------------------------------------------------------------------

#[tokio::test]
async fn access_token_missing() {
    bounded::watchdog!();
    let body = r#"{"token_type":"Bearer","expires_in":3600}"#;
    assert_eq!(invalid(body).await, InvalidResponse::MissingAccessToken);
}

#[tokio::test]
async fn access_token_null() {
    bounded::watchdog!();
    let body = r#"{"access_token":null,"token_type":"Bearer"}"#;
    assert_eq!(invalid(body).await, InvalidResponse::MissingAccessToken);
}

#[tokio::test]
async fn access_token_empty() {
    bounded::watchdog!();
    let body = r#"{"access_token":"","token_type":"Bearer","expires_in":3600}"#;
    assert_eq!(invalid(body).await, InvalidResponse::EmptyAccessToken);
}

#[tokio::test]
async fn access_token_not_a_string() {
    bounded::watchdog!();
    for value in [
        "42",
        "true",
        r#"{"t":"AT-sekrit-obj"}"#,
        r#"["AT-sekrit-arr"]"#,
    ] {
        let body = format!(r#"{{"access_token":{value},"token_type":"Bearer"}}"#);
        assert_eq!(
            invalid(&body).await,
            InvalidResponse::AccessTokenNotString,
            "{value}"
        );
    }
}

async fn not_header_safe(json_string: &str) {
    let body =
        format!(r#"{{"access_token":"{json_string}","token_type":"Bearer","expires_in":3600}}"#);
    assert_eq!(
        invalid(&body).await,
        InvalidResponse::AccessTokenNotHeaderSafe,
        "{json_string}"
    );
}

#[tokio::test]
async fn access_token_with_cr() {
    bounded::watchdog!();
    not_header_safe(r"AT-sekrit-\rinjected").await;
}

#[tokio::test]
async fn access_token_with_lf() {
    bounded::watchdog!();
    not_header_safe(r"AT-sekrit-\nX-Injected: 1").await;
}

#[tokio::test]
async fn access_token_with_crlf() {
    bounded::watchdog!();
    not_header_safe(r"AT-sekrit-\r\nX-Injected: 1").await;
}

#[tokio::test]
async fn access_token_with_nul() {
    bounded::watchdog!();
    not_header_safe(r"AT-sekrit-\u0000tail").await;
}

#[tokio::test]
async fn access_token_non_ascii() {
    bounded::watchdog!();
    not_header_safe("AT-sekrit-tökén").await;
    not_header_safe(r"AT-sekrit-\u00e9").await;
}

#[tokio::test]
async fn access_token_with_space_tab_or_del() {
    bounded::watchdog!();
    not_header_safe("AT-sekrit- spaced").await;
    not_header_safe(r"AT-sekrit-\ttab").await;
    not_header_safe(r"AT-sekrit-\u007f").await;
}

#[tokio::test]
async fn refresh_token_not_a_string() {
    bounded::watchdog!();
    let body = r#"{"access_token":"AT-sekrit-rt","token_type":"Bearer","refresh_token":7}"#;
    assert_eq!(invalid(body).await, InvalidResponse::InvalidRefreshToken);
}

// ---------------------------------------------------------------------------
// Token endpoint: expires_in
// ---------------------------------------------------------------------------

async fn expires_in(value: &str) -> InvalidResponse {
    let body =
        format!(r#"{{"access_token":"AT-sekrit-exp","token_type":"Bearer","expires_in":{value}}}"#);
    invalid(&body).await
}

fn bad_expiry(problem: ExpiresInProblem) -> InvalidResponse {
    InvalidResponse::InvalidExpiresIn(problem)
}

#[tokio::test]
async fn expires_in_negative() {
    bounded::watchdog!();
    assert_eq!(
        expires_in("-3600").await,
        bad_expiry(ExpiresInProblem::Negative)
    );
    assert_eq!(
        expires_in(r#""-1""#).await,
        bad_expiry(ExpiresInProblem::Negative)
    );
    assert_eq!(
        expires_in("-0.5").await,
        bad_expiry(ExpiresInProblem::Negative)
    );
}

#[tokio::test]
async fn expires_in_zero() {
    bounded::watchdog!();
    assert_eq!(expires_in("0").await, bad_expiry(ExpiresInProblem::Zero));
    assert_eq!(
        expires_in(r#""0""#).await,
        bad_expiry(ExpiresInProblem::Zero)
    );
}

#[tokio::test]
async fn expires_in_fractional() {
    bounded::watchdog!();
    assert_eq!(
        expires_in("1.5").await,
        bad_expiry(ExpiresInProblem::Fractional)
    );
    assert_eq!(
        expires_in(r#""3599.9""#).await,
        bad_expiry(ExpiresInProblem::Fractional)
    );
}

#[tokio::test]
async fn expires_in_huge() {
    bounded::watchdog!();
    // 2^64, as a number and as a string; and far beyond.
    assert_eq!(
        expires_in("18446744073709551616").await,
        bad_expiry(ExpiresInProblem::TooLarge)
    );
    assert_eq!(
        expires_in(r#""18446744073709551616""#).await,
        bad_expiry(ExpiresInProblem::TooLarge)
    );
    assert_eq!(
        expires_in("1e300").await,
        bad_expiry(ExpiresInProblem::TooLarge)
    );
    assert_eq!(
        expires_in(r#""99999999999999999999999999999""#).await,
        bad_expiry(ExpiresInProblem::TooLarge)
    );
}

/// A number too large even for a double is not valid JSON for the parser.
#[tokio::test]
async fn expires_in_beyond_double_range() {
    bounded::watchdog!();
    assert_eq!(expires_in("1e400").await, InvalidResponse::NotJson);
}

#[tokio::test]
async fn expires_in_not_a_number() {
    bounded::watchdog!();
    assert_eq!(
        expires_in(r#""soon""#).await,
        bad_expiry(ExpiresInProblem::NotANumber)
    );
    assert_eq!(
        expires_in(r#""""#).await,
        bad_expiry(ExpiresInProblem::NotANumber)
    );
    assert_eq!(
        expires_in(r#""NaN""#).await,
        bad_expiry(ExpiresInProblem::NotANumber)
    );
    assert_eq!(
        expires_in("true").await,
        bad_expiry(ExpiresInProblem::NotANumber)
    );
    assert_eq!(
        expires_in("[3600]").await,
        bad_expiry(ExpiresInProblem::NotANumber)
    );
}

// ---------------------------------------------------------------------------
// Token endpoint: token_type and error bodies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_type_mac() {
    bounded::watchdog!();
    let body =
        r#"{"access_token":"AT-sekrit-mac","token_type":"mac","expires_in":3600,"mac_key":"k"}"#;
    assert_eq!(
        invalid(body).await,
        InvalidResponse::UnsupportedTokenType("mac".into())
    );
}

#[tokio::test]
async fn token_type_not_a_string() {
    bounded::watchdog!();
    let body = r#"{"access_token":"AT-sekrit-tt","token_type":5}"#;
    assert_eq!(
        invalid(body).await,
        InvalidResponse::InvalidField("token_type")
    );
}

#[tokio::test]
async fn token_type_very_long_is_cut() {
    bounded::watchdog!();
    let long = "N".repeat(10_000);
    let body = format!(r#"{{"access_token":"AT-sekrit-long","token_type":"{long}"}}"#);
    assert_eq!(
        invalid(&body).await,
        InvalidResponse::UnsupportedTokenType("N".repeat(32))
    );
}

#[tokio::test]
async fn rfc6749_error_body_with_200() {
    bounded::watchdog!();
    let body =
        r#"{"error":"invalid_scope","error_description":"scope orders:write is not granted"}"#;
    let err = token_case(json200(body), defaults).await;
    match &err {
        Error::OAuth {
            endpoint: Endpoint::Token,
            status,
            code,
            description,
            ..
        } => {
            assert_eq!(*status, StatusCode::OK);
            assert_eq!(*code, ErrorCode::InvalidScope);
            assert_eq!(
                description.as_deref(),
                Some("scope orders:write is not granted")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn error_json_with_non_standard_code() {
    bounded::watchdog!();
    let err = token_case(
        || {
            Reply::json(
                400,
                r#"{"error":"account_on_fire","error_uri":"https://as.test/why"}"#,
            )
        },
        defaults,
    )
    .await;
    match &err {
        Error::OAuth {
            status, code, uri, ..
        } => {
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert_eq!(*code, ErrorCode::Other("account_on_fire".into()));
            assert_eq!(uri.as_deref(), Some("https://as.test/why"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retriable());
    // The same with a 200.
    let err = token_case(json200(r#"{"error":"quota_exceeded"}"#), defaults).await;
    assert_eq!(
        err.oauth_code(),
        Some(&ErrorCode::Other("quota_exceeded".into()))
    );
    assert_eq!(err.status(), Some(StatusCode::OK));
}

#[tokio::test]
async fn error_field_not_a_string() {
    bounded::watchdog!();
    let body = r#"{"error":{"code":42},"message":"nope"}"#;
    assert_eq!(invalid(body).await, InvalidResponse::MissingAccessToken);
}

#[tokio::test]
async fn server_error_html_page() {
    bounded::watchdog!();
    let err = token_case(
        || {
            Reply::with(
                500,
                "text/html",
                "<html><body>Internal Server Error</body></html>",
            )
        },
        defaults,
    )
    .await;
    match &err {
        Error::Status { status, body, .. } => {
            assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(body.contains("Internal Server Error"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retriable());
}

#[tokio::test]
async fn unavailable_with_retry_after() {
    bounded::watchdog!();
    let err = token_case(
        || Reply::with(503, "text/plain", "busy").header("retry-after", "7"),
        defaults,
    )
    .await;
    assert!(
        matches!(
            err,
            Error::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(err.is_retriable());
}

// ---------------------------------------------------------------------------
// Token endpoint: Content-Type lying
// ---------------------------------------------------------------------------

/// JSON served as `text/html` is still read: the refresh succeeds and the
/// new token replaces the old one.
#[tokio::test]
async fn json_served_as_html_still_parses() {
    bounded::watchdog!();
    capture();
    let server = Scripted::start(|n, _| {
        let token = format!("AT-sekrit-html-{n}");
        Reply::with(200, "text/html; charset=utf-8", token_json(&token, 3600))
    })
    .await;
    let layer = TokenLayer::builder(builder(server.url("/token")).build().unwrap())
        .refresh_ahead(1.0)
        .build()
        .unwrap();
    let api = Recorder::default();
    let svc = layer.layer(api.clone());
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    eventually("a refreshed token", || layer.stats().tokens_fetched >= 2).await;
    call(&layer.layer(api.clone())).await.unwrap();
    let seen = api.seen();
    assert_eq!(seen[0].as_deref(), Some("Bearer AT-sekrit-html-1"));
    assert_ne!(
        seen.last().unwrap().as_deref(),
        Some("Bearer AT-sekrit-html-1")
    );
    assert_eq!(layer.stats().fetch_failures, 0);
}

#[tokio::test]
async fn html_served_as_json() {
    bounded::watchdog!();
    let err = token_case(
        || Reply::with(200, "application/json", "<html><body>Sign in</body></html>"),
        defaults,
    )
    .await;
    assert_eq!(reason(&err), &InvalidResponse::NotJson);
}

// ---------------------------------------------------------------------------
// Token endpoint: transport
// ---------------------------------------------------------------------------

/// A body that never ends, sent chunked: the client stops reading at the
/// cap and drops the connection; the server could have sent forever.
#[tokio::test]
async fn body_over_the_cap_endless_stream() {
    bounded::watchdog!();
    let stats = StreamStats::default();
    let flood = stats.clone();
    let err = token_case(
        move || {
            streaming(
                200,
                Flood::endless(r#"{"access_token":"AT-sekrit-"#, &flood),
            )
        },
        small_cap,
    )
    .await;
    assert!(
        matches!(
            err,
            Error::BodyTooLarge {
                endpoint: Endpoint::Token,
                limit: 4096
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    eventually("the server to notice the client hung up", || {
        stats.dropped()
    })
    .await;
    // What the server pushed before the client hung up: socket buffers,
    // not the (infinite) body.
    assert!(stats.produced() < 64 << 20, "{} bytes", stats.produced());
}

/// A huge body whose `Content-Length` is announced: refused from the
/// announced length, before the body is read.
#[tokio::test]
async fn body_over_the_cap_announced_length() {
    bounded::watchdog!();
    let stats = StreamStats::default();
    let flood = stats.clone();
    let err = token_case(
        move || streaming(200, Flood::sized(1 << 30, &flood)),
        small_cap,
    )
    .await;
    assert!(
        matches!(err, Error::BodyTooLarge { limit: 4096, .. }),
        "{err:?}"
    );
    eventually("the server to notice the client hung up", || {
        stats.dropped()
    })
    .await;
    assert!(stats.produced() < 64 << 20, "{} bytes", stats.produced());
}

/// One byte over the cap is refused.
#[tokio::test]
async fn body_one_byte_over_the_cap() {
    bounded::watchdog!();
    let body = padded_token(4097);
    let err = token_case(move || Reply::json(200, body.clone()), small_cap).await;
    assert!(
        matches!(err, Error::BodyTooLarge { limit: 4096, .. }),
        "{err:?}"
    );
}

/// A token answer of `len` bytes (padded with an unknown field).
fn padded_token(len: usize) -> String {
    let base =
        r#"{"access_token":"AT-sekrit-pad","token_type":"Bearer","expires_in":3600,"pad":""}"#;
    let pad = "p".repeat(len - base.len());
    base.replace(r#""pad":"""#, &format!(r#""pad":"{pad}""#))
}

/// An answer of exactly the cap is read.
#[tokio::test]
async fn body_exactly_at_the_cap_is_read() {
    bounded::watchdog!();
    capture();
    let body = padded_token(4096);
    assert_eq!(body.len(), 4096);
    let server = Scripted::start(move |_, _| Reply::json(200, body.clone())).await;
    let source = small_cap(builder(server.url("/token"))).build().unwrap();
    let token = TokenLayer::new(source).cache().token().await.unwrap();
    assert_eq!(token.secret(), "AT-sekrit-pad");
}

/// No answer at all: `Error::Timeout` under the configured timeout.
#[tokio::test]
async fn response_never_starts() {
    bounded::watchdog!();
    let err = token_case(|| Reply::Never, short_timeout).await;
    assert!(
        matches!(err, Error::Timeout { endpoint: Endpoint::Token, timeout } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.is_retriable());
}

/// Headers and the start of the body, then nothing, forever.
#[tokio::test]
async fn response_never_ends() {
    bounded::watchdog!();
    let err = token_case(
        || streaming(200, Stall::after(r#"{"access_token":"AT-sekrit-stall","#)),
        short_timeout,
    )
    .await;
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
}

/// An answer that trickles in slower than the timeout allows.
#[tokio::test]
async fn response_slower_than_the_timeout() {
    bounded::watchdog!();
    let err = token_case(
        || {
            Reply::After(
                Duration::from_secs(5),
                Box::new(Reply::json(200, token_json(GOOD, 60))),
            )
        },
        short_timeout,
    )
    .await;
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn connection_reset_mid_body() {
    bounded::watchdog!();
    let bad = Raw::ThenReset(Raw::partial(200, r#"{"access_token":"AT-sekrit-cut"#));
    let err = raw_token_case(bad, defaults).await;
    assert!(
        matches!(
            err,
            Error::Transport {
                endpoint: Endpoint::Token,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retriable());
}

#[tokio::test]
async fn connection_closed_mid_body() {
    bounded::watchdog!();
    let bad = Raw::ThenClose(Raw::partial(200, r#"{"access_token":"AT-sekrit-cut"#));
    let err = raw_token_case(bad, defaults).await;
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn answer_is_not_http() {
    bounded::watchdog!();
    let bad = Raw::ThenClose(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
    let err = raw_token_case(bad, defaults).await;
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

/// Another loopback host for redirect targets (127.0.0.2 where the system
/// allows binding it, else 127.0.0.1 on another port).
async fn elsewhere() -> Scripted {
    let reply =
        |_: usize, _: &support_robust::Seen| Reply::json(200, token_json("AT-sekrit-evil", 3600));
    if std::net::TcpListener::bind("127.0.0.2:0").is_ok() {
        Scripted::start_on("127.0.0.2:0", reply).await
    } else {
        Scripted::start(reply).await
    }
}

/// A redirect to another host is not followed: `Error::Redirect`, and the
/// other host sees nothing (so neither the credentials nor anything else).
#[tokio::test]
async fn redirect_to_another_host() {
    bounded::watchdog!();
    for status in [301u16, 302, 303, 307, 308] {
        let other = elsewhere().await;
        let location = other.url("/token");
        let err = token_case(
            move || Reply::with(status, "text/html", "moved").header("location", &location),
            defaults,
        )
        .await;
        match &err {
            Error::Redirect {
                endpoint,
                status: s,
            } => {
                assert_eq!(*endpoint, Endpoint::Token);
                assert_eq!(s.as_u16(), status);
            }
            other => panic!("{status}: {other:?}"),
        }
        assert!(!err.is_retriable());
        assert_eq!(other.hits(), 0, "{status}: the redirect was followed");
    }
}

#[tokio::test]
async fn connection_refused() {
    bounded::watchdog!();
    capture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let source = builder(format!("http://{addr}/token")).build().unwrap();
    let err = TokenLayer::new(source).cache().token().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert_error_clean(&err, &err);
}

/// `expires_in` of 2^64 − 1 is representable: accepted, and the lifetime
/// arithmetic does not overflow (the cache caps it).
#[tokio::test]
async fn expires_in_u64_max_is_capped_not_overflowed() {
    bounded::watchdog!();
    capture();
    let server = Scripted::start(|_, _| {
        Reply::json(
            200,
            r#"{"access_token":"AT-sekrit-forever","token_type":"bearer","expires_in":18446744073709551615}"#,
        )
    })
    .await;
    let layer = TokenLayer::new(builder(server.url("/token")).build().unwrap());
    let api = Recorder::default();
    call(&layer.layer(api.clone())).await.unwrap();
    call(&layer.layer(api.clone())).await.unwrap();
    assert_eq!(server.hits(), 1);
    let expires = layer.stats().token_expires_at.unwrap();
    let years = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
        / (365 * 24 * 3600);
    assert!((1..=11).contains(&years), "{years} years");
}

/// A token source that panics: the request gets `Error::Aborted` instead of
/// a panic, and the next fetch works.
#[tokio::test]
async fn panicking_token_source_is_aborted() {
    bounded::watchdog!();
    capture();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let source = tower_token::source::from_fn(move |_| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                panic!("token source blew up");
            }
            Ok::<_, std::io::Error>(Token::new(GOOD).with_expires_in(Duration::from_secs(60)))
        }
    });
    let layer = TokenLayer::builder(source)
        .backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(2),
        ))
        .build()
        .unwrap();
    let api = Recorder::default();
    let err = call(&layer.layer(api.clone())).await.unwrap_err();
    assert!(matches!(typed(&err), Error::Aborted), "{err:?}");
    assert!(typed(&err).is_retriable());
    assert_eq!(api.count(), 0);
    tokio::time::sleep(Duration::from_millis(10)).await;
    call(&layer.layer(api.clone())).await.unwrap();
    assert_eq!(api.seen(), [Some(format!("Bearer {GOOD}"))]);
}

// ---------------------------------------------------------------------------
// Revocation endpoint (RFC 7009 dialect unless said otherwise)
// ---------------------------------------------------------------------------

type RevokeConfigure = fn(RevokeServiceBuilder) -> RevokeServiceBuilder;

fn revoke_defaults(b: RevokeServiceBuilder) -> RevokeServiceBuilder {
    b
}

/// Revokes [`GOOD`] at an endpoint answering `reply()`; returns the outcome
/// and the endpoint, after checking the error's formatting is clean.
async fn revoke_case(
    reply: impl Fn() -> Reply + Send + Sync + 'static,
    configure: RevokeConfigure,
) -> (Result<(), Error>, Scripted) {
    capture();
    within(Duration::from_secs(30), "revocation case", async {
        let server = Scripted::start(move |_, _| reply()).await;
        let revoker = configure(RevokeService::rfc(
            server.url("/revoke"),
            Credentials::new(CLIENT_ID, CLIENT_SECRET),
        ))
        .build()
        .unwrap();
        let result = revoker.oneshot(RevokeRequest::access(GOOD)).await;
        if let Err(err) = &result {
            assert_error_clean(err, err);
        }
        assert_eq!(server.hits(), 1);
        assert_eq!(server.seen()[0].form("token").as_deref(), Some(GOOD));
        (result, server)
    })
    .await
}

async fn revoke_err(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Error {
    revoke_case(reply, revoke_defaults).await.0.unwrap_err()
}

/// RFC 7009 §2.2: any 2xx is success and its body is ignored, whatever it
/// is (not JSON, HTML, empty).
#[tokio::test]
async fn revoke_2xx_with_any_body_is_success() {
    bounded::watchdog!();
    for (status, ct, body) in [
        (200, "application/json", ""),
        (
            200,
            "text/html",
            "<html><body>Revoked. Or a login page.</body></html>",
        ),
        (200, "application/json", "not json at all"),
        (200, "application/json", r#"{"access_tok"#),
        (204, "", ""),
    ] {
        let (result, _) = revoke_case(move || Reply::with(status, ct, body), revoke_defaults).await;
        assert!(result.is_ok(), "{status} {body:?}: {result:?}");
    }
}

#[tokio::test]
async fn revoke_rfc6749_error_body_with_200() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::json(200, r#"{"error":"invalid_client"}"#)).await;
    assert!(
        matches!(
            &err,
            Error::OAuth {
                endpoint: Endpoint::Revocation,
                status: StatusCode::OK,
                code: ErrorCode::InvalidClient,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn revoke_unsupported_token_type() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::json(400, r#"{"error":"unsupported_token_type"}"#)).await;
    assert_eq!(err.oauth_code(), Some(&ErrorCode::UnsupportedTokenType));
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
}

#[tokio::test]
async fn revoke_non_standard_error_code() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::json(400, r#"{"error":"token_on_fire"}"#)).await;
    assert_eq!(
        err.oauth_code(),
        Some(&ErrorCode::Other("token_on_fire".into()))
    );
}

/// Error JSON served as `text/html` is still read as an OAuth error.
#[tokio::test]
async fn revoke_error_json_served_as_html() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::with(400, "text/html", r#"{"error":"invalid_request"}"#)).await;
    assert_eq!(err.oauth_code(), Some(&ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn revoke_html_error_page() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::with(500, "text/html", "<html><body>Oops</body></html>")).await;
    match &err {
        Error::Status {
            endpoint,
            status,
            body,
            ..
        } => {
            assert_eq!(*endpoint, Endpoint::Revocation);
            assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(body.contains("Oops"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retriable());
}

#[tokio::test]
async fn revoke_not_json_error() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::with(401, "text/plain", "who are you")).await;
    assert!(
        matches!(
            &err,
            Error::Status {
                status: StatusCode::UNAUTHORIZED,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn revoke_truncated_error_json() {
    bounded::watchdog!();
    let err = revoke_err(|| Reply::json(400, r#"{"error":"invalid_requ"#)).await;
    assert!(
        matches!(
            &err,
            Error::Status {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn revoke_unavailable_with_retry_after() {
    bounded::watchdog!();
    let err = revoke_err(|| {
        Reply::json(503, r#"{"error":"temporarily_unavailable"}"#).header("retry-after", "3")
    })
    .await;
    assert!(
        matches!(
            &err,
            Error::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.is_retriable());
}

/// The server echoes the token and the client secret: both are redacted.
#[tokio::test]
async fn revoke_error_echoing_secrets_is_redacted() {
    bounded::watchdog!();
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let description = format!(
        "token {GOOD} unknown to client secret {CLIENT_SECRET} ({})",
        form(CLIENT_SECRET)
    );
    let body = serde_json::json!({"error": "invalid_request", "error_description": description})
        .to_string();
    let err = revoke_err(move || Reply::json(400, body.clone())).await;
    match &err {
        Error::OAuth { description, .. } => {
            let d = description.as_deref().unwrap();
            assert_eq!(d.matches("[redacted]").count(), 3, "{d}");
        }
        other => panic!("{other:?}"),
    }
    let body = format!(
        "<pre>token={GOOD}&client_secret={}</pre>",
        form(CLIENT_SECRET)
    );
    let err = revoke_err(move || Reply::with(500, "text/html", body.clone())).await;
    assert!(matches!(&err, Error::Status { .. }), "{err:?}");
}

#[tokio::test]
async fn revoke_body_over_the_cap() {
    bounded::watchdog!();
    for status in [200, 500] {
        let stats = StreamStats::default();
        let flood = stats.clone();
        let (result, _) = revoke_case(
            move || streaming(status, Flood::endless("{", &flood)),
            |b| b.transport(Transport::new().max_response_bytes(1024)),
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                Error::BodyTooLarge {
                    endpoint: Endpoint::Revocation,
                    limit: 1024
                }
            ),
            "{status}: {err:?}"
        );
        eventually("the server to notice the client hung up", || {
            stats.dropped()
        })
        .await;
    }
}

#[tokio::test]
async fn revoke_response_never_ends() {
    bounded::watchdog!();
    for reply in [0, 1] {
        let (result, _) = revoke_case(
            move || match reply {
                0 => Reply::Never,
                _ => streaming(200, Stall::after("{")),
            },
            |b| b.transport(Transport::new().timeout(Duration::from_millis(300))),
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::Timeout { endpoint: Endpoint::Revocation, timeout } if timeout == Duration::from_millis(300)),
            "{err:?}"
        );
    }
}

async fn raw_revoke(raw: Raw) -> Error {
    capture();
    within(Duration::from_secs(30), "raw revocation", async {
        let server = RawServer::start(move |_| raw.clone()).await;
        let revoker = RevokeService::rfc(
            server.url("/revoke"),
            Credentials::new(CLIENT_ID, CLIENT_SECRET),
        )
        .build()
        .unwrap();
        let err = revoker
            .oneshot(RevokeRequest::refresh(REFRESH))
            .await
            .unwrap_err();
        assert_error_clean(&err, &err);
        assert_eq!(server.hits(), 1);
        err
    })
    .await
}

#[tokio::test]
async fn revoke_connection_reset_mid_body() {
    bounded::watchdog!();
    let err = raw_revoke(Raw::ThenReset(Raw::partial(100, "{\"err"))).await;
    assert!(
        matches!(
            err,
            Error::Transport {
                endpoint: Endpoint::Revocation,
                ..
            }
        ),
        "{err:?}"
    );
    let err = raw_revoke(Raw::ThenClose(Raw::partial(100, "{\"err"))).await;
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn revoke_connection_refused() {
    bounded::watchdog!();
    capture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let revoker = RevokeService::rfc(
        format!("http://{addr}/revoke"),
        Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap();
    let err = revoker
        .oneshot(RevokeRequest::access(GOOD))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_error_clean(&err, &err);
}

/// A redirect is not followed: the other host never sees the token or the
/// credentials.
#[tokio::test]
async fn revoke_redirect_to_another_host() {
    bounded::watchdog!();
    for status in [302u16, 307, 308] {
        let other = elsewhere().await;
        let location = other.url("/revoke");
        let err =
            revoke_err(move || Reply::with(status, "text/plain", "").header("location", &location))
                .await;
        assert!(
            matches!(err, Error::Redirect { endpoint: Endpoint::Revocation, status: s } if s.as_u16() == status),
            "{err:?}"
        );
        assert_eq!(other.hits(), 0, "the redirect was followed");
    }
}

/// OneLogin's envelope: a 200 whose `status` says otherwise is a typed
/// provider error with the envelope's code; a 2xx HTML page is success.
#[tokio::test]
async fn revoke_onelogin_envelopes() {
    bounded::watchdog!();
    capture();
    let server = Scripted::start(|n, _| match n {
        1 => Reply::json(
            200,
            r#"{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}"#,
        ),
        2 => Reply::json(
            400,
            format!(r#"{{"status":{{"error":true,"code":400,"type":"bad request","message":"token {GOOD} is weird"}}}}"#),
        ),
        3 => Reply::with(200, "text/html", "<html>ok</html>"),
        _ => Reply::json(200, "{\"status\":"),
    })
    .await;
    let revoker = RevokeService::onelogin(
        format!("http://{}", server.addr),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap();
    let revoke = || revoker.clone().oneshot(RevokeRequest::access(GOOD));

    let err = revoke().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Provider {
                status: StatusCode::UNAUTHORIZED,
                kind: ProviderError::AuthenticationFailure,
                ..
            }
        ),
        "{err:?}"
    );
    let err = revoke().await.unwrap_err();
    match &err {
        Error::Provider {
            kind: ProviderError::Other { message, .. },
            ..
        } => {
            assert_eq!(message, "token [redacted] is weird");
        }
        other => panic!("{other:?}"),
    }
    assert_error_clean(&err, &err);
    revoke().await.unwrap();
    revoke().await.unwrap();
    assert_eq!(server.seen()[0].path, "/auth/oauth2/revoke");
}

// ---------------------------------------------------------------------------
// Secrets (R13)
// ---------------------------------------------------------------------------

/// An HTTP client for builders that are never used to send.
struct NoClient;

impl tower_token::http_client::HttpClient for NoClient {
    fn send(
        &self,
        _request: http::Request<bytes::Bytes>,
    ) -> tower_token::http_client::BoxFuture<
        'static,
        Result<http::Response<tower_token::http_client::ResponseBody>, tower_token::BoxError>,
    > {
        Box::pin(async { Err("not used".into()) })
    }
}

/// Plain http is refused unless the host is loopback or it was allowed
/// explicitly — for token sources and for every revocation dialect.
#[test]
fn plain_http_needs_loopback_or_explicit_permission() {
    capture();
    let insecure = [
        "http://example.com/oauth/token",
        "http://10.0.0.1/token",
        "http://0.0.0.0/token",
        "http://localhost.evil.example/token",
        "http://127.0.0.1.nip.io/token",
    ];
    let loopback = [
        "http://127.0.0.1:8080/token",
        "http://127.9.9.9/token",
        "http://localhost:1/token",
        "http://LOCALHOST/token",
        "http://[::1]:8443/token",
    ];
    let is_insecure = |r: Result<(), ConfigError>, url: &str| match r {
        Err(ConfigError::InsecureUrl { host }) => {
            assert!(url.contains(&host), "{url}: {host}");
            let shown = format!(
                "{:?} {}",
                ConfigError::InsecureUrl { host: host.clone() },
                host
            );
            assert_clean("ConfigError", &shown);
        }
        other => panic!("{url}: expected InsecureUrl, got {other:?}"),
    };
    let creds = || Credentials::new(CLIENT_ID, CLIENT_SECRET);
    // Builders given a client do not build the default one (which is slow
    // to build, and unused here).
    let no_client = || Transport::new().http_client(NoClient);
    let allowed = || no_client().allow_insecure_http();
    let builder = |url: String| builder(url).transport(no_client());
    for url in insecure {
        is_insecure(builder(url.into()).build().map(drop), url);
        builder(url.into()).transport(allowed()).build().unwrap();
        is_insecure(
            RevokeService::rfc(url, creds())
                .transport(no_client())
                .build()
                .map(drop),
            url,
        );
        RevokeService::rfc(url, creds())
            .transport(allowed())
            .build()
            .unwrap();
        is_insecure(
            RevokeService::korap(url, creds())
                .transport(no_client())
                .build()
                .map(drop),
            url,
        );
        RevokeService::korap(url, creds())
            .transport(allowed())
            .build()
            .unwrap();
        is_insecure(
            RevokeService::kopokopo(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
                .build()
                .map(drop),
            url,
        );
        RevokeService::kopokopo(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .transport(allowed())
            .build()
            .unwrap();
        is_insecure(
            RevokeService::onelogin(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
                .build()
                .map(drop),
            url,
        );
        RevokeService::onelogin(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .transport(allowed())
            .build()
            .unwrap();
        is_insecure(
            ProviderSource::kopokopo(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
                .build()
                .map(drop),
            url,
        );
        is_insecure(
            ProviderSource::onelogin(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
                .build()
                .map(drop),
            url,
        );
    }
    for url in loopback {
        builder(url.into()).build().unwrap();
        RevokeService::rfc(url, creds())
            .transport(no_client())
            .build()
            .unwrap();
        RevokeService::onelogin(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .transport(no_client())
            .build()
            .unwrap();
    }
    // https is always fine; other schemes never are.
    builder("https://example.com/token".into()).build().unwrap();
    assert!(matches!(
        builder("ftp://example.com/token".into()).build(),
        Err(ConfigError::InvalidUrl { .. })
    ));
}

/// `Debug` and `Display` of every error variant this crate can be made to
/// produce hold neither the client secret nor a token, even when the server
/// echoes them; so do the configuration errors.
#[tokio::test]
async fn every_error_variant_is_free_of_secrets() {
    bounded::watchdog!();
    capture();
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form(CLIENT_ID),
        form(CLIENT_SECRET)
    ));
    // What a server could echo: the credentials the request carried (and,
    // below, the refresh token or the token being revoked).
    let echo = format!(
        "secret {CLIENT_SECRET} / {} / Basic {basic}",
        form(CLIENT_SECRET)
    );
    let mut errors: Vec<Error> = Vec::new();

    // Token endpoint: OAuth, Status, InvalidResponse, echoing everything.
    let server = Scripted::start({
        let echo = echo.clone();
        move |n, _| match n {
            1 => Reply::json(
                401,
                serde_json::json!({"error": "invalid_client", "error_description": echo, "error_uri": format!("https://as.test/?s={}", form(CLIENT_SECRET))}).to_string(),
            ),
            2 => Reply::with(500, "text/plain", echo.clone()),
            3 => Reply::json(200, serde_json::json!({"error": format!("x{CLIENT_SECRET}")}).to_string()),
            _ => Reply::with(200, "text/html", format!("<p>{echo}</p>")),
        }
    })
    .await;
    let source = builder(server.url("/token")).build().unwrap();
    for _ in 0..4 {
        errors.push(
            tower_token::TokenSource::fetch(
                &source,
                tower_token::source::FetchRequest::new(tower_token::source::FetchReason::Initial),
            )
            .await
            .unwrap_err(),
        );
    }
    assert!(matches!(errors[0], Error::OAuth { .. }));
    assert!(matches!(errors[1], Error::Status { .. }));
    assert!(matches!(
        errors[2],
        Error::OAuth {
            code: ErrorCode::Other(_),
            ..
        }
    ));
    assert!(matches!(errors[3], Error::InvalidResponse { .. }));

    // Refresh-token grant: the refresh token echoed back.
    let mut refresh =
        tower_token::source::FetchRequest::new(tower_token::source::FetchReason::Expired);
    refresh.refresh_token = Some(REFRESH.into());
    server.script({
        let echo = echo.clone();
        move |_, seen| {
            let refresh = seen.form("refresh_token").unwrap_or_default();
            let echo = format!("{echo} / refresh_token={refresh}");
            Reply::json(
                400,
                serde_json::json!({"error": "invalid_request", "error_description": echo})
                    .to_string(),
            )
        }
    });
    errors.push(
        tower_token::TokenSource::fetch(&source, refresh)
            .await
            .unwrap_err(),
    );

    // Revocation: OAuth and Status echoing the token.
    for reply in [
        Reply::json(400, serde_json::json!({"error": "invalid_token", "error_description": format!("{GOOD} {echo}")}).to_string()),
        Reply::with(502, "text/plain", format!("{GOOD} {echo}")),
    ] {
        let reply = std::sync::Mutex::new(Some(reply));
        let server = Scripted::start(move |_, _| reply.lock().unwrap().take().unwrap_or(Reply::Never)).await;
        let revoker = RevokeService::rfc(server.url("/r"), Credentials::new(CLIENT_ID, CLIENT_SECRET))
            .build()
            .unwrap();
        errors.push(revoker.oneshot(RevokeRequest::access(GOOD)).await.unwrap_err());
    }

    // Provider (OneLogin) echoing the token and the secret.
    let server = Scripted::start({
        let echo = echo.clone();
        move |_, _| Reply::json(401, serde_json::json!({"status": {"error": true, "code": 401, "type": format!("t {CLIENT_SECRET}"), "message": format!("{GOOD} {echo}")}}).to_string())
    })
    .await;
    let onelogin = RevokeService::onelogin(
        format!("http://{}", server.addr),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap();
    errors.push(
        onelogin
            .clone()
            .oneshot(RevokeRequest::access(GOOD))
            .await
            .unwrap_err(),
    );
    assert!(matches!(errors.last(), Some(Error::Provider { .. })));
    // Request: OneLogin cannot revoke a refresh token alone, and a secret
    // that cannot go in a header.
    errors.push(
        onelogin
            .oneshot(RevokeRequest::refresh(REFRESH))
            .await
            .unwrap_err(),
    );
    let bad_secret = format!("{CLIENT_SECRET}\nX: y");
    let onelogin = RevokeService::onelogin(
        format!("http://{}", server.addr),
        tower_token::Credentials::new(CLIENT_ID, bad_secret.as_str()),
    )
    .build()
    .unwrap();
    let err = onelogin
        .oneshot(RevokeRequest::access(GOOD))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err:?}");
    assert!(!format!("{err:?}{err}").contains(&bad_secret));
    errors.push(err);

    // Redirect, Timeout, BodyTooLarge, Transport.
    let server = Scripted::start(|n, _| match n {
        1 => Reply::with(302, "", "").header("location", "http://127.0.0.1:9/x"),
        2 => Reply::Never,
        _ => Reply::json(200, format!("\"{}\"", "x".repeat(10_000))),
    })
    .await;
    let source = builder(server.url("/token"))
        .transport(
            Transport::new()
                .timeout(Duration::from_millis(200))
                .max_response_bytes(100),
        )
        .build()
        .unwrap();
    for _ in 0..3 {
        errors.push(
            tower_token::TokenSource::fetch(
                &source,
                tower_token::source::FetchRequest::new(tower_token::source::FetchReason::Initial),
            )
            .await
            .unwrap_err(),
        );
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);
    errors.push(
        TokenLayer::new(builder(refused).build().unwrap())
            .cache()
            .token()
            .await
            .unwrap_err(),
    );

    // Source and Aborted, from user code.
    let failing = tower_token::source::from_fn(|_| async {
        Err::<Token, _>(std::io::Error::other("no luck"))
    });
    errors.push(TokenLayer::new(failing).cache().token().await.unwrap_err());
    let panicking = tower_token::source::from_fn(|_| async {
        if std::hint::black_box(true) {
            panic!("boom");
        }
        Ok::<Token, std::io::Error>(Token::new(GOOD))
    });
    errors.push(
        TokenLayer::new(panicking)
            .cache()
            .token()
            .await
            .unwrap_err(),
    );

    let kinds: std::collections::BTreeSet<&str> = errors
        .iter()
        .map(|e| match e {
            Error::OAuth { .. } => "OAuth",
            Error::Status { .. } => "Status",
            Error::Provider { .. } => "Provider",
            Error::Redirect { .. } => "Redirect",
            Error::Transport { .. } => "Transport",
            Error::Timeout { .. } => "Timeout",
            Error::BodyTooLarge { .. } => "BodyTooLarge",
            Error::InvalidResponse { .. } => "InvalidResponse",
            Error::Source(_) => "Source",
            Error::Aborted => "Aborted",
            Error::Request { .. } => "Request",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "Aborted",
            "BodyTooLarge",
            "InvalidResponse",
            "OAuth",
            "Provider",
            "Redirect",
            "Request",
            "Source",
            "Status",
            "Timeout",
            "Transport"
        ]
    );
    for err in &errors {
        assert_error_clean(err, err);
        let boxed: tower_token::BoxError = Box::new(err.clone());
        assert_error_clean(&boxed, &boxed);
        // The source chain too.
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            assert_clean("an error source", &format!("{s} {s:?}"));
            source = s.source();
        }
    }

    // Configuration errors.
    let config_errors = [
        builder("http://example.com/t".into()).build().unwrap_err(),
        builder("not a url".into()).build().unwrap_err(),
        TokenLayer::builder(source.clone())
            .scheme("Bad Scheme")
            .build()
            .unwrap_err(),
        TokenLayer::builder(source)
            .allow_origin("::nope")
            .build()
            .unwrap_err(),
    ];
    for err in &config_errors {
        assert_error_clean(err, err);
    }
    assert_clean("the log", &capture().text());
}

/// A captured `tracing` log (TRACE, every target) of a whole life — fetch,
/// refresh ahead with the refresh-token grant, a 401 with invalidation and
/// retry, a failed refresh echoing secrets, and revocation — contains none
/// of the secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_log_of_a_life_cycle_is_free_of_secrets() {
    bounded::watchdog!();
    let capture = capture();
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let server = Scripted::start(move |n, seen| {
        if seen.path == "/revoke" {
            return Reply::with(200, "", "");
        }
        // From the third fetch on, answers take a while, so that a refresh
        // ahead started by a request is still in flight when that request's
        // 401 comes back.
        let delay = if n >= 3 {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        let later = |reply| Reply::After(delay, Box::new(reply));
        if fail.load(std::sync::atomic::Ordering::SeqCst) {
            let echo = format!(
                "bad refresh_token {} for client_secret={}",
                seen.form("refresh_token").unwrap_or_default(),
                form(CLIENT_SECRET)
            );
            return later(Reply::json(
                400,
                serde_json::json!({"error": "invalid_request", "error_description": echo})
                    .to_string(),
            ));
        }
        later(Reply::json(
            200,
            serde_json::json!({
                "access_token": format!("AT-sekrit-life-{n}"),
                "refresh_token": format!("RT-sekrit-life-{n}"),
                "token_type": "bearer",
                "expires_in": 3600,
            })
            .to_string(),
        ))
    })
    .await;
    let revoker = RevokeService::rfc(
        server.url("/revoke"),
        Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .build()
    .unwrap();
    let layer = TokenLayer::builder(builder(server.url("/token")).build().unwrap())
        .refresh_ahead(1.0)
        .revoker(revoker.clone())
        .backoff(Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(10),
        ))
        .build()
        .unwrap();

    // The API rejects the second token.
    let api_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = api_seen.clone();
    let api = tower::service_fn(move |req: http::Request<String>| {
        let auth = req.headers()[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        let status = if auth == "Bearer AT-sekrit-life-2" {
            401
        } else {
            200
        };
        record.lock().unwrap().push(auth);
        async move {
            let mut response = http::Response::new(String::new());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            if status == 401 {
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let svc = layer.layer(api);
    let send = || {
        let svc = svc.clone();
        async move {
            let response = svc.oneshot(http::Request::new(String::new())).await;
            response.unwrap().status()
        }
    };

    // Fetch; then (the whole lifetime is the refresh-ahead window) a
    // background refresh-token grant.
    assert_eq!(send().await, StatusCode::OK);
    assert_eq!(send().await, StatusCode::OK);
    eventually("the refresh ahead", || layer.stats().tokens_fetched == 2).await;
    // The API rejects token 2: invalidated, fetched anew, retried.
    assert_eq!(send().await, StatusCode::OK);
    assert_eq!(layer.stats().unauthorized_refreshes, 1);
    {
        let seen = api_seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[2], "Bearer AT-sekrit-life-2");
        assert_eq!(seen[3], "Bearer AT-sekrit-life-3");
    }
    let grants: Vec<_> = server
        .seen()
        .iter()
        .map(|s| s.form("grant_type").unwrap_or_default())
        .collect();
    assert_eq!(
        grants,
        ["client_credentials", "refresh_token", "refresh_token"]
    );

    // A refresh that fails with an answer echoing the refresh token and the
    // secret (logged as a warning).
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    layer.cache().invalidate();
    let err = layer.cache().token().await.unwrap_err();
    assert_error_clean(&err, &err);
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    layer.cache().token().await.unwrap();

    // Revocation: what the layer holds, then a token directly.
    layer.shutdown().await.unwrap();
    revoker
        .revoke_token(&Token::new(GOOD).with_refresh_token(REFRESH))
        .await
        .unwrap();
    let revoked: Vec<_> = server
        .seen()
        .iter()
        .filter(|s| s.path == "/revoke")
        .map(|s| s.form("token").unwrap())
        .collect();
    assert_eq!(revoked.len(), 4, "{revoked:?}");
    assert!(revoked.iter().all(|t| t.contains("-sekrit-")));

    let log = capture.text();
    for expected in [
        "token fetched",
        "token rejected by the server (401)",
        "token fetch failed",
        "token revoked",
    ] {
        assert!(log.contains(expected), "the log lacks `{expected}`");
    }
    assert_clean("the captured log", &log);
}

/// The layer never follows a redirect, so the token is not sent to its
/// target; a caller that follows it through a layer with an origin
/// allow-list sends it without the token.
#[tokio::test]
async fn token_not_attached_to_a_redirect_target() {
    bounded::watchdog!();
    capture();
    let other = elsewhere().await;
    let location = other.url("/landing");
    let api =
        Scripted::start(move |_, _| Reply::with(302, "", "").header("location", &location)).await;
    let layer = TokenLayer::builder(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(Token::new(GOOD).with_expires_in(Duration::from_secs(60)))
    }))
    .allow_origin(&format!("http://{}", api.addr))
    .build()
    .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<String>();
    let svc = layer.layer(client);

    let get = |url: &str| http::Request::get(url).body(String::new()).unwrap();
    let response = svc.clone().oneshot(get(&api.url("/start"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(other.hits(), 0, "the redirect was followed");
    assert_eq!(
        api.seen()[0].header("authorization"),
        Some(format!("Bearer {GOOD}").as_str())
    );

    let target = response.headers()["location"].to_str().unwrap().to_owned();
    svc.oneshot(get(&target)).await.unwrap();
    assert_eq!(other.hits(), 1);
    assert_eq!(other.seen()[0].header("authorization"), None);
}
