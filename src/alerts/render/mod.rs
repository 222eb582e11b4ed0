//! Request bodies per receiver type: a [`Notification`] as the bytes one
//! receiver accepts.
//!
//! One [`Renderer`] per receiver, built once from its config (a webhook
//! `template` was compiled when the config loaded, so a bad template fails
//! at load, not at 3 a.m.). Rendering is pure and deterministic: the same notification and
//! context always give the same bytes (maps are sorted by key, alerts keep
//! their order, nothing reads the clock), which is what lets the outbox
//! retry a request and a receiver de-duplicate it.
//!
//! Every format says the same thing about an alert: [`Alert::text`], the
//! summary it fired with, or for a resolved alert that it recovered, when,
//! and after how long.
//!
//! Formats (`type:` of the receiver):
//!
//! - `webhook`: the generic JSON of DESIGN §5 ([`generic_json`]), or the
//!   receiver's minijinja `template` rendered with the variables
//!   `notification` (that generic JSON as a value), `alerts`, `status`,
//!   `receiver` and `title`. The template must produce exactly the body the
//!   receiver wants: it is sent as is, with `Content-Type: application/json`
//!   (use the `tojson` filter to embed values: `{"text": {{ title|tojson }}}`).
//! - `alertmanager`: Alertmanager's webhook payload, version 4.
//! - `alertmanager_api`: the body of Alertmanager's `POST /api/v2/alerts`.
//! - `slack`, `discord`, `teams`: chat messages within each service's
//!   documented size limits ([`chat`]).
//! - `pagerduty`: one Events API v2 event per alert ([`chat`]).

mod chat;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::config::alerting::{ReceiverConfig, ReceiverKind};
use crate::core::Timestamp;
use crate::core::alert::{Alert, AlertStatus, Notification};
use crate::secret::SecretUrl;
use crate::template::{Template, TemplateError};

/// What a body needs besides the notification.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderCtx<'a> {
    /// Base URL of this sidecar as people reach it; may be empty.
    pub external_url: &'a str,
}

/// One request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Appended to the notification id to make this request's id (one
    /// request per alert for PagerDuty: the alert's fingerprint); `None`
    /// for the single request of every other format.
    pub id_suffix: Option<String>,
    pub body: String,
    pub content_type: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    #[error("encode: {0}")]
    Encode(String),
    /// A template's output that is not JSON (a value it did not pass
    /// through `tojson`, such as an id with a `"`).
    #[error("the template's output is not JSON ({0}); pass values through `|tojson`")]
    NotJson(String),
}

const JSON: &str = "application/json";

/// Turns notifications into one receiver's request bodies.
#[derive(Debug)]
pub struct Renderer {
    url: SecretUrl,
    format: Format,
}

#[derive(Debug)]
enum Format {
    Webhook {
        template: Option<Template>,
    },
    Alertmanager,
    AlertmanagerApi,
    Slack,
    Discord,
    Teams,
    PagerDuty {
        routing_key: SecretString,
        severity: String,
    },
}

impl Renderer {
    /// The renderer of `receiver`, with its compiled webhook `template`.
    pub fn new(receiver: &ReceiverConfig) -> Self {
        let format = match &receiver.kind {
            ReceiverKind::Webhook { template, .. } => Format::Webhook {
                template: template.clone(),
            },
            ReceiverKind::Alertmanager { .. } => Format::Alertmanager,
            ReceiverKind::AlertmanagerApi { .. } => Format::AlertmanagerApi,
            ReceiverKind::Slack { .. } => Format::Slack,
            ReceiverKind::Discord { .. } => Format::Discord,
            ReceiverKind::Teams { .. } => Format::Teams,
            ReceiverKind::PagerDuty {
                routing_key,
                severity,
                ..
            } => Format::PagerDuty {
                routing_key: routing_key.clone(),
                severity: severity.clone(),
            },
        };
        Self {
            url: receiver.kind.url().clone(),
            format,
        }
    }

    /// Where to POST: the receiver's URL; for `alertmanager_api`,
    /// `{base}/api/v2/alerts`. Secret (it may carry a token): never log it.
    pub fn url(&self) -> String {
        let url = self.url.expose();
        match self.format {
            Format::AlertmanagerApi => {
                format!("{}/api/v2/alerts", url.trim_end_matches('/'))
            }
            _ => url.to_string(),
        }
    }

    /// The request bodies for `n`: one, or one per alert for PagerDuty.
    pub fn render(&self, n: &Notification, ctx: &RenderCtx) -> Result<Vec<Rendered>, RenderError> {
        let one = |v: Value| -> Result<Vec<Rendered>, RenderError> {
            Ok(vec![Rendered {
                id_suffix: None,
                body: encode(&v)?,
                content_type: JSON,
            }])
        };
        match &self.format {
            Format::Webhook { template: None } => one(generic_json(n)),
            Format::Webhook {
                template: Some(template),
            } => Ok(vec![Rendered {
                id_suffix: None,
                body: render_template(template, n)?,
                content_type: JSON,
            }]),
            Format::Alertmanager => one(alertmanager_v4(n, ctx)),
            Format::AlertmanagerApi => one(alertmanager_api(n, ctx)),
            Format::Slack => one(chat::slack(n, ctx)),
            Format::Discord => one(chat::discord(n, ctx)),
            Format::Teams => one(chat::teams(n, ctx)),
            Format::PagerDuty {
                routing_key,
                severity,
            } => n
                .alerts
                .iter()
                .map(|a| {
                    Ok(Rendered {
                        id_suffix: Some(a.fingerprint.clone()),
                        body: encode(&chat::pagerduty(a, n, ctx, routing_key, severity))?,
                        content_type: JSON,
                    })
                })
                .collect(),
        }
    }
}

/// The body from the receiver's template, with the variables `notification`
/// (the generic JSON), `alerts`, `status`, `receiver` and `title`.
fn render_template(template: &Template, n: &Notification) -> Result<String, RenderError> {
    let generic = generic_json(n);
    let alerts = generic
        .get("alerts")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let ctx = json!({
        "notification": generic,
        "alerts": alerts,
        "status": n.status.as_str(),
        "receiver": n.receiver,
        "title": n.title(),
    });
    let body = template.render(ctx)?;
    serde_json::from_str::<serde::de::IgnoredAny>(&body)
        .map_err(|e| RenderError::NotJson(e.to_string()))?;
    Ok(body)
}

fn encode(v: &Value) -> Result<String, RenderError> {
    serde_json::to_string(v).map_err(|e| RenderError::Encode(e.to_string()))
}

/// RFC 3339, UTC, `Z`; fractional seconds only when there are some.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn opt_time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn opt_num(x: Option<f64>) -> Value {
    // `json!(f64)` is null for NaN and infinities.
    x.map_or(Value::Null, |x| json!(x))
}

fn labels_json(l: &BTreeMap<String, String>) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The generic webhook body of DESIGN §5.
pub fn generic_json(n: &Notification) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            let mut v = json!({
                "fingerprint": a.fingerprint,
                "kind": a.kind.as_str(),
                "status": a.status.as_str(),
                "agent": a.agent.as_ref().map(|x| x.as_str()),
                "source": a.source.as_ref().map(|x| x.as_str()),
                "labels": labels_json(&a.labels),
                "last_seen": opt_time(a.last_seen),
                "age_seconds": opt_num(a.age_seconds),
                "threshold_seconds": opt_num(a.threshold_seconds),
                "starts_at": rfc3339(a.starts_at),
                "ends_at": opt_time(a.ends_at),
                "summary": a.text(),
            });
            // What remediation tried, and what the service said (only when
            // remediation is configured for the agent).
            if let Some(r) = &a.remediation {
                v["remediation"] = json!(r);
            }
            v
        })
        .collect();
    json!({
        "version": "1",
        "id": n.id,
        "receiver": n.receiver,
        "status": n.status.as_str(),
        "group_key": n.group_key,
        "group_labels": labels_json(&n.group_labels),
        "alerts": alerts,
    })
}

/// A number as an annotation value: `95`, `95.4`.
fn num_str(x: f64) -> String {
    format!("{x}")
}

/// An alert's Alertmanager annotations: `summary` (for a resolved alert,
/// that it recovered), plus `age_seconds`, `threshold_seconds` and
/// `last_seen` when known.
fn annotations(a: &Alert) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("summary".to_string(), a.text().into_owned());
    if let Some(x) = a.age_seconds.filter(|x| x.is_finite()) {
        m.insert("age_seconds".into(), num_str(x));
    }
    if let Some(x) = a.threshold_seconds.filter(|x| x.is_finite()) {
        m.insert("threshold_seconds".into(), num_str(x));
    }
    if let Some(t) = a.last_seen {
        m.insert("last_seen".into(), rfc3339(t));
    }
    if let Some(r) = &a.remediation {
        if !r.summary.is_empty() {
            m.insert("remediation".into(), r.summary.clone());
        }
        if !r.attempts.is_empty() {
            m.insert("remediation_attempts".into(), r.attempts.join("\n"));
        }
        if let Some(report) = &r.report {
            m.insert("report".into(), report.clone());
        }
    }
    m
}

/// `{external_url}/api/v1/alerts`, or `None` without an external URL.
fn alerts_link(ctx: &RenderCtx) -> Option<String> {
    let base = ctx.external_url.trim_end_matches('/');
    (!base.is_empty()).then(|| format!("{base}/api/v1/alerts"))
}

/// What Alertmanager puts in `endsAt` of a firing alert (Go's zero time).
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Alertmanager's webhook payload, version 4.
pub fn alertmanager_v4(n: &Notification, ctx: &RenderCtx) -> Value {
    let generator = alerts_link(ctx).unwrap_or_default();
    let per_alert: Vec<BTreeMap<String, String>> = n.alerts.iter().map(annotations).collect();
    let mut common_annotations = per_alert.first().cloned().unwrap_or_default();
    for ann in per_alert.iter().skip(1) {
        common_annotations.retain(|k, v| ann.get(k) == Some(v));
    }
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .zip(&per_alert)
        .map(|(a, ann)| {
            let ends_at = match (a.status, a.ends_at) {
                (AlertStatus::Resolved, Some(t)) => rfc3339(t),
                _ => GO_ZERO_TIME.to_string(),
            };
            json!({
                "status": a.status.as_str(),
                "labels": labels_json(&a.all_labels()),
                "annotations": labels_json(ann),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": ends_at,
                "generatorURL": generator,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status.as_str(),
        "receiver": n.receiver,
        "groupLabels": labels_json(&n.group_labels),
        "commonLabels": labels_json(&n.common_labels()),
        "commonAnnotations": labels_json(&common_annotations),
        "externalURL": ctx.external_url,
        "alerts": alerts,
    })
}

/// The body of Alertmanager's `POST /api/v2/alerts` (`postableAlerts`).
pub fn alertmanager_api(n: &Notification, ctx: &RenderCtx) -> Value {
    let generator = alerts_link(ctx);
    Value::Array(
        n.alerts
            .iter()
            .map(|a| {
                let mut o = Map::new();
                o.insert("labels".into(), labels_json(&a.all_labels()));
                o.insert("annotations".into(), labels_json(&annotations(a)));
                o.insert("startsAt".into(), Value::String(rfc3339(a.starts_at)));
                if a.status == AlertStatus::Resolved {
                    if let Some(t) = a.ends_at {
                        o.insert("endsAt".into(), Value::String(rfc3339(t)));
                    }
                }
                if let Some(g) = &generator {
                    o.insert("generatorURL".into(), Value::String(g.clone()));
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// `s` cut to at most `max` characters (never inside a UTF-8 character),
/// ending with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep: String = s.chars().take(max - 1).collect();
            format!("{keep}…")
        }
    }
}
