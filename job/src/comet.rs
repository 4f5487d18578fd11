//! The port job calls: the comets that hold the connections.
//!
//! The embedded build implements it over the in-process comet; the distributed build over one
//! gRPC client per comet (`goim.comet.Comet`), with the server list from discovery.

mod grpc;

use async_trait::async_trait;
use bytes::Bytes;

pub use grpc::{ClientConfig, GrpcComets};

/// Why a call to a comet did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No comet with this server id is known (never was, or it left). Not retried.
    #[error("unknown comet server {0:?}")]
    UnknownServer(String),
    /// The comet was listed by discovery and is no longer (it died, or was scaled away): its
    /// routes are stale. Not retried: a dead address would only burn the dispatch deadline.
    #[error("comet server {0:?} left discovery")]
    Gone(String),
    /// The comet could not be reached or is overloaded; the call may succeed if retried.
    #[error("comet unavailable: {0}")]
    Unavailable(String),
    /// The comet refused the call; retrying would not help. Not retried.
    #[error("comet rejected the call: {0}")]
    Rejected(String),
    /// The call did not complete within its deadline. Job applies the deadline itself, so an
    /// implementation only returns this for a deadline of its own. Retried.
    #[error("comet call timed out")]
    Timeout,
}

impl Error {
    /// Whether the same call may succeed if made again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Timeout)
    }
}

/// The comets job dispatches to.
///
/// Contract:
/// - `Ok(())` means the comet accepted the push: it has queued it for the connections it names
///   (delivery to each connection is then comet's job, and a slow connection is comet's problem).
///   Job acks the queue message only after every comet it dispatched to returned.
/// - Calls may block (a remote comet is a network round trip), and job cancels a call by dropping
///   its future after `dispatch.timeout`, so implementations must tolerate being dropped mid-call.
/// - Job makes the calls for one room (and for the keys of one server) one at a time, in the order
///   the messages were pushed; it may make calls for different rooms or servers concurrently.
///   Within one call, packets are delivered in the order they appear.
/// - Errors: [`Error::UnknownServer`] for a server id never known, and [`Error::Gone`] for one
///   discovery listed and no longer lists, both promptly and without I/O (a gone comet is never
///   called); [`Error::Unavailable`] and [`Error::Timeout`] when a retry may help; [`Error::Rejected`]
///   when it cannot.
#[async_trait]
pub trait Comets: Send + Sync + 'static {
    /// Server ids of the comets to dispatch to, now. Called once per room flush and broadcast;
    /// must not block.
    fn servers(&self) -> Vec<String>;

    /// `packet` is one encoded push packet {ver 1, op, seq 0, body}; comet delivers it to each key
    /// whose accepts include `op`.
    async fn push_keys(&self, server: &str, keys: &[String], op: i32, packet: Bytes) -> Result<(), Error>;

    /// `batch` is whole packets back to back (an op-9 body); every member of `room` on that comet
    /// gets it, in order. Room pushes are not filtered by accepts (as in goim).
    async fn broadcast_room(&self, server: &str, room: &str, batch: Bytes) -> Result<(), Error>;

    /// Every connection on that comet whose accepts include `op`; `speed` = connections per second
    /// for that comet (0 = unpaced). The comet paces delivery itself; the call does not wait for
    /// it to finish.
    async fn broadcast(&self, server: &str, op: i32, packet: Bytes, speed: i32) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_and_timeout_are_retried() {
        assert!(Error::Unavailable("down".into()).is_retryable());
        assert!(Error::Timeout.is_retryable());
        assert!(!Error::UnknownServer("c1".into()).is_retryable());
        assert!(!Error::Gone("c1".into()).is_retryable());
        assert!(!Error::Rejected("bad".into()).is_retryable());
    }
}
