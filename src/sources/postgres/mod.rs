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

mod decode;
mod error;
mod plan;
mod pool;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::Duration;

use chrono::TimeDelta;
use secrecy::SecretString;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgRow};
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::PostgresConfig;
use crate::core::{AgentId, ErrorKind, Reading, SourceId};

use super::common::{ClockOffset, SeenIds, SkipLog};
use super::{PollSource, ScanSink, SourceError};
use decode::{agent_id, reading};
use plan::{Plan, plan};
use pool::{Bind, Idle, Session};

pub use plan::quote_ident;
pub use pool::IDLE_MAX;

const SYSTEM: &str = "postgres";
/// Logged when rows are skipped (see [`SkipLog`]).
const SKIPPED_ROWS: &str = "Rows whose agent id is NULL or empty name no agent; skipped.";

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
    offset: ClockOffset,
    /// Rows skipped because their agent id is NULL or empty.
    skipped: SkipLog,
}

impl PostgresSource {
    /// Check the URL and build the SQL; nothing is connected (connections
    /// are opened by the first read that needs one). TLS follows `sslmode` in the URL (default
    /// `prefer`); with `tls_ca_file` the server's certificate is verified
    /// against that CA, otherwise against the bundled web PKI roots. The
    /// process must have installed a rustls crypto provider.
    pub fn new(id: SourceId, cfg: &PostgresConfig, clock: Clock) -> Result<Self, SourceError> {
        let secrets = cfg.url.password_forms();
        let scrub_err =
            |kind: ErrorKind, msg: String| SourceError::scrubbed(kind, SYSTEM, &secrets, msg);
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
            offset: ClockOffset::default(),
            skipped: SkipLog::default(),
        })
    }

    /// An error of this source, without secrets.
    fn error(&self, kind: ErrorKind, message: String) -> SourceError {
        SourceError::scrubbed(kind, SYSTEM, &self.secrets, message)
    }

    /// Readings of a page. Rows of agents already seen in this read are left
    /// out: those `seen` remembers (a query may return rows in any order),
    /// or, without it (the table form, ordered by id), a row with the id of
    /// the row before it. Returns the readings and the id of the page's last
    /// row.
    fn readings(
        &self,
        rows: &[PgRow],
        offset: TimeDelta,
        mut seen: Option<&mut SeenIds>,
        skipped: &mut usize,
    ) -> Result<(Vec<Reading>, Option<String>), SourceError> {
        let mut out = Vec::with_capacity(rows.len());
        let mut last: Option<Cow<'_, str>> = None;
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
            let again = match seen.as_deref_mut() {
                Some(seen) => !seen.first_time(&id),
                None => last.as_deref() == Some(&*id),
            };
            if !again {
                out.push(reading(row, AgentId::new(id.as_ref()), offset));
            }
            last = Some(id);
        }
        Ok((out, last.map(Cow::into_owned)))
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
        let mut seen = SeenIds::default();
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
            pending = self
                .readings(&rows, offset, Some(&mut seen), &mut skipped)?
                .0;
        }
        self.skipped.note(&self.id, skipped, SKIPPED_ROWS);
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
            // Ordered by id, and each page starts after the last id of the
            // one before: a repeated id is the row before's.
            let (readings, last) = self.readings(&rows, offset, None, &mut skipped)?;
            pending = readings;
            match last {
                Some(last) if full => after = Some(last),
                _ => break,
            }
        }
        self.skipped.note(&self.id, skipped, SKIPPED_ROWS);
        Ok(sink.send(pending).await)
    }
}

impl PollSource for PostgresSource {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// Close the idle connections (each bounded by `timeout`). A later read
    /// opens new ones. (Nothing to do on `connect`: connections are opened
    /// by the first read that needs one, so the source starts whether or not
    /// PostgreSQL is up.)
    async fn disconnect(&self) {
        self.close_idle().await;
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
            let (readings, _) = self.readings(&rows, offset, None, &mut skipped)?;
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
        self.offset.seconds()
    }
}
