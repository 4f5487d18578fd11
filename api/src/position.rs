//! Stream positions: where a push sits in its room's or its user's stream, and how a packet
//! header carries it (see `docs/recovery.md`).
//!
//! goim sends pushes with `ver = 1` and `seq = 0`, and its clients ignore both. A positioned push
//! carries `ver = epoch × 2 + stream` and `seq = offset` (its low 32 bits). Epoch 0 means "no
//! position", so goim's `ver = 1` reads as none.

use serde::{Deserialize, Serialize};

/// The largest epoch a header can carry: `ver` is an `i16`, `epoch × 2 + 1` must fit.
pub const MAX_EPOCH: u16 = 16383;

/// Which of a connection's two streams a push belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The connection's room (`/goim/push/room`).
    Room = 0,
    /// The connection's user, its mid (`/goim/push/mids`).
    User = 1,
}

/// A push's place in its stream: `offset` counts the stream's pushes from 1 without gaps, and
/// `epoch` (1 to [`MAX_EPOCH`]) names the history the offsets count in; it changes when the
/// history is lost, and the offsets restart with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Position {
    #[serde(default)]
    pub epoch: u16,
    #[serde(default)]
    pub offset: u64,
}

impl Position {
    pub const fn new(epoch: u16, offset: u64) -> Position {
        Position { epoch, offset }
    }

    /// Epoch 0: a client that has seen nothing of the stream yet.
    pub const fn is_none(&self) -> bool {
        self.epoch == 0
    }

    /// The `ver` and `seq` of a push at this position in `stream`.
    pub fn header(&self, stream: Stream) -> (i16, i32) {
        let epoch = self.epoch.min(MAX_EPOCH) as i16;
        (epoch * 2 + stream as i16, self.offset as u32 as i32)
    }

    /// The stream, epoch and offset (low 32 bits) a push header carries, or `None` for a push
    /// without a position (goim's `ver = 1`).
    pub fn from_header(ver: i16, seq: i32) -> Option<(Stream, u16, u32)> {
        if ver < 2 {
            return None;
        }
        let stream = if ver & 1 == 0 { Stream::Room } else { Stream::User };
        Some((stream, (ver >> 1) as u16, seq as u32))
    }
}

/// Whether a push at `(epoch, offset32)` (as its header carries it) is at or before `seen`: a
/// push a client at `seen` already has. Offsets compare by their low 32 bits, modulo 2³², so a
/// stream may run past 2³² pushes.
pub fn already_seen(seen: Position, epoch: u16, offset32: u32) -> bool {
    if seen.is_none() || epoch != seen.epoch {
        return false;
    }
    let ahead = offset32.wrapping_sub(seen.offset as u32);
    ahead == 0 || ahead > u32::MAX / 2
}

/// What comet asks logic for a connection that sent op 18 (`docs/recovery.md`), once it receives
/// live pushes. A stream is asked for when its `*_since` is set (and the connection has it).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RecoverRequest {
    pub mid: i64,
    /// `type://id`; empty for none.
    pub room: String,
    pub room_since: Option<Position>,
    pub user_since: Option<Position>,
}

/// One push to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub offset: u64,
    pub op: i32,
    pub body: bytes::Bytes,
}

/// What one stream's client missed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StreamRecovery {
    /// The stream's epoch and its last offset: the client continues from here.
    pub position: Position,
    /// Whether `pushes` holds every push after the position asked for.
    pub complete: bool,
    /// Oldest first.
    pub pushes: Vec<Replayed>,
}

/// logic's answer to a [`RecoverRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Recovered {
    /// False when the deployment keeps no positions (then both streams are `None`).
    pub enabled: bool,
    pub room: Option<StreamRecovery>,
    pub user: Option<StreamRecovery>,
}

/// The body of a client's op 18: the last position it saw in each stream. Either may be absent.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverAsk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_through_the_header_for_both_streams() {
        for stream in [Stream::Room, Stream::User] {
            for p in [Position::new(1, 1), Position::new(MAX_EPOCH, u32::MAX as u64), Position::new(77, 5)] {
                let (ver, seq) = p.header(stream);
                assert_eq!(Position::from_header(ver, seq), Some((stream, p.epoch, p.offset as u32)));
            }
        }
    }

    #[test]
    fn goims_push_header_has_no_position() {
        assert_eq!(Position::from_header(1, 0), None);
        assert_eq!(Position::from_header(0, 9), None);
        assert_eq!(Position::from_header(-4, 9), None);
    }

    #[test]
    fn seen_compares_offsets_within_one_epoch_only() {
        let seen = Position::new(5, 10);
        assert!(already_seen(seen, 5, 10));
        assert!(already_seen(seen, 5, 3));
        assert!(!already_seen(seen, 5, 11));
        assert!(!already_seen(seen, 6, 3), "another epoch is another history");
        assert!(!already_seen(Position::default(), 0, 0));
        // Across the 32-bit wrap: 2³² + 2 is after 2³² − 1.
        let near_wrap = Position::new(5, u32::MAX as u64);
        assert!(!already_seen(near_wrap, 5, 2));
        assert!(already_seen(near_wrap, 5, u32::MAX - 3));
    }
}
