//! Which comets exist: the discovery port job (and, through the binary, logic) reads.
//!
//! goim finds comets through bilibili/discovery. goim-rs has two sources behind one trait:
//!
//! - [`StaticList`]: a fixed list from the config (one machine, or a fixed fleet).
//! - [`ProbedList`]: the same list with TCP probes (`probe_interval`), so a dead comet leaves it.
//! - `Kubernetes` (feature `kubernetes`): a watch on the EndpointSlices of the comet headless
//!   Service; a comet's server id is its pod name. See `endpoint_slice` for the mapping.
//!
//! Each source publishes the full list on a [`watch`] channel whenever it changes; consumers read
//! the latest value without blocking.

mod config;
#[cfg(feature = "kubernetes")]
mod endpoint_slice;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod probe;

use std::sync::Arc;

use tokio::sync::watch;

pub use config::{Config, Kind, KubernetesConfig, PROBE_FAILURES, StaticComet};
#[cfg(feature = "kubernetes")]
pub use endpoint_slice::comet_endpoints;
#[cfg(feature = "kubernetes")]
pub use kubernetes::{Error as KubernetesError, Kubernetes};
pub use probe::ProbedList;

/// One comet as discovery sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CometEndpoint {
    /// The comet's server id (its pod name on Kubernetes): what logic stores for its connections
    /// and what key pushes are addressed to.
    pub server_id: String,
    /// `host:port` of its gRPC server (`goim.comet.Comet`).
    pub addr: String,
    /// Ready for new clients (Kubernetes: `conditions.ready`). logic offers only these.
    pub ready: bool,
    /// Still serving its connections, draining included (Kubernetes: `conditions.serving`).
    /// job pushes to these.
    pub serving: bool,
    /// Shutting down (Kubernetes: `conditions.terminating`); it may still be serving.
    pub terminating: bool,
}

impl CometEndpoint {
    /// A comet that is up: ready, serving, not terminating (what a static list holds).
    pub fn up(server_id: impl Into<String>, addr: impl Into<String>) -> CometEndpoint {
        CometEndpoint {
            server_id: server_id.into(),
            addr: addr.into(),
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// The comets known at one moment, sorted by server id.
pub type Endpoints = Arc<Vec<CometEndpoint>>;

/// A source of comet lists.
///
/// Contract: [`watch`](Discovery::watch) returns a receiver whose current value is the latest
/// complete list (sorted by server id, one entry per server id) and which is notified on every
/// change. It never blocks. An empty list means no comet is known.
pub trait Discovery: Send + Sync + 'static {
    fn watch(&self) -> watch::Receiver<Endpoints>;
}

/// A fixed list of comets, all up.
#[derive(Debug)]
pub struct StaticList {
    /// Kept so receivers never see the channel closed; nothing sends after construction.
    tx: watch::Sender<Endpoints>,
}

impl StaticList {
    pub fn new(mut comets: Vec<CometEndpoint>) -> StaticList {
        comets.sort();
        comets.dedup_by(|a, b| a.server_id == b.server_id);
        StaticList { tx: watch::Sender::new(Arc::new(comets)) }
    }
}

impl Discovery for StaticList {
    fn watch(&self) -> watch::Receiver<Endpoints> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_list_is_sorted_deduplicated_and_up() {
        let list = StaticList::new(vec![
            CometEndpoint::up("b", "10.0.0.2:3109"),
            CometEndpoint::up("a", "10.0.0.1:3109"),
            CometEndpoint::up("a", "10.0.0.9:3109"),
        ]);
        let got = list.watch().borrow().clone();
        let ids: Vec<&str> = got.iter().map(|e| e.server_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(got.iter().all(|e| e.ready && e.serving && !e.terminating));
    }
}
