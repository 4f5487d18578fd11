//! The push job logic hands to job: goim's `goim.logic.PushMsg`, the Kafka message value.

use bytes::Bytes;

use crate::Position;

/// What a push targets. The codes are goim's `PushMsg.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushKind {
    /// Connection keys on one comet (`server`); mids are resolved to keys by logic.
    Keys = 0,
    /// Every member of `room` (`type://id`) on every comet.
    Room = 1,
    /// Every connection whose accepted ops include `operation`, on every comet.
    Broadcast = 2,
}

impl PushKind {
    pub fn from_code(code: i32) -> Option<PushKind> {
        match code {
            0 => Some(PushKind::Keys),
            1 => Some(PushKind::Room),
            2 => Some(PushKind::Broadcast),
            _ => None,
        }
    }
}

/// One push, as logic publishes it and job consumes it (field for field goim's `PushMsg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushMsg {
    pub kind: PushKind,
    /// The business op of the delivered packet, and the accepts filter for key and broadcast pushes.
    pub operation: i32,
    /// Broadcast pacing: connections per second across the cluster; 0 is unpaced.
    pub speed: i32,
    /// The comet holding `keys` (kind `Keys`).
    pub server: String,
    /// `type://id` (kind `Room`).
    pub room: String,
    pub keys: Vec<String>,
    /// The message body, delivered verbatim.
    pub msg: Bytes,
    /// Its place in its stream (goim-rs): the room's (kind `Room`) or the user's (kind `Keys`
    /// from a mid push). `None` for pushes without one; goim's job ignores it.
    pub position: Option<Position>,
}

impl PushMsg {
    pub fn keys(server: impl Into<String>, keys: Vec<String>, operation: i32, msg: Bytes) -> PushMsg {
        PushMsg {
            kind: PushKind::Keys,
            operation,
            speed: 0,
            server: server.into(),
            room: String::new(),
            keys,
            msg,
            position: None,
        }
    }

    pub fn room(room: impl Into<String>, operation: i32, msg: Bytes) -> PushMsg {
        PushMsg {
            kind: PushKind::Room,
            operation,
            speed: 0,
            server: String::new(),
            room: room.into(),
            keys: Vec::new(),
            msg,
            position: None,
        }
    }

    pub fn broadcast(operation: i32, speed: i32, msg: Bytes) -> PushMsg {
        PushMsg {
            kind: PushKind::Broadcast,
            operation,
            speed,
            server: String::new(),
            room: String::new(),
            keys: Vec::new(),
            msg,
            position: None,
        }
    }

    /// This push at `position` in its stream.
    pub fn at(mut self, position: Position) -> PushMsg {
        self.position = Some(position);
        self
    }

    /// goim's Kafka message key: the first key, the room, or the decimal op.
    pub fn partition_key(&self) -> String {
        match self.kind {
            PushKind::Keys => self.keys.first().cloned().unwrap_or_default(),
            PushKind::Room => self.room.clone(),
            PushKind::Broadcast => self.operation.to_string(),
        }
    }
}
