//! The embedded queue: logic holds the `Sender`, job this end.

use async_trait::async_trait;
#[cfg(debug_assertions)]
use std::collections::HashSet;

use goim_api::PushMsg;
use tokio::sync::mpsc;

use super::{AckToken, Delivery, Error, Source};

/// The receiving end of a bounded in-process queue. Its bound back-pressures logic's publishers
/// when job falls behind.
///
/// Nothing is redelivered, so acks have no effect, except that debug builds check each ack names
/// a delivered, not yet acked token (offsets count deliveries on partition 0).
#[derive(Debug)]
pub struct Memory {
    /// Logic's publishers hold the `Sender`s; the queue closes when the last one is dropped.
    rx: mpsc::Receiver<PushMsg>,
    /// When cancelled, the queue stops taking pushes but still hands out what it holds, then
    /// reports closed: how the embedded process drains it on shutdown.
    close: Option<tokio_util::sync::CancellationToken>,
    next_offset: i64,
    #[cfg(debug_assertions)]
    unacked: HashSet<i64>,
}

impl Memory {
    pub fn new(rx: mpsc::Receiver<PushMsg>) -> Memory {
        Memory {
            rx,
            close: None,
            next_offset: 0,
            #[cfg(debug_assertions)]
            unacked: HashSet::new(),
        }
    }

    /// Closes the queue when `token` is cancelled: publishers then fail with "closed", and job
    /// receives what was queued before, then `None`. Run job with a shutdown token that is never
    /// cancelled (or cancelled later) to drain everything accepted.
    pub fn close_on(mut self, token: tokio_util::sync::CancellationToken) -> Memory {
        self.close = Some(token);
        self
    }

    /// A queue holding at most `capacity` pushes, and the sender logic publishes with.
    ///
    /// # Panics
    /// If `capacity` is 0 (as [`mpsc::channel`]).
    pub fn channel(capacity: usize) -> (mpsc::Sender<PushMsg>, Memory) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Memory::new(rx))
    }
}

#[async_trait]
impl Source for Memory {
    /// Cancel-safe: [`mpsc::Receiver::recv`] is.
    async fn recv(&mut self) -> Result<Option<Delivery>, Error> {
        let msg = match &self.close {
            Some(token) => tokio::select! {
                // Closing first: once cancelled, nothing new is taken in.
                biased;
                _ = token.cancelled() => {
                    self.rx.close();
                    self.close = None;
                    self.rx.recv().await
                }
                m = self.rx.recv() => m,
            },
            None => self.rx.recv().await,
        };
        let Some(msg) = msg else {
            return Ok(None);
        };
        let token = AckToken { partition: 0, offset: self.next_offset };
        self.next_offset += 1;
        #[cfg(debug_assertions)]
        self.unacked.insert(token.offset);
        Ok(Some(Delivery { msg, token }))
    }

    async fn ack(&mut self, token: AckToken) -> Result<(), Error> {
        #[cfg(debug_assertions)]
        if token.partition != 0 || !self.unacked.remove(&token.offset) {
            return Err(Error::UnexpectedAck(token));
        }
        #[cfg(not(debug_assertions))]
        let _ = token;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[tokio::test]
    async fn closing_hands_out_what_was_queued_then_reports_closed() {
        let (tx, q) = Memory::channel(4);
        let token = tokio_util::sync::CancellationToken::new();
        let mut q = q.close_on(token.clone());
        tx.send(PushMsg::room("live://1", 1000, Bytes::from_static(b"a"))).await.unwrap();
        tx.send(PushMsg::room("live://1", 1000, Bytes::from_static(b"b"))).await.unwrap();
        token.cancel();
        assert_eq!(&q.recv().await.unwrap().unwrap().msg.msg[..], b"a");
        assert!(tx.send(PushMsg::room("live://1", 1000, Bytes::from_static(b"c"))).await.is_err());
        assert_eq!(&q.recv().await.unwrap().unwrap().msg.msg[..], b"b");
        assert!(q.recv().await.unwrap().is_none(), "closed after the queued pushes, though tx lives");
    }

    #[tokio::test]
    async fn deliveries_carry_consecutive_offsets_in_send_order() {
        let (tx, mut q) = Memory::channel(4);
        tx.send(PushMsg::room("live://1", 1000, Bytes::from_static(b"a"))).await.unwrap();
        tx.send(PushMsg::room("live://1", 1000, Bytes::from_static(b"b"))).await.unwrap();
        let a = q.recv().await.unwrap().unwrap();
        let b = q.recv().await.unwrap().unwrap();
        assert_eq!((a.msg.msg.as_ref(), a.token), (&b"a"[..], AckToken { partition: 0, offset: 0 }));
        assert_eq!((b.msg.msg.as_ref(), b.token), (&b"b"[..], AckToken { partition: 0, offset: 1 }));
    }

    #[tokio::test]
    async fn the_queue_is_closed_when_every_sender_is_dropped() {
        let (tx, mut q) = Memory::channel(1);
        tx.send(PushMsg::broadcast(1000, 0, Bytes::new())).await.unwrap();
        drop(tx);
        assert!(q.recv().await.unwrap().is_some(), "queued messages are still delivered");
        assert_eq!(q.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn acks_may_come_out_of_delivery_order() {
        let (tx, mut q) = Memory::channel(2);
        tx.send(PushMsg::broadcast(1000, 0, Bytes::new())).await.unwrap();
        tx.send(PushMsg::broadcast(1000, 0, Bytes::new())).await.unwrap();
        let first = q.recv().await.unwrap().unwrap().token;
        let second = q.recv().await.unwrap().unwrap().token;
        q.ack(second).await.unwrap();
        q.ack(first).await.unwrap();
    }

    #[cfg(debug_assertions)]
    #[tokio::test]
    async fn acking_an_undelivered_or_acked_token_is_an_error_in_debug_builds() {
        let (tx, mut q) = Memory::channel(1);
        let never = AckToken { partition: 0, offset: 0 };
        assert_eq!(q.ack(never).await, Err(Error::UnexpectedAck(never)));
        tx.send(PushMsg::broadcast(1000, 0, Bytes::new())).await.unwrap();
        let token = q.recv().await.unwrap().unwrap().token;
        q.ack(token).await.unwrap();
        assert_eq!(q.ack(token).await, Err(Error::UnexpectedAck(token)));
    }
}
