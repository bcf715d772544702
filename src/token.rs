//! The token a source hands to the cache.
//!
//! A [`Token`] is what a [`TokenSource`](crate::TokenSource) returns: the
//! access token, its lifetime as the server stated it, and optionally a
//! refresh token and the granted scope. The cache turns it into the header
//! value it sends, once, when the token arrives.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_token::Token;
//!
//! let token = Token::new("abc.def")
//!     .with_expires_in(Duration::from_secs(3600))
//!     .with_scope("read write");
//! assert_eq!(token.expires_in(), Some(Duration::from_secs(3600)));
//! assert!(!format!("{token:?}").contains("abc.def"));
//! ```

use crate::secret::{AccessToken, RefreshToken};
use std::time::Duration;

/// An access token with what the server said about it.
#[derive(Clone, Debug)]
pub struct Token {
    access_token: AccessToken,
    expires_in: Option<Duration>,
    refresh_token: Option<RefreshToken>,
    scope: Option<String>,
    dpop: bool,
}

impl Token {
    /// A token with no stated lifetime (the cache applies its default
    /// lifetime), no refresh token and no scope.
    pub fn new(access_token: impl Into<AccessToken>) -> Self {
        Self {
            access_token: access_token.into(),
            expires_in: None,
            refresh_token: None,
            scope: None,
            dpop: false,
        }
    }

    /// Sets the lifetime the server stated (`expires_in`).
    pub fn with_expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(expires_in);
        self
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<RefreshToken>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// Sets the granted scope.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Marks the token as DPoP-bound (`token_type` `DPoP`, RFC 9449 §5):
    /// it is sent as `Authorization: DPoP <token>` with a proof (see
    /// [`crate::dpop`]). A source of your own marks the tokens it got with
    /// a DPoP proof; a DPoP-bound token in a cache without a DPoP key, or a
    /// bearer token in a cache with one, is refused.
    pub fn with_dpop(mut self, bound: bool) -> Self {
        self.dpop = bound;
        self
    }

    /// Whether the token is DPoP-bound (`token_type` `DPoP`).
    pub fn is_dpop(&self) -> bool {
        self.dpop
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The lifetime the server stated, if any.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// The refresh token, if the server issued one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The granted scope, if the server stated it.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    pub(crate) fn take_refresh_token(&mut self) -> Option<RefreshToken> {
        self.refresh_token.take()
    }
}

/// Whether `value` can be sent as a token in a header: visible ASCII, no
/// spaces (RFC 6750 `b64token` is stricter; real servers are not).
pub(crate) fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safety() {
        assert!(is_header_safe("abc-._~+/="));
        for bad in ["", "a b", "a\r\nb", "a\0b", "é", "a\tb", "a\u{7f}"] {
            assert!(!is_header_safe(bad), "{bad:?}");
        }
    }
}
