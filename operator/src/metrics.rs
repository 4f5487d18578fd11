//! The operator's own metrics (Prometheus text on the admin port's `/metrics`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub ready: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub clusters: Family<ReadyLabels, Gauge>,
    /// 1 while this replica holds the leader Lease and runs the controller, else 0.
    pub leader: Gauge,
    /// namespace/name to Ready, behind `clusters`.
    readiness: Mutex<BTreeMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            clusters: Family::default(),
            leader: Gauge::default(),
            readiness: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("goim_operator_reconciles", "Reconciles started", self.reconciles.clone());
        registry.register(
            "goim_operator_reconcile_errors",
            "Reconciles that failed, by error",
            self.errors.clone(),
        );
        registry.register(
            "goim_operator_reconcile_duration_seconds",
            "How long a reconcile took",
            self.duration.clone(),
        );
        registry.register(
            "goim_operator_clusters",
            "PushClusters by their Ready condition",
            self.clusters.clone(),
        );
        registry.register(
            "goim_operator_leader",
            "1 while this replica holds the leader lease and runs the controller",
            self.leader.clone(),
        );
    }

    /// Records a cluster's readiness (`None`: the cluster is gone).
    pub fn set_ready(&self, key: &str, ready: Option<bool>) {
        let mut r = self.readiness.lock().unwrap_or_else(|e| e.into_inner());
        match ready {
            Some(v) => r.insert(key.to_owned(), v),
            None => r.remove(key),
        };
        let ready = r.values().filter(|v| **v).count() as i64;
        let total = r.len() as i64;
        self.clusters.get_or_create(&ReadyLabels { ready: "true".into() }).set(ready);
        self.clusters.get_or_create(&ReadyLabels { ready: "false".into() }).set(total - ready);
    }
}
