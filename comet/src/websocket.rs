//! WebSocket clients on comet's HTTP port (goim's 3102): `GET /sub` upgrades, then one goim packet
//! per binary (or text) message; pushes arrive as one op-9 message each.

mod frame;
mod handshake;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::debug;

use frame::{WsDecoder, WsEncoder};
use handshake::read_request;

use crate::comet::State;
use crate::connection::{self, Peer};
use crate::metrics::TransportLabel;

pub async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    crate::comet::accept_loop(state, listener, "ws", serve).await
}

/// Reads the upgrade request, answers it, and serves the WebSocket.
async fn serve(state: Arc<State>, mut stream: TcpStream, peer: SocketAddr) {
    let cfg = &state.config;
    let head =
        timeout(cfg.protocol.handshake_timeout, read_request(&mut stream, cfg.websocket.max_request_head));
    let (req, leftover) = match head.await {
        Ok(Ok(r)) => r,
        Ok(Err(handshake::Error::Closed)) | Err(_) => return,
        Ok(Err(e)) => {
            state.metrics.bad_input.get_or_create(&TransportLabel { transport: "ws" }).inc();
            let status = if matches!(e, handshake::Error::TooLarge(_)) {
                "431 Request Header Fields Too Large"
            } else {
                "400 Bad Request"
            };
            let _ = stream.write_all(handshake::error_response(status, &e.to_string()).as_bytes()).await;
            return;
        }
    };
    if req.path() != "/sub" {
        let _ = stream.write_all(handshake::error_response("404 Not Found", "not found").as_bytes()).await;
        return;
    }
    let accept = match req.websocket_accept() {
        Ok(a) => a,
        Err(why) => {
            debug!(peer = %peer, why, "bad websocket upgrade");
            state.metrics.bad_input.get_or_create(&TransportLabel { transport: "ws" }).inc();
            let _ = stream.write_all(handshake::error_response("400 Bad Request", why).as_bytes()).await;
            return;
        }
    };
    let reply = handshake::switching_protocols(&accept);
    if timeout(cfg.protocol.write_timeout, stream.write_all(reply.as_bytes())).await.is_err() {
        return;
    }
    let cookie = req.header("cookie").unwrap_or_default().to_string();
    let max_body = cfg.protocol.max_body;
    drop(req);
    let peer = Peer { addr: peer, cookie, leftover, transport: "ws" };
    connection::serve(state, stream, WsDecoder::new(max_body), WsEncoder, peer).await
}
