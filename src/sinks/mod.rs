//! Sinks consume what the core decides: `/metrics` rendering and the state
//! store (alert delivery joins them later).

pub mod metrics;
pub mod state;
