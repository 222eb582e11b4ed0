//! The lease in PostgreSQL: one row per lease name in a small table,
//! changed only by compare-and-set statements that each stand alone (no
//! session state, no advisory lock, unnamed statements), so they work
//! through PgBouncer in transaction mode. Expiry is the server's clock.
//!
//! ```sql
//! create table if not exists agent_supervisor_ha (
//!   name text primary key, holder text not null,
//!   epoch bigint not null, expires_at timestamptz not null);
//! ```
//!
//! The table is created on first use when it does not exist (the role
//! needs CREATE on the schema then; otherwise create it beforehand).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use std::sync::atomic::{AtomicBool, Ordering};

use super::LeaseError;
use crate::secret::SecretUrl;

pub struct PostgresLease {
    pool: PgPool,
    key: String,
    timeout: Duration,
    secrets: Vec<secrecy::SecretString>,
    create: String,
    acquire: String,
    renew: String,
    release: String,
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
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        let t = quoted(table);
        Ok(Self {
            pool,
            key: key.to_string(),
            timeout,
            secrets: url.password_forms(),
            create: format!(
                "create table if not exists {t} (name text primary key, holder text not null, \
                 epoch bigint not null, expires_at timestamptz not null)"
            ),
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
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(LeaseError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| self.error(e)),
        }
    }

    async fn ensure_table(&self) -> Result<(), LeaseError> {
        if self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        self.bounded(
            sqlx::query(AssertSqlSafe(self.create.clone()))
                .persistent(false)
                .execute(&self.pool),
        )
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
            .bounded(
                sqlx::query(AssertSqlSafe(self.acquire.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(holder)
                    .bind(ttl.as_secs_f64())
                    .fetch_optional(&self.pool),
            )
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
            .bounded(
                sqlx::query(AssertSqlSafe(self.renew.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(holder)
                    .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
                    .bind(ttl.as_secs_f64())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release(&self, holder: &str, epoch: u64) -> Result<bool, LeaseError> {
        let done = self
            .bounded(
                sqlx::query(AssertSqlSafe(self.release.clone()))
                    .persistent(false)
                    .bind(&self.key)
                    .bind(holder)
                    .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.timeout, self.pool.close()).await;
    }
}
