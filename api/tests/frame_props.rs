//! Property tests of the goim v2 codec: round trips, no panics on hostile input, and stream
//! decoding that does not depend on how the bytes were split into reads.

use bytes::{Bytes, BytesMut};
use goim_api::frame::{Error, decode_message, decode_stream, split_packets};
use goim_api::{DEFAULT_MAX_BODY, Frame};
use proptest::prelude::*;

fn arb_frame(max_body: usize) -> impl Strategy<Value = Frame> {
    (any::<i16>(), any::<i32>(), any::<i32>(), proptest::collection::vec(any::<u8>(), 0..=max_body))
        .prop_map(|(ver, op, seq, body)| Frame { ver, op, seq, body: body.into() })
}

/// A limit and a frame whose body fits it, including the default limit and bodies right at it.
fn arb_limited_frame() -> impl Strategy<Value = (usize, Frame)> {
    prop_oneof![Just(DEFAULT_MAX_BODY), 0..=64usize, Just(usize::MAX)].prop_flat_map(|max_body| {
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..=max_body.min(DEFAULT_MAX_BODY)),
            Just(vec![0x5a; max_body.min(DEFAULT_MAX_BODY)]),
        ];
        (Just(max_body), any::<i16>(), any::<i32>(), any::<i32>(), body)
            .prop_map(|(m, ver, op, seq, body)| (m, Frame { ver, op, seq, body: body.into() }))
    })
}

fn arb_max_body() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0), 0..=64usize, Just(DEFAULT_MAX_BODY), Just(usize::MAX), any::<usize>()]
}

/// Bytes that start like a header, so the checks past `headerLen` get exercised, with values
/// clustered around every boundary the decoder tests.
fn arb_header_shaped() -> impl Strategy<Value = Vec<u8>> {
    let pack_len = prop_oneof![any::<i32>(), -2..=40i32, 4100..=4120i32, Just(i32::MAX), Just(i32::MIN)];
    let header_len = prop_oneof![3 => Just(16i16), 1 => any::<i16>(), 1 => 14..=18i16];
    let tail = proptest::collection::vec(any::<u8>(), 0..=80);
    (pack_len, header_len, any::<[u8; 10]>(), tail).prop_map(|(p, h, rest, tail)| {
        let mut out = Vec::with_capacity(16 + tail.len());
        out.extend_from_slice(&p.to_be_bytes());
        out.extend_from_slice(&h.to_be_bytes());
        out.extend_from_slice(&rest);
        out.extend_from_slice(&tail);
        out
    })
}

/// Random bytes, header-shaped bytes, or several header-shaped chunks back to back.
fn arb_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=200),
        arb_header_shaped(),
        proptest::collection::vec(arb_header_shaped(), 0..=4).prop_map(|v| v.concat()),
    ]
}

/// How decoding a stream ended: the frames, then the error that stopped it (if any), then the
/// bytes not consumed.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<Error>,
    left: Vec<u8>,
}

/// Feeds `input` to `decode_stream` in reads cut at `cuts`, decoding after each read until it needs
/// more bytes or fails, checking the consumption contract at every call.
fn decode_in_reads(input: &[u8], cuts: &[usize], max_body: usize) -> Outcome {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for end in bounds {
        buf.extend_from_slice(&input[start..end]);
        start = end;
        loop {
            let before = buf.clone();
            match decode_stream(&mut buf, max_body) {
                Ok(Some(frame)) => {
                    let consumed = before.len() - buf.len();
                    assert_eq!(&frame.to_bytes()[..], &before[..consumed], "re-encodes to what it consumed");
                    assert!(frame.body.len() <= max_body);
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) consumes nothing");
                    break;
                }
                Err(error) => {
                    assert_eq!(buf, before, "Err consumes nothing");
                    // The reads not yet fed count as left over too, as they would in the whole.
                    let left = [&buf[..], &input[start..]].concat();
                    return Outcome { frames, error: Some(error), left };
                }
            }
        }
    }
    Outcome { frames, error: None, left: buf.to_vec() }
}

proptest! {
    #[test]
    fn stream_round_trip_is_identity((max_body, frame) in arb_limited_frame()) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        prop_assert_eq!(buf.len(), frame.encoded_len());
        prop_assert_eq!(decode_stream(&mut buf, max_body), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn message_round_trip_is_identity(
        (max_body, frame) in arb_limited_frame(),
        trailing in proptest::collection::vec(any::<u8>(), 0..=32),
    ) {
        prop_assert_eq!(decode_message(frame.to_bytes(), max_body), Ok(frame.clone()));
        let with_trailing = Bytes::from([&frame.to_bytes()[..], &trailing].concat());
        prop_assert_eq!(decode_message(with_trailing, max_body), Ok(frame));
    }

    #[test]
    fn split_packets_round_trips_any_sequence_of_frames(
        frames in proptest::collection::vec(arb_frame(64), 0..=8),
    ) {
        let bytes: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes()).collect();
        let split: Result<Vec<Frame>, Error> = split_packets(Bytes::from(bytes)).collect();
        prop_assert_eq!(split, Ok(frames));
    }

    #[test]
    fn decode_stream_never_panics_nor_consumes_on_none_or_error(
        input in arb_input(),
        max_body in arb_max_body(),
    ) {
        let outcome = decode_in_reads(&input, &[], max_body);
        let consumed: usize = outcome.frames.iter().map(Frame::encoded_len).sum();
        prop_assert_eq!(&input[consumed..], &outcome.left[..]);
    }

    #[test]
    fn decode_message_never_panics_and_decodes_a_prefix(input in arb_input(), max_body in arb_max_body()) {
        if let Ok(frame) = decode_message(Bytes::from(input.clone()), max_body) {
            prop_assert!(frame.body.len() <= max_body);
            prop_assert_eq!(&frame.to_bytes()[..], &input[..frame.encoded_len()]);
        }
    }

    #[test]
    fn split_packets_never_panics_and_stops_after_one_error(input in arb_input()) {
        let results: Vec<Result<Frame, Error>> = split_packets(Bytes::from(input.clone())).collect();
        let errors = results.iter().filter(|r| r.is_err()).count();
        prop_assert!(errors <= 1);
        if errors == 1 {
            prop_assert!(results.last().unwrap().is_err(), "the error is the last item");
        }
        let reencoded: Vec<u8> = results.iter().flatten().flat_map(Frame::to_bytes).collect();
        if errors == 0 {
            prop_assert_eq!(reencoded, input);
        } else {
            prop_assert!(input.starts_with(&reencoded));
        }
    }

    #[test]
    fn frames_split_across_reads_decode_as_the_whole(
        frames in proptest::collection::vec(arb_frame(64), 0..=6),
        tail in proptest::option::of(arb_input()),
        cuts in proptest::collection::vec(any::<usize>(), 0..=12),
        max_body in prop_oneof![Just(32usize), Just(DEFAULT_MAX_BODY)],
    ) {
        let mut input: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes()).collect();
        input.extend(tail.unwrap_or_default());
        let whole = decode_in_reads(&input, &[], max_body);
        let in_reads = decode_in_reads(&input, &cuts, max_body);
        prop_assert_eq!(&in_reads, &whole);
        if max_body == DEFAULT_MAX_BODY {
            prop_assert!(whole.frames.starts_with(&frames));
        }
    }

    #[test]
    fn any_bytes_split_across_reads_decode_as_the_whole(
        input in arb_input(),
        cuts in proptest::collection::vec(any::<usize>(), 0..=12),
        max_body in arb_max_body(),
    ) {
        prop_assert_eq!(decode_in_reads(&input, &cuts, max_body), decode_in_reads(&input, &[], max_body));
    }
}
