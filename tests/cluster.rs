//! The full goim topology as separate processes on loopback: two `goim-comet`, two `goim-logic`
//! and two `goim-job`, one redis-server and one Apache Kafka broker. Each test starts its own
//! Redis and broker (`goim_test_support::services`, from what `scripts/services.sh` installed), so it can
//! stop, kill and restart them without disturbing anything else, and the tests of this file run
//! one at a time. The broker fault tests count numbered pushes (`cluster/numbered.rs`).
//!
//! Ignored by default (they need Redis and Kafka); `scripts/test.sh` runs them with
//! `--include-ignored` after `scripts/services.sh start`.

mod support;

#[path = "cluster/numbered.rs"]
mod numbered;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use goim_test_support::{Client, Transport};
use serde_json::Value;
use support::process::{Proc, Scratch, binary, free_port, ready};
use support::{Reply, WAIT, eventually, http, sample};

use goim_test_support::services::{Broker, Redis};
use numbered::{Pusher, Receiver, Sent, account};

/// One cluster at a time: six binaries and two backends per test are enough for two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: i32 = 4;

/// comet's `protocol.session_renew`: a client heartbeat renews the session in logic at most
/// this often (10 minutes by default).
const SESSION_RENEW_MS: u64 = 300;

/// One tier process and the ports it serves.
struct Node {
    id: String,
    proc: Option<Proc>,
    admin: u16,
    /// comet: TCP; logic: HTTP; job: unused.
    port: u16,
    /// comet: WebSocket; others: unused.
    ws: u16,
}

impl Node {
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        reqwest::get(url).await.expect("metrics").text().await.expect("metrics body")
    }

    fn tcp(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn ws(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.ws).parse().unwrap()
    }

    fn kill9(&mut self) {
        let status = self.proc.take().expect("running").kill9();
        assert!(status.code().is_none(), "{} was killed by a signal: {status}", self.id);
    }
}

/// Fields drop in order: the tiers stop before the backends they use.
struct Cluster {
    jobs: Vec<Node>,
    comets: Vec<Node>,
    logics: Vec<Node>,
    broker: Broker,
    redis: Redis,
    _dir: Scratch,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        Cluster::start_with(name, false, "10s").await
    }

    /// With `jobs_first`, the jobs start before logic has created the topic, as pods may on
    /// Kubernetes: they must pick it up once it exists. `delivery_timeout` is logic's
    /// `kafka.delivery_timeout`: the broker tests make it short, to see many pushes fail while
    /// the broker is down; the others leave room for a busy machine.
    async fn start_with(name: &str, jobs_first: bool, delivery_timeout: &str) -> Cluster {
        let dir = Scratch::new(name);
        let redis_dir = dir.0.join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        let redis = Redis::start(redis_dir).await;
        let kafka_dir = dir.0.join("kafka");
        std::fs::create_dir_all(&kafka_dir).unwrap();
        let broker = Broker::start(kafka_dir).await;
        let comet_grpc = [free_port(), free_port()];
        let logic_grpc = [free_port(), free_port()];
        let comet_list = format!(
            "comets = [{{ server_id = \"comet-a\", addr = \"127.0.0.1:{}\" }}, \
             {{ server_id = \"comet-b\", addr = \"127.0.0.1:{}\" }}]",
            comet_grpc[0], comet_grpc[1]
        );
        let kafka = format!("[kafka]\nbrokers = [\"{}\"]\ntopic = \"goim-push-topic\"\n", broker.addr());
        // logic creates the topic at start; jobs start once it exists.
        let partitions = format!("partitions = {PARTITIONS}\n");
        let mut cluster = Cluster { _dir: dir, redis, broker, comets: vec![], logics: vec![], jobs: vec![] };
        if jobs_first {
            cluster.start_jobs(&comet_list, &kafka);
            for node in &cluster.jobs {
                assert!(ready(node.admin).await, "{} never became ready", node.id);
            }
        }

        for (i, grpc) in logic_grpc.iter().enumerate() {
            let (http_port, admin) = (free_port(), free_port());
            let toml = format!(
                "[logic.http]\naddr = \"127.0.0.1:{http_port}\"\n[logic.auth]\nmode = \"json\"\n\
                 [grpc]\naddr = \"127.0.0.1:{grpc}\"\n[admin]\naddr = \"127.0.0.1:{admin}\"\n\
                 [store]\nkind = \"redis\"\n[store.redis]\nurl = \"{}\"\n[queue]\nkind = \"kafka\"\n\
                 {kafka}{partitions}delivery_timeout = \"{delivery_timeout}\"\n[discovery]\nkind = \"static\"\n{comet_list}\n",
                cluster.redis.url()
            );
            cluster.logics.push(cluster.node("goim-logic", format!("logic-{i}"), &toml, admin, http_port, 0));
        }
        for node in &cluster.logics {
            assert!(ready(node.admin).await, "{} never became ready", node.id);
        }
        for (i, grpc) in comet_grpc.iter().enumerate() {
            let id = ["comet-a", "comet-b"][i].to_string();
            let (tcp, ws, admin) = (free_port(), free_port(), free_port());
            let toml = format!(
                "[comet]\nserver_id = \"{id}\"\ntcp.bind = [\"127.0.0.1:{tcp}\"]\n\
                 websocket.bind = [\"127.0.0.1:{ws}\"]\nonline.renew_interval = \"200ms\"\n\
                 protocol.session_renew = \"{SESSION_RENEW_MS}ms\"\n\
                 [grpc]\naddr = \"127.0.0.1:{grpc}\"\n[logic_client]\naddrs = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
                 [admin]\naddr = \"127.0.0.1:{admin}\"\n",
                logic_grpc[0], logic_grpc[1]
            );
            cluster.comets.push(cluster.node("goim-comet", id, &toml, admin, tcp, ws));
        }
        if !jobs_first {
            cluster.start_jobs(&comet_list, &kafka);
        }
        for node in cluster.comets.iter().chain(&cluster.jobs) {
            assert!(ready(node.admin).await, "{} never became ready", node.id);
        }
        cluster
    }

    fn start_jobs(&mut self, comet_list: &str, kafka: &str) {
        for i in 0..2 {
            let admin = free_port();
            let toml = format!(
                "[discovery]\nkind = \"static\"\n{comet_list}\n[queue]\nkind = \"kafka\"\n{kafka}\
                 group = \"goim-push-group-job\"\nsession_timeout = \"6s\"\n\
                 [admin]\naddr = \"127.0.0.1:{admin}\"\n"
            );
            let job = self.node("goim-job", format!("job-{i}"), &toml, admin, 0, 0);
            self.jobs.push(job);
        }
    }

    fn node(&self, bin: &'static str, id: String, toml: &str, admin: u16, port: u16, ws: u16) -> Node {
        let config = self._dir.file(&format!("{id}.toml"), toml);
        let proc = Proc::start(binary(bin), &config, &[]);
        Node { id, proc: Some(proc), admin, port, ws }
    }

    /// POSTs a push to logic `i`; `path` includes the query.
    async fn push(&self, i: usize, path: &str, body: String) -> Reply {
        let url = format!("http://127.0.0.1:{}{path}", self.logics[i].port);
        http(reqwest::Method::POST, url, body, None).await
    }

    async fn push_ok(&self, i: usize, path: &str, body: &str) {
        let r = self.push(i, path, body.to_string()).await;
        assert_eq!(r.body["code"], Value::from(0), "{path} via logic-{i}: {}", r.raw);
    }

    /// Waits until the consumer group is settled: a push to each of `keys` (one client each) is
    /// delivered.
    async fn warm(&self, clients: &mut [(String, Client)]) {
        for (key, client) in clients.iter_mut() {
            self.push_ok(0, &format!("/goim/push/keys?operation=1000&keys={key}"), "warm").await;
            let got = client.recv_op(1000, Duration::from_secs(40)).await.expect("warm-up push");
            assert_eq!(&got.body[..], b"warm");
        }
    }
}

/// Sums a counter over the nodes.
async fn total(nodes: &[Node], prefix: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += sample(&n.metrics().await, prefix);
    }
    sum
}

async fn login(addr: SocketAddr, transport: Transport, mid: i64, key: &str, room: &str) -> Client {
    let mut c = Client::connect(transport, addr).await.expect("connect");
    c.login(mid, key, room, &[1000]).await.expect("login");
    c
}

/// Reads op-1000 bodies until `n` arrived.
async fn bodies(c: &mut Client, n: usize, limit: Duration) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        match c.recv_op(1000, limit).await {
            Ok(f) => got.push(String::from_utf8_lossy(&f.body).into_owned()),
            Err(e) => panic!("after {got:?}: {e}"),
        }
    }
    got.sort();
    got
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
#[ignore = "needs redis-server and Kafka (scripts/services.sh)"]
async fn pushes_by_key_mid_room_and_broadcast_reach_exactly_the_right_clients() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    // The jobs start before the topic exists; they consume once logic has created it.
    let cluster = Cluster::start_with("cluster-routes", true, "10s").await;
    let (a, b) = (&cluster.comets[0], &cluster.comets[1]);
    // Clients on both comets, over both transports; mid 1 has a device on each comet.
    let mut a1 = login(a.tcp(), Transport::Tcp, 1, "a1", "live://1").await;
    let mut a2 = login(a.ws(), Transport::Ws, 2, "a2", "live://2").await;
    let mut b1 = login(b.ws(), Transport::Ws, 1, "b1", "live://1").await;
    let mut b3 = login(b.tcp(), Transport::Tcp, 3, "b3", "live://1").await;

    // Alternate the logic instances: either one routes through the shared Redis.
    cluster.push_ok(0, "/goim/push/keys?operation=1000&keys=a1", "key a1").await;
    cluster.push_ok(1, "/goim/push/keys?operation=1000&keys=b3", "key b3").await;
    cluster.push_ok(1, "/goim/push/mids?operation=1000&mids=1", "mid 1").await;
    cluster.push_ok(0, "/goim/push/mids?operation=1000&mids=2&mids=3", "mids 2 3").await;
    for n in 0..5 {
        cluster.push_ok(n % 2, "/goim/push/room?operation=1000&type=live&room=1", &format!("room {n}")).await;
    }
    cluster.push_ok(1, "/goim/push/all?operation=1000", "all").await;

    let rooms = ["room 0", "room 1", "room 2", "room 3", "room 4"];
    let expect_a1: Vec<&str> = ["key a1", "mid 1", "all"].iter().chain(&rooms).copied().collect();
    let expect_b1: Vec<&str> = ["mid 1", "all"].iter().chain(&rooms).copied().collect();
    let expect_b3: Vec<&str> = ["key b3", "mids 2 3", "all"].iter().chain(&rooms).copied().collect();
    let expect_a2 = ["mids 2 3", "all"];
    // The first arrives once the jobs saw the new topic (a metadata refresh, at most 10 s).
    assert_eq!(bodies(&mut a1, expect_a1.len(), Duration::from_secs(40)).await, sorted(&expect_a1), "a1");
    assert_eq!(bodies(&mut a2, expect_a2.len(), WAIT).await, sorted(&expect_a2), "a2");
    assert_eq!(bodies(&mut b1, expect_b1.len(), WAIT).await, sorted(&expect_b1), "b1");
    assert_eq!(bodies(&mut b3, expect_b3.len(), WAIT).await, sorted(&expect_b3), "b3");

    // Nothing else: a last push to every key arrives next, with nothing before it.
    cluster.push_ok(0, "/goim/push/keys?operation=1000&keys=a1&keys=a2&keys=b1&keys=b3", "end").await;
    for (name, c) in [("a1", &mut a1), ("a2", &mut a2), ("b1", &mut b1), ("b3", &mut b3)] {
        let next = c.recv_op(1000, WAIT).await.expect("end");
        assert_eq!(String::from_utf8_lossy(&next.body), "end", "{name} got more than it should");
    }

    // Each room batch went to each comet once: every comet received exactly the batches the jobs
    // flushed (both comets are in discovery; comet-a has a1 in the room, comet-b b1 and b3), and
    // each broadcast once.
    let flushed = total(&cluster.jobs, "goim_job_room_batches_flushed_total").await;
    assert!((1.0..=5.0).contains(&flushed), "5 room pushes made {flushed} batches");
    for comet in &cluster.comets {
        let m = comet.metrics().await;
        assert_eq!(
            sample(&m, "goim_comet_pushes_total{kind=\"room\"}"),
            flushed,
            "{} room batches",
            comet.id
        );
        assert_eq!(sample(&m, "goim_comet_pushes_total{kind=\"broadcast\"}"), 1.0, "{} broadcasts", comet.id);
    }
    eprintln!("cluster routes: {flushed} room batches for 5 room pushes; {:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs redis-server and Kafka (scripts/services.sh)"]
async fn kill_9_of_a_job_during_numbered_pushes_loses_none() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::start("cluster-job-kill").await;
    // Eight keys: partitioned by key, they spread over the four partitions and both jobs.
    let mut clients = Vec::new();
    for i in 0..8 {
        let key = format!("n{i}");
        let comet = &cluster.comets[i % 2];
        clients
            .push((key.clone(), login(comet.tcp(), Transport::Tcp, 100 + i as i64, &key, "live://n").await));
    }
    // Both jobs must own partitions before one dies. A job that joins the group after the other
    // waits for a rebalance, so warm up until both have consumed.
    let spread = Instant::now();
    loop {
        cluster.warm(&mut clients).await;
        let mut idle = Vec::new();
        for job in &cluster.jobs {
            let consumed = sample(&job.metrics().await, "goim_job_messages_consumed_total{kind=\"keys\"}");
            if consumed == 0.0 {
                idle.push(job.id.clone());
            }
        }
        if idle.is_empty() {
            break;
        }
        assert!(spread.elapsed() < Duration::from_secs(60), "{idle:?} never got a partition");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    const PER_KEY: usize = 60;
    let mut published = 0;
    for n in 0..PER_KEY {
        if n == PER_KEY / 3 {
            cluster.jobs[0].kill9();
        }
        for (key, _) in &clients {
            let path = format!("/goim/push/keys?operation=1000&keys={key}");
            cluster.push_ok(n % 2, &path, &format!("{key}:{n}")).await;
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Every number arrives; the survivor takes over the dead job's partitions after the session
    // timeout and redelivers what was not committed, so some arrive twice.
    let mut duplicates = 0;
    for (key, client) in &mut clients {
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        let end = Instant::now() + Duration::from_secs(60);
        while seen.len() < PER_KEY {
            let left = end.saturating_duration_since(Instant::now());
            let f = client.recv_op(1000, left).await.unwrap_or_else(|e| {
                let missing: Vec<usize> = (0..PER_KEY).filter(|n| !seen.contains_key(n)).collect();
                panic!("{key}: missing {missing:?}: {e}")
            });
            let body = String::from_utf8_lossy(&f.body).into_owned();
            let (k, n) = body.split_once(':').unwrap_or_else(|| panic!("{key}: unexpected {body}"));
            assert_eq!(k, key, "{key} got another key's push");
            *seen.entry(n.parse().unwrap()).or_default() += 1;
        }
        // Redeliveries still in flight arrive within a moment.
        while let Ok(f) = client.recv_op(1000, Duration::from_millis(300)).await {
            let body = String::from_utf8_lossy(&f.body).into_owned();
            let n: usize = body.split_once(':').unwrap().1.parse().unwrap();
            *seen.entry(n).or_default() += 1;
        }
        duplicates += seen.values().map(|c| c - 1).sum::<usize>();
    }
    let consumed = total(&cluster.jobs[1..], "goim_job_messages_consumed_total{kind=\"keys\"}").await;
    eprintln!(
        "job kill -9: {published} numbered pushes, 0 lost, {duplicates} delivered twice; \
         the survivor consumed {consumed}; {:?}",
        started.elapsed()
    );
    assert!(duplicates < published, "{duplicates} duplicates of {published}");
}

/// A cluster with one client (key `k`, warmed up) receiving numbered pushes sent every `every`.
async fn numbered(name: &str, every: Duration) -> (Cluster, Receiver, Pusher) {
    let cluster = Cluster::start_with(name, false, "2s").await;
    let mut clients =
        vec![("k".to_string(), login(cluster.comets[0].tcp(), Transport::Tcp, 5, "k", "live://5").await)];
    cluster.warm(&mut clients).await;
    let (_, client) = clients.pop().unwrap();
    let receiver = Receiver::start(client);
    let ports = cluster.logics.iter().map(|l| l.port).collect();
    let pusher = Pusher::start(ports, "k", every);
    (cluster, receiver, pusher)
}

#[tokio::test]
#[ignore = "needs redis-server and Kafka (scripts/services.sh)"]
async fn kill_9_of_the_broker_loses_no_accepted_push() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let (mut cluster, receiver, pusher) = numbered("cluster-broker-kill", Duration::from_millis(50)).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker.kill9();
    let killed = Instant::now();
    cluster.broker.run().await;
    let restarted = Instant::now();
    // Pushes keep coming until 40 more were accepted after the restart.
    let resumed =
        eventually(Duration::from_secs(90), || async { pusher.accepted_since(restarted) >= 40 }).await;
    let sent = pusher.stop().await;
    assert!(resumed, "logic accepted no pushes after the broker restarted: {:?}", sent.last());
    let want: Vec<usize> = sent.iter().filter(|s| s.accepted).map(|s| s.n).collect();
    let (counts, first) = receiver.finish(&want, Duration::from_secs(60), restarted).await;
    let (accepted, duplicates, extra) = account(&sent, &counts);
    let first = first.map(|t| t - restarted);
    eprintln!(
        "broker kill -9: {} pushes, {accepted} accepted, lost: 0, duplicates: {duplicates}, \
         {extra} refused but delivered; restart took {:?}; first delivery {first:?} after the restart; {:?}",
        sent.len(),
        restarted - killed,
        started.elapsed()
    );
    assert!(first.is_some(), "nothing was delivered after the restart");
}

#[tokio::test]
#[ignore = "needs redis-server and Kafka (scripts/services.sh)"]
async fn pushes_fail_fast_while_the_broker_is_down_and_resume_after_it_restarts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let (mut cluster, receiver, pusher) = numbered("cluster-broker", Duration::from_millis(200)).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.broker.stop();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let up_at = Instant::now();
    cluster.broker.run().await;
    let restarted = Instant::now();
    let resumed =
        eventually(Duration::from_secs(90), || async { pusher.accepted_since(restarted) >= 20 }).await;
    let sent = pusher.stop().await;
    assert!(resumed, "logic accepted no pushes after the broker restarted: {:?}", sent.last());

    // Every push asked while the broker was down got the clear error, and within
    // delivery_timeout (2 s here) plus the time to answer: no push hangs.
    let during: Vec<&Sent> =
        sent.iter().filter(|s| s.sent_at >= down && s.sent_at + s.took <= up_at).collect();
    assert!(during.len() >= 8, "only {} pushes while the broker was down", during.len());
    let slowest = during.iter().map(|s| s.took).max().unwrap();
    for s in &during {
        assert!(!s.accepted, "push {} was accepted while the broker was down: {}", s.n, s.reply);
        let body: Value = serde_json::from_str(&s.reply).expect("json reply");
        assert_eq!(body["code"], Value::from(-500), "{}", s.reply);
        assert_eq!(body["message"], "push queue is unavailable", "{}", s.reply);
        assert!(s.took < Duration::from_secs(4), "push {} took {:?} while the broker was down", s.n, s.took);
    }
    let m = cluster.logics[0].metrics().await;
    let failures = sample(&m, "goim_logic_push_requests_total{kind=\"keys\",result=\"queue_error\"}");
    assert!(failures >= 1.0, "the failures are not counted");

    let want: Vec<usize> = sent.iter().filter(|s| s.accepted).map(|s| s.n).collect();
    let (counts, first) = receiver.finish(&want, Duration::from_secs(60), restarted).await;
    let first = first.map(|t| t - restarted);
    let (accepted, duplicates, extra) = account(&sent, &counts);
    let resets = total(&cluster.logics, "goim_logic_kafka_producer_resets_total").await;
    eprintln!(
        "broker down 30 s: {} pushes, {} while down (all refused, slowest answer {slowest:?}), \
         {accepted} accepted, lost: 0, duplicates: {duplicates}, {extra} refused but delivered; \
         first delivery {first:?} after the restart; {resets} producer resets; {:?}",
        sent.len(),
        during.len(),
        started.elapsed()
    );
    assert!(first.is_some(), "nothing was delivered after the restart");
}

#[tokio::test]
#[ignore = "needs redis-server and Kafka (scripts/services.sh)"]
async fn logic_reports_redis_down_clearly_and_recovers_when_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::start("cluster-redis").await;
    let comet = cluster.comets[0].tcp();
    let mut clients = vec![("r".to_string(), login(comet, Transport::Tcp, 9, "r", "live://9").await)];
    cluster.warm(&mut clients).await;
    let (_, mut client) = clients.pop().unwrap();

    cluster.redis.stop();
    let r = cluster.push(0, "/goim/push/mids?operation=1000&mids=9", "lost".into()).await;
    assert_eq!(r.body["code"], Value::from(-500), "{}", r.raw);
    assert_eq!(r.body["message"], "session store is unavailable", "{}", r.raw);
    // A new client still gets in (as in goim): rooms and broadcasts reach it; its mapping is
    // written by its first heartbeat once Redis is back. The failed write is counted.
    let mut newcomer = Client::connect(Transport::Tcp, comet).await.unwrap();
    newcomer.login(10, "r2", "live://9", &[1000]).await.expect("auth while Redis is down");
    let mut errors = 0.0;
    for logic in &cluster.logics {
        let m = logic.metrics().await;
        errors += m
            .lines()
            .filter(|l| l.starts_with("goim_logic_store_errors_total{"))
            .map(|l| sample(l, ""))
            .sum::<f64>();
    }
    assert!(errors >= 1.0, "store errors are not counted");

    cluster.redis.run().await;
    // Redis came back empty. The client's next heartbeat re-adds its mapping (as goim does),
    // and pushes to its mid reach it again.
    let recovered = eventually(Duration::from_secs(30), || async {
        cluster.push(1, "/goim/push/mids?operation=1000&mids=9", "ping".into()).await.body["code"] == 0
    })
    .await;
    assert!(recovered, "logic did not recover after Redis restarted");
    tokio::time::sleep(Duration::from_millis(SESSION_RENEW_MS)).await;
    client.heartbeat().await.expect("heartbeat");
    newcomer.heartbeat().await.expect("heartbeat");
    cluster.push_ok(1, "/goim/push/mids?operation=1000&mids=9&mids=10", "back").await;
    for c in [&mut client, &mut newcomer] {
        let got = c.recv_op(1000, WAIT).await.expect("push by mid after recovery");
        assert_eq!(&got.body[..], b"back");
    }
    eprintln!("redis restart: {errors} store errors while down; {:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs redis-server and Kafka (scripts/services.sh)"]
async fn clients_of_a_killed_comet_reconnect_to_the_other_and_get_their_pushes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = Cluster::start("cluster-comet").await;
    let (a, b) = (cluster.comets[0].tcp(), cluster.comets[1].tcp());
    let mut clients = vec![("c1".to_string(), login(a, Transport::Tcp, 21, "c1", "live://21").await)];
    cluster.warm(&mut clients).await;
    let (_, mut moving) = clients.pop().unwrap();
    let mut staying = login(b, Transport::Tcp, 22, "c2", "live://21").await;

    cluster.comets[0].kill9();
    let (_, closed) = moving.until_closed(WAIT).await.expect("the dead comet's socket closes");
    assert_eq!(closed, goim_test_support::Closed::Eof);
    // The client reconnects to the other comet with a new connection key, as goim clients do.
    let mut moved = login(b, Transport::Tcp, 21, "c1-again", "live://21").await;

    cluster.push_ok(0, "/goim/push/mids?operation=1000&mids=21", "to moved").await;
    assert_eq!(&moved.recv_op(1000, WAIT).await.expect("mid push on comet-b").body[..], b"to moved");
    cluster.push_ok(1, "/goim/push/room?operation=1000&type=live&room=21", "room").await;
    assert_eq!(&moved.recv_op(1000, WAIT).await.unwrap().body[..], b"room");
    assert_eq!(&staying.recv_op(1000, WAIT).await.unwrap().body[..], b"room");
    eprintln!("comet kill -9: client moved and reached; {:?}", started.elapsed());
}
