//! goim-comet: holds client connections and delivers pushes to them.
//!
//! - [`Comet`]: the domain type. job pushes into it (`push_keys`, `broadcast_room`, `broadcast`);
//!   it serves TCP and WebSocket listeners and reports online counts to logic.
//! - [`Logic`]: the port comet calls logic through (auth, sessions, online counts, uplink);
//!   [`logic::GrpcLogic`] implements it over gRPC for the distributed mode.
//! - [`grpc`]: goim's `goim.comet.Comet` gRPC server, which job calls.
//! - Inside, in layers that each use only those below (the table is in `comet.rs`): `listen`
//!   (listeners, accept loops); the transports `front` (the HTTP port), `tls`, `websocket`,
//!   `long_poll` and `tcp`; `http` (request heads, responses); `connection` (the socket
//!   driver); `session` (authenticate, admit, operate, teardown, for any transport) and `resume`
//!   (a reconnecting client's replay, `docs/recovery.md`); `codec`
//!   (the `Decoder`/`Encoder` contract); `context` (what every connection shares); `admission` (per-address limits, the auth rate and
//!   in-flight bound); `hub` (keys
//!   in shards, rooms), `channel` (one connection), `outbox` (its bounded queue), `disconnect`
//!   (why a connection ended; op 6), `drain` (telling every client to go at a paced rate, for
//!   rollouts and scale-in).
//!
//! Delivery never blocks on a client: each connection has a bounded queue, and one that
//! overflows is disconnected with op 6 `slow` while every other recipient still gets the push.

mod admission;
#[doc(hidden)]
pub mod bench;
mod channel;
mod codec;
mod comet;
mod config;
mod connection;
mod context;
mod disconnect;
mod drain;
mod front;
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
mod http;
mod hub;
mod listen;
pub mod logic;
mod long_poll;
mod metrics;
mod online;
mod outbox;
mod resume;
mod room;
mod session;
mod tcp;
mod tls;
mod websocket;

pub use comet::{Comet, PushError, PushReport};
pub use config::{AdmissionConfig, Config, DrainConfig};
pub use disconnect::Disconnect;
pub use drain::DrainReport;
pub use front::Asset;
pub use listen::Listeners;
pub use logic::Logic;
pub use metrics::Metrics;
pub use room::Fanout;
