//! The comet itself: what job pushes into, the listeners, the online reports, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use goim_api::Online;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug_span, info, warn};

use crate::config::Config;
use crate::disconnect::Disconnect;
use crate::drain::{Drain, DrainReport};
use crate::http::Asset;
use crate::hub::Hub;
use crate::logic::Logic;
use crate::metrics::{KindLabel, Metrics, TransportLabel};
use crate::room::Delivery;

/// Everything a connection task shares with the rest of comet.
pub struct State {
    pub config: Config,
    pub hub: Hub,
    pub logic: Arc<dyn Logic>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when comet stops; accept loops and handshakes watch it.
    pub shutdown: CancellationToken,
    /// Every task comet spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
    pub next_id: AtomicU64,
    /// One permit per connection held; accept waits for one (`max_connections`).
    pub limit: Arc<Semaphore>,
    pub sessions: crate::long_poll::Sessions,
    /// The drain (preStop or SIGTERM): started once, awaited by every caller of [`Comet::drain`].
    pub drain: Drain,
    /// The demo page and client, when the binary provides them.
    pub assets: std::sync::OnceLock<Vec<Asset>>,
}

/// Why comet refused a push request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("push has no keys")]
    NoKeys,
    #[error("room push has no room")]
    NoRoom,
}

/// What a push did on this comet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    pub delivery: Delivery,
    /// Keys with no connection here.
    pub missing: usize,
}

/// The listeners comet serves; bind them before [`Comet::start`] (tests bind port 0).
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    pub websocket: Vec<TcpListener>,
    /// WSS listeners with the TLS configuration loaded from `websocket.tls`.
    pub tls: Vec<(TcpListener, crate::tls::Acceptor)>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let mut out = Listeners { tcp: Vec::new(), websocket: Vec::new(), tls: Vec::new() };
        if !config.websocket.tls.bind.is_empty() {
            let acceptor = crate::tls::Acceptor::load(&config.websocket.tls)?;
            for addr in &config.websocket.tls.bind {
                out.tls.push((bind(addr).await?, acceptor.clone()));
            }
        }
        for addr in &config.tcp.bind {
            out.tcp.push(bind(addr).await?);
        }
        for addr in &config.websocket.bind {
            out.websocket.push(bind(addr).await?);
        }
        Ok(out)
    }
}

async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[derive(Clone)]
pub struct Comet {
    state: Arc<State>,
}

impl Comet {
    /// `config` must have passed [`Config::validate`].
    pub fn new(config: Config, logic: Arc<dyn Logic>, metrics: Arc<Metrics>) -> Comet {
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let state = State {
            hub: Hub::new(config.buckets),
            config,
            logic,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_id: AtomicU64::new(1),
            limit,
            sessions: Default::default(),
            drain: Default::default(),
            assets: Default::default(),
        };
        Comet { state: Arc::new(state) }
    }

    pub fn server_id(&self) -> &str {
        &self.state.config.server_id
    }

    /// Starts serving the listeners and reporting online counts to logic.
    pub fn start(&self, listeners: Listeners) {
        for l in listeners.tcp {
            self.state.tasks.spawn(crate::tcp::accept_loop(self.state.clone(), l));
        }
        for l in listeners.websocket {
            self.state.tasks.spawn(crate::http::accept_loop(self.state.clone(), l));
        }
        for (l, acceptor) in listeners.tls {
            self.state.tasks.spawn(crate::tls::accept_loop(self.state.clone(), l, acceptor));
        }
        self.state.tasks.spawn(online_loop(self.state.clone()));
        self.state.tasks.spawn(crate::long_poll::sweep(self.state.clone()));
    }

    /// Files to serve on the HTTP port (the demo page and `goim.js`); set once, before clients
    /// ask for them. Served only while `websocket.demo` is on.
    pub fn serve_assets(&self, assets: Vec<Asset>) {
        let _ = self.state.assets.set(assets);
    }

    /// Queues one encoded packet for each key that accepts `op`. Keys not here are counted,
    /// not an error (the client may have moved to another comet).
    pub fn push_keys(&self, keys: &[String], op: i32, packet: Bytes) -> Result<PushReport, PushError> {
        if keys.is_empty() {
            return Err(PushError::NoKeys);
        }
        self.received("keys");
        let (delivery, missing) = self.state.hub.push_keys(keys, op, &packet);
        self.count("keys", delivery);
        Ok(PushReport { delivery, missing })
    }

    /// Queues one shared batch for every member of `room` here.
    pub fn broadcast_room(&self, room: &str, batch: Bytes) -> Result<PushReport, PushError> {
        if room.is_empty() {
            return Err(PushError::NoRoom);
        }
        self.received("room");
        let delivery = self.state.hub.push_room(room, &batch);
        self.count("room", delivery);
        Ok(PushReport { delivery, missing: 0 })
    }

    /// Queues `packet` for every connection that accepts `op`, shard by shard; with `speed` > 0,
    /// paced at about `speed` connections per second. Returns at once; the walk runs in the
    /// background (as goim's does).
    pub fn broadcast(&self, op: i32, packet: Bytes, speed: i32) {
        self.received("broadcast");
        let state = self.state.clone();
        self.state.tasks.spawn(async move {
            for i in 0..state.hub.shard_count() {
                let (delivery, size) = state.hub.push_shard(i, op, &packet);
                count(&state.metrics, "broadcast", delivery);
                if speed > 0 && size > 0 {
                    let pause = Duration::from_secs_f64(size as f64 / speed as f64);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = state.shutdown.cancelled() => return,
                    }
                }
            }
        });
    }

    fn count(&self, kind: &'static str, d: Delivery) {
        count(&self.state.metrics, kind, d)
    }

    fn received(&self, kind: &'static str) {
        self.state.metrics.pushes.get_or_create(&KindLabel { kind }).inc();
    }

    /// Authenticated connections held now (sockets and long-poll sessions).
    pub fn connections(&self) -> usize {
        self.state.hub.connections()
    }

    /// Long-poll sessions held now.
    pub fn long_poll_sessions(&self) -> usize {
        self.state.sessions.len()
    }

    /// Rooms with at least one member on this comet (goim's `Rooms` RPC).
    pub fn rooms(&self) -> Vec<String> {
        self.state.hub.room_counts().into_keys().collect()
    }

    /// Members of `room` on this comet.
    pub fn room_online(&self, room: &str) -> i32 {
        self.state.hub.room(room).map(|r| r.local_online()).unwrap_or(0)
    }

    /// Drains this comet, or waits for the drain already under way, and returns what it did.
    ///
    /// At once: the TCP listeners close (new connections are refused), the HTTP port answers new
    /// WebSocket upgrades and long-poll sessions with 503 (it keeps serving the polls of existing
    /// sessions, so they can be told). Then every client gets op 6 `drain` with a jittered
    /// `reconnect_after_ms` and is closed, `drain.rate` per second, until none is left or
    /// `drain.timeout` runs out (the rest are told at once). Pushes and calls to logic go on as
    /// usual meanwhile. Readiness is the caller's: the binary's `/readyz` turns 503 first.
    pub async fn drain(&self) -> DrainReport {
        if self.state.drain.begin() {
            let state = self.state.clone();
            self.state.tasks.spawn(async move {
                let report =
                    crate::drain::run(&state.hub, &state.config.drain, &state.metrics, &state.shutdown).await;
                state.drain.finish(report);
            });
        }
        self.state.drain.wait().await
    }

    /// Whether a drain has started (it never stops: a drained comet only exits).
    pub fn is_draining(&self) -> bool {
        self.state.drain.is_started()
    }

    /// Stops accepting, sends op 6 `reason` to every client, and waits up to `grace` for every
    /// connection to finish. Returns whether everything finished in time.
    pub async fn stop(&self, reason: Disconnect, grace: Duration) -> bool {
        self.state.shutdown.cancel();
        let told = self.state.hub.close_all(reason.clone());
        info!(connections = told, reason = reason.reason(), "comet stopping");
        self.state.tasks.close();
        tokio::time::timeout(grace, self.state.tasks.wait()).await.is_ok()
    }
}

fn count(metrics: &Metrics, kind: &'static str, d: Delivery) {
    metrics.queued.get_or_create(&KindLabel { kind }).inc_by(d.queued as u64);
    metrics.slow.inc_by(d.slow as u64);
}

/// Accepts connections until shutdown, one task each, at most `max_connections` at once.
///
/// `until` ends the loop (and closes the listener, so connecting is refused): the shutdown
/// token, or for the TCP listeners the drain's start.
pub async fn accept_loop<F, Fut>(
    state: Arc<State>,
    listener: TcpListener,
    transport: &'static str,
    until: CancellationToken,
    serve: F,
) where
    F: Fn(Arc<State>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let label = TransportLabel { transport };
    loop {
        let permit = tokio::select! {
            p = state.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = until.cancelled() => return,
            _ = state.shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, transport, "accept failed");
                    state.metrics.accept_errors.inc();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = until.cancelled() => return,
            _ = state.shutdown.cancelled() => return,
        };
        if state.config.tcp.nodelay {
            let _ = stream.set_nodelay(true);
        }
        state.metrics.accepted.get_or_create(&label).inc();
        let span = debug_span!("conn", peer = %peer, transport);
        let fut = serve(state.clone(), stream, peer);
        state.tasks.spawn(
            async move {
                fut.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Reports this comet's counts to logic every `online.renew_interval` and applies the cluster
/// counts it returns (goim's `onlineproc`).
async fn online_loop(state: Arc<State>) {
    let mut tick = tokio::time::interval(state.config.online.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let room_count = state.hub.room_counts();
        state.metrics.rooms.set(room_count.len() as i64);
        let online = Online {
            server: state.config.server_id.clone(),
            room_count,
            conn_count: state.hub.connections() as i64,
            ip_count: state.hub.ip_count() as i64,
        };
        let reply = tokio::select! {
            r = tokio::time::timeout(state.config.protocol.write_timeout, state.logic.renew_online(online)) => r,
            _ = state.shutdown.cancelled() => return,
        };
        match reply {
            Ok(Ok(all)) => state.hub.set_all_online(&all),
            Ok(Err(e)) => {
                warn!(error = %e, "renew online failed");
                state.metrics.logic_error("renew_online");
            }
            Err(_) => {
                warn!("renew online timed out");
                state.metrics.logic_error("renew_online");
            }
        }
    }
}
