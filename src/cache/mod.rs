//! The token cache: one current token per cache, single-flight fetches,
//! refresh ahead of expiry, backoff on failure.
//!
//! A [`TokenCache`] is a cheap handle (one `Arc`) to the shared state that
//! [`TokenLayer`](crate::TokenLayer) and every [`TokenService`](crate::TokenService)
//! made from it use. The current token lives in an [`arc_swap::ArcSwapOption`]
//! together with the header value built for it when it arrived, so the
//! per-request path is a lock-free load, a clock read and a header clone.
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
//! A failed fetch is retried no sooner than the [`Backoff`] allows; while the
//! cached token is still usable requests keep it, and when there is none,
//! requests during the backoff fail at once with the last error instead of
//! stampeding the token endpoint (R7).
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

use crate::error::{Endpoint, Error, InvalidResponse};
use crate::revoke::{RevokeRequest, RevokeService};
use crate::secret::{AccessToken, RefreshToken};
use crate::source::{FetchReason, FetchRequest, TokenSource};
use crate::token::{Token, is_header_safe};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::Instrument as _;

mod backoff;

pub use backoff::Backoff;

/// Lifetimes are capped here so that no `Instant` arithmetic can overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A token as the cache holds it: with its header value and its deadlines.
pub(crate) struct CachedToken {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    pub(crate) refresh_at: Instant,
    pub(crate) usable_until: Instant,
    pub(crate) expires_at: Instant,
    pub(crate) token: Token,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("generation", &self.generation)
            .field("usable_until", &self.usable_until)
            .finish_non_exhaustive()
    }
}

/// The cache's settings; see [`TokenLayerBuilder`](crate::TokenLayerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) header_name: HeaderName,
    pub(crate) scheme: Option<String>,
    pub(crate) leeway: Duration,
    pub(crate) refresh_ahead: f64,
    pub(crate) default_lifetime: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) override_existing: bool,
    pub(crate) origins: Option<Vec<crate::layer::Origin>>,
    pub(crate) retry_unauthorized: bool,
    pub(crate) revoker: Option<RevokeService>,
    pub(crate) revoke_on_drop: bool,
    pub(crate) revoke_replaced: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_name: http::header::AUTHORIZATION,
            scheme: Some("Bearer".to_owned()),
            leeway: Duration::from_secs(30),
            refresh_ahead: 0.1,
            default_lifetime: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            override_existing: false,
            origins: None,
            retry_unauthorized: true,
            revoker: None,
            revoke_on_drop: false,
            revoke_replaced: false,
        }
    }
}

type Outcome = Option<Result<Arc<CachedToken>, Error>>;

#[derive(Default)]
struct Flight {
    /// Set while a fetch runs; every waiter clones it.
    waiting: Option<watch::Receiver<Outcome>>,
    failures: u32,
    last_error: Option<Error>,
    refresh_token: Option<RefreshToken>,
}

#[derive(Default)]
struct Counters {
    fetched: AtomicU64,
    failures: AtomicU64,
    unauthorized: AtomicU64,
    revocations: AtomicU64,
}

pub(crate) struct Shared {
    current: ArcSwapOption<CachedToken>,
    source: Box<dyn TokenSource>,
    pub(crate) config: Config,
    flight: Mutex<Flight>,
    /// Mirrors `flight.waiting.is_some()`, read without the lock.
    fetching: AtomicBool,
    /// Nanoseconds after `epoch` before which no new attempt starts (0: none).
    retry_at: AtomicU64,
    epoch: Instant,
    generation: AtomicU64,
    /// The generation of the token in `current` (0: none). Services compare
    /// it with the copy they keep, and load `current` only when it moved.
    current_generation: AtomicU64,
    counters: Arc<Counters>,
}

/// What a service keeps of the current token, so that its per-request path
/// reads one atomic and the clock instead of loading the `ArcSwap`.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) header: HeaderValue,
    pub(crate) refresh_at: Instant,
    pub(crate) usable_until: Instant,
}

/// A snapshot of a cache's counters (R15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens fetched successfully.
    pub tokens_fetched: u64,
    /// Token fetches that failed.
    pub fetch_failures: u64,
    /// Tokens invalidated because a request carrying them was answered 401.
    pub unauthorized_refreshes: u64,
    /// Tokens revoked: revocation requests the server confirmed (an access
    /// token and its refresh token count as two when both are sent),
    /// including those sent in the background.
    pub revocations: u64,
    /// When the current token expires, as the server stated it (none when
    /// the cache is empty).
    pub token_expires_at: Option<SystemTime>,
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
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                source,
                config,
                flight: Mutex::new(Flight::default()),
                fetching: AtomicBool::new(false),
                retry_at: AtomicU64::new(0),
                epoch: Instant::now(),
                generation: AtomicU64::new(0),
                current_generation: AtomicU64::new(0),
                counters: Arc::default(),
            }),
        }
    }

    /// The current access token, fetching one if the cache has none that is
    /// usable. Concurrent callers share one fetch.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        let cached = match self.shared.fresh() {
            Some(cached) => cached,
            None => self.shared.acquire().await?,
        };
        Ok(cached.token.access_token().clone())
    }

    /// Drops the current token so that the next request fetches a new one.
    pub fn invalidate(&self) {
        if let Some(current) = self.shared.current.swap(None) {
            let _ = self.shared.current_generation.compare_exchange(
                current.generation,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            tracing::debug!(
                generation = current.generation,
                "token invalidated by the application"
            );
        }
    }

    /// Revokes the cached access token and the held refresh token, waits for
    /// the revocation endpoint's answers and reports the outcome (the first
    /// failure, if any). For graceful shutdown: afterwards the cache is
    /// empty, so dropping it revokes nothing more. Does nothing when no
    /// revoker is configured or no token is held.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let Some(revoker) = self.shared.config.revoker.clone() else {
            return Ok(());
        };
        let Some(token) = self.shared.take_tokens() else {
            return Ok(());
        };
        revoke(&revoker, token, &self.shared.counters).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let now = Instant::now();
        let token_expires_at = self
            .shared
            .current
            .load()
            .as_ref()
            .map(|t| SystemTime::now() + t.expires_at.saturating_duration_since(now));
        Stats {
            tokens_fetched: c.fetched.load(Ordering::Relaxed),
            fetch_failures: c.failures.load(Ordering::Relaxed),
            unauthorized_refreshes: c.unauthorized.load(Ordering::Relaxed),
            revocations: c.revocations.load(Ordering::Relaxed),
            token_expires_at,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Flight> {
        // The lock is never held across a panic-prone call; recover anyway.
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation of the current token (0: none): one atomic load.
    #[inline]
    pub(crate) fn current_generation(&self) -> u64 {
        self.current_generation.load(Ordering::Acquire)
    }

    /// A snapshot of the current token, usable or not.
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        self.current.load().as_ref().map(|t| Snapshot {
            generation: t.generation,
            header: t.header.clone(),
            refresh_at: t.refresh_at,
            usable_until: t.usable_until,
        })
    }

    /// A usable token, if the cache holds one (no fetch).
    pub(crate) fn fresh(&self) -> Option<Arc<CachedToken>> {
        let cached = self.current.load_full()?;
        (Instant::now() < cached.usable_until).then_some(cached)
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn in_backoff(&self, now: Instant) -> bool {
        let until = self.retry_at.load(Ordering::Acquire);
        until != 0 && self.nanos_since_epoch(now) < until
    }

    /// Starts one background refresh of the token of `generation`, unless a
    /// fetch runs, the backoff forbids it, or the token was replaced.
    #[cold]
    pub(crate) fn refresh_ahead(self: &Arc<Self>, generation: u64, now: Instant) {
        if self.fetching.load(Ordering::Acquire) || self.in_backoff(now) {
            return;
        }
        let mut flight = self.lock();
        let still_current = self
            .current
            .load()
            .as_ref()
            .is_some_and(|t| t.generation == generation);
        // Checked again under the lock: a fetch may have started and failed
        // between the first check and here, and set a new backoff.
        if flight.waiting.is_none() && still_current && !self.in_backoff(Instant::now()) {
            // Without a runtime there is no background to refresh in; the
            // next request past the deadline fetches instead.
            let _ = self.start_fetch(&mut flight, FetchReason::RefreshAhead);
        }
    }

    /// Waits for a usable token, starting a fetch unless one is running.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Arc<CachedToken>, Error> {
        let mut waiting = {
            let mut flight = self.lock();
            if let Some(cached) = self.fresh() {
                return Ok(cached);
            }
            match &flight.waiting {
                Some(rx) => rx.clone(),
                None => {
                    if self.in_backoff(Instant::now())
                        && let Some(err) = &flight.last_error
                    {
                        return Err(err.clone());
                    }
                    let reason = if self.current.load().is_some() {
                        FetchReason::Expired
                    } else {
                        FetchReason::Initial
                    };
                    self.start_fetch(&mut flight, reason)?
                }
            }
        };
        match waiting.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Err(Error::Aborted)),
            Err(_) => Err(Error::Aborted),
        }
    }

    /// Invalidates the token of `generation` if it is still the current one
    /// (so a burst of 401s for one token causes one refresh), and starts
    /// fetching its successor. Returns whether it was current.
    pub(crate) fn invalidate(self: &Arc<Self>, generation: u64) -> bool {
        let current = self.current.load();
        if current.as_ref().is_none_or(|t| t.generation != generation) {
            return false;
        }
        let previous = self.current.compare_and_swap(&*current, None);
        let swapped = match (&*previous, &*current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if swapped {
            // Services compare their copy with this generation: move it off
            // the rejected token, so none of them sends it again.
            let _ = self.current_generation.compare_exchange(
                generation,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                generation,
                "token rejected by the server (401); fetching a new one"
            );
            let mut flight = self.lock();
            if flight.waiting.is_none() && !self.in_backoff(Instant::now()) {
                let _ = self.start_fetch(&mut flight, FetchReason::Unauthorized);
            }
        }
        swapped
    }

    /// Starts a fetch in a task of its own; the caller holds the flight lock.
    fn start_fetch(
        self: &Arc<Self>,
        flight: &mut Flight,
        reason: FetchReason,
    ) -> Result<watch::Receiver<Outcome>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            tracing::warn!("no tokio runtime: cannot fetch a token");
            Error::Aborted
        })?;
        let (tx, rx) = watch::channel(None);
        flight.waiting = Some(rx.clone());
        self.fetching.store(true, Ordering::Release);
        let mut request = FetchRequest::new(reason);
        request.refresh_token = flight.refresh_token.clone();
        let guard = FetchGuard {
            shared: Arc::clone(self),
            tx: Some(tx),
        };
        runtime.spawn(guard.run(request));
        Ok(rx)
    }

    fn admit(
        &self,
        mut token: Token,
        started: Instant,
    ) -> Result<(Arc<CachedToken>, Option<RefreshToken>), Error> {
        let invalid = |reason| Error::invalid(Endpoint::Token, StatusCode::OK, reason);
        let secret = token.access_token().secret();
        if secret.is_empty() {
            return Err(invalid(InvalidResponse::EmptyAccessToken));
        }
        if !is_header_safe(secret) {
            return Err(invalid(InvalidResponse::AccessTokenNotHeaderSafe));
        }
        let value = match &self.config.scheme {
            Some(scheme) => format!("{scheme} {secret}"),
            None => secret.to_owned(),
        };
        let mut header = HeaderValue::from_maybe_shared(Bytes::from(value))
            .map_err(|_| invalid(InvalidResponse::AccessTokenNotHeaderSafe))?;
        header.set_sensitive(true);

        let lifetime = token
            .expires_in()
            .unwrap_or(self.config.default_lifetime)
            .min(MAX_LIFETIME);
        let leeway = self.config.leeway.min(lifetime / 2);
        let expires_at = started + lifetime;
        let usable_until = expires_at - leeway;
        let window = lifetime.mul_f64(self.config.refresh_ahead);
        let refresh_at = usable_until
            .checked_sub(window)
            .unwrap_or(started)
            .max(started);
        let refresh_token = token.take_refresh_token();
        let cached = CachedToken {
            header,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            refresh_at,
            usable_until,
            expires_at,
            token,
        };
        Ok((Arc::new(cached), refresh_token))
    }

    /// Records the outcome of a fetch, under the flight lock.
    fn finish(&self, outcome: &Result<(Arc<CachedToken>, Option<RefreshToken>), Error>) {
        let mut flight = self.lock();
        match outcome {
            Ok((cached, refresh_token)) => {
                // The latest answer's refresh token replaces the held one
                // (sources re-attach the old one when a refresh grant
                // brought no new one, RFC 6749 §6).
                flight.refresh_token = refresh_token.clone();
                let replaced = self.current.swap(Some(Arc::clone(cached)));
                if self.config.revoke_replaced
                    && let Some(old) = replaced
                {
                    self.revoke_in_background(
                        Token::new(old.token.access_token().clone()),
                        "replaced",
                    );
                }
                self.current_generation
                    .store(cached.generation, Ordering::Release);
                flight.failures = 0;
                flight.last_error = None;
                self.retry_at.store(0, Ordering::Release);
                self.counters.fetched.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    generation = cached.generation,
                    expires_in_secs = cached
                        .expires_at
                        .saturating_duration_since(Instant::now())
                        .as_secs(),
                    "token fetched"
                );
            }
            Err(err) => {
                flight.failures = flight.failures.saturating_add(1);
                let delay = self
                    .config
                    .backoff
                    .delay(flight.failures, err.retry_after());
                let at = self.nanos_since_epoch(Instant::now() + delay);
                self.retry_at.store(at, Ordering::Release);
                flight.last_error = Some(err.clone());
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %err,
                    failures = flight.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "token fetch failed"
                );
            }
        }
        flight.waiting = None;
        self.fetching.store(false, Ordering::Release);
    }
}

/// Revokes what `token` holds: the access token (unless empty) and the
/// refresh token, in the order the dialect wants.
async fn revoke(revoker: &RevokeService, token: Token, counters: &Counters) -> Result<(), Error> {
    let requests = if token.access_token().secret().is_empty() {
        token
            .refresh_token()
            .map(|refresh| RevokeRequest::refresh(refresh.clone()))
            .into_iter()
            .collect()
    } else {
        revoker.requests_for(&token)
    };
    let mut first_error = None;
    let mut svc = revoker.clone();
    for request in requests {
        let kind = request.kind();
        let span = tracing::info_span!("tower_token::revoke", kind = kind.as_str());
        match tower_service::Service::call(&mut svc, request)
            .instrument(span)
            .await
        {
            Ok(()) => {
                counters.revocations.fetch_add(1, Ordering::Relaxed);
                tracing::info!(kind = kind.as_str(), "token revoked");
            }
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "token revocation failed");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Shared {
    /// Empties the cache and returns what it held, for revocation.
    fn take_tokens(&self) -> Option<Token> {
        let mut flight = self.lock();
        let current = self.current.swap(None);
        self.current_generation.store(0, Ordering::Release);
        let refresh = flight.refresh_token.take();
        let mut token = match current {
            Some(cached) => Token::new(cached.token.access_token().clone()),
            None if refresh.is_some() => Token::new(String::new()),
            None => return None,
        };
        if let Some(refresh) = refresh {
            token = token.with_refresh_token(refresh);
        }
        Some(token)
    }

    /// Revokes `token` in a task on the current runtime; outside a runtime,
    /// logs and skips (never blocks, never panics).
    fn revoke_in_background(&self, token: Token, why: &'static str) {
        let Some(revoker) = self.config.revoker.clone() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!(why, "revoking a token in the background");
                let counters = Arc::clone(&self.counters);
                runtime.spawn(async move {
                    let _ = revoke(&revoker, token, &counters).await;
                });
            }
            Err(_) => tracing::warn!(why, "no tokio runtime: token not revoked"),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.config.revoke_on_drop
            && self.config.revoker.is_some()
            && let Some(token) = self.take_tokens()
        {
            self.revoke_in_background(token, "last handle dropped");
        }
    }
}

/// Runs one fetch; if the task is dropped before it finishes (runtime shut
/// down, source panicked), the drop still clears the flight so the next
/// caller can start another.
struct FetchGuard {
    shared: Arc<Shared>,
    tx: Option<watch::Sender<Outcome>>,
}

impl FetchGuard {
    async fn run(mut self, request: FetchRequest) {
        let shared = Arc::clone(&self.shared);
        let reason = request.reason;
        let started = Instant::now();
        let span = tracing::debug_span!("tower_token::fetch", ?reason);
        let fetched =
            tokio::time::timeout(shared.config.fetch_timeout, shared.source.fetch(request))
                .instrument(span)
                .await;
        let outcome = match fetched {
            Ok(Ok(token)) => shared.admit(token, started),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Timeout {
                endpoint: Endpoint::Token,
                timeout: shared.config.fetch_timeout,
            }),
        };
        shared.finish(&outcome);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(outcome.map(|(cached, _)| cached)));
        }
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.shared.finish(&Err(Error::Aborted));
            let _ = tx.send(Some(Err(Error::Aborted)));
        }
    }
}
