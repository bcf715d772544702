//! The fleet path of the cache (R20) over the in-memory store: replicas are
//! separate `TokenLayer`s sharing one `MemoryStore`; the token endpoint is a
//! real HTTP server on loopback. (The same paths against a real Redis, with
//! replica processes, are in the Redis suite.)

mod bounded;
mod common;

use bytes::Bytes;
use common::{ApiServer, TokenServer, http_client, send, source};
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::Layer;
use tower_token::http_client::BoxFuture;
use tower_token::store::{Entry, MemoryStore, StoreError, StoreKeys, TokenStore};
use tower_token::{ClientCredentials, Credentials, TokenLayer};

const KEY: [u8; 32] = [42; 32];

fn keys() -> StoreKeys {
    StoreKeys::new(1, &KEY).unwrap()
}

fn replica(tokens: &TokenServer, store: &MemoryStore) -> TokenLayer {
    TokenLayer::builder(source(tokens))
        .store(store.clone(), keys())
        .build()
        .unwrap()
}

fn get(url: String) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_replicas_of_250_callers_cause_one_token_request() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    tokens.set(|b| b.delay = Duration::from_millis(100));
    let store = MemoryStore::new();
    let replicas: Vec<_> = (0..8).map(|_| replica(&tokens, &store)).collect();
    let mut calls = Vec::new();
    for layer in &replicas {
        let svc = layer.layer(http_client::<Empty<Bytes>>());
        for i in 0..250 {
            let svc = svc.clone();
            let url = api.url(&format!("/{i}"));
            calls.push(tokio::spawn(async move { send(&svc, get(url)).await }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(tokens.hits(), 1, "one token request for the fleet");
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
    let won: u64 = replicas.iter().map(|l| l.stats().fleet_fetches_won).sum();
    let taken: u64 = replicas.iter().map(|l| l.stats().tokens_from_store).sum();
    assert_eq!((won, taken), (1, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_replaced_once_for_the_fleet() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let store = MemoryStore::new();
    let replicas: Vec<_> = (0..4).map(|_| replica(&tokens, &store)).collect();
    let services: Vec<_> = replicas
        .iter()
        .map(|l| l.layer(http_client::<Empty<Bytes>>()))
        .collect();
    for svc in &services {
        send(svc, get(api.url("/warm"))).await.unwrap();
    }
    assert_eq!(tokens.hits(), 1);

    // Revoked server-side: a burst of 401s in every replica.
    api.reject("tok-1");
    let mut calls = Vec::new();
    for svc in &services {
        for _ in 0..25 {
            let (svc, url) = (svc.clone(), api.url("/burst"));
            calls.push(tokio::spawn(async move { send(&svc, get(url)).await }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(tokens.hits(), 2, "one new token for the whole fleet");
    // Every request of the burst was answered 401 with tok-1 (or had not
    // sent it yet) and went again with tok-2.
    let with_tok2 = api
        .requests()
        .iter()
        .filter(|r| r.token() == Some("tok-2"))
        .count();
    assert_eq!(with_tok2, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_with_different_scopes_never_share_a_token() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let store = MemoryStore::new();
    let scoped = |scope: &str| {
        let source = ClientCredentials::builder(
            tokens.url(),
            Credentials::new(common::CLIENT_ID, common::CLIENT_SECRET),
        )
        .scope(scope)
        .build()
        .unwrap();
        TokenLayer::builder(source)
            .store(store.clone(), keys())
            .build()
            .unwrap()
    };
    let (read, write) = (scoped("orders:read"), scoped("orders:write"));
    let (read2, write2) = (scoped("orders:read"), scoped("orders:write"));
    assert_eq!(read.cache().token().await.unwrap().secret(), "tok-1");
    assert_eq!(write.cache().token().await.unwrap().secret(), "tok-2");
    assert_eq!(read2.cache().token().await.unwrap().secret(), "tok-1");
    assert_eq!(write2.cache().token().await.unwrap().secret(), "tok-2");
    assert_eq!(tokens.hits(), 2);
    assert_eq!(store.len(), 2);
    let scopes: Vec<_> = tokens
        .requests()
        .iter()
        .map(|r| r.form_values("scope").join(" "))
        .collect();
    assert_eq!(scopes, ["orders:read", "orders:write"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_value_is_sealed() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    tokens.set(|b| b.refresh_token = Some("rt-secret".into()));
    let store = MemoryStore::new();
    let layer = replica(&tokens, &store);
    assert_eq!(layer.cache().token().await.unwrap().secret(), "tok-1");
    let entries = store.entries();
    assert_eq!(entries.len(), 1);
    let (key, entry) = &entries[0];
    for raw in [
        key.as_bytes(),
        entry.value.as_slice(),
        entry.fingerprint.as_bytes(),
    ] {
        let raw = String::from_utf8_lossy(raw);
        for secret in [
            "tok-1",
            "rt-secret",
            common::CLIENT_SECRET,
            common::CLIENT_ID,
        ] {
            assert!(!raw.contains(secret), "{secret} readable in the store");
        }
    }

    // A replica with a rotated key cannot read it: it fetches its own.
    let rotated = TokenLayer::builder(source(&tokens))
        .store(store.clone(), StoreKeys::new(2, &[7; 32]).unwrap())
        .build()
        .unwrap();
    assert_eq!(rotated.cache().token().await.unwrap().secret(), "tok-2");
    // One that still opens with the old key reads it.
    let both = TokenLayer::builder(source(&tokens))
        .store(
            store.clone(),
            StoreKeys::new(2, &[7; 32])
                .unwrap()
                .also_open_with(1, &KEY)
                .unwrap(),
        )
        .build()
        .unwrap();
    let token = both.cache().token().await.unwrap();
    assert!(token.secret() == "tok-1" || token.secret() == "tok-2");
    assert_eq!(tokens.hits(), 2);

    // A tampered value is ignored, never taken as a token.
    let mut tampered = store.entries()[0].1.clone();
    let last = tampered.value.len() - 1;
    tampered.value[last] ^= 0x55;
    tampered.issued_at_ms += 1;
    let key = store.entries()[0].0.clone();
    store
        .put_if_newer(&key, &tampered, Duration::from_secs(60))
        .await
        .unwrap();
    let fresh = replica(&tokens, &store);
    assert_eq!(fresh.cache().token().await.unwrap().secret(), "tok-3");
}

/// A store that fails every call, counting them.
#[derive(Clone, Default)]
struct Broken {
    calls: Arc<AtomicUsize>,
}

impl Broken {
    fn fail<T: Send + 'static>(&self) -> BoxFuture<'static, Result<T, StoreError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(StoreError::backend(std::io::Error::other(
                "connection refused",
            )))
        })
    }
}

impl TokenStore for Broken {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        self.fail()
    }
    fn put_if_newer<'a>(
        &'a self,
        _: &'a str,
        _: &'a Entry,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.fail()
    }
    fn lock<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.fail()
    }
    fn unlock<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.fail()
    }
    fn notify<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.fail()
    }
    fn wait<'a>(&'a self, _: &'a str, _: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        self.fail()
    }
    fn invalidate_if_same<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.fail()
    }
}

/// A store that never answers.
#[derive(Clone, Default)]
struct Silent;

impl Silent {
    fn hang<T: Send + 'static>() -> BoxFuture<'static, Result<T, StoreError>> {
        Box::pin(std::future::pending())
    }
}

impl TokenStore for Silent {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Self::hang()
    }
    fn put_if_newer<'a>(
        &'a self,
        _: &'a str,
        _: &'a Entry,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Self::hang()
    }
    fn lock<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Self::hang()
    }
    fn unlock<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::hang()
    }
    fn notify<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::hang()
    }
    fn wait<'a>(&'a self, _: &'a str, _: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::hang()
    }
    fn invalidate_if_same<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Self::hang()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_silent_store_never_fails_a_request() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    let broken = Broken::default();
    let layer = TokenLayer::builder(source(&tokens))
        .store(broken.clone(), keys())
        .build()
        .unwrap();
    let svc = layer.layer(http_client::<Empty<Bytes>>());
    for _ in 0..20 {
        assert_eq!(
            send(&svc, get(api.url("/x"))).await.unwrap().0,
            StatusCode::OK
        );
    }
    assert_eq!(tokens.hits(), 1, "the replica fetched on its own, once");
    let stats = layer.stats();
    assert_eq!(stats.store_fallbacks, 1);
    assert!(stats.store_errors >= 1);
    // The store is left alone for a while after it failed: the next
    // fetches go straight to the token endpoint, with no store call.
    let calls = broken.calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        layer.cache().invalidate();
        layer.cache().token().await.unwrap();
    }
    assert_eq!(
        broken.calls.load(Ordering::SeqCst),
        calls,
        "no store call while it rests"
    );
    assert_eq!(layer.stats().store_fallbacks, 4);

    // A store that never answers: each call waits the store timeout only.
    let layer = TokenLayer::builder(source(&tokens))
        .store(Silent, keys())
        .store_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(layer.cache().token().await.unwrap().secret(), "tok-5");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(layer.stats().store_fallbacks, 1);
}

#[test]
fn a_dead_lock_holder_is_recovered_within_the_lock_lifetime() {
    bounded::watchdog!();
    let servers = tokio::runtime::Runtime::new().unwrap();
    let tokens = servers.block_on(TokenServer::start());
    let store = MemoryStore::new();
    let lock_ttl = Duration::from_secs(1);
    let build = || {
        TokenLayer::builder(source(&tokens))
            .store(store.clone(), keys())
            .store_lock_ttl(lock_ttl)
            .build()
            .unwrap()
    };

    // Replica A takes the lock and dies mid-fetch (its runtime goes away
    // while the token endpoint holds its request).
    tokens.close_gate();
    let doomed = tokio::runtime::Runtime::new().unwrap();
    let a = build();
    doomed.block_on(async {
        let cache = a.cache().clone();
        tokio::spawn(async move { cache.token().await });
        tokens.wait_hits(1).await;
    });
    drop(doomed);
    tokens.open_gate();

    // Replica B waits for A's lock to expire, then fetches.
    let b = build();
    let started = std::time::Instant::now();
    let token = servers.block_on(b.cache().token()).unwrap();
    assert_eq!(token.secret(), "tok-2");
    assert!(
        started.elapsed() < lock_ttl + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.stats().fleet_fetches_waited, 1);
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leaving_revokes_nothing_the_fleet_shares() {
    bounded::watchdog!();
    let tokens = TokenServer::start().await;
    let revocations = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&revocations);
    let router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "" }
    });
    let revoke_addr = common::serve(router).await;
    let store = MemoryStore::new();
    let build = || {
        let revoker = tower_token::RevokeService::rfc(
            format!("http://{revoke_addr}/revoke"),
            Credentials::new(common::CLIENT_ID, common::CLIENT_SECRET),
        )
        .build()
        .unwrap();
        TokenLayer::builder(source(&tokens))
            .store(store.clone(), keys())
            .revoker(revoker)
            .revoke_on_drop(true)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    assert_eq!(a.cache().token().await.unwrap().secret(), "tok-1");
    assert_eq!(b.cache().token().await.unwrap().secret(), "tok-1");
    a.shutdown().await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        revocations.load(Ordering::SeqCst),
        0,
        "the fleet still uses it"
    );
    assert_eq!(store.len(), 1);

    // The named fleet-wide revocation revokes it and removes it.
    b.cache().shutdown_fleet().await.unwrap();
    assert_eq!(revocations.load(Ordering::SeqCst), 1);
    assert!(store.is_empty());
    let c = build();
    assert_eq!(c.cache().token().await.unwrap().secret(), "tok-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_is_one_refresh_per_lifetime_for_the_fleet() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    tokens.set(|b| b.expires_in = Some(serde_json::json!(2)));
    let run = |store: Option<MemoryStore>| {
        let (tokens, api) = (tokens.clone(), api.clone());
        async move {
            let before = tokens.hits();
            let replicas: Vec<_> = (0..4)
                .map(|_| {
                    let builder = TokenLayer::builder(source(&tokens))
                        .leeway(Duration::from_millis(500))
                        .refresh_ahead(0.25);
                    match &store {
                        Some(store) => builder.store(store.clone(), keys()),
                        None => builder,
                    }
                    .build()
                    .unwrap()
                })
                .collect();
            let services: Vec<_> = replicas
                .iter()
                .map(|l| l.layer(http_client::<Empty<Bytes>>()))
                .collect();
            let until = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < until {
                for svc in &services {
                    assert_eq!(
                        send(svc, get(api.url("/steady"))).await.unwrap().0,
                        StatusCode::OK
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokens.hits() - before
        }
    };
    let shared = run(Some(MemoryStore::new())).await;
    let alone = run(None).await;
    // A 2 s token with a 0.5 s leeway is usable 1.5 s, and its refresh
    // starts 0.5 s (a quarter of its lifetime) before that: one token per
    // second at most for the whole fleet over 5 s, plus the first and one
    // refresh in flight at the end. Each replica alone fetches as many.
    let bound = 1 + 5 + 1;
    assert!(
        shared <= bound,
        "{shared} tokens with the store, bound {bound}"
    );
    assert!(
        alone >= 2 * shared,
        "{alone} tokens without the store vs {shared} with it"
    );
}

/// No store setting, however large, aborts a fetch: a lock lifetime and a
/// call limit of `Duration::MAX` still give a token, shared through the
/// store, and a replica that finds the lock taken waits for the holder's
/// token (its wait has no deadline the clock can hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_store_settings_still_fetch_a_token() {
    bounded::watchdog!();
    let (tokens, api) = (TokenServer::start().await, ApiServer::start().await);
    // A token request long enough for the second replica to find the lock.
    tokens.set(|b| b.delay = Duration::from_secs(1));
    let store = MemoryStore::new();
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            TokenLayer::builder(source(&tokens))
                .store(store.clone(), keys())
                .store_lock_ttl(Duration::MAX)
                .store_timeout(Duration::MAX)
                .build()
                .unwrap()
        })
        .collect();
    let calls: Vec<_> = replicas
        .iter()
        .map(|layer| {
            let svc = layer.layer(http_client::<Empty<Bytes>>());
            let url = api.url("/x");
            tokio::spawn(async move { send(&svc, get(url)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().0, StatusCode::OK);
    }
    assert_eq!(tokens.hits(), 1);
    assert!(api.requests().iter().all(|r| r.token() == Some("tok-1")));
    let waited: u64 = replicas
        .iter()
        .map(|l| l.stats().fleet_fetches_waited)
        .sum();
    assert_eq!(waited, 1, "one replica waited for the other's token");
}
