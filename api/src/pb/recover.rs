//! The recovery messages of `goim.logic.Logic/Recover` ⇄ [`RecoverRequest`] and [`Recovered`].

use crate::pb::logic;
use crate::position::{MAX_EPOCH, Position, RecoverRequest, Recovered, Replayed, StreamRecovery};

impl From<Position> for logic::StreamPosition {
    fn from(p: Position) -> logic::StreamPosition {
        logic::StreamPosition { epoch: p.epoch.into(), offset: p.offset }
    }
}

impl From<logic::StreamPosition> for Position {
    /// An epoch no header carries reads as epoch 0 (no position).
    fn from(p: logic::StreamPosition) -> Position {
        let epoch = u16::try_from(p.epoch).ok().filter(|&e| e <= MAX_EPOCH).unwrap_or(0);
        Position::new(epoch, if epoch == 0 { 0 } else { p.offset })
    }
}

impl From<RecoverRequest> for logic::RecoverReq {
    fn from(r: RecoverRequest) -> logic::RecoverReq {
        logic::RecoverReq {
            mid: r.mid,
            room: r.room,
            room_since: r.room_since.map(Into::into),
            user_since: r.user_since.map(Into::into),
        }
    }
}

impl From<logic::RecoverReq> for RecoverRequest {
    fn from(r: logic::RecoverReq) -> RecoverRequest {
        RecoverRequest {
            mid: r.mid,
            room: r.room,
            room_since: r.room_since.map(Into::into),
            user_since: r.user_since.map(Into::into),
        }
    }
}

impl From<StreamRecovery> for logic::StreamRecovery {
    fn from(s: StreamRecovery) -> logic::StreamRecovery {
        logic::StreamRecovery {
            epoch: s.position.epoch.into(),
            offset: s.position.offset,
            complete: s.complete,
            msgs: s
                .pushes
                .into_iter()
                .map(|p| logic::HistoryMsg { offset: p.offset, op: p.op, body: p.body })
                .collect(),
        }
    }
}

impl From<logic::StreamRecovery> for StreamRecovery {
    fn from(s: logic::StreamRecovery) -> StreamRecovery {
        StreamRecovery {
            position: logic::StreamPosition { epoch: s.epoch, offset: s.offset }.into(),
            complete: s.complete,
            pushes: s
                .msgs
                .into_iter()
                .map(|m| Replayed { offset: m.offset, op: m.op, body: m.body })
                .collect(),
        }
    }
}

impl From<Recovered> for logic::RecoverReply {
    fn from(r: Recovered) -> logic::RecoverReply {
        logic::RecoverReply { room: r.room.map(Into::into), user: r.user.map(Into::into), enabled: r.enabled }
    }
}

impl From<logic::RecoverReply> for Recovered {
    fn from(r: logic::RecoverReply) -> Recovered {
        Recovered { enabled: r.enabled, room: r.room.map(Into::into), user: r.user.map(Into::into) }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_recovery_survives_the_round_trip() {
        let r = Recovered {
            enabled: true,
            room: Some(StreamRecovery {
                position: Position::new(12, 40),
                complete: false,
                pushes: vec![Replayed { offset: 39, op: 1000, body: Bytes::from_static(b"x") }],
            }),
            user: None,
        };
        assert_eq!(Recovered::from(logic::RecoverReply::from(r.clone())), r);
        let q = RecoverRequest {
            mid: 7,
            room: "a://b".into(),
            room_since: Some(Position::new(1, 2)),
            user_since: None,
        };
        assert_eq!(RecoverRequest::from(logic::RecoverReq::from(q.clone())), q);
    }

    #[test]
    fn an_epoch_no_header_carries_is_no_position() {
        let p: Position = logic::StreamPosition { epoch: 70_000, offset: 5 }.into();
        assert_eq!(p, Position::default());
    }
}
