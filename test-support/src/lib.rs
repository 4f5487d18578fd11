//! goim-test-support: what the black-box tests of several crates share. Dev-only
//! (`publish = false`); libraries never depend on it.
//!
//! - [`client`]: a goim v2 client over TCP and WebSocket. Its WebSocket side uses
//!   tokio-tungstenite, an implementation independent of comet's own framing, so tests check the
//!   server against a client we did not write. The load generator (`goim-bench`) builds its
//!   tokens with [`client::json_token`] too.
//! - [`long_poll`]: a goim long-poll client (`Poller`) over comet's HTTP port.
//! - [`process`]: child processes on loopback ([`Proc`], killed if a test ends first), ports
//!   ([`free_port`]), scratch directories, waiting for a port or an admin endpoint.
//! - [`services`]: a redis-server or an Apache Kafka node of a test's own, from what
//!   `scripts/services.sh` installed, so a test can stop and restart it without disturbing others.

pub mod client;
#[cfg(feature = "admin")]
pub mod long_poll;
pub mod process;
pub mod services;

use std::time::Duration;

pub use client::{Client, Closed, Transport, json_token};
pub use process::{Proc, Scratch, accepting, free_port, installed};
#[cfg(feature = "admin")]
pub use process::{admin_metrics, ready};

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
