//! The published view of everything the supervisor knows.

use super::*;

impl Supervisor {
    /// Everything as of `now`.
    ///
    /// The last snapshot patched: its chunks where agents changed are
    /// copied and updated, the others shared, so a snapshot costs what
    /// changed since the last one (every agent a scan saw has a new
    /// heartbeat, a few bytes each; a new view only where an agent's state,
    /// reason or a check changed). When agents or checks came or went, it
    /// is built whole; an agent whose view is still exact is then shared
    /// with the last one (compared field by field, so no change can be
    /// missed). Test builds check every patched snapshot against the whole
    /// one.
    pub fn snapshot(&mut self, now: Timestamp) -> Snapshot {
        let patched = match self.published.last.take() {
            Some(last) if !self.published.reshaped => Some(self.patch(last, now)),
            _ => None,
        };
        let mut snap = match patched {
            Some(snap) => snap,
            None => {
                let snap = self.build(now, true);
                self.published.reshaped = false;
                snap
            }
        };
        self.published.views = Vec::new();
        self.published.beats = Vec::new();
        snap.sources = self.source_views();
        #[cfg(debug_assertions)]
        {
            let whole = self.build(now, false);
            assert!(
                snap.iter().eq(whole.iter()) && snap.counts() == whole.counts(),
                "a patched snapshot differs from the whole one"
            );
        }
        self.published.last = Some(snap.clone());
        snap
    }

    /// `last` with what changed since.
    fn patch(&mut self, mut last: Snapshot, now: Timestamp) -> Snapshot {
        last.taken_at = now;
        for (beat, last_seen) in self.published.beats.drain(..) {
            last.set_beat(beat, last_seen);
        }
        let mut slots = std::mem::take(&mut self.published.views);
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            let Some(id) = last.view(slot as usize).map(|v| v.id.clone()) else {
                continue;
            };
            if let Some(a) = self.agents.get(&id) {
                let checks = self.checks_of(&id, a);
                last.set_view(slot as usize, self.view_of(&id, a, &checks));
            }
        }
        last
    }

    /// The whole snapshot, every agent visited. With `place`, each agent
    /// and check learns its position in it (which patches use).
    fn build(&mut self, now: Timestamp, place: bool) -> Snapshot {
        let mut snap = Snapshot::with_capacity(now, self.agents.len());
        let mut per_source = vec![0usize; self.sources.len()];
        let mut beat = 0u32;
        for (slot, (id, a)) in self.agents.iter().enumerate() {
            let checks = self.checks_of(id, a);
            let view = self.view_of(id, a, &checks);
            for (source, c) in &checks {
                if let Some(i) = self.sources.iter().position(|(s, _)| s == *source) {
                    per_source[i] += 1;
                }
                if place {
                    c.beat.set(beat);
                }
                beat = beat.saturating_add(1);
            }
            if place {
                a.slot.set(u32::try_from(slot).unwrap_or(u32::MAX));
            }
            snap.push(view, checks.iter().map(|(_, c)| c.last_seen));
        }
        if place {
            self.published.checks_per_source = per_source;
            // Twice the fleet: a scan's worth of heartbeats and then some.
            self.published.most = 2 * (beat as usize).max(self.agents.len()).max(512);
        }
        snap
    }

    /// Its checks, looked up once (one or two in practice).
    fn checks_of<'a>(
        &'a self,
        id: &AgentId,
        a: &'a Agent,
    ) -> SmallVec<[(&'a SourceId, &'a Check); 2]> {
        a.sources
            .iter()
            .filter_map(|source| Some((source, self.checks.get(&key_of(id, source))?)))
            .collect()
    }

    /// Its view: the one it had while still exact, else a new one.
    fn view_of(&self, id: &AgentId, a: &Agent, checks: &[(&SourceId, &Check)]) -> Arc<AgentView> {
        let cached = a.view.0.take();
        let still = cached.filter(|v| {
            v.state == a.state
                && v.since == a.since
                && v.reason == a.reason
                && v.expected == a.expected
                && Arc::ptr_eq(&v.labels, &a.labels)
                && same_history(&v.history, &a.history)
                && v.checks.len() == checks.len()
                && v.checks
                    .iter()
                    .zip(checks)
                    .all(|(cv, (source, c))| self.check_view_is(cv, source, c))
        });
        let view = still.unwrap_or_else(|| {
            Arc::new(AgentView {
                id: id.clone(),
                state: a.state,
                since: a.since,
                reason: a.reason.clone(),
                expected: a.expected,
                labels: a.labels.clone(),
                checks: checks
                    .iter()
                    .map(|(source, c)| self.check_view(source, c))
                    .collect(),
                history: a.history.clone(),
            })
        });
        a.view.0.set(Some(view.clone()));
        view
    }

    fn source_views(&self) -> Vec<SourceView> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, (id, s))| SourceView {
                name: id.clone(),
                kind: s.type_name.clone(),
                status: s.status,
                since: s.since,
                last_success: s.last_success,
                last_scan_started: s.last_scan_started,
                error: s.error.clone(),
                checks: self
                    .published
                    .checks_per_source
                    .get(i)
                    .copied()
                    .unwrap_or(0),
            })
            .collect()
    }
}

impl Supervisor {
    fn check_view(&self, source: &SourceId, c: &Check) -> CheckView {
        CheckView {
            source: source.clone(),
            state: c.state,
            since: c.since,
            reason: c.reason.clone(),
            threshold_seconds: threshold_seconds(c),
            status: c.status.clone(),
            depends_on: self.depends_on(source),
        }
    }

    /// Whether `cv` is what [`Supervisor::check_view`] would build.
    fn check_view_is(&self, cv: &CheckView, source: &SourceId, c: &Check) -> bool {
        cv.source == *source
            && cv.state == c.state
            && cv.since == c.since
            && cv.reason == c.reason
            && cv.threshold_seconds == threshold_seconds(c)
            && cv.status == c.status
            && cv.depends_on.as_ref() == self.policy.depends_on.get(source).map(|d| &d.agent)
    }

    fn depends_on(&self, source: &SourceId) -> Option<AgentId> {
        self.policy.depends_on.get(source).map(|d| d.agent.clone())
    }
}

/// The same history (shared, so compared by address).
fn same_history(a: &Option<History>, b: &Option<History>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

fn threshold_seconds(c: &Check) -> f64 {
    c.stale_after.num_milliseconds() as f64 / 1e3
}
