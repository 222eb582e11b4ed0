//! Redis heartbeats: `SCAN` + `MGET` over one key per agent, `HSCAN` over one
//! hash, or `ZSCAN` over one sorted set; point reads with `MGET`, `HMGET` or
//! `ZMSCORE`.
//!
//! # Connection
//!
//! One fred client per source, started by [`PollSource::connect`] without
//! waiting for Redis: the first connection follows the same reconnect policy
//! (exponential, 100 ms → the scan interval within 1–10 s, with jitter, forever) as every later one, so
//! the sidecar starts whether or not Redis is up. Every command carries a
//! timeout (`timeout:` of the source) and fails fast while the client is not
//! connected instead of queueing until Redis returns.
//!
//! A small listener task follows the client's connection events, so that a
//! read attempted while Redis is unreachable fails with the reason of the
//! last connection attempt (`connection refused (host:port)`, a TLS or auth
//! failure...) rather than with fred's generic "canceled": a read first waits
//! at most `timeout` for a connection, and returns as soon as an attempt has
//! failed. A connection that breaks under a read is explained the same way,
//! by the attempt to re-establish it (again waited for at most `timeout`).
//! When Redis returns, the client reconnects by itself.
//!
//! # Reads
//!
//! Every scan starts with `TIME`: the offset of Redis' clock from ours is
//! measured (round-trip midpoint) and every `last_seen` is moved onto the
//! local clock (`local = stored - offset`). Point reads send `TIME` in the
//! same pipeline as the read itself, so they get a fresh offset at no extra
//! round trip.
//!
//! Large structures are never read whole (see DESIGN.md §8): keys are
//! discovered with `SCAN MATCH .. COUNT batch` (the `MGET` of page *n* is in
//! flight together with the `SCAN` of page *n+1* and the delivery of page
//! *n-1*), hashes and sorted sets are paged with `HSCAN` / `ZSCAN` (page
//! *n* is converted and delivered while page *n+1* is requested). Readings
//! go to the sink page by page. A `SCAN` may return an entry twice: each scan
//! de-duplicates. A value that cannot be understood is an
//! [`Reading::Invalid`] for its agent, never a failed scan.

use std::time::Duration;

use chrono::TimeDelta;
use fred::error::ErrorKind as FredKind;
use fred::interfaces::ClientLike as _;
use fred::types::config::ServerConfig;
use fred::types::config::{
    Config as FredConfig, Options, ReconnectPolicy, TcpConfig, TlsConnector, UnresponsiveConfig,
};
use fred::types::{Builder, ClusterHash, CustomCommand, Key, Value};
use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::{RedisConfig, RedisLayout};
use crate::core::{AgentId, ErrorKind, Reading, SourceId};

use super::common::{ClockOffset, SkipLog};
use super::{PollSource, ScanSink, SourceError};
use cluster::Cluster;
use conn::{Conn, Handle, Stop};
use value::{Slot, parse_time};

mod cluster;
mod conn;
mod keys;
mod paged;
mod value;

const SYSTEM: &str = "redis";

/// Reconnect delays: 100 ms doubling up to the scan interval (clamped to
/// 1–10 s, so a returning Redis is noticed within about one interval), plus
/// up to a fifth of that as jitter (many sidecars must not reconnect in
/// lock-step), forever.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 10_000;

/// What the URL names.
enum Deployment {
    /// One server, or the primary of a Sentinel service (the client asks
    /// Sentinel again after a failover).
    One(Box<Conn>),
    /// A Redis Cluster: one client per primary (see [`cluster`]).
    Cluster(Box<Cluster>),
}

pub struct RedisSource {
    id: SourceId,
    interval: Duration,
    timeout: Duration,
    layout: RedisLayout,
    batch: usize,
    json_field: String,
    status_field: String,
    clock: Clock,
    /// The longest a new client waits before its first connection attempt
    /// (the reconnect policy's first delay and jitter).
    first_attempt: Duration,
    deployment: Deployment,
    options: Options,
    uses_tls: bool,
    /// The URL's password (raw and percent-decoded), scrubbed from every
    /// message as a last line of defence.
    secrets: Vec<SecretString>,
    offset: ClockOffset,
    /// Entries skipped because their name is not UTF-8.
    skipped: SkipLog,
}

impl RedisSource {
    /// Build the client (nothing is connected yet: see [`Self::connect`]).
    /// `rediss://` URLs use rustls with the system's roots (`SSL_CERT_FILE`
    /// and `SSL_CERT_DIR` are honoured); the process must have installed a
    /// rustls crypto provider.
    pub fn new(id: SourceId, cfg: &RedisConfig, clock: Clock) -> Result<Self, SourceError> {
        Self::build(id, cfg, clock, None)
    }

    /// Like [`Self::new`], with this TLS client configuration (custom roots,
    /// client certificates) instead of the system's roots. Turns TLS on even
    /// for a `redis://` URL.
    pub fn with_tls_config(
        id: SourceId,
        cfg: &RedisConfig,
        clock: Clock,
        tls: rustls::ClientConfig,
    ) -> Result<Self, SourceError> {
        Self::build(id, cfg, clock, Some(tls))
    }

    fn build(
        id: SourceId,
        cfg: &RedisConfig,
        clock: Clock,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, SourceError> {
        let secrets = cfg.url.password_forms();
        let scrub_err =
            |kind: ErrorKind, msg: String| SourceError::scrubbed(kind, SYSTEM, &secrets, msg);
        let mut config = FredConfig::from_url(cfg.url.expose()).map_err(|e| {
            let kind = if *e.kind() == FredKind::Tls {
                ErrorKind::Tls
            } else {
                ErrorKind::Other
            };
            scrub_err(
                kind,
                format!("cannot use URL {}: {}", cfg.url.redacted(), e.details()),
            )
        })?;
        if let Some(tls) = tls {
            config.tls = Some(TlsConnector::from(tls).into());
        }
        let uses_tls = config.tls.is_some();
        // Start even when Redis is down: the first connection is retried
        // with the reconnect policy instead of failing `connect`.
        config.fail_fast = false;

        let timeout = cfg.timeout;
        let max_ms = u32::try_from(cfg.interval.as_millis())
            .unwrap_or(RECONNECT_MAX_MS)
            .clamp(1_000, RECONNECT_MAX_MS);
        let mut policy = ReconnectPolicy::new_exponential(0, RECONNECT_MIN_MS, max_ms, 2);
        let jitter = max_ms / 5;
        policy.set_jitter(jitter);
        let first_attempt = Duration::from_millis(u64::from(RECONNECT_MIN_MS + jitter));
        let server = config.server.clone();
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
                // A connection that stops answering (half-open TCP, a
                // partition) is closed and re-established rather than
                // timing out every command forever.
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(timeout.saturating_mul(2)),
                    interval: (timeout / 2)
                        .clamp(Duration::from_millis(50), Duration::from_secs(2)),
                };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .set_policy(policy);
        let deployment = match &server {
            ServerConfig::Clustered { hosts, .. } => {
                Deployment::Cluster(Box::new(Cluster::new(hosts.clone(), builder)))
            }
            server => Deployment::One(Box::new(Conn::new(endpoint(server), builder))),
        };

        Ok(Self {
            id,
            interval: cfg.interval,
            timeout,
            layout: cfg.layout.clone(),
            batch: cfg.batch.get(),
            json_field: cfg.json_field.clone(),
            status_field: cfg.status_field.clone(),
            clock,
            first_attempt,
            deployment,
            options: Options {
                timeout: Some(timeout),
                fail_fast: true,
                ..Options::default()
            },
            uses_tls,
            secrets,
            offset: ClockOffset::default(),
            skipped: SkipLog::default(),
        })
    }

    /// An error of this source, without secrets.
    fn error(&self, kind: ErrorKind, message: String) -> SourceError {
        SourceError::scrubbed(kind, SYSTEM, &self.secrets, message)
    }

    /// `TIME`, and the offset of Redis' clock from ours (remote - local),
    /// measured at the round trip's midpoint. Remembered for
    /// `clock_offset_seconds`.
    async fn measure_offset(&self, h: &Handle) -> Result<TimeDelta, Stop> {
        let before = self.clock.now();
        let reply: Value = h
            .client
            .custom(
                CustomCommand::new_static("TIME", ClusterHash::Random, false),
                Vec::<Value>::new(),
            )
            .await
            .map_err(|e| self.command_error(h, e))?;
        let after = self.clock.now();
        let remote = parse_time(reply).ok_or_else(|| self.bad_reply(h, "TIME"))?;
        Ok(self.offset.measure(before, remote, after))
    }

    async fn read_points(&self, h: &Handle, agents: &[AgentId]) -> Result<Vec<Slot>, Stop> {
        match &self.layout {
            RedisLayout::Keys(pattern) => {
                let keys: Vec<Key> = agents
                    .iter()
                    .map(|a| Key::from(pattern.key(a.as_str())))
                    .collect();
                self.get_strings(h, &keys).await
            }
            RedisLayout::Hash { key } => self.read_pairs(h, key, false, agents).await,
            RedisLayout::Zset { key } => self.read_pairs(h, key, true, agents).await,
        }
    }
}

impl PollSource for RedisSource {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// Start the client in the background (see the module doc). Must be
    /// called from within a tokio runtime (reads also start the client if
    /// needed).
    fn connect(&self) {
        match &self.deployment {
            Deployment::One(conn) => self.start_client(conn),
            // The first scan reads the slot map, and connects to each
            // primary.
            Deployment::Cluster(_) => {}
        }
    }

    /// Close the connections (QUIT when connected) and stop the clients'
    /// tasks, each bounded by the source's timeout. A later read or
    /// `connect` starts new clients.
    async fn disconnect(&self) {
        match &self.deployment {
            Deployment::One(conn) => self.close_client(conn).await,
            Deployment::Cluster(c) => {
                for conn in c.all_conns() {
                    self.close_client(&conn).await;
                }
            }
        }
    }

    async fn scan(&self, sink: &mut ScanSink) -> Result<(), SourceError> {
        let conn = match &self.deployment {
            Deployment::One(conn) => conn,
            Deployment::Cluster(c) => return self.scan_cluster(c, sink).await,
        };
        let h = self.handle(conn)?;
        let epoch = self.ready(&h).await?;
        let read = async {
            let offset = self.measure_offset(&h).await?;
            match &self.layout {
                RedisLayout::Keys(pattern) => self.scan_keys(&h, pattern, offset, sink).await,
                RedisLayout::Hash { key } => self.scan_pairs(&h, key, false, offset, sink).await,
                RedisLayout::Zset { key } => self.scan_pairs(&h, key, true, offset, sink).await,
            }
        };
        match read.await {
            Ok(()) => Ok(()),
            Err(stop) => Err(self.explain(&h, epoch, stop).await),
        }
    }

    async fn point_read(&self, agents: &[AgentId]) -> Result<Vec<Reading>, SourceError> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        match &self.deployment {
            Deployment::One(conn) => self.point_read_on(&self.handle(conn)?, agents).await,
            Deployment::Cluster(c) => self.point_read_cluster(c, agents).await,
        }
    }

    fn clock_offset_seconds(&self) -> Option<f64> {
        self.offset.seconds()
    }
}

impl RedisSource {
    /// Read `agents` on the server of `h`, with a fresh clock offset.
    async fn point_read_on(
        &self,
        h: &Handle,
        agents: &[AgentId],
    ) -> Result<Vec<Reading>, SourceError> {
        let epoch = self.ready(h).await?;
        // TIME goes in the same pipeline as the read: a fresh offset for
        // free (no extra round trip), rather than one from the last scan.
        let (offset, slots) =
            tokio::join!(biased; self.measure_offset(h), self.read_points(h, agents));
        let (offset, slots) = match (offset, slots) {
            (Ok(o), Ok(s)) => (o, s),
            (Err(stop), _) | (_, Err(stop)) => return Err(self.explain(h, epoch, stop).await),
        };
        let zset = matches!(self.layout, RedisLayout::Zset { .. });
        Ok(agents
            .iter()
            .cloned()
            .zip(slots)
            .map(|(agent, slot)| self.reading(agent, slot, offset, zset))
            .collect())
    }
}

/// `host:port`, `[v6]:port`.
fn server_name(server: &fred::types::config::Server) -> String {
    if server.host.contains(':') && !server.host.starts_with('[') {
        format!("[{}]:{}", server.host, server.port)
    } else {
        format!("{}:{}", server.host, server.port)
    }
}

/// How messages name the server: `host:port`, a socket's path, or the
/// Sentinel service and its sentinels.
fn endpoint(server: &ServerConfig) -> String {
    match server {
        ServerConfig::Centralized { server } => server_name(server),
        ServerConfig::Unix { path } => path.display().to_string(),
        ServerConfig::Sentinel {
            hosts,
            service_name,
        } => {
            let hosts: Vec<String> = hosts.iter().map(server_name).collect();
            format!("{service_name} via Sentinel {}", hosts.join(", "))
        }
        ServerConfig::Clustered { hosts, .. } => {
            let hosts: Vec<String> = hosts.iter().map(server_name).collect();
            format!("Redis Cluster {}", hosts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(url: &str) -> String {
        endpoint(&FredConfig::from_url(url).unwrap().server)
    }

    #[test]
    fn messages_name_the_server_or_the_sentinel_service() {
        assert_eq!(shown("redis://127.0.0.1:6380"), "127.0.0.1:6380");
        assert_eq!(
            shown("redis://:secret@cache.internal/0"),
            "cache.internal:6379"
        );
        assert_eq!(shown("rediss://[::1]:7000"), "[::1]:7000");
        assert_eq!(
            shown("redis-sentinel://10.0.0.1:26379/0?sentinelServiceName=main&node=10.0.0.2:26380"),
            "main via Sentinel 10.0.0.2:26380, 10.0.0.1:26379"
        );
        assert_eq!(shown("redis+unix:///run/redis.sock"), "/run/redis.sock");
    }
}
