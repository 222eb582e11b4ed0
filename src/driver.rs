//! The one task that owns the [`Supervisor`]: it feeds it observations,
//! wakes it at its next deadline, and hands what it decides to the sinks.
//!
//! Channels and their overflow policies:
//! - observations in, two lanes, both bounded: scan pages (a polled
//!   source waits when it is full: back-pressure on the scan, kept short so
//!   that a million-agent scan queues tens of thousands of readings, not a
//!   million), and what is current now (point-read answers, pushed
//!   heartbeats; the push handler answers 503 when it is full, see
//!   `sources::push`). The core takes the second first, and takes scan
//!   pages a few at a time between deadlines, so a confirm never waits
//!   behind a scan in progress;
//! - point-read requests out, one per source: bounded, `try_send`; a request
//!   that does not fit is dropped and counted, and the core asks again after
//!   `confirm_timeout`;
//! - snapshots out: a `watch` (latest wins), published within 100 ms of a
//!   state transition and otherwise at most once a second, and spaced so
//!   that taking them is at most a fifth of the core's time; the alert engine
//!   follows them (level-triggered, so nothing it needs can be dropped);
//! - state to the store: a `watch` (latest wins), at most once per
//!   `state.flush_interval`, and once more at shutdown. It carries a
//!   [`StateHandoff`] the writer empties: the copy of a fleet's state lives
//!   only until it is written, not for the whole interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::{Clock, instant_after, instant_before};
use crate::core::snapshot::PersistView;
use crate::core::{AgentId, Event, Observation, Snapshot, SourceId, State, Supervisor};
use crate::liveness::Liveness;
use crate::telemetry::metrics::Metrics;

/// Capacity of the scan lane (messages, each up to a page of
/// [`SCAN_BATCH`], or Redis's `batch`).
pub const OBSERVATION_CAPACITY: usize = 64;
/// Readings in one scan message where the source chooses (PostgreSQL):
/// with [`OBSERVATION_CAPACITY`], at most 64,000 readings wait for a busy
/// core, however fast the source reads.
pub const SCAN_BATCH: usize = 1000;
/// Capacity of the lane of point-read answers and pushed heartbeats.
pub const URGENT_CAPACITY: usize = 1024;
/// Scan pages taken in one go before deadlines and the urgent lane are
/// looked at again.
const PAGES_PER_ROUND: usize = 8;
/// Urgent messages taken in one go.
const URGENT_PER_ROUND: usize = 256;
/// Capacity of each source's point-read request channel.
pub const CONFIRM_CAPACITY: usize = 256;
/// Point reads are asked in chunks of at most this many agents.
pub const CONFIRM_CHUNK: usize = 1000;
/// Most transition log lines per batch of work; the rest are summarised.
const LOG_LINES_PER_ROUND: usize = 20;
/// How often the loop ticks when idle (for liveness).
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Snapshots without a transition are published at most this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// Heartbeat-only changes are saved at most this often.
const PERSIST_DATA_EVERY: Duration = Duration::from_secs(60);
/// After a transition, a snapshot follows within this (bounding the cost of
/// rebuilding it during a storm of transitions in a large fleet).
const SNAPSHOT_AFTER_TRANSITION: Duration = Duration::from_millis(100);
/// A snapshot is taken at most once per this many times what the last one
/// cost: a snapshot built whole (agents still being discovered: the first
/// scan of a million takes a second or more each time) never takes more
/// than a fifth of the core from the scan. Patched snapshots cost
/// milliseconds, so this leaves their timing alone.
const SNAPSHOT_COST_SHARE: u32 = 5;

/// The earliest the next snapshot may be taken, after one begun at `begun`
/// and done at `done` (see [`SNAPSHOT_COST_SHARE`]).
fn spaced(begun: Instant, done: Instant) -> Instant {
    done + (done - begun) * (SNAPSHOT_COST_SHARE - 1)
}

/// What the core hands the state writer: the state to save, taken out by
/// the writer (so nothing holds it once written).
pub type StateHandoff = Arc<std::sync::Mutex<Option<PersistView>>>;

/// A handoff holding `state`.
pub fn handoff(state: Option<PersistView>) -> StateHandoff {
    Arc::new(std::sync::Mutex::new(state))
}

/// Feed `sup` up to `n` more messages `rx` already holds.
fn take_more(
    sup: &mut Supervisor,
    rx: &mut mpsc::Receiver<Observation>,
    n: usize,
    now: crate::core::Timestamp,
) {
    for _ in 0..n {
        match rx.try_recv() {
            Ok(obs) => sup.observe(obs, now),
            Err(_) => break,
        }
    }
}

pub struct Driver {
    pub sup: Supervisor,
    /// Scan pages and what ends a scan.
    pub rx: mpsc::Receiver<Observation>,
    /// Point-read answers and pushed heartbeats, taken first.
    pub urgent: mpsc::Receiver<Observation>,
    pub confirm_txs: HashMap<SourceId, mpsc::Sender<Vec<AgentId>>>,
    pub snapshot_tx: watch::Sender<Arc<Snapshot>>,
    pub persist_tx: Option<watch::Sender<StateHandoff>>,
    pub persist_every: Duration,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub liveness: Liveness,
}

impl Driver {
    pub async fn run(mut self, cancel: CancellationToken) {
        self.liveness.register("core", Duration::from_secs(10));
        let mut snapshot_due: Option<Instant> = None;
        let mut last_snapshot = Instant::now();
        // What the last snapshot took, and the earliest the next may be
        // taken given that (see SNAPSHOT_COST_SHARE).
        let mut not_before = Instant::now();
        let mut persist_due: Option<Instant> = None;
        let mut last_persist = instant_before(Instant::now(), self.persist_every);
        self.publish(&mut last_snapshot);
        // The loop ends when both lanes are closed (every source and the
        // push handler gone).
        let (mut urgent_open, mut scans_open) = (true, true);
        while urgent_open || scans_open {
            fail::fail_point!("core-loop");
            let wake = self.clock.instant_at(self.sup.next_wakeup());
            let idle = Instant::now() + IDLE_TICK;
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = sleep_until(wake) => self.sup.tick(self.clock.now()),
                obs = self.urgent.recv(), if urgent_open => match obs {
                    Some(obs) => {
                        let now = self.clock.now();
                        self.sup.observe(obs, now);
                        take_more(&mut self.sup, &mut self.urgent, URGENT_PER_ROUND, now);
                    }
                    None => urgent_open = false,
                },
                obs = self.rx.recv(), if scans_open => match obs {
                    Some(obs) => {
                        let now = self.clock.now();
                        self.sup.observe(obs, now);
                        // A few more pages in one go; deadlines and the
                        // urgent lane come first again after them.
                        take_more(&mut self.sup, &mut self.rx, PAGES_PER_ROUND, now);
                    }
                    None => scans_open = false,
                },
                _ = sleep_until(snapshot_due.unwrap_or(far)), if snapshot_due.is_some() => {}
                _ = sleep_until(persist_due.unwrap_or(far)), if persist_due.is_some() => {}
                _ = sleep_until(idle) => {}
            }
            self.liveness.tick("core");
            self.dispatch();
            let dirty = self.sup.take_dirty();
            let wait = if dirty.transitions {
                Some(SNAPSHOT_AFTER_TRANSITION)
            } else if dirty.data {
                Some(SNAPSHOT_EVERY)
            } else {
                None
            };
            if let Some(wait) = wait {
                let at = (last_snapshot + wait).max(not_before);
                snapshot_due = Some(snapshot_due.map_or(at, |d| d.min(at)));
            }
            if snapshot_due.is_some_and(|d| d <= Instant::now()) {
                let begun = Instant::now();
                self.publish(&mut last_snapshot);
                not_before = spaced(begun, last_snapshot);
                snapshot_due = None;
            }
            // State changes are saved within `persist_every`; mere heartbeat
            // updates (which a restart re-reads from the sources anyway) at
            // most once a minute, so a large fleet is not rewritten per scan.
            let wait = if dirty.transitions {
                Some(self.persist_every)
            } else if dirty.data {
                Some(self.persist_every.max(PERSIST_DATA_EVERY))
            } else {
                None
            };
            if let Some(wait) = wait {
                let at = instant_after(last_persist, wait);
                persist_due = Some(persist_due.map_or(at, |d| d.min(at)));
            }
            if persist_due.is_some_and(|d| d <= Instant::now()) {
                // Saved from a snapshot taken now (published too): the
                // state file is a view over it, not a second copy.
                let begun = Instant::now();
                let snap = self.publish(&mut last_snapshot);
                not_before = spaced(begun, last_snapshot);
                snapshot_due = None;
                self.persist(snap);
                last_persist = Instant::now();
                persist_due = None;
            }
        }
        // Drain: take what the sources already sent, then publish and save.
        let now = self.clock.now();
        while let Ok(obs) = self.rx.try_recv() {
            self.sup.observe(obs, now);
        }
        self.dispatch();
        let snap = self.publish(&mut last_snapshot);
        self.persist(snap);
        debug!("Core stopped.");
    }

    fn publish(&mut self, last: &mut Instant) -> Arc<Snapshot> {
        let snap = Arc::new(self.sup.snapshot(self.clock.now()));
        self.metrics.sync_sources(&snap);
        self.snapshot_tx.send_replace(snap.clone());
        *last = Instant::now();
        snap
    }

    /// Hand the state writer what to save; `snap` is the snapshot just
    /// taken.
    fn persist(&self, snap: Arc<Snapshot>) {
        if let Some(tx) = &self.persist_tx {
            tx.send_replace(handoff(Some(self.sup.persist_view(snap))));
        }
    }

    /// Log and count the core's events; send point-read requests.
    fn dispatch(&mut self) {
        let events = self.sup.take_events();
        let mut logged = 0usize;
        let mut unlogged = 0usize;
        for ev in events {
            self.account(&ev, &mut logged, &mut unlogged);
        }
        if unlogged > 0 {
            warn!(
                more = unlogged,
                "More agents changed state than are logged one by one; see /api/v1/agents."
            );
        }
        for req in self.sup.take_confirms() {
            let Some(tx) = self.confirm_txs.get(&req.source) else {
                continue;
            };
            for chunk in req.agents.chunks(CONFIRM_CHUNK) {
                if tx.try_send(chunk.to_vec()).is_err() {
                    self.metrics.point_reads_dropped(&req.source, chunk.len());
                }
            }
        }
    }

    /// Metrics and log lines for one event.
    fn account(&self, ev: &Event, logged: &mut usize, unlogged: &mut usize) {
        let mut log = |f: &dyn Fn()| {
            if *logged < LOG_LINES_PER_ROUND {
                *logged += 1;
                f();
            } else {
                *unlogged += 1;
            }
        };
        match ev {
            Event::AgentChanged {
                agent,
                from,
                to,
                reason,
                ..
            } => {
                if let Some(from) = from {
                    self.metrics.transition(*from, *to);
                }
                let from = from.map(State::as_str).unwrap_or("new");
                if to.is_alerting() {
                    log(
                        &|| warn!(agent = %agent, from = %from, to = %to, reason = %reason, "Agent is not healthy."),
                    );
                } else {
                    log(
                        &|| info!(agent = %agent, from = %from, to = %to, reason = %reason, "Agent state changed."),
                    );
                }
            }
            Event::CheckChanged { key, from, to, .. } => {
                debug!(agent = %key.agent, source = %key.source, from = ?from, to = %to, "Check state changed.");
            }
            // `source_up` follows the snapshot (Metrics::sync_sources).
            Event::SourceChanged { .. } => {}
            Event::SourceProblem {
                source,
                agent,
                kind,
                detail,
            } => {
                self.metrics.source_error(source, *kind);
                log(
                    &|| warn!(source = %source, agent = %agent, kind = %kind, detail = %detail, "Unusable heartbeat value."),
                );
            }
            Event::AgentForgotten { agent, .. } => {
                log(&|| info!(agent = %agent, "Agent forgotten after forget_after without data."));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use tokio::time::Instant;

    use super::*;
    use crate::core::{Policy, Reading, SourceKind, State};

    struct Rig {
        tx: mpsc::Sender<Observation>,
        urgent: mpsc::Sender<Observation>,
        confirms: mpsc::Receiver<Vec<AgentId>>,
        snaps: watch::Receiver<Arc<Snapshot>>,
        clock: Clock,
        cancel: CancellationToken,
        handle: tokio::task::JoinHandle<()>,
    }

    fn rig(stale_after: Duration) -> Rig {
        let wall = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::tokio(wall);
        let mut policy = Policy::default();
        policy.defaults.stale_after = stale_after;
        let mut sup = Supervisor::new(
            policy,
            [
                (SourceId::from("push"), SourceKind::Push, "push".to_string()),
                (
                    SourceId::from("redis"),
                    SourceKind::Polled,
                    "redis".to_string(),
                ),
            ],
            clock.now(),
        );
        let (tx, rx) = mpsc::channel(OBSERVATION_CAPACITY);
        let (urgent_tx, urgent) = mpsc::channel(URGENT_CAPACITY);
        let (ctx, confirms) = mpsc::channel(CONFIRM_CAPACITY);
        let (snapshot_tx, snaps) = watch::channel(Arc::new(sup.snapshot(clock.now())));
        let driver = Driver {
            sup,
            rx,
            urgent,
            confirm_txs: [(SourceId::from("redis"), ctx)].into(),
            snapshot_tx,
            persist_tx: None,
            persist_every: Duration::from_secs(1),
            metrics: Arc::new(Metrics::new(100).unwrap()),
            clock: clock.clone(),
            liveness: Liveness::default(),
        };
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(driver.run(cancel.clone()));
        Rig {
            tx,
            urgent: urgent_tx,
            confirms,
            snaps,
            clock,
            cancel,
            handle,
        }
    }

    async fn wait_state(snaps: &mut watch::Receiver<Arc<Snapshot>>, agent: &str, want: State) {
        loop {
            if snaps.borrow_and_update().agent(agent).map(|a| a.state) == Some(want) {
                return;
            }
            snaps.changed().await.unwrap();
        }
    }

    fn hb(agent: &str, t: crate::core::Timestamp) -> Reading {
        Reading::Heartbeat {
            agent: agent.into(),
            last_seen: t,
            status: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pushed_agent_goes_stale_at_its_deadline_not_at_a_later_tick() {
        let mut r = rig(Duration::from_secs(3));
        let start = Instant::now();
        r.tx.send(Observation::Pushed {
            source: "push".into(),
            reading: hb("a", r.clock.now()),
        })
        .await
        .unwrap();
        wait_state(&mut r.snaps, "a", State::Healthy).await;
        wait_state(&mut r.snaps, "a", State::Stale).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_millis(3010),
            "stale after {took:?}"
        );
        r.cancel.cancel();
        r.handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn polled_deadline_asks_for_a_point_read_and_the_answer_decides() {
        let mut r = rig(Duration::from_secs(3));
        let t0 = r.clock.now();
        let start = Instant::now();
        for obs in [
            Observation::Batch {
                source: "redis".into(),
                started_at: t0,
                readings: vec![hb("a", t0), hb("b", t0)],
            },
            Observation::ScanComplete {
                source: "redis".into(),
                started_at: t0,
            },
        ] {
            r.tx.send(obs).await.unwrap();
        }
        wait_state(&mut r.snaps, "a", State::Healthy).await;
        // The next scan is far away (a 5 s interval, say): the deadline at
        // 3 s triggers a point read instead of waiting for it.
        let asked = r.confirms.recv().await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(3010));
        assert_eq!(asked, vec![AgentId::from("a"), AgentId::from("b")]);
        // a wrote meanwhile; b did not.
        let now = r.clock.now();
        r.tx.send(Observation::Confirmed {
            source: "redis".into(),
            read_at: now,
            readings: vec![hb("a", now), hb("b", t0)],
        })
        .await
        .unwrap();
        wait_state(&mut r.snaps, "b", State::Stale).await;
        let snap = r.snaps.borrow().clone();
        assert_eq!(snap.agent("a").unwrap().state, State::Healthy);
        r.cancel.cancel();
        r.handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_point_read_answer_is_taken_before_the_scan_pages_queued_ahead_of_it() {
        let mut r = rig(Duration::from_secs(3));
        let t0 = r.clock.now();
        r.tx.send(Observation::Batch {
            source: "redis".into(),
            started_at: t0,
            readings: vec![hb("b", t0)],
        })
        .await
        .unwrap();
        wait_state(&mut r.snaps, "b", State::Healthy).await;
        let asked = r.confirms.recv().await.unwrap();
        assert_eq!(asked, vec![AgentId::from("b")]);
        // A large scan fills the scan lane (b beating again, in its last
        // page), then the point read answers: b had not beaten.
        let now = r.clock.now();
        for i in 0..OBSERVATION_CAPACITY {
            let readings = (0..100)
                .map(|n| hb(&format!("x{i}_{n}"), now))
                .chain((i == OBSERVATION_CAPACITY - 1).then(|| hb("b", now)))
                .collect();
            r.tx.try_send(Observation::Batch {
                source: "redis".into(),
                started_at: now,
                readings,
            })
            .unwrap();
        }
        r.urgent
            .send(Observation::Confirmed {
                source: "redis".into(),
                read_at: now,
                readings: vec![hb("b", t0)],
            })
            .await
            .unwrap();
        // The answer came first: b was stale before the scan's page made it
        // healthy again.
        let last = format!("x{}_99", OBSERVATION_CAPACITY - 1);
        while r.snaps.borrow_and_update().agent(&last).is_none() {
            r.snaps.changed().await.unwrap();
        }
        let snap = r.snaps.borrow().clone();
        let b = snap.agent("b").unwrap();
        let states: Vec<State> = b.transitions().iter().map(|t| t.state).collect();
        assert_eq!(states, [State::Healthy, State::Stale, State::Healthy]);
        r.cancel.cancel();
        r.handle.await.unwrap();
    }
}
