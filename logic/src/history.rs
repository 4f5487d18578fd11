//! The history port: where each stream's positions are assigned and its last pushes kept, so a
//! client that reconnects gets what it missed (`docs/recovery.md`).
//!
//! A stream is a room (`room:<type://id>`) or a user (`user:<mid>`). [`History::append`] gives a
//! push the next offset of its stream, in the stream's epoch, and keeps it; [`History::read`]
//! returns the stream's position and what it still keeps, and [`Snapshot::since`] picks what a
//! client at a given position missed. Embedded, that is [`MemoryHistory`]; distributed, with the
//! Redis store, `RedisHistory` (one Lua script per call).
//!
//! # Contract
//!
//! - Offsets of one stream count 1, 2, 3, ... in one epoch, with no gaps and no repeats, however
//!   many callers append at once. An epoch is in `1..=MAX_EPOCH` and changes when the stream's
//!   data is lost (the backend restarted empty, the stream idled past `stream_ttl`); offsets
//!   restart at 1 with it.
//! - A stream keeps at most `size` pushes, none older than `ttl`.
//! - Reading a stream that has no data starts it (a new epoch at offset 0), so a client that
//!   asks first learns the epoch the next push will carry.
//! - Every call fails, not hangs, when the backend is gone ([`Error::Unavailable`]).
//!
//! [`contract::history_contract`] checks this against every implementation.

pub mod contract;
mod memory;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::Position;
use goim_api::position::MAX_EPOCH;
use serde::{Deserialize, Serialize};

pub use memory::MemoryHistory;

pub use crate::store::Error;

/// `[history]`: positions and the history kept per stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Assign positions and keep history. `false` turns recovery off. Default `true`.
    pub enabled: bool,
    /// Pushes kept per stream. Default 100.
    pub size: usize,
    /// A push older than this is not replayed. Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// A stream with no push for this long is forgotten; its next push starts a new epoch.
    /// Default 24 hours.
    #[serde(with = "humantime_serde")]
    pub stream_ttl: Duration,
    /// The memory history only: streams kept at once; past it the least recently pushed one
    /// goes (its next push starts a new epoch). Default 100,000.
    pub max_streams: usize,
}

impl Default for HistoryConfig {
    fn default() -> HistoryConfig {
        HistoryConfig {
            enabled: true,
            size: 100,
            ttl: Duration::from_secs(300),
            stream_ttl: Duration::from_secs(24 * 3600),
            max_streams: 100_000,
        }
    }
}

/// The most pushes a stream may keep: a replay is one gRPC reply and one write to the client.
pub const MAX_SIZE: usize = 10_000;

impl HistoryConfig {
    pub fn validate(&self) -> Result<(), goim_kit::Invalid> {
        let invalid =
            |field: &str, reason: String| goim_kit::Invalid::new(format!("history.{field}"), reason);
        if !self.enabled {
            return Ok(());
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(invalid("size", format!("must be 1 to {MAX_SIZE}, got {}", self.size)));
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(invalid("ttl", "must be at least 1s".into()));
        }
        if self.stream_ttl < self.ttl {
            return Err(invalid("stream_ttl", "must be at least history.ttl".into()));
        }
        if self.max_streams == 0 {
            return Err(invalid("max_streams", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The stream of a room.
pub fn room_stream(room: &str) -> String {
    format!("room:{room}")
}

/// The stream of a user.
pub fn user_stream(mid: i64) -> String {
    format!("user:{mid}")
}

/// A new epoch: random in `1..=MAX_EPOCH`.
pub fn new_epoch() -> u16 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(MAX_EPOCH)) as u16 + 1
}

/// One kept push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    /// When it was appended, in the backend's clock (milliseconds since the Unix epoch).
    pub at_ms: u64,
    pub op: i32,
    pub body: Bytes,
}

/// A stream as [`History::read`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The epoch and the offset of its last push (0: none yet).
    pub position: Position,
    /// The backend's clock at the read (milliseconds since the Unix epoch).
    pub now_ms: u64,
    /// What it keeps, oldest first.
    pub entries: Vec<Entry>,
}

/// What a client at some position missed of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The stream's position: the client continues from here.
    pub position: Position,
    /// Whether `entries` holds every push after the client's position.
    pub complete: bool,
    /// The pushes to replay, oldest first.
    pub entries: Vec<Entry>,
}

impl Snapshot {
    /// What a client that last saw `seen` missed, with pushes older than `ttl` left out.
    ///
    /// - `seen` has epoch 0 (the client saw nothing yet): nothing to replay, complete.
    /// - Another epoch, or an offset past the stream's (the epoch was reused after a loss): the
    ///   history was lost; everything kept is replayed, incomplete.
    /// - Otherwise: the kept pushes after `seen`, complete when they start right after it and
    ///   none was left out for its age.
    pub fn since(self, seen: Position, ttl: Duration) -> Recovery {
        let Snapshot { position, now_ms, entries } = self;
        if seen.is_none() {
            return Recovery { position, complete: true, entries: Vec::new() };
        }
        let oldest = now_ms.saturating_sub(ttl.as_millis() as u64);
        let fresh = |e: &Entry| e.at_ms >= oldest;
        if seen.epoch != position.epoch || seen.offset > position.offset {
            let entries = entries.into_iter().filter(fresh).collect();
            return Recovery { position, complete: false, entries };
        }
        let missed: Vec<Entry> = entries.into_iter().filter(|e| e.offset > seen.offset).collect();
        let wanted = position.offset - seen.offset;
        let entries: Vec<Entry> = missed.into_iter().filter(fresh).collect();
        let complete = entries.len() as u64 == wanted
            && entries.first().is_none_or(|e| e.offset == seen.offset + 1)
            && entries.last().is_none_or(|e| e.offset == position.offset);
        Recovery { position, complete, entries }
    }
}

/// Positions and kept pushes. See the module docs for the contract.
#[async_trait]
pub trait History: Send + Sync {
    /// Appends a push of `op` with `body` to `stream` and returns its position.
    async fn append(&self, stream: &str, op: i32, body: &Bytes) -> Result<Position, Error>;

    /// The stream's position and what it keeps; starts the stream when it has no data.
    async fn read(&self, stream: &str) -> Result<Snapshot, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, at_ms: u64) -> Entry {
        Entry { offset, at_ms, op: 1000, body: Bytes::from(offset.to_string()) }
    }

    fn snapshot(epoch: u16, offsets: std::ops::RangeInclusive<u64>, at_ms: u64) -> Snapshot {
        let last = *offsets.end();
        Snapshot {
            position: Position::new(epoch, last),
            now_ms: at_ms,
            entries: offsets.map(|o| entry(o, at_ms)).collect(),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_client_within_the_history_gets_exactly_what_follows_its_position() {
        let r = snapshot(4, 1..=10, 1_000_000).since(Position::new(4, 6), TTL);
        assert!(r.complete);
        assert_eq!(r.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [7, 8, 9, 10]);
        assert_eq!(r.position, Position::new(4, 10));
    }

    #[test]
    fn a_client_at_the_head_gets_nothing_and_is_complete() {
        let r = snapshot(4, 1..=10, 1_000_000).since(Position::new(4, 10), TTL);
        assert!(r.complete && r.entries.is_empty());
    }

    #[test]
    fn a_gap_older_than_the_kept_pushes_is_incomplete() {
        let r = snapshot(4, 5..=10, 1_000_000).since(Position::new(4, 2), TTL);
        assert!(!r.complete);
        assert_eq!(r.entries.len(), 6, "what is kept is still replayed");
    }

    #[test]
    fn pushes_older_than_the_ttl_are_not_replayed_and_make_it_incomplete() {
        let mut s = snapshot(4, 1..=4, 1_000_000);
        s.entries[0].at_ms = 1_000_000 - 61_000;
        s.entries[1].at_ms = 1_000_000 - 61_000;
        let r = s.since(Position::new(4, 0), TTL);
        assert!(!r.complete);
        assert_eq!(r.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn another_epoch_is_a_lost_history_with_the_new_one_replayed() {
        let r = snapshot(9, 1..=3, 1_000_000).since(Position::new(4, 50), TTL);
        assert!(!r.complete);
        assert_eq!(r.entries.len(), 3);
        let ahead = snapshot(4, 1..=3, 1_000_000).since(Position::new(4, 50), TTL);
        assert!(!ahead.complete, "an offset past the stream's is a reused epoch");
    }

    #[test]
    fn a_first_connect_replays_nothing() {
        let r = snapshot(4, 1..=3, 1_000_000).since(Position::default(), TTL);
        assert!(r.complete && r.entries.is_empty());
        assert_eq!(r.position, Position::new(4, 3));
    }

    #[test]
    fn epochs_are_in_the_range_a_header_carries() {
        for _ in 0..10_000 {
            let e = new_epoch();
            assert!((1..=MAX_EPOCH).contains(&e), "{e}");
        }
    }

    #[test]
    fn config_limits_are_checked() {
        assert!(HistoryConfig::default().validate().is_ok());
        let bad = HistoryConfig { size: 0, ..HistoryConfig::default() };
        assert_eq!(bad.validate().unwrap_err().field, "history.size");
        let off = HistoryConfig { enabled: false, size: 0, ..HistoryConfig::default() };
        assert!(off.validate().is_ok(), "limits of a disabled history do not matter");
        let short = HistoryConfig { stream_ttl: Duration::from_secs(1), ..HistoryConfig::default() };
        assert_eq!(short.validate().unwrap_err().field, "history.stream_ttl");
    }
}
