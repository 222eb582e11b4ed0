//! `routing:` (defaults and routes) and the `match:` of routes and
//! silences.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{RouteConfig, RoutingConfig};
use crate::config::values::{labels, valid_label_name};
use crate::config::walk::{self, Obj, Problems, index};
use crate::core::alert::{AlertKind, Matcher, Pattern};

/// Labels every alert carries besides its agent's own.
const BUILTIN_LABELS: [&str; 4] = ["alertname", "kind", "agent", "source"];

/// `routing:`. `names`: the receivers defined; `have_receivers`: whether
/// `receivers:` lists any (then alerts must go somewhere).
pub(super) fn routing(
    v: Option<&Value>,
    names: &BTreeSet<String>,
    have_receivers: bool,
    p: &mut Problems,
) -> RoutingConfig {
    let mut o = Obj::new(v, "routing", p);
    let d = RoutingConfig::default();
    let group_wait = o.duration("group_wait", p).unwrap_or(d.group_wait);
    let group_interval = o.duration("group_interval", p).unwrap_or(d.group_interval);
    let repeat_interval = o
        .positive_duration("repeat_interval", p)
        .unwrap_or(d.repeat_interval);
    let send_resolved = o.boolean("send_resolved", p).unwrap_or(d.send_resolved);
    let group_by = group_by(&mut o, p).unwrap_or_default();
    let receivers = receiver_names(&mut o, names, p);
    let routes_path = o.at("routes");
    let route_items = o.list("routes", p);
    let mut routes = Vec::new();
    for (i, item) in route_items.iter().enumerate() {
        routes.extend(route(item, &index(&routes_path, i), names, p));
    }
    if have_receivers && !o.has("receivers") && route_items.is_empty() {
        p.add(
            o.at("receivers"),
            "alerts would go nowhere: name at least one receiver",
        );
    }
    o.finish(p);
    RoutingConfig {
        group_wait,
        group_interval,
        repeat_interval,
        send_resolved,
        group_by,
        receivers,
        routes,
    }
}

/// One `routing.routes:` entry.
fn route(
    item: &Value,
    path: &str,
    names: &BTreeSet<String>,
    p: &mut Problems,
) -> Option<RouteConfig> {
    let before = p.len();
    let mut o = Obj::new(Some(item), path, p);
    let match_path = o.at("match");
    let matcher = matcher(o.get("match"), &match_path, p);
    if !o.has("receivers") {
        p.add(
            o.at("receivers"),
            "required: the receivers of the alerts this route matches",
        );
    }
    let receivers = receiver_names(&mut o, names, p);
    let continue_matching = o.boolean("continue", p).unwrap_or(false);
    let group_by = group_by(&mut o, p);
    let group_wait = o.duration("group_wait", p);
    let group_interval = o.duration("group_interval", p);
    let repeat_interval = o.positive_duration("repeat_interval", p);
    o.finish(p);
    (p.len() == before).then_some(RouteConfig {
        matcher: matcher?,
        receivers,
        continue_matching,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
    })
}

/// `receivers: [a, b]` of the routing defaults or of a route: each must be
/// defined in `receivers:`. An empty list is reported (a route must send
/// somewhere; for the defaults, leave the key out).
fn receiver_names(o: &mut Obj<'_>, names: &BTreeSet<String>, p: &mut Problems) -> Vec<String> {
    let path = o.at("receivers");
    let items: &[Value] = match o.get("receivers") {
        None => &[],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                p.add(&path, "must name at least one receiver");
            }
            items
        }
        Some(_) => {
            p.add(&path, "expected a list of receiver names, e.g. [oncall]");
            &[]
        }
    };
    let mut out: Vec<String> = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let at = index(&path, i);
        let Some(name) = walk::as_string(v, &at, p) else {
            continue;
        };
        if !names.contains(&name) {
            let defined = if names.is_empty() {
                "no receivers are defined".to_string()
            } else {
                let all: Vec<&str> = names.iter().map(String::as_str).collect();
                format!("defined: {}", all.join(", "))
            };
            p.add(&at, format!("unknown receiver `{name}` ({defined})"));
        } else if out.contains(&name) {
            p.add(&at, format!("receiver `{name}` is listed twice"));
        } else {
            out.push(name);
        }
    }
    out
}

/// `group_by: [kind, team]`; `None` when not set.
fn group_by(o: &mut Obj<'_>, p: &mut Problems) -> Option<Vec<String>> {
    let path = o.at("group_by");
    let set = o.has("group_by");
    let items = o.list("group_by", p);
    if !set {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let at = index(&path, i);
        let Some(label) = walk::as_string(v, &at, p) else {
            continue;
        };
        if !(BUILTIN_LABELS.contains(&label.as_str()) || valid_label_name(&label)) {
            p.add(
                &at,
                format!(
                    "`{label}` is not a label name (alertname, kind, agent, source, or an agent \
                     label: letters, digits and `_`, not starting with a digit or `__`)"
                ),
            );
        } else if out.contains(&label) {
            p.add(&at, format!("`{label}` is listed twice"));
        } else {
            out.push(label);
        }
    }
    Some(out)
}

/// `match:` of a route or a silence; `None` when it has a problem.
pub(super) fn matcher(v: Option<&Value>, path: &str, p: &mut Problems) -> Option<Matcher> {
    let before = p.len();
    let mut o = Obj::new(v, path, p);
    let mut m = Matcher::default();

    let kind_path = o.at("kind");
    let kinds: Vec<(String, String)> = match o.get("kind") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                p.add(
                    &kind_path,
                    "must list at least one kind (leave `kind` out to match every kind)",
                );
            }
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let at = index(&kind_path, i);
                    walk::as_string(v, &at, p).map(|s| (s, at))
                })
                .collect()
        }
        Some(v) => walk::as_string(v, &kind_path, p)
            .map(|s| vec![(s, kind_path.clone())])
            .unwrap_or_default(),
    };
    for (s, at) in kinds {
        match AlertKind::parse(&s) {
            Some(k) if !m.kind.contains(&k) => m.kind.push(k),
            Some(_) => p.add(&at, format!("`{s}` is listed twice")),
            None => {
                let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                p.add(
                    &at,
                    format!(
                        "unknown alert kind `{s}` (expected one of: {})",
                        all.join(", ")
                    ),
                );
            }
        }
    }

    m.agent = pattern(&mut o, "agent", p);
    m.source = pattern(&mut o, "source", p);

    labels(&mut o, "patterns", p, |k, v, at, p| {
        match Pattern::new(&v) {
            Ok(pat) => {
                m.labels.insert(k.to_string(), pat);
            }
            Err(e) => p.add(at, e),
        }
    });
    o.finish(p);
    (p.len() == before).then_some(m)
}

/// A glob at `key` (`trading_*`).
fn pattern(o: &mut Obj<'_>, key: &'static str, p: &mut Problems) -> Option<Pattern> {
    let s = o.string(key, p)?;
    Pattern::new(&s).map_err(|e| p.add(o.at(key), e)).ok()
}
