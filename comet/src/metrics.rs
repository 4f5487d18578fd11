//! comet's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `transport` label's values for client connections.
pub const TRANSPORTS: [&str; 4] = ["tcp", "ws", "wss", "long_poll"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// `tls`, `request_head`, `request_body`, `auth_packet`: what did not arrive in time.
    pub stage: &'static str,
}

#[derive(Default)]
pub struct Metrics {
    /// Authenticated connections held now (the autoscaling signal).
    pub connections: Family<TransportLabel, Gauge>,
    pub accepted: Family<TransportLabel, Counter>,
    pub authenticated: Family<TransportLabel, Counter>,
    pub disconnects: Family<ReasonLabel, Counter>,
    /// Bytes from clients that were not a valid packet or WebSocket frame.
    pub bad_input: Family<TransportLabel, Counter>,
    pub accept_errors: Counter,
    /// Push calls received (from job, or logic's in-process dispatch), by push kind. A room call
    /// carries one batch of messages, so this counts batches for rooms.
    pub pushes: Family<KindLabel, Counter>,
    /// Messages queued for delivery, by push kind.
    pub queued: Family<KindLabel, Counter>,
    /// Pushes refused because the connection's queue overflowed (each disconnects a client).
    pub slow: Counter,
    pub logic_errors: Family<KindLabel, Counter>,
    pub rooms: Gauge,
    /// 1 while a drain runs (and after it, until the process exits).
    pub draining: Gauge,
    /// Connections still held while draining (told or not yet told); 0 when the drain is done.
    pub drain_remaining: Gauge,
    /// Clients told to go (op 6 `drain`) and closed by a drain, at its pace or at its timeout.
    pub drained: Counter,
    /// Long-poll responses sent again because the previous poll's was not written completely
    /// or not acknowledged.
    pub long_poll_resends: Counter,
    /// Changes of logic's store epoch seen in online replies (each starts a re-registration).
    pub store_epoch_changes: Counter,
    /// Sessions re-registered at logic after a store epoch change.
    pub sessions_reregistered: Counter,
    /// Clients refused by admission control, by reason: `per_ip` (`admission.max_per_ip`),
    /// `auth_rate` (`admission.auth_rate`).
    pub admission_refused: Family<ReasonLabel, Counter>,
    /// Auth requests in flight to logic now (at most `admission.auth_in_flight`).
    pub auth_in_flight: Gauge,
    /// Connections closed because a handshake stage did not complete within
    /// `protocol.handshake_timeout` (slow or silent clients, slowloris), by stage.
    pub handshake_timeouts: Family<StageLabel, Counter>,
    /// Connections that asked to resume, by result: `complete`, `incomplete`, `failed` (logic
    /// did not answer), `off` (logic keeps no positions).
    pub resumes: Family<ResultLabel, Counter>,
    /// Pushes replayed to resuming connections.
    pub replayed: Counter,
    /// Live pushes not delivered to a resuming connection because its replay carried them.
    pub resume_duplicates: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("goim_comet");
        // Every transport's gauge from the start, at 0: a fresh comet reports that it holds no
        // connections, rather than no reading (the operator's autoscaler tells the two apart).
        for transport in TRANSPORTS {
            let _ = self.connections.get_or_create(&TransportLabel { transport });
        }
        r.register("connections", "Authenticated connections held", self.connections.clone());
        r.register("accepted", "Sockets accepted", self.accepted.clone());
        r.register("authenticated", "Connections that passed auth", self.authenticated.clone());
        r.register("disconnects", "Connections ended, by reason", self.disconnects.clone());
        r.register("bad_input", "Invalid packets or frames received", self.bad_input.clone());
        r.register("accept_errors", "Errors accepting sockets", self.accept_errors.clone());
        r.register("pushes", "Push calls received, by kind (a room call is one batch)", self.pushes.clone());
        r.register("queued", "Messages queued for clients, by push kind", self.queued.clone());
        r.register("slow_consumers", "Pushes refused by a full connection queue", self.slow.clone());
        r.register("logic_errors", "Failed calls to logic, by call", self.logic_errors.clone());
        r.register("rooms", "Rooms with members on this comet", self.rooms.clone());
        r.register("draining", "1 while this comet drains", self.draining.clone());
        r.register("drain_remaining", "Connections left to drain", self.drain_remaining.clone());
        r.register(
            "drained",
            "Clients told to go (op 6 drain) and closed by the drain",
            self.drained.clone(),
        );
        r.register(
            "long_poll_resends",
            "Long-poll responses resent because their first write failed or was not acknowledged",
            self.long_poll_resends.clone(),
        );
        r.register(
            "store_epoch_changes",
            "Changes of logic's session store epoch (the store lost its data)",
            self.store_epoch_changes.clone(),
        );
        r.register(
            "sessions_reregistered",
            "Sessions re-registered at logic after its session store lost its data",
            self.sessions_reregistered.clone(),
        );
        r.register(
            "admission_refused",
            "Clients refused by admission control, by reason (per_ip, auth_rate)",
            self.admission_refused.clone(),
        );
        r.register("auth_in_flight", "Auth requests in flight to logic", self.auth_in_flight.clone());
        r.register(
            "handshake_timeouts",
            "Connections closed because a handshake stage did not complete in time, by stage",
            self.handshake_timeouts.clone(),
        );
        r.register("resumes", "Connections that asked to resume, by result", self.resumes.clone());
        r.register("replayed", "Pushes replayed to resuming connections", self.replayed.clone());
        r.register(
            "resume_duplicates",
            "Live pushes left out for a resuming connection because its replay carried them",
            self.resume_duplicates.clone(),
        );
    }

    pub fn resume(&self, result: &'static str) {
        self.resumes.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.admission_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn handshake_timeout(&self, stage: &'static str) {
        self.handshake_timeouts.get_or_create(&StageLabel { stage }).inc();
    }

    pub fn disconnect(&self, reason: &'static str) {
        self.disconnects.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn logic_error(&self, kind: &'static str) {
        self.logic_errors.get_or_create(&KindLabel { kind }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_comet_reports_zero_connections_on_every_transport() {
        let mut registry = Registry::default();
        Metrics::default().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for t in TRANSPORTS {
            let line = format!("goim_comet_connections{{transport=\"{t}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }
}
