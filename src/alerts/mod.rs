//! Alert notifications (DESIGN §5): from the core's snapshots to requests a
//! receiver accepts.
//!
//! - [`model`]: alerts, matchers, silences, notifications (pure);
//! - [`render`]: a notification as each receiver type's request bodies;
//! - [`sign`]: Standard Webhooks signatures.

pub mod api;
pub mod book;
pub mod deliver;
pub mod engine;
pub mod model;
pub mod render;
pub mod sign;
pub mod store;
