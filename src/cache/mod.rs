//! The token cache: one current token per cache, single-flight fetches,
//! refresh ahead of expiry, backoff on failure and on rejection.
//!
//! A [`TokenCache`] is a cheap handle (one `Arc`) to the shared state that
//! [`TokenLayer`](crate::TokenLayer) and every [`TokenService`](crate::TokenService)
//! made from it use. The current token lives in an [`arc_swap::ArcSwapOption`]
//! together with the header value built for it when it arrived. The
//! services keep a copy each, checked against the current generation (one
//! atomic load), so the per-request path is that load, two clock reads and
//! a header clone.
//!
//! The life of a token with lifetime `L` fetched at `t₀`:
//!
//! - it is sent until `t₀ + L − leeway`, where the leeway (default 30 s) is
//!   capped at `L / 2`, so a 2 s token is used for 1 s rather than fetched
//!   for every request (R3);
//! - from `refresh_ahead × L` before that point (default 10 %), the first
//!   request to notice starts one background refresh; requests keep the
//!   current token meanwhile and none waits (R4);
//! - past it, requests wait for a fetch; all of them share one (R5). The
//!   fetch runs in a task of its own, so cancelling the request that started
//!   it cancels nothing.
//!
//! Every deadline is kept twice: on the monotonic clock, which cannot jump,
//! and on the wall clock, which keeps counting while the machine is
//! suspended. A token is usable only while both say so, so after a laptop
//! or VM resumes from a suspend longer than the token's lifetime the token
//! is not sent (R17).
//!
//! A failed fetch is retried no sooner than the [`Backoff`] allows; while the
//! cached token is still usable requests keep it, and when there is none,
//! requests during the backoff fail at once with the last error instead of
//! stampeding the token endpoint (R7).
//!
//! A token the API rejects (401) is dropped and its successor fetched at
//! once. When the successor is rejected too, and the one after it, the API
//! is rejecting every token (wrong audience, clock skew, a revoked client):
//! the next fetch then waits for the [`Backoff`] like a failed one, and
//! requests in the meantime fail at once with
//! [`Error::TokenRejected`], so the API's
//! rejections never turn into one token request per API request. The first
//! answer that is not a 401 ends the streak.
//!
//! # Shutdown and revocation
//!
//! [`TokenCache::shutdown`] revokes what the cache holds and waits for the
//! answers. A fetch in flight when it starts is not published: its token is
//! revoked too, once it lands, and the requests waiting on it fail with
//! [`Error::Aborted`]. Afterwards the cache is empty;
//! it stays usable, and a later request fetches a new token.
//!
//! With [`revoke_on_drop`](crate::TokenLayerBuilder::revoke_on_drop), dropping
//! the last handle revokes the cached tokens:
//!
//! - mid-run, in a task spawned on the current tokio runtime; nothing blocks;
//! - at the end of `#[tokio::main]` (current-thread or multi-thread), or when
//!   the runtime shuts down before that task has finished: the runtime drops
//!   the task, and the revocation is finished on a thread of its own while
//!   the thread dropping it waits, at most
//!   [`revoke_on_drop_timeout`](crate::TokenLayerBuilder::revoke_on_drop_timeout)
//!   (default 2 s);
//! - outside any runtime, the same: a thread of its own and a bounded wait.
//!
//! When even that is impossible (no thread can be started) or the wait
//! runs out, a `warn!` says that the token may still be live. Nothing in
//! these paths panics.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_token::{source, Token, TokenLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_token::Error> {
//! let layer = TokenLayer::new(source::from_fn(|_| async {
//!     Ok::<_, std::io::Error>(Token::new("t-1").with_expires_in(Duration::from_secs(60)))
//! }));
//! let cache = layer.cache();
//! assert_eq!(cache.token().await?.secret(), "t-1");
//! assert_eq!(cache.token().await?.secret(), "t-1");
//! assert_eq!(cache.stats().tokens_fetched, 1);
//! # Ok(()) }
//! ```

use crate::error::Error;
use crate::revoke::RevokeService;
use crate::secret::AccessToken;
use crate::source::TokenSource;
use crate::token::Token;
use http::HeaderValue;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

mod backoff;
mod exit;
#[cfg(feature = "store")]
mod fleet;
mod flight;

pub use backoff::Backoff;
#[cfg(feature = "store")]
pub(crate) use fleet::Fleet;
pub(crate) use flight::Shared;
#[cfg(fuzzing)]
pub(crate) use flight::deadlines;

/// When a token stops being sent, and when its refresh starts: each on the
/// monotonic clock and on the wall clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    pub(crate) refresh_at: Instant,
    pub(crate) usable_until: Instant,
    pub(crate) refresh_at_wall: SystemTime,
    pub(crate) usable_until_wall: SystemTime,
}

impl Deadlines {
    /// Whether a token may still be sent: both clocks must agree.
    #[inline]
    pub(crate) fn usable(&self, now: Instant, wall: SystemTime) -> bool {
        now < self.usable_until && wall < self.usable_until_wall
    }

    /// Whether the refresh-ahead window has begun, by either clock.
    #[inline]
    pub(crate) fn refresh_due(&self, now: Instant, wall: SystemTime) -> bool {
        now >= self.refresh_at || wall >= self.refresh_at_wall
    }
}

/// A token as the cache holds it: with its header value and its deadlines.
pub(crate) struct CachedToken {
    pub(crate) header: HeaderValue,
    /// The `ath` of a DPoP-bound token (base64url of the SHA-256 of the
    /// token), computed once; `None` for a bearer token.
    pub(crate) ath: Option<Arc<str>>,
    pub(crate) generation: u64,
    pub(crate) deadlines: Deadlines,
    /// When the token expires, as the server stated it, on the wall clock.
    pub(crate) expires_at_wall: SystemTime,
    pub(crate) token: Token,
    /// Where the token stands in a shared store: when it was issued and its
    /// keyed fingerprint (none without a store).
    pub(crate) stored: Option<Stored>,
}

/// A token's place in a shared store.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "store"), allow(dead_code))]
pub(crate) struct Stored {
    pub(crate) issued_at_ms: u64,
    pub(crate) fingerprint: String,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("generation", &self.generation)
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

/// The cache's settings; see [`TokenLayerBuilder`](crate::TokenLayerBuilder).
/// What a face does with the token (which header, which origins, replays)
/// is the face's own; the cache only builds the header value once per
/// token, with the text that goes before it.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Put before the token in its header value (`Bearer`), if anything.
    pub(crate) scheme: Option<String>,
    pub(crate) leeway: Duration,
    pub(crate) refresh_ahead: f64,
    pub(crate) default_lifetime: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) revoker: Option<RevokeService>,
    pub(crate) revoke_on_drop: bool,
    pub(crate) revoke_on_drop_timeout: Duration,
    pub(crate) revoke_replaced: bool,
    /// The wall clock deadlines are checked against.
    pub(crate) wall_clock: fn() -> SystemTime,
    /// The fleet's shared store, if any.
    #[cfg(feature = "store")]
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// The DPoP key, handed to the source with each fetch.
    #[cfg(feature = "jose")]
    pub(crate) dpop: Option<crate::dpop::Dpop>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scheme: Some("Bearer".to_owned()),
            leeway: Duration::from_secs(30),
            refresh_ahead: 0.1,
            default_lifetime: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            revoker: None,
            revoke_on_drop: false,
            revoke_on_drop_timeout: Duration::from_secs(2),
            revoke_replaced: false,
            wall_clock: SystemTime::now,
            #[cfg(feature = "store")]
            fleet: None,
            #[cfg(feature = "jose")]
            dpop: None,
        }
    }
}

/// What a service keeps of the current token, so that its per-request path
/// reads one atomic and the clocks instead of loading the `ArcSwap`.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) header: HeaderValue,
    /// See [`CachedToken::ath`].
    #[cfg_attr(not(feature = "jose"), allow(dead_code))]
    pub(crate) ath: Option<Arc<str>>,
    pub(crate) deadlines: Deadlines,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) fetched: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) revocations: AtomicU64,
    pub(crate) from_store: AtomicU64,
    pub(crate) fleet_fetches: AtomicU64,
    pub(crate) fleet_waits: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) store_fallbacks: AtomicU64,
}

/// A snapshot of a cache's counters (R15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens fetched successfully.
    pub tokens_fetched: u64,
    /// Token fetches that failed.
    pub fetch_failures: u64,
    /// Refreshes caused by a 401: tokens the API rejected whose successor
    /// was fetched at once (or was already being fetched). A rejection
    /// during the rejection backoff is not one.
    pub unauthorized_refreshes: u64,
    /// Tokens the API rejected: tokens dropped because a request (a first
    /// attempt or its retry) carrying them was answered 401. A burst of 401s
    /// for one token counts once.
    pub tokens_rejected: u64,
    /// Tokens revoked: revocation requests the server confirmed (an access
    /// token and its refresh token count as two when both are sent),
    /// including those sent in the background.
    pub revocations: u64,
    /// When the current token expires, as the server stated it, on the wall
    /// clock (none when the cache is empty).
    pub token_expires_at: Option<SystemTime>,
    /// Tokens taken from a shared store instead of fetched (feature
    /// `store`).
    pub tokens_from_store: u64,
    /// Fetches this replica made for the fleet, holding the store's lock.
    pub fleet_fetches_won: u64,
    /// Fetches during which this replica waited for another one's.
    pub fleet_fetches_waited: u64,
    /// Store calls that failed or timed out.
    pub store_errors: u64,
    /// Fetches made without the store because it failed or was too slow.
    pub store_fallbacks: u64,
    /// Requests sent again because a server asked for a DPoP nonce: token
    /// requests answered 400 `use_dpop_nonce`, API requests answered 401
    /// `WWW-Authenticate: DPoP error="use_dpop_nonce"` (see [`crate::dpop`]).
    pub dpop_nonce_retries: u64,
}

/// A usable token from the cache, as [`TokenCache::current`] and
/// [`TokenCache::acquire`] hand it out: the access token and the header
/// value built for it once, when it arrived. Cheap to clone; its `Debug`
/// shows no secret.
#[derive(Clone)]
pub struct CurrentToken {
    cached: Arc<CachedToken>,
}

impl CurrentToken {
    /// The cache's number for this token (see
    /// [`TokenCache::accepted_generation`]).
    // Used by the reqwest middleware only.
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    pub(crate) fn generation(&self) -> u64 {
        self.cached.generation
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        self.cached.token.access_token()
    }

    /// The header value to send (`Bearer <token>` by default), marked
    /// sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.cached.header
    }

    /// When the token expires, as the server stated it, on the wall clock.
    pub fn expires_at(&self) -> SystemTime {
        self.cached.expires_at_wall
    }

    /// The `ath` of a DPoP-bound token, computed when it arrived.
    #[cfg_attr(
        not(all(feature = "jose", feature = "reqwest-middleware")),
        allow(dead_code)
    )]
    pub(crate) fn ath(&self) -> Option<&Arc<str>> {
        self.cached.ath.as_ref()
    }
}

impl fmt::Debug for CurrentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentToken")
            .field("generation", &self.cached.generation)
            .field("expires_at", &self.cached.expires_at_wall)
            .finish_non_exhaustive()
    }
}

/// A handle to a token cache. Cheap to clone; every clone, every
/// [`TokenLayer`](crate::TokenLayer) and every [`TokenService`](crate::TokenService)
/// made from it share the one cache.
#[derive(Clone)]
pub struct TokenCache {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(crate) fn new(source: Box<dyn TokenSource>, config: Config) -> Self {
        Self {
            shared: Arc::new(Shared::new(source, config)),
        }
    }

    /// The current access token, fetching one if the cache has none that is
    /// usable. Concurrent callers share one fetch. Like a request, a call in
    /// the refresh-ahead window starts the background refresh.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        let cached = match self.usable() {
            Some(cached) => cached,
            None => self.shared.acquire().await?,
        };
        Ok(cached.token.access_token().clone())
    }

    /// The current token if usable, starting the background refresh when
    /// its window has begun; one read of each clock.
    fn usable(&self) -> Option<Arc<CachedToken>> {
        self.with_usable(Arc::clone)
    }

    /// `f` of the current token if it is usable (both clocks), starting the
    /// background refresh when its window has begun: the one place where
    /// the cache's faces decide whether its token may be sent. The token is
    /// read through the `ArcSwap` guard, so `f` decides whether a reference
    /// count is taken.
    #[inline]
    fn with_usable<R>(&self, f: impl FnOnce(&Arc<CachedToken>) -> R) -> Option<R> {
        let (now, wall) = (Instant::now(), self.shared.wall());
        let (value, refresh) = self.shared.peek(|cached| {
            let deadlines = &cached.deadlines;
            deadlines.usable(now, wall).then(|| {
                let refresh = deadlines.refresh_due(now, wall);
                (f(cached), refresh.then_some(cached.generation))
            })
        })??;
        if let Some(generation) = refresh {
            self.shared.refresh_ahead(generation, now);
        }
        Some(value)
    }

    /// The header value of the current token and its generation, if the
    /// cache holds a usable one, like [`current`](Self::current) but
    /// touching no reference count of the token: for a face that needs
    /// only these two (the generation for [`accepted_generation`] and
    /// [`reject_generation`]).
    ///
    /// [`accepted_generation`]: Self::accepted_generation
    /// [`reject_generation`]: Self::reject_generation
    // Used by the reqwest middleware only.
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    #[inline]
    pub(crate) fn current_header(&self) -> Option<(u64, HeaderValue)> {
        self.with_usable(|cached| (cached.generation, cached.header.clone()))
    }

    /// [`accepted`](Self::accepted) by generation.
    // Used by the reqwest middleware only.
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    #[inline]
    pub(crate) fn accepted_generation(&self, generation: u64) {
        self.shared.accepted(generation);
    }

    /// [`invalidate_if_current`](Self::invalidate_if_current) by generation.
    // Used by the reqwest middleware only.
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    pub(crate) fn reject_generation(&self, generation: u64) -> bool {
        self.shared.reject(generation)
    }

    /// The current token if the cache holds a usable one: synchronous, never
    /// fetches (for a tonic `Interceptor` or a middleware of your own). Like
    /// a request, a call in the refresh-ahead window starts the background
    /// refresh. `None` when the cache is empty or its token is no longer
    /// usable: then [`acquire`](Self::acquire) waits for one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_token::{source, Token, TokenLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_token::Error> {
    /// let layer = TokenLayer::new(source::from_fn(|_| async {
    ///     Ok::<_, std::io::Error>(Token::new("t-1").with_expires_in(Duration::from_secs(60)))
    /// }));
    /// let cache = layer.cache();
    /// assert!(cache.current().is_none());
    /// let token = cache.acquire().await?;
    /// assert_eq!(token.header_value(), "Bearer t-1");
    ///
    /// // The API answered 401 to it: drop it, if it is still the current one.
    /// cache.invalidate_if_current(&token);
    /// assert!(cache.current().is_none());
    /// # Ok(()) }
    /// ```
    pub fn current(&self) -> Option<CurrentToken> {
        self.usable().map(|cached| CurrentToken { cached })
    }

    /// The current token, fetching one if the cache has none that is usable
    /// (concurrent callers share one fetch).
    pub async fn acquire(&self) -> Result<CurrentToken, Error> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let cached = self.shared.acquire().await?;
        Ok(CurrentToken { cached })
    }

    /// The API rejected `token` (a 401): drops it if it is still the
    /// current one — so a burst of rejections of one token drops it once —
    /// and fetches its successor, at once for the first rejection in a row
    /// and after the [`Backoff`] for the next ones (see the
    /// [module docs](self)). Returns whether a request may be sent again
    /// with a fresh token: one is being fetched, or is already there.
    pub fn invalidate_if_current(&self, token: &CurrentToken) -> bool {
        self.shared.reject(token.cached.generation)
    }

    /// An answer other than a rejection came back for a request that
    /// carried `token`: it ends a streak of rejections (see
    /// [`invalidate_if_current`](Self::invalidate_if_current)). Cheap when
    /// there is none.
    pub fn accepted(&self, token: &CurrentToken) {
        self.shared.accepted(token.cached.generation);
    }

    /// Drops the current token so that the next request fetches a new one.
    pub fn invalidate(&self) {
        self.shared.invalidate_current();
    }

    /// Revokes the cached access token and the held refresh token, waits for
    /// the revocation endpoint's answers and reports the outcome (the first
    /// failure, if any). For graceful shutdown: afterwards the cache is
    /// empty, so dropping it revokes nothing more. A fetch in flight when
    /// `shutdown` starts is waited for and its token revoked as well, never
    /// published. Does nothing when no revoker is configured.
    ///
    /// The cache stays usable: a request made after `shutdown` fetches a new
    /// token. See the [module docs](self#shutdown-and-revocation) for what
    /// happens when the last handle is dropped instead.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shared.shutdown().await
    }

    /// Revokes the token the fleet shares and removes it from the store
    /// (feature `store`): every replica fetches a new one at its next
    /// request. The one named call that revokes a shared token; see
    /// [`TokenLayerBuilder::store`](crate::TokenLayerBuilder::store).
    #[cfg(feature = "store")]
    pub async fn shutdown_fleet(&self) -> Result<(), Error> {
        self.shared.shutdown_fleet().await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let token_expires_at = self
            .shared
            .current_token()
            .map(|cached| cached.expires_at_wall);
        Stats {
            tokens_fetched: c.fetched.load(Ordering::Relaxed),
            fetch_failures: c.failures.load(Ordering::Relaxed),
            unauthorized_refreshes: c.unauthorized.load(Ordering::Relaxed),
            tokens_rejected: c.rejected.load(Ordering::Relaxed),
            revocations: c.revocations.load(Ordering::Relaxed),
            token_expires_at,
            tokens_from_store: c.from_store.load(Ordering::Relaxed),
            fleet_fetches_won: c.fleet_fetches.load(Ordering::Relaxed),
            fleet_fetches_waited: c.fleet_waits.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
            store_fallbacks: c.store_fallbacks.load(Ordering::Relaxed),
            #[cfg(feature = "jose")]
            dpop_nonce_retries: self
                .shared
                .config
                .dpop
                .as_ref()
                .map_or(0, crate::dpop::Dpop::nonce_retries),
            #[cfg(not(feature = "jose"))]
            dpop_nonce_retries: 0,
        }
    }
}
