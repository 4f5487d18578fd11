//! `goim-logic`: the push HTTP API, the `goim.logic.Logic` gRPC server for comets, the session
//! store, and the push queue.
//!
//! ```toml
//! [admin]       # addr = "0.0.0.0:3110"
//! [shutdown]    # grace = "20s"
//! [logic]       # goim_logic::Config: http (3111), auth, node, session, queue (memory queue size)
//! [grpc]        # goim_kit::grpc::ServerConfig; addr = "0.0.0.0:3119"
//! [store]       # kind = "memory" | "redis", [store.redis]
//! [queue]       # kind = "memory" | "kafka"
//! [kafka]       # goim_logic::queue::KafkaConfig: brokers, topic (goim-push-topic), delivery_timeout
//! [discovery]   # optional: which comets exist (static list or Kubernetes EndpointSlices);
//!               # gone_grace: routes of a comet unlisted this long are dropped
//! [job]         # goim_job::Config, for the in-process dispatch of the memory queue
//! [comet_client] # goim_job::comet::ClientConfig (was [comet]), likewise
//! ```
//!
//! With `queue.kind = "memory"` there is no Kafka between logic and job, so this process runs the
//! job itself: it dispatches its pushes to the comets of `[discovery]` over gRPC (required then).
//! With `discovery` set, the node lists (`/goim/nodes/*`, the `Nodes` RPC) offer only the comets
//! discovery calls ready, and the routes of a comet gone from discovery for `discovery.gone_grace`
//! are deleted from the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use goim_job::comet::{ClientConfig as CometClientConfig, GrpcComets};
use goim_job::discovery;
use goim_kit::Invalid;
use goim_kit::grpc::ServerConfig;
use goim_logic::history::History;
use goim_logic::queue::KafkaConfig;
#[cfg(feature = "kafka")]
use goim_logic::queue::KafkaQueue;
#[cfg(feature = "redis")]
use goim_logic::store::RedisStore;
use goim_logic::store::{StoreConfig, StoreKind};
use goim_logic::{Logic, MemoryStore, Store};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::{QueueConfig, QueueKind, ReadyComets, bind, start_discovery, wait};
use crate::admin;
use crate::config::{Admin, Shutdown};
use crate::process::{Settings, Tier};
use crate::start::logged;
use crate::stop::Stop;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogicSettings {
    pub admin: Admin,
    pub shutdown: Shutdown,
    pub logic: goim_logic::Config,
    pub grpc: ServerConfig,
    pub store: StoreConfig,
    pub queue: QueueConfig,
    /// The producer, when `queue.kind = "kafka"`.
    pub kafka: KafkaConfig,
    pub discovery: Option<discovery::Config>,
    pub job: goim_job::Config,
    /// The gRPC client of the comets (`[comet_client]`; `[comet]` until 0.2).
    pub comet_client: CometClientConfig,
}

impl Default for LogicSettings {
    fn default() -> LogicSettings {
        LogicSettings {
            admin: Admin::on_port(3110),
            shutdown: Default::default(),
            logic: Default::default(),
            grpc: ServerConfig::on_port(goim_logic::grpc::PORT),
            store: Default::default(),
            queue: Default::default(),
            kafka: Default::default(),
            discovery: Default::default(),
            job: Default::default(),
            comet_client: Default::default(),
        }
    }
}

impl Settings for LogicSettings {
    const RENAMED: &'static [(&'static str, &'static str)] = &[("comet", "comet_client")];

    fn validate(&self) -> Result<(), Invalid> {
        self.admin.validate()?;
        self.shutdown.validate()?;
        self.logic.validate().map_err(|e| e.within("logic"))?;
        self.grpc.validate()?;
        self.store.validate()?;
        self.queue.validate()?;
        if self.queue.kind == QueueKind::Kafka {
            self.kafka.validate()?;
        }
        if let Some(d) = &self.discovery {
            d.validate()?;
        }
        if self.queue.kind == QueueKind::Memory {
            if self.discovery.is_none() {
                return Err(Invalid::new(
                    "discovery",
                    "required with queue.kind = \"memory\": logic then dispatches its pushes to the \
                     comets itself",
                ));
            }
            self.job.validate().map_err(|e| e.within("job"))?;
            self.comet_client.validate()?;
        }
        Ok(())
    }
}

/// Where a running logic listens (ports resolved).
#[derive(Clone, Debug)]
pub struct LogicAddrs {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

pub struct LogicProcess {
    pub addrs: LogicAddrs,
    /// Stops the push API (no new pushes).
    http_stop: CancellationToken,
    /// Stops the in-process job (memory queue) after it dispatched what it holds.
    job_stop: CancellationToken,
    job_tasks: TaskTracker,
    /// Stops the gRPC server; comets' disconnects are served until then.
    grpc_stop: CancellationToken,
    admin_stop: CancellationToken,
    /// Stops the discovery watch.
    discovery_stop: CancellationToken,
    /// HTTP, gRPC, admin and discovery tasks.
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
    grace: Duration,
}

impl Tier for LogicProcess {
    type Settings = LogicSettings;
    const NAME: &'static str = "goim-logic";

    async fn start(s: LogicSettings) -> anyhow::Result<LogicProcess> {
        let http_l = bind(&s.logic.http.addr, "http").await?;
        let grpc_l = bind(&s.grpc.addr, "grpc").await?;
        let admin_l = bind(&s.admin.addr, "admin").await?;
        let addrs = LogicAddrs {
            http: http_l.local_addr()?,
            grpc: grpc_l.local_addr()?,
            admin: admin_l.local_addr()?,
        };

        let tasks = TaskTracker::new();
        let job_tasks = TaskTracker::new();
        let [http_stop, job_stop, grpc_stop, admin_stop, discovery_stop] =
            std::array::from_fn(|_| CancellationToken::new());
        let discovery = match &s.discovery {
            Some(d) => Some(start_discovery(d, discovery_stop.clone(), &tasks).await?),
            None => None,
        };

        let mut registry = Registry::default();
        let (store, history) = store(&s.store, &s.logic).await?;
        let queue: Arc<dyn goim_logic::Queue> = match s.queue.kind {
            QueueKind::Memory => {
                let (queue, rx) =
                    goim_logic::queue::Memory::channel(s.logic.queue.capacity, s.logic.queue.publish_timeout);
                // validate() made discovery required for the memory queue.
                let discovery = discovery.as_ref().expect("validated: discovery is set");
                let comets = Arc::new(GrpcComets::new(&**discovery, s.comet_client.clone()));
                let metrics = goim_job::Metrics::new();
                metrics.register(&mut registry);
                let job = goim_job::Job::new(s.job.clone(), comets, metrics);
                let stop = job_stop.clone();
                job_tasks.spawn(logged("in-process job", async move {
                    job.run(goim_job::MemoryQueue::new(rx), stop).await
                }));
                Arc::new(queue)
            }
            #[cfg(not(feature = "kafka"))]
            QueueKind::Kafka => {
                anyhow::bail!("queue.kind = \"kafka\" needs goim-logic built with the `kafka` feature")
            }
            #[cfg(feature = "kafka")]
            QueueKind::Kafka => {
                // The topic first: a missing topic that may not be created stops logic here, with
                // the reason, instead of failing every push later.
                if goim_logic::queue::prepare_topic(&s.kafka).await? {
                    info!(topic = %s.kafka.topic, partitions = s.kafka.partitions, "created the kafka topic");
                }
                let queue = KafkaQueue::new(&s.kafka)?;
                queue.register(&mut registry);
                Arc::new(queue)
            }
        };
        let mut logic = Logic::new(s.logic.clone(), store, queue)?;
        if let Some(history) = history {
            logic = logic.with_history(history);
        }
        if let Some(d) = &discovery {
            logic = logic.with_comets(Arc::new(ReadyComets(d.watch())));
        }
        let logic = Arc::new(logic);
        logic.metrics().register(&mut registry);
        if let Some(d) = &s.discovery {
            // logic, not job, drops a dead comet's routes: it owns the store and watches the same
            // discovery (see goim_logic's `sweep` module and docs/distributed.md).
            let (swept, stop, grace) = (logic.clone(), discovery_stop.clone(), d.gone_grace);
            tasks.spawn(async move { swept.sweep_gone_comets(grace, stop).await });
        }

        // JWKS and push token reloads, until shutdown starts.
        let (watched, stop) = (logic.clone(), http_stop.clone());
        tasks.spawn(async move { watched.watch_keys(stop).await });
        let ready = Arc::new(AtomicBool::new(false));
        let (served, stop) = (logic.clone(), http_stop.clone());
        tasks
            .spawn(logged("logic HTTP server", async move { goim_logic::serve(http_l, served, stop).await }));
        let (served, stop, grpc_config) = (logic.clone(), grpc_stop.clone(), s.grpc.clone());
        tasks.spawn(logged("logic gRPC server", async move {
            goim_logic::grpc::serve(grpc_l, served, &grpc_config, stop).await
        }));
        let admin = admin::Admin { registry: Arc::new(registry), ready: ready.clone() };
        let stop = admin_stop.clone();
        tasks.spawn(logged("admin server", async move { admin::serve(admin_l, admin, stop).await }));
        ready.store(true, Ordering::Release);
        info!(http = %addrs.http, grpc = %addrs.grpc, admin = %addrs.admin, store = ?s.store.kind,
              queue = ?s.queue.kind, discovery = ?s.discovery.as_ref().map(|d| d.kind), "goim-logic serving");
        Ok(LogicProcess {
            addrs,
            http_stop,
            job_stop,
            job_tasks,
            grpc_stop,
            admin_stop,
            discovery_stop,
            tasks,
            ready,
            grace: s.shutdown.grace,
        })
    }

    /// Not ready → the push API stops → the in-process job dispatches what it holds → the gRPC
    /// server stops → admin and discovery → wait, within the grace period.
    async fn stop(self) -> bool {
        let mut stop = Stop::new(self.grace);
        stop.signal("not ready; the push API stops taking pushes; the in-process job stops", || {
            self.ready.store(false, Ordering::Release);
            self.http_stop.cancel();
            self.job_stop.cancel();
        });
        stop.wait("the in-process job dispatches what it holds", wait(&self.job_tasks)).await;
        stop.signal("gRPC, admin and discovery stop", || {
            self.grpc_stop.cancel();
            self.admin_stop.cancel();
            self.discovery_stop.cancel();
        });
        stop.wait("gRPC, admin and discovery end", wait(&self.tasks)).await;
        stop.finish()
    }
}

/// The session store `[store]` chooses, and the history beside it when that is not logic's
/// memory: the Redis store keeps positions in the same Redis, so every logic shares them.
async fn store(
    config: &StoreConfig,
    logic: &goim_logic::Config,
) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<dyn History>>)> {
    let ttl = logic.session.mapping_ttl;
    Ok(match config.kind {
        StoreKind::Memory => (Arc::new(MemoryStore::new(ttl)), None),
        #[cfg(feature = "redis")]
        StoreKind::Redis => {
            let store = Arc::new(RedisStore::connect(&config.redis).await?.with_ttl(ttl));
            let history = Arc::new(goim_logic::RedisHistory::new(store.clone(), &logic.history));
            (store, Some(history))
        }
        #[cfg(not(feature = "redis"))]
        StoreKind::Redis => {
            anyhow::bail!("store.kind = \"redis\" needs goim-logic built with the `redis` feature")
        }
    })
}
