//! PostgreSQL heartbeats (Supabase included): a table read with keyset
//! pagination, or any query read through a server-side cursor; point reads
//! with `= ANY($1)`.
//!
//! # Columns
//!
//! - `query:` form: columns are taken **by position**, whatever their names:
//!   1. the agent id (text, varchar, integer or uuid),
//!   2. the heartbeat time,
//!   3. optionally a status (text or boolean; `NULL` = no status),
//!   4. optionally details (text or json) shown with the status.
//!
//!   Position rather than names, because existing tables rarely use our
//!   names (`select agent_id, last_seen_active from agent_heartbeats`) and an
//!   `AS` in the query renames nothing the operator has to learn.
//! - `table:` form: `id_column`, `timestamp_column` and `status_column` are
//!   quoted identifiers (used exactly as written, so case-sensitive);
//!   `table` may be `schema.table`; `where` is added as SQL to every read.
//!
//! Heartbeat times may be `timestamptz`, `timestamp` (taken as UTC),
//! integer, float or numeric epochs (seconds, milliseconds or microseconds,
//! told apart by magnitude), or text (epoch, RFC 3339, naive ISO 8601, JSON
//! with a `last_seen` field). A `NULL` or unreadable time is an
//! [`Reading::Invalid`] for that agent; the scan goes on. A row whose id is
//! `NULL` names no agent and is skipped (logged when their number changes).
//!
//! # Paging
//!
//! - Table form: keyset pagination on the id: `WHERE id::text > $last ORDER
//!   BY id::text LIMIT page_size`, one short read-only transaction per page
//!   (no snapshot is held across pages, so vacuum is never held back). With
//!   an index on the id column (a primary key), each page is an index range
//!   scan, and a row is never read twice in one scan.
//! - Query form: the query cannot be rewritten safely, so it runs once as a
//!   `NO SCROLL` cursor in one read-only transaction and is fetched
//!   `page_size` rows at a time (`FETCH FORWARD`): memory stays bounded by
//!   one page, the rows come from one snapshot (no duplicates, none missed),
//!   and the query is executed once, not once per page as `LIMIT/OFFSET`
//!   would (which is also quadratic and shifts when rows change). The
//!   transaction lasts as long as the scan.
//!
//! In both forms page *n+1* is fetched while page *n* is delivered.
//!
//! # Sessions, poolers and safety
//!
//! Every read is a transaction opened with `BEGIN READ ONLY; SET LOCAL
//! statement_timeout = <timeout>` (one round trip). Read-only and the timeout
//! are set per transaction, not per session, on purpose: through a
//! transaction-mode pooler (PgBouncer, Supabase's pooler on port 6543) a
//! session `SET` would stick to whichever server connection ran it and leak
//! into other clients' transactions (the application's heartbeat writers
//! would start failing with "read-only transaction"), while a `SET LOCAL`
//! ends with its transaction. The same goes for startup parameters, which
//! poolers reject: none beyond `application_name` is sent.
//!
//! Statements are never named prepared statements (they break through a
//! transaction-mode pooler): every statement is unnamed (`persistent(false)`)
//! and runs inside the transaction, which pins one server connection for
//! its duration. The `query` is executed with the extended protocol, which
//! accepts one statement only, so a `;` cannot smuggle a `COMMIT` and escape
//! the read-only transaction.
//!
//! # Connections
//!
//! At most `max_connections` connections, opened by the first read that
//! needs one (the sidecar starts while PostgreSQL is down) and kept for reuse
//! ([`IDLE_MAX`] at most). sqlx's own pool is not used: it retries a refused
//! connection silently until its acquire timeout and then reports only
//! "pool timed out", while an outage must be reported at once and with its
//! cause (`connection refused`, authentication, TLS, DNS). Connecting,
//! waiting for a free connection and every statement are bounded by
//! `timeout` (statements on the server by `statement_timeout`, and here by
//! `timeout` plus a second in case the network, not the server, is stuck).
//! A reused connection that turns out to be dead is replaced once, so a
//! PostgreSQL restart costs no failed scan. A connection that saw an error
//! is closed, never reused.
//!
//! # Clock
//!
//! Every read asks `clock_timestamp()` (the database's clock, DESIGN §2
//! rule 5) and moves each time onto the local clock (`local = stored -
//! offset`), the offset measured at the round trip's midpoint.

use std::collections::{HashMap, HashSet};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgValueFormat};
use sqlx::{AssertSqlSafe, Column, Connection, Row, TypeInfo, ValueRef};
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::{PostgresConfig, PostgresRead, PostgresTable};
use crate::core::timestamp::{from_epoch, parse_text};
use crate::core::{AgentId, ErrorKind, Reading, SourceId, Status, Timestamp};
use crate::secret::scrub_secrets;

use super::push::is_healthy_word;
use super::{PollSource, ScanSink, SourceError};

const SYSTEM: &str = "postgres";

/// Name of the scan cursor (the query form).
const CURSOR: &str = "agent_supervisor_scan";
/// Name given to the query's first column for point reads.
const ID_ALIAS: &str = "agent_supervisor_id";
/// Idle connections older than this are closed rather than reused: poolers,
/// load balancers and firewalls drop idle connections.
pub const IDLE_MAX: Duration = Duration::from_secs(300);
/// Longest status detail kept (a details column may hold a large JSON).
const MAX_DETAIL: usize = 512;

/// The SQL a source runs, built once.
enum Plan {
    Query {
        declare: String,
        fetch: String,
        point: String,
    },
    Table {
        first: String,
        next: String,
        point: String,
    },
}

struct Idle {
    conn: PgConnection,
    since: Instant,
}

pub struct PostgresSource {
    id: SourceId,
    interval: Duration,
    timeout: Duration,
    page_size: usize,
    plan: Plan,
    options: PgConnectOptions,
    /// `host:port/database`, for messages.
    endpoint: String,
    uses_tls: bool,
    /// The URL's password (raw and percent-decoded), scrubbed from every
    /// message as a last line of defence.
    secrets: Vec<SecretString>,
    clock: Clock,
    max_connections: usize,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    offset: Mutex<Option<f64>>,
    skipped_logged: AtomicUsize,
}

/// A connection held for one read, with its permit. Dropped without
/// [`Session::release`], the connection is closed (its state is unknown).
struct Session<'a> {
    src: &'a PostgresSource,
    conn: PgConnection,
    _permit: SemaphorePermit<'a>,
}

impl PostgresSource {
    /// Check the URL and build the SQL; nothing is connected (see
    /// [`Self::connect`]). TLS follows `sslmode` in the URL (default
    /// `prefer`); with `tls_ca_file` the server's certificate is verified
    /// against that CA, otherwise against the bundled web PKI roots. The
    /// process must have installed a rustls crypto provider.
    pub fn new(id: SourceId, cfg: &PostgresConfig, clock: Clock) -> Result<Self, SourceError> {
        let secrets = cfg.url.password_forms();
        let scrub_err = |kind: ErrorKind, msg: String| {
            SourceError::new(kind, SYSTEM, scrub_secrets(&secrets, msg))
        };
        let mut options = PgConnectOptions::from_str(cfg.url.expose()).map_err(|e| {
            scrub_err(
                ErrorKind::Other,
                format!("cannot use URL {}: {e}", cfg.url.redacted()),
            )
        })?;
        options = options
            .application_name("agent-supervisor")
            // Poolers reject startup parameters they do not know.
            .extra_float_digits(None)
            // Never a named prepared statement.
            .statement_cache_capacity(0);
        if let Some(ca) = &cfg.tls_ca_file {
            options = options.ssl_root_cert(ca);
        }
        let uses_tls = !matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::Disable);
        let endpoint = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        let page_size = cfg.page_size.get();
        Ok(Self {
            id,
            interval: cfg.interval,
            timeout: cfg.timeout,
            page_size,
            plan: plan(&cfg.read, page_size),
            options,
            endpoint,
            uses_tls,
            secrets,
            clock,
            max_connections: cfg.max_connections,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(cfg.max_connections),
            offset: Mutex::new(None),
            skipped_logged: AtomicUsize::new(0),
        })
    }

    /// Nothing to do: connections are opened by the first read that needs
    /// one, so the source starts whether or not PostgreSQL is up. Kept for
    /// symmetry with the other sources.
    pub fn connect(&self) {}

    /// Close the idle connections (each bounded by `timeout`). A later read
    /// opens new ones.
    pub async fn disconnect(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        for i in idle {
            if tokio::time::timeout(self.timeout, i.conn.close())
                .await
                .is_err()
            {
                debug!(source = %self.id, "Closing a connection took too long; dropped.");
            }
        }
    }

    /// Client-side bound on one statement: the server's `statement_timeout`
    /// should answer first; this catches a stuck network.
    fn statement_deadline(&self) -> Duration {
        self.timeout + Duration::from_secs(1)
    }

    /// A connection in a fresh read-only transaction.
    async fn open(&self) -> Result<Session<'_>, SourceError> {
        let permit = tokio::time::timeout(self.timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                self.error(
                    ErrorKind::Timeout,
                    format!(
                        "all {} connection(s) to {} stayed busy for {}",
                        self.max_connections,
                        self.endpoint,
                        humantime::format_duration(self.timeout)
                    ),
                )
            })?
            .map_err(|_| self.error(ErrorKind::Other, "source closed".into()))?;
        loop {
            let idle = lock(&self.idle).pop();
            let Some(idle) = idle else {
                break;
            };
            if idle.since.elapsed() > IDLE_MAX {
                continue;
            }
            let mut conn = idle.conn;
            match self.begin(&mut conn).await {
                Ok(()) => {
                    return Ok(Session {
                        src: self,
                        conn,
                        _permit: permit,
                    });
                }
                // Most likely closed by the server or a pooler meanwhile:
                // try the next one, or a new connection.
                Err(e) => {
                    debug!(source = %self.id, error = %e, "A reused connection failed; replaced.")
                }
            }
        }
        let mut conn =
            match tokio::time::timeout(self.timeout, PgConnection::connect_with(&self.options))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(self.sql_error(&e)),
                Err(_) => {
                    return Err(self.error(
                        ErrorKind::Timeout,
                        format!(
                            "no connection to {} within {}",
                            self.endpoint,
                            humantime::format_duration(self.timeout)
                        ),
                    ));
                }
            };
        self.begin(&mut conn).await?;
        Ok(Session {
            src: self,
            conn,
            _permit: permit,
        })
    }

    async fn begin(&self, conn: &mut PgConnection) -> Result<(), SourceError> {
        let sql = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
            self.timeout.as_millis().max(1)
        );
        self.bounded(sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn))
            .await
            .map(|_| ())
    }

    /// A statement bounded by [`Self::statement_deadline`], errors mapped.
    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.statement_deadline(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.sql_error(&e)),
            Err(_) => Err(self.error(
                ErrorKind::Timeout,
                format!(
                    "no answer within {} ({})",
                    humantime::format_duration(self.timeout),
                    self.endpoint
                ),
            )),
        }
    }

    fn error(&self, kind: ErrorKind, message: String) -> SourceError {
        SourceError::new(kind, SYSTEM, scrub_secrets(&self.secrets, message))
    }

    /// An error from sqlx as a kind and a message without secrets.
    fn sql_error(&self, e: &sqlx::Error) -> SourceError {
        let ep = &self.endpoint;
        let (kind, message) = match e {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let msg = db.message();
                match code.as_str() {
                    "28P01" | "28000" => (
                        ErrorKind::Auth,
                        format!("authentication failed ({ep}): {msg}"),
                    ),
                    "57014" => (
                        ErrorKind::Timeout,
                        format!(
                            "statement timed out after {} ({ep}): {msg}",
                            humantime::format_duration(self.timeout)
                        ),
                    ),
                    "42P01" => (
                        ErrorKind::Other,
                        format!("table not found ({ep}): {msg}; check `table` or `query`"),
                    ),
                    "42703" => (
                        ErrorKind::Other,
                        format!("column not found ({ep}): {msg}; check the column names"),
                    ),
                    "25006" => (
                        ErrorKind::Other,
                        format!(
                            "the read tried to write and was refused: it runs read-only ({ep}): {msg}"
                        ),
                    ),
                    "08P01" => (ErrorKind::Protocol, format!("protocol error ({ep}): {msg}")),
                    _ => (ErrorKind::Other, format!("{msg} (SQLSTATE {code}) ({ep})")),
                }
            }
            sqlx::Error::Io(io) => self.io_error(io),
            sqlx::Error::Tls(t) => (ErrorKind::Tls, format!("TLS failure ({ep}): {t}")),
            sqlx::Error::Protocol(m) => {
                (ErrorKind::Protocol, format!("protocol error ({ep}): {m}"))
            }
            sqlx::Error::ColumnDecode { index, source } => (
                ErrorKind::BadValue,
                format!("cannot decode column {index} ({ep}): {source}"),
            ),
            other => {
                let text = other.to_string();
                if self.uses_tls && is_tls_failure(&text) {
                    (ErrorKind::Tls, format!("TLS failure ({ep}): {text}"))
                } else {
                    (ErrorKind::Other, format!("{text} ({ep})"))
                }
            }
        };
        self.error(kind, message)
    }

    fn io_error(&self, e: &std::io::Error) -> (ErrorKind, String) {
        use std::io::ErrorKind as Io;
        let ep = &self.endpoint;
        let text = e.to_string();
        let debug = format!("{e:?}");
        match e.kind() {
            Io::ConnectionRefused => (
                ErrorKind::ConnectionRefused,
                format!("connection refused ({ep})"),
            ),
            Io::TimedOut => (ErrorKind::Timeout, format!("connecting timed out ({ep})")),
            _ if text.contains("failed to lookup address")
                || text.contains("Name or service not known")
                || text.contains("No address associated")
                || text.contains("nodename nor servname") =>
            {
                (
                    ErrorKind::Dns,
                    format!("cannot resolve the host ({ep}): {text}"),
                )
            }
            _ if self.uses_tls && (is_tls_failure(&text) || is_tls_failure(&debug)) => {
                (ErrorKind::Tls, format!("TLS failure ({ep}): {text}"))
            }
            Io::UnexpectedEof | Io::ConnectionReset | Io::BrokenPipe | Io::ConnectionAborted => (
                ErrorKind::Other,
                format!("connection to {ep} closed: {text}"),
            ),
            _ => (ErrorKind::Other, format!("I/O error ({ep}): {text}")),
        }
    }

    // ---------------------------------------------------------------------
    // Rows
    // ---------------------------------------------------------------------

    /// Readings of a page; rows of agents already seen in this read are
    /// left out. Returns the readings and the id of the page's last row.
    fn readings(
        &self,
        rows: &[PgRow],
        offset: TimeDelta,
        seen: &mut HashSet<AgentId>,
        skipped: &mut usize,
    ) -> Result<(Vec<Reading>, Option<String>), SourceError> {
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows {
            if row.columns().len() < 2 {
                return Err(self.error(
                    ErrorKind::BadValue,
                    format!(
                        "the query returns {} column(s); it must return the agent id, then the \
                         heartbeat time ({})",
                        row.columns().len(),
                        self.endpoint
                    ),
                ));
            }
            let id = agent_id(row).map_err(|e| {
                self.error(
                    ErrorKind::BadValue,
                    format!("first column (agent id): {e} ({})", self.endpoint),
                )
            })?;
            let Some(id) = id else {
                *skipped += 1;
                continue;
            };
            last = Some(id.clone());
            if seen.contains(id.as_str()) {
                continue;
            }
            let agent = AgentId::new(id.as_str());
            seen.insert(agent.clone());
            out.push(reading(row, agent, offset));
        }
        Ok((out, last))
    }

    fn note_skipped(&self, skipped: usize) {
        if self.skipped_logged.swap(skipped, Ordering::Relaxed) != skipped && skipped > 0 {
            warn!(
                source = %self.id,
                skipped,
                "Rows whose agent id is NULL or empty name no agent; skipped."
            );
        }
    }

    async fn scan_query(
        &self,
        s: &mut Session<'_>,
        declare: &str,
        fetch: &str,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<bool, SourceError> {
        s.execute(declare).await?;
        let mut seen = HashSet::new();
        let mut skipped = 0usize;
        let mut pending: Vec<Reading> = Vec::new();
        let mut done = false;
        while !done {
            let (rows, delivered) =
                tokio::join!(biased; s.fetch(fetch, None), sink.send(std::mem::take(&mut pending)));
            if !delivered {
                return Ok(false);
            }
            let rows = rows?;
            done = rows.len() < self.page_size;
            pending = self.readings(&rows, offset, &mut seen, &mut skipped)?.0;
        }
        self.note_skipped(skipped);
        Ok(sink.send(pending).await)
    }

    async fn scan_table(
        &self,
        s: &mut Session<'_>,
        first: &str,
        next: &str,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<bool, SourceError> {
        let mut seen = HashSet::new();
        let mut skipped = 0usize;
        let mut pending: Vec<Reading> = Vec::new();
        let mut after: Option<String> = None;
        let mut page = 0usize;
        loop {
            let fetch = async {
                if page > 0 {
                    // One short transaction per page.
                    s.renew().await?;
                }
                match after.clone() {
                    None => s.fetch(first, None).await,
                    Some(last) => s.fetch(next, Some(Bind::Text(last))).await,
                }
            };
            let (rows, delivered) =
                tokio::join!(biased; fetch, sink.send(std::mem::take(&mut pending)));
            if !delivered {
                return Ok(false);
            }
            let rows = rows?;
            page += 1;
            let full = rows.len() >= self.page_size;
            let (readings, last) = self.readings(&rows, offset, &mut seen, &mut skipped)?;
            pending = readings;
            match last {
                Some(last) if full => after = Some(last),
                _ => break,
            }
        }
        self.note_skipped(skipped);
        Ok(sink.send(pending).await)
    }
}

/// A parameter of a statement.
enum Bind {
    Text(String),
    TextArray(Vec<String>),
}

impl Session<'_> {
    /// `clock_timestamp()`, and the offset of the database's clock from ours
    /// (remote - local) at the round trip's midpoint. Remembered for
    /// `clock_offset_seconds`.
    async fn measure_offset(&mut self) -> Result<TimeDelta, SourceError> {
        let src = self.src;
        let before = src.clock.now();
        let row = src
            .bounded(
                sqlx::query("SELECT clock_timestamp()")
                    .persistent(false)
                    .fetch_one(&mut self.conn),
            )
            .await?;
        let after = src.clock.now();
        let remote: DateTime<Utc> = row.try_get(0).map_err(|e| src.sql_error(&e))?;
        let local = before + (after - before) / 2;
        let offset = remote - local;
        *lock(&src.offset) = Some(offset.as_seconds_f64());
        Ok(offset)
    }

    async fn execute(&mut self, sql: &str) -> Result<(), SourceError> {
        let q = sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false);
        self.src
            .bounded(q.execute(&mut self.conn))
            .await
            .map(|_| ())
    }

    async fn fetch(&mut self, sql: &str, bind: Option<Bind>) -> Result<Vec<PgRow>, SourceError> {
        let mut q = sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false);
        match bind {
            None => {}
            Some(Bind::Text(t)) => q = q.bind(t),
            Some(Bind::TextArray(a)) => q = q.bind(a),
        }
        self.src.bounded(q.fetch_all(&mut self.conn)).await
    }

    /// End the transaction and start a new one (one round trip).
    async fn renew(&mut self) -> Result<(), SourceError> {
        let sql = format!(
            "COMMIT; BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
            self.src.timeout.as_millis().max(1)
        );
        self.src
            .bounded(sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut self.conn))
            .await
            .map(|_| ())
    }

    /// End the transaction and keep the connection for the next read.
    async fn release(mut self) -> Result<(), SourceError> {
        self.src
            .bounded(sqlx::raw_sql("COMMIT").execute(&mut self.conn))
            .await?;
        lock(&self.src.idle).push(Idle {
            conn: self.conn,
            since: Instant::now(),
        });
        Ok(())
    }
}

impl PollSource for PostgresSource {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn scan(&self, sink: &mut ScanSink) -> Result<(), SourceError> {
        let mut s = self.open().await?;
        let offset = s.measure_offset().await?;
        let delivered = match &self.plan {
            Plan::Query { declare, fetch, .. } => {
                self.scan_query(&mut s, declare, fetch, offset, sink)
                    .await?
            }
            Plan::Table { first, next, .. } => {
                self.scan_table(&mut s, first, next, offset, sink).await?
            }
        };
        if delivered {
            s.release().await?;
        }
        Ok(())
    }

    async fn point_read(&self, agents: &[AgentId]) -> Result<Vec<Reading>, SourceError> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let point = match &self.plan {
            Plan::Query { point, .. } | Plan::Table { point, .. } => point,
        };
        let mut s = self.open().await?;
        let offset = s.measure_offset().await?;
        let mut found: HashMap<AgentId, Reading> = HashMap::new();
        let mut skipped = 0usize;
        for chunk in agents.chunks(self.page_size) {
            let ids: Vec<String> = chunk.iter().map(|a| a.as_str().to_string()).collect();
            let rows = s.fetch(point, Some(Bind::TextArray(ids))).await?;
            let mut seen = found.keys().cloned().collect();
            let (readings, _) = self.readings(&rows, offset, &mut seen, &mut skipped)?;
            for r in readings {
                found.entry(r.agent().clone()).or_insert(r);
            }
        }
        s.release().await?;
        Ok(agents
            .iter()
            .map(|a| {
                found
                    .get(a)
                    .cloned()
                    .unwrap_or(Reading::Absent { agent: a.clone() })
            })
            .collect())
    }

    fn clock_offset_seconds(&self) -> Option<f64> {
        *lock(&self.offset)
    }
}

// -------------------------------------------------------------------------
// SQL
// -------------------------------------------------------------------------

/// `"name"`, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn plan(read: &PostgresRead, page_size: usize) -> Plan {
    match read {
        PostgresRead::Query(query) => Plan::Query {
            declare: format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {query}"),
            fetch: format!("FETCH FORWARD {page_size} FROM {CURSOR}"),
            point: format!(
                "SELECT * FROM ({query}\n) AS agent_supervisor_q({ID_ALIAS}) \
                 WHERE {ID_ALIAS}::text = ANY($1)"
            ),
        },
        PostgresRead::Table(t) => table_plan(t, page_size),
    }
}

fn table_plan(t: &PostgresTable, page_size: usize) -> Plan {
    let table = match &t.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&t.table)),
        None => quote_ident(&t.table),
    };
    let id = quote_ident(&t.id_column);
    let mut columns = format!("{id}::text, {}", quote_ident(&t.timestamp_column));
    if let Some(status) = &t.status_column {
        columns.push_str(", ");
        columns.push_str(&quote_ident(status));
        // As text: a custom (enum) type would make sqlx look the type up
        // mid-statement, which discards the unnamed statement; booleans
        // become `true`/`false`, both understood.
        columns.push_str("::text");
    }
    let mut cond = format!("{id} IS NOT NULL");
    if let Some(filter) = &t.filter {
        cond = format!("({filter}\n) AND {cond}");
    }
    Plan::Table {
        first: format!(
            "SELECT {columns} FROM {table} WHERE {cond} ORDER BY {id}::text LIMIT {page_size}"
        ),
        next: format!(
            "SELECT {columns} FROM {table} WHERE {cond} AND {id}::text > $1 \
             ORDER BY {id}::text LIMIT {page_size}"
        ),
        point: format!("SELECT {columns} FROM {table} WHERE {cond} AND {id}::text = ANY($1)"),
    }
}

// -------------------------------------------------------------------------
// Values
// -------------------------------------------------------------------------

fn type_name(row: &PgRow, i: usize) -> String {
    row.columns()
        .get(i)
        .map(|c| c.type_info().name().to_string())
        .unwrap_or_default()
}

fn is_null(row: &PgRow, i: usize) -> bool {
    row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true)
}

fn is_text(ty: &str) -> bool {
    matches!(
        ty,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN"
    )
}

/// The raw binary value of column `i`.
fn raw_bytes(row: &PgRow, i: usize) -> Result<&[u8], String> {
    let v = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if v.format() != PgValueFormat::Binary {
        return Err("unexpected text-format value".into());
    }
    v.as_bytes().map_err(|e| e.to_string())
}

/// The agent id in column 0; `None` for NULL or empty.
fn agent_id(row: &PgRow) -> Result<Option<String>, String> {
    if is_null(row, 0) {
        return Ok(None);
    }
    let ty = type_name(row, 0);
    let id = match ty.as_str() {
        t if is_text(t) => row
            .try_get_unchecked::<String, _>(0)
            .map_err(|e| e.to_string())?,
        "INT2" => row
            .try_get::<i16, _>(0)
            .map_err(|e| e.to_string())?
            .to_string(),
        "INT4" => row
            .try_get::<i32, _>(0)
            .map_err(|e| e.to_string())?
            .to_string(),
        "INT8" => row
            .try_get::<i64, _>(0)
            .map_err(|e| e.to_string())?
            .to_string(),
        "UUID" => uuid_text(raw_bytes(row, 0)?).ok_or("not a valid uuid")?,
        other => {
            return Err(format!(
                "a {other} cannot name an agent; cast it to text in the query (`::text`)"
            ));
        }
    };
    Ok((!id.is_empty()).then_some(id))
}

fn uuid_text(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// One row as a reading.
fn reading(row: &PgRow, agent: AgentId, offset: TimeDelta) -> Reading {
    let last_seen = match timestamp(row, 1).and_then(|t| {
        t.checked_sub_signed(offset)
            .ok_or_else(|| "timestamp out of range".to_string())
    }) {
        Ok(t) => t,
        Err(reason) => return Reading::Invalid { agent, reason },
    };
    match status(row) {
        Ok(status) => Reading::Heartbeat {
            agent,
            last_seen,
            status,
        },
        Err(reason) => Reading::Invalid { agent, reason },
    }
}

/// The heartbeat time in column `i`, on the database's clock.
fn timestamp(row: &PgRow, i: usize) -> Result<Timestamp, String> {
    if is_null(row, i) {
        return Err("no heartbeat time (NULL)".into());
    }
    let e = |e: sqlx::Error| e.to_string();
    let ty = type_name(row, i);
    match ty.as_str() {
        "TIMESTAMPTZ" => row.try_get::<DateTime<Utc>, _>(i).map_err(e),
        "TIMESTAMP" => row
            .try_get::<NaiveDateTime, _>(i)
            .map(|t| Utc.from_utc_datetime(&t))
            .map_err(e),
        "INT2" => epoch_int(i64::from(row.try_get::<i16, _>(i).map_err(e)?)),
        "INT4" => epoch_int(i64::from(row.try_get::<i32, _>(i).map_err(e)?)),
        "INT8" => epoch_int(row.try_get::<i64, _>(i).map_err(e)?),
        "FLOAT4" => {
            from_epoch(f64::from(row.try_get::<f32, _>(i).map_err(e)?)).map_err(|e| e.to_string())
        }
        "FLOAT8" => from_epoch(row.try_get::<f64, _>(i).map_err(e)?).map_err(|e| e.to_string()),
        "NUMERIC" => {
            let f = numeric_f64(raw_bytes(row, i)?).ok_or("not a finite number")?;
            from_epoch(f).map_err(|e| e.to_string())
        }
        t if is_text(t) => {
            let s = row.try_get_unchecked::<String, _>(i).map_err(e)?;
            parse_text(&s, None).map_err(|e| e.to_string())
        }
        "JSON" | "JSONB" => {
            let s = json_text(raw_bytes(row, i)?, &ty)?;
            parse_text(&s, None).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "a {other} is not a heartbeat time; use timestamptz, an epoch number or text"
        )),
    }
}

/// Integer epochs, s/ms/µs by magnitude (exactly, not through a float).
fn epoch_int(n: i64) -> Result<Timestamp, String> {
    parse_text(&n.to_string(), None).map_err(|e| e.to_string())
}

/// The optional status (column 2) and details (column 3).
fn status(row: &PgRow) -> Result<Option<Status>, String> {
    let n = row.columns().len();
    if n < 3 || is_null(row, 2) {
        return Ok(None);
    }
    let ty = type_name(row, 2);
    let (healthy, word) = match ty.as_str() {
        "BOOL" => {
            let b = row.try_get::<bool, _>(2).map_err(|e| e.to_string())?;
            (b, b.to_string())
        }
        t if is_text(t) => {
            let s = row
                .try_get_unchecked::<String, _>(2)
                .map_err(|e| e.to_string())?;
            (is_healthy_word(&s), s)
        }
        other => {
            return Err(format!(
                "a {other} status cannot be read; use text or boolean (cast with `::text`)"
            ));
        }
    };
    let detail = if n >= 4 && !is_null(row, 3) {
        let ty = type_name(row, 3);
        match ty.as_str() {
            t if is_text(t) => row.try_get_unchecked::<String, _>(3).ok(),
            "JSON" | "JSONB" => raw_bytes(row, 3).ok().and_then(|b| json_text(b, &ty).ok()),
            _ => None,
        }
    } else {
        None
    };
    let detail = match detail.filter(|d| !d.is_empty()) {
        Some(d) => format!("{word}: {}", truncate(&d, MAX_DETAIL)),
        None => word,
    };
    Ok(Some(Status { healthy, detail }))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A binary `json` (text) or `jsonb` (version byte 1, then text) value.
fn json_text(b: &[u8], ty: &str) -> Result<String, String> {
    let b = if ty == "JSONB" {
        match b.split_first() {
            Some((1, rest)) => rest,
            _ => return Err("unsupported jsonb format".into()),
        }
    } else {
        b
    };
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| "json is not valid UTF-8".into())
}

/// A binary `numeric` as a float: `ndigits, weight, sign, dscale` then
/// base-10000 digits. `None` for NaN, infinities and malformed values.
fn numeric_f64(b: &[u8]) -> Option<f64> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(2 * i)?, *b.get(2 * i + 1)?]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return None,
    };
    let mut value = 0f64;
    for k in 0..ndigits {
        let digit = f64::from(word(4 + k)?);
        let power = weight - i32::try_from(k).ok()?;
        value += digit * 10_000f64.powi(power);
    }
    value
        .is_finite()
        .then_some(if negative { -value } else { value })
}

// -------------------------------------------------------------------------
// Small helpers
// -------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// rustls errors surface from the handshake in several shapes.
fn is_tls_failure(d: &str) -> bool {
    [
        "InvalidCertificate",
        "invalid peer certificate",
        "AlertReceived",
        "HandshakeFailure",
        "CorruptMessage",
        "InvalidMessage",
        "PeerIncompatible",
        "PeerMisbehaved",
        "UnknownIssuer",
        "NotValidForName",
        "certificate",
        "does not support TLS",
        "TLS",
        "tls",
    ]
    .iter()
    .any(|m| d.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("agent_id"), "\"agent_id\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn table_plan_quotes_schema_table_and_columns() {
        let t = PostgresTable {
            schema: Some("public".into()),
            table: "Agent State".into(),
            id_column: "agent_id".into(),
            timestamp_column: "updated_at".into(),
            status_column: Some("status".into()),
            filter: Some("kind = 'x'".into()),
        };
        let Plan::Table { first, next, point } = table_plan(&t, 100) else {
            panic!()
        };
        assert_eq!(
            first,
            "SELECT \"agent_id\"::text, \"updated_at\", \"status\"::text FROM \"public\".\"Agent State\" \
             WHERE (kind = 'x'\n) AND \"agent_id\" IS NOT NULL ORDER BY \"agent_id\"::text LIMIT 100"
        );
        assert!(next.contains("\"agent_id\"::text > $1"), "{next}");
        assert!(point.ends_with("\"agent_id\"::text = ANY($1)"), "{point}");
    }

    #[test]
    fn numeric_binary_values_are_decoded() {
        // 1795813200.25: digits 17 9581 3200 . 2500, weight 2.
        let mut b = Vec::new();
        for w in [4u16, 2, 0, 2, 17, 9581, 3200, 2500] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_f64(&b), Some(1_795_813_200.25));
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert_eq!(numeric_f64(&nan), None);
        assert_eq!(numeric_f64(&[0, 1]), None);
    }

    #[test]
    fn uuids_are_formatted_like_postgres_does() {
        let b: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            uuid_text(&b).unwrap(),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }
}
