//! goim-logic: the logic tier. It authenticates client connections for comet, keeps which comet
//! holds each connection key and user (mid), takes push requests from business servers over
//! goim's HTTP API and hands them to job, and sums the comets' online counts.
//!
//! - [`Logic`]: the domain type; comet's calls (`connect`, `heartbeat`, `disconnect`,
//!   `renew_online`, `receive`) and the API's (`push_*`, `online_*`, `nodes_*`).
//! - [`Authenticator`] ([`auth`]): JWT (HS256/RS256/ES256; one key, or keys chosen by `kid` from
//!   a JWKS file and URL reloaded while logic runs) or goim's plain JSON token; and the push
//!   API's bearer tokens ([`auth::PushTokens`]), several at once, optionally from a file.
//! - [`Store`] ([`store`]): the session-store port, with [`MemoryStore`] and [`RedisStore`]
//!   (goim's Redis layout), chosen by [`store::StoreConfig`].
//! - [`history::History`] ([`history`]): stream positions and the bounded history a reconnecting
//!   client resumes from, with [`history::MemoryHistory`] and [`RedisHistory`].
//! - [`Queue`] ([`queue`]): the publish port, with [`queue::Memory`] for the embedded setup and
//!   [`queue::KafkaQueue`] for the distributed one.
//! - [`router`] and [`serve`]: goim's HTTP API (`/goim/push/*`, `/goim/online/*`, `/goim/nodes/*`).
//! - [`grpc`]: goim's `goim.logic.Logic` gRPC server, which comets call.
//! - [`comet::CometDirectory`]: the optional port giving the comets ready for new clients (node lists).
//! - [`Config`] ([`config`]) and [`Metrics`].

pub mod auth;
pub mod comet;
pub mod config;
pub mod grpc;
pub mod history;
mod http;
mod logic;
mod metrics;
pub mod queue;
pub mod store;

pub use auth::{Authenticator, Claims};
pub use config::Config;
pub use http::{router, serve};
pub use logic::{Backoff, Error, Instance, Logic, Nodes, Top, Total};
pub use metrics::Metrics;
pub use queue::Queue;
pub use store::{MemoryStore, Store};
#[cfg(feature = "redis")]
pub use store::{RedisHistory, RedisStore};
