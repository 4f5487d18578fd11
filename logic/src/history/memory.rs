//! The in-memory [`History`] of the embedded setup: the same semantics as Redis. Its epochs live
//! as long as the process: a restarted server starts every stream in a new epoch.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::Position;
use parking_lot::Mutex;

use super::{Entry, Error, History, HistoryConfig, Snapshot, new_epoch};

/// Shards of the stream map: appends to different streams rarely wait on each other.
const SHARDS: usize = 16;

/// Streams in process memory. Never fails.
///
/// Each shard keeps at most `max_streams / 16` streams; a new stream past that evicts the one
/// pushed to least recently. A stream idle past `stream_ttl` is dropped when next touched or
/// evicted, as Redis expires it.
pub struct MemoryHistory {
    size: usize,
    ttl: Duration,
    stream_ttl: Duration,
    per_shard: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, StreamState>>>,
}

impl std::fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHistory").field("size", &self.size).field("ttl", &self.ttl).finish()
    }
}

struct StreamState {
    epoch: u16,
    offset: u64,
    /// Of the last append or read (milliseconds since the Unix epoch).
    touched_ms: u64,
    entries: VecDeque<Entry>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl MemoryHistory {
    pub fn new(config: &HistoryConfig) -> MemoryHistory {
        MemoryHistory {
            size: config.size.max(1),
            ttl: config.ttl,
            stream_ttl: config.stream_ttl,
            per_shard: config.max_streams.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Streams kept (for tests and the bench's memory figures).
    pub fn stream_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Pushes kept, over every stream.
    pub fn entry_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().values().map(|st| st.entries.len()).sum::<usize>()).sum()
    }

    fn shard(&self, stream: &str) -> &Mutex<HashMap<String, StreamState>> {
        &self.shards[self.hasher.hash_one(stream) as usize % SHARDS]
    }

    /// The stream's state, started (or restarted, when it idled out) as needed.
    fn state<'a>(
        &self,
        map: &'a mut HashMap<String, StreamState>,
        stream: &str,
        now: u64,
    ) -> &'a mut StreamState {
        let idle = self.stream_ttl.as_millis() as u64;
        if map.get(stream).is_some_and(|s| now.saturating_sub(s.touched_ms) > idle) {
            map.remove(stream);
        }
        if !map.contains_key(stream) && map.len() >= self.per_shard {
            let oldest = map.iter().min_by_key(|(_, s)| s.touched_ms).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.entry(stream.to_string()).or_insert_with(|| StreamState {
            epoch: new_epoch(),
            offset: 0,
            touched_ms: now,
            entries: VecDeque::new(),
        })
    }

    fn trim(&self, s: &mut StreamState, now: u64) {
        let oldest = now.saturating_sub(self.ttl.as_millis() as u64);
        while s.entries.len() > self.size || s.entries.front().is_some_and(|e| e.at_ms < oldest) {
            s.entries.pop_front();
        }
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(&self, stream: &str, op: i32, body: &Bytes) -> Result<Position, Error> {
        let now = now_ms();
        let mut map = self.shard(stream).lock();
        let s = self.state(&mut map, stream, now);
        s.offset += 1;
        s.touched_ms = now;
        s.entries.push_back(Entry { offset: s.offset, at_ms: now, op, body: body.clone() });
        self.trim(s, now);
        Ok(Position::new(s.epoch, s.offset))
    }

    async fn read(&self, stream: &str) -> Result<Snapshot, Error> {
        let now = now_ms();
        let mut map = self.shard(stream).lock();
        let s = self.state(&mut map, stream, now);
        self.trim(s, now);
        Ok(Snapshot {
            position: Position::new(s.epoch, s.offset),
            now_ms: now,
            entries: s.entries.iter().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_history_meets_the_contract() {
        super::super::contract::history_contract(MemoryHistory::new(&super::super::contract::config())).await;
    }

    #[tokio::test]
    async fn past_max_streams_the_least_recently_pushed_stream_goes() {
        let config = HistoryConfig { max_streams: SHARDS, ..HistoryConfig::default() };
        let h = MemoryHistory::new(&config);
        for i in 0..200 {
            h.append(&format!("room:{i}"), 1, &Bytes::new()).await.unwrap();
        }
        assert!(h.stream_count() <= SHARDS, "{} streams kept", h.stream_count());
        assert!(h.entry_count() <= SHARDS);
    }

    #[tokio::test]
    async fn a_restarted_server_starts_every_stream_in_a_new_epoch() {
        let config = HistoryConfig::default();
        let mut epochs = std::collections::HashSet::new();
        for _ in 0..20 {
            let h = MemoryHistory::new(&config);
            epochs.insert(h.append("room:r", 1, &Bytes::new()).await.unwrap().epoch);
        }
        assert!(epochs.len() > 15, "epochs repeat too often: {epochs:?}");
    }
}
