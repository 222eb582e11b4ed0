//! Alerts and notifications: what the alert pipeline decides and what the
//! receivers' renderers turn into request bodies. Pure: no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::remedy::RemediationNote;
use crate::core::snapshot::{Entry, SourceView};
use crate::core::{AgentId, SourceId, State, Timestamp};

/// What an alert is about (DESIGN §5). Closed set: it is a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    AgentStale,
    AgentFailing,
    AgentMissing,
    SourceDown,
}

impl AlertKind {
    pub const ALL: [AlertKind; 4] = [
        AlertKind::AgentStale,
        AlertKind::AgentFailing,
        AlertKind::AgentMissing,
        AlertKind::SourceDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AgentStale => "agent_stale",
            AlertKind::AgentFailing => "agent_failing",
            AlertKind::AgentMissing => "agent_missing",
            AlertKind::SourceDown => "source_down",
        }
    }

    /// The `alertname` label for Alertmanager and chat titles.
    pub fn alertname(self) -> &'static str {
        match self {
            AlertKind::AgentStale => "AgentStale",
            AlertKind::AgentFailing => "AgentFailing",
            AlertKind::AgentMissing => "AgentMissing",
            AlertKind::SourceDown => "SourceDown",
        }
    }

    /// The condition the subject was in while the alert fired: `stale`,
    /// `failing`, `missing`, `down`.
    pub fn condition(self) -> &'static str {
        match self {
            AlertKind::AgentStale => "stale",
            AlertKind::AgentFailing => "failing",
            AlertKind::AgentMissing => "missing",
            AlertKind::SourceDown => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The agent alert for an agent state, if that state alerts.
    pub fn for_state(state: State) -> Option<Self> {
        match state {
            State::Stale => Some(AlertKind::AgentStale),
            State::Failing => Some(AlertKind::AgentFailing),
            State::Missing => Some(AlertKind::AgentMissing),
            State::Healthy | State::Unknown => None,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Stable id of an alert, derived from (kind, subject): the same across
/// restarts and versions, so receivers can de-duplicate on it.
pub fn fingerprint(kind: AlertKind, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0u8]);
    h.update(subject.as_bytes());
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One alert, firing or resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub kind: AlertKind,
    pub status: AlertStatus,
    /// The agent, for agent alerts.
    pub agent: Option<AgentId>,
    /// The source whose check decided the agent's state, or the source that
    /// is down.
    pub source: Option<SourceId>,
    /// The agent's labels from config (`team`, `severity`).
    pub labels: BTreeMap<String, String>,
    pub last_seen: Option<Timestamp>,
    pub age_seconds: Option<f64>,
    pub threshold_seconds: Option<f64>,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub summary: String,
    /// Resolved because the agent is now in another alerting state (stale,
    /// then failing): that alert's kind. It did not recover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<AlertKind>,
    /// What remediation tried (a page after it gave up), or the action the
    /// agent recovered after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<RemediationNote>,
}

impl Alert {
    /// Every label an alert carries, for matchers, grouping and Alertmanager:
    /// `alertname`, `kind`, `agent`, `source`, then the agent's own labels
    /// (which cannot override the first four).
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert("alertname".into(), self.kind.alertname().into());
        l.insert("kind".into(), self.kind.as_str().into());
        if let Some(a) = &self.agent {
            l.insert("agent".into(), a.to_string());
        }
        if let Some(s) = &self.source {
            l.insert("source".into(), s.to_string());
        }
        l
    }

    /// One label's value, as [`Alert::all_labels`] would give it.
    pub fn label(&self, name: &str) -> Option<String> {
        match name {
            "alertname" => Some(self.kind.alertname().into()),
            "kind" => Some(self.kind.as_str().into()),
            "agent" => self.agent.as_ref().map(|a| a.to_string()),
            "source" => self.source.as_ref().map(|s| s.to_string()),
            other => self.labels.get(other).cloned(),
        }
    }

    /// The firing alert for an agent in an alerting state, if it is one.
    pub fn for_agent(agent: Entry<'_>, now: Timestamp) -> Option<Alert> {
        let kind = AlertKind::for_state(agent.state)?;
        // The check that decided the agent's state, and its last heartbeat.
        let decided = agent
            .checks()
            .filter(|(c, _)| c.state == agent.state)
            .min_by_key(|(c, _)| c.since);
        let check = decided.map(|(c, _)| c);
        let last_seen = decided.and_then(|(_, t)| t);
        let age = last_seen.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        let threshold = check.map(|c| c.threshold_seconds);
        let source = check.map(|c| c.source.clone());
        let summary = match (kind, age, threshold) {
            (AlertKind::AgentStale, Some(age), Some(th)) => format!(
                "Agent {} is stale: last heartbeat {} ago (threshold {}){}",
                agent.id,
                human_secs(age),
                human_secs(th),
                source
                    .as_ref()
                    .map(|s| format!(", source {s}"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "Agent {} is {}: {}",
                agent.id,
                agent.state.as_str(),
                agent.reason
            ),
        };
        Some(Alert {
            fingerprint: fingerprint(kind, agent.id.as_str()),
            kind,
            status: AlertStatus::Firing,
            agent: Some(agent.id.clone()),
            source,
            labels: (*agent.labels).clone(),
            last_seen,
            age_seconds: age,
            threshold_seconds: threshold,
            starts_at: agent.since,
            ends_at: None,
            summary,
            superseded_by: None,
            remediation: None,
        })
    }

    /// The firing alert for a source that cannot be read, if it is down.
    pub fn for_source(source: &SourceView) -> Option<Alert> {
        if source.status != crate::core::snapshot::SourceStatus::Down {
            return None;
        }
        let why = source
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_else(|| "unreadable".into());
        Some(Alert {
            fingerprint: fingerprint(AlertKind::SourceDown, source.name.as_str()),
            kind: AlertKind::SourceDown,
            status: AlertStatus::Firing,
            agent: None,
            source: Some(source.name.clone()),
            labels: BTreeMap::new(),
            last_seen: source.last_success,
            age_seconds: None,
            threshold_seconds: None,
            starts_at: source.since,
            ends_at: None,
            summary: format!(
                "Source {} cannot be read ({why}); its {} agent check(s) are unknown, not stale",
                source.name, source.checks
            ),
            superseded_by: None,
            remediation: None,
        })
    }

    /// A copy with its age brought up to `now` (alerts keep the content
    /// they fired with; their age grows).
    pub fn refreshed(&self, now: Timestamp) -> Alert {
        let mut a = self.clone();
        if a.status == AlertStatus::Firing
            && let Some(t) = a.last_seen
        {
            let age = (now - t).num_milliseconds() as f64 / 1000.0;
            a.age_seconds = Some(age);
            if let (AlertKind::AgentStale, Some(agent), Some(th)) =
                (a.kind, &a.agent, a.threshold_seconds)
            {
                a.summary = stale_summary(agent, age, th, a.source.as_ref());
            }
        }
        a
    }

    /// This alert, resolved at `at`: its summary says it recovered.
    pub fn resolved(mut self, at: Timestamp) -> Alert {
        self.status = AlertStatus::Resolved;
        self.ends_at = Some(at);
        self.summary = self.recovered_summary();
        self
    }

    /// Resolved because the agent is now in another alerting state, whose
    /// alert is `next`.
    pub fn superseded(mut self, at: Timestamp, next: AlertKind) -> Alert {
        self.superseded_by = Some(next);
        self.resolved(at)
    }

    /// What a person reads about this alert, in every receiver: its summary
    /// while it fires; once resolved, that it recovered, when, and after how
    /// long (whatever summary an older version stored with it).
    pub fn text(&self) -> Cow<'_, str> {
        let note = self
            .remediation
            .as_ref()
            .map(|r| r.summary.as_str())
            .filter(|s| !s.is_empty());
        match (self.status, note) {
            (AlertStatus::Firing, None) => Cow::Borrowed(&self.summary),
            (AlertStatus::Firing, Some(note)) => Cow::Owned(format!("{}; {note}", self.summary)),
            (AlertStatus::Resolved, _) => Cow::Owned(self.recovered_summary()),
        }
    }

    /// `trading_coordinator recovered at 10:42:13Z after 3m 20s stale`,
    /// `source redis recovered at 10:42:13Z after 45s down`.
    fn recovered_summary(&self) -> String {
        let subject = match (&self.agent, &self.source) {
            (Some(agent), _) => agent.to_string(),
            (None, Some(source)) => format!("source {source}"),
            (None, None) => self.kind.alertname().to_string(),
        };
        let condition = self.kind.condition();
        match self.ends_at {
            Some(end) => {
                let lasted = (end - self.starts_at).num_milliseconds() as f64 / 1000.0;
                match self.superseded_by {
                    Some(next) => format!(
                        "{subject} is no longer {condition} at {} after {}: now {}",
                        clock_time(end),
                        human_secs(lasted),
                        next.condition()
                    ),
                    None => format!(
                        "{subject} recovered at {} after {} {condition}{}",
                        clock_time(end),
                        human_secs(lasted),
                        self.remediation
                            .as_ref()
                            .and_then(|r| r.recovered_after.as_ref())
                            .map(|a| format!(", after {a}"))
                            .unwrap_or_default()
                    ),
                }
            }
            None => format!(
                "{subject} recovered; {condition} since {}",
                clock_time(self.starts_at)
            ),
        }
    }
}

/// `10:42:13Z`: the time of day, UTC.
fn clock_time(t: Timestamp) -> String {
    t.format("%H:%M:%SZ").to_string()
}

fn stale_summary(agent: &AgentId, age: f64, threshold: f64, source: Option<&SourceId>) -> String {
    format!(
        "Agent {agent} is stale: last heartbeat {} ago (threshold {}){}",
        human_secs(age),
        human_secs(threshold),
        source.map(|s| format!(", source {s}")).unwrap_or_default()
    )
}

/// `95s`, `4m 10s`, `2h 3m`: short and exact enough for a page.
pub fn human_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// A glob over one value (`trading_*`), kept with its text for display and
/// persistence.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

/// Longest glob accepted (in bytes): longer ones are refused before they
/// are compiled.
pub const MAX_PATTERN_LEN: usize = 256;

impl Pattern {
    pub fn new(text: &str) -> Result<Self, String> {
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "a pattern is at most {MAX_PATTERN_LEN} bytes (this one has {})",
                text.len()
            ));
        }
        let matcher = Glob::new(text)
            .map_err(|e| format!("`{text}` is not a valid pattern: {e}"))?
            .compile_matcher();
        Ok(Self {
            text: text.to_string(),
            matcher,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Which alerts a route or a silence applies to. Every field that is set
/// must match; an empty matcher matches every alert.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Any of these kinds; empty means any kind. One kind or a list.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub kind: Vec<AlertKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Pattern>,
    /// Agent labels (`team: trading`), each a pattern.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Pattern>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<AlertKind>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(AlertKind),
        Many(Vec<AlertKind>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(k) => vec![k],
        OneOrMany::Many(v) => v,
    })
}

impl Matcher {
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty()
            && self.agent.is_none()
            && self.source.is_none()
            && self.labels.is_empty()
    }

    pub fn matches(&self, alert: &Alert) -> bool {
        if !self.kind.is_empty() && !self.kind.contains(&alert.kind) {
            return false;
        }
        let field = |p: &Option<Pattern>, v: Option<&str>| match p {
            None => true,
            Some(p) => v.is_some_and(|v| p.matches(v)),
        };
        field(&self.agent, alert.agent.as_ref().map(|a| a.as_str()))
            && field(&self.source, alert.source.as_ref().map(|s| s.as_str()))
            && self
                .labels
                .iter()
                .all(|(k, p)| alert.label(k).is_some_and(|v| p.matches(&v)))
    }
}

/// A silence: matching alerts are not notified while it is active; they
/// still show in `/api/v1/alerts` and metrics, marked silenced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Matcher,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub created_by: String,
    /// `config` for silences from `config.yaml` (not deletable by the API),
    /// `api` for the others.
    pub origin: SilenceOrigin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceOrigin {
    Config,
    Api,
}

impl Silence {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.ends_at
    }
}

/// What one receiver is told about one group at one time: the group's
/// firing alerts, plus those resolved since its last notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification; the base of each request's `webhook-id`.
    pub id: String,
    pub receiver: String,
    /// Stable id of the group (route, receiver, group-by values).
    pub group_key: String,
    /// The values of the group's `group_by` labels.
    pub group_labels: BTreeMap<String, String>,
    /// `firing` when any alert in it fires.
    pub status: AlertStatus,
    pub alerts: Vec<Alert>,
    pub created_at: Timestamp,
}

impl Notification {
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
    }

    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
    }

    /// Labels shared by every alert in it (Alertmanager's `commonLabels`).
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        let mut it = self.alerts.iter();
        let Some(first) = it.next() else {
            return BTreeMap::new();
        };
        let mut common = first.all_labels();
        for a in it {
            let l = a.all_labels();
            common.retain(|k, v| l.get(k) == Some(v));
        }
        common
    }

    /// A one-line title: `[FIRING:3] AgentStale (team=trading)`.
    pub fn title(&self) -> String {
        let n = match self.status {
            AlertStatus::Firing => self.firing().count(),
            AlertStatus::Resolved => self.alerts.len(),
        };
        let common = self.common_labels();
        let name = common
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "AgentSupervisor".into());
        let rest: Vec<String> = self
            .group_labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut t = format!("[{}:{n}] {name}", self.status.as_str().to_ascii_uppercase());
        if !rest.is_empty() {
            t.push_str(&format!(" ({})", rest.join(", ")));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_past_the_length_limit_is_refused_before_it_is_compiled() {
        assert!(Pattern::new(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
        let e = Pattern::new(&"*".repeat(MAX_PATTERN_LEN + 1)).unwrap_err();
        assert!(e.contains("at most 256 bytes"), "{e}");
    }

    fn alert(kind: AlertKind, agent: &str) -> Alert {
        Alert {
            fingerprint: fingerprint(kind, agent),
            kind,
            status: AlertStatus::Firing,
            agent: Some(agent.into()),
            source: Some("redis".into()),
            labels: [("team".to_string(), "trading".to_string())].into(),
            last_seen: None,
            age_seconds: None,
            threshold_seconds: None,
            starts_at: Timestamp::default(),
            ends_at: None,
            summary: String::new(),
            superseded_by: None,
            remediation: None,
        }
    }

    #[test]
    fn fingerprint_is_stable_and_depends_on_kind_and_subject() {
        // Pinned: a fingerprint must never change between versions, or every
        // receiver would see a new incident after an upgrade.
        assert_eq!(
            fingerprint(AlertKind::AgentStale, "a"),
            fingerprint(AlertKind::AgentStale, "a")
        );
        assert_ne!(
            fingerprint(AlertKind::AgentStale, "a"),
            fingerprint(AlertKind::AgentFailing, "a")
        );
        assert_ne!(
            fingerprint(AlertKind::AgentStale, "a"),
            fingerprint(AlertKind::AgentStale, "b")
        );
        assert_eq!(fingerprint(AlertKind::AgentStale, "a").len(), 16);
    }

    #[test]
    fn matcher_needs_every_field_set_to_match() {
        let a = alert(AlertKind::AgentStale, "trading_coordinator");
        assert!(Matcher::default().matches(&a));
        let m = Matcher {
            kind: vec![AlertKind::AgentStale],
            agent: Some(Pattern::new("trading_*").unwrap()),
            ..Matcher::default()
        };
        assert!(m.matches(&a));
        let m = Matcher {
            labels: [("team".to_string(), Pattern::new("ops").unwrap())].into(),
            ..Matcher::default()
        };
        assert!(!m.matches(&a));
        let m = Matcher {
            kind: vec![AlertKind::SourceDown],
            ..Matcher::default()
        };
        assert!(!m.matches(&a));
    }

    #[test]
    fn agent_labels_cannot_override_the_builtin_ones() {
        let mut a = alert(AlertKind::AgentStale, "x");
        a.labels.insert("agent".into(), "spoof".into());
        assert_eq!(a.all_labels()["agent"], "x");
        assert_eq!(a.label("agent").as_deref(), Some("x"));
    }

    #[test]
    fn a_resolved_agent_alert_says_it_recovered_when_and_after_how_long() {
        let mut a = alert(AlertKind::AgentStale, "trading_coordinator");
        a.starts_at = "2024-03-01T10:38:53Z".parse().unwrap();
        a.summary = "Agent trading_coordinator is stale: last heartbeat 10s ago".into();
        assert_eq!(a.text(), a.summary.as_str(), "firing text unchanged");
        let r = a.resolved("2024-03-01T10:42:13Z".parse().unwrap());
        assert_eq!(
            r.summary,
            "trading_coordinator recovered at 10:42:13Z after 3m 20s stale"
        );
        assert_eq!(r.text(), r.summary.as_str());
        for (kind, word) in [
            (AlertKind::AgentFailing, "failing"),
            (AlertKind::AgentMissing, "missing"),
        ] {
            let mut a = alert(kind, "x");
            a.starts_at = "2024-03-01T10:42:00Z".parse().unwrap();
            let r = a.resolved("2024-03-01T10:42:13Z".parse().unwrap());
            assert_eq!(
                r.summary,
                format!("x recovered at 10:42:13Z after 13s {word}")
            );
        }
    }

    #[test]
    fn a_resolved_source_alert_says_the_source_recovered() {
        let mut a = alert(AlertKind::SourceDown, "unused");
        a.agent = None;
        a.starts_at = "2024-03-01T10:41:28Z".parse().unwrap();
        let r = a.resolved("2024-03-01T10:42:13Z".parse().unwrap());
        assert_eq!(
            r.text(),
            "source redis recovered at 10:42:13Z after 45s down"
        );
    }

    #[test]
    fn a_resolved_alert_stored_with_its_firing_summary_still_reads_recovered() {
        // Written by an older version: resolved, with the text it fired with.
        let mut a = alert(AlertKind::AgentStale, "a");
        a.status = AlertStatus::Resolved;
        a.starts_at = "2024-03-01T10:00:00Z".parse().unwrap();
        a.ends_at = Some("2024-03-01T12:03:00Z".parse().unwrap());
        a.summary = "Agent a is stale: last heartbeat 10s ago".into();
        assert_eq!(a.text(), "a recovered at 12:03:00Z after 2h 3m stale");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_secs(95.4), "1m 35s");
        assert_eq!(human_secs(30.0), "30s");
        assert_eq!(human_secs(7380.0), "2h 3m");
    }
}
