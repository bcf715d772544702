//! `ClientCredentials` against a real token endpoint: what goes over the
//! wire (R10), how answers are read (R10, R14), transport rules (R12), and
//! failures and backoff in the cache (R7).

mod bounded;
mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::{
    ApiServer, CLIENT_ID, CLIENT_SECRET, Canned, TokenBehaviour, TokenServer, http_client, send,
    token_error,
};
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinSet;
use tower::Layer;
use tower_token::cache::Backoff;
use tower_token::dialect::ClientAuth;
use tower_token::error::{ErrorCode, InvalidResponse};
use tower_token::{ClientCredentials, Error, TokenLayer, Transport};

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// Form-decodes one `application/x-www-form-urlencoded` component.
fn form_decode(component: &str) -> String {
    let (decoded, rest) = form_urlencoded::parse(component.as_bytes())
        .next()
        .expect("one component");
    assert!(rest.is_empty(), "`{component}` has an unencoded `=`");
    decoded.into_owned()
}

/// Fetches one token through a layer built on `source`, and returns the
/// request the server saw.
async fn one_request(token: &TokenServer, source: ClientCredentials) -> common::TokenRequest {
    let layer = TokenLayer::new(source);
    let got = layer.cache().token().await.unwrap();
    assert_eq!(got.secret(), "tok-1");
    let requests = token.requests();
    assert_eq!(requests.len(), 1);
    requests.into_iter().next().unwrap()
}

/// R10: with Basic auth, id and secret are form-urlencoded before base64
/// (RFC 6749 §2.3.1), so a secret such as `a+b/c:d%e f` arrives intact.
#[tokio::test]
async fn basic_auth_encodes_secret_before_base64() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let seen = one_request(&token, common::source(&token)).await;

    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.path, "/token");
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let authorization = seen.header("authorization").expect("Basic header");
    let b64 = authorization.strip_prefix("Basic ").expect("Basic scheme");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("valid base64");
    let decoded = String::from_utf8(decoded).unwrap();
    // Encoded, neither part contains a bare `:`.
    let (id, secret) = decoded.split_once(':').expect("id:secret");
    assert!(!secret.contains(':'));
    assert_eq!(secret, "a%2Bb%2Fc%3Ad%25e+f");
    assert_eq!(form_decode(id), CLIENT_ID);
    assert_eq!(form_decode(secret), CLIENT_SECRET);

    assert_eq!(seen.form_values("grant_type"), ["client_credentials"]);
    assert!(seen.form_values("client_secret").is_empty());
    assert!(seen.form_values("client_id").is_empty());
}

/// R10: with body auth, `client_id` and `client_secret` are form fields and
/// there is no Authorization header.
#[tokio::test]
async fn body_auth_sends_credentials_in_form() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let source = ClientCredentials::builder(
        token.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .auth(ClientAuth::RequestBody)
    .build()
    .unwrap();
    let seen = one_request(&token, source).await;

    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.form_values("grant_type"), ["client_credentials"]);
    assert_eq!(seen.form_values("client_id"), [CLIENT_ID]);
    assert_eq!(seen.form_values("client_secret"), [CLIENT_SECRET]);
}

/// R10: a public client sends its id and no secret.
#[tokio::test]
async fn public_client_sends_id_only() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let source = ClientCredentials::builder(
        token.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .auth(ClientAuth::None)
    .build()
    .unwrap();
    let seen = one_request(&token, source).await;

    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.form_values("client_id"), [CLIENT_ID]);
    assert!(seen.form_values("client_secret").is_empty());
    assert!(!String::from_utf8_lossy(&seen.body).contains("d%25e"));
}

/// R10: `scope`, `audience`, RFC 8707 `resource` (repeated) and other
/// parameters arrive as form fields.
#[tokio::test]
async fn scope_audience_resource_and_params_arrive() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let source = ClientCredentials::builder(
        token.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .scope("orders:read orders:write")
    .audience("https://api.example.com")
    .resource("https://a.example.com/")
    .resource("https://b.example.com/x?y=1&z=2")
    .param("tenant", "acme & co")
    .build()
    .unwrap();
    let seen = one_request(&token, source).await;

    assert_eq!(seen.form_values("grant_type"), ["client_credentials"]);
    assert_eq!(seen.form_values("scope"), ["orders:read orders:write"]);
    assert_eq!(seen.form_values("audience"), ["https://api.example.com"]);
    assert_eq!(
        seen.form_values("resource"),
        ["https://a.example.com/", "https://b.example.com/x?y=1&z=2"]
    );
    assert_eq!(seen.form_values("tenant"), ["acme & co"]);
}

/// How far in the future the cached token expires, per the stats.
fn expires_in_secs(layer: &TokenLayer) -> u64 {
    layer
        .stats()
        .token_expires_at
        .expect("a cached token")
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs()
}

/// R10: `expires_in` as a numeric string is read as seconds.
#[tokio::test]
async fn expires_in_as_string_parses() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        expires_in: Some(serde_json::json!("3600")),
        ..TokenBehaviour::default()
    })
    .await;
    let layer = TokenLayer::new(common::source(&token));
    layer.cache().token().await.unwrap();
    let left = expires_in_secs(&layer);
    assert!((3500..=3600).contains(&left), "{left}");
}

/// R10: a missing `expires_in` gets the configured default lifetime, and
/// the token is cached for it.
#[tokio::test]
async fn missing_expires_in_uses_default_lifetime() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        expires_in: None,
        ..TokenBehaviour::default()
    })
    .await;
    let layer = TokenLayer::builder(common::source(&token))
        .default_lifetime(Duration::from_secs(777))
        .build()
        .unwrap();
    layer.cache().token().await.unwrap();
    let left = expires_in_secs(&layer);
    assert!((700..=777).contains(&left), "{left}");
    layer.cache().token().await.unwrap();
    assert_eq!(token.hits(), 1, "cached for the default lifetime");
}

/// R10: `token_type` is case-insensitive: `bearer` is accepted, and the
/// API gets `Authorization: Bearer <token>`.
#[tokio::test]
async fn lower_case_bearer_token_type_is_accepted() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        token_type: Some(serde_json::json!("bearer")),
        ..TokenBehaviour::default()
    })
    .await;
    let api = ApiServer::start().await;
    let svc = TokenLayer::new(common::source(&token)).layer(http_client());
    let (status, _) = send(&svc, get(&api.url("/x"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.requests()[0].authorization.as_deref(),
        Some("Bearer tok-1")
    );
}

/// R14: a token type the crate cannot send is a typed error, and the API is
/// not called.
#[tokio::test]
async fn unsupported_token_type_is_a_typed_error() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        token_type: Some(serde_json::json!("mac")),
        ..TokenBehaviour::default()
    })
    .await;
    let api = ApiServer::start().await;
    let svc = TokenLayer::new(common::source(&token)).layer(http_client());
    let err = send(&svc, get(&api.url("/x"))).await.unwrap_err();
    assert!(matches!(
        token_error(&err),
        Error::InvalidResponse {
            reason: InvalidResponse::UnsupportedTokenType(t),
            ..
        } if t == "mac"
    ));
    assert_eq!(api.count(), 0);
}

/// R12: a redirect from the token endpoint is not followed: typed
/// `Error::Redirect`, the redirect target sees nothing, and neither does the
/// API.
#[tokio::test]
async fn redirect_is_not_followed() {
    bounded::watchdog!();
    for status in [302, 307] {
        let elsewhere = ApiServer::start().await;
        let token = TokenServer::start().await;
        token.set(|b| {
            b.canned = Some(Canned::new(status, "").header("location", elsewhere.url("/token")))
        });
        let api = ApiServer::start().await;
        let svc = TokenLayer::new(common::source(&token)).layer(http_client());

        let err = send(&svc, get(&api.url("/x"))).await.unwrap_err();
        match token_error(&err) {
            Error::Redirect { status: s, .. } => assert_eq!(s.as_u16(), status),
            other => panic!("expected a redirect error, got {other:?}"),
        }
        assert_eq!(token.hits(), 1);
        assert_eq!(elsewhere.count(), 0, "the redirect was followed");
        assert_eq!(api.count(), 0);
    }
}

/// R12: the token request times out.
#[tokio::test]
async fn slow_token_endpoint_times_out() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        delay: Duration::from_secs(30),
        ..TokenBehaviour::default()
    })
    .await;
    let source = ClientCredentials::builder(
        token.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .transport(Transport::new().timeout(Duration::from_millis(200)))
    .build()
    .unwrap();
    let err = TokenLayer::new(source).cache().token().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retriable());
}

/// R12: an answer larger than the cap is refused.
#[tokio::test]
async fn oversized_answer_is_refused() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let padding = "x".repeat(4096);
    token.set(|b| {
        b.canned = Some(Canned::json(
            200,
            serde_json::json!({"access_token": "big", "padding": padding}),
        ))
    });
    let source = ClientCredentials::builder(
        token.url(),
        tower_token::Credentials::new(CLIENT_ID, CLIENT_SECRET),
    )
    .transport(Transport::new().max_response_bytes(1024))
    .build()
    .unwrap();
    let err = TokenLayer::new(source).cache().token().await.unwrap_err();
    assert!(
        matches!(err, Error::BodyTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
}

/// R14: an HTML error page with a 200 is a typed invalid response.
#[tokio::test]
async fn html_answer_is_invalid_response() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    token.set(|b| {
        b.canned = Some(
            Canned::new(200, "<html><body>Sign in</body></html>")
                .header("content-type", "text/html"),
        )
    });
    let err = TokenLayer::new(common::source(&token))
        .cache()
        .token()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidResponse {
                reason: InvalidResponse::NotJson,
                ..
            }
        ),
        "{err:?}"
    );
}

/// R7: an unreachable token endpoint is a typed transport error.
#[tokio::test]
async fn unreachable_endpoint_is_transport_error() {
    bounded::watchdog!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let source = ClientCredentials::builder(
        format!("http://{addr}/token"),
        tower_token::Credentials::new(CLIENT_ID, "s"),
    )
    .build()
    .unwrap();
    let err = TokenLayer::new(source).cache().token().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_retriable());
}

/// R7: `invalid_client` is a typed OAuth error with its description, and is
/// not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_is_typed_and_not_retried() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    token.set(|b| {
        b.canned = Some(
            Canned::json(
                401,
                serde_json::json!({
                    "error": "invalid_client",
                    "error_description": "Client authentication failed",
                }),
            )
            .header("www-authenticate", r#"Basic realm="token""#),
        )
    });
    let api = ApiServer::start().await;
    let svc = TokenLayer::new(common::source(&token)).layer(http_client());

    let err = send(&svc, get(&api.url("/x"))).await.unwrap_err();
    match token_error(&err) {
        Error::OAuth {
            code,
            description,
            status,
            ..
        } => {
            assert_eq!(*code, ErrorCode::InvalidClient);
            assert_eq!(description.as_deref(), Some("Client authentication failed"));
            assert_eq!(*status, StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected an OAuth error, got {other:?}"),
    }
    assert!(!token_error(&err).is_retriable());
    assert_eq!(token.hits(), 1, "exactly one token request for the call");
    assert_eq!(api.count(), 0);
}

/// R7: with no valid token, a failing token endpoint fails the request with
/// the typed error and the API is never called; concurrent callers share
/// one attempt, and callers during the backoff get the error without a new
/// attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_valid_token_fails_typed_without_calling_api() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    token.set(|b| b.canned = Some(Canned::new(500, "upstream down")));
    let api = ApiServer::start().await;
    let layer = TokenLayer::builder(common::source(&token))
        .backoff(Backoff::new(
            Duration::from_secs(20),
            Duration::from_secs(60),
        ))
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Empty<Bytes>>());

    token.close_gate();
    let mut callers = JoinSet::new();
    for _ in 0..20 {
        let svc = svc.clone();
        let url = api.url("/x");
        callers.spawn(async move { send(&svc, get(&url)).await });
    }
    token.wait_hits(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    token.open_gate();
    while let Some(done) = callers.join_next().await {
        let err = done.unwrap().unwrap_err();
        match token_error(&err) {
            Error::Status { status, body, .. } => {
                assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(body, "upstream down");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
    }
    assert_eq!(token.hits(), 1, "20 concurrent callers share one attempt");

    // Within the backoff: the same error, no new attempt.
    let err = send(&svc, get(&api.url("/x"))).await.unwrap_err();
    assert!(matches!(token_error(&err), Error::Status { .. }));
    assert_eq!(token.hits(), 1);
    assert_eq!(api.count(), 0, "never fail open");
    assert_eq!(layer.stats().fetch_failures, 1);
}

/// The most attempts `backoff` allows in `elapsed`, the first one at the
/// start: attempt n+1 comes no sooner than the n-th failure plus at least
/// half of `min(initial × 2ⁿ⁻¹, max)`.
fn max_attempts(backoff: Backoff, elapsed: Duration) -> usize {
    let mut at = Duration::ZERO;
    let mut attempts = 1;
    for failures in 1u32.. {
        let ceiling = backoff
            .initial
            .saturating_mul(1 << (failures - 1).min(20))
            .min(backoff.max);
        at += ceiling / 2;
        if at > elapsed {
            break;
        }
        attempts += 1;
    }
    attempts
}

/// R7: during a token-endpoint outage while the cached token is still
/// valid, requests keep succeeding with it, attempts are no more frequent
/// than the backoff allows and never concurrent, and the token is replaced
/// once the endpoint recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_valid_token_keeps_serving_within_backoff() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let api = ApiServer::start().await;
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
    // The token is in its refresh-ahead window for its whole life, so every
    // request during the outage would start an attempt if nothing held it
    // back.
    let layer = TokenLayer::builder(common::source(&token))
        .refresh_ahead(1.0)
        .backoff(backoff)
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Empty<Bytes>>());
    send(&svc, get(&api.url("/warm"))).await.unwrap();
    assert_eq!(token.issued(), ["tok-1"]);

    token.set(|b| b.canned = Some(Canned::new(500, "down")));
    let outage = Instant::now();
    let mut loops = JoinSet::new();
    for _ in 0..4 {
        let svc = svc.clone();
        let url = api.url("/during");
        loops.spawn(async move {
            let mut served = 0;
            while outage.elapsed() < Duration::from_secs(2) {
                let (status, _) = send(&svc, get(&url)).await.unwrap();
                assert_eq!(status, StatusCode::OK);
                served += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            served
        });
    }
    let mut served = 0;
    while let Some(done) = loops.join_next().await {
        served += done.unwrap();
    }
    let attempts = token.hits() - 1;
    let elapsed = outage.elapsed();
    token.set(|b| b.canned = None);

    let during: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/during")
        .collect();
    assert_eq!(during.len(), served);
    assert!(served >= 40, "only {served} requests during the outage");
    assert!(during.iter().all(|r| r.token() == Some("tok-1")));

    let allowed = max_attempts(backoff, elapsed);
    assert!(
        (2..=allowed).contains(&attempts),
        "{attempts} token attempts in {elapsed:?}; the backoff allows at most {allowed}"
    );
    assert_eq!(token.max_in_flight(), 1, "attempts never overlap");
    assert_eq!(layer.stats().fetch_failures as usize, attempts);

    // After the outage, the next attempt (started by a request once the
    // backoff has passed) succeeds, and its token is used.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        send(&svc, get(&api.url("/after"))).await.unwrap();
        let last = api.requests().pop().unwrap();
        if last.token() != Some("tok-1") {
            assert_eq!(last.token(), token.issued().get(1).map(String::as_str));
            break;
        }
        assert!(Instant::now() < deadline, "no new token after the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
