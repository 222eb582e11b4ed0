use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use serde_json::Value;

use super::chat::*;
use super::*;
use crate::core::alert::{AlertKind, fingerprint};

// ------------------------------------------------------------- fixtures

fn ts(h: u32, m: u32, s: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2024, 3, 1, h, m, s).unwrap()
}

fn alert(i: usize, kind: AlertKind) -> Alert {
    let agent = format!("trading_agent_{i}");
    let mut labels = BTreeMap::new();
    labels.insert("team".to_string(), "trading".to_string());
    labels.insert(
        "severity".to_string(),
        if i % 2 == 0 { "warning" } else { "bogus" }.to_string(),
    );
    Alert {
        fingerprint: fingerprint(kind, &agent),
        kind,
        status: AlertStatus::Firing,
        agent: Some(agent.as_str().into()),
        source: Some("redis".into()),
        labels,
        last_seen: Some(ts(11, 58, 0)),
        age_seconds: Some(125.5),
        threshold_seconds: Some(60.0),
        starts_at: ts(12, 0, i as u32 % 60),
        ends_at: None,
        summary: format!("Agent {agent} is stale: last heartbeat 2m 6s ago (threshold 60s) <&>"),
        superseded_by: None,
        remediation: None,
    }
}

fn source_down() -> Alert {
    Alert {
        fingerprint: fingerprint(AlertKind::SourceDown, "postgres"),
        kind: AlertKind::SourceDown,
        status: AlertStatus::Firing,
        agent: None,
        source: Some("postgres".into()),
        labels: BTreeMap::new(),
        last_seen: None,
        age_seconds: None,
        threshold_seconds: None,
        starts_at: ts(12, 1, 0),
        ends_at: None,
        summary: "Source postgres cannot be read (timeout)".into(),
        superseded_by: None,
        remediation: None,
    }
}

/// Three firing alerts (two agents, one source) and one resolved.
fn notification() -> Notification {
    notification_of(vec![
        alert(1, AlertKind::AgentStale),
        alert(2, AlertKind::AgentFailing),
        source_down(),
        alert(3, AlertKind::AgentMissing).resolved(ts(12, 5, 0)),
    ])
}

fn notification_of(alerts: Vec<Alert>) -> Notification {
    Notification {
        id: "n-0001".into(),
        receiver: "ops".into(),
        group_key: "route0/ops/team=trading".into(),
        group_labels: [("team".to_string(), "trading".to_string())].into(),
        status: AlertStatus::Firing,
        alerts,
        created_at: ts(12, 10, 0),
    }
}

/// 1 000 alerts with long text everywhere, one resolved.
fn huge_notification() -> Notification {
    let mut alerts: Vec<Alert> = (0..1000)
        .map(|i| {
            let mut a = alert(i, AlertKind::AgentStale);
            a.summary = format!("{} {}", a.summary, "é🔥".repeat(3000));
            a.labels.insert("long".into(), "x".repeat(5000));
            a
        })
        .collect();
    let last = alerts.len() - 1;
    alerts[last] = alerts[last].clone().resolved(ts(13, 0, 0));
    let mut n = notification_of(alerts);
    n.group_labels.insert("long".into(), "ü".repeat(500));
    n
}

fn receiver(kind: ReceiverKind) -> ReceiverConfig {
    ReceiverConfig {
        name: "ops".into(),
        kind,
        send_resolved: None,
        timeout: None,
        secret: None,
        headers: Vec::new(),
    }
}

fn url(s: &str) -> SecretUrl {
    SecretUrl::parse(s).unwrap()
}

fn renderer(kind: ReceiverKind) -> Renderer {
    Renderer::new(&receiver(kind))
}

fn slack_r() -> Renderer {
    renderer(ReceiverKind::Slack {
        url: url("https://hooks.slack.com/services/T0/B0/X"),
    })
}
fn discord_r() -> Renderer {
    renderer(ReceiverKind::Discord {
        url: url("https://discord.com/api/webhooks/1/abc"),
    })
}
fn teams_r() -> Renderer {
    renderer(ReceiverKind::Teams {
        url: url("https://example.webhook.office.com/workflows/x"),
    })
}
fn pagerduty_r() -> Renderer {
    renderer(ReceiverKind::PagerDuty {
        url: url("https://events.pagerduty.com/v2/enqueue"),
        routing_key: SecretString::from("R0UT1NGKEY".to_string()),
        severity: "error".into(),
    })
}
fn alertmanager_r() -> Renderer {
    renderer(ReceiverKind::Alertmanager {
        url: url("http://hook.example.com/am"),
    })
}

const CTX: RenderCtx<'static> = RenderCtx {
    external_url: "https://supervisor.example.com",
};

fn bodies(r: &Renderer, n: &Notification, ctx: &RenderCtx) -> Vec<Value> {
    r.render(n, ctx)
        .unwrap()
        .into_iter()
        .map(|x| {
            assert_eq!(x.content_type, "application/json");
            serde_json::from_str(&x.body).unwrap()
        })
        .collect()
}

fn body(r: &Renderer, n: &Notification, ctx: &RenderCtx) -> Value {
    let r = r.render(n, ctx).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].id_suffix, None);
    serde_json::from_str(&r[0].body).unwrap()
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

// -------------------------------------------------------- shape checker

/// A JSON value's type, as the shape checker compares them.
fn ty(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every path of a document (`a.b[].c`; the elements of an array share the
/// path `[]`, so their shapes merge) with the types seen there.
type Shape = BTreeMap<String, BTreeSet<&'static str>>;

fn shape(v: &Value) -> Shape {
    fn walk(v: &Value, path: &str, out: &mut Shape) {
        out.entry(path.to_string()).or_default().insert(ty(v));
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, &p, out);
                }
            }
            Value::Array(xs) => {
                for x in xs {
                    walk(x, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Shape::new();
    walk(v, "", &mut out);
    out
}

/// What a format's documentation says beyond the fixture itself.
struct Schema {
    fixture: Value,
    /// Top-level keys the docs require (or, for "one of" rules, the ones we
    /// rely on); each must be in the fixture and in our body.
    required: &'static [&'static str],
    /// Objects whose keys are free-form (labels, custom details): only their
    /// type is checked, not their keys.
    open: &'static [&'static str],
    /// Paths the docs mark optional/nullable: `null` is accepted there.
    nullable: &'static [&'static str],
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/chat/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every path of `body` must exist in the fixture's shape with one of the
/// fixture's types there (null only where the fixture has null or the path
/// is nullable); the required top-level keys must be present. Returns the
/// problems found, empty when the body conforms.
fn conformance(schema: &Schema, body: &Value) -> Vec<String> {
    let want = shape(&schema.fixture);
    let got = shape(body);
    let mut problems = Vec::new();
    for (path, types) in &got {
        let under_open = schema.open.iter().any(|o| {
            path.len() > o.len() && path.starts_with(o) && path[o.len()..].starts_with(['.', '['])
        });
        if under_open {
            continue;
        }
        let Some(fixture_types) = want.get(path) else {
            problems.push(format!("`{path}` is not in the documented payload"));
            continue;
        };
        for t in types {
            let ok = fixture_types.contains(t)
                || (*t == "null" && schema.nullable.contains(&path.as_str()));
            if !ok {
                problems.push(format!("`{path}` is {t}; documented as {fixture_types:?}"));
            }
        }
    }
    for key in schema.required {
        assert!(
            schema.fixture.get(key).is_some(),
            "required key `{key}` missing from the fixture itself"
        );
        if body.get(key).is_none() {
            problems.push(format!("required `{key}` missing"));
        }
    }
    problems
}

fn assert_conforms(schema: &Schema, body: &Value) {
    let problems = conformance(schema, body);
    assert!(problems.is_empty(), "{problems:#?}\nbody: {body:#}");
}

fn slack_schema() -> Schema {
    Schema {
        fixture: fixture("slack"),
        required: &["text", "blocks"],
        open: &[],
        nullable: &[],
    }
}
fn discord_schema() -> Schema {
    Schema {
        fixture: fixture("discord"),
        // "one of content, file, embeds, poll": we always send both.
        required: &["content", "embeds"],
        open: &[],
        nullable: &[],
    }
}
fn teams_schema() -> Schema {
    Schema {
        fixture: fixture("teams"),
        required: &["type", "attachments"],
        open: &[],
        nullable: &[],
    }
}
fn pagerduty_schema() -> Schema {
    Schema {
        fixture: fixture("pagerduty"),
        required: &["routing_key", "event_action"],
        open: &["payload.custom_details"],
        nullable: &[],
    }
}
fn alertmanager_schema() -> Schema {
    Schema {
        fixture: fixture("alertmanager"),
        required: &[
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ],
        open: &[
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "alerts[].labels",
            "alerts[].annotations",
        ],
        nullable: &[],
    }
}

#[test]
fn shape_checker_catches_wrong_types_and_unknown_paths() {
    let schema = Schema {
        fixture: serde_json::json!({"a": "x", "b": [{"c": 1}, {"d": true}], "n": null}),
        required: &["a"],
        open: &[],
        nullable: &[],
    };
    assert!(
        conformance(
            &schema,
            &serde_json::json!({"a": "y", "b": [{"c": 2, "d": false}], "n": null})
        )
        .is_empty()
    );
    assert_eq!(conformance(&schema, &serde_json::json!({"a": 1})).len(), 1);
    assert_eq!(
        conformance(&schema, &serde_json::json!({"a": "y", "z": 1})).len(),
        1
    );
    assert_eq!(conformance(&schema, &serde_json::json!({"b": []})).len(), 1);
    assert_eq!(
        conformance(&schema, &serde_json::json!({"a": null})).len(),
        1
    );
}

// ------------------------------------------------------------- generic

#[test]
fn webhook_generic_json_has_every_design_field() {
    let r = renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template: None,
    });
    let n = notification();
    let b = body(&r, &n, &CTX);
    assert_eq!(b["version"], "1");
    assert_eq!(b["id"], "n-0001");
    assert_eq!(b["receiver"], "ops");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["group_key"], "route0/ops/team=trading");
    assert_eq!(b["group_labels"]["team"], "trading");
    let alerts = b["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 4);
    let a = &alerts[0];
    for key in [
        "fingerprint",
        "kind",
        "status",
        "agent",
        "source",
        "labels",
        "last_seen",
        "age_seconds",
        "threshold_seconds",
        "starts_at",
        "ends_at",
        "summary",
    ] {
        assert!(a.get(key).is_some(), "missing {key}");
    }
    assert_eq!(a["kind"], "agent_stale");
    assert_eq!(a["agent"], "trading_agent_1");
    assert_eq!(a["last_seen"], "2024-03-01T11:58:00Z");
    assert_eq!(a["age_seconds"], 125.5);
    assert_eq!(a["starts_at"], "2024-03-01T12:00:01Z");
    assert_eq!(a["ends_at"], Value::Null);
    // Source alert: no agent, no ages.
    assert_eq!(alerts[2]["agent"], Value::Null);
    assert_eq!(alerts[2]["age_seconds"], Value::Null);
    assert_eq!(alerts[3]["status"], "resolved");
    assert_eq!(alerts[3]["ends_at"], "2024-03-01T12:05:00Z");
    assert_eq!(r.url(), "https://hook.example.com/x");
}

#[test]
fn rendering_is_deterministic() {
    let n = notification();
    let webhook = renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template: None,
    });
    for r in [
        &webhook,
        &slack_r(),
        &discord_r(),
        &teams_r(),
        &pagerduty_r(),
        &alertmanager_r(),
    ] {
        assert_eq!(
            r.render(&n, &CTX).unwrap(),
            r.render(&n.clone(), &CTX).unwrap()
        );
    }
}

#[test]
fn webhook_template_renders_title() {
    let r = renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template: Some(Template::compile(r#"{"text": "{{ title }}"}"#).unwrap()),
    });
    let n = notification();
    let b = body(&r, &n, &CTX);
    assert_eq!(b["text"], n.title());
    assert_eq!(b["text"], "[FIRING:3] AgentSupervisor (team=trading)");
}

/// An agent id with a `"` (pushed ids may have one): a template that
/// quotes it by hand would send broken JSON, so its output is rejected;
/// through `tojson` it is valid and reads back.
#[test]
fn webhook_template_output_that_is_not_json_is_rejected() {
    let mut a = alert(0, AlertKind::AgentStale);
    a.agent = Some("evil\"id".into());
    let n = notification_of(vec![a]);
    let by_hand = renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template: Some(Template::compile(r#"{"agent": "{{ alerts[0].agent }}"}"#).unwrap()),
    });
    let e = by_hand.render(&n, &CTX).unwrap_err();
    assert!(matches!(e, RenderError::NotJson(_)), "{e}");
    assert!(e.to_string().contains("|tojson"), "{e}");
    let safe = renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template: Some(Template::compile(r#"{"agent": {{ alerts[0].agent|tojson }}}"#).unwrap()),
    });
    assert_eq!(body(&safe, &n, &CTX)["agent"], "evil\"id");
}

#[test]
fn webhook_template_sees_notification_alerts_and_tojson() {
    let r = renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template: Some(Template::compile(
            r#"{"n": {{ alerts|length }}, "id": {{ notification.id|tojson }}, "s": {{ alerts[0].summary|tojson }}, "st": "{{ status }}", "r": "{{ receiver }}"}"#,
            )
            .unwrap(),
        ),
    });
    let b = body(&r, &notification(), &CTX);
    assert_eq!(b["n"], 4);
    assert_eq!(b["id"], "n-0001");
    assert!(b["s"].as_str().unwrap().ends_with("<&>"));
    assert_eq!(b["st"], "firing");
    assert_eq!(b["r"], "ops");
}

#[test]
fn webhook_template_errors_are_template_errors() {
    // A syntax error fails at load (config); an error while rendering is an
    // error, not a panic.
    let mut failures = Vec::new();
    for src in [
        "{{ notification.id + 1 }}",
        "{{ notification.nope.deeper }}",
        "{{ title|nosuchfilter }}",
    ] {
        let r = renderer(ReceiverKind::Webhook {
            url: url("https://hook.example.com/x"),
            template: Some(Template::compile(src).unwrap()),
        });
        match r.render(&notification(), &CTX) {
            Err(RenderError::Template(msg)) => assert!(!msg.to_string().is_empty()),
            Err(e) => panic!("{src}: not a template error: {e}"),
            Ok(out) => failures.push(format!("{src}: rendered {out:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// -------------------------------------------------------- alertmanager

#[test]
fn alertmanager_v4_payload() {
    let n = notification();
    let b = body(&alertmanager_r(), &n, &CTX);
    assert_eq!(b["version"], "4");
    assert_eq!(b["groupKey"], "route0/ops/team=trading");
    assert_eq!(b["truncatedAlerts"], 0);
    assert_eq!(b["status"], "firing");
    assert_eq!(b["receiver"], "ops");
    assert_eq!(b["externalURL"], "https://supervisor.example.com");
    assert_eq!(b["groupLabels"]["team"], "trading");
    // Only what every alert shares (the source alert has no team label).
    assert_eq!(b["commonLabels"], serde_json::json!({}));
    let alerts = b["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 4);
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "AgentStale");
    assert_eq!(a["labels"]["agent"], "trading_agent_1");
    assert_eq!(a["labels"]["team"], "trading");
    assert_eq!(a["annotations"]["age_seconds"], "125.5");
    assert_eq!(a["annotations"]["threshold_seconds"], "60");
    assert_eq!(a["annotations"]["last_seen"], "2024-03-01T11:58:00Z");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        a["generatorURL"],
        "https://supervisor.example.com/api/v1/alerts"
    );
    assert_eq!(a["fingerprint"], n.alerts[0].fingerprint.as_str());
    assert!(alerts[2]["annotations"].get("age_seconds").is_none());
    assert_eq!(alerts[3]["status"], "resolved");
    assert_eq!(alerts[3]["endsAt"], "2024-03-01T12:05:00Z");
}

#[test]
fn alertmanager_common_annotations_are_shared_ones() {
    let mut a = alert(1, AlertKind::AgentStale);
    let mut b = alert(2, AlertKind::AgentStale);
    a.summary = "same".into();
    b.summary = "same".into();
    b.age_seconds = Some(1.0);
    let body = alertmanager_v4(&notification_of(vec![a, b]), &RenderCtx::default());
    assert_eq!(
        body["commonAnnotations"],
        serde_json::json!({"summary": "same", "threshold_seconds": "60", "last_seen": "2024-03-01T11:58:00Z"})
    );
    assert_eq!(body["commonLabels"]["alertname"], "AgentStale");
    assert_eq!(body["alerts"][0]["generatorURL"], "");
}

#[test]
fn alertmanager_matches_documented_schema() {
    let schema = alertmanager_schema();
    assert_conforms(&schema, &body(&alertmanager_r(), &notification(), &CTX));
    assert_conforms(
        &schema,
        &body(&alertmanager_r(), &notification(), &RenderCtx::default()),
    );
    assert_conforms(
        &schema,
        &body(&alertmanager_r(), &huge_notification(), &CTX),
    );
}

#[test]
fn alertmanager_api_body() {
    let r = renderer(ReceiverKind::AlertmanagerApi {
        url: url("http://alertmanager:9093/"),
        resend_interval: std::time::Duration::from_secs(60),
    });
    assert_eq!(r.url(), "http://alertmanager:9093/api/v2/alerts");
    let b = body(&r, &notification(), &CTX);
    let alerts = b.as_array().unwrap();
    assert_eq!(alerts.len(), 4);
    assert_eq!(alerts[0]["labels"]["alertname"], "AgentStale");
    assert_eq!(
        alerts[0]["annotations"]["summary"],
        notification().alerts[0].summary.as_str()
    );
    assert_eq!(alerts[0]["startsAt"], "2024-03-01T12:00:01Z");
    assert!(alerts[0].get("endsAt").is_none());
    assert_eq!(
        alerts[0]["generatorURL"],
        "https://supervisor.example.com/api/v1/alerts"
    );
    assert_eq!(alerts[3]["endsAt"], "2024-03-01T12:05:00Z");
    let b = body(&r, &notification(), &RenderCtx::default());
    assert!(b[0].get("generatorURL").is_none());
}

// ---------------------------------------------------------------- slack

#[test]
fn slack_message() {
    let n = notification();
    let b = body(&slack_r(), &n, &CTX);
    assert_eq!(b["text"], n.title());
    let blocks = b["blocks"].as_array().unwrap();
    // Header, 4 alerts, context with the link.
    assert_eq!(blocks.len(), 6);
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("[FIRING:3]")
    );
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let t = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(
        t.contains("*AgentStale*") && t.contains("trading_agent_1"),
        "{t}"
    );
    assert!(t.ends_with("*Labels:* severity=bogus, team=trading"), "{t}");
    assert!(t.contains("&lt;&amp;&gt;"), "mrkdwn is escaped: {t}");
    // Firing first, the resolved one last.
    assert!(
        blocks[4]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("✅")
    );
    assert_eq!(blocks[5]["type"], "context");
    assert!(
        blocks[5]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("https://supervisor.example.com/api/v1/alerts")
    );
    // Without an external URL and nothing left out: no context block.
    let b = body(&slack_r(), &n, &RenderCtx::default());
    assert_eq!(b["blocks"].as_array().unwrap().len(), 5);
}

#[test]
fn slack_matches_documented_schema() {
    let schema = slack_schema();
    assert_conforms(&schema, &body(&slack_r(), &notification(), &CTX));
    assert_conforms(&schema, &body(&slack_r(), &huge_notification(), &CTX));
}

#[test]
fn slack_limits_with_1000_alerts() {
    let b = body(&slack_r(), &huge_notification(), &CTX);
    let blocks = b["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), SLACK_MAX_BLOCKS);
    assert!(chars(&blocks[0]["text"]["text"]) <= SLACK_HEADER_MAX);
    for bl in blocks {
        if bl["type"] == "section" {
            assert!(chars(&bl["text"]["text"]) <= SLACK_TEXT_MAX);
        }
        for e in bl["elements"].as_array().into_iter().flatten() {
            assert!(chars(&e["text"]) <= SLACK_TEXT_MAX);
        }
    }
    let last = blocks[SLACK_MAX_BLOCKS - 1]["elements"][0]["text"]
        .as_str()
        .unwrap();
    assert!(last.starts_with("…and 952 more alerts"), "{last}");
    assert!(chars(&b["text"]) <= SLACK_TEXT_MAX);
}

// -------------------------------------------------------------- discord

#[test]
fn discord_message() {
    let n = notification();
    let b = body(&discord_r(), &n, &CTX);
    let content = b["content"].as_str().unwrap();
    assert!(content.starts_with(&n.title()));
    assert!(content.contains("https://supervisor.example.com/api/v1/alerts"));
    let embeds = b["embeds"].as_array().unwrap();
    assert_eq!(embeds.len(), 4);
    let e = &embeds[0];
    assert!(
        e["title"]
            .as_str()
            .unwrap()
            .contains("AgentStale: trading_agent_1")
    );
    assert_eq!(e["description"], n.alerts[0].summary.as_str());
    assert_eq!(e["color"], 0xE01E5A);
    assert_eq!(e["timestamp"], "2024-03-01T12:00:01Z");
    let fields = e["fields"].as_array().unwrap();
    assert!(fields.iter().all(|f| f["inline"] == false));
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "Labels" && f["value"] == "severity=bogus, team=trading")
    );
    assert_eq!(embeds[3]["color"], 0x2EB67D);
    assert_eq!(embeds[3]["timestamp"], "2024-03-01T12:05:00Z");
}

#[test]
fn discord_matches_documented_schema() {
    let schema = discord_schema();
    assert_conforms(&schema, &body(&discord_r(), &notification(), &CTX));
    assert_conforms(&schema, &body(&discord_r(), &huge_notification(), &CTX));
}

#[test]
fn discord_limits_with_1000_alerts() {
    let b = body(&discord_r(), &huge_notification(), &CTX);
    let content = b["content"].as_str().unwrap();
    assert!(content.chars().count() <= DISCORD_CONTENT_MAX);
    let embeds = b["embeds"].as_array().unwrap();
    assert!(!embeds.is_empty() && embeds.len() <= DISCORD_MAX_EMBEDS);
    let mut total = 0;
    for e in embeds {
        assert!(chars(&e["title"]) <= DISCORD_TITLE_MAX);
        assert!(chars(&e["description"]) <= DISCORD_DESCRIPTION_MAX);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= DISCORD_MAX_FIELDS);
        total += chars(&e["title"]) + chars(&e["description"]);
        for f in fields {
            assert!(chars(&f["name"]) <= DISCORD_FIELD_NAME_MAX);
            assert!(chars(&f["value"]) <= DISCORD_FIELD_VALUE_MAX);
            total += chars(&f["name"]) + chars(&f["value"]);
        }
    }
    assert!(total <= DISCORD_TOTAL_MAX, "{total}");
    let hidden = 1000 - embeds.len();
    assert!(
        content.contains(&format!("…and {hidden} more alerts")),
        "{content}"
    );
}

// ---------------------------------------------------------------- teams

#[test]
fn teams_message() {
    let n = notification();
    let b = body(&teams_r(), &n, &CTX);
    assert_eq!(b["type"], "message");
    let att = &b["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(att["contentUrl"], Value::Null);
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    let body = card["body"].as_array().unwrap();
    assert_eq!(body[0]["text"], n.title().as_str());
    assert_eq!(body[0]["weight"], "bolder");
    assert_eq!(body[0]["size"], "medium");
    assert_eq!(body[0]["wrap"], true);
    // Title, 3 elements per alert, the link line.
    assert_eq!(body.len(), 1 + 3 * 4 + 1);
    assert_eq!(body[3]["type"], "FactSet");
    let facts = body[3]["facts"].as_array().unwrap();
    assert!(
        facts
            .iter()
            .any(|f| f["title"] == "Agent" && f["value"] == "trading_agent_1")
    );
}

#[test]
fn teams_matches_documented_schema() {
    let schema = teams_schema();
    assert_conforms(&schema, &body(&teams_r(), &notification(), &CTX));
    assert_conforms(&schema, &body(&teams_r(), &huge_notification(), &CTX));
}

#[test]
fn teams_limits_with_1000_alerts() {
    let out = teams_r().render(&huge_notification(), &CTX).unwrap();
    assert!(out[0].body.len() < 28_000, "{} bytes", out[0].body.len());
    let b: Value = serde_json::from_str(&out[0].body).unwrap();
    let body = b["attachments"][0]["content"]["body"].as_array().unwrap();
    let alerts = body.iter().filter(|e| e["type"] == "FactSet").count();
    assert!((1..=TEAMS_MAX_ALERTS).contains(&alerts));
    assert!(out[0].body.len() < TEAMS_BODY_BUDGET + 2_000);
    let last = body.last().unwrap()["text"].as_str().unwrap();
    assert!(
        last.starts_with(&format!("…and {} more alerts", 1000 - alerts)),
        "{last}"
    );
}

// ------------------------------------------------------------ pagerduty

#[test]
fn pagerduty_one_event_per_alert() {
    let n = notification();
    let r = pagerduty_r();
    let out = r.render(&n, &CTX).unwrap();
    assert_eq!(out.len(), 4);
    for (o, a) in out.iter().zip(&n.alerts) {
        assert_eq!(o.id_suffix.as_deref(), Some(a.fingerprint.as_str()));
    }
    let b = bodies(&r, &n, &CTX);
    let t = &b[0];
    assert_eq!(t["routing_key"], "R0UT1NGKEY");
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], n.alerts[0].fingerprint.as_str());
    assert_eq!(t["client"], "agent-supervisor");
    assert_eq!(t["client_url"], "https://supervisor.example.com");
    let p = &t["payload"];
    assert_eq!(p["summary"], n.alerts[0].summary.as_str());
    assert_eq!(p["source"], "trading_agent_1");
    // Label `bogus` is no PagerDuty severity: the receiver's.
    assert_eq!(p["severity"], "error");
    assert_eq!(b[1]["payload"]["severity"], "warning");
    assert_eq!(p["timestamp"], "2024-03-01T12:00:01Z");
    assert_eq!(p["component"], "redis");
    assert_eq!(p["group"], "trading");
    assert_eq!(p["class"], "agent_stale");
    assert_eq!(p["custom_details"]["age_seconds"], 125.5);
    assert_eq!(p["custom_details"]["labels"]["team"], "trading");
    // Source alert: the source is the PagerDuty source, no group.
    assert_eq!(b[2]["payload"]["source"], "postgres");
    assert!(b[2]["payload"].get("group").is_none());
    // Resolved: only the three keys.
    assert_eq!(
        b[3],
        serde_json::json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "resolve",
            "dedup_key": n.alerts[3].fingerprint,
        })
    );
    assert_eq!(r.url(), "https://events.pagerduty.com/v2/enqueue");
    // No external URL: no client_url.
    assert!(
        bodies(&r, &n, &RenderCtx::default())[0]
            .get("client_url")
            .is_none()
    );
}

#[test]
fn pagerduty_matches_documented_schema() {
    let schema = pagerduty_schema();
    for b in bodies(&pagerduty_r(), &notification(), &CTX) {
        assert_conforms(&schema, &b);
        if b["event_action"] == "trigger" {
            assert!(b.get("payload").is_some());
        }
    }
    for b in bodies(&pagerduty_r(), &huge_notification(), &CTX)
        .iter()
        .step_by(97)
    {
        assert_conforms(&schema, b);
    }
}

#[test]
fn pagerduty_limits_with_1000_alerts() {
    let b = bodies(&pagerduty_r(), &huge_notification(), &CTX);
    assert_eq!(b.len(), 1000);
    for e in &b {
        if e["event_action"] == "trigger" {
            assert!(chars(&e["payload"]["summary"]) <= PAGERDUTY_SUMMARY_MAX);
            assert!(chars(&e["payload"]["summary"]) > 1000);
        }
    }
    assert_eq!(b[999]["event_action"], "resolve");
}

// ------------------------------------------------------------- resolved

/// What each alert of [`recovered`] must read, in order.
const RECOVERED: [&str; 3] = [
    "trading_agent_1 recovered at 12:03:21Z after 3m 20s stale",
    "source postgres recovered at 12:01:45Z after 45s down",
    "trading_agent_2 recovered at 12:10:02Z after 10m 0s failing",
];

/// A resolved notification: a stale agent and a source down, both
/// recovered, and a failing agent resolved by an older version (stored with
/// the summary it fired with).
fn recovered() -> Notification {
    let mut old = alert(2, AlertKind::AgentFailing);
    old.status = AlertStatus::Resolved;
    old.ends_at = Some(ts(12, 10, 2));
    let mut n = notification_of(vec![
        alert(1, AlertKind::AgentStale).resolved(ts(12, 3, 21)),
        source_down().resolved(ts(12, 1, 45)),
        old,
    ]);
    n.status = AlertStatus::Resolved;
    n
}

/// No firing words (the fixtures' firing summaries say "is stale: last
/// heartbeat" and "cannot be read") anywhere in `body`.
fn assert_no_firing_text(body: &Value) {
    let text = body.to_string();
    for firing in ["is stale", "last heartbeat", "cannot be read"] {
        assert!(
            !text.contains(firing),
            "{firing:?} in a resolved body: {text}"
        );
    }
}

fn webhook_r(template: Option<Template>) -> Renderer {
    renderer(ReceiverKind::Webhook {
        url: url("https://hook.example.com/x"),
        template,
    })
}

/// The strings at `pointer` in each element of the list `list`.
fn strings<'a>(list: &'a Value, pointer: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.pointer(pointer)?.as_str())
        .collect()
}

#[test]
fn resolved_generic_json_says_recovered_when_and_how_long() {
    let b = body(&webhook_r(None), &recovered(), &CTX);
    assert_eq!(b["status"], "resolved");
    assert_eq!(strings(&b["alerts"], "/summary"), RECOVERED);
    assert_eq!(b["alerts"][0]["ends_at"], "2024-03-01T12:03:21Z");
    assert_no_firing_text(&b);
    // A template sees the same text.
    let t = Template::compile(r#"{"s": {{ alerts[0].summary|tojson }}, "t": {{ title|tojson }}}"#)
        .unwrap();
    let b = body(&webhook_r(Some(t)), &recovered(), &CTX);
    assert_eq!(b["s"], RECOVERED[0]);
    assert_eq!(b["t"], "[RESOLVED:3] AgentSupervisor (team=trading)");
}

#[test]
fn resolved_alertmanager_annotations_say_recovered() {
    let api = renderer(ReceiverKind::AlertmanagerApi {
        url: url("http://alertmanager:9093/"),
        resend_interval: std::time::Duration::from_secs(60),
    });
    let v4 = body(&alertmanager_r(), &recovered(), &CTX);
    let pushed = body(&api, &recovered(), &CTX);
    assert_eq!(strings(&v4["alerts"], "/annotations/summary"), RECOVERED);
    assert_eq!(strings(&pushed, "/annotations/summary"), RECOVERED);
    assert_eq!(v4["alerts"][0]["endsAt"], "2024-03-01T12:03:21Z");
    assert_no_firing_text(&v4);
    assert_no_firing_text(&pushed);
}

#[test]
fn resolved_slack_message_says_recovered() {
    let b = body(&slack_r(), &recovered(), &CTX);
    let texts = strings(&b["blocks"], "/text/text");
    for want in RECOVERED {
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("✅") && t.contains(want)),
            "{want} not in {texts:?}"
        );
    }
    assert_no_firing_text(&b);
}

#[test]
fn resolved_discord_message_says_recovered() {
    let b = body(&discord_r(), &recovered(), &CTX);
    assert_eq!(strings(&b["embeds"], "/description"), RECOVERED);
    assert_no_firing_text(&b);
}

#[test]
fn resolved_teams_message_says_recovered() {
    let b = body(&teams_r(), &recovered(), &CTX);
    let texts = strings(&b["attachments"][0]["content"]["body"], "/text");
    for want in RECOVERED {
        assert!(texts.contains(&want), "{want} not in {texts:?}");
    }
    assert_no_firing_text(&b);
}

#[test]
fn resolved_pagerduty_events_carry_no_firing_text() {
    let n = recovered();
    let events = bodies(&pagerduty_r(), &n, &CTX);
    assert_eq!(events.len(), 3);
    for (e, a) in events.iter().zip(&n.alerts) {
        // Events v2 resolve: no payload, nothing that reads like a page.
        assert_eq!(
            *e,
            serde_json::json!({
                "routing_key": "R0UT1NGKEY",
                "event_action": "resolve",
                "dedup_key": a.fingerprint,
            })
        );
        assert_no_firing_text(e);
    }
}

// -------------------------------------------------------------- helpers

#[test]
fn truncate_counts_characters_and_never_splits_one() {
    assert_eq!(truncate("abc", 3), "abc");
    assert_eq!(truncate("abcd", 3), "ab…");
    assert_eq!(truncate("éé🔥🔥", 3), "éé…");
    assert_eq!(truncate("🔥🔥🔥🔥", 2).chars().count(), 2);
    assert_eq!(truncate("x", 0), "");
}

#[test]
fn remediation_notes_reach_every_format() {
    use crate::core::remedy::RemediationNote;
    let mut n = notification();
    n.alerts.truncate(1);
    n.alerts[0].remediation = Some(RemediationNote {
        summary: "remediation failed: 2 × restart_agent, last answer 500".into(),
        attempts: vec!["10:00:00Z restart_agent #1: failed (answer 500)".into()],
        report: Some("{\n  \"stuck\": true\n}".into()),
        recovered_after: None,
    });
    let text = n.alerts[0].text().into_owned();
    assert!(
        text.ends_with("; remediation failed: 2 × restart_agent, last answer 500"),
        "{text}"
    );
    let g = generic_json(&n);
    assert_eq!(
        g["alerts"][0]["remediation"]["report"],
        "{\n  \"stuck\": true\n}"
    );
    assert_eq!(g["alerts"][0]["summary"], text.as_str());
    let am = alertmanager_v4(&n, &RenderCtx::default());
    let ann = &am["alerts"][0]["annotations"];
    assert_eq!(
        ann["remediation"],
        "remediation failed: 2 × restart_agent, last answer 500"
    );
    assert_eq!(ann["report"], "{\n  \"stuck\": true\n}");
    assert!(
        ann["remediation_attempts"]
            .as_str()
            .unwrap()
            .contains("#1: failed")
    );
    // Resolved after an action: said so.
    let mut a = n.alerts[0].clone();
    a.remediation = Some(RemediationNote {
        recovered_after: Some("restart_agent".into()),
        ..RemediationNote::default()
    });
    let resolved = a.resolved(ts(12, 5, 0));
    assert!(
        resolved.text().ends_with(", after restart_agent"),
        "{}",
        resolved.text()
    );
    // No remediation: no key at all.
    let plain = generic_json(&notification());
    assert!(plain["alerts"][0].get("remediation").is_none());
}
