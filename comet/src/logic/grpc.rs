//! The [`Logic`] port over gRPC: a tonic client of goim's `goim.logic.Logic`, so a comet talks to
//! goim-rs logic instances (or goim's Go logic).
//!
//! ```toml
//! [logic]
//! addrs = ["127.0.0.1:3119"]   # one or more logic instances, balanced per call
//! timeout = "1s"               # deadline of every call
//! connect_timeout = "1s"       # goim's rpcClient.dial
//! keepalive_interval = "10s"   # HTTP/2 pings, also while idle (goim: 10s)
//! keepalive_timeout = "3s"     # (goim: 3s)
//! max_message_size = 16777216  # (goim: 1<<24)
//! ```

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use goim_api::pb::logic::logic_client::LogicClient;
use goim_api::pb::logic::{ConnectReq, DisconnectReq, HeartbeatReq, OnlineReq, ReceiveReq};
use goim_api::{Connect, Online, Presence, Session, Uplink};
use serde::{Deserialize, Serialize};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{Error, Logic};

/// A client setting that cannot work; `field` is its dotted path with the table at `logic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// The `[logic]` table of the comet binary: how to reach logic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// `host:port` (or `http://host:port`) of each logic instance; calls are spread over them.
    /// Default `["127.0.0.1:3119"]`.
    pub addrs: Vec<String>,
    /// Deadline of every call (sent to logic as `grpc-timeout`, and enforced here). Default 1s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Deadline for opening a connection. Default 1s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings, sent while idle too. Default 10s.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped. Default 3s.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Largest reply message in bytes. Default 16 MiB.
    pub max_message_size: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            addrs: vec!["127.0.0.1:3119".into()],
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(3),
            max_message_size: 1 << 24,
        }
    }
}

impl ClientConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: String| Err(ConfigError { field, reason });
        if self.addrs.is_empty() {
            return err("logic.addrs", "must name at least one logic instance".into());
        }
        for addr in &self.addrs {
            if let Err(e) = endpoint(addr) {
                return err("logic.addrs", format!("{addr:?} is not host:port ({e})"));
            }
        }
        for (field, d) in [
            ("logic.timeout", self.timeout),
            ("logic.connect_timeout", self.connect_timeout),
            ("logic.keepalive_interval", self.keepalive_interval),
            ("logic.keepalive_timeout", self.keepalive_timeout),
        ] {
            if d.is_zero() {
                return err(field, "must be more than 0s".into());
            }
        }
        if self.max_message_size < 4096 {
            return err("logic.max_message_size", "must be at least 4096 bytes".into());
        }
        Ok(())
    }
}

/// `host:port` → `http://host:port`; an address with a scheme is kept.
fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    if addr.contains("://") {
        Endpoint::from_shared(addr.to_owned())
    } else {
        Endpoint::from_shared(format!("http://{addr}"))
    }
}

/// comet's [`Logic`] over gRPC. Connections open lazily and reconnect on their own; building one
/// does no I/O. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcLogic {
    client: LogicClient<Channel>,
    /// The same channel, sending gzip: goim's comet compresses RenewOnline, the largest message.
    gzip: LogicClient<Channel>,
    timeout: Duration,
}

impl GrpcLogic {
    /// A client of the logic instances in `config` (which must have passed
    /// [`ClientConfig::validate`]). Must be called inside a Tokio runtime.
    pub fn new(config: &ClientConfig) -> Result<GrpcLogic, ConfigError> {
        config.validate()?;
        let endpoints: Vec<Endpoint> = config
            .addrs
            .iter()
            .map(|a| {
                // validate() parsed every address.
                endpoint(a)
                    .expect("validated address")
                    .connect_timeout(config.connect_timeout)
                    .timeout(config.timeout)
                    .http2_keep_alive_interval(config.keepalive_interval)
                    .keep_alive_timeout(config.keepalive_timeout)
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true)
            })
            .collect();
        let channel = match endpoints.as_slice() {
            [one] => one.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        let client = LogicClient::new(channel)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(config.max_message_size);
        let gzip = client.clone().send_compressed(CompressionEncoding::Gzip);
        Ok(GrpcLogic { client, gzip, timeout: config.timeout })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.timeout);
        req
    }
}

/// The one place logic's gRPC errors become the port's: a refused token is `Rejected` with
/// logic's reason; anything else means logic could not serve the call.
fn port_error(call: &'static str, s: Status) -> Error {
    match s.code() {
        Code::Unauthenticated => Error::Rejected(s.message().to_owned()),
        // A malformed connect (logic's BadRequest) will not pass on a retry either.
        Code::InvalidArgument if call == "connect" => Error::Rejected(s.message().to_owned()),
        code => Error::Unavailable(format!("{call}: {code:?}: {}", s.message())),
    }
}

#[async_trait]
impl Logic for GrpcLogic {
    async fn connect(&self, req: Connect) -> Result<Session, Error> {
        let reply = self.client.clone().connect(self.request(ConnectReq::from(req))).await;
        reply.map(|r| Session::from(r.into_inner())).map_err(|s| port_error("connect", s))
    }

    async fn disconnect(&self, presence: Presence) -> Result<(), Error> {
        let reply = self.client.clone().disconnect(self.request(DisconnectReq::from(presence))).await;
        reply.map(drop).map_err(|s| port_error("disconnect", s))
    }

    async fn heartbeat(&self, presence: Presence) -> Result<(), Error> {
        let reply = self.client.clone().heartbeat(self.request(HeartbeatReq::from(presence))).await;
        reply.map(drop).map_err(|s| port_error("heartbeat", s))
    }

    async fn renew_online(&self, online: Online) -> Result<HashMap<String, i32>, Error> {
        let reply = self.gzip.clone().renew_online(self.request(OnlineReq::from(online))).await;
        reply.map(|r| r.into_inner().all_room_count).map_err(|s| port_error("renew_online", s))
    }

    async fn receive(&self, uplink: Uplink) -> Result<(), Error> {
        let reply = self.client.clone().receive(self.request(ReceiveReq::from(uplink))).await;
        reply.map(drop).map_err(|s| port_error("receive", s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_is_a_rejection_with_logics_reason() {
        let e = port_error("connect", Status::unauthenticated("token expired"));
        assert_eq!(e, Error::Rejected("token expired".into()));
    }

    #[test]
    fn other_codes_mean_logic_is_unavailable() {
        for s in [Status::unavailable("down"), Status::deadline_exceeded("slow"), Status::internal("bug")] {
            assert!(matches!(port_error("heartbeat", s), Error::Unavailable(_)));
        }
        assert!(matches!(port_error("renew_online", Status::invalid_argument("x")), Error::Unavailable(_)));
    }

    #[test]
    fn addresses_without_a_scheme_get_http() {
        assert_eq!(endpoint("127.0.0.1:3119").unwrap().uri().to_string(), "http://127.0.0.1:3119/");
        assert_eq!(endpoint("http://logic:3119").unwrap().uri().to_string(), "http://logic:3119/");
    }

    #[test]
    fn invalid_client_settings_name_their_field() {
        let c = ClientConfig { addrs: Vec::new(), ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic.addrs");
        let c = ClientConfig { addrs: vec!["bad host:1".into()], ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic.addrs");
        let c = ClientConfig { timeout: Duration::ZERO, ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic.timeout");
        ClientConfig::default().validate().unwrap();
    }
}
