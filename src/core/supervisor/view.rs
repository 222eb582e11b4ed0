//! The published view of everything the supervisor knows.

use super::*;

impl Supervisor {
    /// Everything as of `now`. An agent whose view in the last snapshot is
    /// still exact is shared with it (compared field by field, so no change
    /// can be missed); only agents that changed are built again.
    pub fn snapshot(&self, now: Timestamp) -> Snapshot {
        let mut snap = Snapshot::with_capacity(now, self.agents.len());
        let mut per_source = vec![0usize; self.sources.len()];
        for (id, a) in &self.agents {
            // Its checks, looked up once (one or two in practice).
            let checks: SmallVec<[(&SourceId, &Check); 2]> = a
                .sources
                .iter()
                .filter_map(|source| Some((source, self.checks.get(&key_of(id, source))?)))
                .collect();
            let mut cached = a.view.borrow_mut();
            let still = cached.as_ref().filter(|v| {
                v.state == a.state
                    && v.since == a.since
                    && v.reason == a.reason
                    && v.expected == a.expected
                    && Arc::ptr_eq(&v.labels, &a.labels)
                    && same_history(&v.history, &a.history)
                    && v.checks.len() == checks.len()
                    && v.checks
                        .iter()
                        .zip(&checks)
                        .all(|(cv, (source, c))| self.check_view_is(cv, source, c))
            });
            let view = match still {
                Some(v) => v.clone(),
                None => {
                    let v = Arc::new(AgentView {
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
                    });
                    *cached = Some(v.clone());
                    v
                }
            };
            for (source, _) in &checks {
                if let Some(i) = self.sources.iter().position(|(s, _)| s == *source) {
                    per_source[i] += 1;
                }
            }
            snap.push(view, checks.iter().map(|(_, c)| c.last_seen));
        }
        let sources = self
            .sources
            .iter()
            .zip(per_source)
            .map(|((id, s), checks)| SourceView {
                name: id.clone(),
                kind: s.type_name.clone(),
                status: s.status,
                since: s.since,
                last_success: s.last_success,
                last_scan_started: s.last_scan_started,
                error: s.error.clone(),
                checks,
            })
            .collect();
        snap.sources = sources;
        snap
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
