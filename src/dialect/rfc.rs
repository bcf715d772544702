//! The standard dialect: RFC 6749 token requests and answers, RFC 7009
//! revocation.
//!
//! - [`token_request`] builds the `POST` to the token endpoint, with any
//!   client authentication of [`auth`](crate::auth); Basic credentials are
//!   form-urlencoded before base64 (RFC 6749 §2.3.1).
//! - [`parse_token_response`] reads the answer tolerantly: `expires_in` as a
//!   number or numeric string, `token_type` in any case, unknown fields
//!   ignored; every unusable answer is a typed [`Error`].
//! - [`revoke_request`] builds the RFC 7009 revocation `POST` (`token`,
//!   `token_type_hint`) with the same three client authentications, and
//!   [`parse_revoke_response`] reads its answer: any 2xx is success, even for
//!   a token the server does not know (RFC 7009 §2.2).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use tower_token::dialect::{rfc, Credentials};
//!
//! let creds = Credentials::new("id", "secret");
//! let answer = http::Response::new(Bytes::from_static(
//!     br#"{"access_token":"abc","token_type":"bearer","expires_in":"3600"}"#,
//! ));
//! let token = rfc::parse_token_response(&answer, &creds).unwrap();
//! assert_eq!(token.access_token().secret(), "abc");
//! assert_eq!(token.expires_in(), Some(std::time::Duration::from_secs(3600)));
//! ```

use super::{ClientAuth, Credentials, Grant};
use crate::error::{
    Endpoint, Error, ErrorCode, ExpiresInProblem, InvalidResponse, excerpt, redact,
};
use crate::revoke::TokenKind;
use crate::token::{Token, is_header_safe};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};
use url::Url;

const FORM: HeaderValue = HeaderValue::from_static("application/x-www-form-urlencoded");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Builds a token request (RFC 6749 §4.4.2, §6).
///
/// `extra` parameters (`audience`, RFC 8707 `resource`, …) are appended to
/// the form in order.
pub fn token_request(
    url: &Url,
    credentials: &Credentials,
    auth: ClientAuth,
    grant: Grant<'_>,
    scope: Option<&str>,
    extra: &[(String, String)],
) -> Result<http::Request<Bytes>, Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    match grant {
        Grant::ClientCredentials => {
            form.append_pair("grant_type", "client_credentials");
        }
        Grant::RefreshToken(refresh) => {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", refresh.secret());
        }
    }
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    for (name, value) in extra {
        form.append_pair(name, value);
    }
    let authorization = crate::auth::apply(auth, credentials, url, Endpoint::Token, &mut form)?;
    form_post(url, form.finish(), authorization, Endpoint::Token)
}

/// Appends `client_id`, and `client_secret` when `with_secret` and the client
/// has one.
pub(crate) fn append_client(
    form: &mut form_urlencoded::Serializer<'_, String>,
    credentials: &Credentials,
    with_secret: bool,
) {
    form.append_pair("client_id", credentials.client_id());
    if with_secret && let Some(secret) = credentials.client_secret() {
        form.append_pair("client_secret", secret.secret());
    }
}

/// A form `POST` accepting JSON.
pub(crate) fn form_post(
    url: &Url,
    body: String,
    authorization: Option<HeaderValue>,
    endpoint: Endpoint,
) -> Result<http::Request<Bytes>, Error> {
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(url.as_str())
        .header(header::CONTENT_TYPE, FORM)
        .header(header::ACCEPT, JSON)
        .body(Bytes::from(body))
        .map_err(|e| Error::Request {
            endpoint,
            reason: e.to_string(),
        })?;
    if let Some(value) = authorization {
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive
/// (RFC 6749 §2.3.1).
pub fn basic_authorization(credentials: &Credentials) -> Result<HeaderValue, Error> {
    basic_authorization_for(credentials, Endpoint::Token)
}

pub(crate) fn basic_authorization_for(
    credentials: &Credentials,
    endpoint: Endpoint,
) -> Result<HeaderValue, Error> {
    let secret = credentials.client_secret().map_or("", |s| s.secret());
    let encoded = super::basic_credentials(credentials.client_id(), secret, true);
    let mut value =
        HeaderValue::try_from(format!("Basic {encoded}")).map_err(|e| Error::Request {
            endpoint,
            reason: e.to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Builds a revocation request (RFC 7009 §2.1): form `token` and, when a
/// hint is given, `token_type_hint` (`access_token` or `refresh_token`).
///
/// Client authentication as for [`token_request`]: Basic, `client_id` and
/// `client_secret` in the body, or `client_id` alone for a public client.
pub fn revoke_request(
    url: &Url,
    credentials: &Credentials,
    auth: ClientAuth,
    token: &str,
    hint: Option<TokenKind>,
) -> Result<http::Request<Bytes>, Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token);
    if let Some(kind) = hint {
        form.append_pair("token_type_hint", kind.as_str());
    }
    let authorization =
        crate::auth::apply(auth, credentials, url, Endpoint::Revocation, &mut form)?;
    form_post(url, form.finish(), authorization, Endpoint::Revocation)
}

/// Parses a revocation endpoint's answer (RFC 7009 §2.2).
///
/// Any 2xx is success, whatever the body, unless the body is an RFC 6749
/// error object. A 503 or 429 with `Retry-After` is an [`Error::Status`]
/// carrying the delay (retriable, see [`Error::is_retriable`]); any other
/// answer is an [`Error::OAuth`] (`unsupported_token_type`,
/// `invalid_client`, …) when the body is an RFC 6749 error, else an
/// [`Error::Status`] with a body excerpt. Each of `secrets` (the client
/// secret, the token) is redacted from what the error keeps.
pub fn parse_revoke_response(
    response: &http::Response<Bytes>,
    secrets: &[&str],
) -> Result<(), Error> {
    let status = response.status();
    if status.is_success() {
        if let Ok(object) = json_object(response.body())
            && let Some(err) = oauth_error(
                Endpoint::Revocation,
                status,
                retry_after(response.headers()),
                &object,
                secrets,
            )
        {
            return Err(err);
        }
        return Ok(());
    }
    Err(revoke_error(response, secrets))
}

/// The error for a non-2xx revocation answer: a retriable status when the
/// server said when to come back, else as [`error_response`].
pub(crate) fn revoke_error(response: &http::Response<Bytes>, secrets: &[&str]) -> Error {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    if retry_after.is_some()
        && (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
    {
        return Error::Status {
            endpoint: Endpoint::Revocation,
            status,
            retry_after,
            body: excerpt(response.body(), secrets),
        };
    }
    error_response(Endpoint::Revocation, response, secrets)
}

/// Parses a token endpoint's answer (RFC 6749 §5.1, §5.2).
///
/// A 2xx must carry a JSON object with a usable `access_token`; a 2xx with
/// an `error` field is an [`Error::OAuth`]. Any other status is an
/// [`Error::OAuth`] when the body is an RFC 6749 error, and an
/// [`Error::Status`] otherwise; both keep the answer's `Retry-After`.
/// Credentials are redacted from everything the error keeps.
pub fn parse_token_response(
    response: &http::Response<Bytes>,
    credentials: &Credentials,
) -> Result<Token, Error> {
    let status = response.status();
    let secrets = credentials.secrets();
    if !status.is_success() {
        return Err(error_response(Endpoint::Token, response, &secrets));
    }
    let object =
        json_object(response.body()).map_err(|r| Error::invalid(Endpoint::Token, status, r))?;
    if let Some(err) = oauth_error(
        Endpoint::Token,
        status,
        retry_after(response.headers()),
        &object,
        &secrets,
    ) {
        return Err(err);
    }
    token_from_object(&object, &secrets).map_err(|r| Error::invalid(Endpoint::Token, status, r))
}

/// The error for a non-2xx answer: OAuth when the body is an RFC 6749 error
/// object, a plain status otherwise. Either way the answer's `Retry-After`
/// is kept (see [`Error::retry_after`]).
pub fn error_response(
    endpoint: Endpoint,
    response: &http::Response<Bytes>,
    secrets: &[&str],
) -> Error {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    if let Ok(object) = json_object(response.body())
        && let Some(err) = oauth_error(endpoint, status, retry_after, &object, secrets)
    {
        return err;
    }
    Error::Status {
        endpoint,
        status,
        retry_after,
        body: excerpt(response.body(), secrets),
    }
}

/// Reads `body` as a JSON object.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, InvalidResponse> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(InvalidResponse::EmptyBody);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(InvalidResponse::NotAnObject),
        Err(e) if e.is_eof() => Err(InvalidResponse::Truncated),
        Err(_) => Err(InvalidResponse::NotJson),
    }
}

/// An [`Error::OAuth`] when `object` has a string `error` field; it keeps
/// the answer's `Retry-After`.
pub(crate) fn oauth_error(
    endpoint: Endpoint,
    status: StatusCode,
    retry_after: Option<Duration>,
    object: &Map<String, Value>,
    secrets: &[&str],
) -> Option<Error> {
    let code = object.get("error")?.as_str()?;
    let text = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .map(|s| redact(s, secrets))
    };
    Some(Error::OAuth {
        endpoint,
        status,
        code: ErrorCode::parse(&redact(code, secrets)),
        description: text("error_description"),
        uri: text("error_uri"),
        retry_after,
    })
}

/// Reads a token from the fields of an RFC 6749 §5.1 answer. What the
/// error keeps of an unsupported `token_type` has `secrets` redacted.
pub(crate) fn token_from_object(
    object: &Map<String, Value>,
    secrets: &[&str],
) -> Result<Token, InvalidResponse> {
    let access_token = match object.get("access_token") {
        None | Some(Value::Null) => return Err(InvalidResponse::MissingAccessToken),
        Some(Value::String(s)) if s.is_empty() => return Err(InvalidResponse::EmptyAccessToken),
        Some(Value::String(s)) if !is_header_safe(s) => {
            return Err(InvalidResponse::AccessTokenNotHeaderSafe);
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(InvalidResponse::AccessTokenNotString),
    };
    let mut dpop = false;
    match object.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        // RFC 9449 §5: bound to the key of the request's DPoP proof. Whether
        // the request had one is checked where the token is admitted.
        Some(Value::String(t)) if t.eq_ignore_ascii_case("dpop") => dpop = true,
        Some(Value::String(t)) => {
            // Redacted before it is cut, so that no part of a secret the
            // server echoed here survives at the cut.
            return Err(InvalidResponse::UnsupportedTokenType(
                redact(t, secrets).chars().take(32).collect(),
            ));
        }
        Some(_) => return Err(InvalidResponse::InvalidField("token_type")),
    }
    let mut token = Token::new(access_token).with_dpop(dpop);
    if let Some(seconds) = expires_in(object.get("expires_in"))? {
        token = token.with_expires_in(Duration::from_secs(seconds));
    }
    match object.get("refresh_token") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => token = token.with_refresh_token(s.as_str()),
        Some(_) => return Err(InvalidResponse::InvalidRefreshToken),
    }
    if let Some(Value::String(scope)) = object.get("scope") {
        token = token.with_scope(scope.as_str());
    }
    Ok(token)
}

/// Reads `expires_in`: a whole, positive number of seconds, as a JSON
/// number or a numeric string. Missing or `null` is `None`.
pub(crate) fn expires_in(value: Option<&Value>) -> Result<Option<u64>, InvalidResponse> {
    use ExpiresInProblem::*;
    let bad = |p| Err(InvalidResponse::InvalidExpiresIn(p));
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u
            } else if n.as_i64().is_some() {
                return bad(Negative);
            } else {
                match n.as_f64() {
                    Some(f) => whole_seconds(f)?,
                    None => return bad(NotANumber),
                }
            }
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            if let Ok(u) = s.parse::<u64>() {
                u
            } else if s.parse::<i64>().is_ok() {
                return bad(Negative);
            } else if let Ok(f) = s.parse::<f64>()
                && f.is_finite()
            {
                whole_seconds(f)?
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return bad(TooLarge);
            } else {
                return bad(NotANumber);
            }
        }
        Some(_) => return bad(NotANumber),
    };
    if seconds == 0 {
        return bad(Zero);
    }
    Ok(Some(seconds))
}

fn whole_seconds(f: f64) -> Result<u64, InvalidResponse> {
    use ExpiresInProblem::*;
    let problem = if f < 0.0 {
        Negative
    } else if f.fract() != 0.0 {
        Fractional
    } else if f >= 18_446_744_073_709_551_616.0 {
        TooLarge
    } else {
        // Whole and in range: the cast is exact enough for a lifetime.
        return Ok(f as u64);
    };
    Err(InvalidResponse::InvalidExpiresIn(problem))
}

/// The `Retry-After` header as a delay: delta-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::RefreshToken;
    use base64::Engine as _;

    fn answer(status: u16, body: &str) -> http::Response<Bytes> {
        let mut r = http::Response::new(Bytes::from(body.to_owned()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    fn creds() -> Credentials {
        Credentials::new("client", "a+b/c:d%e f")
    }

    fn url() -> Url {
        Url::parse("https://as.example/token").unwrap()
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let value = basic_authorization(&creds()).unwrap();
        let b64 = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, b"client:a%2Bb%2Fc%3Ad%25e+f");
        assert!(value.is_sensitive());
    }

    #[test]
    fn body_auth_and_public_client() {
        let req = token_request(
            &url(),
            &creds(),
            ClientAuth::RequestBody,
            Grant::ClientCredentials,
            None,
            &[],
        )
        .unwrap();
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(req.body()).unwrap();
        assert_eq!(
            form,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "client".into()),
                ("client_secret".into(), "a+b/c:d%e f".into()),
            ]
        );
        let req = token_request(
            &url(),
            &Credentials::public("pub"),
            ClientAuth::None,
            Grant::RefreshToken(&RefreshToken::new("r1")),
            Some("a b"),
            &[("audience".into(), "api".into())],
        )
        .unwrap();
        assert_eq!(
            req.body().as_ref(),
            b"grant_type=refresh_token&refresh_token=r1&scope=a+b&audience=api&client_id=pub"
        );
        assert_eq!(
            req.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
    }

    #[test]
    fn tolerant_parsing() {
        let t = parse_token_response(
            &answer(
                200,
                r#"{"access_token":"t","token_type":"BEARER","expires_in":"60","x":[1]}"#,
            ),
            &creds(),
        )
        .unwrap();
        assert_eq!(t.expires_in(), Some(Duration::from_secs(60)));
        let t = parse_token_response(&answer(200, r#"{"access_token":"t"}"#), &creds()).unwrap();
        assert_eq!(t.expires_in(), None);
        let t = parse_token_response(
            &answer(
                200,
                r#"{"access_token":"t","expires_in":3600.0,"refresh_token":"r","scope":"s"}"#,
            ),
            &creds(),
        )
        .unwrap();
        assert_eq!(t.expires_in(), Some(Duration::from_secs(3600)));
        assert_eq!(t.refresh_token().unwrap().secret(), "r");
        assert_eq!(t.scope(), Some("s"));
    }

    fn reason(status: u16, body: &str) -> InvalidResponse {
        match parse_token_response(&answer(status, body), &creds()) {
            Err(Error::InvalidResponse { reason, .. }) => reason,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn unusable_answers_are_typed() {
        use ExpiresInProblem::*;
        use InvalidResponse::*;
        let cases: &[(&str, InvalidResponse)] = &[
            ("", EmptyBody),
            ("<html>oops</html>", NotJson),
            (r#"{"access_token":"#, Truncated),
            ("[1]", NotAnObject),
            (r#"{"token_type":"bearer"}"#, MissingAccessToken),
            (r#"{"access_token":""}"#, EmptyAccessToken),
            (r#"{"access_token":7}"#, AccessTokenNotString),
            (r#"{"access_token":"a\r\nb"}"#, AccessTokenNotHeaderSafe),
            (r#"{"access_token":"é"}"#, AccessTokenNotHeaderSafe),
            (r#"{"access_token":"a\u0000"}"#, AccessTokenNotHeaderSafe),
            (
                r#"{"access_token":"a","expires_in":-5}"#,
                InvalidExpiresIn(Negative),
            ),
            (
                r#"{"access_token":"a","expires_in":0}"#,
                InvalidExpiresIn(Zero),
            ),
            (
                r#"{"access_token":"a","expires_in":1.5}"#,
                InvalidExpiresIn(Fractional),
            ),
            (
                r#"{"access_token":"a","expires_in":18446744073709551616}"#,
                InvalidExpiresIn(TooLarge),
            ),
            (
                r#"{"access_token":"a","expires_in":"99999999999999999999999"}"#,
                InvalidExpiresIn(TooLarge),
            ),
            (
                r#"{"access_token":"a","expires_in":"soon"}"#,
                InvalidExpiresIn(NotANumber),
            ),
            (
                r#"{"access_token":"a","expires_in":"-1"}"#,
                InvalidExpiresIn(Negative),
            ),
            (
                r#"{"access_token":"a","token_type":"mac"}"#,
                UnsupportedTokenType("mac".into()),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(&reason(200, body), expected, "{body}");
        }
    }

    #[test]
    fn errors_are_typed_and_redacted() {
        let err = parse_token_response(
            &answer(
                401,
                r#"{"error":"invalid_client","error_description":"bad a+b/c:d%e f"}"#,
            ),
            &creds(),
        )
        .unwrap_err();
        match &err {
            Error::OAuth {
                status,
                code,
                description,
                ..
            } => {
                assert_eq!(*status, StatusCode::UNAUTHORIZED);
                assert_eq!(*code, ErrorCode::InvalidClient);
                assert_eq!(description.as_deref(), Some("bad [redacted]"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retriable());
        let err = parse_token_response(&answer(200, r#"{"error":"invalid_scope"}"#), &creds())
            .unwrap_err();
        assert_eq!(err.oauth_code(), Some(&ErrorCode::InvalidScope));
        let mut busy = answer(503, "busy");
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        let err = parse_token_response(&busy, &creds()).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert!(err.is_retriable());
        // An OAuth error body does not lose the status's Retry-After.
        for (status, body, code) in [
            (
                503,
                r#"{"error":"temporarily_unavailable"}"#,
                ErrorCode::TemporarilyUnavailable,
            ),
            (
                429,
                r#"{"error":"slow_down"}"#,
                ErrorCode::Other("slow_down".into()),
            ),
            (200, r#"{"error":"server_error"}"#, ErrorCode::ServerError),
        ] {
            let mut busy = answer(status, body);
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            let err = parse_token_response(&busy, &creds()).unwrap_err();
            assert_eq!(err.oauth_code(), Some(&code), "{body}");
            assert_eq!(err.retry_after(), Some(Duration::from_secs(30)), "{body}");
            assert!(err.is_retriable(), "{body}");
        }
    }

    fn form(req: &http::Request<Bytes>) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(req.body()).unwrap()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn revoke_request_with_each_client_auth() {
        let req = revoke_request(
            &url(),
            &creds(),
            ClientAuth::Basic,
            "tok",
            Some(TokenKind::Refresh),
        )
        .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "https://as.example/token");
        assert!(req.headers()[header::AUTHORIZATION].is_sensitive());
        assert_eq!(
            req.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            form(&req),
            pairs(&[("token", "tok"), ("token_type_hint", "refresh_token")])
        );

        let req = revoke_request(
            &url(),
            &creds(),
            ClientAuth::RequestBody,
            "tok",
            Some(TokenKind::Access),
        )
        .unwrap();
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            form(&req),
            pairs(&[
                ("token", "tok"),
                ("token_type_hint", "access_token"),
                ("client_id", "client"),
                ("client_secret", "a+b/c:d%e f"),
            ])
        );

        let req = revoke_request(&url(), &creds(), ClientAuth::None, "tok", None).unwrap();
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            form(&req),
            pairs(&[("token", "tok"), ("client_id", "client")])
        );
    }

    #[test]
    fn revoke_answers() {
        let secrets = ["a+b/c:d%e f", "tok-9f8e7d"];
        assert!(parse_revoke_response(&answer(200, ""), &secrets).is_ok());
        assert!(parse_revoke_response(&answer(204, ""), &secrets).is_ok());
        assert!(parse_revoke_response(&answer(200, "<html>ok</html>"), &secrets).is_ok());
        let err = parse_revoke_response(
            &answer(400, r#"{"error":"unsupported_token_type"}"#),
            &secrets,
        )
        .unwrap_err();
        assert_eq!(err.oauth_code(), Some(&ErrorCode::UnsupportedTokenType));
        assert!(!err.is_retriable());
        let err = parse_revoke_response(&answer(200, r#"{"error":"invalid_client"}"#), &secrets)
            .unwrap_err();
        assert_eq!(err.oauth_code(), Some(&ErrorCode::InvalidClient));

        let mut busy = answer(503, r#"{"error":"temporarily_unavailable"}"#);
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        let err = parse_revoke_response(&busy, &secrets).unwrap_err();
        assert!(err.is_retriable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));

        let err =
            parse_revoke_response(&answer(500, "token tok-9f8e7d broke"), &secrets).unwrap_err();
        match err {
            Error::Status {
                endpoint,
                status,
                body,
                ..
            } => {
                assert_eq!(endpoint, Endpoint::Revocation);
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(body, "token [redacted] broke");
            }
            other => panic!("{other:?}"),
        }
    }
}
