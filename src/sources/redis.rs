//! Redis heartbeats: `SCAN` + `MGET` over one key per agent, `HSCAN` over one
//! hash, or `ZSCAN` over one sorted set; point reads with `MGET`, `HMGET` or
//! `ZMSCORE`.
//!
//! # Connection
//!
//! One fred client per source, started by [`RedisSource::connect`] without
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

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, SortedSetsInterface,
};
use fred::types::config::{
    Config as FredConfig, Options, ReconnectPolicy, Server, TcpConfig, TlsConnector,
    UnresponsiveConfig,
};
use fred::types::{Builder, ClusterHash, CustomCommand, Key, Value};
use futures::future::try_join_all;
use secrecy::SecretString;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::{KeyPattern, RedisConfig, RedisLayout};
use crate::core::timestamp::{from_epoch, parse_text};
use crate::core::{AgentId, ErrorKind, Reading, SourceId, Timestamp};
use crate::secret::scrub_secrets;

use super::{PollSource, ScanSink, SourceError};

const SYSTEM: &str = "redis";

/// Reconnect delays: 100 ms doubling up to the scan interval (clamped to
/// 1–10 s, so a returning Redis is noticed within about one interval), plus
/// up to a fifth of that as jitter (many sidecars must not reconnect in
/// lock-step), forever.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 10_000;

/// How often a read waiting for the connection re-checks the client's state
/// (connection events wake it earlier).
const READY_POLL: Duration = Duration::from_millis(10);

/// What the listener task knows about the connection; `epoch` counts the
/// events seen.
#[derive(Clone, Debug)]
struct LinkState {
    epoch: u64,
    link: Link,
}

#[derive(Clone, Debug)]
enum Link {
    /// Connecting for the first time; no attempt has finished yet.
    Connecting,
    /// A connection was established.
    Up,
    /// An established connection broke; a reconnection is pending.
    Broken(FredError),
    /// The last connection attempt failed with this error.
    Failed(FredError),
}

/// Why a read stopped.
enum Stop {
    /// The connection broke under a command: what the reconnection attempt
    /// finds explains it (see [`RedisSource::explain`]).
    Lost(FredError),
    Failed(SourceError),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Failed(e)
    }
}

/// A started client.
struct Running {
    client: Client,
    link: watch::Receiver<LinkState>,
    conn: JoinHandle<Result<(), FredError>>,
    listener: JoinHandle<()>,
}

/// What a read needs from the running client (cheap clones).
struct Handle {
    client: WithOptions<Client>,
    link: watch::Receiver<LinkState>,
}

/// What a key, field or member held.
enum Slot {
    Value(Value),
    Missing,
    WrongType(String),
}

pub struct RedisSource {
    id: SourceId,
    interval: Duration,
    timeout: Duration,
    layout: RedisLayout,
    batch: usize,
    json_field: String,
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
    offset: Mutex<Option<f64>>,
    /// Entries skipped in the last scan because their name is not UTF-8
    /// (logged when the number changes, not every scan).
    skipped_logged: AtomicUsize,
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
        let scrub_err = |kind: ErrorKind, msg: String| {
            SourceError::new(kind, SYSTEM, scrub_secrets(&secrets, msg))
        };
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
            offset: Mutex::new(None),
            skipped_logged: AtomicUsize::new(0),
        })
    }

    /// Start connecting in the background. Never blocks and never fails
    /// because Redis is down; does nothing if already started. Must be called
    /// from within a tokio runtime (reads also start the client if needed).
    pub fn connect(&self) {
        if let Err(e) = self.handle() {
            warn!(source = %self.id, error = %e, "Cannot start the Redis client.");
        }
    }

    /// Close the connection (QUIT when connected) and stop the client's
    /// tasks. Bounded by the source's timeout. A later read or `connect`
    /// starts a new client.
    pub async fn disconnect(&self) {
        let running = lock(&self.running).take();
        let Some(r) = running else {
            return;
        };
        // The client's state lags a broken connection: trust it only with
        // the link's.
        let up = r.client.is_connected() && matches!(r.link.borrow().link, Link::Up);
        if up {
            if let Err(e) = tokio::time::timeout(self.timeout, r.client.quit()).await {
                debug!(source = %self.id, error = %e, "QUIT got no answer in time.");
            }
        } else {
            // Not connected: the connection task is sleeping before its next
            // attempt, or attempting; nothing to close gracefully.
            r.conn.abort();
        }
        let mut conn = r.conn;
        if tokio::time::timeout(self.timeout, &mut conn).await.is_err() {
            conn.abort();
        }
        r.listener.abort();
    }

    /// The running client, started if needed.
    fn handle(&self) -> Result<Handle, SourceError> {
        let mut running = lock(&self.running);
        if let Some(r) = running.as_ref() {
            return Ok(Handle {
                client: r.client.with_options(&self.options),
                link: r.link.clone(),
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(self.error(
                ErrorKind::Other,
                "the Redis client must be started from within a tokio runtime".into(),
            ));
        }
        let client = self.builder.build().map_err(|e| self.fred_error(&e))?;
        // Subscribe before connecting, so that the first events are seen.
        let errors = client.error_rx();
        let reconnects = client.reconnect_rx();
        let (tx, rx) = watch::channel(LinkState {
            epoch: 0,
            link: Link::Connecting,
        });
        let listener = tokio::spawn(follow_link(errors, reconnects, tx));
        let conn = client.connect();
        let handle = Handle {
            client: client.with_options(&self.options),
            link: rx.clone(),
        };
        *running = Some(Running {
            client,
            link: rx,
            conn,
            listener,
        });
        Ok(handle)
    }

    /// Wait (at most `timeout`) until the client is connected; returns the
    /// link's generation then. Returns the last connection attempt's error as
    /// soon as one has failed.
    ///
    /// The client's own state is not enough: it still says "connected" for
    /// a while after the connection broke (until the first reconnection
    /// attempt), so the link must say `Up` too.
    async fn ready(&self, h: &Handle) -> Result<u64, SourceError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut rx = h.link.clone();
        loop {
            let s = rx.borrow_and_update().clone();
            match &s.link {
                Link::Up if h.client.is_connected() => return Ok(s.epoch),
                Link::Failed(e) => return Err(self.fred_error(e)),
                Link::Up | Link::Connecting | Link::Broken(_) => {}
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(match &s.link {
                    Link::Broken(e) => self.fred_error(e),
                    _ => self.error(
                        ErrorKind::Timeout,
                        format!(
                            "no connection to {} within {}",
                            self.endpoint,
                            humantime::format_duration(self.timeout)
                        ),
                    ),
                });
            }
            wait_change(&mut rx, left.min(READY_POLL)).await;
        }
    }

    /// The error a read reports. A connection that broke under a command
    /// (known at generation `epoch`) is explained by the next connection
    /// attempt (`connection refused`, ...), waited for at most `timeout`.
    async fn explain(&self, h: &Handle, epoch: u64, stop: Stop) -> SourceError {
        let lost = match stop {
            Stop::Failed(e) => return e,
            Stop::Lost(e) => e,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut rx = h.link.clone();
        loop {
            let s = rx.borrow_and_update().clone();
            if s.epoch > epoch {
                match &s.link {
                    Link::Failed(e) => return self.fred_error(e),
                    Link::Up if h.client.is_connected() => {
                        return self.error(
                            ErrorKind::Other,
                            format!(
                                "connection to {} lost during the read (reconnected since)",
                                self.endpoint
                            ),
                        );
                    }
                    Link::Up | Link::Connecting | Link::Broken(_) => {}
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return match &s.link {
                    Link::Broken(e) if s.epoch > epoch => self.fred_error(e),
                    _ => self.fred_error(&lost),
                };
            }
            wait_change(&mut rx, left.min(READY_POLL)).await;
        }
    }

    /// A failed command. I/O errors and fail-fast cancellations mean the
    /// connection is gone: [`Self::explain`] finds out why.
    fn command_error(&self, e: FredError) -> Stop {
        match e.kind() {
            FredKind::IO | FredKind::Canceled => Stop::Lost(e),
            _ => Stop::Failed(self.fred_error(&e)),
        }
    }

    /// A failed command on `key`: WRONGTYPE means the configured key holds
    /// another type.
    fn key_error(&self, key: &str, want: &str, e: FredError) -> Stop {
        if e.details().starts_with("WRONGTYPE") {
            return Stop::Failed(self.error(
                ErrorKind::BadValue,
                format!("key {key:?} does not hold a {want} (WRONGTYPE)"),
            ));
        }
        self.command_error(e)
    }

    fn fred_error(&self, e: &FredError) -> SourceError {
        let d = e.details();
        let ep = &self.endpoint;
        let (kind, message) = match e.kind() {
            FredKind::Timeout => (
                ErrorKind::Timeout,
                format!(
                    "no answer within {} ({ep})",
                    humantime::format_duration(self.timeout)
                ),
            ),
            FredKind::Auth => (
                ErrorKind::Auth,
                format!("authentication failed ({ep}): {d}"),
            ),
            FredKind::Tls => (ErrorKind::Tls, format!("TLS failure ({ep}): {d}")),
            FredKind::IO => self.io_error(d),
            FredKind::Protocol | FredKind::Parse => {
                (ErrorKind::Protocol, format!("protocol error ({ep}): {d}"))
            }
            FredKind::Canceled => (ErrorKind::Other, format!("connection to {ep} closed")),
            _ if is_auth_reply(d) => (
                ErrorKind::Auth,
                format!("authentication failed ({ep}): {d}"),
            ),
            _ => (ErrorKind::Other, format!("{d} ({ep})")),
        };
        self.error(kind, message)
    }

    fn io_error(&self, d: &str) -> (ErrorKind, String) {
        let ep = &self.endpoint;
        let raw = d;
        let d = &io_detail(raw);
        if d.contains("ConnectionRefused") || d.contains("Connection refused") {
            (
                ErrorKind::ConnectionRefused,
                format!("connection refused ({ep})"),
            )
        } else if d.contains("failed to lookup address")
            || d.contains("Failed to resolve")
            || d.contains("Name or service not known")
            || d.contains("No address associated")
        {
            (
                ErrorKind::Dns,
                format!("cannot resolve the host ({ep}): {d}"),
            )
        } else if d.contains("TimedOut") {
            (
                ErrorKind::Timeout,
                format!("connecting timed out ({ep}): {d}"),
            )
        } else if self.uses_tls && is_tls_failure(raw) {
            (ErrorKind::Tls, format!("TLS failure ({ep}): {d}"))
        } else {
            (ErrorKind::Other, format!("I/O error ({ep}): {d}"))
        }
    }

    fn error(&self, kind: ErrorKind, message: String) -> SourceError {
        SourceError::new(kind, SYSTEM, scrub_secrets(&self.secrets, message))
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
        let local = before + (after - before) / 2;
        let offset = remote - local;
        *lock(&self.offset) = Some(offset.as_seconds_f64());
        Ok(offset)
    }

    fn cmd<'h>(&self, h: &'h Handle) -> &'h WithOptions<Client> {
        &h.client
    }

    // ---------------------------------------------------------------------
    // Values
    // ---------------------------------------------------------------------

    /// A stored timestamp (text or, for a sorted set, a score) as a reading
    /// on the local clock.
    fn reading(&self, agent: AgentId, slot: Slot, offset: TimeDelta, score: bool) -> Reading {
        let value = match slot {
            Slot::Value(v) => v,
            Slot::Missing => return Reading::Absent { agent },
            Slot::WrongType(t) => {
                return Reading::Invalid {
                    agent,
                    reason: format!("key holds a {t}, not a string"),
                };
            }
        };
        let parsed = match value_text(&value) {
            Err(reason) => Err(reason.to_string()),
            Ok(text) if score => match text.trim().parse::<f64>() {
                Ok(f) => from_epoch(f).map_err(|e| e.to_string()),
                Err(_) => Err(format!("score is not a number: {text:?}")),
            },
            Ok(text) => parse_text(&text, Some(&self.json_field)).map_err(|e| e.to_string()),
        };
        match parsed.and_then(|t| to_local(t, offset)) {
            Ok(last_seen) => Reading::Heartbeat {
                agent,
                last_seen,
                status: None,
            },
            Err(reason) => Reading::Invalid { agent, reason },
        }
    }

    fn note_skipped(&self, skipped: usize, what: &str) {
        if self.skipped_logged.swap(skipped, Ordering::Relaxed) != skipped && skipped > 0 {
            warn!(
                source = %self.id,
                skipped,
                "{what} whose name is not valid UTF-8 cannot name an agent; skipped."
            );
        }
    }

    // ---------------------------------------------------------------------
    // keys layout
    // ---------------------------------------------------------------------

    async fn scan_keys(
        &self,
        h: &Handle,
        pattern: &KeyPattern,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<(), Stop> {
        let glob = pattern.scan_match();
        let count = u32::try_from(self.batch).unwrap_or(u32::MAX);
        let mut seen: HashSet<AgentId> = HashSet::new();
        let mut skipped = 0usize;
        let mut cursor = String::from("0");
        let mut done = false;
        // Keys of the last SCAN page, not read yet.
        let mut scanned: Vec<Value> = Vec::new();
        // Read, not delivered yet.
        let mut readings: Vec<Reading> = Vec::new();
        loop {
            // SCAN of page n+1, MGET of page n and delivery of page n-1
            // overlap (fred pipelines the commands on the one connection);
            // the SCAN is sent first, so that Redis works on it while the
            // other two are prepared.
            let scan = async {
                if done {
                    return Ok(None);
                }
                self.cmd(h)
                    .scan_page::<Value, _, _>(cursor.clone(), glob.clone(), Some(count), None)
                    .await
                    .map(Some)
            };
            let keys = std::mem::take(&mut scanned);
            let read = async {
                let found = new_keys(pattern, keys, &mut seen, &mut skipped);
                self.read_keys(h, found, offset).await
            };
            let send = sink.send(std::mem::take(&mut readings));
            let (page, read, delivered) = tokio::join!(biased; scan, read, send);
            if !delivered {
                // The core is gone (shutting down): nobody to read for.
                return Ok(());
            }
            readings = read?;
            match page.map_err(|e| self.command_error(e))? {
                Some(page) => {
                    let (next, keys) = scan_reply(page).ok_or_else(|| self.bad_reply("SCAN"))?;
                    scanned = keys;
                    done = next == "0";
                    cursor = next;
                }
                None if readings.is_empty() => break,
                None => {}
            }
        }
        self.note_skipped(skipped, "Keys");
        Ok(())
    }

    /// Readings of scanned keys; keys gone since the SCAN are left out.
    async fn read_keys(
        &self,
        h: &Handle,
        found: Vec<(AgentId, Key)>,
        offset: TimeDelta,
    ) -> Result<Vec<Reading>, Stop> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Key> = found.iter().map(|(_, k)| k.clone()).collect();
        let slots = self.get_strings(h, &keys).await?;
        Ok(found
            .into_iter()
            .zip(slots)
            .filter(|(_, s)| !matches!(s, Slot::Missing))
            .map(|((agent, _), slot)| self.reading(agent, slot, offset, false))
            .collect())
    }

    /// The string values of `keys`, by batched `MGET`. MGET answers nil for a
    /// missing key and for a key of another type alike: those are told apart
    /// with `TYPE` (rare, so not worth a round trip in the common case).
    async fn get_strings(&self, h: &Handle, keys: &[Key]) -> Result<Vec<Slot>, Stop> {
        let values = self.mget(h, keys).await?;
        let mut slots: Vec<Slot> = Vec::with_capacity(values.len());
        let mut nils = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            if v.is_null() {
                nils.push(i);
                slots.push(Slot::Missing);
            } else {
                slots.push(Slot::Value(v));
            }
        }
        if nils.is_empty() {
            return Ok(slots);
        }
        let types = try_join_all(nils.iter().map(|&i| async move {
            self.cmd(h)
                .r#type::<Value, _>(keys[i].clone())
                .await
                .map_err(|e| self.command_error(e))
        }))
        .await?;
        // A key created between MGET and TYPE is read again.
        let mut again = Vec::new();
        for (&i, t) in nils.iter().zip(types) {
            let t = value_text(&t).map(|t| t.to_string()).unwrap_or_default();
            match t.as_str() {
                "none" | "" => {}
                "string" => again.push(i),
                other => slots[i] = Slot::WrongType(other.to_string()),
            }
        }
        if !again.is_empty() {
            let again_keys: Vec<Key> = again.iter().map(|&i| keys[i].clone()).collect();
            for (&i, v) in again.iter().zip(self.mget(h, &again_keys).await?) {
                if !v.is_null() {
                    slots[i] = Slot::Value(v);
                }
            }
        }
        Ok(slots)
    }

    /// `MGET` in batches of `batch` keys, sent together (pipelined).
    async fn mget(&self, h: &Handle, keys: &[Key]) -> Result<Vec<Value>, Stop> {
        let pages = try_join_all(keys.chunks(self.batch).map(|chunk| async move {
            let reply: Value = self
                .cmd(h)
                .mget(chunk.to_vec())
                .await
                .map_err(|e| self.command_error(e))?;
            array_of(reply, chunk.len()).ok_or_else(|| Stop::from(self.bad_reply("MGET")))
        }))
        .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    // ---------------------------------------------------------------------
    // hash and zset layouts
    // ---------------------------------------------------------------------

    /// `HSCAN` (field = agent, value = timestamp) or `ZSCAN` (member = agent,
    /// score = timestamp) page by page; the next page is fetched while the
    /// previous one is delivered.
    async fn scan_pairs(
        &self,
        h: &Handle,
        key: &str,
        zset: bool,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<(), Stop> {
        let (command, want) = if zset {
            ("ZSCAN", "sorted set")
        } else {
            ("HSCAN", "hash")
        };
        let count = self.batch.to_string();
        let mut seen: HashSet<AgentId> = HashSet::new();
        let mut skipped = 0usize;
        let mut cursor = String::from("0");
        let mut done = false;
        // Entries of the last page, not converted yet.
        let mut items: Vec<Value> = Vec::new();
        loop {
            // The next page is requested first; the last one is converted
            // and delivered while Redis works on it.
            let fetch = async {
                if done {
                    return Ok(None);
                }
                self.cmd(h)
                    .custom::<Value, Value>(
                        CustomCommand::new_static(command, ClusterHash::FirstKey, false),
                        vec![
                            key.into(),
                            cursor.as_str().into(),
                            "COUNT".into(),
                            count.as_str().into(),
                        ],
                    )
                    .await
                    .map(Some)
            };
            let page_items = std::mem::take(&mut items);
            let deliver = async {
                let mut readings = Vec::with_capacity(page_items.len() / 2);
                let mut entries = page_items.into_iter();
                while let (Some(name), Some(value)) = (entries.next(), entries.next()) {
                    let Ok(name) = value_text(&name) else {
                        skipped += 1;
                        continue;
                    };
                    if seen.contains(name.as_ref()) {
                        continue;
                    }
                    let agent = AgentId::new(name.as_ref());
                    seen.insert(agent.clone());
                    readings.push(self.reading(agent, Slot::Value(value), offset, zset));
                }
                sink.send(readings).await
            };
            let (page, delivered) = tokio::join!(biased; fetch, deliver);
            if !delivered {
                return Ok(());
            }
            match page.map_err(|e| self.key_error(key, want, e))? {
                Some(page) => {
                    let (next, page_items) =
                        scan_reply(page).ok_or_else(|| self.bad_reply(command))?;
                    items = page_items;
                    done = next == "0";
                    cursor = next;
                }
                None => break,
            }
        }
        self.note_skipped(skipped, if zset { "Members" } else { "Fields" });
        Ok(())
    }

    /// `HMGET` or `ZMSCORE` of `agents` in batches, sent together.
    async fn read_pairs(
        &self,
        h: &Handle,
        key: &str,
        zset: bool,
        agents: &[AgentId],
    ) -> Result<Vec<Slot>, Stop> {
        let (command, want) = if zset {
            ("ZMSCORE", "sorted set")
        } else {
            ("HMGET", "hash")
        };
        let pages = try_join_all(agents.chunks(self.batch).map(|chunk| async move {
            let names: Vec<&str> = chunk.iter().map(AgentId::as_str).collect();
            let reply = if zset {
                self.cmd(h).zmscore::<Value, _, _>(key, names).await
            } else {
                self.cmd(h).hmget::<Value, _, _>(key, names).await
            };
            let reply = reply.map_err(|e| self.key_error(key, want, e))?;
            array_of(reply, chunk.len()).ok_or_else(|| Stop::from(self.bad_reply(command)))
        }))
        .await?;
        Ok(pages
            .into_iter()
            .flatten()
            .map(|v| {
                if v.is_null() {
                    Slot::Missing
                } else {
                    Slot::Value(v)
                }
            })
            .collect())
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
        *lock(&self.offset)
    }
}

impl Drop for RedisSource {
    fn drop(&mut self) {
        // The client is never used again: its tasks may be aborted.
        if let Some(r) = lock(&self.running).take() {
            r.conn.abort();
            r.listener.abort();
        }
    }
}

/// Follow the client's connection events into `link`.
fn follow_link(
    mut errors: broadcast::Receiver<(FredError, Option<Server>)>,
    mut reconnects: broadcast::Receiver<Server>,
    link: watch::Sender<LinkState>,
) -> impl Future<Output = ()> + Send + 'static {
    let set = move |l: Link| {
        link.send_modify(|s| {
            s.epoch += 1;
            s.link = l;
        })
    };
    use broadcast::error::RecvError;
    async move {
        loop {
            tokio::select! {
                biased;
                e = errors.recv() => match e {
                    // A failed connection attempt.
                    Ok((e, None)) => set(Link::Failed(e)),
                    // An established connection broke.
                    Ok((e, Some(_))) => set(Link::Broken(e)),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                r = reconnects.recv() => match r {
                    Ok(_) => set(Link::Up),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
            }
        }
    }
}

/// Keys of a SCAN page not seen before in this scan, with their agents.
/// The key is kept as returned (no copy) for the MGET.
fn new_keys(
    pattern: &KeyPattern,
    keys: Vec<Value>,
    seen: &mut HashSet<AgentId>,
    skipped: &mut usize,
) -> Vec<(AgentId, Key)> {
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let Value::String(key) = key else {
            // Not UTF-8: cannot name an agent.
            *skipped += 1;
            continue;
        };
        if let Some(agent) = pattern.agent(&key) {
            if !seen.contains(agent) {
                let agent = AgentId::new(agent);
                seen.insert(agent.clone());
                found.push((agent, Key::from(key)));
            }
        }
    }
    found
}

/// Until `rx` changes or `max` passes (polling alone if the listener is
/// gone).
async fn wait_change(rx: &mut watch::Receiver<LinkState>, max: Duration) {
    let changed = async {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = changed => {}
        _ = tokio::time::sleep(max) => {}
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A reply value as text; an error for bytes that are not UTF-8.
fn value_text(v: &Value) -> Result<std::borrow::Cow<'_, str>, &'static str> {
    match v {
        Value::String(s) => Ok(std::borrow::Cow::Borrowed(&**s)),
        Value::Bytes(b) => std::str::from_utf8(b)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|_| "value is not valid UTF-8"),
        Value::Integer(i) => Ok(std::borrow::Cow::Owned(i.to_string())),
        Value::Double(f) => Ok(std::borrow::Cow::Owned(f.to_string())),
        Value::Null => Err("no value"),
        _ => Err("value is not a string"),
    }
}

fn to_local(remote: Timestamp, offset: TimeDelta) -> Result<Timestamp, String> {
    remote
        .checked_sub_signed(offset)
        .ok_or_else(|| "timestamp out of range".to_string())
}

/// `[cursor, [items...]]`.
fn scan_reply(v: Value) -> Option<(String, Vec<Value>)> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let items = match parts.pop()? {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        _ => return None,
    };
    let cursor = value_text(&parts.pop()?).ok()?.to_string();
    Some((cursor, items))
}

/// An array reply of exactly `len` values.
fn array_of(v: Value, len: usize) -> Option<Vec<Value>> {
    let values = match v {
        Value::Array(values) => values,
        // Defensive: a one-element reply unwrapped by the client.
        other if len == 1 => vec![other],
        _ => return None,
    };
    (values.len() == len).then_some(values)
}

/// `TIME`: `[seconds, microseconds]`.
fn parse_time(v: Value) -> Option<Timestamp> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [secs, micros] = parts.as_slice() else {
        return None;
    };
    let secs: i64 = value_text(secs).ok()?.parse().ok()?;
    let micros: i64 = value_text(micros).ok()?.parse().ok()?;
    Utc.timestamp_opt(secs, u32::try_from(micros.checked_mul(1000)?).ok()?)
        .single()
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

fn is_auth_reply(d: &str) -> bool {
    d.starts_with("NOAUTH")
        || d.starts_with("WRONGPASS")
        || d.contains("called without any password configured")
        || d.contains("invalid password")
}

/// The useful part of fred's rendering of an `io::Error` (`Os { code: 111,
/// kind: ConnectionRefused, message: "Connection refused" }`, `Custom { kind:
/// InvalidData, error: InvalidCertificate(UnknownIssuer) }`).
fn io_detail(d: &str) -> String {
    let inner = |marker: &str| {
        let start = d.find(marker)? + marker.len();
        let rest = d[start..].trim_end().strip_suffix('}')?.trim_end();
        Some(rest.trim_matches('"').to_string())
    };
    if d.starts_with("Custom {") {
        if let Some(e) = inner("error: ") {
            return e;
        }
    }
    if d.starts_with("Os {") {
        if let Some(m) = inner("message: ") {
            return m;
        }
    }
    d.to_string()
}

/// rustls errors surface from the handshake as I/O errors (`InvalidData`).
fn is_tls_failure(d: &str) -> bool {
    [
        "InvalidData",
        "InvalidCertificate",
        "AlertReceived",
        "HandshakeFailure",
        "CorruptMessage",
        "InvalidMessage",
        "PeerIncompatible",
        "PeerMisbehaved",
        "NoCertificatesPresented",
        "UnknownIssuer",
    ]
    .iter()
    .any(|m| d.contains(m))
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

    #[test]
    fn scan_replies_and_time_are_parsed() {
        let v = Value::Array(vec![
            Value::String("17".into()),
            Value::Array(vec![Value::String("a".into())]),
        ]);
        let (c, items) = scan_reply(v).unwrap();
        assert_eq!(c, "17");
        assert_eq!(items.len(), 1);
        let t = parse_time(Value::Array(vec![
            Value::String("1795813200".into()),
            Value::String("250000".into()),
        ]))
        .unwrap();
        assert_eq!(t.timestamp_micros(), 1_795_813_200_250_000);
        assert!(parse_time(Value::Null).is_none());
    }

    #[test]
    fn io_errors_are_shown_without_their_debug_wrapping() {
        assert_eq!(
            io_detail(
                r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#
            ),
            "Connection refused"
        );
        assert_eq!(
            io_detail("Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }"),
            "InvalidCertificate(UnknownIssuer)"
        );
        assert_eq!(io_detail("Connection closed."), "Connection closed.");
    }

    #[test]
    fn non_utf8_values_are_reported_not_panicked_on() {
        let v = Value::Bytes(vec![0xff, 0xfe].into());
        assert_eq!(value_text(&v).unwrap_err(), "value is not valid UTF-8");
    }
}
