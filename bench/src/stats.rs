//! A load-generator worker's counters: its connections count into [`Stats`] (live histograms),
//! and the worker sends them to the coordinator as a [`Report`]. A leaf the connection drivers
//! (`subscriber`, `long_poll`) and the worker share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, Sparse};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepReport {
    pub received: u64,
    pub latency: Sparse,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StormReport {
    pub ok: u64,
    pub failed: u64,
    /// Every attempt of the step has finished.
    pub done: bool,
    pub latency: Sparse,
}

/// A worker's counters, cumulative since it started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Connections asked for by `open`.
    pub opening: u64,
    /// Authenticated and held now.
    pub connected: u64,
    /// Failed to connect or authenticate.
    pub failed: u64,
    /// Held, then ended by the server or an error.
    pub dropped: u64,
    pub heartbeats: u64,
    pub received: u64,
    pub steps: BTreeMap<u32, StepReport>,
    pub storms: BTreeMap<u32, StormReport>,
    /// Distinct error messages (at most [`MAX_ERRORS`]) and how often each was seen.
    pub errors: BTreeMap<String, u64>,
}

/// Externally tagged (`"ok"`, `{"report": {...}}`): an internally tagged enum would buffer the
/// report and lose its integer map keys.
const MAX_ERRORS: usize = 20;

/// Counts one more `e` in `errors`, which keeps at most [`MAX_ERRORS`] distinct messages (a
/// storm of distinct ones must not grow a worker's report without bound).
pub(crate) fn count_error(errors: &mut BTreeMap<String, u64>, e: impl ToString) {
    let e = e.to_string();
    if let Some(n) = errors.get_mut(&e) {
        *n += 1;
    } else if errors.len() < MAX_ERRORS {
        errors.insert(e, 1);
    }
}

/// [`Report`] with live histograms.
#[derive(Default)]
pub struct Stats {
    pub opening: u64,
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub heartbeats: u64,
    pub received: u64,
    pub(crate) steps: BTreeMap<u32, (u64, Histogram)>,
    pub(crate) storms: BTreeMap<u32, (u64, u64, bool, Histogram)>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn record(&mut self, step: u32, latency_us: u64) {
        self.received += 1;
        let (n, h) = self.steps.entry(step).or_default();
        *n += 1;
        h.record(latency_us);
    }

    pub fn error(&mut self, e: impl ToString) {
        count_error(&mut self.errors, e);
    }

    pub fn fail(&mut self, e: &anyhow::Error) {
        self.failed += 1;
        self.error(format!("{e:#}"));
    }

    pub(crate) fn report(&self) -> Report {
        Report {
            opening: self.opening,
            connected: self.connected,
            failed: self.failed,
            dropped: self.dropped,
            heartbeats: self.heartbeats,
            received: self.received,
            steps: self
                .steps
                .iter()
                .map(|(k, (n, h))| (*k, StepReport { received: *n, latency: h.to_sparse() }))
                .collect(),
            storms: self
                .storms
                .iter()
                .map(|(k, (ok, failed, done, h))| {
                    (*k, StormReport { ok: *ok, failed: *failed, done: *done, latency: h.to_sparse() })
                })
                .collect(),
            errors: self.errors.clone(),
        }
    }
}
