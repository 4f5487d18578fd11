//! The [`History`] contract as one suite, run against every implementation (the memory history
//! in this crate's tests; the Redis history against a real server). Streams carry a random
//! prefix, so it can run against a shared Redis and be rerun. Its assertions panic on purpose.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goim_api::Position;
use goim_api::position::MAX_EPOCH;

use super::{History, HistoryConfig};

/// The limits the suite assumes: 5 pushes kept per stream, for a second.
pub fn config() -> HistoryConfig {
    HistoryConfig { size: 5, ttl: Duration::from_secs(1), ..HistoryConfig::default() }
}

/// Runs every check against `history`, which must be built with [`config`]. Panics on the first
/// violation.
pub async fn history_contract(history: impl History + 'static) {
    let ns = uuid::Uuid::new_v4().simple().to_string();
    let s = |name: &str| format!("room:{ns}-{name}");
    let history = Arc::new(history);

    offsets_count_from_one_in_one_epoch(&*history, &s("count")).await;
    a_read_of_a_new_stream_starts_it_at_offset_zero(&*history, &s("fresh")).await;
    streams_are_independent(&*history, &s("a"), &s("b")).await;
    at_most_size_pushes_are_kept(&*history, &s("size")).await;
    concurrent_appends_get_distinct_gapless_offsets(history.clone(), &s("race")).await;
    bodies_round_trip_byte_for_byte(&*history, &s("bytes")).await;
    pushes_older_than_the_ttl_are_dropped(&*history, &s("ttl")).await;
}

async fn offsets_count_from_one_in_one_epoch(h: &dyn History, stream: &str) {
    let mut epochs = HashSet::new();
    for want in 1..=4u64 {
        let p = h.append(stream, 1000, &Bytes::from(want.to_string())).await.unwrap();
        assert_eq!(p.offset, want, "offsets count 1, 2, 3, ...");
        assert!((1..=MAX_EPOCH).contains(&p.epoch), "epoch {} out of range", p.epoch);
        epochs.insert(p.epoch);
    }
    assert_eq!(epochs.len(), 1, "one epoch while the data lives: {epochs:?}");
    let snap = h.read(stream).await.unwrap();
    assert_eq!(snap.position.offset, 4);
    assert!(epochs.contains(&snap.position.epoch));
    let bodies: Vec<_> = snap.entries.iter().map(|e| (e.offset, e.op, e.body.clone())).collect();
    let want: Vec<_> = (1..=4u64).map(|o| (o, 1000, Bytes::from(o.to_string()))).collect();
    assert_eq!(bodies, want, "kept oldest first with their op and body");
}

async fn a_read_of_a_new_stream_starts_it_at_offset_zero(h: &dyn History, stream: &str) {
    let snap = h.read(stream).await.unwrap();
    assert_eq!(snap.position.offset, 0);
    assert!(snap.entries.is_empty());
    assert_ne!(snap.position.epoch, 0, "a started stream has an epoch");
    let next = h.append(stream, 1, &Bytes::new()).await.unwrap();
    assert_eq!(next, Position::new(snap.position.epoch, 1), "the next push continues the epoch read");
}

async fn streams_are_independent(h: &dyn History, a: &str, b: &str) {
    h.append(a, 1, &Bytes::from_static(b"a1")).await.unwrap();
    h.append(a, 1, &Bytes::from_static(b"a2")).await.unwrap();
    let first_b = h.append(b, 1, &Bytes::from_static(b"b1")).await.unwrap();
    assert_eq!(first_b.offset, 1, "a stream's offsets are its own");
    assert_eq!(h.read(a).await.unwrap().entries.len(), 2);
    assert_eq!(h.read(b).await.unwrap().entries.len(), 1);
}

async fn at_most_size_pushes_are_kept(h: &dyn History, stream: &str) {
    for i in 1..=12u64 {
        h.append(stream, 1, &Bytes::from(i.to_string())).await.unwrap();
    }
    let snap = h.read(stream).await.unwrap();
    assert_eq!(snap.position.offset, 12);
    let offsets: Vec<u64> = snap.entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [8, 9, 10, 11, 12], "the newest `size` (5) pushes");
}

async fn concurrent_appends_get_distinct_gapless_offsets(h: Arc<dyn History>, stream: &str) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (h, stream) = (h.clone(), stream.to_string());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..25 {
                    got.push(h.append(&stream, 1, &Bytes::new()).await.unwrap().offset);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>(), "200 appends from 8 tasks: offsets 1 to 200, once each");
}

async fn bodies_round_trip_byte_for_byte(h: &dyn History, stream: &str) {
    let body = Bytes::from((0..=255u8).chain(b":x:y:".iter().copied()).collect::<Vec<u8>>());
    h.append(stream, -7, &body).await.unwrap();
    h.append(stream, 1000, &Bytes::new()).await.unwrap();
    let snap = h.read(stream).await.unwrap();
    assert_eq!((snap.entries[0].op, &snap.entries[0].body), (-7, &body), "binary bodies, negative ops");
    assert_eq!(snap.entries[1].body, Bytes::new(), "an empty body");
}

async fn pushes_older_than_the_ttl_are_dropped(h: &dyn History, stream: &str) {
    let first = h.append(stream, 1, &Bytes::from_static(b"old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    h.append(stream, 1, &Bytes::from_static(b"new")).await.unwrap();
    let snap = h.read(stream).await.unwrap();
    let recovery = snap.since(first, Duration::from_secs(1));
    assert!(recovery.complete, "the push after the client's is kept");
    let r = h.read(stream).await.unwrap().since(Position::new(first.epoch, 0), Duration::from_secs(1));
    assert!(!r.complete, "the first push is past the ttl");
    assert_eq!(r.entries.iter().map(|e| e.body.clone()).collect::<Vec<_>>(), [Bytes::from_static(b"new")]);
}
