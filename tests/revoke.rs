//! `RevokeService` against an in-process server: RFC 7009 wire format and
//! answers, OneLogin's documented failures, transport rules, and the
//! service under tower middleware (R9, R12, R13, R16).

mod bounded;

use axum::extract::Request;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_token::dialect::{ClientAuth, Credentials};
use tower_token::error::{Endpoint, ErrorCode, ProviderError};
use tower_token::{Error, RevokeRequest, RevokeService, Token, Transport};

const SECRET: &str = "a+b/c:d%e f";
const TOKEN: &str = "at-5f0c9a2e7b";

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// Status, extra headers and body of an answer.
type Reply = (StatusCode, Vec<(&'static str, &'static str)>, String);

/// A server that records every request, answers with `reply`, and waits
/// `delay` before answering (counting how many requests are in flight).
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Server {
    async fn start(reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::with_delay(Duration::ZERO, reply).await
    }

    async fn with_delay(
        delay: Duration,
        reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(reply);
        let (log, max) = (Arc::clone(&seen), Arc::clone(&max_in_flight));
        let app = axum::Router::new().fallback(move |req: Request| {
            let (log, reply) = (Arc::clone(&log), Arc::clone(&reply));
            let (in_flight, max) = (Arc::clone(&in_flight), Arc::clone(&max));
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let seen = Seen {
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body,
                };
                tokio::time::sleep(delay).await;
                let (status, headers, body) = reply(&seen);
                log.lock().unwrap().push(seen);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    map.insert(name, value.parse().unwrap());
                }
                (status, map, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            seen,
            max_in_flight,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        seen.into_iter().next().unwrap()
    }
}

fn reply(status: u16, body: &str) -> Reply {
    (
        StatusCode::from_u16(status).unwrap(),
        vec![],
        body.to_owned(),
    )
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rfc(server: &Server, auth: ClientAuth) -> RevokeService {
    RevokeService::rfc(server.url("/revoke"), Credentials::new("client", SECRET))
        .auth(auth)
        .build()
        .unwrap()
}

async fn revoke(svc: RevokeService, request: RevokeRequest) -> Result<(), Error> {
    svc.oneshot(request).await
}

// ------------------------------------------------------------- wire format

#[tokio::test]
async fn rfc_basic_auth_request() {
    bounded::watchdog!();
    let server = Server::start(|_| reply(200, "")).await;
    revoke(
        rfc(&server, ClientAuth::Basic),
        RevokeRequest::access(TOKEN),
    )
    .await
    .unwrap();
    let seen = server.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/revoke");
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let basic = seen
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .expect("Basic auth");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .unwrap();
    assert_eq!(decoded, b"client:a%2Bb%2Fc%3Ad%25e+f");
    assert_eq!(
        seen.form(),
        pairs(&[("token", TOKEN), ("token_type_hint", "access_token")])
    );
}

#[tokio::test]
async fn rfc_body_auth_and_public_client_requests() {
    bounded::watchdog!();
    let server = Server::start(|_| reply(200, "")).await;
    revoke(
        rfc(&server, ClientAuth::RequestBody),
        RevokeRequest::refresh("rt-1"),
    )
    .await
    .unwrap();
    let public = RevokeService::rfc(server.url("/revoke"), Credentials::public("spa"))
        .auth(ClientAuth::None)
        .build()
        .unwrap();
    revoke(public, RevokeRequest::access(TOKEN).without_hint())
        .await
        .unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.header("authorization").is_none()));
    assert_eq!(
        seen[0].form(),
        pairs(&[
            ("token", "rt-1"),
            ("token_type_hint", "refresh_token"),
            ("client_id", "client"),
            ("client_secret", SECRET),
        ])
    );
    assert_eq!(
        seen[1].form(),
        pairs(&[("token", TOKEN), ("client_id", "spa")])
    );
}

#[tokio::test]
async fn revoke_token_sends_refresh_then_access() {
    bounded::watchdog!();
    let server = Server::start(|_| reply(200, "")).await;
    let token = Token::new("at-1").with_refresh_token("rt-1");
    rfc(&server, ClientAuth::Basic)
        .revoke_token(&token)
        .await
        .unwrap();
    let tokens: Vec<_> = server
        .seen()
        .iter()
        .map(|s| s.form()[0].1.clone())
        .collect();
    assert_eq!(tokens, ["rt-1", "at-1"]);
}

// ----------------------------------------------------------------- answers

#[tokio::test]
async fn rfc_unknown_token_answered_200_is_ok() {
    bounded::watchdog!();
    let server = Server::start(|_| reply(200, "")).await;
    revoke(
        rfc(&server, ClientAuth::Basic),
        RevokeRequest::access("never-issued"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn rfc_unsupported_token_type_is_typed() {
    bounded::watchdog!();
    let server = Server::start(|_| {
        reply(
            400,
            r#"{"error":"unsupported_token_type","error_description":"refresh tokens are not revocable"}"#,
        )
    })
    .await;
    let err = revoke(
        rfc(&server, ClientAuth::Basic),
        RevokeRequest::refresh("rt-1"),
    )
    .await
    .unwrap_err();
    match &err {
        Error::OAuth {
            endpoint,
            status,
            code,
            description,
            ..
        } => {
            assert_eq!(*endpoint, Endpoint::Revocation);
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert_eq!(*code, ErrorCode::UnsupportedTokenType);
            assert_eq!(
                description.as_deref(),
                Some("refresh tokens are not revocable")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn rfc_503_with_retry_after_is_retriable() {
    bounded::watchdog!();
    let server = Server::start(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            vec![("retry-after", "2")],
            "busy".into(),
        )
    })
    .await;
    let err = revoke(
        rfc(&server, ClientAuth::Basic),
        RevokeRequest::access(TOKEN),
    )
    .await
    .unwrap_err();
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
    assert!(err.is_retriable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn other_answers_carry_status_and_a_redacted_excerpt() {
    bounded::watchdog!();
    let server = Server::start(|seen| {
        // A server that echoes the request into its error page.
        let echo = String::from_utf8_lossy(&seen.body).into_owned();
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            vec![],
            format!("<h1>oops</h1> {echo}"),
        )
    })
    .await;
    let err = revoke(
        rfc(&server, ClientAuth::RequestBody),
        RevokeRequest::access(TOKEN),
    )
    .await
    .unwrap_err();
    match &err {
        Error::Status { status, body, .. } => {
            assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(body.starts_with("<h1>oops</h1>"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!shown.contains("a%2Bb%2Fc%3Ad%25e+f"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    bounded::watchdog!();
    let server = Server::start(|_| {
        (
            StatusCode::FOUND,
            vec![("location", "http://127.0.0.1:1/elsewhere")],
            String::new(),
        )
    })
    .await;
    let err = revoke(
        rfc(&server, ClientAuth::Basic),
        RevokeRequest::access(TOKEN),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Redirect { .. }), "{err:?}");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn onelogin_documented_failures_are_typed() {
    bounded::watchdog!();
    let cases = [
        (
            400,
            "bad request",
            "Content Type is not specified or specified incorrectly.\n                    Content-Type header must be set to application/json",
            ProviderError::ContentType,
        ),
        (
            400,
            "bad request",
            "Access Token Missing",
            ProviderError::AccessTokenMissing,
        ),
        (
            400,
            "bad request",
            "The authorization information is missing",
            ProviderError::AuthorizationMissing,
        ),
        (
            401,
            "Unauthorized",
            "Authentication Failure",
            ProviderError::AuthenticationFailure,
        ),
        (404, "not found", "No Route Exists", ProviderError::NoRoute),
    ];
    for (code, kind, message, expected) in cases {
        let body =
            json!({"status": {"error": true, "code": code, "type": kind, "message": message}})
                .to_string();
        let server = Server::start(move |_| reply(code, &body)).await;
        let svc = RevokeService::onelogin(
            &server.base,
            tower_token::Credentials::new("ol-id", "ol-secret"),
        )
        .build()
        .unwrap();
        match revoke(svc, RevokeRequest::access(TOKEN)).await {
            Err(Error::Provider {
                endpoint,
                status,
                kind,
                ..
            }) => {
                assert_eq!(endpoint, Endpoint::Revocation);
                assert_eq!(status.as_u16(), code);
                assert_eq!(kind, expected, "{message}");
            }
            other => panic!("{message}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn onelogin_cannot_revoke_a_refresh_token_alone() {
    bounded::watchdog!();
    let server = Server::start(|_| reply(200, "")).await;
    let svc = RevokeService::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let err = revoke(svc, RevokeRequest::refresh("rt-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err:?}");
    assert!(server.seen().is_empty());
}

// -------------------------------------------------------------- middleware

#[tokio::test]
async fn works_under_timeout_concurrency_limit_and_buffer() {
    bounded::watchdog!();
    let server = Server::with_delay(Duration::from_millis(30), |_| reply(200, "")).await;
    let svc = ServiceBuilder::new()
        .buffer(64)
        .timeout(Duration::from_secs(5))
        .concurrency_limit(2)
        .service(rfc(&server, ClientAuth::Basic));
    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(RevokeRequest::access(format!("at-{i}"))).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(server.seen().len(), 8);
    assert!(server.max_in_flight.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_under_tower_timeout() {
    bounded::watchdog!();
    let server = Server::with_delay(Duration::from_millis(500), |_| reply(200, "")).await;
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(rfc(&server, ClientAuth::Basic));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(RevokeRequest::access(TOKEN))
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err:?}");
}

#[tokio::test]
async fn its_own_timeout_is_a_typed_error() {
    bounded::watchdog!();
    let server = Server::with_delay(Duration::from_millis(500), |_| reply(200, "")).await;
    let svc = RevokeService::kopokopo(&server.base, tower_token::Credentials::new("id", "secret"))
        .transport(Transport::new().timeout(Duration::from_millis(50)))
        .build()
        .unwrap();
    let err = revoke(svc, RevokeRequest::access(TOKEN)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                endpoint: Endpoint::Revocation,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retriable());
}

#[test]
fn service_is_clone_send_sync_and_hides_secrets() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<RevokeService>();
    let svc = RevokeService::rfc(
        "https://as.example/revoke",
        Credentials::new("client", "hunter2-secret"),
    )
    .build()
    .unwrap();
    assert!(!format!("{svc:?}").contains("hunter2-secret"));
    assert!(!format!("{:?}", RevokeRequest::access("hunter2-token")).contains("hunter2-token"));
    assert!(
        RevokeService::rfc("http://as.example/revoke", Credentials::new("c", "s"))
            .build()
            .is_err()
    );
}
