//! Redis Cluster: one client per primary, the slot map read with
//! `CLUSTER SLOTS` at every scan.
//!
//! fred's own cluster client is all or nothing: while one primary cannot be
//! reached it reconnects as a whole, and no command reaches the others. A
//! monitor must keep reading what it can, so each primary gets its own
//! client (and its own connection state, see [`Conn`]):
//!
//! * every scan first asks a node that answers (a known primary, else a
//!   seed of the URL) for the slot map, so a failover or a resharding is
//!   followed within one interval;
//! * `keys` is scanned primary by primary (`SCAN` of that node, one `MGET`
//!   per hash slot); a primary that cannot be read makes the agents whose
//!   key hashes to its slots [`Reading::Unreadable`] (`unknown`, their
//!   deadlines frozen) while the others are judged as usual; only when no
//!   primary can be read is the whole source down;
//! * `hash` and `zset` live in one slot: they are read from its primary,
//!   and that primary down is the whole source down;
//! * point reads go to the primary of each key's slot; one that cannot be
//!   read answers `Unreadable` for its agents.
//!
//! A redirection (`MOVED`, during a resharding) fails that node's read for
//! this scan; the next scan reads the new map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::TimeDelta;

use fred::interfaces::ClientLike as _;
use fred::types::config::{Server, ServerConfig};
use fred::types::{Builder, ClusterHash, CustomCommand, Value};
use fred::util::redis_keyslot;
use futures::future::join_all;
use tracing::{info, warn};

use crate::config::{KeyPattern, RedisLayout};
use crate::core::{AgentFilter, AgentId, ErrorKind, Reading};
use crate::sources::common::lock;
use crate::sources::{ScanSink, SourceError};

use super::conn::{Conn, Handle};
use super::value::value_text;
use super::{RedisSource, server_name};

/// The primaries of a cluster and the slots each serves.
pub(super) struct Cluster {
    /// The nodes named in the URL, asked for the slot map when no known
    /// primary answers.
    seeds: Vec<Server>,
    /// The source's client settings; each node's client is built from it.
    builder: Builder,
    /// One client per primary, by `host:port`.
    nodes: Mutex<BTreeMap<String, Arc<Conn>>>,
    /// The last slot map read.
    shards: Mutex<Arc<Vec<Shard>>>,
    /// Primaries that could not be read by the last scan (for logs).
    down: Mutex<BTreeSet<String>>,
}

/// One primary and its slot ranges (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Shard {
    pub(super) primary: Server,
    pub(super) ranges: Vec<(u16, u16)>,
}

impl Shard {
    fn serves(&self, slot: u16) -> bool {
        in_ranges(&self.ranges, slot)
    }

    fn describe(&self) -> String {
        format!(
            "{} (slots {})",
            server_name(&self.primary),
            show_ranges(&self.ranges)
        )
    }
}

fn in_ranges(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
}

fn show_ranges(ranges: &[(u16, u16)]) -> String {
    let shown: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    shown.join(", ")
}

/// The hash slots of a cluster.
const SLOTS: u32 = 16384;

/// The slot ranges no primary serves (a cluster still being set up, or
/// slots being moved by hand).
fn uncovered(shards: &[Shard]) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = shards.iter().flat_map(|s| s.ranges.clone()).collect();
    ranges.sort_unstable();
    let mut gaps = Vec::new();
    let mut next: u32 = 0;
    for (a, b) in ranges {
        if u32::from(a) > next {
            gaps.push((next as u16, a - 1));
        }
        next = next.max(u32::from(b) + 1);
    }
    if next < SLOTS {
        gaps.push((next as u16, (SLOTS - 1) as u16));
    }
    gaps
}

impl Cluster {
    pub(super) fn new(seeds: Vec<Server>, builder: Builder) -> Self {
        Self {
            seeds,
            builder,
            nodes: Mutex::new(BTreeMap::new()),
            shards: Mutex::new(Arc::new(Vec::new())),
            down: Mutex::new(BTreeSet::new()),
        }
    }

    /// The client of `server`, made on first use.
    fn conn(&self, server: &Server) -> Arc<Conn> {
        let name = server_name(server);
        lock(&self.nodes)
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Conn::new(name, self.node_builder(server))))
            .clone()
    }

    fn node_builder(&self, server: &Server) -> Builder {
        let mut builder = self.builder.clone();
        if let Some(config) = builder.get_config() {
            let mut config = config.clone();
            config.server = ServerConfig::Centralized {
                server: server.clone(),
            };
            builder.set_config(config);
        }
        builder
    }

    /// Primaries first (their clients are connected), then the seeds.
    fn candidates(&self) -> Vec<Server> {
        let mut out: Vec<Server> = lock(&self.shards)
            .iter()
            .map(|s| s.primary.clone())
            .collect();
        for seed in &self.seeds {
            if !out.contains(seed) {
                out.push(seed.clone());
            }
        }
        out
    }

    /// Keep the clients of these primaries only.
    fn retain(&self, shards: &[Shard]) -> Vec<Arc<Conn>> {
        let keep: BTreeSet<String> = shards.iter().map(|s| server_name(&s.primary)).collect();
        let mut nodes = lock(&self.nodes);
        let gone: Vec<String> = nodes
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        gone.iter().filter_map(|k| nodes.remove(k)).collect()
    }

    pub(super) fn all_conns(&self) -> Vec<Arc<Conn>> {
        let mut nodes = lock(&self.nodes);
        std::mem::take(&mut *nodes).into_values().collect()
    }

    /// Log the primaries that went down or came back since the last scan.
    fn note_down(&self, source: &str, now_down: &[(Shard, SourceError)]) {
        let names: BTreeSet<String> = now_down
            .iter()
            .map(|(s, _)| server_name(&s.primary))
            .collect();
        let mut down = lock(&self.down);
        for (shard, e) in now_down {
            if !down.contains(&server_name(&shard.primary)) {
                warn!(source = %source, node = %shard.describe(), error = %e, "Redis Cluster primary cannot be read; the agents in its slots are unknown until it can.");
            }
        }
        for name in down.difference(&names) {
            info!(source = %source, node = %name, "Redis Cluster primary is readable again.");
        }
        *down = names;
    }
}

impl RedisSource {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.deployment, super::Deployment::Cluster(_))
    }

    /// Read the slot map from the first node that answers, and the offset
    /// of its clock from ours.
    async fn topology(&self, c: &Cluster) -> Result<(Arc<Vec<Shard>>, TimeDelta), SourceError> {
        let mut last = None;
        for server in c.candidates() {
            let conn = c.conn(&server);
            let read = async {
                let h = self.handle(&conn)?;
                let epoch = self.ready(&h).await?;
                let asked = async {
                    let reply: Value = h
                        .client
                        .custom(
                            CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                            vec![Value::from("SLOTS")],
                        )
                        .await
                        .map_err(|e| self.command_error(&h, e))?;
                    let shards = parse_slots(reply, &server.host)
                        .ok_or_else(|| self.bad_reply(&h, "CLUSTER SLOTS"))?;
                    Ok((shards, self.measure_offset(&h).await?))
                };
                match asked.await {
                    Ok(found) => Ok(found),
                    Err(stop) => Err(self.explain(&h, epoch, stop).await),
                }
            };
            match read.await {
                Ok((shards, offset)) => {
                    // Every primary's client connects from now on, side by
                    // side, rather than when its turn to be read comes.
                    for shard in &shards {
                        self.start_client(&c.conn(&shard.primary));
                    }
                    // Clients of nodes that serve no slot now (a seed that
                    // is a replica, a primary failed over) are closed.
                    for gone in c.retain(&shards) {
                        self.close_client(&gone).await;
                    }
                    let shards = Arc::new(shards);
                    *lock(&c.shards) = shards.clone();
                    return Ok((shards, offset));
                }
                Err(e) => last = Some(e),
            }
        }
        let (kind, last) = last.map_or((ErrorKind::Other, String::new()), |e| (e.kind, e.message));
        Err(self.error(
            kind,
            format!("no node of the Redis Cluster answers (last: {last})"),
        ))
    }

    /// A full scan of a cluster (see the module doc).
    pub(super) async fn scan_cluster(
        &self,
        c: &Cluster,
        sink: &mut ScanSink,
    ) -> Result<(), SourceError> {
        let (shards, offset) = self.topology(c).await?;
        let pattern = match &self.layout {
            RedisLayout::Keys(pattern) => pattern,
            RedisLayout::Hash { key } | RedisLayout::Zset { key } => {
                let zset = matches!(self.layout, RedisLayout::Zset { .. });
                let h = self.owner(c, &shards, key)?;
                let epoch = self.ready(&h).await?;
                return match self.scan_pairs(&h, key, zset, offset, sink).await {
                    Ok(()) => Ok(()),
                    Err(stop) => Err(self.explain(&h, epoch, stop).await),
                };
            }
        };
        let mut down: Vec<(Shard, SourceError)> = Vec::new();
        for shard in shards.iter() {
            let conn = c.conn(&shard.primary);
            let read = async {
                let h = self.handle(&conn)?;
                let epoch = self.ready(&h).await?;
                match self.scan_keys(&h, pattern, offset, sink).await {
                    Ok(()) => Ok(()),
                    Err(stop) => Err(self.explain(&h, epoch, stop).await),
                }
            };
            if let Err(e) = read.await {
                down.push((shard.clone(), e));
            }
        }
        c.note_down(self.id.as_str(), &down);
        if !shards.is_empty() && down.len() == shards.len() {
            let (_, e) = down.swap_remove(0);
            return Err(e);
        }
        let mut parts: Vec<(SourceError, Vec<(u16, u16)>)> = down
            .into_iter()
            .map(|(shard, e)| {
                let message = format!("node {} cannot be read: {}", shard.describe(), e.message);
                (self.error(e.kind, message), shard.ranges)
            })
            .collect();
        let gaps = uncovered(&shards);
        if !gaps.is_empty() {
            let message = format!(
                "hash slots {} are served by no node of the cluster",
                show_ranges(&gaps)
            );
            parts.push((self.error(ErrorKind::Other, message), gaps));
        }
        for (e, ranges) in parts {
            if !sink
                .partly_down(e.failure(), slots_filter(pattern, ranges))
                .await
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The handle of the primary serving `key`.
    fn owner(&self, c: &Cluster, shards: &[Shard], key: &str) -> Result<Handle, SourceError> {
        let slot = redis_keyslot(key.as_bytes());
        let shard = shards.iter().find(|s| s.serves(slot)).ok_or_else(|| {
            self.error(
                ErrorKind::Other,
                format!("no primary serves hash slot {slot} (key {key:?})"),
            )
        })?;
        self.handle(&c.conn(&shard.primary))
    }

    /// Point reads on a cluster: each key from the primary of its slot.
    pub(super) async fn point_read_cluster(
        &self,
        c: &Cluster,
        agents: &[AgentId],
    ) -> Result<Vec<Reading>, SourceError> {
        let mut shards = lock(&c.shards).clone();
        if shards.is_empty() {
            shards = self.topology(c).await?.0;
        }
        let pattern = match &self.layout {
            RedisLayout::Keys(pattern) => pattern,
            RedisLayout::Hash { key } | RedisLayout::Zset { key } => {
                let h = self.owner(c, &shards, key)?;
                return self.point_read_on(&h, agents).await;
            }
        };
        // Agents by the primary of their key's slot; those of a slot no
        // node serves cannot be read at all.
        let mut groups: BTreeMap<usize, Vec<AgentId>> = BTreeMap::new();
        let mut unserved: Vec<Reading> = Vec::new();
        let unique: BTreeSet<&AgentId> = agents.iter().collect();
        for agent in unique {
            let slot = redis_keyslot(pattern.key(agent.as_str()).as_bytes());
            match shards.iter().position(|s| s.serves(slot)) {
                Some(i) => groups.entry(i).or_default().push(agent.clone()),
                None => unserved.push(Reading::Unreadable {
                    agent: agent.clone(),
                    reason: format!("hash slot {slot} is served by no node of the cluster"),
                }),
            }
        }
        let groups = groups
            .into_iter()
            .filter_map(|(i, group)| Some((shards.get(i)?, group)));
        let reads = join_all(groups.map(|(shard, group)| async move {
            let read = async {
                let h = self.handle(&c.conn(&shard.primary))?;
                self.point_read_on(&h, &group).await
            };
            match read.await {
                Ok(readings) => readings,
                Err(e) => {
                    let reason = format!("node {} cannot be read: {}", shard.describe(), e);
                    group
                        .into_iter()
                        .map(|agent| Reading::Unreadable {
                            agent,
                            reason: reason.clone(),
                        })
                        .collect()
                }
            }
        }))
        .await;
        // One reading per agent asked, in the order asked (an agent asked
        // twice is answered twice).
        let by_agent: BTreeMap<AgentId, Reading> = reads
            .into_iter()
            .flatten()
            .chain(unserved)
            .map(|r| (r.agent().clone(), r))
            .collect();
        Ok(agents
            .iter()
            .filter_map(|a| by_agent.get(a).cloned())
            .collect())
    }
}

/// Agents whose key (by `pattern`) hashes to a slot in `ranges`.
fn slots_filter(pattern: &KeyPattern, ranges: Vec<(u16, u16)>) -> AgentFilter {
    let pattern = pattern.clone();
    AgentFilter::new(move |agent| in_ranges(&ranges, redis_keyslot(pattern.key(agent).as_bytes())))
}

/// The reply of `CLUSTER SLOTS` as primaries and their slot ranges:
/// `[[start, end, [host, port, id, ...], replicas...], ...]`. An empty host
/// (a node that does not know its own address) is the host asked.
pub(super) fn parse_slots(reply: Value, asked_host: &str) -> Option<Vec<Shard>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let mut shards: Vec<Shard> = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let mut fields = fields.into_iter();
        let start = slot_number(fields.next()?)?;
        let end = slot_number(fields.next()?)?;
        let Value::Array(node) = fields.next()? else {
            return None;
        };
        let mut node = node.into_iter();
        let host = value_text(&node.next()?).ok()?.into_owned();
        let port = u16::try_from(node.next()?.as_i64()?).ok()?;
        let host = if host.is_empty() || host == "?" {
            asked_host.to_string()
        } else {
            host
        };
        let primary = Server::new(host, port);
        match shards.iter_mut().find(|s| s.primary == primary) {
            Some(s) => s.ranges.push((start, end)),
            None => shards.push(Shard {
                primary,
                ranges: vec![(start, end)],
            }),
        }
    }
    for s in &mut shards {
        s.ranges.sort_unstable();
    }
    Some(shards)
}

fn slot_number(v: Value) -> Option<u16> {
    u16::try_from(v.as_i64()?).ok().filter(|s| *s < 16384)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![host.into(), Value::Integer(port), id.into()])
    }

    #[test]
    fn the_slot_map_groups_the_ranges_of_each_primary() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Integer(0),
                Value::Integer(5460),
                node("10.0.0.1", 7000, "a"),
                node("10.0.0.4", 7000, "d"),
            ]),
            Value::Array(vec![
                Value::Integer(10923),
                Value::Integer(16383),
                node("", 7002, "c"),
            ]),
            Value::Array(vec![
                Value::Integer(5461),
                Value::Integer(10922),
                node("10.0.0.1", 7000, "a"),
            ]),
        ]);
        let shards = parse_slots(reply, "10.0.0.9").unwrap();
        assert_eq!(
            shards,
            vec![
                Shard {
                    primary: Server::new("10.0.0.1", 7000),
                    ranges: vec![(0, 5460), (5461, 10922)],
                },
                Shard {
                    primary: Server::new("10.0.0.9", 7002),
                    ranges: vec![(10923, 16383)],
                },
            ]
        );
        assert!(shards[0].serves(10922) && !shards[0].serves(10923));
        assert_eq!(
            shards[0].describe(),
            "10.0.0.1:7000 (slots 0-5460, 5461-10922)"
        );
    }

    #[test]
    fn slots_no_primary_serves_are_found() {
        let shard = |ranges: Vec<(u16, u16)>| Shard {
            primary: Server::new("h", 1),
            ranges,
        };
        assert!(uncovered(&[shard(vec![(0, 8000)]), shard(vec![(8001, 16383)])]).is_empty());
        assert_eq!(
            uncovered(&[shard(vec![(10, 20), (40, 16000)])]),
            vec![(0, 9), (21, 39), (16001, 16383)]
        );
        assert_eq!(uncovered(&[]), vec![(0, 16383)]);
    }

    #[test]
    fn a_reply_that_is_not_a_slot_map_is_refused() {
        assert!(parse_slots(Value::from("OK"), "h").is_none());
        let bad = Value::Array(vec![Value::Array(vec![
            Value::Integer(0),
            Value::Integer(99_999),
            node("h", 1, "a"),
        ])]);
        assert!(parse_slots(bad, "h").is_none());
    }

    #[test]
    fn the_filter_selects_the_agents_whose_key_is_in_the_shard() {
        let pattern = KeyPattern::parse("agent:{agent}:last_seen").unwrap();
        let slot = redis_keyslot(b"agent:a1:last_seen");
        let shard = Shard {
            primary: Server::new("h", 1),
            ranges: vec![(slot, slot)],
        };
        let f = slots_filter(&pattern, shard.ranges.clone());
        assert!(f.matches(&AgentId::from("a1")));
        assert_ne!(redis_keyslot(b"agent:a2:last_seen"), slot);
        assert!(!f.matches(&AgentId::from("a2")));
    }
}
