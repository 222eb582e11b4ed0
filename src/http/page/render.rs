//! The status page's HTML, rendered from one snapshot (with the alert
//! engine's and remediation's latest views) by maud: every interpolated
//! string is escaped, so an agent id, a reason, a pushed detail, a label or
//! a silence comment is shown as text, whatever it holds.

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::filter::{Filter, Pages, contains_ignore_case};
use super::fmt;
use crate::alerts::engine::{AlertEntry, AlertsView};
use crate::core::alert::{AlertKind, Matcher, Silence, SilenceOrigin};
use crate::core::remedy::{AgentRemedy, Phase, RemedyView};
use crate::core::snapshot::{CheckView, Entry, HISTORY_MAX, SourceStatus, SourceView};
use crate::core::{Snapshot, State, Timestamp};

/// Agents that need attention listed on one page.
pub const ATTENTION_PAGE: usize = 100;
/// Healthy agents listed on one page.
pub const HEALTHY_PAGE: usize = 50;
/// Firing alerts listed (the rest are counted, and in the API).
const ALERTS_SHOWN: usize = 50;
/// Silences listed.
const SILENCES_SHOWN: usize = 100;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What goes into a path segment as is; the rest is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':');

/// The agent's own page.
pub fn agent_href(id: &str) -> String {
    format!("/agents/{}", utf8_percent_encode(id, SEGMENT))
}

/// The symbol shown with a state's name (never colour alone).
fn symbol(s: State) -> &'static str {
    match s {
        State::Healthy => "✔",
        State::Stale => "◔",
        State::Failing => "✖",
        State::Missing => "○",
        State::Unknown => "?",
    }
}

fn badge(s: State) -> Markup {
    html! {
        span class={ "badge " (s.as_str()) } {
            span.sym aria-hidden="true" { (symbol(s)) } " " (s.as_str())
        }
    }
}

fn source_badge(s: SourceStatus) -> Markup {
    let (class, sym, text) = match s {
        SourceStatus::Up => ("healthy", "✔", "up"),
        SourceStatus::Down => ("failing", "✖", "down"),
        SourceStatus::Pending => ("unknown", "○", "pending"),
    };
    html! {
        span class={ "badge " (class) } { span.sym aria-hidden="true" { (sym) } " " (text) }
    }
}

/// A time: UTC wall time, and how long ago as of the snapshot (kept up to
/// date by the script).
fn when(t: Timestamp, now: Timestamp) -> Markup {
    let age = fmt::seconds_between(t, now);
    html! {
        time datetime=(fmt::iso(t)) title=(fmt::full(t)) { (fmt::utc(t, now)) }
        " "
        span.rel data-age=(age) { (fmt::relative(age)) }
    }
}

fn when_opt(t: Option<Timestamp>, now: Timestamp, none: &str) -> Markup {
    match t {
        Some(t) => when(t, now),
        None => html! { span.none { (none) } },
    }
}

fn labels(a: &Entry<'_>) -> Markup {
    html! {
        @if a.labels.is_empty() {
            span.none { "—" }
        } @else {
            ul.labels {
                @for (k, v) in a.labels.iter() {
                    li {
                        a href={ "/" (Filter::label_only(k, v).query(Pages::FIRST)) } { (k) "=" (v) }
                    }
                }
            }
        }
    }
}

/// The check that decides the agent's state (the first of the worst).
fn worst<'a>(a: &Entry<'a>) -> Option<(&'a CheckView, Option<Timestamp>)> {
    a.checks().rev().max_by_key(|(c, _)| c.state.severity())
}

/// The page frame: head, banner, main, footer. `key` is what the script
/// compares with the JSON it polls (`poll`) to know when to refresh.
fn layout(title: &str, poll: &str, key: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · agent-supervisor" }
                link rel="icon" href={ "/static/favicon.svg?v=" (VERSION) } type="image/svg+xml";
                link rel="stylesheet" href={ "/static/status.css?v=" (VERSION) };
                script src={ "/static/status.js?v=" (VERSION) } defer {}
            }
            body data-poll=(poll) data-key=(key) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { span.logo aria-hidden="true" { "◉" } " agent-supervisor" }
                    p #live role="status" { "Live updates on" }
                }
                main #main tabindex="-1" { (main) }
                footer {
                    "agent-supervisor " (VERSION) " · read-only · JSON: "
                    a href="/api/v1/agents" { "/api/v1/agents" } ", "
                    a href="/api/v1/sources" { "/api/v1/sources" } ", "
                    a href="/api/v1/alerts" { "/api/v1/alerts" } ", "
                    a href="/api/v1/silences" { "/api/v1/silences" }
                }
            }
        }
    }
}

/// What the status page shows, all of it as of one snapshot.
pub struct StatusPage<'a> {
    pub snap: &'a Snapshot,
    pub alerts: &'a AlertsView,
    pub remedy: &'a RemedyView,
    pub filter: &'a Filter,
    pub pages: Pages,
}

impl StatusPage<'_> {
    pub fn render(&self) -> Markup {
        let snap = self.snap;
        let now = snap.taken_at;
        let counts = snap.counts();
        let key = counts
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        // One pass over the fleet: the agents that need attention, and how
        // many healthy ones match.
        let mut attention: Vec<Entry<'_>> = Vec::new();
        let mut healthy = 0usize;
        for a in snap.iter() {
            if !self.filter.matches(a.view) {
                continue;
            }
            if a.state == State::Healthy {
                healthy += 1;
            } else {
                attention.push(a);
            }
        }
        // Worst first; by id within a state (the snapshot's order, kept by
        // a stable sort), so rows do not jump between refreshes.
        attention.sort_by_key(|a| std::cmp::Reverse(a.state.severity()));
        let main = html! {
            div #head data-live {
                h1 { "Agent status" }
                p.taken {
                    "As of " (when(now, now))
                    " · " (counted(snap.len(), "agent")) " · " (counted(snap.sources.len(), "source"))
                }
                (self.summary(&counts))
            }
            (self.filters())
            (self.attention(&attention))
            (self.healthy(healthy))
            (sources(&snap.sources, now))
            (self.alerts_section())
            (silences(&self.alerts.silences, now))
        };
        layout("Agent status", "/api/v1/agents?limit=1", &key, main)
    }

    fn summary(&self, counts: &[(State, usize); 5]) -> Markup {
        html! {
            nav.summary aria-label="Agents by state" {
                ul {
                    @for (s, n) in WORST_FIRST.iter().map(|s| (*s, count_of(counts, *s))) {
                        li {
                            a class={ "count " (s.as_str()) }
                                href={ "/" (Filter::state_only(s).query(Pages::FIRST)) }
                                aria-current=[(self.filter.state == Some(s)).then_some("true")] {
                                span.n { (n) }
                                span.what { span.sym aria-hidden="true" { (symbol(s)) } " " (s.as_str()) }
                            }
                        }
                    }
                }
            }
        }
    }

    fn filters(&self) -> Markup {
        let f = self.filter;
        html! {
            form.filters role="search" method="get" action="/" {
                div.field {
                    label for="q" { "Agent id contains" }
                    input #q type="search" name="q" value=(f.q) placeholder="e.g. trading" maxlength="256";
                }
                div.field {
                    label for="state" { "State" }
                    select #state name="state" {
                        option value="" selected[f.state.is_none()] { "any" }
                        @for s in State::ALL {
                            option value=(s.as_str()) selected[f.state == Some(s)] { (s.as_str()) }
                        }
                    }
                }
                div.field {
                    label for="source" { "Source" }
                    select #source name="source" {
                        option value="" selected[f.source.is_empty()] { "any" }
                        @for s in &self.snap.sources {
                            option value=(s.name.as_str()) selected[f.source == s.name.as_str()] { (s.name.as_str()) }
                        }
                    }
                }
                div.field {
                    label for="label" { "Label" }
                    input #label type="text" name="label" value=(f.label_text()) placeholder="team=trading" maxlength="256";
                }
                div.actions {
                    button type="submit" { "Filter" }
                    @if !f.is_empty() {
                        a href="/" { "Clear" }
                    }
                }
                @for p in &f.problems {
                    p.problem role="alert" { (p) }
                }
            }
        }
    }

    fn attention(&self, all: &[Entry<'_>]) -> Markup {
        let now = self.snap.taken_at;
        let page = clamp_page(self.pages.attention, all.len(), ATTENTION_PAGE);
        let rows = all
            .iter()
            .skip((page - 1) * ATTENTION_PAGE)
            .take(ATTENTION_PAGE);
        let showing_healthy_only = self.filter.state == Some(State::Healthy);
        Listing {
            id: "attention",
            title: "Needs attention",
            count: all.len(),
            class: "agents cards",
            columns: &[
                "State",
                "Agent",
                "Since",
                "Last seen",
                "Threshold",
                "Reason",
                "Source",
                "Labels",
            ],
            live: true,
        }
        .render(
            html! {},
            html! {
                @if showing_healthy_only { "The filter shows healthy agents only." }
                @else if self.filter.is_empty() { span.sym aria-hidden="true" { "✔" } " Every agent is healthy." }
                @else { "No agent that needs attention matches." }
            },
            html! { @for a in rows { (self.attention_row(a, now)) } },
            self.pager("ap", page, all.len(), ATTENTION_PAGE),
        )
    }

    fn attention_row(&self, a: &Entry<'_>, now: Timestamp) -> Markup {
        let check = worst(a);
        let remedy = self.remedy.cases.get(&a.id);
        html! {
            tr class=(a.state.as_str()) {
                td.st { (badge(a.state)) }
                th scope="row" { a href=(agent_href(a.id.as_str())) { (a.id.as_str()) } }
                td data-label="Since" { (when(a.since, now)) }
                td data-label="Last seen" { (when_opt(check.and_then(|(_, t)| t), now, "never")) }
                td data-label="Threshold" { (threshold_of(check)) }
                td.reason data-label="Reason" {
                    (a.reason.as_ref())
                    @if let Some(detail) = check.and_then(|(c, _)| c.status.as_ref()).filter(|s| !s.healthy && !a.reason.contains(s.detail.as_ref())) {
                        br; span.detail { (detail.detail.as_ref()) }
                    }
                    @if let Some(r) = remedy {
                        br; span.remedy { (remedy_line(r)) }
                    }
                }
                td data-label="Source" {
                    @match check {
                        Some((c, _)) => { (c.source.as_str()) }
                        None => { span.none { "—" } }
                    }
                }
                td data-label="Labels" { (labels(a)) }
            }
        }
    }

    fn healthy(&self, matching: usize) -> Markup {
        let now = self.snap.taken_at;
        let page = clamp_page(self.pages.healthy, matching, HEALTHY_PAGE);
        let skip = (page - 1) * HEALTHY_PAGE;
        let rows = html! {
                                @for a in self.snap.iter().filter(|a| a.state == State::Healthy && self.filter.matches(a.view)).skip(skip).take(HEALTHY_PAGE) {
                                    @let check = worst(&a);
                                    tr {
                                        th scope="row" { span.sym.ok aria-hidden="true" { "✔ " } a href=(agent_href(a.id.as_str())) { (a.id.as_str()) } }
                                        td data-label="Last seen" { (when_opt(check.and_then(|(_, t)| t), now, "never")) }
                                        td data-label="Threshold" { (threshold_of(check)) }
                                        td data-label="Sources" { @for (i, (c, _)) in a.checks().enumerate() { @if i > 0 { ", " } (c.source.as_str()) } }
                                        td data-label="Labels" { (labels(&a)) }
                                    }
                                }
        };
        Listing {
            id: "healthy",
            title: "Healthy",
            count: matching,
            class: "agents compact cards",
            columns: &["Agent", "Last seen", "Threshold", "Sources", "Labels"],
            live: true,
        }
        .render(
            html! {},
            html! { "No healthy agent matches." },
            rows,
            self.pager("hp", page, matching, HEALTHY_PAGE),
        )
    }

    /// Previous and next links of one list, the other list's page kept.
    fn pager(&self, which: &str, page: usize, total: usize, size: usize) -> Markup {
        let last = total.div_ceil(size).max(1);
        let to = |n: usize| {
            let mut pages = self.pages;
            if which == "ap" {
                pages.attention = n;
            } else {
                pages.healthy = n;
            }
            format!("/{}", self.filter.query(pages))
        };
        let label = if which == "ap" {
            "Pages of the agents that need attention"
        } else {
            "Pages of the healthy agents"
        };
        html! {
            @if last > 1 {
                nav.pager aria-label=(label) {
                    @if page > 1 { a rel="prev" href=(to(page - 1)) { "← Previous" } }
                    span { "Page " (page) " of " (last) " · " (((page - 1) * size) + 1) "–" ((page * size).min(total)) " of " (total) }
                    @if page < last { a rel="next" href=(to(page + 1)) { "Next →" } }
                }
            }
        }
    }

    fn alerts_section(&self) -> Markup {
        let now = self.snap.taken_at;
        let f = self.filter;
        let mut firing: Vec<&AlertEntry> = self
            .alerts
            .alerts
            .iter()
            .filter(|a| {
                let agent = a.alert.agent.as_ref().map(|a| a.as_str());
                let source = a.alert.source.as_ref().map(|s| s.as_str());
                (f.q.is_empty() || agent.is_some_and(|id| contains_ignore_case(id, &f.q)))
                    && (f.source.is_empty() || source == Some(f.source.as_str()))
            })
            .collect();
        firing.sort_by(|a, b| {
            b.alert
                .starts_at
                .cmp(&a.alert.starts_at)
                .then_with(|| a.alert.fingerprint.cmp(&b.alert.fingerprint))
        });
        let pending: usize = self.alerts.pending.values().sum();
        let waiting = html! {
            @if pending > 0 {
                p.pending {
                    "Notifications waiting to be delivered: "
                    @for (i, (receiver, n)) in self.alerts.pending.iter().filter(|(_, n)| **n > 0).enumerate() {
                        @if i > 0 { ", " } (receiver) " " (n)
                    }
                }
            }
        };
        Listing {
            id: "alerts",
            title: "Firing alerts",
            count: firing.len(),
            class: "cards",
            columns: &ALERT_COLUMNS,
            live: true,
        }
        .render(
            waiting,
            html! { "No alert is firing." },
            html! {
                @for a in firing.iter().take(ALERTS_SHOWN) {
                    (alert_row(a, &self.alerts.silences, now))
                }
            },
            html! {
                @if firing.len() > ALERTS_SHOWN {
                    p.more { "And " (firing.len() - ALERTS_SHOWN) " more: every alert is in " a href="/api/v1/alerts" { "/api/v1/alerts" } "." }
                }
            },
        )
    }
}

fn alert_kind(k: AlertKind) -> (&'static str, State) {
    match k {
        AlertKind::AgentStale => ("agent stale", State::Stale),
        AlertKind::AgentFailing => ("agent failing", State::Failing),
        AlertKind::AgentMissing => ("agent missing", State::Missing),
        AlertKind::SourceDown => ("source down", State::Failing),
    }
}

/// One firing alert; a silenced one says which silences hold it (their
/// comments).
fn alert_row(a: &AlertEntry, silences: &[Silence], now: Timestamp) -> Markup {
    let (text, state) = alert_kind(a.alert.kind);
    html! {
        tr {
            td.st { span class={ "badge " (state.as_str()) } { span.sym aria-hidden="true" { (symbol(state)) } " " (text) } }
            td data-label="Subject" {
                @if let Some(agent) = &a.alert.agent {
                    a href=(agent_href(agent.as_str())) { (agent.as_str()) }
                } @else if let Some(source) = &a.alert.source {
                    "source " (source.as_str())
                }
            }
            td data-label="Since" { (when(a.alert.starts_at, now)) }
            td.reason data-label="Summary" { (a.alert.summary) }
            td data-label="Notification" {
                @if a.silenced {
                    span.silenced { "silenced" }
                    @for s in silences.iter().filter(|s| a.silenced_by.contains(&s.id)).take(3) {
                        br; span.detail { "“" (s.comment) "”" @if !s.created_by.is_empty() { " (" (s.created_by) ")" } }
                    }
                } @else if a.receivers.is_empty() {
                    span.none { "no receiver" }
                } @else {
                    "to " (a.receivers.join(", "))
                }
            }
        }
    }
}

fn sources(list: &[SourceView], now: Timestamp) -> Markup {
    let rows = html! {
        @for s in list {
            tr {
                th scope="row" { a href={ "/" (Filter::source_only(s.name.as_str()).query(Pages::FIRST)) } { (s.name.as_str()) } }
                td data-label="Type" { (s.kind) }
                td data-label="Status" { (source_badge(s.status)) }
                td data-label="Since" { (when(s.since, now)) }
                td data-label="Last success" { (when_opt(s.last_success, now, "never")) }
                td.num data-label="Checks" { (s.checks) }
                td.reason data-label="Last error" {
                    @match &s.error {
                        Some(e) => { code { (e.kind.as_str()) } " " (e.message) }
                        None => { span.none { "—" } }
                    }
                }
            }
        }
    };
    Listing {
        id: "sources",
        title: "Sources",
        count: list.len(),
        class: "cards",
        columns: &[
            "Source",
            "Type",
            "Status",
            "Since",
            "Last success",
            "Checks",
            "Last error",
        ],
        live: true,
    }
    .render(
        html! {},
        html! { "No source is configured." },
        rows,
        html! {},
    )
}

fn matcher_text(m: &Matcher) -> String {
    let mut parts = Vec::new();
    if !m.kind.is_empty() {
        let kinds: Vec<&str> = m.kind.iter().map(|k| k.as_str()).collect();
        parts.push(format!("kind={}", kinds.join("|")));
    }
    if let Some(p) = &m.agent {
        parts.push(format!("agent={}", p.as_str()));
    }
    if let Some(p) = &m.source {
        parts.push(format!("source={}", p.as_str()));
    }
    for (k, p) in &m.labels {
        parts.push(format!("{k}={}", p.as_str()));
    }
    parts.join(" ")
}

fn silences(list: &[Silence], now: Timestamp) -> Markup {
    let mut shown: Vec<&Silence> = list.iter().filter(|s| s.ends_at > now).collect();
    shown.sort_by(|a, b| a.ends_at.cmp(&b.ends_at).then_with(|| a.id.cmp(&b.id)));
    let rows = html! {
        @for s in shown.iter().take(SILENCES_SHOWN) {
            tr {
                td data-label="Matches" { code { (matcher_text(&s.matchers)) } }
                td data-label="From" { @if s.starts_at > now { (when(s.starts_at, now)) } @else { "active" } }
                td data-label="Until" { (when(s.ends_at, now)) }
                td.reason data-label="Comment" { (s.comment) }
                td data-label="By" {
                    @if s.created_by.is_empty() { span.none { "—" } } @else { (s.created_by) }
                    " " span.origin { "(" (origin(s)) ")" }
                }
            }
        }
    };
    Listing {
        id: "silences",
        title: "Silences",
        count: shown.len(),
        class: "cards",
        columns: &["Matches", "From", "Until", "Comment", "By"],
        live: true,
    }
    .render(
        html! {},
        html! { "No silence is active or planned." },
        rows,
        html! {
            @if shown.len() > SILENCES_SHOWN {
                p.more { "And " (shown.len() - SILENCES_SHOWN) " more in " a href="/api/v1/silences" { "/api/v1/silences" } "." }
            }
        },
    )
}

/// A section holding one table: a heading with the number of rows, and
/// `empty` instead of the table when there is none.
struct Listing<'a> {
    /// The section's id (its heading's is `{id}-h`).
    id: &'a str,
    title: &'a str,
    count: usize,
    /// The table's classes.
    class: &'a str,
    columns: &'a [&'a str],
    /// Swapped in place by the live updates.
    live: bool,
}

impl Listing<'_> {
    /// `before` goes under the heading; `after` under the table.
    fn render(&self, before: Markup, empty: Markup, rows: Markup, after: Markup) -> Markup {
        let heading = format!("{}-h", self.id);
        html! {
            section id=(self.id) data-live[self.live] aria-labelledby=(heading) {
                h2 id=(heading) { (self.title) " " span.count-inline { "(" (self.count) ")" } }
                (before)
                @if self.count == 0 {
                    p.empty { (empty) }
                } @else {
                    div.scroll {
                        table class=(self.class) {
                            thead { tr { @for c in self.columns { th scope="col" { (c) } } } }
                            tbody { (rows) }
                        }
                    }
                    (after)
                }
            }
        }
    }
}

const ALERT_COLUMNS: [&str; 5] = ["Alert", "Subject", "Since", "Summary", "Notification"];

/// The summary's order: worst first, as the tables list them.
const WORST_FIRST: [State; 5] = [
    State::Failing,
    State::Stale,
    State::Missing,
    State::Unknown,
    State::Healthy,
];

fn count_of(counts: &[(State, usize); 5], state: State) -> usize {
    counts
        .iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| *n)
}

fn threshold_of(check: Option<(&CheckView, Option<Timestamp>)>) -> Markup {
    html! {
        @match check {
            Some((c, _)) => { (fmt::threshold(c.threshold_seconds)) }
            None => { span.none { "—" } }
        }
    }
}

fn origin(s: &Silence) -> &'static str {
    match s.origin {
        SilenceOrigin::Config => "config",
        SilenceOrigin::Api => "API",
    }
}

/// What remediation is doing about an agent, in a few words.
fn remedy_line(r: &AgentRemedy) -> String {
    let phase = match &r.phase {
        Phase::Waiting => "waiting to act".to_string(),
        Phase::Calling { attempt } => format!("calling, attempt {attempt}"),
        Phase::Verifying { attempt, .. } => format!("verifying attempt {attempt}"),
        Phase::Backoff { .. } => "backing off before the next attempt".to_string(),
        Phase::Reporting { attempt, .. } => format!("reporting after attempt {attempt}"),
        Phase::Done { .. } => "ended".to_string(),
    };
    let mut line = format!("Remediation ({}): {phase}", r.action);
    if let Some(b) = &r.blocked {
        line.push_str(&format!("; held: {}", b.describe()));
    }
    if let Some(note) = &r.note {
        line.push_str(&format!("; {note}"));
    }
    line
}

/// `1 agent`, `2 agents`.
fn counted(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The page a list is on, within the pages it has.
fn clamp_page(page: usize, total: usize, size: usize) -> usize {
    page.clamp(1, total.div_ceil(size).max(1))
}

/// One agent's page.
pub fn agent_page(
    a: &Entry<'_>,
    now: Timestamp,
    alerts: &AlertsView,
    remedy: &RemedyView,
) -> Markup {
    let id = a.id.as_str();
    let firing: Vec<&AlertEntry> = alerts
        .alerts
        .iter()
        .filter(|e| e.alert.agent.as_ref() == Some(&a.id))
        .collect();
    let check_rows = html! {
        @for (c, last_seen) in a.checks() {
            tr {
                th scope="row" { (c.source.as_str()) }
                td data-label="State" { (badge(c.state)) }
                td data-label="Since" { (when(c.since, now)) }
                td data-label="Last seen" { (when_opt(last_seen, now, "never")) }
                td data-label="Threshold" { (fmt::threshold(c.threshold_seconds)) }
                td.reason data-label="Reason" { @if c.reason.is_empty() { span.none { "—" } } @else { (c.reason.as_ref()) } }
                td.reason data-label="Reported status" {
                    @match &c.status {
                        Some(s) => { @if s.healthy { "healthy" } @else { "unhealthy" } @if !s.detail.is_empty() { ": " span.detail { (s.detail.as_ref()) } } }
                        None => { span.none { "—" } }
                    }
                }
                td data-label="Depends on" {
                    @match &c.depends_on {
                        Some(d) => { a href=(agent_href(d.as_str())) { (d.as_str()) } }
                        None => { span.none { "—" } }
                    }
                }
            }
        }
    };
    let checks = Listing {
        id: "checks",
        title: "Checks",
        count: a.checks.len(),
        class: "cards",
        columns: &[
            "Source",
            "State",
            "Since",
            "Last seen",
            "Threshold",
            "Reason",
            "Reported status",
            "Depends on",
        ],
        live: false,
    }
    .render(
        html! {},
        html! { "No source has reported this agent yet." },
        check_rows,
        html! {},
    );
    let firing = Listing {
        id: "agent-alerts",
        title: "Firing alerts",
        count: firing.len(),
        class: "cards",
        columns: &ALERT_COLUMNS,
        live: false,
    }
    .render(
        html! {},
        html! { "None." },
        html! { @for e in &firing { (alert_row(e, &alerts.silences, now)) } },
        html! {},
    );
    let main = html! {
        div #agent data-live {
            p.crumbs { a href="/" { "← All agents" } }
            h1 { span.id { (id) } " " (badge(a.state)) }
            p.taken { "As of " (when(now, now)) }
            dl.facts {
                dt { "State" } dd { (badge(a.state)) " since " (when(a.since, now)) }
                dt { "Reason" } dd { @if a.reason.is_empty() { span.none { "—" } } @else { (a.reason.as_ref()) } }
                dt { "Expected" } dd { @if a.expected { "yes (listed in the config: missing if never seen)" } @else { "no" } }
                dt { "Labels" } dd { (labels(a)) }
                @if let Some(r) = remedy.cases.get(&a.id) {
                    dt { "Remediation" } dd { (remedy_line(r)) }
                }
                @if let Some(r) = remedy.reports.get(&a.id) {
                    dt { "Last report" } dd { (r.action) " " (when(r.at, now)) @if let Some(s) = r.status { " · HTTP " (s) } br; span.detail { (r.body) } }
                }
            }
            (checks)
            section aria-labelledby="history-h" {
                h2 #history-h { "Transitions" }
                @match a.transitions() {
                    [] => { p.empty { "No transition since its first verdict." } }
                    h => {
                        p.hint { "Oldest first; the last " (HISTORY_MAX) " are kept." }
                        ol.history {
                            @for t in h {
                                li { (badge(t.state)) " " (when(t.at, now)) }
                            }
                        }
                    }
                }
            }
            (firing)
            p.json { "As JSON: " a href={ "/api/v1" (agent_href(id)) } { "/api/v1" (agent_href(id)) } }
        }
    };
    layout(
        id,
        &format!("/api/v1{}", agent_href(id)),
        a.state.as_str(),
        main,
    )
}

/// An agent the snapshot does not have.
pub fn unknown_agent(id: &str) -> Markup {
    let main = html! {
        div #agent data-live {
            p.crumbs { a href="/" { "← All agents" } }
            h1 { "No agent “" span.id { (id) } "”" }
            p { "The sidecar does not know this agent (yet, or any more: agents without data for "
                code { "forget_after" } " are forgotten)." }
        }
    };
    layout("Unknown agent", "", "", main)
}
