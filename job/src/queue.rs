//! The consume port: where job takes pushes from, and tells when they are done.
//!
//! The embedded build uses [`Memory`], the receiving end of logic's bounded in-process queue; the
//! distributed build [`KafkaSource`], a Kafka consumer-group member (topic `goim-push-topic`).

mod kafka;
mod memory;

use std::fmt;

use async_trait::async_trait;
use goim_api::PushMsg;

#[cfg(feature = "kafka")]
pub use kafka::KafkaSource;
pub use kafka::{KafkaConfig, OffsetReset};
pub use memory::Memory;

/// Identifies one delivery to its source, for [`Source::ack`]. Opaque to job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AckToken {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.partition, self.offset)
    }
}

/// One push taken off the queue, with the token that acks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub msg: PushMsg,
    pub token: AckToken,
}

/// Why the queue failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The queue's backend failed (broker, network, decoding).
    #[error("queue backend failed: {0}")]
    Backend(String),
    /// An ack of a token this source never delivered, or already acked: a job bug.
    #[error("ack of {0}, which was not delivered or was already acked")]
    UnexpectedAck(AckToken),
}

/// A queue of pushes with acknowledgement.
///
/// Contract:
/// - `recv` waits for the next delivery; `Ok(None)` means the source is closed and will deliver
///   nothing more. Job calls it inside `select!` and may drop its future before it completes, so
///   `recv` must be cancel-safe: a dropped call loses no message.
/// - Job acks a delivery only after every comet accepted its dispatch (a room message: after the
///   batch holding it was flushed), or gave up on a comet that failed for good. Acks come out of
///   delivery order (a room message waits for its batch while later key pushes complete), so an
///   implementation with offsets (Kafka) commits, per partition, only up to the lowest un-acked one.
///   Deliveries never acked (job stopped first) are delivered again: at-least-once.
/// - An error from either call is returned by [`crate::Job::run`]; a source should retry transient
///   backend errors itself.
#[async_trait]
pub trait Source: Send + 'static {
    async fn recv(&mut self) -> Result<Option<Delivery>, Error>;
    async fn ack(&mut self, token: AckToken) -> Result<(), Error>;
}
