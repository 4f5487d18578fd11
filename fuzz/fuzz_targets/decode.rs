//! Fuzzes the goim v2 decoders with arbitrary bytes: a TCP stream (whole and in reads), a
//! WebSocket message, and a buffer of server packets. Besides "no panic", it checks that every
//! decoded frame re-encodes to exactly the bytes it came from, and that `decode_stream` consumes
//! nothing when it needs more bytes or fails.

#![no_main]

use bytes::{Bytes, BytesMut};
use goim_api::frame::{Error, decode_message, decode_stream, split_packets};
use goim_api::{DEFAULT_MAX_BODY, Frame};
use libfuzzer_sys::fuzz_target;

/// A limit small enough that the fuzzer hits it often, and goim's.
const MAX_BODIES: [usize; 2] = [8, DEFAULT_MAX_BODY];

fuzz_target!(|data: &[u8]| {
    // The first byte picks a read size, so the same input is also fed in pieces.
    let read_size = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    for max_body in MAX_BODIES {
        let whole = stream(data, data.len().max(1), max_body);
        let in_reads = stream(data, read_size, max_body);
        assert_eq!(whole, in_reads, "decoding must not depend on how the stream was read");
    }
    for max_body in MAX_BODIES {
        message(data, max_body);
    }
    packets(data);
});

/// Decodes `data` arriving `read_size` bytes at a time. Returns the frames, the error that ended
/// the stream, and how many bytes were consumed.
fn stream(data: &[u8], read_size: usize, max_body: usize) -> (Vec<Frame>, Option<Error>, usize) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut consumed = 0;
    for read in data.chunks(read_size) {
        buf.extend_from_slice(read);
        loop {
            // Length and start pointer: "consumed nothing" without copying the buffer each call.
            let (len, start) = (buf.len(), buf.as_ptr());
            match decode_stream(&mut buf, max_body) {
                Ok(Some(frame)) => {
                    let taken = len - buf.len();
                    assert_eq!(
                        frame.to_bytes(),
                        data[consumed..consumed + taken],
                        "re-encodes to what it consumed"
                    );
                    assert!(frame.body.len() <= max_body);
                    consumed += taken;
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!((buf.len(), buf.as_ptr()), (len, start), "Ok(None) consumes nothing");
                    assert!(len < 16 + max_body, "only a body within the limit is awaited");
                    break;
                }
                Err(error) => {
                    assert_eq!((buf.len(), buf.as_ptr()), (len, start), "Err consumes nothing");
                    assert!(len >= 16, "a header is only judged once it is whole");
                    return (frames, Some(error), consumed);
                }
            }
        }
    }
    assert_eq!(&buf[..], &data[consumed..], "what is left is what was not consumed");
    (frames, None, consumed)
}

fn message(data: &[u8], max_body: usize) {
    if let Ok(frame) = decode_message(Bytes::copy_from_slice(data), max_body) {
        assert!(frame.body.len() <= max_body);
        assert_eq!(frame.to_bytes(), data[..frame.encoded_len()], "a frame re-encodes to its prefix");
    }
}

fn packets(data: &[u8]) {
    let mut offset = 0;
    let mut failed = false;
    for result in split_packets(Bytes::copy_from_slice(data)) {
        assert!(!failed, "nothing follows an error");
        match result {
            Ok(frame) => {
                let end = offset + frame.encoded_len();
                assert_eq!(frame.to_bytes(), data[offset..end], "a packet re-encodes to its bytes");
                offset = end;
            }
            Err(_) => failed = true,
        }
    }
    assert!(failed || offset == data.len(), "without an error every byte is a packet");
}
