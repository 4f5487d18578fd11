//! The socket driver: one client connection, whatever its transport, from handshake (wait for
//! auth) through its session (read loop and write loop) to its end. The steps it runs with logic
//! and the hub (authenticate, admit, operate, teardown) are `session`'s; the framing is the
//! transport's, through `codec`'s [`Decoder`] and [`Encoder`]. `tcp` and `websocket` call
//! [`serve`]; nothing here knows either of them (beyond the size tests).

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use goim_api::{Frame, Op, RecoverAsk, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, warn};

use crate::channel::Channel;
use crate::codec::{DecodeError, Decoder, Encoder, Inbound};
use crate::context::Context;
use crate::disconnect::Disconnect;
use crate::metrics::TransportLabel;
use crate::outbox::Outbound;
use crate::resume::{Reply, parse_ask, resume};
use crate::session::{admit, authenticate, operate, teardown};

/// Read buffer space reserved before each read while a packet is incomplete; also the size of
/// the stack buffer a connection with nothing buffered reads into.
const MIN_READ: usize = 512;

enum ReadError {
    Io,
    Protocol(DecodeError),
}

struct Reader<R, D> {
    rd: R,
    buf: BytesMut,
    dec: D,
}

impl<R: AsyncRead + Unpin, D: Decoder> Reader<R, D> {
    fn new(rd: R, leftover: BytesMut, dec: D) -> Reader<R, D> {
        Reader { rd, buf: leftover, dec }
    }

    /// The next inbound event; `Ok(None)` at end of stream. Cancel-safe.
    async fn next(&mut self) -> Result<Option<Inbound>, ReadError> {
        loop {
            if let Some(ev) = self.dec.decode(&mut self.buf).map_err(ReadError::Protocol)? {
                return Ok(Some(ev));
            }
            let read = if self.buf.is_empty() {
                self.read_idle().await
            } else {
                self.buf.reserve(MIN_READ);
                self.rd.read_buf(&mut self.buf).await
            };
            match read {
                Ok(0) | Err(_) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadError::Protocol(DecodeError::Truncated)),
                Ok(_) => {}
                Err(_) => return Err(ReadError::Io),
            }
        }
    }

    /// Waits for bytes with nothing buffered. Most connections spend their life here, so this
    /// gives back the read buffer and reads into the stack, keeping only the bytes that arrive
    /// (a heartbeat's 16): an idle connection holds no read buffer at all.
    async fn read_idle(&mut self) -> std::io::Result<usize> {
        self.buf = BytesMut::new();
        poll_fn(|cx| {
            let mut stack = [0u8; MIN_READ];
            let mut read = ReadBuf::new(&mut stack);
            ready!(Pin::new(&mut self.rd).poll_read(cx, &mut read))?;
            self.buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
        .await
    }
}

struct Writer<W, E> {
    wr: W,
    enc: E,
}

impl<W: AsyncWrite + Unpin, E: Encoder> Writer<W, E> {
    /// Encodes `items` into one buffer, for [`Writer::write`].
    fn encode(&mut self, items: &[Outbound]) -> BytesMut {
        let mut buf = BytesMut::new();
        for item in items {
            self.enc.encode(item, &mut buf);
        }
        buf
    }

    /// Writes `buf` in one go, under `deadline`.
    ///
    /// A socket with room takes it all at once, without a timer. Only a write that has to wait
    /// gets one, boxed: the timer would otherwise enlarge every session's future. (Not an
    /// `async fn`, which would hold `buf` twice; see [`Conn::run`].)
    #[expect(clippy::manual_async_fn, reason = "an `async fn` would store its arguments twice")]
    fn write(&mut self, mut buf: BytesMut, deadline: Duration) -> impl Future<Output = Result<(), ()>> + '_ {
        async move {
            if buf.is_empty() {
                return Ok(());
            }
            let written = poll_fn(|cx| match Pin::new(&mut self.wr).poll_write(cx, &buf) {
                Poll::Pending => Poll::Ready(Ok(0)),
                done => done,
            })
            .await;
            buf.advance(written.map_err(|_| ())?);
            if buf.is_empty() {
                return Ok(());
            }
            match Box::pin(timeout(deadline, self.wr.write_all(&buf))).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(()),
            }
        }
    }

    /// Writes what `reason` calls for (queued messages, op 6, the transport's goodbye), then closes.
    async fn finish(&mut self, ctx: &Context, items: &[Outbound], reason: &Disconnect) {
        let mut buf = BytesMut::new();
        if reason.flushes_queue() {
            for item in items {
                self.enc.encode(item, &mut buf);
            }
        }
        if reason.tells_client() {
            let op6 = reason.packet(&ctx.config);
            self.enc.encode(&Outbound::Packet(op6), &mut buf);
            self.enc.goodbye(reason, &mut buf);
        }
        let wt = ctx.config.protocol.write_timeout;
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
///
/// A task's future is as large as its largest state, and a connection spends nearly all its life
/// idle in its session: so the handshake (waiting for auth, asking logic) and the session each
/// run as a boxed future of their own, and the task holds only the phase it is in (issue #5:
/// memory per idle connection). The future returned here holds just the box.
pub fn serve<S, D, E>(
    ctx: Arc<Context>,
    stream: S,
    dec: D,
    enc: E,
    peer: Peer,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    D: Decoder + 'static,
    E: Encoder + 'static,
{
    let open = Box::pin(open(ctx, stream, dec, enc, peer));
    async move {
        // Matched, not `if let`: the scrutinee would stay in this future for the session's life.
        let session = match open.await {
            Some(conn) => Box::pin(conn.run()),
            None => return,
        };
        session.await
    }
}

/// An authenticated connection: what its session needs, and nothing of its handshake.
struct Conn<S, D, E> {
    shared: Shared,
    reader: Reader<ReadHalf<S>, D>,
    writer: Writer<WriteHalf<S>, E>,
}

/// What the read loop and the write loop both use (one reference each, not one per field).
struct Shared {
    ctx: Arc<Context>,
    ch: Arc<Channel>,
    /// How long the client may stay silent (from its session).
    heartbeat: Duration,
    label: TransportLabel,
    peer: SocketAddr,
}

/// The handshake phase: auth, then admission. `None` when the connection ended in it.
async fn open<S, D, E>(ctx: Arc<Context>, stream: S, dec: D, enc: E, peer: Peer) -> Option<Conn<S, D, E>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    D: Decoder,
    E: Encoder,
{
    let Peer { addr: peer, cookie, leftover, transport } = peer;
    let label = TransportLabel { transport };
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = Reader::new(rd, leftover, dec);
    let mut writer = Writer { wr, enc };

    let (auth, session, ask) = match handshake(&ctx, &mut reader, peer, cookie).await {
        Ok(ok) => ok,
        Err(Some(reason)) => {
            if matches!(reason, Disconnect::Protocol(_)) {
                ctx.metrics.bad_input.get_or_create(&label).inc();
            }
            debug!(peer = %peer, reason = reason.reason(), "handshake failed");
            ctx.metrics.disconnect(reason.reason());
            writer.finish(&ctx, &[], &reason).await;
            linger(&mut reader).await;
            return None;
        }
        Err(None) => return None,
    };

    // The auth reply is queued before the channel is visible to pushes, so it is always first.
    let reply = Outbound::Packet(auth.reply(Op::AuthReply, Bytes::new()));
    let ch = admit(&ctx, &session, peer.ip(), &label, Some(reply));
    if let Some(ask) = ask {
        resume(&ctx, &ch, &session, ask, Reply::Packet).await;
    }
    let shared = Shared { ctx, ch, heartbeat: session.heartbeat, label, peer };
    Some(Conn { shared, reader, writer })
}

impl<S, D, E> Conn<S, D, E>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    D: Decoder,
    E: Encoder,
{
    /// The session phase: the read and write loops, then (boxed, like the handshake) the end.
    ///
    /// Not an `async fn`: that would move `self` from its argument into a local, two `Conn`s in
    /// one future. The block uses the captured `self` in place.
    #[expect(clippy::manual_async_fn, reason = "an `async fn` would store its arguments twice")]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let reason = self.session().await;
            Box::pin(self.end(reason)).await
        }
    }

    /// Lingers if the client was told goodbye, counts the end, and tells logic.
    async fn end(mut self, reason: Disconnect) {
        if reason.tells_client() {
            linger(&mut self.reader).await;
        }
        let Shared { ctx, ch, label, peer, .. } = &self.shared;
        ctx.metrics.connections.get_or_create(label).dec();
        ctx.metrics.disconnect(reason.reason());
        if reason == Disconnect::Slow {
            warn!(peer = %peer, key = %ch.key, mid = ch.mid, "slow client disconnected");
        }
        teardown(ctx, ch).await;
    }

    /// Runs the read loop and the write loop together until the write loop ends the connection,
    /// and returns why it ended: the outbox's closing reason, the first one set by anyone.
    ///
    /// Either loop may see the end first: a slow client's queue overflows (the outbox closes as
    /// slow), and the client then closes its socket, or its write fails, possibly before the
    /// writer has looked at the outbox again. A loop's own reason only counts when the outbox
    /// had none, so the reason reported (and counted in metrics) is never the symptom of a
    /// disconnect already decided. (By hand rather than `select!`, which needs more room here.)
    async fn session(&mut self) -> Disconnect {
        let shared = &self.shared;
        let mut read_side = pin!(read_loop(shared, &mut self.reader));
        let mut write_side = pin!(write_loop(shared, &mut self.writer));
        let mut reading = true;
        poll_fn(|cx| {
            if reading && let Poll::Ready(why) = read_side.as_mut().poll(cx) {
                reading = false;
                shared.ch.outbox.close(why);
            }
            write_side.as_mut().poll(cx).map(|why| shared.ch.outbox.close_with(why))
        })
        .await
    }
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

/// Waits for the auth packet (after op 18, if the client resumes) and asks logic about it.
/// `Err(None)`: the client left (or the process is stopping) and there is no one to tell.
async fn handshake<R: AsyncRead + Unpin, D: Decoder>(
    ctx: &Context,
    reader: &mut Reader<R, D>,
    peer: SocketAddr,
    cookie: String,
) -> Result<(Frame, Session, Option<RecoverAsk>), Option<Disconnect>> {
    let deadline = Instant::now() + ctx.config.protocol.handshake_timeout;
    let mut ask = None;
    let auth = loop {
        let ev = tokio::select! {
            ev = timeout_at(deadline, reader.next()) => ev,
            _ = ctx.shutdown.cancelled() => return Err(None),
        };
        match ev {
            Err(_) => {
                ctx.metrics.handshake_timeout("auth_packet");
                return Err(Some(Disconnect::Protocol("no auth packet before the handshake timeout".into())));
            }
            Ok(Err(ReadError::Protocol(e))) => return Err(Some(Disconnect::Protocol(e.to_string()))),
            Ok(Err(ReadError::Io)) | Ok(Ok(None)) | Ok(Ok(Some(Inbound::Close))) => return Err(None),
            Ok(Ok(Some(Inbound::Ping(_)))) => continue,
            Ok(Ok(Some(Inbound::Packet(f)))) if f.op == Op::Auth.code() => break f,
            Ok(Ok(Some(Inbound::Packet(f)))) if f.op == Op::Recover.code() && ask.is_none() => {
                ask = Some(parse_ask(&f.body).map_err(|e| Some(Disconnect::Protocol(e)))?);
            }
            Ok(Ok(Some(Inbound::Packet(f)))) => {
                return Err(Some(Disconnect::Protocol(format!(
                    "first packet must be auth (op 7, after at most one op 18), got op {}",
                    f.op
                ))));
            }
        }
    };
    let session = tokio::select! {
        r = authenticate(ctx, peer, cookie, auth.body.clone()) => r.map_err(Some)?,
        _ = ctx.shutdown.cancelled() => return Err(None),
    };
    Ok((auth, session, ask))
}

/// The write loop: waits for the outbox, writes everything queued in one go, and ends the
/// connection (op 6 and all) once the outbox is closing or a write fails.
///
/// Not an `async fn`: that would store every argument twice in the session's future (the
/// parameters and their moved copies); an `async move` block uses the captures in place.
#[expect(clippy::manual_async_fn, reason = "an `async fn` would store its arguments twice")]
fn write_loop<'a, W: AsyncWrite + Unpin, E: Encoder>(
    shared: &'a Shared,
    writer: &'a mut Writer<W, E>,
) -> impl Future<Output = Disconnect> + 'a {
    async move {
        loop {
            shared.ch.outbox.ready().await;
            // A fresh `Vec` each time: it takes over the outbox's queue allocation, and both are
            // freed after the write (the block ends first), so an idle connection keeps neither.
            let buf = {
                let mut items = Vec::new();
                if let Some(reason) = shared.ch.outbox.drain(&mut items) {
                    Box::pin(writer.finish(&shared.ctx, &items, &reason)).await;
                    return reason;
                }
                writer.encode(&items)
            };
            if writer.write(buf, shared.ctx.config.protocol.write_timeout).await.is_err() {
                // A client that stopped reading fills its socket first and its queue next: if the
                // queue overflowed meanwhile, that is the reason to report. Closing the outbox (not
                // just reading it) settles the reason at once: a push can no longer overflow the
                // queue of a connection already ended, and count a slow consumer for it.
                return shared.ch.outbox.close_with(Disconnect::WriteFailed);
            }
        }
    }
}

/// The read loop: answers the client's packets until it leaves, breaks the protocol or misses
/// its heartbeat. Not an `async fn`, like [`write_loop`].
#[expect(clippy::manual_async_fn, reason = "an `async fn` would store its arguments twice")]
fn read_loop<'a, R: AsyncRead + Unpin, D: Decoder>(
    shared: &'a Shared,
    reader: &'a mut Reader<R, D>,
) -> impl Future<Output = Disconnect> + 'a {
    async move {
        let mut expiry = pin!(sleep_until(Instant::now() + shared.heartbeat));
        let mut last_renew = Instant::now();
        loop {
            // `next` is cancel-safe, so each poll makes a fresh one and drops it if it is pending:
            // a waiting connection keeps nothing of it (by hand rather than `select!`, which would).
            let ev = poll_fn(|cx| {
                if let Poll::Ready(ev) = pin!(reader.next()).poll(cx) {
                    return Poll::Ready(Some(ev));
                }
                expiry.as_mut().poll(cx).map(|()| None)
            });
            let frame = match ev.await {
                None => return Disconnect::HeartbeatTimeout,
                Some(Ok(Some(Inbound::Packet(f)))) => f,
                Some(Ok(Some(Inbound::Ping(p)))) => {
                    let _ = shared.ch.outbox.push(Outbound::Pong(p));
                    continue;
                }
                Some(Ok(Some(Inbound::Close)) | Ok(None) | Err(ReadError::Io)) => {
                    return Disconnect::ClientClosed;
                }
                Some(Err(ReadError::Protocol(e))) => {
                    shared.ctx.metrics.bad_input.get_or_create(&shared.label).inc();
                    return Disconnect::Protocol(e.to_string());
                }
            };
            if frame.op == Op::Heartbeat.code() {
                expiry.as_mut().reset(Instant::now() + shared.heartbeat);
            }
            // Boxed: calling logic is rare next to waiting, and its state would enlarge every session.
            let reply = Box::pin(operate(&shared.ctx, &shared.ch, frame, &mut last_renew)).await;
            if shared.ch.outbox.push(Outbound::Packet(reply)).is_err() {
                // The writer is ending the connection; it will report why.
                return Disconnect::ClientClosed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io;
    use std::task;

    use goim_api::{Connect, Online, Presence, Uplink};
    use tokio::net::TcpStream;

    use super::*;
    use crate::logic;
    use crate::metrics::ReasonLabel;
    use crate::outbox::Refused;
    use crate::tcp::{TcpDecoder, TcpEncoder};
    use crate::websocket::{WsDecoder, WsEncoder};

    /// A logic that accepts every call; the sessions here are admitted by hand.
    struct AnyLogic;

    #[async_trait::async_trait]
    impl logic::Logic for AnyLogic {
        async fn connect(&self, _: Connect) -> Result<Session, logic::Error> {
            Err(logic::Error::Unavailable("not used".into()))
        }
        async fn disconnect(&self, _: Presence) -> Result<(), logic::Error> {
            Ok(())
        }
        async fn heartbeat(&self, _: Presence) -> Result<(), logic::Error> {
            Ok(())
        }
        async fn renew_online(&self, _: Online) -> Result<HashMap<String, i32>, logic::Error> {
            Ok(HashMap::new())
        }
        async fn receive(&self, _: Uplink) -> Result<(), logic::Error> {
            Ok(())
        }
    }

    /// A client socket: reads end at once (`eof`) or never come; writes all succeed or all fail.
    struct Socket {
        eof: bool,
        writes: bool,
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut task::Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.eof { Poll::Ready(Ok(())) } else { Poll::Pending }
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(if self.writes { Ok(buf.len()) } else { Err(io::ErrorKind::BrokenPipe.into()) })
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut task::Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut task::Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// An authenticated TCP connection over `socket` whose queue holds `capacity` items, with its
    /// auth reply queued (as [`open`] leaves it).
    fn session(socket: Socket, capacity: usize) -> Conn<Socket, TcpDecoder, TcpEncoder> {
        let mut config = crate::Config::default();
        config.outbox.capacity = capacity;
        let ctx = Arc::new(Context::new(config, Arc::new(AnyLogic), Default::default()));
        let session = Session {
            mid: 1,
            key: "k".into(),
            room: "live://1".into(),
            accepts: vec![],
            heartbeat: Duration::from_secs(60),
        };
        let label = TransportLabel { transport: "tcp" };
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let reply = Outbound::Packet(Frame::push(Op::AuthReply.code(), Bytes::new()));
        let ch = admit(&ctx, &session, peer.ip(), &label, Some(reply));
        let (rd, wr) = tokio::io::split(socket);
        Conn {
            shared: Shared { ctx, ch, heartbeat: session.heartbeat, label, peer },
            reader: Reader::new(rd, BytesMut::new(), TcpDecoder { max_body: 1 << 16 }),
            writer: Writer { wr, enc: TcpEncoder },
        }
    }

    fn disconnects(ctx: &Context, reason: &'static str) -> u64 {
        ctx.metrics.disconnects.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Issue 15: the queue overflowed (the outbox is closing as slow) and the client's socket
    /// then ended, so the read loop finishes first, with `client_closed`. The connection is
    /// still counted as slow: the outbox's reason wins over whichever loop ended first.
    #[tokio::test]
    async fn a_slow_client_that_closes_first_is_counted_slow() {
        let conn = session(Socket { eof: true, writes: true }, 1);
        let (ctx, ch) = (conn.shared.ctx.clone(), conn.shared.ch.clone());
        assert_eq!(ch.outbox.push(Outbound::Pong(Bytes::new())), Err(Refused::Slow));
        timeout(Duration::from_secs(5), conn.run()).await.unwrap();
        assert_eq!(disconnects(&ctx, "slow"), 1);
        assert_eq!(disconnects(&ctx, "client_closed"), 0);
    }

    /// A failed write ends the connection for good: its reason is settled in the outbox at once,
    /// so a push that arrives after it (before teardown takes the channel out of the hub) is
    /// refused as closing, and cannot overflow the queue and count a slow consumer for a
    /// connection counted as `write_failed`.
    #[tokio::test]
    async fn a_failed_write_settles_the_reason_before_a_later_push_can_overflow() {
        let mut conn = session(Socket { eof: false, writes: false }, 1);
        let ch = conn.shared.ch.clone();
        let why = timeout(Duration::from_secs(5), conn.session()).await.unwrap();
        assert_eq!(why, Disconnect::WriteFailed);
        assert_eq!(ch.outbox.closing(), Some(Disconnect::WriteFailed));
        for _ in 0..3 {
            assert_eq!(ch.outbox.push(Outbound::Pong(Bytes::new())), Err(Refused::Closing));
        }
        timeout(Duration::from_secs(5), conn.end(why)).await.unwrap();
    }

    /// Whatever a loop reports, the session's reason is the outbox's: the first one set.
    #[tokio::test]
    async fn the_session_reports_the_reason_the_outbox_closed_with() {
        for socket in [Socket { eof: true, writes: false }, Socket { eof: false, writes: false }] {
            let mut conn = session(socket, 8);
            let ch = conn.shared.ch.clone();
            assert!(ch.outbox.close(Disconnect::Kicked));
            let why = timeout(Duration::from_secs(5), conn.session()).await.unwrap();
            assert_eq!(why, Disconnect::Kicked);
        }
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Issue #5: memory per idle connection (about 2 KB in all). A connection's task holds only
    /// the box of its current phase, and the session, boxed for the connection's life, holds no
    /// handshake state; these bounds fail if either grows back (the session was 2.9 KB, inline
    /// in a 5.8 KB task, before).
    #[test]
    fn an_idle_connection_holds_small_futures() {
        let task = future_size(|(s, st, p): (Arc<Context>, TcpStream, Peer)| {
            serve(s, st, TcpDecoder { max_body: 1 }, TcpEncoder, p)
        });
        assert!(task <= 64, "the TCP task's future is {task} bytes");
        let tcp = future_size(|c: Conn<TcpStream, TcpDecoder, TcpEncoder>| c.run());
        assert!(tcp <= 576, "a TCP session is {tcp} bytes");
        let ws = future_size(|c: Conn<TcpStream, WsDecoder, WsEncoder>| c.run());
        assert!(ws <= 608, "a WebSocket session is {ws} bytes");
    }
}
