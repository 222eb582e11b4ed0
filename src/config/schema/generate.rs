//! The schema generated from mirror types of what the loader reads (test
//! builds only).
//!
//! The loader reads the YAML with its own walker so that it can collect
//! every problem at once; the types here mirror what it reads, key by key,
//! and exist only to be described. Their doc comments are what an editor
//! shows. Cross-field rules (`pattern` only with `layout: keys`, receivers
//! named in routes must exist...) are the loader's: the schema checks keys,
//! types and closed sets of values. Strings may hold `${VAR}` placeholders;
//! a number may also be a `${VAR}` string, as the loader substitutes
//! before it converts.

// Mirror types: described, never built.
#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// The JSON Schema of `config.yaml`, pretty-printed, ending with a newline.
pub(super) fn json_schema() -> String {
    let schema = schemars::schema_for!(ConfigFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A duration with a unit: `500ms`, `30s`, `5m`, `1h 30m`; `0` alone may be
/// a number.
struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration with a unit: 500ms, 30s, 5m, 1h 30m (0 alone may be a number).",
            "anyOf": [{"type": "string", "minLength": 1}, {"const": 0}]
        })
    }
}

/// A whole number from `min` to `max`, or a string holding one (or a
/// `${VAR}` that gives one).
fn int(min: u64, max: u64) -> Schema {
    json_schema!({
        "anyOf": [
            {"type": "integer", "minimum": min, "maximum": max},
            {"type": "string", "pattern": "^\\s*[0-9]+\\s*$|\\$\\{"},
            {"type": "null"}
        ]
    })
}

macro_rules! int_schema {
    ($($name:ident: $min:expr, $max:expr;)*) => {
        $(fn $name(_: &mut SchemaGenerator) -> Schema {
            int($min, $max)
        })*
    };
}

int_schema! {
    int_max_agent_series: 0, 10_000_000;
    int_batch: 1, 100_000;
    int_max_connections: 1, 10;
    int_page_size: 1, 100_000;
    int_concurrency: 1, 1024;
    int_max_agents: 1, 10_000_000;
    int_max_pending: 1, 1_000_000;
    int_max_per_second: 1, 1_000_000;
}

/// A list of HTTP status codes, at least one.
fn status_codes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            {
                "type": "array",
                "minItems": 1,
                "items": {"type": "integer", "minimum": 100, "maximum": 599}
            },
            {"type": "null"}
        ]
    })
}

/// `admin_listen`: an address, or `false` for no admin listener.
fn address_or_false(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Address of the admin listener (push, silence writes, reads), or false for none. Default 127.0.0.1:9465.",
        "anyOf": [{"type": "string"}, {"const": false}, {"type": "null"}]
    })
}

/// The state directory, or `false` to disable persistence.
fn state_path(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Directory of the embedded state store; false disables it. Default ./data.",
        "anyOf": [{"type": "string"}, {"const": false}, {"type": "null"}]
    })
}

/// `config.yaml`.
#[derive(JsonSchema)]
#[schemars(title = "agent-supervisor config", deny_unknown_fields)]
struct ConfigFile {
    /// Address of the read listener: /metrics, /healthz, /readyz and GET
    /// /api/v1/*; it answers 403 to anything else. Default 0.0.0.0:9464.
    listen: Option<String>,
    /// Address of the admin listener: the push endpoint and silence
    /// writes, and the reads; `false` for none (then no push source).
    /// Default 127.0.0.1:9465 (loopback: this pod or host only). On any
    /// other address, the push sources' `token` and `api_token` are
    /// required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "address_or_false")]
    admin_listen: Option<String>,
    /// Bearer token for GET /api/v1/* on both listeners (api_token is
    /// accepted too). Empty: the reads are open.
    read_token: Option<String>,
    /// No notification is sent before this much time has passed since
    /// start; no agent turns `missing` before every source has been read
    /// once, or before it has passed. Default 30s.
    startup_grace: Option<Duration>,
    /// An unanswered point read (the re-read before declaring an agent
    /// stale) is asked again after this long. Default 5s; > 0.
    confirm_timeout: Option<Duration>,
    /// On SIGTERM/SIGINT, tasks get this long to finish. Default 10s; > 0.
    shutdown_timeout: Option<Duration>,
    defaults: Option<Defaults>,
    state: Option<State>,
    metrics: Option<Metrics>,
    /// Where heartbeats are read from; at least one. Names are unique; at
    /// most one `push` source.
    #[schemars(length(min = 1))]
    sources: Vec<Source>,
    /// Per-agent rules; the first whose `match` matches an agent id wins.
    agents: Option<Vec<AgentRule>>,
    /// Base URL of this sidecar as people reach it (links in messages,
    /// Alertmanager's externalURL and generatorURL); http(s).
    external_url: Option<String>,
    /// Bearer token for POST and DELETE /api/v1/silences (on admin_listen).
    /// Required when admin_listen is not a loopback address; empty: anyone
    /// who reaches admin_listen may add silences.
    api_token: Option<String>,
    /// Where alert notifications go.
    receivers: Option<Vec<Receiver>>,
    routing: Option<Routing>,
    /// Matching alerts are not notified while a silence is active.
    silences: Option<Vec<Silence>>,
    delivery: Option<Delivery>,
    recheck: Option<Recheck>,
    ha: Option<Ha>,
    /// Named HTTP calls to the watched service's admin endpoints: what an
    /// agent rule's `remediate` calls, and what can be run by hand
    /// (POST /api/v1/agents/{id}/actions/{name}).
    actions: Option<Vec<Action>>,
    remediation: Option<Remediation>,
}

/// One named HTTP call.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Action {
    /// Unique; 1 to 64 letters, digits, `_`, `-` or `.`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$|\$\{"))]
    name: String,
    /// GET, POST, PUT, PATCH or DELETE. Default POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "action_method")]
    method: Option<String>,
    /// http(s) URL; `{agent}` and `{<label>}` are filled in
    /// (percent-encoded) with the agent's id and labels.
    url: String,
    /// Request headers; values are secrets (never printed).
    headers: Option<BTreeMap<String, String>>,
    /// The body as a minijinja template with the variables agent, labels,
    /// state, reason, since, action and attempt; strict (an unknown
    /// variable is an error); JSON unless a Content-Type header says
    /// otherwise (use `|tojson`).
    body: Option<String>,
    /// Bound on the call. Default 5s; at most 20s.
    timeout: Option<Duration>,
    /// Statuses that mean the call worked. Default any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_codes")]
    expect: Option<Vec<u16>>,
}

/// `method` of an action, in any case.
fn action_method(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "get", "post", "put", "patch", "delete", null]
    })
}

int_schema! {
    int_attempts: 1, 10;
    int_per_minute: 1, 10_000;
    int_breaker: 1, 100_000;
    int_history: 1, 10_000;
}

/// What holds for every automatic action call.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Remediation {
    /// Log and record what would be called; call nothing (pages are not
    /// held). Default false.
    dry_run: Option<bool>,
    /// Action calls a minute, all agents together; past it calls wait.
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_per_minute")]
    max_per_minute: Option<u64>,
    /// Circuit breaker: more agents than this needing an action at once
    /// is a fleet-wide problem; none is acted on and their alerts fire.
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_breaker")]
    max_agents: Option<u64>,
    /// Attempts kept for GET /api/v1/actions. Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_history")]
    history: Option<u64>,
}

/// An agent state remediation acts on.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum RemedyState {
    Stale,
    Failing,
    Missing,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum PageMode {
    AfterRemediation,
    AtOnce,
}

/// Call an action to fix a matching agent before paging.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Remediate {
    /// The action called (a name in `actions`).
    action: String,
    /// States it is called on. Default [stale].
    on: Option<Vec<RemedyState>>,
    /// How long the agent stays in such a state before the first call;
    /// also how long a fleet-wide problem has to show before any agent is
    /// acted on. Default 10s.
    after: Option<Duration>,
    /// Calls per incident and per `window`. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_attempts")]
    max_attempts: Option<u64>,
    /// Default 1h.
    window: Option<Duration>,
    /// Wait after a failed call; doubles each time. Default 10s.
    backoff: Option<Duration>,
    /// A call worked when the agent is healthy within this. Default 30s.
    verify_within: Option<Duration>,
    /// after_remediation (default): the alert fires only once remediation
    /// gave up; at_once: it fires as usual and remediation notes what it
    /// tried.
    page: Option<PageMode>,
    /// An action (GET) whose answer is attached to the page.
    report: Option<String>,
}

/// Several replicas, one leader: a lease on Redis or PostgreSQL decides
/// which replica notifies. Off when absent.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Ha {
    lease: HaLease,
    /// Lease store unreachable this long: every replica notifies on its
    /// own (fail open). Default 2 × ttl; at least ttl.
    fail_open_after: Option<Duration>,
    /// This replica's name in the lease. Default: host name and pid.
    replica_id: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HaLease {
    /// Where the lease is kept.
    store: HaStore,
    /// A configured source of that type whose URL to use (or `url`).
    source: Option<String>,
    /// redis:// or postgres:// URL (or `source`).
    url: Option<String>,
    /// CA of the PostgreSQL server (with `url`).
    tls_ca_file: Option<String>,
    /// Redis: key prefix ({key}:lease, {key}:epoch); PostgreSQL: the lease
    /// row's name. Default agent-supervisor.
    key: Option<String>,
    /// PostgreSQL: the lease table (created when missing). Default
    /// agent_supervisor_ha.
    table: Option<String>,
    /// Unrenewed this long, the lease is free. Default 15s; at least 1s.
    ttl: Option<Duration>,
    /// The leader renews this often (at most ttl / 2). Default ttl / 3.
    renew_every: Option<Duration>,
    /// Bound on each call to the store; shorter than renew_every.
    timeout: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum HaStore {
    Redis,
    Postgres,
}

/// Stale and missing agents of a polled source are re-read with point
/// reads, so one that beats again is healthy within about `every`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Recheck {
    /// Period of the re-reads. Default 500ms; 0s turns them off.
    every: Option<Duration>,
    /// At most this many re-reads a second, per source. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_max_per_second")]
    max_per_second: Option<u64>,
}

/// Thresholds where no agent rule or source sets its own.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Defaults {
    /// A heartbeat older than this makes the agent `stale`. Default 60s; > 0.
    stale_after: Option<Duration>,
    /// An agent with no data for this long is dropped (expected agents never
    /// are). Default 24h; not shorter than stale_after.
    forget_after: Option<Duration>,
    /// A heartbeat further than this in the future is counted and taken as
    /// "now". Default 5s.
    max_clock_skew: Option<Duration>,
}

/// The embedded state store.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_path")]
    path: Option<()>,
    /// At most one write per this interval, plus one at shutdown. Default
    /// 2s; > 0.
    flush_interval: Option<Duration>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Metrics {
    /// Per-agent series are exported for at most this many agents
    /// (non-healthy first); the rest are counted in
    /// agent_supervisor_agent_series_omitted. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_max_agent_series")]
    max_agent_series: Option<u64>,
}

/// What every source has.
#[derive(JsonSchema)]
struct SourceCommon {
    /// Unique; 1 to 64 letters, digits, `_`, `-` or `.`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$|\$\{"))]
    name: String,
    /// Threshold of this source's checks where no agent rule sets one.
    stale_after: Option<Duration>,
    /// The http source whose service this source's agents live in: while
    /// its /health check is not healthy, their checks are held `unknown`
    /// and only the service pages.
    depends_on: Option<String>,
    /// A polled source's `source_down` fires only once it has been
    /// unreadable this long. Default: twice `interval`. Not for push.
    down_after: Option<Duration>,
}

/// One source, by `type`.
#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Source {
    /// Heartbeats stored in Redis.
    Redis(RedisSource),
    /// Heartbeats in a PostgreSQL table (Supabase included).
    Postgres(PostgresSource),
    /// A `/health` probe of the service, with per-agent statuses out of its
    /// JSON body.
    Http(HttpSource),
    /// Agents POST /api/v1/heartbeats/{agent}.
    Push(PushSource),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum RedisLayout {
    /// One string key per agent; `pattern` holds {agent} once.
    Keys,
    /// One hash, field = agent id; set `key`.
    Hash,
    /// One sorted set, member = agent id, score = epoch seconds; set `key`.
    Zset,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RedisSource {
    #[serde(flatten)]
    common: SourceCommon,
    /// redis://[:password@]host:port/db (rediss:// for TLS); a Redis Cluster:
    /// redis-cluster://host:port?node=host2:port2&node=host3:port3; Redis
    /// Sentinel: redis-sentinel://sentinel1:26379/db?sentinelServiceName=name&node=sentinel2:26379;
    /// a socket: redis+unix:///path/to/redis.sock.
    url: String,
    /// Full scan period. Default 5s; > 0.
    interval: Option<Duration>,
    /// Timeout of every Redis command and of connecting. Default 2s; > 0.
    timeout: Option<Duration>,
    /// How heartbeats are laid out. Default keys.
    layout: Option<RedisLayout>,
    /// With layout keys: the key of one agent, {agent} where its id goes
    /// (agent:{agent}:last_seen).
    pattern: Option<String>,
    /// With layout hash or zset: the key of the hash or sorted set.
    key: Option<String>,
    /// Page size of SCAN/HSCAN/ZSCAN and of MGET batches. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_batch")]
    batch: Option<u64>,
    /// For JSON values: the field holding the time (dotted paths allowed).
    /// Default last_seen.
    json_field: Option<String>,
    /// For JSON values: the field holding a status word or boolean; an
    /// unhealthy one makes the agent failing (with `detail`, if present).
    /// Default status.
    status_field: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PostgresSource {
    #[serde(flatten)]
    common: SourceCommon,
    /// postgres:// or postgresql://; sslmode and the other libpq parameters
    /// in the query string. Never printed with its password.
    url: String,
    /// Full scan period. Default 10s; > 0.
    interval: Option<Duration>,
    /// statement_timeout of every read (of a query-form scan: the longest
    /// wait for more rows and for a lock; the scan itself is cancelled after
    /// ten intervals); also bounds connecting. Default 5s.
    timeout: Option<Duration>,
    /// At most this many connections. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_max_connections")]
    max_connections: Option<u64>,
    /// Rows per page of a table-form scan, and agents per point-read query
    /// (the query form's scan is one statement). Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_page_size")]
    page_size: Option<u64>,
    /// PEM file of the CA(s) to verify the server with (sslmode=verify-ca or
    /// verify-full).
    tls_ca_file: Option<String>,
    /// Query form (set query or table): columns by position, agent id, time,
    /// then optionally status and details.
    query: Option<String>,
    /// Table form: `table` or `schema.table`, read page by page on its id
    /// column. Names are case-sensitive.
    table: Option<String>,
    /// Table form: the agent id column.
    id_column: Option<String>,
    /// Table form: the heartbeat time column.
    timestamp_column: Option<String>,
    /// Table form, optional: the status column.
    status_column: Option<String>,
    /// Table form, optional: an SQL condition added to every read.
    #[serde(rename = "where")]
    filter: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HttpSource {
    #[serde(flatten)]
    common: SourceCommon,
    /// The service's health endpoint; http(s).
    url: String,
    /// Probe period. Default 10s; > 0.
    interval: Option<Duration>,
    /// Bound on each request, from connecting to the end of the body.
    /// Default 2s; > 0.
    timeout: Option<Duration>,
    /// Default GET; components need a body (GET or POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "http_method")]
    method: Option<()>,
    /// Sent with every request; values are secrets (never printed).
    headers: Option<BTreeMap<String, String>>,
    /// Redirects followed (at most 5): same_host (default: same host and
    /// port, never https to http), none, or any (not with headers).
    redirects: Option<Redirects>,
    /// Status codes that mean healthy. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_codes")]
    expected_status: Option<()>,
    /// A slower answer makes the check failing ("slow").
    max_response_time: Option<Duration>,
    /// Longest body read: bytes, or a size like 512KiB or 1MiB (at most
    /// 64MiB). Default 1MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "max_body")]
    max_body: Option<()>,
    /// Agent id of the service check. Default: the source name.
    id: Option<String>,
    /// Agents whose status is read out of the body, by agent id.
    components: Option<BTreeMap<String, HttpComponent>>,
    /// One endpoint per agent: a URL with {agent} once; needs `agents`.
    agents_url: Option<String>,
    /// The agents probed through agents_url.
    agents: Option<Vec<String>>,
    /// Most probes of this source in flight at once. Default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_concurrency")]
    concurrency: Option<u64>,
    /// The service check's alert fires only once it has failed this long.
    /// Default: twice `interval`.
    #[serde(rename = "for")]
    alert_for: Option<Duration>,
}

/// `max_body`: a number of bytes or a size with a unit.
fn max_body(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 64 * 1024 * 1024},
            {"type": "string", "pattern": "^\\s*[0-9]+\\s*([bB]|[kKmM][iI]?[bB])?\\s*$|\\$\\{"},
            {"type": "null"}
        ]
    })
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Redirects {
    None,
    SameHost,
    Any,
}

/// `method`: GET, HEAD or POST, in any case.
fn http_method(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "enum": ["GET", "HEAD", "POST", "get", "head", "post", null]
    })
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HttpComponent {
    /// JSON Pointer (/a/b) or dotted path (a.b) to the status in the body.
    pointer: String,
    /// Values that mean healthy, compared case-insensitively. Default: ok,
    /// healthy, active, up, running, true, pass (as for push).
    healthy: Option<OneOrMany>,
    /// Optional pointer to a heartbeat time in the body.
    last_seen: Option<String>,
}

/// One string or a list of them.
#[derive(JsonSchema)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PushSource {
    #[serde(flatten)]
    common: SourceCommon,
    /// If set, requests need `Authorization: Bearer <token>`.
    token: Option<String>,
    /// A push for a new agent id is refused (429) while the sidecar knows
    /// this many agents. Default 100000 (fits the shipped 256 Mi memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_max_agents")]
    max_agents: Option<u64>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AgentRule {
    /// A glob over agent ids (`trading_*`), or one id.
    #[serde(rename = "match")]
    pattern: String,
    /// Threshold of the matching agents; > 0.
    stale_after: Option<Duration>,
    /// With a literal id in match: the agent is `missing` when never seen
    /// after startup_grace.
    expected: Option<bool>,
    /// Alerts fire only once the state has lasted this long. Default 0s.
    #[serde(rename = "for")]
    alert_for: Option<Duration>,
    /// Labels on agent_supervisor_agent_info and on alerts (not `agent`).
    labels: Option<BTreeMap<String, String>>,
    /// Call an action to fix the agent before paging.
    remediate: Option<Remediate>,
}

/// What every receiver has.
#[derive(JsonSchema)]
struct ReceiverCommon {
    /// Unique; 1 to 64 letters, digits, `_`, `-` or `.`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$|\$\{"))]
    name: String,
    /// Overrides routing.send_resolved for this receiver.
    send_resolved: Option<bool>,
    /// Per request; delivery.timeout when unset.
    timeout: Option<Duration>,
    /// Standard Webhooks signing secret: whsec_<base64>, or any string.
    secret: Option<String>,
    /// Extra request headers; values are secrets (never printed).
    headers: Option<BTreeMap<String, String>>,
}

/// One receiver, by `type`.
#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Receiver {
    /// The generic JSON body, or `template`.
    Webhook(WebhookReceiver),
    /// Alertmanager's webhook payload, version 4.
    Alertmanager(UrlReceiver),
    /// Push into a running Alertmanager (POST {url}/api/v2/alerts).
    AlertmanagerApi(AlertmanagerApiReceiver),
    /// Slack incoming webhook.
    Slack(UrlReceiver),
    /// Discord webhook.
    Discord(UrlReceiver),
    /// Microsoft Teams workflow webhook.
    Teams(UrlReceiver),
    /// PagerDuty Events API v2.
    #[serde(rename = "pagerduty")]
    PagerDuty(PagerDutyReceiver),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct UrlReceiver {
    #[serde(flatten)]
    common: ReceiverCommon,
    /// http(s).
    url: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct WebhookReceiver {
    #[serde(flatten)]
    common: ReceiverCommon,
    /// http(s).
    url: String,
    /// The body as a minijinja (Jinja2) template, checked at load; the
    /// tojson filter embeds values safely.
    template: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AlertmanagerApiReceiver {
    #[serde(flatten)]
    common: ReceiverCommon,
    /// Alertmanager's base URL (http://alertmanager:9093).
    url: String,
    /// Firing alerts are re-sent this often. Default 1m; > 0.
    resend_interval: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum PagerDutySeverity {
    Critical,
    Error,
    Warning,
    Info,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PagerDutyReceiver {
    #[serde(flatten)]
    common: ReceiverCommon,
    /// Default https://events.pagerduty.com/v2/enqueue.
    url: Option<String>,
    /// Integration key of the service; a secret.
    routing_key: String,
    /// When the agent has no `severity` label. Default critical.
    severity: Option<PagerDutySeverity>,
}

/// Grouping and pacing, as in Alertmanager; the defaults of every route.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Routing {
    /// A new group waits this long for more alerts. Default 10s.
    group_wait: Option<Duration>,
    /// A notified group waits this long before telling about changes.
    /// Default 1m.
    group_interval: Option<Duration>,
    /// A group still firing is notified again this often. Default 4h; > 0.
    repeat_interval: Option<Duration>,
    /// Also notify when alerts resolve. Default true.
    send_resolved: Option<bool>,
    /// Labels that split alerts into groups: alertname, kind, agent, source,
    /// or an agent label. Empty: one group per route and receiver.
    group_by: Option<Vec<String>>,
    /// Receivers of alerts no route takes (names from `receivers`).
    #[schemars(length(min = 1))]
    receivers: Option<Vec<String>>,
    /// Tried in order; the first that matches takes the alert unless it
    /// says `continue: true`.
    routes: Option<Vec<Route>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Route {
    /// Every key set must match; no match takes every alert.
    #[serde(rename = "match")]
    matcher: Option<Matcher>,
    /// Names from `receivers`.
    #[schemars(length(min = 1))]
    receivers: Vec<String>,
    /// Go on trying the next routes after this one matched.
    #[serde(rename = "continue")]
    continue_matching: Option<bool>,
    group_by: Option<Vec<String>>,
    group_wait: Option<Duration>,
    group_interval: Option<Duration>,
    repeat_interval: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum AlertKind {
    AgentStale,
    AgentFailing,
    AgentMissing,
    SourceDown,
}

/// One kind or a list of them.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Kinds {
    One(AlertKind),
    Many(Vec<AlertKind>),
}

/// Which alerts: every key set must match.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Matcher {
    kind: Option<Kinds>,
    /// A glob over agent ids.
    agent: Option<String>,
    /// A glob over source names.
    source: Option<String>,
    /// Agent label -> glob.
    labels: Option<BTreeMap<String, String>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Silence {
    /// Must match something.
    #[serde(rename = "match")]
    matcher: Matcher,
    /// RFC 3339. Without it the silence is active at once.
    starts_at: Option<String>,
    /// RFC 3339; after starts_at.
    ends_at: String,
    /// Why alerts are muted; not empty.
    comment: String,
    created_by: Option<String>,
}

/// How hard delivery tries.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Delivery {
    /// Per request, unless the receiver sets its own. Default 10s; > 0.
    timeout: Option<Duration>,
    /// First retry after about this long, doubling with jitter. Default 1s.
    initial_backoff: Option<Duration>,
    /// Longest wait between retries; >= initial_backoff. Default 5m.
    max_backoff: Option<Duration>,
    /// Not delivered this long after it was queued: dropped, counted and
    /// logged. Default 6h.
    give_up_after: Option<Duration>,
    /// At most this many undelivered requests per receiver; past it the
    /// oldest are dropped. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_max_pending")]
    max_pending: Option<u64>,
}
