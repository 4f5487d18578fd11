//! `GrpcLogic` over names, against real gRPC servers on loopback addresses that share a port
//! (all of 127.0.0.0/8 is local), with a scripted resolver, and once with the system's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use goim_api::Connect;
use goim_api::pb::logic::logic_server::{self, LogicServer};
use goim_api::pb::logic::{
    ConnectReply, ConnectReq, DisconnectReply, DisconnectReq, HeartbeatReply, HeartbeatReq, NodesReply,
    NodesReq, OnlineReply, OnlineReq, ReceiveReply, ReceiveReq, RecoverReply, RecoverReq,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::super::{ClientConfig, GrpcLogic};
use super::*;
use crate::logic::Logic;

const WAIT: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(100);

/// What one logic server saw.
#[derive(Default)]
struct Counts {
    connects: AtomicUsize,
    /// TCP connections accepted: a kept instance keeps its one connection.
    accepted: AtomicUsize,
}

impl Counts {
    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }
}

struct CountingLogic(Arc<Counts>);

#[tonic::async_trait]
impl logic_server::Logic for CountingLogic {
    async fn connect(&self, req: Request<ConnectReq>) -> Result<Response<ConnectReply>, Status> {
        self.0.connects.fetch_add(1, Ordering::SeqCst);
        let key = String::from_utf8_lossy(&req.into_inner().token).into_owned();
        Ok(Response::new(ConnectReply { mid: 1, key, room_id: String::new(), accepts: vec![], heartbeat: 0 }))
    }
    async fn disconnect(&self, _: Request<DisconnectReq>) -> Result<Response<DisconnectReply>, Status> {
        Ok(Response::new(DisconnectReply::default()))
    }
    async fn heartbeat(&self, _: Request<HeartbeatReq>) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(HeartbeatReply {}))
    }
    async fn renew_online(&self, _: Request<OnlineReq>) -> Result<Response<OnlineReply>, Status> {
        Ok(Response::new(OnlineReply::default()))
    }
    async fn receive(&self, _: Request<ReceiveReq>) -> Result<Response<ReceiveReply>, Status> {
        Ok(Response::new(ReceiveReply {}))
    }
    async fn nodes(&self, _: Request<NodesReq>) -> Result<Response<NodesReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn recover(&self, _: Request<RecoverReq>) -> Result<Response<RecoverReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

/// A `goim.logic.Logic` server on `listener` that counts what it gets.
fn serve(listener: TcpListener) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let accepted = counts.clone();
    let incoming = futures_util::stream::unfold(listener, move |l| {
        let accepted = accepted.clone();
        async move {
            let conn = l.accept().await.map(|(s, _)| {
                accepted.accepted.fetch_add(1, Ordering::SeqCst);
                s
            });
            Some((conn, l))
        }
    });
    let service = LogicServer::new(CountingLogic(counts.clone()));
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
    counts
}

/// Servers on each of `ips`, all on one port (a headless Service's pods share the port).
async fn servers(ips: &[&str]) -> (u16, Vec<SocketAddr>, Vec<Arc<Counts>>) {
    for _ in 0..20 {
        let first = TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == ips.len() {
            let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
            return (port, addrs, listeners.into_iter().map(serve).collect());
        }
    }
    panic!("no port free on every one of {ips:?}");
}

/// A resolver that answers what the test last set (`None`: fails), and counts its answers.
#[derive(Default)]
struct Script {
    answer: Mutex<Option<Vec<SocketAddr>>>,
    asked: Mutex<Vec<(String, u16)>>,
    resolutions: AtomicUsize,
}

impl Script {
    fn new(answer: Option<Vec<SocketAddr>>) -> Arc<Script> {
        Arc::new(Script { answer: Mutex::new(answer), ..Script::default() })
    }
    fn set(&self, answer: Option<Vec<SocketAddr>>) {
        *self.answer.lock().unwrap() = answer;
    }
    /// Waits until the resolver answered `n` more times.
    async fn answered(&self, n: usize) {
        let target = self.resolutions.load(Ordering::SeqCst) + n;
        let done = async {
            while self.resolutions.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(WAIT, done).await.expect("the resolver is asked every interval");
    }
}

#[async_trait]
impl Resolve for Script {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.asked.lock().unwrap().push((host.to_owned(), port));
        let answer = self.answer.lock().unwrap().clone();
        self.resolutions.fetch_add(1, Ordering::SeqCst);
        answer.ok_or_else(|| io::Error::other("no such host"))
    }
}

fn logic(addr: String, resolve: Arc<dyn Resolve>) -> GrpcLogic {
    let config = ClientConfig { addrs: vec![addr], resolve_interval: INTERVAL, ..ClientConfig::default() };
    GrpcLogic::with_resolver(&config, resolve).unwrap()
}

fn peers(logic: &GrpcLogic) -> Vec<String> {
    logic.shared.instances().iter().map(|i| i.peer.clone()).collect()
}

/// Waits until `logic` calls exactly `expected`.
async fn until_peers(logic: &GrpcLogic, expected: &[SocketAddr]) {
    let expected: Vec<String> = expected.iter().map(SocketAddr::to_string).collect();
    let done = async {
        while peers(logic) != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, done).await.is_err() {
        panic!("instances are {:?}, not {expected:?}", peers(logic));
    }
}

/// `n` connects with distinct keys, each of which must succeed.
async fn connects(logic: &GrpcLogic, n: usize) {
    for i in 0..n {
        let token = Bytes::from(format!("key-{i}"));
        let req = Connect { server: "comet-1".into(), cookie: String::new(), token };
        let session = logic.connect(req).await.expect("every call is served");
        assert_eq!(session.key, format!("key-{i}"));
    }
}

#[tokio::test]
async fn a_name_spreads_calls_over_every_address_it_resolves_to() {
    let (port, addrs, counts) = servers(&["127.0.0.1", "127.0.0.2"]).await;
    let script = Script::new(Some(addrs.clone()));
    let logic = logic(format!("logic.test:{port}"), script.clone());
    until_peers(&logic, &addrs).await;
    connects(&logic, 100).await;
    let (a, b) = (counts[0].connects(), counts[1].connects());
    eprintln!("100 calls: {a} to {}, {b} to {}", addrs[0], addrs[1]);
    assert_eq!(a + b, 100);
    assert!(a >= 30 && b >= 30, "calls went {a} / {b}");
    assert_eq!(script.asked.lock().unwrap()[0], ("logic.test".to_owned(), port));
}

#[tokio::test]
async fn a_vanished_address_gets_no_calls_and_a_new_one_does() {
    let (port, addrs, counts) = servers(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]).await;
    let script = Script::new(Some(addrs[..2].to_vec()));
    let logic = logic(format!("logic.test:{port}"), script.clone());
    until_peers(&logic, &addrs[..2]).await;
    connects(&logic, 20).await;
    assert!(counts[0].connects() > 0 && counts[1].connects() > 0);

    // The second pod goes away: after the next resolution, nothing reaches it.
    script.set(Some(vec![addrs[0]]));
    until_peers(&logic, &addrs[..1]).await;
    let (a, b) = (counts[0].connects(), counts[1].connects());
    connects(&logic, 50).await;
    assert_eq!(counts[1].connects(), b, "a removed address got calls");
    assert_eq!(counts[0].connects(), a + 50);

    // A third pod appears: it starts getting its share.
    script.set(Some(vec![addrs[0], addrs[2]]));
    until_peers(&logic, &[addrs[0], addrs[2]]).await;
    let (a, c) = (counts[0].connects(), counts[2].connects());
    connects(&logic, 100).await;
    let (a, c) = (counts[0].connects() - a, counts[2].connects() - c);
    eprintln!("after the change, 100 calls: {a} to {}, {c} to {}", addrs[0], addrs[2]);
    assert!(a >= 30 && c >= 30, "calls went {a} / {c}");
    assert_eq!(counts[1].connects(), b, "a removed address got calls");
    // The address that stayed kept its channel throughout: one connection, no redial.
    assert_eq!(counts[0].accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_resolution_keeps_the_last_addresses() {
    let (port, addrs, counts) = servers(&["127.0.0.1", "127.0.0.2"]).await;
    let script = Script::new(Some(addrs.clone()));
    let logic = logic(format!("logic.test:{port}"), script.clone());
    until_peers(&logic, &addrs).await;

    script.set(None);
    script.answered(2).await;
    assert_eq!(peers(&logic), addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>());
    connects(&logic, 100).await;
    let (a, b) = (counts[0].connects(), counts[1].connects());
    eprintln!("while resolving fails, 100 calls: {a} / {b}");
    assert!(a >= 30 && b >= 30, "calls went {a} / {b}");

    // Resolving again follows the answer again.
    script.set(Some(vec![addrs[1]]));
    until_peers(&logic, &addrs[1..]).await;
}

#[tokio::test]
async fn a_name_that_never_resolved_is_dialed_as_is_until_it_does() {
    let (port, addrs, counts) = servers(&["127.0.0.1", "127.0.0.2"]).await;
    // `localhost` so that the stand-in channel (which resolves on its own) reaches 127.0.0.1.
    let name = format!("localhost:{port}");
    let script = Script::new(None);
    let logic = logic(name.clone(), script.clone());
    script.answered(2).await;
    assert_eq!(peers(&logic), [name]);
    connects(&logic, 10).await;
    assert_eq!(counts[0].connects(), 10);

    script.set(Some(addrs.clone()));
    until_peers(&logic, &addrs).await;
    connects(&logic, 10).await;
    assert!(counts[1].connects() > 0, "the resolved addresses replace the name");
}

#[tokio::test]
async fn an_ip_address_is_never_resolved() {
    let script = Script::new(Some(vec![]));
    let logic = logic("127.0.0.1:3119".into(), script.clone());
    assert!(logic.shared._resolver.is_none(), "no resolver task for IP addresses");
    tokio::time::sleep(3 * INTERVAL).await;
    assert_eq!(script.resolutions.load(Ordering::SeqCst), 0);
    assert_eq!(peers(&logic), ["127.0.0.1:3119"]);
}

#[tokio::test]
async fn the_resolver_task_ends_with_the_last_clone() {
    let script = Script::new(Some(vec!["127.0.0.1:1".parse().unwrap()]));
    let logic = logic("logic.test:1".into(), script.clone());
    let clone = logic.clone();
    drop(logic);
    script.answered(2).await;
    assert_eq!(Arc::strong_count(&script), 2, "the task runs while a clone is left");
    drop(clone);
    // The task holds the resolver: it is released when the task ends.
    let ended = async {
        while Arc::strong_count(&script) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, ended).await.expect("the resolver task ended");
}

#[tokio::test]
async fn an_outage_is_warned_once() {
    let config = ClientConfig::default();
    let Target::Name(mut name) = Target::new(&config, "logic.test:3119").unwrap() else {
        panic!("a name is a name");
    };
    let script = Script::new(None);
    assert!(!name.refresh(&*script, &config).await);
    assert!(!name.failed(&"again"), "the second failure in a row is not warned");
    script.set(Some(vec!["127.0.0.1:3119".parse().unwrap()]));
    assert!(name.refresh(&*script, &config).await, "the first answer changes the set");
    assert!(!name.refresh(&*script, &config).await, "the same answer changes nothing");
    assert!(name.failed(&"down"), "a new outage is warned");
}

#[tokio::test]
async fn ip_literals_are_fixed_and_names_are_resolved() {
    let config = ClientConfig::default();
    for addr in ["127.0.0.1:3119", "[::1]:3119", "http://10.0.0.1:3119"] {
        assert!(!Target::new(&config, addr).unwrap().is_named(), "{addr}");
    }
    for (addr, host, port) in [
        ("logic:3119", "logic", 3119),
        ("http://goim-logic-grpc.ns.svc:3119", "goim-logic-grpc.ns.svc", 3119),
    ] {
        let Target::Name(name) = Target::new(&config, addr).unwrap() else {
            panic!("{addr} is a name");
        };
        assert_eq!((name.host.as_str(), name.port), (host, port));
    }
}

#[tokio::test]
async fn localhost_reaches_a_real_logic_through_the_system_resolver() {
    let (port, addrs, counts) = servers(&["127.0.0.1"]).await;
    let config = ClientConfig {
        addrs: vec![format!("localhost:{port}")],
        resolve_interval: INTERVAL,
        ..ClientConfig::default()
    };
    let logic = GrpcLogic::new(&config).unwrap();
    // localhost may also resolve to ::1, where nothing listens: failover covers it.
    let done = async {
        while !peers(&logic).contains(&addrs[0].to_string()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, done).await.expect("localhost resolves to 127.0.0.1");
    connects(&logic, 20).await;
    assert_eq!(counts[0].connects(), 20);
}
