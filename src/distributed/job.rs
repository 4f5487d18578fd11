//! `goim-job`: consumes pushes from the queue, batches room pushes, and dispatches them to the
//! comets discovery lists, over gRPC.
//!
//! ```toml
//! [admin]       # addr = "0.0.0.0:3120"
//! [shutdown]    # grace = "20s"
//! [job]         # goim_job::Config: room batching, dispatch
//! [discovery]   # static list or Kubernetes EndpointSlices
//! [comet_client] # goim_job::comet::ClientConfig (was [comet]): deadline, keepalive
//! [queue]       # kind = "kafka", the default and the only queue goim-job takes
//! [kafka]       # goim_job::KafkaConfig: brokers, topic, group (goim-push-group-job), ...
//! ```
//!
//! `queue.kind = "memory"` is refused by validation: the memory queue lives inside goim-logic,
//! which then dispatches its pushes itself, so a goim-job on it would have nothing to consume.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use goim_job::comet::{ClientConfig as CometClientConfig, GrpcComets};
use goim_job::discovery;
use goim_kit::Invalid;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::{QueueConfig, QueueKind, bind, start_discovery, wait};
use crate::admin;
use crate::config::{Admin, Shutdown};
use crate::process::{Settings, Tier};
use crate::start::logged;
use crate::stop::Stop;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    pub admin: Admin,
    pub shutdown: Shutdown,
    pub job: goim_job::Config,
    pub discovery: discovery::Config,
    /// The gRPC client of the comets (`[comet_client]`; `[comet]` until 0.2).
    pub comet_client: CometClientConfig,
    pub queue: QueueConfig,
    /// The consumer group, when `queue.kind = "kafka"`.
    pub kafka: goim_job::KafkaConfig,
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        JobSettings {
            admin: Admin::on_port(3120),
            shutdown: Default::default(),
            job: Default::default(),
            discovery: Default::default(),
            comet_client: Default::default(),
            queue: QueueConfig { kind: QueueKind::Kafka },
            kafka: Default::default(),
        }
    }
}

impl Settings for JobSettings {
    const RENAMED: &'static [(&'static str, &'static str)] = &[("comet", "comet_client")];

    fn validate(&self) -> Result<(), Invalid> {
        self.admin.validate()?;
        self.shutdown.validate()?;
        self.job.validate().map_err(|e| e.within("job"))?;
        self.discovery.validate()?;
        self.comet_client.validate()?;
        self.queue.validate()?;
        match self.queue.kind {
            QueueKind::Memory => Err(Invalid::new(
                "queue.kind",
                "goim-job consumes Kafka; with \"memory\" the queue lives inside goim-logic, which \
                 dispatches its pushes itself, so goim-job is not needed (set queue.kind = \"kafka\" \
                 in logic and job to run it)",
            )),
            QueueKind::Kafka => self.kafka.validate(),
        }
    }
}

/// The consumer `[kafka]` configures: validation let only the Kafka queue through.
#[cfg(feature = "kafka")]
fn source(s: &JobSettings, metrics: goim_job::Metrics) -> anyhow::Result<goim_job::KafkaSource> {
    Ok(goim_job::KafkaSource::new(&s.kafka, metrics)?)
}

/// Without the `kafka` feature there is nothing to consume (validation says so first).
#[cfg(not(feature = "kafka"))]
fn source(_: &JobSettings, _: goim_job::Metrics) -> anyhow::Result<goim_job::MemoryQueue> {
    anyhow::bail!("queue.kind = \"kafka\" needs goim-job built with the `kafka` feature")
}

/// Where a running job listens.
#[derive(Clone, Debug)]
pub struct JobAddrs {
    pub admin: SocketAddr,
}

pub struct JobProcess {
    pub addrs: JobAddrs,
    /// Stops the job after it flushed and dispatched what it holds.
    job_stop: CancellationToken,
    job_tasks: TaskTracker,
    admin_stop: CancellationToken,
    discovery_stop: CancellationToken,
    /// Admin and discovery tasks.
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
    grace: Duration,
}

impl Tier for JobProcess {
    type Settings = JobSettings;
    const NAME: &'static str = "goim-job";

    async fn start(s: JobSettings) -> anyhow::Result<JobProcess> {
        let admin_l = bind(&s.admin.addr, "admin").await?;
        let addrs = JobAddrs { admin: admin_l.local_addr()? };
        let tasks = TaskTracker::new();
        let job_tasks = TaskTracker::new();
        let [job_stop, admin_stop, discovery_stop] = std::array::from_fn(|_| CancellationToken::new());
        let discovery = start_discovery(&s.discovery, discovery_stop.clone(), &tasks).await?;

        let mut registry = Registry::default();
        let metrics = goim_job::Metrics::new();
        metrics.register(&mut registry);
        let comets = Arc::new(GrpcComets::new(&*discovery, s.comet_client.clone()));
        let job = goim_job::Job::new(s.job.clone(), comets, metrics.clone());
        let source = source(&s, metrics)?;
        let stop = job_stop.clone();
        job_tasks.spawn(logged("job", async move { job.run(source, stop).await }));

        let ready = Arc::new(AtomicBool::new(false));
        let admin = admin::Admin { registry: Arc::new(registry), ready: ready.clone() };
        let stop = admin_stop.clone();
        tasks.spawn(logged("admin server", async move { admin::serve(admin_l, admin, stop).await }));
        ready.store(true, Ordering::Release);
        info!(admin = %addrs.admin, discovery = ?s.discovery.kind, comets = discovery.watch().borrow().len(),
              queue = ?s.queue.kind, "goim-job running");
        Ok(JobProcess {
            addrs,
            job_stop,
            job_tasks,
            admin_stop,
            discovery_stop,
            tasks,
            ready,
            grace: s.shutdown.grace,
        })
    }

    /// Not ready → the job stops receiving, flushes its room batches, dispatches and acks what
    /// it holds → admin and discovery stop → wait, within the grace period.
    async fn stop(self) -> bool {
        let mut stop = Stop::new(self.grace);
        stop.signal("not ready; the job stops receiving", || {
            self.ready.store(false, Ordering::Release);
            self.job_stop.cancel();
        });
        stop.wait("the job flushes, dispatches and acks what it holds", wait(&self.job_tasks)).await;
        stop.signal("admin and discovery stop", || {
            self.admin_stop.cancel();
            self.discovery_stop.cancel();
        });
        stop.wait("admin and discovery end", wait(&self.tasks)).await;
        stop.finish()
    }
}
