//! `type: redis`: the layouts (`keys`, `hash`, `zset`) and key patterns.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::config::values::{check_scheme, required_url};
use crate::config::walk::{Obj, Problems};
use crate::secret::{SecretUrl, scrub_secrets};

/// The URL schemes of a Redis server: one node (`redis`, `rediss` for TLS,
/// `redis+unix` for a socket), a Redis Cluster (`redis-cluster`, seed nodes
/// in `?node=host:port`) or a primary found through Redis Sentinel
/// (`redis-sentinel`, sentinels in the authority and `?node=`, the service
/// in `?sentinelServiceName=`).
const SCHEMES: [&str; 7] = [
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
    "redis+unix",
];

/// `Ok` for a Redis URL the client can use: a known scheme, and whatever
/// that deployment needs (a port on every cluster node, a service name for
/// Sentinel...). The message never shows a password.
pub fn check_redis_url(u: &SecretUrl) -> Result<(), String> {
    check_scheme(u, &SCHEMES)?;
    fred::types::config::Config::from_url(u.expose())
        .map(|_| ())
        .map_err(|e| scrub_secrets(&u.password_forms(), e.details().to_string()))
}

/// `type: redis`.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretUrl,
    /// Full scan period.
    pub interval: Duration,
    /// Timeout of every Redis command and of connecting.
    pub timeout: Duration,
    pub layout: RedisLayout,
    /// Page size of SCAN / HSCAN / ZSCAN and of MGET batches.
    pub batch: NonZeroUsize,
    /// Field read from JSON values (`{"last_seen": ...}`); dotted paths allowed.
    pub json_field: String,
    /// Field of JSON values holding a status word or boolean
    /// (`{"status": "error", "detail": "..."}`): an unhealthy one makes the
    /// agent `failing`, as for push and PostgreSQL.
    pub status_field: String,
}

/// How heartbeats are laid out in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisLayout {
    /// One string key per agent: `agent:{agent}:last_seen`.
    Keys(KeyPattern),
    /// One hash, field = agent id, value = timestamp.
    Hash { key: String },
    /// One sorted set, member = agent id, score = timestamp.
    Zset { key: String },
}

/// A key pattern with exactly one `{agent}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    pub prefix: String,
    pub suffix: String,
}

impl KeyPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split("{agent}");
        let prefix = parts.next().unwrap_or_default();
        let Some(suffix) = parts.next() else {
            return Err("must contain `{agent}` where the agent id goes".into());
        };
        if parts.next().is_some() {
            return Err("must contain `{agent}` exactly once".into());
        }
        if prefix.is_empty() && suffix.is_empty() {
            return Err("`{agent}` alone would match every key; add a prefix or suffix".into());
        }
        Ok(Self {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        })
    }

    pub fn key(&self, agent: &str) -> String {
        format!("{}{}{}", self.prefix, agent, self.suffix)
    }

    /// The agent id in `key`, if the key matches.
    pub fn agent<'k>(&self, key: &'k str) -> Option<&'k str> {
        let id = key.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        (!id.is_empty()).then_some(id)
    }

    /// The SCAN MATCH glob: prefix and suffix escaped, `*` for the id.
    pub fn scan_match(&self) -> String {
        format!(
            "{}*{}",
            escape_glob(&self.prefix),
            escape_glob(&self.suffix)
        )
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn parse(o: &mut Obj<'_>, p: &mut Problems) -> Option<RedisConfig> {
    let url = required_url(o, p, check_redis_url);
    let interval = o
        .positive_duration("interval", p)
        .unwrap_or(Duration::from_secs(5));
    let timeout = o
        .positive_duration("timeout", p)
        .unwrap_or(Duration::from_secs(2));
    let batch = o.integer("batch", 1..=100_000, p).unwrap_or(1000) as usize;
    let json_field = o
        .string("json_field", p)
        .unwrap_or_else(|| "last_seen".to_string());
    let status_field = o
        .string("status_field", p)
        .unwrap_or_else(|| "status".to_string());
    let layout_name = o.string("layout", p).unwrap_or_else(|| "keys".into());
    let layout = match layout_name.as_str() {
        "keys" => {
            let pattern = o.required_string("pattern", p);
            pattern.and_then(|s| {
                KeyPattern::parse(&s)
                    .map_err(|e| p.add(o.at("pattern"), e))
                    .ok()
                    .map(RedisLayout::Keys)
            })
        }
        "hash" | "zset" => {
            let key = o.required_string("key", p).filter(|k| {
                if k.is_empty() {
                    p.add(o.at("key"), "must not be empty");
                }
                !k.is_empty()
            });
            key.map(|key| {
                if layout_name == "hash" {
                    RedisLayout::Hash { key }
                } else {
                    RedisLayout::Zset { key }
                }
            })
        }
        other => {
            p.add(
                o.at("layout"),
                format!("unknown layout `{other}` (supported: keys, hash, zset)"),
            );
            // Which of these belongs depends on the layout: none is reported.
            let _ = (o.get("pattern"), o.get("key"));
            None
        }
    };
    Some(RedisConfig {
        url: url?,
        interval,
        timeout,
        layout: layout?,
        batch: NonZeroUsize::new(batch)?,
        json_field,
        status_field,
    })
}
