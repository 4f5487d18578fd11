//! One load-generator connection, driven on a worker's single thread: connect from a source
//! address in 127.0.0.0/8, authenticate, then hold (heartbeats, counting and timing pushes) until
//! told to stop; or, in a storm, connect, authenticate and leave at once.
//!
//! Every connection of a worker reads into one shared buffer (the worker is single-threaded), so
//! an idle connection costs the load generator little more than its socket.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::protocol::{Events, Exchange, Protocol, Who};
use crate::stamp::unix_nanos;
use crate::stats::Stats;

/// How long connecting plus authenticating may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest read taken in one go per readiness event.
const READ_CHUNK: usize = 64 * 1024;

/// What every connection of a worker shares.
pub struct Ctx {
    pub protocol: Protocol,
    pub endpoints: Vec<SocketAddr>,
    pub sources: Vec<Ipv4Addr>,
    pub heartbeat: Duration,
    pub stats: RefCell<Stats>,
    /// Cancelled to close every held connection (the coordinator's `close`).
    pub stop: CancellationToken,
}

thread_local! {
    /// The worker's read buffer and event scratch, shared by all its connections.
    static SCRATCH: RefCell<(Vec<u8>, Events)> = RefCell::new((Vec::with_capacity(READ_CHUNK), Events::default()));
}

struct Link {
    stream: TcpStream,
    session: Exchange,
    /// An incomplete frame left from the last read.
    carry: Vec<u8>,
}

enum Flow {
    More,
    Ended(String),
}

impl Ctx {
    fn endpoint(&self, who: &Who) -> SocketAddr {
        self.endpoints[(who.index % self.endpoints.len() as u64) as usize]
    }

    fn source(&self, who: &Who) -> Ipv4Addr {
        self.sources[(who.index % self.sources.len() as u64) as usize]
    }
}

/// Opens a TCP connection to the endpoint for `who`, from its source address.
pub async fn dial(ctx: &Ctx, who: &Who) -> Result<TcpStream> {
    let to = ctx.endpoint(who);
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(ctx.source(who)), 0))
        .with_context(|| format!("bind {}", ctx.source(who)))?;
    let stream = sock.connect(to).await.with_context(|| format!("connect {to}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn open(ctx: &Ctx, who: &Who) -> Result<Link> {
    let stream = dial(ctx, who).await?;
    let host = ctx.endpoint(who).to_string();
    let (session, first) = Exchange::start(ctx.protocol, who, &host);
    let mut link = Link { stream, session, carry: Vec::new() };
    link.stream.write_all(&first).await?;
    while !link.session.ready() {
        link.stream.readable().await?;
        let (reply, flow) = link.take_input(ctx)?;
        link.send(&reply).await?;
        if let Flow::Ended(why) = flow {
            bail!("{why} before authentication");
        }
    }
    Ok(link)
}

impl Link {
    /// Reads whatever is ready and handles it; returns bytes to send back and whether the
    /// connection goes on.
    fn take_input(&mut self, ctx: &Ctx) -> Result<(Vec<u8>, Flow)> {
        SCRATCH.with(|cell| {
            let (buf, ev) = &mut *cell.borrow_mut();
            buf.clear();
            buf.extend_from_slice(&self.carry);
            let mut eof = false;
            loop {
                buf.reserve(READ_CHUNK);
                let room = buf.capacity() - buf.len();
                match self.stream.try_read_buf(buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if n < room || buf.len() >= 16 * READ_CHUNK => break,
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
            if !ev.stamps.is_empty() || ev.heartbeat_replies > 0 {
                let now = unix_nanos();
                let mut stats = ctx.stats.borrow_mut();
                stats.heartbeats += u64::from(ev.heartbeat_replies);
                for s in &ev.stamps {
                    stats.record(s.step, now.saturating_sub(s.sent) / 1000);
                }
            }
            let flow = match ev.closed.take() {
                Some(why) => Flow::Ended(why),
                None if eof => Flow::Ended("server closed the connection".into()),
                None => Flow::More,
            };
            Ok((std::mem::take(&mut ev.send), flow))
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.stream.write_all(bytes).await.context("write")?;
        }
        Ok(())
    }
}

/// Connects and authenticates `who`, then holds the connection until `ctx.stop`. The handshake
/// holds a permit of `gate`, which bounds how many handshakes a worker runs at once.
pub async fn hold(ctx: Rc<Ctx>, who: Who, gate: Rc<tokio::sync::Semaphore>) {
    let opened = {
        let _permit = gate.acquire().await;
        tokio::select! {
            r = timeout(HANDSHAKE_TIMEOUT, open(&ctx, &who)) => {
                r.map_err(|_| anyhow!("handshake timed out")).and_then(|r| r)
            }
            _ = ctx.stop.cancelled() => return,
        }
    };
    let mut link = match opened {
        Ok(l) => l,
        Err(e) => {
            ctx.stats.borrow_mut().fail(&e);
            return;
        }
    };
    ctx.stats.borrow_mut().connected += 1;
    let ended = run(&ctx, &mut link, &who).await;
    let mut stats = ctx.stats.borrow_mut();
    stats.connected -= 1;
    if let Some(why) = ended {
        stats.dropped += 1;
        stats.error(why);
    }
}

/// The hold loop; `Some(reason)` when the connection ended other than by `ctx.stop`.
async fn run(ctx: &Ctx, link: &mut Link, who: &Who) -> Option<String> {
    // Spread heartbeats over the interval so they do not arrive at the server in waves.
    let phase = ctx.heartbeat.mul_f64((who.index.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0);
    let mut next_heartbeat = Instant::now() + phase;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return None,
            r = link.stream.readable() => {
                if let Err(e) = r {
                    return Some(format!("read: {e}"));
                }
                match link.take_input(ctx) {
                    Ok((reply, flow)) => {
                        if let Err(e) = link.send(&reply).await {
                            return Some(e.to_string());
                        }
                        if let Flow::Ended(why) = flow {
                            return Some(why);
                        }
                    }
                    Err(e) => return Some(format!("{e:#}")),
                }
            }
            _ = sleep_until(next_heartbeat) => {
                next_heartbeat += ctx.heartbeat;
                if let Some(hb) = link.session.heartbeat()
                    && let Err(e) = link.send(&hb).await
                {
                    return Some(e.to_string());
                }
            }
        }
    }
}

/// One storm attempt: connect, authenticate, leave. Returns how long connect + auth took.
pub async fn visit(ctx: &Ctx, who: &Who) -> Result<Duration> {
    let t0 = Instant::now();
    let link =
        timeout(HANDSHAKE_TIMEOUT, open(ctx, who)).await.map_err(|_| anyhow!("handshake timed out"))??;
    let took = t0.elapsed();
    // A reset instead of a FIN: a storm of closes would otherwise leave tens of thousands of
    // TIME_WAIT sockets holding the source ports the next steps need.
    let _ = link.stream.set_zero_linger();
    drop(link);
    Ok(took)
}
