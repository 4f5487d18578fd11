//! comet's HTTP port (goim's 3102, and 3103 over TLS): WebSocket upgrades at `/sub`, HTTP
//! long-polling at `/poll`, and the demo page. A small HTTP/1.1 server: bounded heads and
//! bodies, keep-alive, `Content-Length` bodies only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::comet::State;
use crate::connection::Peer;
use crate::long_poll;
use crate::metrics::TransportLabel;
use crate::websocket::{self, Request, error_response, read_request, read_request_after};

/// A file served at a fixed path (the demo page and `goim.js`).
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// A response; always a complete body with `Content-Length`.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Long-poll answers allow any origin: the session id is the credential, no cookies.
    pub cors: bool,
    /// A poll response with packets: its seq goes in a header, and it learns whether the
    /// response was written (confirmed after a complete write, failed when dropped).
    pub receipt: Option<long_poll::Receipt>,
}

impl Response {
    pub fn json(status: &'static str, value: serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
            cors: true,
            receipt: None,
        }
    }

    pub fn error(status: &'static str, error: &str, message: &str) -> Response {
        Response::json(status, serde_json::json!({"error": error, "message": message}))
    }

    pub fn packets(body: Bytes) -> Response {
        Response {
            status: "200 OK",
            content_type: "application/octet-stream",
            body,
            cors: true,
            receipt: None,
        }
    }

    pub fn empty(status: &'static str) -> Response {
        Response { status, content_type: "text/plain", body: Bytes::new(), cors: true, receipt: None }
    }

    fn head(&self, close: bool) -> String {
        let mut h = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.cors {
            h.push_str("Access-Control-Allow-Origin: *\r\n");
        }
        if let Some(r) = &self.receipt {
            let name = long_poll::SEQ_HEADER;
            h.push_str(&format!("{name}: {}\r\nAccess-Control-Expose-Headers: {name}\r\n", r.seq()));
        }
        if close {
            h.push_str("Connection: close\r\n");
        }
        h.push_str("\r\n");
        h
    }
}

pub async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    // Open while draining: long-poll sessions may poll on a new connection to be told to go.
    let until = state.shutdown.clone();
    crate::comet::accept_loop(state, listener, "http", until, |state, stream: TcpStream, peer| {
        serve(state, stream, peer)
    })
    .await
}

/// Serves one connection on the HTTP port: its first request decides whether it becomes a
/// WebSocket; otherwise requests are answered one after another until it closes or idles.
///
/// The requests (and the upgrade) run as a boxed future apart from the WebSocket that may
/// follow, so a WebSocket's task does not carry HTTP parsing state for its whole life (see
/// [`connection::serve`](crate::connection::serve)).
pub fn serve<S>(state: Arc<State>, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = Box::pin(serve_requests(state, stream, peer));
    async move {
        let websocket = match requests.await {
            Some((state, stream, peer)) => websocket::serve(state, stream, peer),
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
    state: Arc<State>,
    mut stream: S,
    peer: SocketAddr,
) -> impl Future<Output = Option<(Arc<State>, S, Peer)>> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let cfg = &state.config.websocket;
        let head =
            timeout(state.config.protocol.handshake_timeout, read_request(&mut stream, cfg.max_request_head))
                .await;
        let (mut req, mut leftover) = respond_to_bad_head(&state, &mut stream, head).await?;
        loop {
            if req.path() == "/sub" && req.header("upgrade").is_some() {
                if state.drain.is_started() {
                    let refusal = error_response("503 Service Unavailable", "draining");
                    let _ =
                        timeout(state.config.protocol.write_timeout, stream.write_all(refusal.as_bytes()))
                            .await;
                    return None;
                }
                let ws = websocket::upgrade(&state, &mut stream, peer, req, leftover).await?;
                return Some((state, stream, ws));
            }
            let body = match read_body(&state, &mut stream, &req, &mut leftover).await {
                Ok(b) => b,
                Err(resp) => {
                    let _ = write(&mut stream, &resp, true, &state).await;
                    return None;
                }
            };
            // Not cut short by shutdown: a waiting poll answers with op 6 when comet stops, and
            // every other route is bounded by its own deadline.
            let resp = route(&state, peer, &req, body).await;
            let close = req.wants_close() || state.shutdown.is_cancelled();
            let written = write(&mut stream, &resp, close, &state).await.is_ok();
            if let Some(receipt) = resp.receipt.filter(|_| written) {
                receipt.confirm();
            }
            if !written || close {
                return None;
            }
            let next = tokio::select! {
                r = timeout(cfg.idle_timeout, read_request_after(&mut stream, leftover, cfg.max_request_head)) => r,
                _ = state.shutdown.cancelled() => return None,
            };
            match respond_to_bad_head(&state, &mut stream, next).await {
                Some((r, rest)) => (req, leftover) = (r, rest),
                None => return None,
            }
        }
    }
}

type Head = Result<Result<(Request, BytesMut), websocket::HeadError>, tokio::time::error::Elapsed>;

/// The request, or `None` after answering a bad head (or seeing the client leave).
async fn respond_to_bad_head<S: AsyncWrite + Unpin>(
    state: &State,
    stream: &mut S,
    head: Head,
) -> Option<(Request, BytesMut)> {
    match head {
        Ok(Ok(r)) => Some(r),
        Ok(Err(websocket::HeadError::Closed)) | Err(_) => None,
        Ok(Err(e)) => {
            state.metrics.bad_input.get_or_create(&TransportLabel { transport: "http" }).inc();
            let status = if matches!(e, websocket::HeadError::TooLarge(_)) {
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
    state: &State,
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
        "/poll/auth" => state.config.protocol.max_body,
        "/poll/send" => state.config.long_poll.max_send_bytes,
        _ => 0,
    };
    if len > limit {
        state.metrics.bad_input.get_or_create(&TransportLabel { transport: "http" }).inc();
        return Err(Response::error(
            "413 Payload Too Large",
            "too_large",
            &format!("body limit is {limit} bytes"),
        ));
    }
    while leftover.len() < len {
        leftover.reserve(len - leftover.len());
        let read = timeout(state.config.protocol.handshake_timeout, stream.read_buf(leftover)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Response::error("400 Bad Request", "protocol", "body ended early")),
        }
    }
    Ok(leftover.split_to(len).freeze())
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    resp: &Response,
    close: bool,
    state: &State,
) -> Result<(), ()> {
    let mut out = BytesMut::from(resp.head(close).as_bytes());
    out.extend_from_slice(&resp.body);
    // Flushed: only then has all of it left this process (a TLS stream may buffer), which is
    // what a poll's receipt reports.
    let written = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    match timeout(state.config.protocol.write_timeout, written).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn route(state: &Arc<State>, peer: SocketAddr, req: &Request, body: Bytes) -> Response {
    let method = req.method.as_str();
    match (method, req.path()) {
        ("OPTIONS", p) if p.starts_with("/poll") => preflight(),
        // Auth and send are boxed: a long-poll connection spends its life waiting in a poll, and
        // their state would make every such connection's future larger.
        ("POST", "/poll/auth") => {
            let cookie = req.header("cookie").unwrap_or_default().to_string();
            Box::pin(long_poll::auth(state, peer, cookie, body)).await
        }
        ("GET", "/poll") => {
            long_poll::poll(state, req.query("sid"), req.query("timeout"), req.query("ack")).await
        }
        ("POST", "/poll/send") => Box::pin(long_poll::send(state, req.query("sid"), body)).await,
        (_, "/poll" | "/poll/auth" | "/poll/send") => {
            Response::error("405 Method Not Allowed", "method", "see the long-polling protocol")
        }
        ("GET", "/sub") => {
            Response::error("400 Bad Request", "upgrade", "this path needs a WebSocket upgrade")
        }
        ("GET", path) => asset(state, path),
        _ => Response::error("404 Not Found", "not_found", "not found"),
    }
}

fn preflight() -> Response {
    Response::empty("204 No Content")
}

fn asset(state: &State, path: &str) -> Response {
    let path = if path == "/" { "/index.html" } else { path };
    let found = state
        .config
        .websocket
        .demo
        .then(|| state.assets.get())
        .flatten()
        .and_then(|a| a.iter().find(|a| a.path == path));
    match found {
        Some(a) => Response {
            status: "200 OK",
            content_type: a.content_type,
            body: Bytes::from_static(a.body),
            cors: false,
            receipt: None,
        },
        None => Response::error("404 Not Found", "not_found", "not found"),
    }
}

#[cfg(test)]
mod tests {
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
        let task = future_size(|(s, st, p): (Arc<State>, TcpStream, SocketAddr)| serve(s, st, p));
        assert!(task <= 64, "the HTTP port's task future is {task} bytes");
        let requests =
            future_size(|(s, st, p): (Arc<State>, TcpStream, SocketAddr)| serve_requests(s, st, p));
        assert!(requests <= 1024, "the requests phase (a waiting long-poll) is {requests} bytes");
    }
}
