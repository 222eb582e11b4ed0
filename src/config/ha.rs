//! `ha:`: several replicas, one leader. Off when absent.
//!
//! ```yaml
//! ha:
//!   lease:
//!     store: redis            # or postgres
//!     source: redis           # a configured source of that type, or `url:`
//!     key: agent-supervisor   # redis: key prefix; postgres: `name` of the lease row
//!     table: agent_supervisor_ha   # postgres only
//!     ttl: 15s
//!     renew_every: 5s
//!   fail_open_after: 30s      # default 2 × ttl
//!   replica_id: "${HOSTNAME:-}"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use super::sources::check_redis_url;
use super::values::{check_scheme, required_url};
use super::walk::{Obj, Problems};
use super::{SourceConfig, SourceKindConfig};
use crate::secret::SecretUrl;

/// The whole `ha:` section.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub lease: LeaseConfig,
    /// Unreachable lease store for this long: every replica notifies on
    /// its own (default 2 × ttl).
    pub fail_open_after: Duration,
    /// This replica's name in the lease (default: host name and pid).
    pub replica_id: String,
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub store: LeaseStore,
    /// A lease not renewed for this long is free to take.
    pub ttl: Duration,
    /// The leader renews this often; followers try to take it this often.
    pub renew_every: Duration,
    /// Bound on every call to the store.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum LeaseStore {
    /// Keys `{key}:lease` and `{key}:epoch` (one hash slot: `{key}` is a
    /// Redis Cluster hash tag).
    Redis { url: SecretUrl, key: String },
    /// A row `name = key` of `table`.
    Postgres {
        url: SecretUrl,
        table: String,
        key: String,
        tls_ca_file: Option<PathBuf>,
    },
}

impl LeaseStore {
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseStore::Redis { .. } => "redis",
            LeaseStore::Postgres { .. } => "postgres",
        }
    }
}

const DEFAULT_KEY: &str = "agent-supervisor";
const DEFAULT_TABLE: &str = "agent_supervisor_ha";

/// A name of a table, optionally schema-qualified: letters, digits and `_`
/// (at most 50, so that `<table>_silences` is a valid name too).
fn valid_table(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 50
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

pub(super) fn parse(
    root: &mut Obj<'_>,
    sources: &[SourceConfig],
    p: &mut Problems,
) -> Option<HaConfig> {
    let v = root.get("ha")?;
    let mut o = Obj::new(Some(v), "ha", p);
    let lease = if !o.has("lease") {
        p.add("ha.lease", "required: where the leader lease is kept");
        None
    } else {
        let mut l = Obj::new(o.get("lease"), "ha.lease", p);
        let ttl = l
            .positive_duration("ttl", p)
            .unwrap_or(Duration::from_secs(15));
        let renew_every = l
            .positive_duration("renew_every", p)
            .unwrap_or_else(|| ttl / 3);
        if renew_every.saturating_mul(2) > ttl {
            p.add(
                l.at("renew_every"),
                format!(
                    "must be at most half of ttl ({}), so one failed renewal does not lose the lease",
                    humantime::format_duration(ttl)
                ),
            );
        }
        if ttl < Duration::from_secs(1) {
            p.add(l.at("ttl"), "must be at least 1s");
        }
        let timeout = l
            .positive_duration("timeout", p)
            .unwrap_or_else(|| (renew_every / 2).min(Duration::from_secs(2)));
        if timeout >= renew_every {
            p.add(l.at("timeout"), "must be shorter than renew_every");
        }
        let store = store(&mut l, sources, p);
        l.finish(p);
        store.map(|store| LeaseConfig {
            store,
            ttl,
            renew_every,
            timeout,
        })
    };
    let fail_open_after = o.positive_duration("fail_open_after", p);
    let replica_id = o
        .string("replica_id", p)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(default_replica_id);
    if replica_id.len() > 200 || replica_id.chars().any(char::is_control) {
        p.add(
            o.at("replica_id"),
            "at most 200 characters, no control characters",
        );
    }
    o.finish(p);
    // Pushes reach the one replica they are sent to; only the leader
    // notifies: a pushed agent on any other replica would never page.
    for (i, src) in sources.iter().enumerate() {
        if matches!(src.kind, SourceKindConfig::Push(_)) {
            p.add(
                super::index("sources", i),
                format!(
                    "push source `{}` cannot be used with ha: a push reaches one replica only, \
                     and only the leader notifies; have the agents write their heartbeats to the \
                     Redis or PostgreSQL the replicas share",
                    src.name
                ),
            );
        }
    }
    let lease = lease?;
    let fail_open_after = fail_open_after.unwrap_or(lease.ttl.saturating_mul(2));
    if fail_open_after < lease.ttl {
        p.add("ha.fail_open_after", "must be at least ha.lease.ttl");
    }
    Some(HaConfig {
        lease,
        fail_open_after,
        replica_id,
    })
}

fn store(l: &mut Obj<'_>, sources: &[SourceConfig], p: &mut Problems) -> Option<LeaseStore> {
    let kind = l.required_string("store", p);
    let Some(kind) = kind.filter(|k| k == "redis" || k == "postgres") else {
        if let Some(k) = l.string("store", p) {
            p.add(l.at("store"), format!("`{k}` is not redis or postgres"));
        }
        // Not also "unknown key" for what goes with a store.
        for k in ["source", "url", "key", "table", "tls_ca_file"] {
            l.get(k);
        }
        return None;
    };
    let key = l
        .string("key", p)
        .unwrap_or_else(|| DEFAULT_KEY.to_string());
    if key.is_empty()
        || key.len() > 200
        || key.contains(['{', '}'])
        || key.chars().any(char::is_control)
    {
        p.add(
            l.at("key"),
            "1 to 200 characters, without `{`, `}` or control characters",
        );
    }
    let table = if kind == "postgres" {
        let t = l
            .string("table", p)
            .unwrap_or_else(|| DEFAULT_TABLE.to_string());
        if !valid_table(&t) {
            p.add(
                l.at("table"),
                format!("`{t}` is not a table name like schema.table"),
            );
        }
        Some(t)
    } else {
        if l.has("table") {
            l.get("table");
            p.add(l.at("table"), "only for store: postgres");
        }
        None
    };
    // The URL: a configured source's, or its own.
    let (url, tls_ca_file) = match (l.has("source"), l.has("url")) {
        (true, true) => {
            l.get("source");
            l.get("url");
            p.add(l.at("url"), "give `source` or `url`, not both");
            return None;
        }
        (true, false) => {
            if l.has("tls_ca_file") {
                l.get("tls_ca_file");
                p.add(
                    l.at("tls_ca_file"),
                    "only with `url` (a source brings its own)",
                );
            }
            let name = l.required_string("source", p)?;
            let found = sources.iter().find(|s| s.name.as_str() == name);
            match found.map(|s| &s.kind) {
                Some(SourceKindConfig::Redis(r)) if kind == "redis" => (r.url.clone(), None),
                Some(SourceKindConfig::Postgres(pg)) if kind == "postgres" => {
                    (pg.url.clone(), pg.tls_ca_file.clone())
                }
                Some(other) => {
                    p.add(
                        l.at("source"),
                        format!(
                            "source `{name}` is of type {}, not {kind}",
                            other.type_name()
                        ),
                    );
                    return None;
                }
                None => {
                    p.add(l.at("source"), format!("no source named `{name}`"));
                    return None;
                }
            }
        }
        (false, _) => {
            let url = if kind == "redis" {
                required_url(l, p, check_redis_url)
            } else {
                required_url(l, p, |u| check_scheme(u, &["postgres", "postgresql"]))
            }?;
            let ca = l.string("tls_ca_file", p).map(PathBuf::from);
            (url, ca)
        }
    };
    Some(match table {
        None => LeaseStore::Redis { url, key },
        Some(table) => LeaseStore::Postgres {
            url,
            table,
            key,
            tls_ca_file,
        },
    })
}

/// `<host name>-<pid>`: unique among replicas, and new after a restart (a
/// restarted replica must not believe it still holds an old lease).
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    format!("{host}-{}", std::process::id())
}
