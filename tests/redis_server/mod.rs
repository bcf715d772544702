//! `redis-server` processes for the Redis suites: single servers and a
//! 3-master cluster on free loopback ports, each in a temporary directory,
//! stopped on drop. A test that cannot start one fails; it never skips.

#![allow(dead_code)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tower_token::store::RedisStore;

/// How long a server may take to start, a cluster to form, a store to
/// reconnect.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tower-token-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on; for a cluster node, its bus port
/// (+10000) too.
pub fn free_port(cluster: bool) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        if !cluster {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli -p port args…` and returns its output; fails the test
/// if it cannot run.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("redis-cli could not be started (apt-get install redis-server): {e}")
        });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `redis-server` process, killed on drop.
pub struct Server {
    pub port: u16,
    pub dir: TempDir,
    pub cluster: bool,
    pub child: Option<Child>,
}

impl Server {
    /// A server on a free port (a few ports are tried if another process
    /// takes the first one meanwhile).
    pub fn start(cluster: bool) -> Self {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let mut server = Self {
                port: free_port(cluster),
                dir: TempDir::new("redis"),
                cluster,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    pub fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.0.to_string_lossy().into_owned();
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--logfile",
            "redis.log",
        ]);
        if self.cluster {
            let conf = self.dir.0.join("nodes.conf");
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf.to_string_lossy(),
                "--cluster-node-timeout",
                "5000",
            ]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server could not be started (apt-get install redis-server): {e}")
            });
        let pid = child.id();
        self.child = Some(child);
        // Ready when this very process answers on the port (not another
        // server that took the port first).
        let started = Instant::now();
        while started.elapsed() < SETTLE {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                let log = std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default();
                self.child = None;
                return Err(format!(
                    "port {}: exited with {status}: {stderr}{log}",
                    self.port
                ));
            }
            if cli(self.port, &["info", "server"]).contains(&format!("process_id:{pid}")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!("port {}: no answer within {SETTLE:?}", self.port))
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same directory.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn() {
            panic!("redis-server did not start again: {why}");
        }
    }

    /// The keys of stored tokens.
    pub fn token_keys(&self) -> Vec<String> {
        cli(self.port, &["--scan", "--pattern", "*:token"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters, no replicas.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<Server> = (0..3).map(|_| Server::start(true)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let created = cli(nodes[0].port, &args);
        assert!(
            created.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{created}"
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node says `cluster_state:ok`.
    pub fn wait_until_ok(&self) {
        let started = Instant::now();
        while !self
            .nodes
            .iter()
            .all(|n| cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(
                started.elapsed() < SETTLE,
                "the cluster is not ok after {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn store(&self) -> RedisStore {
        RedisStore::cluster(self.nodes.iter().map(Server::url)).expect("a cluster store")
    }

    /// The nodes' URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
