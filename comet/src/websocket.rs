//! WebSocket clients on comet's HTTP port (goim's 3102): `GET /sub` upgrades, then one goim packet
//! per binary (or text) message; pushes arrive as one op-9 message each.

mod frame;
mod handshake;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::debug;

use frame::{WsDecoder, WsEncoder};
pub use handshake::{Error as HeadError, Request, error_response, read_request, read_request_after};

use crate::comet::State;
use crate::connection::{self, Peer};
use crate::metrics::TransportLabel;

/// Answers an upgrade request for `/sub` and serves the WebSocket to its end.
pub async fn upgrade<S>(state: Arc<State>, mut stream: S, peer: SocketAddr, req: Request, leftover: BytesMut)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &state.config;
    let accept = match req.websocket_accept() {
        Ok(a) => a,
        Err(why) => {
            debug!(peer = %peer, why, "bad websocket upgrade");
            state.metrics.bad_input.get_or_create(&TransportLabel { transport: "ws" }).inc();
            let _ = stream.write_all(error_response("400 Bad Request", why).as_bytes()).await;
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
