//! Silences: from the config and the API; an alert they match leaves its
//! groups quietly (silencing is not resolving) and joins them again when
//! the silence ends.

use super::*;

/// API silences kept at most; past it a new one is refused (expire some
/// first). Each is matched against every alert at every change.
pub const MAX_API_SILENCES: usize = 1000;

impl Book {
    pub fn set_config_silences(&mut self, silences: Vec<Silence>) {
        self.config_silences = silences;
    }

    /// Every silence, config first.
    pub fn all_silences(&self) -> impl Iterator<Item = &Silence> {
        self.config_silences.iter().chain(self.silences.iter())
    }

    /// Recompute which alerts each silence mutes; alerts that become
    /// silenced leave their groups, alerts whose silence ended join them.
    pub(super) fn apply_silences(&mut self, routing: &Routing, now: Timestamp) {
        self.silences.retain(|s| !s.is_expired(now));
        // Nothing to silence and nothing silenced: nothing to do (the
        // common case, checked at every reconcile of a large book).
        if self.muted == 0 && self.all_silences().next().is_none() {
            return;
        }
        let silences: Vec<Silence> = self
            .all_silences()
            .filter(|s| s.is_active(now))
            .cloned()
            .collect();
        let mut to_place = Vec::new();
        let mut to_leave = Vec::new();
        let mut muted = 0;
        for (fp, a) in self.active.iter_mut() {
            let by: Vec<String> = silences
                .iter()
                .filter(|s| s.matchers.matches(&a.alert))
                .map(|s| s.id.clone())
                .collect();
            let was = !a.silenced_by.is_empty();
            let is = !by.is_empty();
            muted += usize::from(is);
            a.silenced_by = by;
            if was && !is {
                to_place.push(fp.clone());
            } else if !was && is {
                to_leave.push((std::mem::take(&mut a.groups), (*a.alert).clone()));
            }
        }
        self.muted = muted;
        for (keys, alert) in to_leave {
            self.leave_groups(&keys, &alert, routing, false, now);
        }
        for fp in to_place {
            self.place(&fp, routing, now);
        }
    }

    /// Add a silence (from the API).
    /// Add an API silence; `false` (and nothing added) when
    /// [`MAX_API_SILENCES`] are active already.
    /// API silences not expired at `now`.
    pub fn api_silences_active(&self, now: Timestamp) -> usize {
        self.silences.iter().filter(|s| !s.is_expired(now)).count()
    }

    /// Take the API silences as a store shared by several replicas has
    /// them (expired ones left out, at most [`MAX_API_SILENCES`]); whether
    /// they changed.
    pub fn replace_api_silences(
        &mut self,
        mut silences: Vec<Silence>,
        routing: &Routing,
        now: Timestamp,
    ) -> bool {
        silences.retain(|s| !s.is_expired(now));
        silences.sort_by(|a, b| a.id.cmp(&b.id));
        silences.truncate(MAX_API_SILENCES);
        let mut current = self.silences.clone();
        current.retain(|s| !s.is_expired(now));
        current.sort_by(|a, b| a.id.cmp(&b.id));
        if current == silences {
            return false;
        }
        self.silences = silences;
        self.apply_silences(routing, now);
        true
    }

    pub fn add_silence(&mut self, s: Silence, routing: &Routing, now: Timestamp) -> bool {
        self.silences.retain(|x| x.id != s.id && !x.is_expired(now));
        if self.silences.len() >= MAX_API_SILENCES {
            return false;
        }
        self.silences.push(s);
        self.apply_silences(routing, now);
        true
    }

    /// Remove an API silence; `false` if there is none with that id.
    pub fn remove_silence(&mut self, id: &str, routing: &Routing, now: Timestamp) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.id != id);
        let removed = self.silences.len() != before;
        if removed {
            self.apply_silences(routing, now);
        }
        removed
    }
}
