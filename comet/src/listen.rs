//! The listeners comet serves and their accept loops: TCP (packets on the stream), the HTTP port
//! (WebSocket and long-polling), and the HTTP port over TLS. Each accepted socket becomes one task
//! on the context's tracker, under one of the `max_connections` permits; the transport serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use crate::config::Config;
use crate::context::Context;
use crate::disconnect::Disconnect;
use crate::front::{self, Front};
use crate::http::retry_after_secs;
use crate::metrics::TransportLabel;
use crate::tcp;
use crate::tls::{self, Acceptor};

/// The listeners comet serves; bind them before `Comet::start` (tests bind port 0).
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    pub websocket: Vec<TcpListener>,
    /// WSS listeners with the TLS configuration loaded from `websocket.tls`.
    pub tls: Vec<(TcpListener, Acceptor)>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let mut out = Listeners { tcp: Vec::new(), websocket: Vec::new(), tls: Vec::new() };
        if !config.websocket.tls.bind.is_empty() {
            let acceptor = Acceptor::load(&config.websocket.tls)?;
            for addr in &config.websocket.tls.bind {
                out.tls.push((bind(addr).await?, acceptor.clone()));
            }
        }
        for addr in &config.tcp.bind {
            out.tcp.push(bind(addr).await?);
        }
        for addr in &config.websocket.bind {
            out.websocket.push(bind(addr).await?);
        }
        Ok(out)
    }
}

async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves a TCP listener until shutdown or the drain's start.
pub async fn tcp(ctx: Arc<Context>, listener: TcpListener) {
    // A drain closes the TCP listeners at once: a TCP client only ever connects to open a session.
    let until = ctx.drain.started.clone();
    let served = ctx.clone();
    accept_loop(ctx, listener, "tcp", Refusal::Packet, until, move |stream, peer| {
        tcp::serve(served.clone(), stream, peer)
    })
    .await
}

/// Serves an HTTP-port listener until shutdown.
pub async fn http(front: Arc<Front>, listener: TcpListener) {
    // Open while draining: long-poll sessions may poll on a new connection to be told to go.
    let until = front.ctx.shutdown.clone();
    let ctx = front.ctx.clone();
    accept_loop(ctx, listener, "http", Refusal::Http, until, move |stream, peer| {
        front::serve(front.clone(), stream, peer)
    })
    .await
}

/// Serves a WSS listener until shutdown.
pub async fn tls(front: Arc<Front>, listener: TcpListener, acceptor: Acceptor) {
    // Open while draining, like the plain HTTP port (long-poll sessions over TLS).
    let until = front.ctx.shutdown.clone();
    let ctx = front.ctx.clone();
    accept_loop(ctx, listener, "wss", Refusal::Close, until, move |stream, peer| {
        tls::serve(front.clone(), acceptor.clone(), stream, peer)
    })
    .await
}

/// How a listener tells a client its address holds too many connections
/// (`admission.max_per_ip`).
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// An op-6 packet (`too_many_connections`, with `reconnect_after_ms`): goim's TCP framing.
    Packet,
    /// `429 Too Many Requests` with `Retry-After`, before reading the request.
    Http,
    /// Closed at once: a refusal inside TLS would cost the handshake it is meant to save.
    Close,
}

/// Accepts connections until shutdown, one task each, at most `max_connections` at once, and
/// at most `admission.max_per_ip` from one address (the rest are told so and closed).
///
/// `until` ends the loop (and closes the listener, so connecting is refused): the shutdown
/// token, or for the TCP listeners the drain's start.
async fn accept_loop<F, Fut>(
    ctx: Arc<Context>,
    listener: TcpListener,
    transport: &'static str,
    refusal: Refusal,
    until: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let label = TransportLabel { transport };
    loop {
        let permit = tokio::select! {
            p = ctx.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = until.cancelled() => return,
            _ = ctx.shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, transport, "accept failed");
                    ctx.metrics.accept_errors.inc();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = until.cancelled() => return,
            _ = ctx.shutdown.cancelled() => return,
        };
        if ctx.config.tcp.nodelay {
            let _ = stream.set_nodelay(true);
        }
        ctx.metrics.accepted.get_or_create(&label).inc();
        let span = debug_span!("conn", peer = %peer, transport);
        let Some(counted) = ctx.admission.enter(peer.ip()) else {
            ctx.metrics.refused("per_ip");
            debug!(peer = %peer, transport, "too many connections from this address");
            let refused = refuse(ctx.clone(), stream, refusal);
            ctx.tasks.spawn(
                async move {
                    refused.await;
                    drop(permit);
                }
                .instrument(span),
            );
            continue;
        };
        let fut = serve(stream, peer);
        ctx.tasks.spawn(
            async move {
                fut.await;
                drop((counted, permit));
            }
            .instrument(span),
        );
    }
}

/// How long a refused connection is read (and dropped) before it closes: enough for a client to
/// read its refusal, short because an address over its limit may be flooding this comet.
const REFUSAL_LINGER: Duration = Duration::from_millis(250);

/// Tells a client over `admission.max_per_ip` so, then closes. What it sent meanwhile is read
/// and dropped for [`REFUSAL_LINGER`] first: closing with unread bytes would reset the
/// connection, and a reset can make the client lose the refusal it has not read yet.
async fn refuse(ctx: Arc<Context>, mut stream: TcpStream, refusal: Refusal) {
    let why = Disconnect::TooManyConnections;
    let out: Vec<u8> = match refusal {
        Refusal::Close => return,
        Refusal::Packet => why.packet(&ctx.config).to_bytes().to_vec(),
        Refusal::Http => {
            let after = why.reconnect_after(&ctx.config).unwrap_or_default();
            let body = serde_json::json!({
                "error": why.reason(),
                "message": "this address holds too many connections",
                "reconnect_after_ms": after.as_millis() as u64,
            })
            .to_string();
            format!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Retry-After: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n{body}",
                body.len(),
                retry_after_secs(after),
            )
            .into_bytes()
        }
    };
    let wt = ctx.config.protocol.write_timeout;
    if timeout(wt, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .is_err()
    {
        return;
    }
    let mut scratch = [0u8; 512];
    let _ = timeout(REFUSAL_LINGER, async {
        while let Ok(n) = stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
