//! What one load-generator connection speaks, as a byte-level state machine: bytes in, events
//! and bytes to send out. No I/O here, so one worker thread drives thousands of these from one
//! shared read buffer.
//!
//! | protocol | connect | "authenticated" when | heartbeat | a push arrives as |
//! |---|---|---|---|---|
//! | `goim-tcp` | TCP, auth packet (op 7) | op 8 | op 2 packet | a packet |
//! | `goim-ws` | `GET /sub` upgrade, auth packet | op 8 | op 2 packet | op 9 wrapping packets |
//! | `nchan` | `GET /sub/r<room>` upgrade | the upgrade | WebSocket ping | a text message |
//! | `socketio` | `GET /socket.io/?EIO=4&transport=websocket&room=r<room>`, `40` | `40{...}` | server's `2`, we answer `3` | `42["m","<body>"]` |
//!
//! goim over HTTP long-polling (`goim-poll`) is request/response, not a stream; see
//! [`crate::long_poll`].

pub mod websocket;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::stamp::Stamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    GoimTcp,
    GoimWs,
    GoimPoll,
    Nchan,
    Socketio,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::GoimTcp => "goim-tcp",
            Protocol::GoimWs => "goim-ws",
            Protocol::GoimPoll => "goim-poll",
            Protocol::Nchan => "nchan",
            Protocol::Socketio => "socketio",
        }
    }
}

/// Who a load-generator connection is: connection `index` of the run is user `index + 1` with
/// key `bench-<index>`, in room `room`.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub index: u64,
    pub room: u32,
}

impl Who {
    pub fn mid(&self) -> i64 {
        self.index as i64 + 1
    }

    /// goim's JSON token for this connection: room `bench://<room>`, accepting op 1000.
    pub fn goim_token(&self) -> String {
        goim_test_support::json_token(
            self.mid(),
            &format!("bench-{}", self.index),
            &goim_room(self.room),
            &[1000],
        )
    }
}

/// The goim room id of benchmark room `n`; pushed as `type=bench&room=<n>`.
pub fn goim_room(n: u32) -> String {
    format!("bench://{n}")
}

/// The business op every benchmark push uses.
pub const PUSH_OP: i32 = 1000;

const OP_HEARTBEAT: i32 = 2;
const OP_HEARTBEAT_REPLY: i32 = 3;
const OP_DISCONNECT: i32 = 6;
const OP_AUTH: i32 = 7;
const OP_AUTH_REPLY: i32 = 8;
const OP_RAW: i32 = 9;

/// What the bytes fed to a [`Exchange`] meant.
#[derive(Default)]
pub struct Events {
    /// Bytes to write back (auth after an upgrade, pongs).
    pub send: Vec<u8>,
    pub stamps: Vec<Stamp>,
    pub heartbeat_replies: u32,
    /// The server ended the session (op 6, a close frame); why.
    pub closed: Option<String>,
}

impl Events {
    pub fn clear(&mut self) {
        self.send.clear();
        self.stamps.clear();
        self.heartbeat_replies = 0;
        self.closed = None;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the HTTP 101.
    Upgrading,
    /// socket.io: waiting for Engine.IO's open packet (`0{...}`).
    Opening,
    /// Waiting for the auth reply (goim op 8, socket.io `40`).
    Authenticating,
    Ready,
}

/// One connection's protocol exchange, without I/O: the bytes to send, and what the bytes
/// received mean, through the handshake, auth and the pushes after. (A goim `Session` is what
/// logic grants on connect; this is the client side of the wire.)
pub struct Exchange {
    protocol: Protocol,
    stage: Stage,
    seq: i32,
    mask: u32,
    token: String,
}

impl Exchange {
    /// An exchange for `who` on `host` (`ip:port`), and the bytes to send first.
    pub fn start(protocol: Protocol, who: &Who, host: &str) -> (Exchange, Vec<u8>) {
        let mut s = Exchange {
            protocol,
            stage: Stage::Upgrading,
            seq: 0,
            mask: 0x9E37_79B9 ^ who.index as u32,
            token: String::new(),
        };
        let first = match protocol {
            Protocol::GoimTcp => {
                s.stage = Stage::Authenticating;
                s.packet(OP_AUTH, who.goim_token().as_bytes())
            }
            Protocol::GoimWs => {
                s.token = who.goim_token();
                websocket::upgrade_request(host, "/sub")
            }
            Protocol::Nchan => websocket::upgrade_request(host, &format!("/sub/r{}", who.room)),
            Protocol::Socketio => websocket::upgrade_request(
                host,
                &format!("/socket.io/?EIO=4&transport=websocket&room=r{}", who.room),
            ),
            Protocol::GoimPoll => Vec::new(),
        };
        (s, first)
    }

    pub fn ready(&self) -> bool {
        self.stage == Stage::Ready
    }

    /// The bytes of one client heartbeat, for protocols where the client sends them.
    pub fn heartbeat(&mut self) -> Option<Vec<u8>> {
        if !self.ready() {
            return None;
        }
        match self.protocol {
            Protocol::GoimTcp => Some(self.packet(OP_HEARTBEAT, b"")),
            Protocol::GoimWs => Some(self.packet(OP_HEARTBEAT, b"")),
            Protocol::Nchan => Some(self.frame(websocket::PING, b"hb")),
            Protocol::Socketio | Protocol::GoimPoll => None,
        }
    }

    /// Consumes what it can of `buf`, reporting into `ev`; returns how many bytes it used (the
    /// rest is an incomplete frame to keep for the next read).
    pub fn feed(&mut self, buf: &[u8], ev: &mut Events) -> Result<usize> {
        let mut at = 0;
        if self.stage == Stage::Upgrading {
            let Some(head) = websocket::upgrade_response(buf)? else { return Ok(0) };
            at = head;
            self.stage = match self.protocol {
                Protocol::GoimWs => {
                    let token = std::mem::take(&mut self.token);
                    let auth = self.packet(OP_AUTH, token.as_bytes());
                    ev.send.extend_from_slice(&auth);
                    Stage::Authenticating
                }
                Protocol::Socketio => Stage::Opening,
                _ => Stage::Ready,
            };
        }
        if self.protocol == Protocol::GoimTcp {
            while let Some(len) = packet_len(&buf[at..])? {
                self.on_packet(&buf[at..at + len], ev)?;
                at += len;
            }
            return Ok(at);
        }
        while let Some(f) = websocket::next_frame(&buf[at..])? {
            let payload = &buf[at + f.payload.start..at + f.payload.end];
            match f.opcode {
                websocket::PING => {
                    let pong = self.frame(websocket::PONG, payload);
                    ev.send.extend_from_slice(&pong);
                }
                websocket::PONG => {
                    ev.heartbeat_replies += 1;
                }
                websocket::CLOSE => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])).unwrap_or(1005);
                    ev.closed = Some(format!("close frame {code}"));
                }
                _ => self.on_message(payload, ev)?,
            }
            at += f.len;
        }
        Ok(at)
    }

    fn on_message(&mut self, payload: &[u8], ev: &mut Events) -> Result<()> {
        match self.protocol {
            Protocol::GoimWs => {
                if packet_len(payload)?.is_none() {
                    bail!("websocket message is not a whole goim packet");
                }
                self.on_packet(payload, ev)
            }
            Protocol::Nchan => {
                ev.stamps.extend(Stamp::find(payload));
                Ok(())
            }
            Protocol::Socketio => {
                self.on_engine_io(payload, ev);
                Ok(())
            }
            Protocol::GoimTcp | Protocol::GoimPoll => Ok(()),
        }
    }

    /// One Engine.IO v4 packet carrying, maybe, a Socket.IO v5 packet.
    fn on_engine_io(&mut self, p: &[u8], ev: &mut Events) {
        match p.first() {
            // open: connect to the main namespace.
            Some(b'0') if self.stage == Stage::Opening => {
                let connect = self.frame(websocket::TEXT, b"40");
                ev.send.extend_from_slice(&connect);
                self.stage = Stage::Authenticating;
            }
            Some(b'2') => {
                let pong = self.frame(websocket::TEXT, b"3");
                ev.send.extend_from_slice(&pong);
                ev.heartbeat_replies += 1;
            }
            Some(b'4') => match p.get(1) {
                Some(b'0') => self.stage = Stage::Ready,
                Some(b'2') => ev.stamps.extend(Stamp::find(p)),
                Some(b'1') => ev.closed = Some("socket.io disconnect".into()),
                Some(b'4') => ev.closed = Some(format!("socket.io error {}", String::from_utf8_lossy(p))),
                _ => {}
            },
            Some(b'1') => ev.closed = Some("engine.io close".into()),
            _ => {}
        }
    }

    /// One goim packet (whole, `packet_len` checked).
    fn on_packet(&mut self, p: &[u8], ev: &mut Events) -> Result<()> {
        let op = i32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        let body = &p[16..];
        match op {
            OP_AUTH_REPLY => self.stage = Stage::Ready,
            OP_HEARTBEAT_REPLY => ev.heartbeat_replies += 1,
            OP_DISCONNECT => ev.closed = Some(format!("op 6 {}", String::from_utf8_lossy(body))),
            OP_RAW => {
                let mut at = 0;
                while at < body.len() {
                    let Some(len) = packet_len(&body[at..])? else { bail!("op 9 body ends mid-packet") };
                    self.on_packet(&body[at..at + len], ev)?;
                    at += len;
                }
            }
            _ => ev.stamps.extend(Stamp::find(body)),
        }
        Ok(())
    }

    /// A goim packet; on WebSocket wrapped in a masked binary frame.
    fn packet(&mut self, op: i32, body: &[u8]) -> Vec<u8> {
        self.seq += 1;
        let mut p = Vec::with_capacity(16 + body.len());
        p.extend_from_slice(&(16 + body.len() as i32).to_be_bytes());
        p.extend_from_slice(&16i16.to_be_bytes());
        p.extend_from_slice(&1i16.to_be_bytes());
        p.extend_from_slice(&op.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(body);
        if self.protocol == Protocol::GoimTcp { p } else { self.frame(websocket::BINARY, &p) }
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        // xorshift: a different mask per frame, as RFC 6455 asks; not security relevant here.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        let mut out = Vec::with_capacity(payload.len() + 14);
        websocket::put_frame(&mut out, opcode, payload, self.mask.to_be_bytes());
        out
    }
}

/// The length of the whole goim packet at the start of `buf`, once all of it is there.
fn packet_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let header = i16::from_be_bytes([buf[4], buf[5]]);
    if header != 16 || len < 16 {
        bail!("bad goim header: packLen {len}, headerLen {header}");
    }
    let len = len as usize;
    Ok((buf.len() >= len).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode, payload.len() as u8];
        f.extend_from_slice(payload);
        f
    }

    fn goim_packet(op: i32, body: &[u8]) -> Vec<u8> {
        goim_api::Frame { ver: 1, op, seq: 0, body: bytes::Bytes::copy_from_slice(body) }.to_bytes().to_vec()
    }

    const WHO: Who = Who { index: 4, room: 2 };
    const UPGRADED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";

    #[test]
    fn goim_ws_authenticates_after_the_upgrade_and_unwraps_op_9() {
        let (mut s, first) = Exchange::start(Protocol::GoimWs, &WHO, "127.0.0.1:1");
        assert!(first.starts_with(b"GET /sub HTTP/1.1\r\n"));
        let mut ev = Events::default();
        let mut input = UPGRADED.to_vec();
        input.extend(server_frame(2, &goim_packet(OP_AUTH_REPLY, b"")));
        let stamp = Stamp { sent: 5, step: 1, seq: 9 };
        let mut inner = goim_packet(PUSH_OP, stamp.encode().as_bytes());
        inner.extend(goim_packet(PUSH_OP, stamp.encode().as_bytes()));
        let last = server_frame(2, &goim_packet(OP_RAW, &inner));
        input.extend(&last);
        let used = s.feed(&input[..input.len() - 3], &mut ev).unwrap();
        assert_eq!(used, input.len() - last.len(), "the incomplete last frame is left");
        assert!(s.ready() && !ev.send.is_empty(), "auth was sent after the upgrade");
        ev.clear();
        assert_eq!(s.feed(&input[used..], &mut ev).unwrap(), last.len());
        assert_eq!(ev.stamps, [stamp, stamp]);
    }

    #[test]
    fn goim_tcp_reads_packets_back_to_back() {
        let (mut s, first) = Exchange::start(Protocol::GoimTcp, &WHO, "x");
        assert_eq!(i32::from_be_bytes(first[8..12].try_into().unwrap()), OP_AUTH);
        let mut input = goim_packet(OP_AUTH_REPLY, b"");
        input.extend(goim_packet(OP_HEARTBEAT_REPLY, &[0, 0, 0, 1]));
        input.extend(goim_packet(PUSH_OP, b"t=1 s=0 i=0"));
        let mut ev = Events::default();
        assert_eq!(s.feed(&input, &mut ev).unwrap(), input.len());
        assert!(s.ready());
        assert_eq!((ev.heartbeat_replies, ev.stamps.len()), (1, 1));
        assert!(s.heartbeat().is_some());
    }

    #[test]
    fn socketio_connects_answers_pings_and_reads_events() {
        let (mut s, first) = Exchange::start(Protocol::Socketio, &WHO, "h");
        assert!(first.starts_with(b"GET /socket.io/?EIO=4&transport=websocket&room=r2 HTTP/1.1"));
        let mut ev = Events::default();
        let mut input = UPGRADED.to_vec();
        input.extend(server_frame(1, br#"0{"sid":"a","pingInterval":25000}"#));
        s.feed(&input, &mut ev).unwrap();
        assert_eq!(&ev.send[6..], [b'4' ^ ev.send[2], b'0' ^ ev.send[3]], "40 sent, masked");
        ev.clear();
        let mut input = server_frame(1, br#"40{"sid":"b"}"#);
        input.extend(server_frame(1, b"2"));
        input.extend(server_frame(1, br#"42["m","t=7 s=2 i=3"]"#));
        s.feed(&input, &mut ev).unwrap();
        assert!(s.ready());
        assert_eq!(ev.heartbeat_replies, 1);
        assert_eq!(ev.stamps, [Stamp { sent: 7, step: 2, seq: 3 }]);
        assert!(s.heartbeat().is_none(), "the server pings socket.io clients");
    }

    #[test]
    fn nchan_is_ready_on_upgrade_and_reads_text_messages() {
        let (mut s, first) = Exchange::start(Protocol::Nchan, &WHO, "h");
        assert!(first.starts_with(b"GET /sub/r2 HTTP/1.1"));
        let mut input = UPGRADED.to_vec();
        input.extend(server_frame(1, b"t=1 s=1 i=1"));
        let mut ev = Events::default();
        s.feed(&input, &mut ev).unwrap();
        assert!(s.ready());
        assert_eq!(ev.stamps.len(), 1);
    }

    #[test]
    fn op_6_and_close_frames_end_the_session() {
        let (mut s, _) = Exchange::start(Protocol::GoimTcp, &WHO, "x");
        let mut ev = Events::default();
        s.feed(&goim_packet(OP_DISCONNECT, br#"{"reason":"slow"}"#), &mut ev).unwrap();
        assert!(ev.closed.unwrap().contains("slow"));
        let (mut s, _) = Exchange::start(Protocol::Nchan, &WHO, "h");
        let mut input = UPGRADED.to_vec();
        input.extend(server_frame(8, &1001u16.to_be_bytes()));
        let mut ev = Events::default();
        s.feed(&input, &mut ev).unwrap();
        assert_eq!(ev.closed.as_deref(), Some("close frame 1001"));
    }
}
