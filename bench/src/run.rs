//! A benchmark run: which scenarios against which targets, in what order, and the checks the
//! smoke run applies. Results are saved after every scenario, so a run stopped halfway still
//! leaves what it measured.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;
use crate::report::{self, Machine, Results};
use crate::scenario::rate::Fanout;
use crate::scenario::{Progress, idle, rate, storm};
use crate::target::{Kind, Options};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// a: idle authenticated connections; memory per connection.
    Idle,
    /// b: room broadcast to N subscribers at rising push rates.
    Room,
    /// c: the same subscribers spread over many rooms.
    Rooms,
    /// d: pushes to random users at rising rates.
    Users,
    /// e: connects + auths per second until errors appear.
    Storm,
}

pub struct Plan {
    pub targets: Vec<Kind>,
    pub scenarios: Vec<Scenario>,
    /// The protocols goim-rs is measured over; the first is the main one (compared with the
    /// peers), the others run at the smallest size only.
    pub goim_protocols: Vec<Protocol>,
    pub idle_sizes: Vec<u64>,
    pub subscribers: u64,
    pub room_rates: Vec<f64>,
    pub rooms: u32,
    pub rooms_rates: Vec<f64>,
    pub user_rates: Vec<f64>,
    pub storm_rates: Vec<f64>,
    pub step_secs: f64,
    pub storm_secs: f64,
    pub heartbeat: Duration,
    /// Least hold after the last idle connection before memory is read.
    pub settle: Duration,
    pub nginx_workers: usize,
    pub out: PathBuf,
    pub options: Options,
    pub smoke: bool,
    pub command: String,
}

pub async fn run(plan: &Plan) -> Result<Results> {
    std::fs::create_dir_all(&plan.out).with_context(|| format!("cannot create {}", plan.out.display()))?;
    let progress = Progress::new();
    let mut results = Results::new(Machine::probe(&plan.options), plan.command.clone(), plan.smoke);
    progress.say(format!("machine: {}", results.machine.summary()));
    for &scenario in &plan.scenarios {
        match scenario {
            Scenario::Idle => run_idle(plan, &progress, &mut results).await,
            Scenario::Room => run_rates(plan, &progress, &mut results, Fanout::Room).await,
            Scenario::Rooms => run_rates(plan, &progress, &mut results, Fanout::Rooms(plan.rooms)).await,
            Scenario::Users => run_rates(plan, &progress, &mut results, Fanout::Users).await,
            Scenario::Storm => run_storm(plan, &progress, &mut results).await,
        }
        results.save(&plan.out)?;
    }
    results.finished_unix = crate::stamp::unix_nanos() / 1_000_000_000;
    results.save(&plan.out)?;
    report::write(&results, &plan.out)?;
    progress.say(format!("report: {}", plan.out.join("report.md").display()));
    Ok(results)
}

/// The protocols `kind` is measured over; `main_only` keeps the one compared with the peers.
fn protocols(plan: &Plan, kind: Kind, main_only: bool) -> Vec<Protocol> {
    match kind {
        Kind::Goim if main_only => plan.goim_protocols.iter().take(1).copied().collect(),
        Kind::Goim => plan.goim_protocols.clone(),
        _ => vec![kind.websocket()],
    }
}

async fn run_idle(plan: &Plan, progress: &Progress, results: &mut Results) {
    let smallest = plan.idle_sizes.iter().copied().min().unwrap_or(0);
    // The kafka form of goim-rs holds connections in the same comet; it is measured for latency.
    // Positions cost nothing on an idle connection; the positions-off baselines are for pushes.
    // The floor holds connections in no way worth measuring.
    for &kind in plan.targets.iter().filter(|k| !k.is_distributed() && k.positions() && **k != Kind::Floor) {
        for (i, protocol) in protocols(plan, kind, false).into_iter().enumerate() {
            for &n in &plan.idle_sizes {
                if i > 0 && n != smallest {
                    continue;
                }
                let spec = idle::Spec {
                    kind,
                    protocol,
                    n,
                    heartbeat: plan.heartbeat,
                    settle: Duration::from_secs(3),
                };
                match idle::run(&spec, &plan.options, progress).await {
                    Ok(r) => results.idle.push(r),
                    Err(e) => results
                        .fail(progress, format!("idle {} {} n={n}: {e:#}", kind.name(), protocol.name())),
                }
            }
        }
    }
}

async fn run_rates(plan: &Plan, progress: &Progress, results: &mut Results, fanout: Fanout) {
    let (rates, targets): (&[f64], Vec<Kind>) = match fanout {
        Fanout::Room => (&plan.room_rates, plan.targets.clone()),
        // Many rooms and user pushes are goim-rs's own scenarios (issue: peers run a and b).
        Fanout::Rooms(_) => (&plan.rooms_rates, vec![Kind::Goim]),
        Fanout::Users => (&plan.user_rates, vec![Kind::Goim]),
    };
    if !plan.targets.contains(&Kind::Goim) && fanout != Fanout::Room {
        return;
    }
    for kind in targets {
        for protocol in protocols(plan, kind, fanout != Fanout::Room) {
            let spec = rate::Spec {
                kind,
                protocol,
                fanout,
                subscribers: plan.subscribers,
                rates: rates.to_vec(),
                step_secs: plan.step_secs,
                heartbeat: plan.heartbeat,
                nginx_workers: plan.nginx_workers,
            };
            match rate::run(&spec, &plan.options, progress).await {
                Ok(s) => results.rates.push(s),
                Err(e) => results.fail(
                    progress,
                    format!("{} {} {}: {e:#}", fanout.scenario(), kind.name(), protocol.name()),
                ),
            }
        }
    }
}

async fn run_storm(plan: &Plan, progress: &Progress, results: &mut Results) {
    if !plan.targets.contains(&Kind::Goim) {
        return;
    }
    // Long-poll sessions outlive a storm's connections (they expire by heartbeat), so a storm
    // runs over the socket transports.
    for protocol in plan.goim_protocols.iter().copied().filter(|p| *p != Protocol::GoimPoll) {
        let spec = storm::Spec {
            kind: Kind::Goim,
            protocol,
            rates: plan.storm_rates.clone(),
            step_secs: plan.storm_secs,
        };
        match storm::run(&spec, &plan.options, progress).await {
            Ok(s) => results.storms.push(s),
            Err(e) => results.fail(progress, format!("storm {}: {e:#}", protocol.name())),
        }
    }
}

/// What makes a smoke run fail: anything that says the tool or the server is broken, not slow.
pub fn smoke_problems(r: &Results) -> Vec<String> {
    let mut p: Vec<String> = r.failures.clone();
    for i in &r.idle {
        let name = format!("idle {} {}", i.target.name(), i.protocol.name());
        if i.connected < i.n || i.failed > 0 || i.dropped > 0 {
            p.push(format!(
                "{name}: {} of {} held, {} failed, {} dropped",
                i.connected, i.n, i.failed, i.dropped
            ));
        }
        if i.heartbeats == 0 {
            p.push(format!("{name}: no heartbeat was answered"));
        }
    }
    for s in &r.rates {
        let name = format!("{} {} {}", s.fanout.scenario(), s.target.name(), s.protocol.name());
        match s.steps.first() {
            None => p.push(format!("{name}: no step ran")),
            Some(first) => {
                if first.received == 0 || first.received < first.expected {
                    p.push(format!("{name}: first step received {} of {}", first.received, first.expected));
                }
                if first.pushes_failed > 0 {
                    p.push(format!("{name}: {} pushes failed: {:?}", first.pushes_failed, s.errors));
                }
            }
        }
        if s.connected < s.subscribers {
            p.push(format!("{name}: {} of {} subscribers connected", s.connected, s.subscribers));
        }
    }
    for s in &r.storms {
        let name = format!("storm {}", s.protocol.name());
        match s.steps.first() {
            Some(first) if first.failed == 0 && first.ok > 0 => {}
            Some(first) => {
                p.push(format!("{name}: first step {} ok, {} failed: {:?}", first.ok, first.failed, s.errors))
            }
            None => p.push(format!("{name}: no step ran")),
        }
    }
    p
}
