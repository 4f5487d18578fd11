//! `goim-comet`: client connections (TCP, WebSocket), the `goim.comet.Comet` gRPC server for
//! job, and a gRPC client of logic.
//!
//! ```toml
//! [admin]      # addr = "0.0.0.0:3100"; GET /drain is the preStop hook
//! [shutdown]   # grace = "20s", after the drain
//! [comet]      # goim_comet::Config; server_id defaults to $POD_NAME, else the hostname
//! [comet.drain] # timeout = "20s", rate = 500, reconnect_min = "1s", reconnect_jitter = "10s"
//! [grpc]       # goim_kit::grpc::ServerConfig; addr = "0.0.0.0:3109"
//! [logic_client] # goim_comet::logic::ClientConfig; addrs = ["127.0.0.1:3119"] (was [logic])
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use goim_comet::logic::{ClientConfig, GrpcLogic};
use goim_comet::{Comet, Disconnect, Listeners};
use goim_kit::Invalid;
use goim_kit::grpc::ServerConfig;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::{bind, wait};
use crate::admin;
use crate::config::{Admin, Shutdown};
use crate::process::{Settings, Tier};
use crate::start::logged;
use crate::stop::Stop;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CometSettings {
    pub admin: Admin,
    pub shutdown: Shutdown,
    pub comet: goim_comet::Config,
    pub grpc: ServerConfig,
    /// The gRPC client of logic (`[logic_client]`; `[logic]` until 0.2).
    pub logic_client: ClientConfig,
}

impl Default for CometSettings {
    fn default() -> CometSettings {
        CometSettings {
            admin: Admin::on_port(3100),
            shutdown: Default::default(),
            comet: Default::default(),
            grpc: ServerConfig::on_port(goim_comet::grpc::PORT),
            logic_client: Default::default(),
        }
    }
}

impl Settings for CometSettings {
    const RENAMED: &'static [(&'static str, &'static str)] = &[("logic", "logic_client")];

    /// The defaults leave `comet.server_id` out, so that [`Settings::from_environment`] can tell
    /// an id the file or an override gave from none.
    fn defaults() -> toml::Table {
        let mut table =
            toml::Table::try_from(CometSettings::default()).expect("the defaults serialize to TOML");
        if let Some(comet) = table.get_mut("comet").and_then(toml::Value::as_table_mut) {
            comet.remove("server_id");
        }
        table
    }

    /// An unset `comet.server_id` is the pod name (`POD_NAME`, from the downward API), else the
    /// hostname (which Kubernetes also sets to the pod name).
    fn from_environment(table: &mut toml::Table, env: &HashMap<String, String>) {
        let comet = table.entry("comet").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(comet) = comet.as_table_mut() else {
            return; // not a table: deserializing reports it
        };
        if !comet.contains_key("server_id")
            && let Some(id) = env.get("POD_NAME").filter(|v| !v.is_empty()).cloned().or_else(hostname)
        {
            comet.insert("server_id".into(), toml::Value::String(id));
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        self.admin.validate()?;
        self.shutdown.validate()?;
        self.comet.validate()?;
        self.grpc.validate()?;
        self.logic_client.validate()
    }
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// Where a running comet listens (ports resolved).
#[derive(Clone, Debug)]
pub struct CometAddrs {
    pub tcp: Vec<SocketAddr>,
    pub websocket: Vec<SocketAddr>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

pub struct CometProcess {
    pub addrs: CometAddrs,
    comet: Comet,
    /// Stops the gRPC server; cancelled after the clients are gone.
    grpc_stop: CancellationToken,
    admin_stop: CancellationToken,
    /// The gRPC and admin servers.
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
    grace: Duration,
}

impl CometProcess {
    pub fn comet(&self) -> &Comet {
        &self.comet
    }
}

impl Tier for CometProcess {
    type Settings = CometSettings;
    const NAME: &'static str = "goim-comet";

    async fn start(s: CometSettings) -> anyhow::Result<CometProcess> {
        let listeners = Listeners::bind(&s.comet).await?;
        let grpc_l = bind(&s.grpc.addr, "grpc").await?;
        let admin_l = bind(&s.admin.addr, "admin").await?;
        let addrs = CometAddrs {
            tcp: listeners.tcp.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?,
            websocket: listeners.websocket.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?,
            grpc: grpc_l.local_addr()?,
            admin: admin_l.local_addr()?,
        };

        let logic = GrpcLogic::new(&s.logic_client)?;
        let mut registry = Registry::default();
        let metrics = Arc::new(goim_comet::Metrics::default());
        metrics.register(&mut registry);
        let comet = Comet::new(s.comet.clone(), Arc::new(logic), metrics);

        let tasks = TaskTracker::new();
        let (grpc_stop, admin_stop) = (CancellationToken::new(), CancellationToken::new());
        let ready = Arc::new(AtomicBool::new(false));
        let (served, stop, grpc_config) = (comet.clone(), grpc_stop.clone(), s.grpc.clone());
        tasks.spawn(logged("comet gRPC server", async move {
            goim_comet::grpc::serve(grpc_l, served, &grpc_config, stop).await
        }));
        let admin = admin::Admin { registry: Arc::new(registry), ready: ready.clone() };
        let drained = comet.clone();
        let drain: admin::DrainFn = Arc::new(move || {
            let comet = drained.clone();
            Box::pin(async move { comet.drain().await.to_string() })
        });
        let router = admin::router_with_drain(admin, drain);
        let stop = admin_stop.clone();
        tasks.spawn(logged("admin server", async move { admin::serve_router(admin_l, router, stop).await }));
        // The demo page and goim.js on the WebSocket port (while `comet.websocket.demo` is on).
        comet.serve_assets(crate::web::assets());
        comet.start(listeners);
        // Not ready after all if a `GET /drain` came in while starting.
        ready.store(!comet.is_draining(), Ordering::Release);
        info!(server_id = comet.server_id(), tcp = ?addrs.tcp, websocket = ?addrs.websocket, grpc = %addrs.grpc,
              admin = %addrs.admin, logic = ?s.logic_client.addrs, "goim-comet serving");
        Ok(CometProcess { addrs, comet, grpc_stop, admin_stop, tasks, ready, grace: s.shutdown.grace })
    }

    /// Not ready → the drain (started here unless the preStop hook's `GET /drain` started it;
    /// then this waits for that one) → the shutdown order: tell whoever is left (op 6
    /// `shutdown`) → the gRPC server stops (job pushes to the comet until then) → admin → wait.
    ///
    /// The two timeouts add up, they do not overlap: the drain ends by `comet.drain.timeout`
    /// (counted from its start, which may be the preStop hook's), and the shutdown after it
    /// gets the whole `shutdown.grace`. So SIGTERM to exit is at most `drain.timeout +
    /// shutdown.grace` (plus the op-6 writes of the clients cut at the timeout, which the grace
    /// covers), and a pod's termination grace period must cover that sum.
    async fn stop(self) -> bool {
        self.ready.store(false, Ordering::Release);
        // Bounded by comet.drain.timeout, before the grace period starts.
        let report = self.comet.drain().await;
        info!(%report, "drained");
        let mut stop = Stop::new(self.grace);
        let grace = stop.remaining();
        stop.bounded(
            "every client left told (op 6 shutdown) and closed",
            self.comet.stop(Disconnect::Shutdown, grace),
        )
        .await;
        stop.signal("the gRPC server and admin stop", || {
            self.grpc_stop.cancel();
            self.admin_stop.cancel();
        });
        stop.wait("the gRPC server and admin end", wait(&self.tasks)).await;
        stop.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::load;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_unset_server_id_is_the_pod_name() {
        let s: CometSettings = load(None, env(&[("POD_NAME", "goim-comet-3")])).unwrap();
        assert_eq!(s.comet.server_id, "goim-comet-3");
    }

    #[test]
    fn an_override_beats_the_pod_name_and_the_file() {
        let dir = std::env::temp_dir().join(format!("goim-comet-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("comet.toml");
        std::fs::write(&path, "[comet]\nserver_id = \"from-file\"\n").unwrap();
        let from_file: CometSettings = load(Some(&path), env(&[("POD_NAME", "pod")])).unwrap();
        assert_eq!(from_file.comet.server_id, "from-file");
        let overridden: CometSettings =
            load(Some(&path), env(&[("POD_NAME", "pod"), ("GOIM_COMET__SERVER_ID", "comet-7")])).unwrap();
        assert_eq!(overridden.comet.server_id, "comet-7");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_admin_port_defaults_to_comets_and_an_admin_table_needs_its_addr() {
        let s: CometSettings = load(None, env(&[("POD_NAME", "p")])).unwrap();
        assert_eq!(s.admin.addr, "0.0.0.0:3100");
        let err =
            load::<CometSettings>(None, env(&[("POD_NAME", "p"), ("GOIM_ADMIN__PORT", "1")])).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }
}
