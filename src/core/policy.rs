//! What the config says about agents: thresholds, labels, expected agents.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher};

use super::model::{AgentId, CheckKey, SourceId};
use super::remedy::RemedyRule;

/// Agent labels from config (`team`, `severity`); they go on `agent_info`.
pub type Labels = BTreeMap<String, String>;

/// Global defaults (`defaults:` in the config).
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub stale_after: Duration,
    pub forget_after: Duration,
    pub max_clock_skew: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(60),
            forget_after: Duration::from_secs(24 * 3600),
            max_clock_skew: Duration::from_secs(5),
        }
    }
}

/// One `agents:` rule. The first rule whose `match` matches an agent id wins.
#[derive(Clone, Debug)]
pub struct AgentRule {
    pub pattern: String,
    matcher: GlobMatcher,
    pub stale_after: Option<Duration>,
    pub labels: Arc<Labels>,
    pub expected: bool,
    /// How long the agent must stay stale, failing or missing before its
    /// alert fires (`for:`); `None` leaves it to the default (zero, or
    /// twice the probe interval for a service check).
    pub alert_for: Option<Duration>,
    /// What is called on the service to fix a matching agent
    /// (`remediate:`).
    pub remediate: Option<Arc<RemedyRule>>,
}

impl AgentRule {
    /// `pattern` is a glob (`trading_*`, `market_analyst:?`, `{a,b}`).
    pub fn new(
        pattern: &str,
        stale_after: Option<Duration>,
        labels: Labels,
        expected: bool,
    ) -> Result<Self, globset::Error> {
        let matcher = Glob::new(pattern)?.compile_matcher();
        Ok(Self {
            pattern: pattern.to_string(),
            matcher,
            stale_after,
            labels: Arc::new(labels),
            expected,
            alert_for: None,
            remediate: None,
        })
    }

    /// The same rule with a remediation.
    pub fn with_remediation(mut self, remedy: Option<RemedyRule>) -> Self {
        self.remediate = remedy.map(Arc::new);
        self
    }

    /// The same rule with a `for:` hold on its alerts.
    pub fn with_alert_for(mut self, hold: Option<Duration>) -> Self {
        self.alert_for = hold;
        self
    }

    pub fn matches(&self, agent: &str) -> bool {
        self.matcher.is_match(agent)
    }

    /// Whether the pattern names exactly one agent (no glob syntax).
    pub fn is_literal(&self) -> bool {
        is_literal_pattern(&self.pattern)
    }
}

pub fn is_literal_pattern(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// What applies to one agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub stale_after: Duration,
    pub labels: Arc<Labels>,
    pub expected: bool,
}

/// All decisions the config feeds into the core.
#[derive(Clone, Debug)]
pub struct Policy {
    pub defaults: Defaults,
    pub startup_grace: Duration,
    /// How long a point read may take before it is asked again.
    pub confirm_timeout: Duration,
    pub rules: Vec<AgentRule>,
    /// Per-source `stale_after`, between the rule and the default.
    pub source_stale_after: BTreeMap<SourceId, Duration>,
    /// Sources whose agents live in a service (`depends_on`): while that
    /// service's check is not healthy, their checks are held `unknown`.
    pub depends_on: BTreeMap<SourceId, CheckKey>,
    /// How often stale and missing checks of a polled source are re-read
    /// with point reads, so an agent that beats again is seen within about
    /// this long rather than at the next scan.
    pub recheck_every: Duration,
    /// At most this many of those re-reads a second, per source.
    pub recheck_max_per_second: u32,
    /// How long a service check (an http source's own check, by agent id)
    /// fails before its alert fires, unless an agent rule sets `for:`: a
    /// restart shorter than this pages nobody.
    pub service_for: BTreeMap<AgentId, Duration>,
    /// How long a source is down before its `source_down` alert fires.
    pub source_down_after: BTreeMap<SourceId, Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            defaults: Defaults::default(),
            startup_grace: Duration::from_secs(30),
            confirm_timeout: Duration::from_secs(5),
            rules: Vec::new(),
            source_stale_after: BTreeMap::new(),
            depends_on: BTreeMap::new(),
            recheck_every: Duration::from_millis(500),
            recheck_max_per_second: 1000,
            service_for: BTreeMap::new(),
            source_down_after: BTreeMap::new(),
        }
    }
}

impl Policy {
    fn rule_for(&self, agent: &str) -> Option<&AgentRule> {
        self.rules.iter().find(|r| r.matches(agent))
    }

    /// Threshold for one check: rule, then source, then default.
    pub fn stale_after(&self, agent: &AgentId, source: &SourceId) -> Duration {
        self.rule_for(agent.as_str())
            .and_then(|r| r.stale_after)
            .or_else(|| self.source_stale_after.get(source).copied())
            .unwrap_or(self.defaults.stale_after)
    }

    /// Labels and `expected` for an agent.
    pub fn resolve(&self, agent: &AgentId) -> Resolved {
        match self.rule_for(agent.as_str()) {
            Some(r) => Resolved {
                stale_after: r.stale_after.unwrap_or(self.defaults.stale_after),
                labels: r.labels.clone(),
                expected: r.expected,
            },
            None => Resolved {
                stale_after: self.defaults.stale_after,
                labels: no_labels(),
                expected: false,
            },
        }
    }

    /// How long an agent stays in an alerting state before its alert fires:
    /// the `for:` of its rule, else a service check's default, else zero.
    pub fn alert_for(&self, agent: &str) -> Duration {
        self.rule_for(agent)
            .and_then(|r| r.alert_for)
            .or_else(|| self.service_for.get(&AgentId::new(agent)).copied())
            .unwrap_or(Duration::ZERO)
    }

    /// The remediation of an agent's rule, if it has one.
    pub fn remedy_for(&self, agent: &str) -> Option<&Arc<RemedyRule>> {
        self.rule_for(agent).and_then(|r| r.remediate.as_ref())
    }

    /// How long `source` is down before its alert fires.
    pub fn down_after(&self, source: &str) -> Duration {
        self.source_down_after
            .get(&SourceId::new(source))
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Agents named by a literal rule with `expected: true`.
    pub fn expected_agents(&self) -> Vec<AgentId> {
        self.rules
            .iter()
            .filter(|r| r.expected && r.is_literal())
            .map(|r| AgentId::new(r.pattern.as_str()))
            .collect()
    }
}

/// The labels of an agent no rule matches: one empty set for all of them.
fn no_labels() -> Arc<Labels> {
    static NONE: std::sync::LazyLock<Arc<Labels>> = std::sync::LazyLock::new(Arc::default);
    NONE.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let mut labels = Labels::new();
        labels.insert("team".into(), "trading".into());
        Policy {
            rules: vec![
                AgentRule::new("trading_*", Some(Duration::from_secs(30)), labels, false).unwrap(),
                AgentRule::new("market_analyst", None, Labels::new(), true).unwrap(),
                AgentRule::new("*", Some(Duration::from_secs(90)), Labels::new(), false).unwrap(),
            ],
            source_stale_after: [(SourceId::from("push"), Duration::from_secs(15))].into(),
            ..Policy::default()
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let p = policy();
        let r = p.resolve(&"trading_coordinator".into());
        assert_eq!(r.stale_after, Duration::from_secs(30));
        assert_eq!(r.labels.get("team").map(String::as_str), Some("trading"));
        assert_eq!(
            p.resolve(&"other".into()).stale_after,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn rule_threshold_beats_source_threshold_which_beats_default() {
        let p = policy();
        let push = SourceId::from("push");
        assert_eq!(
            p.stale_after(&"trading_x".into(), &push),
            Duration::from_secs(30)
        );
        // market_analyst's rule has no threshold: the source's applies.
        assert_eq!(
            p.stale_after(&"market_analyst".into(), &push),
            Duration::from_secs(15)
        );
        assert_eq!(
            p.stale_after(&"market_analyst".into(), &"redis".into()),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn only_literal_expected_rules_name_expected_agents() {
        assert_eq!(
            policy().expected_agents(),
            vec![AgentId::from("market_analyst")]
        );
        assert!(!is_literal_pattern("a*"));
        assert!(is_literal_pattern("market_analyst:42"));
    }
}
