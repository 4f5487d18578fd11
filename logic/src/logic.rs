//! [`Logic`], the domain type behind both of logic's boundaries: comet's calls (connect,
//! heartbeat, disconnect, online reports, uplinks) and the business servers' push and query API.
//!
//! Session calls live here; pushes in [`push`](self::push), online counts and node lists in
//! [`online`](self::online).

mod node;
mod online;
mod push;
mod recover;
mod sweep;

use std::sync::Arc;

use goim_api::{Connect, Presence, Session, Uplink};
use parking_lot::Mutex;

use tokio_util::sync::CancellationToken;

use crate::auth::{self, Authenticator, PushTokens};
use crate::comet::CometDirectory;
use crate::config::Config;
use crate::history::{History, MemoryHistory};
use crate::metrics::Metrics;
use crate::queue::{self, Queue};
use crate::store::{self, Store};

pub use node::{Backoff, Instance, Nodes};
pub use online::{Top, Total};

/// Why a [`Logic`] call failed. The HTTP and gRPC adapters map each variant in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The client's token was refused (connect only); the reason is safe to show the client.
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// The caller's input cannot be served (e.g. no keys to push to).
    #[error("{0}")]
    BadRequest(String),
    /// The push queue did not accept a message.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// logic: authenticates connections, routes sessions through the [`Store`], publishes pushes to
/// the [`Queue`], and sums the comets' online reports.
pub struct Logic {
    config: Config,
    auth: Authenticator,
    /// The push API's bearer tokens; `None` leaves the push API open.
    push_tokens: Option<Arc<PushTokens>>,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    metrics: Metrics,
    /// The last global online view and when it was loaded; see [`online`](self::online).
    online: Mutex<Option<online::Cached>>,
    /// When set, the node lists offer only the comets it calls ready.
    comets: Option<Arc<dyn CometDirectory>>,
    /// Stream positions and history; `None` with `history.enabled = false`.
    history: Option<Arc<dyn History>>,
    /// One lock per stripe of streams, held from a push's position to its queue acceptance, so
    /// the pushes of one stream reach the queue in position order.
    order: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of [`Logic::order`].
const ORDER_STRIPES: usize = 256;

impl std::fmt::Debug for Logic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logic").field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl Logic {
    /// Builds logic from a validated config; loads the JWT keys (reading the PEM and JWKS files)
    /// and the push tokens (reading the token file). [`Logic::watch_keys`] keeps them current.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
    ) -> Result<Logic, auth::KeyError> {
        let metrics = Metrics::default();
        let auth = Authenticator::with_metrics(&config.auth, metrics.clone())?;
        let push_tokens = PushTokens::new(&config.http, metrics.clone())?.map(Arc::new);
        let history =
            config.history.enabled.then(|| Arc::new(MemoryHistory::new(&config.history)) as Arc<dyn History>);
        let order = (0..ORDER_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Ok(Logic {
            config,
            auth,
            push_tokens,
            store,
            queue,
            metrics,
            online: Mutex::new(None),
            comets: None,
            history,
            order,
        })
    }

    /// Keeps positions and history in `history` instead of memory (the Redis history beside the
    /// Redis store). Ignored with `history.enabled = false`.
    pub fn with_history(mut self, history: Arc<dyn History>) -> Logic {
        if self.config.history.enabled {
            self.history = Some(history);
        }
        self
    }

    /// Offers clients only the comets `comets` calls ready (`/goim/nodes/*`, the `Nodes` RPC).
    pub fn with_comets(mut self, comets: Arc<dyn CometDirectory>) -> Logic {
        self.comets = Some(comets);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The push API's bearer tokens, when the API needs one.
    pub fn push_tokens(&self) -> Option<&Arc<PushTokens>> {
        self.push_tokens.as_ref()
    }

    /// Reloads the JWT keys (JWKS file and URL) and the push token file as they change, until
    /// `shutdown` (see [`Authenticator::watch`] and [`PushTokens::watch`]). Returns at once
    /// when none is configured. The binary spawns it next to the servers.
    pub async fn watch_keys(&self, shutdown: CancellationToken) {
        let tokens = async {
            if let Some(tokens) = &self.push_tokens {
                tokens.watch(shutdown.clone()).await;
            }
        };
        tokio::join!(self.auth.watch(shutdown.clone()), tokens);
    }

    /// The counters to register with the admin server's registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A client's auth packet: verifies the token and records key (and mid) → comet.
    ///
    /// A store failure is logged and counted but the connect still succeeds (goim's behaviour):
    /// the connection works, only pushes by key or mid miss it until its next heartbeat re-adds
    /// the mapping.
    pub async fn connect(&self, req: Connect) -> Result<Session, Error> {
        let started = std::time::Instant::now();
        let r = self.connect_inner(req).await;
        self.metrics.connect_took(started.elapsed());
        r
    }

    async fn connect_inner(&self, req: Connect) -> Result<Session, Error> {
        let claims = match self.auth.verify(&req.token, &req.cookie) {
            Ok(claims) => claims,
            Err(e) => {
                self.metrics.connect_rejected(e.reason());
                tracing::debug!(server = %req.server, error = %e, "connect rejected");
                return Err(e.into());
            }
        };
        if let Err(e) = self.store.add_mapping(claims.mid, &claims.key, &req.server).await {
            self.metrics.store_error("add_mapping");
            tracing::warn!(error = %e, mid = claims.mid, key = %claims.key, server = %req.server, "add mapping failed");
        }
        self.metrics.connect_accepted();
        tracing::debug!(mid = claims.mid, key = %claims.key, room = %claims.room, server = %req.server, "connected");
        Ok(Session {
            mid: claims.mid,
            key: claims.key,
            room: claims.room,
            accepts: claims.accepts,
            heartbeat: self.config.heartbeat_timeout(),
        })
    }

    /// A connection closed. Returns whether its mapping was deleted (false when it had expired or
    /// a newer connection with the same key on another comet owns it now).
    pub async fn disconnect(&self, p: Presence) -> Result<bool, Error> {
        let has = self
            .store
            .del_mapping(p.mid, &p.key, &p.server)
            .await
            .inspect_err(|_| self.metrics.store_error("del_mapping"))?;
        tracing::debug!(mid = p.mid, key = %p.key, server = %p.server, has, "disconnected");
        Ok(has)
    }

    /// comet's periodic session renew: refreshes the mapping TTL, re-adding an expired mapping.
    pub async fn heartbeat(&self, p: Presence) -> Result<(), Error> {
        let alive = self
            .store
            .expire_mapping(p.mid, &p.key, &p.server)
            .await
            .inspect_err(|_| self.metrics.store_error("expire_mapping"))?;
        if !alive {
            self.store
                .add_mapping(p.mid, &p.key, &p.server)
                .await
                .inspect_err(|_| self.metrics.store_error("add_mapping"))?;
        }
        tracing::debug!(mid = p.mid, key = %p.key, server = %p.server, renewed = alive, "heartbeat");
        Ok(())
    }

    /// An uplink packet (op 4 or any op comet does not handle). goim only logs it; so do we.
    pub async fn receive(&self, uplink: Uplink) {
        self.metrics.uplink();
        tracing::debug!(
            mid = uplink.mid,
            key = %uplink.key,
            op = uplink.frame.op,
            seq = uplink.frame.seq,
            len = uplink.frame.body.len(),
            "uplink received"
        );
    }
}

#[cfg(test)]
mod tests;
