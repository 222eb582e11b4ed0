//! `type: http`: a `/health` probe, its components and per-agent
//! endpoints.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::values::{check_http_scheme, headers, parse_size, required_url};
use crate::config::walk::{self, Obj, Problems, index};
use crate::core::HEALTHY_WORDS;
use crate::core::{AgentId, SourceId};
use crate::secret::SecretUrl;

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
    /// Which redirects a probe follows.
    pub redirects: Redirects,
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
    /// How long the service check fails before its alert fires (`for:`);
    /// `None`: twice `interval`, so a quick restart pages nobody.
    pub alert_for: Option<Duration>,
}

impl HttpConfig {
    /// The agent id of the service check of source `source`.
    pub fn service_agent(&self, source: &SourceId) -> AgentId {
        match &self.id {
            Some(id) => AgentId::new(id.as_str()),
            None => AgentId::new(source.as_str()),
        }
    }

    /// How long the service check fails before its alert fires.
    pub fn service_for(&self) -> Duration {
        self.alert_for.unwrap_or(self.interval * 2)
    }
}

/// Which redirects a probe follows (at most 5): `same_host` (the default:
/// the same host and port, or the same host from http up to https; never
/// down to http), `none`, or `any`
/// (refused with `headers`, which would then go to whatever host the
/// service names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    None,
    SameHost,
    Any,
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

pub(super) fn parse(o: &mut Obj<'_>, p: &mut Problems) -> Option<HttpConfig> {
    let url = required_url(o, p, check_http_scheme);
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
    let redirects = match o.string("redirects", p).as_deref() {
        None | Some("same_host") => Redirects::SameHost,
        Some("none") => Redirects::None,
        Some("any") => {
            if !headers.is_empty() {
                p.add(
                    o.at("redirects"),
                    "`any` would send the configured headers to whatever host a redirect \
                     names: use same_host, or no headers",
                );
            }
            Redirects::Any
        }
        Some(other) => {
            p.add(
                o.at("redirects"),
                format!("unknown `{other}` (supported: none, same_host, any)"),
            );
            Redirects::SameHost
        }
    };
    let mut expected_status = Vec::new();
    let status_path = o.at("expected_status");
    match o.get("expected_status") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                let at = index(&status_path, i);
                match v.as_u64().filter(|n| (100..=599).contains(n)) {
                    Some(n) => expected_status.push(n as u16),
                    None if p.is_reported(&at) => {}
                    None => p.add(at, "expected an HTTP status code from 100 to 599"),
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
    let max_body = match o.value("max_body", p) {
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
    let alert_for = o.duration("for", p);

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
        redirects,
        expected_status,
        max_response_time,
        max_body: max_body?,
        id,
        components,
        agents_url,
        agents,
        concurrency,
        alert_for,
    })
}

fn component(agent: &str, v: &Value, path: &str, p: &mut Problems) -> Option<HttpComponent> {
    let mut o = Obj::new(Some(v), path, p);
    let pointer = o
        .required_string("pointer", p)
        .and_then(|s| json_pointer(&s).map_err(|e| p.add(o.at("pointer"), e)).ok());
    let healthy_path = o.at("healthy");
    let healthy = match o.get("healthy") {
        None => HEALTHY_WORDS.iter().map(|s| s.to_string()).collect(),
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
