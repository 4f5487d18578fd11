//! Byte-exact tests of the goim v2 codec. Every expected byte string is written out by hand from
//! the wire table in the crate docs, never produced by the code under test.

use bytes::{Bytes, BytesMut};
use goim_api::frame::{self, Error, decode_message, decode_stream, encode_push, raw_header, split_packets};
use goim_api::{Batch, DEFAULT_MAX_BODY, Frame, Op};

/// ver 0x0506 and seq 0x01020304 put distinct bytes in every header field, so a swapped or
/// misplaced field cannot go unnoticed.
const VER: i16 = 0x0506;
const SEQ: i32 = 0x0102_0304;

/// Every defined op, header only (packLen 16), with `VER` and `SEQ`.
#[rustfmt::skip]
const OP_PACKETS: [(Op, [u8; 16]); 20] = [
    (Op::Handshake,       [0,0,0,16, 0,16, 5,6, 0,0,0,0,  1,2,3,4]),
    (Op::HandshakeReply,  [0,0,0,16, 0,16, 5,6, 0,0,0,1,  1,2,3,4]),
    (Op::Heartbeat,       [0,0,0,16, 0,16, 5,6, 0,0,0,2,  1,2,3,4]),
    (Op::HeartbeatReply,  [0,0,0,16, 0,16, 5,6, 0,0,0,3,  1,2,3,4]),
    (Op::SendMsg,         [0,0,0,16, 0,16, 5,6, 0,0,0,4,  1,2,3,4]),
    (Op::SendMsgReply,    [0,0,0,16, 0,16, 5,6, 0,0,0,5,  1,2,3,4]),
    (Op::DisconnectReply, [0,0,0,16, 0,16, 5,6, 0,0,0,6,  1,2,3,4]),
    (Op::Auth,            [0,0,0,16, 0,16, 5,6, 0,0,0,7,  1,2,3,4]),
    (Op::AuthReply,       [0,0,0,16, 0,16, 5,6, 0,0,0,8,  1,2,3,4]),
    (Op::Raw,             [0,0,0,16, 0,16, 5,6, 0,0,0,9,  1,2,3,4]),
    (Op::ProtoReady,      [0,0,0,16, 0,16, 5,6, 0,0,0,10, 1,2,3,4]),
    (Op::ProtoFinish,     [0,0,0,16, 0,16, 5,6, 0,0,0,11, 1,2,3,4]),
    (Op::ChangeRoom,      [0,0,0,16, 0,16, 5,6, 0,0,0,12, 1,2,3,4]),
    (Op::ChangeRoomReply, [0,0,0,16, 0,16, 5,6, 0,0,0,13, 1,2,3,4]),
    (Op::Sub,             [0,0,0,16, 0,16, 5,6, 0,0,0,14, 1,2,3,4]),
    (Op::SubReply,        [0,0,0,16, 0,16, 5,6, 0,0,0,15, 1,2,3,4]),
    (Op::Unsub,           [0,0,0,16, 0,16, 5,6, 0,0,0,16, 1,2,3,4]),
    (Op::UnsubReply,      [0,0,0,16, 0,16, 5,6, 0,0,0,17, 1,2,3,4]),
    (Op::Recover,         [0,0,0,16, 0,16, 5,6, 0,0,0,18, 1,2,3,4]),
    (Op::RecoverReply,    [0,0,0,16, 0,16, 5,6, 0,0,0,19, 1,2,3,4]),
];

/// Business op 1000 (0x03e8) as a server push: ver 1, seq 0, body "hi".
#[rustfmt::skip]
const PUSH_1000_HI: [u8; 18] = [0,0,0,18, 0,16, 0,1, 0,0,3,232, 0,0,0,0, b'h', b'i'];

/// A header with arbitrary `packLen` and `headerLen` (ver 1, op 7, seq 1), then `body_len` bytes of 0xab.
fn packet(pack_len: i32, header_len: i16, body_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&pack_len.to_be_bytes());
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 7, 0, 0, 0, 1]);
    out.resize(out.len() + body_len, 0xab);
    out
}

/// Asserts that both framings reject `bytes` with `expected`, and that the stream form leaves its
/// buffer untouched (so the caller can still log what it got).
#[track_caller]
fn assert_rejected(bytes: &[u8], max_body: usize, expected: Error) {
    let mut stream = BytesMut::from(bytes);
    assert_eq!(decode_stream(&mut stream, max_body), Err(expected.clone()), "stream form");
    assert_eq!(&stream[..], bytes, "a rejected stream is not consumed");
    assert_eq!(decode_message(Bytes::copy_from_slice(bytes), max_body), Err(expected), "message form");
}

/// Asserts that both framings accept `bytes` as exactly one packet and returns it.
#[track_caller]
fn decode_both(bytes: &[u8], max_body: usize) -> Frame {
    let mut stream = BytesMut::from(bytes);
    let from_stream = decode_stream(&mut stream, max_body).expect("stream form").expect("a whole packet");
    assert!(stream.is_empty(), "the stream form consumes exactly packLen bytes");
    let from_message = decode_message(Bytes::copy_from_slice(bytes), max_body).expect("message form");
    assert_eq!(from_stream, from_message);
    from_stream
}

#[test]
fn every_defined_op_encodes_to_its_exact_bytes() {
    for (op, expected) in OP_PACKETS {
        let frame = Frame { ver: VER, op: op.code(), seq: SEQ, body: Bytes::new() };
        assert_eq!(&frame.to_bytes()[..], &expected[..], "{op:?}");
    }
}

#[test]
fn op_table_covers_every_defined_op_in_order() {
    let ops: Vec<Op> = OP_PACKETS.iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, Op::ALL);
}

#[test]
fn every_defined_op_decodes_from_its_exact_bytes() {
    for (op, bytes) in OP_PACKETS {
        let frame = decode_both(&bytes, DEFAULT_MAX_BODY);
        assert_eq!(frame, Frame { ver: VER, op: op.code(), seq: SEQ, body: Bytes::new() });
        assert_eq!(frame.known_op(), Some(op));
    }
}

#[test]
fn business_op_push_encodes_to_its_exact_bytes() {
    assert_eq!(&Frame::push(1000, "hi").to_bytes()[..], &PUSH_1000_HI[..]);
    assert_eq!(&encode_push(1000, b"hi")[..], &PUSH_1000_HI[..]);
}

#[test]
fn business_op_decodes_and_is_not_a_defined_op() {
    let frame = decode_both(&PUSH_1000_HI, DEFAULT_MAX_BODY);
    assert_eq!(frame, Frame { ver: 1, op: 1000, seq: 0, body: Bytes::from_static(b"hi") });
    assert_eq!(frame.known_op(), None);
}

#[test]
fn negative_header_fields_are_twos_complement_big_endian() {
    let frame = Frame { ver: -1, op: -2, seq: i32::MIN, body: Bytes::from_static(&[9]) };
    #[rustfmt::skip]
    let expected = [0,0,0,17, 0,16, 255,255, 255,255,255,254, 128,0,0,0, 9];
    assert_eq!(&frame.to_bytes()[..], &expected[..]);
    assert_eq!(decode_both(&expected, DEFAULT_MAX_BODY), frame);
}

#[test]
fn encode_appends_to_what_the_buffer_already_holds() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    Frame::push(1000, "hi").encode(&mut buf);
    assert_eq!(&buf[..2], b"xy");
    assert_eq!(&buf[2..], &PUSH_1000_HI[..]);
}

#[test]
fn heartbeat_reply_echoes_ver_and_seq_and_carries_the_online_count() {
    // The benchmark client's heartbeat: ver 0, seq 9.
    let heartbeat = decode_both(&[0, 0, 0, 16, 0, 16, 0, 0, 0, 0, 0, 2, 0, 0, 0, 9], DEFAULT_MAX_BODY);
    let reply = heartbeat.reply(Op::HeartbeatReply, Bytes::copy_from_slice(&42i32.to_be_bytes()));
    #[rustfmt::skip]
    let expected = [0,0,0,20, 0,16, 0,0, 0,0,0,3, 0,0,0,9, 0,0,0,42];
    assert_eq!(&reply.to_bytes()[..], &expected[..]);
}

#[test]
fn reply_echoes_ver_and_seq_of_the_request() {
    let auth = Frame { ver: 3, op: Op::Auth.code(), seq: 42, body: Bytes::from_static(b"{\"mid\":1}") };
    let reply = auth.reply(Op::AuthReply, Bytes::new());
    assert_eq!((reply.ver, reply.op, reply.seq), (3, 8, 42));
    assert!(reply.body.is_empty());
    assert_eq!(&reply.to_bytes()[..], &[0, 0, 0, 16, 0, 16, 0, 3, 0, 0, 0, 8, 0, 0, 0, 42]);

    let echo =
        Frame { ver: -7, op: 1000, seq: -1, body: Bytes::from_static(b"up") }.reply(1000, Bytes::new());
    assert_eq!((echo.ver, echo.op, echo.seq), (-7, 1000, -1));
}

#[test]
fn raw_header_is_an_op9_push_header_around_the_inner_length() {
    assert_eq!(raw_header(0), [0, 0, 0, 16, 0, 16, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0]);
    assert_eq!(raw_header(18), [0, 0, 0, 34, 0, 16, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0]);
    // Writes are not limited: 5000 + 16 = 0x1398.
    assert_eq!(raw_header(5000), [0, 0, 0x13, 0x98, 0, 16, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0]);
}

#[test]
fn put_header_writes_sixteen_bytes_for_the_given_body_length() {
    let mut buf = BytesMut::new();
    frame::put_header(&mut buf, 4, 2, 3, 4);
    assert_eq!(&buf[..], &[0, 0, 0, 20, 0, 16, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
}

#[test]
fn batch_of_three_is_the_concatenation_of_their_encodings() {
    let mut batch = Batch::new();
    assert!(batch.is_empty());
    batch.push(1000, b"a");
    batch.push(1001, b"");
    batch.push(1002, b"xyz");
    assert_eq!((batch.len(), batch.byte_len()), (3, 17 + 16 + 19));

    #[rustfmt::skip]
    let expected: &[u8] = &[
        0,0,0,17, 0,16, 0,1, 0,0,3,232, 0,0,0,0, b'a',
        0,0,0,16, 0,16, 0,1, 0,0,3,233, 0,0,0,0,
        0,0,0,19, 0,16, 0,1, 0,0,3,234, 0,0,0,0, b'x', b'y', b'z',
    ];
    let concatenated = [encode_push(1000, b"a"), encode_push(1001, b""), encode_push(1002, b"xyz")].concat();
    let bytes = batch.take();
    assert_eq!(&bytes[..], expected);
    assert_eq!(&bytes[..], &concatenated[..]);
    assert!(batch.is_empty());
    assert_eq!(batch.byte_len(), 0);

    let frames: Vec<Frame> = split_packets(bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(frames, [Frame::push(1000, "a"), Frame::push(1001, Bytes::new()), Frame::push(1002, "xyz")]);
}

#[test]
fn websocket_push_is_an_op9_message_whose_body_splits_into_the_batch() {
    let mut batch = Batch::new();
    batch.push(1000, b"a");
    batch.push(1000, b"b");
    let inner = batch.take();
    let message = [&raw_header(inner.len())[..], &inner[..]].concat();
    let outer = decode_message(Bytes::from(message), DEFAULT_MAX_BODY).unwrap();
    assert_eq!(outer.known_op(), Some(Op::Raw));
    let frames: Vec<Frame> = split_packets(outer.body).map(Result::unwrap).collect();
    assert_eq!(frames, [Frame::push(1000, "a"), Frame::push(1000, "b")]);
}

#[test]
fn batch_is_reusable_after_take() {
    let mut batch = Batch::new();
    batch.push(1000, b"old");
    batch.take();
    batch.push(1000, b"hi");
    assert_eq!(batch.len(), 1);
    assert_eq!(&batch.take()[..], &PUSH_1000_HI[..]);
}

#[test]
fn split_packets_has_no_size_limit() {
    let big = Frame::push(1000, vec![7u8; 5000]);
    let two = [big.to_bytes(), Frame::push(1001, "x").to_bytes()].concat();
    let frames: Vec<Frame> = split_packets(Bytes::from(two)).map(Result::unwrap).collect();
    assert_eq!(frames, [big, Frame::push(1001, "x")]);
}

#[test]
fn split_packets_of_nothing_yields_nothing() {
    assert_eq!(split_packets(Bytes::new()).count(), 0);
}

#[test]
fn split_packets_yields_one_error_on_garbage_then_stops() {
    let cases: [(Vec<u8>, Error); 4] = [
        ([&PUSH_1000_HI[..], &[1, 2, 3]].concat(), Error::MessageTooShort { len: 3 }),
        ([&PUSH_1000_HI[..], &packet(16, 15, 0)].concat(), Error::HeaderLen(15)),
        (
            [&PUSH_1000_HI[..], &packet(40, 16, 4), &PUSH_1000_HI].concat(),
            Error::Truncated { declared: 40, len: 38 },
        ),
        ([&PUSH_1000_HI[..], &packet(-5, 16, 0), &PUSH_1000_HI].concat(), Error::NegativeLen(-5)),
    ];
    for (bytes, expected) in cases {
        let mut it = split_packets(Bytes::from(bytes));
        assert_eq!(it.next(), Some(Ok(Frame::push(1000, "hi"))));
        assert_eq!(it.next(), Some(Err(expected)));
        assert_eq!(it.next(), None, "nothing after an error");
        assert_eq!(it.next(), None);
    }
    let mut it = split_packets(Bytes::from_static(b"GET /sub HTTP/1.1\r\n\r\n"));
    assert!(matches!(it.next(), Some(Err(_))));
    assert_eq!(it.next(), None);
}

#[test]
fn header_length_other_than_16_is_rejected() {
    for header_len in [0, 15, 17, -1, i16::MIN, i16::MAX] {
        assert_rejected(&packet(16, header_len, 0), DEFAULT_MAX_BODY, Error::HeaderLen(header_len));
        assert_rejected(&packet(20, header_len, 4), DEFAULT_MAX_BODY, Error::HeaderLen(header_len));
    }
}

#[test]
fn header_length_is_checked_before_packet_length() {
    assert_rejected(&packet(-1, 15, 0), DEFAULT_MAX_BODY, Error::HeaderLen(15));
    assert_rejected(&packet(i32::MAX, 17, 0), DEFAULT_MAX_BODY, Error::HeaderLen(17));
}

#[test]
fn negative_packet_length_is_rejected() {
    for pack_len in [-1, -16, i32::MIN] {
        assert_rejected(&packet(pack_len, 16, 0), DEFAULT_MAX_BODY, Error::NegativeLen(pack_len));
    }
}

#[test]
fn packet_length_shorter_than_the_header_is_rejected() {
    for pack_len in [0, 1, 15] {
        assert_rejected(&packet(pack_len, 16, 0), DEFAULT_MAX_BODY, Error::ShorterThanHeader(pack_len));
    }
}

#[test]
fn packet_length_over_the_default_limit_is_rejected() {
    assert_rejected(&packet(4113, 16, 4097), DEFAULT_MAX_BODY, Error::TooLarge { len: 4113, max: 4112 });
    // Only the header has arrived: the stream form fails without waiting for the body.
    assert_rejected(&packet(4113, 16, 0), DEFAULT_MAX_BODY, Error::TooLarge { len: 4113, max: 4112 });
    assert_rejected(
        &packet(i32::MAX, 16, 0),
        DEFAULT_MAX_BODY,
        Error::TooLarge { len: 2147483647, max: 4112 },
    );
}

#[test]
fn packet_length_exactly_at_the_default_limit_is_accepted() {
    let frame = decode_both(&packet(4112, 16, 4096), DEFAULT_MAX_BODY);
    assert_eq!(frame.body.len(), 4096);
    assert!(frame.body.iter().all(|b| *b == 0xab));
}

#[test]
fn custom_body_limit_is_enforced_at_its_edge() {
    assert_rejected(&packet(18, 16, 2), 1, Error::TooLarge { len: 18, max: 17 });
    assert_eq!(decode_both(&packet(17, 16, 1), 1).body, Bytes::from_static(&[0xab]));
    assert_eq!(decode_both(&packet(16, 16, 0), 0).body, Bytes::new());
    assert_rejected(&packet(17, 16, 1), 0, Error::TooLarge { len: 17, max: 16 });
}

#[test]
fn no_limit_is_usize_max_and_does_not_overflow() {
    // `16 + max_body` used to overflow (a panic in debug builds) for a caller meaning "no limit".
    assert_eq!(decode_both(&packet(20, 16, 4), usize::MAX).body.len(), 4);
    assert_eq!(decode_both(&packet(5000, 16, 4984), usize::MAX - 1).body.len(), 4984);
}

#[test]
fn websocket_packet_length_beyond_the_message_is_truncated() {
    let msg = Bytes::from(packet(20, 16, 2));
    assert_eq!(decode_message(msg, DEFAULT_MAX_BODY), Err(Error::Truncated { declared: 20, len: 18 }));
    // The same declared length with no body at all: goim panics here (buf[16:4112]).
    let msg = Bytes::from(packet(4112, 16, 0));
    assert_eq!(decode_message(msg, DEFAULT_MAX_BODY), Err(Error::Truncated { declared: 4112, len: 16 }));
}

#[test]
fn websocket_message_shorter_than_the_header_is_rejected() {
    for len in [0, 1, 15] {
        let msg = Bytes::copy_from_slice(&PUSH_1000_HI[..len]);
        assert_eq!(decode_message(msg, DEFAULT_MAX_BODY), Err(Error::MessageTooShort { len }));
    }
}

#[test]
fn websocket_bytes_after_packet_length_are_ignored() {
    let msg = [&PUSH_1000_HI[..], b"trailing junk", &[0, 0, 0, 0]].concat();
    let frame = decode_message(Bytes::from(msg), DEFAULT_MAX_BODY).unwrap();
    assert_eq!(frame, Frame::push(1000, "hi"));
    // Even past the limit: only packLen is limited, not the message.
    let msg = [&PUSH_1000_HI[..], &[0u8; 5000][..]].concat();
    assert_eq!(decode_message(Bytes::from(msg), DEFAULT_MAX_BODY).unwrap(), Frame::push(1000, "hi"));
}

#[test]
fn truncated_stream_needs_more_bytes_and_consumes_nothing() {
    let whole = packet(4112, 16, 4096);
    for len in [0, 1, 15, 16, 17, 4111] {
        let mut buf = BytesMut::from(&whole[..len]);
        assert_eq!(decode_stream(&mut buf, DEFAULT_MAX_BODY), Ok(None), "{len} bytes");
        assert_eq!(&buf[..], &whole[..len], "{len} bytes left untouched");
    }
}

#[test]
fn oversized_length_fails_as_soon_as_the_header_arrives() {
    let header = packet(4113, 16, 0);
    let mut buf = BytesMut::new();
    for (i, byte) in header.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let result = decode_stream(&mut buf, DEFAULT_MAX_BODY);
        if i + 1 < 16 {
            assert_eq!(result, Ok(None), "after {} bytes", i + 1);
        } else {
            assert_eq!(result, Err(Error::TooLarge { len: 4113, max: 4112 }));
        }
    }
    assert_eq!(buf.len(), 16);
}

#[test]
fn stream_decodes_packets_back_to_back_and_leaves_the_remainder() {
    let stream = [&OP_PACKETS[7].1[..], &PUSH_1000_HI, &OP_PACKETS[2].1, &PUSH_1000_HI[..5]].concat();
    let mut buf = BytesMut::from(&stream[..]);
    let mut frames = Vec::new();
    while let Some(frame) = decode_stream(&mut buf, DEFAULT_MAX_BODY).unwrap() {
        frames.push(frame);
    }
    let ops: Vec<i32> = frames.iter().map(|f| f.op).collect();
    assert_eq!(ops, [7, 1000, 2]);
    assert_eq!(&buf[..], &PUSH_1000_HI[..5]);
}

#[test]
fn byte_at_a_time_feeding_yields_the_same_frames() {
    let stream = [&OP_PACKETS[7].1[..], &PUSH_1000_HI, &packet(4112, 16, 4096), &OP_PACKETS[2].1].concat();

    let mut whole = BytesMut::from(&stream[..]);
    let mut expected = Vec::new();
    while let Some(frame) = decode_stream(&mut whole, DEFAULT_MAX_BODY).unwrap() {
        expected.push(frame);
    }
    assert_eq!(expected.len(), 4);
    assert!(whole.is_empty());

    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in &stream {
        buf.extend_from_slice(&[*byte]);
        while let Some(frame) = decode_stream(&mut buf, DEFAULT_MAX_BODY).unwrap() {
            got.push(frame);
        }
    }
    assert_eq!(got, expected);
    assert!(buf.is_empty());
}
