//! logic's gRPC server: goim's `goim.logic.Logic`, which comets call to authenticate
//! connections, renew sessions and report online counts. A thin adapter over [`Logic`];
//! [`service`] maps requests and errors, [`serve`] runs it on a listener. Requests may be
//! gzip-compressed (goim's comet compresses RenewOnline).
//!
//! ```toml
//! [grpc]
//! addr = "0.0.0.0:3119"            # goim's rpcServer.addr
//! keepalive_interval = "60s"       # HTTP/2 ping to an idle client (goim: Time)
//! keepalive_timeout = "20s"        # ... and how long its answer may take (goim: Timeout)
//! max_connection_age = "2h"        # a client connection is closed after this (goim: MaxConnectionAge)
//! max_connection_age_grace = "20s" # ... once its calls in flight finish, within this
//! timeout = "5s"                   # the longest one call may run on the server
//! max_message_size = 16777216      # largest request (goim: 1<<24)
//! ```
//!
//! comet's server has the same table; the two are separate types because tiers do not share code.

mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use goim_api::pb::logic::logic_server::LogicServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

use crate::Logic;

pub use service::Service;

/// A server setting that cannot work; `field` is its dotted path with the table at `grpc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// The `[grpc]` table of the logic binary. Defaults are goim's logic `[rpcServer]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address. Default `0.0.0.0:3119`.
    pub addr: String,
    /// Interval of HTTP/2 keepalive pings. Default 60s.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed. Default 20s.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Age at which a client connection is told to go away (it reconnects). Default 2h.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// How long calls in flight may finish after that. Default 20s.
    #[serde(with = "humantime_serde")]
    pub max_connection_age_grace: Duration,
    /// The longest a call may run on the server. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest request message in bytes. Default 16 MiB (goim's 1<<24).
    pub max_message_size: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            addr: "0.0.0.0:3119".into(),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(2 * 60 * 60),
            max_connection_age_grace: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
            max_message_size: 1 << 24,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: &str| Err(ConfigError { field, reason: reason.into() });
        if let Err(e) = self.addr.parse::<SocketAddr>() {
            return Err(ConfigError {
                field: "grpc.addr",
                reason: format!("{:?} is not ip:port ({e})", self.addr),
            });
        }
        for (field, d) in [
            ("grpc.keepalive_interval", self.keepalive_interval),
            ("grpc.keepalive_timeout", self.keepalive_timeout),
            ("grpc.max_connection_age", self.max_connection_age),
            ("grpc.timeout", self.timeout),
        ] {
            if d.is_zero() {
                return err(field, "must be more than 0s");
            }
        }
        if self.max_message_size < 4096 {
            return err("grpc.max_message_size", "must be at least 4096 bytes");
        }
        Ok(())
    }
}

/// Serves `goim.logic.Logic` for `logic` on `listener` until `shutdown`, then stops accepting and
/// lets calls in flight finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    logic: Arc<Logic>,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = LogicServer::new(Service::new(logic))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(config.max_message_size);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_connection_age(config.max_connection_age)
        .max_connection_age_grace(config.max_connection_age_grace)
        .timeout(config.timeout)
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_goims_and_valid() {
        let c = ServerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.addr, "0.0.0.0:3119");
    }

    #[test]
    fn an_empty_table_gives_the_defaults() {
        assert_eq!(toml::from_str::<ServerConfig>("").unwrap(), ServerConfig::default());
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let c = ServerConfig { addr: ":3119".into(), ..ServerConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "grpc.addr");
        let c = ServerConfig { timeout: Duration::ZERO, ..ServerConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "grpc.timeout");
    }
}
