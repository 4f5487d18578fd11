//! Raw TCP clients: packets back to back on the stream (goim's port 3101).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use goim_api::frame::decode_stream;
use tokio::net::TcpListener;

use crate::comet::State;
use crate::connection::{self, Decoder, Encoder, Inbound, Peer};
use crate::outbox::Outbound;

pub struct TcpDecoder {
    pub max_body: usize,
}

impl Decoder for TcpDecoder {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, String> {
        decode_stream(buf, self.max_body).map(|f| f.map(Inbound::Packet)).map_err(|e| e.to_string())
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

pub async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    // A drain closes the TCP listeners at once: a TCP client only ever connects to open a session.
    let until = state.drain.started.clone();
    crate::comet::accept_loop(state, listener, "tcp", until, |state, stream, peer| {
        let max_body = state.config.protocol.max_body;
        let peer = Peer { addr: peer, cookie: String::new(), leftover: BytesMut::new(), transport: "tcp" };
        connection::serve(state, stream, TcpDecoder { max_body }, TcpEncoder, peer)
    })
    .await
}
