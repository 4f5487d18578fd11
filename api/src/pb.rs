//! goim's protobuf contract: the `goim.protocol`, `goim.comet` and `goim.logic` packages,
//! generated from `api/proto/goim/` with the exact package, service, message and field numbers
//! of goim v2, so goim's Go comet, logic and job can talk to goim-rs and read its Kafka values.
//!
//! goim-rs additions take new field numbers only (`OnlineReq.conn_count = 3`,
//! `OnlineReq.ip_count = 4`, `ReceiveReq.key = 3`); a Go peer skips them and reads them as zero.
//!
//! Beside the generated code are the conversions between these messages and the domain types
//! the tiers use ([`PushMsg`](crate::PushMsg) ⇄ [`logic::PushMsg`], [`Frame`](crate::Frame) ⇄
//! [`protocol::Proto`], and the session messages), with [`Error`] for messages that carry no
//! valid domain value.

mod frame;
mod push;
mod recover;
mod session;

/// `goim.protocol`: the packet as a message.
pub mod protocol {
    include!(concat!(env!("OUT_DIR"), "/goim.protocol.rs"));
}

/// `goim.comet`: the service job calls on each comet.
pub mod comet {
    include!(concat!(env!("OUT_DIR"), "/goim.comet.rs"));
}

/// `goim.logic`: the service comet calls on logic, and `PushMsg`, the Kafka message value.
pub mod logic {
    include!(concat!(env!("OUT_DIR"), "/goim.logic.rs"));
}

/// Why a protobuf message is not a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("unknown PushMsg type {0}")]
    UnknownPushType(i32),
    #[error("missing field {0}")]
    MissingField(&'static str),
}
