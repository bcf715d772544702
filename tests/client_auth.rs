//! Client authentication against an in-process token endpoint: what each
//! method puts on the wire through the builders and presets, the checks at
//! build time, auto-detection against a server that answers a bare 401, and
//! that no key material shows in `Debug` or errors. (The same methods
//! against oidc-provider: `tests/interop_client_auth.rs`.)

mod bounded;
mod common;

use common::{Canned, TokenServer};
use serde_json::json;
use tower_token::auth::{self, Audience, ClientAuth};
use tower_token::error::ConfigError;
use tower_token::jose::{Algorithm, SigningKey};
use tower_token::{ClientCredentials, Credentials, Error, Provider, Transport};

fn claims(assertion: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = assertion.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

#[tokio::test]
async fn the_rfc_preset_sends_a_private_key_jwt_assertion_for_a_client_without_a_secret() {
    bounded::watchdog!();
    let server = TokenServer::start().await;
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_kid("k-7");
    let credentials = Credentials::public("svc")
        .with_signing_key(key)
        .with_assertion_audience(Audience::Custom("https://issuer.example".into()))
        .with_assertion_lifetime(std::time::Duration::from_secs(30))
        .with_assertion_not_before(true);
    let provider = Provider::rfc(
        server.url(),
        format!("{}/revoke", server.url()),
        credentials,
    )
    .auth(ClientAuth::PrivateKeyJwt)
    .build()
    .unwrap();
    let layer = tower_token::TokenLayer::builder(provider.source().clone())
        .build()
        .unwrap();
    layer.cache().token().await.unwrap();

    let requests = server.requests();
    let request = &requests[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_values("client_id"), ["svc"]);
    assert_eq!(
        request.form_values("client_assertion_type"),
        [auth::ASSERTION_TYPE]
    );
    assert!(request.form_values("client_secret").is_empty());
    let c = claims(request.form_values("client_assertion")[0]);
    assert_eq!(c["iss"], "svc");
    assert_eq!(c["sub"], "svc");
    assert_eq!(c["aud"], "https://issuer.example");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 30);
    assert_eq!(c["nbf"], c["iat"]);
}

#[tokio::test]
async fn mutual_tls_sends_the_client_id_and_nothing_secret() {
    bounded::watchdog!();
    let server = TokenServer::start().await;
    let source = ClientCredentials::builder(
        server.url(),
        Credentials::new("tls-svc", "never-sent").with_client_certificate(),
    )
    .auth(ClientAuth::TlsClientAuth)
    .build()
    .unwrap();
    tower_token::TokenLayer::builder(source)
        .build()
        .unwrap()
        .cache()
        .token()
        .await
        .unwrap();
    let request = &server.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_values("client_id"), ["tls-svc"]);
    assert!(!String::from_utf8_lossy(&request.body).contains("never-sent"));
}

#[test]
fn a_method_without_its_material_is_a_config_error_at_build_time() {
    let cases = [
        (
            ClientAuth::PrivateKeyJwt,
            Credentials::new("a", "b"),
            "signing key",
        ),
        (
            ClientAuth::TlsClientAuth,
            Credentials::public("a"),
            "certificate",
        ),
        (
            ClientAuth::SelfSignedTlsClientAuth,
            Credentials::new("a", "b"),
            "certificate",
        ),
        (
            ClientAuth::ClientSecretJwt,
            Credentials::public("a"),
            "secret",
        ),
        (ClientAuth::AutoDetect, Credentials::public("a"), "secret"),
    ];
    for (method, credentials, missing) in cases {
        let err = ClientCredentials::builder("https://as.example.com/token", credentials.clone())
            .auth(method)
            .build()
            .expect_err("missing material");
        assert!(
            matches!(&err, ConfigError::ClientAuth { missing: m, .. } if m.contains(missing)),
            "{method:?}: {err}"
        );
        let err = tower_token::RevokeService::rfc("https://as.example.com/revoke", credentials)
            .auth(method)
            .build()
            .expect_err("missing material");
        assert!(
            matches!(err, ConfigError::ClientAuth { .. }),
            "{method:?}: {err}"
        );
    }
}

#[test]
fn select_follows_the_preference_and_names_the_missing_material() {
    let list = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let secret = Credentials::new("a", "b");
    let keyed =
        Credentials::public("a").with_signing_key(SigningKey::generate(Algorithm::ES256).unwrap());
    let methods = list(&["client_secret_basic", "private_key_jwt", "tls_client_auth"]);
    assert_eq!(
        auth::select(Some(&methods), &keyed, auth::DEFAULT_PREFERENCE).unwrap(),
        ClientAuth::PrivateKeyJwt
    );
    assert_eq!(
        auth::select(Some(&methods), &secret, auth::DEFAULT_PREFERENCE).unwrap(),
        ClientAuth::Basic
    );
    // Absent list: client_secret_basic (RFC 8414).
    assert_eq!(
        auth::select(None, &secret, auth::DEFAULT_PREFERENCE).unwrap(),
        ClientAuth::Basic
    );
    // A confidential client never falls back to `none`.
    let err = auth::select(
        Some(&list(&["none", "tls_client_auth"])),
        &secret,
        auth::DEFAULT_PREFERENCE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = auth::select(
        Some(&list(&["private_key_jwt"])),
        &secret,
        auth::DEFAULT_PREFERENCE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("signing key"), "{err}");
    let err = auth::select(
        Some(&list(&["attest_jwt_client_auth"])),
        &secret,
        auth::DEFAULT_PREFERENCE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("supports"), "{err}");
    // Left out of the preference: never used.
    assert!(auth::select(Some(&methods), &keyed, &[ClientAuth::Basic]).is_err());
}

#[tokio::test]
async fn auto_detection_treats_a_bare_401_as_a_refused_style_and_keeps_both_answers() {
    bounded::watchdog!();
    let server = TokenServer::start().await;
    server.set(|b| b.canned = Some(Canned::new(401, "no")));
    let source = ClientCredentials::builder(server.url(), Credentials::new("id", "s3cret-value"))
        .auth(ClientAuth::AutoDetect)
        .build()
        .unwrap();
    let layer = tower_token::TokenLayer::builder(source).build().unwrap();
    let err = layer.cache().token().await.unwrap_err();
    assert!(matches!(err, Error::ClientAuthFailed { .. }), "{err:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(requests[1].header("authorization"), None);
    assert_eq!(requests[1].form_values("client_secret"), ["s3cret-value"]);
}

#[tokio::test]
async fn an_assertion_echoed_by_the_server_is_redacted_from_the_error() {
    bounded::watchdog!();
    // A server that echoes the client assertion it received in its error.
    let router = axum::Router::new().route(
        "/token",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let assertion = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "client_assertion")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": "invalid_client",
                    "error_description": format!("bad assertion {assertion}"),
                })),
            )
        }),
    );
    let addr = common::serve(router).await;
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let source = ClientCredentials::builder(
        format!("http://{addr}/token"),
        Credentials::public("id").with_signing_key(key),
    )
    .auth(ClientAuth::PrivateKeyJwt)
    .build()
    .unwrap();
    let layer = tower_token::TokenLayer::builder(source).build().unwrap();
    let err = layer.cache().token().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("bad assertion [redacted]"), "{shown}");
    assert!(!shown.contains("eyJ"), "{shown}");
}

#[test]
fn no_key_material_in_debug() {
    let jwk = r#"{"kty":"OKP","crv":"Ed25519","kid":"k1",
      "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
      "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#;
    let key = SigningKey::from_jwk(jwk).unwrap();
    let credentials = Credentials::new("id", "the-secret").with_signing_key(key.clone());
    let source = ClientCredentials::builder("https://as.example.com/token", credentials.clone())
        .auth(ClientAuth::PrivateKeyJwt)
        .transport(Transport::new())
        .build()
        .unwrap();
    for shown in [
        format!("{key:?}"),
        format!("{credentials:?}"),
        format!("{credentials:#?}"),
        format!("{source:?}"),
    ] {
        assert!(!shown.contains("nWGxne"), "{shown}");
        assert!(!shown.contains("the-secret"), "{shown}");
    }
    // A malformed private JWK: the error names the member, not its value.
    let bad = r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA","d":"c2VjcmV0LWQtdmFsdWU"}"#;
    let err = SigningKey::from_jwk(bad).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("c2VjcmV0") && !shown.contains("secret-d"),
        "{shown}"
    );
}
