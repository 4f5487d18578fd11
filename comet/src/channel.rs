//! One authenticated connection as the rest of comet sees it (goim's `Channel`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::outbox::Outbox;
// The one import circle left in comet, on purpose: a channel knows its room and a room its
// members (goim's `Channel.Room` and `Room`'s list), so `channel` and `room` import each other.
// The data is mutual, not the layering: both sit in the domain layer, and the `Arc` cycle is
// broken by `Hub::leave_room` (from `remove` and `change_room`), which takes a channel out of
// its room.
use crate::room::Room;

pub struct Channel {
    /// Unique per process; tells a connection from a newer one with the same key.
    pub id: u64,
    /// Shared with the hub's key map, which would otherwise hold a copy.
    pub key: Arc<str>,
    pub mid: i64,
    pub ip: IpAddr,
    pub outbox: Outbox,
    /// The room it is in; written by the hub while it holds the room shard's lock.
    pub(crate) room: Mutex<Option<Arc<Room>>>,
    /// Accepted business ops, sorted (goim's `watchOps`); usually a handful.
    accepts: RwLock<Vec<i32>>,
    /// Set when a newer connection with the same key took this one's place on this comet, so
    /// its teardown must not remove the key's session at logic.
    replaced: AtomicBool,
}

impl Channel {
    pub fn new(id: u64, key: Arc<str>, mid: i64, ip: IpAddr, accepts: &[i32], outbox: Outbox) -> Channel {
        let mut ops = accepts.to_vec();
        ops.sort_unstable();
        ops.dedup();
        Channel {
            id,
            key,
            mid,
            ip,
            outbox,
            room: Mutex::new(None),
            accepts: RwLock::new(ops),
            replaced: AtomicBool::new(false),
        }
    }

    /// goim's `NeedPush`: key, mid and broadcast pushes reach only connections that accept the op.
    pub fn accepts(&self, op: i32) -> bool {
        self.accepts.read().binary_search(&op).is_ok()
    }

    pub fn watch(&self, ops: &[i32]) {
        let mut a = self.accepts.write();
        for op in ops {
            if let Err(at) = a.binary_search(op) {
                a.insert(at, *op);
            }
        }
    }

    pub fn unwatch(&self, ops: &[i32]) {
        self.accepts.write().retain(|op| !ops.contains(op));
    }

    pub fn room(&self) -> Option<Arc<Room>> {
        self.room.lock().clone()
    }

    pub fn mark_replaced(&self) {
        self.replaced.store(true, Ordering::Release);
    }

    pub fn was_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }
}

/// Parses goim's op list (`"1000,1001"`); like goim, entries that are not numbers are skipped.
pub fn parse_ops(body: &[u8]) -> Vec<i32> {
    std::str::from_utf8(body).unwrap_or("").split(',').filter_map(|s| s.trim().parse::<i32>().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(accepts: &[i32]) -> Channel {
        Channel::new(1, "k".into(), 1, [127, 0, 0, 1].into(), accepts, Outbox::new(1, 1))
    }

    #[test]
    fn watch_and_unwatch_change_what_is_accepted() {
        let c = channel(&[1000]);
        assert!(c.accepts(1000) && !c.accepts(1001));
        c.watch(&[1001, 1000]);
        assert!(c.accepts(1001));
        c.unwatch(&[1000]);
        assert!(!c.accepts(1000) && c.accepts(1001));
    }

    #[test]
    fn op_lists_skip_what_is_not_a_number() {
        assert_eq!(parse_ops(b"1000, 1001,x,,7"), vec![1000, 1001, 7]);
        assert_eq!(parse_ops(b"\xff"), Vec::<i32>::new());
    }
}
