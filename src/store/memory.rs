//! [`MemoryStore`]: a [`TokenStore`] in memory, shared by the caches of one
//! process (tests, or several layers that should share one token).

use super::{Entry, StoreError, TokenStore};
use crate::http_client::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A [`TokenStore`] in memory. Cheap to clone; clones share the entries.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (Entry, Instant)>,
    locks: HashMap<String, (String, Instant)>,
    waiters: HashMap<String, Arc<Notify>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many entries the store holds (expired ones included until read).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw entries, as a reader of the backend would see them.
    pub fn entries(&self) -> Vec<(String, Entry)> {
        self.lock()
            .entries
            .iter()
            .map(|(k, (e, _))| (k.clone(), e.clone()))
            .collect()
    }

    fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, Result<T, StoreError>> {
        Box::pin(std::future::ready(Ok(value)))
    }
}

fn later(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl)
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
}

impl TokenStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        let mut inner = self.lock();
        let found = match inner.entries.get(key) {
            Some((entry, until)) if Instant::now() < *until => Some(entry.clone()),
            Some(_) => {
                inner.entries.remove(key);
                None
            }
            None => None,
        };
        Self::ready(found)
    }

    fn put_if_newer<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut inner = self.lock();
        let newer = inner.entries.get(key).is_none_or(|(held, until)| {
            Instant::now() >= *until || held.issued_at_ms < entry.issued_at_ms
        });
        if newer {
            inner
                .entries
                .insert(key.to_owned(), (entry.clone(), later(ttl)));
        }
        Self::ready(newer)
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut inner = self.lock();
        let free = inner
            .locks
            .get(key)
            .is_none_or(|(_, until)| Instant::now() >= *until);
        if free {
            inner
                .locks
                .insert(key.to_owned(), (owner.to_owned(), later(ttl)));
        }
        let held = inner.locks.get(key).is_some_and(|(o, _)| o == owner);
        Self::ready(held)
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        if inner.locks.get(key).is_some_and(|(o, _)| o == owner) {
            inner.locks.remove(key);
        }
        Self::ready(())
    }

    fn notify<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(waiters) = self.lock().waiters.get(key) {
            waiters.notify_waiters();
        }
        Self::ready(())
    }

    fn wait<'a>(
        &'a self,
        key: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let notify = Arc::clone(
            self.lock()
                .waiters
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Notify::new())),
        );
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, notify.notified()).await;
            Ok(())
        })
    }

    fn invalidate_if_same<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut inner = self.lock();
        let same = inner
            .entries
            .get(key)
            .is_some_and(|(entry, _)| entry.fingerprint == fingerprint);
        if same {
            inner.entries.remove(key);
        }
        Self::ready(same)
    }
}
