//! gRPC settings shared by the tiers: the `[grpc]` server table (comet's `goim.comet.Comet`,
//! logic's `goim.logic.Logic`) and the channel settings of their clients.
//!
//! ```toml
//! [grpc]
//! addr = "0.0.0.0:3109"            # goim's rpcServer.addr (comet 3109, logic 3119)
//! keepalive_interval = "60s"       # HTTP/2 ping to an idle client (goim: Time)
//! keepalive_timeout = "20s"        # ... and how long its answer may take (goim: Timeout)
//! max_connection_age = "2h"        # a client connection is closed after this (goim: MaxConnectionAge)
//! max_connection_age_grace = "20s" # ... once its calls in flight finish, within this
//! timeout = "5s"                   # the longest one call may run on the server
//! max_message_size = 16777216      # largest request (goim: 1<<24)
//! max_pending_reset_streams = 1024 # calls a client may cancel before they were taken up
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Endpoint, Server};

use crate::Invalid;

/// The `[grpc]` table of comet and logic. The defaults are goim's `[rpcServer]`; the port is
/// the binary's ([`ServerConfig::on_port`]): its settings' defaults set it, and the file is laid
/// over them, so a `[grpc]` table without `addr` keeps the binary's port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address. Default `0.0.0.0:<the binary's port>`.
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
    /// Calls a client may cancel before the server took them up, after which its whole
    /// connection is closed (HTTP/2's guard against rapid reset, CVE-2023-44487). h2's default
    /// of 20 is too few here: when logic is busy, a comet's calls that hit their deadline while
    /// still queued are cancelled by the dozen, and closing the connection then fails every call
    /// on it. Default 1024.
    pub max_pending_reset_streams: usize,
}

impl ServerConfig {
    /// goim's server settings, listening on every address at `port`.
    pub fn on_port(port: u16) -> ServerConfig {
        ServerConfig {
            addr: format!("0.0.0.0:{port}"),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(2 * 60 * 60),
            max_connection_age_grace: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
            max_message_size: 1 << 24,
            max_pending_reset_streams: 1024,
        }
    }

    /// Checks the table; fields are named under `grpc`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Err(e) = self.addr.parse::<SocketAddr>() {
            return Err(Invalid::new("grpc.addr", format!("{:?} is not ip:port ({e})", self.addr)));
        }
        for (field, d) in [
            ("grpc.keepalive_interval", self.keepalive_interval),
            ("grpc.keepalive_timeout", self.keepalive_timeout),
            ("grpc.max_connection_age", self.max_connection_age),
            ("grpc.timeout", self.timeout),
        ] {
            if d.is_zero() {
                return Err(Invalid::new(field, "must be more than 0s"));
            }
        }
        if self.max_message_size < 4096 {
            return Err(Invalid::new("grpc.max_message_size", "must be at least 4096 bytes"));
        }
        if self.max_pending_reset_streams == 0 {
            return Err(Invalid::new("grpc.max_pending_reset_streams", "must be at least 1"));
        }
        Ok(())
    }

    /// A tonic server with these settings (and `TCP_NODELAY`); the caller adds its service,
    /// with [`ServerConfig::max_message_size`] as its decoding limit.
    pub fn server(&self) -> Server {
        Server::builder()
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_connection_age(self.max_connection_age)
            .max_connection_age_grace(self.max_connection_age_grace)
            .timeout(self.timeout)
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_reset_streams))
            .tcp_nodelay(true)
    }
}

/// Port 0: a binary's settings replace it with [`ServerConfig::on_port`].
impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig::on_port(0)
    }
}

/// How a gRPC client talks to each server: the part of `[logic_client]` (comet) and
/// `[comet_client]` (logic, job) that the two share. The tables stay their crates' own (each
/// has keys of its own, and `deny_unknown_fields` does not work through `serde(flatten)`);
/// each hands its values here to be checked and applied the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Deadline of every call (sent as `grpc-timeout`, and enforced by the client).
    pub timeout: Duration,
    /// Deadline for opening a connection.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings, sent while idle too.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// Largest message in bytes.
    pub max_message_size: usize,
}

impl Channel {
    /// Checks the settings; fields are named under `table` (`logic_client`, `comet_client`).
    pub fn validate(&self, table: &str) -> Result<(), Invalid> {
        for (field, d) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if d.is_zero() {
                return Err(Invalid::new(field, "must be more than 0s").within(table));
            }
        }
        if self.max_message_size < 4096 {
            return Err(Invalid::new("max_message_size", "must be at least 4096 bytes").within(table));
        }
        Ok(())
    }

    /// `endpoint` with these settings: connect timeout, call timeout, keepalive (while idle
    /// too) and `TCP_NODELAY`.
    pub fn apply(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
    }
}

/// `host:port` as an `http://` endpoint; an address with a scheme is kept.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    if addr.contains("://") {
        Endpoint::from_shared(addr.to_owned())
    } else {
        Endpoint::from_shared(format!("http://{addr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_goims_and_valid_on_the_binarys_port() {
        let c = ServerConfig::on_port(3109);
        c.validate().unwrap();
        assert_eq!(c.addr, "0.0.0.0:3109");
        assert_eq!(c.max_message_size, 1 << 24);
        assert_eq!(ServerConfig::default().addr, "0.0.0.0:0");
    }

    #[test]
    fn an_empty_table_gives_the_defaults() {
        assert_eq!(toml::from_str::<ServerConfig>("").unwrap(), ServerConfig::default());
    }

    #[test]
    fn invalid_server_settings_name_their_field() {
        let bad = |f: fn(&mut ServerConfig)| {
            let mut c = ServerConfig::on_port(3119);
            f(&mut c);
            c.validate().unwrap_err().field
        };
        assert_eq!(bad(|c| c.addr = "nope".into()), "grpc.addr");
        assert_eq!(bad(|c| c.timeout = Duration::ZERO), "grpc.timeout");
        assert_eq!(bad(|c| c.keepalive_interval = Duration::ZERO), "grpc.keepalive_interval");
        assert_eq!(bad(|c| c.max_message_size = 100), "grpc.max_message_size");
        assert_eq!(bad(|c| c.max_pending_reset_streams = 0), "grpc.max_pending_reset_streams");
        assert!(toml::from_str::<ServerConfig>("adr = \"x\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn invalid_channel_settings_name_their_field_under_the_table() {
        let ok = Channel {
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(3),
            max_message_size: 1 << 24,
        };
        ok.validate("comet_client").unwrap();
        let e = Channel { connect_timeout: Duration::ZERO, ..ok }.validate("comet_client").unwrap_err();
        assert_eq!(e.field, "comet_client.connect_timeout");
        let e = Channel { max_message_size: 10, ..ok }.validate("logic_client").unwrap_err();
        assert_eq!(e.to_string(), "logic_client.max_message_size: must be at least 4096 bytes");
    }

    #[test]
    fn an_address_without_a_scheme_is_http() {
        assert_eq!(endpoint("127.0.0.1:3119").unwrap().uri().to_string(), "http://127.0.0.1:3119/");
        assert_eq!(endpoint("http://logic:3119").unwrap().uri().to_string(), "http://logic:3119/");
    }
}
