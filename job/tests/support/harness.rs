//! A job under test: a real `MemoryQueue` fed through its tokio sender, a recording `Comets`
//! (the peer the job calls: the contract boundary), and a source that records acks.

#![allow(dead_code)] // each test crate uses part of the harness

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::PushMsg;
use goim_job::{
    AckToken, CometError, Comets, Config, Delivery, Job, MemoryQueue, Metrics, QueueError, Source,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A call a comet answered, with its arguments and when it answered.
#[derive(Clone, Debug)]
pub enum Call {
    Keys { server: String, keys: Vec<String>, op: i32, packet: Bytes },
    Room { server: String, room: String, batch: Bytes },
    Broadcast { server: String, op: i32, packet: Bytes, speed: i32 },
}

impl Call {
    pub fn server(&self) -> &str {
        match self {
            Call::Keys { server, .. } | Call::Room { server, .. } | Call::Broadcast { server, .. } => server,
        }
    }

    pub fn bytes(&self) -> &Bytes {
        match self {
            Call::Keys { packet, .. } | Call::Broadcast { packet, .. } => packet,
            Call::Room { batch, .. } => batch,
        }
    }
}

/// What happened, in order: comets answering calls and the job acking deliveries.
#[derive(Clone, Debug)]
pub enum Event {
    Answered { call: Call, result: Result<(), CometError>, at: Instant },
    Acked(AckToken),
}

/// How a comet answers its next call.
#[derive(Clone, Debug)]
pub enum Answer {
    Fail(CometError),
    /// Succeeds after this long.
    Delay(Duration),
    /// Never answers.
    Hang,
    /// Succeeds once the notify is signalled.
    Wait(Arc<Notify>),
}

type Log = Arc<Mutex<Vec<Event>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("a test thread panicked holding the lock")
}

/// Comets that answer as scripted (by default: at once, Ok) and record every answer.
pub struct Recorder {
    servers: Mutex<Vec<String>>,
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    started: Mutex<usize>,
    log: Log,
}

impl Recorder {
    pub fn set_servers(&self, servers: &[&str]) {
        *lock(&self.servers) = servers.iter().map(|s| s.to_string()).collect();
    }

    /// Queues answers for `server`'s next calls; calls past the script succeed at once.
    pub fn script(&self, server: &str, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.script).entry(server.to_owned()).or_default().extend(answers);
    }

    /// Calls made, answered or not.
    pub fn started(&self) -> usize {
        *lock(&self.started)
    }

    async fn answer(&self, call: Call) -> Result<(), CometError> {
        *lock(&self.started) += 1;
        let known = lock(&self.servers).iter().any(|s| s == call.server());
        let result = if known {
            let next = lock(&self.script).get_mut(call.server()).and_then(VecDeque::pop_front);
            match next {
                None => Ok(()),
                Some(Answer::Fail(e)) => Err(e),
                Some(Answer::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Some(Answer::Hang) => std::future::pending().await,
                Some(Answer::Wait(notify)) => {
                    notify.notified().await;
                    Ok(())
                }
            }
        } else {
            Err(CometError::UnknownServer(call.server().to_owned()))
        };
        lock(&self.log).push(Event::Answered { call, result: result.clone(), at: Instant::now() });
        result
    }
}

#[async_trait]
impl Comets for Recorder {
    fn servers(&self) -> Vec<String> {
        lock(&self.servers).clone()
    }

    async fn push_keys(
        &self,
        server: &str,
        keys: &[String],
        op: i32,
        packet: Bytes,
    ) -> Result<(), CometError> {
        self.answer(Call::Keys { server: server.into(), keys: keys.to_vec(), op, packet }).await
    }

    async fn broadcast_room(&self, server: &str, room: &str, batch: Bytes) -> Result<(), CometError> {
        self.answer(Call::Room { server: server.into(), room: room.into(), batch }).await
    }

    async fn broadcast(&self, server: &str, op: i32, packet: Bytes, speed: i32) -> Result<(), CometError> {
        self.answer(Call::Broadcast { server: server.into(), op, packet, speed }).await
    }
}

/// `MemoryQueue` that records acks in the shared log (and still lets the queue check them).
struct RecordingSource {
    queue: MemoryQueue,
    log: Log,
}

#[async_trait]
impl Source for RecordingSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, QueueError> {
        self.queue.recv().await
    }

    async fn ack(&mut self, token: AckToken) -> Result<(), QueueError> {
        self.queue.ack(token).await?;
        lock(&self.log).push(Event::Acked(token));
        Ok(())
    }
}

pub struct Harness {
    tx: Option<mpsc::Sender<PushMsg>>,
    pub comets: Arc<Recorder>,
    registry: Registry,
    pub shutdown: CancellationToken,
    job: JoinHandle<Result<(), goim_job::Error>>,
    log: Log,
    /// When the job started; paused-time tests measure from here.
    pub start: Instant,
}

impl Harness {
    pub fn start(config: Config, servers: &[&str]) -> Harness {
        Harness::with_capacity(config, servers, 1024)
    }

    /// `capacity` bounds the in-process queue between the test and the job.
    pub fn with_capacity(config: Config, servers: &[&str], capacity: usize) -> Harness {
        config.validate().expect("test config is valid");
        let log = Log::default();
        let comets = Arc::new(Recorder {
            servers: Mutex::default(),
            script: Mutex::default(),
            started: Mutex::default(),
            log: Arc::clone(&log),
        });
        comets.set_servers(servers);
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let (tx, queue) = MemoryQueue::channel(capacity);
        let source = RecordingSource { queue, log: Arc::clone(&log) };
        let shutdown = CancellationToken::new();
        let job = Job::new(config, Arc::clone(&comets) as Arc<dyn Comets>, metrics);
        let token = shutdown.clone();
        let job = tokio::spawn(async move { job.run(source, token).await });
        Harness { tx: Some(tx), comets, registry, shutdown, job, log, start: Instant::now() }
    }

    pub async fn push(&self, msg: PushMsg) {
        self.sender().send(msg).await.expect("the job is receiving");
    }

    pub fn sender(&self) -> &mpsc::Sender<PushMsg> {
        self.tx.as_ref().expect("the queue is open")
    }

    /// Lets the job run until it waits on time or on a comet, without moving the (paused) clock:
    /// a sleep would (the timer ticks in whole milliseconds).
    pub async fn settle(&self) {
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }

    pub fn events(&self) -> Vec<Event> {
        lock(&self.log).clone()
    }

    /// Answered calls with when they were answered, relative to the start.
    pub fn calls(&self) -> Vec<(Call, Result<(), CometError>, Duration)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Answered { call, result, at } => Some((call, result, at - self.start)),
                Event::Acked(_) => None,
            })
            .collect()
    }

    pub fn acks(&self) -> Vec<i64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Acked(token) => Some(token.offset),
                Event::Answered { .. } => None,
            })
            .collect()
    }

    /// The value of one exported series, e.g. `goim_job_dropped_total{kind="keys",reason="no_comets"}`;
    /// 0 when it was never recorded.
    pub fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("metrics encode");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Cancels the job and waits for it to return.
    pub async fn stop(mut self) -> (Result<(), goim_job::Error>, Harness) {
        self.shutdown.cancel();
        let result = (&mut self.job).await.expect("the job task does not panic");
        (result, self)
    }

    /// Closes the queue and waits for the job to return.
    pub async fn close(mut self) -> (Result<(), goim_job::Error>, Harness) {
        self.tx = None;
        let result = (&mut self.job).await.expect("the job task does not panic");
        (result, self)
    }
}

/// Concatenated push packets `{ver 1, op, seq 0, body}`, encoded independently of the job.
pub fn packets(op: i32, bodies: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut out = Vec::new();
    for body in bodies {
        out.extend_from_slice(&goim_api::Frame::push(op, body.into_bytes()).to_bytes());
    }
    out
}

pub fn room_msg(room: &str, body: impl Into<String>) -> PushMsg {
    PushMsg::room(room, 1000, Bytes::from(body.into()))
}
