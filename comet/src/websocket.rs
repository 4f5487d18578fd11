//! WebSocket clients on comet's HTTP port (goim's 3102): `GET /sub` upgrades, then one goim packet
//! per binary (or text) message; pushes arrive as one op-9 message each. `handshake` answers the
//! upgrade, `frame` is the framing (a `codec`); the connection is then `connection`'s to drive.

mod frame;
mod handshake;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::debug;

pub use frame::{WsDecoder, WsEncoder};
pub(crate) use handshake::accept;

use crate::connection::{self, Peer};
use crate::context::Context;
use crate::http::{Request, error_response};
use crate::metrics::TransportLabel;

/// Answers an upgrade request for `/sub`. Returns the peer to [`serve`] as a WebSocket, or
/// `None` when the upgrade was refused (and answered) or the client left.
pub async fn upgrade<S>(
    ctx: &Context,
    stream: &mut S,
    peer: SocketAddr,
    req: Request,
    leftover: BytesMut,
) -> Option<Peer>
where
    S: AsyncWrite + Unpin,
{
    let accept = match handshake::accept(&req) {
        Ok(a) => a,
        Err(why) => {
            debug!(peer = %peer, why, "bad websocket upgrade");
            ctx.metrics.bad_input.get_or_create(&TransportLabel { transport: "ws" }).inc();
            let _ = stream.write_all(error_response("400 Bad Request", why).as_bytes()).await;
            return None;
        }
    };
    let reply = handshake::switching_protocols(&accept);
    if timeout(ctx.config.protocol.write_timeout, stream.write_all(reply.as_bytes())).await.is_err() {
        return None;
    }
    let cookie = req.header("cookie").unwrap_or_default().to_string();
    Some(Peer { addr: peer, cookie, leftover, transport: "ws" })
}

/// Serves an upgraded connection as a WebSocket to its end.
pub fn serve<S>(ctx: Arc<Context>, stream: S, peer: Peer) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let max_body = ctx.config.protocol.max_body;
    connection::serve(ctx, stream, WsDecoder::new(max_body), WsEncoder, peer)
}
