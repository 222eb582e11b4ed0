//! One full scan of 100k agents (`REDIS_SCAN_AGENTS` to change it) by
//! `RedisSource` (through `scan_once`, the
//! observation channel drained by another task), in each layout, next to
//! the floor: a bare fred client reading the same data the fastest simple
//! way (`SCAN` + pipelined `MGET`, or `MGET` of the known keys; `HSCAN` /
//! `ZSCAN` pages), without turning anything into readings.
//!
//! Redis: `REDIS_URL` if set, otherwise a private `redis-server` started by
//! the test harness. The data lives under a unique prefix and is deleted at
//! the end.
//!
//! Run: `cargo bench --bench redis_scan`, or
//! `REDIS_SCAN_AGENTS=1000000 cargo bench --bench redis_scan` for a million.

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use agent_supervisor::clock::Clock;
use agent_supervisor::config::{KeyPattern, RedisConfig, RedisLayout};
use agent_supervisor::core::{Observation, SourceId};
use agent_supervisor::driver::OBSERVATION_CAPACITY;
use agent_supervisor::liveness::Liveness;
use agent_supervisor::secret::SecretUrl;
use agent_supervisor::sources::redis::RedisSource;
use agent_supervisor::sources::{PollSource as _, SourceCtx, scan_once};
use agent_supervisor::telemetry::metrics::Metrics;
use criterion::Criterion;
use fred::prelude::*;
use fred::types::CustomCommand;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// How many agents: 100,000, or `REDIS_SCAN_AGENTS` (1000000 for the
/// million-agent figures).
fn agents() -> usize {
    std::env::var("REDIS_SCAN_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
/// SCAN / HSCAN / ZSCAN `COUNT` and `MGET` size, for the source (its
/// default `batch`) and the floor alike.
const BATCH: usize = 1000;

struct Fixture {
    url: String,
    prefix: String,
    client: Client,
}

impl Fixture {
    fn pattern(&self) -> String {
        format!("{}{{agent}}:last_seen", self.prefix)
    }
    fn key(&self, agent: usize) -> String {
        format!("{}agent_{agent:06}:last_seen", self.prefix)
    }
    fn hash(&self) -> String {
        format!("{}hash", self.prefix)
    }
    fn zset(&self) -> String {
        format!("{}zset", self.prefix)
    }

    async fn new() -> Fixture {
        let url = harness::shared_redis_url();
        let client = Builder::from_config(Config::from_url(&url).expect("REDIS_URL"))
            .build()
            .expect("client");
        client.init().await.expect("connect to Redis");
        let fx = Fixture {
            url,
            prefix: harness::unique_prefix("bench_scan"),
            client,
        };
        fx.fill().await;
        fx
    }

    /// 100k agents in each layout: heartbeats as Python's `time.time()`
    /// writes them (float seconds); one pipeline of MSET / HSET / ZADD
    /// commands of 1000 entries each.
    async fn fill(&self) {
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        let (hash, zset) = (self.hash(), self.zset());
        let chunks: Vec<Vec<usize>> = (0..agents())
            .collect::<Vec<_>>()
            .chunks(1000)
            .map(<[usize]>::to_vec)
            .collect();
        let writes = chunks.iter().map(|chunk| {
            let (hash, zset) = (&hash, &zset);
            async move {
                let mut mset = Vec::new();
                let mut hset = vec![Value::from(hash.as_str())];
                let mut zadd = vec![Value::from(zset.as_str())];
                for &i in chunk {
                    let ts = format!("{:.6}", now - (i % 60) as f64);
                    let agent = format!("agent_{i:06}");
                    mset.extend([Value::from(self.key(i)), Value::from(ts.as_str())]);
                    hset.extend([Value::from(agent.as_str()), Value::from(ts.as_str())]);
                    zadd.extend([Value::from(ts.as_str()), Value::from(agent.as_str())]);
                }
                let (a, b, c) = tokio::join!(
                    self.cmd("MSET", mset),
                    self.cmd("HSET", hset),
                    self.cmd("ZADD", zadd)
                );
                a.and(b).and(c).expect("fill Redis");
            }
        });
        futures::future::join_all(writes).await;
    }

    async fn cmd(&self, name: &'static str, args: Vec<Value>) -> Result<Value, Error> {
        self.client
            .custom::<Value, Value>(CustomCommand::new_static(name, None, false), args)
            .await
    }

    async fn cleanup(&self) {
        let keys: Vec<Value> = (0..agents()).map(|i| Value::from(self.key(i))).collect();
        for chunk in keys.chunks(BATCH) {
            self.cmd("UNLINK", chunk.to_vec()).await.expect("UNLINK");
        }
        self.cmd("UNLINK", vec![self.hash().into(), self.zset().into()])
            .await
            .expect("UNLINK");
        let _ = self.client.quit().await;
    }

    fn source(&self, layout: RedisLayout) -> RedisSource {
        let cfg = RedisConfig {
            url: SecretUrl::parse(&self.url).expect("url"),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            layout,
            batch: NonZeroUsize::new(BATCH).expect("non-zero"),
            json_field: "last_seen".into(),
            status_field: "status".into(),
        };
        let src = RedisSource::new(SourceId::from("redis"), &cfg, Clock::System).expect("source");
        src.connect();
        src
    }
}

/// One `scan_once`, its observations drained by another task as the core
/// would. Returns the number of readings.
async fn source_scan(src: &RedisSource, metrics: &Arc<Metrics>) -> usize {
    let (tx, mut rx) = mpsc::channel(OBSERVATION_CAPACITY);
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while let Some(obs) = rx.recv().await {
            match obs {
                Observation::Batch { readings, .. } => n += readings.len(),
                Observation::ScanComplete { .. } => break,
                Observation::SourceError { error, .. } => panic!("scan failed: {error:?}"),
                _ => {}
            }
        }
        n
    });
    let ctx = SourceCtx {
        id: SourceId::from("redis"),
        tx: tx.clone(),
        urgent: tx,
        metrics: metrics.clone(),
        clock: Clock::System,
        liveness: Liveness::default(),
    };
    scan_once(src, &ctx).await.expect("scan");
    drain.await.expect("drain task")
}

fn scan_reply(v: Value) -> (String, Vec<Value>) {
    let Value::Array(mut parts) = v else {
        panic!("not a scan reply")
    };
    let items = parts.pop().map(Value::into_array).unwrap_or_default();
    let cursor = parts.pop().and_then(|c| c.as_string()).expect("cursor");
    (cursor, items)
}

/// Floor for keys: SCAN pages, each page's MGET in flight with the next
/// SCAN.
async fn floor_scan_mget(c: &Client, glob: &str) -> usize {
    let mut cursor = String::from("0");
    let mut pending: Vec<Key> = Vec::new();
    let mut n = 0;
    loop {
        let scan =
            c.scan_page::<Value, _, _>(cursor.clone(), glob.to_string(), Some(BATCH as u32), None);
        let keys = std::mem::take(&mut pending);
        let mget = async {
            if keys.is_empty() {
                Ok(Vec::new())
            } else {
                c.mget::<Vec<Value>, _>(keys).await
            }
        };
        let (page, values) = tokio::join!(scan, mget);
        n += values.expect("MGET").len();
        let (next, keys) = scan_reply(page.expect("SCAN"));
        pending = keys
            .into_iter()
            .map(|k| k.convert::<Key>().expect("key"))
            .collect();
        if next == "0" {
            break;
        }
        cursor = next;
    }
    if !pending.is_empty() {
        n += c.mget::<Vec<Value>, _>(pending).await.expect("MGET").len();
    }
    n
}

/// Floor for keys whose ids are known: MGET in batches, all pipelined.
async fn floor_mget_known(c: &Client, keys: &[Key]) -> usize {
    let reads = keys
        .chunks(BATCH)
        .map(|chunk| c.mget::<Vec<Value>, _>(chunk.to_vec()));
    futures::future::try_join_all(reads)
        .await
        .expect("MGET")
        .iter()
        .map(Vec::len)
        .sum()
}

/// Floor for a hash or sorted set: HSCAN / ZSCAN pages.
async fn floor_pages(c: &Client, command: &'static str, key: &str) -> usize {
    let mut cursor = String::from("0");
    let mut n = 0;
    loop {
        let page = c
            .custom::<Value, Value>(
                CustomCommand::new_static(command, None, false),
                vec![
                    key.into(),
                    cursor.as_str().into(),
                    "COUNT".into(),
                    BATCH.to_string().into(),
                ],
            )
            .await
            .expect(command);
        let (next, items) = scan_reply(page);
        n += items.len() / 2;
        if next == "0" {
            return n;
        }
        cursor = next;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fx = rt.block_on(Fixture::new());
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c, &rt, &fx);
    c.final_summary();
    rt.block_on(fx.cleanup());
}

fn bench(c: &mut Criterion, rt: &Runtime, fx: &Fixture) {
    let metrics = Arc::new(Metrics::new(0).expect("metrics"));
    let keys_layout = RedisLayout::Keys(KeyPattern::parse(&fx.pattern()).expect("pattern"));
    let glob = KeyPattern::parse(&fx.pattern())
        .expect("pattern")
        .scan_match();
    let known: Vec<Key> = (0..agents()).map(|i| Key::from(fx.key(i))).collect();
    let layouts = [
        ("keys", keys_layout),
        ("hash", RedisLayout::Hash { key: fx.hash() }),
        ("zset", RedisLayout::Zset { key: fx.zset() }),
    ];

    let size = match agents() {
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    };
    let mut g = c.benchmark_group(format!("redis_scan_{size}"));
    for (name, layout) in layouts {
        let src = fx.source(layout);
        // Every agent, once, before timing anything.
        assert_eq!(rt.block_on(source_scan(&src, &metrics)), agents(), "{name}");
        g.bench_function(format!("source/{name}"), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(source_scan(&src, &metrics).await) })
        });
        match name {
            "keys" => {
                assert_eq!(rt.block_on(floor_scan_mget(&fx.client, &glob)), agents());
                g.bench_function("floor_scan_mget/keys", |b| {
                    b.to_async(rt)
                        .iter(|| async { black_box(floor_scan_mget(&fx.client, &glob).await) })
                });
                assert_eq!(rt.block_on(floor_mget_known(&fx.client, &known)), agents());
                g.bench_function("floor_mget_known/keys", |b| {
                    b.to_async(rt)
                        .iter(|| async { black_box(floor_mget_known(&fx.client, &known).await) })
                });
            }
            _ => {
                let (command, key) = if name == "hash" {
                    ("HSCAN", fx.hash())
                } else {
                    ("ZSCAN", fx.zset())
                };
                assert_eq!(
                    rt.block_on(floor_pages(&fx.client, command, &key)),
                    agents()
                );
                g.bench_function(format!("floor_{}/{name}", command.to_lowercase()), |b| {
                    b.to_async(rt)
                        .iter(|| async { black_box(floor_pages(&fx.client, command, &key).await) })
                });
            }
        }
        rt.block_on(src.disconnect());
    }
    g.finish();
}
