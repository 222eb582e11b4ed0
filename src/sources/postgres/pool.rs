//! Connections: at most `max_connections`, opened by the first read that
//! needs one and kept for reuse, each read a bounded read-only transaction
//! (see the module doc of [`super`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
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
}

/// A parameter of a statement.
pub(super) enum Bind {
    Text(String),
    TextArray(Vec<String>),
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

    pub(super) async fn execute(&mut self, sql: &str) -> Result<(), SourceError> {
        let q = sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false);
        self.src
            .bounded(q.execute(&mut self.conn))
            .await
            .map(|_| ())
    }

    pub(super) async fn fetch(
        &mut self,
        sql: &str,
        bind: Option<Bind>,
    ) -> Result<Vec<PgRow>, SourceError> {
        let mut q = sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false);
        match bind {
            None => {}
            Some(Bind::Text(t)) => q = q.bind(t),
            Some(Bind::TextArray(a)) => q = q.bind(a),
        }
        self.src.bounded(q.fetch_all(&mut self.conn)).await
    }

    /// End the transaction and start a new one (one round trip).
    pub(super) async fn renew(&mut self) -> Result<(), SourceError> {
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
