//! The distributed mode: comet, logic and job as separate processes (`goim-comet`,
//! `goim-logic`, `goim-job`) that talk gRPC and share Redis and Kafka. Each submodule holds one
//! binary's settings (its TOML tables) and its start/stop composition; `src/bin/*` are thin
//! `main`s over [`crate::process::main`].
//!
//! Shared here: the admin listener table, the `[queue]` backend choice, comet discovery, and
//! the adapter that gives logic the ready comets.

pub mod comet;
pub mod job;
pub mod logic;

use std::sync::Arc;

use anyhow::Context;
use goim_job::discovery::{self, CometEndpoint, Discovery, Endpoints, ProbedList, StaticList};
use goim_kit::Invalid;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use comet::{CometProcess, CometSettings};
pub use job::{JobProcess, JobSettings};
pub use logic::{LogicProcess, LogicSettings};

/// `[queue]`: where logic publishes pushes and job consumes them. With `kind = "kafka"` the
/// broker settings are the binary's top-level `[kafka]` table (the producer's in goim-logic,
/// the consumer group's in goim-job).
///
/// ```toml
/// [queue]
/// kind = "memory"   # or "kafka"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    pub kind: QueueKind,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// An in-process queue: goim-logic dispatches its own pushes to the comets (no Kafka, one
    /// logic instance); goim-job has nothing to consume.
    #[default]
    Memory,
    /// Kafka, topic `goim-push-topic` (goim's `PushMsg` protobuf values).
    Kafka,
}

impl QueueConfig {
    /// `kind = "kafka"` needs a build with the `kafka` feature (on by default).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.kind == QueueKind::Kafka && !cfg!(feature = "kafka") {
            return Err(Invalid::new(
                "queue.kind",
                "\"kafka\" needs goim-rs built with the `kafka` feature (on by default)",
            ));
        }
        Ok(())
    }
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Starts the configured discovery: a static list at once (probed on `tasks` when
/// `probe_interval` is set), or the Kubernetes watch (waiting for its first complete list).
async fn start_discovery(
    config: &discovery::Config,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<dyn Discovery>> {
    match config.kind {
        discovery::Kind::Static => {
            let comets = config.comets.iter().map(|c| CometEndpoint::up(&c.server_id, &c.addr)).collect();
            if config.probe_interval.is_zero() {
                Ok(Arc::new(StaticList::new(comets)))
            } else {
                Ok(Arc::new(ProbedList::start(comets, config.probe_interval, shutdown, tasks)))
            }
        }
        discovery::Kind::Kubernetes => {
            Ok(Arc::new(discovery::Kubernetes::start(&config.kubernetes, shutdown, tasks).await?))
        }
    }
}

/// logic's view of discovery: the comets ready for new clients, and every comet listed.
struct ReadyComets(watch::Receiver<Endpoints>);

impl goim_logic::comet::CometDirectory for ReadyComets {
    fn ready(&self) -> Vec<String> {
        self.0.borrow().iter().filter(|c| c.ready).map(|c| c.server_id.clone()).collect()
    }

    fn listed(&self) -> Vec<String> {
        self.0.borrow().iter().map(|c| c.server_id.clone()).collect()
    }
}

/// Closes `tasks` and waits for all of them (a [`crate::stop::Stop`] step bounds the wait).
async fn wait(tasks: &TaskTracker) -> bool {
    tasks.close();
    tasks.wait().await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Settings;

    #[cfg(all(feature = "kafka", feature = "redis"))]
    fn example<S: Settings>(name: &str) -> S {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/distributed").join(name);
        crate::process::load(Some(&path), Vec::new()).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The examples run the distributed mode with Kafka and Redis.
    #[cfg(all(feature = "kafka", feature = "redis"))]
    #[test]
    fn the_example_configs_parse_and_are_valid() {
        let comet: CometSettings = example("comet.toml");
        let logic: LogicSettings = example("logic.toml");
        let job: JobSettings = example("job.toml");
        // They describe one machine: comet's gRPC port is the one logic and job dispatch to.
        let comet_grpc = comet.grpc.addr.rsplit(':').next().unwrap().to_owned();
        assert!(logic.discovery.unwrap().comets[0].addr.ends_with(&comet_grpc));
        assert!(job.discovery.comets[0].addr.ends_with(&comet_grpc));
        assert_eq!(comet.logic_client.addrs[0].rsplit(':').next(), logic.grpc.addr.rsplit(':').next());
    }

    #[test]
    fn default_admin_ports_are_the_tiers() {
        assert_eq!(LogicSettings::default().admin.addr, "0.0.0.0:3110");
        assert_eq!(JobSettings::default().admin.addr, "0.0.0.0:3120");
    }

    #[test]
    fn logic_with_the_memory_queue_needs_discovery_to_dispatch() {
        let mut s = LogicSettings::default();
        s.logic.auth.mode = goim_logic::config::AuthMode::Json;
        assert!(s.validate().unwrap_err().to_string().starts_with("discovery"));
    }

    /// `cargo test --no-default-features` (scripts/test.sh runs it): a build without librdkafka
    /// and the Redis client refuses, at validation, the tables that need them.
    #[cfg(not(feature = "kafka"))]
    #[test]
    fn without_the_features_kafka_and_redis_are_refused_naming_the_feature() {
        let mut job = JobSettings::default();
        job.discovery.comets =
            vec![discovery::StaticComet { server_id: "c".into(), addr: "127.0.0.1:3109".into() }];
        let e = job.validate().unwrap_err();
        assert_eq!(e.field, "queue.kind");
        assert!(e.reason.contains("`kafka` feature"), "{e}");
        let mut logic = LogicSettings::default();
        logic.logic.auth.mode = goim_logic::config::AuthMode::Json;
        logic.store.kind = goim_logic::store::StoreKind::Redis;
        let e = logic.validate().unwrap_err();
        assert_eq!(e.field, "store.kind");
        assert!(e.reason.contains("`redis` feature"), "{e}");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn job_takes_only_the_kafka_queue_and_checks_its_settings() {
        let mut job = JobSettings::default();
        job.discovery.comets =
            vec![discovery::StaticComet { server_id: "c".into(), addr: "127.0.0.1:3109".into() }];
        assert_eq!(job.queue.kind, QueueKind::Kafka, "the default");
        job.validate().unwrap();
        job.kafka.brokers = Vec::new();
        assert!(job.validate().unwrap_err().to_string().starts_with("kafka.brokers"));
        job.queue.kind = QueueKind::Memory;
        assert!(job.validate().unwrap_err().to_string().starts_with("queue.kind: goim-job consumes Kafka"));
    }
}
