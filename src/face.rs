//! What every face of the cache shares — the tower layer, the
//! reqwest-middleware middleware: which header carries the token, which
//! origins get it, whether a rejected request is sent again, and how a
//! rejection is recognised. The cache knows none of it.

use crate::cache::TokenCache;
use crate::origin::Origin;
use http::{HeaderMap, HeaderName, StatusCode};

/// A cache with the settings of the face that sends its token.
#[derive(Debug)]
pub(crate) struct Face {
    pub(crate) cache: TokenCache,
    pub(crate) settings: Settings,
}

/// A face's own settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) header_name: HeaderName,
    pub(crate) override_existing: bool,
    pub(crate) origins: Option<Vec<Origin>>,
    pub(crate) retry_unauthorized: bool,
    pub(crate) replay_limit: usize,
    /// The DPoP key: DPoP-bound tokens go with a proof per request.
    #[cfg(feature = "jose")]
    pub(crate) dpop: Option<crate::dpop::Dpop>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header_name: http::header::AUTHORIZATION,
            override_existing: false,
            origins: None,
            retry_unauthorized: true,
            replay_limit: 64 * 1024,
            #[cfg(feature = "jose")]
            dpop: None,
        }
    }
}

impl Settings {
    /// Whether a request for `uri` whose headers are `headers` gets the
    /// token: its origin is allowed, and it has no such header of its own
    /// (unless overriding).
    #[inline]
    pub(crate) fn applies(&self, uri: &http::Uri, headers: &HeaderMap) -> bool {
        crate::origin::allowed(self.origins.as_deref(), uri) && self.header_free(headers)
    }

    /// [`applies`](Self::applies) for a request whose target is a `Url`.
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) fn applies_to_url(&self, url: &url::Url, headers: &HeaderMap) -> bool {
        let allowed = match &self.origins {
            None => true,
            Some(origins) => origins.iter().any(|o| o.matches_url(url)),
        };
        allowed && self.header_free(headers)
    }

    /// Whether the token header may go in: the request has none of its
    /// own, or it is overridden.
    #[inline]
    fn header_free(&self, headers: &HeaderMap) -> bool {
        self.override_existing || !headers.contains_key(&self.header_name)
    }
}

/// `grpc-status`, whose value 16 is `UNAUTHENTICATED`.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether gRPC headers or trailers say `UNAUTHENTICATED`.
pub(crate) fn grpc_unauthenticated(headers: &HeaderMap) -> bool {
    !headers.is_empty()
        && headers
            .get(GRPC_STATUS)
            .is_some_and(|v| v.as_bytes() == b"16")
}

/// Whether an answer says the token was rejected: 401 without
/// `error="insufficient_scope"` (in a `Bearer` or a `DPoP` challenge) and
/// without a DPoP `error="use_dpop_nonce"` (see `nonce_challenge`), or a
/// gRPC `UNAUTHENTICATED` in the headers (gRPC is HTTP/2 only, so other
/// answers skip that lookup).
#[inline]
pub(crate) fn rejected(status: StatusCode, version: http::Version, headers: &HeaderMap) -> bool {
    if status == StatusCode::UNAUTHORIZED {
        return unauthorized_rejects(headers);
    }
    version == http::Version::HTTP_2 && grpc_unauthenticated(headers)
}

/// Whether a 401 rejects the token: it does unless its challenge says
/// `error="insufficient_scope"` (`Bearer` or `DPoP`) or, for DPoP,
/// `error="use_dpop_nonce"` (the token is fine; a nonce is wanted).
#[cold]
fn unauthorized_rejects(headers: &HeaderMap) -> bool {
    let not_the_token = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            crate::challenge::bearer_error(v).as_deref() == Some("insufficient_scope")
                || matches!(
                    crate::challenge::dpop_error(v).as_deref(),
                    Some("insufficient_scope" | "use_dpop_nonce")
                )
        });
    !not_the_token
}

/// Whether an answer is a resource server's demand for a DPoP nonce
/// (RFC 9449 §9): 401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"`.
/// The token is fine; the request goes again with a proof carrying the
/// nonce of the answer's `DPoP-Nonce`.
#[cfg(feature = "jose")]
pub(crate) fn nonce_challenge(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| crate::challenge::dpop_error(v).as_deref() == Some("use_dpop_nonce"))
}
