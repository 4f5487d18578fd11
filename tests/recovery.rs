//! Positions and resume (`docs/recovery.md`), end to end over real sockets: one suite, run with
//! the memory history (the embedded default) and with the Redis history against a real Redis.
//!
//! The cluster here is logic in-process (JSON tokens), a memory queue to a job that dispatches
//! over gRPC to two comets, each serving TCP: every step a push takes in the distributed mode
//! except Kafka. Numbered room and user pushes flow at a steady pace while a client disconnects
//! for two seconds and resumes (on the same comet, or on the other one); the client must then
//! hold every number exactly once, in order. The counts are printed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goim_api::{Frame, Op, Position, Stream};
use goim_job::comet::{ClientConfig, GrpcComets};
use goim_job::discovery::{CometEndpoint, StaticList};
use goim_logic::history::{History, HistoryConfig, MemoryHistory};
use goim_test_support::{Client, Transport};
use serde_json::Value;
use support::WAIT;
use tokio_util::sync::CancellationToken;

struct Cluster {
    logic: Arc<goim_logic::Logic>,
    comets: Vec<SocketAddr>,
    _stop: tokio_util::sync::DropGuard,
}

async fn cluster(history: Arc<dyn History>, config: HistoryConfig) -> Cluster {
    let mut logic_config = goim_logic::Config::default();
    logic_config.auth.mode = goim_logic::config::AuthMode::Json;
    logic_config.history = config;
    let (queue, rx) = goim_logic::queue::Memory::channel(1024, Duration::from_secs(1));
    let store = Arc::new(goim_logic::MemoryStore::default());
    let logic = goim_logic::Logic::new(logic_config, store, Arc::new(queue)).unwrap().with_history(history);
    let logic = Arc::new(logic);
    let stop = CancellationToken::new();
    let mut endpoints = Vec::new();
    let mut comets = Vec::new();
    for id in ["comet-a", "comet-b"] {
        let mut config = goim_comet::Config { server_id: id.into(), ..Default::default() };
        config.tcp.bind = vec!["127.0.0.1:0".into()];
        config.websocket.bind = Vec::new();
        let listeners = goim_comet::Listeners::bind(&config).await.unwrap();
        comets.push(listeners.tcp[0].local_addr().unwrap());
        let comet = goim_comet::Comet::new(
            config,
            Arc::new(goim::port::InProcessLogic(logic.clone())),
            Arc::new(goim_comet::Metrics::default()),
        );
        comet.start(listeners);
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        endpoints.push(CometEndpoint::up(id, grpc.local_addr().unwrap().to_string()));
        let stop = stop.clone();
        tokio::spawn(async move { goim_comet::grpc::serve(grpc, comet, &Default::default(), stop).await });
    }
    let client = ClientConfig { timeout: Duration::from_secs(2), ..ClientConfig::default() };
    let job = goim_job::Job::new(
        goim_job::Config::default(),
        Arc::new(GrpcComets::new(&StaticList::new(endpoints), client)),
        goim_job::Metrics::new(),
    );
    let job_stop = stop.clone();
    tokio::spawn(async move { job.run(goim_job::MemoryQueue::new(rx), job_stop).await });
    Cluster { logic, comets, _stop: stop.drop_guard() }
}

fn memory(config: &HistoryConfig) -> Arc<dyn History> {
    Arc::new(MemoryHistory::new(config))
}

async fn redis(config: &HistoryConfig) -> Arc<dyn History> {
    let url = std::env::var("GOIM_TEST_REDIS_URL").expect(
        "GOIM_TEST_REDIS_URL is not set; start Redis with `scripts/services.sh start` and source its env",
    );
    let redis = goim_logic::store::RedisConfig { url, ..Default::default() };
    let store = goim_logic::RedisStore::connect(&redis).await.expect("redis");
    Arc::new(goim_logic::RedisHistory::new(Arc::new(store), config))
}

/// Each client's own room, so runs against a shared Redis never meet.
fn room(mid: i64) -> String {
    format!("live://resume-{mid}")
}

/// A client that tracks the positions it saw, as `web/goim.js` does.
struct Resumer {
    /// `None` while away.
    client: Option<Client>,
    room: Position,
    user: Position,
    /// The numbers received, in arrival order, per stream.
    got: Vec<(Stream, u64)>,
    duplicates: usize,
}

impl Resumer {
    async fn connect(addr: SocketAddr, mid: i64, ask: Option<Value>) -> (Client, Option<Value>) {
        let mut client = Client::connect(Transport::Tcp, addr).await.unwrap();
        if let Some(ask) = &ask {
            let body = Bytes::from(ask.to_string());
            client.send(&Frame { ver: 1, op: Op::Recover.code(), seq: 0, body }).await.unwrap();
        }
        let token = goim_test_support::json_token(mid, &format!("dev-{mid}"), &room(mid), &[1000]);
        let reply = client.auth(&token).await.unwrap();
        assert_eq!(reply.op, Op::AuthReply.code(), "{}", String::from_utf8_lossy(&reply.body));
        let answer = match ask {
            Some(_) => {
                let f = client.recv_timeout(WAIT).await.unwrap().expect("op 19");
                assert_eq!(f.op, Op::RecoverReply.code(), "op 19 comes right after op 8");
                Some(serde_json::from_slice(&f.body).unwrap())
            }
            None => None,
        };
        (client, answer)
    }

    async fn first(addr: SocketAddr, mid: i64) -> Resumer {
        let ask = serde_json::json!({"room": {}, "user": {}});
        let (client, answer) = Resumer::connect(addr, mid, Some(ask)).await;
        let answer = answer.unwrap();
        let at = |s: &str| {
            Position::new(answer[s]["epoch"].as_u64().unwrap() as u16, answer[s]["offset"].as_u64().unwrap())
        };
        Resumer { client: Some(client), room: at("room"), user: at("user"), got: Vec::new(), duplicates: 0 }
    }

    /// Reconnects to `addr` from the positions seen; returns op 19's answer.
    async fn resume(&mut self, addr: SocketAddr, mid: i64) -> Value {
        let ask = serde_json::json!({"room": self.room, "user": self.user});
        let (client, answer) = Resumer::connect(addr, mid, Some(ask)).await;
        self.client = Some(client);
        answer.unwrap()
    }

    /// Reads pushes for `d`, or until `want` numbers per stream are in.
    async fn read(&mut self, d: Duration, want: u64) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let done = |s| self.got.iter().filter(|(st, _)| *st == s).count() as u64 >= want;
            if done(Stream::Room) && done(Stream::User) {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let client = self.client.as_mut().expect("connected");
            let Ok(Some(f)) = client.recv_timeout(left).await else { return };
            let Some((stream, epoch, offset)) = Position::from_header(f.ver, f.seq) else { continue };
            let seen = if stream == Stream::Room { &mut self.room } else { &mut self.user };
            if goim_api::position::already_seen(*seen, epoch, offset) {
                self.duplicates += 1;
                continue;
            }
            *seen = Position::new(epoch, u64::from(offset));
            let n: u64 = std::str::from_utf8(&f.body).unwrap().parse().unwrap();
            self.got.push((stream, n));
        }
    }

    /// Per stream: numbers missing from 1..=n, and numbers out of order.
    fn check(&self, n: u64) -> (usize, usize) {
        let mut missing = 0;
        let mut disorder = 0;
        for s in [Stream::Room, Stream::User] {
            let got: Vec<u64> = self.got.iter().filter(|(st, _)| *st == s).map(|(_, n)| *n).collect();
            missing += (1..=n).filter(|i| !got.contains(i)).count();
            disorder += got.windows(2).filter(|w| w[1] != w[0] + 1).count();
        }
        (missing, disorder)
    }
}

/// Pushes 1..=n to the room and to user `mid`, one of each every `every`.
fn pusher(logic: Arc<goim_logic::Logic>, mid: i64, n: u64, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let room = room(mid);
        let (room_type, room_id) = room.split_once("://").unwrap();
        for i in 1..=n {
            let body = Bytes::from(i.to_string());
            logic.push_room(1000, room_type, room_id, body.clone()).await.unwrap();
            logic.push_mids(1000, vec![mid], body).await.unwrap();
            tokio::time::sleep(every).await;
        }
    })
}

/// 150 numbers of each stream at 50/s; the client leaves after one second for two, then resumes
/// on `resume_on` (0: the same comet, 1: the other).
async fn away_two_seconds_then_resume(c: &Cluster, mid: i64, resume_on: usize) {
    let n = 150;
    let mut r = Resumer::first(c.comets[0], mid).await;
    let pushes = pusher(c.logic.clone(), mid, n, Duration::from_millis(20));
    r.read(Duration::from_secs(1), n).await;
    let before = r.got.len();
    r.client = None;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = r.resume(c.comets[resume_on], mid).await;
    r.read(Duration::from_secs(10), n).await;
    pushes.await.unwrap();
    let (missing, disorder) = r.check(n);
    let recovered =
        answer["room"]["recovered"].as_u64().unwrap() + answer["user"]["recovered"].as_u64().unwrap();
    eprintln!(
        "resume on comet {resume_on}: {} received before leaving, {recovered} replayed, {} in all; \
         missing {missing}, out of order {disorder}, duplicates {} (dropped client-side)",
        before,
        r.got.len(),
        r.duplicates
    );
    assert_eq!(answer["room"]["complete"], true, "{answer}");
    assert_eq!(answer["user"]["complete"], true, "{answer}");
    assert!(recovered >= 150, "two seconds at 50/s per stream are replayed: {answer}");
    assert_eq!((missing, disorder), (0, 0), "every number once, in order");
    assert_eq!(r.duplicates, 0, "the server sends nothing twice");
    assert_eq!(r.got.len() as u64, 2 * n);
}

/// Away past the history's size: told incomplete, given what the history still has, then live.
async fn a_gap_past_the_history_is_incomplete(c: &Cluster, mid: i64) {
    let mut r = Resumer::first(c.comets[0], mid).await;
    r.client = None;
    // The comet sees the close before the pushes: none reaches the old connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    pusher(c.logic.clone(), mid, 30, Duration::ZERO).await.unwrap();
    let answer = r.resume(c.comets[0], mid).await;
    assert_eq!(answer["room"]["complete"], false, "{answer}");
    assert_eq!(answer["room"]["recovered"], 10, "the history's 10: {answer}");
    r.read(WAIT, 10).await;
    let room: Vec<u64> = r.got.iter().filter(|(s, _)| *s == Stream::Room).map(|(_, n)| *n).collect();
    assert_eq!(room, (21..=30).collect::<Vec<_>>());
    pusher(c.logic.clone(), mid, 1, Duration::ZERO).await.unwrap();
    r.read(WAIT, 11).await;
    assert_eq!(r.got.iter().filter(|(s, _)| *s == Stream::Room).count(), 11, "live pushes follow");
}

async fn suite(
    name: &str,
    history: impl Fn(HistoryConfig) -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn History>>>>,
) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let base = i64::from(nanos % 1_000_000) * 100 + 1;
    let config = HistoryConfig::default();
    let c = cluster(history(config.clone()).await, config).await;
    eprintln!("{name}:");
    away_two_seconds_then_resume(&c, base, 0).await;
    away_two_seconds_then_resume(&c, base + 1, 1).await;
    let small = HistoryConfig { size: 10, ..HistoryConfig::default() };
    let c = cluster(history(small.clone()).await, small).await;
    a_gap_past_the_history_is_incomplete(&c, base + 2).await;
}

/// Long-polling resumes the same way, against the embedded server (its memory history): the
/// auth response carries the answer, the first poll the replay, then live pushes follow; a bad
/// `recover` is a 400.
#[tokio::test]
async fn a_long_poll_session_resumes_from_its_position_in_the_embedded_server() {
    use goim_test_support::long_poll::Poller;
    let s = support::start().await;
    let addr = s.addrs.websocket[0];
    let (first, answer) =
        Poller::resume(addr, 71, "lp71", "live://lp71", &serde_json::json!({"room": {}})).await;
    let seen = Position::new(
        answer["room"]["epoch"].as_u64().unwrap() as u16,
        answer["room"]["offset"].as_u64().unwrap(),
    );
    assert_eq!(answer["room"]["complete"], true, "{answer}");
    drop(first);
    for body in [&b"1"[..], b"2", b"3"] {
        support::push_ok(&s, "/goim/push/room?operation=1000&type=live&room=lp71", body).await;
    }
    let ask = serde_json::json!({"room": seen});
    let (p, answer) = Poller::resume(addr, 71, "lp71b", "live://lp71", &ask).await;
    assert_eq!(
        (answer["room"]["recovered"].as_u64(), answer["room"]["complete"].as_bool()),
        (Some(3), Some(true))
    );
    support::push_ok(&s, "/goim/push/room?operation=1000&type=live&room=lp71", b"4").await;
    let got = p.collect(4, WAIT).await;
    let bodies: Vec<_> = got.iter().map(|f| String::from_utf8_lossy(&f.body).into_owned()).collect();
    assert_eq!(bodies, ["1", "2", "3", "4"], "the replay, then live, once each");
    let offsets: Vec<_> = got.iter().map(|f| Position::from_header(f.ver, f.seq).unwrap().2).collect();
    assert_eq!(
        offsets,
        [seen.offset as u32 + 1, seen.offset as u32 + 2, seen.offset as u32 + 3, seen.offset as u32 + 4]
    );

    let bad = reqwest::Client::new()
        .post(format!("http://{addr}/poll/auth?recover=%7Bnope"))
        .body(goim_test_support::json_token(72, "lp72", "", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        support::sample(&support::metrics(&s).await, "goim_comet_bad_input_total{transport=\"long_poll\"}")
            >= 1.0
    );
}

/// A socket client that sends op 18 with a body that is not a recover request is closed with
/// op 6 `protocol`, and counted.
#[tokio::test]
async fn a_malformed_op_18_closes_the_connection_as_a_protocol_error() {
    let s = support::start().await;
    let mut c = Client::connect(Transport::Tcp, s.addrs.tcp[0]).await.unwrap();
    c.send(&Frame { ver: 1, op: Op::Recover.code(), seq: 0, body: Bytes::from_static(b"{\"room\":7}") })
        .await
        .unwrap();
    let reply = c.auth(&goim_test_support::json_token(73, "k73", "", &[])).await.unwrap();
    assert_eq!(reply.op, Op::DisconnectReply.code());
    assert_eq!(goim_test_support::client::op6_reason(&reply), "protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_the_memory_history() {
    suite("memory", |config| Box::pin(async move { memory(&config) })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis"]
async fn resume_with_the_redis_history() {
    suite("redis", |config| Box::pin(async move { redis(&config).await })).await;
}
