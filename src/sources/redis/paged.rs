//! The `hash` and `zset` layouts: one structure, field or member = agent,
//! paged with `HSCAN` / `ZSCAN` and point-read with `HMGET` / `ZMSCORE`.
//! The two differ only in their commands and in how a value is read (text
//! or a score).

use chrono::TimeDelta;
use fred::interfaces::{ClientLike as _, HashesInterface as _, SortedSetsInterface as _};
use fred::types::{ClusterHash, CustomCommand, Value};
use futures::future::try_join_all;

use crate::core::AgentId;
use crate::sources::ScanSink;
use crate::sources::common::SeenIds;

use super::RedisSource;
use super::conn::{Handle, Stop};
use super::value::{Slot, array_of, scan_reply, value_text};

impl RedisSource {
    /// `HSCAN` (field = agent, value = timestamp) or `ZSCAN` (member = agent,
    /// score = timestamp) page by page; the next page is fetched while the
    /// previous one is delivered.
    pub(super) async fn scan_pairs(
        &self,
        h: &Handle,
        key: &str,
        zset: bool,
        offset: TimeDelta,
        sink: &mut ScanSink,
    ) -> Result<(), Stop> {
        let (command, want) = if zset {
            ("ZSCAN", "sorted set")
        } else {
            ("HSCAN", "hash")
        };
        let count = self.batch.to_string();
        let mut seen = SeenIds::default();
        let mut skipped = 0usize;
        let mut cursor = String::from("0");
        let mut done = false;
        // Entries of the last page, not converted yet.
        let mut items: Vec<Value> = Vec::new();
        loop {
            // The next page is requested first; the last one is converted
            // and delivered while Redis works on it.
            let fetch = async {
                if done {
                    return Ok(None);
                }
                h.client
                    .custom::<Value, Value>(
                        CustomCommand::new_static(command, ClusterHash::FirstKey, false),
                        vec![
                            key.into(),
                            cursor.as_str().into(),
                            "COUNT".into(),
                            count.as_str().into(),
                        ],
                    )
                    .await
                    .map(Some)
            };
            let page_items = std::mem::take(&mut items);
            let deliver = async {
                let mut readings = Vec::with_capacity(page_items.len() / 2);
                let mut entries = page_items.into_iter();
                while let (Some(name), Some(value)) = (entries.next(), entries.next()) {
                    let Ok(name) = value_text(&name) else {
                        skipped += 1;
                        continue;
                    };
                    if !seen.first_time(&name) {
                        continue;
                    }
                    let agent = AgentId::new(name.as_ref());
                    readings.push(self.reading(agent, Slot::Value(value), offset, zset));
                }
                sink.send(readings).await
            };
            let (page, delivered) = tokio::join!(biased; fetch, deliver);
            if !delivered {
                return Ok(());
            }
            match page.map_err(|e| self.key_error(h, key, want, e))? {
                Some(page) => {
                    let (next, page_items) =
                        scan_reply(page).ok_or_else(|| self.bad_reply(h, command))?;
                    items = page_items;
                    done = next == "0";
                    cursor = next;
                }
                None => break,
            }
        }
        self.skipped.note(
            &self.id,
            skipped,
            if zset {
                "Members whose name is not valid UTF-8 cannot name an agent; skipped."
            } else {
                "Fields whose name is not valid UTF-8 cannot name an agent; skipped."
            },
        );
        Ok(())
    }

    /// `HMGET` or `ZMSCORE` of `agents` in batches, sent together.
    pub(super) async fn read_pairs(
        &self,
        h: &Handle,
        key: &str,
        zset: bool,
        agents: &[AgentId],
    ) -> Result<Vec<Slot>, Stop> {
        let (command, want) = if zset {
            ("ZMSCORE", "sorted set")
        } else {
            ("HMGET", "hash")
        };
        let pages = try_join_all(agents.chunks(self.batch).map(|chunk| async move {
            let names: Vec<&str> = chunk.iter().map(AgentId::as_str).collect();
            let reply = if zset {
                h.client.zmscore::<Value, _, _>(key, names).await
            } else {
                h.client.hmget::<Value, _, _>(key, names).await
            };
            let reply = reply.map_err(|e| self.key_error(h, key, want, e))?;
            array_of(reply, chunk.len()).ok_or_else(|| Stop::from(self.bad_reply(h, command)))
        }))
        .await?;
        Ok(pages
            .into_iter()
            .flatten()
            .map(|v| {
                if v.is_null() {
                    Slot::Missing
                } else {
                    Slot::Value(v)
                }
            })
            .collect())
    }
}
