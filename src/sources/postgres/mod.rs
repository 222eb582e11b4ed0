//! PostgreSQL heartbeats (Supabase included): a table read in keyset pages,
//! or any query read in one statement, both in binary `COPY` format; point
//! reads with `= ANY($1)`.
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
//! # Reading: `COPY`, described first
//!
//! Rows are read with `COPY (<select>) TO STDOUT (FORMAT binary)`: the
//! server streams them, each as its fields' binary values
//! (`copy::CopyParser`), with no row object, type check or stream step per
//! row on this side. That is what lets a million rows be read about as fast
//! as `psql` copies them (docs/benchmarks.md); a query result read row by
//! row through sqlx took twice as long. A `COPY` carries no column types, so
//! each read first *describes* its select: `SELECT q.* FROM (VALUES (1))
//! LEFT JOIN (<select>) AS q ON false`, one row of NULLs with the select's
//! column types, which the planner answers without running the select
//! (the joined side is provably empty). The description and the `COPY` run
//! in one transaction, whose lock on the tables keeps their columns as
//! described.
//!
//! - Table form: keyset pages on the id, `COPY (SELECT .. WHERE id::text >
//!   '<last id>' ORDER BY id::text LIMIT page_size)`, one short read-only
//!   transaction per page (described again in it, in the same round trip as
//!   the `COMMIT`/`BEGIN`): no snapshot is held across pages, so vacuum is
//!   never held back. With an index on the id column (a primary key), each
//!   page is an index range scan, and a row is never read twice in one
//!   scan. The last id goes in as an escape-string literal (`E'..'`, quotes
//!   and backslashes doubled), read the same whatever
//!   `standard_conforming_strings` is.
//! - Query form: the query cannot be rewritten safely, so it runs once, as
//!   one `COPY`, in one read-only transaction: the rows come from one
//!   snapshot (no duplicates, none missed). The server streams them as fast
//!   as they are read and waits (TCP back-pressure) while the core is busy,
//!   so memory stays bounded by a few messages of readings (at most
//!   [`SCAN_BATCH`] each), each delivered while the next is read;
//!   `page_size` does not matter here. The transaction lasts as long as the
//!   scan.
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
//! or a simple query, and runs inside the transaction, which pins one
//! server connection for its duration.
//!
//! A `COPY` is a simple query, which would run several statements. So each
//! read's SQL is first described with the extended protocol, which accepts
//! one statement only: a `;` in the `query` or `where` (at the top level:
//! it is a syntax error inside the parentheses they are read in) cannot
//! smuggle a `COMMIT` and escape the read-only transaction. The `COPY`
//! holds the same SQL in the same parentheses, so it is one statement too.
//!
//! # Time limits
//!
//! Connecting, waiting for a free connection and every statement are
//! bounded by `timeout`: on the server by `statement_timeout`, and here by
//! `timeout` plus a second in case the network, not the server, is stuck.
//! A table page is one statement. The query form's `COPY` is the whole
//! scan, so it is bounded differently. Here each wait for more rows is
//! bounded by `timeout` (the server sends 8 KiB at a time), while time
//! spent delivering rows to a busy core does not count. On the server, the
//! `COPY` waits for a lock at most `timeout` (`lock_timeout`), and is
//! cancelled after ten intervals (at least `timeout`): a backstop, not a
//! pace. Time the core spends on what it was sent counts on the server
//! (the `COPY` waits meanwhile), and at a million agents a busy core can
//! stretch a scan past its interval; failing it then would make every
//! agent unknown.
//!
//! # Connections
//!
//! At most `max_connections` connections, opened by the first read that
//! needs one (the sidecar starts while PostgreSQL is down) and kept for reuse
//! ([`IDLE_MAX`] at most). sqlx's own pool is not used: it retries a refused
//! connection silently until its acquire timeout and then reports only
//! "pool timed out", while an outage must be reported at once and with its
//! cause (`connection refused`, authentication, TLS, DNS). A reused
//! connection that turns out to be dead is replaced once, so a
//! PostgreSQL restart costs no failed scan. A connection that saw an error
//! is closed, never reused.
//!
//! # Clock
//!
//! Every read asks `clock_timestamp()` (the database's clock, DESIGN §2
//! rule 5) and moves each time onto the local clock (`local = stored -
//! offset`), the offset measured at the round trip's midpoint.

mod copy;
mod decode;
mod error;
mod plan;
mod pool;

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgRow};
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::PostgresConfig;
use crate::core::{AgentId, ErrorKind, Reading, SourceId};
use crate::driver::SCAN_BATCH;

use super::common::{ClockOffset, SeenIds, SkipLog};
use super::{PollSource, ScanSink, SourceError};
use bytes::Bytes;
use copy::{CopyError, CopyParser, FeedError, Values};
use decode::{Columns, values};
use plan::{Plan, TablePlan, plan};
use pool::{Idle, Rows, Session};

pub use plan::quote_ident;
pub use pool::IDLE_MAX;

const SYSTEM: &str = "postgres";
/// The query form's scan is cancelled by the server after this many
/// intervals: time the core spends on what it was sent counts (the server
/// waits meanwhile), so a large fleet's scan may take several intervals
/// when the core is busy; ten is a scan that has gone wrong.
const SCAN_INTERVALS: u32 = 10;
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
    /// Agents the last query-form scan delivered, to size the next one's
    /// set of seen ids.
    last_scan_agents: AtomicUsize,
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
            last_scan_agents: AtomicUsize::new(0),
        })
    }

    /// An error of this source, without secrets.
    fn error(&self, kind: ErrorKind, message: String) -> SourceError {
        SourceError::scrubbed(kind, SYSTEM, &self.secrets, message)
    }

    /// The server's bound on the scan statement of the query form:
    /// [`SCAN_INTERVALS`] intervals, and at least `timeout` (see the module
    /// doc).
    fn scan_limit(&self) -> Duration {
        self.timeout.max(self.interval * SCAN_INTERVALS)
    }

    /// The columns of the rows `describe` describes.
    fn columns(&self, described: &PgRow) -> Result<Columns, SourceError> {
        Columns::of(described)
            .map_err(|e| self.error(ErrorKind::BadValue, format!("{e} ({})", self.endpoint)))
    }

    async fn scan_query(
        &self,
        s: &mut Session<'_>,
        describe: &str,
        copy: &str,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<bool, SourceError> {
        let columns = self.columns(&s.describe(describe).await?)?;
        let limit = self.scan_limit();
        s.scan_limits(limit).await?;
        let seen = SeenIds::with_capacity(self.last_scan_agents.load(Ordering::Relaxed));
        let mut reader = Reader::new(self, columns, offset, Dedupe::Seen(seen));
        let mut data = s.copy(copy).await?.limited(limit);
        let mut pending = Batches::default();
        loop {
            let (page, delivered) = tokio::join!(
                biased;
                reader.page(&mut data, SCAN_BATCH),
                pending.deliver(sink)
            );
            if !delivered {
                return Ok(false);
            }
            let page = page?;
            pending = page.batches;
            if page.ended {
                break;
            }
        }
        if let Dedupe::Seen(seen) = &reader.dedupe {
            self.last_scan_agents.store(seen.count(), Ordering::Relaxed);
        }
        self.skipped.note(&self.id, reader.skipped, SKIPPED_ROWS);
        Ok(pending.deliver(sink).await)
    }

    async fn scan_table(
        &self,
        s: &mut Session<'_>,
        plan: &TablePlan,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<bool, SourceError> {
        let columns = self.columns(&s.describe(&plan.describe).await?)?;
        // Ordered by id: a repeated id is the row before's, and each page
        // starts after the last id of the one before.
        let mut reader = Reader::new(self, columns, offset, Dedupe::Ordered(None));
        let mut pending = Batches::default();
        let mut after: Option<String> = None;
        loop {
            let fetch = async {
                if after.is_some() {
                    // One short transaction per page, its columns described
                    // again in it (the table may have changed since).
                    let described = s.renew_and_describe(&plan.describe).await?;
                    reader.restart(self.columns(&described)?);
                }
                let mut data = s.copy(&plan.page(after.as_deref())).await?;
                // The statement's `LIMIT` ends the page.
                reader.page(&mut data, usize::MAX).await
            };
            let (page, delivered) =
                tokio::join!(biased; fetch, std::mem::take(&mut pending).deliver(sink));
            if !delivered {
                return Ok(false);
            }
            let page = page?;
            pending = page.batches;
            if page.rows < self.page_size {
                break;
            }
            // The page's `LIMIT` was reached: the next starts after its last
            // id (empty ids, skipped, sort first).
            after = Some(reader.last_id().to_string());
        }
        self.skipped.note(&self.id, reader.skipped, SKIPPED_ROWS);
        Ok(pending.deliver(sink).await)
    }
}

/// Readings in messages of at most [`SCAN_BATCH`], as the core's lane is
/// sized for: a table page of `page_size` rows, read whole before it is
/// delivered, is several.
#[derive(Default)]
struct Batches(Vec<Vec<Reading>>);

impl Batches {
    fn push(&mut self, reading: Reading) {
        match self.0.last_mut() {
            Some(last) if last.len() < SCAN_BATCH => last.push(reading),
            _ => {
                let mut batch = Vec::with_capacity(SCAN_BATCH);
                batch.push(reading);
                self.0.push(batch);
            }
        }
    }

    /// Send every batch, in order; false when the core is gone.
    async fn deliver(self, sink: &mut ScanSink) -> bool {
        for batch in self.0 {
            if !sink.send(batch).await {
                return false;
            }
        }
        true
    }
}

/// How a read leaves out the rows of agents it already delivered.
enum Dedupe {
    /// Rows in any order (a query): the ids seen in this read.
    Seen(SeenIds),
    /// Rows ordered by id (the table form): the id of the row before.
    Ordered(Option<AgentId>),
}

/// Rows read as readings, page by page, for one read.
struct Reader<'s> {
    src: &'s PostgresSource,
    offset: TimeDelta,
    columns: Columns,
    /// The `COPY` data of the statement being read.
    parser: CopyParser,
    dedupe: Dedupe,
    /// Rows skipped because their agent id is NULL or empty.
    skipped: usize,
}

/// One page of a read.
struct Page {
    batches: Batches,
    /// Rows read, skipped and repeated ones included.
    rows: usize,
    /// The statement's data ended.
    ended: bool,
}

impl<'s> Reader<'s> {
    fn new(src: &'s PostgresSource, columns: Columns, offset: TimeDelta, dedupe: Dedupe) -> Self {
        Self {
            src,
            offset,
            parser: CopyParser::new(columns.count()),
            columns,
            dedupe,
            skipped: 0,
        }
    }

    /// Rows of `data` as readings, each read as it arrives, until `limit`
    /// rows or the end of the data.
    async fn page(
        &mut self,
        data: &mut Rows<'_, Bytes>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        let mut batches = Batches::default();
        let mut rows = 0usize;
        while rows < limit {
            let Some(chunk) = data.next().await? else {
                self.parser.finish().map_err(|e| self.src.copy_error(&e))?;
                return Ok(Page {
                    batches,
                    rows,
                    ended: true,
                });
            };
            let Self {
                src,
                offset,
                columns,
                parser,
                dedupe,
                skipped,
            } = self;
            rows += parser
                .feed(&chunk, |values| {
                    let reading = read(src, columns, *offset, dedupe, skipped, values)?;
                    if let Some(reading) = reading {
                        batches.push(reading);
                    }
                    Ok(())
                })
                .map_err(|e| match e {
                    FeedError::Copy(e) => src.copy_error(&e),
                    FeedError::Row(e) => e,
                })?;
        }
        Ok(Page {
            batches,
            rows,
            ended: false,
        })
    }

    /// Read another statement's data, whose rows have `columns`.
    fn restart(&mut self, columns: Columns) {
        self.parser = CopyParser::new(columns.count());
        self.columns = columns;
    }

    /// The id of the last agent delivered (empty if none).
    fn last_id(&self) -> &str {
        match &self.dedupe {
            Dedupe::Ordered(Some(agent)) => agent.as_str(),
            _ => "",
        }
    }
}

/// A row as a reading, unless its id is NULL or empty or was delivered
/// already.
fn read(
    src: &PostgresSource,
    columns: &Columns,
    offset: TimeDelta,
    dedupe: &mut Dedupe,
    skipped: &mut usize,
    values: &Values<'_>,
) -> Result<Option<Reading>, SourceError> {
    let Some(id) = columns.agent_id(values).map_err(|e| src.id_error(e))? else {
        *skipped += 1;
        return Ok(None);
    };
    let agent = match dedupe {
        Dedupe::Seen(seen) => seen.first_time(&id).then(|| AgentId::new(&*id)),
        Dedupe::Ordered(before) => {
            if before.as_ref().is_some_and(|b| b.as_str() == id) {
                None
            } else {
                let agent = AgentId::new(&*id);
                *before = Some(agent.clone());
                Some(agent)
            }
        }
    };
    Ok(agent.map(|agent| columns.reading(values, agent, offset)))
}

/// `COPY` data as the server might send it, read and decoded every way:
/// the first byte gives the number of columns, the second where the rest is
/// cut in two chunks. Must not panic.
pub(crate) fn fuzz_copy_data(data: &[u8]) {
    let [columns, cut, rest @ ..] = data else {
        return;
    };
    let mut parser = CopyParser::new(usize::from(columns % 8));
    let cut = usize::from(*cut).min(rest.len());
    let (a, b) = rest.split_at(cut);
    for chunk in [a, b] {
        let fed = parser.feed(chunk, |values| {
            decode::decode_every_way(values);
            Ok::<(), ()>(())
        });
        if fed.is_err() {
            return;
        }
    }
    let _ = parser.finish();
}

impl PostgresSource {
    /// An agent id that cannot be read.
    fn id_error(&self, e: String) -> SourceError {
        self.error(
            ErrorKind::BadValue,
            format!("first column (agent id): {e} ({})", self.endpoint),
        )
    }

    /// `COPY` data that cannot be read.
    fn copy_error(&self, e: &CopyError) -> SourceError {
        self.error(ErrorKind::Protocol, format!("{e} ({})", self.endpoint))
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
            Plan::Query { describe, copy, .. } => {
                self.scan_query(&mut s, describe, copy, offset, sink)
                    .await?
            }
            Plan::Table(plan) => self.scan_table(&mut s, plan, offset, sink).await?,
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
            Plan::Query { point, .. } | Plan::Table(TablePlan { point, .. }) => point,
        };
        let mut s = self.open().await?;
        let offset = s.measure_offset().await?;
        let mut found: HashMap<AgentId, Reading> = HashMap::new();
        let mut dedupe = Dedupe::Ordered(None);
        let mut skipped = 0usize;
        let mut columns: Option<Columns> = None;
        for chunk in agents.chunks(self.page_size) {
            let ids: Vec<String> = chunk.iter().map(|a| a.as_str().to_string()).collect();
            let mut rows = s.rows(point, ids);
            while let Some(row) = rows.next().await? {
                let columns = match &columns {
                    Some(c) => c,
                    None => columns.insert(self.columns(&row)?),
                };
                let values = values(&row).map_err(|e| {
                    self.error(ErrorKind::BadValue, format!("{e} ({})", self.endpoint))
                })?;
                if let Some(r) = read(self, columns, offset, &mut dedupe, &mut skipped, &values)? {
                    found.entry(r.agent().clone()).or_insert(r);
                }
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
