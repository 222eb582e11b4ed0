//! A small walker over the parsed YAML tree that records every problem with
//! its path instead of stopping at the first one (serde's derive stops at the
//! first error, and operators fixing a config want the whole list at once).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value};

/// One problem in the config, with its place (`sources[1].url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects problems, and the values already reported (a `${VAR}` that
/// could not be substituted): reading one of those yields nothing and no
/// second problem, so each mistake is reported once.
#[derive(Default, Debug)]
pub struct Problems {
    pub list: Vec<Problem>,
    reported: BTreeSet<String>,
}

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Report the value at `path`, which is then left alone by every later
    /// check.
    pub fn add_value(&mut self, path: &str, message: impl Into<String>) {
        self.reported.insert(path.to_string());
        self.add(path, message);
    }

    /// Whether the value at `path` has been reported already.
    pub fn is_reported(&self, path: &str) -> bool {
        self.reported.contains(path)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Order the problems as the file reads: by section (`sections` in the
    /// order they were read, others after), then by entry (`sources[2]`
    /// after `sources[1]`). Within one entry the order found is kept, so
    /// a `${VAR}` problem (found first) comes before that entry's others.
    pub fn order(&mut self, sections: &[&str]) {
        self.list.sort_by_key(|p| {
            let end = p.path.find(['.', '[']).unwrap_or(p.path.len());
            let (section, rest) = p.path.split_at(end);
            let rank = sections
                .iter()
                .position(|s| *s == section)
                .unwrap_or(sections.len());
            let entry = rest
                .strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|n| n.parse::<usize>().ok());
            (rank, entry)
        });
    }
}

/// The longest duration a config may give: past it, time arithmetic
/// (deadlines, backoffs, holds) could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A mapping being read. Every key read is marked; [`Obj::finish`] reports
/// the others as unknown.
pub struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Obj<'a> {
    /// `None` (absent or null) reads as an empty mapping.
    pub fn new(v: Option<&'a Value>, path: &str, p: &mut Problems) -> Obj<'a> {
        let map = match v {
            None | Some(Value::Null) => &*EMPTY,
            Some(Value::Object(m)) => m,
            Some(other) => {
                p.add(
                    path,
                    format!("expected a mapping, found {}", type_name(other)),
                );
                &*EMPTY
            }
        };
        Obj {
            path: path.to_string(),
            map,
            known: Vec::new(),
        }
    }

    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key` (null counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// The value of `key` unless it is absent or was reported already.
    pub fn value(&mut self, key: &'static str, p: &Problems) -> Option<&'a Value> {
        let v = self.get(key)?;
        (!p.is_reported(&self.at(key))).then_some(v)
    }

    pub fn string(&mut self, key: &'static str, p: &mut Problems) -> Option<String> {
        let path = self.at(key);
        self.get(key).and_then(|v| as_string(v, &path, p))
    }

    pub fn required_string(&mut self, key: &'static str, p: &mut Problems) -> Option<String> {
        if !self.has(key) {
            self.known.push(key);
            p.add(self.at(key), "required");
            return None;
        }
        self.string(key, p)
    }

    pub fn duration(&mut self, key: &'static str, p: &mut Problems) -> Option<Duration> {
        let path = self.at(key);
        self.get(key).and_then(|v| as_duration(v, &path, p))
    }

    /// A duration that must be greater than zero.
    pub fn positive_duration(&mut self, key: &'static str, p: &mut Problems) -> Option<Duration> {
        let d = self.duration(key, p)?;
        if d.is_zero() {
            p.add(self.at(key), "must be greater than zero");
            return None;
        }
        Some(d)
    }

    pub fn boolean(&mut self, key: &'static str, p: &mut Problems) -> Option<bool> {
        let path = self.at(key);
        match self.value(key, p)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            other => {
                p.add(
                    path,
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An integer in `range`.
    pub fn integer(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        p: &mut Problems,
    ) -> Option<u64> {
        let path = self.at(key);
        let v = self.value(key, p)?;
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                p.add(
                    path,
                    format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    pub fn list(&mut self, key: &'static str, p: &mut Problems) -> &'a [Value] {
        let path = self.at(key);
        match self.get(key) {
            None => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                p.add(path, format!("expected a list, found {}", type_name(other)));
                &[]
            }
        }
    }

    /// The keys read so far, in the order they were read.
    pub fn read_order(&self) -> &[&'static str] {
        &self.known
    }

    /// Report keys that were never read.
    pub fn finish(self, p: &mut Problems) {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        let mut expected = self.known.clone();
        expected.sort();
        expected.dedup();
        for k in unknown {
            p.add(
                join(&self.path, k),
                format!("unknown key (expected one of: {})", expected.join(", ")),
            );
        }
    }
}

pub fn as_string(v: &Value, path: &str, p: &mut Problems) -> Option<String> {
    if p.is_reported(path) {
        return None;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            p.add(
                path,
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    }
}

pub fn as_duration(v: &Value, path: &str, p: &mut Problems) -> Option<Duration> {
    if p.is_reported(path) {
        return None;
    }
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.as_u64() == Some(0) => return Some(Duration::ZERO),
        Value::Number(n) => {
            p.add(
                path,
                format!("a duration needs a unit: write `{n}s` for seconds"),
            );
            return None;
        }
        other => {
            p.add(
                path,
                format!(
                    "expected a duration like 500ms, 30s or 5m, found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    match humantime::parse_duration(&s) {
        Ok(d) if d > MAX_DURATION => {
            p.add(
                path,
                format!("`{s}` is longer than any duration here may be (100 years)"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            p.add(
                path,
                format!("`{s}` is not a duration ({e}); write e.g. 500ms, 30s or 5m"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_all_reported_with_their_path() {
        let v = json!({"a": 1, "zz": 2, "yy": 3});
        let mut p = Problems::default();
        let mut o = Obj::new(Some(&v), "root", &mut p);
        let _ = o.get("a");
        o.finish(&mut p);
        let paths: Vec<_> = p.list.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(paths, vec!["root.yy", "root.zz"]);
    }

    #[test]
    fn bare_number_duration_asks_for_a_unit() {
        let mut p = Problems::default();
        assert_eq!(as_duration(&json!(30), "x", &mut p), None);
        assert!(p.list[0].message.contains("30s"));
        assert_eq!(
            as_duration(&json!("1m 30s"), "x", &mut p),
            Some(Duration::from_secs(90))
        );
    }
}
