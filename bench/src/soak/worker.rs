//! A soak worker process (`goim-bench soak-worker`): holds its range of clients on one thread and
//! answers the coordinator over stdio, one JSON line in ([`Command`]) and one out ([`Report`]).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::client::{self, Ctx, Slot};
pub use super::report::{Report, Stats};
use crate::protocol::Who;

/// The worker's first line: which clients it holds and where they connect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// Clients `first..first + count`; client `i` is user `i + 1` in room `i % rooms`.
    pub first: u64,
    pub count: u64,
    pub rooms: u32,
    /// Each comet's TCP and WebSocket address; client `i` uses comet `i % len`.
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub sources: Vec<Ipv4Addr>,
    pub heartbeat_ms: u64,
    /// Every `ws_every`-th client of a comet speaks WebSocket (0: none).
    pub ws_every: u64,
    /// Slow-client candidates (see [`super::slow_candidate`]).
    pub slow_every: u64,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Clients to reconnect and clients to stop reading for `pause_ms`; answered with a report.
    Tick {
        reconnect: Vec<u64>,
        pause: Vec<u64>,
        pause_ms: u64,
    },
    /// The end: the last number sent on each stream (rooms by room, users by the worker's own
    /// clients in order, broadcast); counts the tail lost by steady clients, stops every client
    /// and answers with the final report.
    Finish {
        rooms_last: Vec<u64>,
        users_last: Vec<u64>,
        broadcast_last: u64,
    },
    Exit,
}

/// Runs a soak worker: stdin carries the [`Spec`] and then commands; stdout the reports.
pub fn main() -> Result<()> {
    crate::limits::raise_open_files();
    let mut rx = crate::processes::stdin_lines();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let spec: Spec =
            serde_json::from_str(&rx.recv().await.context("no spec on stdin")?).context("bad soak spec")?;
        let ctx = Rc::new(Ctx {
            tcp: spec.tcp.clone(),
            ws: spec.ws.clone(),
            sources: spec.sources.clone(),
            heartbeat: Duration::from_millis(spec.heartbeat_ms.max(100)),
            stats: Default::default(),
            stop: CancellationToken::new(),
            gate: Semaphore::new(spec.concurrency.max(1)),
        });
        let comets = spec.tcp.len().max(1);
        let slots: Vec<Rc<Slot>> = (spec.first..spec.first + spec.count)
            .map(|index| {
                let who = Who { index, room: (index % u64::from(spec.rooms.max(1))) as u32 };
                let slow = super::slow_candidate(index, spec.slow_every);
                Rc::new(Slot::new(&ctx, who, comets, spec.ws_every, slow))
            })
            .collect();
        for s in &slots {
            tokio::task::spawn_local(client::life(ctx.clone(), s.clone()));
        }
        let slot = |i: u64| i.checked_sub(spec.first).and_then(|k| slots.get(k as usize));
        while let Some(line) = rx.recv().await {
            let cmd: Command = serde_json::from_str(&line).with_context(|| format!("bad command {line}"))?;
            let report = match cmd {
                Command::Tick { reconnect, pause, pause_ms } => {
                    for s in reconnect.into_iter().filter_map(slot) {
                        s.reconnect.set(true);
                        s.wake.notify_one();
                    }
                    for s in pause.into_iter().filter_map(slot) {
                        s.pause.set(Some(Duration::from_millis(pause_ms)));
                        s.wake.notify_one();
                    }
                    ctx.stats.borrow().report()
                }
                Command::Finish { rooms_last, users_last, broadcast_last } => {
                    let mut tail = [0u64; 3];
                    for (k, s) in slots.iter().enumerate() {
                        if !s.steady.get() {
                            continue;
                        }
                        let streams = s.streams.borrow();
                        let last = [
                            rooms_last.get(s.who.room as usize).copied().unwrap_or(0),
                            users_last.get(k).copied().unwrap_or(0),
                            broadcast_last,
                        ];
                        for (t, (seq, last)) in tail.iter_mut().zip(streams.iter().zip(last)) {
                            *t += seq.missing_up_to(last);
                        }
                    }
                    ctx.stop.cancel();
                    let mut stats = ctx.stats.borrow_mut();
                    stats.tail_lost = tail;
                    stats.report()
                }
                Command::Exit => break,
            };
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, &report)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        ctx.stop.cancel();
        Ok(())
    })
}
