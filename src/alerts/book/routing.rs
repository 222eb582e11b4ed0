//! Where an alert goes: routes (first match, or further ones with
//! `continue`), receivers, and each route's timing.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::alert::{Alert, Matcher};

/// Timing of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

/// One route (the default route is the last, with an empty matcher).
#[derive(Clone, Debug)]
pub struct Route {
    pub matcher: Matcher,
    pub receivers: Vec<String>,
    pub continue_matching: bool,
    pub group_by: Vec<String>,
    pub timing: Timing,
    /// The default route: taken only when no other route matched.
    pub fallback: bool,
}

/// What the book needs to know of a receiver.
#[derive(Clone, Debug)]
pub struct ReceiverPolicy {
    pub send_resolved: bool,
    /// Alertmanager's API: no `group_wait`/`group_interval` of ours (it
    /// groups itself), and firing alerts re-sent every this often.
    pub resend_interval: Option<Duration>,
}

/// Routes and receivers, from config.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    pub routes: Vec<Route>,
    pub receivers: BTreeMap<String, ReceiverPolicy>,
}

impl Routing {
    /// `(route index, receiver)` pairs an alert goes to.
    pub(super) fn destinations(&self, alert: &Alert) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = Vec::new();
        let mut matched = false;
        for (i, r) in self.routes.iter().enumerate() {
            if r.fallback && matched {
                break;
            }
            if r.matcher.matches(alert) {
                matched = true;
                for rcv in &r.receivers {
                    if !out.iter().any(|(_, x)| x == rcv) {
                        out.push((i, rcv.clone()));
                    }
                }
                if !r.continue_matching {
                    break;
                }
            }
        }
        out
    }

    pub(super) fn timing(&self, route: usize, receiver: &str) -> Timing {
        let base = self
            .routes
            .get(route)
            .map(|r| r.timing.clone())
            .unwrap_or(Timing {
                group_wait: Duration::ZERO,
                group_interval: Duration::ZERO,
                repeat_interval: Duration::from_secs(4 * 3600),
            });
        match self.receivers.get(receiver).and_then(|p| p.resend_interval) {
            Some(resend) => Timing {
                group_wait: Duration::ZERO,
                group_interval: Duration::ZERO,
                repeat_interval: resend,
            },
            None => base,
        }
    }

    pub(super) fn send_resolved(&self, receiver: &str) -> bool {
        self.receivers.get(receiver).is_none_or(|p| p.send_resolved)
    }
}
