//! `RedisStore` against real `redis-server` processes (feature `redis`):
//! the `TokenStore` semantics on one Redis and on a Redis Cluster of three
//! masters, keys spread over the cluster's slots, and a Redis that is
//! stopped, paused or restarted.
//!
//! Each test starts its own servers on free loopback ports, each with a
//! temporary directory and no persistence, and kills them when it ends
//! (`Drop`). A test fails when `redis-server` (or `redis-cli`) cannot be
//! started: install them with `apt-get install redis-server`.

mod bounded;
mod redis_server;

use redis_server::{Cluster, SETTLE, Server, cli};
use std::time::{Duration, Instant};
use tower_token::store::{Entry, RedisStore, StoreError, TokenStore};

/// The store's default time limit per call.
const STORE_TIMEOUT: Duration = Duration::from_millis(200);
/// What a loaded 2-core machine may add to a bounded call.
const SLACK: Duration = Duration::from_millis(400);

fn single_store(server: &Server) -> RedisStore {
    RedisStore::new(server.url()).expect("a store")
}

// ---------------------------------------------------------------------------
// Helpers

fn entry(issued_at_ms: u64, fingerprint: &str) -> Entry {
    Entry {
        issued_at_ms,
        fingerprint: fingerprint.to_owned(),
        value: format!("sealed:{fingerprint}").into_bytes(),
    }
}

const TTL: Duration = Duration::from_secs(60);

/// Fails unless `elapsed` is within `limit` (plus the machine's slack).
#[track_caller]
fn assert_within(elapsed: Duration, limit: Duration, what: &str) {
    assert!(
        elapsed <= limit + SLACK,
        "{what} took {elapsed:?}, more than {limit:?} (+{SLACK:?})"
    );
}

/// Calls `op` until it succeeds (a store reconnecting), at most [`SETTLE`].
async fn eventually_ok<T, F>(what: &str, mut op: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(_) if started.elapsed() < SETTLE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("{what}: still failing after {SETTLE:?}: {err}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The semantics, run on each backend

async fn get_and_put_keep_the_newer(store: &RedisStore) {
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(
        store
            .put_if_newer("k", &entry(100, "a"), TTL)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(entry(100, "a")));

    // Older and as old: kept out.
    assert!(!store.put_if_newer("k", &entry(99, "b"), TTL).await.unwrap());
    assert!(
        !store
            .put_if_newer("k", &entry(100, "c"), TTL)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(entry(100, "a")));

    // Newer: replaces.
    assert!(
        store
            .put_if_newer("k", &entry(101, "d"), TTL)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(entry(101, "d")));

    // Times beyond Lua's exact integers (2^53) compare exactly, and a
    // longer number is larger.
    assert!(
        store
            .put_if_newer("big", &entry(u64::MAX - 1, "x"), TTL)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_newer("big", &entry(u64::MAX - 2, "y"), TTL)
            .await
            .unwrap()
    );
    assert!(
        store
            .put_if_newer("big", &entry(u64::MAX, "z"), TTL)
            .await
            .unwrap()
    );
    assert_eq!(store.get("big").await.unwrap(), Some(entry(u64::MAX, "z")));
    assert!(
        store
            .put_if_newer("len", &entry(9, "x"), TTL)
            .await
            .unwrap()
    );
    assert!(
        store
            .put_if_newer("len", &entry(10, "y"), TTL)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_newer("len", &entry(9, "z"), TTL)
            .await
            .unwrap()
    );

    // Values are bytes, kept as they are.
    let binary = Entry {
        issued_at_ms: 1,
        fingerprint: "f".into(),
        value: (0..=255u8).collect(),
    };
    assert!(store.put_if_newer("bin", &binary, TTL).await.unwrap());
    assert_eq!(store.get("bin").await.unwrap(), Some(binary));

    // Keys are kept apart, whatever their characters.
    for key in ["", "a}b", "{x}", "%", "%25", "k:lock", "ü"] {
        assert_eq!(store.get(key).await.unwrap(), None, "{key:?}");
        assert!(store.put_if_newer(key, &entry(5, key), TTL).await.unwrap());
    }
    for key in ["", "a}b", "{x}", "%", "%25", "k:lock", "ü"] {
        assert_eq!(
            store.get(key).await.unwrap(),
            Some(entry(5, key)),
            "{key:?}"
        );
    }
}

async fn entries_expire_with_their_ttl(store: &RedisStore) {
    let short = Duration::from_millis(150);
    assert!(
        store
            .put_if_newer("k", &entry(100, "a"), short)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(entry(100, "a")));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get("k").await.unwrap(), None);
    // An expired entry does not keep an older one out.
    assert!(store.put_if_newer("k", &entry(50, "b"), TTL).await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), Some(entry(50, "b")));
    // A zero TTL stores an entry that is gone at once.
    assert!(
        store
            .put_if_newer("zero", &entry(1, "z"), Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.get("zero").await.unwrap(), None);
}

async fn the_lock_is_exclusive_and_expires(store: &RedisStore) {
    let ttl = Duration::from_millis(300);
    assert!(store.lock("k", "a", ttl).await.unwrap());
    assert!(!store.lock("k", "b", ttl).await.unwrap());
    // Its holder still holds it.
    assert!(store.lock("k", "a", ttl).await.unwrap());
    // Another key has its own lock.
    assert!(store.lock("other", "b", ttl).await.unwrap());
    // The holder's death is recovered within the lock's lifetime.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.lock("k", "b", ttl).await.unwrap());
    assert!(!store.lock("k", "a", ttl).await.unwrap());
}

async fn only_the_owner_unlocks(store: &RedisStore) {
    assert!(store.lock("k", "a", TTL).await.unwrap());
    store.unlock("k", "b").await.unwrap();
    assert!(
        !store.lock("k", "b", TTL).await.unwrap(),
        "b released a's lock"
    );
    store.unlock("k", "a").await.unwrap();
    assert!(store.lock("k", "b", TTL).await.unwrap());
    // Releasing a lock nobody holds is fine.
    store.unlock("free", "a").await.unwrap();
}

async fn invalidate_only_the_same_fingerprint(store: &RedisStore) {
    assert!(!store.invalidate_if_same("k", "a").await.unwrap());
    assert!(
        store
            .put_if_newer("k", &entry(100, "a"), TTL)
            .await
            .unwrap()
    );
    assert!(!store.invalidate_if_same("k", "b").await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), Some(entry(100, "a")));
    assert!(store.invalidate_if_same("k", "a").await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), None);
    // Once removed, an older entry may come in again.
    assert!(store.put_if_newer("k", &entry(1, "c"), TTL).await.unwrap());
}

async fn wait_returns_on_notify_promptly(store: &RedisStore) {
    let long = Duration::from_secs(10);
    let started = Instant::now();
    let waiters = {
        let (a, b) = (store.clone(), store.clone());
        (
            tokio::spawn(async move { a.wait("k", long).await }),
            // A wait longer than the clock holds is woken the same way.
            tokio::spawn(async move { b.wait("k", Duration::MAX).await }),
        )
    };
    // A notification sent before a waiter subscribed is missed (the
    // waiter's timeout is the fallback): notify until both are woken.
    let notifier = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                store.notify("k").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    waiters.0.await.unwrap().unwrap();
    waiters.1.await.unwrap().unwrap();
    notifier.abort();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken after {:?}",
        started.elapsed()
    );

    // A notification for another key does not wake a waiter.
    let wait = Duration::from_millis(400);
    let started = Instant::now();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait("k", wait).await })
    };
    while !waiter.is_finished() {
        store.notify("other").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiter.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= wait,
        "woken after {:?}",
        started.elapsed()
    );
}

async fn wait_returns_after_its_timeout(store: &RedisStore) {
    for wait in [Duration::from_millis(300), Duration::from_millis(50)] {
        let started = Instant::now();
        store.wait("k", wait).await.unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= wait, "returned after {elapsed:?}");
        assert_within(elapsed, wait, "a wait without notification");
    }
}

// ---------------------------------------------------------------------------
// One Redis

#[tokio::test]
async fn single_get_and_put_keep_the_newer() {
    bounded::watchdog!();
    let redis = Server::start(false);
    get_and_put_keep_the_newer(&single_store(&redis)).await;
}

#[tokio::test]
async fn single_entries_expire_with_their_ttl() {
    bounded::watchdog!();
    let redis = Server::start(false);
    entries_expire_with_their_ttl(&single_store(&redis)).await;
}

#[tokio::test]
async fn single_the_lock_is_exclusive_and_expires() {
    bounded::watchdog!();
    let redis = Server::start(false);
    the_lock_is_exclusive_and_expires(&single_store(&redis)).await;
}

#[tokio::test]
async fn single_only_the_owner_unlocks() {
    bounded::watchdog!();
    let redis = Server::start(false);
    only_the_owner_unlocks(&single_store(&redis)).await;
}

#[tokio::test]
async fn single_invalidate_only_the_same_fingerprint() {
    bounded::watchdog!();
    let redis = Server::start(false);
    invalidate_only_the_same_fingerprint(&single_store(&redis)).await;
}

#[tokio::test]
async fn single_wait_returns_on_notify_promptly() {
    bounded::watchdog!();
    let redis = Server::start(false);
    wait_returns_on_notify_promptly(&single_store(&redis)).await;
}

#[tokio::test]
async fn single_wait_returns_after_its_timeout() {
    bounded::watchdog!();
    let redis = Server::start(false);
    wait_returns_after_its_timeout(&single_store(&redis)).await;
}

/// What a reader of Redis sees: the documented names, a hash with a TTL,
/// the lock's owner, a prefix of the user's.
#[tokio::test]
async fn single_the_layout_is_as_documented() {
    bounded::watchdog!();
    let redis = Server::start(false);
    let store = single_store(&redis).prefix("svc");
    assert!(
        store
            .put_if_newer("k1", &entry(42, "fp"), TTL)
            .await
            .unwrap()
    );
    assert!(store.lock("k1", "owner-1", TTL).await.unwrap());

    let fields = cli(redis.port, &["hgetall", "svc:{k1}:token"]);
    let fields: Vec<&str> = fields.lines().collect();
    assert_eq!(
        fields,
        ["issued_at", "42", "fingerprint", "fp", "value", "sealed:fp"]
    );
    let pttl: i64 = cli(redis.port, &["pttl", "svc:{k1}:token"])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "pttl {pttl}");
    assert_eq!(cli(redis.port, &["get", "svc:{k1}:lock"]).trim(), "owner-1");
    let pttl: i64 = cli(redis.port, &["pttl", "svc:{k1}:lock"])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0, "the lock has no TTL: {pttl}");
    let keys = cli(redis.port, &["--scan"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["svc:{k1}:lock", "svc:{k1}:token"]);

    // Another prefix is another store.
    let other = single_store(&redis);
    assert_eq!(other.get("k1").await.unwrap(), None);
}

/// An entry whose fields were changed by hand is no entry, never a panic;
/// the next put replaces it.
#[tokio::test]
async fn single_unreadable_values_are_absent() {
    bounded::watchdog!();
    let redis = Server::start(false);
    let store = single_store(&redis);
    let name = "tower-token:{k}:token";

    cli(
        redis.port,
        &[
            "hset",
            name,
            "issued_at",
            "not a number",
            "fingerprint",
            "a",
            "value",
            "v",
        ],
    );
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), Some(entry(1, "a")));

    cli(redis.port, &["hdel", name, "value"]);
    assert_eq!(store.get("k").await.unwrap(), None);

    // A key of another type: `get` reports the backend's error; a put
    // replaces it.
    cli(redis.port, &["del", name]);
    cli(redis.port, &["set", name, "a string"]);
    assert!(matches!(store.get("k").await, Err(StoreError::Backend(_))));
    assert!(!store.invalidate_if_same("k", "a").await.unwrap());
    assert!(store.put_if_newer("k", &entry(2, "b"), TTL).await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), Some(entry(2, "b")));
}

/// A dead Redis fails every call within the timeout: no call hangs.
#[tokio::test]
async fn single_a_stopped_redis_fails_within_the_timeout() {
    bounded::watchdog!();
    let mut redis = Server::start(false);
    let store = single_store(&redis);
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    redis.stop();
    fails_within_the_timeout(&store).await;
}

/// Every call fails within the store's timeout.
async fn fails_within_the_timeout(store: &RedisStore) {
    for round in 0..3 {
        let started = Instant::now();
        let results = [
            store.get("k").await.err(),
            store.put_if_newer("k", &entry(2, "b"), TTL).await.err(),
            store.lock("k", "a", TTL).await.err(),
            store.unlock("k", "a").await.err(),
            store.notify("k").await.err(),
            store.wait("k", Duration::from_secs(10)).await.err(),
            store.invalidate_if_same("k", "a").await.err(),
        ];
        let elapsed = started.elapsed();
        for (i, result) in results.iter().enumerate() {
            assert!(result.is_some(), "round {round}, call {i} succeeded");
        }
        assert_within(elapsed, STORE_TIMEOUT * 7, "seven calls to a dead Redis");
    }
}

/// A wait fails when its pub/sub connection is lost, without waiting for
/// its timeout.
#[tokio::test]
async fn single_a_wait_fails_when_its_connection_is_lost() {
    bounded::watchdog!();
    let mut redis = Server::start(false);
    let store = single_store(&redis);
    // The subscription is made (a first wait that was notified).
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait("k", Duration::from_secs(10)).await })
    };
    while !waiter.is_finished() {
        store.notify("k").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiter.await.unwrap().unwrap();

    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait("k", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    redis.stop();
    let result = waiter.await.unwrap();
    assert!(result.is_err(), "the wait returned {result:?}");
    assert_within(started.elapsed(), Duration::from_secs(1), "the lost wait");
}

/// A Redis that stops answering (every client paused) gives
/// `StoreError::Timeout` within the timeout, and works again after.
#[tokio::test]
async fn single_a_paused_redis_times_out() {
    bounded::watchdog!();
    let redis = Server::start(false);
    let store = single_store(&redis);
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    assert!(cli(redis.port, &["client", "pause", "3000", "all"]).contains("OK"));

    let started = Instant::now();
    let result = store.get("k").await;
    assert!(
        matches!(result, Err(StoreError::Timeout(t)) if t == STORE_TIMEOUT),
        "{result:?}"
    );
    assert_within(
        started.elapsed(),
        STORE_TIMEOUT,
        "a get from a paused Redis",
    );

    let started = Instant::now();
    let result = store.put_if_newer("k", &entry(2, "b"), TTL).await;
    assert!(matches!(result, Err(StoreError::Timeout(_))), "{result:?}");
    assert_within(started.elapsed(), STORE_TIMEOUT, "a put to a paused Redis");

    // A shorter timeout of the caller's.
    let quick = store.clone().timeout(Duration::from_millis(50));
    let started = Instant::now();
    let result = quick.lock("k", "a", TTL).await;
    assert!(
        matches!(result, Err(StoreError::Timeout(t)) if t == Duration::from_millis(50)),
        "{result:?}"
    );
    assert_within(
        started.elapsed(),
        Duration::from_millis(50),
        "a lock in a paused Redis",
    );

    let entry = eventually_ok("get after the pause", || store.get("k")).await;
    assert!(entry.is_some());
}

/// After Redis restarts on the same port, the store works again: its
/// connection manager reconnects, and so does its subscription.
#[tokio::test]
async fn single_the_store_works_again_after_a_restart() {
    bounded::watchdog!();
    let mut redis = Server::start(false);
    let store = single_store(&redis);
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    store.wait("k", Duration::from_millis(10)).await.unwrap();

    redis.stop();
    assert!(store.get("k").await.is_err());
    redis.restart();

    // Nothing was persisted: the entry is gone, the store works.
    let found = eventually_ok("get after the restart", || store.get("k")).await;
    assert_eq!(found, None);
    assert!(store.put_if_newer("k", &entry(2, "b"), TTL).await.unwrap());
    assert!(store.lock("k", "a", TTL).await.unwrap());
    // The subscription is made again on the next wait.
    eventually_ok("wait after the restart", || {
        store.wait("k", Duration::from_millis(10))
    })
    .await;
    wait_returns_on_notify_promptly(&store).await;
}

/// A store made while Redis is down works once Redis is up.
#[tokio::test]
async fn single_a_store_made_while_redis_is_down_works_later() {
    bounded::watchdog!();
    let mut redis = Server::start(false);
    redis.stop();
    let store = single_store(&redis);
    let started = Instant::now();
    assert!(store.get("k").await.is_err());
    assert_within(started.elapsed(), STORE_TIMEOUT, "a get before Redis is up");
    redis.restart();
    assert_eq!(
        eventually_ok("get once Redis is up", || store.get("k")).await,
        None
    );
}

// ---------------------------------------------------------------------------
// A Redis Cluster of three masters

#[tokio::test]
async fn cluster_get_and_put_keep_the_newer() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    get_and_put_keep_the_newer(&cluster.store()).await;
}

#[tokio::test]
async fn cluster_entries_expire_with_their_ttl() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    entries_expire_with_their_ttl(&cluster.store()).await;
}

#[tokio::test]
async fn cluster_the_lock_is_exclusive_and_expires() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    the_lock_is_exclusive_and_expires(&cluster.store()).await;
}

#[tokio::test]
async fn cluster_only_the_owner_unlocks() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    only_the_owner_unlocks(&cluster.store()).await;
}

#[tokio::test]
async fn cluster_invalidate_only_the_same_fingerprint() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    invalidate_only_the_same_fingerprint(&cluster.store()).await;
}

#[tokio::test]
async fn cluster_wait_returns_on_notify_promptly() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    wait_returns_on_notify_promptly(&cluster.store()).await;
}

#[tokio::test]
async fn cluster_wait_returns_after_its_timeout() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    wait_returns_after_its_timeout(&cluster.store()).await;
}

/// The entry, lock and channel of one key hash to one slot; different keys
/// land in slots of all three masters, and each works.
#[tokio::test]
async fn cluster_keys_spread_over_the_slots() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    let store = cluster.store();
    let port = cluster.nodes[0].port;
    let slot = |name: &str| -> u16 {
        cli(port, &["cluster", "keyslot", name])
            .trim()
            .parse()
            .unwrap()
    };
    let keys: Vec<String> = (0..24).map(|i| format!("key-{i}")).collect();
    let mut masters = [false; 3];
    for key in &keys {
        let token = slot(&format!("tower-token:{{{key}}}:token"));
        assert_eq!(slot(&format!("tower-token:{{{key}}}:lock")), token);
        assert_eq!(slot(&format!("tower-token:{{{key}}}:ready")), token);
        // `redis-cli --cluster create` gives each master a third of the
        // slots, in order.
        masters[usize::from(token) * 3 / 16384] = true;
    }
    assert_eq!(masters, [true; 3], "the keys' slots miss a master");

    for (i, key) in keys.iter().enumerate() {
        let fp = format!("fp-{i}");
        assert!(store.put_if_newer(key, &entry(10, &fp), TTL).await.unwrap());
        assert!(store.lock(key, "a", TTL).await.unwrap());
        assert!(!store.lock(key, "b", TTL).await.unwrap());
    }
    for (i, key) in keys.iter().enumerate() {
        let fp = format!("fp-{i}");
        assert_eq!(store.get(key).await.unwrap(), Some(entry(10, &fp)));
        store.notify(key).await.unwrap();
        store.unlock(key, "a").await.unwrap();
        assert!(store.lock(key, "b", TTL).await.unwrap());
        assert!(store.invalidate_if_same(key, &fp).await.unwrap());
        assert_eq!(store.get(key).await.unwrap(), None);
    }
    // Each master holds some of the locks.
    for node in &cluster.nodes {
        let held: usize = cli(node.port, &["dbsize"]).trim().parse().unwrap();
        assert!(held > 0, "node {} holds no key", node.port);
    }
}

/// A notification published through one master wakes a waiter subscribed
/// on another (classic pub/sub crosses the cluster).
#[tokio::test]
async fn cluster_notifications_cross_the_nodes() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    // This store subscribes on the third node, the other publishes
    // wherever the channel's slot lives.
    let waiting =
        RedisStore::cluster([cluster.nodes[2].url(), cluster.nodes[0].url()]).expect("a store");
    let notifying = cluster.store();
    for key in ["key-0", "key-1", "key-2", "key-3"] {
        let started = Instant::now();
        let waiter = {
            let waiting = waiting.clone();
            let key = key.to_owned();
            tokio::spawn(async move { waiting.wait(&key, Duration::from_secs(10)).await })
        };
        while !waiter.is_finished() {
            notifying.notify(key).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        waiter.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "{key}");
    }
}

/// A cluster whose nodes are all down fails every call within the timeout.
#[tokio::test]
async fn cluster_a_stopped_cluster_fails_within_the_timeout() {
    bounded::watchdog!();
    let mut cluster = Cluster::start();
    let store = cluster.store();
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    for node in &mut cluster.nodes {
        node.stop();
    }
    fails_within_the_timeout(&store).await;
}

/// After every node restarts on its port (with its cluster config), the
/// store works again: the cluster client reconnects and reads the slots
/// again, and the subscription is made again.
#[tokio::test]
async fn cluster_the_store_works_again_after_a_restart() {
    bounded::watchdog!();
    let mut cluster = Cluster::start();
    let store = cluster.store();
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    store.wait("k", Duration::from_millis(10)).await.unwrap();

    for node in &mut cluster.nodes {
        node.stop();
    }
    assert!(store.get("k").await.is_err());
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_until_ok();

    let found = eventually_ok("get after the restart", || store.get("k")).await;
    assert_eq!(found, None);
    assert!(store.put_if_newer("k", &entry(2, "b"), TTL).await.unwrap());
    assert!(store.lock("k", "a", TTL).await.unwrap());
    eventually_ok("wait after the restart", || {
        store.wait("k", Duration::from_millis(10))
    })
    .await;
    wait_returns_on_notify_promptly(&store).await;
}

/// A paused master gives `StoreError::Timeout` for the keys it holds.
#[tokio::test]
async fn cluster_a_paused_master_times_out() {
    bounded::watchdog!();
    let cluster = Cluster::start();
    let store = cluster.store();
    assert!(store.put_if_newer("k", &entry(1, "a"), TTL).await.unwrap());
    let slot: usize = cli(
        cluster.nodes[0].port,
        &["cluster", "keyslot", "tower-token:{k}:token"],
    )
    .trim()
    .parse()
    .unwrap();
    let owner = &cluster.nodes[slot * 3 / 16384];
    assert!(cli(owner.port, &["client", "pause", "3000", "all"]).contains("OK"));
    let started = Instant::now();
    let result = store.get("k").await;
    assert!(matches!(result, Err(StoreError::Timeout(_))), "{result:?}");
    assert_within(
        started.elapsed(),
        STORE_TIMEOUT,
        "a get from a paused master",
    );
    let found = eventually_ok("get after the pause", || store.get("k")).await;
    assert_eq!(found, Some(entry(1, "a")));
}

/// The `Debug` output names the backend, never an address (a URL may carry
/// a password).
#[tokio::test]
async fn debug_shows_no_address() {
    bounded::watchdog!();
    let store = RedisStore::new("redis://user:hunter2@127.0.0.1:1/").unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains("RedisStore"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("127.0.0.1"),
        "{shown}"
    );
}
