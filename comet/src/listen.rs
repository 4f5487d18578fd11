//! The listeners comet serves and their accept loops: TCP (packets on the stream), the HTTP port
//! (WebSocket and long-polling), and the HTTP port over TLS. Each accepted socket becomes one task
//! on the context's tracker, under one of the `max_connections` permits; the transport serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug_span, warn};

use crate::config::Config;
use crate::context::Context;
use crate::front::{self, Front};
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
    accept_loop(ctx, listener, "tcp", until, move |stream, peer| tcp::serve(served.clone(), stream, peer))
        .await
}

/// Serves an HTTP-port listener until shutdown.
pub async fn http(front: Arc<Front>, listener: TcpListener) {
    // Open while draining: long-poll sessions may poll on a new connection to be told to go.
    let until = front.ctx.shutdown.clone();
    let ctx = front.ctx.clone();
    accept_loop(ctx, listener, "http", until, move |stream, peer| front::serve(front.clone(), stream, peer))
        .await
}

/// Serves a WSS listener until shutdown.
pub async fn tls(front: Arc<Front>, listener: TcpListener, acceptor: Acceptor) {
    // Open while draining, like the plain HTTP port (long-poll sessions over TLS).
    let until = front.ctx.shutdown.clone();
    let ctx = front.ctx.clone();
    accept_loop(ctx, listener, "wss", until, move |stream, peer| {
        tls::serve(front.clone(), acceptor.clone(), stream, peer)
    })
    .await
}

/// Accepts connections until shutdown, one task each, at most `max_connections` at once.
///
/// `until` ends the loop (and closes the listener, so connecting is refused): the shutdown
/// token, or for the TCP listeners the drain's start.
async fn accept_loop<F, Fut>(
    ctx: Arc<Context>,
    listener: TcpListener,
    transport: &'static str,
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
        let fut = serve(stream, peer);
        ctx.tasks.spawn(
            async move {
                fut.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}
