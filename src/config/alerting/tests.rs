//! `external_url`, `receivers`, `routing`, `silences` and `delivery`.

use crate::config::alerting::ReceiverKind;
use crate::config::tests::{self, no_env};
use crate::config::*;
use crate::core::alert::{AlertKind, Pattern, SilenceOrigin};
use secrecy::ExposeSecret;

const SOURCES: &str = "sources: [{name: push, type: push}]\n";

fn parse_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    parse(&format!("{SOURCES}{text}"), Path::new("t.yaml"), env)
}

fn parse_ok(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    tests::parse_ok_env(&format!("{SOURCES}{text}"), env)
}

fn problems(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    tests::problems(&format!("{SOURCES}{text}"), env)
}

fn secrets(name: &str) -> Option<String> {
    match name {
        "WEBHOOK_SECRET" => Some("whsec_c2VjcmV0LXMzY3JldC1zM2NyZXQtczNjcmV0".into()),
        "PD_KEY" => Some("pd-routing-s3cret".into()),
        "TOKEN" => Some("Bearer hdr-s3cret".into()),
        "AM_URL" => Some("http://admin:pw-s3cret@alertmanager:9093".into()),
        "SLACK_URL" => Some("https://hooks.slack.com/services/T0/B0/slack-s3cret".into()),
        _ => None,
    }
}

const FULL: &str = r#"
external_url: http://sidecar.example:9464/
receivers:
  - name: oncall
    type: webhook
    url: https://hooks.example/alerts
    secret: ${WEBHOOK_SECRET}
    send_resolved: false
    timeout: 5s
    headers: { Authorization: "${TOKEN}" }
    template: '{"text": "{{ title }}"{% for a in alerts %}, "{{ a.fingerprint }}": 1{% endfor %}}'
  - name: am
    type: alertmanager_api
    url: ${AM_URL}
  - name: am-hook
    type: alertmanager
    url: http://am:9093/hook
  - name: chat
    type: slack
    url: ${SLACK_URL}
  - {name: disc, type: discord, url: "https://discord.com/api/webhooks/1/x"}
  - {name: ms, type: teams, url: "https://prod.westeurope.logic.azure.com/w?sig=abc"}
  - name: pagerduty
    type: pagerduty
    routing_key: ${PD_KEY}
    severity: warning
routing:
  group_wait: 0s
  group_interval: 30s
  repeat_interval: 2h
  send_resolved: false
  group_by: [kind, team]
  receivers: [oncall, chat]
  routes:
    - match: { kind: [agent_stale, source_down], agent: "trading_*", source: redis, labels: { team: trading } }
      receivers: [pagerduty, am]
      continue: true
      group_by: [agent]
      group_wait: 0s
      group_interval: 30s
      repeat_interval: 1h
    - match: { kind: agent_missing }
      receivers: [disc]
    - receivers: [ms]
silences:
  - match: { agent: "market_analyst*" }
    starts_at: 2026-11-28T10:00:00Z
    ends_at: 2026-11-29T10:00:00+01:00
    comment: "migrating the analyst"
    created_by: alice
  - match: { labels: { team: research } }
    ends_at: "2030-01-01T00:00:00Z"
    comment: research freeze
delivery:
  timeout: 3s
  initial_backoff: 500ms
  max_backoff: 1m
  give_up_after: 2h
  max_pending: 500
"#;

#[test]
fn full_alerting_example_parses_to_the_expected_values() {
    let c = parse_ok(FULL, &secrets);
    let a = &c.alerting;
    assert_eq!(a.external_url, "http://sidecar.example:9464");

    let names: Vec<&str> = a.receivers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["oncall", "am", "am-hook", "chat", "disc", "ms", "pagerduty"]
    );
    let types: Vec<&str> = a.receivers.iter().map(|r| r.kind.type_name()).collect();
    assert_eq!(
        types,
        [
            "webhook",
            "alertmanager_api",
            "alertmanager",
            "slack",
            "discord",
            "teams",
            "pagerduty"
        ]
    );
    let oncall = &a.receivers[0];
    assert_eq!(oncall.send_resolved, Some(false));
    assert_eq!(oncall.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        oncall.secret.as_ref().unwrap().bytes(),
        b"secret-s3cret-s3cret-s3cret"
    );
    assert_eq!(oncall.headers.len(), 1);
    assert_eq!(oncall.headers[0].0, "Authorization");
    assert_eq!(oncall.headers[0].1.expose_secret(), "Bearer hdr-s3cret");
    let ReceiverKind::Webhook { url, template } = &oncall.kind else {
        panic!()
    };
    assert_eq!(url.expose(), "https://hooks.example/alerts");
    assert!(template.as_ref().unwrap().source().contains("{{ title }}"));

    let ReceiverKind::AlertmanagerApi {
        url,
        resend_interval,
    } = &a.receivers[1].kind
    else {
        panic!()
    };
    assert_eq!(url.expose(), "http://admin:pw-s3cret@alertmanager:9093");
    assert_eq!(*resend_interval, Duration::from_secs(60));
    assert_eq!(a.receivers[1].send_resolved, None);
    assert_eq!(a.receivers[1].timeout, None);
    assert!(a.receivers[1].secret.is_none());

    // Chat webhooks: the URL is the credential, shown without path or query.
    assert_eq!(
        a.receivers[3].kind.url().redacted(),
        "https://hooks.slack.com/***"
    );
    assert_eq!(
        a.receivers[5].kind.url().redacted(),
        "https://prod.westeurope.logic.azure.com/***"
    );

    let ReceiverKind::PagerDuty {
        url,
        routing_key,
        severity,
    } = &a.receivers[6].kind
    else {
        panic!()
    };
    assert_eq!(url.expose(), "https://events.pagerduty.com/v2/enqueue");
    assert_eq!(routing_key.expose_secret(), "pd-routing-s3cret");
    assert_eq!(severity, "warning");

    let r = &a.routing;
    assert_eq!(r.group_wait, Duration::ZERO);
    assert_eq!(r.group_interval, Duration::from_secs(30));
    assert_eq!(r.repeat_interval, Duration::from_secs(7200));
    assert!(!r.send_resolved);
    assert_eq!(r.group_by, ["kind", "team"]);
    assert_eq!(r.receivers, ["oncall", "chat"]);
    assert_eq!(r.routes.len(), 3);
    let first = &r.routes[0];
    assert_eq!(
        first.matcher.kind,
        [AlertKind::AgentStale, AlertKind::SourceDown]
    );
    assert_eq!(
        first.matcher.agent,
        Some(Pattern::new("trading_*").unwrap())
    );
    assert_eq!(first.matcher.source, Some(Pattern::new("redis").unwrap()));
    assert_eq!(
        first.matcher.labels.get("team"),
        Some(&Pattern::new("trading").unwrap())
    );
    assert_eq!(first.receivers, ["pagerduty", "am"]);
    assert!(first.continue_matching);
    assert_eq!(first.group_by.as_deref(), Some(&["agent".to_string()][..]));
    assert_eq!(first.group_wait, Some(Duration::ZERO));
    assert_eq!(first.group_interval, Some(Duration::from_secs(30)));
    assert_eq!(first.repeat_interval, Some(Duration::from_secs(3600)));
    let second = &r.routes[1];
    assert_eq!(second.matcher.kind, [AlertKind::AgentMissing]);
    assert!(!second.continue_matching);
    assert_eq!(second.group_by, None);
    assert_eq!(second.group_wait, None);
    assert_eq!(second.repeat_interval, None);
    // A route without `match` takes every alert that reaches it.
    assert!(r.routes[2].matcher.is_empty());

    assert_eq!(a.silences.len(), 2);
    let s = &a.silences[0];
    assert_eq!(s.id, "config-0");
    assert_eq!(s.origin, SilenceOrigin::Config);
    assert_eq!(
        s.matchers.agent,
        Some(Pattern::new("market_analyst*").unwrap())
    );
    assert_eq!(s.starts_at.to_rfc3339(), "2026-11-28T10:00:00+00:00");
    assert_eq!(s.ends_at.to_rfc3339(), "2026-11-29T09:00:00+00:00");
    assert_eq!(s.comment, "migrating the analyst");
    assert_eq!(s.created_by, "alice");
    let s = &a.silences[1];
    assert_eq!(s.id, "config-1");
    assert_eq!(s.starts_at, chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);
    assert_eq!(s.created_by, "");

    let d = &a.delivery;
    assert_eq!(d.timeout, Duration::from_secs(3));
    assert_eq!(d.initial_backoff, Duration::from_millis(500));
    assert_eq!(d.max_backoff, Duration::from_secs(60));
    assert_eq!(d.give_up_after, Duration::from_secs(7200));
    assert_eq!(d.max_pending, 500);
}

#[test]
fn no_alerting_keys_give_the_documented_defaults() {
    let c = parse_ok("", &no_env);
    let a = &c.alerting;
    assert!(a.receivers.is_empty() && a.silences.is_empty());
    assert_eq!(a.external_url, "");
    assert_eq!(a.routing.group_wait, Duration::from_secs(10));
    assert_eq!(a.routing.group_interval, Duration::from_secs(60));
    assert_eq!(a.routing.repeat_interval, Duration::from_secs(4 * 3600));
    assert!(a.routing.send_resolved);
    assert!(a.routing.receivers.is_empty() && a.routing.routes.is_empty());
    assert_eq!(a.delivery.timeout, Duration::from_secs(10));
    assert_eq!(a.delivery.initial_backoff, Duration::from_secs(1));
    assert_eq!(a.delivery.max_backoff, Duration::from_secs(300));
    assert_eq!(a.delivery.give_up_after, Duration::from_secs(6 * 3600));
    assert_eq!(a.delivery.max_pending, 10_000);
}

#[test]
fn alerting_mistakes_are_all_reported_with_their_paths() {
    let text = r#"
external_url: ftp://sidecar
receivers:
  - {name: oncall, type: webhook, url: "https://h/x", colour: red, resend_interval: 1m}
  - {name: oncall, type: slack, url: "https://hooks.slack.com/x"}
  - {name: "bad name", type: sms, url: "https://x"}
  - {name: am, type: alertmanager_api, url: "ftp://am:9093", resend_interval: 0s}
  - {name: pd, type: pagerduty, routing_key: "", severity: fatal, headers: {"bad header": x}}
  - {name: hook, type: discord}
routing:
  group_wait: soon
  repeat_interval: 0s
  group_by: [kind, "1bad"]
  receivers: [oncall, nobody]
  routes:
    - match: {kind: [agent_stale, agent_dead], agent: "trading_[", labels: {"1x": a}, team: t}
      receivers: [pd]
    - match: {source: redis}
      receivers: []
    - match: {kind: source_down}
silences:
  - {match: {}, ends_at: 2026-11-29T10:00:00Z, comment: x}
  - {match: {agent: a}, starts_at: 2026-11-29T10:00:00Z, ends_at: 2026-11-28T10:00:00Z, comment: ""}
  - {match: {kind: nope}, ends_at: tomorrow}
delivery:
  initial_backoff: 10m
  max_backoff: 5m
  max_pending: 0
  retries: 3
"#;
    let got = problems(text, &no_env);
    let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "external_url",
            "receivers[0].resend_interval",
            "receivers[0].colour",
            "receivers[1].name",
            "receivers[2].name",
            "receivers[2].type",
            "receivers[3].url",
            "receivers[3].resend_interval",
            "receivers[4].headers.bad header",
            "receivers[4].routing_key",
            "receivers[4].severity",
            "receivers[5].url",
            "routing.group_wait",
            "routing.repeat_interval",
            "routing.group_by[1]",
            "routing.receivers[1]",
            "routing.routes[0].match.kind[1]",
            "routing.routes[0].match.agent",
            "routing.routes[0].match.labels.1x",
            "routing.routes[0].match.team",
            "routing.routes[1].receivers",
            "routing.routes[2].receivers",
            "silences[0].match",
            "silences[1].ends_at",
            "silences[1].comment",
            "silences[2].match.kind",
            "silences[2].ends_at",
            "silences[2].comment",
            "delivery.max_pending",
            "delivery.max_backoff",
            "delivery.retries",
        ],
        "{got:#?}"
    );
    let msg = |path: &str| {
        got.iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap()
    };
    assert!(msg("receivers[0].resend_interval").contains("alertmanager_api"));
    assert!(msg("receivers[1].name").contains("duplicate receiver name `oncall`"));
    assert!(msg("receivers[2].type").contains("unknown receiver type `sms`"));
    assert!(msg("receivers[4].severity").contains("critical, error, warning, info"));
    assert!(msg("routing.receivers[1]").contains("unknown receiver `nobody`"));
    assert!(
        msg("routing.routes[0].match.kind[1]")
            .contains("agent_stale, agent_failing, agent_missing, source_down")
    );
    assert!(msg("silences[0].match").contains("a silence must match something"));
    assert!(msg("silences[1].ends_at").contains("after starts_at"));
    assert!(msg("silences[2].ends_at").contains("RFC 3339"));
}

#[test]
fn receivers_without_a_default_or_a_route_are_a_problem() {
    let text = "receivers: [{name: oncall, type: webhook, url: \"http://h/x\"}]\n";
    let got = problems(text, &no_env);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "routing.receivers");
    assert!(got[0].message.contains("alerts would go nowhere"));
    // A route is enough; an unused receiver is fine.
    let c = parse_ok(
        r#"
receivers:
  - {name: oncall, type: webhook, url: "http://h/x"}
  - {name: spare, type: webhook, url: "http://h/y"}
routing: {routes: [{match: {kind: agent_stale}, receivers: [oncall]}]}
"#,
        &no_env,
    );
    assert_eq!(c.alerting.routing.routes[0].receivers, ["oncall"]);
    // A route naming a receiver that exists but has another problem is not
    // also reported as unknown.
    let got = problems(
        r#"
receivers: [{name: oncall, type: webhook, url: "gopher://h"}]
routing: {receivers: [oncall]}
"#,
        &no_env,
    );
    let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["receivers[0].url"]);
}

#[test]
fn webhook_template_syntax_error_is_reported_at_its_path() {
    let got = problems(
        r#"
receivers:
  - {name: oncall, type: webhook, url: "http://h/x", template: "{{ title "}
routing: {receivers: [oncall]}
"#,
        &no_env,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "receivers[0].template");
    assert!(
        got[0]
            .message
            .contains("not a valid template: syntax error"),
        "{}",
        got[0]
    );
}

/// A secret the standardwebhooks libraries would decode differently (not
/// base64), or too short, is refused where it is, without being shown,
/// with the command that makes a good one.
#[test]
fn a_webhook_secret_must_be_what_the_libraries_take() {
    for (secret, why) in [
        (
            "correct horse battery staple",
            "not a Standard Webhooks secret",
        ),
        ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
    ] {
        let text = format!(
            "receivers:\n  - {{name: hook, type: webhook, url: \"http://h/x\", secret: \"{secret}\"}}\nrouting: {{receivers: [hook]}}\n"
        );
        let found = problems(&text, &no_env);
        assert_eq!(found.len(), 1, "{found:?}");
        let shown = format!("{found:?}");
        assert!(shown.contains("receivers[0].secret"), "{shown}");
        assert!(shown.contains(why), "{shown}");
        assert!(shown.contains("openssl rand -base64 32"), "{shown}");
        assert!(
            !shown.contains(secret.trim_start_matches("whsec_")),
            "{shown}"
        );
    }
    let text = "receivers:\n  - {name: hook, type: webhook, url: \"http://h/x\", secret: \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"}\nrouting: {receivers: [hook]}\n";
    assert!(
        parse_ok(text, &no_env).alerting.receivers[0]
            .secret
            .is_some()
    );
}

#[test]
fn alerting_secrets_are_never_printed() {
    // Valid: nothing secret in the config's Debug.
    let c = parse_ok(FULL, &secrets);
    let debug = format!("{c:?}");
    for s in [
        "c2VjcmV0LXMzY3JldC1zM2NyZXQtczNjcmV0",
        "secret-s3cret",
        "pd-routing-s3cret",
        "hdr-s3cret",
        "pw-s3cret",
        "slack-s3cret",
        "sig=abc",
    ] {
        assert!(!debug.contains(s), "{s} printed: {debug}");
    }

    // Invalid: the same secrets in receivers with problems around them.
    let bad_header = |name: &str| match name {
        "TOKEN" => Some("bad\nhdr-s3cret".into()),
        other => secrets(other),
    };
    let text = r#"
receivers:
  - name: oncall
    type: webhook
    url: "ftp://u:pw-s3cret@h/x"
    secret: ${WEBHOOK_SECRET}
    headers: {X-Token: "${TOKEN}"}
    template: "{% if %}"
  - {name: pd, type: pagerduty, routing_key: "${PD_KEY}", severity: loud, url: "http://u:pw-s3cret@h:bad/"}
  - {name: chat, type: slack, url: "${SLACK_URL}", routing_key: "${PD_KEY}"}
routing: {receivers: [oncall, nope]}
"#;
    let err = parse_env(text, &bad_header).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let shown = format!("{err}\n{err:?}");
    for path in [
        "receivers[0].url",
        "receivers[0].headers.X-Token",
        "receivers[0].template",
        "receivers[1].url",
        "receivers[1].severity",
        "receivers[2].routing_key",
        "routing.receivers[1]",
    ] {
        assert!(
            problems.iter().any(|p| p.path == path),
            "no problem at {path}:\n{shown}"
        );
    }
    for s in [
        "c2VjcmV0LXMzY3JldC1zM2NyZXQtczNjcmV0",
        "secret-s3cret",
        "pd-routing-s3cret",
        "hdr-s3cret",
        "pw-s3cret",
        "slack-s3cret",
    ] {
        assert!(!shown.contains(s), "{s} printed: {shown}");
    }
}

#[test]
fn external_url_is_optional_and_may_be_empty() {
    let c = parse_ok("external_url: \"${EXTERNAL_URL:-}\"\n", &no_env);
    assert_eq!(c.alerting.external_url, "");
    let c = parse_ok("external_url: https://sup.example/sub//\n", &no_env);
    assert_eq!(c.alerting.external_url, "https://sup.example/sub");
}

/// The shipped `config.yaml` with its alerting example uncommented:
/// top-level keys (`# receivers:`) and their indented lines; prose comments
/// stay comments.
pub(in crate::config) fn shipped_config_uncommented() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("# Alert notifications.")
        .expect("config.yaml documents alert notifications");
    let uncommented: String = text[start..]
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with(' ')
                    || rest.split_once(':').is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    format!("{}{uncommented}", &text[..start])
}

#[test]
fn shipped_config_yaml_alerting_example_parses_when_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let text = shipped_config_uncommented();
    let env = |name: &str| match name {
        "ONCALL_WEBHOOK_URL" => Some("https://hooks.example/oncall".to_string()),
        "SLACK_WEBHOOK_URL" => Some("https://hooks.slack.com/services/T/B/x".to_string()),
        "PAGERDUTY_ROUTING_KEY" => Some("key".to_string()),
        _ => None,
    };
    let c = parse(&text, &path, &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let a = &c.alerting;
    assert_eq!(a.external_url, "http://127.0.0.1:9464");
    let names: Vec<&str> = a.receivers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["oncall", "alertmanager", "trading-chat", "pagerduty"]
    );
    assert_eq!(a.routing.receivers, ["oncall"]);
    assert_eq!(a.routing.routes.len(), 2);
    assert_eq!(a.silences.len(), 1);
    assert_eq!(a.delivery.give_up_after, Duration::from_secs(6 * 3600));
}
