//! WebSocket clients on comet's HTTP port (goim's 3102): `GET /sub` upgrades, then one goim packet
//! per binary (or text) message; pushes arrive as one op-9 message each.

mod frame;
mod handshake;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::debug;

pub(crate) use frame::{WsDecoder, WsEncoder};
pub use handshake::{Error as HeadError, Request, error_response, read_request, read_request_after};

use crate::comet::State;
use crate::connection::{self, Peer};
use crate::metrics::TransportLabel;

/// Answers an upgrade request for `/sub`. Returns the peer to [`serve`] as a WebSocket, or
/// `None` when the upgrade was refused (and answered) or the client left.
pub async fn upgrade<S>(
    state: &State,
    stream: &mut S,
    peer: SocketAddr,
    req: Request,
    leftover: BytesMut,
) -> Option<Peer>
where
    S: AsyncWrite + Unpin,
{
    let accept = match req.websocket_accept() {
        Ok(a) => a,
        Err(why) => {
            debug!(peer = %peer, why, "bad websocket upgrade");
            state.metrics.bad_input.get_or_create(&TransportLabel { transport: "ws" }).inc();
            let _ = stream.write_all(error_response("400 Bad Request", why).as_bytes()).await;
            return None;
        }
    };
    let reply = handshake::switching_protocols(&accept);
    if timeout(state.config.protocol.write_timeout, stream.write_all(reply.as_bytes())).await.is_err() {
        return None;
    }
    let cookie = req.header("cookie").unwrap_or_default().to_string();
    Some(Peer { addr: peer, cookie, leftover, transport: "ws" })
}

/// Serves an upgraded connection as a WebSocket to its end.
pub fn serve<S>(state: Arc<State>, stream: S, peer: Peer) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let max_body = state.config.protocol.max_body;
    connection::serve(state, stream, WsDecoder::new(max_body), WsEncoder, peer)
}
