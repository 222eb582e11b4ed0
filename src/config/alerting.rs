//! `receivers:`, `routing:`, `silences:` and `delivery:`: where alert
//! notifications go, how they are grouped and paced, and how hard delivery
//! tries.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::Value;

use super::walk::{self, Obj, Problems, index};
use super::{check_http_scheme, valid_label_name, valid_name};
use crate::alerts::model::{AlertKind, Matcher, Pattern, Silence, SilenceOrigin};
use crate::secret::SecretUrl;

/// Everything about alert notifications.
#[derive(Debug, Clone, Default)]
pub struct AlertingConfig {
    pub receivers: Vec<ReceiverConfig>,
    pub routing: RoutingConfig,
    /// Silences from config: `origin: config`, ids `config-<index>`.
    pub silences: Vec<Silence>,
    pub delivery: DeliveryConfig,
    /// Base URL of this sidecar as people reach it (links in messages,
    /// Alertmanager's `externalURL`, `generatorURL`); empty when unset.
    pub external_url: String,
    /// Bearer token required to add or remove silences through the API;
    /// `None` leaves those endpoints open (bind `listen` to a private
    /// address then).
    pub api_token: Option<SecretString>,
}

/// One `receivers:` entry.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Unique; `[A-Za-z0-9_.-]{1,64}`. A label value of the metrics.
    pub name: String,
    pub kind: ReceiverKind,
    /// Overrides `routing.send_resolved` for this receiver.
    pub send_resolved: Option<bool>,
    /// Per-request timeout; `delivery.timeout` when unset.
    pub timeout: Option<Duration>,
    /// Standard Webhooks signing secret (`whsec_<base64>`, or any other
    /// string, whose UTF-8 bytes are then the key).
    pub secret: Option<SecretString>,
    /// Extra request headers (`Authorization: Bearer ...`); values are secret.
    pub headers: Vec<(String, SecretString)>,
}

#[derive(Debug, Clone)]
pub enum ReceiverKind {
    /// The generic JSON of DESIGN §5, or `template` rendered with minijinja.
    Webhook {
        url: SecretUrl,
        /// A minijinja template for the body (checked at load).
        template: Option<String>,
    },
    /// Alertmanager's webhook payload, version 4.
    Alertmanager { url: SecretUrl },
    /// Push into a running Alertmanager: `POST {url}/api/v2/alerts`.
    AlertmanagerApi {
        /// Alertmanager's base URL (`http://alertmanager:9093`).
        url: SecretUrl,
        /// Firing alerts are re-sent this often (Alertmanager resolves an
        /// alert it has not heard of for `resolve_timeout`, 5 m by default).
        resend_interval: Duration,
    },
    /// Slack incoming webhook.
    Slack { url: SecretUrl },
    /// Discord webhook.
    Discord { url: SecretUrl },
    /// Microsoft Teams: a workflow ("Post to a channel when a webhook
    /// request is received") taking an Adaptive Card message.
    Teams { url: SecretUrl },
    /// PagerDuty Events API v2: one event per alert, `dedup_key` = fingerprint.
    PagerDuty {
        /// `https://events.pagerduty.com/v2/enqueue` unless set.
        url: SecretUrl,
        routing_key: SecretString,
        /// PagerDuty severity when the agent has no `severity` label:
        /// critical, error, warning or info (default `critical`).
        severity: String,
    },
}

impl ReceiverKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ReceiverKind::Webhook { .. } => "webhook",
            ReceiverKind::Alertmanager { .. } => "alertmanager",
            ReceiverKind::AlertmanagerApi { .. } => "alertmanager_api",
            ReceiverKind::Slack { .. } => "slack",
            ReceiverKind::Discord { .. } => "discord",
            ReceiverKind::Teams { .. } => "teams",
            ReceiverKind::PagerDuty { .. } => "pagerduty",
        }
    }

    /// Where requests go.
    pub fn url(&self) -> &SecretUrl {
        match self {
            ReceiverKind::Webhook { url, .. }
            | ReceiverKind::Alertmanager { url }
            | ReceiverKind::AlertmanagerApi { url, .. }
            | ReceiverKind::Slack { url }
            | ReceiverKind::Discord { url }
            | ReceiverKind::Teams { url }
            | ReceiverKind::PagerDuty { url, .. } => url,
        }
    }
}

/// Grouping and pacing; the defaults of every route.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// A new group waits this long for more alerts before its first message.
    pub group_wait: Duration,
    /// Changes to a group already notified wait this long after its last
    /// message.
    pub group_interval: Duration,
    /// A group still firing is notified again this often.
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    /// Labels that split alerts into groups (`kind`, `agent`, `source`,
    /// `alertname`, or an agent label); empty: one group per route and
    /// receiver.
    pub group_by: Vec<String>,
    /// Receivers of alerts no route matches (names from `receivers:`).
    pub receivers: Vec<String>,
    pub routes: Vec<RouteConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
            group_by: Vec::new(),
            receivers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// One `routing.routes:` entry. Routes are tried in order; the first that
/// matches takes the alert unless it says `continue: true`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub matcher: Matcher,
    pub receivers: Vec<String>,
    pub continue_matching: bool,
    /// Each `None` inherits the routing default.
    pub group_by: Option<Vec<String>>,
    pub group_wait: Option<Duration>,
    pub group_interval: Option<Duration>,
    pub repeat_interval: Option<Duration>,
}

/// How hard delivery tries (`delivery:`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per-request timeout.
    pub timeout: Duration,
    /// First retry after about this long, doubling (with jitter) up to
    /// `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A request not delivered this long after it was queued is dropped,
    /// counted (`notifications_total{result="dropped"}`) and logged as an
    /// error.
    pub give_up_after: Duration,
    /// At most this many undelivered requests per receiver; past it the
    /// oldest are dropped, counted and logged.
    pub max_pending: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            give_up_after: Duration::from_secs(6 * 3600),
            max_pending: 10_000,
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing: the same problem-collecting walk as the rest of `config.yaml`.

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

/// Labels every alert carries besides its agent's own.
const BUILTIN_LABELS: [&str; 4] = ["alertname", "kind", "agent", "source"];

/// `external_url`, `receivers`, `routing`, `silences` and `delivery` of the
/// root mapping. Whatever is wrong is in `p`; the value returned is then
/// partial (the config is rejected anyway).
pub(super) fn parse(root: &mut Obj<'_>, p: &mut Problems) -> AlertingConfig {
    let external_url = root
        .string("external_url", p)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .and_then(|s| {
            SecretUrl::parse(&s)
                .and_then(|u| check_http_scheme(&u))
                .map_err(|e| p.add(root.at("external_url"), e))
                .ok()
                .map(|()| s.trim_end_matches('/').to_string())
        })
        .unwrap_or_default();

    let api_token = root
        .string("api_token", p)
        .filter(|t| !t.is_empty())
        .map(SecretString::from);

    let receiver_items = root.list("receivers", p);
    let mut receivers = Vec::new();
    // Every well-formed name, even of a receiver with other problems, so a
    // route naming it is not also reported.
    let mut names = BTreeSet::new();
    for (i, item) in receiver_items.iter().enumerate() {
        let path = index("receivers", i);
        let (name, r) = receiver(item, &path, p);
        if let Some(name) = name
            && !names.insert(name.clone())
        {
            p.add(
                walk::join(&path, "name"),
                format!("duplicate receiver name `{name}`"),
            );
            continue;
        }
        receivers.extend(r);
    }

    let routing = routing(root.get("routing"), &names, !receiver_items.is_empty(), p);

    let mut silences = Vec::new();
    for (i, item) in root.list("silences", p).iter().enumerate() {
        silences.extend(silence(i, item, &index("silences", i), p));
    }

    let delivery = delivery(root.get("delivery"), p);

    AlertingConfig {
        receivers,
        routing,
        silences,
        delivery,
        external_url,
        api_token,
    }
}

/// One `receivers:` entry: its name when well-formed (for duplicate and
/// reference checks), and the receiver when it has no problem.
fn receiver(
    item: &Value,
    path: &str,
    p: &mut Problems,
) -> (Option<String>, Option<ReceiverConfig>) {
    let mut o = Obj::new(Some(item), path, p);
    let name = o.required_string("name", p).filter(|n| {
        if !valid_name(n) {
            p.add(o.at("name"), "use 1 to 64 letters, digits, `_`, `-` or `.`");
        }
        valid_name(n)
    });
    let ty = o.required_string("type", p);
    let send_resolved = o.boolean("send_resolved", p);
    let timeout = o.positive_duration("timeout", p);
    let secret = o
        .string("secret", p)
        .filter(|s| !s.is_empty())
        .map(SecretString::from);
    let headers = super::headers(&mut o, p);
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
            let template = o.string("template", p).filter(|t| !t.trim().is_empty());
            if let Some(t) = &template {
                // Compiled as the renderer will, so what loads renders.
                if let Err(
                    crate::alerts::render::RenderError::Template(e)
                    | crate::alerts::render::RenderError::Encode(e),
                ) = crate::alerts::render::compile_template(t)
                {
                    p.add(o.at("template"), format!("not a valid template: {e}"));
                    return None;
                }
            }
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

/// `routing:`. `names`: the receivers defined; `have_receivers`: whether
/// `receivers:` lists any (then alerts must go somewhere).
fn routing(
    v: Option<&Value>,
    names: &BTreeSet<String>,
    have_receivers: bool,
    p: &mut Problems,
) -> RoutingConfig {
    let mut o = Obj::new(v, "routing", p);
    let d = RoutingConfig::default();
    let group_wait = o.duration("group_wait", p).unwrap_or(d.group_wait);
    let group_interval = o.duration("group_interval", p).unwrap_or(d.group_interval);
    let repeat_interval = o
        .positive_duration("repeat_interval", p)
        .unwrap_or(d.repeat_interval);
    let send_resolved = o.boolean("send_resolved", p).unwrap_or(d.send_resolved);
    let group_by = group_by(&mut o, p).unwrap_or_default();
    let receivers = receiver_names(&mut o, names, p);
    let routes_path = o.at("routes");
    let route_items = o.list("routes", p);
    let mut routes = Vec::new();
    for (i, item) in route_items.iter().enumerate() {
        routes.extend(route(item, &index(&routes_path, i), names, p));
    }
    if have_receivers && !o.has("receivers") && route_items.is_empty() {
        p.add(
            o.at("receivers"),
            "alerts would go nowhere: name at least one receiver",
        );
    }
    o.finish(p);
    RoutingConfig {
        group_wait,
        group_interval,
        repeat_interval,
        send_resolved,
        group_by,
        receivers,
        routes,
    }
}

/// One `routing.routes:` entry.
fn route(
    item: &Value,
    path: &str,
    names: &BTreeSet<String>,
    p: &mut Problems,
) -> Option<RouteConfig> {
    let before = p.0.len();
    let mut o = Obj::new(Some(item), path, p);
    let match_path = o.at("match");
    let matcher = matcher(o.get("match"), &match_path, p);
    if !o.has("receivers") {
        p.add(
            o.at("receivers"),
            "required: the receivers of the alerts this route matches",
        );
    }
    let receivers = receiver_names(&mut o, names, p);
    let continue_matching = o.boolean("continue", p).unwrap_or(false);
    let group_by = group_by(&mut o, p);
    let group_wait = o.duration("group_wait", p);
    let group_interval = o.duration("group_interval", p);
    let repeat_interval = o.positive_duration("repeat_interval", p);
    o.finish(p);
    (p.0.len() == before).then_some(RouteConfig {
        matcher: matcher?,
        receivers,
        continue_matching,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
    })
}

/// `receivers: [a, b]` of the routing defaults or of a route: each must be
/// defined in `receivers:`. An empty list is reported (a route must send
/// somewhere; for the defaults, leave the key out).
fn receiver_names(o: &mut Obj<'_>, names: &BTreeSet<String>, p: &mut Problems) -> Vec<String> {
    let path = o.at("receivers");
    let items: &[Value] = match o.get("receivers") {
        None => &[],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                p.add(&path, "must name at least one receiver");
            }
            items
        }
        Some(_) => {
            p.add(&path, "expected a list of receiver names, e.g. [oncall]");
            &[]
        }
    };
    let mut out: Vec<String> = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let at = index(&path, i);
        let Some(name) = walk::as_string(v, &at, p) else {
            continue;
        };
        if !names.contains(&name) {
            let defined = if names.is_empty() {
                "no receivers are defined".to_string()
            } else {
                let all: Vec<&str> = names.iter().map(String::as_str).collect();
                format!("defined: {}", all.join(", "))
            };
            p.add(&at, format!("unknown receiver `{name}` ({defined})"));
        } else if out.contains(&name) {
            p.add(&at, format!("receiver `{name}` is listed twice"));
        } else {
            out.push(name);
        }
    }
    out
}

/// `group_by: [kind, team]`; `None` when not set.
fn group_by(o: &mut Obj<'_>, p: &mut Problems) -> Option<Vec<String>> {
    let path = o.at("group_by");
    let set = o.has("group_by");
    let items = o.list("group_by", p);
    if !set {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let at = index(&path, i);
        let Some(label) = walk::as_string(v, &at, p) else {
            continue;
        };
        if !(BUILTIN_LABELS.contains(&label.as_str()) || valid_label_name(&label)) {
            p.add(
                &at,
                format!(
                    "`{label}` is not a label name (alertname, kind, agent, source, or an agent \
                     label: letters, digits and `_`, not starting with a digit or `__`)"
                ),
            );
        } else if out.contains(&label) {
            p.add(&at, format!("`{label}` is listed twice"));
        } else {
            out.push(label);
        }
    }
    Some(out)
}

/// `match:` of a route or a silence; `None` when it has a problem.
fn matcher(v: Option<&Value>, path: &str, p: &mut Problems) -> Option<Matcher> {
    let before = p.0.len();
    let mut o = Obj::new(v, path, p);
    let mut m = Matcher::default();

    let kind_path = o.at("kind");
    let kinds: Vec<(String, String)> = match o.get("kind") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                p.add(
                    &kind_path,
                    "must list at least one kind (leave `kind` out to match every kind)",
                );
            }
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let at = index(&kind_path, i);
                    walk::as_string(v, &at, p).map(|s| (s, at))
                })
                .collect()
        }
        Some(v) => walk::as_string(v, &kind_path, p)
            .map(|s| vec![(s, kind_path.clone())])
            .unwrap_or_default(),
    };
    for (s, at) in kinds {
        match AlertKind::parse(&s) {
            Some(k) if !m.kind.contains(&k) => m.kind.push(k),
            Some(_) => p.add(&at, format!("`{s}` is listed twice")),
            None => {
                let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                p.add(
                    &at,
                    format!(
                        "unknown alert kind `{s}` (expected one of: {})",
                        all.join(", ")
                    ),
                );
            }
        }
    }

    m.agent = pattern(&mut o, "agent", p);
    m.source = pattern(&mut o, "source", p);

    let labels_path = o.at("labels");
    match o.get("labels") {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let at = walk::join(&labels_path, k);
                if !valid_label_name(k) {
                    p.add(
                        &at,
                        "label names use letters, digits and `_`, not starting with a digit or `__`",
                    );
                    continue;
                }
                if let Some(s) = walk::as_string(v, &at, p) {
                    match Pattern::new(&s) {
                        Ok(pat) => {
                            m.labels.insert(k.clone(), pat);
                        }
                        Err(e) => p.add(&at, e),
                    }
                }
            }
        }
        Some(_) => p.add(
            &labels_path,
            "expected a mapping of label names to patterns",
        ),
    }
    o.finish(p);
    (p.0.len() == before).then_some(m)
}

/// A glob at `key` (`trading_*`).
fn pattern(o: &mut Obj<'_>, key: &'static str, p: &mut Problems) -> Option<Pattern> {
    let s = o.string(key, p)?;
    Pattern::new(&s).map_err(|e| p.add(o.at(key), e)).ok()
}

/// One `silences:` entry, the `i`-th.
fn silence(i: usize, item: &Value, path: &str, p: &mut Problems) -> Option<Silence> {
    let mut o = Obj::new(Some(item), path, p);
    let match_path = o.at("match");
    let matchers = if o.has("match") {
        matcher(o.get("match"), &match_path, p).filter(|m| {
            if m.is_empty() {
                p.add(&match_path, "a silence must match something");
            }
            !m.is_empty()
        })
    } else {
        let _ = o.get("match");
        p.add(&match_path, "required: a silence must match something");
        None
    };
    let starts_at = match o.string("starts_at", p) {
        None => Some(DateTime::<Utc>::UNIX_EPOCH),
        Some(s) => timestamp(&s, &o.at("starts_at"), p),
    };
    let ends_at = o
        .required_string("ends_at", p)
        .and_then(|s| timestamp(&s, &o.at("ends_at"), p));
    if let (Some(s), Some(e)) = (starts_at, ends_at)
        && e <= s
    {
        p.add(o.at("ends_at"), "must be after starts_at");
    }
    let comment = o.required_string("comment", p).filter(|c| {
        if c.trim().is_empty() {
            p.add(
                o.at("comment"),
                "must not be empty: say why alerts are muted",
            );
        }
        !c.trim().is_empty()
    });
    let created_by = o.string("created_by", p).unwrap_or_default();
    o.finish(p);
    Some(Silence {
        id: format!("config-{i}"),
        matchers: matchers?,
        starts_at: starts_at?,
        ends_at: ends_at?,
        comment: comment?,
        created_by,
        origin: SilenceOrigin::Config,
    })
}

/// An RFC 3339 time (`2026-11-28T10:00:00Z`).
fn timestamp(s: &str, path: &str, p: &mut Problems) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(s.trim()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            p.add(
                path,
                format!("`{s}` is not an RFC 3339 time like 2026-11-28T10:00:00Z ({e})"),
            );
            None
        }
    }
}

/// `delivery:`.
fn delivery(v: Option<&Value>, p: &mut Problems) -> DeliveryConfig {
    let mut o = Obj::new(v, "delivery", p);
    let d = DeliveryConfig::default();
    let timeout = o.positive_duration("timeout", p).unwrap_or(d.timeout);
    let initial_backoff = o
        .positive_duration("initial_backoff", p)
        .unwrap_or(d.initial_backoff);
    let max_backoff = o
        .positive_duration("max_backoff", p)
        .unwrap_or(d.max_backoff);
    let give_up_after = o
        .positive_duration("give_up_after", p)
        .unwrap_or(d.give_up_after);
    let max_pending = o
        .integer("max_pending", 1..=1_000_000, p)
        .map_or(d.max_pending, |n| n as usize);
    if max_backoff < initial_backoff {
        p.add(
            o.at("max_backoff"),
            format!(
                "must not be shorter than initial_backoff ({} < {})",
                humantime::format_duration(max_backoff),
                humantime::format_duration(initial_backoff)
            ),
        );
    }
    o.finish(p);
    DeliveryConfig {
        timeout,
        initial_backoff,
        max_backoff,
        give_up_after,
        max_pending,
    }
}
