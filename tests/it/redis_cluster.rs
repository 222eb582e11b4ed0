//! End to end with a real Redis Cluster (three primaries) and a real Redis
//! Sentinel setup: keys read from every primary, a primary down is an
//! outage for its agents alone, a Sentinel failover is followed, and
//! nobody is reported stale for any of it.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_supervisor::clock::Clock;
use agent_supervisor::config::{KeyPattern, RedisConfig, RedisLayout};
use agent_supervisor::core::{AgentId, Reading, SourceId};
use agent_supervisor::secret::SecretUrl;
use agent_supervisor::sources::PollSource;
use agent_supervisor::sources::redis::RedisSource;
use chrono::Utc;

use crate::harness::{RedisCluster, RedisSentinel, redis_cmd, unique_prefix};
use crate::scenarios::{never_stale_for, polled_source_config};
use crate::support::{TestApp, sample, scan_source, spawn_app};

/// A heartbeat value: epoch seconds with microseconds.
fn now_value() -> String {
    format!("{:.6}", Utc::now().timestamp_micros() as f64 / 1e6)
}

fn config(url: &str, prefix: &str) -> String {
    polled_source_config(
        "redis",
        "redis",
        url,
        "1s",
        &format!(r#"layout: keys, pattern: "{prefix}{{agent}}:last_seen""#),
        "3s",
    )
}

/// Agents beating every 300 ms (the agents' own rhythm) into the server
/// `port_of` names for each key at that moment; a write that fails (its
/// server is down) is dropped, as an agent's would be. `paused` agents do
/// not beat.
struct Beating {
    stop: Arc<AtomicBool>,
    paused: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Beating {
    fn start(
        keys: Vec<(String, String)>,
        port_of: impl Fn(&str) -> Option<u16> + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let port_of = Arc::new(port_of);
        let task = {
            let (stop, paused) = (stop.clone(), paused.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(300));
                while !stop.load(Ordering::Relaxed) {
                    every.tick().await;
                    let skip = paused.lock().map(|p| p.clone()).unwrap_or_default();
                    let (keys, port_of) = (keys.clone(), port_of.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        for (agent, key) in &keys {
                            if skip.contains(agent) {
                                continue;
                            }
                            if let Some(port) = port_of(key) {
                                let _ = redis_cmd::<()>(port, &["SET", key, &now_value()]);
                            }
                        }
                    })
                    .await;
                }
            })
        };
        Self { stop, paused, task }
    }

    fn pause(&self, agent: &str) {
        if let Ok(mut p) = self.paused.lock() {
            p.push(agent.to_string());
        }
    }

    fn resume(&self, agent: &str) {
        if let Ok(mut p) = self.paused.lock() {
            p.retain(|a| a != agent);
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

async fn wait_all(app: &TestApp, agents: &[String], state: &str, timeout: Duration) {
    for a in agents {
        app.wait_for_state(a, state, timeout).await;
    }
}

fn stale_transitions(metrics: &str) -> f64 {
    sample(
        metrics,
        r#"agent_supervisor_transitions_total{from="healthy",to="stale"}"#,
    )
    .unwrap_or(0.0)
        + sample(
            metrics,
            r#"agent_supervisor_transitions_total{from="unknown",to="stale"}"#,
        )
        .unwrap_or(0.0)
}

/// Agents spread over the three primaries of a real cluster are all read.
/// One primary killed: its agents are `unknown` with the node in the
/// reason, the source stays up, the agents of the other primaries are
/// judged as usual (the live ones healthy, one that stops stale at its
/// deadline). The primary back: its agents healthy again, and no agent but
/// the one that stopped was ever stale.
#[tokio::test]
async fn a_cluster_primary_down_makes_its_agents_unknown_and_leaves_the_others_alone() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster start");
    let prefix = unique_prefix("cluster");
    // At least two agents on each primary.
    let mut by_node: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    for i in 0.. {
        if by_node.len() == 3 && by_node.values().all(|v| v.len() >= 2) {
            break;
        }
        let agent = format!("agent-{i:02}");
        let key = format!("{prefix}{agent}:last_seen");
        by_node
            .entry(cluster.node_of(&key))
            .or_default()
            .push((agent, key));
    }
    let all: Vec<(String, String)> = by_node.values().flatten().cloned().collect();
    let ids =
        |node: usize| -> Vec<String> { by_node[&node].iter().map(|(a, _)| a.clone()).collect() };
    let (on0, on1, on2) = (ids(0), ids(1), ids(2));
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    // Slots do not move in this test: each key's primary is fixed.
    let port_of: BTreeMap<String, u16> = all
        .iter()
        .map(|(_, key)| (key.clone(), ports[cluster.node_of(key)]))
        .collect();
    let beating = Beating::start(all.clone(), move |key| port_of.get(key).copied());
    let url = cluster.url();
    let cluster = Arc::new(std::sync::Mutex::new(cluster));
    let app = spawn_app(&config(&url, &prefix)).await;
    let everyone: Vec<String> = all.iter().map(|(a, _)| a.clone()).collect();
    wait_all(&app, &everyone, "healthy", Duration::from_secs(15)).await;

    // Primary 2 dies.
    {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.lock().unwrap().kill(2))
            .await
            .expect("kill");
    }
    let dead = format!("127.0.0.1:{}", ports[2]);
    for a in &on2 {
        let view = app
            .wait_for_state(a, "unknown", Duration::from_secs(10))
            .await;
        let reason = view["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&dead) && reason.contains("cannot be read"),
            "{a}: {reason}"
        );
    }
    assert_eq!(app.source("redis").await["status"], "up");
    // The others are judged as usual: one of node 0 stops beating and is
    // stale; everyone else stays healthy, node 2's agents unknown, well
    // past every threshold.
    let stopper = on0[0].clone();
    beating.pause(&stopper);
    app.wait_for_state(&stopper, "stale", Duration::from_secs(10))
        .await;
    let others: Vec<&str> = on0[1..]
        .iter()
        .chain(&on1)
        .chain(&on2)
        .map(String::as_str)
        .collect();
    never_stale_for(&app, &others, Duration::from_secs(5)).await;
    for a in on0[1..].iter().chain(&on1) {
        assert_eq!(app.state_of(a).await.as_deref(), Some("healthy"), "{a}");
    }
    for a in &on2 {
        assert_eq!(app.state_of(a).await.as_deref(), Some("unknown"), "{a}");
    }
    let stale_so_far = stale_transitions(&app.scrape().await);

    // Primary 2 is back (empty: its agents write again).
    {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.lock().unwrap().restart(2))
            .await
            .expect("restart");
    }
    wait_all(&app, &on2, "healthy", Duration::from_secs(15)).await;
    never_stale_for(&app, &others, Duration::from_secs(3)).await;
    assert_eq!(
        stale_transitions(&app.scrape().await),
        stale_so_far,
        "a stale transition after the primary came back"
    );
    assert_eq!(app.state_of(&stopper).await.as_deref(), Some("stale"));
    beating.stop().await;
    app.shutdown().await;
}

/// Agents beat into the primary Sentinel names. The primary is killed:
/// Sentinel promotes the replica, the sidecar follows (an agent that only
/// ever wrote to the new primary is found), and no agent is stale, during
/// the failover or after it.
#[tokio::test]
async fn a_sentinel_failover_is_followed_without_a_false_stale() {
    let sentinel = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("sentinel start");
    let prefix = unique_prefix("sentinel");
    let agents: Vec<(String, String)> = (0..4)
        .map(|i| {
            let agent = format!("agent-{i}");
            let key = format!("{prefix}{agent}:last_seen");
            (agent, key)
        })
        .collect();
    let sentinel_port = sentinel.port;
    let service = sentinel.service;
    let primary_of = move |_key: &str| -> Option<u16> {
        let addr: Vec<String> = redis_cmd(
            sentinel_port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", service],
        )
        .ok()?;
        addr.get(1)?.parse().ok()
    };
    // `newcomer` starts beating only after the failover.
    let mut all = agents.clone();
    all.push(("newcomer".into(), format!("{prefix}newcomer:last_seen")));
    let beating = Beating::start(all, primary_of);
    beating.pause("newcomer");
    let app = spawn_app(&config(&sentinel.url(), &prefix)).await;
    let ids: Vec<String> = agents.iter().map(|(a, _)| a.clone()).collect();
    wait_all(&app, &ids, "healthy", Duration::from_secs(15)).await;
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();

    let old_primary = sentinel.primary.port;
    let sentinel = Arc::new(std::sync::Mutex::new(sentinel));
    {
        let s = sentinel.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = s.lock().unwrap();
            s.primary.stop();
            s.wait_failover();
        })
        .await
        .expect("failover");
    }
    assert_ne!(sentinel.lock().unwrap().primary_port(), Some(old_primary));
    // An agent that starts after the failover writes to the new primary
    // only: seen, so the sidecar reads the new primary.
    beating.resume("newcomer");
    app.wait_for_state("newcomer", "healthy", Duration::from_secs(15))
        .await;
    wait_all(&app, &ids, "healthy", Duration::from_secs(15)).await;
    never_stale_for(&app, &names, Duration::from_secs(4)).await;
    assert_eq!(stale_transitions(&app.scrape().await), 0.0);
    assert_eq!(app.source("redis").await["status"], "up");
    beating.stop().await;
    app.shutdown().await;
}

fn source_config(url: &str, layout: RedisLayout) -> RedisConfig {
    RedisConfig {
        url: SecretUrl::parse(url).expect("test URL"),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        layout,
        batch: NonZeroUsize::new(500).expect("non-zero"),
        json_field: "last_seen".into(),
        status_field: "status".into(),
    }
}

fn heartbeat_of(r: Option<&Reading>) -> bool {
    matches!(r, Some(Reading::Heartbeat { .. }))
}

/// On a cluster, a scan reads the keys of every primary, and a hash or a
/// sorted set from the primary of its slot. With a primary down, a scan of
/// the keys reads the others and says which agents it could not read; a
/// point read answers one reading per agent asked, in order: `unreadable`
/// for those on the dead primary.
#[tokio::test]
async fn cluster_scans_and_point_reads_follow_the_slot_map() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster start");
    let prefix = unique_prefix("cluster_src");
    let key = |agent: &str| format!("{prefix}{agent}:last_seen");
    // Three agents on each primary.
    let mut by_node: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        if by_node.len() == 3 && by_node.values().all(|v| v.len() >= 3) {
            break;
        }
        let agent = format!("a{i}");
        by_node
            .entry(cluster.node_of(&key(&agent)))
            .or_default()
            .push(agent);
    }
    let agents: Vec<String> = by_node.values().flatten().cloned().collect();
    let now = now_value();
    let (hash, zset) = (format!("{prefix}hash"), format!("{prefix}zset"));
    for a in &agents {
        cluster.set(&key(a), &now);
        let hp = cluster.nodes[cluster.node_of(&hash)].port;
        redis_cmd::<()>(hp, &["HSET", &hash, a, &now]).expect("HSET");
        let zp = cluster.nodes[cluster.node_of(&zset)].port;
        redis_cmd::<()>(zp, &["ZADD", &zset, &now, a]).expect("ZADD");
    }
    let url = cluster.url();
    let pattern = KeyPattern::parse(&format!("{prefix}{{agent}}:last_seen")).expect("pattern");
    for layout in [
        RedisLayout::Keys(pattern.clone()),
        RedisLayout::Hash { key: hash.clone() },
        RedisLayout::Zset { key: zset.clone() },
    ] {
        let src = RedisSource::new(
            SourceId::from("redis"),
            &source_config(&url, layout.clone()),
            Clock::System,
        )
        .expect("source");
        let scanned = scan_source(&src, "redis").await.expect("scan");
        let got = scanned.by_agent();
        assert_eq!(
            got.len(),
            agents.len(),
            "{layout:?}: {got:?}; {:?}",
            scanned.partly_down
        );
        assert!(
            agents.iter().all(|a| heartbeat_of(got.get(a))),
            "{layout:?}: {got:?}"
        );
        assert!(scanned.partly_down.is_empty());
        src.disconnect().await;
    }

    let src = RedisSource::new(
        SourceId::from("redis"),
        &source_config(&url, RedisLayout::Keys(pattern)),
        Clock::System,
    )
    .expect("source");
    scan_source(&src, "redis").await.expect("scan");
    let dead_port = cluster.nodes[2].port;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.kill(2);
        cluster
    })
    .await
    .expect("kill");
    let scanned = scan_source(&src, "redis").await.expect("a partial scan");
    let got = scanned.by_agent();
    let (on_dead, alive): (Vec<&String>, Vec<&String>) =
        agents.iter().partition(|a| by_node[&2].contains(a));
    assert!(alive.iter().all(|a| heartbeat_of(got.get(*a))), "{got:?}");
    assert!(on_dead.iter().all(|a| !got.contains_key(*a)), "{got:?}");
    assert_eq!(scanned.partly_down.len(), 1, "{:?}", scanned.partly_down);
    let (failure, affected) = &scanned.partly_down[0];
    assert!(
        failure.message.contains(&format!("127.0.0.1:{dead_port}")),
        "{}",
        failure.message
    );
    for a in &agents {
        assert_eq!(
            affected.matches(&AgentId::from(a.as_str())),
            on_dead.contains(&a),
            "{a}"
        );
    }

    let ask: Vec<AgentId> = [on_dead[0], alive[0], &"gone".to_string(), alive[0]]
        .into_iter()
        .map(|a| AgentId::from(a.as_str()))
        .collect();
    let got = src.point_read(&ask).await.expect("point read");
    assert_eq!(got.len(), ask.len(), "{got:?}");
    for (asked, reading) in ask.iter().zip(&got) {
        assert_eq!(reading.agent(), asked, "in request order: {got:?}");
    }
    match &got[0] {
        Reading::Unreadable { reason, .. } => {
            assert!(
                reason.contains(&format!("127.0.0.1:{dead_port}")),
                "{reason}"
            )
        }
        other => panic!("expected unreadable, got {other:?}"),
    }
    assert!(
        heartbeat_of(Some(&got[1])) && heartbeat_of(Some(&got[3])),
        "{got:?}"
    );
    // `gone` hashes where it hashes: absent if on a live primary,
    // unreadable on the dead one.
    assert!(
        matches!(got[2], Reading::Absent { .. } | Reading::Unreadable { .. }),
        "{got:?}"
    );
    src.disconnect().await;
    drop(cluster);
}
