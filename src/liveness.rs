//! `/healthz`: each long-lived loop ticks here; the sidecar is alive when
//! every loop has ticked within its allowance. Never a dependency check: a
//! Redis outage must not restart the pod.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Default)]
pub struct Liveness {
    inner: Arc<Mutex<BTreeMap<String, (Instant, Duration)>>>,
}

impl Liveness {
    /// Register a loop that must tick at least every `allowance`.
    pub fn register(&self, name: &str, allowance: Duration) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(name.to_string(), (Instant::now(), allowance));
        }
    }

    pub fn tick(&self, name: &str) {
        if let Ok(mut m) = self.inner.lock()
            && let Some(e) = m.get_mut(name)
        {
            e.0 = Instant::now();
        }
    }

    /// Loops that have been silent for longer than their allowance.
    pub fn stalled(&self) -> Vec<String> {
        let now = Instant::now();
        match self.inner.lock() {
            Ok(m) => m
                .iter()
                .filter(|(_, (at, allow))| now.duration_since(*at) > *allow)
                .map(|(n, _)| n.clone())
                .collect(),
            Err(_) => vec!["liveness registry poisoned".to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_ticking_is_reported() {
        let l = Liveness::default();
        l.register("core", Duration::from_secs(10));
        l.register("redis", Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(11)).await;
        l.tick("redis");
        assert_eq!(l.stalled(), vec!["core".to_string()]);
        l.tick("core");
        assert!(l.stalled().is_empty());
    }
}
