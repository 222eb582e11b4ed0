//! Recovery seen promptly: the stale and missing checks of a polled source
//! are re-read with point reads every `recheck_every`, at most
//! `recheck_max_per_second` a second per source (round robin when there
//! are more), so an agent that beats again is healthy within about that
//! long rather than at the next full scan.

use std::ops::Bound;

use super::*;

impl SourceEntry {
    /// Whether this source has checks to re-read now.
    pub(super) fn wants_recheck(&self) -> bool {
        self.kind == SourceKind::Polled
            && self.evaluable
            && self.held.is_none()
            && !self.rechecking.is_empty()
    }
}

impl Supervisor {
    /// Keep the re-read set of the check's source in step with its state.
    pub(super) fn track_recheck(&mut self, key: &CheckKey, state: State, now: Timestamp) {
        let every = delta(self.policy.recheck_every);
        let Some(src) = self.source_mut(&key.source) else {
            return;
        };
        if src.kind != SourceKind::Polled || every.is_zero() {
            return;
        }
        if matches!(state, State::Stale | State::Missing) {
            if src.rechecking.is_empty() {
                // The check was just read: the first re-read comes a period on.
                self.next_recheck = self.next_recheck.max(plus(now, every));
            }
            if let Some(src) = self.source_mut(&key.source) {
                src.rechecking.insert(key.agent.clone());
            }
        } else {
            src.rechecking.remove(&key.agent);
        }
    }

    /// Ask for this round's re-reads, if it is time.
    pub(super) fn recheck(&mut self, now: Timestamp) {
        let every = self.policy.recheck_every;
        if every.is_zero() || now < self.next_recheck {
            return;
        }
        self.next_recheck = after(now, every);
        let budget =
            ((f64::from(self.policy.recheck_max_per_second) * every.as_secs_f64()) as usize).max(1);
        for (id, src) in &mut self.sources {
            if !src.wants_recheck() {
                continue;
            }
            let start = src.recheck_from.take();
            let after = match &start {
                Some(from) => src
                    .rechecking
                    .range::<AgentId, _>((Bound::Excluded(from), Bound::Unbounded)),
                None => src.rechecking.range::<AgentId, _>(..),
            };
            let wrapped = src.rechecking.iter();
            let picked: Vec<AgentId> = after
                .chain(wrapped)
                .take(budget.min(src.rechecking.len()))
                .cloned()
                .collect();
            src.recheck_from = picked.last().cloned();
            self.confirms.entry(id.clone()).or_default().extend(picked);
        }
    }
}
