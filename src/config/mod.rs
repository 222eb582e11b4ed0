//! `config.yaml`: parsed once into typed values, every problem collected.
//!
//! Loading is: read the file, parse the YAML, substitute `${VAR}` in string
//! values, then convert each section into typed values while recording every
//! problem with its path. A config with problems is rejected as a whole
//! ([`ConfigError::Invalid`]); the binary exits 64 before binding anything.
//!
//! - this file: [`Config`], [`load`] / [`parse`], [`ConfigError`], and the
//!   small root sections (`defaults`, `state`, `metrics`);
//! - [`listeners`]: `listen`, `admin_listen`, `read_token`;
//! - [`ha`]: `ha:`, the leader lease of several replicas;
//! - `walk`: the problem-collecting reader of the YAML tree;
//! - `env`: `${VAR}` substitution;
//! - `values`: checks shared by sections (names, label names, URLs, headers);
//! - `sources/`: `sources:`, one file per source type;
//! - `agents`: `agents:` rules;
//! - [`alerting`]: receivers, routing, silences and delivery;
//! - [`actions`]: `actions:`, `remediation:` and an agent rule's
//!   `remediate:`;
//! - [`schema`]: the JSON Schema of the file, for editors and CI.

pub mod actions;
mod agents;
pub mod alerting;
mod env;
pub mod ha;
pub mod listeners;
pub mod schema;
mod sources;
mod values;
mod walk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::core::{AgentRule, CheckKey, Defaults, Policy};
pub use sources::{
    AgentUrl, HttpComponent, HttpConfig, HttpMethod, KeyPattern, PostgresConfig, PostgresRead,
    PostgresTable, PushConfig, Redirects, RedisConfig, RedisLayout, SourceConfig, SourceKindConfig,
    json_pointer,
};
pub use walk::Problem;
use walk::{Obj, Problems, index};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n{}", .problems.len(), list(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP servers listen and who may use them.
    pub listeners: listeners::Listeners,
    /// No agent alerts before every source was read once, or this passed.
    pub startup_grace: Duration,
    pub defaults: Defaults,
    /// How long a point read may take before it is asked again.
    pub confirm_timeout: Duration,
    /// How long SIGTERM waits for tasks to stop.
    pub shutdown_timeout: Duration,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
    pub sources: Vec<SourceConfig>,
    pub agents: Vec<AgentRule>,
    /// Receivers, routing, silences and delivery of alert notifications.
    pub alerting: alerting::AlertingConfig,
    pub recheck: RecheckConfig,
    /// Several replicas, one leader; `None`: this replica notifies alone.
    pub ha: Option<ha::HaConfig>,
    /// `actions:` and `remediation:`: calls to the service's admin
    /// endpoints.
    pub remediation: actions::RemediationConfig,
}

/// `recheck:`: stale and missing checks of a polled source are re-read with
/// point reads, so an agent that beats again is healthy within about
/// `every` rather than at the next full scan.
#[derive(Debug, Clone)]
pub struct RecheckConfig {
    /// Period of the re-reads; `0s` turns them off.
    pub every: Duration,
    /// At most this many re-reads a second, per source (round robin past it).
    pub max_per_second: u32,
}

impl Config {
    /// The core's policy from this config.
    pub fn policy(&self) -> Policy {
        Policy {
            defaults: self.defaults.clone(),
            startup_grace: self.startup_grace,
            confirm_timeout: self.confirm_timeout,
            rules: self.agents.clone(),
            source_stale_after: self
                .sources
                .iter()
                .filter_map(|s| s.stale_after.map(|d| (s.name.clone(), d)))
                .collect(),
            depends_on: self
                .sources
                .iter()
                .filter_map(|s| {
                    let target = s.depends_on.as_ref()?;
                    let service = self.sources.iter().find(|t| &t.name == target)?;
                    let SourceKindConfig::Http(h) = &service.kind else {
                        return None;
                    };
                    let check = CheckKey {
                        agent: h.service_agent(target),
                        source: target.clone(),
                    };
                    Some((s.name.clone(), check))
                })
                .collect(),
            recheck_every: self.recheck.every,
            recheck_max_per_second: self.recheck.max_per_second,
            service_for: self
                .sources
                .iter()
                .filter_map(|s| match &s.kind {
                    SourceKindConfig::Http(h) => Some((h.service_agent(&s.name), h.service_for())),
                    _ => None,
                })
                .collect(),
            source_down_after: self
                .sources
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.down_after()?)))
                .collect(),
        }
    }
}

/// `state:`: the embedded file store.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Directory of the state file; `None` disables persistence.
    pub path: Option<PathBuf>,
    /// At most one write per this interval (and one at shutdown).
    pub flush_interval: Duration,
}

/// `metrics:`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Per-agent series are rendered for at most this many agents
    /// (non-healthy first); the rest are counted in `agent_series_omitted`.
    pub max_agent_series: usize,
}

/// Which parts of a config a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sections {
    /// Everything (`run`, `check-config`).
    All,
    /// All but what only serving needs (`read_token`, `ha`, and the alerting
    /// sections `external_url`, `api_token`, `receivers`, `routing`,
    /// `silences`, `delivery`), which are neither checked nor need their
    /// `${VAR}`s set: `scan`, `check-config --sources-only`.
    SourcesOnly,
}

/// The top-level keys [`Sections::SourcesOnly`] leaves out.
const SERVING_KEYS: [&str; 10] = [
    "read_token",
    "ha",
    "actions",
    "remediation",
    "external_url",
    "api_token",
    "receivers",
    "routing",
    "silences",
    "delivery",
];

/// Read and check a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_sections(path, Sections::All)
}

/// Read and check the `sections` of a config file a command needs.
pub fn load_sections(path: &Path, sections: Sections) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_sections(&text, path, &|name| std::env::var(name).ok(), sections)
}

/// Parse config text; `lookup` resolves environment variables.
pub fn parse(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_sections(text, path, lookup, Sections::All)
}

/// [`parse`], of the `sections` a command needs.
pub fn parse_sections(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    sections: Sections,
) -> Result<Config, ConfigError> {
    let mut tree: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    if sections == Sections::SourcesOnly
        && let Value::Object(root) = &mut tree
    {
        for key in SERVING_KEYS {
            root.remove(key);
        }
        actions::strip_remediate(&mut tree);
    }
    let mut p = Problems::default();
    env::substitute(&mut tree, "", lookup, &mut p);
    let config = convert(&tree, sections, &mut p);
    match config {
        Some(c) if p.list.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: p.list,
        }),
    }
}

fn convert(tree: &Value, sections: Sections, p: &mut Problems) -> Option<Config> {
    let mut root = Obj::new(Some(tree), "", p);

    let listeners = listeners::parse(&mut root, p);
    let startup_grace = root
        .duration("startup_grace", p)
        .unwrap_or(Duration::from_secs(30));
    let confirm_timeout = root
        .positive_duration("confirm_timeout", p)
        .unwrap_or(Duration::from_secs(5));
    let shutdown_timeout = root
        .positive_duration("shutdown_timeout", p)
        .unwrap_or(Duration::from_secs(10));

    let defaults = {
        let mut o = Obj::new(root.get("defaults"), "defaults", p);
        let base = Defaults::default();
        let before = p.len();
        let d = Defaults {
            stale_after: o
                .positive_duration("stale_after", p)
                .unwrap_or(base.stale_after),
            forget_after: o
                .positive_duration("forget_after", p)
                .unwrap_or(base.forget_after),
            max_clock_skew: o
                .duration("max_clock_skew", p)
                .unwrap_or(base.max_clock_skew),
        };
        // Compared only when both were read, so one mistake is one problem.
        if p.len() == before && d.forget_after < d.stale_after {
            p.add(
                "defaults.forget_after",
                "must not be shorter than defaults.stale_after",
            );
        }
        o.finish(p);
        d
    };

    let state = {
        let mut o = Obj::new(root.get("state"), "state", p);
        let path = match o.get("path") {
            None => Some(PathBuf::from("./data")),
            Some(Value::Bool(false)) => None,
            Some(v) => walk::as_string(v, &o.at("path"), p)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        };
        let flush_interval = o
            .positive_duration("flush_interval", p)
            .unwrap_or(Duration::from_secs(2));
        o.finish(p);
        StateConfig {
            path,
            flush_interval,
        }
    };

    let metrics = {
        let mut o = Obj::new(root.get("metrics"), "metrics", p);
        let max = o
            .integer("max_agent_series", 0..=10_000_000, p)
            .unwrap_or(10_000);
        o.finish(p);
        MetricsConfig {
            max_agent_series: max as usize,
        }
    };

    let sources = sources::parse(&mut root, p);
    let remediation = actions::parse(&mut root, p);

    let mut agents = Vec::new();
    for (i, item) in root.list("agents", p).iter().enumerate() {
        if let Some(rule) = agents::rule(item, &index("agents", i), &remediation, p) {
            agents.push(rule);
        }
    }
    let alerting = alerting::parse(&mut root, p);
    if let Some(l) = &listeners {
        let api_token = (sections == Sections::All).then_some(&alerting.api_token);
        listeners::check(l, &sources, api_token, p);
    }
    let recheck = {
        let mut o = Obj::new(root.get("recheck"), "recheck", p);
        let every = o.duration("every", p).unwrap_or(Duration::from_millis(500));
        let max_per_second = o
            .integer("max_per_second", 1..=1_000_000, p)
            .unwrap_or(1000) as u32;
        o.finish(p);
        RecheckConfig {
            every,
            max_per_second,
        }
    };
    let ha = ha::parse(&mut root, &sources, p);
    let sections = root.read_order().to_vec();
    root.finish(p);
    p.order(&sections);

    Some(Config {
        listeners: listeners?,
        startup_grace,
        defaults,
        confirm_timeout,
        shutdown_timeout,
        state,
        metrics,
        sources,
        agents,
        alerting,
        recheck,
        ha,
        remediation,
    })
}

#[cfg(test)]
mod tests;
