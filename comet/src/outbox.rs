//! A connection's bounded outbound queue.
//!
//! Producers (pushes from job, replies from the connection's own reader) never block: when the
//! queue is over its limits the connection is marked slow and will be disconnected, and the push
//! moves on to the next connection. The connection's writer is the only consumer; it takes
//! everything queued at once and coalesces it into one write.

use std::collections::VecDeque;

use bytes::Bytes;
use goim_api::Frame;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::disconnect::Disconnect;

/// One thing to write to a client.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// One packet on its own: a reply, or op 6. WebSocket: one message.
    Packet(Frame),
    /// Whole push packets back to back, shared by every recipient. TCP: written raw;
    /// WebSocket: one op-9 message wrapping them.
    Push(Bytes),
    /// A WebSocket pong with this payload (ignored on TCP).
    Pong(Bytes),
}

impl Outbound {
    fn weight(&self) -> usize {
        match self {
            Outbound::Packet(f) => f.encoded_len(),
            Outbound::Push(b) | Outbound::Pong(b) => b.len(),
        }
    }
}

/// Why a push was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("connection is closing")]
    Closing,
    #[error("connection queue is full; the client is disconnected as slow")]
    Slow,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Outbound>,
    bytes: usize,
    /// Set once; the writer sends op 6 for it and ends the connection. Boxed: it is rarely set,
    /// and inline it would make every connection's `Channel` larger.
    closing: Option<Box<Disconnect>>,
    /// While a resumed connection may still be handed pushes its replay carried: what each push
    /// passes through (see [`Outbox::put_in_front`]).
    filter: Option<Box<dyn Filter>>,
}

/// What a resume puts pushes through: `packets` without those already replayed (`None` when
/// none is left), and whether later pushes still need it.
pub trait Filter: FnMut(Bytes) -> (Option<Bytes>, bool) + Send {}

impl<F: FnMut(Bytes) -> (Option<Bytes>, bool) + Send> Filter for F {}

pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the connection's writer; `notify_one` keeps a permit when the writer is busy, so a
    /// wake-up is never lost.
    wake: Notify,
    capacity: usize,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(capacity: usize, max_bytes: usize) -> Outbox {
        Outbox { state: Mutex::new(State::default()), wake: Notify::new(), capacity, max_bytes }
    }

    /// Queues `item`, or refuses it. Overflow marks the connection slow (the caller counts it).
    pub fn push(&self, item: Outbound) -> Result<(), Refused> {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return Err(Refused::Closing);
        }
        let item = match (item, s.filter.as_mut()) {
            (Outbound::Push(b), Some(filter)) => {
                let (kept, needed) = filter(b);
                if !needed {
                    s.filter = None;
                }
                match kept {
                    Some(b) => Outbound::Push(b),
                    None => return Ok(()),
                }
            }
            (item, _) => item,
        };
        let weight = item.weight();
        // One item alone is always accepted, however large (a room batch may exceed `max_bytes`).
        if s.queue.len() >= self.capacity || (s.bytes > 0 && s.bytes + weight > self.max_bytes) {
            s.closing = Some(Box::new(Disconnect::Slow));
            drop(s);
            self.wake.notify_one();
            return Err(Refused::Slow);
        }
        s.bytes += weight;
        s.queue.push_back(item);
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Asks the writer to end the connection for `reason`; the first reason given wins.
    /// Returns whether this call set it.
    pub fn close(&self, reason: Disconnect) -> bool {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return false;
        }
        s.closing = Some(Box::new(reason));
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Ends the connection: closes for `reason` unless a reason is already set, and returns the
    /// reason that stands. A connection ends for exactly one reason, the outbox's, whichever side
    /// (read loop, write loop, a push that overflowed, a kick) got there first.
    pub fn close_with(&self, reason: Disconnect) -> Disconnect {
        let mut s = self.state.lock();
        let closing = s.closing.get_or_insert_with(|| Box::new(reason));
        let reason = Disconnect::clone(closing);
        drop(s);
        self.wake.notify_one();
        reason
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    /// The reason the connection is closing, if it is.
    #[cfg(test)]
    pub fn closing(&self) -> Option<Disconnect> {
        self.state.lock().closing.as_deref().cloned()
    }

    /// Waits until something is queued or the connection is closing. (The `Notified` itself,
    /// not an `async fn` around it, which would make every waiting writer larger.)
    pub fn ready(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Moves everything queued into `into`, and returns the closing reason if one is set.
    ///
    /// The queue's allocation goes with its items (into an empty `into`), so a connection that
    /// goes idle after a burst keeps no queue capacity; the next push allocates afresh.
    pub fn drain(&self, into: &mut Vec<Outbound>) -> Option<Disconnect> {
        let mut s = self.state.lock();
        let queue = std::mem::take(&mut s.queue);
        s.bytes = 0;
        let closing = s.closing.as_deref().cloned();
        drop(s);
        if into.is_empty() {
            // Reuses the deque's buffer; at most rotates it in place.
            *into = Vec::from(queue);
        } else {
            into.extend(queue);
        }
        closing
    }

    /// Puts `items` in front of the queue, after its first `keep_first` items, and passes every
    /// push queued before this call, and every later one for as long as `filter` says it is
    /// needed, through `filter` (which may drop packets from it, or all of it). How a resume puts
    /// its replay before the live pushes that queued meanwhile, and keeps out those the replay
    /// carried that are still on their way. `items` are not held to the limits: a replay is
    /// bounded by the history's size.
    pub fn put_in_front(&self, keep_first: usize, items: Vec<Outbound>, mut filter: impl Filter + 'static) {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return;
        }
        let queued = std::mem::take(&mut s.queue);
        let mut queue = VecDeque::with_capacity(queued.len() + items.len());
        let mut queued = queued.into_iter();
        queue.extend(queued.by_ref().take(keep_first));
        queue.extend(items);
        let mut needed = true;
        for item in queued {
            match item {
                Outbound::Push(b) if needed => {
                    let (kept, still) = filter(b);
                    needed = still;
                    queue.extend(kept.map(Outbound::Push));
                }
                other => queue.push_back(other),
            }
        }
        s.bytes = queue.iter().map(Outbound::weight).sum();
        s.queue = queue;
        s.filter = needed.then(|| Box::new(filter) as Box<dyn Filter>);
        drop(s);
        self.wake.notify_one();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(n: usize) -> Outbound {
        Outbound::Push(Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn overflow_by_count_marks_the_connection_slow_and_refuses_later_pushes() {
        let o = Outbox::new(2, 1 << 20);
        o.push(push(1)).unwrap();
        o.push(push(1)).unwrap();
        assert_eq!(o.push(push(1)), Err(Refused::Slow));
        assert_eq!(o.push(push(1)), Err(Refused::Closing));
        let mut items = Vec::new();
        assert_eq!(o.drain(&mut items), Some(Disconnect::Slow));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn overflow_by_bytes_marks_the_connection_slow() {
        let o = Outbox::new(100, 10);
        o.push(push(6)).unwrap();
        assert_eq!(o.push(push(6)), Err(Refused::Slow));
    }

    #[test]
    fn one_item_larger_than_the_byte_limit_is_accepted_into_an_empty_queue() {
        let o = Outbox::new(100, 10);
        o.push(push(50)).unwrap();
        assert_eq!(o.push(push(1)), Err(Refused::Slow));
    }

    #[test]
    fn put_in_front_goes_after_the_kept_first_items_and_filters_only_what_was_queued() {
        let o = Outbox::new(10, 1 << 20);
        o.push(Outbound::Packet(Frame::push(8, Bytes::new()))).unwrap();
        o.push(push(3)).unwrap();
        o.push(push(4)).unwrap();
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = seen.clone();
        // Drops 3-byte pushes; needed until a 5-byte one passes.
        o.put_in_front(1, vec![push(1), push(2)], move |b: Bytes| {
            log.lock().push(b.len());
            let n = b.len();
            ((n != 3).then_some(b), n != 5)
        });
        assert_eq!(*seen.lock(), [3, 4], "the pushes queued before");
        o.push(push(3)).unwrap();
        o.push(push(5)).unwrap();
        o.push(push(3)).unwrap();
        assert_eq!(*seen.lock(), [3, 4, 3, 5], "later ones until the filter is done");
        let mut items = Vec::new();
        o.drain(&mut items);
        let shape: Vec<_> = items
            .iter()
            .map(|i| match i {
                Outbound::Packet(f) => format!("op{}", f.op),
                Outbound::Push(b) => b.len().to_string(),
                Outbound::Pong(_) => "pong".into(),
            })
            .collect();
        assert_eq!(shape, ["op8", "1", "2", "4", "5", "3"]);
    }

    #[test]
    fn drain_frees_room_for_more() {
        let o = Outbox::new(1, 100);
        o.push(push(50)).unwrap();
        o.drain(&mut Vec::new());
        o.push(push(50)).unwrap();
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn drain_hands_over_the_queue_allocation_so_an_idle_outbox_holds_none() {
        let o = Outbox::new(8, 100);
        for _ in 0..3 {
            o.push(push(1)).unwrap();
        }
        let mut items = Vec::new();
        o.drain(&mut items);
        assert_eq!(items.len(), 3);
        assert_eq!(o.state.lock().queue.capacity(), 0);
    }

    #[test]
    fn the_first_close_reason_wins() {
        let o = Outbox::new(1, 100);
        assert!(o.close(Disconnect::Kicked));
        assert!(!o.close(Disconnect::Shutdown));
        assert_eq!(o.drain(&mut Vec::new()), Some(Disconnect::Kicked));
    }

    #[test]
    fn close_with_keeps_a_reason_already_set_and_refuses_later_pushes() {
        let o = Outbox::new(1, 100);
        o.push(push(1)).unwrap();
        assert_eq!(o.push(push(1)), Err(Refused::Slow));
        assert_eq!(o.close_with(Disconnect::ClientClosed), Disconnect::Slow);
        let o = Outbox::new(1, 100);
        assert_eq!(o.close_with(Disconnect::WriteFailed), Disconnect::WriteFailed);
        assert_eq!(o.push(push(1)), Err(Refused::Closing));
        assert_eq!(o.closing(), Some(Disconnect::WriteFailed));
    }

    #[tokio::test]
    async fn a_push_before_the_writer_waits_still_wakes_it() {
        let o = Outbox::new(4, 100);
        o.push(push(1)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), o.ready()).await.unwrap();
    }
}
