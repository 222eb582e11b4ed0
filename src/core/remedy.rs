//! Remediation decisions (DESIGN §2 rule 13): which agent gets which admin
//! call when, whether it worked, and when to give up and page. Pure: every
//! method takes `now`; the actions task (`crate::actions`) makes the calls
//! this asks for and reports their results back.
//!
//! One *case* per agent in a state its rule remediates (`on:`), from the
//! moment it enters that state until it is healthy again:
//!
//! ```text
//! waiting ──after──► calling ──answer as expected──► verifying ──healthy──► (closed: recovered)
//!                       │                                │ verify_within passed
//!                       └──error, timeout, bad status────┴──► backoff ──► calling ... (max_attempts)
//!                                                             └──► reporting ──► done (page)
//! ```
//!
//! Safety first: nothing is called for an agent that is `unknown`, whose
//! source is down or pending, whose service check (`depends_on`) is not
//! healthy, that is silenced, or while this replica does not lead; the
//! global rate limit (`max_per_minute`) delays calls; and when more agents
//! need an action at once than `max_agents` (a fleet-wide problem), the
//! circuit breaker acts on none of them and their pages go out.
//!
//! The alert engine reads [`RemedyView`]: with `page: after_remediation` an
//! agent's alert waits while its case is open (at most the rule's
//! `hold_max`), and fires with the case's note once the case gives up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{AgentId, State, Timestamp};
use super::policy::{Labels, Policy};
use super::snapshot::{AgentView, Entry, Snapshot, SourceStatus};
use super::time::after;

/// Whether an agent's page waits for its remediation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageMode {
    /// The alert fires only once remediation gave up (or not at all when
    /// the agent recovers).
    AfterRemediation,
    /// The alert fires as usual; remediation runs beside it and annotates
    /// it.
    AtOnce,
}

impl PageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PageMode::AfterRemediation => "after_remediation",
            PageMode::AtOnce => "at_once",
        }
    }
}

/// `remediate:` of an agent rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RemedyRule {
    /// The action (`actions[].name`) called.
    pub action: String,
    /// The agent states it is called on (`stale`, `failing`, `missing`).
    pub on: Vec<State>,
    /// How long the agent stays in such a state before the first call.
    pub after: Duration,
    /// Calls per incident, and per `window`.
    pub max_attempts: u32,
    pub window: Duration,
    /// Wait after a failed attempt; doubles each time.
    pub backoff: Duration,
    /// A call worked when the agent is healthy within this.
    pub verify_within: Duration,
    pub page: PageMode,
    /// The action (a GET) whose answer is attached to the page.
    pub report: Option<String>,
    /// The longest a page waits for this rule's remediation, from the
    /// moment the agent entered its state: `after`, every attempt's call
    /// timeout and verification, the backoffs, the report, and a margin.
    pub hold_max: Duration,
}

impl RemedyRule {
    /// The wait before attempt `n + 1` after `n` failed ones (`n ≥ 1`):
    /// `backoff × 2^(n-1)`, at most 64 × `backoff`.
    pub fn backoff_after(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(6);
        self.backoff.saturating_mul(1 << doublings)
    }
}

/// `remediation:`: what holds for every agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Log and record what would be called; call nothing.
    pub dry_run: bool,
    /// Action calls a minute, all agents together.
    pub max_per_minute: u32,
    /// More agents than this needing an action at once: act on none.
    pub max_agents: usize,
    /// Attempts kept for `GET /api/v1/actions`.
    pub history: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            dry_run: false,
            max_per_minute: 10,
            max_agents: 5,
            history: 200,
        }
    }
}

/// Who asked for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A rule's remediation.
    Auto,
    /// `POST /api/v1/agents/{id}/actions/{name}`.
    Manual,
    /// The status report attached to a page.
    Report,
}

/// Where an attempt stands, or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call is in flight.
    Calling,
    /// Answered as expected; waiting for the agent to be healthy.
    Verifying,
    /// The agent was healthy again within `verify_within`.
    Recovered,
    /// Answered as expected, but the agent was not healthy within
    /// `verify_within`.
    NotRecovered,
    /// An answer that was not expected, or no answer (error, timeout).
    Failed,
    /// Answered as expected (manual calls and reports: nothing to verify).
    Succeeded,
    /// `dry_run: true`: logged, not called.
    DryRun,
    /// The sidecar restarted before the call answered or was verified.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Calling => "calling",
            Outcome::Verifying => "verifying",
            Outcome::Recovered => "recovered",
            Outcome::NotRecovered => "not_recovered",
            Outcome::Failed => "failed",
            Outcome::Succeeded => "succeeded",
            Outcome::DryRun => "dry_run",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One call, made or to be made: what `GET /api/v1/actions` lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: u64,
    pub agent: AgentId,
    pub action: String,
    pub trigger: Trigger,
    /// 1, 2... within the incident (automatic calls), else 0.
    pub number: u32,
    pub at: Timestamp,
    pub outcome: Outcome,
    /// The HTTP status of the answer, if one came.
    pub status: Option<u16>,
    /// Why the call failed (`timed out after 5s`, `connection refused`,
    /// `500 Internal Server Error`), if it did.
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    /// When verification ended (recovered or not).
    pub verified_at: Option<Timestamp>,
}

impl Attempt {
    /// A call about to be made.
    fn open(
        id: u64,
        agent: AgentId,
        action: String,
        trigger: Trigger,
        number: u32,
        at: Timestamp,
    ) -> Self {
        Self {
            id,
            agent,
            action,
            trigger,
            number,
            at,
            outcome: Outcome::Calling,
            status: None,
            error: None,
            duration_ms: None,
            verified_at: None,
        }
    }
}

/// What the actions task is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSpec {
    pub attempt: u64,
    pub agent: AgentId,
    pub labels: Arc<Labels>,
    pub state: State,
    pub reason: String,
    pub since: Timestamp,
    pub action: String,
    pub trigger: Trigger,
    pub number: u32,
    /// Log and render the request; do not send it.
    pub dry_run: bool,
}

/// How a call went.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CallResult {
    /// The answer's status was one the action expects.
    pub ok: bool,
    pub status: Option<u16>,
    /// Why it failed (`ok` false).
    pub error: Option<String>,
    pub duration: Duration,
    /// The answer, bounded and made readable (reports).
    pub body: Option<String>,
    /// It was not sent (`dry_run`).
    pub dry_run: bool,
}

/// What the service said about an agent: a report call's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub action: String,
    pub at: Timestamp,
    pub status: Option<u16>,
    pub body: String,
}

/// Why a case does not act now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum Block {
    /// No trustworthy data about the agent.
    Unknown,
    /// A source of the agent's checks is down or not read yet.
    SourceDown(String),
    /// The service check the agent depends on is not healthy.
    Dependency(String),
    Silenced,
    /// Another replica leads (or none does: failing open).
    NotLeader,
    /// `max_per_minute` reached.
    RateLimited,
}

impl Block {
    pub fn describe(&self) -> String {
        match self {
            Block::Unknown => "the agent's state is unknown".into(),
            Block::SourceDown(s) => format!("source {s} is not up"),
            Block::Dependency(d) => format!("the service check {d} is not healthy"),
            Block::Silenced => "the agent is silenced".into(),
            Block::NotLeader => "this replica does not lead".into(),
            Block::RateLimited => "remediation.max_per_minute reached".into(),
        }
    }
}

/// How a case ended without the agent recovering: its page goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// Every attempt failed.
    Exhausted,
    /// The circuit breaker: too many agents at once.
    Halted,
    /// `max_attempts` already used within `window` by earlier incidents.
    NoBudget,
    /// `dry_run`: nothing was called.
    DryRun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    Waiting,
    Calling { attempt: u64 },
    Verifying { attempt: u64, until: Timestamp },
    Backoff { until: Timestamp },
    Reporting { attempt: u64, then: End },
    Done { end: End },
}

impl Phase {
    /// Still trying: the page (with `after_remediation`) waits.
    fn open(self) -> bool {
        !matches!(self, Phase::Done { .. })
    }
}

/// One agent's remediation, for the engine and the API.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentRemedy {
    pub action: String,
    pub page: PageMode,
    /// When the agent entered the state this case is about.
    pub since: Timestamp,
    pub state: State,
    #[serde(flatten)]
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Block>,
    pub attempts: Vec<Attempt>,
    /// Why remediation gave up: what the page says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the alert engine and the API read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemedyView {
    pub taken_at: Option<Timestamp>,
    pub dry_run: bool,
    pub breaker_open: bool,
    /// Open and ended cases, by agent.
    pub cases: BTreeMap<AgentId, AgentRemedy>,
    /// The last action called on each agent (any trigger), for "recovered
    /// after restart_agent".
    pub last_action: BTreeMap<AgentId, (String, Timestamp)>,
    /// The last status report of each agent.
    pub reports: BTreeMap<AgentId, Report>,
    /// Recent attempts, newest first.
    pub attempts: Vec<Attempt>,
}

/// What a page says about remediation (an alert's `remediation`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemediationNote {
    /// `remediation failed: 2 × restart_agent, last answer 500 ...`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// One line per attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
    /// What the service says about the agent (the report's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The agent recovered after this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_after: Option<String>,
}

impl RemedyView {
    /// Until when an agent's page waits for remediation, if it does:
    /// its rule pages `after_remediation`, its state is one the rule acts
    /// on, and its case is open and may act (or not seen yet: the view may
    /// lag the snapshot by a moment, so a case not seen yet is presumed
    /// open).
    pub fn hold_until(&self, policy: &Policy, agent: &AgentView) -> Option<Timestamp> {
        if self.dry_run {
            return None;
        }
        let rule = policy.remedy_for(agent.id.as_str())?;
        if rule.page != PageMode::AfterRemediation || !rule.on.contains(&agent.state) {
            return None;
        }
        // Ended, or blocked because this replica does not lead: nothing
        // will be tried here, so nothing is waited for (a follower pages
        // nobody anyway; a replica failing open pages at once).
        if let Some(case) = self.cases.get(&agent.id)
            && case.since == agent.since
            && (!case.phase.open() || case.blocked == Some(Block::NotLeader))
        {
            return None;
        }
        Some(after(agent.since, rule.hold_max))
    }

    /// What an alert about `agent` in an incident since `since` says about
    /// remediation, if anything.
    pub fn note(&self, agent: &AgentId, since: Timestamp) -> Option<RemediationNote> {
        let case = self.cases.get(agent)?;
        let summary = case.note.clone()?;
        if case.since > since {
            return None;
        }
        Some(RemediationNote {
            summary,
            attempts: case.attempts.iter().map(attempt_line).collect(),
            report: self.reports.get(agent).map(|r| r.body.clone()),
            recovered_after: None,
        })
    }

    /// The action last called on `agent` at or after `since`.
    pub fn acted_since(&self, agent: &AgentId, since: Timestamp) -> Option<&str> {
        self.last_action
            .get(agent)
            .filter(|(_, at)| *at >= since)
            .map(|(name, _)| name.as_str())
    }
}

/// `10:41:02Z restart_agent #1: failed (500 Internal Server Error)`.
pub fn attempt_line(a: &Attempt) -> String {
    let mut s = format!(
        "{} {} #{}: {}",
        a.at.format("%H:%M:%SZ"),
        a.action,
        a.number,
        a.outcome.as_str()
    );
    if let Some(e) = &a.error {
        s.push_str(&format!(" ({e})"));
    } else if let Some(st) = a.status {
        s.push_str(&format!(" (answer {st})"));
    }
    s
}

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq)]
pub enum RemedyEvent {
    BreakerOpened {
        agents: usize,
        max: usize,
    },
    BreakerClosed,
    Blocked {
        agent: AgentId,
        block: Block,
    },
    Recovered {
        agent: AgentId,
        action: String,
    },
    GaveUp {
        agent: AgentId,
        end: End,
        note: String,
    },
}

/// What the state store keeps across restarts: the calls made within each
/// agent's window (so `max_attempts` per `window` holds through a restart,
/// a SIGKILL included), the recent attempts, and the last action per agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedRemedies {
    pub starts: BTreeMap<AgentId, Vec<Timestamp>>,
    pub attempts: Vec<Attempt>,
    pub last_action: BTreeMap<AgentId, (String, Timestamp)>,
    pub next_id: u64,
}

struct Case {
    rule: Arc<RemedyRule>,
    since: Timestamp,
    state: State,
    phase: Phase,
    /// Attempt ids of this incident.
    attempts: Vec<u64>,
    blocked: Option<Block>,
    note: Option<String>,
    /// The agent is `unknown` at the moment: the case waits.
    paused: bool,
}

/// The remediation state of every agent. One owner: the actions task.
pub struct Remedies {
    policy: Policy,
    limits: Limits,
    cases: HashMap<AgentId, Case>,
    /// Starts of automatic calls per agent, within their rule's window.
    starts: HashMap<AgentId, VecDeque<Timestamp>>,
    /// Starts of every action call within the last minute.
    minute: VecDeque<Timestamp>,
    /// Attempts whose call or verification is not over.
    open: HashMap<u64, Attempt>,
    /// Finished attempts, newest last, at most `limits.history`.
    log: VecDeque<Attempt>,
    last_action: HashMap<AgentId, (String, Timestamp)>,
    reports: HashMap<AgentId, Report>,
    next_id: u64,
    breaker_open: bool,
    events: Vec<RemedyEvent>,
    /// Bumped whenever what [`Remedies::persist`] returns changes.
    revision: u64,
}

const MINUTE: Duration = Duration::from_secs(60);
/// Reports kept at most (one per agent).
const MAX_REPORTS: usize = 1000;

impl Remedies {
    pub fn new(policy: Policy, limits: Limits) -> Self {
        Self {
            policy,
            limits,
            cases: HashMap::new(),
            starts: HashMap::new(),
            minute: VecDeque::new(),
            open: HashMap::new(),
            log: VecDeque::new(),
            last_action: HashMap::new(),
            reports: HashMap::new(),
            next_id: 1,
            breaker_open: false,
            events: Vec::new(),
            revision: 0,
        }
    }

    /// What to save; see [`PersistedRemedies`].
    pub fn persist(&self) -> PersistedRemedies {
        PersistedRemedies {
            starts: self
                .starts
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
                .collect(),
            attempts: {
                let mut all: Vec<Attempt> =
                    self.log.iter().chain(self.open.values()).cloned().collect();
                all.sort_by_key(|a| a.id);
                all
            },
            last_action: self
                .last_action
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            next_id: self.next_id,
        }
    }

    /// Changes whenever [`Remedies::persist`] would return something new.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Take up what a previous run saved. Calls it made stay counted in
    /// their agents' windows; cases start afresh from the restored agent
    /// states (an agent still stuck is acted on again only within its
    /// rule's budget).
    pub fn restore(&mut self, saved: PersistedRemedies, now: Timestamp) {
        self.starts = saved
            .starts
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().filter(|t| *t <= now).collect()))
            .collect();
        let mut log: Vec<Attempt> = saved.attempts;
        for a in &mut log {
            if matches!(a.outcome, Outcome::Calling | Outcome::Verifying) {
                a.outcome = Outcome::Interrupted;
            }
        }
        log.sort_by_key(|a| a.id);
        let keep = log.len().saturating_sub(self.limits.history.max(1));
        self.log = log.into_iter().skip(keep).collect();
        self.last_action = saved.last_action.into_iter().collect();
        let newest = self.log.back().map_or(0, |a| a.id);
        self.next_id = saved.next_id.max(newest + 1).max(1);
        self.expire(now);
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Log-worthy events since the last call.
    pub fn take_events(&mut self) -> Vec<RemedyEvent> {
        std::mem::take(&mut self.events)
    }

    /// Follow a snapshot: open, advance and close cases. `may_act`: this
    /// replica leads (or is alone); `silenced`: whether a silence mutes
    /// the agent's alert. Returns the calls to make now.
    pub fn step(
        &mut self,
        snap: &Snapshot,
        may_act: bool,
        silenced: &dyn Fn(Entry<'_>) -> bool,
        now: Timestamp,
    ) -> Vec<CallSpec> {
        let mut calls = Vec::new();
        self.expire(now);
        // Open, update and close cases from what the snapshot says. Most
        // agents are healthy with no case: they cost one comparison.
        for agent in snap.views() {
            let has_case = self.cases.contains_key(&agent.id);
            if !has_case && matches!(agent.state, State::Healthy | State::Unknown) {
                continue;
            }
            let Some(rule) = self.policy.remedy_for(agent.id.as_str()).cloned() else {
                continue;
            };
            match agent.state {
                State::Healthy => {
                    if let Some(case) = self.cases.remove(&agent.id) {
                        self.close_recovered(&agent.id, case, now);
                    }
                }
                State::Unknown => {
                    if let Some(case) = self.cases.get_mut(&agent.id) {
                        case.paused = true;
                        case.blocked = Some(Block::Unknown);
                    }
                }
                s if rule.on.contains(&s) => {
                    let case = self.cases.entry(agent.id.clone()).or_insert_with(|| Case {
                        rule: rule.clone(),
                        since: agent.since,
                        state: s,
                        phase: Phase::Waiting,
                        attempts: Vec::new(),
                        blocked: None,
                        note: None,
                        paused: false,
                    });
                    case.paused = false;
                    if case.blocked == Some(Block::Unknown) {
                        case.blocked = None;
                    }
                    // Stale, then failing: the same incident goes on.
                    case.state = s;
                    case.since = agent.since;
                }
                _ => {
                    // An alerting state this rule does not act on: its
                    // page goes out as usual.
                    if let Some(case) = self.cases.remove(&agent.id) {
                        self.close_quietly(case, now);
                    }
                }
            }
        }
        // Agents forgotten by the core.
        let gone: Vec<AgentId> = self
            .cases
            .keys()
            .filter(|id| snap.agent(id.as_str()).is_none())
            .cloned()
            .collect();
        for id in gone {
            if let Some(case) = self.cases.remove(&id) {
                self.close_quietly(case, now);
            }
        }
        self.reports
            .retain(|id, _| snap.agent(id.as_str()).is_some());
        self.last_action
            .retain(|id, _| snap.agent(id.as_str()).is_some());

        // The circuit breaker: agents in a state their rule acts on, with
        // data to judge them by.
        let needing = self.cases.values().filter(|c| !c.paused).count();
        if needing > self.limits.max_agents {
            if !self.breaker_open {
                self.breaker_open = true;
                self.events.push(RemedyEvent::BreakerOpened {
                    agents: needing,
                    max: self.limits.max_agents,
                });
            }
            let note = format!(
                "remediation not attempted: {needing} agents need an action at once \
                 (more than remediation.max_agents, {}): a fleet-wide problem",
                self.limits.max_agents
            );
            let halt: Vec<AgentId> = self
                .cases
                .iter()
                .filter(|(_, c)| matches!(c.phase, Phase::Waiting | Phase::Backoff { .. }))
                .map(|(id, _)| id.clone())
                .collect();
            for id in halt {
                self.end(&id, End::Halted, note.clone(), false, now, &mut calls);
            }
        } else if self.breaker_open {
            self.breaker_open = false;
            self.events.push(RemedyEvent::BreakerClosed);
        }

        // Advance the cases, oldest incident first.
        let mut order: Vec<(Timestamp, AgentId)> = self
            .cases
            .iter()
            .filter(|(_, c)| !c.paused)
            .map(|(id, c)| (c.since, id.clone()))
            .collect();
        order.sort();
        for (_, id) in order {
            let Some(case) = self.cases.get(&id) else {
                continue;
            };
            let due = match case.phase {
                Phase::Waiting => now >= after(case.since, case.rule.after),
                Phase::Backoff { until } => now >= until,
                Phase::Verifying { attempt, until } if now >= until => {
                    let verify = case.rule.verify_within;
                    self.finish_attempt(attempt, Outcome::NotRecovered, now, |a| {
                        a.error = Some(format!(
                            "answer {}, agent still not healthy after {}",
                            a.status.map(|s| s.to_string()).unwrap_or_default(),
                            humantime::format_duration(verify)
                        ));
                    });
                    self.after_failure(&id, now, &mut calls);
                    false
                }
                _ => false,
            };
            if due {
                self.try_act(&id, snap, may_act, silenced, now, &mut calls);
            }
        }
        calls
    }

    /// Start the next automatic call of `id`'s case, if nothing blocks it.
    fn try_act(
        &mut self,
        id: &AgentId,
        snap: &Snapshot,
        may_act: bool,
        silenced: &dyn Fn(Entry<'_>) -> bool,
        now: Timestamp,
        calls: &mut Vec<CallSpec>,
    ) {
        let Some(agent) = snap.agent(id.as_str()) else {
            return;
        };
        let block = if !may_act {
            Some(Block::NotLeader)
        } else if let Some(b) = blocked_by_sources(&agent, snap) {
            Some(b)
        } else if silenced(agent) {
            Some(Block::Silenced)
        } else {
            None
        };
        let Some(case) = self.cases.get_mut(id) else {
            return;
        };
        if let Some(b) = block {
            if case.blocked.as_ref() != Some(&b) {
                self.events.push(RemedyEvent::Blocked {
                    agent: id.clone(),
                    block: b.clone(),
                });
            }
            case.blocked = Some(b);
            return;
        }
        let rule = case.rule.clone();
        let made = case.attempts.len() as u32;
        let used = self
            .starts
            .get(id)
            .map(|s| s.iter().filter(|t| after(**t, rule.window) > now).count())
            .unwrap_or(0) as u32;
        if made >= rule.max_attempts || used >= rule.max_attempts {
            let (end, note) = if made == 0 {
                (
                    End::NoBudget,
                    format!(
                        "remediation not attempted: {} already called {used} time(s) within {} \
                         (max_attempts {})",
                        rule.action,
                        humantime::format_duration(rule.window),
                        rule.max_attempts
                    ),
                )
            } else {
                (End::Exhausted, self.failure_note(id))
            };
            self.end(id, end, note, true, now, calls);
            return;
        }
        if self.minute.len() >= self.limits.max_per_minute as usize {
            if case.blocked != Some(Block::RateLimited) {
                self.events.push(RemedyEvent::Blocked {
                    agent: id.clone(),
                    block: Block::RateLimited,
                });
            }
            case.blocked = Some(Block::RateLimited);
            return;
        }
        case.blocked = None;
        let attempt = self.next_id;
        self.next_id += 1;
        case.attempts.push(attempt);
        case.phase = Phase::Calling { attempt };
        let number = made + 1;
        self.minute.push_back(now);
        self.starts.entry(id.clone()).or_default().push_back(now);
        self.revision += 1;
        let dry_run = self.limits.dry_run;
        self.open.insert(
            attempt,
            Attempt::open(
                attempt,
                id.clone(),
                rule.action.clone(),
                Trigger::Auto,
                number,
                now,
            ),
        );
        calls.push(CallSpec {
            attempt,
            agent: id.clone(),
            labels: agent.labels.clone(),
            state: agent.state,
            reason: agent.reason.to_string(),
            since: agent.since,
            action: rule.action.clone(),
            trigger: Trigger::Auto,
            number,
            dry_run,
        });
    }

    /// A call of `id`'s case failed or did not help: back off, or give up.
    fn after_failure(&mut self, id: &AgentId, now: Timestamp, calls: &mut Vec<CallSpec>) {
        let Some(case) = self.cases.get_mut(id) else {
            return;
        };
        let made = case.attempts.len() as u32;
        if self.breaker_open {
            let note = format!(
                "{}; remediation stopped: more than remediation.max_agents ({}) agents need an \
                 action at once",
                self.failure_note(id),
                self.limits.max_agents
            );
            self.end(id, End::Halted, note, true, now, calls);
        } else if made >= case.rule.max_attempts {
            let note = self.failure_note(id);
            self.end(id, End::Exhausted, note, true, now, calls);
        } else {
            case.phase = Phase::Backoff {
                until: after(now, case.rule.backoff_after(made)),
            };
        }
    }

    /// `remediation failed: 2 × restart_agent, last answer 500 ...`.
    fn failure_note(&self, id: &AgentId) -> String {
        let Some(case) = self.cases.get(id) else {
            return String::new();
        };
        let attempts = self.incident_attempts(id, case.since);
        let last = attempts
            .last()
            .map(|a| match (&a.error, a.status) {
                (Some(e), _) => format!(", last: {e}"),
                (None, Some(s)) => format!(", last answer {s}"),
                (None, None) => String::new(),
            })
            .unwrap_or_default();
        format!(
            "remediation failed: {} × {}{last}",
            attempts.len(),
            case.rule.action
        )
    }

    /// The automatic calls on `id` since its incident began (`since`),
    /// oldest first, including those a previous run made before a restart.
    fn incident_attempts(&self, id: &AgentId, since: Timestamp) -> Vec<&Attempt> {
        let mut list: Vec<&Attempt> = self
            .log
            .iter()
            .chain(self.open.values())
            .filter(|a| &a.agent == id && a.trigger == Trigger::Auto && a.at >= since)
            .collect();
        list.sort_by_key(|a| a.id);
        list
    }

    fn attempt(&self, id: u64) -> Option<&Attempt> {
        self.open
            .get(&id)
            .or_else(|| self.log.iter().rev().find(|a| a.id == id))
    }

    /// End `id`'s case without recovery; with `report`, fetch the rule's
    /// report first (the page waits for it).
    fn end(
        &mut self,
        id: &AgentId,
        end: End,
        note: String,
        report: bool,
        now: Timestamp,
        calls: &mut Vec<CallSpec>,
    ) {
        let Some(case) = self.cases.get_mut(id) else {
            return;
        };
        case.note = Some(note.clone());
        case.blocked = None;
        let report_action = case.rule.report.clone().filter(|_| report);
        match report_action {
            Some(action) if !self.limits.dry_run => {
                let attempt = self.next_id;
                self.next_id += 1;
                case.phase = Phase::Reporting { attempt, then: end };
                let (since, state) = (case.since, case.state);
                self.open.insert(
                    attempt,
                    Attempt::open(attempt, id.clone(), action.clone(), Trigger::Report, 0, now),
                );
                calls.push(CallSpec {
                    attempt,
                    agent: id.clone(),
                    labels: self.policy.resolve(id).labels,
                    state,
                    reason: String::new(),
                    since,
                    action,
                    trigger: Trigger::Report,
                    number: 0,
                    dry_run: false,
                });
            }
            _ => {
                case.phase = Phase::Done { end };
                self.events.push(RemedyEvent::GaveUp {
                    agent: id.clone(),
                    end,
                    note,
                });
            }
        }
    }

    /// The agent is healthy again.
    fn close_recovered(&mut self, id: &AgentId, case: Case, now: Timestamp) {
        let acted = case
            .attempts
            .iter()
            .filter_map(|a| self.attempt(*a))
            .rfind(|a| a.trigger == Trigger::Auto)
            .map(|a| a.action.clone());
        for a in &case.attempts {
            let outcome = match self.open.get(a).map(|x| x.outcome) {
                Some(Outcome::Verifying) => Outcome::Recovered,
                Some(_) => continue,
                None => continue,
            };
            self.finish_attempt(*a, outcome, now, |_| {});
        }
        // A call still in flight is recorded when it answers.
        if let Some(action) = acted
            && !matches!(case.phase, Phase::Done { .. })
        {
            self.events.push(RemedyEvent::Recovered {
                agent: id.clone(),
                action,
            });
        }
    }

    /// The case ends because the agent left the states its rule acts on
    /// (or was forgotten): nothing to verify any more.
    fn close_quietly(&mut self, case: Case, now: Timestamp) {
        for a in &case.attempts {
            if self.open.get(a).map(|x| x.outcome) == Some(Outcome::Verifying) {
                self.finish_attempt(*a, Outcome::NotRecovered, now, |a| {
                    a.error = Some("the agent left the state remediated".into());
                });
            }
        }
    }

    /// Record the end of an open attempt.
    fn finish_attempt(
        &mut self,
        id: u64,
        outcome: Outcome,
        now: Timestamp,
        edit: impl FnOnce(&mut Attempt),
    ) {
        let Some(mut a) = self.open.remove(&id) else {
            return;
        };
        a.outcome = outcome;
        if matches!(outcome, Outcome::Recovered | Outcome::NotRecovered) {
            a.verified_at = Some(now);
        }
        edit(&mut a);
        self.log.push_back(a);
        self.revision += 1;
        while self.log.len() > self.limits.history.max(1) {
            self.log.pop_front();
        }
    }

    /// A call the actions task made has answered (or failed).
    pub fn call_done(&mut self, attempt: u64, result: CallResult, now: Timestamp) -> Vec<CallSpec> {
        let mut calls = Vec::new();
        let Some(a) = self.open.get_mut(&attempt) else {
            return calls;
        };
        a.status = result.status;
        a.duration_ms = Some(result.duration.as_millis() as u64);
        a.error = result.error.clone();
        let (agent, action, trigger) = (a.agent.clone(), a.action.clone(), a.trigger);
        if !result.dry_run && trigger != Trigger::Report {
            self.last_action
                .insert(agent.clone(), (action.clone(), a.at));
            self.revision += 1;
        }
        if trigger == Trigger::Report
            && let Some(body) = result.body.clone().filter(|_| !result.dry_run)
        {
            if self.reports.len() >= MAX_REPORTS && !self.reports.contains_key(&agent) {
                // Oldest out.
                if let Some(old) = self
                    .reports
                    .iter()
                    .min_by_key(|(_, r)| r.at)
                    .map(|(k, _)| k.clone())
                {
                    self.reports.remove(&old);
                }
            }
            self.reports.insert(
                agent.clone(),
                Report {
                    action: action.clone(),
                    at: now,
                    status: result.status,
                    body,
                },
            );
        }
        let phase = self.cases.get(&agent).map(|c| c.phase);
        match trigger {
            Trigger::Manual => {
                let outcome = if result.dry_run {
                    Outcome::DryRun
                } else if result.ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                self.finish_attempt(attempt, outcome, now, |_| {});
            }
            Trigger::Report => {
                let outcome = if result.ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                self.finish_attempt(attempt, outcome, now, |_| {});
                if let Some(Phase::Reporting { attempt: a, then }) = phase
                    && a == attempt
                    && let Some(case) = self.cases.get_mut(&agent)
                {
                    case.phase = Phase::Done { end: then };
                    let note = case.note.clone().unwrap_or_default();
                    self.events.push(RemedyEvent::GaveUp {
                        agent,
                        end: then,
                        note,
                    });
                }
            }
            Trigger::Auto => {
                let ours = phase == Some(Phase::Calling { attempt });
                if result.dry_run {
                    self.finish_attempt(attempt, Outcome::DryRun, now, |_| {});
                    if ours {
                        let note = format!("dry run: {action} would have been called");
                        self.end(&agent, End::DryRun, note, false, now, &mut calls);
                    }
                } else if result.ok {
                    let verify = self
                        .cases
                        .get(&agent)
                        .map(|c| c.rule.verify_within)
                        .unwrap_or_default();
                    match self.cases.get_mut(&agent) {
                        Some(case) if ours => {
                            if let Some(a) = self.open.get_mut(&attempt) {
                                a.outcome = Outcome::Verifying;
                            }
                            case.phase = Phase::Verifying {
                                attempt,
                                until: after(now, verify),
                            };
                        }
                        // The agent recovered (or left) while the call was
                        // in flight.
                        _ => {
                            let recovered = !self.cases.contains_key(&agent);
                            let outcome = if recovered {
                                Outcome::Recovered
                            } else {
                                Outcome::Succeeded
                            };
                            self.finish_attempt(attempt, outcome, now, |_| {});
                        }
                    }
                } else {
                    self.finish_attempt(attempt, Outcome::Failed, now, |_| {});
                    if ours {
                        self.after_failure(&agent, now, &mut calls);
                    }
                }
            }
        }
        calls
    }

    /// A call asked for by hand. `None` when the agent is not known.
    pub fn manual(
        &mut self,
        snap: &Snapshot,
        agent: &str,
        action: &str,
        now: Timestamp,
    ) -> Option<CallSpec> {
        let view = snap.agent(agent)?;
        let attempt = self.next_id;
        self.next_id += 1;
        self.open.insert(
            attempt,
            Attempt::open(
                attempt,
                view.id.clone(),
                action.to_string(),
                Trigger::Manual,
                0,
                now,
            ),
        );
        Some(CallSpec {
            attempt,
            agent: view.id.clone(),
            labels: view.labels.clone(),
            state: view.state,
            reason: view.reason.to_string(),
            since: view.since,
            action: action.to_string(),
            trigger: Trigger::Manual,
            number: 0,
            dry_run: self.limits.dry_run,
        })
    }

    /// The attempt with this id, open or finished.
    pub fn attempt_by_id(&self, id: u64) -> Option<&Attempt> {
        self.attempt(id)
    }

    /// Forget rate-limit and window entries that no longer count.
    fn expire(&mut self, now: Timestamp) {
        while self
            .minute
            .front()
            .is_some_and(|t| after(*t, MINUTE) <= now)
        {
            self.minute.pop_front();
        }
        let policy = &self.policy;
        self.starts.retain(|id, starts| {
            let window = policy
                .remedy_for(id.as_str())
                .map(|r| r.window)
                .unwrap_or_default();
            while starts.front().is_some_and(|t| after(*t, window) <= now) {
                starts.pop_front();
            }
            !starts.is_empty()
        });
    }

    /// When [`Remedies::step`] has something to do next, if ever.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut at = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        let rate_limited = self
            .cases
            .values()
            .any(|c| c.blocked == Some(Block::RateLimited));
        if rate_limited && let Some(t) = self.minute.front() {
            at(after(*t, MINUTE));
        }
        // A blocked case waits for what blocks it to change (a new
        // snapshot, silence or role wakes the task), or for the rate
        // limit above: its own deadline has passed already.
        for c in self
            .cases
            .values()
            .filter(|c| !c.paused && c.blocked.is_none())
        {
            match c.phase {
                Phase::Waiting => at(after(c.since, c.rule.after)),
                Phase::Backoff { until } | Phase::Verifying { until, .. } => at(until),
                _ => {}
            }
        }
        next
    }

    /// What the engine and the API read.
    pub fn view(&self, now: Timestamp) -> RemedyView {
        let cases = self
            .cases
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    AgentRemedy {
                        action: c.rule.action.clone(),
                        page: c.rule.page,
                        since: c.since,
                        state: c.state,
                        phase: c.phase,
                        blocked: c.blocked.clone(),
                        attempts: self
                            .incident_attempts(id, c.since)
                            .into_iter()
                            .cloned()
                            .collect(),
                        note: c.note.clone(),
                    },
                )
            })
            .collect();
        let mut attempts: Vec<Attempt> = self.log.iter().rev().cloned().collect();
        let mut open: Vec<Attempt> = self.open.values().cloned().collect();
        open.sort_by_key(|a| std::cmp::Reverse(a.id));
        attempts.splice(0..0, open);
        attempts.truncate(self.limits.history.max(1));
        RemedyView {
            taken_at: Some(now),
            dry_run: self.limits.dry_run,
            breaker_open: self.breaker_open,
            cases,
            last_action: self
                .last_action
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            reports: self
                .reports
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            attempts,
        }
    }
}

/// Why the agent's data cannot be acted on: a source of its checks is not
/// up, or a service check it depends on is not healthy.
fn blocked_by_sources(agent: &AgentView, snap: &Snapshot) -> Option<Block> {
    for check in &agent.checks {
        if let Some(source) = snap.sources.iter().find(|s| s.name == check.source)
            && source.status != SourceStatus::Up
        {
            return Some(Block::SourceDown(source.name.to_string()));
        }
        if let Some(dep) = &check.depends_on {
            let healthy = snap
                .agent(dep.as_str())
                .is_some_and(|d| d.state == State::Healthy);
            if !healthy {
                return Some(Block::Dependency(dep.to_string()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
