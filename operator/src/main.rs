//! `goim-operator`: runs the PushCluster controller against the cluster of the ambient
//! kubeconfig (in a pod: its ServiceAccount), with `/metrics`, `/healthz` and `/readyz` on
//! `GOIM_OPERATOR_ADMIN` (default `0.0.0.0:8080`). Logs: `GOIM_LOG_FORMAT=json` or text.
//!
//! Several replicas may run: only the holder of the Lease `goim-operator` in `POD_NAMESPACE`
//! (default `goim-system`) reconciles (see `goim_operator::leader`). The others stand by, live
//! and ready, trying every retry period. The candidate's identity is `POD_NAME` (else the
//! hostname) plus a random suffix, so a restarted process is a new candidate. Durations, as
//! `"15s"`, `"500ms"`, `"1m"` or bare seconds:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GOIM_OPERATOR_LEASE_DURATION` | `15s` | a standby takes the lease this long after its last renewal |
//! | `GOIM_OPERATOR_RENEW_DEADLINE` | `10s` | the leader exits when it has not renewed for this long |
//! | `GOIM_OPERATOR_RETRY_PERIOD` | `2s` | how often the leader renews and a standby tries |
//!
//! The tier binaries (`goim-comet`, `goim-logic`, `goim-job`) must be beside this one, or in
//! `GOIM_OPERATOR_TIER_BINARIES`: each rendered file is checked with its binary's
//! `--check-config` before it is applied (`goim_operator::check`).
//!
//! Exit codes: 0 after SIGTERM/SIGINT (a leader first releases the lease, so a standby takes
//! over at once); 1 when leadership is lost or the API is unreachable (the pod restarts and
//! stands by again, as with controller-runtime); 64 for invalid settings.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use goim_operator::admin::{self, Admin};
use goim_operator::check::Checker;
use goim_operator::controller::{self, Context};
use goim_operator::leader::{self, Elector, Timing};
use goim_operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Invalid settings (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// How long reconciles in flight may run on after SIGTERM before they are dropped. Short: the
/// standby cannot lead until the lease is released after it, and a dropped reconcile loses
/// nothing (the next leader redoes it; every write is an idempotent server-side apply).
const RECONCILE_GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).is_some_and(|a| a == "--version" || a == "-V") {
        println!("goim-operator {} ({})", env!("CARGO_PKG_VERSION"), env!("GOIM_GIT_REVISION"));
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if std::env::var("GOIM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let addr = std::env::var("GOIM_OPERATOR_ADMIN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let lease = match lease_config() {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "invalid settings");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Every rendered file is checked by its tier's binary before it is applied (check.rs).
    let checker = match Checker::locate() {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot check rendered configuration");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot reach the Kubernetes API");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, addr, "cannot listen on the admin address");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(admin::serve(listener, Arc::new(Admin { registry, ready: ready.clone() })));
    info!(admin = %addr, identity = %lease.identity, "goim-operator starting");
    // Ready once the admin port serves, leader or not: readiness gates a rollout of the
    // operator's Deployment, and a standby that never became ready would block every rollout
    // (the new pod cannot lead while the old one holds the lease). No Service routes traffic
    // to the operator, so being ready claims nothing else; goim_operator_leader tells who leads.
    ready.store(true, Ordering::Release);

    // Set once by the signal task; read by standing-by, the controller and the exit path.
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let elector = Elector::new(client.clone(), lease);
    let timing = elector.config().timing;
    let mut leadership = tokio::select! {
        l = elector.acquire() => l,
        () = stopped(stop.clone()) => return ExitCode::SUCCESS,
    };
    metrics.leader.set(1);
    info!(identity = %elector.config().identity, "leading: starting the controller");

    let ctx = Arc::new(Context::new(client, metrics.clone()).with_checker(checker));
    let lost = tokio::select! {
        () = controller::run(ctx, stopped(stop.clone())) => None,
        lost = elector.hold(&mut leadership) => Some(lost),
        // The controller's graceful shutdown waits for every reconcile in flight; one that is
        // slow (config checks, comets' metrics on a loaded node) must not hold the exit past
        // the pod's grace period. A reconcile cut short is redone by the next leader: every
        // write is an idempotent server-side apply.
        () = async {
            stopped(stop.clone()).await;
            tokio::time::sleep(RECONCILE_GRACE).await;
        } => {
            warn!(grace = ?RECONCILE_GRACE, "reconciles still running at shutdown: abandoning them");
            None
        }
    };
    metrics.leader.set(0);
    if let Some(lost) = lost {
        // Returning drops the controller mid-reconcile: the lease may be another's any moment.
        error!(reason = %lost, "lost the lease: stopping the controller and exiting");
        return ExitCode::FAILURE;
    }
    let code = if *stop.borrow() {
        ExitCode::SUCCESS
    } else {
        error!("the controller stopped by itself");
        ExitCode::FAILURE
    };
    // Bounded: the kubelet's grace period is running, and an unreleased lease only delays the
    // standby by one lease duration.
    match tokio::time::timeout(timing.renew_deadline, elector.release(leadership)).await {
        Ok(Ok(true)) => info!("released the lease"),
        Ok(Ok(false)) => warn!("the lease was no longer ours to release"),
        Ok(Err(e)) => warn!(error = %e, "cannot release the lease; a standby takes it when it expires"),
        Err(_) => warn!("releasing the lease timed out; a standby takes it when it expires"),
    }
    code
}

/// The Lease settings from the environment (see the table above). Errors name the variables.
fn lease_config() -> Result<leader::Config, leader::Error> {
    const VARS: [(&str, &str); 3] = [
        ("lease_duration", "GOIM_OPERATOR_LEASE_DURATION"),
        ("renew_deadline", "GOIM_OPERATOR_RENEW_DEADLINE"),
        ("retry_period", "GOIM_OPERATOR_RETRY_PERIOD"),
    ];
    let duration = |var: &str, default: Duration| match std::env::var(var) {
        Ok(text) => {
            leader::parse_duration(&text).map_err(|_| leader::Error::BadSetting { var: var.into(), text })
        }
        Err(_) => Ok(default),
    };
    let defaults = Timing::default();
    let timing = Timing {
        lease_duration: duration(VARS[0].1, defaults.lease_duration)?,
        renew_deadline: duration(VARS[1].1, defaults.renew_deadline)?,
        retry_period: duration(VARS[2].1, defaults.retry_period)?,
    };
    let var = |field: &'static str| VARS.iter().find(|(f, _)| *f == field).map_or(field, |(_, v)| *v);
    timing.validate().map_err(|e| match e {
        leader::Error::Order { longer, longer_value, shorter, shorter_value } => {
            leader::Error::Order { longer: var(longer), longer_value, shorter: var(shorter), shorter_value }
        }
        e => e,
    })?;
    let non_empty = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let base = non_empty("POD_NAME").or_else(hostname).unwrap_or_else(|| "goim-operator".into());
    Ok(leader::Config {
        namespace: non_empty("POD_NAMESPACE").unwrap_or_else(|| "goim-system".into()),
        name: "goim-operator".into(),
        identity: format!("{}-{:08x}", base.trim(), rand::random::<u32>()),
        timing,
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Resolves once the signal task has seen SIGTERM or SIGINT.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // Err: the signal task ended without a signal; then nothing will stop us but the kubelet.
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// SIGTERM (the kubelet) or SIGINT.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGTERM; only SIGINT stops the operator");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
