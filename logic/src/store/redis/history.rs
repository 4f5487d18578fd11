//! The Redis [`History`]: a stream's position and its last pushes, one Lua script per call, on
//! the store's connections.
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `goim_rs_h{<stream>}m` | hash | `e`: the epoch, `o`: the last offset | `history.stream_ttl`, restarted by each push |
//! | `goim_rs_h{<stream>}l` | list | `<offset>:<unix ms>:<op>:<body>` per push, oldest first, at most `history.size` | `history.ttl`, restarted by each push |
//!
//! Both names of a stream share the hash tag `{<stream>}`, so the scripts also run on Redis
//! Cluster. The epoch comes from the caller (Redis's Lua has no good random source) and is used
//! only when the stream has no data; the time is Redis's own (`TIME`), one clock for every logic.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::Position;
use redis::Script;

use super::RedisStore;
use crate::history::{Entry, Error, History, HistoryConfig, Snapshot, new_epoch};

/// Appends to a stream. KEYS: meta, list. ARGV: new epoch, op, body, size, ttl ms, stream ttl ms.
/// Returns `{epoch, offset}`.
const APPEND: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
  redis.call('DEL', KEYS[2])
end
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('RPUSH', KEYS[2], o .. ':' .. string.format('%d', ms) .. ':' .. ARGV[2] .. ':' .. ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {tonumber(e), o}
";

/// Reads a stream, starting it when it has no data. KEYS: meta, list. ARGV: new epoch, stream
/// ttl ms. Returns `{epoch, offset, now ms, entries}`.
const READ: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local o = redis.call('HGET', KEYS[1], 'o')
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
return {tonumber(e), tonumber(o), string.format('%d', ms), redis.call('LRANGE', KEYS[2], 0, -1)}
";

fn meta_key(stream: &str) -> String {
    format!("goim_rs_h{{{stream}}}m")
}

fn list_key(stream: &str) -> String {
    format!("goim_rs_h{{{stream}}}l")
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

/// The history of a [`RedisStore`]'s Redis.
pub struct RedisHistory {
    store: std::sync::Arc<RedisStore>,
    size: usize,
    ttl: Duration,
    stream_ttl: Duration,
    append: Script,
    read: Script,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory").field("store", &self.store).field("size", &self.size).finish()
    }
}

impl RedisHistory {
    pub fn new(store: std::sync::Arc<RedisStore>, config: &HistoryConfig) -> RedisHistory {
        RedisHistory {
            store,
            size: config.size.max(1),
            ttl: config.ttl,
            stream_ttl: config.stream_ttl,
            append: Script::new(APPEND),
            read: Script::new(READ),
        }
    }
}

/// `<offset>:<ms>:<op>:<body>`.
fn parse_entry(raw: &[u8]) -> Option<Entry> {
    let mut parts = raw.splitn(4, |&b| b == b':');
    let mut number = || std::str::from_utf8(parts.next()?).ok();
    let offset = number()?.parse().ok()?;
    let at_ms = number()?.parse().ok()?;
    let op = number()?.parse().ok()?;
    let body = Bytes::copy_from_slice(parts.next()?);
    Some(Entry { offset, at_ms, op, body })
}

fn epoch(raw: i64) -> Result<u16, Error> {
    u16::try_from(raw)
        .ok()
        .filter(|&e| e > 0 && e <= goim_api::position::MAX_EPOCH)
        .ok_or_else(|| Error::Corrupt(format!("history epoch {raw} is out of range")))
}

#[async_trait]
impl History for RedisHistory {
    async fn append(&self, stream: &str, op: i32, body: &Bytes) -> Result<Position, Error> {
        let (meta, list) = (meta_key(stream), list_key(stream));
        let fresh = new_epoch();
        let (e, o): (i64, u64) = self
            .store
            .call("history append", |mut conn| {
                let mut call = self.append.prepare_invoke();
                call.key(&meta).key(&list);
                call.arg(fresh).arg(op).arg(body.as_ref()).arg(self.size);
                call.arg(millis(self.ttl)).arg(millis(self.stream_ttl));
                async move { call.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(Position::new(epoch(e)?, o))
    }

    async fn read(&self, stream: &str) -> Result<Snapshot, Error> {
        let (meta, list) = (meta_key(stream), list_key(stream));
        let fresh = new_epoch();
        let (e, o, now, raw): (i64, u64, String, Vec<Vec<u8>>) = self
            .store
            .call("history read", |mut conn| {
                let mut call = self.read.prepare_invoke();
                call.key(&meta).key(&list).arg(fresh).arg(millis(self.stream_ttl));
                async move { call.invoke_async(&mut conn).await }
            })
            .await?;
        let now_ms = now.parse().map_err(|_| Error::Corrupt(format!("history clock {now:?}")))?;
        let entries = raw
            .iter()
            .map(|r| parse_entry(r).ok_or_else(|| Error::Corrupt("a history entry is unreadable".into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { position: Position::new(epoch(e)?, o), now_ms, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_colons_and_binary_in_the_body() {
        let e = parse_entry(b"12:1700000000123:-5:a:b\xff").unwrap();
        assert_eq!((e.offset, e.at_ms, e.op, &e.body[..]), (12, 1_700_000_000_123, -5, &b"a:b\xff"[..]));
        assert_eq!(parse_entry(b"12:x:1:"), None);
        assert_eq!(parse_entry(b"12:1"), None);
    }

    #[test]
    fn both_keys_of_a_stream_share_its_hash_tag() {
        assert_eq!(meta_key("room:live://1"), "goim_rs_h{room:live://1}m");
        assert_eq!(list_key("room:live://1"), "goim_rs_h{room:live://1}l");
    }
}
