//! [`ReqwestService`]: a `reqwest::Client` as a `Service<http::Request<B>>`.
//!
//! Per call, the adapter does what reqwest's public conversions do (see the
//! [module docs](crate::adapter) for them), with two savings:
//!
//! - on the way out, `reqwest::Request::try_from(http::Request)` prints the
//!   URI with `to_string` before parsing it into a `Url`; here the URL text
//!   is put together from the URI's parts in one buffer of the right size,
//!   then parsed by the same `Url::parse`. A request with extensions, or
//!   whose URL does not parse, goes through `try_from` itself, so that
//!   extensions and errors are exactly reqwest's;
//! - the future is reqwest's own (named through `reqwest::Client`'s
//!   `Service<reqwest::Request>` implementation, as reqwest's type has no
//!   public path) in a projecting wrapper that turns its answer into an
//!   `http::Response` with `http::Response::from`: no box per call.

use http::{Request, Response};
use pin_project_lite::pin_project;
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
        let state = match to_reqwest(req) {
            Ok(req) => State::Sending {
                pending: Service::call(&mut self.client, req),
            },
            Err(err) => State::Failed { error: Some(err) },
        };
        ResponseFuture { state }
    }
}

/// `reqwest::Request::try_from(req)`, without printing the URI to a
/// `String` through `fmt` first when the request carries no extensions.
fn to_reqwest<B>(req: Request<B>) -> Result<::reqwest::Request, ::reqwest::Error>
where
    B: Into<::reqwest::Body>,
{
    // The fast path cannot carry extensions (reqwest keeps their setter to
    // itself) nor make reqwest's builder error: both go through `try_from`.
    if !req.extensions().is_empty() {
        return ::reqwest::Request::try_from(req);
    }
    let Some(url) = absolute_url(req.uri()) else {
        return ::reqwest::Request::try_from(req);
    };
    let (parts, body) = req.into_parts();
    let mut request = ::reqwest::Request::new(parts.method, url);
    *request.headers_mut() = parts.headers;
    *request.version_mut() = parts.version;
    *request.body_mut() = Some(body.into());
    Ok(request)
}

/// The `Url` that `Url::parse(&uri.to_string())` gives, when it gives one
/// and `uri` is absolute. The text is `Uri`'s `Display`, piece by piece.
fn absolute_url(uri: &http::Uri) -> Option<::reqwest::Url> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    let path = uri.path();
    let query = uri.query();
    let len = scheme.len() + 3 + authority.len() + path.len() + query.map_or(0, |q| q.len() + 1);
    let mut text = String::with_capacity(len);
    text.push_str(scheme);
    text.push_str("://");
    text.push_str(authority);
    text.push_str(path);
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    ::reqwest::Url::parse(&text).ok()
}

/// What `reqwest::Client::call` returns: reqwest's `Pending`, which has no
/// public path.
type Pending = <::reqwest::Client as Service<::reqwest::Request>>::Future;

pin_project! {
    /// The future of [`ReqwestService`]: reqwest's own future, with its
    /// answer turned into an `http::Response`, or the error of a request
    /// reqwest could not take (a URI that is not absolute).
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sending {
            #[pin]
            pending: Pending,
        },
        Failed {
            error: Option<::reqwest::Error>,
        },
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<::reqwest::Body>, ::reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { pending } => pending.poll(cx).map_ok(Response::from),
            // `error` is taken only by the poll that returns it: reaching
            // `None` means polling again after `Ready`, which the `Future`
            // contract forbids (the standard library's futures panic too).
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
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

    #[test]
    fn the_future_stays_send_and_unpin() {
        // Both held for the boxed future this one replaced; reqwest's future
        // is inside now, so a change of its auto traits shows here.
        fn assert_send_unpin<F: Future + Send + Unpin + 'static>() {}
        assert_send_unpin::<ResponseFuture>();
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

    /// `ours` is the request `try_from` makes, field by field.
    fn assert_same(ours: &::reqwest::Request, theirs: &::reqwest::Request) {
        assert_eq!(ours.method(), theirs.method());
        assert_eq!(ours.url(), theirs.url());
        assert_eq!(ours.url().as_str(), theirs.url().as_str());
        assert_eq!(ours.headers(), theirs.headers());
        assert_eq!(ours.version(), theirs.version());
        assert_eq!(ours.timeout(), theirs.timeout());
        let bytes =
            |r: &::reqwest::Request| r.body().and_then(|b| b.as_bytes()).map(<[u8]>::to_vec);
        assert_eq!(bytes(ours), bytes(theirs));
    }

    #[test]
    fn conversion_matches_reqwest_try_from() {
        let uris = [
            "http://127.0.0.1:8080/",
            "https://api.example.com",
            "https://api.example.com/orders?id=42&x=%20y",
            "HTTPS://API.Example.COM:443/a/../b/./c?q",
            "http://user:pw@[::1]:3000/p?",
            "http://example.com:80/%7Efoo",
            "https://xn--bcher-kva.example/",
            "custom+scheme://host/path",
        ];
        for uri in uris {
            let request = || {
                Request::post(uri)
                    .version(http::Version::HTTP_2)
                    .header("x-a", "1")
                    .header("x-a", "2")
                    .body(::reqwest::Body::from("body"))
                    .unwrap()
            };
            let ours = to_reqwest(request()).unwrap();
            let theirs = ::reqwest::Request::try_from(request()).unwrap();
            assert_same(&ours, &theirs);
        }
    }

    #[test]
    fn extensions_and_errors_are_reqwest_s() {
        // With an extension: `try_from`, which carries it.
        let get = || Request::get("http://example.com/").body("").unwrap();
        let mut request = get();
        request.extensions_mut().insert(7u8);
        let ours = to_reqwest(request).unwrap();
        assert_same(&ours, &::reqwest::Request::try_from(get()).unwrap());
        let back = Request::<::reqwest::Body>::try_from(ours).unwrap();
        assert_eq!(back.extensions().get::<u8>(), Some(&7));

        // Not absolute: the builder error of `try_from`.
        let relative = || Request::get("/orders").body("").unwrap();
        let ours = to_reqwest(relative()).unwrap_err();
        let theirs = ::reqwest::Request::try_from(relative()).unwrap_err();
        assert!(ours.is_builder(), "{ours:?}");
        assert_eq!(ours.to_string(), theirs.to_string());
    }
}
