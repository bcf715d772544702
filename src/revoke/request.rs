//! What to revoke.

use crate::secret::{AccessToken, RefreshToken};

/// Which kind of token a [`RevokeRequest`] names; sent as the hint
/// (`token_type_hint` in RFC 7009, `token_type` for KorAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An access token (`access_token`).
    Access,
    /// A refresh token (`refresh_token`).
    Refresh,
}

impl TokenKind {
    /// The hint as sent on the wire: `access_token` or `refresh_token`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenKind::Access => "access_token",
            TokenKind::Refresh => "refresh_token",
        }
    }
}

#[derive(Clone, Debug)]
enum Revocable {
    Access(AccessToken),
    Refresh(RefreshToken),
}

/// A request to revoke one token: the token (a secret type, never shown by
/// `Debug`) and its kind.
///
/// The kind is sent as a hint unless [`without_hint`](Self::without_hint)
/// is used. See the [module docs](crate::revoke).
#[derive(Clone, Debug)]
pub struct RevokeRequest {
    token: Revocable,
    hint: bool,
}

impl RevokeRequest {
    /// Revoke an access token.
    pub fn access(token: impl Into<AccessToken>) -> Self {
        Self {
            token: Revocable::Access(token.into()),
            hint: true,
        }
    }

    /// Revoke a refresh token.
    pub fn refresh(token: impl Into<RefreshToken>) -> Self {
        Self {
            token: Revocable::Refresh(token.into()),
            hint: true,
        }
    }

    /// Sends no hint about the kind of token (RFC 7009 makes it optional).
    pub fn without_hint(mut self) -> Self {
        self.hint = false;
        self
    }

    /// The kind of the token.
    pub fn kind(&self) -> TokenKind {
        match self.token {
            Revocable::Access(_) => TokenKind::Access,
            Revocable::Refresh(_) => TokenKind::Refresh,
        }
    }

    /// The hint that will be sent, if any.
    pub fn hint(&self) -> Option<TokenKind> {
        self.hint.then(|| self.kind())
    }

    /// The token's value, for the wire only.
    pub(crate) fn secret(&self) -> &str {
        match &self.token {
            Revocable::Access(t) => t.secret(),
            Revocable::Refresh(t) => t.secret(),
        }
    }
}

impl From<AccessToken> for RevokeRequest {
    fn from(token: AccessToken) -> Self {
        Self::access(token)
    }
}

impl From<RefreshToken> for RevokeRequest {
    fn from(token: RefreshToken) -> Self {
        Self::refresh(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_hints() {
        let r = RevokeRequest::access("a");
        assert_eq!(r.kind(), TokenKind::Access);
        assert_eq!(r.hint(), Some(TokenKind::Access));
        assert_eq!(r.secret(), "a");
        let r = RevokeRequest::from(RefreshToken::new("r")).without_hint();
        assert_eq!(r.kind(), TokenKind::Refresh);
        assert_eq!(r.hint(), None);
        assert!(!format!("{r:?}").contains("\"r\""));
        assert_eq!(TokenKind::Refresh.as_str(), "refresh_token");
    }
}
