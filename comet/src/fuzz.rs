//! Entry points for the fuzz targets in `fuzz/` (see `scripts/fuzz.sh`): comet's parsers of
//! bytes that come straight from clients, and nothing else of comet. Hidden from the docs; not
//! part of the API, and free to change with the parsers.

use std::time::Duration;

use bytes::BytesMut;

use crate::codec::Decoder;
pub use crate::codec::{DecodeError, Inbound};
pub use crate::http::{HeadError, Request};
pub use crate::long_poll::BadAck;

/// The WebSocket framing a client's upgraded connection is read with (RFC 6455, server side).
pub struct WebSocketDecoder(crate::websocket::WsDecoder);

impl WebSocketDecoder {
    /// A decoder for packets with bodies of at most `max_body` bytes (`protocol.max_body`).
    pub fn new(max_body: usize) -> WebSocketDecoder {
        WebSocketDecoder(crate::websocket::WsDecoder::new(max_body))
    }

    /// The next event in `buf`, consuming its bytes; `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError> {
        self.0.decode(buf)
    }
}

/// The HTTP request head at the start of `buf` and its length; `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    crate::http::request::parse(buf)
}

/// The `Sec-WebSocket-Accept` value for an upgrade request, or why it is not one.
pub fn websocket_accept(req: &Request) -> Result<String, &'static str> {
    crate::websocket::accept(req)
}

/// A long-poll's `timeout` and `ack` query values, as `GET /poll` reads them: how long the poll
/// may wait (at most `max`) and what it acknowledges.
pub fn poll_query(
    wait: Option<&str>,
    ack: Option<&str>,
    max: Duration,
) -> Result<(Duration, Option<u64>), BadAck> {
    crate::long_poll::poll_query(wait, ack, max)
}
