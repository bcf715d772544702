use super::body::ResponseBody;
#[cfg(feature = "jose")]
use super::future::DpopAttempt;
use super::future::{ResponseFuture, prepare};
use super::local::{FaceHandle, Local};
use crate::cache::{Stats, TokenCache};
use crate::error::BoxError;
use crate::face::{Face, Settings};
use crate::replay::ReplayBody;
use http::{Request, Response};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower_service::Service;

/// The service [`TokenLayer`](crate::TokenLayer) produces: attaches the cached
/// token to each request, and handles 401 answers. See the
/// [module docs](crate::layer).
///
/// `Clone + Send + Sync` when the inner service is; every clone shares one
/// cache. `poll_ready` is the inner service's.
///
/// The inner service must be `Clone`, even with replay off: a request that
/// waits for a token gives back the capacity its `poll_ready` reserved by
/// dropping the instance made ready, and makes a clone ready once the token
/// is there (see the [module docs](crate::layer)); a retry after a 401 also
/// goes through a clone of its own.
#[derive(Clone)]
pub struct TokenService<S> {
    inner: S,
    face: Arc<Face>,
    /// This clone's copy of the current token's header and deadlines.
    local: Local,
}

impl<S> fmt::Debug for TokenService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService")
            .field("cache", &self.face.cache)
            .finish_non_exhaustive()
    }
}

impl<S> TokenService<S> {
    /// Wraps `inner`, sharing `cache`, with the default settings of
    /// [`TokenLayer`](crate::TokenLayer) (`Authorization`, every origin,
    /// replay after a 401), and the cache's DPoP key, if it has one.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        #[allow(unused_mut)]
        let mut settings = Settings::default();
        #[cfg(feature = "jose")]
        {
            settings.dpop = cache.shared.config.dpop.clone();
        }
        let face = Face { cache, settings };
        Self::from_face(inner, Arc::new(face))
    }

    pub(crate) fn from_face(inner: S, face: Arc<Face>) -> Self {
        Self {
            inner,
            face,
            local: Local::new(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The cache this service shares.
    pub fn cache(&self) -> &TokenCache {
        &self.face.cache
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> Stats {
        self.face.cache.stats()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TokenService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: ReplayBody,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        attach_and_call(&mut self.inner, &self.face, &mut self.local, req)
    }
}

/// Sends `req` through `inner` with `face`'s token: the request path of
/// [`TokenService`], and of each route of a
/// [`TokenRouter`](crate::router::TokenRouter). `local` is the caller's copy
/// of the face's current token.
pub(crate) fn attach_and_call<S, ReqBody, ResBody>(
    inner: &mut S,
    face: &Arc<Face>,
    local: &mut Local,
    req: Request<ReqBody>,
) -> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: ReplayBody,
{
    let (shared, settings) = (&face.cache.shared, &face.settings);
    if !settings.applies(req.uri(), req.headers()) {
        return ResponseFuture::passthrough(inner.call(req));
    }
    let now = Instant::now();
    let wall = shared.wall();
    let usable = local.usable(face, shared.current_generation(), now, wall);
    if let Some(current) = &usable
        && current.refresh_due
    {
        shared.refresh_ahead(current.generation, now);
    }
    match usable {
        Some(current) if !settings.retry_unauthorized => {
            // Nothing to copy for a retry: the request is not moved until
            // the inner service takes it.
            let mut req = req;
            attach(&mut req, settings, current.header);
            #[cfg(feature = "jose")]
            let proof = match prove(&mut req, settings, current.ath.as_ref()) {
                Ok(proof) => proof,
                Err(e) => return unsent(inner, e),
            };
            let fut = inner.call(req);
            let fut = ResponseFuture::called(fut, current.generation, None, current.face);
            #[cfg(feature = "jose")]
            let fut = fut.with_dpop_attempt(proof);
            fut
        }
        Some(current) => {
            let (mut req, retry) = prepare(inner, req, settings);
            attach(&mut req, settings, current.header);
            #[cfg(feature = "jose")]
            let proof = match prove(&mut req, settings, current.ath.as_ref()) {
                Ok(proof) => proof,
                Err(e) => return unsent(inner, e),
            };
            let fut = inner.call(req);
            let fut = ResponseFuture::called(fut, current.generation, retry, current.face);
            #[cfg(feature = "jose")]
            let fut = fut.with_dpop_attempt(proof);
            fut
        }
        None => {
            // Wait for a token holding no capacity of the inner service:
            // the instance made ready for this call is dropped, which gives
            // back what its `poll_ready` reserved (a `Buffer` slot, a
            // `ConcurrencyLimit` permit), since the token endpoint may be
            // reached through the same bounded stack. The future makes a
            // clone of its own ready once the token is there.
            let waiting = inner.clone();
            drop(std::mem::replace(inner, waiting.clone()));
            ResponseFuture::acquire(waiting, req, FaceHandle::Shared(Arc::clone(face)))
        }
    }
}

/// A DPoP proof of its own for this request (RFC 9449 §7), when the token
/// is DPoP-bound (`ath`) and the face has the key.
#[cfg(feature = "jose")]
#[inline]
fn prove<B>(
    req: &mut Request<B>,
    settings: &Settings,
    ath: Option<&Arc<str>>,
) -> Result<Option<Box<DpopAttempt>>, BoxError> {
    match (ath, &settings.dpop) {
        (Some(ath), Some(dpop)) => {
            dpop.attach(req, ath)
                .map_err(|e| BoxError::from(crate::Error::from(e)))?;
            Ok(Some(DpopAttempt::new(req.uri().clone())))
        }
        _ => Ok(None),
    }
}

/// A request that fails before it is sent: the instance `poll_ready` made
/// ready is given back (dropped), as for a request that waits.
#[cfg(feature = "jose")]
#[cold]
fn unsent<S, ReqBody>(inner: &mut S, error: BoxError) -> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>> + Clone,
{
    drop(std::mem::replace(inner, inner.clone()));
    ResponseFuture::failed(error)
}

/// Puts what the token adds to a request into it: the header value, in the
/// face's header (`Authorization` unless configured otherwise). Every
/// attempt of the layer and the router goes through here, the first (from
/// the clone's copy) and those that waited for a token or a retry.
#[inline]
pub(crate) fn attach<B>(req: &mut Request<B>, settings: &Settings, value: http::HeaderValue) {
    req.headers_mut().insert(&settings.header_name, value);
}
