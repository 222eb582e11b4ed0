//! Redis heartbeats (work in progress: being written).

use std::time::Duration;

use crate::clock::Clock;
use crate::config::RedisConfig;
use crate::core::{AgentId, ErrorKind, Reading, SourceId};

use super::{PollSource, ScanSink, SourceError};

pub struct RedisSource {
    interval: Duration,
}

impl RedisSource {
    pub fn new(_id: SourceId, cfg: &RedisConfig, _clock: Clock) -> Result<Self, SourceError> {
        Ok(Self {
            interval: cfg.interval,
        })
    }

    pub fn connect(&self) {}

    pub async fn disconnect(&self) {}
}

impl PollSource for RedisSource {
    fn system(&self) -> &'static str {
        "redis"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn scan(&self, _sink: &mut ScanSink) -> Result<(), SourceError> {
        Err(SourceError::new(ErrorKind::Other, "redis", "not implemented yet"))
    }

    async fn point_read(&self, _agents: &[AgentId]) -> Result<Vec<Reading>, SourceError> {
        Err(SourceError::new(ErrorKind::Other, "redis", "not implemented yet"))
    }
}
