//! goim-job: takes pushes off the queue logic publishes to, and delivers them to comets.
//!
//! - [`Job`]: the one loop that receives, batches room pushes, dispatches and acks.
//! - [`Source`] (`queue`): the consume port, with [`MemoryQueue`] for the embedded build and
//!   [`KafkaSource`] for the distributed one; a delivery is acked only after comets accepted it
//!   (at-least-once, unlike goim's commit-first consumer).
//! - [`Comets`] ([`comet`]): the port job calls to reach comets; [`comet::GrpcComets`] over gRPC.
//! - [`discovery`]: which comets exist (a static list, or Kubernetes EndpointSlices).
//! - `room`: per-room batches, encoded once: a push to an idle room flushes at once, a burst after
//!   it flushes at `room.batch` packets or `room.max_delay` after the room's last flush.
//! - `dispatch`: concurrent calls to comets with a deadline and retries, in order per room.
//! - [`Config`] and [`Metrics`] (`goim_job_*`).

pub mod comet;
mod config;
pub mod discovery;
mod dispatch;
mod job;
mod metrics;
mod queue;
mod room;

pub use comet::{Comets, Error as CometError};
pub use config::{Config, DispatchConfig, Error as ConfigError, MAX_RETRIES, MAX_ROOM_DELAY, RoomConfig};
pub use job::{Error, Job};
pub use metrics::Metrics;
#[cfg(feature = "kafka")]
pub use queue::KafkaSource;
pub use queue::{
    AckToken, Delivery, Error as QueueError, KafkaConfig, Memory as MemoryQueue, OffsetReset, Source,
};
