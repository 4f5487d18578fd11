//! What comet and logic say about a connection: goim's `goim.logic` Connect, Disconnect,
//! Heartbeat, RenewOnline and Receive messages, as plain Rust types.

use std::collections::HashMap;
use std::time::Duration;

use crate::Frame;

/// A client's auth packet, forwarded by comet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The comet's server id.
    pub server: String,
    /// The WebSocket `Cookie` header; empty for TCP.
    pub cookie: String,
    /// The body of the op-7 packet.
    pub token: bytes::Bytes,
}

/// Who the connection is, once logic accepted its token.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Session {
    /// The user; 0 for none (then no mid mapping is kept).
    pub mid: i64,
    /// The connection key (device); logic generates one when the token has none.
    pub key: String,
    /// `type://id`; empty for no room.
    pub room: String,
    /// The business ops this connection receives from key, mid and broadcast pushes.
    pub accepts: Vec<i32>,
    /// How long comet waits for a heartbeat before closing the connection.
    pub heartbeat: Duration,
}

/// A connection of `key` (and `mid`) on `server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub mid: i64,
    pub key: String,
    pub server: String,
}

/// One comet's counts, sent periodically.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Online {
    pub server: String,
    /// Members per room on this comet (rooms with at least one).
    pub room_count: HashMap<String, i32>,
    /// Connections on this comet (a goim-rs addition; goim takes it from discovery metadata).
    pub conn_count: i64,
    /// Distinct client IPs on this comet (likewise).
    pub ip_count: i64,
}

/// An uplink packet after auth (op 4, or any op comet does not handle itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub mid: i64,
    pub key: String,
    pub frame: Frame,
}
