//! goim's `goim.logic.Logic` over a real loopback socket: a tonic client, as a comet (ours or
//! goim's Go comet) would call it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goim_api::pb::logic::logic_client::LogicClient;
use goim_api::pb::logic::{ConnectReq, DisconnectReq, HeartbeatReq, NodesReq, OnlineReq, ReceiveReq};
use goim_api::pb::protocol::Proto;
use goim_kit::grpc::ServerConfig;
use goim_logic::config::AuthMode;
use goim_logic::{Config, Logic, MemoryStore, queue};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

struct Server {
    client: LogicClient<Channel>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start_with(logic: Logic) -> Server {
    let logic = Arc::new(logic);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let served = tokio::spawn(async move {
        goim_logic::grpc::serve(listener, logic, &ServerConfig::default(), stop).await
    });
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    Server { client: LogicClient::new(channel), shutdown, served }
}

fn logic(config: Config) -> Logic {
    let (queue, _rx) = queue::Memory::channel(16, Duration::from_millis(100));
    Logic::new(config, Arc::new(MemoryStore::default()), Arc::new(queue)).unwrap()
}

fn json_config() -> Config {
    let mut config = Config::default();
    config.auth.mode = AuthMode::Json;
    config
}

async fn start() -> Server {
    start_with(logic(json_config())).await
}

fn connect_req(token: &str) -> ConnectReq {
    ConnectReq {
        server: "comet-1".into(),
        cookie: String::new(),
        token: Bytes::copy_from_slice(token.as_bytes()),
    }
}

#[tokio::test]
async fn connect_with_a_good_token_returns_the_session_and_a_go_duration_heartbeat() {
    let mut s = start().await;
    let token = r#"{"mid":7,"key":"k7","room_id":"live://1","platform":"web","accepts":[1000,1001]}"#;
    let reply = s.client.connect(connect_req(token)).await.unwrap().into_inner();
    assert_eq!((reply.mid, reply.key.as_str(), reply.room_id.as_str()), (7, "k7", "live://1"));
    assert_eq!(reply.accepts, [1000, 1001]);
    // goim's default: node.heartbeat 4m × heartbeat_max 2 = 8 minutes, in nanoseconds.
    assert_eq!(reply.heartbeat, 8 * 60 * 1_000_000_000);
}

#[tokio::test]
async fn connect_with_a_bad_token_is_unauthenticated_with_the_reason() {
    let mut s = start().await;
    let err = s.client.connect(connect_req("not json")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "malformed token");
}

#[tokio::test]
async fn connect_with_an_unsigned_token_is_unauthenticated_under_jwt() {
    let mut config = Config::default();
    config.auth.jwt.secret = Some("s3cret".into());
    let mut s = start_with(logic(config)).await;
    let err = s.client.connect(connect_req(r#"{"mid":1}"#)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn gzip_compressed_renew_online_is_accepted_and_sums_rooms() {
    let s = start().await;
    let mut gzip = s.client.clone().send_compressed(CompressionEncoding::Gzip);
    let report = |server: &str, n: i32| OnlineReq {
        server: server.into(),
        room_count: HashMap::from([("live://1".to_string(), n)]),
        conn_count: n.into(),
        ip_count: 1,
    };
    gzip.renew_online(report("comet-a", 2)).await.unwrap();
    let all = gzip.renew_online(report("comet-b", 3)).await.unwrap().into_inner().all_room_count;
    assert_eq!(all, HashMap::from([("live://1".to_string(), 5)]));
}

#[tokio::test]
async fn renew_online_without_a_server_is_an_invalid_argument() {
    let mut s = start().await;
    let err = s.client.renew_online(OnlineReq::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn disconnect_reports_whether_the_mapping_existed() {
    let mut s = start().await;
    s.client.connect(connect_req(r#"{"mid":3,"key":"k3"}"#)).await.unwrap();
    s.client.heartbeat(HeartbeatReq { mid: 3, key: "k3".into(), server: "comet-1".into() }).await.unwrap();
    let req = DisconnectReq { mid: 3, key: "k3".into(), server: "comet-1".into() };
    assert!(s.client.disconnect(req.clone()).await.unwrap().into_inner().has);
    assert!(!s.client.disconnect(req).await.unwrap().into_inner().has);
}

#[tokio::test]
async fn receive_needs_a_proto() {
    let mut s = start().await;
    let proto = Proto { ver: 1, op: 4, seq: 1, body: Bytes::from_static(b"up") };
    s.client.receive(ReceiveReq { mid: 1, proto: Some(proto), key: "k".into() }).await.unwrap();
    let err = s.client.receive(ReceiveReq { mid: 1, proto: None, key: "k".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_call_past_its_deadline_fails_with_deadline_exceeded_not_a_hang() {
    let mut s = start().await;
    let mut req = Request::new(connect_req(r#"{"mid":1}"#));
    req.set_timeout(Duration::from_nanos(1));
    let err = s.client.connect(req).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
}

struct Ready(Vec<String>);

impl goim_logic::comet::CometDirectory for Ready {
    fn ready(&self) -> Vec<String> {
        self.0.clone()
    }
    fn listed(&self) -> Vec<String> {
        self.0.clone()
    }
}

#[tokio::test]
async fn nodes_offer_only_the_comets_discovery_calls_ready() {
    let logic = logic(json_config()).with_comets(Arc::new(Ready(vec!["comet-a".into()])));
    let mut s = start_with(logic).await;
    for server in ["comet-a", "comet-b"] {
        let report = OnlineReq { server: server.into(), conn_count: 1, ..Default::default() };
        s.client.renew_online(report).await.unwrap();
    }
    let req = NodesReq { platform: "web".into(), client_ip: "10.0.0.1".into() };
    let nodes = s.client.nodes(req).await.unwrap().into_inner();
    assert_eq!(nodes.nodes, ["comet-a.goim.io"]);
    assert_eq!((nodes.tcp_port, nodes.ws_port, nodes.heartbeat), (3101, 3102, 240));
    assert_eq!(nodes.backoff.unwrap().max_delay, 300);
}

#[tokio::test]
async fn without_discovery_every_reporting_comet_is_offered() {
    let mut s = start().await;
    for server in ["comet-a", "comet-b"] {
        let report = OnlineReq { server: server.into(), conn_count: 1, ..Default::default() };
        s.client.renew_online(report).await.unwrap();
    }
    let req = NodesReq { platform: "app".into(), client_ip: String::new() };
    let mut nodes = s.client.nodes(req).await.unwrap().into_inner().nodes;
    nodes.sort();
    assert_eq!(nodes, ["comet-a", "comet-b"]);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = start().await;
    s.shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), s.served).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}
