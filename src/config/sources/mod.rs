//! `sources:`: one entry per external system, each type converted by its
//! own file.

mod http;
mod postgres;
mod push;
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::values;
use super::walk::{Obj, Problems, index};
use crate::core::SourceId;
pub use http::{AgentUrl, HttpComponent, HttpConfig, HttpMethod, Redirects, json_pointer};
pub use postgres::{PostgresConfig, PostgresRead, PostgresTable};
pub use push::PushConfig;
pub use redis::{KeyPattern, RedisConfig, RedisLayout, check_redis_url};

/// One entry of `sources:`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: SourceId,
    /// Threshold for this source's checks where no agent rule sets one.
    pub stale_after: Option<Duration>,
    /// The http source whose service this source's agents live in: while
    /// its service check is not healthy, this source's checks are held
    /// `unknown` (one incident, one page).
    pub depends_on: Option<SourceId>,
    /// How long the source is down before `source_down` fires; `None`:
    /// twice its interval, so a blip pages nobody.
    pub down_after: Option<Duration>,
    pub kind: SourceKindConfig,
}

impl SourceConfig {
    /// How long the source is down before `source_down` fires (`None` for
    /// a push source, which is never down).
    pub fn down_after(&self) -> Option<Duration> {
        let interval = self.kind.interval()?;
        Some(self.down_after.unwrap_or(interval * 2))
    }
}

#[derive(Debug, Clone)]
pub enum SourceKindConfig {
    Redis(RedisConfig),
    Postgres(PostgresConfig),
    Http(HttpConfig),
    Push(PushConfig),
}

impl SourceKindConfig {
    /// The period of a polled source (`None` for push).
    pub fn interval(&self) -> Option<Duration> {
        match self {
            SourceKindConfig::Redis(c) => Some(c.interval),
            SourceKindConfig::Postgres(c) => Some(c.interval),
            SourceKindConfig::Http(c) => Some(c.interval),
            SourceKindConfig::Push(_) => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKindConfig::Redis(_) => "redis",
            SourceKindConfig::Postgres(_) => "postgres",
            SourceKindConfig::Http(_) => "http",
            SourceKindConfig::Push(_) => "push",
        }
    }
}

const TYPES: [&str; 4] = ["redis", "postgres", "http", "push"];

/// `sources:` of the root mapping: every entry, names unique, at most one
/// push source.
pub(super) fn parse(root: &mut Obj<'_>, p: &mut Problems) -> Vec<SourceConfig> {
    let source_items = root.list("sources", p);
    if !root.has("sources") || source_items.is_empty() {
        p.add("sources", "at least one source is required");
    }
    let mut entries = Vec::new();
    let mut names = BTreeSet::new();
    let mut push_seen = false;
    for (i, item) in source_items.iter().enumerate() {
        let path = index("sources", i);
        let read = source(item, &path, p);
        // Checked on what was read even when the entry has other problems,
        // so fixing those does not reveal these.
        if let Some(name) = &read.name
            && !names.insert(name.clone())
        {
            p.add(
                format!("{path}.name"),
                format!("duplicate source name `{name}`"),
            );
        }
        if read.ty.as_deref() == Some("push") {
            if push_seen {
                p.add(format!("{path}.type"), "only one push source is allowed");
            }
            push_seen = true;
        }
        entries.push((path, read));
    }
    check_dependencies(&entries, p);
    entries
        .into_iter()
        .filter_map(|(_, read)| read.config)
        .collect()
}

/// `depends_on` names an http source (its service check), not itself, and
/// no chain of them comes back to where it started.
fn check_dependencies(entries: &[(String, Read)], p: &mut Problems) {
    let types: BTreeMap<&str, Option<&str>> = entries
        .iter()
        .filter_map(|(_, r)| Some((r.name.as_deref()?, r.ty.as_deref())))
        .collect();
    let edges: BTreeMap<&str, &str> = entries
        .iter()
        .filter_map(|(_, r)| Some((r.name.as_deref()?, r.depends_on.as_deref()?)))
        .collect();
    for (path, read) in entries {
        let Some(target) = read.depends_on.as_deref() else {
            continue;
        };
        let at = format!("{path}.depends_on");
        match types.get(target) {
            None => p.add(at, format!("no source named `{target}`")),
            Some(Some("http")) | Some(None) => {}
            Some(Some(other)) => p.add(
                at,
                format!(
                    "`{target}` is a {other} source; depends_on names an http source (the service's /health check)"
                ),
            ),
        }
    }
    // Cycles: follow each chain; report each cycle once, at its first
    // entry in file order.
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for (path, read) in entries {
        let Some(start) = read.name.as_deref() else {
            continue;
        };
        let mut chain = vec![start];
        let mut at = start;
        while let Some(next) = edges.get(at).copied() {
            if let Some(i) = chain.iter().position(|c| *c == next) {
                let cycle = &chain[i..];
                if i == 0 && !cycle.iter().any(|c| reported.contains(c)) {
                    reported.extend(cycle.iter().copied());
                    p.add(
                        format!("{path}.depends_on"),
                        format!("dependency cycle: {} -> {next}", cycle.join(" -> ")),
                    );
                }
                break;
            }
            chain.push(next);
            at = next;
        }
    }
}

/// One `sources:` entry as read: its name and type when well-formed (for the
/// checks across entries), and the source when it has no problem.
struct Read {
    name: Option<String>,
    ty: Option<String>,
    depends_on: Option<String>,
    config: Option<SourceConfig>,
}

fn source(item: &Value, path: &str, p: &mut Problems) -> Read {
    let mut o = Obj::new(Some(item), path, p);
    let name = values::name(&mut o, p);
    let stale_after = o.positive_duration("stale_after", p);
    let depends_on = o.string("depends_on", p);
    let down_after = o.duration("down_after", p);
    let ty = o.required_string("type", p);
    if ty.as_deref() == Some("push") && down_after.is_some() {
        p.add(
            o.at("down_after"),
            "a push source is never down; down_after applies to polled sources",
        );
    }
    let kind = match ty.as_deref() {
        Some("redis") => redis::parse(&mut o, p).map(SourceKindConfig::Redis),
        Some("postgres") => postgres::parse(&mut o, p).map(SourceKindConfig::Postgres),
        Some("http") => http::parse(&mut o, p).map(SourceKindConfig::Http),
        Some("push") => Some(SourceKindConfig::Push(push::parse(&mut o, p))),
        Some(other) => {
            p.add(
                o.at("type"),
                format!(
                    "unknown source type `{other}` (supported: {})",
                    TYPES.join(", ")
                ),
            );
            None
        }
        None => None,
    };
    // Without a known type, which keys belong is unknown: none is reported.
    if ty.as_deref().is_some_and(|t| TYPES.contains(&t)) {
        o.finish(p);
    }
    let config = match (&name, kind) {
        (Some(name), Some(kind)) => Some(SourceConfig {
            name: SourceId::new(name.as_str()),
            stale_after,
            depends_on: depends_on.as_deref().map(SourceId::new),
            down_after,
            kind,
        }),
        _ => None,
    };
    Read {
        name,
        ty,
        depends_on,
        config,
    }
}
