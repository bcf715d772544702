use super::TokenService;
use crate::cache::{Backoff, Config, Stats, TokenCache};
use crate::error::ConfigError;
use crate::face::{Face, Settings};
use crate::origin::Origin;
use crate::revoke::RevokeService;
use crate::source::TokenSource;
use crate::token::is_header_safe;
use http::HeaderName;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower_layer::Layer;

/// Attaches a cached token to every request of the service it wraps.
///
/// Cloning the layer is cheap; every clone and every [`TokenService`] it
/// makes share one [`TokenCache`]. See the [module docs](crate::layer).
#[derive(Clone)]
pub struct TokenLayer {
    face: Arc<Face>,
}

impl fmt::Debug for TokenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenLayer")
            .field("cache", &self.face.cache)
            .field("settings", &self.face.settings)
            .finish()
    }
}

impl TokenLayer {
    /// A layer with the default settings: `Authorization: Bearer <token>`,
    /// 30 s leeway, refresh ahead in the last 10 % of a token's lifetime.
    pub fn new(source: impl TokenSource) -> Self {
        Self::from_parts(
            TokenCache::new(Box::new(source), Config::default()),
            Settings::default(),
        )
    }

    fn from_parts(cache: TokenCache, settings: Settings) -> Self {
        Self {
            face: Arc::new(Face { cache, settings }),
        }
    }

    /// Starts a builder to change the defaults.
    pub fn builder(source: impl TokenSource) -> TokenLayerBuilder {
        TokenLayerBuilder {
            source: Box::new(source),
            config: Config::default(),
            settings: Settings::default(),
            error: None,
            #[cfg(feature = "store")]
            store: None,
        }
    }

    /// Starts a builder from a provider preset: its token source, and its
    /// revocation service as the [`revoker`](TokenLayerBuilder::revoker).
    ///
    /// ```
    /// use tower_token::{preset, TokenLayer};
    ///
    /// # fn main() -> Result<(), tower_token::BoxError> {
    /// let layer = TokenLayer::from_provider(preset::kopokopo("https://sandbox.kopokopo.com", tower_token::Credentials::new("id", "secret"))?)
    ///     .revoke_on_drop(true)
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn from_provider(provider: crate::preset::Provider) -> TokenLayerBuilder {
        let (source, revoker) = provider.into_parts();
        Self::builder(source).revoker(revoker)
    }

    pub(crate) fn face(&self) -> &Arc<Face> {
        &self.face
    }

    /// A [`reqwest_middleware`] middleware sharing this layer's cache and
    /// settings; see [`crate::middleware`].
    #[cfg(feature = "reqwest-middleware")]
    pub fn middleware(&self) -> crate::middleware::TokenMiddleware {
        crate::middleware::TokenMiddleware::new(self)
    }

    /// The cache this layer's services share.
    pub fn cache(&self) -> &TokenCache {
        &self.face.cache
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> Stats {
        self.face.cache.stats()
    }

    /// Revokes the held tokens and waits for the answer; see
    /// [`TokenCache::shutdown`].
    pub async fn shutdown(&self) -> Result<(), crate::Error> {
        self.face.cache.shutdown().await
    }
}

impl<S> Layer<S> for TokenLayer {
    type Service = TokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenService::from_face(inner, Arc::clone(&self.face))
    }
}

/// Builds a [`TokenLayer`] with settings other than the defaults.
pub struct TokenLayerBuilder {
    source: Box<dyn TokenSource>,
    config: Config,
    settings: Settings,
    error: Option<ConfigError>,
    #[cfg(feature = "store")]
    store: Option<StoreSettings>,
}

/// What [`TokenLayerBuilder::store`] was given.
#[cfg(feature = "store")]
struct StoreSettings {
    store: Arc<dyn crate::store::TokenStore>,
    keys: crate::store::StoreKeys,
    shape: Option<String>,
    lock_ttl: Duration,
    timeout: Duration,
}

impl fmt::Debug for TokenLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenLayerBuilder")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenLayerBuilder {
    /// How long before its stated expiry a token stops being sent (default
    /// 30 s). It is capped at half of each token's lifetime.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.config.leeway = leeway;
        self
    }

    /// The share of a token's lifetime, before the leeway, during which a
    /// background refresh runs while requests keep the current token
    /// (default 0.1; clamped to `0.0..=1.0`).
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.config.refresh_ahead = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The lifetime assumed for a token whose answer has no `expires_in`
    /// (default 5 minutes; zero is a [`ConfigError`]).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.default_lifetime = lifetime;
        self
    }

    /// The longest a token source may take before the fetch counts as
    /// failed (default 30 s; zero is a [`ConfigError`]).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// The backoff between failed fetches (default 500 ms doubling to 30 s,
    /// with jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The header that carries the token (default `Authorization`).
    pub fn header(mut self, name: HeaderName) -> Self {
        self.settings.header_name = name;
        self
    }

    /// The scheme put before the token (default `Bearer`).
    pub fn scheme(mut self, scheme: impl Into<String>) -> Self {
        let scheme = scheme.into();
        if !is_header_safe(&scheme) {
            self.error = Some(ConfigError::InvalidHeader(format!("scheme `{scheme}`")));
        }
        self.config.scheme = Some(scheme);
        self
    }

    /// Sends the bare token, with no scheme (for headers such as `X-Api-Key`).
    pub fn raw(mut self) -> Self {
        self.config.scheme = None;
        self
    }

    /// Attaches the token only to requests for this origin (scheme, host and
    /// port, e.g. `https://api.example.com`); call once per origin. Requests
    /// for other origins pass through without the token. By default there
    /// is no allow-list and every request carries the token. Requests whose
    /// URI has no authority (what a client bound to one origin, such as
    /// tonic's `Channel`, receives) count as allowed.
    pub fn allow_origin(mut self, origin: &str) -> Self {
        match Origin::parse(origin) {
            Some(o) => self.settings.origins.get_or_insert_with(Vec::new).push(o),
            None => {
                self.error = Some(ConfigError::InvalidUrl {
                    url: origin.to_owned(),
                    reason: "not an origin (scheme://host[:port])".into(),
                })
            }
        }
        self
    }

    /// Replaces the header on requests that already carry it (by default
    /// such requests are sent as they are).
    pub fn override_existing(mut self, yes: bool) -> Self {
        self.settings.override_existing = yes;
        self
    }

    /// Whether a request answered 401 is sent again with a fresh token when
    /// its body can be replayed (default on). The token is invalidated
    /// either way.
    pub fn retry_unauthorized(mut self, yes: bool) -> Self {
        self.settings.retry_unauthorized = yes;
        self
    }

    /// The most bytes of a streamed request body kept for a replay after a
    /// rejected token (default 64 KiB); see [`crate::replay`]. A body whose
    /// sent part grows past it gets the rejection back.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.settings.replay_limit = bytes;
        self
    }

    /// The revocation service used by [`TokenCache::shutdown`] and, when
    /// [`revoke_on_drop`](Self::revoke_on_drop) is on, when the last handle
    /// is dropped.
    pub fn revoker(mut self, revoker: RevokeService) -> Self {
        self.config.revoker = Some(revoker);
        self
    }

    /// Revokes the cached access token (and the refresh token, if any) when
    /// the last clone of the layer, its services and its cache is dropped
    /// (default off; needs a [`revoker`](Self::revoker)).
    ///
    /// Mid-run, the revocation runs in a task spawned on the current tokio
    /// runtime and nothing blocks. When the last handle goes at the end of
    /// `#[tokio::main]`, or the runtime shuts down before the revocation is
    /// answered, or there is no runtime, it is finished on a thread of its
    /// own within [`revoke_on_drop_timeout`](Self::revoke_on_drop_timeout);
    /// see the [cache docs](crate::cache#shutdown-and-revocation). For a
    /// revocation you can wait for and whose outcome you get, call
    /// [`TokenCache::shutdown`].
    pub fn revoke_on_drop(mut self, yes: bool) -> Self {
        self.config.revoke_on_drop = yes;
        self
    }

    /// The longest the thread that drops the last handle waits for the
    /// revocation when the runtime is gone or going (default 2 s). A
    /// mid-run drop never waits.
    pub fn revoke_on_drop_timeout(mut self, timeout: Duration) -> Self {
        self.config.revoke_on_drop_timeout = timeout;
        self
    }

    /// The wall clock that token deadlines are also checked against
    /// (default [`SystemTime::now`]). Deadlines are kept on the monotonic
    /// clock and on the wall clock, and a token is sent only while both say
    /// it is usable, so that a suspend longer than its lifetime cannot make
    /// the cache send an expired token. Tests can pass a clock they move.
    pub fn wall_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.config.wall_clock = clock;
        self
    }

    /// Revokes a token when a refresh replaces it (default off; needs a
    /// [`revoker`](Self::revoker)).
    pub fn revoke_replaced(mut self, yes: bool) -> Self {
        self.config.revoke_replaced = yes;
        self
    }

    /// Binds tokens to `dpop`'s key (RFC 9449; see [`crate::dpop`]): token
    /// requests and API requests carry a DPoP proof each, the token goes as
    /// `Authorization: DPoP <token>`, and servers' nonces are followed.
    /// Layers given clones of one [`Dpop`](crate::dpop::Dpop) share its
    /// nonces, and its count of nonce retries in [`Stats`].
    ///
    /// ```
    /// use tower_token::{dpop::Dpop, jose::Algorithm, source, Token, TokenLayer};
    ///
    /// # fn main() -> Result<(), tower_token::BoxError> {
    /// let layer = TokenLayer::builder(source::from_fn(|_| async {
    ///     Ok::<_, std::io::Error>(Token::new("t-1").with_dpop(true))
    /// }))
    /// .dpop(Dpop::generate(Algorithm::EdDSA)?)
    /// .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "jose")]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "aws-lc-rs", feature = "ring"))))]
    pub fn dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.settings.dpop = Some(dpop.clone());
        self.config.dpop = Some(dpop);
        self
    }

    /// Shares tokens with the other replicas of this service through
    /// `store` (feature `store`; see [`crate::store`]): the fleet asks the
    /// authorization server once per token lifetime. Stored tokens are
    /// sealed with `keys`. The store key is made from everything that
    /// shapes the source's tokens ([`TokenSource::token_shape`]), or from
    /// [`store_key`](Self::store_key).
    ///
    /// With a store, `revoke_on_drop` and [`TokenCache::shutdown`] leave the
    /// token alone (the other replicas use it); revoke it for the whole
    /// fleet with [`TokenCache::shutdown_fleet`].
    #[cfg(feature = "store")]
    pub fn store(
        mut self,
        store: impl crate::store::TokenStore,
        keys: crate::store::StoreKeys,
    ) -> Self {
        self.store = Some(StoreSettings {
            store: Arc::new(store),
            keys,
            shape: None,
            lock_ttl: Duration::from_secs(10),
            timeout: Duration::from_millis(200),
        });
        self
    }

    /// The store key, for a source that cannot tell what shapes its tokens
    /// (such as [`source::from_fn`](crate::source::from_fn)): every replica
    /// that should share tokens gives the same one, and no other.
    #[cfg(feature = "store")]
    pub fn store_key(mut self, key: impl Into<String>) -> Self {
        if let Some(store) = &mut self.store {
            store.shape = Some(key.into());
        } else {
            self.error = Some(ConfigError::Missing("a store before its key"));
        }
        self
    }

    /// How long the store's lock is held at most (default 10 s): the
    /// longest a dead lock holder delays the fleet.
    #[cfg(feature = "store")]
    pub fn store_lock_ttl(mut self, ttl: Duration) -> Self {
        if let Some(store) = &mut self.store {
            store.lock_ttl = ttl;
        }
        self
    }

    /// The longest one store call may take (default 200 ms); past it, the
    /// replica goes on without the store.
    #[cfg(feature = "store")]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        if let Some(store) = &mut self.store {
            store.timeout = timeout;
        }
        self
    }

    /// Builds the layer.
    #[cfg_attr(not(feature = "store"), allow(unused_mut))]
    pub fn build(mut self) -> Result<TokenLayer, ConfigError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        #[cfg(all(feature = "store", feature = "jose"))]
        if self.store.is_some() && self.config.dpop.is_some() {
            return Err(ConfigError::OutOfRange {
                setting: "dpop",
                reason: "cannot go with a shared store: DPoP-bound tokens are not shared between replicas",
            });
        }
        #[cfg(feature = "store")]
        if let Some(store) = self.store.take() {
            let shape = match store.shape {
                Some(shape) => format!("key|{shape}"),
                None => self.source.token_shape().ok_or(ConfigError::Missing(
                    "a store key: this token source cannot tell what shapes its tokens",
                ))?,
            };
            self.config.fleet = Some(Arc::new(crate::cache::Fleet::new(
                store.store,
                &store.keys,
                &shape,
                store.lock_ttl,
                store.timeout,
            )));
        }
        if self.config.fetch_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "fetch_timeout",
                reason: "is zero: every fetch would time out",
            });
        }
        if self.config.default_lifetime.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "default_lifetime",
                reason: "is zero: a token without `expires_in` would be expired on arrival",
            });
        }
        Ok(TokenLayer::from_parts(
            TokenCache::new(self.source, self.config),
            self.settings,
        ))
    }
}
