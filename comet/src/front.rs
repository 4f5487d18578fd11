//! The HTTP front end: comet's HTTP port (goim's 3102, and 3103 over TLS). WebSocket upgrades at
//! `/sub` (handed to `websocket`), HTTP long-polling at `/poll` (`long_poll`), and the demo
//! page. A small HTTP/1.1 server over `http`'s parsing: bounded heads and bodies, keep-alive,
//! `Content-Length` bodies only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::connection::Peer;
use crate::context::Context;
use crate::http::{HeadError, Request, Response, error_response, read_request, read_request_after};
use crate::long_poll::{self, PollSessions};
use crate::metrics::TransportLabel;
use crate::websocket;

/// A file served at a fixed path (the demo page and `goim.js`).
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The HTTP port's own state, beside the shared context: what only this front end needs.
pub struct Front {
    pub ctx: Arc<Context>,
    /// The long-poll sessions, between their polls. Shared with `long_poll::sweep`'s task, which
    /// expires them and closes them all when comet stops.
    pub sessions: Arc<PollSessions>,
    /// The demo page and client, when the binary provides them (`Comet::serve_assets`).
    pub assets: OnceLock<Vec<Asset>>,
}

impl Front {
    pub fn new(ctx: Arc<Context>) -> Front {
        Front { ctx, sessions: Arc::default(), assets: OnceLock::new() }
    }
}

/// Serves one connection on the HTTP port: its first request decides whether it becomes a
/// WebSocket; otherwise requests are answered one after another until it closes or idles.
///
/// The requests (and the upgrade) run as a boxed future apart from the WebSocket that may
/// follow, so a WebSocket's task does not carry HTTP parsing state for its whole life (see
/// [`connection::serve`](crate::connection::serve)).
pub fn serve<S>(front: Arc<Front>, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = Box::pin(serve_requests(front, stream, peer));
    async move {
        let websocket = match requests.await {
            Some((ctx, stream, peer)) => websocket::serve(ctx, stream, peer),
            None => return,
        };
        websocket.await
    }
}

/// Answers requests until the connection closes, idles, or upgrades; an upgraded connection is
/// returned with its WebSocket peer. (Not an `async fn`, which would hold its arguments twice
/// for as long as a long-poll waits; see `connection::Conn::run`.)
#[expect(clippy::manual_async_fn, reason = "an `async fn` would store its arguments twice")]
fn serve_requests<S>(
    front: Arc<Front>,
    mut stream: S,
    peer: SocketAddr,
) -> impl Future<Output = Option<(Arc<Context>, S, Peer)>> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let cfg = &front.ctx.config.websocket;
        let head = timeout(
            front.ctx.config.protocol.handshake_timeout,
            read_request(&mut stream, cfg.max_request_head),
        )
        .await;
        let (mut req, mut leftover) = respond_to_bad_head(&front.ctx, &mut stream, head, true).await?;
        loop {
            if req.path() == "/sub" && req.header("upgrade").is_some() {
                if front.ctx.drain.is_started() {
                    let refusal = error_response("503 Service Unavailable", "draining");
                    let _ = timeout(
                        front.ctx.config.protocol.write_timeout,
                        stream.write_all(refusal.as_bytes()),
                    )
                    .await;
                    return None;
                }
                let ws = websocket::upgrade(&front.ctx, &mut stream, peer, req, leftover).await?;
                return Some((front.ctx.clone(), stream, ws));
            }
            let body = match read_body(&front.ctx, &mut stream, &req, &mut leftover).await {
                Ok(b) => b,
                Err(resp) => {
                    let _ = write(&mut stream, &resp, true, &front.ctx).await;
                    return None;
                }
            };
            // Not cut short by shutdown: a waiting poll answers with op 6 when comet stops, and
            // every other route is bounded by its own deadline.
            let resp = route(&front, peer, &req, body).await;
            let close = req.wants_close() || front.ctx.shutdown.is_cancelled();
            let written = write(&mut stream, &resp, close, &front.ctx).await.is_ok();
            if let Some(receipt) = resp.receipt.filter(|_| written) {
                receipt.confirm();
            }
            if !written || close {
                return None;
            }
            let next = tokio::select! {
                r = timeout(cfg.idle_timeout, read_request_after(&mut stream, leftover, cfg.max_request_head)) => r,
                _ = front.ctx.shutdown.cancelled() => return None,
            };
            match respond_to_bad_head(&front.ctx, &mut stream, next, false).await {
                Some((r, rest)) => (req, leftover) = (r, rest),
                None => return None,
            }
        }
    }
}

type Head = Result<Result<(Request, BytesMut), HeadError>, tokio::time::error::Elapsed>;

/// The request, or `None` after answering a bad head (or seeing the client leave). `first`: the
/// connection's first request, whose head must arrive within the handshake timeout (a later
/// one's wait is the keep-alive idle timeout, not counted).
async fn respond_to_bad_head<S: AsyncWrite + Unpin>(
    ctx: &Context,
    stream: &mut S,
    head: Head,
    first: bool,
) -> Option<(Request, BytesMut)> {
    match head {
        Ok(Ok(r)) => Some(r),
        Ok(Err(HeadError::Closed)) => None,
        Err(_) => {
            if first {
                ctx.metrics.handshake_timeout("request_head");
            }
            None
        }
        Ok(Err(e)) => {
            ctx.metrics.bad_input.get_or_create(&TransportLabel { transport: "http" }).inc();
            let status = if matches!(e, HeadError::TooLarge(_)) {
                "431 Request Header Fields Too Large"
            } else {
                "400 Bad Request"
            };
            let _ = stream.write_all(error_response(status, &e.to_string()).as_bytes()).await;
            None
        }
    }
}

/// Reads a `Content-Length` body of at most the route's limit.
async fn read_body<S: AsyncRead + Unpin>(
    ctx: &Context,
    stream: &mut S,
    req: &Request,
    leftover: &mut BytesMut,
) -> Result<Bytes, Response> {
    if req.header("transfer-encoding").is_some() {
        return Err(Response::error("411 Length Required", "protocol", "send a Content-Length body"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| Response::error("400 Bad Request", "protocol", "bad Content-Length"))?,
    };
    let limit = match req.path() {
        "/poll/auth" => ctx.config.protocol.max_body,
        "/poll/send" => ctx.config.long_poll.max_send_bytes,
        _ => 0,
    };
    if len > limit {
        ctx.metrics.bad_input.get_or_create(&TransportLabel { transport: "http" }).inc();
        return Err(Response::error(
            "413 Payload Too Large",
            "too_large",
            &format!("body limit is {limit} bytes"),
        ));
    }
    // One deadline for the whole body, not one per read: a client trickling a byte at a time
    // (slowloris) is cut off after the handshake timeout, not after max_body of them.
    let deadline = tokio::time::Instant::now() + ctx.config.protocol.handshake_timeout;
    while leftover.len() < len {
        leftover.reserve(len - leftover.len());
        match tokio::time::timeout_at(deadline, stream.read_buf(leftover)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(Response::error("400 Bad Request", "protocol", "body ended early")),
            Err(_) => {
                ctx.metrics.handshake_timeout("request_body");
                return Err(Response::error(
                    "408 Request Timeout",
                    "timeout",
                    "the body did not arrive within the handshake timeout",
                ));
            }
        }
    }
    Ok(leftover.split_to(len).freeze())
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    resp: &Response,
    close: bool,
    ctx: &Context,
) -> Result<(), ()> {
    let mut out = BytesMut::from(resp.head(close).as_bytes());
    out.extend_from_slice(&resp.body);
    // Flushed: only then has all of it left this process (a TLS stream may buffer), which is
    // what a poll's receipt reports.
    let written = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    match timeout(ctx.config.protocol.write_timeout, written).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn route(front: &Front, peer: SocketAddr, req: &Request, body: Bytes) -> Response {
    let method = req.method.as_str();
    match (method, req.path()) {
        ("OPTIONS", p) if p.starts_with("/poll") => preflight(),
        // Auth and send are boxed: a long-poll connection spends its life waiting in a poll, and
        // their state would make every such connection's future larger.
        ("POST", "/poll/auth") => {
            let cookie = req.header("cookie").unwrap_or_default().to_string();
            let recover = req.query("recover");
            Box::pin(long_poll::auth(&front.ctx, &front.sessions, peer, cookie, body, recover)).await
        }
        ("GET", "/poll") => {
            long_poll::poll(
                &front.ctx,
                &front.sessions,
                req.query("sid"),
                req.query("timeout"),
                req.query("ack"),
            )
            .await
        }
        ("POST", "/poll/send") => {
            Box::pin(long_poll::send(&front.ctx, &front.sessions, req.query("sid"), body)).await
        }
        (_, "/poll" | "/poll/auth" | "/poll/send") => {
            Response::error("405 Method Not Allowed", "method", "see the long-polling protocol")
        }
        ("GET", "/sub") => {
            Response::error("400 Bad Request", "upgrade", "this path needs a WebSocket upgrade")
        }
        ("GET", path) => asset(front, path),
        _ => Response::error("404 Not Found", "not_found", "not found"),
    }
}

fn preflight() -> Response {
    Response::empty("204 No Content")
}

fn asset(front: &Front, path: &str) -> Response {
    let path = if path == "/" { "/index.html" } else { path };
    let found = front
        .ctx
        .config
        .websocket
        .demo
        .then(|| front.assets.get())
        .flatten()
        .and_then(|a| a.iter().find(|a| a.path == path));
    match found {
        Some(a) => Response {
            status: "200 OK",
            content_type: a.content_type,
            body: Bytes::from_static(a.body),
            cors: false,
            receipt: None,
            retry_after_secs: 0,
        },
        None => Response::error("404 Not Found", "not_found", "not found"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Issue #5: memory per idle connection. The task of an HTTP-port connection holds only the
    /// box of its current phase, and a long-poll that waits holds the requests phase; these
    /// bounds fail if handshake or parsing state creeps back into either (see `connection`'s
    /// own test for the WebSocket session).
    #[test]
    fn a_waiting_http_connection_holds_small_futures() {
        let task = future_size(|(s, st, p): (Arc<Front>, TcpStream, SocketAddr)| serve(s, st, p));
        assert!(task <= 64, "the HTTP port's task future is {task} bytes");
        let requests =
            future_size(|(s, st, p): (Arc<Front>, TcpStream, SocketAddr)| serve_requests(s, st, p));
        assert!(requests <= 1024, "the requests phase (a waiting long-poll) is {requests} bytes");
    }
}
