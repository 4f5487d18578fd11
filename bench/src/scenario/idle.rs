//! Scenario a: N authenticated connections holding with heartbeats. The server's resident
//! memory is read before connecting and after every connection has heartbeated at least once;
//! the growth divided by N is user-space memory per connection. Kernel socket memory (machine
//! wide, so both ends of each loopback connection) is reported apart.

use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Progress, connect_all};
use crate::fleet::{Fleet, workers_for};
use crate::protocol::Protocol;
use crate::target::{Kind, Options, Target};
use crate::usage;

/// Connections one server process is given at most (the per-process open-file limit is 20,000).
pub const PER_SERVER: u64 = 12_500;

pub struct Spec {
    pub kind: Kind,
    pub protocol: Protocol,
    pub n: u64,
    pub heartbeat: Duration,
    /// Least time to hold after the last connection before measuring.
    pub settle: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleResult {
    pub target: Kind,
    pub protocol: Protocol,
    pub n: u64,
    /// Server processes (nginx: workers).
    pub instances: usize,
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub connect_secs: f64,
    pub heartbeats: u64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub kernel_before: u64,
    pub kernel_after: u64,
    #[serde(default)]
    pub slab_before: u64,
    #[serde(default)]
    pub slab_after: u64,
}

impl IdleResult {
    /// Server RSS growth per held connection.
    pub fn user_bytes(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.connected.max(1) as f64
    }

    /// Kernel TCP buffer memory growth per connection (both ends).
    pub fn kernel_bytes(&self) -> f64 {
        self.kernel_after.saturating_sub(self.kernel_before) as f64 / self.connected.max(1) as f64
    }

    /// Kernel unreclaimable slab growth per connection (both ends; machine-wide, so noisy).
    pub fn slab_bytes(&self) -> f64 {
        self.slab_after.saturating_sub(self.slab_before) as f64 / self.connected.max(1) as f64
    }
}

pub async fn run(spec: &Spec, opts: &Options, progress: &Progress) -> Result<IdleResult> {
    let instances = spec.n.div_ceil(PER_SERVER) as usize;
    let label = format!("idle-{}-{}-{}", spec.kind.name(), spec.protocol.name(), spec.n);
    let target = Target::start(spec.kind, instances, opts, &label)?;
    // Let the server finish starting (allocator arenas, nginx workers) before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = target.rss()?;
    let kernel_before = usage::tcp_socket_bytes()?;
    let slab_before = usage::unreclaimable_slab_bytes()?;
    let mut fleet =
        Fleet::spawn(workers_for(spec.n), spec.protocol, &target.endpoints(spec.protocol), spec.heartbeat)?;
    let (_, connect_time) = connect_all(&mut fleet, spec.n, 1, progress, &label).await?;

    // Hold: every connection heartbeats at least once (they are spread over the interval).
    let hold = spec.heartbeat.max(spec.settle) + Duration::from_secs(1);
    let until = Instant::now() + hold;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2).min(until - Instant::now())).await;
        let t = fleet.totals().await?;
        progress.say(format!(
            "{label}: holding {} connections, {} heartbeats answered, rss {:.1} MB",
            t.connected,
            t.heartbeats,
            target.rss()? as f64 / 1e6
        ));
    }
    let t = fleet.totals().await?;
    let result = IdleResult {
        target: spec.kind,
        protocol: spec.protocol,
        n: spec.n,
        instances,
        connected: t.connected,
        failed: t.failed,
        dropped: t.dropped,
        connect_secs: connect_time.as_secs_f64(),
        heartbeats: t.heartbeats,
        rss_before,
        rss_after: target.rss()?,
        kernel_before,
        kernel_after: usage::tcp_socket_bytes()?,
        slab_before,
        slab_after: usage::unreclaimable_slab_bytes()?,
    };
    progress.say(format!(
        "{label}: {} held; per connection {:.0} B server user space, {:.0} B kernel socket buffers, \
         {:.0} B kernel slab (both ends)",
        result.connected,
        result.user_bytes(),
        result.kernel_bytes(),
        result.slab_bytes()
    ));
    fleet.close().await?;
    drop(fleet);
    drop(target);
    Ok(result)
}
