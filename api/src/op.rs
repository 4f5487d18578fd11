//! Operation codes of the goim v2 protocol.

/// The ops goim defines, and goim-rs's two (18, 19). Business ops (1000, 1001, ...) are plain `i32`s and have no variant:
/// a [`crate::Frame`] carries its op as `i32` so any value survives a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Op {
    /// Reserved by goim (never implemented); treated as uplink after auth.
    Handshake = 0,
    HandshakeReply = 1,
    Heartbeat = 2,
    /// Body: big-endian `i32`, the online count of the connection's room.
    HeartbeatReply = 3,
    SendMsg = 4,
    SendMsgReply = 5,
    /// Unused by goim; goim-rs sends it before closing a connection on purpose (JSON body).
    DisconnectReply = 6,
    /// Body: the token (goim's JSON, or a JWT).
    Auth = 7,
    AuthReply = 8,
    /// A container: the body holds one or more whole packets back to back.
    Raw = 9,
    /// Internal sentinel in goim; never on the wire.
    ProtoReady = 10,
    /// Internal sentinel in goim; never on the wire.
    ProtoFinish = 11,
    /// Body: the new room id (`type://id`); empty leaves the room.
    ChangeRoom = 12,
    ChangeRoomReply = 13,
    /// Body: comma-separated decimal ops to accept.
    Sub = 14,
    SubReply = 15,
    /// Body: comma-separated decimal ops to stop accepting.
    Unsub = 16,
    UnsubReply = 17,
    /// goim-rs: sent by a client right before op 7, the last positions it saw (JSON); see
    /// `docs/recovery.md`.
    Recover = 18,
    /// goim-rs: after op 8, what the server replays (JSON); the replayed pushes follow it.
    RecoverReply = 19,
}

impl Op {
    /// Every op, in numeric order.
    pub const ALL: [Op; 20] = [
        Op::Handshake,
        Op::HandshakeReply,
        Op::Heartbeat,
        Op::HeartbeatReply,
        Op::SendMsg,
        Op::SendMsgReply,
        Op::DisconnectReply,
        Op::Auth,
        Op::AuthReply,
        Op::Raw,
        Op::ProtoReady,
        Op::ProtoFinish,
        Op::ChangeRoom,
        Op::ChangeRoomReply,
        Op::Sub,
        Op::SubReply,
        Op::Unsub,
        Op::UnsubReply,
        Op::Recover,
        Op::RecoverReply,
    ];

    /// The defined op with this code, or `None` for business ops.
    pub fn from_code(code: i32) -> Option<Op> {
        usize::try_from(code).ok().and_then(|i| Op::ALL.get(i).copied())
    }

    pub const fn code(self) -> i32 {
        self as i32
    }
}

impl From<Op> for i32 {
    fn from(op: Op) -> i32 {
        op as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_through_its_code() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(op.code(), i as i32);
            assert_eq!(Op::from_code(i as i32), Some(*op));
        }
    }

    #[test]
    fn business_and_negative_ops_are_not_defined_ops() {
        assert_eq!(Op::from_code(20), None);
        assert_eq!(Op::from_code(1000), None);
        assert_eq!(Op::from_code(-1), None);
    }
}
