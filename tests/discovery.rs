//! Discovery against an in-process metadata document: the token and
//! revocation endpoints and the client authentication come from it (R11).

mod bounded;

use axum::extract::Request;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use tower_token::dialect::{ClientAuth, Credentials};
use tower_token::discovery::{Discovery, discover};
use tower_token::error::{Endpoint, InvalidResponse};
use tower_token::source::{FetchReason, FetchRequest};
use tower_token::{Error, RevokeRequest, TokenSource};

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// A server whose answers are computed from its own base URL.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(
        reply: impl Fn(&str, &Seen) -> (StatusCode, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let (log, me) = (Arc::clone(&seen), base.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (log, reply, me) = (Arc::clone(&log), Arc::clone(&reply), me.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let seen = Seen {
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body,
                };
                let answer = reply(&me, &seen);
                log.lock().unwrap().push(seen);
                answer
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, seen }
    }

    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn document(issuer: &str, base: &str, extra: Value) -> String {
    let mut doc = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "grant_types_supported": ["client_credentials", "refresh_token"],
    });
    if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
        doc.extend(extra);
    }
    doc.to_string()
}

fn not_found() -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, "not here".into())
}

#[tokio::test]
async fn rfc8414_document_gives_endpoints_and_auth() {
    bounded::watchdog!();
    let server = Server::start(|base, seen| match seen.path.as_str() {
        "/.well-known/oauth-authorization-server" => (
            StatusCode::OK,
            document(
                base,
                base,
                json!({
                    "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"],
                    "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
                }),
            ),
        ),
        "/oauth/token" => (
            StatusCode::OK,
            r#"{"access_token":"d-access","token_type":"Bearer","expires_in":60}"#.into(),
        ),
        "/oauth/revoke" => (StatusCode::OK, String::new()),
        _ => not_found(),
    })
    .await;

    let metadata = discover(&server.base).await.unwrap();
    assert_eq!(metadata.issuer, server.base);
    assert_eq!(
        metadata.token_endpoint.as_str(),
        format!("{}/oauth/token", server.base)
    );
    assert_eq!(
        metadata.revocation_endpoint.as_ref().map(|u| u.as_str()),
        Some(format!("{}/oauth/revoke", server.base).as_str())
    );
    assert_eq!(metadata.token_auth(), Some(ClientAuth::RequestBody));
    assert_eq!(metadata.revocation_auth(), Some(ClientAuth::Basic));
    assert_eq!(server.paths(), ["/.well-known/oauth-authorization-server"]);

    // The source and the revocation service built from the metadata talk
    // to its endpoints with its client authentication.
    let source = metadata
        .client_credentials(tower_token::Credentials::new("dc", "ds"))
        .unwrap()
        .build()
        .unwrap();
    source
        .fetch(FetchRequest::new(FetchReason::Initial))
        .await
        .unwrap();
    let revoke = metadata
        .revoke_service(Credentials::new("dc", "ds"))
        .unwrap()
        .build()
        .unwrap();
    revoke
        .oneshot(RevokeRequest::access("d-access"))
        .await
        .unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].path, "/oauth/token");
    assert!(seen[1].headers.get("authorization").is_none());
    assert!(
        seen[1]
            .form()
            .contains(&("client_secret".into(), "ds".into()))
    );
    assert_eq!(seen[2].path, "/oauth/revoke");
    let auth = seen[2].headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("Basic "), "{auth}");
}

#[tokio::test]
async fn absent_auth_methods_mean_basic() {
    bounded::watchdog!();
    let server = Server::start(|base, seen| match seen.path.as_str() {
        "/.well-known/oauth-authorization-server" => {
            (StatusCode::OK, document(base, base, json!({})))
        }
        _ => not_found(),
    })
    .await;
    let metadata = discover(&server.base).await.unwrap();
    assert_eq!(metadata.token_auth(), Some(ClientAuth::Basic));
    assert_eq!(metadata.revocation_auth(), Some(ClientAuth::Basic));
    // A public client revokes with no client authentication.
    let revoke = metadata
        .revoke_service(Credentials::public("spa"))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        revoke.endpoint().dialect(),
        tower_token::dialect::Dialect::Rfc {
            auth: ClientAuth::None
        }
    );
}

#[tokio::test]
async fn falls_back_to_openid_configuration_for_an_issuer_with_a_path() {
    bounded::watchdog!();
    let server = Server::start(|base, seen| match seen.path.as_str() {
        "/tenant/a/.well-known/openid-configuration" => (
            StatusCode::OK,
            document(
                &format!("{base}/tenant/a"),
                &format!("{base}/tenant/a"),
                json!({"token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}),
            ),
        ),
        _ => not_found(),
    })
    .await;
    let issuer = format!("{}/tenant/a", server.base);
    let metadata = Discovery::new(issuer.as_str()).fetch().await.unwrap();
    assert_eq!(
        metadata.token_endpoint.as_str(),
        format!("{issuer}/oauth/token")
    );
    assert_eq!(metadata.token_auth(), Some(ClientAuth::Basic));
    assert_eq!(
        server.paths(),
        [
            "/.well-known/oauth-authorization-server/tenant/a",
            "/.well-known/openid-configuration/tenant/a",
            "/tenant/a/.well-known/openid-configuration",
        ]
    );
}

#[tokio::test]
async fn an_unusable_document_is_skipped_and_reported() {
    bounded::watchdog!();
    let server = Server::start(|base, seen| match seen.path.as_str() {
        "/.well-known/oauth-authorization-server" => (StatusCode::OK, "<html>login</html>".into()),
        "/.well-known/openid-configuration" => (StatusCode::OK, document(base, base, json!({}))),
        _ => not_found(),
    })
    .await;
    assert!(discover(&server.base).await.is_ok());

    let broken = Server::start(|_, seen| match seen.path.as_str() {
        "/.well-known/oauth-authorization-server" => not_found(),
        _ => (StatusCode::OK, r#"{"issuer":"x"}"#.into()),
    })
    .await;
    match discover(&broken.base).await.unwrap_err() {
        Error::InvalidResponse {
            endpoint, reason, ..
        } => {
            assert_eq!(endpoint, Endpoint::Discovery);
            assert_eq!(reason, InvalidResponse::MissingField("token_endpoint"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_document_for_another_issuer_is_rejected() {
    bounded::watchdog!();
    let server = Server::start(|base, seen| match seen.path.as_str() {
        "/.well-known/oauth-authorization-server" => (
            StatusCode::OK,
            document("https://evil.example", base, json!({})),
        ),
        _ => not_found(),
    })
    .await;
    match discover(&server.base).await.unwrap_err() {
        Error::InvalidResponse { reason, .. } => {
            assert_eq!(reason, InvalidResponse::IssuerMismatch)
        }
        other => panic!("{other:?}"),
    }
    let metadata = Discovery::new(server.base.as_str())
        .allow_issuer_mismatch()
        .fetch()
        .await
        .unwrap();
    assert_eq!(metadata.issuer, "https://evil.example");
}

#[tokio::test]
async fn nothing_found_is_a_404_status() {
    bounded::watchdog!();
    let server = Server::start(|_, _| not_found()).await;
    let err = discover(&server.base).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(server.paths().len(), 2);
}

#[tokio::test]
async fn plain_http_issuer_on_another_host_is_refused() {
    bounded::watchdog!();
    let err = discover("http://as.example").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Request {
                endpoint: Endpoint::Discovery,
                ..
            }
        ),
        "{err:?}"
    );
}
