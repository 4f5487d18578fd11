//! Every connection and room on this comet: the key map in shards (goim's buckets) and the rooms.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::channel::Channel;
use crate::disconnect::Disconnect;
use crate::outbox::Outbound;
use crate::room::{Fanout, Room};

type Shard<K, V> = RwLock<HashMap<K, V>>;

pub struct Hub {
    hasher: std::hash::RandomState,
    keys: Box<[Shard<Arc<str>, Arc<Channel>>]>,
    rooms: Box<[Shard<Arc<str>, Arc<Room>>]>,
    ips: Mutex<HashMap<IpAddr, u32>>,
}

impl Hub {
    pub fn new(shards: usize) -> Hub {
        let shards = shards.max(1);
        Hub {
            hasher: std::hash::RandomState::new(),
            keys: (0..shards).map(|_| RwLock::default()).collect(),
            rooms: (0..shards).map(|_| RwLock::default()).collect(),
            ips: Mutex::default(),
        }
    }

    fn shard<'a, T, K: Hash + ?Sized>(&self, shards: &'a [T], key: &K) -> &'a T {
        &shards[(self.hasher.hash_one(key) % shards.len() as u64) as usize]
    }

    /// Registers `ch` under its key, replacing (and returning) an older connection with that key:
    /// newest wins, as in goim. The old one is marked replaced and asked to close.
    pub fn put(&self, ch: Arc<Channel>) -> Option<Arc<Channel>> {
        *self.ips.lock().entry(ch.ip).or_default() += 1;
        let old = self.shard(&self.keys, &*ch.key).write().insert(ch.key.clone(), ch);
        if let Some(old) = &old {
            old.mark_replaced();
            old.outbox.close(Disconnect::Kicked);
        }
        old
    }

    /// Removes `ch` from its key (only if the key still maps to it) and from its room.
    pub fn remove(&self, ch: &Arc<Channel>) {
        {
            let mut shard = self.shard(&self.keys, &*ch.key).write();
            if let Entry::Occupied(e) = shard.entry(ch.key.clone())
                && e.get().id == ch.id
            {
                e.remove();
            }
        }
        {
            let mut ips = self.ips.lock();
            if let Some(n) = ips.get_mut(&ch.ip) {
                *n -= 1;
                if *n == 0 {
                    ips.remove(&ch.ip);
                }
            }
        }
        self.leave_room(ch);
    }

    pub fn get(&self, key: &str) -> Option<Arc<Channel>> {
        self.shard(&self.keys, key).read().get(key).cloned()
    }

    /// Moves `ch` to `room` (empty: no room). Returns the room it is now in.
    pub fn change_room(&self, ch: &Arc<Channel>, room: &str) -> Option<Arc<Room>> {
        if let Some(current) = ch.room()
            && &*current.id == room
        {
            // goim drops the room when its only member "changes" into it; staying is right.
            return Some(current);
        }
        self.leave_room(ch);
        if room.is_empty() {
            return None;
        }
        let id: Arc<str> = Arc::from(room);
        let mut shard = self.shard(&self.rooms, &*id).write();
        let r = shard.entry(id.clone()).or_insert_with(|| Arc::new(Room::new(id))).clone();
        r.members.write().insert(ch.id, ch.clone());
        *ch.room.lock() = Some(r.clone());
        Some(r)
    }

    fn leave_room(&self, ch: &Arc<Channel>) {
        let Some(r) = ch.room.lock().take() else { return };
        let mut shard = self.shard(&self.rooms, &*r.id).write();
        let mut members = r.members.write();
        members.remove(&ch.id);
        if members.is_empty() {
            shard.remove(&r.id);
        }
    }

    pub fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.shard(&self.rooms, id).read().get(id).cloned()
    }

    /// Queues `packet` for each key whose connection accepts `op`. A slow or missing connection
    /// never stops the others (goim aborts the rest of the request on the first full queue).
    pub fn push_keys(&self, keys: &[String], op: i32, packet: &Bytes) -> (Fanout, usize) {
        let mut d = Fanout::default();
        let mut missing = 0;
        for key in keys {
            match self.get(key) {
                Some(ch) if ch.accepts(op) => d.add(ch.outbox.push(Outbound::Push(packet.clone()))),
                Some(_) => {}
                None => missing += 1,
            }
        }
        (d, missing)
    }

    pub fn push_room(&self, room: &str, batch: &Bytes) -> Fanout {
        self.room(room).map(|r| r.push(batch)).unwrap_or_default()
    }

    /// Queues `packet` for every connection in shard `i` that accepts `op`; returns the delivery
    /// and the shard's size (the broadcast pacer sleeps in proportion to it, as goim does).
    pub fn push_shard(&self, i: usize, op: i32, packet: &Bytes) -> (Fanout, usize) {
        let shard = self.keys[i].read();
        let mut d = Fanout::default();
        for ch in shard.values().filter(|ch| ch.accepts(op)) {
            d.add(ch.outbox.push(Outbound::Push(packet.clone())));
        }
        (d, shard.len())
    }

    pub fn shard_count(&self) -> usize {
        self.keys.len()
    }

    /// Asks every connection to close for `reason`.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        let mut n = 0;
        for shard in self.keys.iter() {
            for ch in shard.read().values() {
                n += usize::from(ch.outbox.close(reason.clone()));
            }
        }
        n
    }

    /// Every connection held now, shard by shard (a snapshot for the drain to walk).
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        let mut out = Vec::with_capacity(self.connections());
        for shard in self.keys.iter() {
            out.extend(shard.read().values().cloned());
        }
        out
    }

    pub fn connections(&self) -> usize {
        self.keys.iter().map(|s| s.read().len()).sum()
    }

    pub fn ip_count(&self) -> usize {
        self.ips.lock().len()
    }

    /// Members per non-empty room on this comet.
    pub fn room_counts(&self) -> HashMap<String, i32> {
        let mut out = HashMap::new();
        for shard in self.rooms.iter() {
            for (id, r) in shard.read().iter() {
                let n = r.local_online();
                if n > 0 {
                    out.insert(id.to_string(), n);
                }
            }
        }
        out
    }

    /// Applies logic's cluster-wide room counts.
    pub fn set_all_online(&self, counts: &HashMap<String, i32>) {
        for shard in self.rooms.iter() {
            for (id, r) in shard.read().iter() {
                r.set_all_online(counts.get(&**id).copied().unwrap_or(0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;

    fn ch(id: u64, key: &str, accepts: &[i32]) -> Arc<Channel> {
        Arc::new(Channel::new(id, key.into(), 7, [127, 0, 0, 1].into(), accepts, Outbox::new(2, 1 << 16)))
    }

    #[test]
    fn a_new_connection_with_the_same_key_replaces_and_closes_the_old_one() {
        let hub = Hub::new(4);
        let a = ch(1, "k", &[]);
        let b = ch(2, "k", &[]);
        assert!(hub.put(a.clone()).is_none());
        assert_eq!(hub.put(b.clone()).unwrap().id, 1);
        assert!(a.was_replaced() && a.outbox.is_closing());
        hub.remove(&a);
        assert_eq!(hub.get("k").unwrap().id, 2, "removing the old one keeps the new one");
    }

    #[test]
    fn an_empty_room_is_dropped_and_rejoining_creates_it_again() {
        let hub = Hub::new(4);
        let a = ch(1, "a", &[]);
        hub.put(a.clone());
        hub.change_room(&a, "live://1");
        assert_eq!(hub.room("live://1").unwrap().local_online(), 1);
        hub.change_room(&a, "live://1");
        assert_eq!(hub.room("live://1").unwrap().local_online(), 1, "changing into the same room keeps it");
        hub.change_room(&a, "");
        assert!(hub.room("live://1").is_none());
        hub.change_room(&a, "live://1");
        assert_eq!(hub.room_counts().get("live://1"), Some(&1));
        hub.remove(&a);
        assert!(hub.room_counts().is_empty());
    }

    #[test]
    fn a_slow_key_does_not_stop_the_rest_of_a_key_push() {
        let hub = Hub::new(4);
        let (a, b) = (ch(1, "a", &[1000]), ch(2, "b", &[1000]));
        hub.put(a.clone());
        hub.put(b.clone());
        for _ in 0..2 {
            a.outbox.push(Outbound::Push(Bytes::from_static(b"x"))).unwrap();
        }
        let keys = vec!["a".to_string(), "b".to_string(), "gone".to_string()];
        let (d, missing) = hub.push_keys(&keys, 1000, &Bytes::from_static(b"p"));
        assert_eq!((d.queued, d.slow, missing), (1, 1, 1));
        assert_eq!(b.outbox.len(), 1);
    }

    #[test]
    fn key_pushes_respect_accepts() {
        let hub = Hub::new(1);
        let a = ch(1, "a", &[1001]);
        hub.put(a.clone());
        let (d, _) = hub.push_keys(&["a".into()], 1000, &Bytes::new());
        assert_eq!(d.queued, 0);
    }
}
