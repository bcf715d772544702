use super::body::{ResponseBody, Watch};
use super::local::FaceHandle;
use super::service::attach;
use crate::cache::{CachedToken, Shared};
use crate::error::{BoxError, Error};
#[cfg(feature = "jose")]
use crate::face::nonce_challenge;
use crate::face::{Settings, rejected};
use crate::http_client::BoxFuture;
use crate::replay::{Replay, ReplayBody};
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_service::Service;

type Acquire = BoxFuture<'static, Result<Arc<CachedToken>, Error>>;

/// What is needed to send a request once more: its head, what replays its
/// body, and a clone of the inner service to make ready for it.
pub(crate) struct RetryTemplate<S, B> {
    svc: S,
    method: Method,
    uri: Uri,
    version: Version,
    /// `None` when the request had no headers (no clone, no drop).
    headers: Option<HeaderMap>,
    extensions: Extensions,
    body: Replay<B>,
}

impl<S, B> RetryTemplate<S, B> {
    fn rebuild(self) -> Option<Pending<S, B>> {
        let mut req = Request::new(self.body.rebuild()?);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        if let Some(headers) = self.headers {
            *req.headers_mut() = headers;
        }
        *req.extensions_mut() = self.extensions;
        Some(Box::new((self.svc, req)))
    }
}

/// A service and the request it is to send, waiting for a token (boxed:
/// only the slow paths hold one, and it keeps the future small).
type Pending<S, B> = Box<(S, Request<B>)>;

pin_project! {
    /// The future of [`TokenService`](crate::TokenService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        face: Option<FaceHandle>,
        // Set while the request carries a DPoP proof.
        dpop: Option<Box<DpopAttempt>>,
    }
}

/// A request sent with a DPoP proof: where it went (whose nonces its
/// answers carry), and whether it was already sent again for a nonce.
pub(crate) struct DpopAttempt {
    #[cfg_attr(not(feature = "jose"), allow(dead_code))]
    uri: Uri,
    #[cfg_attr(not(feature = "jose"), allow(dead_code))]
    nonce_retried: bool,
}

impl DpopAttempt {
    #[cfg_attr(not(feature = "jose"), allow(dead_code))]
    pub(crate) fn new(uri: Uri) -> Box<Self> {
        Box::new(Self {
            uri,
            nonce_retried: false,
        })
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // The request already had the header: sent as it was.
        Passthrough { #[pin] fut: S::Future },
        // Not sent: no proof could be made for it.
        Failed { error: Option<BoxError> },
        // Waiting for a token, holding no capacity of the inner service;
        // `first` until the request was sent once.
        Acquire { fut: Acquire, pending: Option<Pending<S, B>>, first: bool },
        // Making the future's own service clone ready, with the token of
        // `generation` in the request.
        Ready { pending: Option<Pending<S, B>>, generation: u64, retry: Option<Box<RetryTemplate<S, B>>> },
        // Sent with the token of `generation`; `retry` is what a 401 sends
        // again (none on the retry itself, whose answer is final).
        Called { #[pin] fut: S::Future, generation: u64, retry: Option<Box<RetryTemplate<S, B>>> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        Self {
            state: State::Passthrough { fut },
            face: None,
            dpop: None,
        }
    }

    #[cfg_attr(not(feature = "jose"), allow(dead_code))]
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            face: None,
            dpop: None,
        }
    }

    /// Marks the request as carrying a DPoP proof, when it does.
    #[cfg(feature = "jose")]
    #[inline]
    pub(crate) fn with_dpop_attempt(mut self, attempt: Option<Box<DpopAttempt>>) -> Self {
        self.dpop = attempt;
        self
    }

    pub(crate) fn called(
        fut: S::Future,
        generation: u64,
        retry: Option<Box<RetryTemplate<S, B>>>,
        face: FaceHandle,
    ) -> Self {
        Self {
            state: State::Called {
                fut,
                generation,
                retry,
            },
            face: Some(face),
            dpop: None,
        }
    }

    /// Waits for a token, then makes `svc` (not yet ready) ready and sends.
    pub(crate) fn acquire(svc: S, req: Request<B>, face: FaceHandle) -> Self {
        Self {
            state: State::Acquire {
                fut: acquire(&face.cache.shared),
                pending: Some(Box::new((svc, req))),
                first: true,
            },
            face: Some(face),
            dpop: None,
        }
    }
}

fn acquire(shared: &Arc<Shared>) -> Acquire {
    let shared = Arc::clone(shared);
    Box::pin(async move { shared.acquire().await })
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayBody,
{
    type Output = Result<Response<ResponseBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Passthrough { fut } => {
                    let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, None))));
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| Error::Aborted.into())));
                }
                StateProj::Acquire {
                    fut,
                    pending,
                    first,
                } => {
                    let token = ready!(fut.as_mut().poll(cx)).map_err(BoxError::from)?;
                    let (Some(mut pending), Some(face)) = (pending.take(), this.face.as_ref())
                    else {
                        return Poll::Ready(Err(Error::Aborted.into()));
                    };
                    // The first attempt keeps what a retry needs, copied
                    // before the token goes in; the retry keeps nothing.
                    let retry = if *first {
                        let (svc, req) = *pending;
                        let (req, retry) = prepare(&svc, req, &face.settings);
                        pending = Box::new((svc, req));
                        retry
                    } else {
                        None
                    };
                    attach(&mut pending.1, &face.settings, token.header.clone());
                    // A new proof for each attempt, for the token it carries.
                    #[cfg(feature = "jose")]
                    match (&face.settings.dpop, &token.ath) {
                        (Some(dpop), Some(ath)) => {
                            dpop.attach(&mut pending.1, ath)
                                .map_err(|e| BoxError::from(Error::from(e)))?;
                            match this.dpop.as_mut() {
                                Some(attempt) => attempt.uri = pending.1.uri().clone(),
                                None => {
                                    *this.dpop = Some(DpopAttempt::new(pending.1.uri().clone()))
                                }
                            }
                        }
                        _ => *this.dpop = None,
                    }
                    this.state.set(State::Ready {
                        pending: Some(pending),
                        generation: token.generation,
                        retry,
                    });
                }
                StateProj::Ready {
                    pending,
                    generation,
                    retry,
                } => {
                    let Some(p) = pending.as_mut() else {
                        return Poll::Ready(Err(Error::Aborted.into()));
                    };
                    ready!(p.0.poll_ready(cx)).map_err(Into::into)?;
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Err(Error::Aborted.into()));
                    };
                    let (mut svc, req) = *pending;
                    let fut = svc.call(req);
                    let (generation, retry) = (*generation, retry.take());
                    this.state.set(State::Called {
                        fut,
                        generation,
                        retry,
                    });
                }
                StateProj::Called {
                    fut,
                    generation,
                    retry,
                } => {
                    let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    let generation = *generation;
                    let Some(face) = this.face.as_ref() else {
                        return Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, None))));
                    };
                    let shared = &face.cache.shared;
                    #[cfg(feature = "jose")]
                    if let (Some(attempt), Some(dpop)) = (this.dpop.as_mut(), &face.settings.dpop) {
                        let has_nonce = dpop.remember_nonce(&attempt.uri, response.headers());
                        if has_nonce && nonce_challenge(response.status(), response.headers()) {
                            // The token is fine: the API wants a proof with its
                            // nonce. Once, with a new proof; a second challenge
                            // goes back to the caller.
                            let pending = match retry.take() {
                                Some(template) if !attempt.nonce_retried => (*template).rebuild(),
                                _ => None,
                            };
                            let Some(pending) = pending else {
                                return Poll::Ready(Ok(
                                    response.map(|body| ResponseBody::new(body, None))
                                ));
                            };
                            attempt.nonce_retried = true;
                            dpop.count_nonce_retry();
                            tracing::debug!(
                                generation,
                                "sending the request again with the API's DPoP nonce"
                            );
                            let fut = acquire(shared);
                            this.state.set(State::Acquire {
                                fut,
                                pending: Some(pending),
                                first: true,
                            });
                            continue;
                        }
                    }
                    if !rejected(response.status(), response.version(), response.headers()) {
                        shared.accepted(generation);
                        // Not rejected: a recording is released here.
                        retry.take();
                        let watch = Watch::for_response(&response, shared, generation);
                        return Poll::Ready(
                            Ok(response.map(|body| ResponseBody::new(body, watch))),
                        );
                    }
                    // Rejected: the token goes, whichever attempt carried it.
                    let may_retry = shared.reject(generation);
                    let pending = match retry.take() {
                        Some(template) if may_retry => (*template).rebuild(),
                        _ => None,
                    };
                    let Some(pending) = pending else {
                        return Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, None))));
                    };
                    tracing::debug!(generation, "retrying the request with a fresh token");
                    let fut = acquire(shared);
                    this.state.set(State::Acquire {
                        fut,
                        pending: Some(pending),
                        first: false,
                    });
                }
            }
        }
    }
}

/// Makes `req` ready to be sent again: when retries are on and its body can
/// be replayed, returns the request to send (its body possibly wrapped in a
/// recording) with the retry template, copied before the token goes in.
/// Inlined, so that with retries off the request is not moved.
#[inline]
pub(crate) fn prepare<S: Clone, B: ReplayBody>(
    svc: &S,
    req: Request<B>,
    settings: &Settings,
) -> (Request<B>, Option<Box<RetryTemplate<S, B>>>) {
    if !settings.retry_unauthorized {
        return (req, None);
    }
    copy_for_retry(svc, req, settings)
}

/// [`prepare`] with retries on.
#[inline]
fn copy_for_retry<S: Clone, B: ReplayBody>(
    svc: &S,
    req: Request<B>,
    settings: &Settings,
) -> (Request<B>, Option<Box<RetryTemplate<S, B>>>) {
    let (parts, body) = req.into_parts();
    let (body, replay) = body.replay(settings.replay_limit);
    if !replay.is_possible() {
        return (Request::from_parts(parts, body), None);
    }
    let template = Box::new(RetryTemplate {
        svc: svc.clone(),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: (!parts.headers.is_empty()).then(|| parts.headers.clone()),
        extensions: parts.extensions.clone(),
        body: replay,
    });
    (Request::from_parts(parts, body), Some(template))
}
