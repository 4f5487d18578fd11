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
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin::{self, Admin};
use crate::config::Config;
use crate::port::{InProcessComet, InProcessLogic};
use crate::process::Tier;
use crate::start::logged;
use crate::stop::Stop;

/// Where a running process listens (ports resolved, so tests can bind port 0).
#[derive(Clone, Debug)]
pub struct Addrs {
    pub tcp: Vec<SocketAddr>,
    pub websocket: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

pub struct Embedded {
    pub addrs: Addrs,
    comet: Comet,
    /// Stops logic's HTTP API (no new pushes; requests in progress finish).
    http_stop: CancellationToken,
    http_task: JoinHandle<()>,
    /// Closes the in-process queue: job delivers what it holds, then ends.
    queue_close: CancellationToken,
    /// Stops job at once; used only when draining the queue outlasts its share of the grace.
    job_stop: CancellationToken,
    job_task: JoinHandle<()>,
    admin_stop: CancellationToken,
    admin_task: JoinHandle<()>,
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
            wss: listeners.tls.iter().map(|(l, _)| l.local_addr()).collect::<Result<_, _>>()?,
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

        let (http_stop, queue_close, job_stop, admin_stop) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let ready = Arc::new(AtomicBool::new(false));

        let source = goim_job::MemoryQueue::new(rx).close_on(queue_close.clone());
        let stop = job_stop.clone();
        let job_task = tokio::spawn(logged("job", async move { job.run(source, stop).await }));
        // Key and push token reloads; ends when shutdown starts (not awaited: it holds nothing).
        let (watched, stop) = (logic.clone(), http_stop.clone());
        tokio::spawn(async move { watched.watch_keys(stop).await });
        let stop = http_stop.clone();
        let http_task =
            tokio::spawn(logged(
                "logic HTTP server",
                async move { goim_logic::serve(http, logic, stop).await },
            ));
        let admin = Admin { registry: Arc::new(registry), ready: ready.clone() };
        let stop = admin_stop.clone();
        let admin_task =
            tokio::spawn(logged("admin server", async move { admin::serve(admin_l, admin, stop).await }));
        comet.serve_assets(crate::web::assets());
        comet.start(listeners);
        ready.store(true, Ordering::Release);
        info!(tcp = ?addrs.tcp, websocket = ?addrs.websocket, http = %addrs.http, admin = %addrs.admin, "goim-rs serving");
        Ok(Embedded {
            addrs,
            comet,
            http_stop,
            http_task,
            queue_close,
            job_stop,
            job_task,
            admin_stop,
            admin_task,
            ready,
            grace: config.shutdown.grace,
        })
    }

    pub fn comet(&self) -> &Comet {
        &self.comet
    }

    /// Shuts down in order: not ready; the push API stops taking pushes; job delivers every push
    /// the API accepted; every client gets op 6 `shutdown` and is closed; the rest stops. Bounded
    /// by the grace period; returns whether everything finished within it.
    pub async fn stop(self) -> bool {
        let mut stop = Stop::new(self.grace);
        // Up to half the grace for pushes already accepted; the rest for telling clients.
        let drain_by = Instant::now() + self.grace / 2;
        stop.signal("not ready", || self.ready.store(false, Ordering::Release));
        stop.signal("the push API stops taking pushes", || self.http_stop.cancel());
        let mut http_task = self.http_task;
        if !stop
            .wait_until("push API requests finish", drain_by, async { (&mut http_task).await.is_ok() })
            .await
        {
            http_task.abort();
        }
        stop.signal("the queue closes", || self.queue_close.cancel());
        let mut job_task = self.job_task;
        let delivered = stop
            .wait_until("job delivers every accepted push", drain_by, async { (&mut job_task).await.is_ok() })
            .await;
        if !delivered {
            stop.signal("job is stopped", || self.job_stop.cancel());
            stop.wait("job ends", async { (&mut job_task).await.is_ok() }).await;
        }
        let remaining = stop.remaining();
        stop.bounded(
            "every client told (op 6 shutdown) and closed",
            self.comet.stop(Disconnect::Shutdown, remaining),
        )
        .await;
        stop.signal("admin stops", || self.admin_stop.cancel());
        stop.wait("admin ends", async { self.admin_task.await.is_ok() }).await;
        stop.finish()
    }
}

/// `goim` is a binary like the tiers: `process::main::<Embedded>()`.
impl Tier for Embedded {
    type Settings = Config;
    const NAME: &'static str = "goim";
    const ABOUT: &'static str = "goim-rs: a goim-compatible push server. Without a config file it runs with \
        the embedded defaults: TCP 3101, WebSocket 3102 (/sub), push API 3111, admin 3100.";

    async fn start(config: Config) -> anyhow::Result<Embedded> {
        Embedded::start(config).await
    }

    async fn stop(self) -> bool {
        Embedded::stop(self).await
    }
}
