//! Kopo Kopo (K2 Connect): token and revocation endpoints.
//!
//! - Token: `POST {base}/oauth/token`, `Content-Type:
//!   application/x-www-form-urlencoded`, form `client_id`, `client_secret`,
//!   `grant_type=client_credentials`. Tokens live one hour
//!   ([`TOKEN_LIFETIME`]); Kopo Kopo issues no refresh tokens, so a new token
//!   is always fetched with the client credentials.
//! - Revocation: `POST {base}/oauth/revoke`, form `client_id`,
//!   `client_secret`, `token`; the answer to a successful revocation is
//!   empty.
//!
//! The client credentials always travel in the form body, never in an
//! `Authorization` header.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use tower_token::dialect::{kopokopo, Credentials};
//!
//! let base = url::Url::parse("https://sandbox.kopokopo.com").unwrap();
//! let creds = Credentials::new("my-app", "s3cr3t");
//! let req = kopokopo::token_request(&kopokopo::token_url(&base), &creds).unwrap();
//! assert_eq!(req.uri(), "https://sandbox.kopokopo.com/oauth/token");
//! assert_eq!(
//!     req.body().as_ref(),
//!     b"client_id=my-app&client_secret=s3cr3t&grant_type=client_credentials"
//! );
//!
//! let answer = http::Response::new(Bytes::from_static(
//!     br#"{"access_token":"abc","token_type":"Bearer","created_at":1600000000}"#,
//! ));
//! let token = kopokopo::parse_token_response(&answer, &creds).unwrap();
//! assert_eq!(token.expires_in(), Some(kopokopo::TOKEN_LIFETIME));
//! ```

use super::{Credentials, rfc};
use crate::error::{Endpoint, Error};
use crate::token::Token;
use bytes::Bytes;
use std::time::Duration;
use url::Url;

/// The lifetime of a Kopo Kopo access token, used when an answer does not
/// state one.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// `{base}/oauth/token`.
pub fn token_url(base: &Url) -> Url {
    super::join(base, "/oauth/token")
}

/// `{base}/oauth/revoke`.
pub fn revoke_url(base: &Url) -> Url {
    super::join(base, "/oauth/revoke")
}

/// Builds the token request: form `client_id`, `client_secret`,
/// `grant_type=client_credentials`.
pub fn token_request(url: &Url, credentials: &Credentials) -> Result<http::Request<Bytes>, Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    rfc::append_client(&mut form, credentials, true);
    form.append_pair("grant_type", "client_credentials");
    rfc::form_post(url, form.finish(), None, Endpoint::Token)
}

/// Parses the token answer as an RFC 6749 one, with a lifetime of
/// [`TOKEN_LIFETIME`] when it states none. A refresh token, should one
/// appear, is dropped: Kopo Kopo does not accept the refresh-token grant.
pub fn parse_token_response(
    response: &http::Response<Bytes>,
    credentials: &Credentials,
) -> Result<Token, Error> {
    let mut token = rfc::parse_token_response(response, credentials)?;
    let _ = token.take_refresh_token();
    if token.expires_in().is_none() {
        token = token.with_expires_in(TOKEN_LIFETIME);
    }
    Ok(token)
}

/// Builds the revocation request: form `client_id`, `client_secret`, `token`.
pub fn revoke_request(
    url: &Url,
    credentials: &Credentials,
    token: &str,
) -> Result<http::Request<Bytes>, Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    rfc::append_client(&mut form, credentials, true);
    form.append_pair("token", token);
    rfc::form_post(url, form.finish(), None, Endpoint::Revocation)
}

/// Parses the revocation answer: a 2xx (normally with an empty body) is
/// success; errors as [`rfc::parse_revoke_response`].
pub fn parse_revoke_response(
    response: &http::Response<Bytes>,
    secrets: &[&str],
) -> Result<(), Error> {
    rfc::parse_revoke_response(response, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use http::{StatusCode, header};

    // The values of the seed document's example requests.
    const ID: &str = "CGQXLrlfuOqdUYdTcLz3rBiCZQDRvdWIUPkwasGMuGhkem9Bo";
    const SECRET: &str = "g7QLwvO37aN2HoKx1amekWi8a2g7AIuPbD5CcJSLqXIcDOxfTr";

    fn base() -> Url {
        Url::parse("https://sandbox.kopokopo.com").unwrap()
    }

    fn answer(status: u16, body: &str) -> http::Response<Bytes> {
        let mut r = http::Response::new(Bytes::from(body.to_owned()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    #[test]
    fn token_request_matches_the_seed() {
        let req = token_request(&token_url(&base()), &Credentials::new(ID, SECRET)).unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "https://sandbox.kopokopo.com/oauth/token");
        assert_eq!(
            req.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            req.body().as_ref(),
            format!("client_id={ID}&client_secret={SECRET}&grant_type=client_credentials")
                .as_bytes()
        );
    }

    #[test]
    fn revoke_request_matches_the_seed() {
        let req = revoke_request(
            &revoke_url(&base()),
            &Credentials::new(ID, SECRET),
            "your_access_token",
        )
        .unwrap();
        assert_eq!(req.uri(), "https://sandbox.kopokopo.com/oauth/revoke");
        assert_eq!(
            req.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            req.body().as_ref(),
            format!("client_id={ID}&client_secret={SECRET}&token=your_access_token").as_bytes()
        );
    }

    #[test]
    fn urls_keep_a_base_path() {
        let base = Url::parse("https://k2.example/api/?x=1").unwrap();
        assert_eq!(
            token_url(&base).as_str(),
            "https://k2.example/api/oauth/token"
        );
        assert_eq!(
            revoke_url(&base).as_str(),
            "https://k2.example/api/oauth/revoke"
        );
    }

    #[test]
    fn answers() {
        let creds = Credentials::new(ID, SECRET);
        let t = parse_token_response(
            &answer(
                200,
                r#"{"access_token":"t","token_type":"Bearer","expires_in":3600,"refresh_token":"r"}"#,
            ),
            &creds,
        )
        .unwrap();
        assert_eq!(t.expires_in(), Some(TOKEN_LIFETIME));
        assert!(t.refresh_token().is_none());
        let err = parse_token_response(&answer(401, r#"{"error":"invalid_client"}"#), &creds)
            .unwrap_err();
        assert_eq!(err.oauth_code(), Some(&ErrorCode::InvalidClient));
        assert!(parse_revoke_response(&answer(200, ""), &[SECRET]).is_ok());
        assert!(parse_revoke_response(&answer(401, ""), &[SECRET]).is_err());
    }
}
