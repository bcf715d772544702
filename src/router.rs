//! One layer, several tokens (R24): a gateway that calls several APIs, each
//! with its own audience or scope, routes each request to its own cache.
//!
//! [`TokenRouterLayer`] holds [`TokenLayer`]s — each with its own source,
//! settings, stats and revocation — and picks one per request:
//!
//! 1. by a [`Route`] in the request's extensions, for callers that choose
//!    per request;
//! 2. else by the request's origin (scheme, host and port);
//! 3. else the fallback, if one was given; else the request passes through
//!    without a token.
//!
//! The chosen route behaves exactly as its [`TokenService`](crate::TokenService)
//! would: single flight, refresh ahead, 401 replay, origin allow-list and
//! header settings of that layer. Every clone of the router shares the
//! caches; keep the `TokenLayer`s you passed in for their stats or
//! `shutdown()`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token::router::{Route, TokenRouterLayer};
//! use tower_token::{source, Token, TokenLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::BoxError> {
//! let for_audience = |aud: &'static str| {
//!     TokenLayer::new(source::from_fn(move |_| async move {
//!         Ok::<_, std::io::Error>(Token::new(aud).with_expires_in(Duration::from_secs(3600)))
//!     }))
//! };
//! let router = TokenRouterLayer::builder()
//!     .origin("https://orders.example.com", &for_audience("orders"))
//!     .origin("https://billing.example.com", &for_audience("billing"))
//!     .route("admin", &for_audience("admin"))
//!     .build()?;
//!
//! // Any HTTP client service; here one that echoes the header it got.
//! let client = tower::service_fn(|req: http::Request<Empty<Bytes>>| async move {
//!     let auth = req.headers()[http::header::AUTHORIZATION].clone();
//!     Ok::<_, std::convert::Infallible>(http::Response::new(auth))
//! });
//! let svc = ServiceBuilder::new().layer(router).service(client);
//!
//! let req = http::Request::get("https://billing.example.com/invoices").body(Empty::new())?;
//! let response = svc.clone().oneshot(req).await?;
//! assert_eq!(response.body().get_ref(), "Bearer billing");
//!
//! let mut req = http::Request::get("https://billing.example.com/refunds").body(Empty::new())?;
//! req.extensions_mut().insert(Route::new("admin"));
//! let response = svc.oneshot(req).await?;
//! assert_eq!(response.body().get_ref(), "Bearer admin");
//! # Ok(()) }
//! ```

use crate::error::{BoxError, ConfigError};
use crate::face::Face;
use crate::layer::{Local, ResponseBody, ResponseFuture, TokenLayer};
use crate::origin::Origin;
use crate::replay::ReplayBody;
use http::{Request, Response};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// A request extension that picks the route of that name; see the
/// [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route(Cow<'static, str>);

impl Route {
    /// The route named `name`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self(name.into())
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// The routes, each a face of its own cache.
struct Routes {
    faces: Vec<Arc<Face>>,
    /// Indexes into `faces`.
    by_name: Vec<(Route, usize)>,
    by_origin: Vec<(Origin, usize)>,
    fallback: Option<usize>,
}

impl Routes {
    /// The index of the face for `req`, if any.
    fn pick<B>(&self, req: &Request<B>) -> Option<usize> {
        if !self.by_name.is_empty()
            && let Some(route) = req.extensions().get::<Route>()
        {
            return self
                .by_name
                .iter()
                .find(|(name, _)| name == route)
                .map(|&(_, i)| i);
        }
        let uri = req.uri();
        self.by_origin
            .iter()
            .find(|(origin, _)| origin.matches(uri))
            .map(|&(_, i)| i)
            .or(self.fallback)
    }
}

/// Routes each request to the token cache of its API; see the
/// [module docs](self).
#[derive(Clone)]
pub struct TokenRouterLayer {
    routes: Arc<Routes>,
}

impl fmt::Debug for TokenRouterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRouterLayer")
            .field("routes", &self.routes.faces.len())
            .finish_non_exhaustive()
    }
}

impl TokenRouterLayer {
    /// Starts a router with no routes.
    pub fn builder() -> TokenRouterLayerBuilder {
        TokenRouterLayerBuilder {
            faces: Vec::new(),
            by_name: Vec::new(),
            by_origin: Vec::new(),
            fallback: None,
            error: None,
        }
    }
}

impl<S> Layer<S> for TokenRouterLayer {
    type Service = TokenRouter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenRouter {
            inner,
            locals: vec![Local::new(); self.routes.faces.len()],
            routes: Arc::clone(&self.routes),
        }
    }
}

/// Builds a [`TokenRouterLayer`].
pub struct TokenRouterLayerBuilder {
    faces: Vec<Arc<Face>>,
    by_name: Vec<(Route, usize)>,
    by_origin: Vec<(Origin, usize)>,
    fallback: Option<usize>,
    error: Option<ConfigError>,
}

impl fmt::Debug for TokenRouterLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRouterLayerBuilder")
            .field("routes", &self.faces.len())
            .finish_non_exhaustive()
    }
}

impl TokenRouterLayerBuilder {
    /// The index of `layer`'s face, added once however many routes use it.
    fn face(&mut self, layer: &TokenLayer) -> usize {
        let face = layer.face();
        match self.faces.iter().position(|f| Arc::ptr_eq(f, face)) {
            Some(i) => i,
            None => {
                self.faces.push(Arc::clone(face));
                self.faces.len() - 1
            }
        }
    }

    /// Requests for `origin` (`scheme://host[:port]`) get `layer`'s token.
    pub fn origin(mut self, origin: &str, layer: &TokenLayer) -> Self {
        match Origin::parse(origin) {
            Some(parsed) => {
                let i = self.face(layer);
                self.by_origin.push((parsed, i));
            }
            None => {
                self.error = Some(ConfigError::InvalidUrl {
                    url: origin.to_owned(),
                    reason: "not an origin (scheme://host[:port])".into(),
                })
            }
        }
        self
    }

    /// Requests carrying the extension `Route::new(name)` get `layer`'s
    /// token, whatever their origin.
    pub fn route(mut self, name: impl Into<Cow<'static, str>>, layer: &TokenLayer) -> Self {
        let i = self.face(layer);
        self.by_name.push((Route::new(name), i));
        self
    }

    /// Requests that no route picks get `layer`'s token (by default they
    /// pass through without one).
    pub fn fallback(mut self, layer: &TokenLayer) -> Self {
        let i = self.face(layer);
        self.fallback = Some(i);
        self
    }

    /// Builds the router.
    pub fn build(self) -> Result<TokenRouterLayer, ConfigError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        Ok(TokenRouterLayer {
            routes: Arc::new(Routes {
                faces: self.faces,
                by_name: self.by_name,
                by_origin: self.by_origin,
                fallback: self.fallback,
            }),
        })
    }
}

/// The service [`TokenRouterLayer`] produces. `Clone + Send + Sync` when
/// the inner service is; `poll_ready` is the inner service's.
#[derive(Clone)]
pub struct TokenRouter<S> {
    inner: S,
    routes: Arc<Routes>,
    /// This clone's copy of each route's current token.
    locals: Vec<Local>,
}

impl<S> fmt::Debug for TokenRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRouter")
            .field("routes", &self.routes.faces.len())
            .finish_non_exhaustive()
    }
}

impl<S> TokenRouter<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the router.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TokenRouter<S>
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
        match self.routes.pick(&req) {
            Some(i) => crate::layer::attach_and_call(
                &mut self.inner,
                &self.routes.faces[i],
                &mut self.locals[i],
                req,
            ),
            None => ResponseFuture::passthrough(self.inner.call(req)),
        }
    }
}
