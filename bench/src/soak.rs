//! `goim-bench soak`: holds many connections against the distributed mode (goim-logic with the
//! Redis store and the Kafka queue, several goim-comet, one goim-job: real processes, started by
//! [`crate::target::start_tiers`]) for a long time under mixed traffic, and reports what went
//! wrong and how memory moved.
//!
//! - [`worker`], [`client`]: worker processes hold the clients (TCP and WebSocket, spread over
//!   the comets and rooms), check every numbered push ([`sequence`]) and reconnect after any end.
//! - [`pusher`]: numbered room, user and broadcast pushes through logic's HTTP API.
//! - The coordinator (here) ticks every [`TICK`]: tells workers which clients churn (reconnect
//!   on purpose) and which stop reading (slow), fills the slow ones' queues, samples each server
//!   process's RSS and writes a CSV row; at the end [`summary`] prints and plots it all.

mod client;
mod fleet;
mod pusher;
mod report;
mod sequence;
mod summary;

pub use summary::replot;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::target::{Backends, start_tiers};
use client::{BROADCAST, ROOM, SLOW_GRACE, USER};
use fleet::Fleet;
use summary::{Sample, Summary};
use worker::{Command, Spec};

/// Sampling and control period.
pub const TICK: Duration = Duration::from_secs(10);
/// Connections one worker holds at most: well under the 20,000 open files a process may have.
const PER_WORKER: u64 = 12_000;
/// How long the clients may take to connect at the start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// After the last push, how long deliveries may take before the tail is counted.
const DRAIN: Duration = Duration::from_secs(10);
/// Filler pushes per paused client, and their size: 6.25 MiB, past comet's default 1 MiB queue
/// and the kernel's socket buffers (a 2 MiB fill was absorbed by them).
const FILLERS: u32 = 200;
const FILLER_BYTES: usize = 32 * 1024;

#[derive(Clone, Debug)]
pub struct Plan {
    pub goim_bin: PathBuf,
    pub out: PathBuf,
    pub connections: u64,
    pub duration: Duration,
    pub comets: usize,
    pub rooms: u32,
    /// Pushes per second of each kind.
    pub room_rate: f64,
    pub user_rate: f64,
    pub broadcast_rate: f64,
    /// Fraction of the clients that reconnect on purpose every minute.
    pub churn: f64,
    /// Clients that stop reading, per minute, and for how long.
    pub slow_per_min: f64,
    pub pause: Duration,
    /// One client in `ws_every` (per comet) speaks WebSocket; one in `slow_every` may go slow.
    pub ws_every: u64,
    pub slow_every: u64,
    pub heartbeat: Duration,
    /// `scripts/services.sh`'s state directory: its redis.pid and kafka.pid are sampled too.
    pub services_dir: Option<PathBuf>,
}

/// Whether client `index` is one of the slow-client candidates (small receive buffer).
pub fn slow_candidate(index: u64, every: u64) -> bool {
    every > 0 && index % every == every / 2
}

/// xorshift64: the run's picks (churn, slow clients), reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn backends() -> Result<Backends> {
    let var = |k: &str| {
        std::env::var(k).with_context(|| {
            format!("{k} is not set: start Redis and Kafka with scripts/services.sh and eval its env (scripts/soak.sh does)")
        })
    };
    let redis_url = var("GOIM_TEST_REDIS_URL")?;
    let brokers = var("GOIM_TEST_KAFKA_BROKERS")?;
    Ok(Backends { redis_url, brokers, topic: format!("goim-soak-{}", std::process::id()) })
}

pub async fn run(plan: &Plan) -> Result<Summary> {
    if plan.connections == 0 || plan.comets == 0 {
        bail!("--connections and --comets must be at least 1");
    }
    std::fs::create_dir_all(&plan.out).with_context(|| format!("cannot create {}", plan.out.display()))?;
    let dir = plan.out.join("servers");
    std::fs::create_dir_all(&dir)?;
    eprintln!("soak: starting goim-logic, {} goim-comet, goim-job (logs in {})", plan.comets, dir.display());
    let tiers = start_tiers(&plan.goim_bin, &dir, &backends()?, plan.comets, "")?;
    let mut processes = tiers.processes();
    if let Some(d) = &plan.services_dir {
        for name in ["redis", "kafka"] {
            if let Some(pid) = std::fs::read_to_string(d.join(format!("{name}.pid")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                processes.push((name.to_string(), pid));
            }
        }
    }
    let spec = Spec {
        first: 0,
        count: plan.connections,
        rooms: plan.rooms.max(1),
        tcp: tiers.comets.iter().map(|c| c.tcp).collect(),
        ws: tiers.comets.iter().map(|c| c.ws).collect(),
        sources: Vec::new(),
        heartbeat_ms: plan.heartbeat.as_millis() as u64,
        ws_every: plan.ws_every,
        slow_every: plan.slow_every,
        concurrency: 256,
    };
    let workers = (plan.connections.div_ceil(PER_WORKER) as usize).max(2);
    let mut fleet = Fleet::spawn(workers, &spec)?;
    let idle = |_: u64, _: u64| Command::Tick { reconnect: Vec::new(), pause: Vec::new(), pause_ms: 0 };

    // Connect everyone before the clock starts.
    let t0 = Instant::now();
    loop {
        let t = fleet::total(&fleet.ask(idle).await?);
        eprintln!(
            "soak: {} of {} connected ({} connect failures)",
            t.connected, plan.connections, t.connect_failures
        );
        if t.connected >= plan.connections {
            break;
        }
        if t0.elapsed() > CONNECT_TIMEOUT {
            bail!(
                "only {} of {} connected after {CONNECT_TIMEOUT:?}: {}",
                t.connected,
                plan.connections,
                top(&t.errors)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let connect_secs = t0.elapsed().as_secs_f64();

    let sent = pusher::shared(spec.rooms, plan.connections);
    let stop = CancellationToken::new();
    let http = tiers.http;
    let mut pushers = tokio::task::JoinSet::new();
    for (kind, rate) in [(ROOM, plan.room_rate), (USER, plan.user_rate), (BROADCAST, plan.broadcast_rate)] {
        pushers.spawn(pusher::run(http, kind, rate, sent.clone(), stop.clone()));
    }
    let mut fillers = tokio::task::JoinSet::new();

    let mut csv = summary::Csv::create(&plan.out, &processes)?;
    let mut samples: Vec<Sample> = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Slow clients paused until, by index: not paused again before that.
    let mut paused: Vec<(u64, Instant)> = Vec::new();
    let mut slow_owed = 0.0;
    let start = Instant::now();
    // No churn or new pauses near the end, so every slow window is over before the tail check.
    let quiet = plan.pause + SLOW_GRACE + TICK;
    let ticks = plan.duration.as_secs().div_ceil(TICK.as_secs()).max(1);
    let mut last = (start, [0u64; 3], 0u64);
    for tick in 1..=ticks {
        tokio::time::sleep_until(start + TICK * tick as u32).await;
        let elapsed = start.elapsed();
        let active = elapsed + quiet < plan.duration;
        let mut reconnect = Vec::new();
        let mut pause = Vec::new();
        if active {
            let n = (plan.connections as f64 * plan.churn * TICK.as_secs_f64() / 60.0).round() as u64;
            reconnect = (0..n).map(|_| rng.below(plan.connections)).collect();
            slow_owed += plan.slow_per_min * TICK.as_secs_f64() / 60.0;
            let now = Instant::now();
            paused.retain(|(_, until)| *until > now);
            // Bounded: at most 100 draws per tick.
            for _ in 0..100 {
                if slow_owed < 1.0 {
                    break;
                }
                let i = rng.below(plan.connections);
                if slow_candidate(i, plan.slow_every) && !paused.iter().any(|(p, _)| *p == i) {
                    pause.push(i);
                    paused.push((i, now + plan.pause + SLOW_GRACE));
                    slow_owed -= 1.0;
                }
            }
            reconnect.retain(|i| !pause.contains(i) && !paused.iter().any(|(p, _)| p == i));
        }
        let mids: Vec<i64> = pause.iter().map(|i| *i as i64 + 1).collect();
        let pause_ms = plan.pause.as_millis() as u64;
        let t = fleet::total(
            &fleet
                .ask(|first, count| Command::Tick {
                    reconnect: reconnect
                        .iter()
                        .copied()
                        .filter(|i| (first..first + count).contains(i))
                        .collect(),
                    pause: pause.iter().copied().filter(|i| (first..first + count).contains(i)).collect(),
                    pause_ms,
                })
                .await?,
        );
        if !mids.is_empty() {
            fillers.spawn(pusher::fill(http, mids, FILLERS, FILLER_BYTES, sent.clone()));
        }
        let ok = sent.lock().unwrap_or_else(|e| e.into_inner()).ok;
        let delivered: u64 = t.kinds.iter().map(|c| c.delivered).sum();
        let secs = last.0.elapsed().as_secs_f64().max(0.001);
        let rates = [0, 1, 2].map(|k| (ok[k] - last.1[k]) as f64 / secs);
        let sample = Sample {
            secs: elapsed.as_secs_f64(),
            connected: t.connected,
            pushes: rates,
            delivered: (delivered - last.2) as f64 / secs,
            unexpected: t.unexpected,
            rss_mb: processes.iter().map(|(_, pid)| rss_mb(*pid)).collect(),
        };
        last = (Instant::now(), ok, delivered);
        csv.write(&sample)?;
        eprintln!("soak: {}", sample.line(&t));
        samples.push(sample);
    }
    stop.cancel();
    while pushers.join_next().await.is_some() {}
    fillers.abort_all();
    while fillers.join_next().await.is_some() {}
    tokio::time::sleep(DRAIN).await;
    let (rooms_last, users_last, broadcast_last) = {
        let s = sent.lock().unwrap_or_else(|e| e.into_inner());
        (s.rooms.clone(), s.users.clone(), s.broadcast)
    };
    let last_sample_rss: Vec<f64> = processes.iter().map(|(_, pid)| rss_mb(*pid)).collect();
    let fin = fleet::total(
        &fleet
            .ask(|first, count| Command::Finish {
                rooms_last: rooms_last.clone(),
                users_last: users_last[first as usize..(first + count) as usize].to_vec(),
                broadcast_last,
            })
            .await?,
    );
    let worker_pids = fleet.pids();
    drop(fleet);
    drop(tiers);
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
    let summary = Summary::new(
        plan,
        &processes,
        &samples,
        last_sample_rss,
        &fin,
        &sent,
        connect_secs,
        worker_pids.len(),
    );
    summary.write(&plan.out, &samples, &processes)?;
    Ok(summary)
}

fn rss_mb(pid: u32) -> f64 {
    crate::usage::rss(pid).map(|b| b as f64 / 1e6).unwrap_or(f64::NAN)
}

fn top(errors: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<_> = errors.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter().take(5).map(|(e, n)| format!("{n}× {e}")).collect::<Vec<_>>().join("; ")
}
