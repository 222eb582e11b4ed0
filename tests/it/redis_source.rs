//! The Redis source against a real redis-server: every layout and value
//! format, bad values, 10k agents, point reads, outages, clock offset,
//! secrets in messages, authentication and TLS.
//!
//! The source is driven directly (`scan_once` / `confirm_once` with an mpsc
//! channel drained concurrently), not through the app.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_supervisor::clock::Clock;
use agent_supervisor::config::{KeyPattern, RedisConfig, RedisLayout};
use agent_supervisor::core::{AgentId, ErrorKind, Observation, Reading, SourceId, Timestamp};
use agent_supervisor::secret::SecretUrl;
use agent_supervisor::sources::redis::RedisSource;
use agent_supervisor::sources::{PollSource, SourceCtx, SourceError, confirm_once};
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Utc};
use fred::prelude::*;
use fred::types::CustomCommand;
use tokio::sync::mpsc;

use crate::harness::{RedisServer, free_port, shared_redis_url, unique_prefix, wait_until};
use crate::support::{Scanned, scan_source, source_ctx};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn config(url: &str, layout: RedisLayout, timeout: Duration) -> RedisConfig {
    RedisConfig {
        url: SecretUrl::parse(url).expect("test URL"),
        interval: Duration::from_secs(5),
        timeout,
        layout,
        batch: NonZeroUsize::new(500).expect("non-zero"),
        json_field: "last_seen".into(),
        status_field: "status".into(),
    }
}

fn keys_layout(prefix: &str) -> RedisLayout {
    RedisLayout::Keys(KeyPattern::parse(&format!("{prefix}{{agent}}:last_seen")).expect("pattern"))
}

fn source(cfg: &RedisConfig) -> RedisSource {
    let src = RedisSource::new(SourceId::from("redis"), cfg, Clock::System).expect("source builds");
    src.connect();
    src
}

fn ctx(tx: mpsc::Sender<Observation>) -> SourceCtx {
    source_ctx("redis", tx)
}

async fn scan(src: &RedisSource) -> Result<Scanned, SourceError> {
    scan_source(src, "redis").await
}

async fn writer(url: &str) -> Client {
    let c = Builder::from_config(Config::from_url(url).expect("writer URL"))
        .build()
        .expect("writer client");
    c.init().await.expect("writer connects");
    c
}

/// Any command, arguments as values (strings or raw bytes).
async fn redis(c: &Client, args: Vec<Value>) -> Value {
    let mut args = args.into_iter();
    let name = args
        .next()
        .and_then(|v| v.as_string())
        .expect("command name");
    let rest: Vec<Value> = args.collect();
    c.custom::<Value, Value>(CustomCommand::new(name.clone(), None, false), rest)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn v(s: impl Into<String>) -> Value {
    Value::String(s.into().into())
}

async fn unlink(c: &Client, keys: Vec<String>) {
    for chunk in keys.chunks(1000) {
        let mut args = vec![v("UNLINK")];
        args.extend(chunk.iter().map(|k| v(k.as_str())));
        redis(c, args).await;
    }
}

/// A time 30 s ago with a whole number of microseconds.
fn base_time() -> Timestamp {
    let now = Utc::now() - TimeDelta::seconds(30);
    DateTime::from_timestamp_micros(now.timestamp_micros()).expect("in range")
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    DateTime::from_timestamp(t.timestamp(), 0).expect("in range")
}

fn whole_millis(t: Timestamp) -> Timestamp {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("in range")
}

/// The offset the source measured, as a duration.
fn offset_of(src: &RedisSource) -> TimeDelta {
    let off = src
        .clock_offset_seconds()
        .expect("the source measured its clock offset");
    assert!(off.abs() < 0.5, "offset {off} s from a local Redis");
    TimeDelta::nanoseconds((off * 1e9).round() as i64)
}

/// `reading` is a heartbeat whose `last_seen`, moved back onto Redis' clock
/// with the measured offset, is `stored` (to the microsecond).
#[track_caller]
fn assert_heartbeat(reading: Option<&Reading>, stored: Timestamp, offset: TimeDelta, what: &str) {
    match reading {
        Some(Reading::Heartbeat { last_seen, .. }) => {
            let diff = (*last_seen + offset - stored).abs();
            assert!(
                diff <= TimeDelta::microseconds(1),
                "{what}: last_seen {last_seen} + offset {offset} != stored {stored} (off by {diff})"
            );
        }
        other => panic!("{what}: expected a heartbeat, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid(reading: Option<&Reading>, reason_contains: &str, what: &str) {
    match reading {
        Some(Reading::Invalid { reason, .. }) => assert!(
            reason.contains(reason_contains),
            "{what}: reason {reason:?} should mention {reason_contains:?}"
        ),
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

/// Timestamp text formats and the instant each one stores.
fn text_formats(t: Timestamp) -> Vec<(&'static str, String, Timestamp)> {
    let s = whole_seconds(t);
    let ms = whole_millis(t);
    let plus2 = FixedOffset::east_opt(2 * 3600).expect("offset");
    vec![
        ("epoch_s", s.timestamp().to_string(), s),
        ("epoch_ms", ms.timestamp_millis().to_string(), ms),
        ("epoch_us", t.timestamp_micros().to_string(), t),
        (
            "epoch_float_s",
            format!("{}.25", s.timestamp()),
            s + TimeDelta::milliseconds(250),
        ),
        (
            "epoch_float_ms",
            format!("{}.5", ms.timestamp_millis()),
            ms + TimeDelta::microseconds(500),
        ),
        (
            "rfc3339_z",
            t.to_rfc3339_opts(SecondsFormat::Micros, true),
            t,
        ),
        (
            "rfc3339_offset",
            t.with_timezone(&plus2)
                .to_rfc3339_opts(SecondsFormat::Micros, false),
            t,
        ),
        (
            "naive_iso",
            t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            t,
        ),
        (
            "naive_space",
            t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            t,
        ),
        (
            "json_number",
            format!(r#"{{"last_seen": {}, "status": "ok"}}"#, s.timestamp()),
            s,
        ),
        (
            "json_string",
            format!(
                r#"{{"status": "ok", "last_seen": "{}"}}"#,
                t.to_rfc3339_opts(SecondsFormat::Micros, true)
            ),
            t,
        ),
    ]
}

/// Epoch scores a sorted set can hold.
fn score_formats(t: Timestamp) -> Vec<(&'static str, String, Timestamp)> {
    let s = whole_seconds(t);
    let ms = whole_millis(t);
    vec![
        ("epoch_s", s.timestamp().to_string(), s),
        ("epoch_ms", ms.timestamp_millis().to_string(), ms),
        ("epoch_us", t.timestamp_micros().to_string(), t),
        (
            "epoch_float_s",
            format!("{}.25", s.timestamp()),
            s + TimeDelta::milliseconds(250),
        ),
    ]
}

/// Scans `layout`, where each of `formats` is stored as the heartbeat of the
/// agent named after it, and checks that each agent reads as the instant its
/// format stores, and that nothing else is read.
async fn assert_reads_formats(
    url: &str,
    layout: RedisLayout,
    formats: &[(&'static str, String, Timestamp)],
) {
    let src = source(&config(url, layout, Duration::from_secs(2)));
    let scanned = scan(&src).await.expect("scan");
    let offset = offset_of(&src);
    let got = scanned.by_agent();
    assert_eq!(got.len(), formats.len(), "{got:?}");
    for (agent, value, stored) in formats {
        assert_heartbeat(
            got.get(*agent),
            *stored,
            offset,
            &format!("{agent} = {value}"),
        );
    }
    src.disconnect().await;
}

// ---------------------------------------------------------------------------
// Layouts and value formats
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_layout_reads_every_value_format() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_keys_fmt");
    let w = writer(&url).await;
    let t = base_time();
    let formats = text_formats(t);
    let mut keys = Vec::new();
    for (agent, value, _) in &formats {
        let key = format!("{prefix}{agent}:last_seen");
        redis(&w, vec![v("SET"), v(key.as_str()), v(value.as_str())]).await;
        keys.push(key);
    }
    // Same prefix, other suffix: not a heartbeat key.
    let other = format!("{prefix}epoch_s:config");
    redis(&w, vec![v("SET"), v(other.as_str()), v("x")]).await;
    keys.push(other);

    assert_reads_formats(&url, keys_layout(&prefix), &formats).await;
    unlink(&w, keys).await;
}

/// The hash layout holds every text format, the sorted set only epoch
/// scores (in s, ms, µs or with a fraction).
#[tokio::test]
async fn hash_and_zset_layouts_read_every_value_format_they_can_hold() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_pairs_fmt");
    let w = writer(&url).await;
    let t = base_time();
    let hash = format!("{prefix}hash");
    let zset = format!("{prefix}zset");
    // The layout, the command that stores its heartbeats, how one agent's
    // value goes into that command, and the formats the layout can hold.
    type Pair = fn(&str, &str) -> [Value; 2];
    let table: [(RedisLayout, &str, &str, Pair, _); 2] = [
        (
            RedisLayout::Hash { key: hash.clone() },
            "HSET",
            &hash,
            |agent, value| [v(agent), v(value)],
            text_formats(t),
        ),
        (
            RedisLayout::Zset { key: zset.clone() },
            "ZADD",
            &zset,
            |agent, score| [v(score), v(agent)],
            score_formats(t),
        ),
    ];
    for (layout, command, key, pair, formats) in table {
        let mut args = vec![v(command), v(key)];
        for (agent, value, _) in &formats {
            args.extend(pair(agent, value));
        }
        redis(&w, args).await;
        assert_reads_formats(&url, layout, &formats).await;
    }
    unlink(&w, vec![hash, zset]).await;
}

#[tokio::test]
async fn json_values_are_read_from_the_configured_field() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_json_field");
    let w = writer(&url).await;
    let t = base_time();
    let s = whole_seconds(t);
    let values = [
        (
            "nested",
            format!(r#"{{"hb": {{"at": {}}}}}"#, s.timestamp()),
        ),
        (
            "default_field_only",
            format!(r#"{{"last_seen": {}}}"#, s.timestamp()),
        ),
    ];
    let mut keys = Vec::new();
    for (agent, value) in &values {
        let key = format!("{prefix}{agent}:last_seen");
        redis(&w, vec![v("SET"), v(key.as_str()), v(value.as_str())]).await;
        keys.push(key);
    }
    let mut cfg = config(&url, keys_layout(&prefix), Duration::from_secs(2));
    cfg.json_field = "hb.at".into();
    let src = source(&cfg);
    let scanned = scan(&src).await.expect("scan");
    let offset = offset_of(&src);
    let got = scanned.by_agent();
    assert_heartbeat(got.get("nested"), s, offset, "hb.at");
    assert_invalid(got.get("default_field_only"), "hb.at", "no hb.at field");
    src.disconnect().await;
    unlink(&w, keys).await;
}

/// A JSON value's `status` (and `detail`) is read like a pushed one: the
/// README's `{"last_seen": ..., "status": "error"}` makes the agent failing.
#[tokio::test]
async fn json_values_carry_a_status_and_a_detail() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_json_status");
    let w = writer(&url).await;
    let s = whole_seconds(base_time()).timestamp();
    let values = [
        (
            "broken",
            format!(r#"{{"last_seen": {s}, "status": "error", "detail": "db pool exhausted"}}"#),
        ),
        ("fine", format!(r#"{{"last_seen": {s}, "status": "OK"}}"#)),
        ("flag", format!(r#"{{"last_seen": {s}, "status": false}}"#)),
        ("plain", format!(r#"{{"last_seen": {s}}}"#)),
        ("odd", format!(r#"{{"last_seen": {s}, "status": 3}}"#)),
    ];
    let mut keys = Vec::new();
    for (agent, value) in &values {
        let key = format!("{prefix}{agent}:last_seen");
        redis(&w, vec![v("SET"), v(key.as_str()), v(value.as_str())]).await;
        keys.push(key);
    }
    let src = source(&config(&url, keys_layout(&prefix), Duration::from_secs(2)));
    let got = scan(&src).await.expect("scan").by_agent();
    let status = |agent: &str| match got.get(agent) {
        Some(Reading::Heartbeat { status, .. }) => {
            status.as_ref().map(|s| (s.healthy, s.detail.clone()))
        }
        other => panic!("{agent}: expected a heartbeat, got {other:?}"),
    };
    assert_eq!(
        status("broken"),
        Some((false, "error: db pool exhausted".into()))
    );
    assert_eq!(status("fine"), Some((true, "OK".into())));
    assert_eq!(status("flag"), Some((false, "false".into())));
    assert_eq!(status("plain"), None);
    assert_invalid(got.get("odd"), "not a status word", "numeric status");
    src.disconnect().await;
    unlink(&w, keys).await;
}

// ---------------------------------------------------------------------------
// Bad values
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_layout_bad_values_are_invalid_and_the_others_still_read() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_keys_bad");
    let w = writer(&url).await;
    let t = whole_seconds(base_time());
    let key = |agent: &str| format!("{prefix}{agent}:last_seen");
    let good = ["good_a", "good_b", "good_c"];
    for agent in good {
        redis(
            &w,
            vec![v("SET"), v(key(agent)), v(t.timestamp().to_string())],
        )
        .await;
    }
    redis(&w, vec![v("SET"), v(key("garbage")), v("yesterday")]).await;
    redis(&w, vec![v("SET"), v(key("empty")), v("")]).await;
    redis(
        &w,
        vec![v("SET"), v(key("json_no_field")), v(r#"{"other": 1}"#)],
    )
    .await;
    redis(
        &w,
        vec![
            v("SET"),
            v(key("not_utf8")),
            Value::Bytes(vec![0xff, 0xfe, 0x31].into()),
        ],
    )
    .await;
    redis(&w, vec![v("HSET"), v(key("a_hash")), v("f"), v("1")]).await;
    // A key whose agent part is not UTF-8 cannot name an agent: skipped.
    let mut raw_key = prefix.as_bytes().to_vec();
    raw_key.extend_from_slice(&[0xff, 0xfe]);
    raw_key.extend_from_slice(b":last_seen");
    redis(
        &w,
        vec![v("SET"), Value::Bytes(raw_key.clone().into()), v("1")],
    )
    .await;

    let src = source(&config(&url, keys_layout(&prefix), Duration::from_secs(2)));
    let scanned = scan(&src).await.expect("a bad value never fails the scan");
    let offset = offset_of(&src);
    let got = scanned.by_agent();
    for agent in good {
        assert_heartbeat(got.get(agent), t, offset, agent);
    }
    assert_invalid(got.get("garbage"), "not a timestamp", "garbage");
    assert_invalid(got.get("empty"), "empty", "empty");
    assert_invalid(got.get("json_no_field"), "last_seen", "json without field");
    assert_invalid(got.get("not_utf8"), "UTF-8", "non-UTF-8 value");
    assert_invalid(got.get("a_hash"), "hash", "hash where a string is expected");
    assert_eq!(got.len(), 8, "{got:?}");
    src.disconnect().await;
    let mut keys: Vec<String> = good.iter().map(|a| key(a)).collect();
    keys.extend(["garbage", "empty", "json_no_field", "not_utf8", "a_hash"].map(key));
    unlink(&w, keys).await;
    redis(&w, vec![v("DEL"), Value::Bytes(raw_key.into())]).await;
}

#[tokio::test]
async fn hash_and_zset_bad_values_are_invalid_and_the_others_still_read() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_pairs_bad");
    let w = writer(&url).await;
    let t = whole_seconds(base_time());
    let hash = format!("{prefix}hash");
    let zset = format!("{prefix}zset");
    redis(
        &w,
        vec![
            v("HSET"),
            v(hash.as_str()),
            v("good"),
            v(t.timestamp().to_string()),
            v("garbage"),
            v("soon"),
            v("not_utf8"),
            Value::Bytes(vec![0xc3, 0x28].into()),
            v("also_good"),
            v(t.to_rfc3339()),
        ],
    )
    .await;
    redis(
        &w,
        vec![
            v("ZADD"),
            v(zset.as_str()),
            v(t.timestamp().to_string()),
            v("good"),
            v("+inf"),
            v("infinite"),
            v("-5"),
            v("negative"),
            v(t.timestamp().to_string()),
            v("also_good"),
        ],
    )
    .await;

    // The layout and the agents whose values are invalid, with the reason.
    let table = [
        (
            RedisLayout::Hash { key: hash.clone() },
            [("garbage", "not a timestamp"), ("not_utf8", "UTF-8")],
        ),
        (
            RedisLayout::Zset { key: zset.clone() },
            [("infinite", "out of range"), ("negative", "out of range")],
        ),
    ];
    for (layout, invalid) in table {
        let what = format!("{layout:?}");
        let src = source(&config(&url, layout, Duration::from_secs(2)));
        let got = scan(&src).await.expect("scan").by_agent();
        let offset = offset_of(&src);
        assert_heartbeat(got.get("good"), t, offset, &format!("{what}: good"));
        assert_heartbeat(
            got.get("also_good"),
            t,
            offset,
            &format!("{what}: also_good"),
        );
        for (agent, reason) in invalid {
            assert_invalid(got.get(agent), reason, &format!("{what}: {agent}"));
        }
        assert_eq!(got.len(), 4, "{what}: {got:?}");
        src.disconnect().await;
    }
    unlink(&w, vec![hash, zset]).await;
}

#[tokio::test]
async fn a_configured_key_of_the_wrong_type_fails_the_scan_as_a_bad_value() {
    let url = shared_redis_url();
    let key = format!("{}not_a_hash", unique_prefix("src_wrongtype"));
    let w = writer(&url).await;
    redis(&w, vec![v("SET"), v(key.as_str()), v("1")]).await;
    for layout in [
        RedisLayout::Hash { key: key.clone() },
        RedisLayout::Zset { key: key.clone() },
    ] {
        let src = source(&config(&url, layout.clone(), Duration::from_secs(2)));
        let err = scan(&src).await.expect_err("WRONGTYPE");
        assert_eq!(err.kind, ErrorKind::BadValue, "{layout:?}: {err}");
        assert!(err.message.contains("WRONGTYPE"), "{err}");
        let err = src
            .point_read(&[AgentId::from("a")])
            .await
            .expect_err("WRONGTYPE");
        assert_eq!(err.kind, ErrorKind::BadValue, "{layout:?}: {err}");
        src.disconnect().await;
    }
    unlink(&w, vec![key]).await;
}

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ten_thousand_agents_are_read_in_one_scan_page_by_page_without_duplicates() {
    const N: usize = 10_000;
    let url = shared_redis_url();
    let prefix = unique_prefix("src_10k");
    let w = writer(&url).await;
    let t = whole_seconds(base_time()).timestamp().to_string();
    let agents: Vec<String> = (0..N).map(|i| format!("agent_{i:05}")).collect();
    let hash = format!("{prefix}hash");
    let zset = format!("{prefix}zset");
    let writes = agents.chunks(1000).map(|chunk| {
        let w = &w;
        let (prefix, hash, zset, t) = (&prefix, &hash, &zset, &t);
        async move {
            let mut mset = vec![v("MSET")];
            let mut hset = vec![v("HSET"), v(hash.as_str())];
            let mut zadd = vec![v("ZADD"), v(zset.as_str())];
            for a in chunk {
                mset.extend([v(format!("{prefix}{a}:last_seen")), v(t.as_str())]);
                hset.extend([v(a.as_str()), v(t.as_str())]);
                zadd.extend([v(t.as_str()), v(a.as_str())]);
            }
            tokio::join!(redis(w, mset), redis(w, hset), redis(w, zadd));
        }
    });
    futures::future::join_all(writes).await;

    let want: HashSet<&str> = agents.iter().map(String::as_str).collect();
    for layout in [
        keys_layout(&prefix),
        RedisLayout::Hash { key: hash.clone() },
        RedisLayout::Zset { key: zset.clone() },
    ] {
        let src = source(&config(&url, layout.clone(), Duration::from_secs(5)));
        let scanned = scan(&src).await.expect("scan");
        let got = scanned.by_agent(); // panics on a duplicate
        assert_eq!(got.len(), N, "{layout:?}");
        assert!(
            got.keys().all(|a| want.contains(a.as_str())),
            "{layout:?}: an unexpected agent"
        );
        assert!(
            got.values().all(|r| matches!(r, Reading::Heartbeat { .. })),
            "{layout:?}: every value is good"
        );
        // batch 500: delivered page by page, not all at the end.
        assert!(
            scanned.batches >= N / 1000,
            "{layout:?}: only {} batches",
            scanned.batches
        );
        src.disconnect().await;
    }
    let mut keys: Vec<String> = agents
        .iter()
        .map(|a| format!("{prefix}{a}:last_seen"))
        .collect();
    keys.extend([hash, zset]);
    unlink(&w, keys).await;
}

// ---------------------------------------------------------------------------
// Point reads
// ---------------------------------------------------------------------------

#[tokio::test]
async fn point_reads_give_one_reading_per_agent_in_each_layout() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_point");
    let w = writer(&url).await;
    let t = whole_seconds(base_time());
    let ts = t.timestamp().to_string();
    let key = |agent: &str| format!("{prefix}{agent}:last_seen");
    redis(&w, vec![v("SET"), v(key("here")), v(ts.as_str())]).await;
    redis(&w, vec![v("SET"), v(key("bad")), v("never")]).await;
    redis(&w, vec![v("LPUSH"), v(key("a_list")), v("1")]).await;
    let hash = format!("{prefix}hash");
    let zset = format!("{prefix}zset");
    redis(
        &w,
        vec![
            v("HSET"),
            v(hash.as_str()),
            v("here"),
            v(ts.as_str()),
            v("bad"),
            v("never"),
        ],
    )
    .await;
    redis(
        &w,
        vec![
            v("ZADD"),
            v(zset.as_str()),
            v(ts.as_str()),
            v("here"),
            v("+inf"),
            v("bad"),
        ],
    )
    .await;

    let ask: Vec<AgentId> = ["here", "gone", "bad", "here"]
        .into_iter()
        .map(AgentId::from)
        .collect();
    for layout in [
        keys_layout(&prefix),
        RedisLayout::Hash { key: hash.clone() },
        RedisLayout::Zset { key: zset.clone() },
    ] {
        // No connect(): a read starts the client by itself.
        let src = RedisSource::new(
            SourceId::from("redis"),
            &config(&url, layout.clone(), Duration::from_secs(2)),
            Clock::System,
        )
        .expect("source");
        let got = src.point_read(&ask).await.expect("point read");
        let offset = offset_of(&src);
        assert_eq!(got.len(), ask.len(), "{layout:?}: {got:?}");
        for (asked, reading) in ask.iter().zip(&got) {
            assert_eq!(reading.agent(), asked, "{layout:?}: in request order");
        }
        assert_heartbeat(Some(&got[0]), t, offset, "here");
        assert_eq!(
            got[1],
            Reading::Absent {
                agent: "gone".into()
            },
            "{layout:?}"
        );
        assert!(
            matches!(got[2], Reading::Invalid { .. }),
            "{layout:?}: {:?}",
            got[2]
        );
        assert_heartbeat(Some(&got[3]), t, offset, "here (asked twice)");
        src.disconnect().await;
    }

    // A key of another type is invalid, not absent.
    let src = source(&config(&url, keys_layout(&prefix), Duration::from_secs(2)));
    let got = src
        .point_read(&[AgentId::from("a_list")])
        .await
        .expect("point read");
    assert_invalid(got.first(), "list", "a list where a string is expected");
    // Through confirm_once: one Confirmed observation.
    let (tx, mut rx) = mpsc::channel(4);
    confirm_once(
        &src,
        &ctx(tx),
        &[AgentId::from("here"), AgentId::from("gone")],
    )
    .await
    .expect("confirm");
    match rx.recv().await {
        Some(Observation::Confirmed { readings, .. }) => {
            assert_eq!(readings.len(), 2);
            assert!(matches!(readings[0], Reading::Heartbeat { .. }));
            assert_eq!(
                readings[1],
                Reading::Absent {
                    agent: "gone".into()
                }
            );
        }
        other => panic!("expected Confirmed, got {other:?}"),
    }
    // A hash layout whose hash does not exist: every agent is absent.
    let src2 = source(&config(
        &url,
        RedisLayout::Hash {
            key: format!("{prefix}no_such_hash"),
        },
        Duration::from_secs(2),
    ));
    let got = src2.point_read(&ask[..2]).await.expect("point read");
    assert!(
        got.iter().all(|r| matches!(r, Reading::Absent { .. })),
        "{got:?}"
    );
    src.disconnect().await;
    src2.disconnect().await;
    unlink(&w, vec![key("here"), key("bad"), key("a_list"), hash, zset]).await;
}

// ---------------------------------------------------------------------------
// Outages, errors, secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn redis_down_fails_fast_with_connection_refused_and_the_source_recovers_by_itself() {
    let timeout = Duration::from_secs(2);
    let mut server = RedisServer::start();
    let url = server.url.clone();
    let endpoint = format!("127.0.0.1:{}", server.port);
    let key = "hb:solo:last_seen";
    let w = writer(&url).await;
    redis(
        &w,
        vec![v("SET"), v(key), v(Utc::now().timestamp().to_string())],
    )
    .await;
    let layout = RedisLayout::Keys(KeyPattern::parse("hb:{agent}:last_seen").expect("pattern"));
    let src = source(&config(&url, layout, timeout));
    assert_eq!(scan(&src).await.expect("scan while up").readings.len(), 1);
    let _ = w.quit().await;

    server.stop();
    let began = Instant::now();
    let err = scan(&src).await.expect_err("scan while down");
    let took = began.elapsed();
    assert_eq!(err.kind, ErrorKind::ConnectionRefused, "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
    assert_eq!(
        err.to_string(),
        format!("redis: connection refused ({endpoint})")
    );
    assert!(took < timeout, "the scan took {took:?} to fail");
    // Later reads fail at once: the last attempt's error is known.
    let began = Instant::now();
    let err = src
        .point_read(&[AgentId::from("solo")])
        .await
        .expect_err("point read while down");
    assert_eq!(err.kind, ErrorKind::ConnectionRefused, "{err}");
    assert!(
        began.elapsed() < Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );

    // Back (empty); the same source reconnects by itself.
    server.restart();
    let w = writer(&url).await;
    redis(
        &w,
        vec![v("SET"), v(key), v(Utc::now().timestamp().to_string())],
    )
    .await;
    wait_until(
        "the source reads Redis again",
        Duration::from_secs(30),
        || async { matches!(scan(&src).await, Ok(s) if s.readings.len() == 1) },
    )
    .await;
    let got = src
        .point_read(&[AgentId::from("solo")])
        .await
        .expect("point read after recovery");
    assert!(matches!(got[0], Reading::Heartbeat { .. }), "{got:?}");
    let _ = w.quit().await;

    // Disconnecting while Redis is down is prompt too.
    server.stop();
    let _ = scan(&src).await;
    let began = Instant::now();
    src.disconnect().await;
    assert!(
        began.elapsed() < timeout,
        "disconnect took {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_source_starts_while_redis_is_down_and_never_shows_the_password() {
    let port = free_port(); // nothing listens there
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let cfg = config(&url, keys_layout("hb:"), Duration::from_secs(2));
    let src = source(&cfg);
    let began = Instant::now();
    let err = scan(&src).await.expect_err("nothing listens");
    assert!(began.elapsed() < cfg.timeout, "{:?}", began.elapsed());
    assert_eq!(err.kind, ErrorKind::ConnectionRefused);
    assert_eq!(
        err.to_string(),
        format!("redis: connection refused (127.0.0.1:{port})")
    );
    let err = src
        .point_read(&[AgentId::from("a")])
        .await
        .expect_err("nothing listens");
    for shown in [err.to_string(), format!("{err:?}"), err.failure().message] {
        assert!(!shown.contains("hunter2"), "password shown: {shown}");
    }
    assert_eq!(src.clock_offset_seconds(), None, "never read");
    src.disconnect().await;
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let server = OwnRedis::start(&["--requirepass", "s3cret-pw"]);
    let good = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port);
    let src = source(&config(&good, keys_layout("hb:"), Duration::from_secs(2)));
    scan(&src).await.expect("the right password works");
    src.disconnect().await;

    for url in [
        format!("redis://:hunter2@127.0.0.1:{}", server.port),
        format!("redis://127.0.0.1:{}", server.port),
    ] {
        let src = source(&config(&url, keys_layout("hb:"), Duration::from_secs(2)));
        let err = scan(&src).await.expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Auth, "{url}: {err}");
        assert!(err.message.starts_with("authentication failed"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
        src.disconnect().await;
    }
}

#[tokio::test]
async fn clock_offset_is_measured_near_zero_against_a_local_server() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_offset");
    let src = source(&config(&url, keys_layout(&prefix), Duration::from_secs(2)));
    assert_eq!(src.clock_offset_seconds(), None);
    scan(&src).await.expect("scan");
    let off = src.clock_offset_seconds().expect("measured by the scan");
    assert!(off.abs() < 0.1, "offset {off} s from a local Redis");
    src.disconnect().await;
}

#[tokio::test]
async fn connect_scan_disconnect_cycles_like_the_scan_command() {
    let url = shared_redis_url();
    let prefix = unique_prefix("src_cycles");
    let w = writer(&url).await;
    let key = format!("{prefix}a:last_seen");
    redis(&w, vec![v("SET"), v(key.as_str()), v("1795813200")]).await;
    let src = RedisSource::new(
        SourceId::from("redis"),
        &config(&url, keys_layout(&prefix), Duration::from_secs(2)),
        Clock::System,
    )
    .expect("source");
    for _ in 0..3 {
        src.connect();
        assert_eq!(scan(&src).await.expect("scan").readings.len(), 1);
        src.disconnect().await;
    }
    unlink(&w, vec![key]).await;
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rediss_reads_over_tls_and_an_unknown_ca_is_a_tls_error() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let server = OwnRedis::start(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        path(&pki.server_cert),
        "--tls-key-file",
        path(&pki.server_key),
        "--tls-ca-cert-file",
        path(&pki.ca_cert),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let tls = client_tls(&pki.ca_cert);

    // Write over TLS with a plain fred client trusting the test CA.
    let mut wcfg = Config::from_url(&url).expect("rediss URL");
    wcfg.tls = Some(fred::types::config::TlsConnector::from(tls.clone()).into());
    let w = Builder::from_config(wcfg).build().expect("writer");
    w.init().await.expect("writer connects over TLS");
    let t = whole_seconds(base_time());
    redis(
        &w,
        vec![
            v("SET"),
            v("hb:secure:last_seen"),
            v(t.timestamp().to_string()),
        ],
    )
    .await;

    let cfg = config(&url, keys_layout("hb:"), Duration::from_secs(2));
    let src = RedisSource::with_tls_config(SourceId::from("redis"), &cfg, Clock::System, tls)
        .expect("source");
    src.connect();
    let got = scan(&src).await.expect("scan over TLS").by_agent();
    assert_heartbeat(got.get("secure"), t, offset_of(&src), "secure");
    let read = src
        .point_read(&[AgentId::from("secure")])
        .await
        .expect("point read over TLS");
    assert!(matches!(read[0], Reading::Heartbeat { .. }), "{read:?}");
    src.disconnect().await;

    // The system's roots do not know the test CA.
    let src = source(&cfg);
    let err = scan(&src).await.expect_err("unknown CA");
    assert_eq!(err.kind, ErrorKind::Tls, "{err}");
    assert!(
        err.message.contains(&format!("127.0.0.1:{}", server.port)),
        "{err}"
    );
    assert!(err.message.contains("UnknownIssuer"), "{err}");
    src.disconnect().await;
}

struct Pki {
    ca_cert: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A CA and a server certificate for 127.0.0.1 / localhost, made with the
/// `openssl` CLI.
fn make_pki(dir: &Path) -> Pki {
    let ca_key = dir.join("ca.key");
    let ca_cert = dir.join("ca.pem");
    let server_key = dir.join("server.key");
    let server_csr = dir.join("server.csr");
    let server_cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext file");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", path(&ca_key), "-out", path(&ca_cert)],
        ]
        .concat(),
        &["-days", "2", "-subj", "/CN=agent-supervisor test CA"],
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &["-keyout", path(&server_key), "-out", path(&server_csr)],
        ]
        .concat(),
        &["-subj", "/CN=localhost"],
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            path(&server_csr),
            "-CA",
            path(&ca_cert),
            "-CAkey",
            path(&ca_key),
            "-CAcreateserial",
            "-out",
            path(&server_cert),
            "-extfile",
            path(&ext),
        ],
        &["-days", "2"],
    );
    Pki {
        ca_cert,
        server_cert,
        server_key,
    }
}

fn openssl(args: &[&str], more: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .args(more)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the openssl CLI ({e}): the TLS test makes its certificates with it. \
                 Install it (Debian/Ubuntu: `apt-get install openssl`)"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?} {more:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn client_tls(ca: &Path) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A redis-server with extra arguments (`{port}` in them is replaced by the
/// chosen port), for what the harness' servers do not offer (TLS,
/// requirepass). Killed on drop, and by the kernel if the test thread dies.
struct OwnRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start(args: &[&str]) -> OwnRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        if !args.iter().any(|a| a == "--port") {
            args.extend(["--port".into(), port.to_string()]);
        }
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(&args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}); install it (Debian/Ubuntu: `apt-get install redis-server`)"
            )
        });
        let mut server = OwnRedis {
            port,
            child,
            _dir: dir,
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        crate::harness::wait_until_sync(
            &format!("redis-server {args:?} listens on port {port}"),
            Duration::from_secs(10),
            || {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!(
                        "redis-server {args:?} exited at start ({status}); if it says a TLS \
                         option is unknown, this redis-server was built without TLS. Log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            },
        );
        server
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
