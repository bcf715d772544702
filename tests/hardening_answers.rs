//! Answers that used to be handled too loosely, against real token and
//! metadata endpoints on loopback:
//!
//! - a `Retry-After` on a 503 or 429 is honoured even when the body is an
//!   OAuth error (R7);
//! - a refresh-token grant answered with any OAuth error falls back to the
//!   client credentials grant, and the dead refresh token is not sent again
//!   (R7, R10);
//! - a client secret echoed JSON-escaped or percent-encoded in any case is
//!   redacted from errors (R13);
//! - the metadata `issuer` must be exactly the issuer asked for (R11,
//!   RFC 8414 §3.3).

mod bounded;
mod common;

use axum::body::Bytes;
use axum::response::IntoResponse;
use base64::Engine as _;
use common::{CLIENT_ID, CLIENT_SECRET, Canned, TokenServer};
use http::StatusCode;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::{Layer, ServiceExt};
use tower_token::cache::Backoff;
use tower_token::discovery::{Discovery, discover};
use tower_token::error::{Endpoint, ErrorCode, InvalidResponse};
use tower_token::source::{FetchReason, FetchRequest};
use tower_token::{BoxError, ClientCredentials, Error, RefreshToken, TokenLayer, TokenSource};

/// A small backoff: without a `Retry-After` floor the cache would ask the
/// token endpoint again within a few tens of milliseconds.
const QUICK: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));

/// A trivial inner service that answers 200 and counts its calls.
#[derive(Clone, Default)]
struct Api {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn service(
        &self,
    ) -> impl tower::Service<
        http::Request<String>,
        Response = http::Response<String>,
        Error = Infallible,
    > + Clone
    + Send
    + Sync
    + 'static {
        let (calls, seen) = (Arc::clone(&self.calls), Arc::clone(&self.seen));
        tower::service_fn(move |req: http::Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let auth = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.lock().unwrap().push(auth);
            async move { Ok::<_, Infallible>(http::Response::new(String::from("ok"))) }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn api_request() -> http::Request<String> {
    http::Request::get("http://api.test/orders")
        .body(String::new())
        .unwrap()
}

fn client_credentials(url: String) -> ClientCredentials {
    ClientCredentials::builder(url, tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Retry-After with an OAuth error body
// ---------------------------------------------------------------------------

/// A token endpoint answers `status` with `{"error": code}` and
/// `Retry-After: secs`. For `watch` (less than `secs`) the layer makes no
/// second attempt, and every request fails with the OAuth error carrying the
/// delay; once the delay has passed, the next request fetches again and
/// succeeds.
async fn retry_after_is_honoured(
    status: u16,
    code: &str,
    expected: ErrorCode,
    secs: u64,
    watch: Duration,
) {
    let delay = Duration::from_secs(secs);
    let token = TokenServer::start().await;
    token.set(|b| {
        b.canned = Some(
            Canned::json(status, json!({ "error": code })).header("retry-after", secs.to_string()),
        )
    });
    let layer = TokenLayer::builder(client_credentials(token.url()))
        .backoff(QUICK)
        .build()
        .unwrap();
    let api = Api::default();
    let svc = layer.layer(api.service());

    let start = Instant::now();
    let mut failures = 0;
    while start.elapsed() < watch {
        let err: BoxError = svc.clone().oneshot(api_request()).await.unwrap_err();
        let err = err
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("not a tower_token::Error: {err:?}"));
        assert_eq!(err.retry_after(), Some(delay), "{err:?}");
        assert_eq!(err.oauth_code(), Some(&expected), "{err:?}");
        assert_eq!(err.status(), Some(StatusCode::from_u16(status).unwrap()));
        assert!(err.is_retriable(), "{err:?}");
        failures += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failures > 10, "only {failures} requests were made");
    assert_eq!(
        token.hits(),
        1,
        "the token endpoint was asked again before its Retry-After ({secs} s) passed"
    );
    assert_eq!(api.calls(), 0, "never fail open");

    // The endpoint recovers; once the stated time has passed the next
    // request makes the second attempt, and it succeeds.
    token.set(|b| b.canned = None);
    let first = token.requests()[0].at;
    tokio::time::sleep(
        (first + delay + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    )
    .await;
    // The failure was recorded a moment after the request arrived; on a
    // loaded machine the stated time may not quite have passed yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = loop {
        match svc.clone().oneshot(api_request()).await {
            Ok(response) => break response,
            Err(err) if Instant::now() < deadline => {
                assert_eq!(token.hits(), 1, "a second attempt failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("no successful attempt after the stated time: {err}"),
        }
    };
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(token.hits(), 2);
    let requests = token.requests();
    assert!(
        requests[1].at - requests[0].at >= delay,
        "second attempt after {:?}",
        requests[1].at - requests[0].at
    );
    assert_eq!(api.calls(), 1);
    assert_eq!(
        api.seen.lock().unwrap().as_slice(),
        [format!("Bearer {}", token.issued()[0])]
    );
}

/// R7: a 503 with `{"error":"temporarily_unavailable"}` and `Retry-After: 2`
/// holds the next attempt back for 2 s, although the backoff alone would
/// retry after 25–50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporarily_unavailable_with_retry_after_waits_as_told() {
    bounded::watchdog!();
    retry_after_is_honoured(
        503,
        "temporarily_unavailable",
        ErrorCode::TemporarilyUnavailable,
        2,
        Duration::from_millis(1500),
    )
    .await;
}

/// R7: a 429 with `{"error":"slow_down"}` and `Retry-After: 1` holds the next
/// attempt back for 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_with_retry_after_waits_as_told() {
    bounded::watchdog!();
    retry_after_is_honoured(
        429,
        "slow_down",
        ErrorCode::Other("slow_down".into()),
        1,
        Duration::from_millis(800),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Refresh-token grant answered with an OAuth error
// ---------------------------------------------------------------------------

/// One token request: its grant type and the refresh token it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    grant_type: String,
    refresh_token: Option<String>,
}

/// A token endpoint that issues short-lived tokens with a refresh token
/// (`at-N`, `rt-N`) for the client credentials grant, and answers every
/// refresh-token grant with a 400 carrying `code`.
struct RefreshServer {
    url: String,
    grants: Arc<Mutex<Vec<Grant>>>,
}

impl RefreshServer {
    async fn start(code: &'static str, lifetime_secs: u64) -> Self {
        let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();
        let log = Arc::clone(&grants);
        let router = axum::Router::new().fallback(move |body: Bytes| {
            let log = Arc::clone(&log);
            async move {
                let form: Vec<(String, String)> =
                    form_urlencoded::parse(&body).into_owned().collect();
                let field =
                    |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                let grant = Grant {
                    grant_type: field("grant_type").unwrap_or_default(),
                    refresh_token: field("refresh_token"),
                };
                let number = {
                    let mut log = log.lock().unwrap();
                    log.push(grant.clone());
                    log.len()
                };
                if grant.grant_type == "refresh_token" {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({
                            "error": code,
                            "error_description": "this client may not use that grant",
                        })),
                    )
                        .into_response();
                }
                axum::Json(json!({
                    "access_token": format!("at-{number}"),
                    "token_type": "Bearer",
                    "expires_in": lifetime_secs,
                    "refresh_token": format!("rt-{number}"),
                }))
                .into_response()
            }
        });
        let addr = common::serve(router).await;
        Self {
            url: format!("http://{addr}/token"),
            grants,
        }
    }

    fn grants(&self) -> Vec<Grant> {
        self.grants.lock().unwrap().clone()
    }
}

/// For ~4.5 s of steady requests through a layer whose tokens live 2 s,
/// every refresh-token grant is answered with `code`: every request still
/// succeeds, each refresh is followed by the client credentials grant in the
/// same fetch, and no refresh token is ever sent twice.
async fn refresh_grant_error_falls_back(code: &'static str) {
    let server = RefreshServer::start(code, 2).await;
    let layer = TokenLayer::builder(client_credentials(server.url.clone()))
        .backoff(QUICK)
        .build()
        .unwrap();
    let api = Api::default();
    let svc = layer.layer(api.service());

    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < Duration::from_millis(4500) {
        match svc.clone().oneshot(api_request()).await {
            Ok(response) => assert_eq!(response.status(), StatusCode::OK),
            Err(err) => panic!(
                "{code}: request failed after {:?}: {err}; token requests: {:?}",
                start.elapsed(),
                server.grants()
            ),
        }
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.calls(), served);

    let grants = server.grants();
    let refreshes: Vec<&Grant> = grants
        .iter()
        .filter(|g| g.grant_type == "refresh_token")
        .collect();
    assert!(
        refreshes.len() >= 3,
        "{code}: expected several refreshes, saw {grants:?}"
    );
    assert_eq!(grants[0].grant_type, "client_credentials", "{grants:?}");
    for (i, grant) in grants.iter().enumerate() {
        if grant.grant_type != "refresh_token" {
            assert_eq!(grant.grant_type, "client_credentials", "{grants:?}");
            continue;
        }
        // The refresh token is the one the previous answer issued, and the
        // fallback to client credentials comes in the same fetch.
        assert_eq!(
            grant.refresh_token.as_deref(),
            Some(format!("rt-{i}").as_str()),
            "{code}: {grants:?}"
        );
        assert_eq!(
            grants.get(i + 1).map(|g| g.grant_type.as_str()),
            Some("client_credentials"),
            "{code}: no fallback after refresh {i}: {grants:?}"
        );
    }
    let mut sent: Vec<&str> = refreshes
        .iter()
        .filter_map(|g| g.refresh_token.as_deref())
        .collect();
    let total = sent.len();
    sent.sort_unstable();
    sent.dedup();
    assert_eq!(
        sent.len(),
        total,
        "{code}: a rejected refresh token was sent again: {grants:?}"
    );
    // Every request carried a token the server issued.
    for auth in api.seen.lock().unwrap().iter() {
        assert!(auth.starts_with("Bearer at-"), "{auth}");
    }
}

/// R7: a refresh-token grant answered `unauthorized_client`,
/// `invalid_scope` or `unsupported_grant_type` falls back to the client
/// credentials grant, and the dead refresh token is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_grant_oauth_errors_fall_back_to_client_credentials() {
    bounded::watchdog!();
    futures_util::future::join_all(
        [
            "unauthorized_client",
            "invalid_scope",
            "unsupported_grant_type",
        ]
        .map(refresh_grant_error_falls_back),
    )
    .await;
}

/// The fallback is traced at debug level with the OAuth code, and the trace
/// holds neither the refresh token nor the client secret.
#[tokio::test(flavor = "current_thread")]
async fn refresh_grant_fallback_is_traced_with_its_code() {
    bounded::watchdog!();
    let capture = common::Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = RefreshServer::start("unauthorized_client", 60).await;
    let source = client_credentials(server.url.clone());
    let mut request = FetchRequest::new(FetchReason::Expired);
    request.refresh_token = Some(RefreshToken::new("rt-dead-7f3a9c"));
    let token = source.fetch(request).await.unwrap();
    assert_eq!(token.access_token().secret(), "at-2");
    assert_eq!(
        server.grants(),
        [
            Grant {
                grant_type: "refresh_token".into(),
                refresh_token: Some("rt-dead-7f3a9c".into()),
            },
            Grant {
                grant_type: "client_credentials".into(),
                refresh_token: None,
            },
        ]
    );

    let log = capture.text();
    let line = log
        .lines()
        .find(|l| l.contains("DEBUG") && l.contains("unauthorized_client"))
        .unwrap_or_else(|| panic!("no debug trace names the code:\n{log}"));
    assert!(line.contains("client credentials"), "{line}");
    for secret in ["rt-dead-7f3a9c", CLIENT_SECRET, "a%2Bb%2Fc%3Ad%25e+f"] {
        assert!(!log.contains(secret), "the log shows `{secret}`:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// Secrets echoed JSON-escaped or percent-encoded
// ---------------------------------------------------------------------------

/// JSON-escapes `/` as `\/` and `+` as `\u002b` or `\u002B`, as PHP and
/// Symfony do.
fn php_escape(s: &str, upper: bool) -> String {
    let plus = if upper { r"\u002B" } else { r"\u002b" };
    s.replace('/', r"\/").replace('+', plus)
}

/// Every form in which `secret` might show: as is, percent-encoded (upper
/// and lower case hex, space as `+` or `%20`), JSON-escaped, and each of
/// those as `Debug` prints it.
fn shown_forms(secret: &str) -> Vec<String> {
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let lower = lower_hex(&form);
    let mut forms = vec![
        secret.to_owned(),
        form.clone(),
        lower.clone(),
        form.replace('+', "%20"),
        lower.replace('+', "%20"),
        php_escape(secret, false),
        php_escape(secret, true),
        secret.replace('/', r"\/"),
        secret.replace('+', r"\u002b"),
    ];
    let debug: Vec<String> = forms.iter().map(|f| f.escape_debug().to_string()).collect();
    forms.extend(debug);
    forms.sort();
    forms.dedup();
    forms
}

/// `%2B` → `%2b`.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// R13: a 500 whose body echoes the client secret (and the Basic
/// credentials) JSON-escaped, PHP style, and percent-encoded in lower case
/// with `%20`, leaves no form of them in `Display`, `Debug` or pretty
/// `Debug` of the error; the body excerpt shows `[redacted]` in their place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_echoed_json_escaped_is_redacted() {
    bounded::watchdog!();
    let b64 = base64::engine::general_purpose::STANDARD;
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = b64.encode(format!("{}:{}", form(CLIENT_ID), form(CLIENT_SECRET)));
    let raw_basic = b64.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let body = format!(
        r#"{{"message":"bad client_secret {}","hint":"{}","form":"{}","auth":"Basic {}","raw":"Basic {}","plain":"{}"}}"#,
        php_escape(CLIENT_SECRET, false),
        php_escape(CLIENT_SECRET, true),
        lower_hex(&form(CLIENT_SECRET)).replace('+', "%20"),
        php_escape(&basic, false),
        php_escape(&raw_basic, true),
        CLIENT_SECRET.replace('/', r"\/"),
    );
    let token = TokenServer::start().await;
    token.set(|b| b.canned = Some(Canned::new(500, body.clone())));
    let source = client_credentials(token.url());
    let err = source
        .fetch(FetchRequest::new(FetchReason::Initial))
        .await
        .unwrap_err();

    let excerpt = match &err {
        Error::Status {
            endpoint,
            status,
            body,
            ..
        } => {
            assert_eq!(*endpoint, Endpoint::Token);
            assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
            body.clone()
        }
        other => panic!("expected a status error, got {other:?}"),
    };
    assert_eq!(
        excerpt.matches("[redacted]").count(),
        6,
        "every echo is redacted: {excerpt}"
    );
    assert!(excerpt.starts_with(r#"{"message":"bad client_secret [redacted]""#));

    let shown = [format!("{err}"), format!("{err:?}"), format!("{err:#?}")];
    for secret in [CLIENT_SECRET, basic.as_str(), raw_basic.as_str()] {
        for form in shown_forms(secret) {
            for text in &shown {
                assert!(!text.contains(&form), "`{form}` shows in:\n{text}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Discovery: the issuer is compared exactly
// ---------------------------------------------------------------------------

/// A metadata endpoint at the root of a loopback server whose document
/// names `issuer(base)` as the issuer.
async fn metadata_server(issuer: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let document = json!({
        "issuer": issuer(&base),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
    });
    let router = axum::Router::new().route(
        "/.well-known/oauth-authorization-server",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// R11 (RFC 8414 §3.3): an `issuer` that differs from the issuer asked for
/// by a trailing slash only, either way round, is an `IssuerMismatch`;
/// `allow_issuer_mismatch()` accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_differing_by_a_trailing_slash_is_a_mismatch() {
    bounded::watchdog!();
    // The document adds a slash.
    let base = metadata_server(|base| format!("{base}/")).await;
    match discover(&base).await.unwrap_err() {
        Error::InvalidResponse {
            endpoint, reason, ..
        } => {
            assert_eq!(endpoint, Endpoint::Discovery);
            assert_eq!(reason, InvalidResponse::IssuerMismatch);
        }
        other => panic!("expected an issuer mismatch, got {other:?}"),
    }
    let metadata = Discovery::new(base.as_str())
        .allow_issuer_mismatch()
        .fetch()
        .await
        .unwrap();
    assert_eq!(metadata.issuer, format!("{base}/"));
    assert_eq!(
        metadata.token_endpoint.as_str(),
        format!("{base}/oauth/token")
    );
    // Asked with the slash, the same document matches exactly.
    let exact = discover(&format!("{base}/")).await.unwrap();
    assert_eq!(exact.issuer, format!("{base}/"));

    // The caller adds a slash the document does not have.
    let base = metadata_server(str::to_owned).await;
    match discover(&format!("{base}/")).await.unwrap_err() {
        Error::InvalidResponse { reason, .. } => {
            assert_eq!(reason, InvalidResponse::IssuerMismatch)
        }
        other => panic!("expected an issuer mismatch, got {other:?}"),
    }
    assert!(
        Discovery::new(format!("{base}/"))
            .allow_issuer_mismatch()
            .fetch()
            .await
            .is_ok()
    );
    assert_eq!(discover(&base).await.unwrap().issuer, base);
}
