//! A soak worker's counters, which are also its report to the coordinator: the clients count
//! into them ([`super::client`]), the worker sends them ([`super::worker`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sequence::Counts;

/// A worker's counters, cumulative.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub connected: u64,
    /// Successful connects (auth replied), first ones and re-connects.
    pub connects: u64,
    pub connect_failures: u64,
    /// Disconnects the client made on purpose (churn).
    pub reconnects: u64,
    pub unexpected: u64,
    pub slow_disconnects: u64,
    pub pauses: u64,
    /// Paused clients the server kept (not disconnected within the grace).
    pub slow_kept: u64,
    /// Room, user and broadcast counts.
    pub kinds: [Counts; 3],
    /// Gaps seen by slow clients before their expected disconnect (not counted as lost).
    pub slow_window_lost: u64,
    pub slow_window_delivered: u64,
    /// Numbers sent but never received by clients steady at the end, per kind.
    pub tail_lost: [u64; 3],
    pub fillers: u64,
    pub errors: BTreeMap<String, u64>,
}

/// The live counters are the report itself.
pub type Stats = Report;

impl Report {
    pub fn error(&mut self, e: impl ToString) {
        crate::stats::count_error(&mut self.errors, e);
    }

    pub fn connect_failed(&mut self, e: &anyhow::Error) {
        self.connect_failures += 1;
        self.error(format!("connect: {e:#}"));
    }

    pub fn add_counts(&mut self, c: &[Counts; 3]) {
        for (k, c) in self.kinds.iter_mut().zip(c) {
            k.add(c);
        }
    }

    pub(super) fn report(&self) -> Report {
        self.clone()
    }
}
