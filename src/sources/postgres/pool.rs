//! Connections: at most `max_connections`, opened by the first read that
//! needs one and kept for reuse, each read a bounded read-only transaction
//! (see the module doc of [`super`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::FutureExt as _;
use futures::stream::{BoxStream, TryStreamExt as _};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::SemaphorePermit;
use tracing::debug;

use crate::core::ErrorKind;
use crate::sources::SourceError;
use crate::sources::common::{lock, no_connection};

use super::PostgresSource;

/// Idle connections older than this are closed rather than reused: poolers,
/// load balancers and firewalls drop idle connections.
pub const IDLE_MAX: Duration = Duration::from_secs(300);

pub(super) struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// A connection held for one read, with its permit. Dropped without
/// [`Session::release`], the connection is closed (its state is unknown).
pub(super) struct Session<'a> {
    src: &'a PostgresSource,
    conn: PgConnection,
    _permit: SemaphorePermit<'a>,
}

impl PostgresSource {
    /// Close the idle connections (each bounded by `timeout`). A later read
    /// opens new ones.
    pub(super) async fn close_idle(&self) {
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
    pub(super) async fn open(&self) -> Result<Session<'_>, SourceError> {
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
                        no_connection(&self.endpoint, self.timeout),
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
    pub(super) async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.statement_deadline(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.sql_error(&e)),
            Err(_) => Err(self.no_answer()),
        }
    }

    fn no_answer(&self) -> SourceError {
        self.error(
            ErrorKind::Timeout,
            format!(
                "no answer within {} ({})",
                humantime::format_duration(self.timeout),
                self.endpoint
            ),
        )
    }
}

/// What one statement streams: its rows, or its `COPY` data. The server
/// sends them while the ones before are read, and stops (TCP
/// back-pressure) while they are not.
pub(super) struct Rows<'c, T> {
    src: &'c PostgresSource,
    items: BoxStream<'c, Result<T, sqlx::Error>>,
    /// The server's bound on the statement when it is not `timeout`.
    limit: Option<Duration>,
}

impl<T> Rows<'_, T> {
    /// The statement runs under a `statement_timeout` of `limit` (set by
    /// [`Session::scan_limits`]), named when it is reached.
    pub(super) fn limited(mut self, limit: Duration) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The longest wait for the next item: under `timeout`'s own
    /// `statement_timeout`, a little more than `timeout` (the server's
    /// answer, the more precise one, comes first); under a longer `limit`,
    /// `timeout` itself (data must keep coming).
    fn wait(&self) -> Duration {
        match self.limit {
            Some(_) => self.src.timeout,
            None => self.src.statement_deadline(),
        }
    }

    fn error(&self, e: &sqlx::Error) -> SourceError {
        match self.limit {
            Some(limit) => self.src.scan_sql_error(e, limit),
            None => self.src.sql_error(e),
        }
    }

    /// The next item; `None` after the last. Each wait for one is bounded
    /// ([`Self::wait`]), so a stuck network or server fails the read however
    /// long the statement is, while time the caller spends between items
    /// (delivering them) does not count. (The server sends 8 KiB at a time:
    /// "the next item" is in fact "8 KiB of them, or the last ones".)
    pub(super) async fn next(&mut self) -> Result<Option<T>, SourceError> {
        // Most items are already buffered: no timer for them.
        let item = match self.items.try_next().now_or_never() {
            Some(item) => item,
            None => match tokio::time::timeout(self.wait(), self.items.try_next()).await {
                Ok(item) => item,
                Err(_) => return Err(self.src.no_answer()),
            },
        };
        item.map_err(|e| self.error(&e))
    }
}

impl Session<'_> {
    /// `clock_timestamp()`, and the offset of the database's clock from ours
    /// (remote - local) at the round trip's midpoint. Remembered for
    /// `clock_offset_seconds`.
    pub(super) async fn measure_offset(&mut self) -> Result<TimeDelta, SourceError> {
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
        Ok(src.offset.measure(before, remote, after))
    }

    /// The rows of a statement whose parameter `$1` is `ids`, as they
    /// arrive.
    pub(super) fn rows(&mut self, sql: &str, ids: Vec<String>) -> Rows<'_, PgRow> {
        let q = sqlx::query(AssertSqlSafe(sql.to_string()))
            .persistent(false)
            .bind(ids);
        Rows {
            src: self.src,
            items: q.fetch(&mut self.conn),
            limit: None,
        }
    }

    /// The data of a `COPY .. TO STDOUT`, as it arrives.
    pub(super) async fn copy(&mut self, sql: &str) -> Result<Rows<'_, Bytes>, SourceError> {
        let src = self.src;
        let items = src.bounded(self.conn.copy_out_raw(sql)).await?;
        Ok(Rows {
            src,
            items,
            limit: None,
        })
    }

    /// The row of NULLs a describing statement returns (its columns are
    /// what matters). Run with the extended protocol, which refuses several
    /// statements: once described this way, the same SQL is known to be one
    /// statement.
    pub(super) async fn describe(&mut self, sql: &str) -> Result<PgRow, SourceError> {
        let q = sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false);
        self.src.bounded(q.fetch_one(&mut self.conn)).await
    }

    /// Bound the transaction's next statements, on the server, by `limit`
    /// in all (`statement_timeout`) and `timeout` for a lock
    /// (`lock_timeout`). `SET LOCAL`: they end with the transaction.
    pub(super) async fn scan_limits(&mut self, limit: Duration) -> Result<(), SourceError> {
        let sql = format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
            limit.as_millis().max(1),
            self.src.timeout.as_millis().max(1)
        );
        self.src
            .bounded(sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut self.conn))
            .await
            .map(|_| ())
    }

    /// End the transaction, start a new one and run `describe` in it (one
    /// round trip). `describe` must have been run by [`Self::describe`]
    /// before: this runs it with the simple protocol, which would run
    /// several statements.
    pub(super) async fn renew_and_describe(
        &mut self,
        describe: &str,
    ) -> Result<PgRow, SourceError> {
        let sql = format!(
            "COMMIT; BEGIN READ ONLY; SET LOCAL statement_timeout = {}; {describe}",
            self.src.timeout.as_millis().max(1)
        );
        self.src
            .bounded(sqlx::raw_sql(AssertSqlSafe(sql)).fetch_one(&mut self.conn))
            .await
    }

    /// End the transaction and keep the connection for the next read.
    pub(super) async fn release(mut self) -> Result<(), SourceError> {
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
