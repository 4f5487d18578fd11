//! The suite's clients: goim connections over TCP or WebSocket through the comet Service, each
//! authenticated with a JWT, reconnecting like an app does (after the op-6 hint of a drain, or
//! after a short random pause when the connection just ends) and, when asked, resuming from
//! the last room and user positions it saw. Every client keeps what it received: the numbers of
//! numbered room pushes (`n <number>`) in arrival order and the markers (`m <text>`).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use goim_api::{Frame, Op};
use goim_test_support::client::{Client, Transport};
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::push;

/// Where clients connect, and how they sign their tokens.
pub struct Dial {
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub jwt_secret: Vec<u8>,
}

/// One client.
#[derive(Clone, Debug)]
pub struct Spec {
    pub mid: i64,
    pub key: String,
    pub room: String,
    pub transport: Transport,
    pub resume: bool,
}

/// A stream position as the wire carries it: `(epoch, offset)`.
pub type Position = (u16, u32);

/// Which stream a pushed packet's header names (docs/recovery.md, "On the wire").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Room(Position),
    User(Position),
}

/// `ver = epoch × 2 + stream`, `seq` = the offset; `ver` 0 or 1: no position.
pub fn position(f: &Frame) -> Option<Stream> {
    let ver = u16::try_from(f.ver).ok()?;
    if ver < 2 {
        return None;
    }
    let p = (ver / 2, f.seq as u32);
    Some(if ver % 2 == 0 { Stream::Room(p) } else { Stream::User(p) })
}

/// The body of an op 18 for the positions seen.
pub fn recover_body(room: Option<Position>, user: Option<Position>) -> String {
    let mut v = serde_json::Map::new();
    for (name, p) in [("room", room), ("user", user)] {
        let (epoch, offset) = p.unwrap_or((0, 0));
        v.insert(name.into(), serde_json::json!({"epoch": epoch, "offset": offset}));
    }
    serde_json::Value::Object(v).to_string()
}

/// What an op-19 reply says about one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub position: Position,
    pub recovered: u64,
    pub complete: bool,
}

pub fn recover_reply(body: &[u8]) -> Result<BTreeMap<String, Recovered>> {
    let v: serde_json::Value = serde_json::from_slice(body).context("op 19 body is not JSON")?;
    let mut out = BTreeMap::new();
    for name in ["room", "user"] {
        let Some(s) = v.get(name) else { continue };
        let n = |k: &str| s.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        out.insert(
            name.to_owned(),
            Recovered {
                position: (n("epoch") as u16, n("offset") as u32),
                recovered: n("recovered"),
                complete: s.get("complete").and_then(|x| x.as_bool()).unwrap_or(false),
            },
        );
    }
    Ok(out)
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub numbers: Vec<u64>,
    pub markers: HashSet<String>,
    pub room: Option<Position>,
    pub user: Option<Position>,
    /// op-19 replies with the room or user stream incomplete.
    pub incomplete: u64,
    /// Pushes replayed to it (op 19's `recovered`, summed).
    pub recovered: u64,
    pub last_error: Option<String>,
}

impl Seen {
    fn take(&mut self, f: &Frame) {
        match position(f) {
            Some(Stream::Room(p)) => self.room = Some(p),
            Some(Stream::User(p)) => self.user = Some(p),
            None => {}
        }
        let Ok(text) = std::str::from_utf8(&f.body) else { return };
        if let Some(n) = text.strip_prefix("n ").and_then(|n| n.parse().ok()) {
            self.numbers.push(n);
        } else if let Some(m) = text.strip_prefix("m ") {
            self.markers.insert(m.to_owned());
        }
    }
}

pub struct Sub {
    pub spec: Spec,
    pub seen: Mutex<Seen>,
    /// Successful authentications.
    pub connects: AtomicU64,
    pub connected: AtomicBool,
    /// op 6 `drain` received.
    pub drained: AtomicU64,
}

/// How a session ended.
enum End {
    Stopped,
    /// op 6 with a reconnect hint.
    Told(Duration),
    Closed,
}

/// A set of clients, running until [`Fleet::stop`].
pub struct Fleet {
    pub subs: Vec<Arc<Sub>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts every client; at most 64 connect at once.
    pub fn start(dial: Arc<Dial>, specs: Vec<Spec>) -> Fleet {
        let stop = CancellationToken::new();
        let gate = Arc::new(Semaphore::new(64));
        let mut tasks = JoinSet::new();
        let subs: Vec<Arc<Sub>> = specs
            .into_iter()
            .map(|spec| {
                Arc::new(Sub {
                    spec,
                    seen: Mutex::new(Seen::default()),
                    connects: AtomicU64::new(0),
                    connected: AtomicBool::new(false),
                    drained: AtomicU64::new(0),
                })
            })
            .collect();
        for s in &subs {
            tasks.spawn(run(s.clone(), dial.clone(), stop.clone(), gate.clone()));
        }
        Fleet { subs, stop, tasks }
    }

    pub fn connected(&self) -> usize {
        self.subs.iter().filter(|s| s.connected.load(Ordering::Relaxed)).count()
    }

    /// Waits until every client is connected; fails with how many are not.
    pub async fn all_connected(&self, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.connected();
            if n == self.subs.len() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let err = self.subs.iter().find_map(|s| s.seen.lock().last_error.clone());
                bail!(
                    "{} of {} clients connected after {limit:?} (an error seen: {})",
                    n,
                    self.subs.len(),
                    err.unwrap_or_else(|| "none".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until each client `expect` picks has seen `marker`; returns those that have not.
    pub async fn saw(&self, marker: &str, limit: Duration, expect: impl Fn(&Spec) -> bool) -> Vec<usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let missing: Vec<usize> = (0..self.subs.len())
                .filter(|&i| expect(&self.subs[i].spec) && !self.subs[i].seen.lock().markers.contains(marker))
                .collect();
            if missing.is_empty() || tokio::time::Instant::now() > deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The clients that saw `marker`.
    pub fn who_saw(&self, marker: &str) -> Vec<usize> {
        (0..self.subs.len()).filter(|&i| self.subs[i].seen.lock().markers.contains(marker)).collect()
    }

    /// Stops every client and waits for them.
    pub async fn stop(mut self) -> Vec<Arc<Sub>> {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.subs
    }
}

async fn run(sub: Arc<Sub>, dial: Arc<Dial>, stop: CancellationToken, gate: Arc<Semaphore>) {
    loop {
        let end = tokio::select! {
            _ = stop.cancelled() => End::Stopped,
            r = session(&sub, &dial, &stop, &gate) => match r {
                Ok(end) => end,
                Err(e) => {
                    sub.seen.lock().last_error = Some(format!("{e:#}"));
                    End::Closed
                }
            },
        };
        sub.connected.store(false, Ordering::Relaxed);
        let pause = match end {
            End::Stopped => return,
            End::Told(d) => d,
            End::Closed => Duration::from_millis(rand::rng().random_range(100..1000)),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn session(sub: &Sub, dial: &Dial, stop: &CancellationToken, gate: &Semaphore) -> Result<End> {
    let spec = &sub.spec;
    let mut c = {
        let _permit = gate.acquire().await?;
        let addr = match spec.transport {
            Transport::Tcp => dial.tcp,
            Transport::Ws => dial.ws,
        };
        let mut c = tokio::time::timeout(Duration::from_secs(5), Client::connect(spec.transport, addr))
            .await
            .context("connect timed out")??;
        if spec.resume {
            let (room, user) = {
                let s = sub.seen.lock();
                (s.room, s.user)
            };
            let body = recover_body(room, user);
            c.send(&Frame { ver: 1, op: Op::Recover.code(), seq: 0, body: Bytes::from(body) }).await?;
        }
        let token = push::token(&dial.jwt_secret, spec.mid, &spec.key, &spec.room);
        let reply = c.auth(&token).await?;
        if reply.op != Op::AuthReply.code() {
            bail!("auth refused: op {} {}", reply.op, String::from_utf8_lossy(&reply.body));
        }
        c
    };
    sub.connects.fetch_add(1, Ordering::Relaxed);
    sub.connected.store(true, Ordering::Relaxed);
    let mut beat = tokio::time::interval(Duration::from_secs(20));
    beat.tick().await;
    loop {
        enum Ev {
            Stop,
            Beat,
            Got(Result<std::result::Result<Frame, goim_test_support::client::Closed>>),
        }
        let ev = tokio::select! {
            _ = stop.cancelled() => Ev::Stop,
            _ = beat.tick() => Ev::Beat,
            r = c.recv_or_close() => Ev::Got(r),
        };
        match ev {
            Ev::Stop => return Ok(End::Stopped),
            Ev::Beat => {
                let seq = c.next_seq();
                c.send(&Frame { ver: 1, op: Op::Heartbeat.code(), seq, body: Bytes::new() }).await?;
            }
            Ev::Got(Err(e)) => return Err(e),
            Ev::Got(Ok(Err(_closed))) => return Ok(End::Closed),
            Ev::Got(Ok(Ok(f))) => {
                if let Some(end) = take(sub, f)? {
                    return Ok(end);
                }
            }
        }
    }
}

/// Handles one packet; `Some` when it ends the session.
fn take(sub: &Sub, f: Frame) -> Result<Option<End>> {
    if f.op == Op::Raw.code() {
        for inner in goim_api::frame::split_packets(f.body) {
            if let Some(end) = take(sub, inner?)? {
                return Ok(Some(end));
            }
        }
        return Ok(None);
    }
    if f.op == Op::DisconnectReply.code() {
        let v: serde_json::Value = serde_json::from_slice(&f.body).unwrap_or_default();
        if v["reason"] == "drain" {
            sub.drained.fetch_add(1, Ordering::Relaxed);
        }
        let ms = v["reconnect_after_ms"].as_u64().unwrap_or(500);
        return Ok(Some(End::Told(Duration::from_millis(ms))));
    }
    let mut seen = sub.seen.lock();
    if f.op == Op::RecoverReply.code() {
        for (name, r) in recover_reply(&f.body)? {
            if !r.complete {
                seen.incomplete += 1;
            }
            seen.recovered += r.recovered;
            // With nothing to replay the reply is the position; otherwise the replayed
            // pushes carry it.
            if r.recovered == 0 {
                match name.as_str() {
                    "room" => seen.room = Some(r.position),
                    _ => seen.user = Some(r.position),
                }
            }
        }
    } else if f.op == push::OP {
        seen.take(&f);
    }
    Ok(None)
}

/// Per client, against the numbers pushed to its room: how many it never got, how many it got
/// more than once, and how many arrived after a higher one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub expected: usize,
    pub missing: usize,
    pub duplicated: usize,
    pub reordered: usize,
}

pub fn account(expected: &[u64], got: &[u64]) -> Account {
    let want: HashSet<u64> = expected.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut a = Account { expected: want.len(), ..Default::default() };
    let mut high = 0;
    for &n in got {
        if !seen.insert(n) {
            a.duplicated += 1;
        }
        if n < high {
            a.reordered += 1;
        }
        high = high.max(n);
    }
    a.missing = want.iter().filter(|n| !seen.contains(n)).count();
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ver: i16, seq: i32, body: &'static str) -> Frame {
        Frame { ver, op: push::OP, seq, body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn positions_come_from_ver_and_seq() {
        assert_eq!(position(&frame(1, 0, "")), None);
        assert_eq!(position(&frame(10, 7, "")), Some(Stream::Room((5, 7))));
        assert_eq!(position(&frame(11, 3, "")), Some(Stream::User((5, 3))));
        assert_eq!(position(&frame(-2, 3, "")), None);
    }

    #[test]
    fn numbers_markers_and_positions_are_kept() {
        let mut s = Seen::default();
        s.take(&frame(10, 1, "n 1"));
        s.take(&frame(10, 2, "n 2"));
        s.take(&frame(1, 0, "m hello"));
        s.take(&frame(11, 9, "something else"));
        assert_eq!(s.numbers, [1, 2]);
        assert!(s.markers.contains("hello"));
        assert_eq!(s.room, Some((5, 2)));
        assert_eq!(s.user, Some((5, 9)));
    }

    #[test]
    fn the_recover_body_and_reply_follow_docs_recovery() {
        let b: serde_json::Value = serde_json::from_str(&recover_body(Some((3, 41)), None)).unwrap();
        assert_eq!(
            b,
            serde_json::json!({"room": {"epoch": 3, "offset": 41}, "user": {"epoch": 0, "offset": 0}})
        );
        let r = recover_reply(
            br#"{"room": {"epoch": 3, "offset": 50, "recovered": 9, "complete": true},
                 "user": {"epoch": 2, "offset": 1, "recovered": 0, "complete": false}}"#,
        )
        .unwrap();
        assert_eq!(r["room"], Recovered { position: (3, 50), recovered: 9, complete: true });
        assert!(!r["user"].complete);
        assert!(recover_reply(b"not json").is_err());
    }

    #[test]
    fn the_account_counts_missing_duplicated_and_reordered_apart() {
        assert_eq!(account(&[1, 2, 3], &[1, 2, 3]), Account { expected: 3, ..Default::default() });
        let a = account(&[1, 2, 3, 4, 5], &[1, 3, 2, 3, 5]);
        assert_eq!(a, Account { expected: 5, missing: 1, duplicated: 1, reordered: 1 });
    }
}
