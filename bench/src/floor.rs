//! The floor: not a push server, the least a program must do to deliver one message to N
//! WebSocket connections on this machine. It holds the connections the load generator opens
//! (answering the goim-ws upgrade and auth just enough to be spoken to), and for each push it
//! encodes the frame once and writes those same bytes to every connection, from one thread per
//! core, each with its share of the connections; frames that arrive while a round of writes is
//! under way go out together in the next (one write per connection per round). No rooms, no queues, no per-connection task, no
//! reading after auth (client heartbeats wait in the receive buffer). Its time from push to last
//! delivery and its delivered msgs/s are the physical limit fan-out is measured against.
//!
//! `goim-bench floor-server --ws PORT --push PORT`, started by [`crate::target`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The longest request head (upgrade or push) taken.
const MAX_HEAD: usize = 16 * 1024;
/// The longest push body taken.
const MAX_BODY: usize = 1024 * 1024;
/// How long a client may take over its upgrade and auth.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the floor server until killed.
pub fn serve(ws: SocketAddr, push: SocketAddr, threads: usize) -> Result<()> {
    let threads = threads.max(1);
    let ws = TcpListener::bind(ws).with_context(|| format!("bind {ws}"))?;
    let push = TcpListener::bind(push).with_context(|| format!("bind {push}"))?;
    let mut writers = Vec::with_capacity(threads);
    let mut newcomers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (frames, rx) = channel::<Arc<[u8]>>();
        let joined: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let mine = joined.clone();
        std::thread::spawn(move || write_loop(&rx, &mine));
        writers.push(frames);
        newcomers.push(joined);
    }
    // Handshakes on their own threads, so connecting never waits on a fan-out.
    let (accepted, handshakes) = channel::<TcpStream>();
    let handshakes = Arc::new(Mutex::new(handshakes));
    let newcomers = Arc::new(newcomers);
    for _ in 0..threads {
        let (handshakes, newcomers) = (handshakes.clone(), newcomers.clone());
        std::thread::spawn(move || {
            let mut next = 0usize;
            loop {
                let Ok(stream) = handshakes.lock().unwrap_or_else(|e| e.into_inner()).recv() else { return };
                if let Ok(stream) = handshake(stream) {
                    // Spread over the writers by arrival.
                    newcomers[next % newcomers.len()].lock().unwrap_or_else(|e| e.into_inner()).push(stream);
                    next = next.wrapping_add(1);
                }
            }
        });
    }
    let writers = Arc::new(writers);
    std::thread::spawn(move || {
        for stream in push.incoming().flatten() {
            let writers = writers.clone();
            std::thread::spawn(move || {
                let _ = push_api(stream, &writers);
            });
        }
    });
    for stream in ws.incoming().flatten() {
        let _ = accepted.send(stream);
    }
    Ok(())
}

/// Reads an HTTP head (and nothing past it is expected before the reply); returns it and the
/// bytes read after it.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() > MAX_HEAD {
            bail!("request head too long");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("closed mid-head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The WebSocket upgrade, then the client's auth packet answered with op 8. Returns the
/// connection, non-blocking, for a writer.
fn handshake(mut stream: TcpStream) -> Result<TcpStream> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(512);
    let end = read_head(&mut stream, &mut buf)?;
    let head = std::str::from_utf8(&buf[..end]).context("head is not UTF-8")?;
    let key = header(head, "sec-websocket-key").context("no Sec-WebSocket-Key")?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(reply.as_bytes())?;
    // The auth packet: one masked frame, read whole.
    buf.drain(..end);
    let mut chunk = [0u8; 4096];
    let seq = loop {
        if let Some((payload, _)) = client_frame(&buf)? {
            if payload.len() < 16 {
                bail!("auth frame shorter than a packet header");
            }
            break [payload[12], payload[13], payload[14], payload[15]];
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("closed before auth");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut reply = packet(8, b"");
    reply[12..16].copy_from_slice(&seq);
    stream.write_all(&server_frame(&reply))?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// One whole masked client frame at the start of `buf`: its unmasked payload and length.
fn client_frame(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 == 0 {
        bail!("client frame not masked");
    }
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 => bail!("auth frame too long"),
        126 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_HEAD {
        bail!("auth frame too long");
    }
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = &buf[at..at + 4];
    let payload = buf[at + 4..at + 4 + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    Ok(Some((payload, at + 4 + len)))
}

/// A goim packet: 16-byte header, version 1, sequence 0.
fn packet(op: i32, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + body.len());
    p.extend_from_slice(&(16 + body.len() as i32).to_be_bytes());
    p.extend_from_slice(&16i16.to_be_bytes());
    p.extend_from_slice(&1i16.to_be_bytes());
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&0i32.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// An unmasked, final binary frame.
fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x82);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// goim's push API as far as the benchmark uses it: every `POST` body becomes one frame for
/// every connection; answered once each writer has it.
fn push_api(mut stream: TcpStream, writers: &[Sender<Arc<[u8]>>]) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let end = read_head(&mut stream, &mut buf)?;
        let head = std::str::from_utf8(&buf[..end]).context("head is not UTF-8")?.to_owned();
        let len: usize =
            header(&head, "content-length").map_or(Ok(0), str::parse).context("bad Content-Length")?;
        if len > MAX_BODY {
            bail!("body too long");
        }
        while buf.len() < end + len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("closed mid-body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[end..end + len];
        let frame: Arc<[u8]> = server_frame(&packet(crate::protocol::PUSH_OP, body)).into();
        for w in writers {
            let _ = w.send(frame.clone());
        }
        buf.drain(..end + len);
        let ok = br#"{"code":0,"message":"","data":null}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            ok.len()
        );
        stream.write_all(reply.as_bytes())?;
        stream.write_all(ok)?;
    }
}

/// One connection of a writer, with what the kernel has not taken yet.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Conn {
    /// Writes as much of `pending` as the socket takes; `false` once the connection is gone.
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// One core's share: the frames that arrived since the last round, joined, written straight to
/// every connection (one write each); what a full socket does not take waits in that
/// connection's buffer and is retried until written.
fn write_loop(frames: &Receiver<Arc<[u8]>>, joined: &Mutex<Vec<TcpStream>>) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut backlog = false;
    loop {
        let first = if backlog {
            match frames.recv_timeout(Duration::from_micros(200)) {
                Ok(f) => Some(f),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(_) => return,
            }
        } else {
            match frames.recv() {
                Ok(f) => Some(f),
                Err(_) => return,
            }
        };
        let round: Option<Arc<[u8]>> = first.map(|f| {
            let more: Vec<Arc<[u8]>> = frames.try_iter().collect();
            if more.is_empty() {
                f
            } else {
                std::iter::once(&f).chain(&more).flat_map(|x| x.iter().copied()).collect::<Vec<u8>>().into()
            }
        });
        conns.extend(
            joined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .map(|stream| Conn { stream, pending: Vec::new() }),
        );
        backlog = false;
        conns.retain_mut(|c| {
            if let Some(f) = &round {
                if c.pending.is_empty() {
                    match c.stream.write(f) {
                        Ok(n) if n == f.len() => return true,
                        Ok(n) => c.pending.extend_from_slice(&f[n..]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => c.pending.extend_from_slice(f),
                        Err(_) => return false,
                    }
                } else {
                    c.pending.extend_from_slice(f);
                }
            }
            let alive = c.flush();
            backlog |= !c.pending.is_empty();
            alive
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_client_frame_is_unmasked_whole_or_not_at_all() {
        let mut f = Vec::new();
        crate::protocol::websocket::put_frame(&mut f, 2, b"hello goim", [1, 2, 3, 4]);
        assert!(client_frame(&f[..f.len() - 1]).unwrap().is_none());
        let (payload, used) = client_frame(&f).unwrap().unwrap();
        assert_eq!((payload.as_slice(), used), (&b"hello goim"[..], f.len()));
        let mut unmasked = f.clone();
        unmasked[1] &= 0x7f;
        assert!(client_frame(&unmasked).is_err());
    }

    #[test]
    fn a_push_frame_is_one_binary_frame_of_one_goim_packet() {
        let f = server_frame(&packet(1000, b"abc"));
        assert_eq!(&f[..2], &[0x82, 19]);
        assert_eq!(i32::from_be_bytes([f[10], f[11], f[12], f[13]]), 1000);
        assert_eq!(&f[18..], b"abc");
        let long = server_frame(&[0u8; 300]);
        assert_eq!(&long[..4], &[0x82, 126, 1, 44]);
    }
}
