//! The contract between a transport's framing and the socket driver (`connection`): a
//! [`Decoder`] turns the client's bytes into [`Inbound`] events, an [`Encoder`] turns queued
//! [`Outbound`] items into bytes. `tcp` (packets back to back) and `websocket` (one packet per
//! message) implement it; the driver knows nothing else of the framing.

use bytes::{Bytes, BytesMut};
use goim_api::Frame;

use crate::disconnect::Disconnect;
use crate::outbox::Outbound;

/// What a client sent.
#[derive(Debug)]
pub enum Inbound {
    Packet(Frame),
    /// A WebSocket ping; answered with a pong.
    Ping(Bytes),
    /// A WebSocket close frame.
    Close,
}

/// Why a client's bytes are not a valid stream; the connection ends with a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A goim packet that does not decode (bad header, too large).
    #[error(transparent)]
    Packet(#[from] goim_api::frame::Error),
    /// A WebSocket frame that breaks RFC 6455 or the message limit.
    #[error(transparent)]
    WebSocket(#[from] FrameError),
    /// The client closed the stream inside a packet or frame.
    #[error("connection closed mid-packet")]
    Truncated,
}

/// How a client's WebSocket frame breaks RFC 6455 or the message limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("websocket reserved bits set (no extensions are negotiated)")]
    ReservedBits,
    #[error("websocket control frame fragmented or longer than 125 bytes")]
    BadControlFrame,
    #[error("websocket message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("websocket data frame inside a fragmented message")]
    DataInsideFragments,
    #[error("websocket continuation frame without a message")]
    OrphanContinuation,
    #[error("websocket opcode {0:#x} is not defined")]
    UnknownOpcode(u8),
}

/// Turns bytes from the client into [`Inbound`]s. `Ok(None)` means more bytes are needed.
pub trait Decoder: Send {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError>;
}

/// Turns [`Outbound`]s into bytes for the client.
pub trait Encoder: Send {
    fn encode(&mut self, item: &Outbound, dst: &mut BytesMut);
    /// Whatever the transport sends last, after op 6 (a WebSocket close frame).
    fn goodbye(&mut self, _reason: &Disconnect, _dst: &mut BytesMut) {}
}
