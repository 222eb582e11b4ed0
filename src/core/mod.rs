//! The pure core: decisions about agents, with `now` passed in. No I/O crate
//! is imported here; sources and sinks talk to it through [`model`] types,
//! the alert pipeline and config through [`alert`] types (alerts, matchers,
//! silences, notifications).

/// A [`Text`] most checks share, allocated once for the whole process:
/// `shared!("heartbeat within threshold")`. (Declared before the modules
/// that use it.)
macro_rules! shared {
    ($s:literal) => {{
        static TEXT: std::sync::LazyLock<$crate::core::Text> =
            std::sync::LazyLock::new(|| std::sync::Arc::from($s));
        $crate::core::Text::clone(&TEXT)
    }};
}

pub mod alert;
pub mod model;
pub mod policy;
pub mod remedy;
pub mod snapshot;
pub mod supervisor;
pub mod time;
pub mod timestamp;

pub use model::*;
pub use policy::{AgentRule, Defaults, Labels, Policy};
pub use snapshot::{Persisted, Snapshot};
pub use supervisor::{Dirty, SourceKind, Supervisor};

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    /// Paths under these prefixes do I/O (or log, or export metrics): the
    /// core stays free of them.
    const IMPURE: [&str; 13] = [
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
    ];

    /// Every path a file names outside `#[cfg(test)]` items: each leaf of a
    /// `use` tree spelled out in full (`use std::{fs, io}` gives `std::fs`
    /// and `std::io`), and every path in the code (`tokio::spawn`).
    #[derive(Default)]
    struct Paths(Vec<String>);

    impl Paths {
        fn use_tree(&mut self, prefix: &str, tree: &syn::UseTree) {
            let join = |name: &dyn std::fmt::Display| {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}::{name}")
                }
            };
            match tree {
                syn::UseTree::Path(p) => self.use_tree(&join(&p.ident), &p.tree),
                syn::UseTree::Name(n) => self.0.push(join(&n.ident)),
                syn::UseTree::Rename(r) => self.0.push(join(&r.ident)),
                syn::UseTree::Glob(_) => self.0.push(join(&"*")),
                syn::UseTree::Group(g) => {
                    for t in &g.items {
                        self.use_tree(prefix, t);
                    }
                }
            }
        }
    }

    fn is_test_only(attrs: &[syn::Attribute]) -> bool {
        attrs.iter().any(|a| {
            a.path().is_ident("cfg")
                && a.parse_args::<syn::Path>()
                    .is_ok_and(|p| p.is_ident("test"))
        })
    }

    impl<'ast> syn::visit::Visit<'ast> for Paths {
        fn visit_item(&mut self, item: &'ast syn::Item) {
            let attrs = match item {
                syn::Item::Mod(m) => &m.attrs,
                syn::Item::Fn(f) => &f.attrs,
                syn::Item::Use(u) => &u.attrs,
                syn::Item::Impl(i) => &i.attrs,
                _ => return syn::visit::visit_item(self, item),
            };
            if !is_test_only(attrs) {
                syn::visit::visit_item(self, item);
            }
        }

        fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
            self.use_tree("", &u.tree);
        }

        fn visit_path(&mut self, p: &'ast syn::Path) {
            let full = p
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect::<Vec<_>>()
                .join("::");
            self.0.push(full);
            syn::visit::visit_path(self, p);
        }

        fn visit_macro(&mut self, m: &'ast syn::Macro) {
            // `tracing::info!` and friends: the macro's own path.
            self.visit_path(&m.path);
        }
    }

    /// Every path `file` names outside its `#[cfg(test)]` items.
    pub(crate) fn paths_named(file: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap();
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut paths = Paths::default();
        syn::visit::Visit::visit_file(&mut paths, &parsed);
        paths.0
    }

    /// Fails if any of these files names an I/O crate outside its
    /// `#[cfg(test)]` items (`tests.rs` files may).
    pub(crate) fn assert_pure(files: &[PathBuf]) {
        for path in files.iter().filter(|p| !p.ends_with("tests.rs")) {
            let text = std::fs::read_to_string(path).unwrap();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut paths = Paths::default();
            syn::visit::Visit::visit_file(&mut paths, &file);
            for p in &paths.0 {
                let impure = IMPURE
                    .iter()
                    .find(|k| p == *k || p.starts_with(&format!("{k}::")));
                assert!(
                    impure.is_none(),
                    "{} uses {p} ({})",
                    path.display(),
                    impure.unwrap_or(&"")
                );
            }
        }
    }

    /// The checker sees grouped, nested and inline paths, and skips test
    /// code.
    #[test]
    fn purity_check_sees_grouped_imports_and_inline_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("use std::{fs, io};", false),
            (
                "use std::{\n    collections::HashMap,\n    net::{IpAddr, TcpStream},\n};",
                false,
            ),
            ("fn f() { tokio::spawn(async {}); }", false),
            ("fn f() { tracing::info!(\"x\"); }", false),
            (
                "use std::collections::HashMap; use chrono::TimeDelta;",
                true,
            ),
            ("#[cfg(test)]\nmod tests { use std::fs; }", true),
            ("// tokio::spawn in a comment\nfn f() {}", true),
        ];
        for (i, (src, pure)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("case{i}.rs"));
            std::fs::write(&path, src).unwrap();
            let ok = std::panic::catch_unwind(|| assert_pure(std::slice::from_ref(&path))).is_ok();
            assert_eq!(ok, pure, "{src}");
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
