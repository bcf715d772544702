//! The wire formats of the provider dialects against an in-process server:
//! Kopo Kopo (token and revoke), KorAP/Kustvakt (revoke, standard token
//! endpoint), OneLogin (token and revoke), and the RFC preset. Every request
//! is compared field by field with the providers' documents (R9, R10).

mod bounded;

use axum::extract::Request;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;
use tower_token::dialect::{ClientAuth, Credentials};
use tower_token::error::ProviderError;
use tower_token::source::{FetchReason, FetchRequest, ProviderSource};
use tower_token::{
    Error, RefreshToken, RevokeRequest, RevokeService, Token, TokenSource, Transport, preset,
};

// The values of the Kopo Kopo seed documents.
const K2_ID: &str = "CGQXLrlfuOqdUYdTcLz3rBiCZQDRvdWIUPkwasGMuGhkem9Bo";
const K2_SECRET: &str = "g7QLwvO37aN2HoKx1amekWi8a2g7AIuPbD5CcJSLqXIcDOxfTr";

/// One request as the server saw it.
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

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

type Reply = (StatusCode, String);

/// A server that records every request and answers with `reply`.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let log = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |req: Request| {
            let (log, reply) = (Arc::clone(&log), Arc::clone(&reply));
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let seen = Seen {
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body,
                };
                let (status, body) = reply(&seen);
                log.lock().unwrap().push(seen);
                (status, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, seen }
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

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(body: &str) -> Reply {
    (StatusCode::OK, body.to_owned())
}

async fn fetch(source: &impl TokenSource) -> Result<Token, Error> {
    source.fetch(FetchRequest::new(FetchReason::Initial)).await
}

const FORM: &str = "application/x-www-form-urlencoded";

// ---------------------------------------------------------------- Kopo Kopo

#[tokio::test]
async fn kopokopo_token_request_matches_the_seed() {
    bounded::watchdog!();
    let server = Server::start(|_| {
        ok(r#"{"access_token":"k2-token","token_type":"Bearer","created_at":1600000000}"#)
    })
    .await;
    let source = ProviderSource::kopokopo(
        &server.base,
        tower_token::Credentials::new(K2_ID, K2_SECRET),
    )
    .build()
    .unwrap();
    let token = fetch(&source).await.unwrap();
    assert_eq!(token.access_token().secret(), "k2-token");
    assert_eq!(token.expires_in(), Some(Duration::from_secs(3600)));
    assert!(token.refresh_token().is_none());

    let seen = server.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/oauth/token");
    assert_eq!(seen.header("content-type"), Some(FORM));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.form(),
        pairs(&[
            ("client_id", K2_ID),
            ("client_secret", K2_SECRET),
            ("grant_type", "client_credentials"),
        ])
    );
}

#[tokio::test]
async fn kopokopo_never_uses_a_refresh_grant() {
    bounded::watchdog!();
    let server = Server::start(|_| ok(r#"{"access_token":"k2","expires_in":3600}"#)).await;
    let source = ProviderSource::kopokopo(
        &server.base,
        tower_token::Credentials::new(K2_ID, K2_SECRET),
    )
    .build()
    .unwrap();
    let mut request = FetchRequest::new(FetchReason::Expired);
    request.refresh_token = Some(RefreshToken::new("stale"));
    source.fetch(request).await.unwrap();
    let form = server.only().form();
    assert!(form.contains(&("grant_type".into(), "client_credentials".into())));
    assert!(!form.iter().any(|(k, _)| k == "refresh_token"));
}

#[tokio::test]
async fn kopokopo_revoke_request_matches_the_seed() {
    bounded::watchdog!();
    let server = Server::start(|_| ok("")).await;
    let revoke = RevokeService::kopokopo(
        &server.base,
        tower_token::Credentials::new(K2_ID, K2_SECRET),
    )
    .build()
    .unwrap();
    revoke
        .oneshot(RevokeRequest::access("your_access_token"))
        .await
        .unwrap();

    let seen = server.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/oauth/revoke");
    assert_eq!(seen.header("content-type"), Some(FORM));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.form(),
        pairs(&[
            ("client_id", K2_ID),
            ("client_secret", K2_SECRET),
            ("token", "your_access_token"),
        ])
    );
}

#[tokio::test]
async fn kopokopo_preset_fetches_and_revokes() {
    bounded::watchdog!();
    let server = Server::start(|seen| match seen.path.as_str() {
        "/oauth/token" => {
            ok(r#"{"access_token":"k2-token","token_type":"Bearer","expires_in":3600}"#)
        }
        _ => ok(""),
    })
    .await;
    let provider = preset::kopokopo(
        &server.base,
        tower_token::Credentials::new(K2_ID, K2_SECRET),
    )
    .unwrap();
    let token = fetch(provider.source()).await.unwrap();
    provider.revoker().revoke_token(&token).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/oauth/token");
    assert_eq!(seen[1].path, "/oauth/revoke");
    assert!(
        seen[1]
            .form()
            .contains(&("token".into(), "k2-token".into()))
    );
}

// ------------------------------------------------------------ KorAP/Kustvakt

#[tokio::test]
async fn korap_public_client_revoke_sends_no_secret() {
    bounded::watchdog!();
    let server = Server::start(|_| ok("")).await;
    let revoke = RevokeService::korap(
        server.url("/api/v1.0"),
        Credentials::public("io8MvuTN3reflIaESwe5tGd"),
    )
    .build()
    .unwrap();
    revoke
        .oneshot(RevokeRequest::access("mPUkiQ86cT1YeblMqjr9").without_hint())
        .await
        .unwrap();

    let seen = server.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/api/v1.0/oauth2/revoke");
    assert_eq!(seen.header("content-type"), Some(FORM));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.form(),
        pairs(&[
            ("client_id", "io8MvuTN3reflIaESwe5tGd"),
            ("token", "mPUkiQ86cT1YeblMqjr9"),
        ])
    );
}

#[tokio::test]
async fn korap_confidential_client_revokes_a_refresh_token() {
    bounded::watchdog!();
    let server = Server::start(|_| ok("")).await;
    let revoke = RevokeService::korap(
        server.url("/api/v1.0/"),
        Credentials::new("YMirwQ-beCp5Rxiw4yH", "nS8cz9Fa5Wl2fbHrM"),
    )
    .build()
    .unwrap();
    revoke
        .oneshot(RevokeRequest::refresh("Q4lxNpch72FUwhO"))
        .await
        .unwrap();

    let seen = server.only();
    assert_eq!(seen.path, "/api/v1.0/oauth2/revoke");
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.form(),
        pairs(&[
            ("client_id", "YMirwQ-beCp5Rxiw4yH"),
            ("client_secret", "nS8cz9Fa5Wl2fbHrM"),
            ("token", "Q4lxNpch72FUwhO"),
            ("token_type", "refresh_token"),
        ])
    );
}

#[tokio::test]
async fn korap_preset_uses_the_standard_token_endpoint() {
    bounded::watchdog!();
    let server = Server::start(|seen| match seen.path.as_str() {
        "/api/v1.0/oauth2/token" => ok(
            r#"{"access_token":"ka","token_type":"Bearer","expires_in":600,"refresh_token":"kr"}"#,
        ),
        _ => ok(""),
    })
    .await;
    let provider =
        preset::Provider::korap(server.url("/api/v1.0"), Credentials::new("kid", "ksecret"))
            .scope("search")
            .build()
            .unwrap();
    let token = fetch(provider.source()).await.unwrap();
    assert_eq!(token.refresh_token().unwrap().secret(), "kr");
    provider.revoker().revoke_token(&token).await.unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/api/v1.0/oauth2/token");
    assert_eq!(seen[0].header("content-type"), Some(FORM));
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(
        seen[0].form(),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("scope", "search"),
            ("client_id", "kid"),
            ("client_secret", "ksecret"),
        ])
    );
    // Revoking the refresh token revokes its access tokens.
    assert_eq!(seen[1].path, "/api/v1.0/oauth2/revoke");
    assert_eq!(
        seen[1].form(),
        pairs(&[
            ("client_id", "kid"),
            ("client_secret", "ksecret"),
            ("token", "kr"),
            ("token_type", "refresh_token"),
        ])
    );
}

// ------------------------------------------------------------------ OneLogin

const OL_TOKEN: &str = r#"{"access_token":"ol-access","created_at":"2015-11-11T03:36:18.714Z","expires_in":36000,"refresh_token":"ol-refresh","token_type":"bearer","account_id":555555}"#;

fn envelope(code: u16, kind: &str, message: &str) -> Reply {
    let body =
        json!({"status": {"error": code >= 400, "code": code, "type": kind, "message": message}});
    (StatusCode::from_u16(code).unwrap(), body.to_string())
}

#[tokio::test]
async fn onelogin_token_request_and_plain_answer() {
    bounded::watchdog!();
    let server = Server::start(|_| ok(OL_TOKEN)).await;
    let source = ProviderSource::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let token = fetch(&source).await.unwrap();
    assert_eq!(token.access_token().secret(), "ol-access");
    assert_eq!(token.refresh_token().unwrap().secret(), "ol-refresh");
    assert_eq!(token.expires_in(), Some(Duration::from_secs(36000)));

    let seen = server.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/auth/oauth2/v2/token");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.header("authorization"),
        Some("client_id:ol-id, client_secret:ol-secret")
    );
    assert_eq!(seen.json(), json!({"grant_type": "client_credentials"}));
}

#[tokio::test]
async fn onelogin_data_envelope_token_parses() {
    bounded::watchdog!();
    let server = Server::start(|_| {
        ok(r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"},
               "data":[{"access_token":"v1-access","refresh_token":"v1-refresh","token_type":"bearer","expires_in":36000,"account_id":1}]}"#)
    })
    .await;
    let source = ProviderSource::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let token = fetch(&source).await.unwrap();
    assert_eq!(token.access_token().secret(), "v1-access");
    assert_eq!(token.refresh_token().unwrap().secret(), "v1-refresh");
}

#[tokio::test]
async fn onelogin_refresh_grant_falls_back_on_401() {
    bounded::watchdog!();
    let server = Server::start(|seen| {
        if seen.json()["grant_type"] == "refresh_token" {
            envelope(401, "Unauthorized", "Authentication Failure")
        } else {
            ok(OL_TOKEN)
        }
    })
    .await;
    let source = ProviderSource::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let mut request = FetchRequest::new(FetchReason::RefreshAhead);
    request.refresh_token = Some(RefreshToken::new("old-refresh"));
    let token = source.fetch(request).await.unwrap();
    assert_eq!(token.access_token().secret(), "ol-access");

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].json(),
        json!({"grant_type": "refresh_token", "refresh_token": "old-refresh"})
    );
    assert_eq!(seen[1].json(), json!({"grant_type": "client_credentials"}));
}

#[tokio::test]
async fn onelogin_refresh_grant_succeeds_without_fallback() {
    bounded::watchdog!();
    let server = Server::start(|_| ok(OL_TOKEN)).await;
    let source = ProviderSource::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let mut request = FetchRequest::new(FetchReason::Expired);
    request.refresh_token = Some(RefreshToken::new("good-refresh"));
    source.fetch(request).await.unwrap();
    assert_eq!(server.only().json()["grant_type"], "refresh_token");
}

#[tokio::test]
async fn onelogin_token_failure_is_typed() {
    bounded::watchdog!();
    let server = Server::start(|_| envelope(401, "Unauthorized", "Authentication Failure")).await;
    let source = ProviderSource::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let err = fetch(&source).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Provider {
                kind: ProviderError::AuthenticationFailure,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(!format!("{err} {err:?}").contains("ol-secret"));
}

#[tokio::test]
async fn onelogin_revoke_request_matches_the_seed() {
    bounded::watchdog!();
    let server = Server::start(|_| envelope(200, "success", "Success")).await;
    let revoke = RevokeService::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .build()
    .unwrap();
    let token = "xx508xx63817x752xx74004x30705xx92x58349x5x78f5xx34x8x614xxxx1451";
    revoke.oneshot(RevokeRequest::access(token)).await.unwrap();

    let seen = server.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/auth/oauth2/revoke");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.header("authorization"),
        Some("client_id:ol-id, client_secret:ol-secret")
    );
    assert_eq!(seen.json(), json!({ "access_token": token }));
}

#[tokio::test]
async fn onelogin_preset_revokes_the_pair_with_the_access_token() {
    bounded::watchdog!();
    let server = Server::start(|seen| match seen.path.as_str() {
        "/auth/oauth2/v2/token" => ok(OL_TOKEN),
        _ => envelope(200, "success", "Success"),
    })
    .await;
    let provider = preset::onelogin(
        &server.base,
        tower_token::Credentials::new("ol-id", "ol-secret"),
    )
    .unwrap();
    let token = fetch(provider.source()).await.unwrap();
    provider.revoker().revoke_token(&token).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/auth/oauth2/revoke");
    assert_eq!(seen[1].json(), json!({"access_token": "ol-access"}));
}

// ----------------------------------------------------------------------- RFC

#[tokio::test]
async fn rfc_preset_uses_basic_for_both_endpoints() {
    bounded::watchdog!();
    let server = Server::start(|seen| match seen.path.as_str() {
        "/token" => ok(
            r#"{"access_token":"ra","token_type":"Bearer","expires_in":60,"refresh_token":"rr"}"#,
        ),
        _ => ok(""),
    })
    .await;
    let provider = preset::rfc(
        server.url("/token"),
        server.url("/revoke"),
        Credentials::new("rid", "a+b/c:d%e f"),
    )
    .unwrap();
    let token = fetch(provider.source()).await.unwrap();
    provider.revoker().revoke_token(&token).await.unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("rid:a%2Bb%2Fc%3Ad%25e+f")
    );
    for s in &seen {
        assert_eq!(s.header("authorization"), Some(basic.as_str()));
        assert_eq!(s.header("content-type"), Some(FORM));
    }
    assert_eq!(
        seen[0].form(),
        pairs(&[("grant_type", "client_credentials")])
    );
    assert_eq!(seen[1].path, "/revoke");
    assert_eq!(
        seen[1].form(),
        pairs(&[("token", "rr"), ("token_type_hint", "refresh_token")])
    );
    assert_eq!(
        seen[2].form(),
        pairs(&[("token", "ra"), ("token_type_hint", "access_token")])
    );
}

#[tokio::test]
async fn rfc_preset_with_body_auth() {
    bounded::watchdog!();
    let server = Server::start(|seen| match seen.path.as_str() {
        "/token" => ok(r#"{"access_token":"ra","expires_in":60}"#),
        _ => ok(""),
    })
    .await;
    let provider = preset::Provider::rfc(
        server.url("/token"),
        server.url("/revoke"),
        Credentials::new("rid", "rsecret"),
    )
    .auth(ClientAuth::RequestBody)
    .build()
    .unwrap();
    let token = fetch(provider.source()).await.unwrap();
    provider.revoker().revoke_token(&token).await.unwrap();
    let seen = server.seen();
    assert!(seen.iter().all(|s| s.header("authorization").is_none()));
    assert_eq!(
        seen[1].form(),
        pairs(&[
            ("token", "ra"),
            ("token_type_hint", "access_token"),
            ("client_id", "rid"),
            ("client_secret", "rsecret"),
        ])
    );
}

#[test]
fn presets_refuse_plain_http_to_other_hosts() {
    use tower_token::ConfigError;
    assert!(matches!(
        preset::kopokopo("http://k2.example", tower_token::Credentials::new("i", "s")),
        Err(ConfigError::InsecureUrl { .. })
    ));
    assert!(matches!(
        preset::onelogin("http://ol.example", tower_token::Credentials::new("i", "s")),
        Err(ConfigError::InsecureUrl { .. })
    ));
    assert!(
        preset::Provider::onelogin("http://ol.example", tower_token::Credentials::new("i", "s"))
            .transport(Transport::new().allow_insecure_http())
            .build()
            .is_ok()
    );
    let provider =
        preset::onelogin("acme", tower_token::Credentials::new("i", "s3cr3t-value")).unwrap();
    assert_eq!(
        provider.revoker().endpoint().url().as_str(),
        "https://acme.onelogin.com/auth/oauth2/revoke"
    );
    assert!(!format!("{provider:?}").contains("s3cr3t-value"));
}
