//! One `receivers:` entry: its type, URL and type-specific keys.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use super::{ReceiverConfig, ReceiverKind};
use crate::config::values::{self, check_http_scheme, headers};
use crate::config::walk::{Obj, Problems};
use crate::secret::{SecretUrl, WebhookKey};
use crate::template::Template;

const RECEIVER_TYPES: &str =
    "webhook, alertmanager, alertmanager_api, slack, discord, teams, pagerduty";

/// Keys only one receiver type reads, with that type.
const TYPE_KEYS: [(&str, &str); 4] = [
    ("template", "webhook"),
    ("resend_interval", "alertmanager_api"),
    ("routing_key", "pagerduty"),
    ("severity", "pagerduty"),
];

const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const PAGERDUTY_SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// One `receivers:` entry: its name when well-formed (for duplicate and
/// reference checks), and the receiver when it has no problem.
pub(super) fn receiver(
    item: &Value,
    path: &str,
    p: &mut Problems,
) -> (Option<String>, Option<ReceiverConfig>) {
    let mut o = Obj::new(Some(item), path, p);
    let name = values::name(&mut o, p);
    let ty = o.required_string("type", p);
    let send_resolved = o.boolean("send_resolved", p);
    let timeout = o.positive_duration("timeout", p);
    let secret = o
        .string("secret", p)
        .filter(|s| !s.is_empty())
        .and_then(|s| {
            WebhookKey::parse(&s)
                .map_err(|e| p.add(o.at("secret"), e))
                .ok()
        });
    let headers = headers(&mut o, p);
    let kind = ty.as_deref().and_then(|ty| receiver_kind(ty, &mut o, p));
    // Reported above where they do not belong; never as unknown keys.
    let _ = o.get("url");
    for (key, _) in TYPE_KEYS {
        let _ = o.get(key);
    }
    o.finish(p);
    let receiver = match (&name, kind) {
        (Some(name), Some(kind)) => Some(ReceiverConfig {
            name: name.clone(),
            kind,
            send_resolved,
            timeout,
            secret,
            headers,
        }),
        _ => None,
    };
    (name, receiver)
}

fn receiver_kind(ty: &str, o: &mut Obj<'_>, p: &mut Problems) -> Option<ReceiverKind> {
    let known = RECEIVER_TYPES.split(", ").any(|t| t == ty);
    for (key, owner) in TYPE_KEYS {
        if known && owner != ty && o.has(key) {
            p.add(o.at(key), format!("only used with `type: {owner}`"));
        }
    }
    match ty {
        "webhook" => {
            let url = receiver_url(o, None, false, p);
            let template = o
                .string("template", p)
                .filter(|t| !t.trim().is_empty())
                .and_then(|t| {
                    Template::compile(&t)
                        .map_err(|e| p.add(o.at("template"), format!("not a valid template: {e}")))
                        .ok()
                });
            Some(ReceiverKind::Webhook {
                url: url?,
                template,
            })
        }
        "alertmanager" => Some(ReceiverKind::Alertmanager {
            url: receiver_url(o, None, false, p)?,
        }),
        "alertmanager_api" => {
            let url = receiver_url(o, None, false, p);
            let resend_interval = o
                .positive_duration("resend_interval", p)
                .unwrap_or(Duration::from_secs(60));
            Some(ReceiverKind::AlertmanagerApi {
                url: url?,
                resend_interval,
            })
        }
        "slack" => Some(ReceiverKind::Slack {
            url: receiver_url(o, None, true, p)?,
        }),
        "discord" => Some(ReceiverKind::Discord {
            url: receiver_url(o, None, true, p)?,
        }),
        "teams" => Some(ReceiverKind::Teams {
            url: receiver_url(o, None, true, p)?,
        }),
        "pagerduty" => {
            let url = receiver_url(o, Some(PAGERDUTY_URL), false, p);
            // The message never shows the key.
            let routing_key = o.required_string("routing_key", p).filter(|k| {
                if k.trim().is_empty() {
                    p.add(o.at("routing_key"), "must not be empty");
                }
                !k.trim().is_empty()
            });
            let severity = match o.string("severity", p) {
                None => Some("critical".to_string()),
                Some(s) if PAGERDUTY_SEVERITIES.contains(&s.as_str()) => Some(s),
                Some(s) => {
                    p.add(
                        o.at("severity"),
                        format!(
                            "unknown severity `{s}` (supported: {})",
                            PAGERDUTY_SEVERITIES.join(", ")
                        ),
                    );
                    None
                }
            };
            Some(ReceiverKind::PagerDuty {
                url: url?,
                routing_key: SecretString::from(routing_key?),
                severity: severity?,
            })
        }
        other => {
            p.add(
                o.at("type"),
                format!("unknown receiver type `{other}` (supported: {RECEIVER_TYPES})"),
            );
            None
        }
    }
}

/// `url`: http(s) only. `credential`: the whole URL is a secret (chat
/// webhooks), shown as `https://host/***`.
fn receiver_url(
    o: &mut Obj<'_>,
    default: Option<&str>,
    credential: bool,
    p: &mut Problems,
) -> Option<SecretUrl> {
    let s = match default {
        Some(d) if !o.has("url") => d.to_string(),
        _ => o.required_string("url", p)?,
    };
    let parsed = if credential {
        SecretUrl::parse_credential(&s)
    } else {
        SecretUrl::parse(&s)
    };
    parsed
        .and_then(|u| check_http_scheme(&u).map(|()| u))
        .map_err(|e| p.add(o.at("url"), e))
        .ok()
}
