//! One client connection, whatever its transport: handshake (auth), session (read loop and write
//! loop), teardown. The transports supply a [`Decoder`] and an [`Encoder`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use goim_api::{Connect, Frame, Op, Presence, Session, Uplink};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, warn};

use crate::channel::{Channel, parse_ops};
use crate::comet::State;
use crate::disconnect::Disconnect;
use crate::logic;
use crate::metrics::TransportLabel;
use crate::outbox::{Outbound, Outbox};

/// What a client sent.
#[derive(Debug)]
pub enum Inbound {
    Packet(Frame),
    /// A WebSocket ping; answered with a pong.
    Ping(Bytes),
    /// A WebSocket close frame.
    Close,
}

/// Turns bytes from the client into [`Inbound`]s. `Ok(None)` means more bytes are needed.
pub trait Decoder: Send {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, String>;
}

/// Turns [`Outbound`]s into bytes for the client.
pub trait Encoder: Send {
    fn encode(&mut self, item: &Outbound, dst: &mut BytesMut);
    /// Whatever the transport sends last, after op 6 (a WebSocket close frame).
    fn goodbye(&mut self, _reason: &Disconnect, _dst: &mut BytesMut) {}
}

/// Read buffer space reserved before each read; enough for an auth packet or a heartbeat.
const MIN_READ: usize = 512;
/// An idle connection gives back a read buffer that grew past this.
const SHRINK_ABOVE: usize = 8192;

enum ReadError {
    Io,
    Protocol(String),
}

struct Reader<R, D> {
    rd: R,
    buf: BytesMut,
    dec: D,
}

impl<R: AsyncRead + Unpin, D: Decoder> Reader<R, D> {
    /// The next inbound event; `Ok(None)` at end of stream. Cancel-safe.
    async fn next(&mut self) -> Result<Option<Inbound>, ReadError> {
        loop {
            if let Some(ev) = self.dec.decode(&mut self.buf).map_err(ReadError::Protocol)? {
                return Ok(Some(ev));
            }
            if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
                self.buf = BytesMut::new();
            }
            if self.buf.capacity() - self.buf.len() < MIN_READ {
                self.buf.reserve(MIN_READ);
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadError::Protocol("connection closed mid-packet".into())),
                Ok(_) => {}
                Err(_) => return Err(ReadError::Io),
            }
        }
    }
}

struct Writer<W, E> {
    wr: W,
    enc: E,
}

impl<W: AsyncWrite + Unpin, E: Encoder> Writer<W, E> {
    /// Encodes `items` into one buffer and writes it in one go, under `deadline`.
    async fn write(&mut self, items: &[Outbound], deadline: std::time::Duration) -> Result<(), ()> {
        let mut buf = BytesMut::new();
        for item in items {
            self.enc.encode(item, &mut buf);
        }
        if buf.is_empty() {
            return Ok(());
        }
        match timeout(deadline, self.wr.write_all(&buf)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Writes what `reason` calls for (queued messages, op 6, the transport's goodbye), then closes.
    async fn finish(&mut self, state: &State, items: &[Outbound], reason: &Disconnect) {
        let mut buf = BytesMut::new();
        if reason.flushes_queue() {
            for item in items {
                self.enc.encode(item, &mut buf);
            }
        }
        if reason.tells_client() {
            let op6 = reason.packet(&state.config.disconnect);
            self.enc.encode(&Outbound::Packet(op6), &mut buf);
            self.enc.goodbye(reason, &mut buf);
        }
        let wt = state.config.protocol.write_timeout;
        let _ = timeout(wt, async {
            self.wr.write_all(&buf).await?;
            self.wr.shutdown().await
        })
        .await;
    }
}

/// Who connected, and what the transport learned before the first packet.
pub struct Peer {
    pub addr: SocketAddr,
    /// The WebSocket `Cookie` header, forwarded to logic; empty for TCP.
    pub cookie: String,
    /// Bytes read past a WebSocket upgrade request.
    pub leftover: BytesMut,
    pub transport: &'static str,
}

/// Serves one accepted connection to its end.
pub async fn serve<S, D, E>(state: Arc<State>, stream: S, dec: D, enc: E, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    D: Decoder,
    E: Encoder,
{
    let Peer { addr: peer, cookie, leftover, transport } = peer;
    let label = TransportLabel { transport };
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = Reader { rd, buf: leftover, dec };
    let mut writer = Writer { wr, enc };

    let (auth, session) = match handshake(&state, &mut reader, peer, cookie).await {
        Ok(ok) => ok,
        Err(Some(reason)) => {
            if matches!(reason, Disconnect::Protocol(_)) {
                state.metrics.bad_input.get_or_create(&label).inc();
            }
            debug!(peer = %peer, reason = reason.reason(), "handshake failed");
            state.metrics.disconnect(reason.reason());
            writer.finish(&state, &[], &reason).await;
            linger(&mut reader).await;
            return;
        }
        Err(None) => return,
    };

    // The auth reply is queued before the channel is visible to pushes, so it is always first.
    let reply = Outbound::Packet(auth.reply(Op::AuthReply, Bytes::new()));
    let ch = admit(&state, &session, peer.ip(), &label, Some(reply));

    let reason = run_session(&state, &mut reader, &mut writer, &ch, &session, &label).await;
    if reason.tells_client() {
        linger(&mut reader).await;
    }

    state.metrics.connections.get_or_create(&label).dec();
    state.metrics.disconnect(reason.reason());
    if reason == Disconnect::Slow {
        warn!(peer = %peer, key = %ch.key, mid = ch.mid, "slow client disconnected");
    }
    teardown(&state, &ch).await;
}

/// After telling a client goodbye, reads (and drops) what it still sends until it closes, for at
/// most a second. Closing a socket with unread bytes makes the kernel send a reset, and a reset
/// can make the client lose the op-6 packet it has not read yet; a WebSocket client also answers
/// our close frame before closing.
async fn linger<R: AsyncRead + Unpin, D: Decoder>(reader: &mut Reader<R, D>) {
    // On the heap: a buffer here would otherwise enlarge every connection's future.
    let mut scratch = vec![0u8; 512];
    let _ = timeout(std::time::Duration::from_secs(1), async {
        while let Ok(n) = reader.rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Waits for the auth packet and asks logic about it. `Err(None)`: the client left (or the
/// process is stopping) and there is no one to tell.
async fn handshake<R: AsyncRead + Unpin, D: Decoder>(
    state: &State,
    reader: &mut Reader<R, D>,
    peer: SocketAddr,
    cookie: String,
) -> Result<(Frame, Session), Option<Disconnect>> {
    let deadline = Instant::now() + state.config.protocol.handshake_timeout;
    let auth = loop {
        let ev = tokio::select! {
            ev = timeout_at(deadline, reader.next()) => ev,
            _ = state.shutdown.cancelled() => return Err(None),
        };
        match ev {
            Err(_) => {
                return Err(Some(Disconnect::Protocol("no auth packet before the handshake timeout".into())));
            }
            Ok(Err(ReadError::Protocol(e))) => return Err(Some(Disconnect::Protocol(e))),
            Ok(Err(ReadError::Io)) | Ok(Ok(None)) | Ok(Ok(Some(Inbound::Close))) => return Err(None),
            Ok(Ok(Some(Inbound::Ping(_)))) => continue,
            Ok(Ok(Some(Inbound::Packet(f)))) if f.op == Op::Auth.code() => break f,
            Ok(Ok(Some(Inbound::Packet(f)))) => {
                return Err(Some(Disconnect::Protocol(format!(
                    "first packet must be auth (op 7), got op {}",
                    f.op
                ))));
            }
        }
    };
    let session = tokio::select! {
        r = authenticate(state, peer, cookie, auth.body.clone()) => r.map_err(Some)?,
        _ = state.shutdown.cancelled() => return Err(None),
    };
    Ok((auth, session))
}

/// Asks logic about a token; a refusal or an unreachable logic becomes the reason to disconnect.
pub async fn authenticate(
    state: &State,
    peer: SocketAddr,
    cookie: String,
    token: Bytes,
) -> Result<Session, Disconnect> {
    let req = Connect { server: state.config.server_id.clone(), cookie, token };
    match timeout(state.config.protocol.handshake_timeout, state.logic.connect(req)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(logic::Error::Rejected(why))) => Err(Disconnect::AuthFailed(why)),
        Ok(Err(logic::Error::Unavailable(e))) => {
            warn!(peer = %peer, error = %e, "logic unavailable for connect");
            state.metrics.logic_error("connect");
            Err(Disconnect::Unavailable)
        }
        Err(_) => {
            warn!(peer = %peer, "logic connect timed out");
            state.metrics.logic_error("connect");
            Err(Disconnect::Unavailable)
        }
    }
}

/// Makes an authenticated connection visible to pushes: its key, its room, the gauges.
/// `first` is queued before anything a push could queue (the socket's auth reply).
pub fn admit(
    state: &State,
    session: &Session,
    ip: std::net::IpAddr,
    label: &TransportLabel,
    first: Option<Outbound>,
) -> Arc<Channel> {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let outbox = Outbox::new(state.config.outbox.capacity, state.config.outbox.max_bytes);
    let ch = Arc::new(Channel::new(id, session.key.clone(), session.mid, ip, &session.accepts, outbox));
    if let Some(item) = first {
        let _ = ch.outbox.push(item);
    }
    state.hub.put(ch.clone());
    state.hub.change_room(&ch, &session.room);
    if state.shutdown.is_cancelled() {
        ch.outbox.close(Disconnect::Shutdown);
    }
    state.metrics.authenticated.get_or_create(label).inc();
    state.metrics.connections.get_or_create(label).inc();
    ch
}

/// Runs the read loop and the write loop together until either ends the connection.
async fn run_session<R, D, W, E>(
    state: &State,
    reader: &mut Reader<R, D>,
    writer: &mut Writer<W, E>,
    ch: &Arc<Channel>,
    session: &Session,
    label: &TransportLabel,
) -> Disconnect
where
    R: AsyncRead + Unpin,
    D: Decoder,
    W: AsyncWrite + Unpin,
    E: Encoder,
{
    let read_side = read_loop(state, reader, ch, session, label);
    let write_side = write_loop(state, writer, ch);
    tokio::pin!(read_side, write_side);
    tokio::select! {
        why = &mut read_side => {
            ch.outbox.close(why);
            write_side.await
        }
        why = &mut write_side => why,
    }
}

async fn write_loop<W: AsyncWrite + Unpin, E: Encoder>(
    state: &State,
    writer: &mut Writer<W, E>,
    ch: &Channel,
) -> Disconnect {
    let mut items = Vec::new();
    loop {
        ch.outbox.ready().await;
        items.clear();
        if let Some(reason) = ch.outbox.drain(&mut items) {
            writer.finish(state, &items, &reason).await;
            return reason;
        }
        if writer.write(&items, state.config.protocol.write_timeout).await.is_err() {
            // A client that stopped reading fills its socket first and its queue next: if the
            // queue overflowed meanwhile, that is the reason to report.
            return ch.outbox.closing().unwrap_or(Disconnect::WriteFailed);
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin, D: Decoder>(
    state: &State,
    reader: &mut Reader<R, D>,
    ch: &Arc<Channel>,
    session: &Session,
    label: &TransportLabel,
) -> Disconnect {
    let mut deadline = Instant::now() + session.heartbeat;
    let mut last_renew = Instant::now();
    loop {
        let ev = tokio::select! {
            ev = reader.next() => ev,
            _ = sleep_until(deadline) => return Disconnect::HeartbeatTimeout,
        };
        let frame = match ev {
            Ok(Some(Inbound::Packet(f))) => f,
            Ok(Some(Inbound::Ping(p))) => {
                let _ = ch.outbox.push(Outbound::Pong(p));
                continue;
            }
            Ok(Some(Inbound::Close)) | Ok(None) | Err(ReadError::Io) => return Disconnect::ClientClosed,
            Err(ReadError::Protocol(e)) => {
                state.metrics.bad_input.get_or_create(label).inc();
                return Disconnect::Protocol(e);
            }
        };
        if frame.op == Op::Heartbeat.code() {
            deadline = Instant::now() + session.heartbeat;
        }
        let reply = operate(state, ch, frame, &mut last_renew).await;
        if ch.outbox.push(Outbound::Packet(reply)).is_err() {
            // The writer is ending the connection; it will report why.
            return Disconnect::ClientClosed;
        }
    }
}

/// Handles one packet from an authenticated client and returns its reply (goim's `Operate`):
/// heartbeat, change room, sub, unsub, or uplink to logic (echoed with an empty body).
pub async fn operate(state: &State, ch: &Arc<Channel>, frame: Frame, last_renew: &mut Instant) -> Frame {
    match frame.known_op() {
        Some(Op::Heartbeat) => {
            if last_renew.elapsed() >= state.config.protocol.session_renew {
                *last_renew = Instant::now();
                renew_session(state, ch).await;
            }
            let online = ch.room().map(|r| r.online()).unwrap_or(0);
            frame.reply(Op::HeartbeatReply, Bytes::copy_from_slice(&online.to_be_bytes()))
        }
        Some(Op::ChangeRoom) => {
            let room = String::from_utf8_lossy(&frame.body);
            state.hub.change_room(ch, &room);
            frame.reply(Op::ChangeRoomReply, frame.body.clone())
        }
        Some(Op::Sub) => {
            ch.watch(&parse_ops(&frame.body));
            frame.reply(Op::SubReply, frame.body.clone())
        }
        Some(Op::Unsub) => {
            ch.unwatch(&parse_ops(&frame.body));
            frame.reply(Op::UnsubReply, frame.body.clone())
        }
        _ => {
            let reply = frame.reply(frame.op, Bytes::new());
            let uplink = Uplink { mid: ch.mid, key: ch.key.clone(), frame };
            match timeout(state.config.protocol.write_timeout, state.logic.receive(uplink)).await {
                Ok(Ok(())) => {}
                _ => state.metrics.logic_error("receive"),
            }
            reply
        }
    }
}

async fn renew_session(state: &State, ch: &Channel) {
    let p = Presence { mid: ch.mid, key: ch.key.clone(), server: state.config.server_id.clone() };
    match timeout(state.config.protocol.write_timeout, state.logic.heartbeat(p)).await {
        Ok(Ok(())) => {}
        _ => state.metrics.logic_error("heartbeat"),
    }
}

pub async fn teardown(state: &State, ch: &Arc<Channel>) {
    state.hub.remove(ch);
    if ch.was_replaced() {
        // A newer connection with this key lives on here; its session must stay.
        return;
    }
    let p = Presence { mid: ch.mid, key: ch.key.clone(), server: state.config.server_id.clone() };
    match timeout(state.config.protocol.write_timeout, state.logic.disconnect(p)).await {
        Ok(Ok(())) => {}
        _ => state.metrics.logic_error("disconnect"),
    }
}
