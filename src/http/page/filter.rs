//! The status page's query: search, filters and pages, read leniently
//! (a form sends empty fields; a bad value is shown, not a 400) and written
//! back into links, so that a filtered view is a link to share.

use serde::Deserialize;

use crate::core::State;
use crate::core::snapshot::AgentView;

/// Longest search, source or label text kept (characters).
const MAX_TEXT: usize = 256;

/// `GET /` as the browser sends it: every field optional, empty is unset.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    /// Part of an agent id, any case.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// `key=value`, or `key` for any value.
    #[serde(default)]
    pub label: Option<String>,
    /// Page of the agents that need attention, from 1.
    #[serde(default)]
    pub ap: Option<String>,
    /// Page of the healthy agents, from 1.
    #[serde(default)]
    pub hp: Option<String>,
}

/// Which agents the page lists.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    pub q: String,
    pub state: Option<State>,
    pub source: String,
    /// The label's key and, unless any value goes, its value.
    pub label: Option<(String, Option<String>)>,
    /// Values that could not be used, said on the page.
    pub problems: Vec<String>,
}

/// The page of each list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pages {
    pub attention: usize,
    pub healthy: usize,
}

/// `s`, trimmed and cut to [`MAX_TEXT`] characters.
fn text(s: Option<&str>) -> String {
    s.unwrap_or_default()
        .trim()
        .chars()
        .take(MAX_TEXT)
        .collect()
}

impl Pages {
    pub const FIRST: Pages = Pages {
        attention: 1,
        healthy: 1,
    };
}

fn page(s: Option<&str>) -> usize {
    s.and_then(|p| p.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

impl Filter {
    pub fn parse(raw: &RawQuery) -> (Filter, Pages) {
        let mut f = Filter {
            q: text(raw.q.as_deref()),
            source: text(raw.source.as_deref()),
            ..Filter::default()
        };
        let state = text(raw.state.as_deref());
        if !state.is_empty() {
            match State::ALL.into_iter().find(|s| s.as_str() == state) {
                Some(s) => f.state = Some(s),
                None => f.problems.push(format!("there is no state “{state}”")),
            }
        }
        let label = text(raw.label.as_deref());
        if !label.is_empty() {
            f.label = Some(match label.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (label, None),
            });
        }
        let pages = Pages {
            attention: page(raw.ap.as_deref()),
            healthy: page(raw.hp.as_deref()),
        };
        (f, pages)
    }

    /// Only agents in `state`.
    pub fn state_only(state: State) -> Filter {
        Filter {
            state: Some(state),
            ..Filter::default()
        }
    }

    /// Only agents with a check of `source`.
    pub fn source_only(source: &str) -> Filter {
        Filter {
            source: source.to_string(),
            ..Filter::default()
        }
    }

    /// Only agents labelled `key=value`.
    pub fn label_only(key: &str, value: &str) -> Filter {
        Filter {
            label: Some((key.to_string(), Some(value.to_string()))),
            ..Filter::default()
        }
    }

    /// Whether nothing narrows the list.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty() && self.state.is_none() && self.source.is_empty() && self.label.is_none()
    }

    pub fn matches(&self, a: &AgentView) -> bool {
        self.state.is_none_or(|s| a.state == s)
            && (self.q.is_empty() || contains_ignore_case(a.id.as_str(), &self.q))
            && (self.source.is_empty() || a.checks.iter().any(|c| c.source.as_str() == self.source))
            && self.label.as_ref().is_none_or(|(k, v)| {
                a.labels
                    .get(k)
                    .is_some_and(|have| v.as_ref().is_none_or(|v| have == v))
            })
    }

    /// The query string of this filter with these pages (`?q=...`), or
    /// an empty string when there is nothing to say.
    pub fn query(&self, pages: Pages) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            out.append_pair("q", &self.q);
        }
        if let Some(s) = self.state {
            out.append_pair("state", s.as_str());
        }
        if !self.source.is_empty() {
            out.append_pair("source", &self.source);
        }
        if let Some((k, v)) = &self.label {
            match v {
                Some(v) => out.append_pair("label", &format!("{k}={v}")),
                None => out.append_pair("label", k),
            };
        }
        if pages.attention > 1 {
            out.append_pair("ap", &pages.attention.to_string());
        }
        if pages.healthy > 1 {
            out.append_pair("hp", &pages.healthy.to_string());
        }
        let q = out.finish();
        if q.is_empty() { q } else { format!("?{q}") }
    }

    /// The label filter as typed (`team=trading`).
    pub fn label_text(&self) -> String {
        match &self.label {
            Some((k, Some(v))) => format!("{k}={v}"),
            Some((k, None)) => k.clone(),
            None => String::new(),
        }
    }
}

/// Whether `needle` is in `hay`, ASCII letters in any case; without
/// allocating (it runs over the whole fleet).
pub fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::core::Labels;

    fn raw(pairs: &[(&str, &str)]) -> RawQuery {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        serde_urlencoded_like(&q)
    }

    /// What axum's `Query` does with a query string.
    fn serde_urlencoded_like(q: &str) -> RawQuery {
        let uri: axum::http::Uri = format!("/?{q}").parse().unwrap();
        axum::extract::Query::<RawQuery>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    fn agent(id: &str, state: State, team: &str) -> AgentView {
        let mut a = AgentView::with_one_check(id, state, "redis", team, Utc::now());
        a.labels = Arc::new(Labels::from([("team".to_string(), team.to_string())]));
        a
    }

    #[test]
    fn empty_form_fields_filter_nothing() {
        let (f, pages) = Filter::parse(&raw(&[
            ("q", ""),
            ("state", ""),
            ("source", " "),
            ("label", ""),
        ]));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(
            pages,
            Pages {
                attention: 1,
                healthy: 1
            }
        );
        assert_eq!(f.query(pages), "");
    }

    #[test]
    fn search_is_a_part_of_the_id_in_any_case() {
        let (f, _) = Filter::parse(&raw(&[("q", "Trading")]));
        assert!(f.matches(&agent("trading_coordinator", State::Stale, "t")));
        assert!(f.matches(&agent("risk:TRADING", State::Stale, "t")));
        assert!(!f.matches(&agent("market_analyst", State::Stale, "t")));
    }

    #[test]
    fn state_source_and_label_narrow_together() {
        let (f, _) = Filter::parse(&raw(&[
            ("state", "stale"),
            ("source", "redis"),
            ("label", "team=trading"),
        ]));
        assert!(f.matches(&agent("a", State::Stale, "trading")));
        assert!(!f.matches(&agent("a", State::Healthy, "trading")));
        assert!(!f.matches(&agent("a", State::Stale, "risk")));
        let (by_key, _) = Filter::parse(&raw(&[("label", "team")]));
        assert!(by_key.matches(&agent("a", State::Stale, "risk")));
        let (other_source, _) = Filter::parse(&raw(&[("source", "push")]));
        assert!(!other_source.matches(&agent("a", State::Stale, "risk")));
    }

    #[test]
    fn a_bad_state_or_page_is_said_not_refused() {
        let (f, pages) = Filter::parse(&raw(&[("state", "<b>"), ("ap", "x"), ("hp", "0")]));
        assert_eq!(f.state, None);
        assert_eq!(f.problems.len(), 1);
        assert_eq!(
            pages,
            Pages {
                attention: 1,
                healthy: 1
            }
        );
    }

    #[test]
    fn the_query_round_trips_for_shared_links() {
        let (f, pages) = Filter::parse(&raw(&[
            ("q", "a&b=c"),
            ("state", "failing"),
            ("label", "team=x y"),
            ("hp", "3"),
        ]));
        let q = f.query(pages);
        let (again, again_pages) = Filter::parse(&serde_urlencoded_like(&q[1..]));
        assert_eq!(again, f);
        assert_eq!(again_pages, pages);
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(10_000);
        let (f, _) = Filter::parse(&raw(&[("q", &long)]));
        assert_eq!(f.q.len(), MAX_TEXT);
    }
}
