//! The polled sources by system, as one [`PollSource`]: the only place that
//! dispatches on the system.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::config::SourceKindConfig;
use crate::core::{AgentId, Reading, SourceId};
use crate::sources::http::HttpSource;
use crate::sources::postgres::PostgresSource;
use crate::sources::redis::RedisSource;
use crate::sources::{PollSource, ScanSink, SourceError};
use crate::telemetry::metrics::Metrics;

/// A source read periodically, by system (the largest boxed, so that the
/// others do not pay for its size).
pub enum Polled {
    Redis(RedisSource),
    Postgres(Box<PostgresSource>),
    Http(HttpSource),
}

impl Polled {
    /// Build the client for a polled source; `None` for the push source.
    pub fn build(
        id: &SourceId,
        kind: &SourceKindConfig,
        clock: &Clock,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Self>> {
        let context = || format!("source {id}");
        Ok(match kind {
            SourceKindConfig::Redis(c) => Some(Polled::Redis(
                RedisSource::new(id.clone(), c, clock.clone()).with_context(context)?,
            )),
            SourceKindConfig::Postgres(c) => Some(Polled::Postgres({
                if let Some(w) = c.tls_warning() {
                    tracing::warn!(source = %id, "{w}");
                }
                Box::new(PostgresSource::new(id.clone(), c, clock.clone()).with_context(context)?)
            })),
            SourceKindConfig::Http(c) => Some(Polled::Http(
                HttpSource::new(id.clone(), c, metrics.clone()).with_context(context)?,
            )),
            SourceKindConfig::Push(_) => None,
        })
    }
}

/// `$body` with `$s` bound to the source, whatever its system.
macro_rules! each {
    ($polled:expr, $s:ident => $body:expr) => {
        match $polled {
            Polled::Redis($s) => $body,
            Polled::Postgres($s) => $body,
            Polled::Http($s) => $body,
        }
    };
}

impl PollSource for Polled {
    fn system(&self) -> &'static str {
        each!(self, s => s.system())
    }

    fn interval(&self) -> Duration {
        each!(self, s => s.interval())
    }

    async fn scan(&self, sink: &mut ScanSink) -> Result<(), SourceError> {
        each!(self, s => s.scan(sink).await)
    }

    async fn point_read(&self, agents: &[AgentId]) -> Result<Vec<Reading>, SourceError> {
        each!(self, s => s.point_read(agents).await)
    }

    fn connect(&self) {
        each!(self, s => s.connect())
    }

    async fn disconnect(&self) {
        each!(self, s => s.disconnect().await)
    }

    fn clock_offset_seconds(&self) -> Option<f64> {
        each!(self, s => s.clock_offset_seconds())
    }
}
