//! `agents:`: rules that give matching agents their threshold, labels,
//! `expected`, `for` and `remediate`.

use serde_json::Value;

use super::actions::{self, RemediationConfig};
use super::values;
use super::walk::{Obj, Problems};
use crate::core::{AgentRule, Labels};

/// One `agents:` entry; its `remediate:` names actions of `remediation`.
pub(super) fn rule(
    item: &Value,
    path: &str,
    remediation: &RemediationConfig,
    p: &mut Problems,
) -> Option<AgentRule> {
    let mut o = Obj::new(Some(item), path, p);
    let pattern = o.required_string("match", p);
    let stale_after = o.positive_duration("stale_after", p);
    let expected = o.boolean("expected", p).unwrap_or(false);
    let alert_for = o.duration("for", p);
    let mut labels = Labels::new();
    values::labels(&mut o, "values", p, |k, v, at, p| {
        if k == "agent" {
            p.add(at, "`agent` is set by agent-supervisor itself");
        }
        labels.insert(k.to_string(), v);
    });
    let remedy = actions::remedy(&mut o, &labels, remediation, p);
    o.finish(p);
    let pattern = pattern?;
    let rule = match AgentRule::new(&pattern, stale_after, labels, expected) {
        Ok(rule) => rule.with_alert_for(alert_for).with_remediation(remedy),
        Err(e) => {
            p.add(
                format!("{path}.match"),
                format!("not a valid glob: {}", e.kind()),
            );
            return None;
        }
    };
    if expected && !crate::core::policy::is_literal_pattern(&pattern) {
        p.add(
            format!("{path}.expected"),
            "expected: true needs a literal agent id in `match`, not a glob",
        );
    }
    Some(rule)
}
