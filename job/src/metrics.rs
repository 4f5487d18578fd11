//! job's Prometheus metrics, all named `goim_job_*`.

use goim_api::PushKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a push reached no comet without any comet failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A key push named a comet job does not know (gone, or another cluster's).
    UnknownServer,
    /// A key push named a comet that discovery listed and no longer lists: a stale route of a
    /// dead (or removed) comet, dropped without calling it.
    CometGone,
    /// A room or broadcast push found no comets at all.
    NoComets,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownServer => "unknown_server",
            DropReason::CometGone => "comet_gone",
            DropReason::NoComets => "no_comets",
        }
    }
}

pub(crate) fn kind_name(kind: PushKind) -> &'static str {
    match kind {
        PushKind::Keys => "keys",
        PushKind::Room => "room",
        PushKind::Broadcast => "broadcast",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    kind: &'static str,
    /// A server id from discovery or from a key push; key pushes to unknown servers are counted
    /// under [`DropReason`] instead, so this stays bounded by the comets that existed.
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CometLabels {
    /// A server id job had a client for (listed by discovery), so bounded like [`ServerLabels`].
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    kind: &'static str,
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: in-process dispatch is sub-millisecond, room batches wait up to max_delay,
    // retries against a failing comet take seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// job's metrics. Clones share the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    consumed: Family<KindLabels, Counter>,
    undecodable: Counter,
    room_batches: Counter,
    room_batch_packets: Histogram,
    dispatch_calls: Family<KindLabels, Counter>,
    dispatch_retries: Family<KindLabels, Counter>,
    dispatch_failed: Family<ServerLabels, Counter>,
    comet_calls: Family<CometLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    latency: Family<KindLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            consumed: Family::default(),
            undecodable: Counter::default(),
            room_batches: Counter::default(),
            room_batch_packets: Histogram::new([1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0]),
            dispatch_calls: Family::default(),
            dispatch_retries: Family::default(),
            dispatch_failed: Family::default(),
            comet_calls: Family::default(),
            dropped: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }

    /// Registers every metric under the `goim_job_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("goim_job");
        r.register("messages_consumed", "Pushes taken off the queue, by kind", self.consumed.clone());
        r.register(
            "messages_undecodable",
            "Queue messages that are not a goim PushMsg; skipped and acked",
            self.undecodable.clone(),
        );
        r.register("room_batches_flushed", "Room batches sent to the comets", self.room_batches.clone());
        r.register("room_batch_packets", "Packets per flushed room batch", self.room_batch_packets.clone());
        r.register(
            "dispatch_calls",
            "Calls to comets, by push kind (retries not included)",
            self.dispatch_calls.clone(),
        );
        r.register(
            "dispatch_retries",
            "Retried calls to comets, by push kind",
            self.dispatch_retries.clone(),
        );
        r.register(
            "dispatch_failed",
            "Calls to comets that failed after every retry; the push was acked anyway",
            self.dispatch_failed.clone(),
        );
        r.register(
            "comet_calls",
            "Dispatches that went out to a comet (each answered, retries not included), by server; \
             a comet that left discovery gets none",
            self.comet_calls.clone(),
        );
        r.register(
            "dropped",
            "Pushes that reached no comet: unknown server, comet gone from discovery, or no comets at all",
            self.dropped.clone(),
        );
        r.register(
            "dispatch_latency_seconds",
            "From taking a push off the queue to every comet having answered for it",
            self.latency.clone(),
        );
    }

    pub(crate) fn consumed(&self, kind: PushKind) {
        self.consumed.get_or_create(&KindLabels { kind: kind_name(kind) }).inc();
    }

    /// By the Kafka consumer, the only source whose messages can fail to decode.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn undecodable(&self) {
        self.undecodable.inc();
    }

    pub(crate) fn room_flushed(&self, packets: usize) {
        self.room_batches.inc();
        self.room_batch_packets.observe(packets as f64);
    }

    pub(crate) fn dispatched(&self, kind: PushKind, retries: u32) {
        let labels = KindLabels { kind: kind_name(kind) };
        self.dispatch_calls.get_or_create(&labels).inc();
        if retries > 0 {
            self.dispatch_retries.get_or_create(&labels).inc_by(u64::from(retries));
        }
    }

    pub(crate) fn failed(&self, kind: PushKind, server: &str) {
        let labels = ServerLabels { kind: kind_name(kind), server: server.to_owned() };
        self.dispatch_failed.get_or_create(&labels).inc();
    }

    /// A dispatch that reached comet `server` (whatever it answered).
    pub(crate) fn comet_called(&self, server: &str) {
        self.comet_calls.get_or_create(&CometLabels { server: server.to_owned() }).inc();
    }

    pub(crate) fn dropped(&self, kind: PushKind, why: DropReason) {
        self.dropped.get_or_create(&DropLabels { kind: kind_name(kind), reason: why.as_str() }).inc();
    }

    pub(crate) fn latency(&self, kind: PushKind, seconds: f64) {
        self.latency.get_or_create(&KindLabels { kind: kind_name(kind) }).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn every_metric_is_exported_with_the_goim_job_prefix() {
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.consumed(PushKind::Room);
        metrics.undecodable();
        metrics.room_flushed(3);
        metrics.dispatched(PushKind::Keys, 2);
        metrics.failed(PushKind::Keys, "comet-1");
        metrics.dropped(PushKind::Broadcast, DropReason::NoComets);
        metrics.dropped(PushKind::Keys, DropReason::CometGone);
        metrics.comet_called("comet-1");
        metrics.latency(PushKind::Room, 0.02);

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "goim_job_messages_consumed_total{kind=\"room\"} 1",
            "goim_job_messages_undecodable_total 1",
            "goim_job_room_batches_flushed_total 1",
            "goim_job_room_batch_packets_count 1",
            "goim_job_dispatch_calls_total{kind=\"keys\"} 1",
            "goim_job_dispatch_retries_total{kind=\"keys\"} 2",
            "goim_job_dispatch_failed_total{kind=\"keys\",server=\"comet-1\"} 1",
            "goim_job_dropped_total{kind=\"broadcast\",reason=\"no_comets\"} 1",
            "goim_job_dropped_total{kind=\"keys\",reason=\"comet_gone\"} 1",
            "goim_job_comet_calls_total{server=\"comet-1\"} 1",
            "goim_job_dispatch_latency_seconds_count{kind=\"room\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
