//! DPoP (RFC 9449) against in-process servers, for what a certified
//! authorization server does not do: answer a DPoP token request with a
//! bearer token, ask for a nonce again and again, and for what must never
//! leak (the key, the proofs, the token).

#![cfg(feature = "jose")]

mod bounded;
mod common;

use axum::Router;
use axum::response::IntoResponse;
use base64::Engine as _;
use bytes::Bytes;
use common::{Canned, TokenBehaviour, TokenServer, http_client, send, serve, token_error};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::Layer;
use tower_token::dpop::{DPOP, DPOP_NONCE, Dpop};
use tower_token::error::InvalidResponse;
use tower_token::{Error, TokenLayer};

/// A fixed Ed25519 key (RFC 8037 §A.1), so that its private part can be
/// looked for in what the crate prints.
const JWK: &str = r#"{"kty":"OKP","crv":"Ed25519",
  "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
  "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
const PRIVATE: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

fn dpop() -> Dpop {
    Dpop::from_jwk(JWK).unwrap()
}

fn claims(proof: &str) -> Value {
    let claims = proof.split('.').nth(1).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The `Authorization` and `DPoP` headers of a request.
type Seen = (Option<String>, Option<String>);

/// An answer of the API: its status and headers, by request number.
type Answer = fn(usize) -> (StatusCode, Vec<(&'static str, String)>);

/// An API that answers every request as `answer` says, and records the
/// `Authorization` and `DPoP` headers of each.
#[derive(Clone, Default)]
struct Api {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Api {
    async fn start(answer: Answer) -> (Self, String) {
        let api = Api::default();
        let seen = Arc::clone(&api.seen);
        let router = Router::new().fallback(move |headers: HeaderMap| {
            let seen = Arc::clone(&seen);
            async move {
                let text = |name| {
                    headers
                        .get(name)
                        .and_then(|v: &http::HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((text(header::AUTHORIZATION), text(DPOP)));
                    seen.len()
                };
                let (status, headers) = answer(n);
                let mut response = (status, "answer").into_response();
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(name, http::HeaderValue::from_str(&value).unwrap());
                }
                response
            }
        });
        let addr = serve(router).await;
        (api, format!("http://{addr}/orders?page=1"))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn ok(_: usize) -> (StatusCode, Vec<(&'static str, String)>) {
    (StatusCode::OK, vec![])
}

/// Asks for a new nonce every time: `n-1`, `n-2`, …
fn always_a_new_nonce(n: usize) -> (StatusCode, Vec<(&'static str, String)>) {
    (
        StatusCode::UNAUTHORIZED,
        vec![
            (
                "www-authenticate",
                r#"DPoP error="use_dpop_nonce", error_description="nonce please""#.to_owned(),
            ),
            ("dpop-nonce", format!("n-{n}")),
        ],
    )
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn dpop_tokens() -> TokenBehaviour {
    TokenBehaviour {
        token_type: Some(json!("DPoP")),
        prefix: "DpOpToKeN-".to_owned(),
        ..TokenBehaviour::default()
    }
}

#[tokio::test]
async fn a_bearer_answer_to_a_dpop_token_request_is_a_typed_error() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let (api, url) = Api::start(ok).await;
    let layer = TokenLayer::builder(common::source(&token))
        .dpop(dpop())
        .build()
        .unwrap();
    let svc = layer.layer(http_client());
    let err = send(&svc, get(&url)).await.unwrap_err();
    assert!(
        matches!(
            token_error(&err),
            Error::InvalidResponse {
                reason: InvalidResponse::DpopDowngrade,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(api.seen().is_empty(), "nothing was sent to the API");
    // The token request carried a proof, with no `ath`.
    let proof = token.requests()[0].header("dpop").unwrap().to_owned();
    let claims = claims(&proof);
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], token.url());
    assert!(claims.get("ath").is_none());
    assert_eq!(layer.stats().fetch_failures, 1);
}

#[tokio::test]
async fn an_allowed_downgrade_sends_the_token_as_a_bearer_token_without_proofs() {
    bounded::watchdog!();
    let token = TokenServer::start().await;
    let (api, url) = Api::start(ok).await;
    let layer = TokenLayer::builder(common::source(&token))
        .dpop(dpop().allow_bearer_downgrade(true))
        .build()
        .unwrap();
    let svc = layer.layer(http_client());
    let (status, _) = send(&svc, get(&url)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.seen(), vec![(Some("Bearer tok-1".to_owned()), None)]);
}

#[tokio::test]
async fn a_dpop_token_in_a_cache_without_a_key_is_refused() {
    bounded::watchdog!();
    let token = TokenServer::with(dpop_tokens()).await;
    let (api, url) = Api::start(ok).await;
    let svc = TokenLayer::new(common::source(&token)).layer(http_client());
    let err = send(&svc, get(&url)).await.unwrap_err();
    assert!(
        matches!(
            token_error(&err),
            Error::InvalidResponse {
                reason: InvalidResponse::UnsupportedTokenType(t),
                ..
            } if t == "DPoP"
        ),
        "{err:?}"
    );
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn an_api_asking_for_a_nonce_again_and_again_gets_one_retry_and_the_caller_its_401() {
    bounded::watchdog!();
    let token = TokenServer::with(dpop_tokens()).await;
    let (api, url) = Api::start(always_a_new_nonce).await;
    let layer = TokenLayer::builder(common::source(&token))
        .dpop(dpop())
        .build()
        .unwrap();
    let svc = layer.layer(http_client());
    let response = tower::ServiceExt::oneshot(svc.clone(), get(&url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[DPOP_NONCE], "n-2");
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "the first attempt and one retry");
    let first = claims(seen[0].1.as_deref().unwrap());
    let retry = claims(seen[1].1.as_deref().unwrap());
    assert!(first.get("nonce").is_none());
    assert_eq!(retry["nonce"], "n-1");
    assert_ne!(first["jti"], retry["jti"]);
    assert_eq!(first["htu"], url.split('?').next().unwrap());
    for (auth, _) in &seen {
        assert_eq!(auth.as_deref(), Some("DPoP DpOpToKeN-1"));
    }
    // The token is kept: a nonce is no reason to drop it.
    let stats = layer.stats();
    assert_eq!(stats.tokens_fetched, 1);
    assert_eq!(stats.tokens_rejected, 0);
    assert_eq!(stats.dpop_nonce_retries, 1);
    assert!(layer.cache().current().is_some());

    // The next request starts with the last nonce the API sent.
    let (status, _) = send(&svc, get(&url)).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let seen = api.seen();
    assert_eq!(claims(seen[2].1.as_deref().unwrap())["nonce"], "n-2");
    assert_eq!(layer.stats().tokens_fetched, 1);
}

#[tokio::test]
async fn a_token_endpoint_asking_for_a_nonce_twice_gets_one_retry() {
    bounded::watchdog!();
    let token = TokenServer::with(TokenBehaviour {
        canned: Some(
            Canned::json(400, json!({"error": "use_dpop_nonce"})).header("dpop-nonce", "as-1"),
        ),
        ..dpop_tokens()
    })
    .await;
    let layer = TokenLayer::builder(common::source(&token))
        .dpop(dpop())
        .build()
        .unwrap();
    let err = layer.cache().token().await.unwrap_err();
    assert_eq!(
        err.oauth_code().map(|c| c.as_str()),
        Some("use_dpop_nonce"),
        "{err}"
    );
    let requests = token.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        claims(requests[0].header("dpop").unwrap())
            .get("nonce")
            .is_none()
    );
    assert_eq!(claims(requests[1].header("dpop").unwrap())["nonce"], "as-1");
    assert_eq!(layer.stats().dpop_nonce_retries, 1);
}

#[cfg(feature = "store")]
#[test]
fn a_dpop_key_with_a_shared_store_is_a_configuration_error() {
    let store = tower_token::store::MemoryStore::new();
    let keys = tower_token::store::StoreKeys::new(1, &[7u8; 32]).unwrap();
    let err = TokenLayer::builder(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(tower_token::Token::new("t").with_dpop(true))
    }))
    .dpop(dpop())
    .store(store, keys)
    .store_key("k")
    .build()
    .unwrap_err();
    assert!(err.to_string().contains("dpop"), "{err}");
}

fn capture() -> &'static common::Capture {
    common::global_capture()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_the_proofs_and_the_token_never_show_in_debug_errors_or_logs() {
    bounded::watchdog!();
    let capture = capture();
    let token = TokenServer::with(dpop_tokens()).await;
    let (api, url) = Api::start(always_a_new_nonce).await;
    let dpop = dpop();
    let layer = TokenLayer::builder(common::source(&token))
        .dpop(dpop.clone())
        .build()
        .unwrap();
    let svc = layer.layer(http_client());
    let (status, _) = send(&svc, get(&url)).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An error too: a downgrade.
    let bearer = TokenServer::start().await;
    let downgraded = TokenLayer::builder(common::source(&bearer))
        .dpop(dpop.clone())
        .build()
        .unwrap();
    let err = downgraded.cache().token().await.unwrap_err();

    let mut forbidden = vec![PRIVATE.to_owned(), "DpOpToKeN-".to_owned()];
    for (_, proof) in api.seen() {
        let proof = proof.unwrap();
        forbidden.push(proof.rsplit('.').next().unwrap().to_owned());
        forbidden.push(proof);
    }
    for request in token.requests() {
        forbidden.push(request.header("dpop").unwrap().to_owned());
    }
    let shown = [
        format!("{dpop:?}"),
        format!("{dpop:#?}"),
        format!("{:?}", dpop.key()),
        format!("{layer:?}"),
        format!("{svc:?}"),
        format!("{:?}", layer.stats()),
        format!("{err} {err:?}"),
        capture.text(),
    ];
    for text in &shown {
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "`{secret}` shows in:\n{text}"
            );
        }
    }
    assert!(shown[0].contains(dpop.thumbprint()));
}

/// A token server issuing DPoP-bound tokens, an API answering as `answer`
/// says, and a reqwest-middleware client with a DPoP layer's middleware.
#[cfg(feature = "reqwest-middleware")]
async fn middleware_with_dpop(
    answer: Answer,
) -> (
    TokenServer,
    Api,
    String,
    TokenLayer,
    reqwest_middleware::ClientWithMiddleware,
) {
    let token = TokenServer::with(dpop_tokens()).await;
    let (api, url) = Api::start(answer).await;
    let layer = TokenLayer::builder(common::source(&token))
        .dpop(dpop())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(layer.middleware())
        .build();
    (token, api, url, layer, client)
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_sends_proofs_and_follows_a_nonce_once() {
    bounded::watchdog!();
    let (_token, api, url, layer, client) = middleware_with_dpop(always_a_new_nonce).await;
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "the first attempt and one retry");
    let (first, retry) = (
        claims(seen[0].1.as_deref().unwrap()),
        claims(seen[1].1.as_deref().unwrap()),
    );
    assert_eq!(first["htm"], "GET");
    assert_eq!(first["htu"], url.split('?').next().unwrap());
    // base64url(SHA-256("DpOpToKeN-1")), worked out apart.
    assert_eq!(first["ath"], "m3jR1lx1aPv7ttieP4EMVnO9Kqk3n1Xk0G676GWoE48");
    assert!(first.get("nonce").is_none());
    assert_eq!(retry["nonce"], "n-1");
    assert_ne!(first["jti"], retry["jti"]);
    assert_eq!(seen[1].0.as_deref(), Some("DPoP DpOpToKeN-1"));
    assert_eq!(layer.stats().dpop_nonce_retries, 1);
    assert_eq!(layer.stats().tokens_fetched, 1);
}

/// Rejects the first request's token (`invalid_token`), then accepts.
fn rejects_the_first_token(n: usize) -> (StatusCode, Vec<(&'static str, String)>) {
    if n > 1 {
        return ok(n);
    }
    (
        StatusCode::UNAUTHORIZED,
        vec![(
            "www-authenticate",
            r#"DPoP error="invalid_token", algs="ES256 EdDSA""#.to_owned(),
        )],
    )
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_replays_a_rejected_dpop_request_with_a_new_token_and_proof() {
    bounded::watchdog!();
    let (token, api, url, layer, client) = middleware_with_dpop(rejects_the_first_token).await;
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "the rejected attempt and one replay");
    assert_eq!(seen[0].0.as_deref(), Some("DPoP DpOpToKeN-1"));
    assert_eq!(seen[1].0.as_deref(), Some("DPoP DpOpToKeN-2"));
    let (first, replay) = (
        claims(seen[0].1.as_deref().unwrap()),
        claims(seen[1].1.as_deref().unwrap()),
    );
    // Each proof is bound to the token it goes with.
    assert_ne!(first["ath"], replay["ath"]);
    assert_ne!(first["jti"], replay["jti"]);
    assert_eq!(replay["htu"], url.split('?').next().unwrap());
    assert_eq!(token.hits(), 2);
    assert_eq!(layer.stats().dpop_nonce_retries, 0);
}

#[tokio::test]
async fn a_service_made_from_the_cache_of_a_dpop_layer_sends_proofs_too() {
    bounded::watchdog!();
    let layer = TokenLayer::builder(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(tower_token::Token::new("t-1").with_dpop(true))
    }))
    .dpop(dpop())
    .build()
    .unwrap();
    let echo = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let dpop = req.headers().get(DPOP).cloned();
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(format!(
            "{} | {}",
            req.headers()[header::AUTHORIZATION].to_str().unwrap(),
            dpop.map(|p| claims(p.to_str().unwrap())["htu"].to_string())
                .unwrap_or_default()
        )))))
    });
    let svc = tower_token::TokenService::new(echo, layer.cache().clone());
    let (status, body) = send(&svc, get("https://api.example/x?y=1")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "DPoP t-1 | \"https://api.example/x\"");
}

#[tokio::test]
async fn a_router_sends_proofs_on_the_routes_of_a_dpop_layer_only() {
    bounded::watchdog!();
    let bound = TokenLayer::builder(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(tower_token::Token::new("bound-1").with_dpop(true))
    }))
    .dpop(dpop())
    .build()
    .unwrap();
    let bearer = TokenLayer::new(tower_token::source::from_fn(|_| async {
        Ok::<_, std::io::Error>(tower_token::Token::new("plain-1"))
    }));
    let router = tower_token::router::TokenRouterLayer::builder()
        .origin("https://dpop.example.com", &bound)
        .origin("https://bearer.example.com", &bearer)
        .build()
        .unwrap();
    let echo = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let proof = req
            .headers()
            .get(DPOP)
            .map(|p| claims(p.to_str().unwrap())["htu"].to_string())
            .unwrap_or_default();
        let auth = req.headers()[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(format!(
            "{auth} | {proof}"
        )))))
    });
    let svc = router.layer(echo);
    let (_, body) = send(&svc, get("https://dpop.example.com/a?b"))
        .await
        .unwrap();
    assert_eq!(body, "DPoP bound-1 | \"https://dpop.example.com/a\"");
    let (_, body) = send(&svc, get("https://bearer.example.com/a"))
        .await
        .unwrap();
    assert_eq!(body, "Bearer plain-1 | ");
}
