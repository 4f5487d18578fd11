//! The [`Logic`] port over gRPC: a tonic client of goim's `goim.logic.Logic`, so a comet talks to
//! goim-rs logic instances (or goim's Go logic).
//!
//! ```toml
//! [logic]
//! addrs = ["127.0.0.1:3119"]   # one or more logic instances, taken in turn; an unreachable one is skipped
//! timeout = "1s"               # deadline of every call
//! connect_timeout = "1s"       # goim's rpcClient.dial
//! keepalive_interval = "10s"   # HTTP/2 pings, also while idle (goim: 10s)
//! keepalive_timeout = "3s"     # (goim: 3s)
//! max_message_size = 16777216  # (goim: 1<<24)
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// comet's [`Logic`] over gRPC. One lazily connected channel per logic instance, each
/// reconnecting on its own; calls take the instances in turn, and a call that finds its
/// instance unreachable (`Unavailable`) goes on to the next, so one logic down or not yet up
/// costs no client its auth. Building one does no I/O. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcLogic {
    instances: Arc<[Instance]>,
    next: Arc<AtomicUsize>,
    timeout: Duration,
}

#[derive(Clone, Debug)]
struct Instance {
    client: LogicClient<Channel>,
    /// The same channel, sending gzip: goim's comet compresses RenewOnline, the largest message.
    gzip: LogicClient<Channel>,
}

impl GrpcLogic {
    /// A client of the logic instances in `config` (which must have passed
    /// [`ClientConfig::validate`]). Must be called inside a Tokio runtime.
    pub fn new(config: &ClientConfig) -> Result<GrpcLogic, ConfigError> {
        config.validate()?;
        let instances: Vec<Instance> = config
            .addrs
            .iter()
            .map(|a| {
                // validate() parsed every address.
                let channel = endpoint(a)
                    .expect("validated address")
                    .connect_timeout(config.connect_timeout)
                    .timeout(config.timeout)
                    .http2_keep_alive_interval(config.keepalive_interval)
                    .keep_alive_timeout(config.keepalive_timeout)
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true)
                    .connect_lazy();
                let client = LogicClient::new(channel)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(config.max_message_size);
                let gzip = client.clone().send_compressed(CompressionEncoding::Gzip);
                Instance { client, gzip }
            })
            .collect();
        Ok(GrpcLogic {
            instances: instances.into(),
            next: Arc::new(AtomicUsize::new(0)),
            timeout: config.timeout,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.timeout);
        req
    }

    /// Runs `call` on the next instance, and on the following ones while the instance tried is
    /// unreachable: each instance at most twice, because a channel whose last connection
    /// attempt failed reports that stale error once before it dials again.
    async fn call<T, F, Fut>(&self, name: &'static str, call: F) -> Result<T, Error>
    where
        F: Fn(Instance) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempts = 2 * self.instances.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let instance = self.instances[(first + tried) % self.instances.len()].clone();
            tried += 1;
            match call(instance).await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == Code::Unavailable && tried < attempts => {
                    tracing::debug!(call = name, error = %s, "logic instance unavailable, trying the next");
                }
                Err(s) => return Err(port_error(name, s)),
            }
        }
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
        let req = ConnectReq::from(req);
        let reply = self
            .call("connect", |mut i| {
                let r = self.request(req.clone());
                async move { i.client.connect(r).await }
            })
            .await?;
        Ok(Session::from(reply.into_inner()))
    }

    async fn disconnect(&self, presence: Presence) -> Result<(), Error> {
        let req = DisconnectReq::from(presence);
        self.call("disconnect", |mut i| {
            let r = self.request(req.clone());
            async move { i.client.disconnect(r).await }
        })
        .await
        .map(drop)
    }

    async fn heartbeat(&self, presence: Presence) -> Result<(), Error> {
        let req = HeartbeatReq::from(presence);
        self.call("heartbeat", |mut i| {
            let r = self.request(req.clone());
            async move { i.client.heartbeat(r).await }
        })
        .await
        .map(drop)
    }

    async fn renew_online(&self, online: Online) -> Result<HashMap<String, i32>, Error> {
        let req = OnlineReq::from(online);
        let reply = self
            .call("renew_online", |mut i| {
                let r = self.request(req.clone());
                async move { i.gzip.renew_online(r).await }
            })
            .await?;
        Ok(reply.into_inner().all_room_count)
    }

    async fn receive(&self, uplink: Uplink) -> Result<(), Error> {
        let req = ReceiveReq::from(uplink);
        self.call("receive", |mut i| {
            let r = self.request(req.clone());
            async move { i.client.receive(r).await }
        })
        .await
        .map(drop)
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
