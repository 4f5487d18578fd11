//! RFC 6455 framing for the server side: what goim's comet speaks (binary or text messages, no
//! extensions, fragmented client messages reassembled up to the packet limit).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use goim_api::frame::{HEADER_LEN, decode_message, raw_header};

use crate::codec::{DecodeError, Decoder, Encoder, FrameError, Inbound};
use crate::disconnect::Disconnect;
use crate::outbox::Outbound;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

pub struct WsDecoder {
    /// The packet body limit; a message may hold one packet of up to 16 + this many bytes.
    max_body: usize,
    /// A fragmented message being reassembled.
    partial: Option<BytesMut>,
}

impl WsDecoder {
    pub fn new(max_body: usize) -> WsDecoder {
        WsDecoder { max_body, partial: None }
    }

    fn max_message(&self) -> usize {
        HEADER_LEN + self.max_body
    }

    fn message(&self, msg: Bytes) -> Result<Option<Inbound>, DecodeError> {
        Ok(Some(Inbound::Packet(decode_message(msg, self.max_body)?)))
    }
}

impl Decoder for WsDecoder {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (buf[0], buf[1]);
            if b0 & 0x70 != 0 {
                return Err(FrameError::ReservedBits.into());
            }
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0F;
            let masked = b1 & 0x80 != 0;
            let (ext, len7) = match b1 & 0x7F {
                126 => (2, None),
                127 => (8, None),
                n => (0, Some(n as u64)),
            };
            if buf.len() < 2 + ext {
                return Ok(None);
            }
            let len = match (len7, ext) {
                (Some(n), _) => n,
                (None, 2) => u16::from_be_bytes([buf[2], buf[3]]) as u64,
                _ => u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes checked above")),
            };
            let is_control = opcode & 0x8 != 0;
            if is_control && (!fin || len > 125) {
                return Err(FrameError::BadControlFrame.into());
            }
            // Saturating: a client's 64-bit length must not overflow the sum (it is over any limit).
            let total = (self.partial.as_ref().map_or(0, |p| p.len()) as u64).saturating_add(len);
            if !is_control && total > self.max_message() as u64 {
                return Err(FrameError::TooLarge { len: total, max: self.max_message() }.into());
            }
            let len = len as usize;
            let header = 2 + ext + if masked { 4 } else { 0 };
            if buf.len() < header + len {
                return Ok(None);
            }
            let mask = masked.then(|| [buf[header - 4], buf[header - 3], buf[header - 2], buf[header - 1]]);
            buf.advance(header);
            let mut payload = buf.split_to(len);
            if let Some(mask) = mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i & 3];
                }
            }
            match opcode {
                TEXT | BINARY if self.partial.is_some() => {
                    return Err(FrameError::DataInsideFragments.into());
                }
                TEXT | BINARY if fin => return self.message(payload.freeze()),
                TEXT | BINARY => self.partial = Some(payload),
                CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(FrameError::OrphanContinuation.into());
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        let msg = self.partial.take().expect("checked above").freeze();
                        return self.message(msg);
                    }
                }
                CLOSE => return Ok(Some(Inbound::Close)),
                PING => return Ok(Some(Inbound::Ping(payload.freeze()))),
                PONG => {}
                other => return Err(FrameError::UnknownOpcode(other).into()),
            }
        }
    }
}

/// Appends a server frame header (FIN set, unmasked).
pub fn put_frame_header(dst: &mut BytesMut, opcode: u8, len: usize) {
    dst.put_u8(0x80 | opcode);
    if len < 126 {
        dst.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        dst.put_u8(126);
        dst.put_u16(len as u16);
    } else {
        dst.put_u8(127);
        dst.put_u64(len as u64);
    }
}

pub struct WsEncoder;

impl Encoder for WsEncoder {
    fn encode(&mut self, item: &Outbound, dst: &mut BytesMut) {
        match item {
            Outbound::Packet(f) => {
                put_frame_header(dst, BINARY, f.encoded_len());
                f.encode(dst);
            }
            Outbound::Push(packets) => {
                // One message: an op-9 header around the shared inner packets (goim's JS client
                // reads them from offset 16).
                put_frame_header(dst, BINARY, HEADER_LEN + packets.len());
                dst.put_slice(&raw_header(packets.len()));
                dst.put_slice(packets);
            }
            Outbound::Pong(p) => {
                put_frame_header(dst, PONG, p.len());
                dst.put_slice(p);
            }
        }
    }

    fn goodbye(&mut self, reason: &Disconnect, dst: &mut BytesMut) {
        let code: u16 = match reason {
            Disconnect::Shutdown | Disconnect::Drain => 1001,
            Disconnect::Protocol(_) => 1002,
            Disconnect::AuthFailed(_) => 1008,
            Disconnect::Slow | Disconnect::Unavailable => 1013,
            _ => 1000,
        };
        let text = reason.reason().as_bytes();
        put_frame_header(dst, CLOSE, 2 + text.len());
        dst.put_u16(code);
        dst.put_slice(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goim_api::Frame;

    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn packet(op: i32, body: &[u8]) -> Vec<u8> {
        Frame { ver: 1, op, seq: 9, body: Bytes::copy_from_slice(body) }.to_bytes().to_vec()
    }

    #[test]
    fn a_masked_binary_message_is_one_packet() {
        let mut buf = BytesMut::from(&client_frame(BINARY, true, &packet(7, b"{}"))[..]);
        let Some(Inbound::Packet(f)) = WsDecoder::new(4096).decode(&mut buf).unwrap() else { panic!() };
        assert_eq!((f.op, f.seq, &f.body[..]), (7, 9, &b"{}"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragments_are_reassembled_and_pings_may_interleave() {
        let p = packet(2, b"abcdef");
        let mut bytes = client_frame(BINARY, false, &p[..10]);
        bytes.extend(client_frame(PING, true, b"hi"));
        bytes.extend(client_frame(CONTINUATION, true, &p[10..]));
        let mut buf = BytesMut::from(&bytes[..]);
        let mut d = WsDecoder::new(4096);
        assert!(matches!(d.decode(&mut buf).unwrap(), Some(Inbound::Ping(p)) if &p[..] == b"hi"));
        assert!(
            matches!(d.decode(&mut buf).unwrap(), Some(Inbound::Packet(f)) if f.op == 2 && &f.body[..] == b"abcdef")
        );
    }

    #[test]
    fn a_partial_frame_needs_more_bytes_and_consumes_nothing() {
        let bytes = client_frame(BINARY, true, &packet(2, b""));
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(WsDecoder::new(4096).decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), bytes.len() - 1);
    }

    #[test]
    fn an_oversized_message_fails_before_its_payload_arrives() {
        let mut buf = BytesMut::from(&[0x82u8, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0][..]);
        assert!(WsDecoder::new(4096).decode(&mut buf).unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn a_continuation_too_long_for_a_u64_sum_is_an_error_not_a_crash() {
        // A fragment, then a continuation claiming 2^64 - 1 bytes: the size check once overflowed.
        let mut bytes = client_frame(BINARY, false, b"goim");
        bytes.extend_from_slice(&[0x80, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(WsDecoder::new(4096).decode(&mut buf).unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn reserved_bits_and_unknown_opcodes_are_errors() {
        let mut buf = BytesMut::from(&[0xC2u8, 0x80, 0, 0, 0, 0][..]);
        assert!(WsDecoder::new(4096).decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&client_frame(0x3, true, b"")[..]);
        assert!(WsDecoder::new(4096).decode(&mut buf).is_err());
    }

    #[test]
    fn a_pack_len_beyond_its_message_is_an_error_not_a_crash() {
        let mut p = packet(2, b"ab");
        p[3] = 100;
        let mut buf = BytesMut::from(&client_frame(BINARY, true, &p)[..]);
        assert!(WsDecoder::new(4096).decode(&mut buf).is_err());
    }

    #[test]
    fn pushes_are_wrapped_in_one_op_9_message() {
        let inner = Bytes::from(packet(1000, b"hi"));
        let mut dst = BytesMut::new();
        WsEncoder.encode(&Outbound::Push(inner.clone()), &mut dst);
        assert_eq!(dst[0], 0x82);
        assert_eq!(dst[1] as usize, 16 + inner.len());
        let outer = goim_api::frame::decode_message(dst.split_off(2).freeze(), usize::MAX / 2).unwrap();
        assert_eq!(outer.op, 9);
        assert_eq!(outer.body, inner);
    }

    #[test]
    fn long_frames_use_the_extended_length_forms() {
        let mut dst = BytesMut::new();
        put_frame_header(&mut dst, BINARY, 300);
        assert_eq!(&dst[..], &[0x82, 126, 1, 44]);
        let mut dst = BytesMut::new();
        put_frame_header(&mut dst, BINARY, 70_000);
        assert_eq!(&dst[..], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
