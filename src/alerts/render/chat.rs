//! Chat and paging formats: Slack, Discord, Microsoft Teams, PagerDuty.
//!
//! Each stays inside the service's documented limits however many alerts a
//! notification carries: what does not fit is counted in an "…and N more"
//! note, never sent to be rejected.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::{RenderCtx, alerts_link, rfc3339, truncate};
use crate::core::alert::{Alert, AlertStatus, Notification};

/// Slack: at most 50 blocks per message, a header's text at most 150
/// characters, a section's text at most 3000.
pub(super) const SLACK_MAX_BLOCKS: usize = 50;
pub(super) const SLACK_HEADER_MAX: usize = 150;
pub(super) const SLACK_TEXT_MAX: usize = 3000;

/// Discord: `content` ≤ 2000, ≤ 10 embeds, title ≤ 256, description ≤ 4096,
/// ≤ 25 fields of name ≤ 256 and value ≤ 1024, ≤ 6000 characters in all
/// embeds together.
pub(super) const DISCORD_CONTENT_MAX: usize = 2000;
pub(super) const DISCORD_MAX_EMBEDS: usize = 10;
pub(super) const DISCORD_TITLE_MAX: usize = 256;
pub(super) const DISCORD_DESCRIPTION_MAX: usize = 4096;
pub(super) const DISCORD_MAX_FIELDS: usize = 25;
pub(super) const DISCORD_FIELD_NAME_MAX: usize = 256;
pub(super) const DISCORD_FIELD_VALUE_MAX: usize = 1024;
pub(super) const DISCORD_TOTAL_MAX: usize = 6000;

/// Teams (Workflows): the request must stay under about 28 KB; we keep the
/// card's alert part under 20 000 bytes and 50 alerts.
pub(super) const TEAMS_MAX_ALERTS: usize = 50;
pub(super) const TEAMS_BODY_BUDGET: usize = 20_000;
const TEAMS_SUMMARY_MAX: usize = 1000;
const TEAMS_FACT_MAX: usize = 300;

/// PagerDuty: `payload.summary` ≤ 1024 characters.
pub(super) const PAGERDUTY_SUMMARY_MAX: usize = 1024;
const PAGERDUTY_SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

const DISCORD_RED: u32 = 0xE0_1E_5A;
const DISCORD_GREEN: u32 = 0x2E_B6_7D;

/// Firing alerts first, then resolved ones, each in notification order.
fn ordered(n: &Notification) -> Vec<&Alert> {
    n.firing().chain(n.resolved()).collect()
}

fn emoji(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "🔥",
        AlertStatus::Resolved => "✅",
    }
}

/// What the alert is about: its agent, else its source.
fn subject(a: &Alert) -> String {
    a.agent
        .as_ref()
        .map(|x| x.to_string())
        .or_else(|| a.source.as_ref().map(|x| x.to_string()))
        .unwrap_or_else(|| "-".into())
}

fn labels_line(a: &Alert) -> String {
    a.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When the alert started, or was resolved.
fn when(a: &Alert) -> String {
    match (a.status, a.ends_at) {
        (AlertStatus::Resolved, Some(t)) => format!("resolved {}", rfc3339(t)),
        _ => format!("since {}", rfc3339(a.starts_at)),
    }
}

fn more_note(hidden: usize) -> String {
    format!(
        "…and {hidden} more alert{}",
        if hidden == 1 { "" } else { "s" }
    )
}

// ---------------------------------------------------------------- Slack

/// Slack mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// [`truncate`] for escaped mrkdwn: never leaves half an entity (`&am…`).
fn slack_truncate(s: &str, max: usize) -> String {
    let t = truncate(s, max);
    if t.len() == s.len() {
        return t;
    }
    let body = t.trim_end_matches('…');
    match body.rfind('&') {
        Some(i) if !body[i..].contains(';') => format!("{}…", &body[..i]),
        _ => t,
    }
}

fn slack_section(a: &Alert) -> Value {
    let mut text = format!(
        "{} *{}* · `{}` ({})\n{}",
        emoji(a.status),
        a.kind.alertname(),
        slack_escape(&subject(a)),
        when(a),
        slack_escape(&a.text()),
    );
    let labels = labels_line(a);
    if !labels.is_empty() {
        text.push_str(&format!("\n*Labels:* {}", slack_escape(&labels)));
    }
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": slack_truncate(&text, SLACK_TEXT_MAX)},
    })
}

/// A Slack incoming-webhook message: a header, one section per alert, and a
/// context block with the "…and N more" note and the link to the alerts.
pub(super) fn slack(n: &Notification, ctx: &RenderCtx) -> Value {
    let title = n.title();
    let alerts = ordered(n);
    // Header and the closing context block take two of the 50 blocks.
    let room = SLACK_MAX_BLOCKS - 2;
    let shown = alerts.len().min(room);
    let hidden = alerts.len() - shown;

    let mut blocks = Vec::with_capacity(shown + 2);
    blocks.push(json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": truncate(&format!("{} {title}", emoji(n.status)), SLACK_HEADER_MAX),
        },
    }));
    blocks.extend(alerts.iter().take(shown).map(|a| slack_section(a)));

    let mut notes = Vec::new();
    if hidden > 0 {
        notes.push(more_note(hidden));
    }
    if let Some(link) = alerts_link(ctx) {
        notes.push(format!("<{}|All alerts>", slack_escape(&link)));
    }
    if !notes.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{
                "type": "mrkdwn",
                "text": slack_truncate(&notes.join(" · "), SLACK_TEXT_MAX),
            }],
        }));
    }
    json!({
        "text": truncate(&title, SLACK_TEXT_MAX),
        "blocks": blocks,
    })
}

// -------------------------------------------------------------- Discord

fn discord_field(name: &str, value: &str) -> Option<(Value, usize)> {
    if value.is_empty() {
        return None;
    }
    let name = truncate(name, DISCORD_FIELD_NAME_MAX);
    let value = truncate(value, DISCORD_FIELD_VALUE_MAX);
    let len = name.chars().count() + value.chars().count();
    Some((json!({"name": name, "value": value, "inline": false}), len))
}

/// One alert's embed within `budget` characters, with its size; `None`
/// when even its title and fields do not fit.
fn discord_embed(a: &Alert, budget: usize) -> Option<(Value, usize)> {
    let title = truncate(
        &format!("{} {}: {}", emoji(a.status), a.kind.alertname(), subject(a)),
        DISCORD_TITLE_MAX,
    );
    let mut size = title.chars().count();
    let mut fields = Vec::new();
    let candidates = [
        ("Status", a.status.as_str().to_string()),
        (
            "Agent",
            a.agent.as_ref().map(|x| x.to_string()).unwrap_or_default(),
        ),
        (
            "Source",
            a.source.as_ref().map(|x| x.to_string()).unwrap_or_default(),
        ),
        ("Labels", labels_line(a)),
        ("When", when(a)),
    ];
    for (name, value) in candidates.iter().take(DISCORD_MAX_FIELDS) {
        if let Some((f, len)) = discord_field(name, value) {
            size += len;
            fields.push(f);
        }
    }
    if size > budget {
        return None;
    }
    let description = truncate(&a.text(), DISCORD_DESCRIPTION_MAX.min(budget - size));
    size += description.chars().count();
    let timestamp = match (a.status, a.ends_at) {
        (AlertStatus::Resolved, Some(t)) => t,
        _ => a.starts_at,
    };
    let mut e = Map::new();
    e.insert("title".into(), Value::String(title));
    if !description.is_empty() {
        e.insert("description".into(), Value::String(description));
    }
    let color = match a.status {
        AlertStatus::Firing => DISCORD_RED,
        AlertStatus::Resolved => DISCORD_GREEN,
    };
    e.insert("color".into(), json!(color));
    e.insert("fields".into(), Value::Array(fields));
    e.insert("timestamp".into(), Value::String(rfc3339(timestamp)));
    Some((Value::Object(e), size))
}

/// A Discord Execute Webhook body: the title as `content`, one embed per
/// alert (at most 10, 6000 characters in all); a note in `content` counts
/// the alerts left out.
pub(super) fn discord(n: &Notification, ctx: &RenderCtx) -> Value {
    let alerts = ordered(n);
    let mut budget = DISCORD_TOTAL_MAX;
    let mut embeds = Vec::new();
    for a in alerts.iter().take(DISCORD_MAX_EMBEDS) {
        match discord_embed(a, budget) {
            Some((e, size)) => {
                budget -= size;
                embeds.push(e);
            }
            None => break,
        }
    }
    let hidden = alerts.len() - embeds.len();
    let mut content = n.title();
    if hidden > 0 {
        content.push('\n');
        content.push_str(&more_note(hidden));
    }
    if let Some(link) = alerts_link(ctx) {
        content.push('\n');
        content.push_str(&link);
    }
    json!({
        "content": truncate(&content, DISCORD_CONTENT_MAX),
        "embeds": embeds,
    })
}

// ---------------------------------------------------------------- Teams

fn teams_alert(a: &Alert) -> Vec<Value> {
    let mut facts = vec![
        ("Status", a.status.as_str().to_string()),
        ("Kind", a.kind.as_str().to_string()),
    ];
    if let Some(x) = &a.agent {
        facts.push(("Agent", x.to_string()));
    }
    if let Some(x) = &a.source {
        facts.push(("Source", x.to_string()));
    }
    let labels = labels_line(a);
    if !labels.is_empty() {
        facts.push(("Labels", labels));
    }
    facts.push(("When", when(a)));
    vec![
        json!({
            "type": "TextBlock",
            "text": format!("{} {}: {}", emoji(a.status), a.kind.alertname(), subject(a)),
            "weight": "bolder",
            "wrap": true,
        }),
        json!({
            "type": "TextBlock",
            "text": truncate(&a.text(), TEAMS_SUMMARY_MAX),
            "wrap": true,
        }),
        json!({
            "type": "FactSet",
            "facts": facts
                .into_iter()
                .map(|(t, v)| json!({"title": t, "value": truncate(&v, TEAMS_FACT_MAX)}))
                .collect::<Vec<_>>(),
        }),
    ]
}

/// A Teams Workflows message carrying one Adaptive Card: the title, then per
/// alert a heading, its summary and a fact set; at most 50 alerts and about
/// 20 KB of them, then an "…and N more" line.
pub(super) fn teams(n: &Notification, ctx: &RenderCtx) -> Value {
    let alerts = ordered(n);
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": truncate(&n.title(), TEAMS_SUMMARY_MAX),
        "weight": "bolder",
        "size": "medium",
        "wrap": true,
    })];
    let mut used = 0usize;
    let mut shown = 0usize;
    for a in alerts.iter().take(TEAMS_MAX_ALERTS) {
        let elems = teams_alert(a);
        let size: usize = elems.iter().map(|e| e.to_string().len()).sum();
        if used + size > TEAMS_BODY_BUDGET {
            break;
        }
        used += size;
        shown += 1;
        body.extend(elems);
    }
    let hidden = alerts.len() - shown;
    let mut notes = Vec::new();
    if hidden > 0 {
        notes.push(more_note(hidden));
    }
    if let Some(link) = alerts_link(ctx) {
        notes.push(format!("[All alerts]({link})"));
    }
    if !notes.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": notes.join(" · "),
            "wrap": true,
        }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

// ------------------------------------------------------------ PagerDuty

/// The alert's `severity` label when PagerDuty knows it, else the
/// receiver's, else `critical`.
fn pagerduty_severity(a: &Alert, default: &str) -> &'static str {
    let known = |s: &str| {
        let s = s.to_ascii_lowercase();
        PAGERDUTY_SEVERITIES.into_iter().find(|k| *k == s)
    };
    a.labels
        .get("severity")
        .and_then(|s| known(s))
        .or_else(|| known(default))
        .unwrap_or("critical")
}

/// One Events API v2 event: `trigger` for a firing alert, `resolve` (only
/// `routing_key`, `event_action`, `dedup_key`: no text that could read like
/// a firing one) for a resolved one.
pub(super) fn pagerduty(
    a: &Alert,
    n: &Notification,
    ctx: &RenderCtx,
    routing_key: &SecretString,
    default_severity: &str,
) -> Value {
    let routing_key = routing_key.expose_secret();
    if a.status == AlertStatus::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": a.fingerprint,
        });
    }
    let text = a.text();
    let summary = if text.trim().is_empty() {
        format!("{}: {}", a.kind.alertname(), subject(a))
    } else {
        text.into_owned()
    };
    let source = a
        .agent
        .as_ref()
        .map(|x| x.to_string())
        .or_else(|| a.source.as_ref().map(|x| x.to_string()))
        .unwrap_or_else(|| "agent-supervisor".into());

    let mut details = Map::new();
    details.insert("fingerprint".into(), json!(a.fingerprint));
    details.insert("kind".into(), json!(a.kind.as_str()));
    if let Some(x) = &a.agent {
        details.insert("agent".into(), json!(x.as_str()));
    }
    if let Some(x) = &a.source {
        details.insert("source".into(), json!(x.as_str()));
    }
    details.insert("labels".into(), super::labels_json(&a.labels));
    if let Some(t) = a.last_seen {
        details.insert("last_seen".into(), json!(rfc3339(t)));
    }
    if let Some(x) = a.age_seconds.filter(|x| x.is_finite()) {
        details.insert("age_seconds".into(), json!(x));
    }
    if let Some(x) = a.threshold_seconds.filter(|x| x.is_finite()) {
        details.insert("threshold_seconds".into(), json!(x));
    }
    if let Some(r) = &a.remediation {
        details.insert("remediation".into(), json!(r));
    }
    details.insert("group_key".into(), json!(n.group_key));

    let mut payload = Map::new();
    payload.insert(
        "summary".into(),
        json!(truncate(&summary, PAGERDUTY_SUMMARY_MAX)),
    );
    payload.insert("source".into(), json!(source));
    payload.insert(
        "severity".into(),
        json!(pagerduty_severity(a, default_severity)),
    );
    payload.insert("timestamp".into(), json!(rfc3339(a.starts_at)));
    if let Some(x) = &a.source {
        payload.insert("component".into(), json!(x.as_str()));
    }
    if let Some(team) = a.labels.get("team") {
        payload.insert("group".into(), json!(team));
    }
    payload.insert("class".into(), json!(a.kind.as_str()));
    payload.insert("custom_details".into(), Value::Object(details));

    let mut event = Map::new();
    event.insert("routing_key".into(), json!(routing_key));
    event.insert("event_action".into(), json!("trigger"));
    event.insert("dedup_key".into(), json!(a.fingerprint));
    event.insert("payload".into(), Value::Object(payload));
    event.insert("client".into(), json!("agent-supervisor"));
    if !ctx.external_url.is_empty() {
        event.insert("client_url".into(), json!(ctx.external_url));
    }
    Value::Object(event)
}
