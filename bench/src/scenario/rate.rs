//! Scenarios b, c and d: pushes through the HTTP API at rising rates, to one room of N
//! subscribers (b), to random rooms of N/rooms subscribers each (c), or to random users (d).
//! Each step pushes at one rate for a fixed time, waits for the deliveries to drain, and
//! records delivered messages per second, push → receive latency and loss. Rising stops once a
//! step saturates (loss, a dropped subscriber, a push rate the API cannot reach, or seconds of
//! latency), so the run is bounded.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Progress, connect_all, ms};
use crate::fleet::{Fleet, workers_for};
use crate::protocol::Protocol;
use crate::publisher::{self, Plan, Push};
use crate::target::{Kind, Options, Target};
use crate::usage;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "rooms")]
pub enum Fanout {
    /// Every subscriber in one room.
    Room,
    /// Subscribers spread over this many rooms; each push goes to a random one.
    Rooms(u32),
    /// Each push goes to one random user (goim `/goim/push/mids`).
    Users,
}

impl Fanout {
    pub fn scenario(self) -> &'static str {
        match self {
            Fanout::Room => "room",
            Fanout::Rooms(_) => "rooms",
            Fanout::Users => "users",
        }
    }

    fn rooms(self) -> u32 {
        match self {
            Fanout::Rooms(n) => n.max(1),
            Fanout::Room | Fanout::Users => 1,
        }
    }
}

pub struct Spec {
    pub kind: Kind,
    pub protocol: Protocol,
    pub fanout: Fanout,
    pub subscribers: u64,
    /// Pushes per second, one step each, rising.
    pub rates: Vec<f64>,
    pub step_secs: f64,
    pub heartbeat: Duration,
    /// nginx worker processes (the other targets run one process here).
    pub nginx_workers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateStep {
    /// Pushes per second asked for.
    pub rate: f64,
    /// Pushes per second the API accepted.
    pub achieved: f64,
    pub pushes_ok: u64,
    pub pushes_failed: u64,
    pub expected: u64,
    pub received: u64,
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Subscribers the server dropped during the step.
    pub dropped: u64,
    /// Wall time of the step, pushing and draining.
    #[serde(default)]
    pub wall_secs: f64,
    /// CPU seconds the server used in that time.
    #[serde(default)]
    pub server_cpu_secs: f64,
    /// CPU seconds the load generator's workers used in that time.
    #[serde(default)]
    pub loadgen_cpu_secs: f64,
}

impl RateStep {
    pub fn server_cores(&self) -> f64 {
        self.server_cpu_secs / self.wall_secs.max(1e-3)
    }

    pub fn loadgen_cores(&self) -> f64 {
        self.loadgen_cpu_secs / self.wall_secs.max(1e-3)
    }

    /// Server CPU per delivered message, in microseconds.
    pub fn server_us_per_msg(&self) -> f64 {
        if self.received == 0 { 0.0 } else { self.server_cpu_secs * 1e6 / self.received as f64 }
    }
}

impl RateStep {
    pub fn loss(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { 1.0 - (self.received as f64 / self.expected as f64).min(1.0) }
    }

    /// No loss, every push accepted at (nearly) the asked rate, and p99 under `p99_limit_ms`.
    pub fn sustained(&self, p99_limit_ms: f64) -> bool {
        self.pushes_failed == 0
            && self.received >= self.expected
            && self.dropped == 0
            && self.achieved >= 0.95 * self.rate
            && self.p99_ms < p99_limit_ms
    }

    fn saturated(&self) -> bool {
        self.loss() > 0.01 || self.dropped > 0 || self.achieved < 0.5 * self.rate || self.p99_ms > 5000.0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateSeries {
    pub target: Kind,
    pub protocol: Protocol,
    pub fanout: Fanout,
    pub subscribers: u64,
    pub connected: u64,
    pub steps: Vec<RateStep>,
    /// Distinct errors seen (push and connection), with counts.
    pub errors: Vec<(String, u64)>,
}

impl RateSeries {
    /// The highest step sustained with p99 under `p99_limit_ms`.
    pub fn best(&self, p99_limit_ms: f64) -> Option<&RateStep> {
        self.steps.iter().filter(|s| s.sustained(p99_limit_ms)).max_by(|a, b| a.rate.total_cmp(&b.rate))
    }

    /// The step that delivered most with no loss, no push refused and no subscriber dropped,
    /// whatever its latency and even when the API could not take the offered rate (a peer
    /// whose publisher answers only after fanning out is limited that way).
    pub fn lossless(&self) -> Option<&RateStep> {
        self.steps
            .iter()
            .filter(|s| s.pushes_failed == 0 && s.dropped == 0 && s.received >= s.expected && s.received > 0)
            .max_by(|a, b| a.delivered_per_sec.total_cmp(&b.delivered_per_sec))
    }

    pub fn at_rate(&self, rate: f64) -> Option<&RateStep> {
        self.steps.iter().find(|s| (s.rate - rate).abs() < 1e-9)
    }
}

/// HTTP connections for a push rate: one per 20 pushes per second, at least two, so a server
/// whose API answers slowly while it fans out still gets the offered rate (each connection
/// waits for its answer before its next push).
fn pusher_conns(rate: f64) -> usize {
    ((rate / 20.0).ceil() as usize).clamp(2, 64)
}

/// A fixed scramble of push numbers over rooms or users (Knuth's multiplicative hash).
fn pick(seq: u64, n: u64) -> u64 {
    seq.wrapping_mul(2_654_435_761) % n.max(1)
}

pub async fn run(spec: &Spec, opts: &Options, progress: &Progress) -> Result<RateSeries> {
    let label = format!("{}-{}-{}", spec.fanout.scenario(), spec.kind.name(), spec.protocol.name());
    let workers = if spec.kind == Kind::Nchan { spec.nginx_workers } else { 1 };
    let target = Target::start(spec.kind, workers, opts, &label)?;
    let n = spec.subscribers;
    let rooms = spec.fanout.rooms();
    let mut fleet =
        Fleet::spawn(workers_for(n), spec.protocol, &target.endpoints(spec.protocol), spec.heartbeat)?;
    let (t, _) = connect_all(&mut fleet, n, rooms, progress, &label).await?;
    let connected = t.connected;
    // Let the server settle (goim: rooms reported online; nchan: subscriptions registered).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut series = RateSeries {
        target: spec.kind,
        protocol: spec.protocol,
        fanout: spec.fanout,
        subscribers: n,
        connected,
        steps: Vec::new(),
        errors: Vec::new(),
    };
    let mut push_errors = std::collections::BTreeMap::new();
    for (k, &rate) in spec.rates.iter().enumerate() {
        let step = k as u32 + 1;
        let make: publisher::MakePush = {
            let target_paths = Paths::new(&target, spec.fanout, n);
            Arc::new(move |seq| target_paths.push(seq))
        };
        let plan = Plan {
            addr: target.push_addr(),
            rate,
            secs: spec.step_secs,
            step,
            conns: pusher_conns(rate),
            make,
        };
        let (cpu0, lg0, t0) = (target.cpu_secs(), usage::cpu_secs_sum(&fleet.pids()), Instant::now());
        let outcome = publisher::run(plan).await;
        let (received, latency, dropped) = drain(&mut fleet, step, outcome.expected).await?;
        let wall_secs = t0.elapsed().as_secs_f64();
        let server_cpu_secs = target.cpu_secs() - cpu0;
        let loadgen_cpu_secs = usage::cpu_secs_sum(&fleet.pids()) - lg0;
        let s = RateStep {
            rate,
            achieved: outcome.achieved(),
            pushes_ok: outcome.ok,
            pushes_failed: outcome.failed,
            expected: outcome.expected,
            received,
            delivered_per_sec: received as f64 / outcome.elapsed.as_secs_f64().max(1e-3),
            p50_ms: ms(&latency, 0.5),
            p99_ms: ms(&latency, 0.99),
            p999_ms: ms(&latency, 0.999),
            max_ms: latency.max() as f64 / 1000.0,
            dropped: dropped.saturating_sub(series.steps.iter().map(|s| s.dropped).sum()),
            wall_secs,
            server_cpu_secs,
            loadgen_cpu_secs,
        };
        progress.say(format!(
            "{label}: {rate} push/s (got {:.0}): delivered {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms, \
             loss {:.3}%, push errors {}, dropped {}; server {:.2} cores ({:.2} µs/msg), load generator {:.2} cores",
            s.achieved,
            s.delivered_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.loss() * 100.0,
            s.pushes_failed,
            s.dropped,
            s.server_cores(),
            s.server_us_per_msg(),
            s.loadgen_cores()
        ));
        for (e, c) in outcome.errors {
            *push_errors.entry(e).or_insert(0) += c;
        }
        let saturated = s.saturated();
        series.steps.push(s);
        if saturated {
            progress.say(format!("{label}: saturated at {rate} push/s; not rising further"));
            break;
        }
    }
    let t = fleet.totals().await?;
    series.errors = push_errors.into_iter().chain(t.errors).collect();
    fleet.close().await?;
    drop(fleet);
    drop(target);
    Ok(series)
}

/// Waits until the step's deliveries are all in, or stop coming (one second without progress,
/// five at most). Returns received, their latency, and subscribers dropped so far.
async fn drain(
    fleet: &mut Fleet,
    step: u32,
    expected: u64,
) -> Result<(u64, crate::histogram::Histogram, u64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (0, Instant::now());
    loop {
        let t = fleet.totals().await?;
        let (received, latency) = t.step(step);
        if received >= expected || Instant::now() >= deadline || last.1.elapsed() >= Duration::from_secs(1) {
            return Ok((received, latency, t.dropped));
        }
        if received != last.0 {
            last = (received, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Push paths and expected recipients for a fanout.
struct Paths {
    fanout: Fanout,
    n: u64,
    rooms: Vec<String>,
    /// Subscribers in each room (connection `i` is in room `i % rooms`).
    members: Vec<u64>,
}

impl Paths {
    fn new(target: &Target, fanout: Fanout, n: u64) -> Paths {
        let r = fanout.rooms();
        let rooms = (0..r).map(|i| target.room_path(i)).collect();
        let members = (0..u64::from(r)).map(|i| n / u64::from(r) + u64::from(i < n % u64::from(r))).collect();
        Paths { fanout, n, rooms, members }
    }

    fn push(&self, seq: u64) -> Push {
        match self.fanout {
            Fanout::Room => Push { path: self.rooms[0].clone(), expected: self.members[0] },
            Fanout::Rooms(r) => {
                let room = pick(seq, u64::from(r)) as usize;
                Push { path: self.rooms[room].clone(), expected: self.members[room] }
            }
            Fanout::Users => {
                let mid = pick(seq, self.n) as i64 + 1;
                Push { path: Target::mid_path(mid), expected: 1 }
            }
        }
    }
}
