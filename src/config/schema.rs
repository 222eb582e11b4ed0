//! The JSON Schema of `config.yaml`, for editors (completion, hover, checks
//! as you type) and CI: `agent-supervisor schema` prints it, and the
//! repository keeps it in `config.schema.json`.
//!
//! It is generated from Rust types that mirror what the loader reads
//! ([`generate`], built in tests only), so it cannot drift from them: a
//! test fails when `config.schema.json` is not what they describe, and
//! `UPDATE_SCHEMA=1 cargo test --lib config::schema` rewrites it. The
//! binary carries the checked-in copy, not the generator (schemars and the
//! mirror types' code: about 150 KB of code, a resident cost of every
//! sidecar).

/// `config.schema.json`, as compiled in.
pub const JSON_SCHEMA: &str = include_str!("../../config.schema.json");

#[cfg(test)]
mod generate;
#[cfg(test)]
mod tests;
