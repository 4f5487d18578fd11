//! comet, logic and job in one process, joined by in-process ports (the embedded default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use goim_comet::{Comet, Disconnect, Listeners};
use goim_logic::{Logic, MemoryStore};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::{self, Admin};
use crate::config::Config;
use crate::port::{InProcessComet, InProcessLogic};

/// Where a running process listens (ports resolved, so tests can bind port 0).
#[derive(Clone, Debug)]
pub struct Addrs {
    pub tcp: Vec<SocketAddr>,
    pub websocket: Vec<SocketAddr>,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

pub struct Embedded {
    pub addrs: Addrs,
    comet: Comet,
    /// Stops logic's HTTP API (no new pushes).
    http_stop: CancellationToken,
    /// Stops job after it dispatched what it holds.
    job_stop: CancellationToken,
    admin_stop: CancellationToken,
    /// logic's HTTP server, job and the admin server.
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
    grace: Duration,
}

fn local_addrs(ls: &[TcpListener]) -> std::io::Result<Vec<SocketAddr>> {
    ls.iter().map(|l| l.local_addr()).collect()
}

impl Embedded {
    /// Binds every listener (so a taken port fails before anything runs) and starts serving.
    pub async fn start(config: Config) -> Result<Embedded> {
        config.validate()?;
        let listeners = Listeners::bind(&config.comet).await?;
        let http = TcpListener::bind(&config.logic.http.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.logic.http.addr))?;
        let admin_l = TcpListener::bind(&config.admin.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.admin.addr))?;
        let addrs = Addrs {
            tcp: local_addrs(&listeners.tcp)?,
            websocket: local_addrs(&listeners.websocket)?,
            http: http.local_addr()?,
            admin: admin_l.local_addr()?,
        };

        let mut registry = Registry::default();
        let (queue, rx) = goim_logic::queue::Memory::channel(
            config.logic.queue.capacity,
            config.logic.queue.publish_timeout,
        );
        let store = Arc::new(MemoryStore::new(config.logic.session.mapping_ttl));
        let logic = Arc::new(Logic::new(config.logic.clone(), store, Arc::new(queue))?);
        logic.metrics().register(&mut registry);

        let comet_metrics = Arc::new(goim_comet::Metrics::default());
        comet_metrics.register(&mut registry);
        let comet = Comet::new(config.comet.clone(), Arc::new(InProcessLogic(logic.clone())), comet_metrics);

        let job_metrics = goim_job::Metrics::new();
        job_metrics.register(&mut registry);
        let job = Arc::new(goim_job::Job::new(
            config.job.clone(),
            Arc::new(InProcessComet(comet.clone())),
            job_metrics,
        ));

        let tasks = TaskTracker::new();
        let (http_stop, job_stop, admin_stop) =
            (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
        let ready = Arc::new(AtomicBool::new(false));

        let stop = job_stop.clone();
        tasks.spawn(async move {
            if let Err(e) = job.run(goim_job::MemoryQueue::new(rx), stop).await {
                error!(error = %e, "job stopped");
            }
        });
        let stop = http_stop.clone();
        tasks.spawn(async move {
            if let Err(e) = goim_logic::serve(http, logic, stop).await {
                error!(error = %e, "logic http server failed");
            }
        });
        let admin = Admin { registry: Arc::new(registry), ready: ready.clone() };
        let stop = admin_stop.clone();
        tasks.spawn(async move {
            if let Err(e) = admin::serve(admin_l, admin, stop).await {
                error!(error = %e, "admin server failed");
            }
        });
        comet.start(listeners);
        ready.store(true, Ordering::Release);
        info!(tcp = ?addrs.tcp, websocket = ?addrs.websocket, http = %addrs.http, admin = %addrs.admin, "goim-rs serving");
        Ok(Embedded {
            addrs,
            comet,
            http_stop,
            job_stop,
            admin_stop,
            tasks,
            ready,
            grace: config.shutdown.grace,
        })
    }

    pub fn comet(&self) -> &Comet {
        &self.comet
    }

    /// Shuts down in order: not ready, no new pushes, job dispatches what it holds, every client
    /// gets op 6 `shutdown` and is closed, then the rest stops. Bounded by the grace period;
    /// returns whether everything finished within it.
    pub async fn stop(self) -> bool {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.ready.store(false, Ordering::Release);
        self.http_stop.cancel();
        self.job_stop.cancel();
        let comet_done = self.comet.stop(Disconnect::Shutdown, self.grace).await;
        self.admin_stop.cancel();
        self.tasks.close();
        let rest_done = tokio::time::timeout_at(deadline, self.tasks.wait()).await.is_ok();
        if !(comet_done && rest_done) {
            warn!("shutdown grace period ran out");
        }
        comet_done && rest_done
    }
}
