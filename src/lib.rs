//! agent-supervisor watches the logical agents living inside a service and
//! reports, promptly and truthfully, when one of them has silently stopped.
//!
//! # Layout
//!
//! The code follows the data: sources → core → sinks.
//!
//! - [`config`]: `config.yaml` parsed into typed values, every problem
//!   collected with its path.
//! - [`core`]: the pure decisions. The [`core::Supervisor`] owns every agent,
//!   check and source state; it takes `now` as an argument and imports no I/O
//!   crate.
//! - [`sources`]: one file per external system (`redis`, `postgres`,
//!   `http`, `push`); they read and translate into observations, never
//!   decide.
//! - [`driver`]: the single task that owns the supervisor, wakes it at its
//!   next deadline and hands its output to the sinks.
//! - [`sinks`]: `/metrics` rendering and the state store.
//! - [`alerts`]: alert notifications: grouping, silences, the durable
//!   outbox, rendering per receiver type, signed delivery.
//! - [`http`]: the sidecar's HTTP server (metrics, probes, JSON API, push).
//! - [`app`]: builds everything from a config and runs it until cancelled.
//! - [`scan`]: the one-shot `scan` command.
//! - [`clock`], [`liveness`], [`secret`], [`telemetry`], [`template`]: small
//!   shared pieces.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod app;
pub mod clock;
pub mod config;
pub mod core;
pub mod driver;
pub mod http;
pub mod liveness;
pub mod scan;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod template;
