//! An in-process comet on loopback ports, with a stand-in logic that accepts goim's JSON token
//! (`goim_test_support::json_token`) and nothing else of logic: the comet-only black-box tests.
//! Pushes go straight to the comet ([`push_key`], [`push_room`]), as job's dispatch calls it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use goim_api::frame::encode_push;
use goim_api::{Connect, Online, Presence, Session, Uplink};
use goim_comet::logic::Error as LogicError;
use goim_comet::{Comet, Config, Listeners, Logic, Metrics};
use goim_test_support::{Client, Transport};
use prometheus_client::registry::Registry;

pub const BOTH: [Transport; 2] = [Transport::Tcp, Transport::Ws];
pub const WAIT: Duration = Duration::from_secs(5);
/// The session heartbeat timeout of logic's defaults (`node.heartbeat × node.heartbeat_max`,
/// as in goim).
pub const LOGIC_HEARTBEAT: Duration = Duration::from_secs(8 * 60);

/// A logic whose auth accepts goim's JSON token as the embedded logic's `json` mode does: the
/// token's mid, key (one made up when empty), room and accepts, and `heartbeat` as the session's
/// heartbeat timeout. Everything else succeeds and does nothing.
pub struct JsonLogic {
    heartbeat: Duration,
    next_key: AtomicU64,
}

#[async_trait]
impl Logic for JsonLogic {
    async fn connect(&self, req: Connect) -> Result<Session, LogicError> {
        let token: serde_json::Value = serde_json::from_slice(&req.token)
            .map_err(|e| LogicError::Rejected(format!("not a JSON token: {e}")))?;
        let mut key = token["key"].as_str().unwrap_or_default().to_owned();
        if key.is_empty() {
            key = format!("made-up-{}", self.next_key.fetch_add(1, Ordering::Relaxed));
        }
        Ok(Session {
            mid: token["mid"].as_i64().unwrap_or_default(),
            key,
            room: token["room_id"].as_str().unwrap_or_default().to_owned(),
            accepts: token["accepts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.as_i64()?.try_into().ok())
                .collect(),
            heartbeat: self.heartbeat,
        })
    }
    async fn disconnect(&self, _: Presence) -> Result<(), LogicError> {
        Ok(())
    }
    async fn heartbeat(&self, _: Presence) -> Result<(), LogicError> {
        Ok(())
    }
    async fn renew_online(&self, _: Online) -> Result<HashMap<String, i32>, LogicError> {
        Ok(HashMap::new())
    }
    async fn receive(&self, _: Uplink) -> Result<(), LogicError> {
        Ok(())
    }
}

/// A running comet, its TCP, WebSocket (the HTTP port) and WSS addresses, and its metrics.
pub struct Server {
    pub comet: Comet,
    pub tcp: SocketAddr,
    pub websocket: SocketAddr,
    /// The first WSS listener, when `websocket.tls.bind` is set.
    pub wss: Option<SocketAddr>,
    registry: Registry,
}

impl Server {
    pub fn addr(&self, t: Transport) -> SocketAddr {
        match t {
            Transport::Tcp => self.tcp,
            Transport::Ws => self.websocket,
        }
    }

    /// The metrics in Prometheus text, as the admin port's `/metrics` serves them.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

/// comet's defaults on 127.0.0.1 port 0 (TCP and WebSocket), sessions with [`LOGIC_HEARTBEAT`].
pub async fn start() -> Server {
    start_with(|_| {}, LOGIC_HEARTBEAT).await
}

/// Like [`start`], with `f` applied to the config and `heartbeat` as every session's.
pub async fn start_with(f: impl FnOnce(&mut Config), heartbeat: Duration) -> Server {
    try_start_with(f, heartbeat).await.expect("comet binds its listeners")
}

/// Like [`start_with`], with the error of binding the listeners (and loading the WSS
/// certificate) returned rather than a panic. The config must still pass `validate`.
pub async fn try_start_with(f: impl FnOnce(&mut Config), heartbeat: Duration) -> std::io::Result<Server> {
    let mut config = Config { server_id: "comet-test".into(), ..Config::default() };
    config.tcp.bind = vec!["127.0.0.1:0".into()];
    config.websocket.bind = vec!["127.0.0.1:0".into()];
    f(&mut config);
    config.validate().expect("a valid comet config");
    let listeners = Listeners::bind(&config).await?;
    let (tcp, websocket) = (listeners.tcp[0].local_addr()?, listeners.websocket[0].local_addr()?);
    let wss = listeners.tls.first().map(|(l, _)| l.local_addr()).transpose()?;
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let logic = JsonLogic { heartbeat, next_key: AtomicU64::new(0) };
    let comet = Comet::new(config, Arc::new(logic), metrics);
    comet.start(listeners);
    Ok(Server { comet, tcp, websocket, wss, registry })
}

/// A client of `s` over `t`, logged in with goim's JSON token.
pub async fn login(s: &Server, t: Transport, mid: i64, key: &str, room: &str, accepts: &[i32]) -> Client {
    let mut c = Client::connect(t, s.addr(t)).await.expect("connect");
    c.login(mid, key, room, accepts).await.expect("login");
    c
}

/// What logic's push by key reaches: one packet of `op` for `key`.
pub fn push_key(s: &Server, key: &str, op: i32, body: &[u8]) {
    s.comet.push_keys(&[key.to_owned()], op, encode_push(op, body)).expect("a push to one key");
}

/// What job's room dispatch sends: one batch for every member of `room`.
pub fn push_room(s: &Server, room: &str, op: i32, body: &[u8]) {
    s.comet.broadcast_room(room, encode_push(op, body)).expect("a push to a room");
}

/// The value of the sample whose line starts with `prefix` (name and labels), or 0.
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
