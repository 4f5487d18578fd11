//! The publish port: how logic hands a push to job.
//!
//! Embedded, that is [`Memory`], a bounded in-process channel whose receiver job holds.
//! Distributed, it is [`KafkaQueue`], a Kafka producer writing goim's `PushMsg` to
//! `goim-push-topic`, keyed by [`PushMsg::partition_key`].
//!
//! # Contract
//!
//! - [`Queue::publish`] returns `Ok` once the message is durably accepted (Kafka: acked by all
//!   in-sync replicas; memory: in the channel). Messages published by one task with the same
//!   partition key are delivered in publish order.
//! - [`Queue::enqueue`] is the same publish in two halves: it returns once the message holds its
//!   place in the backend's order (Kafka: in the producer's queue), and the [`Acked`] it returns
//!   resolves as `publish` would. Messages enqueued one after another with the same partition key
//!   are delivered in enqueue order, whenever their acknowledgements are awaited. A caller that
//!   must keep pushes in order (logic, per stream) holds its order only across `enqueue`.
//! - It fails fast and never hangs: when the backend is full or unreachable it returns an error
//!   within a bounded time (the memory queue: `publish_timeout`). An error means the message may
//!   not have been accepted; the HTTP caller reports it and the business server retries.

mod kafka;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use goim_api::PushMsg;
use tokio::sync::mpsc;

pub use kafka::{KafkaConfig, RESERVED_PROPERTIES};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaQueue, TopicError, ensure_topic, prepare_topic};

/// Why a push was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No room within the publish timeout: job is not keeping up.
    #[error("push queue is full (waited {waited:?})")]
    Full { waited: Duration },
    /// The consumer is gone (shutting down).
    #[error("push queue is closed")]
    Closed,
    /// The backend could not be reached or refused the message.
    #[error("push queue unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// A metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Full { .. } => "full",
            Error::Closed => "closed",
            Error::Unavailable(_) => "unavailable",
        }
    }
}

/// Accepts pushes for job. See the module docs for the contract.
#[async_trait]
pub trait Queue: Send + Sync {
    async fn publish(&self, msg: PushMsg) -> Result<(), Error>;

    /// Puts `msg` in the backend's order and returns its acknowledgement to await (see the
    /// module docs). By default the whole publish happens here.
    async fn enqueue<'a>(&'a self, msg: PushMsg) -> Result<Acked<'a>, Error> {
        self.publish(msg).await?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
}

/// What is left of a publish after [`Queue::enqueue`]: the backend's acknowledgement.
pub type Acked<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// The embedded queue: a bounded channel to job's dispatcher.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Bounded so a stalled job pushes back on the HTTP API; job holds the receiver.
    tx: mpsc::Sender<PushMsg>,
    publish_timeout: Duration,
}

impl Memory {
    /// Wraps the sending half of a bounded channel whose receiver job consumes.
    pub fn new(tx: mpsc::Sender<PushMsg>, publish_timeout: Duration) -> Memory {
        Memory { tx, publish_timeout }
    }

    /// A queue of `capacity` messages and the receiver to hand to job.
    pub fn channel(capacity: usize, publish_timeout: Duration) -> (Memory, mpsc::Receiver<PushMsg>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Memory::new(tx, publish_timeout), rx)
    }
}

#[async_trait]
impl Queue for Memory {
    async fn publish(&self, msg: PushMsg) -> Result<(), Error> {
        match tokio::time::timeout(self.publish_timeout, self.tx.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Full { waited: self.publish_timeout }),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(op: i32) -> PushMsg {
        PushMsg::broadcast(op, 0, Bytes::from_static(b"hi"))
    }

    #[tokio::test]
    async fn published_messages_reach_the_receiver_in_order() {
        let (queue, mut rx) = Memory::channel(4, Duration::from_secs(1));
        queue.publish(msg(1)).await.unwrap();
        queue.publish(msg(2)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().operation, 1);
        assert_eq!(rx.recv().await.unwrap().operation, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_fails_after_the_publish_timeout_instead_of_hanging() {
        let (queue, _rx) = Memory::channel(1, Duration::from_millis(250));
        queue.publish(msg(1)).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = queue.publish(msg(2)).await.unwrap_err();
        assert_eq!(err, Error::Full { waited: Duration::from_millis(250) });
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_accepts_once_job_makes_room_within_the_timeout() {
        let (queue, mut rx) = Memory::channel(1, Duration::from_secs(1));
        queue.publish(msg(1)).await.unwrap();
        let consumer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let first = rx.recv().await.unwrap();
            (first, rx.recv().await.unwrap())
        });
        queue.publish(msg(2)).await.unwrap();
        let (first, second) = consumer.await.unwrap();
        assert_eq!((first.operation, second.operation), (1, 2));
    }

    #[tokio::test]
    async fn publishing_after_the_receiver_is_dropped_fails_closed() {
        let (queue, rx) = Memory::channel(1, Duration::from_secs(1));
        drop(rx);
        assert_eq!(queue.publish(msg(1)).await.unwrap_err(), Error::Closed);
    }
}
