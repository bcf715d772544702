//! A token store shared by the replicas of one service (R20): the whole
//! fleet asks the authorization server once per token lifetime.
//!
//! Each replica keeps its own cache, and its per-request path never touches
//! the store. The store is consulted only when the local token needs
//! replacing: a replica takes a newer usable token from the store without a
//! fetch, or — holding the store's lock for the key — fetches one and puts
//! it there for the others, who wait for its notification. A replica whose
//! request is answered 401 removes the stored token only if it is still the
//! one rejected (compared by a keyed fingerprint, never by the token).
//!
//! What is stored is sealed: encrypted and authenticated with a key the
//! user supplies ([`StoreKeys`]), bound to the entry's store key, so a
//! reader of the store gets no usable token, and a value that does not open
//! is treated as absent.
//!
//! [`TokenStore`] is the backend: a small trait (get, put-if-newer, lock,
//! unlock, notify, wait, invalidate-if-same). [`MemoryStore`] keeps entries
//! in memory, for tests and for several caches in one process.
//! `RedisStore` (feature `redis`) keeps them in Redis or a Redis Cluster,
//! shared by a fleet.
//!
//! A store that is slow or down never fails a request: every call has a
//! short timeout, and a replica that cannot reach its store fetches on its
//! own, with its own single flight and backoff.

use crate::error::BoxError;
use crate::http_client::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod memory;
#[cfg(feature = "redis")]
mod redis;
mod seal;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub(crate) use seal::{Sealed, Sealer};
pub use seal::{StoreKeyError, StoreKeys};

/// One stored token, as a backend keeps it: opaque sealed bytes with the
/// two facts a backend needs to decide without opening them.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the token was issued, in milliseconds since the Unix epoch: a
    /// put keeps the newer of two entries.
    pub issued_at_ms: u64,
    /// A keyed fingerprint of the access token (hex), to remove the entry
    /// only if it still holds the token a replica saw rejected.
    pub fingerprint: String,
    /// The sealed token (encrypted and authenticated).
    pub value: Vec<u8>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("issued_at_ms", &self.issued_at_ms)
            .field("value_len", &self.value.len())
            .finish_non_exhaustive()
    }
}

/// A store backend failed: the replica goes on without it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within the store timeout.
    #[error("the token store did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend's own error (connection refused, …).
    #[error("the token store failed: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A backend error.
    pub fn backend(err: impl Into<BoxError>) -> Self {
        Self::Backend(Arc::from(err.into()))
    }
}

/// A shared token store; see the [module docs](self).
///
/// Keys are strings made by the cache; a backend may add a prefix of its
/// own. A backend keeps, per key, at most one [`Entry`], one lock, and a
/// notification channel. Implementations must be safe to call from many
/// replicas at once: `put_if_newer`, `lock`, `unlock` and
/// `invalidate_if_same` are each atomic.
pub trait TokenStore: Send + Sync + 'static {
    /// The entry under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>>;

    /// Stores `entry` under `key` for `ttl`, unless the entry there was
    /// issued later. Returns whether `entry` was stored.
    fn put_if_newer<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Takes the lock of `key` for `owner`, for at most `ttl`, if nobody
    /// holds it. Returns whether `owner` holds it now.
    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Releases the lock of `key` if `owner` still holds it.
    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Wakes the replicas waiting on `key` (a new entry is there, or the
    /// lock was released).
    fn notify<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Waits at most `timeout` for a notification on `key`. Returns `Ok`
    /// on a notification and on the timeout alike: callers read the store
    /// again either way (a notification may be missed; the timeout is the
    /// polling fallback).
    fn wait<'a>(&'a self, key: &'a str, timeout: Duration)
    -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the entry under `key` if its fingerprint is `fingerprint`.
    /// Returns whether it was removed.
    fn invalidate_if_same<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        (**self).get(key)
    }

    fn put_if_newer<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).put_if_newer(key, entry, ttl)
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).lock(key, owner, ttl)
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).unlock(key, owner)
    }

    fn notify<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).notify(key)
    }

    fn wait<'a>(
        &'a self,
        key: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).wait(key, timeout)
    }

    fn invalidate_if_same<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).invalidate_if_same(key, fingerprint)
    }
}
