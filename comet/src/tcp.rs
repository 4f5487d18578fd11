//! Raw TCP clients: packets back to back on the stream (goim's port 3101). The framing (a
//! `codec`) and [`serve`], which hands an accepted socket to `connection`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use goim_api::frame::decode_stream;
use tokio::net::TcpStream;

use crate::codec::{DecodeError, Decoder, Encoder, Inbound};
use crate::connection::{self, Peer};
use crate::context::Context;
use crate::outbox::Outbound;

pub struct TcpDecoder {
    pub max_body: usize,
}

impl Decoder for TcpDecoder {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError> {
        Ok(decode_stream(buf, self.max_body)?.map(Inbound::Packet))
    }
}

pub struct TcpEncoder;

impl Encoder for TcpEncoder {
    fn encode(&mut self, item: &Outbound, dst: &mut BytesMut) {
        match item {
            Outbound::Packet(f) => f.encode(dst),
            // A TCP client never sees op 9: it reads the inner packets directly (goim's WriteTCP).
            Outbound::Push(packets) => dst.put_slice(packets),
            Outbound::Pong(_) => {}
        }
    }
}

/// Serves one accepted TCP client to its end.
pub fn serve(
    ctx: Arc<Context>,
    stream: TcpStream,
    addr: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    let max_body = ctx.config.protocol.max_body;
    let peer = Peer { addr, cookie: String::new(), leftover: BytesMut::new(), transport: "tcp" };
    connection::serve(ctx, stream, TcpDecoder { max_body }, TcpEncoder, peer)
}
