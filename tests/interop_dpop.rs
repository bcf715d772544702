//! DPoP (RFC 9449) against a real authorization server: oidc-provider 9.13.3
//! with `features.dPoP` (and a nonce secret), the `dpop` client registered
//! with `dpop_bound_access_tokens`, and the protected API of
//! `tests/interop/server.mjs`, which verifies every proof with `jose`
//! (signature by the proof's own key, `htm`, `htu`, `iat`, `jti` never seen
//! before, `ath`, the nonce when it demands one, and the token's `cnf.jkt`
//! from introspection against the proof's key).
//!
//! Each test starts its own peer, as `tests/interop.rs` does, and switches
//! its nonce demands through `POST /control`.

#![cfg(feature = "jose")]

mod bounded;
mod node_peer;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use node_peer::NodeProcess;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};
use tower_token::dpop::{DPOP, Dpop};
use tower_token::jose::Algorithm;
use tower_token::{
    BoxError, ClientCredentials, Credentials, RevokeRequest, RevokeService, TokenLayer,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn timeout() -> Duration {
    node_peer::timeout()
}

/// The watchdog's limit: a test may wait for two others' peers first.
fn limit() -> Duration {
    (timeout() * 6).max(Duration::from_secs(180))
}

/// At most two peers at a time: each Node process imports oidc-provider as
/// it starts, which a busy 2-core machine feels.
static PEERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `node tests/interop/server.mjs`, running; stopped on drop (stdin closed,
/// then killed if it lingers).
struct Peer {
    /// Stopped when the peer drops.
    _process: NodeProcess,
    _slot: tokio::sync::SemaphorePermit<'static>,
    ready: Value,
    http: HttpClient,
}

impl Peer {
    async fn start() -> Peer {
        let slot = PEERS
            .acquire()
            .await
            .expect("the peer semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let (process, ready) = NodeProcess::start::<&str>("server.mjs", &[], timeout());
            Peer {
                _process: process,
                _slot: slot,
                ready,
                http: Client::builder(TokioExecutor::new()).build_http(),
            }
        })
        .await
        .expect("starting the peer")
    }

    fn url(&self, key: &str) -> String {
        self.ready[key].as_str().expect(key).to_owned()
    }

    fn resource(&self) -> String {
        self.url("resource")
    }

    fn dpop_client(&self) -> Credentials {
        let c = &self.ready["clients"]["dpop"];
        Credentials::new(
            c["id"].as_str().expect("id").to_owned(),
            c["secret"].as_str().expect("secret"),
        )
    }

    /// A client-credentials source for the `dpop` client.
    fn source(&self) -> ClientCredentials {
        ClientCredentials::builder(format!("{}/token", self.url("issuer")), self.dpop_client())
            .build()
            .expect("source")
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, http::HeaderMap, String) {
        let response = tokio::time::timeout(timeout(), self.http.request(request))
            .await
            .expect("an answer in time")
            .expect("request to the peer");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn stats(&self) -> Value {
        let request = Request::get(self.url("stats"))
            .body(Full::default())
            .unwrap();
        let (status, _, body) = self.exchange(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).expect("stats")
    }

    async fn control(&self, switches: Value) {
        let request = Request::post(self.url("control"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(switches.to_string())))
            .unwrap();
        let (status, _, body) = self.exchange(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn introspect(&self, token: &str) -> Value {
        use base64::Engine as _;
        let c = &self.ready["clients"]["resource_server"];
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            c["id"].as_str().unwrap(),
            c["secret"].as_str().unwrap()
        ));
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish();
        let request = Request::post(self.url("introspection_endpoint"))
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let (status, _, body) = self.exchange(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).expect("introspection")
    }
}

/// What the layer sent to the API: each request's `Authorization` and
/// `DPoP` headers, in order.
type Sent = Arc<Mutex<Vec<(String, String)>>>;

/// A `TokenLayer` stack over hyper-util's client that records what it sends.
fn api(
    layer: &TokenLayer,
    http: &HttpClient,
) -> (
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = http::Response<impl http_body::Body<Data = Bytes, Error = impl Into<BoxError>>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Sent,
) {
    let sent: Sent = Arc::default();
    let (record, http) = (Arc::clone(&sent), http.clone());
    let inner = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let text = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        record
            .lock()
            .unwrap()
            .push((text(header::AUTHORIZATION), text(DPOP)));
        http.request(req)
    });
    (
        ServiceBuilder::new().layer(layer.clone()).service(inner),
        sent,
    )
}

async fn get<S, B>(api: &S, url: &str) -> (StatusCode, String)
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = BoxError> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request = Request::get(url).body(Full::default()).unwrap();
    let exchange = async {
        let response = api.clone().oneshot(request).await.expect("call");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(Into::into)
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout(), exchange)
        .await
        .expect("an answer in time")
}

fn n(stats: &Value, path: &[&str]) -> u64 {
    let mut v = stats;
    for key in path {
        v = &v[*key];
    }
    v.as_u64().unwrap_or(0)
}

fn issued(stats: &Value) -> u64 {
    n(stats, &["tokens_issued", "dpop-client", "count"])
}

#[tokio::test]
async fn a_bound_token_is_issued_and_100_calls_each_carry_a_proof_of_their_own() {
    bounded::watchdog!(limit());
    let peer = Peer::start().await;
    for (round, alg) in [Algorithm::ES256, Algorithm::EdDSA].into_iter().enumerate() {
        let dpop = Dpop::generate(alg).unwrap();
        let layer = TokenLayer::builder(peer.source())
            .dpop(dpop.clone())
            .build()
            .unwrap();
        let (api, sent) = api(&layer, &peer.http);

        for i in 0..99 {
            let (status, body) = get(&api, &peer.resource()).await;
            assert_eq!(status, StatusCode::OK, "{alg:?} call {i}: {body}");
        }
        // The last one has a query, which `htu` leaves out.
        let (status, body) = get(&api, &format!("{}?page=2&sort=asc", peer.resource())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["jkt"], dpop.thumbprint());

        // The token is bound to the layer's key.
        let token = layer.cache().token().await.unwrap();
        let info = peer.introspect(token.secret()).await;
        assert_eq!(info["active"], true, "{info}");
        assert_eq!(info["token_type"], "DPoP", "{info}");
        assert_eq!(info["cnf"]["jkt"], dpop.thumbprint(), "{info}");

        let stats = peer.stats().await;
        let done = 100 * (round as u64 + 1);
        assert_eq!(n(&stats, &["dpop", "ok"]), done, "{stats}");
        assert_eq!(
            n(&stats, &["dpop", "jtis"]),
            done,
            "a distinct jti per call: {stats}"
        );
        assert_eq!(n(&stats, &["dpop", "htu_with_query"]), 0, "{stats}");
        assert_eq!(stats["dpop"]["last_htu"], peer.resource().as_str());
        assert_eq!(stats["dpop"]["rejected"], json!({}), "{stats}");
        assert_eq!(issued(&stats), round as u64 + 1);
        assert_eq!(layer.stats().tokens_fetched, 1);

        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 100);
        assert!(
            sent.iter()
                .all(|(auth, _)| auth == &format!("DPoP {}", token.secret()))
        );
        let proofs: std::collections::HashSet<&String> = sent.iter().map(|(_, p)| p).collect();
        assert_eq!(proofs.len(), 100, "no proof twice");
    }
}

#[tokio::test]
async fn the_authorization_server_asks_for_a_nonce_once_then_issues_the_token() {
    bounded::watchdog!(limit());
    let peer = Peer::start().await;
    peer.control(json!({ "as_nonce": true })).await;
    let layer = TokenLayer::builder(peer.source())
        .dpop(Dpop::generate(Algorithm::ES256).unwrap())
        .build()
        .unwrap();
    let (api, _) = api(&layer, &peer.http);
    let (status, body) = get(&api, &peer.resource()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let stats = peer.stats().await;
    assert_eq!(n(&stats, &["token_errors", "use_dpop_nonce"]), 1, "{stats}");
    assert_eq!(issued(&stats), 1, "{stats}");
    assert_eq!(layer.stats().dpop_nonce_retries, 1);
    assert_eq!(layer.stats().fetch_failures, 0);

    // The next token request carries the nonce at once.
    layer.cache().invalidate();
    let (status, body) = get(&api, &peer.resource()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = peer.stats().await;
    assert_eq!(n(&stats, &["token_errors", "use_dpop_nonce"]), 1, "{stats}");
    assert_eq!(issued(&stats), 2);
}

#[tokio::test]
async fn the_api_asks_for_a_nonce_once_per_new_nonce_and_the_token_is_kept() {
    bounded::watchdog!(limit());
    let peer = Peer::start().await;
    peer.control(json!({ "rs_nonce": true })).await;
    let layer = TokenLayer::builder(peer.source())
        .dpop(Dpop::generate(Algorithm::EdDSA).unwrap())
        .build()
        .unwrap();
    let (api, sent) = api(&layer, &peer.http);
    for round in 1..=3u64 {
        for _ in 0..10 {
            let (status, body) = get(&api, &peer.resource()).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let stats = peer.stats().await;
        assert_eq!(n(&stats, &["dpop", "nonce_challenges"]), round, "{stats}");
        assert_eq!(n(&stats, &["dpop", "ok"]), 10 * round, "{stats}");
        peer.control(json!({ "rotate_rs_nonce": true })).await;
    }
    let stats = peer.stats().await;
    assert_eq!(issued(&stats), 1, "the token is not fetched again");
    assert_eq!(stats["dpop"]["rejected"], json!({}), "{stats}");
    let local = layer.stats();
    assert_eq!(local.tokens_fetched, 1);
    assert_eq!(local.unauthorized_refreshes, 0);
    assert_eq!(local.tokens_rejected, 0);
    assert_eq!(local.dpop_nonce_retries, 3);
    // 30 calls, 3 of them sent twice, each time with a new proof.
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 33);
    let proofs: std::collections::HashSet<&String> = sent.iter().map(|(_, p)| p).collect();
    assert_eq!(proofs.len(), 33);
}

#[tokio::test]
async fn an_invalid_token_answer_refreshes_once_and_the_retry_has_a_new_proof_and_token() {
    bounded::watchdog!(limit());
    let peer = Peer::start().await;
    let layer = TokenLayer::builder(peer.source())
        .dpop(Dpop::generate(Algorithm::ES256).unwrap())
        .build()
        .unwrap();
    let (api, sent) = api(&layer, &peer.http);
    let (status, _) = get(&api, &peer.resource()).await;
    assert_eq!(status, StatusCode::OK);
    let first = layer.cache().token().await.unwrap();

    // Revoked at the server: the API's introspection says it is inactive.
    let revoke = RevokeService::rfc(
        format!("{}/token/revocation", peer.url("issuer")),
        peer.dpop_client(),
    )
    .build()
    .unwrap();
    revoke
        .oneshot(RevokeRequest::access(first.clone()))
        .await
        .expect("revocation");

    let (status, body) = get(&api, &peer.resource()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = layer.cache().token().await.unwrap();
    assert_ne!(first.secret(), second.secret());

    let stats = peer.stats().await;
    assert_eq!(issued(&stats), 2, "{stats}");
    assert_eq!(
        n(
            &stats,
            &["dpop", "rejected", "the access token is not active"]
        ),
        1,
        "{stats}"
    );
    assert_eq!(n(&stats, &["dpop", "ok"]), 2, "{stats}");
    assert_eq!(
        n(&stats, &["dpop", "jtis"]),
        3,
        "three proofs, none seen twice"
    );
    assert_eq!(layer.stats().unauthorized_refreshes, 1);

    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1].0, format!("DPoP {}", first.secret()));
    assert_eq!(sent[2].0, format!("DPoP {}", second.secret()));
    assert_ne!(sent[1].1, sent[2].1, "the retry carries a new proof");
}

#[tokio::test]
async fn a_proof_taken_from_one_request_is_refused_with_another() {
    bounded::watchdog!(limit());
    let peer = Peer::start().await;
    let layer = TokenLayer::builder(peer.source())
        .dpop(Dpop::generate(Algorithm::ES256).unwrap())
        .build()
        .unwrap();
    let (api, sent) = api(&layer, &peer.http);
    let (status, _) = get(&api, &peer.resource()).await;
    assert_eq!(status, StatusCode::OK);
    let (authorization, proof) = sent.lock().unwrap()[0].clone();

    let replay = |method: Method| {
        Request::builder()
            .method(method)
            .uri(peer.resource())
            .header(header::AUTHORIZATION, authorization.as_str())
            .header(DPOP, proof.as_str())
            .body(Full::default())
            .unwrap()
    };
    // The same request again: its jti was seen.
    let (status, headers, body) = peer.exchange(replay(Method::GET)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
    // Another request: its method is not the proof's.
    let (status, _, body) = peer.exchange(replay(Method::POST)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The token without a proof, as a bearer token.
    let bearer = authorization.replacen("DPoP ", "Bearer ", 1);
    let request = Request::get(peer.resource())
        .header(header::AUTHORIZATION, bearer)
        .body(Full::default())
        .unwrap();
    let (status, _, body) = peer.exchange(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let stats = peer.stats().await;
    assert_eq!(
        n(&stats, &["dpop", "rejected", "jti replayed"]),
        1,
        "{stats}"
    );
    assert_eq!(n(&stats, &["dpop", "rejected", "htm"]), 1, "{stats}");
    assert_eq!(
        n(&stats, &["dpop", "rejected", "bound token sent as Bearer"]),
        1,
        "{stats}"
    );
    // And the layer's own next request still goes through.
    let (status, _) = get(&api, &peer.resource()).await;
    assert_eq!(status, StatusCode::OK);
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_carries_proofs_the_api_accepts_and_follows_its_nonce() {
    bounded::watchdog!(limit());
    let peer = Peer::start().await;
    peer.control(json!({ "rs_nonce": true })).await;
    let dpop = Dpop::generate(Algorithm::EdDSA).unwrap();
    let layer = TokenLayer::builder(peer.source())
        .dpop(dpop.clone())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(layer.middleware())
        .build();
    for i in 0..10 {
        let response = tokio::time::timeout(
            timeout(),
            client.get(format!("{}?call={i}", peer.resource())).send(),
        )
        .await
        .expect("an answer in time")
        .expect("call");
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["jkt"], dpop.thumbprint());
    }
    let stats = peer.stats().await;
    assert_eq!(n(&stats, &["dpop", "ok"]), 10, "{stats}");
    assert_eq!(n(&stats, &["dpop", "nonce_challenges"]), 1, "{stats}");
    assert_eq!(n(&stats, &["dpop", "htu_with_query"]), 0, "{stats}");
    assert_eq!(stats["dpop"]["rejected"], json!({}), "{stats}");
    assert_eq!(issued(&stats), 1);
    assert_eq!(layer.stats().dpop_nonce_retries, 1);
}
