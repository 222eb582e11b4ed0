//! The lease in PostgreSQL: one row per lease name in a small table,
//! changed only by compare-and-set statements that each stand alone (no
//! session state, no advisory lock, unnamed statements), so they work
//! through PgBouncer in transaction mode. Expiry is the server's clock.
//!
//! ```sql
//! create table if not exists agent_supervisor_ha (
//!   name text primary key, holder text not null,
//!   epoch bigint not null, expires_at timestamptz not null, state text);
//! create table if not exists agent_supervisor_ha_silences (
//!   name text not null, id text not null, body text not null,
//!   primary key (name, id));
//! ```
//!
//! `state` is the shared alert state (JSON), written only where the row's
//! epoch is the writer's (fenced). The tables are created on first use
//! when they do not exist (the role needs CREATE on the schema then;
//! otherwise create them beforehand).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use std::sync::atomic::{AtomicBool, Ordering};

use super::LeaseError;
use crate::secret::SecretUrl;

/// One statement in a transaction of its own: PgBouncer in transaction
/// mode then keeps the parse and the execution of its unnamed statement on
/// one server connection (outside a transaction they may land on two).
macro_rules! in_tx {
    ($self:ident, $query:expr, $method:ident) => {
        async {
            let mut tx = $self.pool.begin().await?;
            let out = $query.$method(&mut *tx).await?;
            tx.commit().await?;
            Ok(out)
        }
    };
}

pub struct PostgresLease {
    pool: PgPool,
    key: String,
    timeout: Duration,
    secrets: Vec<secrecy::SecretString>,
    create: String,
    acquire: String,
    renew: String,
    release: String,
    load_state: String,
    save_state: String,
    put_silence: String,
    delete_silence: String,
    silences: String,
    created: AtomicBool,
}

/// `schema.table` quoted part by part (the config allows only letters,
/// digits and `_`).
fn quoted(table: &str) -> String {
    table
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl PostgresLease {
    pub fn new(
        url: &SecretUrl,
        table: &str,
        key: &str,
        tls_ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, LeaseError> {
        let mut options = PgConnectOptions::from_str(url.expose()).map_err(|e| {
            LeaseError::Unexpected(format!("cannot use URL {}: {e}", url.redacted()))
        })?;
        options = options
            .application_name("agent-supervisor-lease")
            .extra_float_digits(None)
            .statement_cache_capacity(0);
        if let Some(ca) = tls_ca_file {
            options = options.ssl_root_cert(ca);
        }
        let pool = PgPoolOptions::new()
            // Two: a state write (the engine) never makes a lease renewal
            // (the lease task) wait for the connection.
            .max_connections(2)
            .min_connections(0)
            // Each call has its own bound (`bounded_by`); a state call may wait
            // this long for a connection.
            .acquire_timeout(super::state_timeout(timeout))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        let t = quoted(table);
        let ts = quoted(&format!("{table}_silences"));
        Ok(Self {
            pool,
            key: key.to_string(),
            timeout,
            secrets: url.password_forms(),
            create: format!(
                "create table if not exists {t} (name text primary key, holder text not null, \
                 epoch bigint not null, expires_at timestamptz not null, state text); \
                 create table if not exists {ts} (name text not null, id text not null, \
                 body text not null, primary key (name, id))"
            ),
            load_state: format!("select state from {t} where name = $1"),
            save_state: format!("update {t} set state = $3 where name = $1 and epoch = $2"),
            put_silence: format!(
                "insert into {ts} (name, id, body) values ($1, $2, $3) \
                 on conflict (name, id) do update set body = excluded.body"
            ),
            delete_silence: format!("delete from {ts} where name = $1 and id = $2"),
            silences: format!("select body from {ts} where name = $1"),
            acquire: format!(
                "insert into {t} as l (name, holder, epoch, expires_at) \
                 values ($1, $2, 1, clock_timestamp() + make_interval(secs => $3)) \
                 on conflict (name) do update \
                 set holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at \
                 where l.expires_at <= clock_timestamp() \
                 returning epoch"
            ),
            renew: format!(
                "update {t} set expires_at = clock_timestamp() + make_interval(secs => $4) \
                 where name = $1 and holder = $2 and epoch = $3 and expires_at > clock_timestamp()"
            ),
            release: format!(
                "update {t} set expires_at = clock_timestamp() \
                 where name = $1 and holder = $2 and epoch = $3 and expires_at > clock_timestamp()"
            ),
            created: AtomicBool::new(false),
        })
    }

    fn error(&self, e: sqlx::Error) -> LeaseError {
        LeaseError::Unreachable(crate::secret::scrub_secrets(&self.secrets, e.to_string()))
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        self.bounded_by(self.timeout, f).await
    }

    async fn bounded_by<T>(
        &self,
        limit: Duration,
        f: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(limit, f).await {
            Err(_) => Err(LeaseError::Timeout(limit)),
            Ok(r) => r.map_err(|e| self.error(e)),
        }
    }

    async fn ensure_table(&self) -> Result<(), LeaseError> {
        if self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        // Two statements: the simple query protocol.
        self.bounded(sqlx::raw_sql(AssertSqlSafe(self.create.clone())).execute(&self.pool))
            .await?;
        self.created.store(true, Ordering::Release);
        Ok(())
    }

    pub async fn try_acquire(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LeaseError> {
        self.ensure_table().await?;
        let row = self
            .bounded(in_tx!(
                self,
                sqlx::query(AssertSqlSafe(self.acquire.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(holder)
                    .bind(ttl.as_secs_f64()),
                fetch_optional
            ))
            .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let e: i64 = r
                    .try_get(0)
                    .map_err(|e| LeaseError::Unexpected(e.to_string()))?;
                Ok(Some(u64::try_from(e).unwrap_or(0)))
            }
        }
    }

    pub async fn renew(&self, holder: &str, epoch: u64, ttl: Duration) -> Result<bool, LeaseError> {
        let done = self
            .bounded(in_tx!(
                self,
                sqlx::query(AssertSqlSafe(self.renew.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(holder)
                    .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
                    .bind(ttl.as_secs_f64()),
                execute
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release(&self, holder: &str, epoch: u64) -> Result<bool, LeaseError> {
        let done = self
            .bounded(in_tx!(
                self,
                sqlx::query(AssertSqlSafe(self.release.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(holder)
                    .bind(i64::try_from(epoch).unwrap_or(i64::MAX)),
                execute
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The saved alert state (JSON), if any.
    pub async fn load_state(&self) -> Result<Option<String>, LeaseError> {
        self.ensure_table().await?;
        let row = self
            .bounded_by(
                super::state_timeout(self.timeout),
                in_tx!(
                    self,
                    sqlx::query(AssertSqlSafe(self.load_state.clone()))
                        .persistent(false)
                        .bind(&self.key),
                    fetch_optional
                ),
            )
            .await?;
        match row {
            None => Ok(None),
            Some(r) => r
                .try_get::<Option<String>, _>(0)
                .map_err(|e| LeaseError::Unexpected(e.to_string())),
        }
    }

    /// Write the alert state if the row's epoch is still `epoch`: `false`
    /// when a newer leader took over (nothing written).
    pub async fn save_state(&self, epoch: u64, json: String) -> Result<bool, LeaseError> {
        let done = self
            .bounded_by(
                super::state_timeout(self.timeout),
                in_tx!(
                    self,
                    sqlx::query(AssertSqlSafe(self.save_state.clone()))
                        .persistent(false)
                        .bind(&self.key)
                        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
                        .bind(json),
                    execute
                ),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn put_silence(&self, id: &str, json: String) -> Result<(), LeaseError> {
        self.ensure_table().await?;
        self.bounded(in_tx!(
            self,
            sqlx::query(AssertSqlSafe(self.put_silence.clone()))
                .persistent(false)
                .bind(&self.key)
                .bind(id)
                .bind(json),
            execute
        ))
        .await?;
        Ok(())
    }

    /// `true` when it was there.
    pub async fn delete_silence(&self, id: &str) -> Result<bool, LeaseError> {
        self.ensure_table().await?;
        let done = self
            .bounded(in_tx!(
                self,
                sqlx::query(AssertSqlSafe(self.delete_silence.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(id),
                execute
            ))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every API silence (JSON).
    pub async fn silences(&self) -> Result<Vec<String>, LeaseError> {
        self.ensure_table().await?;
        let rows = self
            .bounded(in_tx!(
                self,
                sqlx::query(AssertSqlSafe(self.silences.clone()))
                    .persistent(false)
                    .bind(&self.key),
                fetch_all
            ))
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .map_err(|e| LeaseError::Unexpected(e.to_string()))
            })
            .collect()
    }

    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.timeout, self.pool.close()).await;
    }
}
