//! KorAP/Kustvakt: the revocation endpoint, and where the token endpoint is.
//!
//! - Revocation: `POST {root}/oauth2/revoke`, `Content-Type:
//!   application/x-www-form-urlencoded`, form `client_id`, `client_secret`
//!   (confidential clients only; a public client sends none), `token`, and
//!   the optional hint under the name `token_type` (`access_token` or
//!   `refresh_token`) rather than RFC 7009's `token_type_hint`. Revoking a
//!   refresh token also revokes every access token issued with it.
//! - Token: the standard RFC 6749 endpoint at `{root}/oauth2/token`; build
//!   its requests with [`rfc::token_request`] (client credentials in the
//!   body).
//!
//! `root` is the service root including its API path, e.g.
//! `https://korap.example/api/v1.0`.
//!
//! # Example
//!
//! ```
//! use tower_token::dialect::{korap, Credentials};
//! use tower_token::TokenKind;
//!
//! let root = url::Url::parse("http://localhost:8089/api/v1.0").unwrap();
//! let req = korap::revoke_request(
//!     &korap::revoke_url(&root),
//!     &Credentials::public("io8MvuTN3reflIaESwe5tGd"),
//!     "mPUkiQ86cT1YeblMqjr9",
//!     None,
//! )
//! .unwrap();
//! assert_eq!(req.uri(), "http://localhost:8089/api/v1.0/oauth2/revoke");
//! assert_eq!(req.body().as_ref(), b"client_id=io8MvuTN3reflIaESwe5tGd&token=mPUkiQ86cT1YeblMqjr9");
//!
//! // A confidential client revoking a refresh token (and its access tokens).
//! let req = korap::revoke_request(
//!     &korap::revoke_url(&root),
//!     &Credentials::new("YMirwQ-beCp5Rxiw4yH", "nS8cz9Fa5Wl2fbHrM"),
//!     "Q4lxNpch72FUwhO",
//!     Some(TokenKind::Refresh),
//! )
//! .unwrap();
//! assert!(req.body().ends_with(b"&token=Q4lxNpch72FUwhO&token_type=refresh_token"));
//! ```

use super::{Credentials, rfc};
use crate::error::{Endpoint, Error};
use crate::revoke::TokenKind;
use bytes::Bytes;
use url::Url;

/// `{root}/oauth2/token`.
pub fn token_url(root: &Url) -> Url {
    super::join(root, "/oauth2/token")
}

/// `{root}/oauth2/revoke`.
pub fn revoke_url(root: &Url) -> Url {
    super::join(root, "/oauth2/revoke")
}

/// Builds the revocation request: form `client_id`, `client_secret` (when
/// the client has one), `token` and, when given, `token_type`.
pub fn revoke_request(
    url: &Url,
    credentials: &Credentials,
    token: &str,
    hint: Option<TokenKind>,
) -> Result<http::Request<Bytes>, Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    rfc::append_client(&mut form, credentials, true);
    form.append_pair("token", token);
    if let Some(kind) = hint {
        form.append_pair("token_type", kind.as_str());
    }
    rfc::form_post(url, form.finish(), None, Endpoint::Revocation)
}

/// Parses the revocation answer: a 2xx is success; Kustvakt's errors are
/// RFC 6749 error objects. See [`rfc::parse_revoke_response`].
pub fn parse_revoke_response(
    response: &http::Response<Bytes>,
    secrets: &[&str],
) -> Result<(), Error> {
    rfc::parse_revoke_response(response, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn root() -> Url {
        Url::parse("http://localhost:8089/api/v1.0").unwrap()
    }

    #[test]
    fn public_client_sends_no_secret() {
        let req = revoke_request(
            &revoke_url(&root()),
            &Credentials::public("io8MvuTN3reflIaESwe5tGd"),
            "mPUkiQ86cT1YeblMqjr9",
            None,
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "http://localhost:8089/api/v1.0/oauth2/revoke");
        assert_eq!(
            req.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            req.body().as_ref(),
            b"client_id=io8MvuTN3reflIaESwe5tGd&token=mPUkiQ86cT1YeblMqjr9"
        );
    }

    #[test]
    fn confidential_client_revokes_a_refresh_token() {
        let req = revoke_request(
            &revoke_url(&root()),
            &Credentials::new("YMirwQ-beCp5Rxiw4yH", "nS8cz9Fa5Wl2fbHrM"),
            "Q4lxNpch72FUwhO",
            Some(TokenKind::Refresh),
        )
        .unwrap();
        assert_eq!(
            req.body().as_ref(),
            b"client_id=YMirwQ-beCp5Rxiw4yH&client_secret=nS8cz9Fa5Wl2fbHrM\
              &token=Q4lxNpch72FUwhO&token_type=refresh_token"
        );
        let req = revoke_request(
            &revoke_url(&root()),
            &Credentials::new("c", "s"),
            "t",
            Some(TokenKind::Access),
        )
        .unwrap();
        assert!(req.body().ends_with(b"&token_type=access_token"));
    }

    #[test]
    fn token_url_is_standard() {
        assert_eq!(
            token_url(&root()).as_str(),
            "http://localhost:8089/api/v1.0/oauth2/token"
        );
    }
}
