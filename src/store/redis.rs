//! [`RedisStore`]: the shared [`TokenStore`] on Redis (feature `redis`), a
//! single server or a Redis Cluster; the docs are on the type.

use super::{Entry, StoreError, TokenStore};
use crate::http_client::BoxFuture;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub, PubSubSink};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Client, Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo, RedisError, RedisResult,
    Script, ScriptInvocation,
};
use futures_core::Stream;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The prefix of every Redis name the store uses, unless set.
const DEFAULT_PREFIX: &str = "tower-token";
/// The time limit of every call, unless set.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// How long one connection attempt may take (each call is bounded by the
/// store's timeout anyway; this bounds the reconnection running behind it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the client waits for one answer, under the store's timeout.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest TTL written (ten years): beyond it Redis may refuse the
/// expiry time.
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The fields of an entry's hash, in the order `get` reads them.
const FIELDS: [&str; 3] = ["issued_at", "fingerprint", "value"];

/// KEYS[1] the entry; ARGV issued_at (decimal ms), fingerprint, sealed
/// value, ttl (ms). Returns 1 if the entry was written.
const PUT_IF_NEWER: &str = r"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'hash' then
  local held = redis.call('HGET', KEYS[1], 'issued_at')
  held = held and string.match(held, '^0*(%d+)$')
  if held then
    local new = ARGV[1]
    if #new < #held or (#new == #held and new <= held) then
      return 0
    end
  end
end
if kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'issued_at', ARGV[1], 'fingerprint', ARGV[2], 'value', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// KEYS[1] the lock; ARGV owner, ttl (ms). Returns 1 if `owner` holds it.
const LOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
";

/// KEYS[1] the lock; ARGV owner. Returns 1 if the lock was released.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// KEYS[1] the entry; ARGV fingerprint. Returns 1 if the entry was removed.
const INVALIDATE_IF_SAME: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'hash'
  and redis.call('HGET', KEYS[1], 'fingerprint') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

static PUT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_IF_NEWER));
static LOCK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LOCK));
static UNLOCK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UNLOCK));
static INVALIDATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INVALIDATE_IF_SAME));

/// A [`TokenStore`] on Redis or Redis Cluster (feature `redis`), shared by
/// the replicas of a service.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_token::store::StoreError> {
/// use std::time::Duration;
/// use tower_token::store::RedisStore;
///
/// // One Redis (through a connection manager that reconnects):
/// let store = RedisStore::new("redis://127.0.0.1:6379/")?
///     .prefix("billing")
///     .timeout(Duration::from_millis(150));
///
/// // A Redis Cluster, from some of its nodes:
/// let cluster = RedisStore::cluster(["redis://cache-1:6379/", "redis://cache-2:6379/"])?;
/// # Ok(()) }
/// ```
///
/// Cheap to clone; clones share the connections. Make it inside the Tokio
/// runtime that uses it.
///
/// # Why redis-rs
///
/// The [`redis`](::redis) crate is the Redis client most Rust services
/// already depend on, and it is maintained: async on Tokio, a
/// [`ConnectionManager`] that reconnects by itself after the connection is
/// lost, a cluster client ([`cluster_async`](::redis::cluster_async)) that
/// follows the cluster's slot map and its `MOVED`/`ASK` redirections, and a
/// [`Script`] type that runs Lua by its SHA-1 and loads it on `NOSCRIPT`.
/// This crate turns its default features off and compiles no TLS of its own:
/// to reach Redis over TLS (`rediss://`), enable the TLS feature of your
/// choice on `redis` in your own `Cargo.toml` (Cargo unifies features).
///
/// # Key layout
///
/// For a store key `K` (made by the cache) and the prefix `P` (default
/// `tower-token`, see [`RedisStore::prefix`]):
///
/// | what | Redis name | type |
/// | --- | --- | --- |
/// | the entry | `P:{K}:token` | hash: `issued_at` (decimal ms), `fingerprint`, `value` (sealed bytes), with a TTL |
/// | the lock | `P:{K}:lock` | string: the owner, with a TTL |
/// | the notifications | `P:{K}:ready` | pub/sub channel |
///
/// `{K}` is a hash tag: the three names of one key hash to the same cluster
/// slot, and different keys spread over the cluster. So that the braces
/// always enclose exactly `K`, the characters `{`, `}` and `%` of `K` and of
/// `P` are written `%7B`, `%7D` and `%25`, and an empty `K` is written `%`
/// (no escape produces a lone `%`, so the names stay distinct).
///
/// # Atomic steps
///
/// `put_if_newer`, `lock`, `unlock` and `invalidate_if_same` are each one
/// Lua script, run by Redis as one step:
///
/// - put-if-newer reads the held entry's `issued_at` and writes the new
///   entry (all three fields and the TTL, `PEXPIRE`) only if there is none,
///   or the held one was issued earlier. The two times are compared as
///   decimal strings (longer is larger, then text order), exact for every
///   `u64`, where Lua's numbers are exact only up to 2⁵³.
/// - lock is `SET lock owner NX PX ttl`; when the lock is taken, it is still
///   the caller's if the holder is `owner` (as in [`MemoryStore`](super::MemoryStore)).
/// - unlock deletes the lock only if its value is `owner`.
/// - invalidate-if-same deletes the entry only if its `fingerprint` is the
///   one given.
///
/// # Notifications
///
/// [`notify`](TokenStore::notify) is `PUBLISH` on the key's channel.
/// [`wait`](TokenStore::wait) listens on one pub/sub connection per store
/// (opened on the first wait, opened again after it is lost), subscribed to
/// the channels of the keys waited on; it returns on a message, or when its
/// timeout passes (the polling fallback: a message published before the
/// subscription is missed, and the caller reads the store again anyway). A
/// wait fails with a [`StoreError`] when the subscription cannot be made, or
/// when the pub/sub connection is lost while waiting.
///
/// On a cluster, the channel is a classic pub/sub channel: Redis Cluster
/// forwards every `PUBLISH` to all its nodes, so the store subscribes on any
/// one node it can reach (the first of the nodes given that answers). A
/// notification is sent once per token lifetime, so forwarding it to every
/// node costs nothing worth a sharded subscription that would have to follow
/// the slot from node to node.
///
/// # Time limits and failures
///
/// Every call is bounded by the store's timeout ([`RedisStore::timeout`],
/// 200 ms by default): past it, the call fails with [`StoreError::Timeout`]
/// and the replica goes on without the store. Every error of Redis or of
/// the connection is a [`StoreError::Backend`]; no answer of Redis makes the
/// store panic (an entry whose fields cannot be read is absent). Making a
/// store does not connect: a store made while Redis is down fails its calls
/// until Redis answers, then works; the connection manager and the cluster
/// client reconnect on their own after a restart.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    notifications: Arc<Notifications>,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No connection details: a URL may carry a password.
        let backend = match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis cluster",
        };
        f.debug_struct("RedisStore")
            .field("backend", &backend)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on one Redis, e.g. `"redis://127.0.0.1:6379/"` (anything
    /// [`IntoConnectionInfo`]: a URL, a [`ConnectionInfo`], a host and
    /// port). Does not connect: the first call does, and a lost connection
    /// is made again ([`ConnectionManager`]).
    ///
    /// Fails on an address that cannot be used, or when called outside a
    /// Tokio runtime.
    pub fn new(redis: impl IntoConnectionInfo) -> Result<Self, StoreError> {
        Self::from_client(Client::open(redis).map_err(StoreError::backend)?)
    }

    /// A store on the one Redis of `client`; see [`new`](Self::new).
    pub fn from_client(client: Client) -> Result<Self, StoreError> {
        in_tokio_runtime()?;
        // Few retries, close together: a call is bounded by the store's
        // timeout anyway, and each call after a failed reconnection starts
        // another one.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(StoreError::backend)?;
        Ok(Self::with(Conn::Single(manager), vec![client]))
    }

    /// A store on a Redis Cluster, from some of its nodes (each anything
    /// [`IntoConnectionInfo`]). Does not connect: the first call does.
    ///
    /// Fails when no node is given, on an address that cannot be used, or
    /// when called outside a Tokio runtime.
    pub fn cluster<T: IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
    ) -> Result<Self, StoreError> {
        in_tokio_runtime()?;
        let nodes = nodes
            .into_iter()
            .map(IntoConnectionInfo::into_connection_info)
            .collect::<RedisResult<Vec<ConnectionInfo>>>()
            .map_err(StoreError::backend)?;
        if nodes.is_empty() {
            return Err(StoreError::backend("a Redis Cluster store needs a node"));
        }
        let client = ClusterClient::new(nodes.clone()).map_err(StoreError::backend)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client.get_pending_async_connection_with_config(config);
        let subscribe_on = nodes
            .into_iter()
            .map(Client::open)
            .collect::<RedisResult<Vec<Client>>>()
            .map_err(StoreError::backend)?;
        Ok(Self::with(Conn::Cluster(conn), subscribe_on))
    }

    fn with(conn: Conn, subscribe_on: Vec<Client>) -> Self {
        Self {
            conn,
            notifications: Arc::new(Notifications::new(subscribe_on)),
            prefix: Arc::from(DEFAULT_PREFIX),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The prefix of every Redis name the store uses (default
    /// `tower-token`): services sharing one Redis keep apart with their own.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Self {
        self.prefix = Arc::from(escape(prefix.as_ref()).as_ref());
        self
    }

    /// The time limit of every call (default 200 ms), past which it fails
    /// with [`StoreError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Redis names of `key`: the entry, the lock and the channel.
    fn names(&self, key: &str) -> Names {
        let tag = if key.is_empty() {
            Cow::Borrowed("%")
        } else {
            escape(key)
        };
        let base = format!("{}:{{{tag}}}", self.prefix);
        Names {
            token: format!("{base}:token"),
            lock: format!("{base}:lock"),
            channel: format!("{base}:ready"),
        }
    }

    /// Runs `call` within the store's timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if err.is_timeout() => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(err)) => Err(StoreError::backend(err)),
            Err(_elapsed) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

/// The Redis names of one store key.
struct Names {
    token: String,
    lock: String,
    channel: String,
}

/// `{`, `}` and `%` escaped, so that a name's hash tag is what the store
/// puts between braces.
fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['{', '}', '%']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A TTL in whole milliseconds, rounded up, at least 1 (Redis refuses 0)
/// and at most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(MAX_TTL_MS).clamp(1, MAX_TTL_MS)
}

/// The entry in an `HMGET` answer of [`FIELDS`]; absent when a field is
/// missing or cannot be read.
fn entry_from(fields: Vec<Option<Vec<u8>>>) -> Option<Entry> {
    let [Some(issued_at), Some(fingerprint), Some(value)]: [Option<Vec<u8>>; 3] =
        fields.try_into().ok()?
    else {
        return None;
    };
    Some(Entry {
        issued_at_ms: std::str::from_utf8(&issued_at).ok()?.parse().ok()?,
        fingerprint: String::from_utf8(fingerprint).ok()?,
        value,
    })
}

fn in_tokio_runtime() -> Result<(), StoreError> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| StoreError::backend("a RedisStore must be made inside a Tokio runtime"))
}

/// The connection for commands.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Self::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Self::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }

    async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Self::Single(conn) => script.invoke_async(&mut conn.clone()).await,
            Self::Cluster(conn) => script.invoke_async(&mut conn.clone()).await,
        }
    }
}

impl TokenStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("HMGET");
            cmd.arg(self.names(key).token).arg(&FIELDS[..]);
            let fields: Vec<Option<Vec<u8>>> = self.bounded(self.conn.query(&cmd)).await?;
            Ok(entry_from(fields))
        })
    }

    fn put_if_newer<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut script = PUT_SCRIPT.key(self.names(key).token);
            script
                .arg(entry.issued_at_ms)
                .arg(&entry.fingerprint)
                .arg(entry.value.as_slice())
                .arg(ttl_ms(ttl));
            let stored: i64 = self.bounded(self.conn.invoke(&script)).await?;
            Ok(stored == 1)
        })
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut script = LOCK_SCRIPT.key(self.names(key).lock);
            script.arg(owner).arg(ttl_ms(ttl));
            let held: i64 = self.bounded(self.conn.invoke(&script)).await?;
            Ok(held == 1)
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut script = UNLOCK_SCRIPT.key(self.names(key).lock);
            script.arg(owner);
            let _released: i64 = self.bounded(self.conn.invoke(&script)).await?;
            Ok(())
        })
    }

    fn notify<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("PUBLISH");
            cmd.arg(self.names(key).channel).arg("ready");
            let _receivers: i64 = self.bounded(self.conn.query(&cmd)).await?;
            Ok(())
        })
    }

    fn wait<'a>(
        &'a self,
        key: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.notifications
                .wait(&self.names(key).channel, self.timeout, timeout)
                .await
        })
    }

    fn invalidate_if_same<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut script = INVALIDATE_SCRIPT.key(self.names(key).token);
            script.arg(fingerprint);
            let removed: i64 = self.bounded(self.conn.invoke(&script)).await?;
            Ok(removed == 1)
        })
    }
}

type Waiters = Mutex<HashMap<String, Arc<Notify>>>;

fn lock_waiters(waiters: &Waiters) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store's pub/sub side: one subscriber connection, and the local
/// waiters of each channel.
struct Notifications {
    /// The servers to subscribe on (one, or the cluster nodes given).
    servers: Vec<Client>,
    /// The server to try first.
    next: AtomicUsize,
    subscriber: tokio::sync::Mutex<Option<Subscriber>>,
    waiters: Arc<Waiters>,
}

/// A live pub/sub connection.
struct Subscriber {
    sink: PubSubSink,
    subscribed: HashSet<String>,
    /// Closed when the connection is gone (its reader ended).
    alive: watch::Receiver<()>,
    reader: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One waiter on a channel; removes the channel's entry when it is the last.
struct Waiting<'a> {
    waiters: &'a Waiters,
    channel: &'a str,
    notify: Arc<Notify>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiters = lock_waiters(self.waiters);
        // The map's reference and this one: nobody else waits.
        if waiters.get(self.channel).is_some_and(|held| {
            Arc::ptr_eq(held, &self.notify) && Arc::strong_count(&self.notify) == 2
        }) {
            waiters.remove(self.channel);
        }
    }
}

impl Notifications {
    fn new(servers: Vec<Client>) -> Self {
        Self {
            servers,
            next: AtomicUsize::new(0),
            subscriber: tokio::sync::Mutex::new(None),
            waiters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    async fn wait(
        &self,
        channel: &str,
        store_timeout: Duration,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let now = tokio::time::Instant::now();
        // A wait too long for the clock is a wait of a year.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        let waiting = Waiting {
            notify: Arc::clone(
                lock_waiters(&self.waiters)
                    .entry(channel.to_owned())
                    .or_default(),
            ),
            waiters: &self.waiters,
            channel,
        };
        // Listen before subscribing: a message that arrives once the
        // subscription is made is not lost.
        let mut notified = pin!(waiting.notify.notified());
        notified.as_mut().enable();

        let mut alive =
            match tokio::time::timeout(store_timeout.min(timeout), self.subscribe(channel)).await {
                Ok(Ok(alive)) => alive,
                Ok(Err(err)) if err.is_timeout() => return Err(StoreError::Timeout(store_timeout)),
                Ok(Err(err)) => return Err(StoreError::backend(err)),
                // The wait's own time ran out first: the caller reads again.
                Err(_elapsed) if timeout < store_timeout => return Ok(()),
                Err(_elapsed) => return Err(StoreError::Timeout(store_timeout)),
            };

        let mut lost = pin!(alive.changed());
        let woken = std::future::poll_fn(|cx| {
            if notified.as_mut().poll(cx).is_ready() {
                Poll::Ready(true)
            } else if lost.as_mut().poll(cx).is_ready() {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        });
        match tokio::time::timeout_at(deadline, woken).await {
            Ok(true) | Err(_) => Ok(()),
            Ok(false) => Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the Redis pub/sub connection was lost while waiting",
            ))),
        }
    }

    /// Subscribes to `channel` (connecting first if needed); returns the
    /// connection's liveness.
    async fn subscribe(&self, channel: &str) -> RedisResult<watch::Receiver<()>> {
        let mut slot = self.subscriber.lock().await;
        let live = match slot.take() {
            Some(subscriber) if !subscriber.reader.is_finished() => subscriber,
            _ => self.connect().await?,
        };
        let subscriber = slot.insert(live);
        if !subscriber.subscribed.contains(channel) {
            subscriber.sink.subscribe(channel).await?;
            subscriber.subscribed.insert(channel.to_owned());
        }
        Ok(subscriber.alive.clone())
    }

    /// A pub/sub connection to the first server that answers, starting with
    /// the one after the last tried (a server that never answers is not
    /// tried first again).
    async fn connect(&self) -> RedisResult<Subscriber> {
        let count = self.servers.len();
        let first = self.next.load(Ordering::Relaxed);
        let mut failure = None;
        for i in 0..count {
            let index = (first + i) % count;
            let Some(server) = self.servers.get(index) else {
                continue;
            };
            self.next.store((index + 1) % count, Ordering::Relaxed);
            match server.get_async_pubsub().await {
                Ok(pubsub) => {
                    self.next.store(index, Ordering::Relaxed);
                    return Ok(Subscriber::start(pubsub, Arc::downgrade(&self.waiters)));
                }
                Err(err) => failure = Some(err),
            }
        }
        Err(failure.unwrap_or_else(|| {
            RedisError::from((
                ::redis::ErrorKind::Client,
                "no Redis server to subscribe on",
            ))
        }))
    }
}

impl Subscriber {
    /// Starts the task that reads the connection's messages and wakes the
    /// waiters of their channel.
    fn start(pubsub: PubSub, waiters: Weak<Waiters>) -> Self {
        let (sink, stream) = pubsub.split();
        let (alive_sender, alive) = watch::channel(());
        let reader = tokio::spawn(async move {
            // Dropped when this task ends: the waiters learn the connection
            // is gone.
            let _alive = alive_sender;
            let mut stream = pin!(stream);
            while let Some(message) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
            {
                let Some(waiters) = waiters.upgrade() else {
                    return;
                };
                if let Some(notify) = lock_waiters(&waiters).get(message.get_channel_name()) {
                    notify.notify_waiters();
                }
            }
        });
        Self {
            sink,
            subscribed: HashSet::new(),
            alive,
            reader,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> RedisStore {
        RedisStore::with(
            Conn::Single(unreachable_manager()),
            vec![Client::open("redis://127.0.0.1:1/").expect("a valid URL")],
        )
    }

    fn unreachable_manager() -> ConnectionManager {
        let client = Client::open("redis://127.0.0.1:1/").expect("a valid URL");
        ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new())
            .expect("a lazy manager")
    }

    #[tokio::test]
    async fn the_three_names_of_a_key_share_their_hash_tag() {
        let store = store();
        let names = store.names("k1");
        assert_eq!(names.token, "tower-token:{k1}:token");
        assert_eq!(names.lock, "tower-token:{k1}:lock");
        assert_eq!(names.channel, "tower-token:{k1}:ready");

        let store = store.prefix("a{b}%");
        let names = store.names("x}{y%");
        assert_eq!(names.token, "a%7Bb%7D%25:{x%7D%7By%25}:token");
        assert_eq!(store.names("").lock, "a%7Bb%7D%25:{%}:lock");
        assert_ne!(store.names("").token, store.names("%25").token);
    }

    #[test]
    fn ttls_are_whole_milliseconds_within_what_redis_takes() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_ms(Duration::from_secs(60)), 60_000);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn unreadable_fields_are_no_entry() {
        let full = |iat: &[u8]| {
            vec![
                Some(iat.to_vec()),
                Some(b"fp".to_vec()),
                Some(b"v".to_vec()),
            ]
        };
        assert_eq!(
            entry_from(full(b"42")),
            Some(Entry {
                issued_at_ms: 42,
                fingerprint: "fp".into(),
                value: b"v".to_vec(),
            })
        );
        assert_eq!(entry_from(full(b"-1")), None);
        assert_eq!(entry_from(full(b"99999999999999999999999")), None);
        assert_eq!(entry_from(vec![None, None, None]), None);
        assert_eq!(entry_from(vec![Some(b"1".to_vec())]), None);
        assert_eq!(
            entry_from(vec![Some(b"1".to_vec()), Some(vec![0xff]), Some(vec![])]),
            None
        );
    }

    #[test]
    fn a_store_is_made_inside_a_tokio_runtime() {
        assert!(RedisStore::new("redis://127.0.0.1:6379/").is_err());
        assert!(RedisStore::cluster(["redis://127.0.0.1:6379/"]).is_err());
    }

    #[tokio::test]
    async fn a_cluster_needs_a_node() {
        assert!(RedisStore::cluster(Vec::<String>::new()).is_err());
        assert!(RedisStore::new("no-such-scheme://x").is_err());
    }
}
