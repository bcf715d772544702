//! The refresh-token grant and revocation over the token's life: refresh
//! with the held refresh token, rotation, fallback on `invalid_grant`,
//! revoke on drop, `shutdown()`.

mod bounded;

use axum::{Form, Router, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use bytes::Bytes;
use http_body_util::Empty;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Service, ServiceExt};
use tower_token::dialect::{ClientAuth, Credentials};
use tower_token::{ClientCredentials, RevokeService, TokenLayer};

const ID: &str = "client-1";
const SECRET: &str = "secret-1";

#[derive(Default)]
struct Server {
    /// Every token request's form.
    grants: Mutex<Vec<HashMap<String, String>>>,
    /// Every revocation request's form.
    revocations: Mutex<Vec<HashMap<String, String>>>,
    /// Answer refresh grants with `invalid_grant`.
    reject_refresh: Mutex<bool>,
    /// Issue refresh tokens.
    issue_refresh: Mutex<bool>,
    /// Delay of the revocation answer.
    revoke_delay: Mutex<Duration>,
}

type Shared = Arc<Server>;

async fn token(
    State(s): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let n = {
        let mut grants = s.grants.lock().unwrap();
        grants.push(form.clone());
        grants.len()
    };
    if form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && *s.reject_refresh.lock().unwrap()
    {
        let body = serde_json::json!({"error": "invalid_grant", "error_description": "refresh token expired"});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let mut answer = serde_json::json!({
        "access_token": format!("acc-{n}"),
        "token_type": "Bearer",
        "expires_in": 2,
    });
    if *s.issue_refresh.lock().unwrap() {
        answer["refresh_token"] = format!("ref-{n}").into();
    }
    axum::Json(answer).into_response()
}

async fn revoke(State(s): State<Shared>, Form(form): Form<HashMap<String, String>>) -> StatusCode {
    let delay = *s.revoke_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    s.revocations.lock().unwrap().push(form);
    StatusCode::OK
}

async fn start(server: Shared) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn layer(addr: SocketAddr, revoke_on_drop: bool) -> TokenLayer {
    let source = ClientCredentials::builder(
        format!("http://{addr}/token"),
        tower_token::Credentials::new(ID, SECRET),
    )
    .auth(ClientAuth::RequestBody)
    .build()
    .unwrap();
    let revoker = RevokeService::rfc(
        format!("http://{addr}/revoke"),
        Credentials::new(ID, SECRET),
    )
    .auth(ClientAuth::RequestBody)
    .build()
    .unwrap();
    TokenLayer::builder(source)
        .revoker(revoker)
        .revoke_on_drop(revoke_on_drop)
        .build()
        .unwrap()
}

/// An inner service that answers 200 with the Authorization it received.
fn echo() -> impl Service<
    http::Request<Empty<Bytes>>,
    Response = http::Response<String>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send {
    tower::service_fn(|req: http::Request<Empty<Bytes>>| async move {
        let auth = req.headers()[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        Ok(http::Response::new(auth))
    })
}

async fn call(layer: &TokenLayer) -> String {
    let svc = tower::Layer::layer(layer, echo());
    let res = svc.oneshot(http::Request::new(Empty::new())).await.unwrap();
    res.into_body().into_inner()
}

fn grant_types(s: &Server) -> Vec<(String, Option<String>)> {
    s.grants
        .lock()
        .unwrap()
        .iter()
        .map(|f| (f["grant_type"].clone(), f.get("refresh_token").cloned()))
        .collect()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn refresh_grant_uses_the_held_token_and_its_rotation() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    *server.issue_refresh.lock().unwrap() = true;
    let addr = start(server.clone()).await;
    let layer = layer(addr, false);

    assert_eq!(call(&layer).await, "Bearer acc-1");
    // Expire the token: the next fetch uses the refresh grant.
    layer.cache().invalidate();
    assert_eq!(call(&layer).await, "Bearer acc-2");
    layer.cache().invalidate();
    assert_eq!(call(&layer).await, "Bearer acc-3");

    assert_eq!(
        grant_types(&server),
        vec![
            ("client_credentials".to_owned(), None),
            ("refresh_token".to_owned(), Some("ref-1".to_owned())),
            // The server rotated the refresh token; the rotated one is used.
            ("refresh_token".to_owned(), Some("ref-2".to_owned())),
        ]
    );
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_old_refresh_token() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    *server.issue_refresh.lock().unwrap() = true;
    let addr = start(server.clone()).await;
    let layer = layer(addr, false);
    call(&layer).await;
    // From now on the server answers refresh grants without a new one.
    *server.issue_refresh.lock().unwrap() = false;
    for _ in 0..2 {
        layer.cache().invalidate();
        call(&layer).await;
    }
    let grants = grant_types(&server);
    assert_eq!(
        grants[1],
        ("refresh_token".to_owned(), Some("ref-1".to_owned()))
    );
    assert_eq!(
        grants[2],
        ("refresh_token".to_owned(), Some("ref-1".to_owned()))
    );
}

#[tokio::test]
async fn invalid_grant_falls_back_to_client_credentials() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    *server.issue_refresh.lock().unwrap() = true;
    let addr = start(server.clone()).await;
    let layer = layer(addr, false);
    call(&layer).await;
    *server.reject_refresh.lock().unwrap() = true;
    *server.issue_refresh.lock().unwrap() = false;
    layer.cache().invalidate();
    // The API call still succeeds, with a token from the primary grant.
    assert_eq!(call(&layer).await, "Bearer acc-3");
    layer.cache().invalidate();
    assert_eq!(call(&layer).await, "Bearer acc-4");
    assert_eq!(
        grant_types(&server),
        vec![
            ("client_credentials".to_owned(), None),
            ("refresh_token".to_owned(), Some("ref-1".to_owned())),
            ("client_credentials".to_owned(), None),
            // The rejected refresh token is not tried again.
            ("client_credentials".to_owned(), None),
        ]
    );
    assert_eq!(layer.stats().fetch_failures, 0);
}

#[tokio::test]
async fn dropping_the_last_handle_revokes_access_and_refresh_tokens() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    *server.issue_refresh.lock().unwrap() = true;
    let addr = start(server.clone()).await;
    let layer = layer(addr, true);
    let svc = tower::Layer::layer(&layer, echo());
    let clones: Vec<_> = (0..5).map(|_| svc.clone()).collect();
    assert_eq!(call(&layer).await, "Bearer acc-1");

    drop(layer);
    drop(svc);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.revocations.lock().unwrap().is_empty(),
        "clones are still alive"
    );
    drop(clones);

    wait_for("two revocations", || {
        server.revocations.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revocations = server.revocations.lock().unwrap().clone();
    assert_eq!(revocations.len(), 2, "exactly one revocation per token");
    let revoked: Vec<_> = revocations
        .iter()
        .map(|f| {
            (
                f["token"].as_str(),
                f["token_type_hint"].as_str(),
                f["client_id"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        revoked,
        vec![
            ("ref-1", "refresh_token", ID),
            ("acc-1", "access_token", ID)
        ]
    );
}

#[tokio::test]
async fn no_revocation_without_revoke_on_drop_or_token() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    let addr = start(server.clone()).await;
    // Nothing fetched: nothing to revoke.
    drop(layer(addr, true));
    // Fetched, but revoke on drop off.
    let l = layer(addr, false);
    call(&l).await;
    drop(l);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.revocations.lock().unwrap().is_empty());
}

#[test]
fn dropping_outside_a_runtime_revokes_without_panicking() {
    bounded::watchdog!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server: Shared = Arc::default();
    let layer = rt.block_on(async {
        let addr = start(server.clone()).await;
        let layer = layer(addr, true);
        call(&layer).await;
        // Let the fetch task, which holds a handle until it ends, finish:
        // the test's own handle must be the last one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        layer
    });
    // This thread is not in the runtime: the drop revokes on a thread of
    // its own, with a runtime of its own, and waits for the answer (at most
    // the bounded wait), without panicking.
    drop(layer);
    let revoked = server.revocations.lock().unwrap().clone();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["token_type_hint"], "access_token");
    drop(rt);
}

#[tokio::test]
async fn shutdown_waits_for_the_answer_and_reports_it() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    *server.revoke_delay.lock().unwrap() = Duration::from_millis(300);
    let addr = start(server.clone()).await;
    let layer = layer(addr, true);
    call(&layer).await;

    layer.shutdown().await.unwrap();
    // Returned only after the server answered.
    assert_eq!(server.revocations.lock().unwrap().len(), 1);
    assert_eq!(layer.stats().revocations, 1);
    // The cache is empty now: dropping it revokes nothing more.
    drop(layer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.revocations.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn shutdown_reports_a_failed_revocation() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    let addr = start(server.clone()).await;
    let source = ClientCredentials::builder(
        format!("http://{addr}/token"),
        tower_token::Credentials::new(ID, SECRET),
    )
    .build()
    .unwrap();
    // A revocation endpoint that does not exist: 404.
    let revoker = RevokeService::rfc(
        format!("http://{addr}/nowhere"),
        Credentials::new(ID, SECRET),
    )
    .build()
    .unwrap();
    let layer = TokenLayer::builder(source)
        .revoker(revoker)
        .build()
        .unwrap();
    call(&layer).await;
    let err = layer.shutdown().await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND), "{err}");
}

#[tokio::test]
async fn revoke_replaced_revokes_the_old_token_after_a_refresh() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    let addr = start(server.clone()).await;
    let source = ClientCredentials::builder(
        format!("http://{addr}/token"),
        tower_token::Credentials::new(ID, SECRET),
    )
    .build()
    .unwrap();
    let revoker = RevokeService::rfc(
        format!("http://{addr}/revoke"),
        Credentials::new(ID, SECRET),
    )
    .build()
    .unwrap();
    let layer = TokenLayer::builder(source)
        .revoker(revoker)
        .revoke_replaced(true)
        .build()
        .unwrap();
    call(&layer).await;
    // A 2 s token is used for 1 s; after that the next call fetches anew.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&layer).await, "Bearer acc-2");
    wait_for("the replaced token's revocation", || {
        !server.revocations.lock().unwrap().is_empty()
    })
    .await;
    let revocations = server.revocations.lock().unwrap().clone();
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["token"], "acc-1");
    // Background revocations are counted too.
    wait_for("the counter", || layer.stats().revocations == 1).await;
}

#[tokio::test]
async fn shutdown_counts_each_token_it_revoked() {
    bounded::watchdog!();
    let server: Shared = Arc::default();
    *server.issue_refresh.lock().unwrap() = true;
    let addr = start(server.clone()).await;
    let layer = layer(addr, false);
    call(&layer).await;
    layer.shutdown().await.unwrap();
    assert_eq!(server.revocations.lock().unwrap().len(), 2);
    assert_eq!(layer.stats().revocations, 2);
}
