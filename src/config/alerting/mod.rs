//! `receivers:`, `routing:`, `silences:` and `delivery:`: where alert
//! notifications go, how they are grouped and paced, and how hard delivery
//! tries.

mod receivers;
mod routing;
mod silences;
#[cfg(test)]
pub(super) mod tests;

use std::collections::BTreeSet;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use super::values::check_http_scheme;
use super::walk::{self, Obj, Problems, index};
use crate::core::alert::{Matcher, Silence};
use crate::secret::{SecretUrl, WebhookKey};
use crate::template::Template;

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
    /// Standard Webhooks signing key, from a `whsec_<base64>` or base64
    /// secret.
    pub secret: Option<WebhookKey>,
    /// Extra request headers (`Authorization: Bearer ...`); values are secret.
    pub headers: Vec<(String, SecretString)>,
}

#[derive(Debug, Clone)]
pub enum ReceiverKind {
    /// The generic JSON of DESIGN §5, or `template` rendered with minijinja.
    Webhook {
        url: SecretUrl,
        /// The body template, compiled at load.
        template: Option<Template>,
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
        let (name, r) = receivers::receiver(item, &path, p);
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

    let routing = routing::routing(root.get("routing"), &names, !receiver_items.is_empty(), p);

    let mut silences = Vec::new();
    for (i, item) in root.list("silences", p).iter().enumerate() {
        silences.extend(silences::silence(i, item, &index("silences", i), p));
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

/// `delivery:`.
fn delivery(v: Option<&Value>, p: &mut Problems) -> DeliveryConfig {
    let mut o = Obj::new(v, "delivery", p);
    let d = DeliveryConfig::default();
    let timeout = o.positive_duration("timeout", p).unwrap_or(d.timeout);
    let before = p.len();
    let initial_backoff = o
        .positive_duration("initial_backoff", p)
        .unwrap_or(d.initial_backoff);
    let max_backoff = o
        .positive_duration("max_backoff", p)
        .unwrap_or(d.max_backoff);
    // Compared only when both were read, so one mistake is one problem.
    let backoffs_read = p.len() == before;
    let give_up_after = o
        .positive_duration("give_up_after", p)
        .unwrap_or(d.give_up_after);
    let max_pending = o
        .integer("max_pending", 1..=1_000_000, p)
        .map_or(d.max_pending, |n| n as usize);
    if backoffs_read && max_backoff < initial_backoff {
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
