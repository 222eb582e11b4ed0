//! `actions:` (named HTTP calls to the watched service's admin endpoints),
//! `remediation:` (what holds for every automatic call) and the
//! `remediate:` block of an agent rule.
//!
//! Everything an action needs at 3 a.m. is checked here: the URL (http or
//! https, its placeholders), the headers, the body template (it must render
//! with the variables a call gives it, and render JSON unless a
//! `Content-Type` says otherwise), the expected statuses, the timeout; a
//! rule's action and report must exist, and the URL's label placeholders
//! must be labels the rule gives its agents.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::values::{self, check_http_scheme};
use super::walk::{Obj, Problems, index};
use crate::core::remedy::{Limits, PageMode, RemedyRule};
use crate::core::{Labels, State};
use crate::secret::SecretUrl;
use crate::template::Template;

/// The longest an action may take: a manual call's API request waits for it.
pub const MAX_ACTION_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to a rule's computed page hold (scheduling, the rate limit).
const HOLD_MARGIN: Duration = Duration::from_secs(10);
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// What an action's body template may read ([`body_context`]).
pub const BODY_VARIABLES: [&str; 7] = [
    "agent", "labels", "state", "reason", "since", "action", "attempt",
];

/// One `actions:` entry.
#[derive(Clone, Debug)]
pub struct ActionConfig {
    pub name: String,
    pub method: reqwest::Method,
    pub url: ActionUrl,
    /// Values are secrets (tokens): never printed.
    pub headers: Vec<(String, SecretString)>,
    pub body: Option<Template>,
    /// The body is JSON (no `Content-Type` header, or a JSON one).
    pub json_body: bool,
    pub timeout: Duration,
    /// Statuses that mean the call worked; empty: any 2xx.
    pub expect: Vec<u16>,
}

impl ActionConfig {
    pub fn expects(&self, status: u16) -> bool {
        if self.expect.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect.contains(&status)
        }
    }
}

/// An action's URL with `{agent}` and `{<label>}` placeholders, each value
/// percent-encoded when filled in. It may hold a credential: shown
/// redacted.
#[derive(Clone)]
pub struct ActionUrl {
    template: SecretString,
    redacted: String,
    /// Placeholder names, `agent` included, in order.
    pub placeholders: Vec<String>,
}

impl ActionUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut placeholders = Vec::new();
        let mut probe = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            probe.push_str(&rest[..open]);
            let after_open = &rest[open + 1..];
            let close = after_open
                .find('}')
                .ok_or_else(|| "a `{` without its `}`".to_string())?;
            let name = &after_open[..close];
            if name != "agent" && !values::valid_label_name(name) {
                return Err(format!(
                    "`{{{name}}}` is not a placeholder: use {{agent}} or {{<label name>}}"
                ));
            }
            placeholders.push(name.to_string());
            probe.push('x');
            rest = &after_open[close + 1..];
        }
        probe.push_str(rest);
        let url = SecretUrl::parse(&probe)?;
        check_http_scheme(&url)?;
        // Shown as written (placeholders and all) unless it holds a
        // credential: then redacted, its placeholders shown as `x`.
        let redacted = if url.password_forms().is_empty() {
            s.to_string()
        } else {
            url.redacted().to_string()
        };
        Ok(Self {
            template: SecretString::from(s.to_string()),
            redacted,
            placeholders,
        })
    }

    /// The URL for one agent: `{agent}` its id, `{<label>}` its label (empty
    /// when it has none), each percent-encoded, `/` included: a value is
    /// one path segment. Agent ids come from outside (keys, rows, pushes),
    /// so `.` and `..`, which URL parsing would resolve as dot segments
    /// (`/admin/agents/../restart` is `/admin/restart`), are refused.
    pub fn fill(&self, agent: &str, labels: &Labels) -> Result<String, String> {
        let mut out = self.template.expose_secret().to_string();
        for name in &self.placeholders {
            let value = if name == "agent" {
                agent
            } else {
                labels.get(name).map(String::as_str).unwrap_or("")
            };
            if value == "." || value == ".." {
                return Err(format!(
                    "`{value}` cannot fill {{{name}}}: it would be a dot segment of the URL's path"
                ));
            }
            let encoded = percent_encoding::utf8_percent_encode(value, SEGMENT).to_string();
            out = out.replacen(&format!("{{{name}}}"), &encoded, 1);
        }
        Ok(out)
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// What a path segment or query value may hold as is.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl fmt::Debug for ActionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted)
    }
}

/// `actions:` and `remediation:`.
#[derive(Clone, Debug, Default)]
pub struct RemediationConfig {
    pub actions: Vec<ActionConfig>,
    pub limits: Limits,
}

impl RemediationConfig {
    pub fn action(&self, name: &str) -> Option<&ActionConfig> {
        self.actions.iter().find(|a| a.name == name)
    }
}

/// The variables a body template renders with.
pub fn body_context(
    agent: &str,
    labels: &Labels,
    state: &str,
    reason: &str,
    since: &str,
    action: &str,
    attempt: u32,
) -> Value {
    json!({
        "agent": agent,
        "labels": labels,
        "state": state,
        "reason": reason,
        "since": since,
        "action": action,
        "attempt": attempt,
    })
}

/// Render an action's body for a call; an error is a failed attempt.
pub fn render_body(action: &ActionConfig, ctx: &Value) -> Result<Option<String>, String> {
    let Some(t) = &action.body else {
        return Ok(None);
    };
    let body = t.render(ctx).map_err(|e| format!("body template: {e}"))?;
    if action.json_body
        && let Err(e) = serde_json::from_str::<Value>(&body)
    {
        return Err(format!(
            "the body template's output is not JSON ({e}); pass values through `|tojson`"
        ));
    }
    Ok(Some(body))
}

/// `actions:` and `remediation:` of the root.
pub(super) fn parse(root: &mut Obj<'_>, p: &mut Problems) -> RemediationConfig {
    let mut actions: Vec<ActionConfig> = Vec::new();
    for (i, item) in root.list("actions", p).iter().enumerate() {
        let path = index("actions", i);
        if let Some(a) = action(item, &path, p) {
            if actions.iter().any(|x| x.name == a.name) {
                p.add(
                    format!("{path}.name"),
                    format!("another action is named `{}`", a.name),
                );
                continue;
            }
            actions.push(a);
        }
    }
    let limits = {
        let mut o = Obj::new(root.get("remediation"), "remediation", p);
        let base = Limits::default();
        let l = Limits {
            dry_run: o.boolean("dry_run", p).unwrap_or(base.dry_run),
            max_per_minute: o
                .integer("max_per_minute", 1..=10_000, p)
                .map(|n| n as u32)
                .unwrap_or(base.max_per_minute),
            max_agents: o
                .integer("max_agents", 1..=100_000, p)
                .map(|n| n as usize)
                .unwrap_or(base.max_agents),
            history: o
                .integer("history", 1..=10_000, p)
                .map(|n| n as usize)
                .unwrap_or(base.history),
        };
        o.finish(p);
        l
    };
    RemediationConfig { actions, limits }
}

fn action(item: &Value, path: &str, p: &mut Problems) -> Option<ActionConfig> {
    let mut o = Obj::new(Some(item), path, p);
    let name = values::name(&mut o, p);
    let method = match o.string("method", p) {
        None => Some(reqwest::Method::POST),
        Some(m) => {
            let upper = m.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                reqwest::Method::from_bytes(upper.as_bytes()).ok()
            } else {
                p.add(
                    o.at("method"),
                    format!("expected one of {}", METHODS.join(", ")),
                );
                None
            }
        }
    };
    let url = o
        .required_string("url", p)
        .and_then(|s| ActionUrl::parse(&s).map_err(|e| p.add(o.at("url"), e)).ok());
    let headers = values::headers(&mut o, p);
    let json_body = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .is_none_or(|(_, v)| v.expose_secret().to_ascii_lowercase().contains("json"));
    let body = o
        .string("body", p)
        .filter(|b| !b.trim().is_empty())
        .and_then(|b| {
            Template::compile_strict(&b)
                .map_err(|e| p.add(o.at("body"), format!("not a valid template: {e}")))
                .ok()
        });
    if let Some(t) = &body {
        let unknown: Vec<String> = t
            .variables()
            .into_iter()
            .filter(|v| !BODY_VARIABLES.contains(&v.as_str()))
            .collect();
        if !unknown.is_empty() {
            p.add(
                o.at("body"),
                format!(
                    "the template reads {}, not a variable of an action's body ({})",
                    unknown.join(", "),
                    BODY_VARIABLES.join(", ")
                ),
            );
        }
    }
    let timeout = o.positive_duration("timeout", p).unwrap_or(DEFAULT_TIMEOUT);
    if timeout > MAX_ACTION_TIMEOUT {
        p.add(
            o.at("timeout"),
            format!(
                "at most {} (a call that takes longer is hung)",
                humantime::format_duration(MAX_ACTION_TIMEOUT)
            ),
        );
    }
    let mut expect = Vec::new();
    let expect_path = o.at("expect");
    match o.get("expect") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                match v.as_u64().filter(|n| (100..=599).contains(n)) {
                    Some(n) => expect.push(n as u16),
                    None => p.add(
                        index(&expect_path, i),
                        "expected an HTTP status (100 to 599)",
                    ),
                }
            }
            if items.is_empty() {
                p.add(&expect_path, "must not be empty (leave it out for any 2xx)");
            }
        }
        Some(_) => p.add(&expect_path, "expected a list of HTTP statuses"),
    }
    o.finish(p);
    let action = ActionConfig {
        name: name?,
        method: method?,
        url: url?,
        headers,
        body,
        json_body,
        timeout,
        expect,
    };
    // An action run by hand may be given any agent: it must render with
    // no labels at all unless a rule gives them (checked per rule too).
    if action.body.is_some()
        && !p.is_reported(&format!("{path}.body"))
        && let Err(e) = try_render(&action, &Labels::new())
        && !e.contains("undefined")
    {
        p.add(format!("{path}.body"), e);
    }
    Some(action)
}

/// Render `action`'s body with example values and `labels`.
fn try_render(action: &ActionConfig, labels: &Labels) -> Result<(), String> {
    // Outside text with quotes: a template that embeds values without
    // `|tojson` breaks on it here, not when an agent id carries them.
    let ctx = body_context(
        "example \"agent\" <1>",
        labels,
        "stale",
        "no heartbeat for 1m 30s (threshold 60s): \"quoted\"\n",
        "2026-01-01T00:00:00Z",
        &action.name,
        1,
    );
    render_body(action, &ctx).map(|_| ())
}

/// `remediate:` of the agent rule at `path`, checked against the actions.
pub(super) fn remedy(
    o: &mut Obj<'_>,
    labels: &Labels,
    remediation: &RemediationConfig,
    p: &mut Problems,
) -> Option<RemedyRule> {
    let v = o.get("remediate")?;
    let path = o.at("remediate");
    let mut r = Obj::new(Some(v), &path, p);
    let action_name = r.required_string("action", p);
    let action = action_name.as_deref().and_then(|name| {
        let found = remediation.action(name);
        if found.is_none() {
            p.add(r.at("action"), unknown_action(name, remediation));
        }
        found
    });
    let on_path = r.at("on");
    let on = match r.get("on") {
        None => vec![State::Stale],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut on = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some("stale") => on.push(State::Stale),
                    Some("failing") => on.push(State::Failing),
                    Some("missing") => on.push(State::Missing),
                    _ => p.add(index(&on_path, i), "expected stale, failing or missing"),
                }
            }
            on
        }
        Some(_) => {
            p.add(
                &on_path,
                "expected a list of states: stale, failing, missing",
            );
            Vec::new()
        }
    };
    let after = r.duration("after", p).unwrap_or(Duration::from_secs(10));
    let max_attempts = r.integer("max_attempts", 1..=10, p).unwrap_or(2) as u32;
    let window = r
        .positive_duration("window", p)
        .unwrap_or(Duration::from_secs(3600));
    let backoff = r
        .positive_duration("backoff", p)
        .unwrap_or(Duration::from_secs(10));
    let verify_within = r
        .positive_duration("verify_within", p)
        .unwrap_or(Duration::from_secs(30));
    let page = match r.string("page", p).as_deref() {
        None | Some("after_remediation") => Some(PageMode::AfterRemediation),
        Some("at_once") => Some(PageMode::AtOnce),
        Some(_) => {
            p.add(r.at("page"), "expected after_remediation or at_once");
            None
        }
    };
    let report_name = r.string("report", p);
    let report = report_name.as_deref().and_then(|name| {
        let found = remediation.action(name);
        match found {
            None => p.add(r.at("report"), unknown_action(name, remediation)),
            Some(a) if a.method != reqwest::Method::GET => p.add(
                r.at("report"),
                format!(
                    "a report is read with GET; action `{name}` uses {}",
                    a.method
                ),
            ),
            Some(_) => {}
        }
        found
    });
    r.finish(p);
    let report_too = report.filter(|r| Some(&r.name) != action_name.as_ref());
    for a in action.iter().chain(report_too.iter()) {
        let at = if Some(&a.name) == report_name.as_ref() && action_name.as_ref() != Some(&a.name) {
            format!("{path}.report")
        } else {
            format!("{path}.action")
        };
        for name in a.url.placeholders.iter().filter(|n| *n != "agent") {
            if !labels.contains_key(name) {
                p.add(
                    &at,
                    format!(
                        "action `{}`'s url uses {{{name}}}, a label this rule does not set",
                        a.name
                    ),
                );
            }
        }
        if a.body.is_some()
            && let Err(e) = try_render(a, labels)
        {
            p.add(&at, format!("action `{}`: {e}", a.name));
        }
    }
    let action = action?;
    let report_timeout = report.map(|r| r.timeout).unwrap_or_default();
    let rule = RemedyRule {
        action: action.name.clone(),
        on,
        after,
        max_attempts,
        window,
        backoff,
        verify_within,
        page: page?,
        report: report.map(|r| r.name.clone()),
        hold_max: Duration::ZERO,
    };
    let tries = (action.timeout + verify_within).saturating_mul(max_attempts);
    let backoffs: Duration = (1..max_attempts).map(|n| rule.backoff_after(n)).sum();
    let hold_max = after + tries + backoffs + report_timeout + HOLD_MARGIN;
    Some(RemedyRule { hold_max, ..rule })
}

fn unknown_action(name: &str, remediation: &RemediationConfig) -> String {
    let known: Vec<&str> = remediation
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    if known.is_empty() {
        format!("no action named `{name}`: `actions:` defines none")
    } else {
        format!("no action named `{name}` (actions: {})", known.join(", "))
    }
}

/// Paths of the keys a `Sections::SourcesOnly` config leaves out.
pub(super) fn strip_remediate(tree: &mut Value) {
    if let Some(Value::Array(rules)) = tree.get_mut("agents") {
        for rule in rules {
            if let Value::Object(m) = rule {
                m.remove("remediate");
            }
        }
    }
}
