//! Room batching: each room's pushes are collected into one op-9 body, encoded once, and flushed
//! when it is full, when it is old, or when too many rooms have a batch open.
//!
//! Unlike goim (a goroutine per room that exits when idle, racing pushes into it: goim #383),
//! open batches are plain data owned by the job loop: a room exists here only while it has
//! packets waiting, and nothing can be pushed into a room that is going away.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use goim_api::Batch;
use tokio::time::Instant;

use crate::config::RoomConfig;
use crate::dispatch::Unacked;

/// A flushed batch, ready to send to every comet.
#[derive(Debug)]
pub(crate) struct Ready {
    pub room: String,
    /// Whole packets back to back, in push order.
    pub packets: Bytes,
    pub count: usize,
    /// The deliveries whose packets are in `packets`, in push order.
    pub deliveries: Vec<Unacked>,
}

#[derive(Debug)]
struct Open {
    batch: Batch,
    deliveries: Vec<Unacked>,
    /// Tells this batch's entry in `Rooms::deadlines` from a flushed earlier batch's of the same room.
    generation: u64,
}

#[derive(Debug)]
struct Deadline {
    at: Instant,
    generation: u64,
    room: String,
}

/// The rooms with an open batch.
#[derive(Debug)]
pub(crate) struct Rooms {
    batch: usize,
    max_delay: Duration,
    max_open: usize,
    open: HashMap<String, Open>,
    /// One entry per batch opened, in opening order. Every batch waits the same `max_delay`, so
    /// this is also deadline order and the front is the next batch to expire. Entries of batches
    /// that flushed early (full) stay until they reach the front, where they are skipped; each is
    /// gone within `max_delay` of being added.
    deadlines: VecDeque<Deadline>,
    next_generation: u64,
}

impl Rooms {
    pub fn new(config: &RoomConfig) -> Rooms {
        Rooms {
            // A zero batch (rejected by validation) behaves as 1 rather than never flushing.
            batch: config.batch.max(1),
            max_delay: config.max_delay,
            max_open: config.max_rooms_pending.max(1),
            open: HashMap::new(),
            deadlines: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Appends a push to `room`'s batch; its deadline counts from `unacked.since` if it opens the
    /// batch. Yields the batches this flushes: the oldest open batch if opening this room's would
    /// exceed `max_rooms_pending`, then this room's if it is now full.
    pub fn push(
        &mut self,
        room: &str,
        op: i32,
        body: &[u8],
        unacked: Unacked,
    ) -> impl Iterator<Item = Ready> + use<> {
        let mut evicted = None;
        if !self.open.contains_key(room) {
            if self.open.len() >= self.max_open {
                evicted = self.pop_oldest();
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let at = unacked.since + self.max_delay;
            self.deadlines.push_back(Deadline { at, generation, room: room.to_owned() });
            self.open
                .insert(room.to_owned(), Open { batch: Batch::new(), deliveries: Vec::new(), generation });
        }
        let full = match self.open.get_mut(room) {
            Some(open) => {
                open.batch.push(op, body);
                open.deliveries.push(unacked);
                open.batch.len() >= self.batch
            }
            None => false, // inserted just above
        };
        let full =
            if full { self.open.remove_entry(room).map(|(room, open)| ready(room, open)) } else { None };
        evicted.into_iter().chain(full)
    }

    /// When the next open batch expires, if any.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_flushed();
        self.deadlines.front().map(|d| d.at)
    }

    /// Takes the next batch whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Ready> {
        if self.next_deadline()? > now {
            return None;
        }
        self.pop_oldest()
    }

    /// Takes every open batch, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Ready> + '_ {
        std::iter::from_fn(|| self.pop_oldest())
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    fn pop_oldest(&mut self) -> Option<Ready> {
        self.skip_flushed();
        let d = self.deadlines.pop_front()?;
        let open = self.open.remove(&d.room)?;
        Some(ready(d.room, open))
    }

    /// Drops front entries whose batch already flushed.
    fn skip_flushed(&mut self) {
        while let Some(d) = self.deadlines.front() {
            match self.open.get(&d.room) {
                Some(open) if open.generation == d.generation => return,
                _ => self.deadlines.pop_front(),
            };
        }
    }
}

fn ready(room: String, mut open: Open) -> Ready {
    Ready { room, count: open.batch.len(), packets: open.batch.take(), deliveries: open.deliveries }
}

#[cfg(test)]
mod tests {
    use goim_api::frame::encode_push;

    use super::*;
    use crate::queue::AckToken;

    fn rooms(batch: usize, max_rooms_pending: usize) -> Rooms {
        Rooms::new(&RoomConfig { batch, max_delay: Duration::from_millis(20), max_rooms_pending })
    }

    fn unacked(offset: i64, since: Instant) -> Unacked {
        Unacked { token: AckToken { partition: 0, offset }, since }
    }

    fn offsets(ready: &Ready) -> Vec<i64> {
        ready.deliveries.iter().map(|u| u.token.offset).collect()
    }

    #[test]
    fn a_batch_flushes_when_it_holds_batch_packets() {
        let mut r = rooms(3, 10);
        let t = Instant::now();
        assert_eq!(r.push("live://1", 1000, b"a", unacked(0, t)).count(), 0);
        assert_eq!(r.push("live://1", 1000, b"b", unacked(1, t)).count(), 0);
        let flushed: Vec<_> = r.push("live://1", 1001, b"c", unacked(2, t)).collect();
        assert_eq!(flushed.len(), 1);
        let expected = [encode_push(1000, b"a"), encode_push(1000, b"b"), encode_push(1001, b"c")].concat();
        assert_eq!((flushed[0].count, &flushed[0].packets[..]), (3, &expected[..]));
        assert_eq!(offsets(&flushed[0]), [0, 1, 2]);
        assert_eq!(r.len(), 0);
        assert_eq!(r.next_deadline(), None, "a full batch leaves no deadline behind");
    }

    #[test]
    fn the_deadline_counts_from_the_first_packet() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        let _ = r.push("live://1", 1000, b"a", unacked(0, t));
        let _ = r.push("live://1", 1000, b"b", unacked(1, t + Duration::from_millis(15)));
        assert_eq!(r.next_deadline(), Some(t + Duration::from_millis(20)));
        assert!(r.pop_due(t + Duration::from_millis(19)).is_none());
        let due = r.pop_due(t + Duration::from_millis(20)).expect("due at the deadline");
        assert_eq!(offsets(&due), [0, 1]);
    }

    #[test]
    fn a_room_reopened_after_a_full_flush_gets_a_fresh_deadline() {
        let t = Instant::now();
        let mut r = rooms(2, 10);
        let _ = r.push("live://1", 1000, b"a", unacked(0, t));
        let _ = r.push("live://1", 1000, b"b", unacked(1, t)); // full: flushed, entry stale
        let later = t + Duration::from_millis(10);
        let _ = r.push("live://1", 1000, b"c", unacked(2, later));
        assert_eq!(r.next_deadline(), Some(later + Duration::from_millis(20)));
        assert!(r.pop_due(t + Duration::from_millis(25)).is_none(), "the stale deadline must not flush it");
        assert_eq!(offsets(&r.pop_due(later + Duration::from_millis(20)).unwrap()), [2]);
    }

    #[test]
    fn opening_a_room_past_the_bound_flushes_the_oldest_open_batch() {
        let mut r = rooms(20, 2);
        let t = Instant::now();
        assert_eq!(r.push("a", 1000, b"1", unacked(0, t)).count(), 0);
        assert_eq!(r.push("b", 1000, b"2", unacked(1, t)).count(), 0);
        assert_eq!(r.push("a", 1000, b"3", unacked(2, t)).count(), 0, "an open room does not count again");
        let evicted: Vec<_> = r.push("c", 1000, b"4", unacked(3, t)).collect();
        assert_eq!(evicted.len(), 1);
        assert_eq!((evicted[0].room.as_str(), offsets(&evicted[0])), ("a", vec![0, 2]));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn drain_takes_every_open_batch_oldest_first() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        for (i, room) in ["x", "y", "z"].into_iter().enumerate() {
            let _ = r.push(room, 1000, b"m", unacked(i as i64, t));
        }
        let rooms: Vec<_> = r.drain().map(|ready| ready.room).collect();
        assert_eq!(rooms, ["x", "y", "z"]);
        assert_eq!(r.len(), 0);
        assert_eq!(r.next_deadline(), None);
    }
}
