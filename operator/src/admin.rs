//! The operator's admin port: `/metrics` (Prometheus text), `/healthz`, `/readyz`. A minimal
//! HTTP/1.1 responder: one request per connection, GET only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Admin {
    pub registry: Registry,
    /// `/readyz` answers 200 once set.
    pub ready: Arc<AtomicBool>,
}

fn response(code: u16, reason: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers one request line.
pub fn answer(admin: &Admin, request: &str) -> String {
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    match path {
        "/healthz" => response(200, "OK", "text/plain", "ok\n"),
        "/readyz" if admin.ready.load(Ordering::Acquire) => response(200, "OK", "text/plain", "ready\n"),
        "/readyz" => response(503, "Service Unavailable", "text/plain", "not ready\n"),
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
                Ok(()) => {
                    response(200, "OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", &text)
                }
                Err(_) => response(500, "Internal Server Error", "text/plain", "encoding failed\n"),
            }
        }
        _ => response(404, "Not Found", "text/plain", "not found\n"),
    }
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let Ok(n) = stream.read(&mut buf).await else { return };
            let request = String::from_utf8_lossy(&buf[..n]);
            let line = request.lines().next().unwrap_or_default().to_owned();
            let _ = stream.write_all(answer(&admin, &line).as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
