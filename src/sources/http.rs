//! HTTP `/health` probes: the service itself, per-agent statuses read out of
//! its JSON body, and optionally one endpoint per agent.
//!
//! # What is a failure
//!
//! A probe's outcome is data, not a failure of the source: whatever the
//! service answers (or does not), the scan succeeds and reports it as the
//! status of the **service check** (agent id `id`, by default the source's
//! name): `HTTP 500`, `connection refused`, `timeout after 2s`, `slow: 2.31s
//! > 1s`, `body too large`, `not JSON`... A source error would make the
//! service check `unknown`, when the truth is that it is failing.
//!
//! # Components and dependency suppression
//!
//! `components` map agent ids to a JSON Pointer into the body (and the
//! values that mean healthy, and optionally a pointer to a heartbeat time,
//! which then goes stale like any heartbeat). A key absent from the body is
//! [`Reading::Missing`]; a pointer landing on an object or a list is a
//! failing status that says so.
//!
//! When the body cannot be had or read (no answer, an unexpected status, a
//! body too large, not JSON), nothing can be said about the components:
//! each is [`Reading::Unknown`] ("service check failing: HTTP 500"), frozen
//! by the core, so one alert fires (the service's), not one per agent. The
//! same holds for per-agent endpoints, which are not probed while the service
//! is failing. A slow answer with a good body still feeds the components:
//! their data is real; only the service check is failing ("slow").
//!
//! # Bounds
//!
//! Every request carries `timeout` (connect, headers and body together, plus
//! an outer guard), follows at most [`MAX_REDIRECTS`] redirects, and reads
//! at most `max_body` bytes (a larger `Content-Length` is refused before
//! reading; a body streamed past the cap is cut off). At most `concurrency`
//! probes of a source are in flight at once, scans and point reads
//! together. Header values are secrets: they are marked sensitive and never
//! appear in a message; neither does the URL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::{AgentUrl, HttpComponent, HttpConfig, HttpMethod};
use crate::core::timestamp::parse_json_value;
use crate::core::{AgentId, ErrorKind, Reading, SourceId, Status};
use crate::telemetry::metrics::Metrics;

use super::common::truncate;
use super::{PollSource, ScanSink, SourceError};

const SYSTEM: &str = "http";

/// Redirects followed before a probe fails ("too many redirects").
pub const MAX_REDIRECTS: usize = 5;
/// Longest text taken from a body into a reason.
const MAX_DETAIL: usize = 200;
/// Readings per batch sent to the core.
const BATCH: usize = 500;

/// What one request brought back.
struct Answer {
    code: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    elapsed: Duration,
}

/// Why a request brought nothing usable back.
#[derive(Debug, Clone)]
struct Failure {
    kind: ErrorKind,
    detail: String,
}

impl Failure {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// A probe judged: the check's status, the error kind to count, and the
/// parsed body when one was needed and could be read.
struct Verdict {
    status: Status,
    kind: Option<ErrorKind>,
    /// The body was had and understood: dependants may be evaluated.
    usable: bool,
    json: Option<Value>,
}

pub struct HttpSource {
    id: SourceId,
    service: AgentId,
    url: String,
    interval: Duration,
    timeout: Duration,
    method: reqwest::Method,
    expected_status: Vec<u16>,
    max_response_time: Option<Duration>,
    max_body: usize,
    components: Vec<(AgentId, HttpComponent)>,
    agents_url: Option<AgentUrl>,
    agents: Vec<AgentId>,
    concurrency: usize,
    client: reqwest::Client,
    headers: HeaderMap,
    limit: Semaphore,
    metrics: Arc<Metrics>,
}

impl HttpSource {
    /// Build the client. The process must have installed a rustls crypto
    /// provider (the binary installs ring's).
    pub fn new(id: SourceId, cfg: &HttpConfig, metrics: Arc<Metrics>) -> Result<Self, SourceError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SourceError::new(ErrorKind::Other, SYSTEM, "invalid header name"))?;
            let mut value = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                SourceError::new(
                    ErrorKind::Other,
                    SYSTEM,
                    format!("invalid value for header {name}"),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("agent-supervisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                SourceError::new(
                    ErrorKind::Tls,
                    SYSTEM,
                    format!("cannot build the HTTP client: {}", chain(&e)),
                )
            })?;
        let method = match cfg.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Head => reqwest::Method::HEAD,
            HttpMethod::Post => reqwest::Method::POST,
        };
        let service = AgentId::new(cfg.id.as_deref().unwrap_or(id.as_str()));
        Ok(Self {
            service,
            url: cfg.url.expose().to_string(),
            interval: cfg.interval,
            timeout: cfg.timeout,
            method,
            expected_status: cfg.expected_status.clone(),
            max_response_time: cfg.max_response_time,
            max_body: cfg.max_body,
            components: cfg
                .components
                .iter()
                .map(|c| (AgentId::new(c.agent.as_str()), c.clone()))
                .collect(),
            agents_url: cfg.agents_url.clone(),
            agents: cfg
                .agents
                .iter()
                .map(|a| AgentId::new(a.as_str()))
                .collect(),
            concurrency: cfg.concurrency,
            client,
            headers,
            limit: Semaphore::new(cfg.concurrency),
            metrics,
            id,
        })
    }

    /// The service check's agent id.
    pub fn service_agent(&self) -> &AgentId {
        &self.service
    }

    /// One request, bounded in time and size, within the concurrency bound.
    async fn fetch(&self, url: &str) -> Result<Answer, Failure> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| Failure::new(ErrorKind::Other, "probe limiter closed"))?;
        let started = Instant::now();
        let request = async {
            let mut resp = self
                .client
                .request(self.method.clone(), url)
                .headers(self.headers.clone())
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| self.failure(&e))?;
            let code = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if resp
                .content_length()
                .is_some_and(|n| n > self.max_body as u64)
            {
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    format!("body too large (over {} bytes)", self.max_body),
                ));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.failure(&e))? {
                if body.len() + chunk.len() > self.max_body {
                    return Err(Failure::new(
                        ErrorKind::Protocol,
                        format!("body too large (over {} bytes)", self.max_body),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                code,
                content_type,
                body,
                elapsed: started.elapsed(),
            })
        };
        // The client's timeout covers the body too; this guard makes sure
        // nothing outlives it by more than a moment.
        match tokio::time::timeout(self.timeout + Duration::from_millis(250), request).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::new(
            ErrorKind::Timeout,
            format!("timeout after {}", fmt_duration(self.timeout)),
        )
    }

    /// A client error as a kind and a message without the URL.
    fn failure(&self, e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            return self.timed_out();
        }
        if e.is_redirect() {
            return Failure::new(
                ErrorKind::Protocol,
                format!("too many redirects (more than {MAX_REDIRECTS})"),
            );
        }
        let text = chain(e);
        let lower = text.to_ascii_lowercase();
        let mut src: Option<&dyn std::error::Error> = Some(e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        return Failure::new(ErrorKind::ConnectionRefused, "connection refused");
                    }
                    std::io::ErrorKind::TimedOut => return self.timed_out(),
                    _ => {}
                }
            }
            if s.downcast_ref::<rustls::Error>().is_some() {
                return Failure::new(ErrorKind::Tls, format!("TLS: {}", s));
            }
            src = s.source();
        }
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            return Failure::new(ErrorKind::Tls, format!("TLS: {text}"));
        }
        if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
            return Failure::new(ErrorKind::Dns, format!("DNS: {text}"));
        }
        if lower.contains("connection refused") {
            return Failure::new(ErrorKind::ConnectionRefused, "connection refused");
        }
        if e.is_body() || e.is_decode() {
            return Failure::new(ErrorKind::Protocol, format!("bad body: {text}"));
        }
        if e.is_connect() {
            return Failure::new(ErrorKind::Other, format!("cannot connect: {text}"));
        }
        Failure::new(ErrorKind::Other, text)
    }

    fn expected(&self, code: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&code)
        } else {
            self.expected_status.contains(&code)
        }
    }

    /// Judge an answer; `json` when the body must be a JSON document.
    fn judge(&self, outcome: Result<Answer, Failure>, json: bool) -> Verdict {
        let failed = |kind: ErrorKind, detail: String| Verdict {
            status: Status {
                healthy: false,
                detail,
            },
            kind: Some(kind),
            usable: false,
            json: None,
        };
        let answer = match outcome {
            Ok(a) => a,
            Err(f) => return failed(f.kind, f.detail),
        };
        if !self.expected(answer.code) {
            let mut detail = format!("HTTP {}", answer.code);
            // FastAPI's exception handlers answer {"detail": "..."}.
            if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&answer.body)
                && let Some(Value::String(d)) = map.get("detail")
            {
                detail.push_str(": ");
                detail.push_str(truncate(d, MAX_DETAIL));
            }
            return failed(ErrorKind::Other, detail);
        }
        let mut parsed = None;
        if json {
            let ct = answer.content_type.as_deref().unwrap_or("");
            if !is_json_type(ct) {
                let shown = if ct.is_empty() { "none" } else { ct };
                return failed(
                    ErrorKind::Protocol,
                    format!(
                        "wrong content type: {} (expected application/json)",
                        truncate(shown, 80)
                    ),
                );
            }
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(v) => parsed = Some(v),
                Err(e) => return failed(ErrorKind::Protocol, format!("not JSON: {e}")),
            }
        }
        if let Some(max) = self.max_response_time
            && answer.elapsed > max
        {
            return Verdict {
                status: Status {
                    healthy: false,
                    detail: format!(
                        "slow: {:.2}s > {}",
                        answer.elapsed.as_secs_f64(),
                        fmt_duration(max)
                    ),
                },
                kind: Some(ErrorKind::Timeout),
                usable: true,
                json: parsed,
            };
        }
        Verdict {
            status: Status {
                healthy: true,
                detail: format!("HTTP {}", answer.code),
            },
            kind: None,
            usable: true,
            json: parsed,
        }
    }

    /// Probe the service (and what depends on it); `only`, when given,
    /// limits the readings to these agents (a point read).
    async fn probe(&self, only: Option<&HashSet<AgentId>>) -> Vec<Reading> {
        let wanted = |a: &AgentId| only.is_none_or(|o| o.contains(a));
        let outcome = self.fetch(&self.url).await;
        let code = outcome.as_ref().map(|a| a.code).unwrap_or(0);
        self.metrics.http_status(&self.id, code);
        let verdict = self.judge(outcome, !self.components.is_empty());
        if let Some(kind) = verdict.kind {
            self.metrics.source_error(&self.id, kind);
        }
        let mut readings = Vec::new();
        if wanted(&self.service) {
            readings.push(Reading::Status {
                agent: self.service.clone(),
                status: verdict.status.clone(),
            });
        }
        let suppressed = |agent: &AgentId| Reading::Unknown {
            agent: agent.clone(),
            reason: format!("service check failing: {}", verdict.status.detail),
        };
        for (agent, c) in self.components.iter().filter(|(a, _)| wanted(a)) {
            readings.push(match &verdict.json {
                Some(body) if verdict.usable => {
                    let r = component_reading(agent, c, body);
                    if let Reading::Status { status, .. } = &r
                        && status.detail.contains("not a status value")
                    {
                        self.metrics.source_error(&self.id, ErrorKind::BadValue);
                    }
                    r
                }
                _ => suppressed(agent),
            });
        }
        if let Some(template) = &self.agents_url {
            let asked: Vec<AgentId> = self.agents.iter().filter(|a| wanted(a)).cloned().collect();
            if verdict.usable {
                let probes = futures::stream::iter(asked)
                    .map(|agent: AgentId| self.probe_agent(template, agent))
                    .buffer_unordered(self.concurrency);
                readings.extend(probes.collect::<Vec<_>>().await);
            } else {
                readings.extend(asked.iter().map(suppressed));
            }
        }
        readings
    }

    async fn probe_agent(&self, template: &AgentUrl, agent: AgentId) -> Reading {
        let verdict = self.judge(self.fetch(&template.url(agent.as_str())).await, false);
        if let Some(kind) = verdict.kind {
            self.metrics.source_error(&self.id, kind);
        }
        Reading::Status {
            agent,
            status: verdict.status,
        }
    }
}

impl PollSource for HttpSource {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn scan(&self, sink: &mut ScanSink) -> Result<(), SourceError> {
        let mut readings = self.probe(None).await;
        while !readings.is_empty() {
            let rest = readings.split_off(readings.len().min(BATCH));
            if !sink.send(std::mem::replace(&mut readings, rest)).await {
                break; // the core is gone: shutting down
            }
        }
        Ok(())
    }

    /// A re-probe; exactly one reading per asked agent.
    async fn point_read(&self, agents: &[AgentId]) -> Result<Vec<Reading>, SourceError> {
        let asked: HashSet<AgentId> = agents.iter().cloned().collect();
        let mut readings = self.probe(Some(&asked)).await;
        let got: HashSet<AgentId> = readings.iter().map(|r| r.agent().clone()).collect();
        for a in agents {
            if !got.contains(a) {
                readings.push(Reading::Absent { agent: a.clone() });
            }
        }
        Ok(readings)
    }
}

/// One component's reading out of the body.
fn component_reading(agent: &AgentId, c: &HttpComponent, body: &Value) -> Reading {
    let agent = agent.clone();
    let value = match body.pointer(&c.pointer) {
        None | Some(Value::Null) => {
            return Reading::Missing {
                agent,
                reason: format!("{} absent from the body", c.pointer),
            };
        }
        Some(v) => v,
    };
    let word = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) | Value::Array(_) => {
            let what = if value.is_object() {
                "an object"
            } else {
                "a list"
            };
            return Reading::Status {
                agent,
                status: Status {
                    healthy: false,
                    detail: format!("{} holds {what}, not a status value", c.pointer),
                },
            };
        }
        Value::Null => String::new(),
    };
    let healthy = component_healthy(c, &word);
    let status = Status {
        healthy,
        detail: truncate(&word, MAX_DETAIL).to_string(),
    };
    let Some(ptr) = &c.last_seen else {
        return Reading::Status { agent, status };
    };
    match body.pointer(ptr) {
        None | Some(Value::Null) => Reading::Invalid {
            agent,
            reason: format!("{ptr} absent from the body"),
        },
        Some(v) => match parse_json_value(v) {
            Ok(last_seen) => Reading::Heartbeat {
                agent,
                last_seen,
                status: Some(status),
            },
            Err(e) => Reading::Invalid {
                agent,
                reason: format!("{ptr}: {e}"),
            },
        },
    }
}

/// Whether a component's value means healthy: one of its `healthy` values
/// (by default the [`HEALTHY_WORDS`](crate::core::HEALTHY_WORDS) every
/// source shares).
fn component_healthy(c: &HttpComponent, word: &str) -> bool {
    c.healthy
        .iter()
        .any(|h| h.eq_ignore_ascii_case(word.trim()))
}

fn is_json_type(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The error and its causes, without the URL (which may hold a secret).
fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    if parts.is_empty() {
        // reqwest's own Display names the URL; without it only the kind is left.
        parts.push(if e.is_connect() {
            "connection failed".into()
        } else if e.is_request() {
            "request failed".into()
        } else {
            "error".into()
        });
    }
    parts.join(": ")
}

/// `2s`, `500ms`, `1.5s`.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comp(pointer: &str, last_seen: Option<&str>) -> HttpComponent {
        HttpComponent {
            agent: "a".into(),
            pointer: pointer.into(),
            healthy: crate::core::HEALTHY_WORDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            last_seen: last_seen.map(str::to_string),
        }
    }

    #[test]
    fn component_values_map_to_readings() {
        let body = json!({"s": "ACTIVE", "e": "error", "b": true, "o": {"x": 1}, "n": null,
                          "l": [1], "t": "2026-01-01T00:00:00"});
        let a = AgentId::from("a");
        match component_reading(&a, &comp("/s", None), &body) {
            Reading::Status { status, .. } => assert!(status.healthy),
            r => panic!("{r:?}"),
        }
        match component_reading(&a, &comp("/e", None), &body) {
            Reading::Status { status, .. } => {
                assert!(!status.healthy);
                assert_eq!(status.detail, "error");
            }
            r => panic!("{r:?}"),
        }
        match component_reading(&a, &comp("/b", None), &body) {
            Reading::Status { status, .. } => assert!(status.healthy),
            r => panic!("{r:?}"),
        }
        for p in ["/o", "/l"] {
            match component_reading(&a, &comp(p, None), &body) {
                Reading::Status { status, .. } => {
                    assert!(!status.healthy);
                    assert!(status.detail.contains("not a status value"), "{status:?}");
                }
                r => panic!("{r:?}"),
            }
        }
        for p in ["/absent", "/n"] {
            assert!(matches!(
                component_reading(&a, &comp(p, None), &body),
                Reading::Missing { .. }
            ));
        }
        assert!(matches!(
            component_reading(&a, &comp("/s", Some("/t")), &body),
            Reading::Heartbeat {
                status: Some(Status { healthy: true, .. }),
                ..
            }
        ));
        assert!(matches!(
            component_reading(&a, &comp("/s", Some("/nope")), &body),
            Reading::Invalid { .. }
        ));
    }

    #[test]
    fn default_components_share_the_healthy_words_and_explicit_lists_are_exact() {
        let default = comp("/s", None);
        assert!(component_healthy(&default, "running"));
        assert!(component_healthy(&default, " Healthy "));
        assert!(!component_healthy(&default, "error"));
        let explicit = HttpComponent {
            healthy: vec!["active".into()],
            ..default
        };
        assert!(component_healthy(&explicit, "ACTIVE"));
        assert!(!component_healthy(&explicit, "ok"));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/html; charset=utf-8"));
        assert!(!is_json_type(""));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }
}
