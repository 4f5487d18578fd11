//! Hooks for comet's criterion benchmarks (`comet/benches`): the room fan-out driven without
//! sockets or a runtime. Hidden from the docs; not part of the API.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::channel::Channel;
use crate::codec::Encoder;
use crate::hub::Hub;
use crate::outbox::{Outbound, Outbox};
use crate::tcp::TcpEncoder;

/// One room of `members` connections on a hub, as job's room dispatch finds it.
pub struct RoomFanout {
    hub: Hub,
    channels: Vec<Arc<Channel>>,
    room: String,
    scratch: Vec<Outbound>,
}

impl RoomFanout {
    /// `members` connections with comet's default queue limits, all in one room.
    pub fn new(members: usize) -> RoomFanout {
        let config = crate::Config::default();
        let hub = Hub::new(config.buckets);
        let room = "live://bench".to_string();
        let channels = (0..members)
            .map(|i| {
                let outbox = Outbox::new(config.outbox.capacity, config.outbox.max_bytes);
                let ch = Arc::new(Channel::new(
                    i as u64,
                    format!("k{i}").into(),
                    i as i64,
                    [127, 0, 0, 1].into(),
                    &[],
                    outbox,
                ));
                hub.put(ch.clone());
                hub.change_room(&ch, &room);
                ch
            })
            .collect();
        RoomFanout { hub, channels, room, scratch: Vec::new() }
    }

    /// Queues one shared batch for every member (`Comet::broadcast_room`'s work); returns how
    /// many queued it.
    pub fn push(&self, batch: &Bytes) -> usize {
        self.hub.push_room(&self.room, batch).queued
    }

    /// Empties every member's queue as its writer does, encoding each one's items into `out`
    /// (cleared per member, as each writer has its own buffer); returns the bytes encoded.
    pub fn drain_encode(&mut self, out: &mut BytesMut) -> usize {
        let mut total = 0;
        for ch in &self.channels {
            self.scratch.clear();
            ch.outbox.drain(&mut self.scratch);
            out.clear();
            for item in &self.scratch {
                TcpEncoder.encode(item, out);
            }
            total += out.len();
        }
        total
    }
}
