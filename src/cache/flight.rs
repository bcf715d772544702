//! The shared state behind a cache: the current token, the one fetch in
//! flight, publishing a fetched token, invalidating a rejected one, and the
//! backoff that gates new fetches.
//!
//! Every write of the current token and of its generation happens under the
//! flight lock, so a service that compares its snapshot's generation with
//! the cache's never keeps a token the cache has dropped. Readers take no
//! lock.

use super::exit::{self, Late};
use super::{CachedToken, Config, Counters, Deadlines, Snapshot, Stored};
use crate::error::{Endpoint, Error, InvalidResponse};
use crate::secret::RefreshToken;
use crate::source::{FetchReason, FetchRequest, TokenSource};
use crate::token::{Token, is_header_safe};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::Instrument as _;

/// Lifetimes are capped here so that no deadline arithmetic can overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub(super) type Outcome = Option<Result<Arc<CachedToken>, Error>>;

#[derive(Default)]
pub(super) struct Flight {
    /// Set while a fetch runs; every waiter clones it.
    pub(super) waiting: Option<watch::Receiver<Outcome>>,
    /// Failed fetches in a row.
    failures: u32,
    /// Tokens the API rejected in a row (no other answer in between).
    rejections: u32,
    last_error: Option<Error>,
    pub(super) refresh_token: Option<RefreshToken>,
    /// Set by `shutdown` while a fetch runs: that fetch's token is not
    /// published but kept in `late`, for revocation.
    pub(super) discard_in_flight: bool,
    pub(super) late: Late,
    /// The store fingerprint of the last token the API rejected, for the
    /// next fetch to drop from the fleet's store.
    rejected_fingerprint: Option<String>,
}

pub(crate) struct Shared {
    current: ArcSwapOption<CachedToken>,
    /// The generation of the token in `current` (0: none). Services compare
    /// it with the copy they keep, and load `current` only when it moved.
    current_generation: AtomicU64,
    /// Mirrors `flight.rejections`, read without the lock by answers that
    /// may end a streak of rejections.
    rejections: AtomicU32,
    /// Mirrors `flight.waiting.is_some()`, read without the lock.
    fetching: AtomicBool,
    /// Nanoseconds after `epoch` before which no new attempt starts (0: none).
    retry_at: AtomicU64,
    epoch: Instant,
    generation: AtomicU64,
    flight: Mutex<Flight>,
    source: Box<dyn TokenSource>,
    pub(crate) config: Config,
    pub(super) counters: Arc<Counters>,
}

impl Shared {
    pub(super) fn new(source: Box<dyn TokenSource>, config: Config) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            current_generation: AtomicU64::new(0),
            rejections: AtomicU32::new(0),
            fetching: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            flight: Mutex::new(Flight::default()),
            source,
            config,
            counters: Arc::default(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Flight> {
        // Nothing that can panic runs under the lock; recover anyway.
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The wall clock, as configured.
    #[inline]
    pub(crate) fn wall(&self) -> SystemTime {
        (self.config.wall_clock)()
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
            ath: t.ath.clone(),
            deadlines: t.deadlines,
        })
    }

    /// The current token, usable or not.
    pub(super) fn current_token(&self) -> Option<Arc<CachedToken>> {
        self.current.load_full()
    }

    /// Runs `f` on the current token, read through the `ArcSwap` guard:
    /// no reference count is taken unless `f` takes one.
    #[inline]
    pub(super) fn peek<R>(&self, f: impl FnOnce(&Arc<CachedToken>) -> R) -> Option<R> {
        self.current.load().as_ref().map(f)
    }

    /// A usable token, if the cache holds one (no fetch).
    pub(crate) fn fresh(&self) -> Option<Arc<CachedToken>> {
        let cached = self.current.load_full()?;
        cached
            .deadlines
            .usable(Instant::now(), self.wall())
            .then_some(cached)
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

    /// Forbids new attempts for `delay` from now (saturating: a delay of
    /// `Duration::MAX` forbids them for centuries, and cannot overflow).
    /// Never shortens a backoff already set.
    fn back_off(&self, delay: Duration) {
        let delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let at = self.nanos_since_epoch(Instant::now()).saturating_add(delay);
        self.retry_at.fetch_max(at, Ordering::AcqRel);
    }

    /// Starts one background refresh of the token of `generation`, unless a
    /// fetch runs, the backoff forbids it, or the token was replaced.
    #[cold]
    pub(crate) fn refresh_ahead(self: &Arc<Self>, generation: u64, now: Instant) {
        if self.fetching.load(Ordering::Acquire) || self.in_backoff(now) {
            return;
        }
        let mut flight = self.lock();
        // Checked again under the lock: a fetch may have started and failed
        // between the first check and here, and set a new backoff.
        if flight.waiting.is_none()
            && self.current_generation() == generation
            && !self.in_backoff(Instant::now())
        {
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

    /// Empties the cache; the caller holds the flight lock. Returns what it
    /// held.
    pub(super) fn clear(&self, _flight: &mut Flight) -> Option<Arc<CachedToken>> {
        let previous = self.current.swap(None);
        self.current_generation.store(0, Ordering::Release);
        previous
    }

    /// Drops the current token, whatever it is (the application asked).
    pub(super) fn invalidate_current(&self) {
        let mut flight = self.lock();
        if let Some(previous) = self.clear(&mut flight) {
            tracing::debug!(
                generation = previous.generation,
                "token invalidated by the application"
            );
        }
    }

    /// The API rejected the token of `generation` (a 401 or gRPC
    /// `UNAUTHENTICATED`). If it is still the current one (so a burst of
    /// 401s for one token counts once) it is dropped and its successor is
    /// fetched — at once for the first rejection in a row, after the
    /// backoff for the next ones.
    ///
    /// Returns whether a request that carried it may be sent again: a fetch
    /// is running or a newer token is already there.
    pub(crate) fn reject(self: &Arc<Self>, generation: u64) -> bool {
        let mut flight = self.lock();
        if generation != 0 && self.current_generation() == generation {
            if let Some(previous) = self.clear(&mut flight) {
                flight.rejected_fingerprint =
                    previous.stored.as_ref().map(|s| s.fingerprint.clone());
            }
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            flight.rejections = flight.rejections.saturating_add(1);
            self.rejections.store(flight.rejections, Ordering::Relaxed);
            if flight.rejections > 1 {
                let delay = self.config.backoff.delay(flight.rejections - 1, None);
                self.back_off(delay);
                flight.last_error = Some(Error::TokenRejected {
                    consecutive: flight.rejections,
                });
                tracing::warn!(
                    generation,
                    consecutive = flight.rejections,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "the API rejected a fresh token too; backing off before the next fetch"
                );
            } else {
                tracing::info!(
                    generation,
                    "token rejected by the server (401); fetching a new one"
                );
            }
            // Its successor is the fetch in flight, if any, or a new one.
            if !self.in_backoff(Instant::now())
                && (flight.waiting.is_some()
                    || self
                        .start_fetch(&mut flight, FetchReason::Unauthorized)
                        .is_ok())
            {
                self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            }
        }
        flight.waiting.is_some() || self.fresh().is_some()
    }

    /// An answer other than a rejection came back for the token of
    /// `generation`: the API accepts tokens, so a streak of rejections ends.
    /// One relaxed load when there is no streak.
    #[inline]
    pub(crate) fn accepted(&self, generation: u64) {
        if self.rejections.load(Ordering::Relaxed) != 0 {
            self.end_rejections(generation);
        }
    }

    #[cold]
    fn end_rejections(&self, generation: u64) {
        let mut flight = self.lock();
        if self.current_generation() == generation {
            flight.rejections = 0;
            self.rejections.store(0, Ordering::Relaxed);
        }
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
        #[cfg(feature = "jose")]
        {
            request.dpop = self.config.dpop.clone();
        }
        let guard = FetchGuard {
            shared: Arc::clone(self),
            tx: Some(tx),
        };
        runtime.spawn(guard.run(request));
        Ok(rx)
    }

    /// The header value and deadlines of a fetched token.
    fn admit(
        &self,
        mut token: Token,
        stored: Option<Stored>,
        started: Instant,
        started_wall: SystemTime,
    ) -> Result<(CachedToken, Option<RefreshToken>), Error> {
        let invalid = |reason| Error::invalid(Endpoint::Token, StatusCode::OK, reason);
        let secret = token.access_token().secret();
        if secret.is_empty() {
            return Err(invalid(InvalidResponse::EmptyAccessToken));
        }
        if !is_header_safe(secret) {
            return Err(invalid(InvalidResponse::AccessTokenNotHeaderSafe));
        }
        #[cfg(feature = "jose")]
        crate::dpop::Dpop::admit(self.config.dpop.as_ref(), token.is_dpop()).map_err(invalid)?;
        #[cfg(not(feature = "jose"))]
        if token.is_dpop() {
            return Err(invalid(InvalidResponse::UnsupportedTokenType(
                "DPoP".into(),
            )));
        }
        let (value, ath) = match &self.config.scheme {
            _ if token.is_dpop() => (format!("DPoP {secret}"), dpop_ath(secret)),
            Some(scheme) => (format!("{scheme} {secret}"), None),
            None => (secret.to_owned(), None),
        };
        let mut header = HeaderValue::from_maybe_shared(Bytes::from(value))
            .map_err(|_| invalid(InvalidResponse::AccessTokenNotHeaderSafe))?;
        header.set_sensitive(true);

        let (deadlines, expires_at_wall) = deadlines(
            token.expires_in(),
            self.config.default_lifetime,
            self.config.leeway,
            self.config.refresh_ahead,
            started,
            started_wall,
        );
        let refresh_token = token.take_refresh_token();
        let cached = CachedToken {
            header,
            ath,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            deadlines,
            expires_at_wall,
            token,
            stored,
        };
        Ok((cached, refresh_token))
    }

    /// Asks the token source, bounded by the fetch timeout.
    pub(super) async fn fetch_from_source(&self, request: FetchRequest) -> Result<Token, Error> {
        let timeout = self.config.fetch_timeout;
        tokio::time::timeout(timeout, self.source.fetch(request))
            .await
            .unwrap_or(Err(Error::Timeout {
                endpoint: Endpoint::Token,
                timeout,
            }))
    }

    /// A token from the fleet's store when the cache has one, else from the
    /// source.
    async fn fetch(&self, request: FetchRequest) -> (Result<Token, Error>, Option<Stored>) {
        #[cfg(feature = "store")]
        if let Some(fleet) = &self.config.fleet {
            let (held, rejected) = {
                let mut flight = self.lock();
                let held = self
                    .current
                    .load()
                    .as_ref()
                    .and_then(|c| c.stored.as_ref().map(|s| s.issued_at_ms));
                (held, flight.rejected_fingerprint.take())
            };
            return fleet.fetch(self, request, held, rejected).await;
        }
        (self.fetch_from_source(request).await, None)
    }

    /// Records the outcome of a fetch and returns what its waiters get.
    fn finish(
        &self,
        fetched: Result<Token, Error>,
        stored: Option<Stored>,
        started: Instant,
        started_wall: SystemTime,
    ) -> Result<Arc<CachedToken>, Error> {
        let admitted = fetched.and_then(|token| self.admit(token, stored, started, started_wall));
        let mut flight = self.lock();
        flight.waiting = None;
        self.fetching.store(false, Ordering::Release);
        if std::mem::take(&mut flight.discard_in_flight) {
            // `shutdown` ran meanwhile: the token is revoked, not published.
            if let Ok((cached, refresh_token)) = admitted {
                flight.late.push(exit::held(Some(&cached), refresh_token));
            }
            return Err(Error::Aborted);
        }
        match admitted {
            Ok((cached, refresh_token)) => {
                let cached = Arc::new(cached);
                // The latest answer's refresh token replaces the held one
                // (sources re-attach the old one when a refresh grant
                // brought no new one, RFC 6749 §6).
                flight.refresh_token = refresh_token;
                let replaced = self.current.swap(Some(Arc::clone(&cached)));
                #[cfg(test)]
                tests::between_swap_and_generation();
                self.current_generation
                    .store(cached.generation, Ordering::Release);
                flight.failures = 0;
                flight.last_error = None;
                self.retry_at.store(0, Ordering::Release);
                self.counters.fetched.fetch_add(1, Ordering::Relaxed);
                drop(flight);
                tracing::info!(
                    generation = cached.generation,
                    expires_in_secs = cached
                        .token
                        .expires_in()
                        .unwrap_or(self.config.default_lifetime)
                        .as_secs(),
                    "token fetched"
                );
                if self.config.revoke_replaced
                    && cached.stored.is_none()
                    && let Some(old) = replaced
                {
                    self.revoke_in_background(&[exit::held(Some(&old), None)], "replaced");
                }
                Ok(cached)
            }
            Err(err) => {
                flight.failures = flight.failures.saturating_add(1);
                let delay = self
                    .config
                    .backoff
                    .delay(flight.failures, err.retry_after());
                self.back_off(delay);
                flight.last_error = Some(err.clone());
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %err,
                    failures = flight.failures,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "token fetch failed"
                );
                Err(err)
            }
        }
    }

    /// A fetch ended without an outcome (its task was dropped: the runtime
    /// is shutting down). Not a failure: no backoff, nothing counted.
    fn abandon(&self) {
        let mut flight = self.lock();
        flight.waiting = None;
        flight.discard_in_flight = false;
        self.fetching.store(false, Ordering::Release);
    }
}

/// The `ath` of a DPoP-bound token.
fn dpop_ath(secret: &str) -> Option<Arc<str>> {
    #[cfg(feature = "jose")]
    return Some(crate::dpop::ath(secret));
    #[cfg(not(feature = "jose"))]
    {
        let _ = secret;
        None
    }
}

/// The deadlines of a token fetched at `started` (on both clocks) that
/// the server said lives `expires_in` (else `default_lifetime`), and the
/// wall-clock time it expires. The lifetime is capped at [`MAX_LIFETIME`], so
/// no sum overflows; should one still, the deadline is `started` (the token
/// is refreshed at once) rather than a panic.
pub(crate) fn deadlines(
    expires_in: Option<Duration>,
    default_lifetime: Duration,
    leeway: Duration,
    refresh_ahead: f64,
    started: Instant,
    started_wall: SystemTime,
) -> (Deadlines, SystemTime) {
    let lifetime = expires_in.unwrap_or(default_lifetime).min(MAX_LIFETIME);
    let leeway = leeway.min(lifetime / 2);
    let usable_for = lifetime.saturating_sub(leeway);
    let window =
        Duration::try_from_secs_f64(lifetime.as_secs_f64() * refresh_ahead.clamp(0.0, 1.0))
            .unwrap_or(Duration::ZERO);
    let refresh_after = usable_for.saturating_sub(window);
    let mono = |d: Duration| started.checked_add(d).unwrap_or(started);
    let wall = |d: Duration| started_wall.checked_add(d).unwrap_or(started_wall);
    let deadlines = Deadlines {
        refresh_at: mono(refresh_after),
        usable_until: mono(usable_for),
        refresh_at_wall: wall(refresh_after),
        usable_until_wall: wall(usable_for),
    };
    (deadlines, wall(lifetime))
}

/// Runs one fetch; if the task is dropped before it finishes (the runtime
/// shut down), the drop still clears the flight so the next caller can
/// start another.
struct FetchGuard {
    shared: Arc<Shared>,
    tx: Option<watch::Sender<Outcome>>,
}

impl FetchGuard {
    async fn run(mut self, request: FetchRequest) {
        let shared = Arc::clone(&self.shared);
        let reason = request.reason;
        let started = Instant::now();
        let started_wall = shared.wall();
        let span = tracing::debug_span!("tower_token::fetch", ?reason);
        let (fetched, stored) = shared.fetch(request).instrument(span).await;
        // A token shared through a store is dated from when it was issued,
        // so that its deadlines are the same in every replica.
        // (A date past what this platform's clock holds keeps the fetch's
        // own start.)
        let issued = stored.as_ref().and_then(|stored| {
            std::time::UNIX_EPOCH.checked_add(Duration::from_millis(stored.issued_at_ms))
        });
        let (started, started_wall) = match issued {
            Some(issued) => {
                let age = shared.wall().duration_since(issued).unwrap_or_default();
                (Instant::now().checked_sub(age).unwrap_or(started), issued)
            }
            None => (started, started_wall),
        };
        let outcome = shared.finish(fetched, stored, started, started_wall);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(outcome));
        }
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Only clears the flight: nothing here can panic, so this is
            // safe even while unwinding.
            self.shared.abandon();
            let _ = tx.send(Some(Err(Error::Aborted)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    thread_local! {
        /// Runs inside `finish`, between publishing a token and its
        /// generation, on the thread that publishes.
        static HOOK: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
    }

    pub(super) fn between_swap_and_generation() {
        HOOK.with(|hook| {
            if let Some(hook) = hook.borrow().as_ref() {
                hook()
            }
        })
    }

    fn shared() -> Arc<Shared> {
        let source =
            crate::source::from_fn(|_| async { Ok::<_, std::io::Error>(Token::new("unused")) });
        Arc::new(Shared::new(Box::new(source), Config::default()))
    }

    fn publish(shared: &Shared, token: &str) -> Result<Arc<CachedToken>, Error> {
        let token = Token::new(token).with_expires_in(Duration::from_secs(3600));
        shared.finish(Ok(token), None, Instant::now(), SystemTime::now())
    }

    /// An invalidation that lands while a fetch publishes its token: the
    /// cache must not end up empty with a generation that still names the
    /// dropped token, or services holding a snapshot of it would keep
    /// sending it and never fetch again.
    #[test]
    fn an_invalidation_during_a_publish_leaves_no_stale_generation() {
        let shared = shared();
        publish(&shared, "t-1").unwrap();
        assert_eq!(shared.current_generation(), 1);

        let invalidations: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (cache, handles) = (Arc::clone(&shared), Arc::clone(&invalidations));
        HOOK.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                let cache = Arc::clone(&cache);
                let (done, wait) = mpsc::channel();
                handles.lock().unwrap().push(std::thread::spawn(move || {
                    cache.invalidate_current();
                    let _ = done.send(());
                }));
                // Give the invalidation every chance to run in this window.
                let _ = wait.recv_timeout(Duration::from_millis(200));
            }))
        });
        let published = publish(&shared, "t-2").unwrap();
        HOOK.with(|hook| hook.borrow_mut().take());
        for handle in invalidations.lock().unwrap().drain(..) {
            handle.join().unwrap();
        }

        assert_eq!(published.generation, 2);
        assert!(shared.current_token().is_none(), "t-2 was invalidated");
        assert_eq!(
            shared.current_generation(),
            0,
            "the generation names no token, so every snapshot is dropped"
        );
    }

    #[test]
    fn a_rejection_for_a_replaced_token_changes_nothing() {
        let shared = shared();
        publish(&shared, "t-1").unwrap();
        publish(&shared, "t-2").unwrap();
        // No runtime: no fetch can start, and none is needed.
        assert!(shared.reject(1), "t-2 is there for a retry");
        assert_eq!(shared.current_generation(), 2);
        assert_eq!(shared.counters.rejected.load(Ordering::Relaxed), 0);
    }
}
