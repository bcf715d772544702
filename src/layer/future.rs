use super::replay::BodyCopy;
use crate::cache::{CachedToken, Shared};
use crate::error::{BoxError, Error};
use crate::http_client::BoxFuture;
use http::{
    Extensions, HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri, Version,
};
use pin_project_lite::pin_project;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_service::Service;

type Acquire = BoxFuture<'static, Result<Arc<CachedToken>, Error>>;

/// What is needed to send a request once more: its head, a copy of its
/// body, and a clone of the inner service to make ready for it.
pub(crate) struct RetryTemplate<S, B> {
    svc: S,
    method: Method,
    uri: Uri,
    version: Version,
    /// `None` when the request had no headers (no clone, no drop).
    headers: Option<HeaderMap>,
    extensions: Extensions,
    body: BodyCopy,
    _body: PhantomData<fn() -> B>,
}

impl<S, B: 'static> RetryTemplate<S, B> {
    fn rebuild(self) -> Option<Pending<S, B>> {
        let mut req = Request::new(self.body.rebuild::<B>()?);
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

/// `grpc-status`, whose value 16 is `UNAUTHENTICATED`.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

pin_project! {
    /// The future of [`TokenService`](crate::TokenService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        shared: Option<Arc<Shared>>,
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
            shared: None,
        }
    }

    pub(crate) fn called(
        fut: S::Future,
        generation: u64,
        retry: Option<Box<RetryTemplate<S, B>>>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Called {
                fut,
                generation,
                retry,
            },
            shared: Some(shared),
        }
    }

    /// Waits for a token, then makes `svc` (not yet ready) ready and sends.
    pub(crate) fn acquire(svc: S, req: Request<B>, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Acquire {
                fut: acquire(&shared),
                pending: Some(Box::new((svc, req))),
                first: true,
            },
            shared: Some(shared),
        }
    }
}

fn acquire(shared: &Arc<Shared>) -> Acquire {
    let shared = Arc::clone(shared);
    Box::pin(async move { shared.acquire().await })
}

/// Whether an answer says the token was rejected: 401 without
/// `error="insufficient_scope"`, or a gRPC `UNAUTHENTICATED` in the headers.
fn token_rejected<T>(response: &Response<T>) -> bool {
    let headers = response.headers();
    if response.status() == StatusCode::UNAUTHORIZED {
        let insufficient_scope = headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| crate::challenge::bearer_error(v).as_deref() == Some("insufficient_scope"));
        return !insufficient_scope;
    }
    !headers.is_empty()
        && headers
            .get(GRPC_STATUS)
            .is_some_and(|v| v.as_bytes() == b"16")
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: 'static,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Passthrough { fut } => {
                    return fut.poll(cx).map_err(Into::into);
                }
                StateProj::Acquire {
                    fut,
                    pending,
                    first,
                } => {
                    let token = ready!(fut.as_mut().poll(cx)).map_err(BoxError::from)?;
                    let (Some(mut pending), Some(shared)) = (pending.take(), this.shared.as_ref())
                    else {
                        return Poll::Ready(Err(Error::Aborted.into()));
                    };
                    // The first attempt keeps what a retry needs, copied
                    // before the token goes in; the retry keeps nothing.
                    let retry = if *first {
                        retry_template(&pending.0, &pending.1, shared)
                    } else {
                        None
                    };
                    pending
                        .1
                        .headers_mut()
                        .insert(&shared.config.header_name, token.header.clone());
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
                    let Some(shared) = this.shared.as_ref() else {
                        return Poll::Ready(Ok(response));
                    };
                    if !token_rejected(&response) {
                        shared.accepted(generation);
                        return Poll::Ready(Ok(response));
                    }
                    // Rejected: the token goes, whichever attempt carried it.
                    let may_retry = shared.reject(generation);
                    let pending = match retry.take() {
                        Some(template) if may_retry => (*template).rebuild(),
                        _ => None,
                    };
                    let Some(pending) = pending else {
                        return Poll::Ready(Ok(response));
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

/// The retry template of a request, when retries are on and its body can be
/// replayed. Copied before the token header goes in.
pub(crate) fn retry_template<S: Clone, B: 'static>(
    svc: &S,
    req: &Request<B>,
    shared: &Shared,
) -> Option<Box<RetryTemplate<S, B>>> {
    if !shared.config.retry_unauthorized {
        return None;
    }
    let body = BodyCopy::of(req.body())?;
    Some(Box::new(RetryTemplate {
        svc: svc.clone(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: (!req.headers().is_empty()).then(|| req.headers().clone()),
        extensions: req.extensions().clone(),
        body,
        _body: PhantomData,
    }))
}
