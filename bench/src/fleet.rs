//! The coordinator's side of the workers: spawns `goim-bench worker` processes, splits the
//! connections among them, and sums what they report.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::histogram::Histogram;
use crate::processes::Workers;
use crate::protocol::Protocol;
use crate::worker::{Command, Reply, Report, Spec};

/// Connections one worker holds at most: well under the 20,000 open files a process may have.
pub const PER_WORKER: u64 = 12_000;
/// Source addresses per worker; connections rotate over them.
const SOURCES: u8 = 32;

pub struct Fleet {
    workers: Workers,
}

/// Everything the workers reported, summed.
#[derive(Debug, Default)]
pub struct Totals {
    pub opening: u64,
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub heartbeats: u64,
    pub received: u64,
    pub steps: BTreeMap<u32, (u64, Histogram)>,
    pub storms: BTreeMap<u32, StormTotals>,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct StormTotals {
    pub ok: u64,
    pub failed: u64,
    pub done: bool,
    pub latency: Histogram,
}

impl Totals {
    fn add(&mut self, r: &Report) {
        self.opening += r.opening;
        self.connected += r.connected;
        self.failed += r.failed;
        self.dropped += r.dropped;
        self.heartbeats += r.heartbeats;
        self.received += r.received;
        for (k, s) in &r.steps {
            let e = self.steps.entry(*k).or_default();
            e.0 += s.received;
            e.1.merge(&Histogram::from_sparse(&s.latency));
        }
        for (k, s) in &r.storms {
            let e = self.storms.entry(*k).or_insert_with(|| StormTotals { done: true, ..Default::default() });
            e.ok += s.ok;
            e.failed += s.failed;
            e.done &= s.done;
            e.latency.merge(&Histogram::from_sparse(&s.latency));
        }
        for (e, n) in &r.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
    }

    /// Handshakes neither finished nor failed yet.
    pub fn pending(&self) -> u64 {
        self.opening.saturating_sub(self.connected + self.failed + self.dropped)
    }

    pub fn step(&self, step: u32) -> (u64, Histogram) {
        self.steps.get(&step).cloned().unwrap_or_default()
    }

    /// The most frequent errors, for a progress line.
    pub fn top_errors(&self, n: usize) -> String {
        let mut v: Vec<_> = self.errors.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter().take(n).map(|(e, c)| format!("{c}× {e}")).collect::<Vec<_>>().join("; ")
    }
}

/// Workers needed for `connections`: at least two (one per core), each under [`PER_WORKER`].
pub fn workers_for(connections: u64) -> usize {
    (connections.div_ceil(PER_WORKER) as usize).max(2)
}

/// The source addresses of worker `id`: `127.1.<id>.1` to `127.1.<id>.32`.
fn sources(id: usize) -> Vec<Ipv4Addr> {
    (1..=SOURCES).map(|k| Ipv4Addr::new(127, 1, (id % 250) as u8, k)).collect()
}

impl Fleet {
    /// Starts `n` workers speaking `protocol` to `endpoints`.
    pub fn spawn(
        n: usize,
        protocol: Protocol,
        endpoints: &[SocketAddr],
        heartbeat: Duration,
    ) -> Result<Fleet> {
        let specs = (0..n).map(|id| Spec {
            id,
            protocol,
            endpoints: endpoints.to_vec(),
            sources: sources(id),
            heartbeat_ms: heartbeat.as_millis() as u64,
        });
        Ok(Fleet { workers: Workers::spawn("worker", "worker", &Command::Exit, specs)? })
    }

    /// The worker processes' ids (to read their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.pids()
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    async fn ask(&mut self, make: impl Fn(usize) -> Command) -> Result<Vec<Reply>> {
        self.workers.ask(make).await
    }

    /// Opens connections `0..n`, split evenly, connection `i` in room `i % rooms`.
    pub async fn open(&mut self, n: u64, rooms: u32, concurrency: usize) -> Result<()> {
        let w = self.workers.len() as u64;
        let per = concurrency.div_ceil(self.workers.len()).max(1);
        self.ask(|i| {
            let (i, w) = (i as u64, w);
            let first = n * i / w;
            Command::Open { first, count: n * (i + 1) / w - first, rooms, concurrency: per }
        })
        .await?;
        Ok(())
    }

    /// Starts a storm step: `rate` connects per second in total for `secs`, indexes from `first`.
    pub async fn storm(&mut self, step: u32, rate: f64, secs: f64, first: u64) -> Result<()> {
        let w = self.workers.len();
        let span = (rate * secs).ceil() as u64 + 1;
        self.ask(|i| Command::Storm { step, rate: rate / w as f64, secs, first: first + span * i as u64 })
            .await?;
        Ok(())
    }

    pub async fn totals(&mut self) -> Result<Totals> {
        let mut t = Totals::default();
        for r in self.ask(|_| Command::Snapshot).await? {
            match r {
                Reply::Report(r) => t.add(&r),
                Reply::Ok => bail!("worker answered a snapshot with ok"),
            }
        }
        Ok(t)
    }

    /// Closes every held connection.
    pub async fn close(&mut self) -> Result<()> {
        self.ask(|_| Command::Close).await?;
        Ok(())
    }
}
