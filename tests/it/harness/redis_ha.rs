//! Redis deployments of several servers, started from the installed
//! binaries: a Redis Cluster of three primaries, and a primary with a
//! replica watched by Redis Sentinel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{
    PortTaken, find_on_path, kill_and_reap, log_tail, on_a_free_port, temp_dir, wait_port_closed,
};
use super::redis::{RedisServer, connect, launch, launch_redis_with};
use super::wait::wait_until_sync;

/// How long a cluster may take to agree on its state, or Sentinel to fail
/// over.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A command to the Redis at 127.0.0.1:`port`, its reply as `T`.
pub fn redis_cmd<T: ::redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let mut conn = connect(&format!("redis://127.0.0.1:{port}"))?;
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
        .map_err(|e| format!("{} on port {port}: {e}", args.join(" ")))
}

fn redis_binary(name: &str, package: &str) -> PathBuf {
    find_on_path(name).unwrap_or_else(|| {
        panic!(
            "{name} not found on PATH: the integration tests start their own. Install it \
             (Debian/Ubuntu: `apt-get install {package}`)"
        )
    })
}

/// One primary of a [`RedisCluster`].
pub struct ClusterNode {
    pub port: u16,
    /// The hash slots it serves, inclusive.
    pub slots: (u16, u16),
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

/// A Redis Cluster of three primaries on 127.0.0.1, no replicas, the hash
/// slots split evenly. `cluster-require-full-coverage no`: while a primary
/// is down, the others keep serving their slots. Stopped when dropped.
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    binary: PathBuf,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let binary = redis_binary("redis-server", "redis-server");
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        let nodes = ranges
            .into_iter()
            .map(|slots| start_cluster_node(&binary, slots))
            .collect();
        let cluster = RedisCluster { nodes, binary };
        for n in &cluster.nodes {
            let (a, b) = (n.slots.0.to_string(), n.slots.1.to_string());
            redis_cmd::<()>(n.port, &["CLUSTER", "ADDSLOTSRANGE", &a, &b])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let first = cluster.nodes[0].port;
        for n in &cluster.nodes[1..] {
            redis_cmd::<()>(
                first,
                &["CLUSTER", "MEET", "127.0.0.1", &n.port.to_string()],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        cluster.wait_agreed();
        // `key_slot` says what the cluster says, hash tags included.
        for key in [
            "agent:a:last_seen",
            "agent:{a}:last_seen",
            "{}x",
            "a{}{b}",
            "agents",
        ] {
            let theirs: u16 =
                redis_cmd(first, &["CLUSTER", "KEYSLOT", key]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(key_slot(key), theirs, "hash slot of {key:?}");
        }
        cluster
    }

    /// `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            self.nodes[0].port,
            nodes.join("&")
        )
    }

    /// Index of the node that serves `key` (its slot computed here by
    /// [`key_slot`], checked against the cluster's own once at start).
    pub fn node_of(&self, key: &str) -> usize {
        let slot = key_slot(key);
        self.nodes
            .iter()
            .position(|n| (n.slots.0..=n.slots.1).contains(&slot))
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// SET `key` to `value` on the node that serves it.
    pub fn set(&self, key: &str, value: &str) {
        let port = self.nodes[self.node_of(key)].port;
        redis_cmd::<()>(port, &["SET", key, value]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills node `i` (SIGKILL) and waits until its port is closed.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(child) = n.child.take() {
            kill_and_reap(child, None);
        }
        wait_port_closed("redis-server (cluster node)", n.port);
    }

    /// Starts node `i` again on its port with its cluster configuration
    /// (its identity and slots: its data is gone), and waits until every
    /// node sees the cluster whole again.
    pub fn restart(&mut self, i: usize) {
        let binary = self.binary.clone();
        let n = &mut self.nodes[i];
        match launch_redis_with(&binary, n.dir.path(), &n.log, n.port, &cluster_args()) {
            Ok(child) => n.child = Some(child),
            Err(PortTaken) => panic!(
                "cannot restart cluster node on port {}: another process bound it; log {}:\n{}",
                n.port,
                n.log.display(),
                log_tail(&n.log)
            ),
        }
        self.wait_agreed();
    }

    /// Until every node knows the three, none flagged failing, and the
    /// cluster is `ok`.
    fn wait_agreed(&self) {
        wait_until_sync(
            "the Redis Cluster to agree on its three nodes",
            SETTLE_TIMEOUT,
            || {
                self.nodes.iter().all(|n| {
                    let info: Result<String, _> = redis_cmd(n.port, &["CLUSTER", "INFO"]);
                    let nodes: Result<String, _> = redis_cmd(n.port, &["CLUSTER", "NODES"]);
                    match (info, nodes) {
                        (Ok(info), Ok(nodes)) => {
                            info.contains("cluster_state:ok")
                                && info.contains("cluster_known_nodes:3")
                                && info.contains("cluster_slots_ok:16384")
                                && !nodes.contains("fail")
                                && nodes.lines().filter(|l| l.contains("connected")).count() == 3
                        }
                        _ => false,
                    }
                })
            },
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(child) = n.child.take() {
                kill_and_reap(child, None);
            }
        }
    }
}

fn cluster_args() -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-require-full-coverage",
        "no",
    ]
    .map(String::from)
    .to_vec()
}

fn start_cluster_node(binary: &Path, slots: (u16, u16)) -> ClusterNode {
    let dir = temp_dir("redis-cluster");
    let log = dir.path().join("redis.log");
    let (port, child) = on_a_free_port("a cluster node", &log, |port| {
        launch_redis_with(binary, dir.path(), &log, port, &cluster_args())
    });
    ClusterNode {
        port,
        slots,
        dir,
        log,
        child: Some(child),
    }
}

/// The hash slot of `key` (CRC16-XMODEM of the key or of its `{hash tag}`,
/// modulo 16384), as Redis Cluster computes it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A primary and its replica watched by one Sentinel (quorum 1, a primary
/// is down after 1 s), service `main`. Stopped when dropped.
pub struct RedisSentinel {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub port: u16,
    pub service: &'static str,
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let binary = redis_binary("redis-sentinel", "redis-sentinel");
        let primary = RedisServer::start();
        let replica = RedisServer::start_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ]);
        wait_until_sync(
            "the replica to sync from the primary",
            SETTLE_TIMEOUT,
            || {
                redis_cmd::<String>(replica.port, &["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            },
        );
        let dir = temp_dir("redis-sentinel");
        let log = dir.path().join("sentinel.log");
        let service = "main";
        let (port, child) = on_a_free_port("redis-sentinel", &log, |port| {
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {service} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 5000\n",
                dir.path().display(),
                primary.port
            );
            std::fs::write(&conf, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
            let mut cmd = Command::new(&binary);
            cmd.arg(&conf).current_dir(dir.path()).stdin(Stdio::null());
            launch("redis-sentinel", cmd, &log, port)
        });
        let s = RedisSentinel {
            primary,
            replica,
            port,
            service,
            dir,
            log,
            child: Some(child),
        };
        wait_until_sync("Sentinel to discover the replica", SETTLE_TIMEOUT, || {
            redis_cmd::<Vec<Vec<String>>>(port, &["SENTINEL", "REPLICAS", service])
                .is_ok_and(|r| !r.is_empty())
        });
        s
    }

    /// The `redis-sentinel://` URL of the service.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={}",
            self.port, self.service
        )
    }

    /// The port of the primary Sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        let addr: Vec<String> = redis_cmd(
            self.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service],
        )
        .ok()?;
        addr.get(1)?.parse().ok()
    }

    /// Until Sentinel has promoted the replica and it accepts writes.
    pub fn wait_failover(&self) {
        wait_until_sync("Sentinel to promote the replica", SETTLE_TIMEOUT, || {
            self.primary_port() == Some(self.replica.port)
                && redis_cmd::<String>(self.replica.port, &["INFO", "replication"])
                    .is_ok_and(|i| i.contains("role:master"))
        });
    }

    /// Path of Sentinel's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child, None);
        }
    }
}
