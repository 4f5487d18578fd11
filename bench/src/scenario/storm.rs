//! Scenario e: a connection storm. Connect + authenticate + leave at rising rates, a few seconds
//! per step, until errors appear or the server falls behind the offered rate.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Progress, ms};
use crate::fleet::Fleet;
use crate::protocol::Protocol;
use crate::subscriber::HANDSHAKE_TIMEOUT;
use crate::target::{Kind, Options, Target};

pub struct Spec {
    pub kind: Kind,
    pub protocol: Protocol,
    /// Connects per second, one step each, rising.
    pub rates: Vec<f64>,
    pub step_secs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormStep {
    pub rate: f64,
    pub ok: u64,
    pub failed: u64,
    /// Successful connects + auths per second.
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl StormStep {
    fn clean(&self) -> bool {
        self.failed == 0 && self.achieved >= 0.9 * self.rate
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormSeries {
    pub target: Kind,
    pub protocol: Protocol,
    pub steps: Vec<StormStep>,
    pub errors: Vec<(String, u64)>,
}

impl StormSeries {
    /// The highest step without errors that kept up with its rate.
    pub fn best(&self) -> Option<&StormStep> {
        self.steps.iter().filter(|s| s.clean()).max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
}

/// Connection indexes each step may use, so steps never reuse a key.
const INDEXES_PER_STEP: u64 = 10_000_000;

pub async fn run(spec: &Spec, opts: &Options, progress: &Progress) -> Result<StormSeries> {
    let label = format!("storm-{}-{}", spec.kind.name(), spec.protocol.name());
    let target = Target::start(spec.kind, 1, opts, &label)?;
    let mut fleet =
        Fleet::spawn(2, spec.protocol, &target.endpoints(spec.protocol), Duration::from_secs(60))?;
    let mut series =
        StormSeries { target: spec.kind, protocol: spec.protocol, steps: Vec::new(), errors: Vec::new() };
    for (k, &rate) in spec.rates.iter().enumerate() {
        let step = k as u32 + 1;
        let t0 = Instant::now();
        fleet.storm(step, rate, spec.step_secs, u64::from(step) * INDEXES_PER_STEP).await?;
        let limit = Duration::from_secs_f64(spec.step_secs) + HANDSHAKE_TIMEOUT + Duration::from_secs(5);
        let s = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let t = fleet.totals().await?;
            let Some(st) = t.storms.get(&step) else { continue };
            if st.done {
                let secs = spec.step_secs.max(t0.elapsed().as_secs_f64().min(spec.step_secs * 2.0));
                break StormStep {
                    rate,
                    ok: st.ok,
                    failed: st.failed,
                    achieved: st.ok as f64 / secs,
                    p50_ms: ms(&st.latency, 0.5),
                    p99_ms: ms(&st.latency, 0.99),
                };
            }
            if t0.elapsed() > limit {
                bail!("{label}: step {step} did not finish within {limit:?}");
            }
        };
        progress.say(format!(
            "{label}: {rate} connects/s: {} ok ({:.0}/s), {} failed, connect+auth p50 {:.1} ms, p99 {:.1} ms",
            s.ok, s.achieved, s.failed, s.p50_ms, s.p99_ms
        ));
        let clean = s.clean();
        series.steps.push(s);
        if !clean {
            progress.say(format!("{label}: errors or falling behind at {rate}/s; not rising further"));
            break;
        }
    }
    let t = fleet.totals().await?;
    series.errors = t.errors.into_iter().collect();
    drop(fleet);
    drop(target);
    Ok(series)
}
