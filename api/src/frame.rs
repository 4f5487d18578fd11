//! One goim v2 packet, and its two framings: a TCP byte stream of packets back to back, and one
//! packet per WebSocket message.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::op::Op;

/// Length of the fixed header; goim calls it `_rawHeaderSize` and rejects any other `headerLen`.
pub const HEADER_LEN: usize = 16;

/// goim's `MaxBodySize`: the default limit on the body of a packet a client sends.
pub const DEFAULT_MAX_BODY: usize = 4096;

/// Server pushes use version 1 (goim's job does the same).
pub const PUSH_VER: i16 = 1;

/// Why bytes are not a packet. Every variant ends the connection that sent them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("header length {0} is not 16")]
    HeaderLen(i16),
    #[error("packet length {0} is negative")]
    NegativeLen(i32),
    #[error("packet length {0} is shorter than the 16-byte header")]
    ShorterThanHeader(i32),
    #[error("packet length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("message of {len} bytes is shorter than the 16-byte header")]
    MessageTooShort { len: usize },
    #[error("packet length {declared} exceeds its {len}-byte message")]
    Truncated { declared: usize, len: usize },
}

/// A goim packet: `packLen i32 | headerLen i16 = 16 | ver i16 | op i32 | seq i32 | body`, big-endian.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frame {
    pub ver: i16,
    /// An [`Op`] code or a business op; kept as `i32` so unknown ops pass through unchanged.
    pub op: i32,
    pub seq: i32,
    pub body: Bytes,
}

impl Frame {
    /// A server-originated packet: version 1, sequence 0.
    pub fn push(op: i32, body: impl Into<Bytes>) -> Frame {
        Frame { ver: PUSH_VER, op, seq: 0, body: body.into() }
    }

    /// A reply to `self`: echoes `ver` and `seq`, as goim does for every reply.
    pub fn reply(&self, op: impl Into<i32>, body: impl Into<Bytes>) -> Frame {
        Frame { ver: self.ver, op: op.into(), seq: self.seq, body: body.into() }
    }

    /// The defined op, or `None` for a business op.
    pub fn known_op(&self) -> Option<Op> {
        Op::from_code(self.op)
    }

    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the packet. Writes are not limited: a server batch may exceed the read limit, as in goim.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        put_header(dst, self.body.len(), self.ver, self.op, self.seq);
        dst.put_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// Appends a header for a body of `body_len` bytes.
///
/// # Panics
/// If `HEADER_LEN + body_len` does not fit the header's `i32`; bodies here are never near 2 GiB.
pub fn put_header(dst: &mut BytesMut, body_len: usize, ver: i16, op: i32, seq: i32) {
    let pack_len = i32::try_from(HEADER_LEN + body_len).expect("packet length fits in i32");
    dst.put_i32(pack_len);
    dst.put_i16(HEADER_LEN as i16);
    dst.put_i16(ver);
    dst.put_i32(op);
    dst.put_i32(seq);
}

/// The header of an op-9 container around `inner_len` bytes of whole packets: how WebSocket
/// clients receive pushes (goim's JavaScript client reads inner packets from offset 16).
pub fn raw_header(inner_len: usize) -> [u8; HEADER_LEN] {
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    put_header(&mut buf, inner_len, PUSH_VER, Op::Raw.code(), 0);
    let mut out = [0u8; HEADER_LEN];
    out.copy_from_slice(&buf);
    out
}

struct Header {
    pack_len: usize,
    ver: i16,
    op: i32,
    seq: i32,
}

/// Validates the 16 header bytes at the start of `src`, which must hold at least that many.
fn check_header(src: &[u8], max_body: usize) -> Result<Header, Error> {
    let mut h = &src[..HEADER_LEN];
    let pack_len = h.get_i32();
    let header_len = h.get_i16();
    let ver = h.get_i16();
    let op = h.get_i32();
    let seq = h.get_i32();
    if header_len != HEADER_LEN as i16 {
        return Err(Error::HeaderLen(header_len));
    }
    if pack_len < 0 {
        return Err(Error::NegativeLen(pack_len));
    }
    if (pack_len as usize) < HEADER_LEN {
        return Err(Error::ShorterThanHeader(pack_len));
    }
    // Saturating: `usize::MAX` is how a caller says "no limit", and `16 + usize::MAX` would
    // overflow (a panic in debug builds, a 15-byte limit that rejects everything in release).
    let max = HEADER_LEN.saturating_add(max_body);
    if pack_len as usize > max {
        return Err(Error::TooLarge { len: pack_len as usize, max });
    }
    Ok(Header { pack_len: pack_len as usize, ver, op, seq })
}

/// Takes the next packet off a TCP stream buffer. `max_body` limits the declared body length
/// ([`DEFAULT_MAX_BODY`] in goim; `usize::MAX` for none).
///
/// `Ok(None)` means more bytes are needed (nothing is consumed). The header is checked as soon as
/// its 16 bytes are in, so an oversized declared length fails before its body is buffered.
pub fn decode_stream(src: &mut BytesMut, max_body: usize) -> Result<Option<Frame>, Error> {
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = check_header(src, max_body)?;
    if src.len() < h.pack_len {
        return Ok(None);
    }
    let mut packet = src.split_to(h.pack_len);
    packet.advance(HEADER_LEN);
    Ok(Some(Frame { ver: h.ver, op: h.op, seq: h.seq, body: packet.freeze() }))
}

/// Parses one WebSocket message as one packet, with the same `max_body` as [`decode_stream`]. As
/// in goim, bytes after `packLen` are ignored; unlike goim, a `packLen` beyond the message is an
/// error rather than a crash.
pub fn decode_message(msg: Bytes, max_body: usize) -> Result<Frame, Error> {
    if msg.len() < HEADER_LEN {
        return Err(Error::MessageTooShort { len: msg.len() });
    }
    let h = check_header(&msg, max_body)?;
    if h.pack_len > msg.len() {
        return Err(Error::Truncated { declared: h.pack_len, len: msg.len() });
    }
    Ok(Frame { ver: h.ver, op: h.op, seq: h.seq, body: msg.slice(HEADER_LEN..h.pack_len) })
}

/// Iterates the packets of a buffer of whole packets back to back (a TCP read, an op-9 body, a
/// long-poll response), without a size limit: these are server writes.
pub fn split_packets(mut src: Bytes) -> impl Iterator<Item = Result<Frame, Error>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || src.is_empty() {
            return None;
        }
        let result = decode_message(src.clone(), usize::MAX).inspect(|f| src.advance(f.encoded_len()));
        failed = result.is_err();
        Some(result)
    })
}

/// Builds the body of an op-9 room batch: whole push packets back to back, encoded once and then
/// shared (`Bytes` clones) by every connection it reaches.
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
    count: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends a push packet `{ver 1, op, seq 0, body}`.
    pub fn push(&mut self, op: i32, body: &[u8]) {
        self.push_with(PUSH_VER, op, 0, body);
    }

    /// Appends a push packet with this `ver` and `seq` (a [`Position`](crate::Position)'s header).
    pub fn push_with(&mut self, ver: i16, op: i32, seq: i32, body: &[u8]) {
        self.buf.reserve(HEADER_LEN + body.len());
        put_header(&mut self.buf, body.len(), ver, op, seq);
        self.buf.put_slice(body);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The packets, leaving the batch empty for reuse.
    pub fn take(&mut self) -> Bytes {
        self.count = 0;
        self.buf.split().freeze()
    }
}

/// One push packet, encoded (what job sends to comets for key, mid and broadcast pushes).
pub fn encode_push(op: i32, body: &[u8]) -> Bytes {
    encode_push_with(PUSH_VER, op, 0, body)
}

/// One push packet with this `ver` and `seq`: a positioned push.
pub fn encode_push_with(ver: i16, op: i32, seq: i32, body: &[u8]) -> Bytes {
    let mut b = Batch::new();
    b.push_with(ver, op, seq, body);
    b.take()
}
