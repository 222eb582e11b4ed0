//! The `keys` layout: one string key per agent, discovered with `SCAN MATCH`
//! and read with batched `MGET`.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use fred::interfaces::KeysInterface;
use fred::types::{Key, Value};
use futures::future::try_join_all;

use crate::config::KeyPattern;
use crate::core::{AgentId, Reading};
use crate::sources::ScanSink;
use crate::sources::common::SeenIds;

use super::RedisSource;
use super::conn::{Handle, Stop};
use super::value::{Slot, array_of, scan_reply, value_text};

impl RedisSource {
    pub(super) async fn scan_keys(
        &self,
        h: &Handle,
        pattern: &KeyPattern,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<(), Stop> {
        let glob = pattern.scan_match();
        let count = u32::try_from(self.batch).unwrap_or(u32::MAX);
        let mut seen = SeenIds::default();
        let mut skipped = 0usize;
        let mut cursor = String::from("0");
        let mut done = false;
        // Keys of the last SCAN page, not read yet.
        let mut scanned: Vec<Value> = Vec::new();
        // Read, not delivered yet.
        let mut readings: Vec<Reading> = Vec::new();
        loop {
            // SCAN of page n+1, MGET of page n and delivery of page n-1
            // overlap (fred pipelines the commands on the one connection);
            // the SCAN is sent first, so that Redis works on it while the
            // other two are prepared.
            let scan = async {
                if done {
                    return Ok(None);
                }
                h.client
                    .scan_page::<Value, _, _>(cursor.clone(), glob.clone(), Some(count), None)
                    .await
                    .map(Some)
            };
            let keys = std::mem::take(&mut scanned);
            let read = async {
                let found = new_keys(pattern, keys, &mut seen, &mut skipped);
                self.read_keys(h, found, offset).await
            };
            let send = sink.send(std::mem::take(&mut readings));
            let (page, read, delivered) = tokio::join!(biased; scan, read, send);
            if !delivered {
                // The core is gone (shutting down): nobody to read for.
                return Ok(());
            }
            readings = read?;
            match page.map_err(|e| self.command_error(h, e))? {
                Some(page) => {
                    let (next, keys) = scan_reply(page).ok_or_else(|| self.bad_reply(h, "SCAN"))?;
                    scanned = keys;
                    done = next == "0";
                    cursor = next;
                }
                None if readings.is_empty() => break,
                None => {}
            }
        }
        self.skipped.note(
            &self.id,
            skipped,
            "Keys whose name is not valid UTF-8 cannot name an agent; skipped.",
        );
        Ok(())
    }

    /// Readings of scanned keys; keys gone since the SCAN are left out.
    async fn read_keys(
        &self,
        h: &Handle,
        found: Vec<(AgentId, Key)>,
        offset: TimeDelta,
    ) -> Result<Vec<Reading>, Stop> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Key> = found.iter().map(|(_, k)| k.clone()).collect();
        let slots = self.get_strings(h, &keys).await?;
        Ok(found
            .into_iter()
            .zip(slots)
            .filter(|(_, s)| !matches!(s, Slot::Missing))
            .map(|((agent, _), slot)| self.reading(agent, slot, offset, false))
            .collect())
    }

    /// The string values of `keys`, by batched `MGET`. MGET answers nil for a
    /// missing key and for a key of another type alike: those are told apart
    /// with `TYPE` (rare, so not worth a round trip in the common case).
    pub(super) async fn get_strings(&self, h: &Handle, keys: &[Key]) -> Result<Vec<Slot>, Stop> {
        let values = self.mget(h, keys).await?;
        let mut slots: Vec<Slot> = Vec::with_capacity(values.len());
        let mut nils = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            if v.is_null() {
                nils.push(i);
                slots.push(Slot::Missing);
            } else {
                slots.push(Slot::Value(v));
            }
        }
        if nils.is_empty() {
            return Ok(slots);
        }
        let types = try_join_all(nils.iter().map(|&i| async move {
            h.client
                .r#type::<Value, _>(keys[i].clone())
                .await
                .map_err(|e| self.command_error(h, e))
        }))
        .await?;
        // A key created between MGET and TYPE is read again.
        let mut again = Vec::new();
        for (&i, t) in nils.iter().zip(types) {
            let t = value_text(&t).map(|t| t.to_string()).unwrap_or_default();
            match t.as_str() {
                "none" | "" => {}
                "string" => again.push(i),
                other => slots[i] = Slot::WrongType(other.to_string()),
            }
        }
        if !again.is_empty() {
            let again_keys: Vec<Key> = again.iter().map(|&i| keys[i].clone()).collect();
            for (&i, v) in again.iter().zip(self.mget(h, &again_keys).await?) {
                if !v.is_null() {
                    slots[i] = Slot::Value(v);
                }
            }
        }
        Ok(slots)
    }

    /// `MGET` in batches of `batch` keys, sent together (pipelined). On a
    /// Redis Cluster node, one `MGET` per hash slot (a cluster refuses a
    /// command whose keys are in several slots), in batches too.
    async fn mget(&self, h: &Handle, keys: &[Key]) -> Result<Vec<Value>, Stop> {
        if !self.is_cluster() {
            let pages = try_join_all(
                keys.chunks(self.batch)
                    .map(|chunk| self.mget_one(h, chunk.to_vec())),
            )
            .await?;
            return Ok(pages.into_iter().flatten().collect());
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_slot.entry(key.cluster_hash()).or_default().push(i);
        }
        let batches: Vec<&[usize]> = by_slot
            .values()
            .flat_map(|group| group.chunks(self.batch))
            .collect();
        let pages = try_join_all(batches.iter().map(|batch| {
            let chunk: Vec<Key> = batch.iter().map(|&i| keys[i].clone()).collect();
            self.mget_one(h, chunk)
        }))
        .await?;
        let mut values = vec![Value::Null; keys.len()];
        for (batch, page) in batches.iter().zip(pages) {
            for (&i, v) in batch.iter().zip(page) {
                values[i] = v;
            }
        }
        Ok(values)
    }

    async fn mget_one(&self, h: &Handle, keys: Vec<Key>) -> Result<Vec<Value>, Stop> {
        let n = keys.len();
        let reply: Value = h
            .client
            .mget(keys)
            .await
            .map_err(|e| self.command_error(h, e))?;
        array_of(reply, n).ok_or_else(|| Stop::from(self.bad_reply(h, "MGET")))
    }
}

/// Keys of a SCAN page not seen before in this scan, with their agents.
/// The key is kept as returned (no copy) for the MGET.
fn new_keys(
    pattern: &KeyPattern,
    keys: Vec<Value>,
    seen: &mut SeenIds,
    skipped: &mut usize,
) -> Vec<(AgentId, Key)> {
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let Value::String(key) = key else {
            // Not UTF-8: cannot name an agent.
            *skipped += 1;
            continue;
        };
        if let Some(agent) = pattern.agent(&key)
            && seen.first_time(agent)
        {
            found.push((AgentId::new(agent), Key::from(key)));
        }
    }
    found
}
