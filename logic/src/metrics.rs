//! logic's Prometheus counters and gauges. The admin server that serves `/metrics` lives in the binary; it
//! calls [`Metrics::register`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    /// `keys`, `mids`, `room`, `all`.
    kind: &'static str,
    /// `ok`, `bad_request`, `queue_error`, `store_error`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// `keys`, `room`, `broadcast`: the kind of the published `PushMsg`.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    /// The store method that failed.
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// `jwks_file`, `jwks_url`, `push_token_file`.
    source: &'static str,
    /// `ok`, `failed`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    /// JWT keys: `single`, `jwks_file`, `jwks_url`; push tokens: `config`, `file`.
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    /// `room`, `user`.
    stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecoveryLabels {
    /// `room`, `user`.
    stream: &'static str,
    /// `complete`, `incomplete`.
    result: &'static str,
}

/// Counters shared by every clone (each is an `Arc` inside).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    push_requests: Family<PushLabels, Counter>,
    pushes_published: Family<KindLabel, Counter>,
    publish_failures: Family<ReasonLabel, Counter>,
    connects_accepted: Counter,
    connects_rejected: Family<ReasonLabel, Counter>,
    store_errors: Family<OperationLabel, Counter>,
    uplinks: Counter,
    routes_dropped: Counter,
    comets_swept: Counter,
    key_reloads: Family<ReloadLabels, Counter>,
    keys_loaded: Family<SourceLabel, Gauge>,
    push_tokens_loaded: Family<SourceLabel, Gauge>,
    push_auth_failures: Family<ReasonLabel, Counter>,
    connect_duration: ConnectDuration,
    history_appends: Family<StreamLabel, Counter>,
    history_errors: Family<OperationLabel, Counter>,
    recoveries: Family<RecoveryLabels, Counter>,
    replayed: Family<StreamLabel, Counter>,
}

/// Seconds logic spends on one client auth (token check and session store write): 100 µs to
/// about 3 s in powers of two.
#[derive(Clone, Debug)]
struct ConnectDuration(Histogram);

impl Default for ConnectDuration {
    fn default() -> ConnectDuration {
        ConnectDuration(Histogram::new(exponential_buckets(0.0001, 2.0, 16)))
    }
}

impl Metrics {
    /// Registers every counter under the `goim_logic_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("goim_logic");
        r.register("push_requests", "Push API requests by kind and result", self.push_requests.clone());
        r.register("pushes_published", "Push messages accepted by the queue", self.pushes_published.clone());
        r.register(
            "publish_failures",
            "Push messages the queue refused, by reason",
            self.publish_failures.clone(),
        );
        r.register("connects_accepted", "Client auth requests accepted", self.connects_accepted.clone());
        r.register(
            "connect_duration_seconds",
            "Time to answer one client auth request (token check and session store write)",
            self.connect_duration.0.clone(),
        );
        r.register(
            "connects_rejected",
            "Client auth requests rejected, by reason",
            self.connects_rejected.clone(),
        );
        r.register(
            "store_errors",
            "Session store calls that failed, by operation",
            self.store_errors.clone(),
        );
        r.register("uplinks", "Uplink packets received from clients", self.uplinks.clone());
        r.register(
            "routes_dropped",
            "Key mappings deleted because their comet was gone from discovery longer than the grace",
            self.routes_dropped.clone(),
        );
        r.register(
            "comets_swept",
            "Comets gone from discovery whose routes were dropped",
            self.comets_swept.clone(),
        );
        r.register(
            "key_reloads",
            "Loads of a changed JWKS file, fetches of the JWKS URL and loads of a changed push token file, \
             by source and result (a failed one keeps the last good set)",
            self.key_reloads.clone(),
        );
        r.register("keys_loaded", "JWT verification keys in force, by source", self.keys_loaded.clone());
        r.register(
            "push_tokens_loaded",
            "Push API bearer tokens accepted, by source",
            self.push_tokens_loaded.clone(),
        );
        r.register(
            "push_auth_failures",
            "Push API requests refused for their bearer token, by reason (missing, wrong)",
            self.push_auth_failures.clone(),
        );
        r.register("history_appends", "Pushes given a position, by stream", self.history_appends.clone());
        r.register(
            "history_errors",
            "History calls that failed, by operation (a room push then goes out without a position)",
            self.history_errors.clone(),
        );
        r.register(
            "recoveries",
            "Resuming connections' streams, by stream and result",
            self.recoveries.clone(),
        );
        r.register("replayed", "Pushes replayed to resuming connections, by stream", self.replayed.clone());
    }

    pub(crate) fn history_appended(&self, stream: &'static str) {
        self.history_appends.get_or_create(&StreamLabel { stream }).inc();
    }

    pub(crate) fn history_error(&self, operation: &'static str) {
        self.history_errors.get_or_create(&OperationLabel { operation }).inc();
    }

    pub(crate) fn recovered(&self, stream: &'static str, complete: bool, replayed: usize) {
        let result = if complete { "complete" } else { "incomplete" };
        self.recoveries.get_or_create(&RecoveryLabels { stream, result }).inc();
        self.replayed.get_or_create(&StreamLabel { stream }).inc_by(replayed as u64);
    }

    pub(crate) fn push_request(&self, kind: &'static str, result: &'static str) {
        self.push_requests.get_or_create(&PushLabels { kind, result }).inc();
    }

    pub(crate) fn published(&self, kind: &'static str) {
        self.pushes_published.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn publish_failed(&self, reason: &'static str) {
        self.publish_failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn connect_took(&self, took: std::time::Duration) {
        self.connect_duration.0.observe(took.as_secs_f64());
    }

    pub(crate) fn connect_accepted(&self) {
        self.connects_accepted.inc();
    }

    pub(crate) fn connect_rejected(&self, reason: &'static str) {
        self.connects_rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn store_error(&self, operation: &'static str) {
        self.store_errors.get_or_create(&OperationLabel { operation }).inc();
    }

    pub(crate) fn uplink(&self) {
        self.uplinks.inc();
    }

    pub(crate) fn routes_dropped(&self, routes: usize) {
        self.routes_dropped.inc_by(routes as u64);
    }

    pub(crate) fn comet_swept(&self) {
        self.comets_swept.inc();
    }

    pub(crate) fn key_reload(&self, source: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.key_reloads.get_or_create(&ReloadLabels { source, result }).inc();
    }

    pub(crate) fn keys_loaded(&self, source: &'static str, keys: usize) {
        self.keys_loaded.get_or_create(&SourceLabel { source }).set(keys as i64);
    }

    pub(crate) fn push_tokens_loaded(&self, source: &'static str, tokens: usize) {
        self.push_tokens_loaded.get_or_create(&SourceLabel { source }).set(tokens as i64);
    }

    pub(crate) fn push_auth_failed(&self, reason: &'static str) {
        self.push_auth_failures.get_or_create(&ReasonLabel { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn counters_are_exposed_with_the_goim_logic_prefix_and_labels() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.push_request("keys", "ok");
        metrics.published("keys");
        metrics.publish_failed("full");
        metrics.connect_accepted();
        metrics.connect_rejected("expired");
        metrics.store_error("add_mapping");
        metrics.uplink();
        metrics.routes_dropped(3);
        metrics.comet_swept();
        metrics.key_reload("jwks_file", false);
        metrics.keys_loaded("jwks_url", 2);
        metrics.push_tokens_loaded("file", 1);
        metrics.push_auth_failed("wrong");

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "goim_logic_push_requests_total{kind=\"keys\",result=\"ok\"} 1",
            "goim_logic_pushes_published_total{kind=\"keys\"} 1",
            "goim_logic_publish_failures_total{reason=\"full\"} 1",
            "goim_logic_connects_accepted_total 1",
            "goim_logic_connects_rejected_total{reason=\"expired\"} 1",
            "goim_logic_store_errors_total{operation=\"add_mapping\"} 1",
            "goim_logic_uplinks_total 1",
            "goim_logic_routes_dropped_total 3",
            "goim_logic_comets_swept_total 1",
            "goim_logic_key_reloads_total{source=\"jwks_file\",result=\"failed\"} 1",
            "goim_logic_keys_loaded{source=\"jwks_url\"} 2",
            "goim_logic_push_tokens_loaded{source=\"file\"} 1",
            "goim_logic_push_auth_failures_total{reason=\"wrong\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
