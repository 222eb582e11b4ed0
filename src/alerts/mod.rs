//! Alert notifications (DESIGN §5): from the core's snapshots to requests a
//! receiver accepts.
//!
//! snapshot ─► [`engine`] ─► [`book`] decides ─► [`store`] (durable) ─►
//! [`deliver`] (one worker per receiver) ─► [`render`] + [`sign`] ─► HTTP
//!
//! - [`crate::core::alert`]: alerts, matchers, silences, notifications
//!   (pure, in the core so that config can name silences and alert kinds
//!   without depending on this pipeline);
//! - [`book`]: which alerts fire, grouping, pacing, silences (pure);
//! - [`engine`]: the one task that owns the book and the outbox;
//! - [`store`]: `alerts.json` and `outbox.json`, written atomically;
//! - [`deliver`]: per-receiver queues and retrying workers;
//! - [`render`]: a notification as each receiver type's request bodies;
//! - [`sign`]: Standard Webhooks signatures;
//! - [`api`]: `/api/v1/alerts` and `/api/v1/silences`.

pub mod api;
pub mod book;
pub mod deliver;
pub mod engine;
pub mod render;
pub mod sign;
pub mod store;

#[cfg(test)]
mod tests {
    /// The deciding parts stay pure, as the core does.
    #[test]
    fn book_imports_no_io_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/alerts/book");
        crate::core::tests::assert_pure(&[
            dir.join("mod.rs"),
            dir.join("routing.rs"),
            dir.join("silences.rs"),
        ]);
    }
}
