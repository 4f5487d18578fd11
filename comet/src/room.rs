//! A room: the connections on this comet that receive its batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use parking_lot::RwLock;

// `channel` imports this module back: the one circle comet keeps (why: see `channel.rs`).
use crate::channel::Channel;
use crate::outbox::{Outbound, Refused};

pub struct Room {
    pub id: Arc<str>,
    /// Members by channel id. Written only while the hub holds this room's shard lock, so a room
    /// that becomes empty is removed from the hub before anyone can join it again.
    pub(crate) members: RwLock<HashMap<u64, Arc<Channel>>>,
    /// The cluster-wide count from logic's last online reply (goim's `AllOnline`).
    all_online: AtomicI32,
}

/// What one delivery to a set of connections did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    pub queued: usize,
    /// Connections disconnected because their queue overflowed.
    pub slow: usize,
    /// Connections already closing, skipped.
    pub closing: usize,
}

impl Fanout {
    pub fn add(&mut self, r: Result<(), Refused>) {
        match r {
            Ok(()) => self.queued += 1,
            Err(Refused::Slow) => self.slow += 1,
            Err(Refused::Closing) => self.closing += 1,
        }
    }

    pub fn merge(&mut self, other: Fanout) {
        self.queued += other.queued;
        self.slow += other.slow;
        self.closing += other.closing;
    }
}

impl Room {
    pub fn new(id: Arc<str>) -> Room {
        Room { id, members: RwLock::new(HashMap::new()), all_online: AtomicI32::new(0) }
    }

    /// Members on this comet.
    pub fn local_online(&self) -> i32 {
        self.members.read().len() as i32
    }

    /// What a heartbeat reply reports: the cluster count when logic has sent one, else the local one.
    pub fn online(&self) -> i32 {
        let all = self.all_online.load(Ordering::Relaxed);
        if all > 0 { all } else { self.local_online() }
    }

    pub fn set_all_online(&self, n: i32) {
        self.all_online.store(n, Ordering::Relaxed);
    }

    /// Queues one shared batch for every member. No accepts filter (goim applies none to rooms).
    pub fn push(&self, batch: &bytes::Bytes) -> Fanout {
        let mut d = Fanout::default();
        for ch in self.members.read().values() {
            d.add(ch.outbox.push(Outbound::Push(batch.clone())));
        }
        d
    }
}
