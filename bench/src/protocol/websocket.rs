//! The client side of RFC 6455, as little as the load generator needs: the upgrade request,
//! masked frames out, unmasked frames in. Written for speed over many connections rather than
//! generality: no extensions, no fragmented messages from the server.

use anyhow::{Result, bail};

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The upgrade request for `path` on `host`. The key is fixed: servers only echo its hash, and
/// the load generator does not check the echo.
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The length of the upgrade response head once it is complete; an error unless it is a 101.
pub fn upgrade_response(buf: &[u8]) -> Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            bail!("upgrade response head too long");
        }
        return Ok(None);
    };
    let line = buf[..end].split(|b| *b == b'\r').next().unwrap_or_default();
    if !line.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(line));
    }
    Ok(Some(end + 4))
}

/// Appends one masked, final frame.
pub fn put_frame(dst: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    dst.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        dst.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        dst.push(0x80 | 126);
        dst.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        dst.push(0x80 | 127);
        dst.extend_from_slice(&(len as u64).to_be_bytes());
    }
    dst.extend_from_slice(&mask);
    dst.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// One frame from the server: its opcode and where its payload lies in the buffer.
pub struct Frame {
    pub opcode: u8,
    pub payload: std::ops::Range<usize>,
    /// Bytes the frame took, header included.
    pub len: usize,
}

/// The next complete frame at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x80 == 0 || b0 & 0x0F == 0 {
        bail!("fragmented websocket message");
    }
    if b1 & 0x80 != 0 {
        bail!("masked frame from the server");
    }
    let (len, head) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(n))?, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some(Frame { opcode: b0 & 0x0F, payload: head..head + len, len: head + len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_form_parse() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let mut server = vec![0x82];
            match len {
                0..=125 => server.push(len as u8),
                126..=65535 => {
                    server.push(126);
                    server.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    server.push(127);
                    server.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            server.extend_from_slice(&payload);
            assert!(next_frame(&server[..server.len() - 1]).unwrap().is_none());
            let f = next_frame(&server).unwrap().unwrap();
            assert_eq!((f.opcode, f.payload.len(), f.len), (BINARY, len, server.len()));
        }
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        put_frame(&mut out, TEXT, b"40", [1, 2, 3, 4]);
        assert_eq!(out, [0x81, 0x82, 1, 2, 3, 4, b'4' ^ 1, b'0' ^ 2]);
    }

    #[test]
    fn only_a_101_completes_the_upgrade() {
        let reply = b"HTTP/1.1 101 Switching Protocols\r\nA: b\r\n\r\nxx";
        assert_eq!(upgrade_response(reply).unwrap(), Some(reply.len() - 2));
        assert!(upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert_eq!(upgrade_response(b"HTTP/1.1 101 Sw").unwrap(), None);
    }
}
