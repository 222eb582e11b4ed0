//! Several replicas, one leader: the lease on a real Redis and on a real
//! PostgreSQL through PgBouncer in transaction mode.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agent_supervisor::config::ha::{HaConfig, LeaseConfig, LeaseStore};
use agent_supervisor::ha::LeaseClient;
use agent_supervisor::secret::SecretUrl;

use crate::harness::{
    AlertmanagerServer, FaultProxy, Mode, PgBouncer, RedisServer, holds_for, shared_postgres,
    shared_redis_url, start_pgbouncer, unique_prefix, wait_for, wait_until,
};
use crate::receiver::Receiver;
use crate::sidecar::{Launch, Sidecar};

const TTL: Duration = Duration::from_millis(1500);

fn ha(store: LeaseStore) -> HaConfig {
    HaConfig {
        lease: LeaseConfig {
            store,
            ttl: TTL,
            renew_every: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
        },
        fail_open_after: TTL * 2,
        replica_id: "unused".into(),
    }
}

/// What a lease must do on any store: one holder at a time; renewals only
/// by the holder at its epoch; free again after `ttl` unrenewed, then
/// taken at a higher epoch, after which the old holder can neither renew
/// nor release it; released, taken again at once.
async fn lease_contract(store: LeaseStore) {
    let cfg = ha(store);
    let a = LeaseClient::new(&cfg).expect("client a");
    let b = LeaseClient::new(&cfg).expect("client b");
    // The clients connect in the background: the first calls may fail.
    let e1 = wait_for(
        "a takes the free lease",
        Duration::from_secs(10),
        || async { a.try_acquire("a", TTL).await.ok().flatten() },
    )
    .await;
    let got = wait_for("b's store answers", Duration::from_secs(10), || async {
        b.try_acquire("b", TTL).await.ok()
    })
    .await;
    assert_eq!(got, None, "b took a lease a holds");
    assert!(a.renew("a", e1, TTL).await.expect("renew"));
    assert!(!b.renew("b", e1, TTL).await.expect("renew by another"));
    assert!(
        !a.renew("a", e1 + 1, TTL)
            .await
            .expect("renew at another epoch")
    );
    assert_eq!(b.try_acquire("b", TTL).await.expect("acquire"), None);

    // a stops renewing: b takes it after ttl, at a higher epoch.
    let e2 = wait_for("b takes the lease a left", TTL * 4, || async {
        b.try_acquire("b", TTL).await.expect("acquire")
    })
    .await;
    assert!(e2 > e1, "{e2} after {e1}");
    assert!(!a.renew("a", e1, TTL).await.expect("stale renew"), "fenced");
    assert!(!a.release("a", e1).await.expect("stale release"), "fenced");
    assert!(b.renew("b", e2, TTL).await.expect("renew"));

    // The shared state: written by the leader of the current epoch only.
    assert!(
        b.save_state(e2, r#"{"by":"b"}"#.into())
            .await
            .expect("save")
    );
    assert!(
        !a.save_state(e1, r#"{"by":"a"}"#.into())
            .await
            .expect("save"),
        "a write at an old epoch is refused"
    );
    assert_eq!(
        a.load_state().await.expect("load").as_deref(),
        Some(r#"{"by":"b"}"#)
    );
    // Silences: any replica writes, every replica reads.
    a.put_silence("s1", r#"{"id":"s1"}"#.into())
        .await
        .expect("put");
    b.put_silence("s2", r#"{"id":"s2"}"#.into())
        .await
        .expect("put");
    let mut listed = b.silences().await.expect("list");
    listed.sort();
    assert_eq!(listed, [r#"{"id":"s1"}"#, r#"{"id":"s2"}"#]);
    assert!(b.delete_silence("s1").await.expect("delete"));
    assert!(!b.delete_silence("s1").await.expect("delete again"));
    assert_eq!(a.silences().await.expect("list"), [r#"{"id":"s2"}"#]);

    // Released: a takes it at once, at a higher epoch still.
    assert!(b.release("b", e2).await.expect("release"));
    let e3 = a
        .try_acquire("a", TTL)
        .await
        .expect("acquire")
        .expect("free");
    assert!(e3 > e2);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn the_redis_lease_has_one_holder_and_a_rising_epoch() {
    let url = SecretUrl::parse(&shared_redis_url()).expect("url");
    let key = unique_prefix("lease");
    lease_contract(LeaseStore::Redis { url, key }).await;
}

/// A new database of the shared server, behind a transaction-mode
/// PgBouncer: the bouncer (kept while used) and its URL.
async fn database_behind_pgbouncer(test: &str) -> (PgBouncer, String) {
    let server = shared_postgres();
    let direct = server.create_database(test).await;
    let db = direct.rsplit('/').next().expect("db name").to_string();
    let bouncer = start_pgbouncer(server.port, &db).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
        bouncer.port
    );
    (bouncer, url)
}

/// Where the cluster tests keep the lease: a private redis-server, or a new
/// PostgreSQL database behind a transaction-mode PgBouncer; either reached
/// through a fault proxy, so a test can take it away.
#[derive(Clone, Copy, Debug)]
enum Store {
    Redis,
    Postgres,
}

struct LeaseStoreUnderTest {
    /// The `lease:` mapping's store part (`{prefix}` is the cluster's).
    lease: String,
    proxy: FaultProxy,
    _redis: Option<RedisServer>,
    _bouncer: Option<PgBouncer>,
}

impl Store {
    async fn start(self, test: &str) -> LeaseStoreUnderTest {
        match self {
            Store::Redis => {
                let redis = RedisServer::start();
                let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into()).await;
                LeaseStoreUnderTest {
                    lease: format!(
                        "store: redis, url: \"redis://{}\", key: \"{{prefix}}lease\"",
                        proxy.host_port()
                    ),
                    proxy,
                    _redis: Some(redis),
                    _bouncer: None,
                }
            }
            Store::Postgres => {
                let (bouncer, url) = database_behind_pgbouncer(test).await;
                let proxy = FaultProxy::start(([127, 0, 0, 1], bouncer.port).into()).await;
                let url = url.replace(&format!("127.0.0.1:{}", bouncer.port), &proxy.host_port());
                LeaseStoreUnderTest {
                    lease: format!("store: postgres, url: \"{url}\""),
                    proxy,
                    _redis: None,
                    _bouncer: Some(bouncer),
                }
            }
        }
    }
}

/// The test functions of a scenario, one per store.
macro_rules! on_both_stores {
    ($scenario:ident, $redis:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis() {
            $scenario(Store::Redis).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario(Store::Postgres).await;
        }
    };
}

#[tokio::test]
async fn the_postgres_lease_works_through_pgbouncer_in_transaction_mode() {
    let (_bouncer, via) = database_behind_pgbouncer("ha_lease").await;
    lease_contract(LeaseStore::Postgres {
        url: SecretUrl::parse(&via).expect("url"),
        table: "agent_supervisor_ha".into(),
        key: "agent-supervisor".into(),
        tls_ca_file: None,
    })
    .await;
}

/// Three sidecar processes watching the same Redis (agents `a000`...,
/// keys `<prefix><agent>`), with `ha:` on, notifying one webhook receiver
/// with one group per agent.
struct Cluster {
    replicas: Vec<Option<Sidecar>>,
    receiver: Receiver,
    redis: std::sync::Mutex<redis::Connection>,
    prefix: String,
    agents: Vec<String>,
    /// Agents that no longer beat.
    stopped: std::sync::Mutex<BTreeSet<String>>,
    /// The config every replica runs (with its own replica_id).
    config: String,
    _dir: tempfile::TempDir,
}

/// The lease settings of the cluster tests.
const CLUSTER_TTL: Duration = Duration::from_secs(2);
const CLUSTER_RENEW: Duration = Duration::from_millis(500);

impl Cluster {
    /// A cluster of `agents` agents with its lease on a new `store`.
    async fn on(store: Store, test: &str, agents: usize) -> (LeaseStoreUnderTest, Cluster) {
        let s = store.start(test).await;
        let c = Cluster::start(agents, &s.lease).await;
        (s, c)
    }

    /// `lease` is the `lease:` mapping's store part (`store: redis, source:
    /// redis, key: ...`).
    async fn start(agents: usize, lease: &str) -> Cluster {
        let redis_url = shared_redis_url();
        let prefix = unique_prefix("ha");
        let receiver = Receiver::start().await;
        let client = redis::Client::open(redis_url.as_str()).expect("redis client");
        let conn = client.get_connection().expect("redis connection");
        let lease = lease.replace("{prefix}", &prefix);
        let config = format!(
            r#"
startup_grace: 0s
defaults: {{stale_after: 3s}}
sources:
  - {{name: redis, type: redis, url: "{redis_url}", interval: 1s, timeout: 1s, layout: keys, pattern: "{prefix}{{agent}}"}}
receivers: [{{name: hook, type: webhook, url: "{hook}"}}]
routing: {{group_by: [agent], group_wait: 0s, group_interval: 1s, repeat_interval: 1h, receivers: [hook]}}
delivery: {{initial_backoff: 100ms, max_backoff: 1s, timeout: 2s}}
ha:
  lease: {{{lease}, ttl: {ttl}ms, renew_every: {renew}ms}}
"#,
            hook = receiver.url("/hook"),
            ttl = CLUSTER_TTL.as_millis(),
            renew = CLUSTER_RENEW.as_millis(),
        );
        let c = Cluster {
            replicas: Vec::new(),
            receiver,
            redis: std::sync::Mutex::new(conn),
            prefix,
            agents: (0..agents).map(|i| format!("a{i:03}")).collect(),
            stopped: Default::default(),
            config,
            _dir: tempfile::tempdir().unwrap(),
        };
        c.beat();
        let mut c = c;
        for _ in 0..3 {
            c.add_replica().await;
            c.beat();
        }
        wait_until("one replica leads", Duration::from_secs(10), || async {
            c.beat();
            c.leaders().await.len() == 1
        })
        .await;
        for r in c.replicas.iter().flatten() {
            wait_until(
                "every replica sees every agent healthy",
                Duration::from_secs(15),
                || async {
                    c.beat();
                    let agents = r.agents().await;
                    c.agents
                        .iter()
                        .all(|a| agents.get(a).is_some_and(|v| v["state"] == "healthy"))
                },
            )
            .await;
        }
        c
    }

    /// One more replica, `r<n>`.
    async fn add_replica(&mut self) {
        let name = format!("r{}", self.replicas.len() + 1);
        let cfg = self
            .config
            .replace("ha:\n", &format!("ha:\n  replica_id: {name}\n"));
        let dir = self._dir.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        self.replicas.push(Some(
            Sidecar::start_in(&dir, &name, &cfg, Launch::default()).await,
        ));
    }

    /// Every agent not stopped beats now.
    fn beat(&self) {
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        let stopped = self.stopped.lock().unwrap().clone();
        let live: Vec<&String> = self
            .agents
            .iter()
            .filter(|a| !stopped.contains(*a))
            .collect();
        if live.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("MSET");
        for a in live {
            cmd.arg(format!("{}{a}", self.prefix)).arg(now);
        }
        cmd.exec(&mut *self.redis.lock().unwrap()).expect("MSET");
    }

    /// Indexes of the running replicas that say they lead.
    async fn leaders(&self) -> Vec<usize> {
        self.leaders_but(None).await
    }

    /// The same, not asking replica `skip` (stopped: it would not answer).
    async fn leaders_but(&self, skip: Option<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            if let Some(r) = r
                && r.metric_sum("agent_supervisor_ha_leader", &[]).await == 1.0
            {
                out.push(i);
            }
        }
        out
    }

    /// A metric summed over the running replicas.
    async fn total(&self, family: &str) -> f64 {
        let mut n = 0.0;
        for r in self.replicas.iter().flatten() {
            n += r.metric_sum(family, &[]).await;
        }
        n
    }

    async fn leader(&self) -> usize {
        let l = self.leaders().await;
        assert_eq!(l.len(), 1, "leaders: {l:?}");
        l[0]
    }

    /// Firing notifications received: (webhook-id, agent).
    fn firing(&self) -> Vec<(String, String)> {
        self.receiver
            .requests()
            .iter()
            .filter(|r| r.accepted)
            .flat_map(|r| {
                let v = r.json();
                let id = r.header("webhook-id").to_string();
                v["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a["status"] == "firing")
                    .map(move |a| (id.clone(), a["agent"].as_str().unwrap_or("").to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Three sidecars watching the same Redis, with the lease on it: one agent
/// stops, and the receiver gets exactly one notification, from the one
/// replica that leads.
async fn one_failure_one_notification(store: Store) {
    let (_store, c) = Cluster::on(store, "ha_one", 1).await;
    // It stops: stale 3 s later on every replica; one notification.
    let got = c.receiver.wait_requests(1, Duration::from_secs(15)).await;
    assert_eq!(
        got[0].json()["alerts"][0]["agent"],
        "a000",
        "{}",
        got[0].json()
    );
    holds_for("no second notification", Duration::from_secs(4), || async {
        c.receiver.requests().len() == 1
    })
    .await;
    for r in c.replicas.iter().flatten() {
        assert_eq!(
            r.agent("a000").await.expect("a000")["state"],
            "stale",
            "every replica evaluates (hot standby)"
        );
    }
    assert_eq!(c.leaders().await.len(), 1);
}

on_both_stores!(
    one_failure_one_notification,
    three_replicas_one_agent_failure_one_notification_on_redis,
    three_replicas_one_agent_failure_one_notification_on_postgres
);

/// SIGKILL the leader while it delivers a storm of 500 notifications: a
/// new leader within ttl + renew_every, which goes on from the shared
/// state: every agent notified, each under one webhook-id only (a repeat
/// of what the old leader sent but had not recorded carries the same id).
async fn failover_in_a_storm(store: Store) {
    let (_store, mut c) = Cluster::on(store, "ha_storm", 500).await;
    // The agents stop; the storm starts 3 s later. Kill the leader in its
    // middle.
    let old = c.leader().await;
    wait_until(
        "the storm is under way",
        Duration::from_secs(20),
        || async { c.receiver.requests().len() >= 100 },
    )
    .await;
    c.replicas[old].take().expect("leader").kill();
    let killed = std::time::Instant::now();
    let sent_before = c.receiver.requests().len();
    let new = wait_for("a new leader", Duration::from_secs(10), || async {
        c.leaders().await.first().copied()
    })
    .await;
    let took = killed.elapsed();
    assert_ne!(new, old);
    assert!(
        took < CLUSTER_TTL + CLUSTER_RENEW + Duration::from_millis(300),
        "a new leader {took:?} after the kill (ttl {CLUSTER_TTL:?} + renew_every {CLUSTER_RENEW:?})"
    );
    wait_until("every agent notified", Duration::from_secs(60), || async {
        let told: BTreeSet<String> = c.firing().into_iter().map(|(_, a)| a).collect();
        told.len() == c.agents.len()
    })
    .await;
    let mut ids_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, agent) in c.firing() {
        ids_of.entry(agent).or_default().insert(id);
    }
    let twice: Vec<_> = ids_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "notified under two ids: {twice:?}");
    let total = c.receiver.requests().len();
    eprintln!(
        "failover: new leader {took:?} after SIGKILL; {sent_before} notifications before the \
         kill, {total} in all for {} agents ({} repeated with the same id)",
        c.agents.len(),
        total - c.agents.len()
    );
}

on_both_stores!(
    failover_in_a_storm,
    sigkill_the_leader_in_a_storm_on_redis,
    sigkill_the_leader_in_a_storm_on_postgres_through_pgbouncer
);

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// A leader stopped (SIGSTOP) for 2 × ttl while its worker waits to retry
/// a notification, then resumed: meanwhile another replica took over the
/// shared outbox and delivered it; the resumed one, whose lease ran out by
/// its own clock, sends nothing more (its retry is fenced) and steps down.
async fn paused_leader(store: Store) {
    let (_store, c) = Cluster::on(store, "ha_paused", 1).await;
    let old = c.leader().await;
    let pid = c.replicas[old].as_ref().expect("leader").pid();
    // The agent stopped beating as the cluster started: stale within 3 s.
    // The receiver refuses the first two attempts; the leader's worker then
    // waits to retry, and is stopped there.
    c.receiver.answer_next(2, 500, None);
    wait_until("two refused attempts", Duration::from_secs(15), || async {
        c.receiver.requests().len() >= 2
    })
    .await;
    signal(pid, libc::SIGSTOP);
    let stopped = std::time::Instant::now();
    let delivered = || {
        c.receiver
            .requests()
            .iter()
            .filter(|r| r.accepted)
            .map(|r| r.header("webhook-id").to_string())
            .collect::<Vec<_>>()
    };
    wait_until(
        "the new leader delivers it",
        Duration::from_secs(15),
        || async { delivered().len() == 1 },
    )
    .await;
    let new = c.leaders_but(Some(old)).await;
    assert_eq!(new.len(), 1, "another replica leads: {new:?}");
    let refused_id = c.receiver.requests()[0].header("webhook-id").to_string();
    assert_eq!(
        delivered(),
        std::slice::from_ref(&refused_id),
        "the same notification, the same id"
    );
    // The length of the pause is what is tested, not a wait for an event.
    tokio::time::sleep_until((stopped + CLUSTER_TTL * 2).into()).await;
    signal(pid, libc::SIGCONT);
    let resumed = c.replicas[old].as_ref().expect("old leader");
    wait_until(
        "the resumed replica steps down",
        Duration::from_secs(10),
        || async { resumed.metric_sum("agent_supervisor_ha_leader", &[]).await == 0.0 },
    )
    .await;
    // The resumed replica's worker was waiting to retry that notification:
    // fenced, it never sends it again. (Other notifications may follow on a
    // loaded machine, from the new leader: a source read that timed out is
    // a source_down alert of its own.)
    let attempts_of = |id: &str| {
        c.receiver
            .requests()
            .iter()
            .filter(|r| r.header("webhook-id") == id)
            .count()
    };
    holds_for(
        "the delivered notification is never sent again",
        Duration::from_secs(4),
        || async { attempts_of(&refused_id) == 3 },
    )
    .await;
    assert_eq!(
        resumed.agent("a000").await.expect("agent")["state"],
        "stale"
    );
    assert_eq!(c.leaders().await.len(), 1);
}

on_both_stores!(
    paused_leader,
    a_leader_paused_past_its_lease_sends_nothing_when_it_resumes_on_redis,
    a_leader_paused_past_its_lease_sends_nothing_when_it_resumes_on_postgres
);

/// A silence posted to a follower is shared: the leader mutes the alert.
async fn silence_on_a_follower(store: Store) {
    let (_store, c) = Cluster::on(store, "ha_silence", 1).await;
    let leader = c.leader().await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let f = c.replicas[follower].as_ref().expect("follower");
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/silences", f.admin))
        .json(&serde_json::json!({
            "matchers": {"agent": "a000"}, "duration": "1h", "comment": "maintenance"
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let l = c.replicas[leader].as_ref().expect("leader");
    wait_until(
        "the leader has the silence",
        Duration::from_secs(5),
        || async {
            c.beat();
            let v: serde_json::Value =
                serde_json::from_str(&l.get("/api/v1/silences").await).unwrap();
            v["silences"].as_array().is_some_and(|s| s.len() == 1)
        },
    )
    .await;
    // The agent stops: the alert fires on the leader, silenced; nobody is
    // told.
    wait_until(
        "the alert fires, silenced",
        Duration::from_secs(15),
        || async {
            let v: serde_json::Value =
                serde_json::from_str(&l.get("/api/v1/alerts").await).unwrap();
            v["alerts"]
                .as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["silenced"] == true)
        },
    )
    .await;
    holds_for("nothing is sent", Duration::from_secs(3), || async {
        c.receiver.requests().is_empty()
    })
    .await;
}

on_both_stores!(
    silence_on_a_follower,
    a_silence_posted_to_a_follower_mutes_the_alert_on_the_leader_on_redis,
    a_silence_posted_to_a_follower_mutes_the_alert_on_the_leader_on_postgres
);

/// The lease store down for 3 × ttl: past fail_open_after (2 × ttl) every
/// replica notifies on its own, as documented (a page per replica rather
/// than none); when the store is back, one leader again.
async fn fail_open(store: Store) {
    fail_open_when(store, Mode::Reset).await;
}

/// The same when the store stops answering (a partition: connections
/// hang, nothing is reset), then answers again.
async fn fail_open_hung(store: Store) {
    fail_open_when(store, Mode::Blackhole).await;
}

on_both_stores!(
    fail_open_hung,
    with_the_lease_store_hung_every_replica_fails_open_on_redis,
    with_the_lease_store_hung_every_replica_fails_open_on_postgres
);

async fn fail_open_when(store: Store, gone: Mode) {
    let (s, c) = Cluster::on(store, "ha_open", 1).await;
    // The store goes away: reset (every connection, new ones too) or hung.
    s.proxy.set(gone);
    let down = std::time::Instant::now();
    wait_until(
        "every replica fails open",
        CLUSTER_TTL * 3 + Duration::from_secs(2),
        || async {
            c.beat();
            c.total("agent_supervisor_ha_fail_open").await == 3.0
        },
    )
    .await;
    let failed_open = down.elapsed();
    assert!(failed_open >= CLUSTER_TTL * 2, "{failed_open:?}");
    // The agent stops: each replica notifies on its own.
    let got = c.receiver.wait_requests(3, Duration::from_secs(15)).await;
    for r in &got {
        assert_eq!(r.json()["alerts"][0]["agent"], "a000");
    }
    // Down for 3 x ttl in all (the length of the outage is what is tested).
    tokio::time::sleep_until((down + CLUSTER_TTL * 3).into()).await;
    s.proxy.set(Mode::Pass);
    wait_until("one leader again", Duration::from_secs(10), || async {
        c.total("agent_supervisor_ha_fail_open").await == 0.0 && c.leaders().await.len() == 1
    })
    .await;
    eprintln!("fail open: every replica notifying {failed_open:?} after the lease store stopped");
}

on_both_stores!(
    fail_open,
    with_the_lease_store_down_every_replica_fails_open_on_redis,
    with_the_lease_store_down_every_replica_fails_open_on_postgres
);

/// Failover time, measured: an agent fails while the receiver refuses
/// every attempt (the notification stays pending in the shared outbox);
/// the leader is SIGKILLed and the receiver accepts again: the time from
/// the kill to the new leader's first delivered notification. Repeated
/// `HA_FAILOVERS` times (default 1), a new replica joining after each kill.
/// Before that, the store's load with three idle replicas: commands (Redis)
/// or transactions (PostgreSQL) per second per replica. With `HA_OUT`, one
/// JSON line per store is appended there (benches/scripts/failover.sh).
async fn failover_times(store: &str, lease: &str, load: impl AsyncFn() -> u64) {
    let kills: usize = std::env::var("HA_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut c = Cluster::start(kills, lease).await;
    // Every agent beats while the cluster settles, then the store's load
    // of three replicas doing nothing but lead and follow.
    let window = Duration::from_secs(5);
    let before = load().await;
    let start = std::time::Instant::now();
    holds_for("all healthy", window, || async {
        c.beat();
        true
    })
    .await;
    let per_replica = (load().await - before) as f64 / start.elapsed().as_secs_f64() / 3.0;
    let mut times = Vec::new();
    for k in 0..kills {
        let agent = c.agents[k].clone();
        c.receiver.answer_next(1_000_000, 500, None);
        c.stopped.lock().unwrap().insert(agent.clone());
        let refused_before = c.receiver.requests().len();
        wait_until(
            "the leader tries and is refused",
            Duration::from_secs(20),
            || async {
                c.beat();
                c.receiver.requests()[refused_before..]
                    .iter()
                    .any(|r| !r.accepted && r.body_text().contains(&agent))
            },
        )
        .await;
        let old = c.leader().await;
        c.replicas[old].take().expect("leader").kill();
        let killed = std::time::Instant::now();
        c.receiver.answer_normally();
        let delivered = wait_for(
            "the new leader delivers",
            Duration::from_secs(20),
            || async {
                c.beat();
                c.receiver
                    .requests()
                    .iter()
                    .find(|r| r.accepted && r.body_text().contains(&agent))
                    .map(|r| r.at)
            },
        )
        .await;
        let took = delivered.duration_since(killed);
        assert!(
            took < CLUSTER_TTL + CLUSTER_RENEW + Duration::from_secs(1),
            "failover took {took:?}"
        );
        times.push(took.as_secs_f64());
        c.add_replica().await;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    eprintln!(
        "{store}: failover (kill to first delivery) median {median:.2}s, max {max:.2}s over \
         {kills} kill(s); store load {per_replica:.1}/s per replica"
    );
    if let Ok(out) = std::env::var("HA_OUT") {
        use std::io::Write as _;
        let line = serde_json::json!({
            "store": store, "kills": kills, "median_s": median, "max_s": max,
            "times_s": times, "load_per_replica_per_s": per_replica,
            "ttl_s": CLUSTER_TTL.as_secs_f64(), "renew_every_s": CLUSTER_RENEW.as_secs_f64(),
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_failover_time_and_store_load_on_redis() {
    let store = RedisServer::start();
    let url = store.url.clone();
    let lease = format!("store: redis, url: \"{url}\", key: \"{{prefix}}lease\"");
    failover_times("redis", &lease, async || {
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut conn = client.get_connection().expect("connection");
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut conn)
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_commands_processed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_failover_time_and_store_load_on_postgres_through_pgbouncer() {
    let (_bouncer, url) = database_behind_pgbouncer("ha_failover").await;
    let db = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .expect("db")
        .to_string();
    let lease = format!("store: postgres, url: \"{url}\"");
    let admin = shared_postgres().admin_url.clone();
    failover_times("postgres", &lease, async || {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("connect");
        let n: i64 =
            sqlx::query_scalar("select xact_commit from pg_stat_database where datname = $1")
                .bind(&db)
                .fetch_one(&mut conn)
                .await
                .expect("pg_stat_database");
        u64::try_from(n).unwrap_or(0)
    })
    .await;
}

/// The other shape of several replicas, without `ha:`: each sidecar pushes
/// its alerts to one Alertmanager (`alertmanager_api`), which merges them
/// (same labels) and notifies once. Three sidecars, one agent failure: one
/// notification at Alertmanager's webhook receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_pushing_to_one_alertmanager_make_one_notification() {
    let hook = Receiver::start().await;
    let am = AlertmanagerServer::start_with(&format!(
        "route:\n  receiver: hook\n  group_by: ['alertname', 'agent']\n  group_wait: 2s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
         webhook_configs: [{{url: '{}', send_resolved: false}}]\n",
        hook.url("/am")
    ))
    .await;
    let redis_url = shared_redis_url();
    let prefix = unique_prefix("am3");
    let client = redis::Client::open(redis_url.as_str()).expect("redis client");
    let mut conn = client.get_connection().expect("redis connection");
    let mut beat = || {
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        redis::cmd("SET")
            .arg(format!("{prefix}worker"))
            .arg(now)
            .exec(&mut conn)
            .expect("SET");
    };
    let config = format!(
        r#"
startup_grace: 0s
defaults: {{stale_after: 3s}}
sources:
  - {{name: redis, type: redis, url: "{redis_url}", interval: 1s, timeout: 1s, layout: keys, pattern: "{prefix}{{agent}}"}}
receivers: [{{name: am, type: alertmanager_api, url: "{am}"}}]
routing: {{group_wait: 0s, group_interval: 1s, repeat_interval: 1h, receivers: [am]}}
"#,
        am = am.url()
    );
    beat();
    let dir = tempfile::tempdir().unwrap();
    let mut sidecars = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        sidecars.push(Sidecar::start_in(&d, name, &config, Launch::default()).await);
        beat();
    }
    for s in &sidecars {
        wait_until(
            "the sidecar sees the agent healthy",
            Duration::from_secs(10),
            || async {
                s.agent("worker")
                    .await
                    .is_some_and(|a| a["state"] == "healthy")
            },
        )
        .await;
    }
    // It stops: every sidecar sends the alert to Alertmanager.
    for s in &sidecars {
        wait_until(
            "the sidecar sent its alert",
            Duration::from_secs(15),
            || async {
                s.metric_sum(
                    "agent_supervisor_notifications_total",
                    &["receiver=\"am\"", "result=\"success\""],
                )
                .await
                    >= 1.0
            },
        )
        .await;
    }
    let got = hook.wait_requests(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].json()["alerts"][0]["labels"]["agent"], "worker");
    holds_for(
        "Alertmanager notifies once",
        Duration::from_secs(4),
        || async { hook.requests().len() == 1 },
    )
    .await;
    let alerts = am.alerts().await;
    assert_eq!(alerts.as_array().map(Vec::len), Some(1), "{alerts}");
}

/// The shared state is much larger than a lease call, and its writes get
/// their own, longer bound (at least 2 s): a Redis answering in 300 ms fails
/// the lease calls (timeout 250 ms here) but not a state write (the Redis
/// client's own command timeout once cut it at the lease's).
#[tokio::test]
async fn a_slow_store_fails_lease_calls_but_not_the_shared_state() {
    let store = Store::Redis;
    let s = store.start("ha_slow").await;
    let lease = s.lease.replace("{prefix}", &unique_prefix("slow"));
    let cfg_text = format!(
        "ha: {{lease: {{{lease}, ttl: 2s, renew_every: 500ms}}}}\nsources: [{{name: r, type: redis, url: \"redis://127.0.0.1:1\", layout: keys, pattern: \"a:{{agent}}\"}}]"
    );
    let cfg = agent_supervisor::config::parse(&cfg_text, std::path::Path::new("t.yaml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .ha
        .expect("ha");
    assert_eq!(cfg.lease.timeout, Duration::from_millis(250));
    let client = LeaseClient::new(&cfg).expect("client");
    let epoch = wait_for("the lease", Duration::from_secs(10), || async {
        client.try_acquire("me", TTL).await.ok().flatten()
    })
    .await;
    s.proxy.set(Mode::Delay(Duration::from_millis(300)));
    let state = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    assert!(
        client
            .save_state(epoch, state.clone())
            .await
            .expect("save within 2 s"),
        "{store:?}"
    );
    assert!(
        client.renew("me", epoch, TTL).await.is_err(),
        "{store:?}: a lease call past its 250 ms"
    );
    client.close().await;
}
