//! Interoperability of key-based client authentication against a real,
//! certified authorization server: oidc-provider 9.13.3 over HTTPS, run by
//! `tests/interop/client_auth.mjs` on loopback, with clients registered for
//! `private_key_jwt` (RS256, PS256, ES256, ES384, EdDSA), `client_secret_jwt`,
//! `tls_client_auth`, `self_signed_tls_client_auth` and `client_secret_post`,
//! and a protected API that checks each token by introspection and the
//! certificate binding (RFC 8705 §3) of mutual-TLS tokens.
//!
//! Every key and certificate is generated here, at test time, into a
//! temporary directory the peer reads (a CA, the servers' certificate, a
//! CA-issued and a self-signed client certificate, RSA keys); nothing is
//! committed and nothing leaves loopback. The token client and the API
//! client are reqwest over rustls, with the client certificate where the
//! method needs one.

mod bounded;
mod node_peer;

use http::StatusCode;
use node_peer::NodeProcess;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};
use tower_token::adapter::ReqwestService;
use tower_token::auth::{self, ClientAuth};
use tower_token::discovery::Discovery;
use tower_token::error::{ConfigError, ErrorCode};
use tower_token::http_client::ReqwestClient;
use tower_token::jose::{Algorithm, SigningKey};
use tower_token::{BoxError, ClientCredentials, Credentials, Error, TokenLayer, Transport};

/// How long to wait for a peer to start (`INTEROP_TIMEOUT_SECS`, default
/// 30, doubled: this peer generates RSA keys as it starts).
fn start_timeout() -> Duration {
    node_peer::timeout() * 2
}

/// The watchdog's limit: a test may wait for two others' peers first.
fn limit() -> Duration {
    (start_timeout() * 5).max(Duration::from_secs(300))
}

/// At most two peers at a time: each Node process imports oidc-provider and
/// generates keys as it starts, which a busy 2-core machine feels.
static PEERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

// ---------------------------------------------------------------------------
// Keys and certificates, generated per test
// ---------------------------------------------------------------------------

struct Material {
    dir: PathBuf,
    ca_pem: String,
    /// Certificate and key, from the CA, subject `CN=tls-client`.
    tls_client: String,
    /// Another certificate from the CA, subject `CN=someone-else`.
    other_client: String,
    /// A self-signed certificate and its key.
    self_signed: String,
    rs256: SigningKey,
    ps256: SigningKey,
    es256: SigningKey,
    es384: SigningKey,
}

fn certificate(cn: &str, issuer: Option<&Issuer<'_, KeyPair>>) -> (String, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer),
        None => params.self_signed(&key),
    }
    .expect("certificate");
    (cert.pem(), key)
}

impl Material {
    fn generate() -> Material {
        let dir = std::env::temp_dir().join(format!(
            "tower-token-client-auth-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tower-token test CA");
        let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server_pem = server.signed_by(&server_key, &ca).expect("server").pem();

        let (tls_cert, tls_key) = certificate("tls-client", Some(&ca));
        let (other_cert, other_key) = certificate("someone-else", Some(&ca));
        let (self_cert, self_key) = certificate("self-signed-client", None);

        let rsa = || {
            let pair = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
            SigningKey::from_pem(&pair.serialize_pem()).expect("RSA PKCS#8 PEM")
        };
        let rs256 = rsa().with_kid("rs256-1");
        let ps256 = rsa()
            .with_algorithm(Algorithm::PS256)
            .expect("PS256")
            .with_kid("ps256-1");
        let es256 = SigningKey::generate(Algorithm::ES256)
            .expect("ES256")
            .with_kid("es256-1");
        let es384 = SigningKey::generate(Algorithm::ES384)
            .expect("ES384")
            .with_kid("es384-1");

        let public = |key: &SigningKey| {
            let mut jwk: Value = serde_json::from_str(key.public_jwk()).expect("public JWK");
            jwk["kid"] = json!(key.kid());
            jwk["alg"] = json!(key.algorithm().as_str());
            jwk["use"] = json!("sig");
            json!({ "jwk": jwk })
        };
        let clients = json!({
            "rs256": public(&rs256),
            "ps256": public(&ps256),
            "es256": public(&es256),
            "es384": public(&es384),
        });
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
        write("ca.pem", &ca_pem);
        write("server.pem", &server_pem);
        write("server.key", &server_key.serialize_pem());
        write("self-signed.pem", &self_cert);
        write("clients.json", &clients.to_string());

        Material {
            dir,
            ca_pem,
            tls_client: format!("{tls_cert}{}", tls_key.serialize_pem()),
            other_client: format!("{other_cert}{}", other_key.serialize_pem()),
            self_signed: format!("{self_cert}{}", self_key.serialize_pem()),
            rs256,
            ps256,
            es256,
            es384,
        }
    }

    /// reqwest over rustls trusting the test CA, presenting `identity`.
    fn reqwest(&self, identity: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA");
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(30));
        if let Some(pem) = identity {
            builder =
                builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        builder.build().expect("reqwest client")
    }

    fn transport(&self, identity: Option<&str>) -> Transport {
        Transport::new().http_client(ReqwestClient::from_client(self.reqwest(identity)))
    }
}

impl Drop for Material {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

// ---------------------------------------------------------------------------
// The peer
// ---------------------------------------------------------------------------

struct Peer {
    process: NodeProcess,
    _slot: tokio::sync::SemaphorePermit<'static>,
    ready: Value,
    http: reqwest::Client,
}

impl Peer {
    async fn start(material: &Material, methods: Option<&str>) -> Peer {
        let dir = material.dir.clone();
        let methods = methods.map(str::to_owned);
        let http = material.reqwest(None);
        let slot = PEERS
            .acquire()
            .await
            .expect("the peer semaphore is never closed");
        tokio::task::spawn_blocking(move || Self::start_blocking(slot, dir, methods, http))
            .await
            .expect("starting the peer panicked")
    }

    fn start_blocking(
        slot: tokio::sync::SemaphorePermit<'static>,
        material: PathBuf,
        methods: Option<String>,
        http: reqwest::Client,
    ) -> Peer {
        let mut args = vec![material.into_os_string()];
        if let Some(methods) = methods {
            args.push("--methods".into());
            args.push(methods.into());
        }
        let (process, ready) = NodeProcess::start("client_auth.mjs", &args, start_timeout());
        Peer {
            process,
            _slot: slot,
            ready,
            http,
        }
    }

    fn text(&self, key: &str) -> String {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("ready line without `{key}`: {}", self.ready))
            .to_owned()
    }

    fn token_endpoint(&self) -> String {
        format!("{}/token", self.text("issuer"))
    }

    fn client(&self, name: &str) -> String {
        self.ready["clients"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no client `{name}`"))
            .to_owned()
    }

    async fn stats(&self) -> Value {
        let text = self
            .http
            .get(self.text("stats"))
            .send()
            .await
            .expect("stats")
            .text()
            .await
            .expect("stats body");
        serde_json::from_str(&text).expect("stats JSON")
    }

    /// The API's counters.
    async fn api_hits(&self) -> u64 {
        self.stats().await["api"]["hits"].as_u64().unwrap_or(0)
    }

    /// Tokens issued to `client_id` by `method`.
    async fn tokens(&self, client_id: &str, method: &str) -> u64 {
        self.stats().await["tokens"][client_id][method]
            .as_u64()
            .unwrap_or(0)
    }

    fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// One GET of the API through a `TokenLayer` over `source`, with the API
/// client presenting `identity`. Returns the status, or the error.
async fn call_api(
    peer: &Peer,
    material: &Material,
    source: ClientCredentials,
    identity: Option<&str>,
) -> Result<StatusCode, BoxError> {
    let layer = TokenLayer::builder(source).build().expect("layer");
    let api = ServiceBuilder::new()
        .layer(layer)
        .service(ReqwestService::new(material.reqwest(identity)));
    let request = http::Request::get(peer.text("api"))
        .body(reqwest::Body::from(""))
        .expect("request");
    let response = api.oneshot(request).await?;
    Ok(response.status())
}

/// A private JWK the peer generated, loaded as a signing key.
fn jwk(peer: &Peer, name: &str) -> SigningKey {
    let key = SigningKey::from_jwk(&peer.ready[name].to_string())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(key.kid(), peer.ready[name]["kid"].as_str());
    key
}

fn source(
    url: &str,
    credentials: Credentials,
    auth: ClientAuth,
    transport: Transport,
) -> ClientCredentials {
    ClientCredentials::builder(url, credentials)
        .auth(auth)
        .transport(transport)
        .build()
        .expect("source")
}

fn oauth_code(error: &BoxError) -> Option<ErrorCode> {
    error
        .downcast_ref::<Error>()
        .and_then(|e| e.oauth_code().cloned())
}

// ---------------------------------------------------------------------------
// private_key_jwt and client_secret_jwt
// ---------------------------------------------------------------------------

#[tokio::test]
async fn private_key_jwt_with_each_key_type_gets_a_token_the_api_accepts() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let eddsa = SigningKey::from_jwk(&peer.ready["eddsa_jwk"].to_string()).expect("EdDSA JWK");
    assert_eq!(eddsa.kid(), Some("eddsa-1"));
    let cases = [
        ("rs256", material.rs256.clone()),
        ("ps256", material.ps256.clone()),
        ("es256", material.es256.clone()),
        ("es384", material.es384.clone()),
        ("eddsa", eddsa),
        ("jwk_rsa", jwk(&peer, "rsa_jwk")),
        ("jwk_ec", jwk(&peer, "ec_jwk")),
    ];
    for (name, key) in cases {
        let id = peer.client(name);
        let credentials = Credentials::public(id.clone()).with_signing_key(key);
        let src = source(
            &peer.token_endpoint(),
            credentials,
            ClientAuth::PrivateKeyJwt,
            material.transport(None),
        );
        let status = call_api(&peer, &material, src, None).await;
        assert_eq!(
            status.as_ref().ok(),
            Some(&StatusCode::OK),
            "{name}: {status:?}\n{}",
            peer.stderr()
        );
        assert_eq!(peer.tokens(&id, "private_key_jwt").await, 1, "{name}");
    }
    // Every request carried an assertion and no secret, no Basic header.
    let stats = peer.stats().await;
    for request in stats["token_requests"].as_array().expect("requests") {
        assert_eq!(request["authorization"], Value::Null, "{request}");
        let fields: Vec<&str> = request["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(fields.contains(&"client_assertion"), "{request}");
        assert!(fields.contains(&"client_assertion_type"), "{request}");
        assert!(!fields.contains(&"client_secret"), "{request}");
    }
    assert_eq!(stats["api"]["ok"], 7);
}

#[tokio::test]
async fn client_secret_jwt_gets_a_token_without_sending_the_secret() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("csjwt");
    let secret = peer.ready["secrets"]["csjwt"]
        .as_str()
        .expect("secret")
        .to_owned();
    let src = source(
        &peer.token_endpoint(),
        Credentials::new(id.clone(), secret.as_str()),
        ClientAuth::ClientSecretJwt,
        material.transport(None),
    );
    let status = call_api(&peer, &material, src, None).await.expect("call");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(peer.tokens(&id, "client_secret_jwt").await, 1);
    let stats = peer.stats().await;
    let request = &stats["token_requests"][0];
    assert!(!request.to_string().contains(&secret), "{request}");
    assert_eq!(request["authorization"], Value::Null);
}

#[tokio::test]
async fn a_wrong_key_or_an_unknown_kid_is_invalid_client_and_the_api_sees_no_request() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("es256");
    let wrong_key = SigningKey::generate(Algorithm::ES256)
        .expect("key")
        .with_kid("es256-1");
    let unknown_kid = material.es256.clone().with_kid("no-such-key");
    for (what, key) in [("wrong key", wrong_key), ("unknown kid", unknown_kid)] {
        let src = source(
            &peer.token_endpoint(),
            Credentials::public(id.clone()).with_signing_key(key),
            ClientAuth::PrivateKeyJwt,
            material.transport(None),
        );
        let err = call_api(&peer, &material, src, None).await.expect_err(what);
        assert_eq!(
            oauth_code(&err),
            Some(ErrorCode::InvalidClient),
            "{what}: {err}"
        );
        // No assertion in what the error says.
        assert!(!err.to_string().contains("eyJ"), "{what}: {err}");
    }
    assert_eq!(peer.api_hits().await, 0);
}

#[tokio::test]
async fn assertions_differ_in_jti_and_iat_and_a_replayed_one_is_refused() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("eddsa");
    let key = SigningKey::from_jwk(&peer.ready["eddsa_jwk"].to_string()).expect("JWK");
    let credentials = Credentials::public(id.clone()).with_signing_key(key);
    let url = url::Url::parse(&peer.token_endpoint()).expect("url");
    let build = || {
        tower_token::dialect::rfc::token_request(
            &url,
            &credentials,
            ClientAuth::PrivateKeyJwt,
            tower_token::dialect::Grant::ClientCredentials,
            None,
            &[],
        )
        .expect("token request")
    };
    let send = |request: http::Request<bytes::Bytes>| {
        let http = peer.http.clone();
        async move {
            let (parts, body) = request.into_parts();
            let mut builder = http.post(parts.uri.to_string());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let response = builder.body(body).send().await.expect("send");
            let status = response.status();
            let text = response.text().await.expect("body");
            let body: Value = serde_json::from_str(&text).expect("JSON");
            (status, body)
        }
    };
    let first = build();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = build();
    let claims = |request: &http::Request<bytes::Bytes>| -> Value {
        let assertion = auth_assertion(request.body());
        let payload = assertion.split('.').nth(1).expect("payload").to_owned();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("claims")
    };
    let (a, b) = (claims(&first), claims(&second));
    assert_ne!(a["jti"], b["jti"]);
    assert!(b["iat"].as_u64() > a["iat"].as_u64(), "{a} {b}");
    assert_eq!(a["iss"], id.as_str());
    assert_eq!(a["sub"], id.as_str());
    assert_eq!(a["aud"], peer.token_endpoint());

    let replay = first.clone();
    let (status, _) = send(first).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(replay).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    let (status, _) = send(second).await;
    assert_eq!(status, StatusCode::OK);
}

fn auth_assertion(body: &[u8]) -> String {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v.into_owned())
        .expect("client_assertion in the form")
}

// ---------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tls_client_auth_gets_a_certificate_bound_token_that_only_the_same_certificate_can_use() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("tls");
    let alias = peer.text("mtls_token_endpoint");
    let credentials = Credentials::public(id.clone()).with_client_certificate();
    let token_client = || material.transport(Some(&material.tls_client));

    // The API client presents the same certificate: 200.
    let src = source(
        &alias,
        credentials.clone(),
        ClientAuth::TlsClientAuth,
        token_client(),
    );
    let status = call_api(&peer, &material, src, Some(&material.tls_client))
        .await
        .expect("call");
    assert_eq!(status, StatusCode::OK, "{}", peer.stderr());
    assert_eq!(peer.tokens(&id, "tls_client_auth").await, 1);
    let stats = peer.stats().await;
    let request = &stats["token_requests"][0];
    assert_eq!(request["certificate"], true);
    assert_eq!(request["client_id"], id.as_str());
    assert_eq!(request["authorization"], Value::Null);

    // Another certificate towards the API: the token is refused there
    // (the binding is checked), though it is active.
    let src = source(
        &alias,
        credentials,
        ClientAuth::TlsClientAuth,
        token_client(),
    );
    let layer = TokenLayer::builder(src)
        .retry_unauthorized(false)
        .build()
        .expect("layer");
    let api = ServiceBuilder::new()
        .layer(layer)
        .service(ReqwestService::new(
            material.reqwest(Some(&material.other_client)),
        ));
    let response = api
        .oneshot(
            http::Request::get(peer.text("api"))
                .body(reqwest::Body::from(""))
                .expect("request"),
        )
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(peer.stats().await["api"]["wrong_certificate"], 1);
}

#[tokio::test]
async fn self_signed_tls_client_auth_gets_a_token_the_api_accepts() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("self_signed");
    let src = source(
        &peer.text("mtls_token_endpoint"),
        Credentials::public(id.clone()).with_client_certificate(),
        ClientAuth::SelfSignedTlsClientAuth,
        material.transport(Some(&material.self_signed)),
    );
    let status = call_api(&peer, &material, src, Some(&material.self_signed))
        .await
        .expect("call");
    assert_eq!(status, StatusCode::OK, "{}", peer.stderr());
    assert_eq!(peer.tokens(&id, "self_signed_tls_client_auth").await, 1);
}

#[tokio::test]
async fn a_wrong_or_missing_certificate_is_invalid_client_and_the_api_sees_no_request() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let alias = peer.text("mtls_token_endpoint");
    let cases = [
        (
            "tls",
            ClientAuth::TlsClientAuth,
            Some(&material.other_client),
        ),
        (
            "tls",
            ClientAuth::TlsClientAuth,
            Some(&material.self_signed),
        ),
        ("tls", ClientAuth::TlsClientAuth, None),
        (
            "self_signed",
            ClientAuth::SelfSignedTlsClientAuth,
            Some(&material.tls_client),
        ),
    ];
    for (client, method, identity) in cases {
        let src = source(
            &alias,
            Credentials::public(peer.client(client)).with_client_certificate(),
            method,
            material.transport(identity.map(String::as_str)),
        );
        let err = call_api(&peer, &material, src, None)
            .await
            .expect_err("refused");
        assert_eq!(
            oauth_code(&err),
            Some(ErrorCode::InvalidClient),
            "{client} {method:?}: {err}"
        );
    }
    assert_eq!(peer.api_hits().await, 0);
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn discovery_picks_private_key_jwt_when_the_server_lists_only_it() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, Some("private_key_jwt")).await;
    let metadata = Discovery::new(peer.text("issuer"))
        .transport(material.transport(None))
        .fetch()
        .await
        .expect("discovery");
    assert_eq!(
        metadata.token_endpoint_auth_methods_supported.as_deref(),
        Some(&["private_key_jwt".to_owned()][..])
    );
    let id = peer.client("es256");
    let credentials = Credentials::public(id.clone()).with_signing_key(material.es256.clone());
    let src = metadata
        .client_credentials(credentials)
        .expect("a method this client can use")
        .transport(material.transport(None))
        .build()
        .expect("source");
    let layer = TokenLayer::builder(src).build().expect("layer");
    let cache = layer.cache().clone();
    let token = cache.token().await.expect("token");
    assert!(!token.secret().is_empty());
    assert_eq!(peer.tokens(&id, "private_key_jwt").await, 1);

    // A client with only a secret has nothing this server accepts.
    let err = metadata
        .client_credentials(Credentials::new("x", "y"))
        .expect_err("no usable method");
    assert!(
        matches!(&err, ConfigError::NoUsableClientAuth { missing, .. } if missing.contains("signing key")),
        "{err}"
    );
}

#[tokio::test]
async fn discovery_with_only_tls_client_auth_needs_a_certificate_and_uses_the_mtls_alias() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, Some("tls_client_auth")).await;
    let metadata = Discovery::new(peer.text("issuer"))
        .transport(material.transport(None))
        .fetch()
        .await
        .expect("discovery");
    let id = peer.client("tls");

    // No certificate stated: the typed error names what is missing.
    let err = metadata
        .client_credentials(Credentials::public(id.clone()))
        .expect_err("no certificate");
    match &err {
        ConfigError::NoUsableClientAuth { offered, missing } => {
            assert!(offered.contains("tls_client_auth"), "{err}");
            assert!(missing.contains("certificate"), "{err}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // With one: the token request goes to the mtls_endpoint_aliases token
    // endpoint (the issuer's own listener asks for no certificate, so only
    // the alias can authenticate this client).
    let builder = metadata
        .client_credentials(Credentials::public(id.clone()).with_client_certificate())
        .expect("tls_client_auth");
    let src = builder
        .transport(material.transport(Some(&material.tls_client)))
        .build()
        .expect("source");
    assert_eq!(src.token_url().as_str(), peer.text("mtls_token_endpoint"));
    // (This peer offers tls_client_auth alone, so its API cannot introspect:
    // the certificate-bound API call is the test above.)
    let layer = TokenLayer::builder(src).build().expect("layer");
    layer.cache().token().await.expect("token");
    assert_eq!(peer.tokens(&id, "tls_client_auth").await, 1);
    assert_eq!(peer.stats().await["token_requests"][0]["certificate"], true);
}

#[tokio::test]
async fn the_preference_order_decides_among_methods_the_server_lists() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let metadata = Discovery::new(peer.text("issuer"))
        .transport(material.transport(None))
        .fetch()
        .await
        .expect("discovery");
    let credentials = Credentials::new("csjwt", "secret")
        .with_signing_key(material.es256.clone())
        .with_client_certificate();
    let pick = |order: &[ClientAuth]| {
        auth::select(
            metadata.token_endpoint_auth_methods_supported.as_deref(),
            &credentials,
            order,
        )
        .expect("a method")
    };
    assert_eq!(pick(auth::DEFAULT_PREFERENCE), ClientAuth::PrivateKeyJwt);
    assert_eq!(
        pick(&[ClientAuth::ClientSecretJwt, ClientAuth::PrivateKeyJwt]),
        ClientAuth::ClientSecretJwt
    );
    assert_eq!(
        pick(&[ClientAuth::TlsClientAuth]),
        ClientAuth::TlsClientAuth
    );
}

// ---------------------------------------------------------------------------
// Auto-detection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn auto_detection_falls_back_to_the_body_once_and_remembers_it() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("post");
    let secret = peer.ready["secrets"]["post"]
        .as_str()
        .expect("secret")
        .to_owned();
    let make = || {
        source(
            &peer.token_endpoint(),
            Credentials::new(id.clone(), secret.as_str()),
            ClientAuth::AutoDetect,
            material.transport(None),
        )
    };
    for _ in 0..3 {
        let layer = TokenLayer::builder(make()).build().expect("layer");
        layer.cache().token().await.expect("token");
    }
    let stats = peer.stats().await;
    let requests = stats["token_requests"].as_array().expect("requests");
    // Basic once (refused), then the body, three times.
    let schemes: Vec<(&Value, &Value)> = requests
        .iter()
        .map(|r| (&r["authorization"], &r["status"]))
        .collect();
    assert_eq!(requests.len(), 4, "{schemes:?}");
    assert_eq!(requests[0]["authorization"], "Basic");
    assert_eq!(requests[0]["error"], "invalid_client");
    for r in &requests[1..] {
        assert_eq!(r["authorization"], Value::Null, "{r}");
        assert_eq!(r["status"], 200, "{r}");
    }
    assert_eq!(peer.tokens(&id, "client_secret_post").await, 3);
}

#[tokio::test]
async fn auto_detection_reports_both_answers_when_both_fail() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let wrong = "not-the-secret-5e1a";
    let src = source(
        &peer.token_endpoint(),
        Credentials::new(peer.client("post"), wrong),
        ClientAuth::AutoDetect,
        material.transport(None),
    );
    let layer = TokenLayer::builder(src).build().expect("layer");
    let err = layer.cache().token().await.expect_err("both refused");
    match &err {
        Error::ClientAuthFailed { basic, body } => {
            assert_eq!(
                basic.oauth_code(),
                Some(&ErrorCode::InvalidClient),
                "{basic}"
            );
            assert_eq!(body.oauth_code(), Some(&ErrorCode::InvalidClient), "{body}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("Basic") && shown.contains("body"), "{shown}");
    assert!(!shown.contains(wrong), "{shown}");
    assert_eq!(
        peer.stats().await["token_requests"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

// ---------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn revocation_authenticates_with_a_fresh_assertion_and_the_token_stops_working() {
    bounded::watchdog!(limit());
    let material = Material::generate();
    let peer = Peer::start(&material, None).await;
    let id = peer.client("es384");
    let credentials = Credentials::public(id.clone()).with_signing_key(material.es384.clone());
    let src = source(
        &peer.token_endpoint(),
        credentials.clone(),
        ClientAuth::PrivateKeyJwt,
        material.transport(None),
    );
    let layer = TokenLayer::builder(src).build().expect("layer");
    let token = layer.cache().token().await.expect("token");

    let revoker = tower_token::RevokeService::rfc(
        format!("{}/token/revocation", peer.text("issuer")),
        credentials,
    )
    .auth(ClientAuth::PrivateKeyJwt)
    .transport(material.transport(None))
    .build()
    .expect("revoker");
    revoker
        .oneshot(tower_token::RevokeRequest::access(token.clone()))
        .await
        .expect("revoked");

    // The revoked token is refused by the API.
    let response = material
        .reqwest(None)
        .get(peer.text("api"))
        .bearer_auth(token.secret())
        .send()
        .await
        .expect("api");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(peer.stats().await["api"]["inactive"], 1);
}
