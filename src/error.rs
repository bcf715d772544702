//! Error types.
//!
//! [`TokenService`](crate::TokenService) uses `type Error = BoxError`, like
//! tower's own middleware: errors of the inner service pass through
//! unchanged, and a request that could not get a token fails with an
//! [`Error`] that callers can downcast to. Token sources, the revocation
//! service and discovery return [`Error`] directly.
//!
//! [`Error`] is `Clone` (the one failed fetch is handed to every caller that
//! waited on it) and never contains a client secret, an access token or a
//! refresh token: body excerpts and OAuth error descriptions have every
//! credential the request carried replaced by `[redacted]`, whether the
//! server echoed it as sent, percent-encoded or JSON-escaped.
//!
//! Every error built from an HTTP answer ([`Error::OAuth`],
//! [`Error::Status`], [`Error::Provider`]) keeps the answer's `Retry-After`,
//! whatever its body said; [`Error::retry_after`] returns it, and the cache
//! waits at least that long before asking again.
//!
//! # Example
//!
//! ```
//! use tower_token::error::{Endpoint, Error, ErrorCode};
//!
//! fn explain(err: &(dyn std::error::Error + 'static)) -> String {
//!     match err.downcast_ref::<Error>() {
//!         Some(Error::OAuth { code: ErrorCode::InvalidClient, .. }) => "check the client credentials".into(),
//!         Some(e) if e.is_retriable() => format!("temporary: {e}"),
//!         Some(e) => format!("token error: {e}"),
//!         None => format!("other error: {err}"),
//!     }
//! }
//!
//! let err = Error::OAuth {
//!     endpoint: Endpoint::Token,
//!     status: http::StatusCode::UNAUTHORIZED,
//!     code: ErrorCode::InvalidClient,
//!     description: Some("unknown client".into()),
//!     uri: None,
//!     retry_after: None,
//! };
//! assert_eq!(explain(&err), "check the client credentials");
//!
//! // A busy server that sends an OAuth error body still says when to come back.
//! let busy = Error::OAuth {
//!     endpoint: Endpoint::Token,
//!     status: http::StatusCode::TOO_MANY_REQUESTS,
//!     code: ErrorCode::Other("slow_down".into()),
//!     description: None,
//!     uri: None,
//!     retry_after: Some(std::time::Duration::from_secs(30)),
//! };
//! assert!(busy.is_retriable());
//! assert_eq!(busy.retry_after(), Some(std::time::Duration::from_secs(30)));
//! ```

use http::StatusCode;
use std::{fmt, sync::Arc, time::Duration};

/// A type-erased error, as used by tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which endpoint an [`Error`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// The token endpoint (RFC 6749 §3.2), or a user-supplied token source.
    Token,
    /// The revocation endpoint (RFC 7009).
    Revocation,
    /// The authorization server metadata document (RFC 8414).
    Discovery,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Token => "token",
            Endpoint::Revocation => "revocation",
            Endpoint::Discovery => "discovery",
        })
    }
}

/// An OAuth 2.0 error code (RFC 6749 §5.2, RFC 7009 §2.2.1), with an
/// extension variant for codes outside the registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`
    InvalidClient,
    /// `invalid_grant`
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// `unsupported_token_type` (RFC 7009)
    UnsupportedTokenType,
    /// `server_error`
    ServerError,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
    /// Any other code, as the server sent it.
    Other(String),
}

impl ErrorCode {
    /// Maps a code as sent on the wire.
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "unsupported_token_type" => Self::UnsupportedTokenType,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a 2xx answer could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidResponse {
    /// The body was empty.
    EmptyBody,
    /// The body is not JSON (an HTML page, plain text, …).
    NotJson,
    /// The body ends in the middle of a JSON document.
    Truncated,
    /// The body is JSON but not an object.
    NotAnObject,
    /// No `access_token` field.
    MissingAccessToken,
    /// `access_token` is not a string.
    AccessTokenNotString,
    /// `access_token` is the empty string.
    EmptyAccessToken,
    /// `access_token` holds bytes that cannot go in an HTTP header
    /// (control characters, spaces, non-ASCII).
    AccessTokenNotHeaderSafe,
    /// `refresh_token` is present but not a usable string.
    InvalidRefreshToken,
    /// `expires_in` cannot be used as a lifetime.
    InvalidExpiresIn(ExpiresInProblem),
    /// `token_type` names a scheme this crate does not send (e.g. `mac`).
    UnsupportedTokenType(String),
    /// A provider envelope (such as OneLogin's `status`/`data`) did not have
    /// the expected shape.
    BadEnvelope(&'static str),
    /// A field has the wrong type.
    InvalidField(&'static str),
    /// A required field is missing (e.g. `token_endpoint` in a metadata
    /// document).
    MissingField(&'static str),
    /// A metadata document names another issuer than the one asked for
    /// (RFC 8414 §3.3).
    IssuerMismatch,
    /// The server answered a DPoP token request with a token that is not
    /// DPoP-bound (`token_type` `Bearer`), and the downgrade is not allowed
    /// (see [`Dpop::allow_bearer_downgrade`](crate::dpop::Dpop::allow_bearer_downgrade)).
    DpopDowngrade,
}

/// What is wrong with an `expires_in` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiresInProblem {
    /// Below zero.
    Negative,
    /// Zero: the token would be expired on arrival.
    Zero,
    /// Not a whole number of seconds.
    Fractional,
    /// Larger than a 64-bit number of seconds.
    TooLarge,
    /// A string that is not a number, or another JSON type.
    NotANumber,
}

impl fmt::Display for InvalidResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyBody => f.write_str("the body is empty"),
            Self::NotJson => f.write_str("the body is not JSON"),
            Self::Truncated => f.write_str("the JSON body is truncated"),
            Self::NotAnObject => f.write_str("the JSON body is not an object"),
            Self::MissingAccessToken => f.write_str("`access_token` is missing"),
            Self::AccessTokenNotString => f.write_str("`access_token` is not a string"),
            Self::EmptyAccessToken => f.write_str("`access_token` is empty"),
            Self::AccessTokenNotHeaderSafe => {
                f.write_str("`access_token` has characters that are not allowed in a header")
            }
            Self::InvalidRefreshToken => f.write_str("`refresh_token` is not a usable string"),
            Self::InvalidExpiresIn(p) => write!(f, "`expires_in` is {p}"),
            Self::UnsupportedTokenType(t) => write!(f, "`token_type` `{t}` is not supported"),
            Self::BadEnvelope(what) => write!(f, "unexpected envelope: {what}"),
            Self::InvalidField(name) => write!(f, "`{name}` has the wrong type"),
            Self::MissingField(name) => write!(f, "`{name}` is missing"),
            Self::IssuerMismatch => f.write_str("`issuer` is not the issuer asked for"),
            Self::DpopDowngrade => f.write_str(
                "`token_type` is `Bearer` in answer to a DPoP token request: the token is not bound to the key",
            ),
        }
    }
}

impl fmt::Display for ExpiresInProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Negative => "negative",
            Self::Zero => "zero",
            Self::Fractional => "not a whole number",
            Self::TooLarge => "too large",
            Self::NotANumber => "not a number",
        })
    }
}

/// An error returned by a token endpoint, a revocation endpoint, a discovery
/// document or a token source.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an OAuth error (RFC 6749 §5.2), including a
    /// 2xx answer that carries an error body.
    #[error("{endpoint} endpoint answered {status} with OAuth error `{code}`{}", describe(.description))]
    OAuth {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The HTTP status of the answer.
        status: StatusCode,
        /// The `error` field.
        code: ErrorCode,
        /// The `error_description` field, with credentials redacted.
        description: Option<String>,
        /// The `error_uri` field.
        uri: Option<String>,
        /// The `Retry-After` delay, when the answer had one.
        retry_after: Option<Duration>,
    },
    /// The server answered with an HTTP status that carries no OAuth error.
    #[error("{endpoint} endpoint answered HTTP {status}")]
    Status {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The HTTP status.
        status: StatusCode,
        /// The `Retry-After` delay, when the answer had one.
        retry_after: Option<Duration>,
        /// The start of the body, with credentials redacted.
        body: String,
    },
    /// A provider-specific failure (for example OneLogin's `status` envelope).
    #[error("{endpoint} endpoint answered {status}: {kind}")]
    Provider {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The HTTP status.
        status: StatusCode,
        /// What the provider said.
        kind: ProviderError,
        /// The `Retry-After` delay, when the answer had one.
        retry_after: Option<Duration>,
    },
    /// The server answered with a redirect, which is never followed.
    #[error("{endpoint} endpoint answered with a redirect ({status}); redirects are not followed")]
    Redirect {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The 3xx status.
        status: StatusCode,
    },
    /// The server could not be reached, or the connection broke.
    #[error("could not talk to the {endpoint} endpoint: {source}")]
    Transport {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The client's error.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// No complete answer within the configured timeout.
    #[error("{endpoint} endpoint did not answer within {timeout:?}")]
    Timeout {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The answer's body is larger than the configured cap.
    #[error("{endpoint} endpoint sent a body larger than {limit} bytes")]
    BodyTooLarge {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The cap.
        limit: usize,
    },
    /// A success answer that cannot be used.
    #[error("unusable answer from the {endpoint} endpoint ({status}): {reason}")]
    InvalidResponse {
        /// Where the error came from.
        endpoint: Endpoint,
        /// The HTTP status of the answer.
        status: StatusCode,
        /// What is wrong with it.
        reason: InvalidResponse,
    },
    /// A user-supplied token source failed.
    #[error("token source failed: {0}")]
    Source(Arc<dyn std::error::Error + Send + Sync>),
    /// The token fetch ended without an answer (the task running it was
    /// cancelled or panicked), or there was no tokio runtime to run it on.
    #[error("the token fetch ended without an answer")]
    Aborted,
    /// The API rejected the last tokens one after the other (401), so the
    /// cache is backing off before it fetches another: the API rejects
    /// every token (wrong audience, clock skew, a revoked client). Requests
    /// during the backoff fail with this error and are not sent.
    #[error("the API rejected {consecutive} tokens in a row; backing off before fetching another")]
    TokenRejected {
        /// How many tokens in a row the API rejected.
        consecutive: u32,
    },
    /// Client authentication detection ([`ClientAuth::AutoDetect`](crate::ClientAuth::AutoDetect))
    /// tried both styles and the server refused both: here are both
    /// answers.
    #[error(
        "the server refused the client both with Basic ({basic}) and with the secret in the body ({body})"
    )]
    ClientAuthFailed {
        /// The answer to Basic authentication.
        basic: Box<Error>,
        /// The answer to the secret in the body.
        body: Box<Error>,
    },
    /// The request could not be built (bad configuration detected late).
    #[error("the {endpoint} request could not be built: {reason}")]
    Request {
        /// Where the error came from.
        endpoint: Endpoint,
        /// What went wrong.
        reason: String,
    },
    /// No DPoP proof could be made for an API request (see
    /// [`crate::dpop`]); the request was not sent.
    #[cfg(feature = "jose")]
    #[error(transparent)]
    Dpop(#[from] crate::dpop::DpopError),
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(d) => format!(": {d}"),
        None => String::new(),
    }
}

/// A provider-specific failure that a caller may want to match on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderError {
    /// OneLogin: `Content-Type` missing or not `application/json` (400).
    ContentType,
    /// OneLogin: the access token to revoke is missing (400).
    AccessTokenMissing,
    /// OneLogin: the `Authorization` header is missing or malformed (400).
    AuthorizationMissing,
    /// OneLogin: client id or secret are wrong (401).
    AuthenticationFailure,
    /// OneLogin: no route for this method and path (404).
    NoRoute,
    /// Any other message from the provider.
    Other {
        /// The provider's own type or code, if any.
        kind: String,
        /// The provider's message, with credentials redacted.
        message: String,
    },
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ContentType => {
                f.write_str("content type is not specified or specified incorrectly")
            }
            Self::AccessTokenMissing => f.write_str("access token missing"),
            Self::AuthorizationMissing => f.write_str("the authorization information is missing"),
            Self::AuthenticationFailure => f.write_str("authentication failure"),
            Self::NoRoute => f.write_str("no route exists"),
            Self::Other { kind, message } => write!(f, "{kind}: {message}"),
        }
    }
}

impl Error {
    /// Whether trying again later may succeed: transport errors, timeouts,
    /// 5xx answers and 429 (RFC 6749 `server_error` and
    /// `temporarily_unavailable` count too). An `invalid_client` is not.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } | Error::Aborted => true,
            Error::Status { status, .. } | Error::Provider { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Error::OAuth { status, code, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || matches!(
                        code,
                        ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable
                    )
            }
            Error::Source(_) | Error::TokenRejected { .. } => true,
            Error::Redirect { .. }
            | Error::ClientAuthFailed { .. }
            | Error::BodyTooLarge { .. }
            | Error::InvalidResponse { .. }
            | Error::Request { .. } => false,
            #[cfg(feature = "jose")]
            Error::Dpop(_) => false,
        }
    }

    /// The server's `Retry-After`, when it sent one: kept from every
    /// answer, whether its body was an OAuth error, a provider envelope or
    /// anything else.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. }
            | Error::OAuth { retry_after, .. }
            | Error::Provider { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The OAuth error code, when the server sent one.
    pub fn oauth_code(&self) -> Option<&ErrorCode> {
        match self {
            Error::OAuth { code, .. } => Some(code),
            Error::ClientAuthFailed { body, .. } => body.oauth_code(),
            _ => None,
        }
    }

    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::OAuth { status, .. }
            | Error::Status { status, .. }
            | Error::Provider { status, .. }
            | Error::Redirect { status, .. }
            | Error::InvalidResponse { status, .. } => Some(*status),
            Error::ClientAuthFailed { body, .. } => body.status(),
            _ => None,
        }
    }

    /// This error with every occurrence of each secret removed from the
    /// text it keeps from the server.
    pub(crate) fn redacted(self, secrets: &[&str]) -> Self {
        let clean = |text: String| redact(&text, secrets);
        match self {
            Error::OAuth {
                endpoint,
                status,
                code,
                description,
                uri,
                retry_after,
            } => Error::OAuth {
                endpoint,
                status,
                code: match code {
                    ErrorCode::Other(other) => ErrorCode::Other(clean(other)),
                    known => known,
                },
                description: description.map(clean),
                uri: uri.map(clean),
                retry_after,
            },
            Error::Status {
                endpoint,
                status,
                retry_after,
                body,
            } => Error::Status {
                endpoint,
                status,
                retry_after,
                body: clean(body),
            },
            Error::Provider {
                endpoint,
                status,
                kind: ProviderError::Other { kind, message },
                retry_after,
            } => Error::Provider {
                endpoint,
                status,
                kind: ProviderError::Other {
                    kind: clean(kind),
                    message: clean(message),
                },
                retry_after,
            },
            Error::ClientAuthFailed { basic, body } => Error::ClientAuthFailed {
                basic: Box::new(basic.redacted(secrets)),
                body: Box::new(body.redacted(secrets)),
            },
            Error::InvalidResponse {
                endpoint,
                status,
                reason: InvalidResponse::UnsupportedTokenType(token_type),
            } => Error::InvalidResponse {
                endpoint,
                status,
                reason: InvalidResponse::UnsupportedTokenType({
                    let token_type = clean(token_type);
                    if holds_secret_start(&token_type, secrets) {
                        "[redacted]".to_owned()
                    } else {
                        token_type
                    }
                }),
            },
            other => other,
        }
    }

    pub(crate) fn transport(endpoint: Endpoint, source: BoxError) -> Self {
        Error::Transport {
            endpoint,
            source: Arc::from(source),
        }
    }

    pub(crate) fn invalid(endpoint: Endpoint, status: StatusCode, reason: InvalidResponse) -> Self {
        Error::InvalidResponse {
            endpoint,
            status,
            reason,
        }
    }
}

/// An error in the configuration of a token source, the layer, a revocation
/// service or discovery, reported when it is built.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Plain `http` to a host other than loopback, without
    /// [`Transport::allow_insecure_http`](crate::Transport::allow_insecure_http).
    #[error("refusing plain http to `{host}`: use https, or allow insecure http explicitly")]
    InsecureUrl {
        /// The host of the URL.
        host: String,
    },
    /// No HTTP client: the `reqwest` feature is off and none was given with
    /// [`Transport::http_client`](crate::Transport::http_client).
    #[error(
        "no HTTP client: enable the `reqwest` feature or give one with `Transport::http_client`"
    )]
    NoHttpClient,
    /// The default HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
    /// A header name or value is not valid.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// A value that must be present is missing.
    #[error("missing configuration: {0}")]
    Missing(&'static str),
    /// A client authentication method without what it needs (a signing
    /// key, a client certificate, a secret, or the crypto feature).
    #[error("client authentication `{method}`: {missing}")]
    ClientAuth {
        /// The method, as RFC 8414 names it.
        method: &'static str,
        /// What is missing.
        missing: &'static str,
    },
    /// Discovery found no client authentication method that the server
    /// offers and the client has the material for.
    #[error("the server accepts client authentication by {offered}; this client lacks {missing}")]
    NoUsableClientAuth {
        /// The methods the server lists.
        offered: String,
        /// What the client would need for the first of them.
        missing: &'static str,
    },
    /// A setting has a value that makes no sense (such as a zero timeout).
    #[error("`{setting}` {reason}")]
    OutOfRange {
        /// The setting, as its builder method is named.
        setting: &'static str,
        /// What is wrong with the value.
        reason: &'static str,
    },
}

/// Whether `text` holds the start of a secret (its first 8 characters, or
/// all of a shorter one): what is left of a secret that a text was cut in
/// the middle of, before it could be redacted whole.
fn holds_secret_start(text: &str, secrets: &[&str]) -> bool {
    secrets.iter().any(|secret| {
        let start: String = secret.chars().take(8).collect();
        !start.is_empty() && text.contains(&start)
    })
}

/// Starts of bodies are kept for errors; this is how many bytes.
pub(crate) const EXCERPT_LEN: usize = 256;

/// A printable start of `body`, with each secret replaced by `[redacted]`.
pub(crate) fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    // Redact the whole body (already capped by the transport) before
    // cutting it, so that no part of a secret survives at the cut.
    let text = String::from_utf8_lossy(body);
    let printable: String = redact(&text, secrets)
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    // Again once control characters are spaces: a secret with a space, sent
    // back with a tab or a NUL in its place, reads as the secret now.
    let mut text = redact(&printable, secrets);
    if let Some((cut, _)) = text.char_indices().nth(EXCERPT_LEN) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// `text` with every occurrence of each secret replaced by `[redacted]`.
///
/// A server may echo a secret as it was sent, or encoded: percent-encoded
/// (`%2B` or `%2b`, a space as `+` or `%20`), or JSON-escaped (`\/` for `/`,
/// `\u002b` for `+`, surrogate pairs, …), or percent-encoded inside a JSON
/// string. The text is read in each of these decodings, every stretch that
/// decodes to a secret is found, and those stretches of the original text
/// are replaced; the rest of the text is kept as the server sent it.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let needles: Vec<Vec<char>> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().collect())
        .collect();
    if needles.is_empty() || text.is_empty() {
        return text.to_owned();
    }
    let mut views = vec![plain_view(text)];
    if text.contains('\\') {
        views.push(json_view(text));
    }
    if text.contains('%') {
        let decoded: Vec<Vec<Unit>> = views.iter().map(|v| percent_view(v)).collect();
        views.extend(decoded);
    }
    let mut spans = Vec::new();
    for view in &views {
        for needle in &needles {
            find_spans(view, needle, &mut spans);
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut kept_from = 0;
    let mut spans = spans.into_iter().peekable();
    while let Some((start, mut end)) = spans.next() {
        // Overlapping or touching stretches become one.
        while let Some(&(next_start, next_end)) = spans.peek() {
            if next_start > end {
                break;
            }
            end = end.max(next_end);
            spans.next();
        }
        if end <= kept_from {
            continue;
        }
        out.push_str(&text[kept_from..start.max(kept_from)]);
        out.push_str("[redacted]");
        kept_from = end;
    }
    out.push_str(&text[kept_from..]);
    out
}

/// One character of a decoded reading of a text, with the byte range of the
/// original text it was decoded from.
#[derive(Clone, Copy, Debug)]
struct Unit {
    ch: char,
    start: usize,
    end: usize,
    /// A literal `+`, which a form encoding uses for a space.
    plus: bool,
}

/// The text as it is.
fn plain_view(text: &str) -> Vec<Unit> {
    text.char_indices()
        .map(|(i, ch)| Unit {
            ch,
            start: i,
            end: i + ch.len_utf8(),
            plus: ch == '+',
        })
        .collect()
}

/// The text with JSON string escapes decoded, tolerantly: an escape that
/// does not parse is kept as it is.
fn json_view(text: &str) -> Vec<Unit> {
    let mut units = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(ch) = text[i..].chars().next() {
        if ch == '\\'
            && let Some((decoded, len)) = json_escape(&text.as_bytes()[i..])
        {
            units.push(Unit {
                ch: decoded,
                start: i,
                end: i + len,
                plus: false,
            });
            i += len;
            continue;
        }
        units.push(Unit {
            ch,
            start: i,
            end: i + ch.len_utf8(),
            plus: ch == '+',
        });
        i += ch.len_utf8();
    }
    units
}

/// The character a JSON escape at the start of `s` stands for, and the
/// escape's length in bytes.
fn json_escape(s: &[u8]) -> Option<(char, usize)> {
    let ch = match *s.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let first = hex4(s.get(2..6)?)?;
            if (0xD800..0xDC00).contains(&first)
                && s.get(6..8) == Some(b"\\u")
                && let Some(second) = s.get(8..12).and_then(hex4)
                && (0xDC00..0xE000).contains(&second)
            {
                let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return Some((char::from_u32(code)?, 12));
            }
            // A lone surrogate stands for no character.
            return Some((char::from_u32(first).unwrap_or('\u{FFFD}'), 6));
        }
        _ => return None,
    };
    Some((ch, 2))
}

/// Four hex digits, in either case.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
}

/// `units` with percent escapes (`%2B`, `%2b`, multi-byte UTF-8 runs)
/// decoded, tolerantly: a `%` not followed by two hex digits is kept.
fn percent_view(units: &[Unit]) -> Vec<Unit> {
    // The decoded bytes, each with the range it came from.
    let mut bytes: Vec<(u8, Unit)> = Vec::with_capacity(units.len());
    let mut i = 0;
    while let Some(&unit) = units.get(i) {
        if unit.ch == '%'
            && let Some(&[high, low]) = units.get(i + 1..i + 3)
            && let (Some(h), Some(l)) = (high.ch.to_digit(16), low.ch.to_digit(16))
        {
            let span = Unit {
                end: low.end,
                plus: false,
                ..unit
            };
            // Two hex digits make one byte.
            bytes.push(((h * 16 + l) as u8, span));
            i += 3;
            continue;
        }
        let mut buf = [0; 4];
        for &b in unit.ch.encode_utf8(&mut buf).as_bytes() {
            bytes.push((b, unit));
        }
        i += 1;
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&(lead, first)) = bytes.get(i) {
        let len = match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        let ch = bytes.get(i..i + len).and_then(|run| {
            let mut buf = [0; 4];
            for (slot, (b, _)) in buf.iter_mut().zip(run) {
                *slot = *b;
            }
            std::str::from_utf8(&buf[..len]).ok()?.chars().next()
        });
        match ch {
            Some(ch) => {
                decoded.push(Unit {
                    ch,
                    start: first.start,
                    end: bytes[i + len - 1].1.end,
                    plus: len == 1 && first.plus,
                });
                i += len;
            }
            None => {
                decoded.push(Unit {
                    ch: '\u{FFFD}',
                    plus: false,
                    ..first
                });
                i += 1;
            }
        }
    }
    decoded
}

/// Adds the original byte range of every place where `view` reads as
/// `needle` (a literal `+` reads as `+` or as a space).
fn find_spans(view: &[Unit], needle: &[char], spans: &mut Vec<(usize, usize)>) {
    let Some(&first) = needle.first() else {
        return;
    };
    if view.len() < needle.len() {
        return;
    }
    let same = |unit: &Unit, c: char| unit.ch == c || (unit.plus && c == ' ');
    for start in 0..=view.len() - needle.len() {
        if !same(&view[start], first) {
            continue;
        }
        let stretch = &view[start..start + needle.len()];
        if stretch.iter().zip(needle).all(|(unit, &c)| same(unit, c)) {
            spans.push((stretch[0].start, stretch[needle.len() - 1].end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_redacts_and_truncates() {
        let body = format!("bad secret a+b/c:d%e f or {}", "x".repeat(2000));
        let e = excerpt(body.as_bytes(), &["a+b/c:d%e f"]);
        assert!(e.starts_with("bad secret [redacted] or xxx"), "{e}");
        assert!(e.chars().count() <= EXCERPT_LEN + 1);
        let e = excerpt(b"secret=a%2Bb%2Fc%3Ad%25e+f", &["a+b/c:d%e f"]);
        assert_eq!(e, "secret=[redacted]");
    }

    #[test]
    fn encoded_echoes_are_redacted() {
        let secret = "a+b/c:d%e f";
        for echo in [
            "a+b/c:d%e f",
            "a%2Bb%2Fc%3Ad%25e+f",
            "a%2bb%2fc%3ad%25e+f",
            "a%2Bb%2Fc%3Ad%25e%20f",
            "a%2bb%2fc%3ad%25e%20f",
            "a+b%2Fc:d%25e+f",
            r"a+b\/c:d%e f",
            r"a\u002bb\/c:d%e f",
            r"a\u002Bb\/c:d%e f",
            r"\u0061\u002B\u0062\u002F\u0063\u003A\u0064\u0025\u0065\u0020\u0066",
            r"a%2Bb%2Fc%3Ad%25e\u0020f",
        ] {
            let text = format!("before {echo} after");
            assert_eq!(
                redact(&text, &[secret]),
                "before [redacted] after",
                "{echo}"
            );
        }
        // Non-ASCII secrets: surrogate pairs, percent-encoded UTF-8.
        let secret = "p\u{e9}\u{1F600}q";
        for echo in [
            "p\u{e9}\u{1F600}q",
            r"p\u00e9\ud83d\ude00q",
            r"p\u00E9\uD83D\uDE00q",
            "p%C3%A9%F0%9F%98%80q",
            "p%c3%a9%f0%9f%98%80q",
        ] {
            assert_eq!(
                redact(&format!("<{echo}>"), &[secret]),
                "<[redacted]>",
                "{echo}"
            );
        }
        // The rest of the text stays as sent, broken escapes included.
        let text = r#"{"msg":"x\/y \u12 %zz \q \ud800","s":"a\u002bb\/c:d%e f"}"#;
        assert_eq!(
            redact(text, &["a+b/c:d%e f"]),
            r#"{"msg":"x\/y \u12 %zz \q \ud800","s":"[redacted]"}"#
        );
        // A secret that itself looks like an escape is still found as sent.
        assert_eq!(redact(r"k=x\ny%41", &[r"x\ny%41"]), "k=[redacted]");
        // Overlapping and adjacent echoes become one marker.
        assert_eq!(redact("aaaa", &["aa", "aaa"]), "[redacted]");
        assert_eq!(redact("", &["s"]), "");
        assert_eq!(redact("text", &[""]), "text");
    }

    #[test]
    fn redacted_cleans_an_unsupported_token_type() {
        // A refresh token the server echoed as `token_type`: the sources
        // redact it from the error afterwards, as they do the other texts.
        let error = Error::invalid(
            Endpoint::Token,
            StatusCode::OK,
            InvalidResponse::UnsupportedTokenType("x-rt-42".to_owned()),
        )
        .redacted(&["rt-42"]);
        assert!(matches!(
            error,
            Error::InvalidResponse {
                reason: InvalidResponse::UnsupportedTokenType(t),
                ..
            } if t == "x-[redacted]"
        ));
        // Cut to 32 characters before the sources redact it: what is left
        // of a longer refresh token goes too.
        let refresh = "rt-0123456789abcdefghijklmnopqrstuvwxyz";
        let error = Error::invalid(
            Endpoint::Token,
            StatusCode::OK,
            InvalidResponse::UnsupportedTokenType(refresh.chars().take(32).collect()),
        )
        .redacted(&[refresh]);
        assert!(matches!(
            error,
            Error::InvalidResponse {
                reason: InvalidResponse::UnsupportedTokenType(t),
                ..
            } if t == "[redacted]"
        ));
    }

    #[test]
    fn excerpt_redacts_what_control_characters_hid() {
        let body = b"bad secret a\tb\0c and a\x01b c";
        let text = excerpt(body, &["a b c"]);
        assert!(!text.contains("a b c"), "{text}");
        assert_eq!(text, "bad secret [redacted] and [redacted]");
    }

    #[test]
    fn codes_round_trip() {
        for code in [
            "invalid_client",
            "invalid_grant",
            "unsupported_token_type",
            "weird_one",
        ] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
        assert_eq!(ErrorCode::parse("invalid_client"), ErrorCode::InvalidClient);
    }

    #[test]
    fn retriable_classes() {
        let status = |s: u16| Error::Status {
            endpoint: Endpoint::Token,
            status: StatusCode::from_u16(s).unwrap(),
            retry_after: None,
            body: String::new(),
        };
        assert!(status(500).is_retriable());
        assert!(status(429).is_retriable());
        assert!(!status(400).is_retriable());
        let oauth = Error::OAuth {
            endpoint: Endpoint::Token,
            status: StatusCode::UNAUTHORIZED,
            code: ErrorCode::InvalidClient,
            description: None,
            uri: None,
            retry_after: None,
        };
        assert!(!oauth.is_retriable());
    }
}
