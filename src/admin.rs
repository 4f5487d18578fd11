//! The admin listener: Prometheus metrics and health probes, and comet's drain trigger.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Admin {
    pub registry: Arc<Registry>,
    /// False until everything is serving, and again once shutdown starts (`/readyz` says 503).
    pub ready: Arc<AtomicBool>,
}

/// Starts (or joins) a drain and resolves, when it is over, to the text `/drain` answers with.
pub type DrainFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(admin)
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn ready(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub async fn serve(listener: TcpListener, admin: Admin, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_router(listener, router(admin), shutdown).await
}

/// [`router`] plus `GET /drain` (a Kubernetes preStop `httpGet` can only GET): `/readyz` turns
/// 503 at once, then `drain` runs, and the request is answered when the drain is over (200, its
/// report as text). A second request while draining waits for the same drain.
pub fn router_with_drain(admin: Admin, drain: DrainFn) -> Router {
    let ready = admin.ready.clone();
    let handler = move || {
        let (ready, drain) = (ready.clone(), drain.clone());
        async move {
            ready.store(false, Ordering::Release);
            let mut text = drain().await;
            text.push('\n');
            (StatusCode::OK, text)
        }
    };
    router(admin).route("/drain", get(handler))
}

pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
