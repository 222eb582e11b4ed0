//! The binary itself: exit codes, messages, signals.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{NextLine, OwnedChild, PipeLines, free_port, shared_redis_url, unique_prefix};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agent-supervisor"));
    c.env_remove("AGENT_SUPERVISOR_CONFIG")
        .env_remove("REDIS_URL")
        .env("AGENT_SUPERVISOR_LOG", "info");
    c
}

fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.yaml")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let o = bin()
        .args(["check-config", "--config"])
        .arg(shipped_config())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn config_with_three_mistakes_reports_all_three_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
listen: 0.0.0.0:9464
defaults: {stale_after: 30}
sources:
  - {name: redis, type: redis, url: "redis://:hunter2@127.0.0.1:6379", pattern: "agent:last_seen"}
  - {name: push, type: push, tokn: abc}
"#,
    )
    .unwrap();
    for cmd in ["check-config", "run"] {
        let o = bin().arg(cmd).arg("--config").arg(&path).output().unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(64), "{cmd}: {out}");
        for p in [
            "defaults.stale_after",
            "sources[0].pattern",
            "sources[1].tokn",
        ] {
            assert!(out.contains(p), "{cmd}: {p} missing from: {out}");
        }
        assert!(out.contains("3 problem(s)"), "{out}");
        assert!(!out.contains("hunter2"), "secret printed: {out}");
    }
}

#[test]
fn check_config_lists_six_independent_mistakes_once_each_and_exits_64() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/six_mistakes.yaml");
    let o = bin()
        .env_remove("SIX_MISTAKES_UNSET_URL")
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(64), "{out}");
    assert!(out.contains("6 problem(s)"), "{out}");
    let listed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .collect();
    let paths: Vec<&str> = listed
        .iter()
        .map(|l| l.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "sources[0].type",
            "sources[1].url",
            "sources[2].layout",
            "sources[3].name",
            "sources[4].interval",
            "agents[0].match",
        ],
        "{out}"
    );
}

#[test]
fn schema_prints_the_checked_in_schema_without_reading_a_config() {
    let o = bin()
        .args(["schema", "--config", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let checked_in = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.schema.json"),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout) == checked_in,
        "`agent-supervisor schema` differs from config.schema.json; regenerate it with\n  \
         cargo run -- schema > config.schema.json"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let o = bin()
        .args([
            "check-config",
            "--config",
            "/nonexistent/agent-supervisor.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("cannot read config file"), "{}", text(&o));
}

/// `scan` on a machine without Redis: the table and a clear line, exit 3.
#[test]
fn scan_without_redis_prints_the_table_and_connection_refused() {
    let port = free_port();
    let o = bin()
        .args(["scan", "--timeout", "5s", "--config"])
        .arg(shipped_config())
        .env("REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("AGENT"), "{out}");
    assert!(out.contains("redis: connection refused"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(!out.to_lowercase().contains("backtrace"), "{out}");
}

/// `scan` cannot read a push source: an expected agent that nothing it
/// reads has is `missing` (exit 2), not `unknown`; and it needs neither the
/// receivers nor their variables, which `check-config --sources-only`
/// skips too.
#[test]
fn scan_reports_an_absent_expected_agent_missing_and_needs_no_receiver_variables() {
    let url = shared_redis_url();
    let prefix = unique_prefix("cli_scan_missing");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
state: {{path: false}}
sources:
  - {{name: redis, type: redis, url: "{url}", layout: keys, pattern: "{prefix}{{agent}}:last_seen"}}
  - {{name: push, type: push}}
agents:
  - {{match: market_analyst, expected: true}}
receivers:
  - {{name: oncall, type: webhook, url: "${{SCAN_TEST_UNSET_WEBHOOK}}"}}
"#
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = bin()
            .env_remove("SCAN_TEST_UNSET_WEBHOOK")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (code, out) = run(&["scan", "--timeout", "5s"]);
    assert_eq!(code, Some(2), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("market_analyst"))
        .unwrap_or_else(|| panic!("no row: {out}"));
    assert!(row.contains("missing"), "{out}");
    assert!(
        out.contains("source push: push: agents push to the running sidecar; not read by scan"),
        "{out}"
    );
    let (code, out) = run(&["check-config"]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("receivers[0].url"), "{out}");
    let (code, out) = run(&["check-config", "--sources-only"]);
    assert_eq!(code, Some(0), "{out}");
}

/// SIGTERM drains and exits 0, saving state; JSON logs are JSON.
/// A sidecar with only a push source and a state store under `dir`,
/// started (its start line seen) within 20 s. Its stderr is drained on a
/// thread, so that waiting for a line is bounded and the child never blocks
/// on a full pipe.
fn start_idle_sidecar(dir: &Path) -> (OwnedChild, PipeLines) {
    let (child, lines, _) = start_sidecar(dir, "", None);
    (child, lines)
}

/// [`start_idle_sidecar`] with `extra` config lines and, optionally, a
/// limit on the size of the files it may write (RLIMIT_FSIZE: a disk that
/// fills up); also the addresses it listens on (`listen`, `admin_listen`).
fn start_sidecar(
    dir: &Path,
    extra: &str,
    file_size_limit: Option<u64>,
) -> (OwnedChild, PipeLines, (String, String)) {
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nstate: {{path: \"{}\"}}\nsources: [{{name: push, type: push}}]\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let mut command = bin();
    command
        .args(["--log-format", "json", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    if let Some(limit) = file_size_limit {
        crate::sidecar::limit_file_size(&mut command, limit);
    }
    let mut child = OwnedChild::new(command.spawn().unwrap(), "agent-supervisor");
    // Kept with the child: dropping it would close the pipe the sidecar
    // logs to.
    let lines = PipeLines::read(child.child().stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let line = match lines.next_by(deadline) {
            NextLine::Line(line) => line,
            NextLine::Closed => panic!("process ended early: {seen:?}"),
            NextLine::TimedOut => panic!("no start line within 20 s: {seen:?}"),
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(line);
        if v["message"] == "agent-supervisor started." {
            let at = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            return (child, lines, (at("listen"), at("admin_listen")));
        }
    }
}

/// SIGTERM, then the exit status and how long the process took to exit;
/// fails (and kills it, when dropped) once `within` has passed.
fn terminate(child: &mut OwnedChild, within: Duration) -> (ExitStatus, Duration) {
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = child.wait_exit(within);
    (status, started.elapsed())
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _log) = start_idle_sidecar(dir.path());
    let (status, _) = terminate(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(dir.path().join("state/state.json").is_file());
}

#[test]
fn idle_sidecar_stops_within_a_second_of_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _log) = start_idle_sidecar(dir.path());
    let (status, took) = terminate(&mut child, Duration::from_secs(1));
    assert_eq!(status.code(), Some(0), "stopped in {took:?}");
    assert!(dir.path().join("state/state.json").is_file());
}

/// A disk that fills up (here: a file-size limit the state file outgrows)
/// is an error the sidecar reports, counts and survives, not a crash: it
/// keeps serving and keeps its previous state file.
#[test]
fn a_state_file_that_cannot_be_written_is_reported_and_the_sidecar_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines, (listen, admin)) =
        start_sidecar(dir.path(), "startup_grace: 0s\n", Some(8 * 1024));
    let base = format!("http://{listen}");
    let admin = format!("http://{admin}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        // 200 agents with long ids: the state file outgrows 8 KiB.
        for i in 0..200 {
            let url =
                format!("{admin}/api/v1/heartbeats/agent_with_a_rather_long_identifier_{i:04}");
            let r = client.post(url).send().await.unwrap();
            assert_eq!(r.status(), 202);
        }
    });
    let errors = || {
        rt.block_on(async {
            let m = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            crate::support::sample(
                &m,
                r#"agent_supervisor_state_save_errors_total{file="state.json"}"#,
            )
            .unwrap_or(0.0)
        })
    };
    crate::harness::wait_until_sync("a failed state save", Duration::from_secs(20), || {
        errors() >= 1.0
    });
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "the sidecar died"
    );
    let healthy = rt.block_on(async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(healthy, 200);
    // It said so, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lines.next_by(deadline) {
            NextLine::Line(l) if l.contains("Could not save state") => break,
            NextLine::Line(_) => {}
            other => panic!("no log line about the failed save: {other:?}"),
        }
    }
    // No temp file left behind to fill the disk further.
    let left: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `scan`'s exit code for each mix of states, read from a real Redis: 0
/// all healthy; 2 when one is stale, failing or missing, whatever else is
/// there; 3 when none is but one is unknown (an unreadable value) or a
/// source cannot be read.
#[test]
fn scan_exit_codes_follow_each_mix_of_states() {
    let url = shared_redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let now = chrono::Utc::now().timestamp();
    let healthy = now.to_string();
    let stale = (now - 3600).to_string();
    let failing = format!(r#"{{"last_seen": {now}, "status": "error", "detail": "db gone"}}"#);
    let unknown = "not a time".to_string();
    // (what, agents and their values, whether `c` is expected, exit code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a String)>, bool, i32);
    let cases: [Case; 8] = [
        (
            "all healthy",
            vec![("a", &healthy), ("b", &healthy)],
            false,
            0,
        ),
        ("one stale", vec![("a", &healthy), ("b", &stale)], false, 2),
        (
            "one failing",
            vec![("a", &healthy), ("b", &failing)],
            false,
            2,
        ),
        ("expected one missing", vec![("a", &healthy)], true, 2),
        (
            "one unknown",
            vec![("a", &healthy), ("b", &unknown)],
            false,
            3,
        ),
        (
            "stale and unknown",
            vec![("a", &stale), ("b", &unknown)],
            false,
            2,
        ),
        ("failing and missing", vec![("b", &failing)], true, 2),
        ("unknown and missing", vec![("b", &unknown)], true, 2),
    ];
    for (what, agents, expect_missing, code) in cases {
        let prefix = unique_prefix("cli_scan_mix");
        for (id, value) in &agents {
            redis::cmd("SET")
                .arg(format!("{prefix}{id}"))
                .arg(value.as_str())
                .exec(&mut conn)
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        let expected = if expect_missing {
            "  - {match: c, expected: true}\n"
        } else {
            ""
        };
        std::fs::write(
            &cfg,
            format!(
                "state: {{path: false}}\nsources:\n  - {{name: redis, type: redis, url: \"{url}\", \
                 layout: keys, pattern: \"{prefix}{{agent}}\", json_field: last_seen}}\n\
                 agents:\n{expected}  - {{match: \"*\", stale_after: 30s}}\n"
            ),
        )
        .unwrap();
        let o = bin()
            .args(["scan", "--timeout", "5s", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{what}:\n{}", text(&o));
    }
}

/// 2,000 connections that send nothing or half a header, against a sidecar
/// allowed 512 file descriptors: `/metrics` and `/healthz` still answer,
/// each within a second (idle connections give their place to new ones),
/// and the sidecar keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_slow_connections_does_not_lock_out_the_scraper() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let launch = crate::sidecar::Launch {
        open_files_limit: Some(512),
        ..Default::default()
    };
    let mut sidecar = crate::sidecar::Sidecar::start_in(
        dir.path(),
        "sidecar",
        "sources: [{name: push, type: push}]\n",
        launch,
    )
    .await;
    let addr = sidecar.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    let flood_until = Instant::now() + Duration::from_secs(10);
    for i in 0..2000 {
        if Instant::now() > flood_until {
            break;
        }
        let connect = tokio::net::TcpStream::connect(&addr);
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(500), connect).await else {
            continue;
        };
        if i % 2 == 0 {
            // Slowloris: half a request, never finished.
            let _ = s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
        }
        held.push(s);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for path in ["/healthz", "/metrics", "/healthz", "/metrics"] {
        let began = Instant::now();
        let r = client
            .get(format!("{}{path}", sidecar.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}; log:\n{}", sidecar.log_tail()));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let _ = r.text().await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{path}: {:?}",
            began.elapsed()
        );
    }
    assert!(sidecar.running(), "{}", sidecar.log_tail());
    drop(held);
}

/// 5,000 pushes of 64 KiB bodies (a 60 KiB detail each, 5,000 new agents):
/// the sidecar keeps its memory under 192 MiB and its state directory under
/// 32 MiB (the shipped limits are 256 Mi and 64 Mi), since a detail is kept
/// to 512 bytes; before that bound the state file alone would have held
/// 300 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_fat_pushes_stay_within_memory_and_disk_bounds() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = crate::sidecar::Sidecar::start_in(
        dir.path(),
        "sidecar",
        "sources: [{name: push, type: push}]\n",
        crate::sidecar::Launch::default(),
    )
    .await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({"status": "error", "detail": "x".repeat(60 * 1024)}).to_string();
    assert!(body.len() < 64 * 1024);
    let base = sidecar.admin.clone();
    let codes: Vec<u16> = futures::stream::iter(0..5000)
        .map(|i| {
            let (client, body, base) = (client.clone(), body.clone(), base.clone());
            async move {
                client
                    .post(format!("{base}/api/v1/heartbeats/fat-{i:04}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        codes.iter().all(|c| *c == 202),
        "{:?}",
        codes
            .iter()
            .filter(|c| **c != 202)
            .take(5)
            .collect::<Vec<_>>()
    );
    // Until the state is written with all of them.
    let state = dir.path().join("state/state.json");
    crate::harness::wait_until(
        "state.json holds the 5,000 agents",
        Duration::from_secs(30),
        || async { std::fs::read_to_string(&state).is_ok_and(|s| s.contains("fat-4999")) },
    )
    .await;
    let rss = sidecar.rss_bytes();
    let disk: u64 = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "after 5,000 fat pushes: RSS {} MiB, state directory {} KiB",
        rss >> 20,
        disk >> 10
    );
    assert!(rss < 192 << 20, "RSS {} MiB", rss >> 20);
    assert!(disk < 32 << 20, "state directory {} MiB", disk >> 20);
    assert!(sidecar.running());
}
