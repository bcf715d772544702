//! The response body of [`TokenService`](crate::TokenService): the inner
//! service's body, watched for a gRPC `UNAUTHENTICATED` in its trailers.

use crate::cache::Shared;
use crate::face::{GRPC_STATUS, grpc_unauthenticated};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// The token a streamed gRPC answer was sent with, to drop if its trailers
/// say `UNAUTHENTICATED`.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    generation: u64,
}

impl Watch {
    /// A watch for a gRPC answer whose status is still to come in trailers;
    /// `None` for anything else.
    pub(crate) fn for_response<T>(
        response: &http::Response<T>,
        shared: &Arc<Shared>,
        generation: u64,
    ) -> Option<Self> {
        // gRPC is HTTP/2 only: other answers cost one comparison.
        if response.version() != http::Version::HTTP_2 {
            return None;
        }
        let headers = response.headers();
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        (grpc && !headers.contains_key(GRPC_STATUS)).then(|| Self {
            shared: Arc::clone(shared),
            generation,
        })
    }
}

pin_project! {
    /// The response body of [`TokenService`](crate::TokenService): the inner
    /// service's body, unchanged. For a gRPC answer, trailers carrying
    /// `grpc-status: 16` (`UNAUTHENTICATED`) drop the token the call was sent
    /// with, so the next call carries a fresh one (the call itself, whose
    /// answer has streamed, is not sent again).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        watch: Option<Watch>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, watch: Option<Watch>) -> Self {
        Self { inner, watch }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The inner body, consuming the wrapper.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.watch.is_some()
            && let Some(Ok(frame)) = &frame
            && let Some(trailers) = frame.trailers_ref()
            && let Some(watch) = this.watch.take()
            && grpc_unauthenticated(trailers)
        {
            tracing::debug!(
                generation = watch.generation,
                "gRPC UNAUTHENTICATED in trailers: the token is dropped"
            );
            watch.shared.reject(watch.generation);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
