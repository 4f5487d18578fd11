//! The port comet calls logic through: in-process in the embedded mode, gRPC when distributed.

mod grpc;

use std::collections::HashMap;

use async_trait::async_trait;
use goim_api::{Connect, Online, Presence, RecoverRequest, Recovered, Session, Uplink};

pub use grpc::{ClientConfig, GrpcLogic};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The token was refused; the text is a short reason safe to send to the client.
    #[error("rejected: {0}")]
    Rejected(String),
    /// logic could not answer (unreachable, overloaded, timed out).
    #[error("logic unavailable: {0}")]
    Unavailable(String),
}

/// What comet needs from logic. Calls may wait on the network: comet puts each under a deadline
/// and never holds a lock across one. Errors are per call; comet keeps serving.
#[async_trait]
pub trait Logic: Send + Sync + 'static {
    /// Checks a client's auth token and records its session. `Rejected` closes the connection
    /// with op 6 `auth_failed`; nothing is ever delivered to it.
    async fn connect(&self, req: Connect) -> Result<Session, Error>;
    /// The connection ended. logic forgets the session only if it still points at this comet.
    async fn disconnect(&self, presence: Presence) -> Result<(), Error>;
    /// The connection is alive; refreshes the session's expiry.
    async fn heartbeat(&self, presence: Presence) -> Result<(), Error>;
    /// Reports this comet's counts; returns the cluster-wide member count of each room.
    async fn renew_online(&self, online: Online) -> Result<HashMap<String, i32>, Error>;
    /// An uplink packet (op 4, or any op comet does not handle itself).
    async fn receive(&self, uplink: Uplink) -> Result<(), Error>;
    /// What a resuming connection missed (`docs/recovery.md`). A logic that keeps no positions
    /// (goim's, or one with `history.enabled = false`) answers `Recovered::default()`, which the
    /// default does too.
    async fn recover(&self, _req: RecoverRequest) -> Result<Recovered, Error> {
        Ok(Recovered::default())
    }
    /// The session store's epoch that came with the last [`Logic::renew_online`] reply, if the
    /// logic behind this port has one (a goim-rs logic over gRPC). It changes when the store lost
    /// its data (Redis restarted empty); comet then re-registers every session. In-process logic
    /// shares comet's lifetime and has none.
    fn store_epoch(&self) -> Option<String> {
        None
    }
}
