//! The comet facade: what job pushes into, what the binaries start and stop. It wires the layers
//! below and holds none of their logic: the shared [`Context`], the HTTP front end (`front`),
//! the accept loops (`listen`), the online report (`online`) and the drain (`drain`).
//!
//! The layers, each using only those below it (as mini-redis's server uses its connection, and
//! the connection its frame):
//!
//! | layer | modules |
//! |---|---|
//! | facade | `comet` |
//! | listeners | `listen` |
//! | transports | `front` (the HTTP port), `tls`, `websocket`, `long_poll`, `tcp` |
//! | HTTP/1.1 | `http` (request head, responses) |
//! | socket driver | `connection` |
//! | session steps | `session` (authenticate, admit, operate, teardown) |
//! | framing contract | `codec` (`Decoder`, `Encoder`) |
//! | shared context | `context`, `online`, `drain` |
//! | domain | `hub`, `room`, `channel`, `outbox`, `disconnect` |
//! | ground | `config`, `metrics`, `logic` (the port) |

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use crate::config::Config;
use crate::context::Context;
use crate::disconnect::Disconnect;
use crate::drain::DrainReport;
use crate::front::{Asset, Front};
use crate::listen::{self, Listeners};
use crate::logic::Logic;
use crate::metrics::{KindLabel, Metrics};
use crate::room::Fanout;

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
    pub delivery: Fanout,
    /// Keys with no connection here.
    pub missing: usize,
}

#[derive(Clone)]
pub struct Comet {
    ctx: Arc<Context>,
    /// The HTTP port's state (long-poll sessions, demo assets), shared by its listeners.
    front: Arc<Front>,
}

impl Comet {
    /// `config` must have passed [`Config::validate`].
    pub fn new(config: Config, logic: Arc<dyn Logic>, metrics: Arc<Metrics>) -> Comet {
        let ctx = Arc::new(Context::new(config, logic, metrics));
        let front = Arc::new(Front::new(ctx.clone()));
        Comet { ctx, front }
    }

    pub fn server_id(&self) -> &str {
        &self.ctx.config.server_id
    }

    /// Starts serving the listeners and reporting online counts to logic.
    pub fn start(&self, listeners: Listeners) {
        let tasks = &self.ctx.tasks;
        for l in listeners.tcp {
            tasks.spawn(listen::tcp(self.ctx.clone(), l));
        }
        for l in listeners.websocket {
            tasks.spawn(listen::http(self.front.clone(), l));
        }
        for (l, acceptor) in listeners.tls {
            tasks.spawn(listen::tls(self.front.clone(), l, acceptor));
        }
        tasks.spawn(crate::online::report(self.ctx.clone()));
        tasks.spawn(crate::long_poll::sweep(self.ctx.clone(), self.front.sessions.clone()));
    }

    /// Files to serve on the HTTP port (the demo page and `goim.js`); set once, before clients
    /// ask for them. Served only while `websocket.demo` is on.
    pub fn serve_assets(&self, assets: Vec<Asset>) {
        let _ = self.front.assets.set(assets);
    }

    /// Queues one encoded packet for each key that accepts `op`. Keys not here are counted,
    /// not an error (the client may have moved to another comet).
    pub fn push_keys(&self, keys: &[String], op: i32, packet: Bytes) -> Result<PushReport, PushError> {
        if keys.is_empty() {
            return Err(PushError::NoKeys);
        }
        self.received("keys");
        let (delivery, missing) = self.ctx.hub.push_keys(keys, op, &packet);
        self.count("keys", delivery);
        Ok(PushReport { delivery, missing })
    }

    /// Queues one shared batch for every member of `room` here.
    pub fn broadcast_room(&self, room: &str, batch: Bytes) -> Result<PushReport, PushError> {
        if room.is_empty() {
            return Err(PushError::NoRoom);
        }
        self.received("room");
        let delivery = self.ctx.hub.push_room(room, &batch);
        self.count("room", delivery);
        Ok(PushReport { delivery, missing: 0 })
    }

    /// Queues `packet` for every connection that accepts `op`, shard by shard; with `speed` > 0,
    /// paced at about `speed` connections per second. Returns at once; the walk runs in the
    /// background (as goim's does).
    pub fn broadcast(&self, op: i32, packet: Bytes, speed: i32) {
        self.received("broadcast");
        let ctx = self.ctx.clone();
        self.ctx.tasks.spawn(async move {
            for i in 0..ctx.hub.shard_count() {
                let (delivery, size) = ctx.hub.push_shard(i, op, &packet);
                count(&ctx.metrics, "broadcast", delivery);
                if speed > 0 && size > 0 {
                    let pause = Duration::from_secs_f64(size as f64 / speed as f64);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = ctx.shutdown.cancelled() => return,
                    }
                }
            }
        });
    }

    fn count(&self, kind: &'static str, d: Fanout) {
        count(&self.ctx.metrics, kind, d)
    }

    fn received(&self, kind: &'static str) {
        self.ctx.metrics.pushes.get_or_create(&KindLabel { kind }).inc();
    }

    /// Authenticated connections held now (sockets and long-poll sessions).
    pub fn connections(&self) -> usize {
        self.ctx.hub.connections()
    }

    /// Long-poll sessions held now.
    pub fn long_poll_sessions(&self) -> usize {
        self.front.sessions.len()
    }

    /// Rooms with at least one member on this comet (goim's `Rooms` RPC).
    pub fn rooms(&self) -> Vec<String> {
        self.ctx.hub.room_counts().into_keys().collect()
    }

    /// Members of `room` on this comet.
    pub fn room_online(&self, room: &str) -> i32 {
        self.ctx.hub.room(room).map(|r| r.local_online()).unwrap_or(0)
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
        if self.ctx.drain.begin() {
            let ctx = self.ctx.clone();
            self.ctx.tasks.spawn(async move {
                let report =
                    crate::drain::run(&ctx.hub, &ctx.config.drain, &ctx.metrics, &ctx.shutdown).await;
                ctx.drain.finish(report);
            });
        }
        self.ctx.drain.wait().await
    }

    /// Whether a drain has started (it never stops: a drained comet only exits).
    pub fn is_draining(&self) -> bool {
        self.ctx.drain.is_started()
    }

    /// Stops accepting, sends op 6 `reason` to every client, and waits up to `grace` for every
    /// connection to finish. Returns whether everything finished in time.
    pub async fn stop(&self, reason: Disconnect, grace: Duration) -> bool {
        self.ctx.shutdown.cancel();
        let told = self.ctx.hub.close_all(reason.clone());
        info!(connections = told, reason = reason.reason(), "comet stopping");
        self.ctx.tasks.close();
        tokio::time::timeout(grace, self.ctx.tasks.wait()).await.is_ok()
    }
}

fn count(metrics: &Metrics, kind: &'static str, d: Fanout) {
    metrics.queued.get_or_create(&KindLabel { kind }).inc_by(d.queued as u64);
    metrics.slow.inc_by(d.slow as u64);
}
