//! One full scan of 100k and 1M rows by `PostgresSource` (through
//! `scan_once`, the observation channel drained by another task), in the
//! query form (one binary `COPY` of the query) and the table form (keyset
//! pages on the primary key, a binary `COPY` each), next to the baseline: `psql`
//! reading the same rows with `\copy (select agent_id, last_seen from ..) to
//! /dev/null`, timed as a subprocess (process start and connection
//! included; `psql_overhead` times the same command on zero rows).
//!
//! PostgreSQL: `DATABASE_URL` (a superuser URL) if set, otherwise a private
//! cluster started by the test harness. The tables live in a database of
//! their own, dropped at the end.
//!
//! Run: `cargo bench --bench postgres_scan`. Under `cargo test` (no
//! `--bench` argument) each function runs once on 10k rows.

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_supervisor::clock::Clock;
use agent_supervisor::config::{PostgresConfig, PostgresRead, PostgresTable};
use agent_supervisor::core::{Observation, SourceId};
use agent_supervisor::driver::OBSERVATION_CAPACITY;
use agent_supervisor::liveness::Liveness;
use agent_supervisor::secret::SecretUrl;
use agent_supervisor::sources::postgres::PostgresSource;
use agent_supervisor::sources::{PollSource as _, SourceCtx, scan_once};
use agent_supervisor::telemetry::metrics::Metrics;
use criterion::{Criterion, SamplingMode};
use sqlx::Connection as _;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// The source's default `page_size`.
const PAGE_SIZE: usize = 5000;

/// Per-iteration times of each benchmark, for the ratio summary.
type Times = Arc<Mutex<BTreeMap<String, Vec<Duration>>>>;

struct Fixture {
    admin_url: String,
    db: String,
    url: String,
}

impl Fixture {
    async fn new(sizes: &[(&str, usize)]) -> Fixture {
        let server = harness::shared_postgres();
        let url = server.create_database("bench_pg_scan").await;
        let db = url
            .rsplit('/')
            .next()
            .and_then(|s| s.split('?').next())
            .expect("database name")
            .to_string();
        let fx = Fixture {
            admin_url: server.admin_url.clone(),
            db,
            url,
        };
        for (name, rows) in sizes {
            let began = Instant::now();
            fx.exec(&format!(
                "CREATE TABLE {t} (agent_id text PRIMARY KEY, last_seen timestamptz NOT NULL);
                 INSERT INTO {t} SELECT 'agent-' || lpad(g::text, 7, '0'),
                   now() - (g % 60) * interval '1 second' FROM generate_series(1, {rows}) g;",
                t = table_name(name)
            ))
            .await;
            // On its own: VACUUM cannot run in the implicit transaction of a
            // multi-statement query.
            fx.exec(&format!("VACUUM ANALYZE {}", table_name(name)))
                .await;
            eprintln!(
                "filled {} ({rows} rows) in {:?}",
                table_name(name),
                began.elapsed()
            );
        }
        fx
    }

    async fn exec(&self, sql: &str) {
        exec(&self.url, sql).await;
    }

    async fn drop_database(&self) {
        exec(
            &self.admin_url,
            &format!("DROP DATABASE \"{}\" WITH (FORCE)", self.db),
        )
        .await;
    }

    fn source(&self, read: PostgresRead) -> PostgresSource {
        let cfg = PostgresConfig {
            url: SecretUrl::parse(&self.url).expect("url"),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            max_connections: 2,
            page_size: NonZeroUsize::new(PAGE_SIZE).expect("non-zero"),
            tls_ca_file: None,
            read,
        };
        let src =
            PostgresSource::new(SourceId::from("pg"), &cfg, Clock::System).expect("source builds");
        src.connect();
        src
    }

    /// `psql` copying `select` to /dev/null; returns the rows copied.
    fn psql_copy(&self, select: &str) -> usize {
        let out = Command::new("psql")
            .args(["-X", "-d", &self.url, "-c"])
            .arg(format!("\\copy ({select}) to /dev/null"))
            .stdin(Stdio::null())
            .output()
            .expect("psql runs (install postgresql-client)");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .trim()
            .strip_prefix("COPY ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected psql output {stdout:?}"))
    }
}

async fn exec(url: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

fn table_name(size: &str) -> String {
    format!("hb_{size}")
}

/// One `scan_once`, its observations drained by another task as the core
/// would. Returns the number of readings.
async fn source_scan(src: &PostgresSource, metrics: &Arc<Metrics>) -> usize {
    let (tx, mut rx) = mpsc::channel(OBSERVATION_CAPACITY);
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while let Some(obs) = rx.recv().await {
            match obs {
                Observation::Batch { readings, .. } => n += readings.len(),
                Observation::ScanComplete { .. } => break,
                Observation::SourceError { error, .. } => panic!("scan failed: {error:?}"),
                _ => {}
            }
        }
        n
    });
    let ctx = SourceCtx {
        id: SourceId::from("pg"),
        tx: tx.clone(),
        urgent: tx,
        metrics: metrics.clone(),
        clock: Clock::System,
        liveness: Liveness::default(),
    };
    scan_once(src, &ctx).await.expect("scan");
    drain.await.expect("drain task")
}

fn record(times: &Times, name: &str, d: Duration) {
    times
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(name.to_string())
        .or_default()
        .push(d);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[(&str, usize)] = if full {
        &[("100k", 100_000), ("1m", 1_000_000)]
    } else {
        &[("10k", 10_000)]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = rt.block_on(Fixture::new(sizes));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let times: Times = Arc::default();
    for &(size, rows) in sizes {
        bench(&mut c, &rt, &fx, &times, size, rows);
    }
    c.final_summary();
    rt.block_on(fx.drop_database());
    summary(&times, sizes);
}

fn bench(c: &mut Criterion, rt: &Runtime, fx: &Fixture, times: &Times, size: &str, rows: usize) {
    let metrics = Arc::new(Metrics::new(0).expect("metrics"));
    let table = table_name(size);
    let select = format!("select agent_id, last_seen from {table}");
    let reads = [
        ("query", PostgresRead::Query(select.clone())),
        (
            "table",
            PostgresRead::Table(PostgresTable {
                schema: None,
                table: table.clone(),
                id_column: "agent_id".into(),
                timestamp_column: "last_seen".into(),
                status_column: None,
                filter: None,
            }),
        ),
    ];

    let mut g = c.benchmark_group(format!("postgres_scan_{size}"));
    // Flat: the same number of iterations in every sample (one, for long
    // scans), rather than 1, 2, .. 10 (55 scans of 1M rows).
    g.sampling_mode(SamplingMode::Flat);
    for (form, read) in reads {
        let src = fx.source(read);
        // Every row, once, before timing anything.
        assert_eq!(rt.block_on(source_scan(&src, &metrics)), rows, "{form}");
        let name = format!("{size}/source/{form}");
        g.bench_function(format!("source/{form}"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (src, metrics, name) = (&src, &metrics, &name);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let began = Instant::now();
                        black_box(source_scan(src, metrics).await);
                        let d = began.elapsed();
                        record(times, name, d);
                        total += d;
                    }
                    total
                }
            })
        });
        rt.block_on(src.disconnect());
    }

    assert_eq!(fx.psql_copy(&select), rows, "psql");
    let name = format!("{size}/psql");
    g.bench_function("psql_copy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let began = Instant::now();
                black_box(fx.psql_copy(&select));
                let d = began.elapsed();
                record(times, &name, d);
                total += d;
            }
            total
        })
    });
    if size == "100k" || size == "10k" {
        let empty = format!("{select} limit 0");
        assert_eq!(fx.psql_copy(&empty), 0, "psql");
        let name = "psql_overhead".to_string();
        g.bench_function("psql_overhead", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let began = Instant::now();
                    black_box(fx.psql_copy(&empty));
                    let d = began.elapsed();
                    record(times, &name, d);
                    total += d;
                }
                total
            })
        });
    }
    g.finish();
}

/// Medians of every iteration (warm-up included) and the ratios to `psql`.
fn summary(times: &Times, sizes: &[(&str, usize)]) {
    let times = times
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let median = |name: &str| -> Option<Duration> {
        let mut v = times.get(name)?.clone();
        v.sort();
        v.get(v.len() / 2).copied()
    };
    eprintln!("\nmedians of all iterations (source / psql):");
    for (size, _) in sizes {
        let Some(psql) = median(&format!("{size}/psql")) else {
            continue;
        };
        for form in ["query", "table"] {
            if let Some(src) = median(&format!("{size}/source/{form}")) {
                eprintln!(
                    "  {size:>5} {form}: source {src:>10.1?}  psql {psql:>10.1?}  ratio {:.2}",
                    src.as_secs_f64() / psql.as_secs_f64()
                );
            }
        }
    }
    if let Some(o) = median("psql_overhead") {
        eprintln!("  psql start + connect + empty \\copy: {o:.1?}");
    }
}
