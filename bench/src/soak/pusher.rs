//! Numbered pushes through logic's HTTP API, steadily: to rooms (a sequence per room), to users
//! by mid (a sequence per user) and broadcasts (one sequence). Each push's body is a stamp
//! `t=<sent> s=<kind> i=<number>`; clients check the numbers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::client::{BROADCAST, FILLER, ROOM, USER};
use crate::http;
use crate::protocol::PUSH_OP;
use crate::stamp::Stamp;

/// Tries per number before it is given up (a gap the clients will count as lost).
const TRIES: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The last number sent on every stream, and what was sent per kind.
#[derive(Debug, Default)]
pub struct Sent {
    pub rooms: Vec<u64>,
    pub users: Vec<u64>,
    pub broadcast: u64,
    /// Pushes accepted by the API, per kind (room, user, broadcast).
    pub ok: [u64; 3],
    /// Numbers given up after [`TRIES`] failed requests, per kind.
    pub failed: [u64; 3],
    pub fillers: u64,
    pub last_error: Option<String>,
}

pub type Shared = Arc<Mutex<Sent>>;

pub fn shared(rooms: u32, users: u64) -> Shared {
    Arc::new(Mutex::new(Sent {
        rooms: vec![0; rooms as usize],
        users: vec![0; users as usize],
        ..Default::default()
    }))
}

/// One kept-alive connection to the push API, redialled after an error.
struct Api {
    addr: SocketAddr,
    conn: Option<http::Conn>,
}

impl Api {
    async fn post(&mut self, path: &str, body: &[u8]) -> Result<()> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr).await.with_context(|| format!("connect {}", self.addr))?;
            s.set_nodelay(true)?;
            self.conn = Some(http::Conn::new(s));
        }
        let Some(conn) = self.conn.as_mut() else { unreachable!("set above") };
        let r = timeout(REQUEST_TIMEOUT, conn.request("POST", path, body)).await;
        match r {
            Ok(Ok(resp)) if resp.status == 200 => Ok(()),
            Ok(Ok(resp)) => {
                self.conn = None;
                bail!("HTTP {}: {}", resp.status, String::from_utf8_lossy(&resp.body))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                bail!("push timed out after {REQUEST_TIMEOUT:?}")
            }
        }
    }
}

/// Pushes of one kind at `rate` per second until `stop`; open loop: push `k` is due at `k/rate`.
pub async fn run(addr: SocketAddr, kind: u32, rate: f64, sent: Shared, stop: CancellationToken) {
    if rate <= 0.0 {
        return;
    }
    let mut api = Api { addr, conn: None };
    let start = Instant::now();
    for k in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep_until(start + Duration::from_secs_f64(k as f64 / rate)) => {}
        }
        let (path, seq) = {
            let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
            match kind {
                ROOM => {
                    let room = (k % s.rooms.len().max(1) as u64) as usize;
                    s.rooms[room] += 1;
                    (format!("/goim/push/room?operation={PUSH_OP}&type=bench&room={room}"), s.rooms[room])
                }
                USER => {
                    let i = (k % s.users.len().max(1) as u64) as usize;
                    s.users[i] += 1;
                    (format!("/goim/push/mids?operation={PUSH_OP}&mids={}", i + 1), s.users[i])
                }
                _ => {
                    s.broadcast += 1;
                    (format!("/goim/push/all?operation={PUSH_OP}"), s.broadcast)
                }
            }
        };
        let body = Stamp::now(kind, seq).encode();
        let mut outcome = Ok(());
        for _ in 0..TRIES {
            outcome = api.post(&path, body.as_bytes()).await;
            if outcome.is_ok() {
                break;
            }
        }
        let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
        let at = (kind - 1) as usize;
        match outcome {
            Ok(()) => s.ok[at] += 1,
            Err(e) => {
                s.failed[at] += 1;
                s.last_error = Some(format!("{e:#}"));
            }
        }
    }
}

/// Fills the queues of paused clients: `count` pushes of `size` bytes to each of `mids`, so a
/// client that does not read backs up into comet and is disconnected as slow.
pub async fn fill(addr: SocketAddr, mids: Vec<i64>, count: u32, size: usize, sent: Shared) {
    let mut api = Api { addr, conn: None };
    for mid in mids {
        for i in 0..count {
            let mut body = Stamp::now(FILLER, u64::from(i)).encode().into_bytes();
            body.resize(size.max(body.len()), b'x');
            let path = format!("/goim/push/mids?operation={PUSH_OP}&mids={mid}");
            let r = api.post(&path, &body).await;
            let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
            match r {
                Ok(()) => s.fillers += 1,
                Err(e) => s.last_error = Some(format!("filler: {e:#}")),
            }
        }
    }
}

/// Stream kinds, for printing.
pub const KINDS: [(u32, &str); 3] = [(ROOM, "room"), (USER, "user"), (BROADCAST, "broadcast")];
