//! agent-supervisor watches the logical agents living inside a service and
//! reports, promptly and truthfully, when one of them has silently stopped.
//!
//! # Layout
//!
//! The code follows the data: sources → core → sinks. Lower modules never
//! import higher ones (a test checks the module graph has no cycle).
//!
//! - [`config`]: `config.yaml` parsed into typed values, every problem
//!   collected with its path: the walker (`walk`), `${VAR}` substitution
//!   (`env`), one converter per source type (`sources/`), agent rules
//!   (`agents`), alerting (`alerting/`), and the JSON Schema (`schema`).
//! - [`core`]: the pure decisions, with `now` passed in and no I/O crate.
//!   The [`core::Supervisor`] (`supervisor/`: sources' health, readings and
//!   deadlines, dependency holds, re-reads, agents, persistence, the view)
//!   owns every agent, check and source state; [`core::alert`] is the alert
//!   data model; `timestamp` parses every heartbeat format.
//! - [`sources`]: one folder or file per external system (`redis/`,
//!   `postgres/`, `http`, `push`), what they share (`common`) and the loop
//!   that drives a polled source (`run`); they read and translate into
//!   observations, never decide.
//! - [`driver`]: the single task that owns the supervisor, wakes it at its
//!   next deadline and hands its output to the sinks.
//! - [`sinks`]: the `/metrics` encoder and the state store.
//! - [`actions`]: remediation: the task that calls the service's admin
//!   endpoints when the core's remediation state asks, and runs manual
//!   calls.
//! - [`alerts`]: alert notifications: the book (grouping, silences), the
//!   engine task, the durable outbox, rendering per receiver type, signed
//!   delivery, the alerts API.
//! - [`http`]: the sidecar's HTTP servers: the read listener (metrics,
//!   probes, JSON API, the status page: `page/`, its filters, times and
//!   maud templates, its CSS and script embedded) and the admin listener
//!   (the same, push, silence writes), with their limits (`serve`).
//! - [`app`]: builds everything from a config (`App::build`) and runs it
//!   until cancelled (`tasks`: supervised tasks; `state`: the state writer).
//! - [`scan`]: the one-shot `scan` command.
//! - [`telemetry`]: the metrics registry and logging set-up.
//! - `fuzzing`: the entry points of the fuzz targets (`fuzz/`), replayed
//!   by `cargo test`.
//! - [`auth`], [`clock`], [`liveness`], [`secret`], [`template`]: small
//!   shared pieces (`auth`, `secret` and `template` import nothing of ours).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod actions;
pub mod alerts;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod core;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod http;
pub mod liveness;
pub mod scan;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod template;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// The top-level module a file belongs to (`src/config/sources/redis.rs`
    /// → `config`).
    fn module_of(src: &Path, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        Some(first.trim_end_matches(".rs").to_string())
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Which top-level modules each one names (`crate::x`), outside test
    /// code.
    fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let Some(from) = module_of(&src, &file) else {
                continue;
            };
            if from == "lib" || from == "main" || file.ends_with("tests.rs") {
                continue;
            }
            for path in crate::core::tests::paths_named(&file) {
                if let Some(to) = path.strip_prefix("crate::") {
                    let to = to.split("::").next().unwrap_or_default().to_string();
                    if to != from && !to.is_empty() {
                        graph.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn the_module_graph_has_no_cycle() {
        let graph = module_graph();
        // Depth-first search; a module met again on the current path closes
        // a cycle.
        fn visit<'a>(
            m: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if let Some(i) = path.iter().position(|p| *p == m) {
                panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
            }
            if !done.insert(m) {
                return;
            }
            path.push(m);
            for next in graph.get(m).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
        // The leaves stay leaves; the core and config stay below the rest.
        let allowed: [(&str, &[&str]); 5] = [
            ("secret", &[]),
            ("template", &[]),
            ("clock", &["core"]),
            ("core", &[]),
            ("config", &["core", "secret", "template"]),
        ];
        for (module, may) in allowed {
            let names = graph.get(module).cloned().unwrap_or_default();
            let extra: Vec<_> = names
                .iter()
                .filter(|n| !may.contains(&n.as_str()))
                .collect();
            assert!(extra.is_empty(), "{module} imports {extra:?}: {graph:?}");
        }
    }
}
