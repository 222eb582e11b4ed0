//! The schema against the loader: what the loader accepts (the shipped
//! config, the README's examples) the schema accepts, and a few mistakes
//! both reject.

use std::path::Path;

use serde_json::Value;

use super::JSON_SCHEMA;
use super::generate::json_schema;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&json_schema()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Schema errors of `text`, one line each.
fn errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    let value = yaml(text);
    v.iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Where a fragment is shown, the sources it is wrapped with.
const WRAP: &str = "sources: [{name: push, type: push}]\n";

/// The ```yaml blocks of README.md. A block with a top-level `sources:` line
/// is a whole config; any other is a fragment of one (receivers, routing...)
/// and is checked with a push source added.
fn readme_configs() -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut block {
            None if line.trim() == "```yaml" => block = Some((n + 2, String::new())),
            None => {}
            Some(_) if line.trim() == "```" => {
                let (at, body) = block.take().unwrap();
                let whole = body.lines().any(|l| l.starts_with("sources:"));
                out.push((at, if whole { body } else { format!("{WRAP}{body}") }));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

#[test]
fn checked_in_schema_is_current() {
    let path = root().join("config.schema.json");
    let generated = json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "config.schema.json is not the schema the config types describe; regenerate it with\n  \
         UPDATE_SCHEMA=1 cargo test --lib config::schema"
    );
    // What `agent-supervisor schema` prints: the file as this build saw it.
    assert!(JSON_SCHEMA == generated, "the compiled-in schema is stale");
}

#[test]
fn schema_accepts_the_shipped_config() {
    let text = std::fs::read_to_string(root().join("config.yaml")).unwrap();
    assert_eq!(errors(&validator(), &text), Vec::<String>::new());
}

#[test]
fn schema_accepts_the_shipped_config_with_its_alerting_example_uncommented() {
    let text = crate::config::alerting::tests::shipped_config_uncommented();
    assert_eq!(errors(&validator(), &text), Vec::<String>::new());
}

#[test]
fn shipped_config_starts_with_the_schema_line_for_editors() {
    let text = std::fs::read_to_string(root().join("config.yaml")).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("# yaml-language-server: $schema=./config.schema.json")
    );
}

#[test]
fn schema_accepts_every_yaml_example_of_the_readme() {
    let v = validator();
    let blocks = readme_configs();
    assert!(blocks.len() >= 2, "README.md has yaml examples: {blocks:?}");
    for (line, text) in blocks {
        assert_eq!(
            errors(&v, &text),
            Vec::<String>::new(),
            "README.md line {line}:\n{text}"
        );
    }
}

#[test]
fn schema_accepts_a_full_config_with_every_section() {
    let text = r#"
listen: 127.0.0.1:9464
startup_grace: 0
defaults: {stale_after: 60s, forget_after: 24h, max_clock_skew: 5s}
state: {path: false, flush_interval: 2s}
metrics: {max_agent_series: "${MAX_SERIES:-10000}"}
sources:
  - {name: r, type: redis, url: "${REDIS_URL:-redis://127.0.0.1}", layout: zset, key: hb, batch: 500, stale_after: 1m}
  - {name: p, type: postgres, url: "postgres://u@h/db", table: public.t, id_column: id,
     timestamp_column: ts, where: "x > 1", max_connections: 3}
  - name: h
    type: http
    url: http://127.0.0.1:8000/health
    method: get
    expected_status: [200, 204]
    max_body: 512KiB
    headers: {Authorization: "Bearer ${TOKEN:-}"}
    components:
      a: {pointer: /a, healthy: active}
      b: {pointer: b.status, healthy: [ok, up], last_seen: /b/ts}
  - {name: push, type: push, token: t, max_agents: 10}
agents:
  - {match: "trading_*", stale_after: 30s, for: 2m, labels: {team: trading}}
  - {match: market_analyst, expected: true}
external_url: http://sidecar:9464
api_token: "${API_TOKEN:-}"
receivers:
  - {name: w, type: webhook, url: "https://x", template: '{"t": {{ title|tojson }}}', timeout: 5s}
  - {name: am, type: alertmanager_api, url: "http://am:9093", resend_interval: 1m}
  - {name: pd, type: pagerduty, routing_key: k, severity: warning}
routing:
  receivers: [w]
  group_by: [kind]
  routes:
    - {match: {kind: [agent_stale, source_down], agent: "t*", labels: {team: trading}}, receivers: [pd], continue: true}
silences:
  - {match: {kind: agent_missing}, ends_at: 2026-12-01T00:00:00Z, comment: c}
delivery: {timeout: 10s, max_pending: 100}
"#;
    assert_eq!(errors(&validator(), text), Vec::<String>::new());
    // The loader takes it too, so the example is a real config.
    let env = |_: &str| None;
    crate::config::parse(text, Path::new("t.yaml"), &env).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn schema_rejects_what_the_loader_rejects() {
    let v = validator();
    let env = |_: &str| None;
    for (what, text) in [
        (
            "unknown root key",
            "sources: [{name: push, type: push}]\nlisten_on: x\n",
        ),
        (
            "unknown source key",
            "sources: [{name: push, type: push, tokn: x}]\n",
        ),
        ("unknown source type", "sources: [{name: a, type: redsi}]\n"),
        (
            "duration without unit",
            "sources: [{name: push, type: push, stale_after: 30}]\n",
        ),
        (
            "number out of range",
            "sources: [{name: push, type: push, max_agents: 0}]\n",
        ),
        (
            "list where a mapping goes",
            "sources: [{name: push, type: push}]\ndefaults: []\n",
        ),
        (
            "missing required url",
            "sources: [{name: r, type: redis, pattern: \"a:{agent}\"}]\n",
        ),
        ("no sources", "listen: 0.0.0.0:9464\n"),
        (
            "unknown receiver key",
            "sources: [{name: push, type: push}]\nreceivers: [{name: s, type: slack, url: \"https://x\", template: t}]\nrouting: {receivers: [s]}\n",
        ),
        (
            "unknown alert kind",
            "sources: [{name: push, type: push}]\nsilences: [{match: {kind: agent_sad}, ends_at: 2026-12-01T00:00:00Z, comment: c}]\n",
        ),
    ] {
        assert!(
            !errors(&v, text).is_empty(),
            "schema accepts {what}:\n{text}"
        );
        assert!(
            crate::config::parse(text, Path::new("t.yaml"), &env).is_err(),
            "loader accepts {what}:\n{text}"
        );
    }
}
