//! goim's online record in Redis: the hash `ol_<server>` with up to 64 fields ("0".."63"), each a
//! shard of the comet's rooms, each value the JSON of goim's `model.Online`:
//!
//! ```json
//! {"server":"comet-1","room_count":{"live://1":3},"updated":1767225600,"conn_count":4,"ip_count":2}
//! ```
//!
//! `conn_count` and `ip_count` are goim-rs additions (goim takes them from discovery metadata); Go's
//! `encoding/json` ignores unknown fields, and a record without them reads as 0.
//!
//! goim shards by `CityHash32(room) % 64`. Readers never depend on the shard function (goim's
//! `ServerOnline` reads all 64 fields and merges them), so this uses FNV-1a instead of carrying a
//! CityHash port. Every written shard carries the counts and the stamp; a comet with no rooms
//! still writes shard "0" so its counts and stamp are kept.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goim_api::Online;
use serde::{Deserialize, Serialize};

use crate::store::Error;

/// goim's shard count (`internal/logic/dao/redis.go`).
pub(super) const SHARDS: u32 = 64;

/// One field of `ol_<server>`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    server: String,
    /// Go writes `null` for a nil map.
    #[serde(default)]
    room_count: Option<HashMap<String, i32>>,
    /// Unix seconds.
    #[serde(default)]
    updated: i64,
    #[serde(default)]
    conn_count: i64,
    #[serde(default)]
    ip_count: i64,
}

/// The shard (hash field) holding `room`.
pub(super) fn shard(room: &str) -> u32 {
    // FNV-1a, 32 bit.
    let hash = room.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash % SHARDS
}

/// The hash fields and JSON values that store `online`, stamped `updated`.
pub(super) fn encode(server: &str, online: &Online, updated: SystemTime) -> Vec<(String, String)> {
    let mut shards: BTreeMap<u32, HashMap<String, i32>> = BTreeMap::new();
    for (room, &count) in &online.room_count {
        shards.entry(shard(room)).or_default().insert(room.clone(), count);
    }
    if shards.is_empty() {
        shards.insert(0, HashMap::new());
    }
    let updated = unix_seconds(updated);
    shards
        .into_iter()
        .map(|(shard, rooms)| {
            let record = Record {
                server: server.to_owned(),
                room_count: Some(rooms),
                updated,
                conn_count: online.conn_count,
                ip_count: online.ip_count,
            };
            // Serializing a struct of strings, integers and a string-keyed map cannot fail.
            let json = serde_json::to_string(&record).expect("online record serializes");
            (shard.to_string(), json)
        })
        .collect()
}

/// Merges the fields of `ol_<server>` as goim's `ServerOnline` does: rooms summed over shards, the
/// newest stamp. Counts come from the newest shard. `None` when there are no fields.
pub(super) fn decode(
    server: &str,
    fields: HashMap<String, String>,
) -> Result<Option<(Online, SystemTime)>, Error> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut online = Online { server: server.to_owned(), ..Online::default() };
    let mut newest = i64::MIN;
    for (field, json) in fields {
        let record: Record = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(format!("ol_{server} field {field}: {e}")))?;
        for (room, count) in record.room_count.unwrap_or_default() {
            *online.room_count.entry(room).or_insert(0) += count;
        }
        if record.updated > newest {
            newest = record.updated;
            online.conn_count = record.conn_count;
            online.ip_count = record.ip_count;
        }
    }
    let updated = UNIX_EPOCH + Duration::from_secs(u64::try_from(newest).unwrap_or(0));
    Ok(Some((online, updated)))
}

/// Whole seconds since the Unix epoch; 0 for earlier times.
pub(super) fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(rooms: &[(&str, i32)]) -> Online {
        Online {
            server: "c1".into(),
            room_count: rooms.iter().map(|(r, c)| (r.to_string(), *c)).collect(),
            conn_count: 9,
            ip_count: 4,
        }
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard("live://1"), shard("live://1"));
        assert!((0..200).all(|i| shard(&format!("live://{i}")) < SHARDS));
        let used: std::collections::HashSet<u32> = (0..1000).map(|i| shard(&format!("live://{i}"))).collect();
        assert!(used.len() > 48, "rooms spread over the shards, used {}", used.len());
    }

    #[test]
    fn an_encoded_record_decodes_to_the_same_online_report() {
        let report = online(&[("live://1", 3), ("live://2", 1), ("chat://x", 7)]);
        let at = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let fields: HashMap<_, _> = encode("c1", &report, at).into_iter().collect();
        assert_eq!(decode("c1", fields).unwrap(), Some((report, at)));
    }

    #[test]
    fn a_comet_without_rooms_keeps_its_counts_in_shard_zero() {
        let report = online(&[]);
        let fields = encode("c1", &report, UNIX_EPOCH);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].0, "0");
        let json: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
        assert_eq!(json["room_count"], serde_json::json!({}));
        assert_eq!(json["conn_count"], 9);
    }

    #[test]
    fn the_json_has_goims_field_names() {
        let (_, json) =
            encode("c1", &online(&[("live://1", 3)]), UNIX_EPOCH + Duration::from_secs(5)).remove(0);
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["server"], "c1");
        assert_eq!(json["room_count"]["live://1"], 3);
        assert_eq!(json["updated"], 5);
    }

    #[test]
    fn a_go_record_without_counts_or_with_null_rooms_is_read() {
        let fields = HashMap::from([
            ("3".to_string(), r#"{"server":"c1","room_count":{"live://1":2},"updated":100}"#.to_string()),
            ("9".to_string(), r#"{"server":"c1","room_count":null,"updated":120}"#.to_string()),
        ]);
        let (got, updated) = decode("c1", fields).unwrap().unwrap();
        assert_eq!(got.room_count, HashMap::from([("live://1".to_string(), 2)]));
        assert_eq!((got.conn_count, got.ip_count), (0, 0));
        assert_eq!(updated, UNIX_EPOCH + Duration::from_secs(120));
    }

    #[test]
    fn unreadable_json_is_corrupt_and_names_the_key() {
        let fields = HashMap::from([("1".to_string(), "{not json".to_string())]);
        match decode("c1", fields) {
            Err(Error::Corrupt(m)) => assert!(m.contains("ol_c1 field 1"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
