//! goim-comet: holds client connections and delivers pushes to them.
//!
//! - [`Comet`]: the domain type. job pushes into it (`push_keys`, `broadcast_room`, `broadcast`);
//!   it serves TCP and WebSocket listeners and reports online counts to logic.
//! - [`Logic`]: the port comet calls logic through (auth, sessions, online counts, uplink).
//! - Inside: `connection` (handshake, session, teardown for any transport), `tcp` and
//!   `websocket` (framings), `hub` (keys in shards, rooms), `channel` (one connection),
//!   `outbox` (its bounded queue), `disconnect` (why a connection ended; op 6).
//!
//! Delivery never blocks on a client: each connection has a bounded queue, and one that
//! overflows is disconnected with op 6 `slow` while every other recipient still gets the push.

mod channel;
mod comet;
mod config;
mod connection;
mod disconnect;
mod hub;
pub mod logic;
mod metrics;
mod outbox;
mod room;
mod tcp;
mod websocket;

pub use comet::{Comet, Listeners, PushError, PushReport};
pub use config::{Config, Error as ConfigError};
pub use disconnect::Disconnect;
pub use logic::Logic;
pub use metrics::Metrics;
pub use room::Delivery;
