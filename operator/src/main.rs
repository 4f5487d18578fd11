//! `goim-operator`: runs the PushCluster controller against the cluster of the ambient
//! kubeconfig (in a pod: its ServiceAccount), with `/metrics`, `/healthz` and `/readyz` on
//! `GOIM_OPERATOR_ADMIN` (default `0.0.0.0:8080`). Logs: `GOIM_LOG_FORMAT=json` or text.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use goim_operator::admin::{self, Admin};
use goim_operator::controller::{self, Context};
use goim_operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use tracing::{error, info};

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if std::env::var("GOIM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let addr = std::env::var("GOIM_OPERATOR_ADMIN").unwrap_or_else(|_| "0.0.0.0:8080".into());
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
    info!(admin = %addr, "goim-operator starting");
    ready.store(true, Ordering::Release);
    let ctx = Arc::new(Context::new(client, metrics));
    controller::run(ctx, async {
        shutdown_signal().await;
        info!("shutting down");
    })
    .await;
    ExitCode::SUCCESS
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
