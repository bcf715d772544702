//! The fleet path of a fetch (feature `store`): when a cache shares a
//! [`TokenStore`] with the other replicas of its service, a fetch first
//! looks there, and only the replica holding the store's lock asks the
//! token source; the others wait for it. See [`crate::store`].
//!
//! A fetch through the store:
//!
//! 1. drops from the store the token this replica saw rejected, if it is
//!    still the stored one (by fingerprint);
//! 2. takes the stored token when it is usable and newer than the one this
//!    replica holds — no fetch;
//! 3. else takes the lock and fetches, puts the token in the store, releases
//!    the lock and wakes the waiting replicas;
//! 4. else (another replica holds the lock) waits for its notification, with
//!    a polling fallback, and starts over; past the lock's lifetime (its
//!    holder died) the lock is free again and a waiter takes it.
//!
//! Every store call is bounded by the store timeout; a store that fails or
//! does not answer makes this replica fetch on its own, as without a store.

use super::flight::Shared;
use super::{Counters, Stored};
use crate::error::Error;
use crate::source::FetchRequest;
use crate::store::{Sealed, Sealer, StoreError, StoreKeys, TokenStore};
use crate::token::Token;
use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a waiting replica reads the store again when no notification
/// comes (a notification can be missed).
const POLL: Duration = Duration::from_millis(250);

/// A cache's share of a fleet store.
pub(crate) struct Fleet {
    store: Arc<dyn TokenStore>,
    sealer: Sealer,
    /// The store key of this cache's tokens.
    key: String,
    /// This cache's lock owner value.
    owner: String,
    lock_ttl: Duration,
    timeout: Duration,
    /// Store failures in a row, and until when the store is left alone.
    trouble: Mutex<(u32, Option<Instant>)>,
}

/// After a store failure, fetches skip the store for this long, doubling
/// up to [`STORE_BACKOFF_MAX`]: an outage costs one store timeout now and
/// then, not one per fetch.
const STORE_BACKOFF: Duration = Duration::from_millis(500);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("key", &self.key)
            .field("lock_ttl", &self.lock_ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch of `at` (0 before it).
fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random lock owner value, from the standard library's hasher keys.
fn owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{a:016x}{b:016x}-{}", std::process::id())
}

/// The store key for tokens of `shape`: a hash, so that nothing of the
/// client or its parameters is readable in the store.
pub(crate) fn key_for(shape: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(shape.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Fleet {
    pub(crate) fn new(
        store: Arc<dyn TokenStore>,
        keys: &StoreKeys,
        shape: &str,
        lock_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            sealer: Sealer::new(keys),
            key: key_for(shape),
            owner: owner(),
            lock_ttl,
            timeout,
            trouble: Mutex::new((0, None)),
        }
    }

    fn trouble(&self) -> std::sync::MutexGuard<'_, (u32, Option<Instant>)> {
        self.trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the store is being left alone after failures.
    fn resting(&self) -> bool {
        self.trouble().1.is_some_and(|until| Instant::now() < until)
    }

    /// One store call, bounded by the store timeout (plus `extra`).
    async fn call<T>(
        &self,
        counters: &Counters,
        extra: Duration,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.timeout.saturating_add(extra);
        let result = match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(limit)),
        };
        match &result {
            Err(e) => {
                counters.store_errors.fetch_add(1, Ordering::Relaxed);
                let mut trouble = self.trouble();
                trouble.0 = trouble.0.saturating_add(1);
                let delay = crate::cache::Backoff::new(STORE_BACKOFF, STORE_BACKOFF_MAX)
                    .delay(trouble.0, None);
                trouble.1 = Instant::now().checked_add(delay);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "token store call failed; fetching without it for a while"
                );
            }
            Ok(_) => {
                let mut trouble = self.trouble();
                if trouble.0 != 0 {
                    *trouble = (0, None);
                    tracing::info!("token store answers again");
                }
            }
        }
        result
    }

    /// A stored token this replica may take: it opens, was not the one
    /// rejected, is still usable, and is newer than `held` (when refreshing
    /// a held token, taking it back would change nothing).
    fn usable(
        &self,
        entry: &crate::store::Entry,
        held: Option<u64>,
        rejected: Option<&str>,
        now_ms: u64,
        leeway: Duration,
    ) -> Option<(Token, Stored)> {
        if rejected == Some(entry.fingerprint.as_str()) {
            return None;
        }
        if held.is_some_and(|issued| entry.issued_at_ms <= issued) {
            return None;
        }
        let sealed = self.sealer.open(&self.key, entry)?;
        // Usable by this cache's own rule: before its expiry less the
        // leeway, capped at half its lifetime (as `admit` computes it).
        let lifetime_ms = sealed.expires_at_ms.saturating_sub(sealed.issued_at_ms);
        let leeway_ms = u64::try_from(leeway.as_millis())
            .unwrap_or(u64::MAX)
            .min(lifetime_ms / 2);
        if now_ms >= sealed.expires_at_ms.saturating_sub(leeway_ms) {
            return None;
        }
        // The whole lifetime: the cache dates the token from `issued_at`, so
        // every replica's deadlines are those of the replica that fetched it.
        let mut token =
            Token::new(sealed.access_token).with_expires_in(Duration::from_millis(lifetime_ms));
        if let Some(refresh) = sealed.refresh_token {
            token = token.with_refresh_token(refresh);
        }
        Some((
            token,
            Stored {
                issued_at_ms: sealed.issued_at_ms,
                fingerprint: entry.fingerprint.clone(),
            },
        ))
    }

    /// Removes the stored token of `fingerprint`, if it is still there
    /// (a fleet-wide revocation, or a rejection).
    pub(crate) async fn remove(&self, counters: &Counters, fingerprint: &str) {
        let _ = self
            .call(
                counters,
                Duration::ZERO,
                self.store.invalidate_if_same(&self.key, fingerprint),
            )
            .await;
    }

    /// A token for `shared`, through the store; see the
    /// [module docs](self).
    pub(crate) async fn fetch(
        &self,
        shared: &Shared,
        request: FetchRequest,
        held: Option<u64>,
        rejected: Option<String>,
    ) -> (Result<Token, Error>, Option<Stored>) {
        let counters = &shared.counters;
        if self.resting() {
            return self.alone(shared, request).await;
        }
        if let Some(fingerprint) = &rejected {
            self.remove(counters, fingerprint).await;
        }
        // Past every lock holder's chance to finish; `None` when that is
        // beyond what the clock holds (then the lock's own lifetime, and
        // each call's limit, still end the wait).
        let deadline = Instant::now()
            .checked_add(self.lock_ttl.saturating_add(self.timeout.saturating_mul(2)));
        let mut waited = false;
        loop {
            let now_ms = millis(shared.wall());
            match self
                .call(counters, Duration::ZERO, self.store.get(&self.key))
                .await
            {
                Ok(Some(entry)) => {
                    if let Some((token, stored)) = self.usable(
                        &entry,
                        held,
                        rejected.as_deref(),
                        now_ms,
                        shared.config.leeway,
                    ) {
                        counters.from_store.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("token taken from the store");
                        return (Ok(token), Some(stored));
                    }
                }
                Ok(None) => {}
                Err(_) => return self.alone(shared, request).await,
            }
            match self
                .call(
                    counters,
                    Duration::ZERO,
                    self.store.lock(&self.key, &self.owner, self.lock_ttl),
                )
                .await
            {
                Ok(true) => {
                    // Read again under the lock: another replica may have
                    // put a token between the read above and the lock.
                    if let Ok(Some(entry)) = self
                        .call(counters, Duration::ZERO, self.store.get(&self.key))
                        .await
                        && let Some((token, stored)) = self.usable(
                            &entry,
                            held,
                            rejected.as_deref(),
                            millis(shared.wall()),
                            shared.config.leeway,
                        )
                    {
                        let _ = self
                            .call(
                                counters,
                                Duration::ZERO,
                                self.store.unlock(&self.key, &self.owner),
                            )
                            .await;
                        counters.from_store.fetch_add(1, Ordering::Relaxed);
                        return (Ok(token), Some(stored));
                    }
                    return self.fetch_for_the_fleet(shared, request).await;
                }
                Ok(false) => {
                    if !waited {
                        waited = true;
                        counters.fleet_waits.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("another replica is fetching; waiting for it");
                    }
                    let left =
                        deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()));
                    if left.is_zero() {
                        return self.alone(shared, request).await;
                    }
                    let wait = left.min(POLL);
                    if self
                        .call(counters, wait, self.store.wait(&self.key, wait))
                        .await
                        .is_err()
                    {
                        return self.alone(shared, request).await;
                    }
                }
                Err(_) => return self.alone(shared, request).await,
            }
        }
    }

    /// Fetches holding the lock, and shares the token.
    async fn fetch_for_the_fleet(
        &self,
        shared: &Shared,
        request: FetchRequest,
    ) -> (Result<Token, Error>, Option<Stored>) {
        let counters = &shared.counters;
        counters.fleet_fetches.fetch_add(1, Ordering::Relaxed);
        let issued = shared.wall();
        let fetched = shared.fetch_from_source(request).await;
        let mut stored = None;
        if let Ok(token) = &fetched {
            let lifetime = token
                .expires_in()
                .unwrap_or(shared.config.default_lifetime)
                .min(Duration::from_secs(10 * 365 * 24 * 3600));
            let sealed = Sealed {
                access_token: token.access_token().clone(),
                refresh_token: token.refresh_token().cloned(),
                expires_at_ms: millis(issued)
                    .saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX)),
                issued_at_ms: millis(issued),
            };
            if let Some(entry) = self.sealer.seal(&self.key, &sealed) {
                let _ = self
                    .call(
                        counters,
                        Duration::ZERO,
                        self.store.put_if_newer(&self.key, &entry, lifetime),
                    )
                    .await;
                stored = Some(Stored {
                    issued_at_ms: entry.issued_at_ms,
                    fingerprint: entry.fingerprint,
                });
            }
        }
        let _ = self
            .call(
                counters,
                Duration::ZERO,
                self.store.unlock(&self.key, &self.owner),
            )
            .await;
        let _ = self
            .call(counters, Duration::ZERO, self.store.notify(&self.key))
            .await;
        (fetched, stored)
    }

    /// Fetches without the store: it failed, or the lock holder took too
    /// long.
    async fn alone(
        &self,
        shared: &Shared,
        request: FetchRequest,
    ) -> (Result<Token, Error>, Option<Stored>) {
        shared
            .counters
            .store_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("fetching without the token store");
        (shared.fetch_from_source(request).await, None)
    }
}
