//! [`ReqwestService`]: a `reqwest::Client` as a `Service<http::Request<B>>`.

use http::{Request, Response};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

/// A `reqwest::Client` as a tower service over `http` types, so that it can
/// be the inner service of [`TokenLayer`](crate::TokenLayer).
///
/// Takes `http::Request<B>` and answers `http::Response<reqwest::Body>`;
/// errors are `reqwest::Error`, including a request whose URI is not
/// absolute. `B` is `reqwest::Body` unless chosen with
/// [`with_body`](Self::with_body): any type reqwest takes as a body
/// (`Bytes`, `Vec<u8>`, `String`…). Always ready; cheap to clone. See the
/// [module docs](crate::adapter).
pub struct ReqwestService<B = ::reqwest::Body> {
    client: ::reqwest::Client,
    _body: PhantomData<fn(B)>,
}

impl ReqwestService {
    /// Wraps `client`, for requests whose body is a `reqwest::Body`.
    pub fn new(client: ::reqwest::Client) -> Self {
        Self {
            client,
            _body: PhantomData,
        }
    }
}

impl<B> ReqwestService<B> {
    /// The same client, for requests whose body is a `B2`.
    ///
    /// ```
    /// use tower_token::adapter::ReqwestService;
    ///
    /// let svc = ReqwestService::new(reqwest::Client::new()).with_body::<String>();
    /// # let _ = svc;
    /// ```
    pub fn with_body<B2>(self) -> ReqwestService<B2>
    where
        B2: Into<::reqwest::Body>,
    {
        ReqwestService {
            client: self.client,
            _body: PhantomData,
        }
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &::reqwest::Client {
        &self.client
    }

    /// The wrapped client, mutably.
    pub fn get_mut(&mut self) -> &mut ::reqwest::Client {
        &mut self.client
    }

    /// The wrapped client, consuming the adapter.
    pub fn into_inner(self) -> ::reqwest::Client {
        self.client
    }
}

impl<B> Clone for ReqwestService<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for ReqwestService<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestService")
            .field("client", &self.client)
            .finish()
    }
}

impl Default for ReqwestService {
    fn default() -> Self {
        Self::new(::reqwest::Client::default())
    }
}

impl From<::reqwest::Client> for ReqwestService {
    fn from(client: ::reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl<B> Service<Request<B>> for ReqwestService<B>
where
    B: Into<::reqwest::Body>,
{
    type Response = Response<::reqwest::Body>;
    type Error = ::reqwest::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<::reqwest::Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner: BoxedResponse = match ::reqwest::Request::try_from(req) {
            Ok(req) => {
                let sent = self.client.execute(req);
                Box::pin(async move { sent.await.map(Response::from) })
            }
            Err(err) => Box::pin(std::future::ready(Err(err))),
        };
        ResponseFuture { inner }
    }
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<Response<::reqwest::Body>, ::reqwest::Error>> + Send>>;

/// The future of [`ReqwestService`]: reqwest's own future (which has no
/// public name), boxed, with its answer turned into an `http::Response`.
pub struct ResponseFuture {
    inner: BoxedResponse,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<::reqwest::Body>, ::reqwest::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_service<S: Service<Request<::reqwest::Body>> + Clone + Send + Sync + 'static>()
    where
        S::Future: Send + 'static,
    {
    }

    #[test]
    fn is_a_clone_send_sync_service() {
        assert_service::<ReqwestService>();
        fn for_strings<S: Service<Request<String>> + Clone + Send + Sync>(_: &S) {}
        for_strings(&ReqwestService::default().with_body::<String>());
    }

    #[tokio::test]
    async fn relative_uri_is_an_error_not_a_panic() {
        let mut svc = ReqwestService::default();
        let err = svc
            .call(Request::new(::reqwest::Body::from("x")))
            .await
            .unwrap_err();
        assert!(err.is_builder(), "{err:?}");
    }
}
