//! Source health: reads that succeed, outages, completed scans.

use super::*;

impl Supervisor {
    pub(super) fn source(&self, id: &SourceId) -> Option<&SourceEntry> {
        self.sources.iter().find(|(s, _)| s == id).map(|(_, e)| e)
    }

    pub(super) fn source_mut(&mut self, id: &SourceId) -> Option<&mut SourceEntry> {
        self.sources
            .iter_mut()
            .find(|(s, _)| s == id)
            .map(|(_, e)| e)
    }

    /// Data arrived from `id`: mark it up. Returns false for an unknown source.
    pub(super) fn source_ok(&mut self, id: &SourceId, now: Timestamp) -> bool {
        let Some(src) = self.source_mut(id) else {
            return false;
        };
        src.last_success = Some(now);
        if src.status != SourceStatus::Up {
            if src.status == SourceStatus::Down {
                let down_for = fmt_delta(now - src.since);
                src.resumed = Some((now, format!("{id} came back from {down_for} down")));
            }
            src.status = SourceStatus::Up;
            src.since = now;
            src.error = None;
            src.evaluable = true;
            self.events.push(Event::SourceChanged {
                source: id.clone(),
                up: true,
                at: now,
                error: None,
            });
            self.data = true;
            self.refresh_expected(now);
        }
        true
    }

    pub(super) fn source_down(&mut self, id: &SourceId, error: SourceFailure, now: Timestamp) {
        let Some(src) = self.source_mut(id) else {
            return;
        };
        let was = src.status;
        let changed_error = src.error.as_ref().map(|e| e.kind) != Some(error.kind);
        src.evaluable = false;
        if was != SourceStatus::Down || changed_error {
            src.status = SourceStatus::Down;
            src.since = if was == SourceStatus::Down {
                src.since
            } else {
                now
            };
            src.error = Some(error.clone());
            self.events.push(Event::SourceChanged {
                source: id.clone(),
                up: false,
                at: now,
                error: Some(error.clone()),
            });
        } else {
            src.error = Some(error.clone());
        }
        let reason: Text = format!("source {id} is down: {}", error.message).into();
        for key in self.keys_of(id) {
            let Some(c) = self.checks.get_mut(&key) else {
                continue;
            };
            c.confirming = None;
            // What was already stale, missing or failing stays so: no new
            // transition, no new notification.
            if !c.state.is_alerting() {
                self.set_check_state(&key, State::Unknown, reason.clone(), now);
            }
        }
        self.refresh_expected(now);
        self.data = true;
    }

    pub(super) fn finish_scan(&mut self, id: &SourceId, started_at: Timestamp, now: Timestamp) {
        let Some(src) = self.source_mut(id) else {
            return;
        };
        let generation = src.scan_gen;
        src.scan_gen = src.scan_gen.wrapping_add(1);
        src.last_scan_started = Some(started_at);
        // Checks this scan did not see: absence from one scan is no proof of
        // deletion, so a check whose deadline has passed (or which lost its
        // data to an outage) is confirmed with a point read.
        let unseen: Vec<CheckKey> = self
            .checks
            .iter()
            .filter(|(k, c)| &k.source == id && c.seen_gen != generation)
            .map(|(k, _)| k.clone())
            .collect();
        for key in unseen {
            let Some(c) = self.checks.get(&key) else {
                continue;
            };
            match c.last_seen {
                Some(t) if c.state != State::Unknown && now <= plus(t, c.stale_after) => {
                    let deadline = plus(t, c.stale_after);
                    self.queue(&key, deadline);
                }
                _ if c.state.is_alerting() => {} // nothing new to learn
                // Unreadable alone (its node is down) or held by what it
                // depends on: the next reading, or the release, re-arms it.
                _ if c.held().is_some() => {}
                _ => self.request_confirm(&key, now),
            }
        }
        self.check_grace(now);
    }
}
