//! Delivery: one worker task per receiver, so a dead Slack never delays
//! PagerDuty. Each takes notifications from its own bounded queue in order
//! and retries the one at the head with exponential backoff and jitter
//! until it is delivered or `give_up_after` has passed since it was queued.
//! Every attempt of a request carries the same `webhook-id`.
//!
//! Queue policy: a new notification for a group supersedes one of the same
//! group still waiting (merged, nothing lost); the queue holds at most
//! `delivery.max_pending` notifications, and past it the oldest waiting one
//! is dropped, counted (`notifications_total{result="dropped"}`) and logged
//! as an error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::render::{RenderCtx, Renderer};
use super::sign::Signer;
use super::store::Pending;
use crate::clock::Clock;
use crate::config::alerting::{DeliveryConfig, ReceiverConfig};
use crate::core::alert::AlertStatus;
use crate::core::time::after;
use crate::ha::Leadership;
use crate::telemetry::metrics::{Delivery, Metrics};

/// A receiver's queue of notifications not yet taken by its worker.
pub struct Queue {
    items: Mutex<VecDeque<Pending>>,
    notify: Notify,
    max: usize,
}

impl Queue {
    pub fn new(max: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            max: max.max(1),
        }
    }

    /// Add at the back. A notification still waiting for the same group is
    /// superseded: the new one carries the group's current state, plus the
    /// resolved alerts only the older one had, so a receiver that was away
    /// gets one up-to-date message instead of a backlog of reminders. Past
    /// the bound, the oldest waiting notification is dropped.
    pub fn push(&self, mut p: Pending) -> Pushed {
        let mut out = Pushed::default();
        {
            let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
            let group = p.notification.group_key.clone();
            let mut kept = VecDeque::with_capacity(q.len() + 1);
            for old in q.drain(..) {
                if old.notification.group_key != group {
                    kept.push_back(old);
                    continue;
                }
                out.superseded.push(old.seq);
                p.first_told.extend(old.first_told);
                for a in old.notification.alerts {
                    if a.status == AlertStatus::Resolved
                        && !p
                            .notification
                            .alerts
                            .iter()
                            .any(|x| x.fingerprint == a.fingerprint)
                    {
                        p.notification.alerts.push(a);
                    }
                }
            }
            *q = kept;
            if !out.superseded.is_empty() {
                out.merged = Some(p.clone());
            }
            q.push_back(p);
            if q.len() > self.max {
                out.dropped = q.pop_front();
            }
        }
        self.notify.notify_one();
        out
    }

    /// Empty the queue (this replica stopped leading): how many were in it.
    pub fn clear(&self) -> usize {
        let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len();
        q.clear();
        n
    }

    fn pop(&self) -> Option<Pending> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    async fn next(&self, cancel: &CancellationToken) -> Option<Pending> {
        loop {
            if let Some(p) = self.pop() {
                return Some(p);
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = self.notify.notified() => {}
            }
        }
    }
}

/// What [`Queue::push`] did besides adding.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Sequence numbers of older notifications merged into the new one.
    pub superseded: Vec<u64>,
    /// The new notification after merging, when it changed.
    pub merged: Option<Pending>,
    /// The oldest notification, dropped because the queue was full.
    pub dropped: Option<Pending>,
}

/// What a worker reports to the engine.
#[derive(Debug)]
pub enum Outcome {
    /// Some requests of a notification are delivered (PagerDuty: one per
    /// alert), not yet all.
    Progress { seq: u64, parts_done: usize },
    /// Every request is delivered: remove it from the outbox.
    Delivered { seq: u64 },
    /// Given up (retry period over), or rejected (a permanent answer, or
    /// a body that cannot be rendered).
    Dropped { seq: u64 },
    /// Not sent: this replica no longer leads (the leader tells receivers).
    NotLeader { seq: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("receiver answered {status}: {body}")]
    Status {
        status: u16,
        body: String,
        /// Its `Retry-After`, as a wait from now.
        retry_after: Option<Duration>,
    },
}

impl DeliveryError {
    /// A 4xx other than 408 (timeout), 425 (too early) and 429 (too many
    /// requests): the receiver will not take this request however often it
    /// is sent, and retrying it would only hold up the ones behind it.
    fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 408 | 425 | 429))
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A `Retry-After` value (seconds, or an HTTP date) as a wait from `now`;
/// a date in the past is no wait.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// One receiver's worker.
pub struct Worker {
    pub name: String,
    renderer: Renderer,
    url: String,
    signer: Option<Signer>,
    headers: HeaderMap,
    client: reqwest::Client,
    timeout: Duration,
    delivery: DeliveryConfig,
    external_url: String,
    queue: Arc<Queue>,
    outcomes: mpsc::Sender<(String, Outcome)>,
    metrics: Arc<Metrics>,
    clock: Clock,
    leadership: Leadership,
}

/// A worker's parts that are not its queue, the engine, or its config.
pub struct WorkerCtx {
    pub queue: Arc<Queue>,
    pub outcomes: mpsc::Sender<(String, Outcome)>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub external_url: String,
    /// Checked before every attempt: only the leader sends.
    pub leadership: Leadership,
}

impl Worker {
    /// Build the worker: renderer (compiled template), signer, headers and
    /// an HTTP client. The process must have installed a rustls provider.
    pub fn new(
        receiver: &ReceiverConfig,
        delivery: &DeliveryConfig,
        ctx: WorkerCtx,
    ) -> anyhow::Result<Self> {
        let renderer = Renderer::new(receiver);
        let timeout = receiver.timeout.unwrap_or(delivery.timeout);
        let mut headers = HeaderMap::new();
        for (k, v) in &receiver.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                anyhow::anyhow!("receiver {}: bad header name `{k}`", receiver.name)
            })?;
            let mut value = HeaderValue::from_str(v.expose_secret()).map_err(|_| {
                anyhow::anyhow!("receiver {}: bad value for header `{k}`", receiver.name)
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agent-supervisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("receiver {}: http client: {e}", receiver.name))?;
        Ok(Self {
            name: receiver.name.clone(),
            url: renderer.url(),
            renderer,
            signer: receiver.secret.as_ref().map(Signer::new),
            headers,
            client,
            timeout,
            delivery: delivery.clone(),
            external_url: ctx.external_url,
            queue: ctx.queue,
            outcomes: ctx.outcomes,
            metrics: ctx.metrics,
            clock: ctx.clock,
            leadership: ctx.leadership,
        })
    }

    pub async fn run(self, cancel: CancellationToken) {
        fail::fail_point!("notify-worker");
        while let Some(p) = self.queue.next(&cancel).await {
            let seq = p.seq;
            let outcome = self.deliver(p, &cancel).await;
            let Some(outcome) = outcome else {
                // Cancelled mid-delivery: it stays in the outbox and is
                // delivered after the restart.
                break;
            };
            if self
                .outcomes
                .send((self.name.clone(), outcome))
                .await
                .is_err()
            {
                debug!(receiver = %self.name, seq, "Alert engine gone; worker stops.");
                break;
            }
        }
    }

    /// Deliver every remaining request of one notification. `None` when
    /// cancelled.
    async fn deliver(&self, p: Pending, cancel: &CancellationToken) -> Option<Outcome> {
        let ctx = RenderCtx {
            external_url: &self.external_url,
        };
        let parts = match self.renderer.render(&p.notification, &ctx) {
            Ok(parts) => parts,
            Err(e) => {
                self.metrics.notification(&self.name, Delivery::Rejected);
                error!(receiver = %self.name, notification = %p.notification.id, error = %e,
                    "Cannot render the notification; rejected, not sent. Fix the receiver's template.");
                return Some(Outcome::Dropped { seq: p.seq });
            }
        };
        let give_up_at = after(p.queued_at, self.delivery.give_up_after);
        for (i, part) in parts.iter().enumerate().skip(p.parts_done) {
            let id = match &part.id_suffix {
                Some(s) => format!("{}-{s}", p.notification.id),
                None => p.notification.id.clone(),
            };
            let mut backoff = ExponentialBuilder::default()
                .with_min_delay(self.delivery.initial_backoff)
                .with_max_delay(self.delivery.max_backoff)
                .with_jitter()
                .without_max_times()
                .build();
            let mut attempt = 0u32;
            loop {
                // Fenced: a replica that lost the lease (or was paused past
                // it) sends nothing more; the leader tells the receivers.
                if !self.leadership.may_notify() {
                    info!(receiver = %self.name, webhook_id = %id,
                        "Not the leader (any more): notification left to the leader.");
                    return Some(Outcome::NotLeader { seq: p.seq });
                }
                attempt += 1;
                let sent = tokio::select! {
                    _ = cancel.cancelled() => return None,
                    r = self.send(&id, part.content_type, part.body.as_bytes()) => r,
                };
                match sent {
                    Ok(()) => {
                        self.metrics.notification(&self.name, Delivery::Success);
                        if attempt > 1 {
                            info!(receiver = %self.name, webhook_id = %id, attempts = attempt,
                                "Notification delivered after retries.");
                        }
                        break;
                    }
                    Err(e) if e.is_permanent() => {
                        self.metrics.notification(&self.name, Delivery::Rejected);
                        error!(receiver = %self.name, webhook_id = %id, attempts = attempt,
                            error = %e, "Receiver rejected the notification; dropped, not retried \
                            (a 4xx other than 408, 425 and 429 is permanent).");
                        return Some(Outcome::Dropped { seq: p.seq });
                    }
                    Err(e) => {
                        self.metrics.notification(&self.name, Delivery::Failure);
                        let now = self.clock.now();
                        let next = backoff.next().unwrap_or(self.delivery.max_backoff);
                        // The receiver's own Retry-After, within max_backoff.
                        let delay = e
                            .retry_after()
                            .map_or(next, |d| d.min(self.delivery.max_backoff));
                        let next_at = after(now, delay);
                        if next_at > give_up_at {
                            self.metrics.notification(&self.name, Delivery::Dropped);
                            error!(receiver = %self.name, webhook_id = %id, attempts = attempt,
                                error = %e, queued_at = %p.queued_at,
                                "Notification not delivered within give_up_after; dropped.");
                            return Some(Outcome::Dropped { seq: p.seq });
                        }
                        warn!(receiver = %self.name, webhook_id = %id, attempt, error = %e,
                            retry_in = ?delay, "Notification delivery failed; will retry.");
                        tokio::select! {
                            _ = cancel.cancelled() => return None,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            if i + 1 < parts.len() {
                let progress = Outcome::Progress {
                    seq: p.seq,
                    parts_done: i + 1,
                };
                if self
                    .outcomes
                    .send((self.name.clone(), progress))
                    .await
                    .is_err()
                {
                    return None;
                }
            }
        }
        let now = self.clock.now();
        for started in &p.first_told {
            let secs = (now - *started).num_milliseconds() as f64 / 1000.0;
            self.metrics.notification_latency(&self.name, secs);
        }
        Some(Outcome::Delivered { seq: p.seq })
    }

    async fn send(&self, id: &str, content_type: &str, body: &[u8]) -> Result<(), DeliveryError> {
        let ts = self.clock.now().timestamp();
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string());
        if let Some(s) = &self.signer {
            req = req.header("webhook-signature", s.sign(id, ts, body));
        }
        let fut = req.body(body.to_vec()).send();
        let resp = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => return Err(DeliveryError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => return Err(DeliveryError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(DeliveryError::Request(describe(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now().into()));
        // A little of the body helps whoever reads the log (PagerDuty and
        // Slack say what they did not like).
        let body = tokio::time::timeout(Duration::from_secs(1), resp.text())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        Err(DeliveryError::Status {
            status: status.as_u16(),
            body,
            retry_after,
        })
    }
}

/// The reason behind a reqwest error without its URL (which may hold a
/// token, as Slack's and Discord's webhook URLs do).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        // 2015-10-21 07:28:00 UTC is `now`; ten seconds later:
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn only_4xx_but_408_425_429_are_permanent() {
        let answer = |status| DeliveryError::Status {
            status,
            body: String::new(),
            retry_after: None,
        };
        for s in [400, 401, 403, 404, 410, 413, 422] {
            assert!(answer(s).is_permanent(), "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503] {
            assert!(!answer(s).is_permanent(), "{s}");
        }
        assert!(!DeliveryError::Timeout(Duration::from_secs(1)).is_permanent());
        assert!(!DeliveryError::Request("refused".into()).is_permanent());
    }
    use crate::core::alert::{Alert, AlertKind, Notification, fingerprint};

    fn alert(agent: &str, status: AlertStatus) -> Alert {
        Alert {
            fingerprint: fingerprint(AlertKind::AgentStale, agent),
            kind: AlertKind::AgentStale,
            status,
            agent: Some(agent.into()),
            source: None,
            labels: Default::default(),
            last_seen: None,
            age_seconds: None,
            threshold_seconds: None,
            starts_at: Utc::now(),
            ends_at: None,
            summary: String::new(),
            superseded_by: None,
            remediation: None,
        }
    }

    fn pending(seq: u64, group: &str, alerts: Vec<Alert>) -> Pending {
        Pending {
            seq,
            notification: Notification {
                id: format!("n{seq}"),
                receiver: "r".into(),
                group_key: group.into(),
                group_labels: Default::default(),
                status: AlertStatus::Firing,
                alerts,
                created_at: Utc::now(),
            },
            first_told: vec![Utc::now()],
            parts_done: 0,
            queued_at: Utc::now(),
        }
    }

    #[test]
    fn a_newer_notification_of_a_group_supersedes_the_waiting_one_and_keeps_its_resolved() {
        let q = Queue::new(10);
        q.push(pending(1, "g", vec![alert("a", AlertStatus::Firing)]));
        q.push(pending(2, "other", vec![alert("x", AlertStatus::Firing)]));
        let r = q.push(pending(
            3,
            "g",
            vec![
                alert("b", AlertStatus::Firing),
                alert("c", AlertStatus::Resolved),
            ],
        ));
        assert_eq!(r.superseded, vec![1]);
        assert!(r.dropped.is_none());
        let r = q.push(pending(4, "g", vec![alert("b", AlertStatus::Firing)]));
        assert_eq!(r.superseded, vec![3]);
        let merged = r.merged.unwrap();
        let names: Vec<(&str, AlertStatus)> = merged
            .notification
            .alerts
            .iter()
            .map(|a| (a.agent.as_ref().unwrap().as_str(), a.status))
            .collect();
        assert_eq!(
            names,
            vec![("b", AlertStatus::Firing), ("c", AlertStatus::Resolved)]
        );
        assert_eq!(merged.first_told.len(), 3);
        assert_eq!(q.pop().unwrap().seq, 2);
        assert_eq!(q.pop().unwrap().seq, 4);
        assert!(q.pop().is_none());
    }

    #[test]
    fn past_the_bound_the_oldest_waiting_notification_is_dropped() {
        let q = Queue::new(2);
        assert!(q.push(pending(1, "a", vec![])).dropped.is_none());
        assert!(q.push(pending(2, "b", vec![])).dropped.is_none());
        assert_eq!(q.push(pending(3, "c", vec![])).dropped.unwrap().seq, 1);
    }
}
