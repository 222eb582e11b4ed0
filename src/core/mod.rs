//! The pure core: decisions about agents, with `now` passed in. No I/O crate
//! is imported here; sources and sinks talk to it through [`model`] types.

pub mod model;
pub mod policy;
pub mod snapshot;
pub mod supervisor;
pub mod timestamp;

pub use model::*;
pub use policy::{AgentRule, Defaults, Labels, Policy};
pub use snapshot::{Persisted, Snapshot};
pub use supervisor::{Dirty, SourceKind, Supervisor};

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    /// Fails if any of these files imports an I/O crate (test modules and
    /// `tests.rs` files may).
    pub(crate) fn assert_pure(files: &[PathBuf]) {
        for path in files {
            let full = std::fs::read_to_string(path).unwrap();
            let text = full.split("#[cfg(test)]").next().unwrap_or_default();
            for krate in [
                "tokio",
                "fred",
                "sqlx",
                "axum",
                "reqwest",
                "hyper",
                "std::fs",
                "std::net",
                "std::io",
                "std::thread",
                "std::process",
                "prometheus",
                "tracing",
            ] {
                let uses = text.lines().any(|l| {
                    let l = l.trim_start();
                    (l.starts_with("use ") || l.contains(" use ")) && l.contains(krate)
                        || l.contains(&format!("{krate}::"))
                });
                assert!(
                    !uses || path.ends_with("tests.rs"),
                    "{} uses {krate}",
                    path.display()
                );
            }
        }
    }

    /// The core stays pure: no I/O crate may creep in.
    #[test]
    fn core_imports_no_io_crate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        let mut stack = vec![dir];
        let mut files = Vec::new();
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        assert!(files.len() >= 5);
        assert_pure(&files);
    }
}
