//! Several replicas, one leader: the lease on a real Redis and on a real
//! PostgreSQL through PgBouncer in transaction mode.

use std::time::Duration;

use agent_supervisor::config::ha::{HaConfig, LeaseConfig, LeaseStore};
use agent_supervisor::ha::LeaseClient;
use agent_supervisor::secret::SecretUrl;

use crate::harness::{
    holds_for, shared_postgres, shared_redis_url, start_pgbouncer, unique_prefix, wait_for,
    wait_until,
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

#[tokio::test]
async fn the_postgres_lease_works_through_pgbouncer_in_transaction_mode() {
    let server = shared_postgres();
    let direct = server.create_database("ha_lease").await;
    let db = direct.rsplit('/').next().expect("db name").to_string();
    let bouncer = start_pgbouncer(server.port, &db).await;
    let via = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
        bouncer.port
    );
    lease_contract(LeaseStore::Postgres {
        url: SecretUrl::parse(&via).expect("url"),
        table: "agent_supervisor_ha".into(),
        key: "agent-supervisor".into(),
        tls_ca_file: None,
    })
    .await;
}

/// Three sidecars watching the same Redis, with the lease on it: one agent
/// stops, and the receiver gets exactly one notification, from the one
/// replica that leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_agent_failure_one_notification() {
    let redis_url = shared_redis_url();
    let prefix = unique_prefix("ha3");
    let receiver = Receiver::start().await;
    let config = format!(
        r#"
startup_grace: 0s
defaults: {{stale_after: 2s}}
sources:
  - {{name: redis, type: redis, url: "{redis_url}", interval: 1s, timeout: 1s, layout: keys, pattern: "{prefix}{{agent}}"}}
receivers: [{{name: hook, type: webhook, url: "{hook}"}}]
routing: {{group_wait: 0s, group_interval: 1s, repeat_interval: 1h, receivers: [hook]}}
ha:
  lease: {{store: redis, source: redis, key: "{prefix}lease", ttl: 2s, renew_every: 500ms}}
"#,
        hook = receiver.url("/hook")
    );
    // The agent beats until every replica is up and one leads.
    let client = redis::Client::open(redis_url.as_str()).expect("redis client");
    let conn = std::sync::Mutex::new(client.get_connection().expect("redis connection"));
    let key = format!("{prefix}worker");
    let beat = || {
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        redis::cmd("SET")
            .arg(&key)
            .arg(now)
            .exec(&mut *conn.lock().unwrap())
            .expect("SET");
    };
    beat();
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        let cfg = config.replace("ha:\n", &format!("ha:\n  replica_id: {name}\n"));
        let dir = dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        replicas.push(Sidecar::start_in(&dir, name, &cfg, Launch::default()).await);
        beat();
    }
    let leaders = || async {
        let mut n = 0.0;
        for r in &replicas {
            n += r.metric_sum("agent_supervisor_ha_leader", &[]).await;
        }
        n
    };
    wait_until("one replica leads", Duration::from_secs(10), || async {
        beat();
        leaders().await == 1.0
    })
    .await;
    for r in &replicas {
        wait_until(
            "every replica sees the agent healthy",
            Duration::from_secs(10),
            || async {
                beat();
                r.agent("worker")
                    .await
                    .is_some_and(|a| a["state"] == "healthy")
            },
        )
        .await;
    }
    // It stops: stale 2 s later on every replica; one notification.
    let got = receiver.wait_requests(1, Duration::from_secs(15)).await;
    assert_eq!(
        got[0].json()["alerts"][0]["agent"],
        "worker",
        "{}",
        got[0].json()
    );
    holds_for("no second notification", Duration::from_secs(4), || async {
        receiver.requests().len() == 1
    })
    .await;
    for r in &replicas {
        assert_eq!(
            r.agent("worker").await.expect("worker")["state"],
            "stale",
            "every replica evaluates (hot standby)"
        );
    }
    assert_eq!(leaders().await, 1.0);
}
