//! Read-only views of the core's state: for the API, `/metrics`, the `scan`
//! table, and the state store.
//!
//! A snapshot shares its agents with the next one: each [`AgentView`] is an
//! `Arc` the core keeps and hands out again as long as the agent did not
//! change, so a snapshot of a fleet costs a pointer per agent plus the
//! agents that changed, however many snapshots the API, `/metrics`, the
//! alert engine and remediation still hold. Heartbeats, which change for
//! every agent all the time, are not in the views but in a flat array of
//! the snapshot's own ([`Entry::last_seen`]), and a check's age is computed
//! when it is served ([`AgentAt`]): a scan does not rebuild the views.

use std::sync::Arc;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::model::{AgentId, SourceFailure, SourceId, State, Status, Text, Timestamp};
use super::policy::Labels;
use super::timestamp::rfc3339::{self, Rfc3339};

/// Agents are kept in chunks of this many (their views and their checks'
/// heartbeats), each shared between snapshots until something in it
/// changes: the core patches a snapshot into the next one by copying only
/// the chunks where an agent changed (see [`Supervisor::snapshot`]).
///
/// [`Supervisor::snapshot`]: super::Supervisor::snapshot
const CHUNK: usize = 1024;

/// Everything the core knows, as of `taken_at`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken_at: Timestamp,
    len: usize,
    /// Sorted by id, [`CHUNK`] to a chunk; the views are shared with the
    /// core and other snapshots.
    views: Vec<Arc<Vec<Arc<AgentView>>>>,
    /// Every check's last heartbeat as of `taken_at` (local clock): the
    /// checks of the agents of the same chunk of `views`, agent after
    /// agent, each in its order. Kept apart from the views, so that a
    /// heartbeat, the one thing that changes for every agent all the time,
    /// costs a slot here rather than a new view.
    beats: Vec<Arc<Vec<Option<Timestamp>>>>,
    /// Where each agent's checks start, counted over the whole snapshot
    /// (the position of a check among all checks, agent after agent).
    /// Changes only when agents or checks come or go: shared until then.
    first_beat: Arc<Vec<u32>>,
    /// Where each chunk's checks start, likewise.
    chunk_first_beat: Arc<Vec<u32>>,
    /// Checks in all.
    n_beats: u32,
    /// Agents in each state, in [`State::ALL`] order.
    counts: [usize; 5],
    /// The same for each chunk: a look for the agents in one state (the
    /// stale ones of a million) skips the chunks that have none.
    chunk_counts: Vec<[u32; 5]>,
    /// In config order.
    pub sources: Vec<SourceView>,
}

impl Snapshot {
    pub fn empty(taken_at: Timestamp) -> Self {
        Self {
            taken_at,
            len: 0,
            views: Vec::new(),
            beats: Vec::new(),
            first_beat: Arc::default(),
            chunk_first_beat: Arc::default(),
            n_beats: 0,
            counts: [0; 5],
            chunk_counts: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Room for `agents` agents.
    pub fn with_capacity(taken_at: Timestamp, agents: usize) -> Self {
        Self {
            views: Vec::with_capacity(agents.div_ceil(CHUNK)),
            beats: Vec::with_capacity(agents.div_ceil(CHUNK)),
            first_beat: Arc::new(Vec::with_capacity(agents)),
            chunk_first_beat: Arc::new(Vec::with_capacity(agents.div_ceil(CHUNK))),
            ..Self::empty(taken_at)
        }
    }

    /// A snapshot of `agents`, each with its checks' last heartbeats (one
    /// per check, `None` where missing), in any order.
    pub fn of(taken_at: Timestamp, mut agents: Vec<(AgentView, Vec<Option<Timestamp>>)>) -> Self {
        agents.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let mut snap = Self::with_capacity(taken_at, agents.len());
        for (view, beats) in agents {
            snap.push(Arc::new(view), beats);
        }
        snap
    }

    /// The same snapshot with these sources.
    pub fn with_sources(mut self, sources: Vec<SourceView>) -> Self {
        self.sources = sources;
        self
    }

    /// Add `view`, whose id sorts after every agent's already here, with
    /// its checks' last heartbeats (padded with `None` or cut to one per
    /// check).
    pub fn push(
        &mut self,
        view: Arc<AgentView>,
        beats: impl IntoIterator<Item = Option<Timestamp>>,
    ) {
        debug_assert!(
            self.view(self.len.wrapping_sub(1))
                .is_none_or(|a| a.id < view.id)
        );
        if self.len % CHUNK == 0 {
            self.views.push(Arc::new(Vec::with_capacity(CHUNK)));
            self.beats.push(Arc::new(Vec::with_capacity(CHUNK)));
            Arc::make_mut(&mut self.chunk_first_beat).push(self.n_beats);
            self.chunk_counts.push([0; 5]);
        }
        Arc::make_mut(&mut self.first_beat).push(self.n_beats);
        let n = view.checks.len();
        if let Some(chunk) = self.beats.last_mut() {
            Arc::make_mut(chunk).extend(beats.into_iter().chain(std::iter::repeat(None)).take(n));
        }
        self.n_beats = self
            .n_beats
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        self.counts[state_index(view.state)] += 1;
        if let Some(c) = self.chunk_counts.last_mut() {
            c[state_index(view.state)] += 1;
        }
        if let Some(chunk) = self.views.last_mut() {
            Arc::make_mut(chunk).push(view);
        }
        self.len += 1;
    }

    /// Replace the view of the `i`-th agent by `view`, of the same agent
    /// with as many checks (what changed when no agent or check came or
    /// went). Copies its chunk if another snapshot shares it.
    pub(crate) fn set_view(&mut self, i: usize, view: Arc<AgentView>) {
        let Some(chunk) = self.views.get_mut(i / CHUNK) else {
            return;
        };
        let Some(old) = chunk.get(i % CHUNK) else {
            return;
        };
        if Arc::ptr_eq(old, &view) {
            return;
        }
        debug_assert!(old.id == view.id && old.checks.len() == view.checks.len());
        self.counts[state_index(old.state)] -= 1;
        self.counts[state_index(view.state)] += 1;
        if let Some(c) = self.chunk_counts.get_mut(i / CHUNK) {
            c[state_index(old.state)] -= 1;
            c[state_index(view.state)] += 1;
        }
        if let Some(slot) = Arc::make_mut(chunk).get_mut(i % CHUNK) {
            *slot = view;
        }
    }

    /// Set the last heartbeat of the check at position `beat` (counted
    /// over the whole snapshot, see `first_beat`). Copies its chunk if
    /// another snapshot shares it.
    pub(crate) fn set_beat(&mut self, beat: u32, last_seen: Option<Timestamp>) {
        let k = self.chunk_first_beat.partition_point(|&s| s <= beat);
        let Some(k) = k.checked_sub(1) else {
            return;
        };
        let (Some(chunk), Some(&start)) = (self.beats.get_mut(k), self.chunk_first_beat.get(k))
        else {
            return;
        };
        if let Some(slot) = Arc::make_mut(chunk).get_mut((beat - start) as usize) {
            *slot = last_seen;
        }
    }

    /// How many chunks of views and of heartbeats this snapshot shares
    /// with `other`.
    #[cfg(test)]
    pub(crate) fn shared_chunks(&self, other: &Snapshot) -> (usize, usize) {
        let count = |a: &[Arc<Vec<_>>], b: &[Arc<Vec<_>>]| {
            a.iter().zip(b).filter(|(a, b)| Arc::ptr_eq(a, b)).count()
        };
        (
            self.views
                .iter()
                .zip(&other.views)
                .filter(|(a, b)| Arc::ptr_eq(a, b))
                .count(),
            count(&self.beats, &other.beats),
        )
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks in all.
    pub fn checks_len(&self) -> usize {
        self.n_beats as usize
    }

    /// The view of the `i`-th agent by id.
    pub fn view(&self, i: usize) -> Option<&Arc<AgentView>> {
        self.views.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// The `i`-th agent by id.
    pub fn get(&self, i: usize) -> Option<Entry<'_>> {
        let view = self.view(i)?;
        let k = i / CHUNK;
        let from = (*self.first_beat.get(i)? - *self.chunk_first_beat.get(k)?) as usize;
        let beats = self
            .beats
            .get(k)?
            .get(from..from + view.checks.len())
            .unwrap_or(&[]);
        Some(Entry { view, beats })
    }

    /// Every agent, by id.
    pub fn iter(&self) -> Iter<'_, Entry<'_>> {
        Iter::new(self, Snapshot::get)
    }

    /// The views alone, by id.
    pub fn views(&self) -> Iter<'_, &Arc<AgentView>> {
        Iter::new(self, Snapshot::view)
    }

    /// The agents in `state` from the `from`-th on, by id, each with its
    /// index: chunks without one are skipped, so finding the few stale
    /// agents of a large fleet costs little.
    pub fn in_state(&self, state: State, from: usize) -> impl Iterator<Item = (usize, Entry<'_>)> {
        let s = state_index(state);
        self.chunk_counts
            .iter()
            .enumerate()
            .skip(from / CHUNK)
            .filter(move |(_, c)| c[s] > 0)
            .flat_map(move |(k, _)| {
                let first = (k * CHUNK).max(from);
                (first..((k + 1) * CHUNK).min(self.len))
                    .filter(move |&i| self.view(i).is_some_and(|v| v.state == state))
                    .filter_map(move |i| self.get(i).map(|e| (i, e)))
            })
    }

    /// Index of the first agent whose id sorts after `id`.
    pub fn after(&self, id: &str) -> usize {
        self.partition_point(|a| a.id.as_str() <= id)
    }

    pub fn agent(&self, id: &str) -> Option<Entry<'_>> {
        let i = self.partition_point(|a| a.id.as_str() < id);
        self.get(i).filter(|e| e.id.as_str() == id)
    }

    /// The first index whose agent is not `before` (which holds for a
    /// prefix of the agents, those are sorted by id).
    fn partition_point(&self, before: impl Fn(&AgentView) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.view(mid).is_some_and(|a| before(a)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Number of agents in each state, in [`State::ALL`] order.
    pub fn counts(&self) -> [(State, usize); 5] {
        std::array::from_fn(|i| (State::ALL[i], self.counts[i]))
    }
}

/// The agents of a snapshot in order, each as `at` gives it.
pub struct Iter<'a, T> {
    snap: &'a Snapshot,
    front: usize,
    back: usize,
    at: fn(&'a Snapshot, usize) -> Option<T>,
}

impl<'a, T> Iter<'a, T> {
    fn new(snap: &'a Snapshot, at: fn(&'a Snapshot, usize) -> Option<T>) -> Self {
        Iter {
            snap,
            front: 0,
            back: snap.len,
            at,
        }
    }
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.front >= self.back {
            return None;
        }
        self.front += 1;
        (self.at)(self.snap, self.front - 1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }

    fn nth(&mut self, n: usize) -> Option<T> {
        self.front = self.front.saturating_add(n).min(self.back);
        self.next()
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<T> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        (self.at)(self.snap, self.back)
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

/// Position of `state` in [`State::ALL`].
fn state_index(state: State) -> usize {
    match state {
        State::Healthy => 0,
        State::Stale => 1,
        State::Failing => 2,
        State::Missing => 3,
        State::Unknown => 4,
    }
}

/// One agent of a snapshot: its view and its checks' last heartbeats.
/// Dereferences to the view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry<'a> {
    pub view: &'a Arc<AgentView>,
    /// One per check of the view, in order.
    pub beats: &'a [Option<Timestamp>],
}

impl std::ops::Deref for Entry<'_> {
    type Target = AgentView;
    fn deref(&self) -> &AgentView {
        self.view
    }
}

impl<'a> Entry<'a> {
    /// The last heartbeat of check `i`.
    pub fn last_seen(&self, i: usize) -> Option<Timestamp> {
        self.beats.get(i).copied().flatten()
    }

    /// Each check with its last heartbeat.
    pub fn checks(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&'a CheckView, Option<Timestamp>)> + use<'a> {
        let beats = self.beats;
        self.view
            .checks
            .iter()
            .enumerate()
            .map(move |(i, c)| (c, beats.get(i).copied().flatten()))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentView {
    pub id: AgentId,
    pub state: State,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub since: Timestamp,
    /// Why the agent is in this state (the worst check's reason).
    pub reason: Text,
    pub expected: bool,
    pub labels: Arc<Labels>,
    pub checks: Vec<CheckView>,
    /// Its last transitions, oldest first; shared with the core.
    pub history: Option<History>,
}

/// Most transitions an agent keeps.
pub const HISTORY_MAX: usize = 20;

/// An agent's last transitions (at most [`HISTORY_MAX`]), oldest first,
/// the first one the state it was in before them. Absent (nothing
/// allocated) for an agent that never changed state after its first
/// verdict; rebuilt, not grown in place, at each transition, which is rare.
/// Behind a thin pointer: an agent without history pays 8 bytes for it in
/// the core and 8 in its view.
pub type History = Arc<Vec<Transition>>;

/// One step of an agent's history: the state it entered, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    #[serde(serialize_with = "rfc3339::serialize")]
    pub at: Timestamp,
    pub state: State,
}

/// `history` with `to` added (the oldest dropped past [`HISTORY_MAX`]);
/// a history that starts here starts with `from`, the state left.
pub fn record_transition(
    history: Option<&[Transition]>,
    from: Transition,
    to: Transition,
) -> History {
    let before = history.unwrap_or(std::slice::from_ref(&from));
    let keep = before.len().min(HISTORY_MAX - 1);
    Arc::new(
        before[before.len() - keep..]
            .iter()
            .copied()
            .chain(std::iter::once(to))
            .collect(),
    )
}

impl AgentView {
    /// Its last transitions, oldest first (none for most agents).
    pub fn transitions(&self) -> &[Transition] {
        self.history.as_deref().map_or(&[], Vec::as_slice)
    }

    /// An agent with one check, of `source`, seen at `now` under a 30 s
    /// threshold, labelled `team`: what the `/metrics` tests and fuzz
    /// target render.
    pub fn with_one_check(
        id: &str,
        state: State,
        source: &str,
        team: &str,
        now: Timestamp,
    ) -> AgentView {
        AgentView {
            id: AgentId::from(id),
            state,
            since: now,
            reason: Text::from(""),
            expected: false,
            labels: Arc::new(Labels::from([("team".to_string(), team.to_string())])),
            checks: vec![CheckView {
                source: source.into(),
                state,
                since: now,
                reason: Text::from(""),
                threshold_seconds: 30.0,
                status: None,
                depends_on: None,
            }],
            history: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckView {
    pub source: SourceId,
    pub state: State,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub since: Timestamp,
    pub reason: Text,
    pub threshold_seconds: f64,
    pub status: Option<Status>,
    /// The check this one depends on (its source's `depends_on`: the
    /// service's own check), by agent id: while that is not healthy, this
    /// one is held `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<AgentId>,
}

/// `at - last_seen`, in seconds.
pub fn age_seconds(last_seen: Option<Timestamp>, at: Timestamp) -> Option<f64> {
    last_seen.map(|t| (at - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6)
}

/// An agent as the API serves it: its view, each check with its
/// `last_seen` and `age_seconds` as of `at` (the snapshot's `taken_at`).
pub struct AgentAt<'a> {
    pub agent: Entry<'a>,
    pub at: Timestamp,
}

impl Serialize for AgentAt<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = &self.agent;
        let mut st = serializer.serialize_struct("AgentView", 8)?;
        st.serialize_field("id", &v.id)?;
        st.serialize_field("state", &v.state)?;
        st.serialize_field("since", &Rfc3339(v.since))?;
        st.serialize_field("reason", &v.reason)?;
        st.serialize_field("expected", &v.expected)?;
        st.serialize_field("labels", &v.labels)?;
        let checks: Vec<CheckAt<'_>> = v
            .checks()
            .map(|(check, last_seen)| CheckAt {
                check,
                last_seen,
                age_seconds: age_seconds(last_seen, self.at),
            })
            .collect();
        st.serialize_field("checks", &checks)?;
        st.serialize_field("history", v.transitions())?;
        st.end()
    }
}

#[derive(Serialize)]
struct CheckAt<'a> {
    #[serde(flatten)]
    check: &'a CheckView,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    last_seen: Option<Timestamp>,
    /// `taken_at - last_seen`, in seconds.
    age_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceView {
    pub name: SourceId,
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending` until the first read, then `up` or `down`.
    pub status: SourceStatus,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub since: Timestamp,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    pub last_success: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    pub last_scan_started: Option<Timestamp>,
    pub error: Option<SourceFailure>,
    pub checks: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    Pending,
    Up,
    Down,
}

/// What the state store keeps, as a view over a snapshot: serialized, it
/// is exactly [`Persisted`] (the same file), without a copy of the fleet.
/// A check's value as the source reported it is kept only where it differs
/// from its effective `last_seen` (clock skew, an older reading).
#[derive(Clone, Debug)]
pub struct PersistView {
    pub snap: Arc<Snapshot>,
    /// By position in the snapshot's checks (agent after agent, in order).
    pub raw_last_seen: Vec<(u32, Option<Timestamp>)>,
}

impl Serialize for PersistView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut st = serializer.serialize_struct("Persisted", 2)?;
        st.serialize_field("checks", &PersistChecks(self))?;
        st.serialize_field("agents", &PersistAgents(&self.snap))?;
        st.end()
    }
}

struct PersistChecks<'a>(&'a PersistView);

impl Serialize for PersistChecks<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let snap = &self.0.snap;
        let mut raw = self.0.raw_last_seen.iter().peekable();
        let mut seq = serializer.serialize_seq(Some(snap.checks_len()))?;
        let mut n = 0u32;
        for agent in snap.iter() {
            for (c, last_seen) in agent.checks() {
                let raw_last_seen = match raw.peek() {
                    Some((at, t)) if *at == n => {
                        raw.next();
                        *t
                    }
                    _ => last_seen,
                };
                seq.serialize_element(&PersistedCheckRef {
                    agent: &agent.view.id,
                    source: &c.source,
                    state: c.state,
                    since: c.since,
                    reason: &c.reason,
                    last_seen,
                    raw_last_seen,
                })?;
                n += 1;
            }
        }
        seq.end()
    }
}

struct PersistAgents<'a>(&'a Snapshot);

impl Serialize for PersistAgents<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.views().map(|a| PersistedAgentRef {
            agent: &a.id,
            state: a.state,
            since: a.since,
            reason: &a.reason,
            history: a.history.as_deref().map(Vec::as_slice),
        }))
    }
}

/// [`PersistedCheck`], borrowed.
#[derive(Serialize)]
struct PersistedCheckRef<'a> {
    agent: &'a AgentId,
    source: &'a SourceId,
    state: State,
    #[serde(serialize_with = "rfc3339::serialize")]
    since: Timestamp,
    reason: &'a Text,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    last_seen: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    raw_last_seen: Option<Timestamp>,
}

/// [`PersistedAgent`], borrowed.
#[derive(Serialize)]
struct PersistedAgentRef<'a> {
    agent: &'a AgentId,
    state: State,
    #[serde(serialize_with = "rfc3339::serialize")]
    since: Timestamp,
    reason: &'a Text,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a [Transition]>,
}

/// What the state store keeps across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub checks: Vec<PersistedCheck>,
    pub agents: Vec<PersistedAgent>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedCheck {
    pub agent: AgentId,
    pub source: SourceId,
    pub state: State,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub since: Timestamp,
    #[serde(default)]
    pub reason: Text,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    pub last_seen: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    pub raw_last_seen: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedAgent {
    pub agent: AgentId,
    pub state: State,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub since: Timestamp,
    #[serde(default)]
    pub reason: Text,
    /// Its last transitions, oldest first; absent in older state files
    /// and for agents that never changed state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Transition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_index_is_the_position_in_all() {
        for (i, s) in State::ALL.into_iter().enumerate() {
            assert_eq!(state_index(s), i, "{s:?}");
        }
    }
}
