//! [`PushMsg`] ⇄ [`logic::PushMsg`], and the Kafka message value helpers.

use prost::Message;

use crate::pb::{Error, logic};
use crate::{Position, PushKind, PushMsg};

impl From<PushKind> for logic::push_msg::Type {
    fn from(kind: PushKind) -> logic::push_msg::Type {
        match kind {
            PushKind::Keys => logic::push_msg::Type::Push,
            PushKind::Room => logic::push_msg::Type::Room,
            PushKind::Broadcast => logic::push_msg::Type::Broadcast,
        }
    }
}

impl From<&PushMsg> for logic::PushMsg {
    fn from(msg: &PushMsg) -> logic::PushMsg {
        logic::PushMsg {
            r#type: logic::push_msg::Type::from(msg.kind).into(),
            operation: msg.operation,
            speed: msg.speed,
            server: msg.server.clone(),
            room: msg.room.clone(),
            keys: msg.keys.clone(),
            msg: msg.msg.clone(),
            epoch: msg.position.map_or(0, |p| p.epoch.into()),
            offset: msg.position.map_or(0, |p| p.offset),
        }
    }
}

impl TryFrom<logic::PushMsg> for PushMsg {
    type Error = Error;

    fn try_from(msg: logic::PushMsg) -> Result<PushMsg, Error> {
        let kind = PushKind::from_code(msg.r#type).ok_or(Error::UnknownPushType(msg.r#type))?;
        Ok(PushMsg {
            kind,
            operation: msg.operation,
            speed: msg.speed,
            server: msg.server,
            room: msg.room,
            keys: msg.keys,
            msg: msg.msg,
            // An epoch past what a header carries is no position (not a goim-rs logic's value).
            position: u16::try_from(msg.epoch)
                .ok()
                .filter(|&e| e > 0 && e <= crate::position::MAX_EPOCH)
                .map(|epoch| Position::new(epoch, msg.offset)),
        })
    }
}

impl PushMsg {
    /// The protobuf encoding of goim's `goim.logic.PushMsg`: the Kafka message value.
    pub fn to_protobuf(&self) -> Vec<u8> {
        logic::PushMsg::from(self).encode_to_vec()
    }

    /// Decodes a Kafka message value written by goim-rs or goim's Go logic.
    pub fn from_protobuf(bytes: &[u8]) -> Result<PushMsg, Error> {
        PushMsg::try_from(logic::PushMsg::decode(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    // Tags: (field << 3) | wire type. type = 1 → 0x08, operation = 2 → 0x10, speed = 3 → 0x18,
    // server = 4 → 0x22, room = 5 → 0x2a, keys = 6 → 0x32, msg = 7 → 0x3a. Proto3 omits zero
    // values, so `type = PUSH (0)` is absent. 1000 is the varint 0xe8 0x07.

    #[test]
    fn keys_push_encodes_byte_for_byte_like_goim() {
        let msg = PushMsg::keys("c1", vec!["k1".into(), "k2".into()], 1000, Bytes::from_static(b"hi"));
        let want = [
            0x10, 0xe8, 0x07, // operation = 1000
            0x22, 2, b'c', b'1', // server = "c1"
            0x32, 2, b'k', b'1', // keys[0] = "k1"
            0x32, 2, b'k', b'2', // keys[1] = "k2"
            0x3a, 2, b'h', b'i', // msg = "hi"
        ];
        assert_eq!(msg.to_protobuf(), want);
    }

    #[test]
    fn room_push_encodes_byte_for_byte_like_goim() {
        let msg = PushMsg::room("live://1", 1000, Bytes::from_static(b"hi"));
        let mut want = vec![0x08, 1, 0x10, 0xe8, 0x07, 0x2a, 8];
        want.extend_from_slice(b"live://1");
        want.extend_from_slice(&[0x3a, 2, b'h', b'i']);
        assert_eq!(msg.to_protobuf(), want);
    }

    #[test]
    fn broadcast_push_encodes_byte_for_byte_like_goim() {
        let msg = PushMsg::broadcast(1000, 5, Bytes::from_static(b"hi"));
        let want = [0x08, 2, 0x10, 0xe8, 0x07, 0x18, 5, 0x3a, 2, b'h', b'i'];
        assert_eq!(msg.to_protobuf(), want);
    }

    #[test]
    fn negative_operation_is_a_ten_byte_varint_like_go_int32() {
        let msg = PushMsg::broadcast(-1, 0, Bytes::new());
        let want = [0x08, 2, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(msg.to_protobuf(), want);
    }

    #[test]
    fn every_kind_survives_a_round_trip() {
        let msgs = [
            PushMsg::keys("comet-0", vec!["a".into(), "b".into()], 1001, Bytes::from_static(b"{}")),
            PushMsg::room("chat://9", 1002, Bytes::from_static(b"room")),
            PushMsg::broadcast(1003, 100, Bytes::from_static(b"all")),
            PushMsg::keys("", Vec::new(), 0, Bytes::new()),
            PushMsg::room("chat://9", 1002, Bytes::from_static(b"r")).at(Position::new(7, 1 << 40)),
            PushMsg::keys("c", vec!["k".into()], 1, Bytes::new()).at(Position::new(1, 1)),
        ];
        for msg in msgs {
            assert_eq!(PushMsg::from_protobuf(&msg.to_protobuf()).unwrap(), msg);
        }
    }

    #[test]
    fn fields_in_any_order_decode_as_go_may_write_them() {
        // msg first, then operation, then type = ROOM, then room.
        let mut bytes = vec![0x3a, 1, b'x', 0x10, 7, 0x08, 1, 0x2a, 3];
        bytes.extend_from_slice(b"r:/");
        let msg = PushMsg::from_protobuf(&bytes).unwrap();
        assert_eq!(msg, PushMsg::room("r:/", 7, Bytes::from_static(b"x")));
    }

    #[test]
    fn a_position_is_fields_8_and_9_and_an_epoch_no_header_carries_is_none() {
        let msg = PushMsg::room("r", 1, Bytes::new()).at(Position::new(3, 300));
        let bytes = msg.to_protobuf();
        // ... room, operation, type; then epoch = 8 (tag 0x40) and offset = 9 (tag 0x48).
        assert!(bytes.ends_with(&[0x40, 3, 0x48, 0xac, 0x02]), "{bytes:x?}");
        let mut wide = logic::PushMsg::from(&msg);
        wide.epoch = 70_000;
        assert_eq!(PushMsg::try_from(wide).unwrap().position, None);
    }

    #[test]
    fn unknown_push_type_is_an_error() {
        assert_eq!(PushMsg::from_protobuf(&[0x08, 3]), Err(Error::UnknownPushType(3)));
    }

    #[test]
    fn truncated_bytes_are_a_decode_error() {
        assert!(matches!(PushMsg::from_protobuf(&[0x22, 5, b'a']), Err(Error::Decode(_))));
    }
}
