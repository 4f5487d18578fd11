//! One soak client, for the whole run: connect, authenticate, hold (heartbeats, checking every
//! numbered push), and connect again after any end, until the worker stops. The coordinator can
//! make it reconnect on purpose or stop reading for a while (a slow client).
//!
//! How an end is classified: the client's own reconnect is `reconnects`; a server-side end while
//! the client was not reading, or within [`SLOW_GRACE`] after it resumed, is an expected slow
//! disconnect; every other end is an unexpected disconnect.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::report::Stats;
use super::sequence::{Counts, Sequence};
use crate::protocol::{Events, Exchange, Protocol, Who};

/// Stamp steps of the numbered streams, and of the slow clients' filler pushes (not numbered).
pub const ROOM: u32 = 1;
pub const USER: u32 = 2;
pub const BROADCAST: u32 = 3;
pub const FILLER: u32 = 4;

/// How long connecting plus authenticating may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// After a slow client resumes reading, how long a server-side end still counts as slow.
pub const SLOW_GRACE: Duration = Duration::from_secs(10);
/// A slow client's receive buffer, so that its pause backs up into comet quickly.
const SLOW_RCVBUF: u32 = 4096;
const READ_CHUNK: usize = 64 * 1024;

/// What every client of a worker shares.
pub struct Ctx {
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub sources: Vec<Ipv4Addr>,
    pub heartbeat: Duration,
    pub stats: RefCell<Stats>,
    /// Cancelled by the worker at the end of the run: every client leaves.
    pub stop: CancellationToken,
    /// Bounds the handshakes in flight, so a mass reconnect does not become a storm.
    pub gate: Semaphore,
}

/// One client's identity and the coordinator's orders to it.
pub struct Slot {
    pub who: Who,
    pub protocol: Protocol,
    pub endpoint: SocketAddr,
    /// A slow-client candidate: small receive buffer.
    pub slow: bool,
    pub reconnect: Cell<bool>,
    pub pause: Cell<Option<Duration>>,
    /// Wakes the client when `reconnect` or `pause` is set (a stored permit if it is busy).
    pub wake: Notify,
    /// Room, user and broadcast streams, reset at every connect.
    pub streams: RefCell<[Sequence; 3]>,
    /// Connected, reading and outside a slow window: the end-of-run tail check applies.
    pub steady: Cell<bool>,
}

impl Slot {
    pub fn new(ctx: &Ctx, who: Who, comets: usize, ws_every: u64, slow: bool) -> Slot {
        let comet = (who.index % comets as u64) as usize;
        let ws = ws_every > 0 && (who.index / comets as u64) % ws_every == ws_every - 1;
        let (protocol, endpoint) =
            if ws { (Protocol::GoimWs, ctx.ws[comet]) } else { (Protocol::GoimTcp, ctx.tcp[comet]) };
        Slot {
            who,
            protocol,
            endpoint,
            slow,
            reconnect: Cell::new(false),
            pause: Cell::new(None),
            wake: Notify::new(),
            streams: RefCell::new(Default::default()),
            steady: Cell::new(false),
        }
    }
}

struct Link {
    stream: TcpStream,
    session: Exchange,
    carry: Vec<u8>,
}

enum End {
    Stop,
    Reconnect,
    Slow,
    Unexpected(String),
}

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, Events)> = RefCell::new((Vec::with_capacity(READ_CHUNK), Events::default()));
}

/// The client's life: connect, hold, and again, until `ctx.stop`.
pub async fn life(ctx: Rc<Ctx>, slot: Rc<Slot>) {
    loop {
        let opened = {
            let _permit = ctx.gate.acquire().await;
            tokio::select! {
                r = timeout(HANDSHAKE_TIMEOUT, open(&ctx, &slot)) => {
                    r.map_err(|_| anyhow!("handshake timed out")).and_then(|r| r)
                }
                _ = ctx.stop.cancelled() => return,
            }
        };
        let mut link = match opened {
            Ok(l) => l,
            Err(e) => {
                ctx.stats.borrow_mut().connect_failed(&e);
                if pause_or_stop(&ctx, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        *slot.streams.borrow_mut() = Default::default();
        // A reconnect or pause asked for while connecting is for the old connection.
        slot.reconnect.set(false);
        {
            let mut s = ctx.stats.borrow_mut();
            s.connects += 1;
            s.connected += 1;
        }
        slot.steady.set(true);
        let end = hold(&ctx, &slot, &mut link).await;
        slot.steady.set(false);
        let wait = {
            let mut s = ctx.stats.borrow_mut();
            s.connected -= 1;
            match end {
                End::Stop => return,
                End::Reconnect => {
                    s.reconnects += 1;
                    // A reset, not a FIN, so churn leaves no TIME_WAIT sockets behind.
                    let _ = link.stream.set_zero_linger();
                    Duration::from_millis(200 + slot.who.index % 1800)
                }
                End::Slow => {
                    s.slow_disconnects += 1;
                    Duration::from_secs(1)
                }
                End::Unexpected(why) => {
                    s.unexpected += 1;
                    s.error(why);
                    Duration::from_secs(1)
                }
            }
        };
        drop(link);
        if pause_or_stop(&ctx, wait).await {
            return;
        }
    }
}

/// Sleeps `d`; true when the run stopped meanwhile.
async fn pause_or_stop(ctx: &Ctx, d: Duration) -> bool {
    tokio::select! {
        _ = sleep(d) => false,
        _ = ctx.stop.cancelled() => true,
    }
}

async fn open(ctx: &Ctx, slot: &Slot) -> Result<Link> {
    let source = ctx.sources[(slot.who.index % ctx.sources.len() as u64) as usize];
    let sock = TcpSocket::new_v4()?;
    if slot.slow {
        sock.set_recv_buffer_size(SLOW_RCVBUF)?;
    }
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0)).with_context(|| format!("bind {source}"))?;
    let stream = sock.connect(slot.endpoint).await.with_context(|| format!("connect {}", slot.endpoint))?;
    stream.set_nodelay(true)?;
    let (session, first) = Exchange::start(slot.protocol, &slot.who, &slot.endpoint.to_string());
    let mut link = Link { stream, session, carry: Vec::new() };
    link.stream.write_all(&first).await?;
    while !link.session.ready() {
        link.stream.readable().await?;
        let (reply, ended) = link.take_input(ctx, slot, None)?;
        link.send(&reply).await?;
        if let Some(why) = ended {
            bail!("{why} before authentication");
        }
    }
    Ok(link)
}

/// Holds one connection until it ends; says how.
async fn hold(ctx: &Ctx, slot: &Slot, link: &mut Link) -> End {
    let phase = ctx.heartbeat.mul_f64((slot.who.index.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0);
    let mut next_heartbeat = Instant::now() + phase;
    // Set while the client does not read; then, after it resumes, until the grace is over.
    let mut paused_until: Option<Instant> = None;
    let mut slow_until: Option<Instant> = None;
    // What the streams counted during the slow window: lost only if the server kept the client.
    let mut window: Option<[Counts; 3]> = None;
    loop {
        let reading = paused_until.is_none();
        let end = tokio::select! {
            _ = ctx.stop.cancelled() => Some(End::Stop),
            _ = slot.wake.notified() => {
                if slot.reconnect.replace(false) {
                    Some(End::Reconnect)
                } else if let Some(d) = slot.pause.take() {
                    let now = Instant::now();
                    paused_until = Some(now + d);
                    slow_until = Some(now + d + SLOW_GRACE);
                    window.get_or_insert_with(Default::default);
                    slot.steady.set(false);
                    ctx.stats.borrow_mut().pauses += 1;
                    None
                } else {
                    None
                }
            }
            _ = sleep_until(paused_until.unwrap_or_else(Instant::now)), if !reading => {
                paused_until = None;
                None
            }
            _ = sleep_until(slow_until.unwrap_or_else(Instant::now)), if reading && slow_until.is_some() => {
                // The server kept the client through its pause: what it missed is lost.
                slow_until = None;
                if let Some(w) = window.take() {
                    ctx.stats.borrow_mut().add_counts(&w);
                }
                ctx.stats.borrow_mut().slow_kept += 1;
                slot.steady.set(true);
                None
            }
            r = link.stream.readable(), if reading => match r {
                Err(e) => Some(End::Unexpected(format!("read: {e}"))),
                Ok(()) => match link.take_input(ctx, slot, window.as_mut()) {
                    Ok((reply, ended)) => match (link.send(&reply).await, ended) {
                        (_, Some(why)) => Some(End::Unexpected(why)),
                        (Err(e), None) => Some(End::Unexpected(e.to_string())),
                        (Ok(()), None) => None,
                    },
                    Err(e) => Some(End::Unexpected(format!("{e:#}"))),
                },
            },
            _ = sleep_until(next_heartbeat) => {
                next_heartbeat += ctx.heartbeat;
                match link.session.heartbeat() {
                    Some(hb) => link.send(&hb).await.err().map(|e| End::Unexpected(e.to_string())),
                    None => None,
                }
            }
        };
        match end {
            None => {}
            Some(End::Unexpected(_)) if slow_until.is_some() => {
                if let Some(w) = window.take() {
                    let mut s = ctx.stats.borrow_mut();
                    s.slow_window_lost += w.iter().map(|c| c.lost).sum::<u64>();
                    for c in &w {
                        s.slow_window_delivered += c.delivered;
                    }
                }
                return End::Slow;
            }
            Some(e) => {
                if let Some(w) = window.take() {
                    ctx.stats.borrow_mut().add_counts(&w);
                }
                return e;
            }
        }
    }
}

impl Link {
    /// Reads what is ready and checks its numbers into `window` (a slow window) or the
    /// worker's counts; returns bytes to send back and, if the server ended the session, why.
    fn take_input(
        &mut self,
        ctx: &Ctx,
        slot: &Slot,
        window: Option<&mut [Counts; 3]>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        SCRATCH.with(|cell| {
            let (buf, ev) = &mut *cell.borrow_mut();
            buf.clear();
            buf.extend_from_slice(&self.carry);
            let mut eof = false;
            // Bounded: at most 16 chunks per readiness event.
            for _ in 0..16 {
                buf.reserve(READ_CHUNK);
                let room = buf.capacity() - buf.len();
                match self.stream.try_read_buf(buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if n < room => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(anyhow!("read: {e}")),
                }
            }
            ev.clear();
            let used = self.session.feed(buf, ev)?;
            self.carry.clear();
            if self.carry.capacity() > 4 * READ_CHUNK {
                self.carry = Vec::new();
            }
            self.carry.extend_from_slice(&buf[used..]);
            if !ev.stamps.is_empty() {
                let mut stats = ctx.stats.borrow_mut();
                let mut streams = slot.streams.borrow_mut();
                let counts = match window {
                    Some(w) => w,
                    None => &mut stats.kinds,
                };
                let mut fillers = 0;
                for s in &ev.stamps {
                    match s.step {
                        ROOM | USER | BROADCAST => {
                            let k = (s.step - 1) as usize;
                            streams[k].receive(s.seq, &mut counts[k]);
                        }
                        _ => fillers += 1,
                    }
                }
                stats.fillers += fillers;
            }
            let ended = match ev.closed.take() {
                Some(why) => Some(why),
                None if eof => Some("server closed the connection".into()),
                None => None,
            };
            Ok((std::mem::take(&mut ev.send), ended))
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.stream.write_all(bytes).await.context("write")?;
        }
        Ok(())
    }
}
