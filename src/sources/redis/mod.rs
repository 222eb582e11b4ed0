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

use std::sync::Mutex;
use std::time::Duration;

use chrono::TimeDelta;
use fred::error::ErrorKind as FredKind;
use fred::interfaces::ClientLike as _;
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
use conn::{Handle, Running, Stop};
use value::{Slot, parse_time};

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

pub struct RedisSource {
    id: SourceId,
    interval: Duration,
    timeout: Duration,
    layout: RedisLayout,
    batch: usize,
    json_field: String,
    status_field: String,
    clock: Clock,
    builder: Builder,
    options: Options,
    /// `host:port` of the server, for messages.
    endpoint: String,
    uses_tls: bool,
    /// The URL's password (raw and percent-decoded), scrubbed from every
    /// message as a last line of defence.
    secrets: Vec<SecretString>,
    running: Mutex<Option<Running>>,
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
        let endpoint = endpoint(cfg.url.redacted());
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
        policy.set_jitter(max_ms / 5);
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

        Ok(Self {
            id,
            interval: cfg.interval,
            timeout,
            layout: cfg.layout.clone(),
            batch: cfg.batch.get(),
            json_field: cfg.json_field.clone(),
            status_field: cfg.status_field.clone(),
            clock,
            builder,
            options: Options {
                timeout: Some(timeout),
                fail_fast: true,
                ..Options::default()
            },
            endpoint,
            uses_tls,
            secrets,
            running: Mutex::new(None),
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
            .map_err(|e| self.command_error(e))?;
        let after = self.clock.now();
        let remote = parse_time(reply).ok_or_else(|| {
            self.error(
                ErrorKind::Protocol,
                format!("unexpected reply to TIME ({})", self.endpoint),
            )
        })?;
        Ok(self.offset.measure(before, remote, after))
    }

    fn bad_reply(&self, command: &str) -> SourceError {
        self.error(
            ErrorKind::Protocol,
            format!("unexpected reply to {command} ({})", self.endpoint),
        )
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
        self.start_client();
    }

    /// Close the connection (QUIT when connected) and stop the client's
    /// tasks, bounded by the source's timeout. A later read or `connect`
    /// starts a new client.
    async fn disconnect(&self) {
        self.close_client().await;
    }

    async fn scan(&self, sink: &mut ScanSink) -> Result<(), SourceError> {
        let h = self.handle()?;
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
        let h = self.handle()?;
        let epoch = self.ready(&h).await?;
        // TIME goes in the same pipeline as the read: a fresh offset for
        // free (no extra round trip), rather than one from the last scan.
        let (offset, slots) =
            tokio::join!(biased; self.measure_offset(&h), self.read_points(&h, agents));
        let (offset, slots) = match (offset, slots) {
            (Ok(o), Ok(s)) => (o, s),
            (Err(stop), _) | (_, Err(stop)) => return Err(self.explain(&h, epoch, stop).await),
        };
        let zset = matches!(self.layout, RedisLayout::Zset { .. });
        Ok(agents
            .iter()
            .cloned()
            .zip(slots)
            .map(|(agent, slot)| self.reading(agent, slot, offset, zset))
            .collect())
    }

    fn clock_offset_seconds(&self) -> Option<f64> {
        self.offset.seconds()
    }
}

/// `host:port` of a (redacted) Redis URL.
fn endpoint(redacted: &str) -> String {
    match url::Url::parse(redacted) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("127.0.0.1");
            let port = u.port().unwrap_or(6379);
            format!("{host}:{port}")
        }
        Err(_) => redacted.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_host_and_port_with_the_default_port() {
        assert_eq!(endpoint("redis://127.0.0.1:6380"), "127.0.0.1:6380");
        assert_eq!(
            endpoint("redis://:***@cache.internal/0"),
            "cache.internal:6379"
        );
        assert_eq!(endpoint("rediss://[::1]:7000"), "[::1]:7000");
    }
}
