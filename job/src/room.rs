//! Room batching: each room's pushes are collected into one op-9 body, encoded once, and flushed
//! as a batch.
//!
//! The rule is Nagle's. A push to an idle room, one that has not flushed within the last
//! `max_delay`, flushes at once as a batch of one, so a lone message never waits. A push to a room
//! that flushed within the last `max_delay` (a burst) joins the room's open batch, which flushes
//! when it holds `batch` packets or `max_delay` after the room's last flush, whichever comes
//! first. So a room flushes a partial batch at most once per `max_delay`, no packet waits longer
//! than `max_delay`, and a room's batches leave in push order.
//!
//! Unlike goim (a goroutine per room that exits when idle, racing pushes into it: goim #383),
//! rooms are plain data owned by the job loop: a room exists here only while it flushed within the
//! last `max_delay`, and nothing can be pushed into a room that is going away.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use goim_api::Batch;
use goim_api::frame::encode_push_with;
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

/// A room that flushed within the last `max_delay`, and what was pushed to it since.
#[derive(Debug)]
struct Recent {
    /// The open batch; empty until a push arrives before the room's deadline.
    batch: Batch,
    deliveries: Vec<Unacked>,
    /// Tells this room's current entry in `Rooms::deadlines` from those of its earlier flushes.
    generation: u64,
}

#[derive(Debug)]
struct Deadline {
    /// `max_delay` after the room's last flush: its open batch flushes then, or, if nothing was
    /// pushed since, the room is idle again and forgotten.
    at: Instant,
    generation: u64,
    room: String,
}

/// One deadline per flush, in flush order. Every deadline is `max_delay` after its flush, so
/// this is also deadline order and the front is the next to expire. Entries of rooms that
/// flushed again early (full) stay until they reach the front, where they are skipped; each is
/// gone within `max_delay` of being added.
#[derive(Debug, Default)]
struct Deadlines {
    queue: VecDeque<Deadline>,
    next_generation: u64,
}

impl Deadlines {
    /// Adds `room`'s deadline; returns its generation.
    fn set(&mut self, room: &str, at: Instant) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.queue.push_back(Deadline { at, generation, room: room.to_owned() });
        generation
    }
}

/// The rooms that flushed within the last `max_delay`, with their open batches.
#[derive(Debug)]
pub(crate) struct Rooms {
    batch: usize,
    max_delay: Duration,
    max_tracked: usize,
    recent: HashMap<String, Recent>,
    deadlines: Deadlines,
}

impl Rooms {
    pub fn new(config: &RoomConfig) -> Rooms {
        Rooms {
            // A zero batch (rejected by validation) behaves as 1 rather than never flushing.
            batch: config.batch.max(1),
            max_delay: config.max_delay,
            max_tracked: config.max_rooms_pending.max(1),
            recent: HashMap::new(),
            deadlines: Deadlines::default(),
        }
    }

    /// Takes a push to `room`; `unacked.since` is now on the job loop's clock. Yields the batches
    /// this flushes: the oldest tracked room's open batch if tracking this room would exceed
    /// `max_rooms_pending`, then this room's: at once if the room was idle, or if its open
    /// batch is now full.
    ///
    /// `header` is the packet's `ver` and `seq`: a position's (`Position::header`), or goim's
    /// `(1, 0)` for a push without one. Each packet of a batch keeps its own.
    pub fn push(
        &mut self,
        room: &str,
        header: (i16, i32),
        op: i32,
        body: &[u8],
        unacked: Unacked,
    ) -> impl Iterator<Item = Ready> + use<> {
        let now = unacked.since;
        let (ver, seq) = header;
        let (evicted, flushed) = match self.recent.get_mut(room) {
            Some(recent) => {
                recent.batch.push_with(ver, op, seq, body);
                recent.deliveries.push(unacked);
                let full = (recent.batch.len() >= self.batch).then(|| {
                    let ready = take(room.to_owned(), recent);
                    recent.generation = self.deadlines.set(room, now + self.max_delay);
                    ready
                });
                (None, full)
            }
            None => {
                let evicted = if self.recent.len() >= self.max_tracked { self.evict_oldest() } else { None };
                let generation = self.deadlines.set(room, now + self.max_delay);
                self.recent.insert(
                    room.to_owned(),
                    Recent { batch: Batch::new(), deliveries: Vec::new(), generation },
                );
                let packets = encode_push_with(ver, op, seq, body);
                let ready = Ready { room: room.to_owned(), count: 1, packets, deliveries: vec![unacked] };
                (evicted, Some(ready))
            }
        };
        evicted.into_iter().chain(flushed)
    }

    /// The next deadline, if any room is tracked.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.deadlines.queue.front().map(|d| d.at)
    }

    /// Takes the next open batch whose deadline is at or before `now`, forgetting on the way the
    /// rooms that reached their deadline with nothing pushed (they are idle again).
    pub fn pop_due(&mut self, now: Instant) -> Option<Ready> {
        while self.next_deadline()? <= now {
            let d = self.deadlines.queue.pop_front()?;
            let Some(recent) = self.recent.get_mut(&d.room) else { continue };
            if recent.batch.is_empty() {
                self.recent.remove(&d.room);
                continue;
            }
            let ready = take(d.room, recent);
            recent.generation = self.deadlines.set(&ready.room, now + self.max_delay);
            return Some(ready);
        }
        None
    }

    /// Takes every open batch, the room with the oldest deadline first, and forgets every room.
    pub fn drain(&mut self) -> impl Iterator<Item = Ready> + '_ {
        std::iter::from_fn(|| {
            while !self.deadlines.queue.is_empty() {
                if let Some(ready) = self.evict_oldest() {
                    return Some(ready);
                }
            }
            None
        })
    }

    /// Rooms with packets waiting (for logs).
    pub fn open_batches(&self) -> usize {
        self.recent.values().filter(|r| !r.batch.is_empty()).count()
    }

    /// Forgets the room with the nearest deadline; yields its open batch if it has one.
    fn evict_oldest(&mut self) -> Option<Ready> {
        self.skip_stale();
        let d = self.deadlines.queue.pop_front()?;
        let mut recent = self.recent.remove(&d.room)?;
        (!recent.batch.is_empty()).then(|| take(d.room, &mut recent))
    }

    /// Drops front entries of rooms that flushed again since, or were forgotten.
    fn skip_stale(&mut self) {
        while let Some(d) = self.deadlines.queue.front() {
            match self.recent.get(&d.room) {
                Some(recent) if recent.generation == d.generation => return,
                _ => self.deadlines.queue.pop_front(),
            };
        }
    }
}

/// Takes `recent`'s open batch, leaving it empty.
fn take(room: String, recent: &mut Recent) -> Ready {
    Ready {
        room,
        count: recent.batch.len(),
        packets: recent.batch.take(),
        deliveries: std::mem::take(&mut recent.deliveries),
    }
}

#[cfg(test)]
mod tests {
    use goim_api::frame::encode_push;

    /// goim's push header: no position.
    const GOIM: (i16, i32) = (1, 0);
    use super::*;
    use crate::queue::AckToken;

    const MS: Duration = Duration::from_millis(1);

    fn rooms(batch: usize, max_rooms_pending: usize) -> Rooms {
        Rooms::new(&RoomConfig { batch, max_delay: 20 * MS, max_rooms_pending })
    }

    fn unacked(offset: i64, since: Instant) -> Unacked {
        Unacked { token: AckToken { partition: 0, offset }, since }
    }

    fn offsets(ready: &Ready) -> Vec<i64> {
        ready.deliveries.iter().map(|u| u.token.offset).collect()
    }

    #[test]
    fn a_push_to_an_idle_room_flushes_at_once_as_a_batch_of_one() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        let flushed: Vec<_> = r.push("live://1", GOIM, 1000, b"a", unacked(0, t)).collect();
        assert_eq!(flushed.len(), 1);
        assert_eq!((flushed[0].room.as_str(), flushed[0].count), ("live://1", 1));
        assert_eq!(&flushed[0].packets[..], &encode_push(1000, b"a")[..]);
        assert_eq!(offsets(&flushed[0]), [0]);
        assert_eq!(r.open_batches(), 0);
    }

    #[test]
    fn a_burst_after_a_flush_is_batched_until_max_delay_after_that_flush() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        assert_eq!(r.push("live://1", GOIM, 1000, b"a", unacked(0, t)).count(), 1);
        for i in 1..5 {
            let at = t + (i as u32) * MS;
            assert_eq!(r.push("live://1", GOIM, 1000, b"b", unacked(i, at)).count(), 0, "push {i} waits");
        }
        assert_eq!(r.open_batches(), 1);
        assert_eq!(
            r.next_deadline(),
            Some(t + 20 * MS),
            "counted from the flush, not the first waiting packet"
        );
        assert!(r.pop_due(t + 19 * MS).is_none());
        let due = r.pop_due(t + 20 * MS).expect("due at the deadline");
        assert_eq!((due.count, offsets(&due)), (4, vec![1, 2, 3, 4]), "five pushes, two flushes");
        assert!(r.pop_due(t + 20 * MS).is_none());
    }

    #[test]
    fn a_batch_flushes_when_it_holds_batch_packets() {
        let mut r = rooms(3, 10);
        let t = Instant::now();
        assert_eq!(r.push("live://1", GOIM, 1000, b"x", unacked(0, t)).count(), 1, "idle: at once");
        assert_eq!(r.push("live://1", GOIM, 1000, b"a", unacked(1, t)).count(), 0);
        assert_eq!(r.push("live://1", GOIM, 1000, b"b", unacked(2, t)).count(), 0);
        let flushed: Vec<_> = r.push("live://1", GOIM, 1001, b"c", unacked(3, t + MS)).collect();
        assert_eq!(flushed.len(), 1);
        let expected = [encode_push(1000, b"a"), encode_push(1000, b"b"), encode_push(1001, b"c")].concat();
        assert_eq!((flushed[0].count, &flushed[0].packets[..]), (3, &expected[..]));
        assert_eq!(offsets(&flushed[0]), [1, 2, 3]);
        assert_eq!(r.open_batches(), 0);
        assert_eq!(r.next_deadline(), Some(t + 21 * MS), "a full flush restarts the room's quiet period");
    }

    #[test]
    fn every_packet_of_a_batch_keeps_its_own_position_header() {
        let mut r = rooms(2, 10);
        let t = Instant::now();
        let _ = r.push("live://1", (14, 7), 1000, b"x", unacked(0, t)).count();
        let _ = r.push("live://1", (14, 8), 1000, b"a", unacked(1, t)).count();
        let flushed: Vec<_> = r.push("live://1", (14, 9), 1000, b"b", unacked(2, t)).collect();
        let headers: Vec<_> = goim_api::frame::split_packets(flushed[0].packets.clone())
            .map(|f| f.map(|f| (f.ver, f.seq)).unwrap())
            .collect();
        assert_eq!(headers, [(14, 8), (14, 9)]);
    }

    #[test]
    fn a_room_with_nothing_pushed_by_its_deadline_is_idle_again() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        assert_eq!(r.push("live://1", GOIM, 1000, b"a", unacked(0, t)).count(), 1);
        assert!(r.pop_due(t + 20 * MS).is_none(), "nothing to flush");
        assert_eq!(r.next_deadline(), None, "the room is forgotten");
        let later = t + 21 * MS;
        let flushed: Vec<_> = r.push("live://1", GOIM, 1000, b"b", unacked(1, later)).collect();
        assert_eq!(flushed.len(), 1, "idle again: flushed at once");
    }

    #[test]
    fn a_room_that_flushed_at_its_deadline_keeps_batching_for_another_max_delay() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        let _ = r.push("live://1", GOIM, 1000, b"a", unacked(0, t)).count();
        let _ = r.push("live://1", GOIM, 1000, b"b", unacked(1, t + 5 * MS)).count();
        let due = r.pop_due(t + 22 * MS).expect("flushed at the timer");
        assert_eq!(offsets(&due), [1]);
        assert_eq!(r.push("live://1", GOIM, 1000, b"c", unacked(2, t + 30 * MS)).count(), 0, "still a burst");
        assert_eq!(r.next_deadline(), Some(t + 42 * MS), "max_delay after the timer's flush");
        assert_eq!(offsets(&r.pop_due(t + 42 * MS).unwrap()), [2]);
    }

    #[test]
    fn a_room_reopened_after_a_full_flush_gets_a_fresh_deadline() {
        let t = Instant::now();
        let mut r = rooms(2, 10);
        let _ = r.push("live://1", GOIM, 1000, b"a", unacked(0, t)).count(); // idle: at once
        let _ = r.push("live://1", GOIM, 1000, b"b", unacked(1, t)).count();
        let later = t + 10 * MS;
        let _ = r.push("live://1", GOIM, 1000, b"c", unacked(2, later)).count(); // full: its entry is stale
        let _ = r.push("live://1", GOIM, 1000, b"d", unacked(3, later)).count();
        assert_eq!(r.next_deadline(), Some(later + 20 * MS));
        assert!(r.pop_due(t + 25 * MS).is_none(), "the stale deadline must not flush it");
        assert_eq!(offsets(&r.pop_due(later + 20 * MS).unwrap()), [3]);
    }

    #[test]
    fn a_room_keeps_push_order_across_its_flushes() {
        let mut r = rooms(4, 10);
        let t = Instant::now();
        let mut flushed = Vec::new();
        for i in 0..11 {
            flushed.extend(r.push("live://1", GOIM, 1000, &[i as u8], unacked(i, t + (i as u32) * MS)));
        }
        flushed.extend(r.pop_due(t + 60 * MS));
        let sizes: Vec<usize> = flushed.iter().map(|f| f.count).collect();
        assert_eq!(sizes, [1, 4, 4, 2]);
        let order: Vec<i64> = flushed.iter().flat_map(offsets).collect();
        assert_eq!(order, (0..11).collect::<Vec<_>>());
        let packets: Vec<u8> = flushed.iter().flat_map(|f| f.packets.to_vec()).collect();
        let expected: Vec<u8> = (0..11u8).flat_map(|i| encode_push(1000, &[i]).to_vec()).collect();
        assert_eq!(packets, expected);
    }

    #[test]
    fn tracking_a_room_past_the_bound_forgets_the_oldest_flushing_its_open_batch() {
        let mut r = rooms(20, 2);
        let t = Instant::now();
        assert_eq!(r.push("a", GOIM, 1000, b"1", unacked(0, t)).count(), 1);
        assert_eq!(r.push("b", GOIM, 1000, b"2", unacked(1, t)).count(), 1);
        assert_eq!(
            r.push("a", GOIM, 1000, b"3", unacked(2, t)).count(),
            0,
            "a tracked room does not count again"
        );
        let flushed: Vec<_> = r.push("c", GOIM, 1000, b"4", unacked(3, t)).collect();
        assert_eq!(flushed.len(), 2);
        assert_eq!((flushed[0].room.as_str(), offsets(&flushed[0])), ("a", vec![2]), "the oldest, early");
        assert_eq!((flushed[1].room.as_str(), offsets(&flushed[1])), ("c", vec![3]), "then the idle room's");
        let flushed: Vec<_> = r.push("a", GOIM, 1000, b"5", unacked(4, t)).collect();
        assert_eq!(flushed.len(), 1, "b, now the oldest, is forgotten with nothing to flush");
        assert_eq!((flushed[0].room.as_str(), offsets(&flushed[0])), ("a", vec![4]), "a was idle again");
    }

    #[test]
    fn drain_takes_every_open_batch_oldest_first() {
        let mut r = rooms(20, 10);
        let t = Instant::now();
        for (i, room) in ["x", "y", "z", "w"].into_iter().enumerate() {
            let _ = r.push(room, GOIM, 1000, b"m", unacked(i as i64, t)).count();
        }
        for (i, room) in ["x", "y", "z"].into_iter().enumerate() {
            let _ = r.push(room, GOIM, 1000, b"m", unacked(10 + i as i64, t)).count();
        }
        let rooms: Vec<_> = r.drain().map(|ready| ready.room).collect();
        assert_eq!(rooms, ["x", "y", "z"], "w has nothing waiting");
        assert_eq!(r.open_batches(), 0);
        assert_eq!(r.next_deadline(), None);
    }
}
