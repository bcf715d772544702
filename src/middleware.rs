//! The cache as a [`reqwest_middleware`] middleware (feature
//! `reqwest-middleware`), so reqwest users keep `ClientWithMiddleware`,
//! `RequestBuilder` and `reqwest::Response`.
//!
//! [`TokenMiddleware`] is a face of the same [`TokenCache`] as
//! [`TokenLayer`]: one token for every request, single flight, refresh
//! ahead, origin binding, the same stats. A request answered 401 (without
//! `error="insufficient_scope"`) drops the token it carried and is sent once
//! more with a fresh one: the request's head is copied before it is sent
//! and a body made from bytes is kept (a reference count), while a streamed
//! body is recorded as it is sent and replayed whole, up to the replay
//! limit (see [`crate::replay`]). Every attempt goes through the
//! middlewares after this one again, with the same extensions. With a [DPoP](crate::dpop) key, each attempt carries a
//! new proof, and a `use_dpop_nonce` challenge is answered once with the
//! API's nonce, as the layer does.
//!
//! Build it from a [`TokenLayer`], which holds the settings (header, scheme,
//! origins, leeway, revocation, …): the middleware and any layer made from
//! the same `TokenLayer` share one cache.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use reqwest_middleware::ClientBuilder;
//! use tower_token::{middleware::TokenMiddleware, source, Token, TokenLayer};
//!
//! # fn main() -> Result<(), tower_token::BoxError> {
//! let layer = TokenLayer::builder(source::from_fn(|_| async {
//!     Ok::<_, std::io::Error>(Token::new("t-1").with_expires_in(Duration::from_secs(3600)))
//! }))
//! .allow_origin("https://api.example.com")
//! .build()?;
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(TokenMiddleware::new(&layer))
//!     .build();
//! // client.get("https://api.example.com/orders").send().await? carries the token.
//! # let _ = client;
//! # Ok(()) }
//! ```

use crate::cache::{CurrentToken, Stats, TokenCache};
use crate::face::{Face, rejected};
use crate::layer::TokenLayer;
use crate::replay::ReplayBody;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The token cache as a `reqwest_middleware::Middleware`; see the
/// [module docs](self).
#[derive(Clone)]
pub struct TokenMiddleware {
    face: Arc<Face>,
}

impl fmt::Debug for TokenMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenMiddleware")
            .field("cache", &self.face.cache)
            .finish_non_exhaustive()
    }
}

impl TokenMiddleware {
    /// A middleware sharing `layer`'s cache and settings.
    pub fn new(layer: &TokenLayer) -> Self {
        Self {
            face: Arc::clone(layer.face()),
        }
    }

    /// The cache this middleware shares.
    pub fn cache(&self) -> &TokenCache {
        &self.face.cache
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> Stats {
        self.face.cache.stats()
    }

    /// Puts the token in `request`, and a new DPoP proof for it when the
    /// token is DPoP-bound; returns the URI the proof names.
    fn attach(
        &self,
        request: &mut reqwest::Request,
        token: &CurrentToken,
    ) -> reqwest_middleware::Result<Option<http::Uri>> {
        request.headers_mut().insert(
            &self.face.settings.header_name,
            token.header_value().clone(),
        );
        #[cfg(feature = "jose")]
        if let (Some(dpop), Some(ath)) = (&self.face.settings.dpop, token.ath()) {
            let uri = http::Uri::try_from(request.url().as_str())
                .map_err(|_| crate::dpop::DpopError::NoTargetUri)
                .map_err(|e| reqwest_middleware::Error::middleware(crate::Error::from(e)))?;
            let proof = dpop
                .proof_with_ath(request.method(), &uri, Some(ath))
                .map_err(|e| reqwest_middleware::Error::middleware(crate::Error::from(e)))?;
            request.headers_mut().insert(crate::dpop::DPOP, proof);
            return Ok(Some(uri));
        }
        Ok(None)
    }
}

impl From<&TokenLayer> for TokenMiddleware {
    fn from(layer: &TokenLayer) -> Self {
        Self::new(layer)
    }
}

/// What sends a request again: its head, and a clone or replay of its body.
struct Again {
    method: http::Method,
    url: reqwest::Url,
    headers: http::HeaderMap,
    version: http::Version,
    timeout: Option<std::time::Duration>,
    body: Option<crate::replay::Replay<reqwest::Body>>,
}

impl Again {
    /// Keeps what a retry of `request` needs, or `None` when its body can
    /// never be sent again. Called before the token goes in.
    fn of(request: &mut reqwest::Request, limit: usize) -> Option<Self> {
        let body = match request.body_mut().take() {
            None => None,
            Some(body) => {
                let (body, replay) = body.replay(limit);
                *request.body_mut() = Some(body);
                if !replay.is_possible() {
                    return None;
                }
                Some(replay)
            }
        };
        Some(Self {
            method: request.method().clone(),
            url: request.url().clone(),
            headers: request.headers().clone(),
            version: request.version(),
            timeout: request.timeout().copied(),
            body,
        })
    }

    /// The request again, if its whole body can be sent again.
    fn rebuild(self) -> Option<reqwest::Request> {
        let mut request = reqwest::Request::new(self.method, self.url);
        *request.headers_mut() = self.headers;
        *request.version_mut() = self.version;
        *request.timeout_mut() = self.timeout;
        if let Some(replay) = self.body {
            *request.body_mut() = Some(replay.rebuild()?);
        }
        Some(request)
    }
}

/// What follows an answer (see [`TokenMiddleware::after`]).
enum Outcome {
    /// Hand it to the caller.
    Answer(reqwest::Response),
    /// The token was rejected: send this copy of the request once more.
    Retry(reqwest::Request),
}

/// The future [`Middleware::handle`] returns.
type Handled<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a>>;

impl TokenMiddleware {
    /// The common case, kept small: the cache holds a usable bearer token
    /// (its `generation` and `header`). The future holds the copy for a
    /// replay, the generation and the next hop's future, and touches no
    /// reference count of the token; the rest of the protocol is
    /// [`serve`](Self::serve), behind a box of its own, only after a
    /// rejection.
    fn send<'a>(
        &'a self,
        request: reqwest::Request,
        extensions: &'a mut Extensions,
        next: Next<'a>,
        (generation, header): (u64, http::HeaderValue),
    ) -> Handled<'a> {
        Box::pin(async move {
            let mut request = request;
            let settings = &self.face.settings;
            let again = if settings.retry_unauthorized {
                Again::of(&mut request, settings.replay_limit)
            } else {
                None
            };
            request.headers_mut().insert(&settings.header_name, header);
            let response = next.clone().run(request, extensions).await?;
            match self.after(response, generation, again) {
                Outcome::Answer(response) => Ok(response),
                Outcome::Retry(request) => {
                    Box::pin(self.serve(request, extensions, next, true)).await
                }
            }
        })
    }

    /// What follows an answer to a request that carried the token of
    /// `generation`: the answer, or the request to send once more after a
    /// rejection.
    fn after(&self, response: reqwest::Response, generation: u64, again: Option<Again>) -> Outcome {
        let cache = &self.face.cache;
        if !rejected(response.status(), response.version(), response.headers()) {
            cache.accepted_generation(generation);
            return Outcome::Answer(response);
        }
        let may_retry = cache.reject_generation(generation);
        match again.filter(|_| may_retry).and_then(Again::rebuild) {
            None => Outcome::Answer(response),
            Some(request) => {
                tracing::debug!("retrying the request with a fresh token");
                Outcome::Retry(request)
            }
        }
    }

    /// The whole protocol: waits for a token when none is usable, adds a
    /// DPoP proof per attempt and answers a nonce challenge, and sends the
    /// request once more after a rejection unless `last`.
    async fn serve(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        mut last: bool,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let settings = &self.face.settings;
        let cache = &self.face.cache;
        let mut token = cache
            .acquire()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        // A retry for a DPoP nonce happens once and may still be followed
        // by a retry with a fresh token.
        #[cfg(feature = "jose")]
        let mut nonce_retried = false;
        loop {
            let again = if settings.retry_unauthorized && !last {
                Again::of(&mut request, settings.replay_limit)
            } else {
                None
            };
            let target = self.attach(&mut request, &token)?;
            let response = next.clone().run(request, extensions).await?;
            #[cfg(feature = "jose")]
            if let (Some(dpop), Some(uri)) = (&settings.dpop, &target)
                && dpop.remember_nonce(uri, response.headers())
                && crate::face::nonce_challenge(response.status(), response.headers())
            {
                // The token is fine; the API wants a proof with its nonce.
                if !nonce_retried && let Some(next_request) = again.and_then(Again::rebuild) {
                    nonce_retried = true;
                    dpop.count_nonce_retry();
                    tracing::debug!("sending the request again with the API's DPoP nonce");
                    drop(response);
                    request = next_request;
                    continue;
                }
                return Ok(response);
            }
            #[cfg(not(feature = "jose"))]
            let _ = target;
            // A rejection drops the token, whichever attempt carried it; a
            // retry with a fresh token is the last attempt (`again` is
            // `None` on it).
            let next_request = match self.after(response, token.generation(), again) {
                Outcome::Answer(response) => return Ok(response),
                Outcome::Retry(request) => request,
            };
            token = cache
                .acquire()
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            request = next_request;
            last = true;
        }
    }
}

// Written out rather than with `async_trait`, so that a request the token
// does not apply to goes straight to the next hop, and the common case is
// a small future (see `send`).
impl Middleware for TokenMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        request: reqwest::Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Handled<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let settings = &self.face.settings;
        if !settings.applies_to_url(request.url(), request.headers()) {
            return next.run(request, extensions);
        }
        // With a DPoP key every attempt needs a proof: the whole protocol.
        #[cfg(feature = "jose")]
        let bearer = settings.dpop.is_none();
        #[cfg(not(feature = "jose"))]
        let bearer = true;
        match bearer.then(|| self.face.cache.current_header()).flatten() {
            Some(token) => self.send(request, extensions, next, token),
            None => Box::pin(self.serve(request, extensions, next, false)),
        }
    }
}
