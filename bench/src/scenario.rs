//! The scenarios, each against a freshly started target:
//!
//! - [`idle`] (a): N authenticated connections holding with heartbeats; server memory per
//!   connection and kernel socket memory.
//! - [`rate`] (b, c, d): pushes at rising rates to one room, to many rooms, or to single users;
//!   delivered messages per second, push → receive latency, loss.
//! - [`storm`] (e): connects + auths per second at rising rates until errors appear.

pub mod idle;
pub mod rate;
pub mod storm;

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

use crate::fleet::{Fleet, Totals};

/// Progress lines, prefixed with the time since the run started.
#[derive(Clone, Copy)]
pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { start: Instant::now() }
    }

    pub fn say(&self, line: impl AsRef<str>) {
        eprintln!("[{:7.1}s] {}", self.start.elapsed().as_secs_f64(), line.as_ref());
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

/// Handshakes each worker process runs at once while connecting.
pub const CONNECT_CONCURRENCY: usize = 512;

/// Opens `n` connections over the fleet and waits until each has connected or failed, printing
/// progress every second. Returns the totals and how long it took.
pub async fn connect_all(
    fleet: &mut Fleet,
    n: u64,
    rooms: u32,
    progress: &Progress,
    label: &str,
) -> Result<(Totals, Duration)> {
    let t0 = Instant::now();
    fleet.open(n, rooms, CONNECT_CONCURRENCY).await?;
    // Generous: a few hundred handshakes per second is slow, but must not hang the run.
    let limit = Duration::from_secs(60 + n / 200);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = fleet.totals().await?;
        let done = t.pending() == 0;
        if done || t0.elapsed().as_secs().is_multiple_of(2) {
            progress.say(format!(
                "{label}: connected {}/{n}, failed {}{}",
                t.connected,
                t.failed,
                if t.errors.is_empty() { String::new() } else { format!(" ({})", t.top_errors(2)) }
            ));
        }
        if done {
            return Ok((t, t0.elapsed()));
        }
        if t0.elapsed() > limit {
            bail!("{label}: {} connections still handshaking after {limit:?}", t.pending());
        }
    }
}

/// `q`-quantile of a histogram of microseconds, in milliseconds.
pub fn ms(h: &crate::histogram::Histogram, q: f64) -> f64 {
    h.quantile(q) as f64 / 1000.0
}
