//! Fuzzes comet's WebSocket frame decoder (what an upgraded client's bytes go through) with
//! arbitrary bytes. Besides "no panic", it checks that the events do not depend on how the bytes
//! were read (whole, or in reads of a size the first byte picks; up to the first error, where the
//! connection ends too), that every event consumes bytes, and that a packet never exceeds the
//! body limit nor a ping 125 bytes.

#![no_main]

use bytes::BytesMut;
use goim_api::DEFAULT_MAX_BODY;
use goim_comet::fuzz::{DecodeError, Inbound, WebSocketDecoder};
use libfuzzer_sys::fuzz_target;

/// A limit small enough that the fuzzer hits it often, and goim's.
const MAX_BODIES: [usize; 2] = [8, DEFAULT_MAX_BODY];

fuzz_target!(|data: &[u8]| {
    let read_size = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    for max_body in MAX_BODIES {
        let whole = events(data, data.len().max(1), max_body);
        let in_reads = events(data, read_size, max_body);
        assert_eq!(whole, in_reads, "decoding must not depend on how the stream was read");
    }
});

/// An event in a comparable form: a packet's header fields and body, a ping's payload, a close.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Packet { ver: i16, op: i32, seq: i32, body: Vec<u8> },
    Ping(Vec<u8>),
    Close,
}

/// Decodes `data` arriving `read_size` bytes at a time, until the first error (included) or
/// the end of the input.
fn events(data: &[u8], read_size: usize, max_body: usize) -> (Vec<Event>, Option<DecodeError>) {
    let mut dec = WebSocketDecoder::new(max_body);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for read in data.chunks(read_size) {
        buf.extend_from_slice(read);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(Inbound::Packet(f))) => {
                    assert!(f.body.len() <= max_body, "a packet within the body limit");
                    out.push(Event::Packet { ver: f.ver, op: f.op, seq: f.seq, body: f.body.to_vec() });
                }
                Ok(Some(Inbound::Ping(p))) => {
                    assert!(p.len() <= 125, "a control frame carries at most 125 bytes");
                    out.push(Event::Ping(p.to_vec()));
                }
                Ok(Some(Inbound::Close)) => out.push(Event::Close),
                Ok(None) => {
                    assert!(buf.len() <= before, "decoding never adds bytes");
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
            assert!(buf.len() < before, "an event consumes bytes");
        }
    }
    (out, None)
}
