//! The [`Logic`] port over gRPC: a tonic client of goim's `goim.logic.Logic`, so a comet talks to
//! goim-rs logic instances (or goim's Go logic).
//!
//! ```toml
//! [logic_client]
//! addrs = ["127.0.0.1:3119"]   # one or more logic instances, taken in turn; an unreachable one is skipped
//! resolve_interval = "5s"      # how often a name in addrs is resolved again (one instance per address)
//! timeout = "1s"               # deadline of every call
//! connect_timeout = "1s"       # goim's rpcClient.dial
//! keepalive_interval = "10s"   # HTTP/2 pings, also while idle (goim: 10s)
//! keepalive_timeout = "3s"     # (goim: 3s)
//! max_message_size = 16777216  # (goim: 1<<24)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use goim_api::pb::logic::logic_client::LogicClient;
use goim_api::pb::logic::{
    ConnectReq, DisconnectReq, HeartbeatReq, OnlineReq, ReceiveReq, RecoverReply, RecoverReq,
};
use goim_api::{Connect, Online, Presence, RecoverRequest, Recovered, Session, Uplink};
use goim_kit::Invalid;
use goim_kit::grpc::endpoint;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use self::resolver::{Dns, Resolve, Target};
use super::{Error, Logic};

mod resolver;

/// The `[logic]` table of the comet binary: how to reach logic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// `host:port` (or `http://host:port`) of each logic instance; calls are spread over them.
    /// A host that is a name (a headless Service: one record per logic pod) stands for every
    /// address it resolves to, one connection each. Default `["127.0.0.1:3119"]`.
    pub addrs: Vec<String>,
    /// How often each name in `addrs` is resolved again, to follow logic pods that come and go.
    /// Default 5s.
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
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
            resolve_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(3),
            max_message_size: 1 << 24,
        }
    }
}

impl ClientConfig {
    /// Checks the table; fields are named under `logic_client`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let err = |field, reason: String| Err(Invalid::new(field, reason).within("logic_client"));
        if self.addrs.is_empty() {
            return err("addrs", "must name at least one logic instance".into());
        }
        for addr in &self.addrs {
            if let Err(e) = endpoint(addr) {
                return err("addrs", format!("{addr:?} is not host:port ({e})"));
            }
        }
        if self.resolve_interval.is_zero() {
            return err("resolve_interval", "must be more than 0s".into());
        }
        self.channel().validate("logic_client")
    }

    /// The settings every channel to a logic instance is built with.
    fn channel(&self) -> goim_kit::grpc::Channel {
        goim_kit::grpc::Channel {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            max_message_size: self.max_message_size,
        }
    }
}

/// comet's [`Logic`] over gRPC. One lazily connected channel per logic instance, each
/// reconnecting on its own; calls take the instances in turn, and a call that finds its
/// instance unreachable (`Unavailable`) goes on to the next, so one logic down or not yet up
/// costs no client its auth. An address whose host is a name is resolved at start and every
/// `resolve_interval` by a background task, one instance per address it resolves to (see
/// `grpc/resolver.rs`). Building one does no I/O. Cheap to clone; the resolver task ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct GrpcLogic {
    shared: Arc<Shared>,
}

struct Shared {
    /// The instances calls go to: every IP address's, and each name's resolved ones (or the
    /// name's own channel until it first resolves; never empty). The resolver task swaps in a
    /// whole new slice under the write lock; `call` clones the `Arc` under the read lock and
    /// lets go before it awaits anything, so neither side ever waits on the other's I/O.
    instances: RwLock<Arc<[Instance]>>,
    next: AtomicUsize,
    timeout: Duration,
    /// `OnlineReply.store_epoch` of the last renew_online reply that carried one.
    store_epoch: parking_lot::Mutex<Option<String>>,
    /// Cancels the resolver task's token when the last clone drops, so the task (which holds
    /// only a `Weak` to this) ends at once rather than at its next tick. `None`: no names.
    _resolver: Option<DropGuard>,
}

#[derive(Clone, Debug)]
struct Instance {
    /// What this instance dials: an IP `host:port`, or a configured name until it resolves.
    peer: String,
    client: LogicClient<Channel>,
    /// The same channel, sending gzip: goim's comet compresses RenewOnline, the largest message.
    gzip: LogicClient<Channel>,
}

impl Instance {
    /// A lazily connected channel to `endpoint` with the settings of `config`.
    fn new(config: &ClientConfig, endpoint: Endpoint, peer: String) -> Instance {
        let channel = config.channel().apply(endpoint).connect_lazy();
        let client = LogicClient::new(channel)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(config.max_message_size);
        let gzip = client.clone().send_compressed(CompressionEncoding::Gzip);
        Instance { peer, client, gzip }
    }
}

impl fmt::Debug for GrpcLogic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let instances = self.shared.instances();
        let peers: Vec<&str> = instances.iter().map(|i| i.peer.as_str()).collect();
        f.debug_struct("GrpcLogic").field("instances", &peers).field("timeout", &self.shared.timeout).finish()
    }
}

impl Shared {
    fn instances(&self) -> Arc<[Instance]> {
        // A panic while the lock was held cannot leave a half-written slice: writers only swap.
        self.instances.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn publish(&self, instances: Arc<[Instance]>) {
        let mut slot = self.instances.write().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *slot, instances);
        drop(slot);
        // Channels of vanished addresses close here, once the calls still holding them finish.
        drop(old);
    }
}

impl GrpcLogic {
    /// A client of the logic instances in `config` (which must have passed
    /// [`ClientConfig::validate`]). Must be called inside a Tokio runtime.
    pub fn new(config: &ClientConfig) -> Result<GrpcLogic, Invalid> {
        GrpcLogic::with_resolver(config, Arc::new(Dns))
    }

    fn with_resolver(config: &ClientConfig, resolve: Arc<dyn Resolve>) -> Result<GrpcLogic, Invalid> {
        config.validate()?;
        // validate() parsed every address.
        let targets: Vec<Target> =
            config.addrs.iter().map(|a| Target::new(config, a).expect("validated address")).collect();
        let instances = resolver::current(&targets);
        let stop = CancellationToken::new();
        let named = targets.iter().any(Target::is_named);
        let shared = Arc::new(Shared {
            instances: RwLock::new(instances),
            next: AtomicUsize::new(0),
            timeout: config.timeout,
            store_epoch: parking_lot::Mutex::new(None),
            _resolver: named.then(|| stop.clone().drop_guard()),
        });
        if named {
            let task = resolver::run(Arc::downgrade(&shared), targets, resolve, config.clone(), stop);
            tokio::spawn(task);
        }
        Ok(GrpcLogic { shared })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.shared.timeout);
        req
    }

    /// Runs `call` on the next instance, and on the following ones while the instance tried is
    /// unreachable: each instance at most twice, because a channel whose last connection
    /// attempt failed reports that stale error once before it dials again. The instances are
    /// those current when the call starts; a swap meanwhile does not disturb it.
    async fn call<T, F, Fut>(&self, name: &'static str, call: F) -> Result<T, Error>
    where
        F: Fn(Instance) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let instances = self.shared.instances();
        if instances.is_empty() {
            // Not reached: every address contributes at least one instance.
            return Err(Error::Unavailable(format!("{name}: no logic instance")));
        }
        let attempts = 2 * instances.len();
        let first = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let instance = instances[(first + tried) % instances.len()].clone();
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
        let reply = reply.into_inner();
        if !reply.store_epoch.is_empty() {
            *self.shared.store_epoch.lock() = Some(reply.store_epoch);
        }
        Ok(reply.all_room_count)
    }

    fn store_epoch(&self) -> Option<String> {
        self.shared.store_epoch.lock().clone()
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

    /// goim's Go logic has no `Recover`: its `Unimplemented` means "no positions".
    async fn recover(&self, req: RecoverRequest) -> Result<Recovered, Error> {
        let req = RecoverReq::from(req);
        let reply = self
            .call("recover", |mut i| {
                let r = self.request(req.clone());
                async move {
                    match i.client.recover(r).await {
                        Err(s) if s.code() == Code::Unimplemented => {
                            Ok(tonic::Response::new(RecoverReply::default()))
                        }
                        other => other,
                    }
                }
            })
            .await?;
        Ok(Recovered::from(reply.into_inner()))
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
    fn invalid_client_settings_name_their_field() {
        let c = ClientConfig { addrs: Vec::new(), ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic_client.addrs");
        let c = ClientConfig { addrs: vec!["bad host:1".into()], ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic_client.addrs");
        let c = ClientConfig { timeout: Duration::ZERO, ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic_client.timeout");
        let c = ClientConfig { resolve_interval: Duration::ZERO, ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "logic_client.resolve_interval");
        ClientConfig::default().validate().unwrap();
    }
}
