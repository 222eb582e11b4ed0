//! HTTP `/health` probes: the service itself, per-agent statuses read out of
//! its JSON body, and optionally one endpoint per agent.
//!
//! # What is a failure
//!
//! A probe's outcome is data, not a failure of the source: whatever the
//! service answers (or does not), the scan succeeds and reports it as the
//! status of the **service check** (agent id `id`, by default the source's
//! name). A source error would make the service check `unknown`, when the
//! truth is that it is failing. The status says whether the service
//! answered ([`StatusOrigin`]), so the check's reason does not claim a
//! report nobody made: `reported unhealthy: HTTP 500` when it answered so;
//! `not reachable: connection refused` (or DNS, TLS) and `no answer within
//! 2s` when nothing answered; `slow: 2.31s > 1s`, `body too large`, `not
//! JSON`... when the answer could not be used.
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

use crate::config::{AgentUrl, HttpComponent, HttpConfig, HttpMethod, Redirects};
use crate::core::{AgentId, ErrorKind, Reading, SourceId, Status, StatusOrigin};
use crate::telemetry::metrics::Metrics;

use super::common::truncate;
use super::{PollSource, ScanSink, SourceError};

pub(crate) mod components;
mod fetch;

use components::component_reading;
/// A reqwest error and its causes, without the URL (it may hold a secret).
pub(crate) use fetch::chain;
use fetch::{fmt_duration, is_json_type};

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

/// Why a request brought nothing usable back: no answer at all, or one
/// that cannot be used.
#[derive(Debug, Clone)]
struct Failure {
    kind: ErrorKind,
    origin: StatusOrigin,
    detail: String,
}

impl Failure {
    /// Nothing answered (`not reachable: connection refused`, `no answer
    /// within 2s`).
    fn no_answer(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            origin: StatusOrigin::NoAnswer,
            detail: detail.into(),
        }
    }

    /// An answer came that cannot be used (`body too large`).
    fn bad_answer(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            origin: StatusOrigin::BadAnswer,
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

/// The client's redirect policy; a redirect not followed leaves the probe
/// with the 3xx, which is not healthy.
fn redirect_policy(redirects: Redirects) -> reqwest::redirect::Policy {
    use reqwest::redirect::Policy;
    match redirects {
        Redirects::None => Policy::none(),
        Redirects::Any => Policy::limited(MAX_REDIRECTS),
        Redirects::SameHost => Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            let Some(first) = attempt.previous().first() else {
                return attempt.stop();
            };
            let to = attempt.url();
            // The same host and port; or the same host, upgraded from
            // http to https. Never down to http.
            let upgrade = first.scheme() == "http" && to.scheme() == "https";
            let same = first.host_str() == to.host_str()
                && (first.port_or_known_default() == to.port_or_known_default() || upgrade)
                && !(first.scheme() == "https" && to.scheme() == "http");
            if same {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }),
    }
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
            .redirect(redirect_policy(cfg.redirects))
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

    /// Judge an answer; `json` when the body must be a JSON document.
    fn judge(&self, outcome: Result<Answer, Failure>, json: bool) -> Verdict {
        let failed = |kind: ErrorKind, status: Status| Verdict {
            status,
            kind: Some(kind),
            usable: false,
            json: None,
        };
        let answer = match outcome {
            Ok(a) => a,
            Err(f) => return failed(f.kind, Status::unanswered(f.origin, f.detail)),
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
            return failed(ErrorKind::Other, Status::reported(false, detail));
        }
        let mut parsed = None;
        if json {
            let ct = answer.content_type.as_deref().unwrap_or("");
            if !is_json_type(ct) {
                let shown = if ct.is_empty() { "none" } else { ct };
                return failed(
                    ErrorKind::Protocol,
                    Status::unanswered(
                        StatusOrigin::BadAnswer,
                        format!(
                            "wrong content type: {} (expected application/json)",
                            truncate(shown, 80)
                        ),
                    ),
                );
            }
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(v) => parsed = Some(v),
                Err(e) => {
                    return failed(
                        ErrorKind::Protocol,
                        Status::unanswered(StatusOrigin::BadAnswer, format!("not JSON: {e}")),
                    );
                }
            }
        }
        if let Some(max) = self.max_response_time
            && answer.elapsed > max
        {
            return Verdict {
                status: Status::unanswered(
                    StatusOrigin::BadAnswer,
                    format!(
                        "slow: {:.2}s > {}",
                        answer.elapsed.as_secs_f64(),
                        fmt_duration(max)
                    ),
                ),
                kind: Some(ErrorKind::Timeout),
                usable: true,
                json: parsed,
            };
        }
        Verdict {
            status: Status::reported(true, format!("HTTP {}", answer.code)),
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
