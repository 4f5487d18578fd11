//! [`Frame`] ⇄ [`Proto`].

use crate::Frame;
use crate::pb::protocol::Proto;

impl From<&Frame> for Proto {
    fn from(frame: &Frame) -> Proto {
        Proto { ver: i32::from(frame.ver), op: frame.op, seq: frame.seq, body: frame.body.clone() }
    }
}

impl From<Frame> for Proto {
    fn from(frame: Frame) -> Proto {
        Proto { ver: i32::from(frame.ver), op: frame.op, seq: frame.seq, body: frame.body }
    }
}

impl From<Proto> for Frame {
    /// `ver` is truncated to 16 bits, as goim's packet header does with it.
    fn from(proto: Proto) -> Frame {
        Frame { ver: proto.ver as i16, op: proto.op, seq: proto.seq, body: proto.body }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use super::*;

    #[test]
    fn frame_survives_a_trip_through_proto() {
        let frame = Frame { ver: 1, op: 1000, seq: 7, body: Bytes::from_static(b"hi") };
        let bytes = Proto::from(&frame).encode_to_vec();
        let back = Frame::from(Proto::decode(bytes.as_slice()).unwrap());
        assert_eq!(back, frame);
    }

    #[test]
    fn proto_encodes_with_goims_field_numbers() {
        let frame = Frame { ver: 1, op: 9, seq: 2, body: Bytes::from_static(b"ab") };
        // ver = 1 (tag 0x08), op = 2 (0x10), seq = 3 (0x18), body = 4 (0x22, length-delimited).
        let want = [0x08, 1, 0x10, 9, 0x18, 2, 0x22, 2, b'a', b'b'];
        assert_eq!(Proto::from(frame).encode_to_vec(), want);
    }

    #[test]
    fn proto_ver_is_truncated_to_sixteen_bits_like_the_wire_header() {
        let proto = Proto { ver: 0x1_0002, op: 4, seq: 0, body: Bytes::new() };
        assert_eq!(Frame::from(proto).ver, 2);
    }
}
