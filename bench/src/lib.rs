//! goim-bench: a goim client (TCP and WebSocket) for load generation and black-box tests.
//!
//! The WebSocket side uses tokio-tungstenite, an implementation independent of comet's own
//! framing, so tests check the server against a client we did not write.

pub mod client;

pub use client::{Client, Transport};
