use super::*;
use secrecy::ExposeSecret;

use crate::core::SourceId;

// Shared with the alerting tests (`config/alerting/tests.rs`).

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse_ok_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    parse(text, Path::new("t.yaml"), env).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_ok(text: &str) -> Config {
    parse_ok_env(text, &no_env)
}

pub(super) fn problems(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    match parse(text, Path::new("t.yaml"), env) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// The problems of `text`, asserted to be exactly at `paths`, in order.
fn problems_at(text: &str, env: &dyn Fn(&str) -> Option<String>, paths: &[&str]) -> Vec<Problem> {
    let got = problems(text, env);
    let found: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(found, paths, "{got:#?}");
    got
}

#[test]
fn shipped_config_yaml_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = parse(&text, &path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.sources.iter().any(|s| s.kind.type_name() == "push"));
    assert!(c.sources.iter().any(|s| s.kind.type_name() == "redis"));
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = parse_ok("sources: [{name: push, type: push}]");
    assert_eq!(c.listeners.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(
        c.listeners.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9465")
    );
    assert!(c.listeners.read_token.is_none());
    assert_eq!(c.startup_grace, Duration::from_secs(30));
    assert_eq!(c.defaults.stale_after, Duration::from_secs(60));
    assert_eq!(c.defaults.forget_after, Duration::from_secs(86400));
    assert_eq!(c.state.path, Some(PathBuf::from("./data")));
    assert_eq!(c.metrics.max_agent_series, 10_000);
}

#[test]
fn redis_layouts_parse() {
    let c = parse_ok(
        r#"
sources:
  - {name: k, type: redis, url: "redis://127.0.0.1:6379", layout: keys, pattern: "agent:{agent}:last_seen"}
  - {name: h, type: redis, url: "rediss://h:6380/2", layout: hash, key: "agents:hb", json_field: ts}
  - {name: z, type: redis, url: "redis://127.0.0.1", layout: zset, key: "agents:heartbeat", interval: 1s}
"#,
    );
    let SourceKindConfig::Redis(k) = &c.sources[0].kind else {
        panic!()
    };
    assert_eq!(
        k.layout,
        RedisLayout::Keys(KeyPattern {
            prefix: "agent:".into(),
            suffix: ":last_seen".into()
        })
    );
    let SourceKindConfig::Redis(z) = &c.sources[2].kind else {
        panic!()
    };
    assert_eq!(z.interval, Duration::from_secs(1));
    assert_eq!(
        z.layout,
        RedisLayout::Zset {
            key: "agents:heartbeat".into()
        }
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_every_token_it_would_serve() {
    // On loopback (v4, v6, v4-mapped) no token is needed.
    for admin in [
        "127.0.0.1:9465",
        "127.3.2.1:0",
        "[::1]:9465",
        "[::ffff:127.0.0.1]:9465",
    ] {
        let c = parse_ok(&format!(
            "admin_listen: \"{admin}\"\nsources: [{{name: push, type: push}}]"
        ));
        assert_eq!(
            c.listeners.admin_listen.map(|a| a.to_string()),
            Some(admin.to_string())
        );
    }
    // Anywhere else, each missing token is a problem at its place.
    let got = problems_at(
        r#"
admin_listen: 0.0.0.0:9465
sources:
  - {name: push, type: push}
  - {name: redis, type: redis, url: "redis://127.0.0.1:6379", layout: keys, pattern: "a:{agent}"}
"#,
        &no_env,
        &["sources[0].token", "api_token"],
    );
    assert!(
        got[0].message.contains("not a loopback address"),
        "{got:#?}"
    );
    assert!(got[1].message.contains("silences"), "{got:#?}");
    // Both given: fine; an empty `${VAR:-}` is no token.
    let text =
        "admin_listen: 10.1.2.3:9465\napi_token: a\nsources: [{name: push, type: push, token: b}]";
    parse_ok(text);
    problems_at(
        "admin_listen: 10.1.2.3:9465\napi_token: \"${T:-}\"\nsources: [{name: push, type: push, token: b}]",
        &no_env,
        &["api_token"],
    );
    // `scan` and `check-config --sources-only` do not read api_token: only
    // the push token is then asked for.
    let sources_only = |text: &str| {
        parse_sections(text, Path::new("t.yaml"), &no_env, Sections::SourcesOnly)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(
        sources_only("admin_listen: 0.0.0.0:9465\nsources: [{name: push, type: push, token: b}]"),
        None
    );
}

#[test]
fn listeners_must_not_overlap_and_push_needs_the_admin_listener() {
    problems_at(
        "listen: 0.0.0.0:9464\nadmin_listen: 127.0.0.1:9464\nsources: [{name: p, type: push}]",
        &no_env,
        &["admin_listen"],
    );
    problems_at(
        "admin_listen: false\nsources: [{name: p, type: push}]",
        &no_env,
        &["sources[0]"],
    );
    problems_at(
        "admin_listen: nowhere\nsources: [{name: p, type: push}]",
        &no_env,
        &["admin_listen"],
    );
    // Port 0 on both (tests): two different ports once bound.
    parse_ok("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nsources: [{name: p, type: push}]");
    let c = parse_ok(
        "admin_listen: false\nread_token: r\nsources: [{name: r, type: redis, url: \"redis://127.0.0.1:6379\", layout: keys, pattern: \"a:{agent}\"}]",
    );
    assert!(c.listeners.admin_listen.is_none());
    assert!(c.listeners.read_token.is_some());
}

#[test]
fn three_mistakes_are_all_reported_with_their_paths() {
    let text = r#"
listen: 0.0.0.0:9464
defaults: {stale_after: soon}
sources:
  - {name: redis, type: redis, url: "redis://127.0.0.1:6379", layout: keys, pattern: "agent:last_seen"}
  - {name: push, type: push, tokn: x}
"#;
    problems_at(
        text,
        &no_env,
        &[
            "defaults.stale_after",
            "sources[0].pattern",
            "sources[1].tokn",
        ],
    );
}

/// A config with six independent mistakes (`testdata/six_mistakes.yaml`,
/// also run through the binary in tests/it/cli.rs).
pub(crate) const SIX_MISTAKES: &str = include_str!("testdata/six_mistakes.yaml");

#[test]
fn six_independent_mistakes_are_six_problems_each_at_its_path() {
    let got = problems(SIX_MISTAKES, &no_env);
    let found: Vec<(&str, &str)> = got
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let expected = [
        ("sources[0].type", "unknown source type `redsi`"),
        ("sources[1].url", "SIX_MISTAKES_UNSET_URL is not set"),
        ("sources[2].layout", "unknown layout `key`"),
        ("sources[3].name", "duplicate source name `jobs`"),
        ("sources[4].interval", "`soon` is not a duration"),
        ("agents[0].match", "not a valid glob"),
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for ((path, message), (want_path, want)) in found.iter().zip(expected) {
        assert_eq!(*path, want_path, "{found:#?}");
        assert!(message.contains(want), "{path}: {message}");
    }
}

#[test]
fn a_missing_variable_is_one_problem_wherever_it_is_used() {
    let text = r#"
sources:
  - {name: p, type: postgres, url: "${PG_URL}", query: "select 1, now()"}
  - {name: h, type: http, url: "${HEALTH_URL}", max_body: "${MAX_BODY}", expected_status: ["${CODE}"]}
  - {name: push, type: push, max_agents: "${MAX_AGENTS}"}
"#;
    let got = problems_at(
        text,
        &no_env,
        &[
            "sources[0].url",
            "sources[1].expected_status[0]",
            "sources[1].max_body",
            "sources[1].url",
            "sources[2].max_agents",
        ],
    );
    assert!(
        got.iter().all(|p| p.message.contains("is not set")),
        "{got:#?}"
    );
}

#[test]
fn an_unknown_type_or_layout_reports_no_key_of_it_as_unknown() {
    let text = r#"
sources:
  - {name: a, type: kafka, url: "kafka://x", topic: t}
  - {name: b, type: redis, url: "redis://x", layout: list, key: k, pattern: "a:{agent}"}
receivers:
  - {name: r, type: pagerduti, url: "https://x.example", routing_key: k}
routing: {receivers: [r]}
"#;
    problems_at(
        text,
        &no_env,
        &["sources[0].type", "sources[1].layout", "receivers[0].type"],
    );
}

#[test]
fn entries_with_problems_still_take_part_in_cross_checks() {
    let text = r#"
sources:
  - {name: a, type: redis, url: "redis://x", pattern: "no-agent"}
  - {name: a, type: push, tokn: x}
  - {name: b, type: push}
agents:
  - {match: "x[", expected: true}
delivery: {initial_backoff: 10s, max_backoff: later}
defaults: {stale_after: 0s}
"#;
    problems_at(
        text,
        &no_env,
        &[
            "defaults.stale_after",
            "sources[0].pattern",
            "sources[1].tokn",
            "sources[1].name",
            "sources[2].type",
            "agents[0].match",
            "delivery.max_backoff",
        ],
    );
}

#[test]
fn unknown_type_and_layout_and_glob_are_reported() {
    let text = r#"
sources:
  - {name: a, type: kafka}
  - {name: b, type: redis, url: "redis://x", layout: list, key: k}
agents:
  - {match: "trading_[", stale_after: 1s}
  - {match: "trading_*", expected: true}
  - {match: x, labels: {agent: y, "1bad": z}}
"#;
    let got = problems(text, &no_env);
    let msgs: Vec<String> = got.iter().map(|p| p.to_string()).collect();
    let joined = msgs.join("\n");
    assert!(
        joined.contains("sources[0].type: unknown source type `kafka`"),
        "{joined}"
    );
    assert!(
        joined.contains("sources[1].layout: unknown layout `list`"),
        "{joined}"
    );
    assert!(
        joined.contains("agents[0].match: not a valid glob"),
        "{joined}"
    );
    assert!(joined.contains("agents[1].expected"), "{joined}");
    assert!(joined.contains("agents[2].labels.agent"), "{joined}");
    assert!(joined.contains("agents[2].labels.1bad"), "{joined}");
}

#[test]
fn env_substitution_applies_and_missing_variables_name_their_path() {
    let env = |n: &str| match n {
        "REDIS_URL" => Some("redis://:hunter2@10.0.0.5:6379/0".to_string()),
        _ => None,
    };
    let c = parse(
        r#"
listen: "${LISTEN:-127.0.0.1:9999}"
sources: [{name: r, type: redis, url: "${REDIS_URL}", pattern: "hb:{agent}"}]
"#,
        Path::new("t.yaml"),
        &env,
    )
    .unwrap();
    assert_eq!(c.listeners.listen.to_string(), "127.0.0.1:9999");
    let got = problems(
        "sources: [{name: r, type: redis, url: \"${NOPE_URL}\", pattern: \"hb:{agent}\"}]",
        &env,
    );
    assert_eq!(got[0].path, "sources[0].url");
    assert!(got[0].message.contains("NOPE_URL"));
}

#[test]
fn secrets_are_never_printed() {
    let env = |n: &str| match n {
        "REDIS_URL" => Some("redis://:hunter2@10.0.0.5:6379/0".to_string()),
        "TOKEN" => Some("tok-s3cret".to_string()),
        _ => None,
    };
    let text = r#"
sources:
  - {name: r, type: redis, url: "${REDIS_URL}", pattern: "hb:{agent}"}
  - {name: p, type: push, token: "${TOKEN}"}
"#;
    let c = parse(text, Path::new("t.yaml"), &env).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("tok-s3cret"), "{debug}");
    assert!(debug.contains("***"));
    // A bad URL holding a password is reported without it.
    let bad = problems(
        "sources: [{name: r, type: redis, url: \"http://u:hunter2@x\", pattern: \"hb:{agent}\"}]",
        &env,
    );
    assert!(!format!("{bad:?}").contains("hunter2"));
}

#[test]
fn yaml_syntax_error_is_reported_with_a_position() {
    let err = parse("sources: [\n  {name: x", Path::new("t.yaml"), &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{msg}");
    assert!(msg.contains("line") || msg.contains(':'), "{msg}");
}

#[test]
fn key_pattern_round_trips_and_escapes_glob_characters() {
    let k = KeyPattern::parse("hb[x]:{agent}:*").unwrap();
    assert_eq!(k.key("a1"), "hb[x]:a1:*");
    assert_eq!(k.agent("hb[x]:a1:*"), Some("a1"));
    assert_eq!(k.agent("hb[x]::*"), None);
    assert_eq!(k.scan_match(), r"hb\[x\]:*:\*");
    assert!(KeyPattern::parse("no-placeholder").is_err());
    assert!(KeyPattern::parse("{agent}:{agent}").is_err());
}

#[test]
fn duplicate_source_names_and_two_push_sources_are_rejected() {
    let got = problems(
        "sources: [{name: p, type: push}, {name: p, type: push}]",
        &no_env,
    );
    let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["sources[1].name", "sources[1].type"]);
}

#[test]
fn postgres_query_and_table_forms_parse_with_defaults() {
    let c = parse_ok(
        r#"
sources:
  - {name: q, type: postgres, url: "postgres://u:pw@db:5432/app?sslmode=require",
     query: "select agent_id, last_seen_active from agent_heartbeats;  "}
  - name: t
    type: postgres
    url: "postgresql://u@db:6543/postgres"
    interval: 30s
    timeout: 2s
    max_connections: 3
    page_size: 100
    table: public.agent_state
    id_column: agent_id
    timestamp_column: updated_at
    status_column: status
    where: "kind = 'trading'"
"#,
    );
    let SourceKindConfig::Postgres(q) = &c.sources[0].kind else {
        panic!()
    };
    assert_eq!(c.sources[0].kind.type_name(), "postgres");
    assert_eq!(q.interval, Duration::from_secs(10));
    assert_eq!(q.timeout, Duration::from_secs(5));
    assert_eq!(q.max_connections, 2);
    assert_eq!(q.page_size.get(), 5000);
    assert_eq!(q.tls_ca_file, None);
    assert_eq!(
        q.read,
        PostgresRead::Query("select agent_id, last_seen_active from agent_heartbeats".into())
    );
    let SourceKindConfig::Postgres(t) = &c.sources[1].kind else {
        panic!()
    };
    assert_eq!(t.interval, Duration::from_secs(30));
    assert_eq!(t.timeout, Duration::from_secs(2));
    assert_eq!(t.max_connections, 3);
    assert_eq!(t.page_size.get(), 100);
    assert_eq!(
        t.read,
        PostgresRead::Table(PostgresTable {
            schema: Some("public".into()),
            table: "agent_state".into(),
            id_column: "agent_id".into(),
            timestamp_column: "updated_at".into(),
            status_column: Some("status".into()),
            filter: Some("kind = 'trading'".into()),
        })
    );
}

#[test]
fn postgres_problems_are_all_reported_with_their_paths_and_no_password() {
    let text = r#"
sources:
  - {name: a, type: postgres, url: "mysql://u:hunter2@db/x", query: "select 1, now()"}
  - {name: b, type: postgres, url: "postgres://u:hunter2@db/x",
     query: "select 1, now()", table: t, id_column: id, timestamp_column: ts}
  - {name: c, type: postgres, url: "postgres://u:hunter2@db/x"}
  - {name: d, type: postgres, url: "postgres://u:hunter2@db/x", table: "a.b.c",
     timestamp_column: ts, max_connections: 11, page_size: 0}
  - {name: e, type: postgres, url: "postgres://u:hunter2@db/x", query: "select 1, now()",
     id_column: id, tls_ca_file: /nonexistent/ca.pem}
  - {name: f, type: postgres, url: "postgres://u:hunter2@db/x?sslmode=sometimes",
     query: "select 1, now()"}
"#;
    let got = problems_at(
        text,
        &no_env,
        &[
            "sources[0].url",
            "sources[1].table",
            "sources[2].query",
            "sources[3].max_connections",
            "sources[3].page_size",
            "sources[3].table",
            "sources[3].id_column",
            "sources[4].tls_ca_file",
            "sources[4].id_column",
            "sources[5].url",
        ],
    );
    let all = format!("{got:?}");
    assert!(!all.contains("hunter2"), "{all}");
    assert!(got[0].message.contains("postgres://"), "{}", got[0]);
    assert!(got[2].message.contains("`table`"), "{}", got[2]);
    assert!(got[9].message.contains("\"sometimes\""), "{}", got[9]);
}

#[test]
fn http_source_gets_its_defaults() {
    let c = parse_ok(
        r#"
sources:
  - {name: svc, type: http, url: "http://127.0.0.1:9000/health"}
"#,
    );
    let SourceKindConfig::Http(h) = &c.sources[0].kind else {
        panic!()
    };
    assert_eq!(h.interval, Duration::from_secs(10));
    assert_eq!(h.timeout, Duration::from_secs(2));
    assert_eq!(h.method, HttpMethod::Get);
    assert!(h.expected_status.is_empty(), "any 2xx");
    assert_eq!(h.max_response_time, None);
    assert_eq!(h.max_body, 1024 * 1024);
    assert_eq!(h.id, None);
    assert_eq!(h.concurrency, 16);
    assert!(h.components.is_empty() && h.agents.is_empty() && h.agents_url.is_none());
}

#[test]
fn http_source_full_form_parses_with_secret_headers() {
    let env = |name: &str| (name == "TOKEN").then(|| "s3cret-token".to_string());
    let text = r#"
sources:
  - name: python-ai-services
    type: http
    url: http://127.0.0.1:9000/health
    interval: 5s
    timeout: 1s
    method: post
    headers: {Authorization: "Bearer ${TOKEN}"}
    expected_status: [200, 503]
    max_response_time: 800ms
    max_body: 64KiB
    id: ai_services
    concurrency: 4
    components:
      trading_coordinator: {pointer: /trading_coordinator_status, healthy: [Active]}
      market_reactor: {pointer: agents.market_reactor.status, last_seen: agents.market_reactor.last_seen}
    agents_url: "http://127.0.0.1:9000/health/{agent}"
    agents: [analyst_1, "analyst 2"]
"#;
    let c = parse(text, Path::new("t.yaml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let SourceKindConfig::Http(h) = &c.sources[0].kind else {
        panic!()
    };
    assert_eq!(h.method, HttpMethod::Post);
    assert_eq!(h.expected_status, vec![200, 503]);
    assert_eq!(h.max_response_time, Some(Duration::from_millis(800)));
    assert_eq!(h.max_body, 64 * 1024);
    assert_eq!(h.id.as_deref(), Some("ai_services"));
    assert_eq!(h.concurrency, 4);
    assert_eq!(h.headers.len(), 1);
    assert_eq!(h.headers[0].1.expose_secret(), "Bearer s3cret-token");
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret-token"),
        "header value printed: {debug}"
    );
    let tc = h
        .components
        .iter()
        .find(|c| c.agent == "trading_coordinator")
        .unwrap();
    assert_eq!(tc.pointer, "/trading_coordinator_status");
    assert_eq!(tc.healthy, vec!["active".to_string()]);
    assert_eq!(tc.last_seen, None);
    let mr = h
        .components
        .iter()
        .find(|c| c.agent == "market_reactor")
        .unwrap();
    assert_eq!(mr.pointer, "/agents/market_reactor/status");
    assert_eq!(mr.healthy, crate::core::HEALTHY_WORDS);
    assert_eq!(
        mr.last_seen.as_deref(),
        Some("/agents/market_reactor/last_seen")
    );
    let au = h.agents_url.as_ref().unwrap();
    assert_eq!(
        au.url("analyst 2"),
        "http://127.0.0.1:9000/health/analyst%202"
    );
    assert_eq!(h.agents, vec!["analyst_1", "analyst 2"]);
}

#[test]
fn http_source_mistakes_are_all_reported_and_never_show_a_header_value() {
    let env = |name: &str| (name == "TOKEN").then(|| "bad\nvalue-s3cret".to_string());
    let text = r#"
sources:
  - name: svc
    type: http
    url: ftp://127.0.0.1/health
    method: DELETE
    headers: {"X-Token": "${TOKEN}", "bad header": x}
    expected_status: [200, 99]
    max_body: lots
    concurrency: 0
    components:
      a: {pointer: "", healthy: []}
      b: {pointer: /b, colour: red}
    agents_url: "http://127.0.0.1:9000/health"
  - name: svc2
    type: http
    url: http://127.0.0.1/health
    method: HEAD
    id: dup
    components:
      dup: {pointer: /dup}
      both: {pointer: /both}
    agents_url: "http://127.0.0.1/h/{agent}"
    agents: [both, x, x]
"#;
    let ps = problems(text, &env);
    let all = ps
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for path in [
        "sources[0].url",
        "sources[0].method",
        "sources[0].headers.X-Token",
        "sources[0].headers.bad header",
        "sources[0].expected_status[1]",
        "sources[0].max_body",
        "sources[0].concurrency",
        "sources[0].components.a.pointer",
        "sources[0].components.a.healthy",
        "sources[0].components.b.colour",
        "sources[0].agents_url",
        "sources[0].agents",
        "sources[1].method",
        "sources[1].id",
        "sources[1].components.both",
        "sources[1].agents[2]",
    ] {
        assert!(
            ps.iter().any(|p| p.path == path),
            "no problem at {path}:\n{all}"
        );
    }
    assert!(!all.contains("s3cret"), "{all}");
}

#[test]
fn json_pointers_and_dotted_paths() {
    assert_eq!(json_pointer("/a/b").unwrap(), "/a/b");
    assert_eq!(json_pointer("a.b").unwrap(), "/a/b");
    assert_eq!(json_pointer("a/x.b").unwrap(), "/a~1x/b");
    assert!(json_pointer("/a~2").is_err());
    assert!(json_pointer("a..b").is_err());
    assert!(json_pointer("").is_err());
}

#[test]
fn an_agent_rule_may_hold_its_alerts_with_for() {
    let c = parse_ok(
        r#"
sources: [{name: push, type: push}]
agents:
  - {match: "risk_*", for: 2m}
  - {match: "*", stale_after: 30s}
"#,
    );
    let p = c.policy();
    assert_eq!(p.alert_for("risk_agent"), Duration::from_secs(120));
    assert_eq!(p.alert_for("other"), Duration::ZERO);
}

#[test]
fn depends_on_names_an_http_source_and_gives_the_core_its_service_check() {
    let c = parse_ok(
        r#"
sources:
  - {name: svc, type: http, url: "http://127.0.0.1:8000/health", interval: 3s, id: python-ai-services}
  - {name: redis, type: redis, url: "redis://127.0.0.1:6379", interval: 5s, pattern: "a:{agent}", depends_on: svc}
  - {name: push, type: push, depends_on: svc}
"#,
    );
    let p = c.policy();
    let check = CheckKey {
        agent: "python-ai-services".into(),
        source: "svc".into(),
    };
    assert_eq!(p.depends_on.get(&SourceId::from("redis")), Some(&check));
    assert_eq!(p.depends_on.get(&SourceId::from("push")), Some(&check));
    // Defaults: the service check holds its alert twice its interval, a
    // polled source its source_down twice its interval.
    assert_eq!(p.alert_for("python-ai-services"), Duration::from_secs(6));
    assert_eq!(p.down_after("redis"), Duration::from_secs(10));
    assert_eq!(p.down_after("push"), Duration::ZERO);
    assert_eq!(p.recheck_every, Duration::from_millis(500));
}

#[test]
fn an_explicit_for_and_down_after_win_over_the_defaults() {
    let c = parse_ok(
        r#"
recheck: {every: 250ms, max_per_second: 40}
sources:
  - {name: svc, type: http, url: "http://127.0.0.1:8000/health", for: 20s}
  - {name: redis, type: redis, url: "redis://127.0.0.1:6379", pattern: "a:{agent}", down_after: 1m}
agents:
  - {match: svc, for: 1s}
  - {match: "*", stale_after: 30s}
"#,
    );
    let p = c.policy();
    // An agent rule's `for:` beats the service's own.
    assert_eq!(p.alert_for("svc"), Duration::from_secs(1));
    assert_eq!(p.down_after("redis"), Duration::from_secs(60));
    assert_eq!(p.recheck_max_per_second, 40);
    let c = parse_ok(
        r#"
sources:
  - {name: svc, type: http, url: "http://127.0.0.1:8000/health", for: 20s}
"#,
    );
    assert_eq!(c.policy().alert_for("svc"), Duration::from_secs(20));
}

#[test]
fn dependencies_on_unknown_or_non_http_sources_and_cycles_are_errors() {
    let ps = problems_at(
        r#"
sources:
  - {name: a, type: http, url: "http://127.0.0.1:1/health", depends_on: b}
  - {name: b, type: http, url: "http://127.0.0.1:2/health", depends_on: a}
  - {name: r, type: redis, url: "redis://127.0.0.1:6379", pattern: "a:{agent}", depends_on: nowhere}
  - {name: s, type: redis, url: "redis://127.0.0.1:6379", pattern: "b:{agent}", depends_on: r}
  - {name: push, type: push, down_after: 5s}
"#,
        &no_env,
        &[
            "sources[0].depends_on",
            "sources[2].depends_on",
            "sources[3].depends_on",
            "sources[4].down_after",
        ],
    );
    let text: Vec<String> = ps.iter().map(|p| p.message.clone()).collect();
    assert_eq!(text[0], "dependency cycle: a -> b -> a", "{text:?}");
    assert!(text[1].contains("no source named `nowhere`"), "{text:?}");
    assert!(text[2].contains("`r` is a redis source"), "{text:?}");
    assert!(text[3].contains("never down"), "{text:?}");
}

#[test]
fn durations_longer_than_a_hundred_years_are_rejected() {
    problems_at(
        "state: {flush_interval: 99999999999999s}\nsources: [{name: push, type: push, stale_after: 200y}]\n",
        &no_env,
        &["state.flush_interval", "sources[0].stale_after"],
    );
}

#[test]
fn ha_takes_a_source_url_or_its_own_and_checks_its_timings() {
    // Any readable file stands for the CA here.
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let base = format!(
        r#"
sources:
  - {{name: redis, type: redis, url: "redis://:pw@10.0.0.5:6379", layout: keys, pattern: "a:{{agent}}"}}
  - {{name: pg, type: postgres, url: "postgres://u:p@db:5432/x", query: "select a, b from t", tls_ca_file: {ca}}}
"#
    );
    let c = parse_ok(&format!(
        "{base}ha: {{lease: {{store: redis, source: redis, ttl: 9s}}, replica_id: pod-a}}"
    ));
    let ha = c.ha.expect("ha");
    assert_eq!(ha.lease.ttl, Duration::from_secs(9));
    assert_eq!(ha.lease.renew_every, Duration::from_secs(3));
    assert_eq!(ha.fail_open_after, Duration::from_secs(18));
    assert_eq!(ha.replica_id, "pod-a");
    match &ha.lease.store {
        crate::config::ha::LeaseStore::Redis { url, key } => {
            assert_eq!(url.expose(), "redis://:pw@10.0.0.5:6379");
            assert_eq!(key, "agent-supervisor");
        }
        other => panic!("{other:?}"),
    }
    let c = parse_ok(&format!(
        "{base}ha: {{lease: {{store: postgres, source: pg, table: ops.leases, key: svc}}}}"
    ));
    match &c.ha.expect("ha").lease.store {
        crate::config::ha::LeaseStore::Postgres {
            table,
            key,
            tls_ca_file,
            ..
        } => {
            assert_eq!((table.as_str(), key.as_str()), ("ops.leases", "svc"));
            assert_eq!(tls_ca_file.as_deref(), Some(Path::new(ca)));
        }
        other => panic!("{other:?}"),
    }
    // A default replica id is this host and process.
    let c = parse_ok(&format!(
        "{base}ha: {{lease: {{store: redis, url: \"redis://r:6379\"}}}}"
    ));
    assert!(
        c.ha.expect("ha")
            .replica_id
            .ends_with(&format!("-{}", std::process::id()))
    );
    problems_at(
        &format!(
            "{base}  - {{name: push, type: push}}\nha: {{lease: {{store: redis, source: redis}}}}"
        ),
        &no_env,
        &["sources[2]"],
    );
    for (ha, at) in [
        ("{lease: {store: redis, source: pg}}", "ha.lease.source"),
        ("{lease: {store: redis, source: nope}}", "ha.lease.source"),
        (
            "{lease: {store: redis, source: redis, url: \"redis://x\"}}",
            "ha.lease.url",
        ),
        (
            "{lease: {store: mysql, url: \"redis://x\"}}",
            "ha.lease.store",
        ),
        (
            "{lease: {store: redis, url: \"postgres://x/y\"}}",
            "ha.lease.url",
        ),
        (
            "{lease: {store: redis, source: redis, ttl: 10s, renew_every: 6s}}",
            "ha.lease.renew_every",
        ),
        (
            "{lease: {store: redis, source: redis, table: t}}",
            "ha.lease.table",
        ),
        (
            "{lease: {store: postgres, source: pg, table: \"t; drop\"}}",
            "ha.lease.table",
        ),
        (
            "{lease: {store: redis, source: redis, key: \"a{b}\"}}",
            "ha.lease.key",
        ),
        (
            "{lease: {store: redis, source: redis, ttl: 10s}, fail_open_after: 5s}",
            "ha.fail_open_after",
        ),
        ("{fail_open_after: 5s}", "ha.lease"),
    ] {
        problems_at(&format!("{base}ha: {ha}"), &no_env, &[at]);
    }
}

const ACTIONS: &str = r#"
sources: [{name: push, type: push}]
actions:
  - name: restart_agent
    url: "http://127.0.0.1:8000/admin/agents/{agent}/restart?team={team}"
    headers: { Authorization: "Bearer s3cret" }
    body: '{"agent": {{ agent|tojson }}, "attempt": {{ attempt }}, "team": {{ labels.team|tojson }}}'
    timeout: 3s
    expect: [200, 202]
  - name: agent_status
    method: get
    url: "https://127.0.0.1:8000/admin/agents/{agent}/status"
remediation: { max_per_minute: 4, max_agents: 3 }
agents:
  - match: "trading_*"
    labels: { team: trading }
    remediate:
      action: restart_agent
      on: [stale, failing]
      after: 30s
      max_attempts: 3
      backoff: 5s
      verify_within: 20s
      page: at_once
      report: agent_status
"#;

#[test]
fn actions_and_remediation_parse_with_their_defaults() {
    let c = parse_ok(ACTIONS);
    let r = &c.remediation;
    assert_eq!(r.limits.max_per_minute, 4);
    assert_eq!(r.limits.max_agents, 3);
    assert!(!r.limits.dry_run);
    let restart = r.action("restart_agent").unwrap();
    assert_eq!(restart.method, reqwest::Method::POST);
    assert_eq!(restart.timeout, Duration::from_secs(3));
    assert!(restart.expects(202) && !restart.expects(204));
    let labels = crate::core::Labels::from([("team".to_string(), "a b/c".to_string())]);
    assert_eq!(
        restart.url.fill("trading/1 x", &labels).unwrap(),
        "http://127.0.0.1:8000/admin/agents/trading%2F1%20x/restart?team=a%20b%2Fc"
    );
    // An id that would be a dot segment is refused; one that merely holds
    // dots, slashes or braces stays one segment.
    assert!(restart.url.fill("..", &labels).is_err());
    assert!(restart.url.fill(".", &labels).is_err());
    assert_eq!(
        restart.url.fill("../{team}", &labels).unwrap(),
        "http://127.0.0.1:8000/admin/agents/..%2F%7Bteam%7D/restart?team=a%20b%2Fc"
    );
    let status = r.action("agent_status").unwrap();
    assert_eq!(status.method, reqwest::Method::GET);
    assert!(status.expects(200) && status.expects(299) && !status.expects(300));
    let policy = c.policy();
    let rule = policy.remedy_for("trading_1").unwrap();
    assert_eq!(
        rule.on,
        vec![crate::core::State::Stale, crate::core::State::Failing]
    );
    assert_eq!(rule.page, crate::core::remedy::PageMode::AtOnce);
    assert_eq!(rule.report.as_deref(), Some("agent_status"));
    // 30s + 3 × (3s + 20s) + 5s + 10s backoffs + 5s report + 10s margin.
    assert_eq!(rule.hold_max, Duration::from_secs(30 + 69 + 15 + 5 + 10));
    assert!(policy.remedy_for("other").is_none());
    // Defaults.
    let c = parse_ok(
        "sources: [{name: push, type: push}]\nactions: [{name: r, url: 'http://h/{agent}'}]\n\
         agents: [{match: '*', remediate: {action: r}}]",
    );
    let rule = c.policy().remedy_for("x").cloned().unwrap();
    assert_eq!(rule.on, vec![crate::core::State::Stale]);
    assert_eq!(rule.after, Duration::from_secs(10));
    assert_eq!(rule.max_attempts, 2);
    assert_eq!(rule.page, crate::core::remedy::PageMode::AfterRemediation);
    assert_eq!(c.remediation.limits.max_agents, 5);
    // Secrets stay out of Debug.
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn check_config_names_a_missing_action_a_template_that_does_not_render_and_a_bad_url() {
    let text = r#"
sources: [{name: push, type: push}]
actions:
  - name: restart_agent
    url: "ftp://127.0.0.1/admin/{agent}"
  - name: broken_body
    url: "http://127.0.0.1/admin/{agent}"
    body: '{"agent": {{ agnet|tojson }}}'
  - name: not_json
    url: "http://127.0.0.1/admin/{agent}"
    body: '{"agent": {{ agent }}}'
  - name: bad_syntax
    url: "http://127.0.0.1/admin/{agent}"
    body: '{{ agent '
  - name: quoted_not_escaped
    url: "http://127.0.0.1/admin/{agent}"
    body: '{"agent": "{{ agent }}"}'
  - name: post_status
    url: "http://127.0.0.1/admin/{agent}/status?region={region}"
agents:
  - match: "a_*"
    remediate: { action: restart }
  - match: "b_*"
    remediate: { action: post_status, report: post_status, on: [unknown], page: later }
"#;
    let got = problems_at(
        text,
        &no_env,
        &[
            "actions[0].url",
            "actions[1].body",
            "actions[2].body",
            "actions[3].body",
            "actions[4].body",
            "agents[0].remediate.action",
            "agents[1].remediate.on[0]",
            "agents[1].remediate.page",
            "agents[1].remediate.report",
            "agents[1].remediate.action",
        ],
    );
    let text_of = |path: &str| {
        got.iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap()
    };
    assert!(text_of("actions[0].url").contains("scheme must be http:// or https://"));
    assert!(
        text_of("actions[1].body").contains("the template reads agnet, not a variable"),
        "{got:#?}"
    );
    assert!(text_of("actions[2].body").contains("not JSON"), "{got:#?}");
    assert!(text_of("actions[3].body").contains("not a valid template"));
    assert!(text_of("actions[4].body").contains("|tojson"), "{got:#?}");
    assert!(
        text_of("agents[0].remediate.action")
            .contains("no action named `restart` (actions: broken_body, not_json, bad_syntax"),
        "{got:#?}"
    );
    assert!(text_of("agents[1].remediate.report").contains("read with GET"));
    assert!(
        text_of("agents[1].remediate.action").contains("{region}, a label this rule does not set")
    );
}

#[test]
fn a_sources_only_config_ignores_actions_and_remediate() {
    let text = "sources: [{name: push, type: push}]\nactions: [{name: r, url: 'ftp://x'}]\n\
                agents: [{match: '*', remediate: {action: nope}}]";
    let c = parse_sections(text, Path::new("t.yaml"), &no_env, Sections::SourcesOnly)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.policy().remedy_for("x").is_none());
}

#[test]
fn redis_urls_name_one_node_a_cluster_or_a_sentinel_service() {
    let text = r#"
sources:
  - {name: one, type: redis, url: "redis://127.0.0.1:6379/2", pattern: "a:{agent}"}
  - {name: cluster, type: redis, url: "redis-cluster://:pw@10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000", pattern: "b:{agent}"}
  - {name: sentinel, type: redis, url: "redis-sentinel://10.0.0.1:26379/0?sentinelServiceName=main&node=10.0.0.2:26379", layout: zset, key: beats}
"#;
    let cfg = parse_ok(text);
    assert_eq!(cfg.sources.len(), 3);
}

#[test]
fn a_redis_url_the_client_cannot_use_is_rejected_with_its_reason() {
    let text = r#"
sources:
  - {name: a, type: redis, url: "redis-sentinel://:s3cret@10.0.0.1:26379/0?node=10.0.0.2:26379", pattern: "a:{agent}"}
  - {name: b, type: redis, url: "redis-cluster://10.0.0.1:7000?node=10.0.0.2", pattern: "b:{agent}"}
  - {name: c, type: redis, url: "memcached://10.0.0.1", pattern: "c:{agent}"}
"#;
    let got = problems_at(
        text,
        &no_env,
        &["sources[0].url", "sources[1].url", "sources[2].url"],
    );
    let shown = format!("{got:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.to_lowercase().contains("sentinel"), "{shown}");
}
