//! The queue contract, run against both ends of both queues: logic's `queue::Memory` + job's
//! `MemoryQueue` over one channel, and logic's `KafkaQueue` + job's `KafkaSource` over a real
//! Kafka-protocol broker. Plus what only Kafka has: a replacement consumer resumes at the first
//! unacked offset, messages written by a Kafka client we did not write are delivered, and an
//! unreachable broker fails a push within the configured timeout.
//!
//! The Kafka tests need `GOIM_TEST_KAFKA_BROKERS` (and `GOIM_TEST_PYTHON` for the Python one):
//! run `scripts/services.sh start`, source its env, and pass `--include-ignored`. Unset, they
//! fail; they never skip.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use goim_api::PushMsg;
use goim_job::{AckToken, Delivery, MemoryQueue, Metrics, Source};
use goim_logic::Queue;
use goim_logic::queue::{self, KafkaQueue};
use tokio::time::{Instant, timeout};

/// How long a Kafka test waits for the next message: joining a group takes a few seconds.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------- the suite

/// Pushes of every kind over several partition keys, each body unique.
fn every_kind() -> Vec<PushMsg> {
    let mut msgs = Vec::new();
    for i in 0..12 {
        let body = |kind: &str| Bytes::from(format!("{kind}-{i}"));
        let keys = vec![format!("k{}", i % 3), format!("other-{i}")];
        msgs.push(PushMsg::keys(format!("comet-{}", i % 2), keys, 1000, body("keys")));
        msgs.push(PushMsg::room(format!("live://{}", i % 2), 1001, body("room")));
        msgs.push(PushMsg::broadcast(1002 + i % 2, i * 10, body("broadcast")));
    }
    msgs
}

/// Receives `n` deliveries, each within [`RECV_TIMEOUT`].
async fn recv_n(source: &mut impl Source, n: usize) -> Result<Vec<Delivery>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match timeout(RECV_TIMEOUT, source.recv()).await {
            Ok(Ok(Some(delivery))) => got.push(delivery),
            Ok(Ok(None)) => bail!("source closed after {} of {n} deliveries", got.len()),
            Ok(Err(e)) => bail!("recv failed after {} of {n} deliveries: {e}", got.len()),
            Err(_) => bail!("no delivery within {RECV_TIMEOUT:?} after {} of {n}", got.len()),
        }
    }
    Ok(got)
}

/// Every pushed message arrives once with every field intact, in publish order per partition
/// key; acks in any order are accepted.
async fn every_kind_arrives_intact_in_order_per_key(
    queue: &dyn Queue,
    source: &mut impl Source,
) -> Result<()> {
    let sent = every_kind();
    for msg in &sent {
        queue.publish(msg.clone()).await.with_context(|| format!("publishing {msg:?}"))?;
    }
    let got = recv_n(source, sent.len()).await?;

    let by_body = |msgs: Vec<PushMsg>| -> BTreeMap<Bytes, PushMsg> {
        msgs.into_iter().map(|m| (m.msg.clone(), m)).collect()
    };
    let received: Vec<PushMsg> = got.iter().map(|d| d.msg.clone()).collect();
    assert_eq!(
        by_body(received.clone()),
        by_body(sent.clone()),
        "every message arrives with every field intact"
    );
    assert_eq!(received.len(), sent.len(), "and only once");

    let order = |msgs: &[PushMsg]| {
        let mut per_key: HashMap<String, Vec<Bytes>> = HashMap::new();
        for m in msgs {
            per_key.entry(m.partition_key()).or_default().push(m.msg.clone());
        }
        per_key
    };
    assert_eq!(order(&received), order(&sent), "publish order is kept per partition key");

    // Acks come out of order in job (room batches wait); the source takes them in any order.
    let mut tokens: Vec<AckToken> = got.iter().map(|d| d.token).collect();
    tokens.reverse();
    let middle = tokens.len() / 2;
    tokens.swap(0, middle);
    for token in tokens {
        source.ack(token).await.with_context(|| format!("acking {token}"))?;
    }
    Ok(())
}

/// Job calls `recv` inside `select!` and drops it when something else is ready first: a dropped
/// `recv` loses nothing.
async fn a_recv_dropped_before_it_completes_loses_nothing(
    queue: &dyn Queue,
    source: &mut impl Source,
) -> Result<()> {
    let sent: Vec<PushMsg> =
        (0..20).map(|i| PushMsg::room("live://cancel", 1000, Bytes::from(format!("c{i}")))).collect();
    for msg in &sent {
        queue.publish(msg.clone()).await?;
    }
    let deadline = Instant::now() + RECV_TIMEOUT;
    let (mut got, mut dropped) = (Vec::new(), 0);
    while got.len() < sent.len() && Instant::now() < deadline {
        match timeout(Duration::from_micros(200), source.recv()).await {
            Ok(received) => got.push(received?.context("source closed")?),
            Err(_) => dropped += 1,
        }
    }
    let bodies: Vec<Bytes> = got.iter().map(|d| d.msg.msg.clone()).collect();
    let want: Vec<Bytes> = sent.iter().map(|m| m.msg.clone()).collect();
    assert_eq!(bodies, want, "after {dropped} dropped recv calls");
    for d in got {
        source.ack(d.token).await?;
    }
    Ok(())
}

/// Pushes enqueued one after another, their acknowledgements awaited only after the last one
/// was enqueued (logic's per-stream order with positions), arrive in enqueue order, and every
/// acknowledgement resolves. (60: within the in-process channel's 64.)
async fn enqueued_pushes_arrive_in_enqueue_order_before_their_acks_are_awaited(
    queue: &dyn Queue,
    source: &mut impl Source,
) -> Result<()> {
    let sent: Vec<PushMsg> =
        (0..60).map(|i| PushMsg::room("live://enqueue", 1000, Bytes::from(format!("e{i}")))).collect();
    let mut acks = Vec::with_capacity(sent.len());
    for msg in &sent {
        acks.push(queue.enqueue(msg.clone()).await.with_context(|| format!("enqueueing {msg:?}"))?);
    }
    for (i, acked) in acks.into_iter().enumerate() {
        acked.await.with_context(|| format!("the acknowledgement of push {i}"))?;
    }
    let got = recv_n(source, sent.len()).await?;
    let bodies: Vec<Bytes> = got.iter().map(|d| d.msg.msg.clone()).collect();
    let want: Vec<Bytes> = sent.iter().map(|m| m.msg.clone()).collect();
    assert_eq!(bodies, want, "enqueue order is delivery order");
    for d in got {
        source.ack(d.token).await?;
    }
    Ok(())
}

async fn queue_contract(queue: &dyn Queue, source: &mut impl Source) -> Result<()> {
    every_kind_arrives_intact_in_order_per_key(queue, source).await?;
    a_recv_dropped_before_it_completes_loses_nothing(queue, source).await?;
    enqueued_pushes_arrive_in_enqueue_order_before_their_acks_are_awaited(queue, source).await
}

#[tokio::test]
async fn the_in_process_queue_passes_the_queue_contract() -> Result<()> {
    let (tx, mut source) = MemoryQueue::channel(64);
    let queue = queue::Memory::new(tx, Duration::from_secs(1));
    queue_contract(&queue, &mut source).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka"]
async fn kafka_passes_the_queue_contract() -> Result<()> {
    let kafka = Kafka::new(3).await?;
    let queue = KafkaQueue::new(&kafka.producer())?;
    let mut source = kafka.source("contract")?;
    queue_contract(&queue, &mut source).await
}

// ------------------------------------------------------------------------------------ Kafka only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka"]
async fn a_replacement_consumer_resumes_at_the_first_unacked_offset() -> Result<()> {
    let kafka = Kafka::new(1).await?;
    let queue = KafkaQueue::new(&kafka.producer())?;
    let sent: Vec<PushMsg> =
        (0..10).map(|i| PushMsg::room("live://resume", 1000, Bytes::from(format!("m{i}")))).collect();
    for msg in &sent {
        queue.publish(msg.clone()).await?;
    }

    let mut first = kafka.source("resume")?;
    let got = recv_n(&mut first, 10).await?;
    let offsets: Vec<i64> = got.iter().map(|d| d.token.offset).collect();
    ensure!(offsets == (0..10).collect::<Vec<i64>>(), "one partition, offsets 0..10: {offsets:?}");
    // The first half is acked, and one message past it, out of order: that one is redelivered
    // too, because the commit point stops at the first gap.
    for i in [4, 2, 0, 1, 3, 7] {
        first.ack(got[i].token).await?;
    }
    drop(first); // commits offset 5 synchronously and leaves the group

    let mut second = kafka.source("resume")?;
    let again = recv_n(&mut second, 5).await?;
    let bodies: Vec<&[u8]> = again.iter().map(|d| d.msg.msg.as_ref()).collect();
    assert_eq!(bodies, [&b"m5"[..], b"m6", b"m7", b"m8", b"m9"], "resumes at the first unacked offset");
    for d in &again {
        second.ack(d.token).await?;
    }
    drop(second);

    let mut third = kafka.source("resume")?;
    let next = timeout(Duration::from_secs(8), third.recv()).await;
    assert!(next.is_err(), "everything was acked and committed, yet got {next:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka"]
async fn pushes_in_flight_when_a_rebalance_revokes_their_partition_are_redelivered() -> Result<()> {
    const N: usize = 40;
    // Shown when the test fails: the revokes, assigns and commits of both members.
    let _ = tracing_subscriber::fmt().with_env_filter("goim_job=debug").with_test_writer().try_init();
    let kafka = Kafka::new(4).await?;
    let queue = KafkaQueue::new(&kafka.producer())?;
    for i in 0..N {
        queue.publish(PushMsg::room(format!("live://{}", i % 8), 1000, Bytes::from(format!("r{i}")))).await?;
    }

    // The first job takes everything but finishes only partitions 0 and 1; the pushes of 2 and 3
    // stay in flight (their acks never come) while a second job joins the group.
    let mut first = kafka.source("rebalance")?;
    let all = recv_n(&mut first, N).await?;
    let done = std::sync::Arc::new(Seen::default());
    let mut in_flight = 0;
    for d in &all {
        if d.token.partition < 2 {
            first.ack(d.token).await?;
            done.add(&d.msg.msg);
        } else {
            in_flight += 1;
        }
    }
    ensure!(in_flight > 0 && done.count() > 0, "room keys spread over all 4 partitions");

    // Both now consume and ack. The rebalance revokes partitions 2 and 3 with nothing
    // committable, so whoever gets them reads their pushes again.
    let second = kafka.source("rebalance")?;
    let run = |mut source: goim_job::KafkaSource, done: std::sync::Arc<Seen>| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.complete(N) && Instant::now() < deadline {
            if let Ok(received) = timeout(Duration::from_millis(200), source.recv()).await {
                let d = received?.context("source closed")?;
                source.ack(d.token).await?;
                done.add(&d.msg.msg);
            }
        }
        Ok::<_, anyhow::Error>(source)
    };
    let (first, second) = tokio::join!(run(first, done.clone()), run(second, done.clone()));
    let (first, second) = (first?, second?);
    assert_eq!(done.count(), N, "the {in_flight} pushes in flight were redelivered and acked");
    drop((first, second));

    let mut third = kafka.source("rebalance")?;
    let next = timeout(Duration::from_secs(8), third.recv()).await;
    assert!(next.is_err(), "everything was acked and committed, yet got {next:?}");
    Ok(())
}

/// Bodies seen by concurrent consumers.
#[derive(Default)]
struct Seen(std::sync::Mutex<std::collections::HashSet<Bytes>>);

impl Seen {
    fn add(&self, body: &Bytes) {
        self.0.lock().unwrap().insert(body.clone());
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn complete(&self, n: usize) -> bool {
        self.count() >= n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka and python"]
async fn a_push_produced_by_confluent_kafka_in_goims_format_is_delivered() -> Result<()> {
    let kafka = Kafka::new(1).await?;
    let python = std::env::var("GOIM_TEST_PYTHON")
        .expect("GOIM_TEST_PYTHON is not set; run `scripts/services.sh start` and source its env");
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(&python)
        .arg(format!("{root}/tests/python/goim_producer.py"))
        .args([&kafka.brokers, &kafka.topic, &format!("{root}/api/proto")])
        .output()
        .with_context(|| format!("running {python}"))?;
    ensure!(
        output.status.success(),
        "python producer failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let metrics = Metrics::new();
    let mut source = goim_job::KafkaSource::new(&kafka.consumer("python"), metrics.clone())?;
    let got = recv_n(&mut source, 3).await?;
    let msgs: Vec<PushMsg> = got.iter().map(|d| d.msg.clone()).collect();
    assert_eq!(
        msgs,
        [
            PushMsg::keys(
                "comet-py",
                vec!["k1".into(), "k2".into()],
                1000,
                Bytes::from_static(b"{\"hello\":\"keys\"}")
            ),
            PushMsg::room("live://py", 1001, Bytes::from_static(b"room")),
            PushMsg::broadcast(1002, 7, Bytes::from_static(b"all")),
        ]
    );
    let offsets: Vec<i64> = got.iter().map(|d| d.token.offset).collect();
    assert_eq!(offsets, [0, 1, 3], "offset 2 is the undecodable message, skipped");

    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    assert!(text.lines().any(|l| l == "goim_job_messages_undecodable_total 1"), "{text}");
    for d in &got {
        source.ack(d.token).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_push_to_an_unreachable_broker_fails_within_the_delivery_timeout() -> Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = queue::KafkaConfig {
        brokers: vec![format!("127.0.0.1:{port}")],
        delivery_timeout: Duration::from_secs(1),
        ..queue::KafkaConfig::default()
    };
    let queue = KafkaQueue::new(&config)?;
    let started = Instant::now();
    let err = queue.publish(PushMsg::room("live://1", 1000, Bytes::from_static(b"x"))).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(matches!(err, queue::Error::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("kafka at 127.0.0.1:{port}")), "{message}");
    assert!(message.contains("within 1s"), "{message}");
    eprintln!("failed after {took:?}: {message}");
    Ok(())
}

// ------------------------------------------------------------------------------------ test setup

#[tokio::test]
#[ignore = "needs kafka"]
async fn logic_creates_a_missing_topic_at_start_or_says_why_it_may_not() -> Result<()> {
    let brokers = std::env::var("GOIM_TEST_KAFKA_BROKERS")
        .expect("GOIM_TEST_KAFKA_BROKERS is not set; run `scripts/services.sh start` and source its env");
    let mut config = queue::KafkaConfig {
        brokers: vec![brokers],
        topic: unique("start"),
        partitions: 3,
        replication_factor: 1,
        ..queue::KafkaConfig::default()
    };
    // Not allowed to create it: a clear error naming the topic and the setting.
    config.create_topic = false;
    let err = queue::prepare_topic(&config).await.expect_err("a missing topic with create_topic = false");
    let text = err.to_string();
    assert!(matches!(err, queue::TopicError::Missing { .. }), "{text}");
    assert!(text.contains(&config.topic) && text.contains("kafka.create_topic = false"), "{text}");
    // Allowed: created once with the configured partitions; a second start finds it.
    config.create_topic = true;
    assert!(queue::prepare_topic(&config).await?, "the topic was not created");
    assert!(!queue::prepare_topic(&config).await?, "the topic was created twice");
    config.create_topic = false;
    assert!(!queue::prepare_topic(&config).await?, "an existing topic is fine without create_topic");
    use rdkafka::consumer::Consumer as _;
    let consumer: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", config.brokers.join(",")).create()?;
    let topic = config.topic.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map(|m| m.topics()[0].partitions().len())
    })
    .await??;
    assert_eq!(metadata, 3, "partitions of the created topic");
    Ok(())
}

#[tokio::test]
async fn logic_gives_up_on_an_unreachable_broker_after_the_startup_timeout() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = queue::KafkaConfig {
        brokers: vec![format!("127.0.0.1:{port}")],
        delivery_timeout: Duration::from_millis(300),
        startup_timeout: Duration::from_secs(1),
        ..queue::KafkaConfig::default()
    };
    let err = queue::prepare_topic(&config).await.expect_err("nothing listens there");
    assert!(matches!(err, queue::TopicError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port} did not answer within")), "{err}");
    Ok(())
}

/// A fresh topic on the test broker, and configs for both ends.
struct Kafka {
    brokers: String,
    topic: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("goim-test-{what}-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Kafka {
    async fn new(partitions: i32) -> Result<Kafka> {
        let brokers = std::env::var("GOIM_TEST_KAFKA_BROKERS")
            .expect("GOIM_TEST_KAFKA_BROKERS is not set; run `scripts/services.sh start` and source its env");
        let kafka = Kafka { brokers, topic: unique("topic") };
        let created = queue::ensure_topic(&kafka.producer(), partitions, 1)
            .await
            .with_context(|| format!("creating {} on {}", kafka.topic, kafka.brokers))?;
        ensure!(created, "topic {} already existed", kafka.topic);
        Ok(kafka)
    }

    fn producer(&self) -> queue::KafkaConfig {
        queue::KafkaConfig {
            brokers: vec![self.brokers.clone()],
            topic: self.topic.clone(),
            delivery_timeout: Duration::from_secs(10),
            ..queue::KafkaConfig::default()
        }
    }

    /// Consumers with the same `group` (within this test's topic) share offsets.
    fn consumer(&self, group: &str) -> goim_job::KafkaConfig {
        goim_job::KafkaConfig {
            brokers: vec![self.brokers.clone()],
            topic: self.topic.clone(),
            group: format!("{}-{group}", self.topic),
            session_timeout: Duration::from_secs(6),
            ..goim_job::KafkaConfig::default()
        }
    }

    fn source(&self, group: &str) -> Result<goim_job::KafkaSource> {
        Ok(goim_job::KafkaSource::new(&self.consumer(group), Metrics::new())?)
    }
}
