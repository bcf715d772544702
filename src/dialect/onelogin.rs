//! OneLogin: JSON token and revocation endpoints.
//!
//! Both endpoints take the client credentials in a header of OneLogin's own
//! shape, `Authorization: client_id:<id>, client_secret:<secret>` (marked
//! sensitive), and a JSON body with `Content-Type: application/json`:
//!
//! - Token: `POST https://<subdomain>/auth/oauth2/v2/token` with
//!   `{"grant_type":"client_credentials"}`, or
//!   `{"grant_type":"refresh_token","refresh_token":"…"}` to refresh. The
//!   answer is an RFC 6749-shaped token (`token_type` is a lower-case
//!   `bearer`, tokens live ten hours ([`TOKEN_LIFETIME`]) and come with a
//!   refresh token), or — from the older API — the token wrapped in a
//!   `{"status":{…},"data":[{…}]}` envelope. Both are accepted.
//! - Revocation: `POST https://<subdomain>/auth/oauth2/revoke` with
//!   `{"access_token":"…"}`. Revoking an access token revokes its refresh
//!   token too; there is no way to revoke a refresh token alone.
//!
//! Failures come in a `{"status":{"error":true,"code":…,"type":…,"message":…}}`
//! envelope (or the flat `{"statusCode":…,"name":…,"message":…}` of the v2
//! API). The documented messages become typed errors,
//! [`Error::Provider`] with a [`ProviderError`]: content type wrong (400),
//! access token missing (400), authorization information missing (400),
//! authentication failure (401), no route (404); anything else is
//! [`ProviderError::Other`]. Messages are matched without regard to case,
//! runs of whitespace or trailing text.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use tower_token::dialect::{onelogin, Credentials};
//! use tower_token::error::{Error, ProviderError};
//!
//! let base = onelogin::base_url("acme.onelogin.com").unwrap();
//! let creds = Credentials::new("id", "secret");
//! let req = onelogin::revoke_request(&onelogin::revoke_url(&base), &creds, "tok").unwrap();
//! assert_eq!(req.uri(), "https://acme.onelogin.com/auth/oauth2/revoke");
//! assert_eq!(req.headers()["authorization"], "client_id:id, client_secret:secret");
//! assert_eq!(req.body().as_ref(), br#"{"access_token":"tok"}"#);
//!
//! let mut answer = http::Response::new(Bytes::from_static(
//!     br#"{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}"#,
//! ));
//! *answer.status_mut() = http::StatusCode::UNAUTHORIZED;
//! let err = onelogin::parse_revoke_response(&answer, &["secret", "tok"]).unwrap_err();
//! assert!(matches!(err, Error::Provider { kind: ProviderError::AuthenticationFailure, .. }));
//! ```

use super::{Credentials, Grant, rfc};
use crate::error::{ConfigError, Endpoint, Error, InvalidResponse, ProviderError, excerpt, redact};
use crate::token::Token;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};
use std::time::Duration;
use url::Url;

/// The lifetime of a OneLogin access token, used when an answer does not
/// state one.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(36_000);

/// The base URL of a OneLogin account.
///
/// A full URL (`https://acme.onelogin.com`, or `http://127.0.0.1:8080` for
/// a test server) is used as it is; a host name (`acme.onelogin.com`,
/// `api.us.onelogin.com`) means `https://` that host; a bare subdomain
/// without a dot (`acme`) means `https://acme.onelogin.com`. The plain-http
/// rule is applied by whoever uses the URL.
pub fn base_url(subdomain_or_url: &str) -> Result<Url, ConfigError> {
    let given = subdomain_or_url.trim();
    let full = if given.contains("://") {
        given.to_owned()
    } else if !given.is_empty()
        && !given.contains(['.', ':', '/', '['])
        && !given.eq_ignore_ascii_case("localhost")
    {
        format!("https://{given}.onelogin.com")
    } else {
        format!("https://{given}")
    };
    Url::parse(&full).map_err(|e| ConfigError::InvalidUrl {
        url: subdomain_or_url.to_owned(),
        reason: e.to_string(),
    })
}

/// `{base}/auth/oauth2/v2/token`.
pub fn token_url(base: &Url) -> Url {
    super::join(base, "/auth/oauth2/v2/token")
}

/// `{base}/auth/oauth2/revoke`.
pub fn revoke_url(base: &Url) -> Url {
    super::join(base, "/auth/oauth2/revoke")
}

/// `client_id:<id>, client_secret:<secret>`, marked sensitive.
pub fn authorization(credentials: &Credentials) -> Result<HeaderValue, Error> {
    authorization_for(credentials, Endpoint::Token)
}

fn authorization_for(credentials: &Credentials, endpoint: Endpoint) -> Result<HeaderValue, Error> {
    let secret = credentials.client_secret().map_or("", |s| s.secret());
    let mut value = HeaderValue::try_from(format!(
        "client_id:{}, client_secret:{secret}",
        credentials.client_id()
    ))
    .map_err(|e| Error::Request {
        endpoint,
        reason: format!("the client id or secret cannot go in a header: {e}"),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn json_post(
    url: &Url,
    credentials: &Credentials,
    body: &Value,
    endpoint: Endpoint,
) -> Result<http::Request<Bytes>, Error> {
    let request_error = |reason: String| Error::Request { endpoint, reason };
    let body = serde_json::to_vec(body).map_err(|e| request_error(e.to_string()))?;
    http::Request::builder()
        .method(Method::POST)
        .uri(url.as_str())
        .header(
            header::AUTHORIZATION,
            authorization_for(credentials, endpoint)?,
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Bytes::from(body))
        .map_err(|e| request_error(e.to_string()))
}

/// Builds the token request for the client credentials or the refresh-token
/// grant.
pub fn token_request(
    url: &Url,
    credentials: &Credentials,
    grant: Grant<'_>,
) -> Result<http::Request<Bytes>, Error> {
    let body = match grant {
        Grant::ClientCredentials => json!({ "grant_type": "client_credentials" }),
        Grant::RefreshToken(refresh) => json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh.secret(),
        }),
    };
    json_post(url, credentials, &body, Endpoint::Token)
}

/// Parses the token answer: a plain RFC 6749 token, or one wrapped in the
/// `{"status":…,"data":[{…}]}` envelope; a lifetime of [`TOKEN_LIFETIME`]
/// when none is stated. Failures as described in the [module docs](self).
pub fn parse_token_response(
    response: &http::Response<Bytes>,
    credentials: &Credentials,
) -> Result<Token, Error> {
    let status = response.status();
    let secrets = credentials.secrets();
    let retry_after = rfc::retry_after(response.headers());
    let object = lenient_object(response.body());
    if !status.is_success() {
        if let Ok(object) = &object
            && let Some(err) = failure(Endpoint::Token, status, retry_after, object, &secrets)
        {
            return Err(err);
        }
        return Err(rfc::error_response(Endpoint::Token, response, &secrets));
    }
    let object = object.map_err(|r| Error::invalid(Endpoint::Token, status, r))?;
    if let Some(err) = failure(Endpoint::Token, status, retry_after, &object, &secrets) {
        return Err(err);
    }
    let fields = token_fields(&object).map_err(|r| Error::invalid(Endpoint::Token, status, r))?;
    let mut token = rfc::token_from_object(fields, &secrets)
        .map_err(|r| Error::invalid(Endpoint::Token, status, r))?;
    if token.expires_in().is_none() {
        token = token.with_expires_in(TOKEN_LIFETIME);
    }
    Ok(token)
}

/// The object holding the token: the answer itself, or the first element of
/// its `data` list.
fn token_fields(object: &Map<String, Value>) -> Result<&Map<String, Value>, InvalidResponse> {
    if object.contains_key("access_token") {
        return Ok(object);
    }
    match object.get("data") {
        None | Some(Value::Null) => Ok(object),
        Some(Value::Object(inner)) => Ok(inner),
        Some(Value::Array(items)) => match items.first() {
            Some(Value::Object(inner)) => Ok(inner),
            Some(_) => Err(InvalidResponse::BadEnvelope(
                "`data` does not hold an object",
            )),
            None => Err(InvalidResponse::BadEnvelope("`data` is empty")),
        },
        Some(_) => Err(InvalidResponse::BadEnvelope("`data` is not a list")),
    }
}

/// Builds the revocation request: `{"access_token":"…"}`.
pub fn revoke_request(
    url: &Url,
    credentials: &Credentials,
    access_token: &str,
) -> Result<http::Request<Bytes>, Error> {
    json_post(
        url,
        credentials,
        &json!({ "access_token": access_token }),
        Endpoint::Revocation,
    )
}

/// Parses the revocation answer: a 2xx is success unless its envelope says
/// otherwise; a 503 or 429 with `Retry-After` is a retriable
/// [`Error::Status`]; failures as described in the [module docs](self).
pub fn parse_revoke_response(
    response: &http::Response<Bytes>,
    secrets: &[&str],
) -> Result<(), Error> {
    let status = response.status();
    let retry_after = rfc::retry_after(response.headers());
    let object = lenient_object(response.body());
    if status.is_success() {
        if let Ok(object) = &object
            && let Some(err) = failure(Endpoint::Revocation, status, retry_after, object, secrets)
        {
            return Err(err);
        }
        return Ok(());
    }
    let come_back_later = retry_after.is_some()
        && (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS);
    if !come_back_later
        && let Ok(object) = &object
        && let Some(err) = failure(Endpoint::Revocation, status, retry_after, object, secrets)
    {
        return Err(err);
    }
    Err(rfc::revoke_error(response, secrets))
}

/// Maps one of OneLogin's documented messages to its kind, ignoring case,
/// runs of whitespace and trailing text. `None` for any other message.
pub fn classify(message: &str) -> Option<ProviderError> {
    let normalized = message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let m = normalized.as_str();
    let kind = if m.starts_with("content type") || m.starts_with("content-type") {
        ProviderError::ContentType
    } else if m.starts_with("access token missing") || m.starts_with("access token is missing") {
        ProviderError::AccessTokenMissing
    } else if m.starts_with("the authorization information is missing")
        || m.starts_with("authorization information is missing")
    {
        ProviderError::AuthorizationMissing
    } else if m.starts_with("authentication failure") {
        ProviderError::AuthenticationFailure
    } else if m.starts_with("no route exists") {
        ProviderError::NoRoute
    } else {
        return None;
    };
    Some(kind)
}

/// The error an answer's envelope reports, if it reports one: OneLogin's
/// `status` envelope, the flat v2 shape, or an RFC 6749 error object. The
/// error keeps the answer's `Retry-After`.
fn failure(
    endpoint: Endpoint,
    http_status: StatusCode,
    retry_after: Option<Duration>,
    object: &Map<String, Value>,
    secrets: &[&str],
) -> Option<Error> {
    let text = |o: &Map<String, Value>, name: &str| match o.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let code = |o: &Map<String, Value>, name: &str| {
        let code = match o.get(name) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        code.and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
    };
    let (status, kind, message) = if let Some(Value::Object(envelope)) = object.get("status") {
        let status = code(envelope, "code");
        let is_error = match envelope.get("error") {
            Some(Value::Bool(b)) => *b,
            _ => !http_status.is_success() || status.is_some_and(|s| !s.is_success()),
        };
        if !is_error {
            return None;
        }
        (status, text(envelope, "type"), text(envelope, "message"))
    } else if let Some(Value::String(message)) = object.get("message")
        && (object.contains_key("statusCode") || object.contains_key("name"))
        && !object.contains_key("access_token")
    {
        let status = code(object, "statusCode");
        if http_status.is_success() && status.is_none_or(|s| s.is_success()) {
            return None;
        }
        (status, text(object, "name"), Some(message.clone()))
    } else {
        return rfc::oauth_error(endpoint, http_status, retry_after, object, secrets);
    };
    // The HTTP status, unless it claims success while the envelope does not.
    let status = match status {
        Some(s) if http_status.is_success() && !s.is_success() => s,
        _ => http_status,
    };
    let message = message.unwrap_or_default();
    let kind = classify(&message).unwrap_or_else(|| ProviderError::Other {
        kind: redact(&kind.unwrap_or_else(|| status.as_str().to_owned()), secrets),
        message: excerpt(message.as_bytes(), secrets),
    });
    Some(Error::Provider {
        endpoint,
        status,
        kind,
        retry_after,
    })
}

/// Reads a JSON object, forgiving raw line breaks and tabs inside strings
/// (OneLogin's documentation shows a message broken over two lines).
fn lenient_object(body: &[u8]) -> Result<Map<String, Value>, InvalidResponse> {
    match rfc::json_object(body) {
        Err(InvalidResponse::NotJson)
            if body.iter().any(|b| matches!(b, b'\n' | b'\r' | b'\t')) =>
        {
            let flattened: Vec<u8> = body
                .iter()
                .map(|&b| {
                    if matches!(b, b'\n' | b'\r' | b'\t') {
                        b' '
                    } else {
                        b
                    }
                })
                .collect();
            rfc::json_object(&flattened).map_err(|_| InvalidResponse::NotJson)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::secret::RefreshToken;

    fn creds() -> Credentials {
        Credentials::new("cid", "csecret")
    }

    fn base() -> Url {
        base_url("acme.onelogin.com").unwrap()
    }

    fn answer(status: u16, body: &str) -> http::Response<Bytes> {
        let mut r = http::Response::new(Bytes::from(body.to_owned()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    fn envelope(code: u16, kind: &str, message: &str) -> String {
        json!({"status": {"error": code >= 400, "code": code, "type": kind, "message": message}})
            .to_string()
    }

    fn body_json(req: &http::Request<Bytes>) -> Value {
        serde_json::from_slice(req.body()).unwrap()
    }

    #[test]
    fn base_urls() {
        for (given, expected) in [
            ("acme.onelogin.com", "https://acme.onelogin.com/"),
            ("acme", "https://acme.onelogin.com/"),
            ("api.us.onelogin.com", "https://api.us.onelogin.com/"),
            ("https://acme.onelogin.com/", "https://acme.onelogin.com/"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("localhost", "https://localhost/"),
        ] {
            assert_eq!(base_url(given).unwrap().as_str(), expected, "{given}");
        }
        assert!(base_url("").is_err());
        assert_eq!(
            token_url(&base()).as_str(),
            "https://acme.onelogin.com/auth/oauth2/v2/token"
        );
    }

    #[test]
    fn requests() {
        let req = token_request(&token_url(&base()), &creds(), Grant::ClientCredentials).unwrap();
        assert_eq!(req.method(), Method::POST);
        let auth = &req.headers()[header::AUTHORIZATION];
        assert_eq!(auth, "client_id:cid, client_secret:csecret");
        assert!(auth.is_sensitive());
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_json(&req), json!({"grant_type": "client_credentials"}));

        let refresh = RefreshToken::new("r1");
        let req =
            token_request(&token_url(&base()), &creds(), Grant::RefreshToken(&refresh)).unwrap();
        assert_eq!(
            body_json(&req),
            json!({"grant_type": "refresh_token", "refresh_token": "r1"})
        );

        let req = revoke_request(&revoke_url(&base()), &creds(), "xx508").unwrap();
        assert_eq!(req.uri(), "https://acme.onelogin.com/auth/oauth2/revoke");
        assert_eq!(body_json(&req), json!({"access_token": "xx508"}));
        assert!(req.headers()[header::AUTHORIZATION].is_sensitive());

        let bad = Credentials::new("cid", "bad\nsecret");
        match revoke_request(&revoke_url(&base()), &bad, "t").unwrap_err() {
            Error::Request { endpoint, reason } => {
                assert_eq!(endpoint, Endpoint::Revocation);
                assert!(!reason.contains("bad\nsecret"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_are_classified_robustly() {
        use ProviderError::*;
        for (message, kind) in [
            (
                "Content Type is not specified or specified incorrectly.\n   Content-Type header must be set to application/json",
                ContentType,
            ),
            ("Access Token Missing", AccessTokenMissing),
            ("access  token missing.", AccessTokenMissing),
            (
                "The authorization information is missing",
                AuthorizationMissing,
            ),
            ("Authentication Failure", AuthenticationFailure),
            ("  AUTHENTICATION FAILURE ", AuthenticationFailure),
            ("No Route Exists", NoRoute),
        ] {
            assert_eq!(classify(message), Some(kind), "{message}");
        }
        assert_eq!(classify("Something else"), None);
    }

    #[test]
    fn revoke_answers() {
        let secrets = ["csecret", "tok-9f8e7d"];
        assert!(
            parse_revoke_response(&answer(200, &envelope(200, "success", "Success")), &secrets)
                .is_ok()
        );
        assert!(parse_revoke_response(&answer(200, ""), &secrets).is_ok());
        for (status, kind, message, expected) in [
            (
                400,
                "bad request",
                "Content Type is not specified or specified incorrectly. Content-Type header must be set to application/json",
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
        ] {
            match parse_revoke_response(&answer(status, &envelope(status, kind, message)), &secrets)
            {
                Err(Error::Provider {
                    endpoint,
                    status: s,
                    kind,
                    ..
                }) => {
                    assert_eq!(endpoint, Endpoint::Revocation);
                    assert_eq!(s.as_u16(), status);
                    assert_eq!(kind, expected);
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        // The seed's line-broken message, sent raw.
        let raw = "{\"status\":{\"error\":true,\"code\":400,\"type\":\"bad request\",\"message\":\"Content Type is not specified or specified incorrectly.\n                    Content-Type header must be set to application/json\"}}";
        assert!(matches!(
            parse_revoke_response(&answer(400, raw), &secrets),
            Err(Error::Provider {
                kind: ProviderError::ContentType,
                ..
            })
        ));
        // An error envelope on a 200.
        match parse_revoke_response(
            &answer(
                200,
                &envelope(401, "Unauthorized", "Authentication Failure"),
            ),
            &secrets,
        ) {
            Err(Error::Provider { status, kind, .. }) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(kind, ProviderError::AuthenticationFailure);
            }
            other => panic!("{other:?}"),
        }
        // Unknown messages keep the type, with secrets redacted.
        match parse_revoke_response(
            &answer(
                422,
                &envelope(422, "unprocessable", "token tok-9f8e7d is odd"),
            ),
            &secrets,
        ) {
            Err(Error::Provider {
                kind: ProviderError::Other { kind, message },
                ..
            }) => {
                assert_eq!(kind, "unprocessable");
                assert_eq!(message, "token [redacted] is odd");
            }
            other => panic!("{other:?}"),
        }
        let mut busy = answer(503, &envelope(503, "unavailable", "try later"));
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        let err = parse_revoke_response(&busy, &secrets).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert!(err.is_retriable());
        assert!(matches!(
            parse_revoke_response(&answer(502, "<html>bad gateway</html>"), &secrets),
            Err(Error::Status { .. })
        ));
    }

    #[test]
    fn token_answers() {
        let t = parse_token_response(
            &answer(200, r#"{"access_token":"a1","created_at":"2015-11-11T03:36:18.714Z","expires_in":36000,"refresh_token":"r1","token_type":"bearer","account_id":555555}"#),
            &creds(),
        )
        .unwrap();
        assert_eq!(t.access_token().secret(), "a1");
        assert_eq!(t.refresh_token().unwrap().secret(), "r1");
        assert_eq!(t.expires_in(), Some(TOKEN_LIFETIME));

        let t = parse_token_response(
            &answer(200, r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":[{"access_token":"a2","refresh_token":"r2","token_type":"bearer","expires_in":"600"}]}"#),
            &creds(),
        )
        .unwrap();
        assert_eq!(t.access_token().secret(), "a2");
        assert_eq!(t.expires_in(), Some(Duration::from_secs(600)));

        let t = parse_token_response(&answer(200, r#"{"access_token":"a3"}"#), &creds()).unwrap();
        assert_eq!(t.expires_in(), Some(TOKEN_LIFETIME));

        let err = parse_token_response(
            &answer(
                401,
                &envelope(401, "Unauthorized", "Authentication Failure"),
            ),
            &creds(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Provider {
                kind: ProviderError::AuthenticationFailure,
                ..
            }
        ));
        assert!(!err.is_retriable());

        // A busy answer keeps its Retry-After whatever the envelope says.
        let mut busy = answer(429, &envelope(429, "Too Many Requests", "Slow down"));
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("4"));
        let err = parse_token_response(&busy, &creds()).unwrap_err();
        assert!(matches!(err, Error::Provider { .. }), "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(4)));
        assert!(err.is_retriable());
        let mut busy = answer(503, r#"{"error":"temporarily_unavailable"}"#);
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        let err = parse_token_response(&busy, &creds()).unwrap_err();
        assert_eq!(err.oauth_code(), Some(&ErrorCode::TemporarilyUnavailable));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));

        let err = parse_token_response(
            &answer(400, r#"{"statusCode":400,"name":"BadRequest","message":"Content Type is not specified"}"#),
            &creds(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Provider {
                kind: ProviderError::ContentType,
                ..
            }
        ));

        let err = parse_token_response(&answer(400, r#"{"error":"invalid_grant"}"#), &creds())
            .unwrap_err();
        assert_eq!(err.oauth_code(), Some(&ErrorCode::InvalidGrant));

        for (body, reason) in [
            (
                r#"{"status":{"error":false},"data":[]}"#,
                InvalidResponse::BadEnvelope("`data` is empty"),
            ),
            (
                r#"{"data":[1]}"#,
                InvalidResponse::BadEnvelope("`data` does not hold an object"),
            ),
            (
                r#"{"data":"x"}"#,
                InvalidResponse::BadEnvelope("`data` is not a list"),
            ),
            (
                r#"{"data":[{"token_type":"bearer"}]}"#,
                InvalidResponse::MissingAccessToken,
            ),
            ("<html></html>", InvalidResponse::NotJson),
        ] {
            match parse_token_response(&answer(200, body), &creds()) {
                Err(Error::InvalidResponse { reason: r, .. }) => assert_eq!(r, reason, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
