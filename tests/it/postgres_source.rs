//! The PostgreSQL source against a real PostgreSQL: every column type, the
//! query and table forms, NULL times, statuses, 100k rows, point reads,
//! outages, authentication, missing tables and columns, read-only reads,
//! statement timeouts, a transaction-mode PgBouncer and TLS.
//!
//! Each test works in a database of its own. The source is driven directly
//! (`scan_once` / `confirm_once` with an mpsc channel drained concurrently).

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_supervisor::clock::Clock;
use agent_supervisor::config::{PostgresConfig, PostgresRead, PostgresTable};
use agent_supervisor::core::{AgentId, ErrorKind, Observation, Reading, SourceId, Timestamp};
use agent_supervisor::secret::SecretUrl;
use agent_supervisor::sources::postgres::PostgresSource;
use agent_supervisor::sources::{PollSource, SourceCtx, SourceError, confirm_once};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Connection as _;
use tokio::sync::mpsc;

use crate::harness::{PostgresServer, PostgresSetup, shared_postgres, start_pgbouncer};
use crate::support::{Scanned, exec, scan_source, source_ctx};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn config(url: &str, read: PostgresRead) -> PostgresConfig {
    PostgresConfig {
        url: SecretUrl::parse(url).expect("test URL"),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
        max_connections: 2,
        page_size: NonZeroUsize::new(5000).expect("non-zero"),
        tls_ca_file: None,
        read,
    }
}

fn query(sql: &str) -> PostgresRead {
    PostgresRead::Query(sql.into())
}

fn table(name: &str, id: &str, ts: &str, status: Option<&str>) -> PostgresRead {
    let (schema, table) = match name.split_once('.') {
        Some((s, t)) => (Some(s.to_string()), t.to_string()),
        None => (None, name.to_string()),
    };
    PostgresRead::Table(PostgresTable {
        schema,
        table,
        id_column: id.into(),
        timestamp_column: ts.into(),
        status_column: status.map(str::to_string),
        filter: None,
    })
}

fn source(cfg: &PostgresConfig) -> PostgresSource {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let src = PostgresSource::new(SourceId::from("pg"), cfg, Clock::System).expect("source builds");
    src.connect();
    src
}

fn ctx(tx: mpsc::Sender<Observation>) -> SourceCtx {
    source_ctx("pg", tx)
}

async fn scan(src: &PostgresSource) -> Result<Scanned, SourceError> {
    scan_source(src, "pg").await
}

async fn point(src: &PostgresSource, agents: &[&str]) -> Result<Vec<Reading>, SourceError> {
    let agents: Vec<AgentId> = agents.iter().map(|a| AgentId::from(*a)).collect();
    let (tx, mut rx) = mpsc::channel(4);
    let ctx = ctx(tx);
    let result = confirm_once(src, &ctx, &agents).await;
    match rx.recv().await.expect("confirm_once reports") {
        Observation::Confirmed { readings, .. } => {
            assert!(result.is_ok());
            assert_eq!(readings.len(), agents.len(), "one reading per agent");
            for (r, a) in readings.iter().zip(&agents) {
                assert_eq!(r.agent(), a, "readings in the order asked");
            }
            Ok(readings)
        }
        Observation::SourceError { error, .. } => {
            let e = result.expect_err("an error was reported");
            assert_eq!(error.kind, e.kind);
            Err(e)
        }
        other => panic!("unexpected observation {other:?}"),
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
    n
}

async fn database(test: &str) -> String {
    shared_postgres().create_database(test).await
}

/// A database of its own with a table `hb` holding one fresh agent, `a`.
async fn one_agent_database(test: &str) -> String {
    database_with(
        test,
        "CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz);
         INSERT INTO hb VALUES ('a', now());",
    )
    .await
}

/// A database of its own with `sql` run in it.
async fn database_with(test: &str, sql: &str) -> String {
    let url = database(test).await;
    exec(&url, sql).await;
    url
}

/// A time with whole microseconds (what PostgreSQL stores).
fn base_time() -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-27T21:00:00.123456Z")
        .expect("time")
        .with_timezone(&Utc)
}

fn offset_of(src: &PostgresSource) -> TimeDelta {
    let secs = src.clock_offset_seconds().expect("offset measured");
    TimeDelta::microseconds((secs * 1e6).round() as i64)
}

/// A heartbeat stored at `stored` on the database's clock.
fn assert_heartbeat(r: Option<&Reading>, stored: Timestamp, offset: TimeDelta, what: &str) {
    match r {
        Some(Reading::Heartbeat { last_seen, .. }) => {
            let want = stored - offset;
            let diff = (*last_seen - want)
                .num_microseconds()
                .unwrap_or(i64::MAX)
                .abs();
            assert!(diff <= 2, "{what}: got {last_seen}, want {want}");
        }
        other => panic!("{what}: expected a heartbeat, got {other:?}"),
    }
}

fn assert_invalid(r: Option<&Reading>, reason_contains: &str, what: &str) {
    match r {
        Some(Reading::Invalid { reason, .. }) => {
            assert!(
                reason.contains(reason_contains),
                "{what}: reason {reason:?}"
            )
        }
        other => panic!("{what}: expected invalid, got {other:?}"),
    }
}

fn status_of(r: Option<&Reading>) -> Option<(bool, String)> {
    match r {
        Some(Reading::Heartbeat { status, .. }) => {
            status.as_ref().map(|s| (s.healthy, s.detail.to_string()))
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Column types and forms
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_column_type_is_read_in_the_query_form() {
    let url = database("pg_types").await;
    let t = base_time();
    let s = t.timestamp();
    let ms = t.timestamp_millis();
    let us = t.timestamp_micros();
    exec(
        &url,
        &format!(
            "CREATE TABLE hb (id text, tz timestamptz, naive timestamp, s bigint, ms bigint,
                us bigint, i4 integer, f double precision, n numeric, iso text, naive_iso text,
                j jsonb);
             INSERT INTO hb VALUES ('a', '{tz}', '{naive}', {s}, {ms}, {us}, {s}, {f}, {f},
                '{tz}', '{naive_iso}', '{{\"last_seen\": {s}}}');",
            tz = t.to_rfc3339(),
            naive = t.naive_utc(),
            naive_iso = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f"),
            f = us as f64 / 1e6,
        ),
    )
    .await;
    let whole = DateTime::from_timestamp(s, 0).expect("seconds");
    let millis = DateTime::from_timestamp_millis(ms).expect("millis");
    let cases = [
        ("tz", t),
        ("naive", t),
        ("s", whole),
        ("ms", millis),
        ("us", t),
        ("i4", whole),
        ("f", t),
        ("n", t),
        ("iso", t),
        ("naive_iso", t),
        ("j", whole),
    ];
    for (column, want) in cases {
        let src = source(&config(
            &url,
            query(&format!("select id, {column} from hb")),
        ));
        let scanned = scan(&src).await.unwrap_or_else(|e| panic!("{column}: {e}"));
        assert_eq!(scanned.readings.len(), 1, "{column}");
        let by = scanned.by_agent();
        if column == "f" {
            // A double holds micro-seconds of a 2026 epoch only approximately.
            match by.get("a") {
                Some(Reading::Heartbeat { last_seen, .. }) => {
                    let diff = (*last_seen - (t - offset_of(&src))).num_microseconds();
                    assert!(diff.is_some_and(|d| d.abs() < 10), "{column}: {last_seen}");
                }
                other => panic!("{column}: {other:?}"),
            }
            continue;
        }
        assert_heartbeat(by.get("a"), want, offset_of(&src), column);
    }
}

#[tokio::test]
async fn ids_may_be_integers_or_uuids_and_extra_columns_carry_status_and_details() {
    let url = database("pg_ids").await;
    exec(
        &url,
        "CREATE TABLE hb (n integer, u uuid, ts timestamptz, status text, details jsonb);
         INSERT INTO hb VALUES
           (7, '00010203-0405-0607-0809-0a0b0c0d0e0f', now(), 'Active', '{\"k\": 1}'),
           (8, 'ffffffff-0405-0607-0809-0a0b0c0d0e0f', now(), 'error', NULL),
           (9, '11111111-0405-0607-0809-0a0b0c0d0e0f', now(), NULL, NULL);",
    )
    .await;
    let src = source(&config(
        &url,
        query("select n, ts, status, details from hb"),
    ));
    let by = scan(&src).await.expect("scan").by_agent();
    assert_eq!(by.len(), 3);
    assert_eq!(
        status_of(by.get("7")),
        Some((true, "Active: {\"k\": 1}".into()))
    );
    assert_eq!(status_of(by.get("8")), Some((false, "error".into())));
    assert_eq!(status_of(by.get("9")), None);

    let src = source(&config(
        &url,
        query("select u, ts, status = 'Active' from hb"),
    ));
    let by = scan(&src).await.expect("scan").by_agent();
    assert_eq!(
        status_of(by.get("00010203-0405-0607-0809-0a0b0c0d0e0f")),
        Some((true, "true".into()))
    );
    assert_eq!(
        status_of(by.get("ffffffff-0405-0607-0809-0a0b0c0d0e0f")),
        Some((false, "false".into()))
    );
    let got = point(&src, &["11111111-0405-0607-0809-0a0b0c0d0e0f", "nope"])
        .await
        .expect("point read");
    assert!(
        matches!(got[0], Reading::Heartbeat { status: None, .. }),
        "{got:?}"
    );
    assert!(matches!(got[1], Reading::Absent { .. }), "{got:?}");
}

#[tokio::test]
async fn null_and_bad_times_are_invalid_and_the_other_rows_still_read() {
    let url = database("pg_nulls").await;
    exec(
        &url,
        "CREATE TABLE hb (id text, ts text);
         INSERT INTO hb VALUES ('good1', '2026-11-27T21:00:00Z'), ('null', NULL),
           ('bad', 'yesterday'), ('good2', '1795813200'), (NULL, '1795813200');",
    )
    .await;
    for read in [
        query("select id, ts from hb"),
        table("hb", "id", "ts", None),
    ] {
        let src = source(&config(&url, read.clone()));
        let by = scan(&src).await.expect("scan").by_agent();
        assert_eq!(by.len(), 4, "{read:?}: the NULL id is skipped: {by:?}");
        let want = DateTime::from_timestamp(1_795_813_200, 0).expect("t");
        assert_heartbeat(by.get("good1"), want, offset_of(&src), "good1");
        assert_heartbeat(by.get("good2"), want, offset_of(&src), "good2");
        assert_invalid(by.get("null"), "NULL", "null");
        assert_invalid(by.get("bad"), "yesterday", "bad");
    }
}

/// 'infinity', '-infinity' and years past chrono's range panicked inside
/// the driver's time decoding: they are unreadable values now, each on its
/// own row, and the good rows around them still read.
#[tokio::test]
async fn infinite_and_far_off_timestamps_are_unreadable_not_a_panic() {
    let url = database("pg_infinity").await;
    exec(
        &url,
        "CREATE TABLE hb (id text, tz timestamptz, naive timestamp);
         INSERT INTO hb VALUES
           ('good', '2026-11-27T21:00:00Z', '2026-11-27T21:00:00'),
           ('inf', 'infinity', 'infinity'),
           ('neg', '-infinity', '-infinity'),
           ('far', '294276-12-31T23:59:59Z', '294276-12-31T23:59:59');",
    )
    .await;
    for column in ["tz", "naive"] {
        for read in [
            query(&format!("select id, {column} from hb")),
            table("hb", "id", column, None),
        ] {
            let src = source(&config(&url, read.clone()));
            let by = scan(&src).await.expect("scan").by_agent();
            let want = DateTime::from_timestamp(1_795_813_200, 0).expect("t");
            assert_heartbeat(by.get("good"), want, offset_of(&src), "good");
            assert_invalid(by.get("inf"), "'infinity'", "inf");
            assert_invalid(by.get("neg"), "'-infinity'", "neg");
            assert_invalid(by.get("far"), "out of range", "far");
        }
    }
}

#[tokio::test]
async fn table_pages_resume_after_ids_with_quotes_and_backslashes() {
    let url = database_with(
        "pg_keyset",
        r#"CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz NOT NULL);
           INSERT INTO hb VALUES ('', now()), ('a''b', now()), ('a\b', now()),
             ('a\''b', now()), ('a\\', now()), ('é ü', now()), ('z', now());"#,
    )
    .await;
    let mut want: Vec<String> = ["a'b", r"a\b", r"a\'b", r"a\\", "é ü", "z"]
        .map(str::to_string)
        .to_vec();
    want.sort();
    let db = url.rsplit('/').next().expect("db name").to_string();
    // The escaped literal reads the same whatever the server's string
    // setting.
    for conforming in ["on", "off"] {
        exec(
            &url,
            &format!("ALTER DATABASE \"{db}\" SET standard_conforming_strings = {conforming}"),
        )
        .await;
        for page in [1, 2, 3] {
            let mut cfg = config(&url, table("hb", "agent_id", "last_seen", None));
            cfg.page_size = NonZeroUsize::new(page).expect("non-zero");
            let scanned = scan(&source(&cfg)).await.expect("scan");
            let got: Vec<String> = scanned.by_agent().into_keys().collect();
            assert_eq!(
                got, want,
                "page size {page}, standard_conforming_strings {conforming}"
            );
        }
    }
}

#[tokio::test]
async fn table_form_quotes_names_reads_status_and_applies_where() {
    let url = database("pg_table").await;
    exec(
        &url,
        r#"CREATE SCHEMA "Ops";
           CREATE TABLE "Ops"."Agent ""State""" ("Agent Id" text PRIMARY KEY,
             updated_at timestamptz, status text, kind text);
           INSERT INTO "Ops"."Agent ""State""" VALUES
             ('trading_coordinator', now(), 'running', 'trading'),
             ('market_analyst', now() - interval '1 hour', 'error', 'trading'),
             ('other', now(), 'ok', 'research');"#,
    )
    .await;
    let mut cfg = config(
        &url,
        table(
            "Ops.Agent \"State\"",
            "Agent Id",
            "updated_at",
            Some("status"),
        ),
    );
    if let PostgresRead::Table(t) = &mut cfg.read {
        t.filter = Some("kind = 'trading'".into());
    }
    let src = source(&cfg);
    let by = scan(&src).await.expect("scan").by_agent();
    assert_eq!(
        by.keys().collect::<Vec<_>>(),
        vec!["market_analyst", "trading_coordinator"]
    );
    assert_eq!(
        status_of(by.get("trading_coordinator")),
        Some((true, "running".into()))
    );
    assert_eq!(
        status_of(by.get("market_analyst")),
        Some((false, "error".into()))
    );
    // The filter applies to point reads too.
    let got = point(&src, &["other", "market_analyst"])
        .await
        .expect("point");
    assert!(matches!(got[0], Reading::Absent { .. }), "{got:?}");
    assert!(matches!(got[1], Reading::Heartbeat { .. }), "{got:?}");
}

#[tokio::test]
async fn table_form_reads_an_enum_or_boolean_status_column() {
    let url = database("pg_enum").await;
    exec(
        &url,
        r#"CREATE TYPE agent_status AS ENUM ('active', 'error');
           CREATE TABLE agent_state (agent_id text PRIMARY KEY,
             updated_at timestamptz, status agent_status, ok boolean);
           INSERT INTO agent_state VALUES
             ('a', now(), 'active', true), ('b', now(), 'error', false);"#,
    )
    .await;
    let src = source(&config(
        &url,
        table("agent_state", "agent_id", "updated_at", Some("status")),
    ));
    let by = scan(&src).await.expect("scan").by_agent();
    assert_eq!(status_of(by.get("a")), Some((true, "active".into())));
    assert_eq!(status_of(by.get("b")), Some((false, "error".into())));
    let src = source(&config(
        &url,
        table("agent_state", "agent_id", "updated_at", Some("ok")),
    ));
    let by = scan(&src).await.expect("scan").by_agent();
    assert_eq!(status_of(by.get("a")).map(|s| s.0), Some(true));
    assert_eq!(status_of(by.get("b")).map(|s| s.0), Some(false));
}

// ---------------------------------------------------------------------------
// Scale, point reads
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_hundred_thousand_rows_are_read_in_one_scan_page_by_page_without_duplicates() {
    let url = database("pg_100k").await;
    exec(
        &url,
        "CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz NOT NULL);
         INSERT INTO hb SELECT 'agent-' || g, now() FROM generate_series(1, 100000) g;",
    )
    .await;
    for read in [
        table("hb", "agent_id", "last_seen", None),
        query("select agent_id, last_seen from hb"),
    ] {
        let src = source(&config(&url, read.clone()));
        let began = Instant::now();
        let scanned = scan(&src).await.expect("scan");
        let by = scanned.by_agent();
        assert_eq!(by.len(), 100_000, "{read:?}");
        // Delivered in messages of at most 1000 readings (what the core's
        // lane is sized for), whatever the page size (5000).
        assert_eq!(scanned.largest_batch, 1000, "{read:?}");
        assert!(scanned.batches >= 100, "{read:?}: {}", scanned.batches);
        assert!(
            by.values().all(|r| matches!(r, Reading::Heartbeat { .. })),
            "{read:?}"
        );
        eprintln!("{read:?}: 100k rows in {:?}", began.elapsed());
    }
}

#[tokio::test]
async fn point_reads_give_one_reading_per_agent_in_both_forms() {
    let url = database("pg_point").await;
    exec(
        &url,
        "CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz);
         INSERT INTO hb VALUES ('a', '2026-11-27T21:00:00Z'), ('b', NULL), ('c', now());",
    )
    .await;
    let want = DateTime::parse_from_rfc3339("2026-11-27T21:00:00Z")
        .expect("t")
        .with_timezone(&Utc);
    for read in [
        table("hb", "agent_id", "last_seen", None),
        query("select agent_id, last_seen from hb"),
    ] {
        let mut cfg = config(&url, read.clone());
        // Point reads are chunked by page size.
        cfg.page_size = NonZeroUsize::new(2).expect("non-zero");
        let src = source(&cfg);
        let got = point(&src, &["a", "gone", "b", "a"]).await.expect("point");
        assert_heartbeat(Some(&got[0]), want, offset_of(&src), "a");
        assert!(matches!(got[1], Reading::Absent { .. }), "{got:?}");
        assert_invalid(Some(&got[2]), "NULL", "b");
        assert_eq!(got[3], got[0]);
        assert!(point(&src, &[]).await.expect("empty").is_empty());
        // A scan and a point read agree.
        let by = scan(&src).await.expect("scan").by_agent();
        assert_eq!(by.len(), 3, "{read:?}");
    }
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn postgres_down_is_connection_refused_at_once_and_a_restart_recovers() {
    let mut server = PostgresServer::start();
    let url = server.create_database("pg_down").await;
    exec(
        &url,
        "CREATE TABLE hb (agent_id text, last_seen timestamptz);
         INSERT INTO hb VALUES ('a', now());",
    )
    .await;
    exec(&url, "CHECKPOINT").await;
    // (CHECKPOINT: the harness runs with synchronous_commit off, and an
    // immediate shutdown would otherwise lose the table.)
    let src = source(&config(&url, query("select agent_id, last_seen from hb")));
    assert_eq!(scan(&src).await.expect("scan").readings.len(), 1);

    server.stop();
    let began = Instant::now();
    let e = scan(&src).await.expect_err("postgres is down");
    assert_eq!(e.kind, ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}",
        began.elapsed()
    );
    let e = point(&src, &["a"]).await.expect_err("down");
    assert_eq!(e.kind, ErrorKind::ConnectionRefused, "{e}");

    server.restart();
    let by = scan(&src).await.expect("scan after restart").by_agent();
    assert!(matches!(by.get("a"), Some(Reading::Heartbeat { .. })));

    // A kept connection killed by a restart is replaced without a failed scan.
    server.restart();
    scan(&src).await.expect("scan after a second restart");
    src.disconnect().await;
}

#[tokio::test]
async fn a_source_starts_while_postgres_is_down() {
    let port = crate::harness::free_port();
    let url = format!("postgres://reader:s3cr3t-pw@127.0.0.1:{port}/db");
    let src = source(&config(&url, query("select 1, now()")));
    let e = scan(&src).await.expect_err("nothing listens");
    assert_eq!(e.kind, ErrorKind::ConnectionRefused, "{e}");
    assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let server = PostgresServer::start_with(&PostgresSetup {
        hba: Some(
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n"
                .into(),
        ),
        ..PostgresSetup::default()
    });
    exec(
        &server.admin_url,
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE reader LOGIN PASSWORD 'right-pw';",
    )
    .await;
    let port = server.port;
    let good = format!("postgres://reader:right-pw@127.0.0.1:{port}/postgres");
    let src = source(&config(&good, query("select 'a', now()")));
    assert_eq!(scan(&src).await.expect("right password").readings.len(), 1);

    let bad = format!("postgres://reader:wr%40ng-pw@127.0.0.1:{port}/postgres");
    let src = source(&config(&bad, query("select 'a', now()")));
    let e = scan(&src).await.expect_err("wrong password");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(
        !e.to_string().contains("wr@ng-pw") && !e.to_string().contains("wr%40ng"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_table_or_column_is_reported_clearly() {
    let url = database("pg_missing").await;
    exec(
        &url,
        "CREATE TABLE hb (agent_id text, last_seen timestamptz);",
    )
    .await;
    let src = source(&config(&url, table("nope", "agent_id", "last_seen", None)));
    let e = scan(&src).await.expect_err("no table");
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(e.to_string().contains("table not found"), "{e}");
    assert!(e.to_string().contains("\"nope\""), "{e}");

    let src = source(&config(&url, table("hb", "agent_id", "updated_at", None)));
    let e = scan(&src).await.expect_err("no column");
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(e.to_string().contains("column not found"), "{e}");
    let e = point(&src, &["a"]).await.expect_err("no column");
    assert!(e.to_string().contains("column not found"), "{e}");

    let src = source(&config(&url, query("select agent_id from hb")));
    exec(&url, "INSERT INTO hb VALUES ('a', now());").await;
    let e = scan(&src).await.expect_err("one column");
    assert_eq!(e.kind, ErrorKind::BadValue, "{e}");
}

#[tokio::test]
async fn reads_are_read_only() {
    let url = database("pg_readonly").await;
    exec(
        &url,
        "CREATE TABLE hb (agent_id text, last_seen timestamptz);
         INSERT INTO hb VALUES ('a', now());
         CREATE TABLE victim (x int);
         CREATE FUNCTION w() RETURNS int LANGUAGE sql AS
           $$ INSERT INTO victim VALUES (1) RETURNING 1 $$;",
    )
    .await;
    let src = source(&config(
        &url,
        query("select agent_id, last_seen from hb where w() = 1"),
    ));
    let e = scan(&src).await.expect_err("a write");
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = point(&src, &["a"]).await.expect_err("a write");
    assert!(e.to_string().contains("read-only"), "{e}");
    // Several statements cannot escape the read-only transaction.
    let src = source(&config(
        &url,
        query("select agent_id, last_seen from hb; commit; insert into victim values (2)"),
    ));
    let e = scan(&src).await.expect_err("one statement only");
    let refused = |e: &SourceError| {
        let m = e.to_string();
        // Refused as several commands, or as a syntax error (42601).
        m.contains("multiple commands") || m.contains("SQLSTATE 42601")
    };
    assert!(refused(&e), "{e}");
    // Nor can a query that closes the parentheses it is read in.
    let src = source(&config(
        &url,
        query(
            "select agent_id, last_seen from hb) to stdout; commit; \
             insert into victim values (3); copy (select 1",
        ),
    ));
    let e = scan(&src).await.expect_err("one statement only");
    assert!(refused(&e), "{e}");
    let mut cfg = config(&url, table("hb", "agent_id", "last_seen", None));
    if let PostgresRead::Table(t) = &mut cfg.read {
        t.filter = Some(
            "true) order by 1) to stdout; commit; insert into victim values (4); select ((1".into(),
        );
    }
    scan(&source(&cfg)).await.expect_err("one statement only");
    let mut cfg = config(&url, table("hb", "agent_id", "last_seen", None));
    if let PostgresRead::Table(t) = &mut cfg.read {
        t.filter = Some("w() = 1".into());
    }
    let e = scan(&source(&cfg)).await.expect_err("a write");
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(count(&url, "select count(*) from victim").await, 0);
}

#[tokio::test]
async fn a_query_that_sends_no_row_within_timeout_fails_the_scan() {
    let url = database("pg_slow").await;
    let mut cfg = config(&url, query("select 'a', now() from pg_sleep(5)"));
    cfg.timeout = Duration::from_millis(300);
    let src = source(&cfg);
    let began = Instant::now();
    let e = scan(&src).await.expect_err("too slow");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("no answer within 300ms"), "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    // The connection is usable again (a fresh one replaces it).
    let ok = source(&config(&url, query("select 'a', now()")));
    scan(&ok).await.expect("fast query");
}

#[tokio::test]
async fn a_slow_table_page_hits_the_statement_timeout() {
    let url = one_agent_database("pg_slow_page").await;
    let mut cfg = config(&url, table("hb", "agent_id", "last_seen", None));
    if let PostgresRead::Table(t) = &mut cfg.read {
        t.filter = Some("pg_sleep(5) IS NOT NULL".into());
    }
    cfg.timeout = Duration::from_millis(300);
    let began = Instant::now();
    let e = scan(&source(&cfg)).await.expect_err("too slow");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(
        e.to_string().contains("statement timed out after 300ms"),
        "{e}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
}

/// A query whose rows come 1 ms apart, 2,000 of them (about 2 s), each
/// with 500 bytes of details so that the server sends them as they come
/// (it sends 8 KiB at a time).
const TRICKLE: &str = "select 'agent-' || g, now(), 'ok', repeat('x', 500) \
     from generate_series(1, 2000) g where pg_sleep(0.001) is not null";

#[tokio::test]
async fn a_scan_may_outlast_timeout_while_rows_keep_coming() {
    let url = database("pg_trickle").await;
    let mut cfg = config(&url, query(TRICKLE));
    cfg.timeout = Duration::from_millis(500);
    let began = Instant::now();
    let scanned = scan(&source(&cfg)).await.expect("rows keep coming");
    assert_eq!(scanned.by_agent().len(), 2000);
    assert!(
        began.elapsed() > cfg.timeout * 2,
        "the scan should outlast timeout: {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_scan_longer_than_ten_intervals_is_cancelled_by_the_server() {
    let url = database("pg_trickle_cut").await;
    let mut cfg = config(&url, query(TRICKLE));
    cfg.timeout = Duration::from_millis(500);
    cfg.interval = Duration::from_millis(80);
    let began = Instant::now();
    let e = scan(&source(&cfg))
        .await
        .expect_err("longer than ten intervals");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(
        e.to_string()
            .contains("the scan ran longer than 800ms, ten times `interval`"),
        "{e}"
    );
    assert!(
        began.elapsed() < Duration::from_millis(1800),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_locked_table_fails_the_scan_within_timeout() {
    let url = one_agent_database("pg_locked").await;
    let mut locker = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE hb IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    for read in [
        query("select agent_id, last_seen from hb"),
        table("hb", "agent_id", "last_seen", None),
    ] {
        let mut cfg = config(&url, read.clone());
        cfg.timeout = Duration::from_millis(300);
        let began = Instant::now();
        let e = scan(&source(&cfg)).await.expect_err("locked");
        assert_eq!(e.kind, ErrorKind::Timeout, "{read:?}: {e}");
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{read:?}: {:?}",
            began.elapsed()
        );
    }
    let _ = locker.close().await;
}

// ---------------------------------------------------------------------------
// PgBouncer (transaction mode) and TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn scans_and_point_reads_work_through_pgbouncer_in_transaction_mode() {
    let url = database("pg_bouncer").await;
    let db = url.rsplit('/').next().expect("db name").to_string();
    exec(
        &url,
        "CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz, status text);
         INSERT INTO hb SELECT 'agent-' || g, now(), 'ok' FROM generate_series(1, 12000) g;",
    )
    .await;
    let bouncer = start_pgbouncer(shared_postgres().port, &db).await;
    let via = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
        bouncer.port
    );
    for read in [
        table("hb", "agent_id", "last_seen", Some("status")),
        query("select agent_id, last_seen, status from hb"),
    ] {
        let mut cfg = config(&via, read.clone());
        cfg.page_size = NonZeroUsize::new(1000).expect("non-zero");
        let src = source(&cfg);
        // Several rounds, scans and point reads interleaved, so that server
        // connections are shared between transactions.
        for _ in 0..3 {
            let (scanned, got) =
                tokio::join!(scan(&src), point(&src, &["agent-1", "agent-12000", "gone"]));
            assert_eq!(scanned.expect("scan").by_agent().len(), 12_000, "{read:?}");
            let got = got.expect("point read");
            assert_eq!(status_of(Some(&got[0])), Some((true, "ok".into())));
            assert!(matches!(got[1], Reading::Heartbeat { .. }));
            assert!(matches!(got[2], Reading::Absent { .. }));
        }
        src.disconnect().await;
    }
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e} (install the openssl package)"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn tls_with_verify_full_and_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ca_key, ca, key, csr, cert, ext) = (
        d.join("ca.key"),
        d.join("ca.pem"),
        d.join("server.key"),
        d.join("server.csr"),
        d.join("server.pem"),
        d.join("ext.cnf"),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        p(&ca_key),
        "-out",
        p(&ca),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        p(&key),
        "-out",
        p(&csr),
    ]);
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        p(&csr),
        "-CA",
        p(&ca),
        "-CAkey",
        p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        p(&ext),
        "-out",
        p(&cert),
    ]);
    let server = PostgresServer::start_with(&PostgresSetup {
        settings: vec![
            "ssl=on".into(),
            "ssl_cert_file=server.pem".into(),
            "ssl_key_file=server.key".into(),
        ],
        files: vec![
            (
                "server.pem".into(),
                std::fs::read(&cert).expect("cert"),
                0o644,
            ),
            (
                "server.key".into(),
                std::fs::read(&key).expect("key"),
                0o600,
            ),
        ],
        ..PostgresSetup::default()
    });
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
        server.port
    );
    let mut cfg = config(
        &url,
        query("select 'a', now(), ssl::text from pg_stat_ssl where pid = pg_backend_pid()"),
    );
    cfg.tls_ca_file = Some(ca.clone());
    let src = source(&cfg);
    let by = scan(&src).await.expect("scan over TLS").by_agent();
    assert_eq!(
        status_of(by.get("a")),
        Some((true, "true".into())),
        "{by:?}"
    );

    // Another CA: the certificate is refused.
    let other = d.join("other.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=other",
        "-keyout",
        p(&d.join("other.key")),
        "-out",
        p(&other),
    ]);
    cfg.tls_ca_file = Some(other);
    let e = scan(&source(&cfg)).await.expect_err("unknown CA");
    assert_eq!(e.kind, ErrorKind::Tls, "{e}");
}
