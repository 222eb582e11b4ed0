//! `config.yaml`: parsed once into typed values, every problem collected.
//!
//! Loading is: read the file, parse the YAML, substitute `${VAR}` in string
//! values, then convert each section into typed values while recording every
//! problem with its path. A config with problems is rejected as a whole
//! ([`ConfigError::Invalid`]); the binary exits 64 before binding anything.

pub mod alerting;
mod env;
mod walk;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::core::{AgentRule, Defaults, Labels, Policy, SourceId};
use crate::secret::SecretUrl;
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
    /// Address of the HTTP server (`/metrics`, API, push endpoint).
    pub listen: SocketAddr,
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
            ..Policy::default()
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

/// `type: postgres`: heartbeats in a PostgreSQL table (Supabase included).
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://` or `postgresql://`; `sslmode` and the other libpq
    /// parameters go in the query string.
    pub url: SecretUrl,
    /// Full scan period.
    pub interval: Duration,
    /// `statement_timeout` of every read, and the bound on connecting and
    /// on waiting for a free connection.
    pub timeout: Duration,
    /// At most this many connections (1..=10).
    pub max_connections: usize,
    /// Rows per page of a scan and agents per point-read query.
    pub page_size: NonZeroUsize,
    /// PEM file of the CA(s) to verify the server's certificate with
    /// (`sslmode=verify-ca` / `verify-full`).
    pub tls_ca_file: Option<PathBuf>,
    pub read: PostgresRead,
}

/// What a PostgreSQL source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresRead {
    /// A SQL query whose columns are taken by position: agent id, timestamp,
    /// then optionally a status and a details column.
    Query(String),
    /// A table (or view) read with keyset pagination on its id column.
    Table(PostgresTable),
}

/// The `table:` form of a PostgreSQL source. Names are used exactly as
/// written (quoted), so they are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTable {
    /// `table` or `schema.table`.
    pub schema: Option<String>,
    pub table: String,
    pub id_column: String,
    pub timestamp_column: String,
    pub status_column: Option<String>,
    /// An SQL condition added to every read (`where:`).
    pub filter: Option<String>,
}

/// `type: http`: a `/health` probe. The service itself is a check (agent
/// id `id`, by default the source's name); `components` read per-agent
/// statuses out of its JSON body; `agents_url` probes one endpoint per agent.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: SecretUrl,
    /// Probe period.
    pub interval: Duration,
    /// Bound on each request, from connecting to the end of the body.
    pub timeout: Duration,
    pub method: HttpMethod,
    /// Sent with every request; values are secrets (never printed).
    pub headers: Vec<(String, SecretString)>,
    /// Status codes that mean healthy; empty means any 2xx.
    pub expected_status: Vec<u16>,
    /// A slower answer makes the check `failing` ("slow").
    pub max_response_time: Option<Duration>,
    /// Longest body read, in bytes; a longer one is "body too large".
    pub max_body: usize,
    /// Agent id of the service check (the source's name when `None`).
    pub id: Option<String>,
    pub components: Vec<HttpComponent>,
    /// One endpoint per agent: a URL with `{agent}`, and the agents.
    pub agents_url: Option<AgentUrl>,
    pub agents: Vec<String>,
    /// Most probes of this source in flight at once.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
        }
    }
}

/// An agent whose status is read out of the service's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpComponent {
    pub agent: String,
    /// RFC 6901 JSON Pointer (a dotted path is converted).
    pub pointer: String,
    /// Values that mean healthy, compared case-insensitively.
    pub healthy: Vec<String>,
    /// Pointer to a heartbeat time in the body.
    pub last_seen: Option<String>,
}

/// A URL template with `{agent}` (the id is percent-encoded into it).
#[derive(Clone)]
pub struct AgentUrl {
    template: SecretString,
    redacted: String,
}

impl AgentUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.matches("{agent}").count() != 1 {
            return Err("must contain `{agent}` exactly once".into());
        }
        let probe = SecretUrl::parse(&s.replace("{agent}", "x"))?;
        check_http_scheme(&probe)?;
        Ok(Self {
            template: SecretString::from(s.to_string()),
            redacted: probe.redacted().replace("/x", "/{agent}"),
        })
    }

    /// The URL of one agent's endpoint.
    pub fn url(&self, agent: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(agent.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        self.template.expose_secret().replace("{agent}", &encoded)
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for AgentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted)
    }
}

fn check_http_scheme(u: &SecretUrl) -> Result<(), String> {
    let scheme = u.expose().split("://").next().unwrap_or_default();
    if matches!(scheme, "http" | "https") {
        Ok(())
    } else {
        Err(format!(
            "scheme must be http:// or https:// (found `{scheme}://`)"
        ))
    }
}

/// The default values that mean healthy.
pub const HEALTHY_VALUES: [&str; 4] = ["active", "ok", "up", "true"];

/// `/a/b` as is (RFC 6901); `a.b` as `/a/b`.
pub fn json_pointer(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (the whole body is not a status)".into());
    }
    if s.starts_with('/') {
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.peek(), Some('0' | '1')) {
                return Err(format!(
                    "`{s}` is not a valid JSON Pointer (`~` must be `~0` or `~1`)"
                ));
            }
        }
        return Ok(s.to_string());
    }
    if s.split('.').any(str::is_empty) {
        return Err(format!(
            "`{s}` is neither a JSON Pointer (`/a/b`) nor a dotted path (`a.b`)"
        ));
    }
    Ok(s.split('.')
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect())
}

/// `1048576`, `512KiB`, `1MiB`, `1MB`, `64kB`.
fn parse_size(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let mult = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" => 1000,
                "kib" => 1024,
                "mb" => 1_000_000,
                "mib" => 1024 * 1024,
                _ => return None,
            };
            n.checked_mul(mult)
        }
        _ => None,
    }
}

/// `type: push`: agents `POST /api/v1/heartbeats/{agent}`.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Required bearer token, if set.
    pub token: Option<SecretString>,
    /// A push for a new agent id is refused (429) while the sidecar already
    /// knows this many agents, so a client cannot grow its memory without
    /// bound.
    pub max_agents: usize,
}

/// Read and check a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Parse config text; `lookup` resolves environment variables.
pub fn parse(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut tree: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    let mut p = Problems::default();
    env::substitute(&mut tree, "", lookup, &mut p);
    let config = convert(&tree, &mut p);
    match config {
        Some(c) if p.0.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: p.0,
        }),
    }
}

fn convert(tree: &Value, p: &mut Problems) -> Option<Config> {
    let mut root = Obj::new(Some(tree), "", p);

    let listen = match root.string("listen", p) {
        None => Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    "listen",
                    format!("`{s}` is not an address like 0.0.0.0:9464"),
                );
                None
            }
        },
    };
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
        if d.forget_after < d.stale_after {
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

    let source_items = root.list("sources", p);
    if !root.has("sources") || source_items.is_empty() {
        p.add("sources", "at least one source is required");
    }
    let mut sources = Vec::new();
    let mut names = BTreeSet::new();
    let mut push_count = 0;
    for (i, item) in source_items.iter().enumerate() {
        let path = index("sources", i);
        if let Some(s) = source(item, &path, p) {
            if !names.insert(s.name.clone()) {
                p.add(
                    format!("{path}.name"),
                    format!("duplicate source name `{}`", s.name),
                );
            }
            if matches!(s.kind, SourceKindConfig::Push(_)) {
                push_count += 1;
                if push_count > 1 {
                    p.add(format!("{path}.type"), "only one push source is allowed");
                }
            }
            sources.push(s);
        }
    }

    let mut agents = Vec::new();
    for (i, item) in root.list("agents", p).iter().enumerate() {
        if let Some(rule) = agent_rule(item, &index("agents", i), p) {
            agents.push(rule);
        }
    }
    let alerting = alerting::parse(&mut root, p);
    root.finish(p);

    Some(Config {
        listen: listen?,
        startup_grace,
        defaults,
        confirm_timeout,
        shutdown_timeout,
        state,
        metrics,
        sources,
        agents,
        alerting,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn source(item: &Value, path: &str, p: &mut Problems) -> Option<SourceConfig> {
    let mut o = Obj::new(Some(item), path, p);
    let name = o.required_string("name", p);
    if let Some(n) = &name
        && !valid_name(n)
    {
        p.add(o.at("name"), "use 1 to 64 letters, digits, `_`, `-` or `.`");
    }
    let stale_after = o.positive_duration("stale_after", p);
    let ty = o.required_string("type", p);
    let kind = match ty.as_deref() {
        Some("redis") => redis(&mut o, p).map(SourceKindConfig::Redis),
        Some("postgres") => postgres(&mut o, p).map(SourceKindConfig::Postgres),
        Some("http") => http(&mut o, p).map(SourceKindConfig::Http),
        Some("push") => {
            let token = o
                .string("token", p)
                .filter(|t| !t.is_empty())
                .map(SecretString::from);
            let max_agents = o
                .integer("max_agents", 1..=10_000_000, p)
                .unwrap_or(100_000) as usize;
            Some(SourceKindConfig::Push(PushConfig { token, max_agents }))
        }
        Some(other) => {
            p.add(
                o.at("type"),
                format!("unknown source type `{other}` (supported: redis, postgres, http, push)"),
            );
            None
        }
        None => None,
    };
    o.finish(p);
    Some(SourceConfig {
        name: SourceId::new(name?.as_str()),
        stale_after,
        kind: kind?,
    })
}

fn redis(o: &mut Obj<'_>, p: &mut Problems) -> Option<RedisConfig> {
    let url = o.required_string("url", p).and_then(|s| {
        let parsed = SecretUrl::parse(&s).and_then(|u| {
            let scheme = u.expose().split("://").next().unwrap_or_default();
            match scheme {
                "redis" | "rediss" | "redis+unix" | "unix" => Ok(u),
                _ => Err(format!(
                    "scheme must be redis:// or rediss:// (found `{scheme}://`)"
                )),
            }
        });
        parsed.map_err(|e| p.add(o.at("url"), e)).ok()
    });
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
    })
}

fn postgres(o: &mut Obj<'_>, p: &mut Problems) -> Option<PostgresConfig> {
    let url = o.required_string("url", p).and_then(|s| {
        let parsed = SecretUrl::parse(&s).and_then(|u| {
            let scheme = u.expose().split("://").next().unwrap_or_default();
            if !matches!(scheme, "postgres" | "postgresql") {
                return Err(format!(
                    "scheme must be postgres:// or postgresql:// (found `{scheme}://`)"
                ));
            }
            check_postgres_url(&u)?;
            Ok(u)
        });
        parsed.map_err(|e| p.add(o.at("url"), e)).ok()
    });
    let interval = o
        .positive_duration("interval", p)
        .unwrap_or(Duration::from_secs(10));
    let timeout = o
        .positive_duration("timeout", p)
        .unwrap_or(Duration::from_secs(5));
    let max_connections = o.integer("max_connections", 1..=10, p).unwrap_or(2) as usize;
    let page_size = o.integer("page_size", 1..=100_000, p).unwrap_or(5000) as usize;
    let tls_ca_file = o.string("tls_ca_file", p).and_then(|s| {
        let path = PathBuf::from(&s);
        if path.is_file() {
            Some(path)
        } else {
            p.add(
                o.at("tls_ca_file"),
                format!("`{s}` is not a readable file (a PEM file of CA certificates)"),
            );
            None
        }
    });

    let non_empty = |o: &mut Obj<'_>, key: &'static str, p: &mut Problems| {
        o.string(key, p).filter(|s| {
            if s.trim().is_empty() {
                p.add(o.at(key), "must not be empty");
            }
            !s.trim().is_empty()
        })
    };
    let query = non_empty(o, "query", p);
    let table = non_empty(o, "table", p);
    let table_keys = ["id_column", "timestamp_column", "status_column", "where"];
    let read = match (o.has("query"), o.has("table")) {
        (true, true) => {
            p.add(o.at("table"), "set either `query` or `table`, not both");
            None
        }
        (false, false) => {
            p.add(
                o.at("query"),
                "required: set `query` (SQL returning agent id and timestamp) or `table` \
                 (with id_column and timestamp_column)",
            );
            None
        }
        (true, false) => {
            for key in table_keys {
                if o.has(key) {
                    p.add(
                        o.at(key),
                        "only used with `table`; with `query`, select the columns in the SQL",
                    );
                }
            }
            query.map(|q| PostgresRead::Query(trim_query(&q)))
        }
        (false, true) => {
            let name = table.and_then(|t| {
                split_table_name(&t)
                    .map_err(|e| p.add(o.at("table"), e))
                    .ok()
            });
            let id_column = non_empty(o, "id_column", p);
            let timestamp_column = non_empty(o, "timestamp_column", p);
            if !o.has("id_column") {
                p.add(o.at("id_column"), "required with `table`");
            }
            if !o.has("timestamp_column") {
                p.add(o.at("timestamp_column"), "required with `table`");
            }
            let status_column = non_empty(o, "status_column", p);
            let filter = non_empty(o, "where", p);
            match (name, id_column, timestamp_column) {
                (Some((schema, table)), Some(id_column), Some(timestamp_column)) => {
                    Some(PostgresRead::Table(PostgresTable {
                        schema,
                        table,
                        id_column,
                        timestamp_column,
                        status_column,
                        filter,
                    }))
                }
                _ => None,
            }
        }
    };
    // Reported above where misplaced; never as unknown keys.
    for key in table_keys {
        let _ = o.get(key);
    }
    Some(PostgresConfig {
        url: url?,
        interval,
        timeout,
        max_connections,
        page_size: NonZeroUsize::new(page_size)?,
        tls_ca_file,
        read: read?,
    })
}

fn http(o: &mut Obj<'_>, p: &mut Problems) -> Option<HttpConfig> {
    let url = o.required_string("url", p).and_then(|s| {
        SecretUrl::parse(&s)
            .and_then(|u| check_http_scheme(&u).map(|()| u))
            .map_err(|e| p.add(o.at("url"), e))
            .ok()
    });
    let interval = o
        .positive_duration("interval", p)
        .unwrap_or(Duration::from_secs(10));
    let timeout = o
        .positive_duration("timeout", p)
        .unwrap_or(Duration::from_secs(2));
    let method = match o.string("method", p).map(|m| m.to_ascii_uppercase()) {
        None => Some(HttpMethod::Get),
        Some(m) if m == "GET" => Some(HttpMethod::Get),
        Some(m) if m == "HEAD" => Some(HttpMethod::Head),
        Some(m) if m == "POST" => Some(HttpMethod::Post),
        Some(m) => {
            p.add(
                o.at("method"),
                format!("unknown method `{m}` (supported: GET, HEAD, POST)"),
            );
            None
        }
    };
    let headers = headers(o, p);
    let mut expected_status = Vec::new();
    let status_path = o.at("expected_status");
    match o.get("expected_status") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                match v.as_u64().filter(|n| (100..=599).contains(n)) {
                    Some(n) => expected_status.push(n as u16),
                    None => p.add(
                        index(&status_path, i),
                        "expected an HTTP status code from 100 to 599",
                    ),
                }
            }
            if items.is_empty() {
                p.add(&status_path, "must list at least one status code");
            }
        }
        Some(_) => p.add(
            &status_path,
            "expected a list of status codes, e.g. [200, 204]",
        ),
    }
    let max_response_time = o.positive_duration("max_response_time", p);
    let max_body = match o.get("max_body") {
        None => Some(1024 * 1024),
        Some(v) => match parse_size(v).filter(|n| (1..=64 * 1024 * 1024).contains(n)) {
            Some(n) => Some(n as usize),
            None => {
                p.add(
                    o.at("max_body"),
                    "expected a size from 1 byte to 64MiB, e.g. 1048576, 512KiB or 1MiB",
                );
                None
            }
        },
    };
    let id = o.string("id", p).filter(|s| {
        if s.trim().is_empty() {
            p.add(o.at("id"), "must not be empty");
        }
        !s.trim().is_empty()
    });
    let concurrency = o.integer("concurrency", 1..=1024, p).unwrap_or(16) as usize;

    let mut components = Vec::new();
    let comp_path = o.at("components");
    match o.get("components") {
        None => {}
        Some(Value::Object(map)) => {
            for (agent, v) in map {
                if let Some(c) = component(agent, v, &walk::join(&comp_path, agent), p) {
                    components.push(c);
                }
            }
        }
        Some(_) => p.add(
            &comp_path,
            "expected a mapping of agent ids to {pointer, healthy, last_seen}",
        ),
    }
    if method == Some(HttpMethod::Head) && !components.is_empty() {
        p.add(
            o.at("method"),
            "HEAD returns no body, and `components` are read from the body: use GET or POST",
        );
    }

    let agents_url = o.string("agents_url", p).and_then(|s| {
        AgentUrl::parse(&s)
            .map_err(|e| p.add(o.at("agents_url"), e))
            .ok()
    });
    let agents_path = o.at("agents");
    let mut agents: Vec<String> = Vec::new();
    for (i, v) in o.list("agents", p).iter().enumerate() {
        let at = index(&agents_path, i);
        if let Some(a) = walk::as_string(v, &at, p) {
            if a.trim().is_empty() {
                p.add(&at, "must not be empty");
            } else if agents.contains(&a) {
                p.add(&at, format!("duplicate agent `{a}`"));
            } else {
                agents.push(a);
            }
        }
    }
    match (o.has("agents_url"), o.has("agents")) {
        (true, false) => p.add(
            &agents_path,
            "required with `agents_url`: the agent ids whose endpoints are probed",
        ),
        (false, true) => p.add(o.at("agents_url"), "required with `agents`"),
        _ => {}
    }
    // One check per (agent, source): an id may name one thing only.
    if let Some(id) = &id {
        if components.iter().any(|c| &c.agent == id) || agents.contains(id) {
            p.add(
                o.at("id"),
                format!("`{id}` is also a component or an agent of this source"),
            );
        }
    }
    for c in &components {
        if agents.contains(&c.agent) {
            p.add(
                walk::join(&comp_path, &c.agent),
                "also listed in `agents`: one agent is a component or an endpoint, not both",
            );
        }
    }
    Some(HttpConfig {
        url: url?,
        interval,
        timeout,
        method: method?,
        headers,
        expected_status,
        max_response_time,
        max_body: max_body?,
        id,
        components,
        agents_url,
        agents,
        concurrency,
    })
}

/// `headers:`, a mapping of header names to values; the values are secrets
/// (tokens) and no message shows them.
fn headers(o: &mut Obj<'_>, p: &mut Problems) -> Vec<(String, SecretString)> {
    let mut headers = Vec::new();
    let headers_path = o.at("headers");
    match o.get("headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let at = walk::join(&headers_path, k);
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    p.add(&at, "not a valid HTTP header name");
                    continue;
                }
                if let Some(value) = walk::as_string(v, &at, p) {
                    // The message never shows the value: it may be a token.
                    if reqwest::header::HeaderValue::from_str(&value).is_err() {
                        p.add(&at, "the value is not a valid HTTP header value");
                    } else {
                        headers.push((k.clone(), SecretString::from(value)));
                    }
                }
            }
        }
        Some(_) => p.add(
            &headers_path,
            "expected a mapping of header names to values",
        ),
    }
    headers
}

fn component(agent: &str, v: &Value, path: &str, p: &mut Problems) -> Option<HttpComponent> {
    let mut o = Obj::new(Some(v), path, p);
    let pointer = o
        .required_string("pointer", p)
        .and_then(|s| json_pointer(&s).map_err(|e| p.add(o.at("pointer"), e)).ok());
    let healthy_path = o.at("healthy");
    let healthy = match o.get("healthy") {
        None => HEALTHY_VALUES.iter().map(|s| s.to_string()).collect(),
        Some(Value::Array(items)) => {
            let values: Vec<String> = items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| walk::as_string(v, &index(&healthy_path, i), p))
                .map(|s| s.trim().to_ascii_lowercase())
                .collect();
            if items.is_empty() {
                p.add(&healthy_path, "must list at least one value");
            }
            values
        }
        Some(v) => walk::as_string(v, &healthy_path, p)
            .map(|s| vec![s.trim().to_ascii_lowercase()])
            .unwrap_or_default(),
    };
    let last_seen = o.string("last_seen", p).and_then(|s| {
        json_pointer(&s)
            .map_err(|e| p.add(o.at("last_seen"), e))
            .ok()
    });
    o.finish(p);
    if agent.trim().is_empty() {
        p.add(path, "the agent id must not be empty");
        return None;
    }
    Some(HttpComponent {
        agent: agent.to_string(),
        pointer: pointer?,
        healthy,
        last_seen,
    })
}

/// The URL as the PostgreSQL client will read it (`sslmode` and the other
/// parameters); the message never holds the password.
fn check_postgres_url(u: &SecretUrl) -> Result<(), String> {
    use std::str::FromStr as _;
    match sqlx::postgres::PgConnectOptions::from_str(u.expose()) {
        Ok(_) => Ok(()),
        Err(e) => {
            let mut msg = e.to_string().replace("error with configuration: ", "");
            if let Some(pw) = url::Url::parse(u.expose())
                .ok()
                .and_then(|x| x.password().map(str::to_string))
                .filter(|pw| !pw.is_empty())
            {
                msg = msg.replace(&pw, "***");
            }
            Err(format!("not a usable PostgreSQL URL: {msg}"))
        }
    }
}

/// A query without the trailing `;` and blanks (it is wrapped in other SQL).
fn trim_query(q: &str) -> String {
    q.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .to_string()
}

/// `table` or `schema.table`.
fn split_table_name(s: &str) -> Result<(Option<String>, String), String> {
    let parts: Vec<&str> = s.split('.').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok((None, t.to_string())),
        [schema, t] if !schema.is_empty() && !t.is_empty() => {
            Ok((Some(schema.to_string()), t.to_string()))
        }
        _ => Err(format!(
            "`{s}` is not `table` or `schema.table` (names are used exactly as written)"
        )),
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn agent_rule(item: &Value, path: &str, p: &mut Problems) -> Option<AgentRule> {
    let mut o = Obj::new(Some(item), path, p);
    let pattern = o.required_string("match", p);
    let stale_after = o.positive_duration("stale_after", p);
    let expected = o.boolean("expected", p).unwrap_or(false);
    let alert_for = o.duration("for", p).unwrap_or(Duration::ZERO);
    let mut labels = Labels::new();
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
                } else if k == "agent" {
                    p.add(&at, "`agent` is set by agent-supervisor itself");
                }
                if let Some(s) = walk::as_string(v, &at, p) {
                    labels.insert(k.clone(), s);
                }
            }
        }
        Some(_) => p.add(&labels_path, "expected a mapping of label names to values"),
    }
    o.finish(p);
    let pattern = pattern?;
    if expected && !crate::core::policy::is_literal_pattern(&pattern) {
        p.add(
            format!("{path}.expected"),
            "expected: true needs a literal agent id in `match`, not a glob",
        );
    }
    match AgentRule::new(&pattern, stale_after, labels, expected) {
        Ok(rule) => Some(rule.with_alert_for(alert_for)),
        Err(e) => {
            p.add(
                format!("{path}.match"),
                format!("not a valid glob: {}", e.kind()),
            );
            None
        }
    }
}

#[cfg(test)]
mod alerting_tests;
#[cfg(test)]
mod tests;
