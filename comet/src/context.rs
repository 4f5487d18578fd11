//! The context every connection task shares with the rest of comet: the configuration, the hub,
//! the logic port, the metrics, and what shutdown and the drain signal. Transport-neutral: what
//! only the HTTP port needs (long-poll sessions, the demo assets) lives with it, in `front`.
//!
//! The layers above use it and never the other way round: `session` (the steps of a session),
//! `connection` (the socket driver), the transports, `listen` (the accept loops) and the `Comet`
//! facade.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::config::Config;
use crate::drain::Drain;
use crate::hub::Hub;
use crate::logic::Logic;
use crate::metrics::Metrics;

/// What a connection task shares with the rest of comet (goim's `*Server`, less its
/// transports).
pub struct Context {
    pub config: Config,
    pub hub: Hub,
    pub logic: Arc<dyn Logic>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when comet stops; accept loops and handshakes watch it. `Comet::stop` cancels it.
    pub shutdown: CancellationToken,
    /// Every task comet spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per connection held; accept waits for one (`max_connections`). The accept
    /// loops take the permits, and each connection's task drops its own when it ends.
    pub limit: Arc<Semaphore>,
    /// Per-address limits, the auth rate and the auth requests in flight (`[comet.admission]`).
    pub admission: Admission,
    /// The drain (preStop or SIGTERM): started once, awaited by every caller of `Comet::drain`.
    pub drain: Drain,
    /// The id of the next admitted connection; see [`Context::next_id`].
    next_id: AtomicU64,
}

impl Context {
    /// `config` must have passed [`Config::validate`].
    pub fn new(config: Config, logic: Arc<dyn Logic>, metrics: Arc<Metrics>) -> Context {
        Context {
            hub: Hub::new(config.buckets),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            admission: Admission::new(&config.admission),
            config,
            logic,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            drain: Drain::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh connection id, unique in this process (ids start at 1).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
