//! The [`Comets`] port over gRPC: one tonic client of `goim.comet.Comet` per comet server id,
//! created and dropped as [`Discovery`] changes, so job reaches goim-rs comets (or goim's Go
//! comets) the way goim's job does.
//!
//! Pushes are sent as goim's job sends them: the encoded packet(s) wrapped in an op-9 (Raw)
//! `Proto`, which a comet writes out unchanged.
//!
//! ```toml
//! [comet]
//! timeout = "5s"              # deadline of every call (sent as grpc-timeout)
//! connect_timeout = "1s"      # goim: 1s dial timeout
//! keepalive_interval = "10s"  # HTTP/2 pings, also while idle (goim: 10s)
//! keepalive_timeout = "3s"    # (goim: 3s)
//! max_message_size = 16777216 # (goim: 1<<24)
//! ```

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::Op;
use goim_api::pb::comet::comet_client::CometClient;
use goim_api::pb::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq};
use goim_api::pb::protocol::Proto;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::{debug, info, warn};

use super::{Comets, Error};
use crate::config::Error as ConfigError;
use crate::discovery::{Discovery, Endpoints};

/// The `[comet]` table of the job binary: how job calls comets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Deadline of every call, sent to the comet as `grpc-timeout` and enforced here. Default 5s.
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
    /// Largest message in bytes (a room batch). Default 16 MiB.
    pub max_message_size: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(3),
            max_message_size: 1 << 24,
        }
    }
}

impl ClientConfig {
    /// Checks the table (field names assume it sits at `comet_client`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.channel().validate("comet_client")
    }

    /// The settings every channel to a comet is built with.
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

/// job's [`Comets`] over gRPC.
///
/// Connections open lazily on first use and reconnect on their own. The client set follows the
/// discovery channel: each call first applies any change (cheap when there is none), so there is
/// no background task to stop.
pub struct GrpcComets {
    config: ClientConfig,
    /// Held only to apply a discovery change or clone a client; never across an await.
    state: Mutex<State>,
}

struct State {
    discovery: watch::Receiver<Endpoints>,
    /// By server id: every comet discovery lists with an address.
    clients: HashMap<String, Client>,
    /// Server ids of the comets that receive room pushes and broadcasts: the `serving` ones
    /// (terminating comets included while they drain), sorted.
    serving: Vec<String>,
    /// Server ids discovery listed and no longer lists, so a push to one of them is
    /// [`Error::Gone`] (a stale route) rather than [`Error::UnknownServer`]; each with the change
    /// number that removed it. At most [`MAX_GONE`]: past it the oldest is forgotten (and reads
    /// as unknown, which is dropped the same way).
    gone: HashMap<String, u64>,
    /// Counts discovery changes applied, to order `gone`.
    changes: u64,
}

/// How many departed comets [`State::gone`] remembers.
const MAX_GONE: usize = 4096;

struct Client {
    addr: String,
    client: CometClient<Channel>,
}

impl GrpcComets {
    /// Clients for the comets `discovery` lists, kept in step with it. Does no I/O. Must be called
    /// inside a Tokio runtime; `config` should have passed [`ClientConfig::validate`].
    pub fn new(discovery: &dyn Discovery, config: ClientConfig) -> GrpcComets {
        let mut rx = discovery.watch();
        let first = rx.borrow_and_update().clone();
        let comets = GrpcComets {
            config,
            state: Mutex::new(State {
                discovery: rx,
                clients: HashMap::new(),
                serving: Vec::new(),
                gone: HashMap::new(),
                changes: 0,
            }),
        };
        comets.apply(&mut comets.state.lock(), &first);
        comets
    }

    /// Applies a pending discovery change, then runs `f` on the current state.
    fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let mut state = self.state.lock();
        // A closed channel (the source is gone) has no more changes: keep the last list.
        if state.discovery.has_changed().unwrap_or(false) {
            let endpoints = state.discovery.borrow_and_update().clone();
            self.apply(&mut state, &endpoints);
        }
        f(&state)
    }

    fn apply(&self, state: &mut State, endpoints: &Endpoints) {
        let mut clients = HashMap::with_capacity(endpoints.len());
        for e in endpoints.iter() {
            let kept = state.clients.remove(&e.server_id).filter(|c| c.addr == e.addr);
            let client = match kept {
                Some(c) => c,
                None => match self.connect(&e.addr) {
                    Ok(client) => {
                        info!(server = %e.server_id, addr = %e.addr, "comet added");
                        Client { addr: e.addr.clone(), client }
                    }
                    Err(err) => {
                        warn!(server = %e.server_id, addr = %e.addr, error = %err, "comet address unusable");
                        continue;
                    }
                },
            };
            clients.insert(e.server_id.clone(), client);
        }
        state.changes += 1;
        for gone in state.clients.keys() {
            info!(server = %gone, "comet removed");
            state.gone.insert(gone.clone(), state.changes);
        }
        for listed in clients.keys() {
            if state.gone.remove(listed).is_some() {
                info!(server = %listed, "comet listed again");
            }
        }
        while state.gone.len() > MAX_GONE {
            let oldest = state.gone.iter().min_by_key(|(_, at)| **at).map(|(id, _)| id.clone());
            match oldest {
                Some(id) => state.gone.remove(&id),
                None => break,
            };
        }
        state.clients = clients;
        state.serving = endpoints
            .iter()
            .filter(|e| e.serving && state.clients.contains_key(&e.server_id))
            .map(|e| e.server_id.clone())
            .collect();
    }

    fn connect(&self, addr: &str) -> Result<CometClient<Channel>, tonic::transport::Error> {
        let c = &self.config;
        let channel = c.channel().apply(goim_kit::grpc::endpoint(addr)?).connect_lazy();
        Ok(CometClient::new(channel)
            .max_decoding_message_size(c.max_message_size)
            .max_encoding_message_size(c.max_message_size))
    }

    fn client(&self, server: &str) -> Result<CometClient<Channel>, Error> {
        self.with_state(|s| match s.clients.get(server) {
            Some(c) => Ok(c.client.clone()),
            None if s.gone.contains_key(server) => Err(Error::Gone(server.to_owned())),
            None => Err(Error::UnknownServer(server.to_owned())),
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.config.timeout);
        req
    }
}

/// goim's job wraps what it pushes in an op-9 proto; comets write its body out unchanged.
fn raw(packets: Bytes) -> Option<Proto> {
    Some(Proto { ver: 1, op: Op::Raw.code(), seq: 0, body: packets })
}

/// The one place a comet's gRPC status becomes the port's error: transient failures are
/// retryable, a refusal is not.
fn port_error(server: &str, s: Status) -> Error {
    match s.code() {
        Code::DeadlineExceeded => Error::Timeout,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::NotFound
        | Code::AlreadyExists => Error::Rejected(format!("{server}: {:?}: {}", s.code(), s.message())),
        code => {
            debug!(server, ?code, message = s.message(), "comet call failed");
            Error::Unavailable(format!("{server}: {code:?}: {}", s.message()))
        }
    }
}

#[async_trait]
impl Comets for GrpcComets {
    fn servers(&self) -> Vec<String> {
        self.with_state(|s| s.serving.clone())
    }

    async fn push_keys(&self, server: &str, keys: &[String], op: i32, packet: Bytes) -> Result<(), Error> {
        let req = PushMsgReq { keys: keys.to_vec(), proto_op: op, proto: raw(packet) };
        let mut client = self.client(server)?;
        client.push_msg(self.request(req)).await.map(drop).map_err(|s| port_error(server, s))
    }

    async fn broadcast_room(&self, server: &str, room: &str, batch: Bytes) -> Result<(), Error> {
        let req = BroadcastRoomReq { room_id: room.to_owned(), proto: raw(batch) };
        let mut client = self.client(server)?;
        client.broadcast_room(self.request(req)).await.map(drop).map_err(|s| port_error(server, s))
    }

    async fn broadcast(&self, server: &str, op: i32, packet: Bytes, speed: i32) -> Result<(), Error> {
        let req = BroadcastReq { proto_op: op, proto: raw(packet), speed };
        let mut client = self.client(server)?;
        client.broadcast(self.request(req)).await.map(drop).map_err(|s| port_error(server, s))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::discovery::CometEndpoint;

    /// A discovery whose list the test changes.
    struct Manual(watch::Sender<Endpoints>);

    impl Discovery for Manual {
        fn watch(&self) -> watch::Receiver<Endpoints> {
            self.0.subscribe()
        }
    }

    fn endpoint(id: &str, addr: &str, serving: bool) -> CometEndpoint {
        CometEndpoint { server_id: id.into(), addr: addr.into(), ready: serving, serving, terminating: false }
    }

    #[tokio::test]
    async fn clients_follow_discovery_and_only_serving_comets_get_fan_out() {
        let d = Manual(watch::Sender::new(Arc::new(vec![
            endpoint("a", "127.0.0.1:1", true),
            endpoint("b", "127.0.0.1:2", false),
        ])));
        let comets = GrpcComets::new(&d, ClientConfig::default());
        assert_eq!(comets.servers(), ["a"]);
        assert!(comets.client("b").is_ok(), "a known comet that is not serving still takes key pushes");
        assert_eq!(comets.client("c").unwrap_err(), Error::UnknownServer("c".into()));

        d.0.send_replace(Arc::new(vec![
            endpoint("b", "127.0.0.1:2", true),
            endpoint("c", "127.0.0.1:3", true),
        ]));
        assert_eq!(comets.servers(), ["b", "c"]);
        assert_eq!(comets.client("a").unwrap_err(), Error::Gone("a".into()));
    }

    #[tokio::test]
    async fn a_comet_that_left_discovery_is_gone_at_once_and_usable_again_when_relisted() {
        let d = Manual(watch::Sender::new(Arc::new(vec![
            endpoint("a", "127.0.0.1:1", true),
            endpoint("b", "127.0.0.1:2", true),
        ])));
        let comets = GrpcComets::new(&d, ClientConfig::default());
        d.0.send_replace(Arc::new(vec![endpoint("b", "127.0.0.1:2", true)]));
        // No connection attempt: the answer comes from the list alone.
        let r = comets.push_keys("a", &["k".into()], 1000, Bytes::new()).await;
        assert_eq!(r, Err(Error::Gone("a".into())));
        assert!(!r.unwrap_err().is_retryable());
        assert_eq!(comets.servers(), ["b"], "a gone comet gets no room pushes or broadcasts");

        d.0.send_replace(Arc::new(vec![
            endpoint("a", "127.0.0.1:1", true),
            endpoint("b", "127.0.0.1:2", true),
        ]));
        assert!(comets.client("a").is_ok(), "the same server id listed again is dispatched to again");
        assert_eq!(comets.servers(), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_comet_that_moved_gets_a_new_client_and_an_unchanged_one_keeps_its_own() {
        let d = Manual(watch::Sender::new(Arc::new(vec![endpoint("a", "127.0.0.1:1", true)])));
        let comets = GrpcComets::new(&d, ClientConfig::default());
        comets.servers();
        d.0.send_replace(Arc::new(vec![endpoint("a", "127.0.0.1:9", true)]));
        assert_eq!(comets.with_state(|s| s.clients["a"].addr.clone()), "127.0.0.1:9");
    }

    #[tokio::test]
    async fn the_last_list_stays_when_the_discovery_source_is_gone() {
        let d = Manual(watch::Sender::new(Arc::new(vec![endpoint("a", "127.0.0.1:1", true)])));
        let comets = GrpcComets::new(&d, ClientConfig::default());
        drop(d);
        assert_eq!(comets.servers(), ["a"]);
    }

    #[tokio::test]
    async fn an_unknown_server_fails_at_once_without_io() {
        let d = Manual(watch::Sender::new(Arc::new(Vec::new())));
        let comets = GrpcComets::new(&d, ClientConfig::default());
        let r = comets.push_keys("nowhere", &["k".into()], 1000, Bytes::new()).await;
        assert_eq!(r, Err(Error::UnknownServer("nowhere".into())));
    }

    #[test]
    fn statuses_map_to_retryable_or_final_errors() {
        assert_eq!(port_error("c", Status::deadline_exceeded("slow")), Error::Timeout);
        assert!(port_error("c", Status::unavailable("down")).is_retryable());
        assert!(port_error("c", Status::internal("h2 reset")).is_retryable());
        assert!(matches!(port_error("c", Status::invalid_argument("no keys")), Error::Rejected(_)));
        assert!(!port_error("c", Status::unimplemented("old comet")).is_retryable());
    }

    #[test]
    fn client_settings_name_their_field() {
        ClientConfig::default().validate().unwrap();
        let c = ClientConfig { timeout: Duration::ZERO, ..ClientConfig::default() };
        assert_eq!(c.validate().unwrap_err().field, "comet_client.timeout");
    }
}
