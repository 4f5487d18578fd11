//! A worker process (`goim-bench worker`): holds a share of the connections on one thread and
//! answers the coordinator over stdio, one JSON line in ([`Command`]) and one out ([`Reply`]).
//!
//! Several workers run at once, so the load generator uses every core and stays under the
//! per-process open-file limit (20,000 here), and each dials from its own source addresses.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Protocol, Who};
pub use crate::stats::{Report, StepReport, StormReport};
use crate::subscriber::{self, Ctx};

/// What a worker is told when it starts (its first line).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub id: usize,
    pub protocol: Protocol,
    /// Where to connect; connection `i` uses endpoint `i % len`.
    pub endpoints: Vec<SocketAddr>,
    /// Source addresses to dial from; connection `i` uses source `i % len`.
    pub sources: Vec<Ipv4Addr>,
    pub heartbeat_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open and hold connections `first..first + count`; connection `i` joins room `i % rooms`.
    /// At most `concurrency` handshakes run at once.
    Open {
        first: u64,
        count: u64,
        rooms: u32,
        concurrency: usize,
    },
    /// Connect, authenticate and leave at `rate` per second for `secs` seconds, using connection
    /// indexes from `first` on; results go under `step`.
    Storm {
        step: u32,
        rate: f64,
        secs: f64,
        first: u64,
    },
    Snapshot,
    /// Close every held connection.
    Close,
    Exit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Report(Box<Report>),
}

/// Runs a worker: stdin carries the [`Spec`] and then commands; stdout the replies.
pub fn main() -> Result<()> {
    crate::limits::raise_open_files();
    let mut rx = crate::processes::stdin_lines();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let spec: Spec =
            serde_json::from_str(&rx.recv().await.context("no spec on stdin")?).context("bad worker spec")?;
        let ctx = Rc::new(Ctx {
            protocol: spec.protocol,
            endpoints: spec.endpoints,
            sources: spec.sources,
            heartbeat: Duration::from_millis(spec.heartbeat_ms.max(100)),
            stats: Default::default(),
            stop: CancellationToken::new(),
        });
        while let Some(line) = rx.recv().await {
            let cmd: Command = serde_json::from_str(&line).with_context(|| format!("bad command {line}"))?;
            let reply = match cmd {
                Command::Open { first, count, rooms, concurrency } => {
                    open(&ctx, first, count, rooms.max(1), concurrency.max(1));
                    Reply::Ok
                }
                Command::Storm { step, rate, secs, first } => {
                    tokio::task::spawn_local(storm(ctx.clone(), step, rate, secs, first));
                    Reply::Ok
                }
                Command::Snapshot => Reply::Report(Box::new(ctx.stats.borrow().report())),
                Command::Close => {
                    ctx.stop.cancel();
                    Reply::Ok
                }
                Command::Exit => break,
            };
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, &reply)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        ctx.stop.cancel();
        Ok(())
    })
}

fn open(ctx: &Rc<Ctx>, first: u64, count: u64, rooms: u32, concurrency: usize) {
    ctx.stats.borrow_mut().opening += count;
    let gate = Rc::new(Semaphore::new(concurrency));
    for index in first..first + count {
        let who = Who { index, room: (index % u64::from(rooms)) as u32 };
        if ctx.protocol == Protocol::GoimPoll {
            tokio::task::spawn_local(crate::long_poll::hold(ctx.clone(), who, gate.clone()));
        } else {
            tokio::task::spawn_local(subscriber::hold(ctx.clone(), who, gate.clone()));
        }
    }
}

/// Most storm attempts in flight at once per worker; past it the offered rate is not reached.
const STORM_IN_FLIGHT: usize = 4096;

async fn storm(ctx: Rc<Ctx>, step: u32, rate: f64, secs: f64, first: u64) {
    ctx.stats.borrow_mut().storms.entry(step).or_default();
    let gate = std::sync::Arc::new(Semaphore::new(STORM_IN_FLIGHT));
    let start = Instant::now();
    let total = (rate * secs).round() as u64;
    for k in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            let who = Who { index: first + k, room: 0 };
            let r = subscriber::visit(&ctx, &who).await;
            let mut stats = ctx.stats.borrow_mut();
            let mut errored = None;
            let entry = stats.storms.entry(step).or_default();
            match r {
                Ok(took) => {
                    entry.0 += 1;
                    entry.3.record(took.as_micros() as u64);
                }
                Err(e) => {
                    entry.1 += 1;
                    errored = Some(format!("storm: {e:#}"));
                }
            }
            if let Some(e) = errored {
                stats.error(e);
            }
            drop(permit);
        });
    }
    // Wait for the stragglers (bounded by the handshake timeout), then mark the step done.
    let _ = gate.acquire_many(STORM_IN_FLIGHT as u32).await;
    ctx.stats.borrow_mut().storms.entry(step).or_default().2 = true;
}
