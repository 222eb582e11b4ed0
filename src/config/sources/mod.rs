//! `sources:`: one entry per external system, each type converted by its
//! own file.

mod http;
mod postgres;
mod push;
mod redis;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::values;
use super::walk::{Obj, Problems, index};
use crate::core::SourceId;
pub use http::{AgentUrl, HttpComponent, HttpConfig, HttpMethod, json_pointer};
pub use postgres::{PostgresConfig, PostgresRead, PostgresTable};
pub use push::PushConfig;
pub use redis::{KeyPattern, RedisConfig, RedisLayout};

/// One entry of `sources:`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: SourceId,
    /// Threshold for this source's checks where no agent rule sets one.
    pub stale_after: Option<Duration>,
    pub kind: SourceKindConfig,
}

#[derive(Debug, Clone)]
pub enum SourceKindConfig {
    Redis(RedisConfig),
    Postgres(PostgresConfig),
    Http(HttpConfig),
    Push(PushConfig),
}

impl SourceKindConfig {
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
    let mut sources = Vec::new();
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
        sources.extend(read.config);
    }
    sources
}

/// One `sources:` entry as read: its name and type when well-formed (for the
/// checks across entries), and the source when it has no problem.
struct Read {
    name: Option<String>,
    ty: Option<String>,
    config: Option<SourceConfig>,
}

fn source(item: &Value, path: &str, p: &mut Problems) -> Read {
    let mut o = Obj::new(Some(item), path, p);
    let name = values::name(&mut o, p);
    let stale_after = o.positive_duration("stale_after", p);
    let ty = o.required_string("type", p);
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
            kind,
        }),
        _ => None,
    };
    Read { name, ty, config }
}
