//! The lease in Redis: `{key}:lease` holds `<epoch>:<holder>` with a PX
//! expiry; `{key}:epoch` counts acquisitions. The shared alert state is
//! `{key}:alerts` (JSON), written only by a script that checks the epoch
//! first (fenced); API silences are the hash `{key}:silences` (id → JSON).
//! Each lease operation is one Lua script, so it is atomic; every key shares
//! the hash tag `{key}`, so they live in one slot of a Redis Cluster.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface};
use fred::types::config::{Config as FredConfig, ReconnectPolicy, UnresponsiveConfig};
use fred::types::{Builder, Value};

use super::LeaseError;
use crate::secret::SecretUrl;

/// Take the lease when nobody holds it: a new epoch.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], e .. ':' .. ARGV[1], 'PX', ARGV[2])
return e
";

/// Extend the lease if it is still `<epoch>:<holder>`.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Write the alert state if the epoch is still ours.
const SAVE_STATE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// Give it up if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

pub struct RedisLease {
    client: Client,
    lease_key: String,
    epoch_key: String,
    state_key: String,
    silences_key: String,
    timeout: Duration,
    started: std::sync::atomic::AtomicBool,
    secrets: Vec<secrecy::SecretString>,
}

impl RedisLease {
    pub fn new(url: &SecretUrl, key: &str, timeout: Duration) -> Result<Self, LeaseError> {
        let secrets = url.password_forms();
        let mut config = FredConfig::from_url(url.expose()).map_err(|e| {
            LeaseError::Unexpected(format!(
                "cannot use URL {}: {}",
                url.redacted(),
                e.details()
            ))
        })?;
        config.fail_fast = true;
        let slowest = super::state_timeout(timeout);
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                // A connection that stops answering (a partition) is closed
                // and made again, not kept with commands queued behind
                // unanswered ones.
                // Past the longest command (a state write).
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(slowest.saturating_mul(2)),
                    interval: (timeout / 2)
                        .clamp(Duration::from_millis(50), Duration::from_secs(1)),
                };
            })
            // Each call is bounded by its own timeout (`bounded_by`); fred's
            // must not cut a state write short at the lease's.
            .with_performance_config(|p| {
                p.default_command_timeout = slowest;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder
            .build()
            .map_err(|e| LeaseError::Unexpected(e.details().to_string()))?;
        Ok(Self {
            client,
            lease_key: format!("{{{key}}}:lease"),
            epoch_key: format!("{{{key}}}:epoch"),
            state_key: format!("{{{key}}}:alerts"),
            silences_key: format!("{{{key}}}:silences"),
            timeout,
            started: Default::default(),
            secrets,
        })
    }

    fn scrub(&self, msg: String) -> String {
        crate::secret::scrub_secrets(&self.secrets, msg)
    }

    /// The client, connecting in the background once (the policy
    /// reconnects; calls fail fast meanwhile).
    fn client(&self) -> &Client {
        if !self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            // The connection task runs on its own; its handle is not needed.
            drop(self.client.connect());
        }
        &self.client
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, LeaseError> {
        self.bounded_by(self.timeout, f).await
    }

    async fn bounded_by<T>(
        &self,
        limit: Duration,
        f: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(limit, f).await {
            Err(_) => Err(LeaseError::Timeout(limit)),
            Ok(Err(e)) => Err(LeaseError::Unreachable(self.scrub(e.to_string()))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    async fn eval(
        &self,
        script: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, LeaseError> {
        self.bounded(self.client().eval::<Value, _, _, _>(script, keys, args))
            .await
    }

    /// The saved alert state (JSON), if any.
    pub async fn load_state(&self) -> Result<Option<String>, LeaseError> {
        self.bounded_by(
            super::state_timeout(self.timeout),
            self.client().get::<Option<String>, _>(&self.state_key),
        )
        .await
    }

    /// Write the alert state if `epoch` is still the lease's: `false` when
    /// a newer leader took over (nothing written).
    pub async fn save_state(&self, epoch: u64, json: String) -> Result<bool, LeaseError> {
        let v = self
            .bounded_by(
                super::state_timeout(self.timeout),
                self.client().eval::<Value, _, _, _>(
                    SAVE_STATE,
                    vec![self.epoch_key.clone(), self.state_key.clone()],
                    vec![epoch.to_string(), json],
                ),
            )
            .await?;
        Ok(matches!(v, Value::Integer(1)))
    }

    pub async fn put_silence(&self, id: &str, json: String) -> Result<(), LeaseError> {
        self.bounded(
            self.client()
                .hset::<(), _, _>(&self.silences_key, (id.to_string(), json)),
        )
        .await
    }

    /// `true` when it was there.
    pub async fn delete_silence(&self, id: &str) -> Result<bool, LeaseError> {
        let n: i64 = self
            .bounded(self.client().hdel(&self.silences_key, id.to_string()))
            .await?;
        Ok(n > 0)
    }

    /// Every API silence (JSON).
    pub async fn silences(&self) -> Result<Vec<String>, LeaseError> {
        self.bounded(self.client().hvals::<Vec<String>, _>(&self.silences_key))
            .await
    }

    pub async fn try_acquire(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LeaseError> {
        let v = self
            .eval(
                ACQUIRE,
                vec![self.lease_key.clone(), self.epoch_key.clone()],
                vec![holder.to_string(), ttl.as_millis().to_string()],
            )
            .await?;
        match v {
            Value::Null | Value::Boolean(false) => Ok(None),
            Value::Integer(e) if e > 0 => Ok(Some(e as u64)),
            other => Err(LeaseError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn renew(&self, holder: &str, epoch: u64, ttl: Duration) -> Result<bool, LeaseError> {
        let v = self
            .eval(
                RENEW,
                vec![self.lease_key.clone()],
                vec![format!("{epoch}:{holder}"), ttl.as_millis().to_string()],
            )
            .await?;
        Ok(matches!(v, Value::Integer(1)))
    }

    pub async fn release(&self, holder: &str, epoch: u64) -> Result<bool, LeaseError> {
        let v = self
            .eval(
                RELEASE,
                vec![self.lease_key.clone()],
                vec![format!("{epoch}:{holder}")],
            )
            .await?;
        Ok(matches!(v, Value::Integer(1)))
    }

    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.timeout, self.client.quit()).await;
    }
}
