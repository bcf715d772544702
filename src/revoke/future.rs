//! The future [`RevokeService`](super::RevokeService) returns.

use crate::error::Error;
use crate::http_client::BoxFuture;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// The answer to one [`RevokeRequest`](super::RevokeRequest): `Ok(())` once
/// the server confirmed the revocation.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: BoxFuture<'static, Result<(), Error>>,
}

impl ResponseFuture {
    pub(crate) fn new(inner: BoxFuture<'static, Result<(), Error>>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
