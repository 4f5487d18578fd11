//! comet's gRPC boundary over real loopback sockets: job's view (a tonic client of
//! `goim.comet.Comet` whose pushes reach a real TCP client) and logic's (comet's `GrpcLogic`
//! client against a stand-in `goim.logic.Logic` server).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use goim_api::frame::{decode_stream, encode_push};
use goim_api::pb::comet::comet_client::CometClient;
use goim_api::pb::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq, RoomsReq};
use goim_api::pb::logic::logic_server::{self, LogicServer};
use goim_api::pb::logic::{
    ConnectReply, ConnectReq, DisconnectReply, DisconnectReq, HeartbeatReply, HeartbeatReq, NodesReply,
    NodesReq, OnlineReply, OnlineReq, ReceiveReply, ReceiveReq, RecoverReply, RecoverReq,
};
use goim_api::pb::protocol::Proto;
use goim_api::{Connect, Frame, Online, Op, Presence, Session, Uplink};
use goim_comet::logic::{ClientConfig, Error as LogicError, GrpcLogic};
use goim_comet::{Comet, Config, Listeners, Logic, Metrics};
use goim_kit::grpc::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

const WAIT: Duration = Duration::from_secs(5);

/// A logic that accepts any token of the form `key|room|op,op`.
struct TokenLogic;

#[async_trait]
impl Logic for TokenLogic {
    async fn connect(&self, req: Connect) -> Result<Session, LogicError> {
        let token = String::from_utf8_lossy(&req.token).into_owned();
        let mut parts = token.split('|');
        let key = parts.next().unwrap_or_default().to_owned();
        let room = parts.next().unwrap_or_default().to_owned();
        let accepts = parts.next().unwrap_or_default().split(',').filter_map(|o| o.parse().ok()).collect();
        Ok(Session { mid: 1, key, room, accepts, heartbeat: Duration::from_secs(60) })
    }
    async fn disconnect(&self, _: Presence) -> Result<(), LogicError> {
        Ok(())
    }
    async fn heartbeat(&self, _: Presence) -> Result<(), LogicError> {
        Ok(())
    }
    async fn renew_online(&self, _: Online) -> Result<HashMap<String, i32>, LogicError> {
        Ok(HashMap::new())
    }
    async fn receive(&self, _: Uplink) -> Result<(), LogicError> {
        Ok(())
    }
}

struct CometServer {
    comet: Comet,
    tcp: SocketAddr,
    client: CometClient<Channel>,
}

async fn start_comet() -> CometServer {
    let mut config = Config { server_id: "comet-test".into(), ..Config::default() };
    config.tcp.bind = vec!["127.0.0.1:0".into()];
    config.websocket.bind = Vec::new();
    let listeners = Listeners::bind(&config).await.unwrap();
    let tcp = listeners.tcp[0].local_addr().unwrap();
    let comet = Comet::new(config, Arc::new(TokenLogic), Arc::new(Metrics::default()));
    comet.start(listeners);
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let served = comet.clone();
    tokio::spawn(async move {
        goim_comet::grpc::serve(grpc, served, &ServerConfig::default(), CancellationToken::new()).await
    });
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    CometServer { comet, tcp, client: CometClient::new(channel) }
}

/// A raw TCP client that has passed auth.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn login(addr: SocketAddr, token: &str) -> Client {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let auth =
            Frame { ver: 1, op: Op::Auth.code(), seq: 1, body: Bytes::copy_from_slice(token.as_bytes()) };
        stream.write_all(&auth.to_bytes()).await.unwrap();
        let mut c = Client { stream, buf: BytesMut::new() };
        assert_eq!(c.recv().await.op, Op::AuthReply.code());
        c
    }

    async fn recv(&mut self) -> Frame {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(f) = decode_stream(&mut self.buf, 1 << 20).unwrap() {
                    return f;
                }
                assert_ne!(
                    self.stream.read_buf(&mut self.buf).await.unwrap(),
                    0,
                    "comet closed the connection"
                );
            }
        })
        .await
        .expect("a packet within the wait")
    }
}

fn raw(packets: Bytes) -> Option<Proto> {
    Some(Proto { ver: 1, op: Op::Raw.code(), seq: 0, body: packets })
}

async fn wait_for_rooms(comet: &Comet, n: usize) {
    for _ in 0..250 {
        if comet.rooms().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("comet never held {n} rooms");
}

#[tokio::test]
async fn a_goim_style_push_msg_reaches_the_tcp_client_holding_the_key() {
    let mut s = start_comet().await;
    let mut c = Client::login(s.tcp, "k1||1000").await;
    // goim's job: the packet {ver 1, op, seq 0, body} wrapped in an op-9 proto.
    let req = PushMsgReq {
        keys: vec!["k1".into(), "gone".into()],
        proto_op: 1000,
        proto: raw(encode_push(1000, b"hello")),
    };
    s.client.push_msg(req).await.unwrap();
    let f = c.recv().await;
    assert_eq!((f.ver, f.op, f.seq, &f.body[..]), (1, 1000, 0, &b"hello"[..]));
}

#[tokio::test]
async fn a_push_msg_is_filtered_by_the_connections_accepts() {
    let mut s = start_comet().await;
    let mut c = Client::login(s.tcp, "k2||1001").await;
    let skip = PushMsgReq { keys: vec!["k2".into()], proto_op: 1000, proto: raw(encode_push(1000, b"no")) };
    s.client.push_msg(skip).await.unwrap();
    let take = PushMsgReq { keys: vec!["k2".into()], proto_op: 1001, proto: raw(encode_push(1001, b"yes")) };
    s.client.push_msg(take).await.unwrap();
    assert_eq!(&c.recv().await.body[..], b"yes");
}

#[tokio::test]
async fn push_msg_without_keys_or_proto_is_an_invalid_argument() {
    let mut s = start_comet().await;
    let no_keys = PushMsgReq { keys: Vec::new(), proto_op: 1000, proto: raw(encode_push(1000, b"x")) };
    assert_eq!(s.client.push_msg(no_keys).await.unwrap_err().code(), Code::InvalidArgument);
    let no_proto = PushMsgReq { keys: vec!["k".into()], proto_op: 1000, proto: None };
    assert_eq!(s.client.push_msg(no_proto).await.unwrap_err().code(), Code::InvalidArgument);
    let garbage =
        PushMsgReq { keys: vec!["k".into()], proto_op: 1000, proto: raw(Bytes::from_static(b"garbage")) };
    assert_eq!(s.client.push_msg(garbage).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_room_batch_reaches_every_member_in_order_and_rooms_lists_it() {
    let mut s = start_comet().await;
    let mut a = Client::login(s.tcp, "ra|live://9|").await;
    let mut b = Client::login(s.tcp, "rb|live://9|").await;
    wait_for_rooms(&s.comet, 1).await;
    let mut batch = encode_push(1000, b"one").to_vec();
    batch.extend_from_slice(&encode_push(1000, b"two"));
    let req = BroadcastRoomReq { room_id: "live://9".into(), proto: raw(Bytes::from(batch)) };
    s.client.broadcast_room(req).await.unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(&c.recv().await.body[..], b"one");
        assert_eq!(&c.recv().await.body[..], b"two");
    }
    let rooms = s.client.rooms(RoomsReq {}).await.unwrap().into_inner().rooms;
    assert_eq!(rooms, HashMap::from([("live://9".to_string(), true)]));
    let no_room = BroadcastRoomReq { room_id: String::new(), proto: raw(encode_push(1, b"x")) };
    assert_eq!(s.client.broadcast_room(no_room).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_broadcast_reaches_every_connection_that_accepts_the_op() {
    let mut s = start_comet().await;
    let mut a = Client::login(s.tcp, "ba||1000").await;
    let mut b = Client::login(s.tcp, "bb||1000,1002").await;
    let req = BroadcastReq { proto_op: 1000, proto: raw(encode_push(1000, b"all")), speed: 0 };
    s.client.broadcast(req).await.unwrap();
    assert_eq!(&a.recv().await.body[..], b"all");
    assert_eq!(&b.recv().await.body[..], b"all");
    let no_proto = BroadcastReq { proto_op: 1000, proto: None, speed: 0 };
    assert_eq!(s.client.broadcast(no_proto).await.unwrap_err().code(), Code::InvalidArgument);
}

// --- comet → logic over gRPC, against a stand-in logic server.

/// What the stand-in logic saw.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    gzip_renewals: AtomicUsize,
}

struct FakeLogic {
    seen: Arc<Seen>,
    /// How long every call takes.
    delay: Duration,
}

#[tonic::async_trait]
impl logic_server::Logic for FakeLogic {
    async fn connect(&self, req: Request<ConnectReq>) -> Result<Response<ConnectReply>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let req = req.into_inner();
        if &req.token[..] != b"good" {
            return Err(Status::unauthenticated("bad signature"));
        }
        Ok(Response::new(ConnectReply {
            mid: 5,
            key: "k5".into(),
            room_id: "live://5".into(),
            accepts: vec![1000],
            heartbeat: 30_000_000_000,
        }))
    }
    async fn disconnect(&self, _: Request<DisconnectReq>) -> Result<Response<DisconnectReply>, Status> {
        Err(Status::unavailable("redis down"))
    }
    async fn heartbeat(&self, _: Request<HeartbeatReq>) -> Result<Response<HeartbeatReply>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(HeartbeatReply {}))
    }
    async fn renew_online(&self, req: Request<OnlineReq>) -> Result<Response<OnlineReply>, Status> {
        if req.metadata().get("grpc-encoding").is_some_and(|v| v == "gzip") {
            self.seen.gzip_renewals.fetch_add(1, Ordering::SeqCst);
        }
        let req = req.into_inner();
        let mut all = req.room_count;
        all.insert("conns".into(), req.conn_count as i32);
        Ok(Response::new(OnlineReply { all_room_count: all, ..Default::default() }))
    }
    async fn receive(&self, _: Request<ReceiveReq>) -> Result<Response<ReceiveReply>, Status> {
        Ok(Response::new(ReceiveReply {}))
    }
    async fn nodes(&self, _: Request<NodesReq>) -> Result<Response<NodesReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
    /// As goim's Go logic, which has no `Recover`.
    async fn recover(&self, _: Request<RecoverReq>) -> Result<Response<RecoverReply>, Status> {
        Err(Status::unimplemented("goim has no Recover"))
    }
}

async fn start_logic(delay: Duration) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = LogicServer::new(FakeLogic { seen: seen.clone(), delay })
        .accept_compressed(CompressionEncoding::Gzip);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, seen)
}

fn client(addrs: Vec<String>, timeout: Duration) -> GrpcLogic {
    GrpcLogic::new(&ClientConfig { addrs, timeout, ..ClientConfig::default() }).unwrap()
}

fn connect(token: &'static [u8]) -> Connect {
    Connect { server: "comet-1".into(), cookie: String::new(), token: Bytes::from_static(token) }
}

#[tokio::test]
async fn grpc_logic_connect_returns_the_session_and_maps_unauthenticated_to_rejected() {
    let (addr, _) = start_logic(Duration::ZERO).await;
    let logic = client(vec![addr], Duration::from_secs(2));
    let session = logic.connect(connect(b"good")).await.unwrap();
    assert_eq!((session.mid, session.key.as_str(), session.room.as_str()), (5, "k5", "live://5"));
    assert_eq!(session.heartbeat, Duration::from_secs(30));
    assert_eq!(logic.connect(connect(b"forged")).await, Err(LogicError::Rejected("bad signature".into())));
}

#[tokio::test]
async fn a_logic_without_recover_like_goims_means_no_positions() {
    let (addr, _) = start_logic(Duration::ZERO).await;
    let logic = client(vec![addr], Duration::from_secs(2));
    let req = goim_api::RecoverRequest {
        mid: 5,
        room: "live://5".into(),
        room_since: Some(goim_api::Position::new(3, 9)),
        user_since: None,
    };
    assert_eq!(logic.recover(req).await, Ok(goim_api::Recovered::default()));
}

#[tokio::test]
async fn grpc_logic_errors_other_than_auth_are_unavailable() {
    let (addr, _) = start_logic(Duration::ZERO).await;
    let logic = client(vec![addr], Duration::from_secs(2));
    let p = Presence { mid: 1, key: "k".into(), server: "c".into() };
    assert!(matches!(logic.disconnect(p).await, Err(LogicError::Unavailable(_))));
}

#[tokio::test]
async fn grpc_logic_sends_renew_online_gzip_compressed() {
    let (addr, seen) = start_logic(Duration::ZERO).await;
    let logic = client(vec![addr], Duration::from_secs(2));
    let online = Online {
        server: "comet-1".into(),
        room_count: HashMap::from([("live://1".into(), 4)]),
        conn_count: 9,
        ip_count: 2,
    };
    let all = logic.renew_online(online).await.unwrap();
    assert_eq!(all, HashMap::from([("live://1".into(), 4), ("conns".into(), 9)]));
    assert_eq!(seen.gzip_renewals.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn grpc_logic_gives_up_at_its_deadline() {
    let (addr, _) = start_logic(Duration::from_secs(30)).await;
    let logic = client(vec![addr], Duration::from_millis(200));
    let p = Presence { mid: 1, key: "k".into(), server: "c".into() };
    let r = tokio::time::timeout(WAIT, logic.heartbeat(p)).await.expect("the call's own deadline ends it");
    assert!(matches!(r, Err(LogicError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn grpc_logic_with_nothing_listening_is_unavailable() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let logic = client(vec![addr], Duration::from_millis(500));
    assert!(matches!(logic.connect(connect(b"good")).await, Err(LogicError::Unavailable(_))));
}

#[tokio::test]
async fn grpc_logic_spreads_calls_over_every_address() {
    let (a, seen_a) = start_logic(Duration::ZERO).await;
    let (b, seen_b) = start_logic(Duration::ZERO).await;
    let logic = client(vec![a, b], Duration::from_secs(2));
    for _ in 0..40 {
        logic.connect(connect(b"good")).await.unwrap();
    }
    let (na, nb) = (seen_a.calls.load(Ordering::SeqCst), seen_b.calls.load(Ordering::SeqCst));
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "calls went {na} / {nb}");
}

#[tokio::test]
async fn grpc_logic_skips_an_instance_that_is_down_and_uses_it_once_it_is_up() {
    // The first instance is not listening yet (a comet that started before one of its logics).
    let late = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let late_addr = late.local_addr().unwrap();
    drop(late);
    let (up, seen_up) = start_logic(Duration::ZERO).await;
    let logic = client(vec![late_addr.to_string(), up], Duration::from_secs(2));
    for _ in 0..10 {
        logic.connect(connect(b"good")).await.expect("the live instance serves every call");
    }
    assert_eq!(seen_up.calls.load(Ordering::SeqCst), 10);

    // The late instance comes up on its address: calls reach it too, without a new client.
    let listener = TcpListener::bind(late_addr).await.unwrap();
    let seen_late = Arc::new(Seen::default());
    let service = LogicServer::new(FakeLogic { seen: seen_late.clone(), delay: Duration::ZERO });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let reached = async {
        for _ in 0..200 {
            logic.connect(connect(b"good")).await.expect("every call is served");
            if seen_late.calls.load(Ordering::SeqCst) > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(reached.await, "the instance that came up late never got a call");
}
