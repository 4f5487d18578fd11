//! The coordinator's side of the soak workers: spawns `goim-bench soak-worker` processes, each
//! with a contiguous range of clients, and sums their reports.

use std::net::Ipv4Addr;

use anyhow::Result;

use super::worker::{Command, Report, Spec};
use crate::processes::Workers;

/// Source addresses per worker.
const SOURCES: u8 = 32;

pub struct Fleet {
    workers: Workers,
    /// Each worker's clients: `(first, count)`.
    ranges: Vec<(u64, u64)>,
}

impl Fleet {
    /// Starts `n` workers sharing `spec`'s clients `0..spec.count`; worker `id` dials from
    /// `127.2.<id>.1` to `127.2.<id>.32`.
    pub fn spawn(n: usize, spec: &Spec) -> Result<Fleet> {
        let n = n.max(1) as u64;
        let ranges: Vec<(u64, u64)> = (0..n)
            .map(|id| {
                let first = spec.count * id / n;
                (first, spec.count * (id + 1) / n - first)
            })
            .collect();
        let specs = ranges.iter().enumerate().map(|(id, &(first, count))| {
            let sources = (1..=SOURCES).map(|k| Ipv4Addr::new(127, 2, (id % 250) as u8, k)).collect();
            Spec { first, count, sources, ..spec.clone() }
        });
        let workers = Workers::spawn("soak-worker", "soak worker", &Command::Exit, specs)?;
        Ok(Fleet { workers, ranges })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.workers.pids()
    }

    /// Sends each worker its command (given its client range) and returns their reports.
    pub async fn ask(&mut self, make: impl Fn(u64, u64) -> Command) -> Result<Vec<Report>> {
        let ranges = &self.ranges;
        self.workers.ask(|i| make(ranges[i].0, ranges[i].1)).await
    }
}

/// Sums the workers' reports.
pub fn total(reports: &[Report]) -> Report {
    let mut t = Report::default();
    for r in reports {
        t.connected += r.connected;
        t.connects += r.connects;
        t.connect_failures += r.connect_failures;
        t.reconnects += r.reconnects;
        t.unexpected += r.unexpected;
        t.slow_disconnects += r.slow_disconnects;
        t.pauses += r.pauses;
        t.slow_kept += r.slow_kept;
        for (a, b) in t.kinds.iter_mut().zip(&r.kinds) {
            a.add(b);
        }
        t.slow_window_lost += r.slow_window_lost;
        t.slow_window_delivered += r.slow_window_delivered;
        for (a, b) in t.tail_lost.iter_mut().zip(r.tail_lost) {
            *a += b;
        }
        t.fillers += r.fillers;
        for (e, n) in &r.errors {
            *t.errors.entry(e.clone()).or_default() += n;
        }
    }
    t
}
