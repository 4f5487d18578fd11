use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::{Connect, Frame, Online, Presence, PushKind, PushMsg, Uplink};
use tokio::sync::mpsc;

use super::*;
use crate::config::AuthMode;
use crate::store::MemoryStore;

struct Fixture {
    logic: Logic,
    store: Arc<MemoryStore>,
    rx: mpsc::Receiver<PushMsg>,
}

fn json_config() -> Config {
    let mut config = Config::default();
    config.auth.mode = AuthMode::Json;
    config
}

fn fixture_with(config: Config, store: MemoryStore) -> Fixture {
    let store = Arc::new(store);
    let (queue, rx) = queue::Memory::channel(16, Duration::from_millis(100));
    let logic = Logic::new(config, store.clone(), Arc::new(queue)).unwrap();
    Fixture { logic, store, rx }
}

fn fixture() -> Fixture {
    fixture_with(json_config(), MemoryStore::default())
}

/// goim's exact messages: positions off.
fn goim_fixture() -> Fixture {
    let mut config = json_config();
    config.history.enabled = false;
    fixture_with(config, MemoryStore::default())
}

fn connect_req(server: &str, token: &str) -> Connect {
    Connect { server: server.into(), cookie: String::new(), token: Bytes::copy_from_slice(token.as_bytes()) }
}

fn online(server: &str, rooms: &[(&str, i32)], conns: i64) -> Online {
    Online {
        server: server.into(),
        room_count: rooms.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        conn_count: conns,
        ip_count: conns / 2,
    }
}

/// A store whose every call fails, as an unreachable Redis would.
struct DownStore;

#[async_trait]
impl Store for DownStore {
    async fn add_mapping(&self, _: i64, _: &str, _: &str) -> Result<(), store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn expire_mapping(&self, _: i64, _: &str, _: &str) -> Result<bool, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn del_mapping(&self, _: i64, _: &str, _: &str) -> Result<bool, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn servers_by_keys(&self, _: &[String]) -> Result<Vec<Option<String>>, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn keys_by_mids(&self, _: &[i64]) -> Result<(HashMap<String, String>, Vec<i64>), store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn add_server_online(&self, _: &str, _: &Online, _: SystemTime) -> Result<(), store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn server_online(&self, _: &str) -> Result<Option<(Online, SystemTime)>, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn del_server_online(&self, _: &str) -> Result<(), store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn servers(&self) -> Result<Vec<String>, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn epoch(&self) -> Result<String, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
    async fn drop_server(&self, _: &str, _: usize) -> Result<store::Dropped, store::Error> {
        Err(store::Error::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn connect_returns_the_token_identity_and_goims_heartbeat_and_maps_the_key() {
    let f = fixture();
    let token = r#"{"mid":42,"key":"dev-1","room_id":"live://1000","platform":"web","accepts":[1000,1001]}"#;
    let session = f.logic.connect(connect_req("comet-a", token)).await.unwrap();
    assert_eq!(session.mid, 42);
    assert_eq!(session.key, "dev-1");
    assert_eq!(session.room, "live://1000");
    assert_eq!(session.accepts, vec![1000, 1001]);
    assert_eq!(session.heartbeat, Duration::from_secs(8 * 60));
    assert_eq!(f.store.servers_by_keys(&["dev-1".into()]).await.unwrap(), vec![Some("comet-a".into())]);
    assert_eq!(f.store.keys_by_mids(&[42]).await.unwrap().1, vec![42]);
}

#[tokio::test]
async fn connect_with_a_bad_token_fails_and_maps_nothing() {
    let f = fixture();
    let err = f.logic.connect(connect_req("comet-a", "not json")).await.unwrap_err();
    assert_eq!(err, Error::Auth(auth::Error::Malformed));
    assert_eq!(f.store.mapping_count(), 0);
}

#[tokio::test]
async fn connect_succeeds_when_the_store_is_down() {
    let (queue, _rx) = queue::Memory::channel(1, Duration::from_millis(10));
    let logic = Logic::new(json_config(), Arc::new(DownStore), Arc::new(queue)).unwrap();
    let session = logic.connect(connect_req("comet-a", r#"{"mid":1,"key":"k"}"#)).await.unwrap();
    assert_eq!(session.key, "k");
    // But the calls that need the store report its failure.
    let p = Presence { mid: 1, key: "k".into(), server: "comet-a".into() };
    assert!(matches!(logic.heartbeat(p.clone()).await, Err(Error::Store(_))));
    assert!(matches!(logic.disconnect(p).await, Err(Error::Store(_))));
    assert!(matches!(logic.push_keys(1, vec!["k".into()], Bytes::new()).await, Err(Error::Store(_))));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_re_adds_a_mapping_that_expired() {
    let f = fixture_with(json_config(), MemoryStore::new(Duration::from_secs(60)));
    f.logic.connect(connect_req("comet-a", r#"{"mid":5,"key":"k"}"#)).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(f.store.mapping_count(), 0);
    f.logic.heartbeat(Presence { mid: 5, key: "k".into(), server: "comet-a".into() }).await.unwrap();
    assert_eq!(f.store.servers_by_keys(&["k".into()]).await.unwrap(), vec![Some("comet-a".into())]);
    assert_eq!(f.store.keys_by_mids(&[5]).await.unwrap().1, vec![5]);
}

#[tokio::test]
async fn disconnect_deletes_the_mapping_once() {
    let f = fixture();
    f.logic.connect(connect_req("comet-a", r#"{"mid":5,"key":"k"}"#)).await.unwrap();
    let p = Presence { mid: 5, key: "k".into(), server: "comet-a".into() };
    assert!(f.logic.disconnect(p.clone()).await.unwrap());
    assert!(!f.logic.disconnect(p).await.unwrap());
    assert_eq!(f.store.mapping_count(), 0);
}

#[tokio::test]
async fn renew_online_returns_room_counts_summed_over_comets_including_this_report() {
    let f = fixture();
    let first = f.logic.renew_online(online("comet-a", &[("live://1", 2)], 2)).await.unwrap();
    assert_eq!(first, HashMap::from([("live://1".to_string(), 2)]));
    let second =
        f.logic.renew_online(online("comet-b", &[("live://1", 3), ("live://2", 1)], 4)).await.unwrap();
    assert_eq!(second, HashMap::from([("live://1".to_string(), 5), ("live://2".to_string(), 1)]));
    // comet-a's next report (a new connection) shows at once.
    let third = f.logic.renew_online(online("comet-a", &[("live://1", 3)], 3)).await.unwrap();
    assert_eq!(third["live://1"], 6);
    assert_eq!(f.logic.online_total().await.unwrap(), Total { conn_count: 7, ip_count: 3 });
}

/// Found by the `grpc_handlers` fuzz target: two comets each reporting i32::MAX members in one
/// room overflowed the sum (a panic here, a negative count in release builds).
#[tokio::test]
async fn room_and_total_counts_saturate_and_ignore_negative_reports() {
    let f = fixture();
    f.logic.renew_online(online("comet-a", &[("live://r", i32::MAX)], i64::MAX)).await.unwrap();
    let rooms = f.logic.renew_online(online("comet-b", &[("live://r", i32::MAX)], i64::MAX)).await.unwrap();
    assert_eq!(rooms["live://r"], i32::MAX);
    let rooms =
        f.logic.renew_online(online("comet-c", &[("live://r", -5), ("live://s", -1)], -9)).await.unwrap();
    assert_eq!(rooms["live://r"], i32::MAX);
    assert_eq!(rooms["live://s"], 0);
    let total = f.logic.online_total().await.unwrap();
    assert_eq!(total.conn_count, i64::MAX);
    assert!(total.ip_count >= 0);
}

#[tokio::test]
async fn a_comet_that_stopped_reporting_is_left_out_and_its_record_dropped() {
    let f = fixture();
    let old = SystemTime::now() - Duration::from_secs(31);
    f.store.add_server_online("comet-dead", &online("comet-dead", &[("live://1", 9)], 9), old).await.unwrap();
    let rooms = f.logic.renew_online(online("comet-a", &[("live://1", 1)], 1)).await.unwrap();
    assert_eq!(rooms["live://1"], 1);
    assert_eq!(f.store.server_online("comet-dead").await.unwrap(), None);
    assert_eq!(f.logic.online_total().await.unwrap().conn_count, 1);
}

#[tokio::test]
async fn online_top_filters_by_prefix_sorts_by_count_and_truncates() {
    let f = fixture();
    let rooms = [("live://a", 5), ("live://b", 9), ("liveshow://c", 7), ("chat://d", 100), ("live://e", 1)];
    f.logic.renew_online(online("comet-a", &rooms, 10)).await.unwrap();
    let top = f.logic.online_top("live", 3).await.unwrap();
    let got: Vec<(&str, i32)> = top.iter().map(|t| (t.room_id.as_str(), t.count)).collect();
    assert_eq!(got, [("b", 9), ("c", 7), ("a", 5)]);
    assert!(f.logic.online_top("none", 3).await.unwrap().is_empty());
}

#[tokio::test]
async fn online_room_gives_zero_for_unknown_rooms() {
    let f = fixture();
    f.logic.renew_online(online("comet-a", &[("live://1000", 4)], 4)).await.unwrap();
    let got = f.logic.online_room("live", &["1000".into(), "2000".into()]).await.unwrap();
    assert_eq!(got, BTreeMap::from([("1000".to_string(), 4), ("2000".to_string(), 0)]));
}

#[tokio::test]
async fn queries_serve_the_last_view_when_the_store_fails_after_a_success() {
    let f = fixture();
    f.logic.renew_online(online("comet-a", &[("live://1", 4)], 4)).await.unwrap();
    // Without a cached view a failing store is an error.
    let (queue, _rx) = queue::Memory::channel(1, Duration::from_millis(10));
    let down = Logic::new(json_config(), Arc::new(DownStore), Arc::new(queue)).unwrap();
    assert!(matches!(down.online_total().await, Err(Error::Store(_))));
    assert_eq!(f.logic.online_total().await.unwrap().conn_count, 4);
}

#[tokio::test]
async fn nodes_weighted_lists_the_five_least_loaded_comets() {
    let f = fixture();
    for (i, conns) in [50, 10, 30, 20, 60, 40].into_iter().enumerate() {
        f.logic.renew_online(online(&format!("comet-{i}"), &[], conns)).await.unwrap();
    }
    let web = f.logic.nodes_weighted("web", "1.2.3.4").await.unwrap();
    assert_eq!(
        web.nodes,
        ["comet-1.goim.io", "comet-3.goim.io", "comet-2.goim.io", "comet-5.goim.io", "comet-0.goim.io"]
    );
    let other = f.logic.nodes_weighted("ios", "").await.unwrap();
    assert_eq!(other.nodes, ["comet-1", "comet-3", "comet-2", "comet-5", "comet-0"]);
}

#[tokio::test]
async fn nodes_weighted_has_goims_json_shape_and_falls_back_to_the_default_domain() {
    let f = fixture();
    let nodes = f.logic.nodes_weighted("web", "").await.unwrap();
    assert_eq!(
        serde_json::to_string(&nodes).unwrap(),
        r#"{"domain":"conn.goim.io","tcp_port":3101,"ws_port":3102,"wss_port":3103,"heartbeat":240,"nodes":["conn.goim.io"],"backoff":{"max_delay":300,"base_delay":3,"factor":1.8,"jitter":0.3},"heartbeat_max":2}"#
    );
    let mut config = json_config();
    config.node.wss_port = 0;
    let f = fixture_with(config, MemoryStore::default());
    let json = serde_json::to_string(&f.logic.nodes_weighted("", "").await.unwrap()).unwrap();
    assert!(!json.contains("wss_port"), "zero fields are omitted like Go's omitempty: {json}");
}

#[tokio::test]
async fn nodes_instances_describe_each_live_comet() {
    let f = fixture();
    f.logic.renew_online(online("comet-b", &[], 8)).await.unwrap();
    f.logic.renew_online(online("comet-a", &[], 2)).await.unwrap();
    let instances = f.logic.nodes_instances().await.unwrap();
    let hosts: Vec<&str> = instances.iter().map(|i| i.hostname.as_str()).collect();
    assert_eq!(hosts, ["comet-a", "comet-b"]);
    let json = serde_json::to_value(&instances[1]).unwrap();
    assert_eq!(json["appid"], "goim.comet");
    assert_eq!(json["metadata"], serde_json::json!({"conn_count": "8", "ip_count": "4"}));
    let ts = json["latest_timestamp"].as_i64().unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i64;
    assert!((now - ts).abs() < 5_000_000_000, "latest_timestamp is the report time in ns");
}

#[tokio::test]
async fn push_keys_publishes_one_message_per_comet_and_skips_unknown_keys() {
    let mut f = fixture();
    for (key, server) in [("k1", "comet-a"), ("k2", "comet-b"), ("k3", "comet-a")] {
        f.logic.connect(connect_req(server, &format!(r#"{{"key":"{key}"}}"#))).await.unwrap();
    }
    let keys = ["k1", "k2", "gone", "k3", "k1", ""].map(String::from).to_vec();
    let published = f.logic.push_keys(1000, keys, Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(published, 2);
    let a = f.rx.recv().await.unwrap();
    let b = f.rx.recv().await.unwrap();
    assert_eq!(
        a,
        PushMsg::keys("comet-a", vec!["k1".into(), "k3".into()], 1000, Bytes::from_static(b"hello"))
    );
    assert_eq!(b, PushMsg::keys("comet-b", vec!["k2".into()], 1000, Bytes::from_static(b"hello")));
    assert_eq!(a.partition_key(), "k1");
}

#[tokio::test]
async fn push_keys_without_keys_is_a_bad_request() {
    let f = fixture();
    let err = f.logic.push_keys(1000, Vec::new(), Bytes::new()).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
}

#[tokio::test]
async fn push_mids_reaches_every_device_of_every_user() {
    let mut f = goim_fixture();
    for (mid, key, server) in
        [(1, "phone", "comet-b"), (1, "web", "comet-a"), (2, "tab", "comet-a"), (3, "x", "c")]
    {
        let token = format!(r#"{{"mid":{mid},"key":"{key}"}}"#);
        f.logic.connect(connect_req(server, &token)).await.unwrap();
    }
    assert_eq!(f.logic.push_mids(7, vec![1, 2, 99], Bytes::from_static(b"m")).await.unwrap(), 2);
    let a = f.rx.recv().await.unwrap();
    let b = f.rx.recv().await.unwrap();
    assert_eq!((a.server.as_str(), a.keys.clone()), ("comet-a", vec!["tab".to_string(), "web".to_string()]));
    assert_eq!((b.server.as_str(), b.keys.clone()), ("comet-b", vec!["phone".to_string()]));
    assert_eq!(
        f.logic.push_mids(7, vec![99], Bytes::new()).await.unwrap(),
        0,
        "offline users: nothing to publish"
    );
    assert!(matches!(f.logic.push_mids(7, vec![], Bytes::new()).await, Err(Error::BadRequest(_))));
}

#[tokio::test]
async fn push_room_and_push_all_publish_goims_room_and_broadcast_messages() {
    let mut f = goim_fixture();
    f.logic.push_room(1000, "live", "1000", Bytes::from_static(b"r")).await.unwrap();
    f.logic.push_all(1001, 50, Bytes::from_static(b"b")).await.unwrap();
    let room = f.rx.recv().await.unwrap();
    assert_eq!(room, PushMsg::room("live://1000", 1000, Bytes::from_static(b"r")));
    assert_eq!(room.partition_key(), "live://1000");
    let all = f.rx.recv().await.unwrap();
    assert_eq!((all.kind, all.operation, all.speed), (PushKind::Broadcast, 1001, 50));
    assert_eq!(all.partition_key(), "1001");
}

#[tokio::test]
async fn room_pushes_carry_consecutive_positions_of_their_room() {
    let mut f = fixture();
    for body in ["a", "b", "c"] {
        f.logic.push_room(1000, "live", "1", Bytes::from(body)).await.unwrap();
    }
    f.logic.push_room(1000, "live", "2", Bytes::from_static(b"x")).await.unwrap();
    let got: Vec<_> = (0..4).map(|_| f.rx.try_recv().unwrap().position.unwrap()).collect();
    assert_eq!(got.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3, 1]);
    assert_eq!(got[0].epoch, got[2].epoch, "one epoch per stream");
    f.logic.push_all(1, 0, Bytes::new()).await.unwrap();
    f.logic.push_keys(1, vec!["k".into()], Bytes::new()).await.unwrap();
    assert_eq!(f.rx.try_recv().unwrap().position, None, "a broadcast has no position");
}

#[tokio::test]
async fn mid_pushes_carry_each_users_position_and_are_kept_while_offline() {
    let mut f = fixture();
    for (mid, key, server) in [(1, "phone", "comet-b"), (1, "web", "comet-a"), (2, "tab", "comet-a")] {
        let token = format!(r#"{{"mid":{mid},"key":"{key}"}}"#);
        f.logic.connect(connect_req(server, &token)).await.unwrap();
    }
    assert_eq!(f.logic.push_mids(7, vec![2], Bytes::from_static(b"first")).await.unwrap(), 1);
    assert_eq!(f.rx.try_recv().unwrap().position.unwrap().offset, 1);
    // One message per user per comet: mid 1 on two comets, mid 2 on one; 99 is offline.
    assert_eq!(f.logic.push_mids(7, vec![1, 2, 99, 1], Bytes::from_static(b"m")).await.unwrap(), 3);
    let msgs: Vec<PushMsg> = (0..3).map(|_| f.rx.try_recv().unwrap()).collect();
    let mid1: Vec<_> = msgs.iter().filter(|m| m.keys != ["tab"]).collect();
    assert_eq!(mid1.len(), 2);
    assert_eq!(mid1[0].position, mid1[1].position, "every device of a user: the same position");
    assert_eq!(mid1[0].position.unwrap().offset, 1);
    let mid2 = msgs.iter().find(|m| m.keys == ["tab"]).unwrap();
    assert_eq!(mid2.position.unwrap().offset, 2);
    // The offline user's push was kept: it recovers from offset 0 of its epoch.
    let epoch = f.logic.recover(goim_api::RecoverRequest {
        mid: 99,
        user_since: Some(goim_api::Position::default()),
        ..Default::default()
    });
    let epoch = epoch.await.unwrap().user.unwrap().position;
    assert_eq!(epoch.offset, 1, "the offline user's stream has its push");
    let again = f
        .logic
        .recover(goim_api::RecoverRequest {
            mid: 99,
            user_since: Some(goim_api::Position::new(epoch.epoch, 0)),
            ..Default::default()
        })
        .await
        .unwrap()
        .user
        .unwrap();
    assert!(again.complete);
    assert_eq!(again.pushes.iter().map(|p| &p.body[..]).collect::<Vec<_>>(), [&b"m"[..]]);
}

#[tokio::test]
async fn recover_replays_the_room_and_user_pushes_missed_and_only_asked_streams() {
    let mut f = fixture();
    f.logic.push_room(1000, "live", "1", Bytes::from_static(b"r1")).await.unwrap();
    let seen = f.rx.try_recv().unwrap().position.unwrap();
    for body in ["r2", "r3"] {
        f.logic.push_room(1001, "live", "1", Bytes::from(body)).await.unwrap();
    }
    let req = goim_api::RecoverRequest {
        mid: 5,
        room: "live://1".into(),
        room_since: Some(seen),
        user_since: None,
    };
    let r = f.logic.recover(req).await.unwrap();
    assert!(r.enabled);
    assert!(r.user.is_none(), "the user stream was not asked for");
    let room = r.room.unwrap();
    assert!(room.complete);
    assert_eq!(room.position, goim_api::Position::new(seen.epoch, 3));
    let replayed: Vec<_> = room.pushes.iter().map(|p| (p.offset, p.op, p.body.clone())).collect();
    assert_eq!(replayed, [(2, 1001, Bytes::from_static(b"r2")), (3, 1001, Bytes::from_static(b"r3"))]);
    let text = metrics_text(&f.logic);
    assert!(text.contains(r#"goim_logic_recoveries_total{stream="room",result="complete"} 1"#), "{text}");
    assert!(text.contains(r#"goim_logic_replayed_total{stream="room"} 2"#), "{text}");
}

#[tokio::test]
async fn with_positions_off_recover_says_so_and_pushes_have_none() {
    let mut f = goim_fixture();
    f.logic.push_room(1000, "live", "1", Bytes::new()).await.unwrap();
    assert_eq!(f.rx.try_recv().unwrap().position, None);
    let req = goim_api::RecoverRequest {
        room: "live://1".into(),
        room_since: Some(goim_api::Position::new(1, 1)),
        ..Default::default()
    };
    assert_eq!(f.logic.recover(req).await.unwrap(), goim_api::Recovered::default());
}

#[tokio::test]
async fn a_closed_queue_fails_the_push_with_a_queue_error() {
    let f = fixture();
    drop(f.rx);
    let err = f.logic.push_all(1, 0, Bytes::new()).await.unwrap_err();
    assert_eq!(err, Error::Queue(queue::Error::Closed));
}

#[tokio::test]
async fn receive_counts_the_uplink() {
    let f = fixture();
    let frame = Frame { ver: 1, op: 4, seq: 9, body: Bytes::from_static(b"up") };
    f.logic.receive(Uplink { mid: 1, key: "k".into(), frame }).await;
    let mut registry = prometheus_client::registry::Registry::default();
    f.logic.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("goim_logic_uplinks_total 1"), "{text}");
}

/// A discovery whose list the test changes.
#[derive(Default)]
struct Listed(parking_lot::Mutex<Vec<String>>);

impl Listed {
    fn set(&self, ids: &[&str]) {
        *self.0.lock() = ids.iter().map(|s| s.to_string()).collect();
    }
}

impl CometDirectory for Arc<Listed> {
    fn ready(&self) -> Vec<String> {
        self.0.lock().clone()
    }
    fn listed(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_comet_gone_past_the_grace_loses_its_routes_and_one_back_within_it_keeps_them() {
    let grace = Duration::from_secs(30);
    let store = Arc::new(MemoryStore::default());
    let (queue, _rx) = queue::Memory::channel(16, Duration::from_millis(100));
    let listed = Arc::new(Listed::default());
    listed.set(&["dead", "blip", "live"]);
    let logic = Logic::new(json_config(), store.clone(), Arc::new(queue))
        .unwrap()
        .with_comets(Arc::new(listed.clone()));
    let logic = Arc::new(logic);
    for (mid, server) in [(1, "dead"), (2, "dead"), (3, "blip"), (4, "live")] {
        store.add_mapping(mid, &format!("k{mid}"), server).await.unwrap();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sweeper = tokio::spawn({
        let (logic, shutdown) = (logic.clone(), shutdown.clone());
        async move { logic.sweep_gone_comets(grace, shutdown).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    listed.set(&["live"]);
    tokio::time::sleep(grace / 2).await;
    listed.set(&["blip", "live"]); // back within the grace
    tokio::time::sleep(grace).await;

    let keys: Vec<String> = (1..=4).map(|m| format!("k{m}")).collect();
    let servers = store.servers_by_keys(&keys).await.unwrap();
    assert_eq!(servers, [None, None, Some("blip".into()), Some("live".into())]);
    assert!(store.keys_by_mids(&[1, 2]).await.unwrap().0.is_empty());

    let mut registry = prometheus_client::registry::Registry::default();
    logic.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.lines().any(|l| l == "goim_logic_routes_dropped_total 2"), "{text}");
    assert!(text.lines().any(|l| l == "goim_logic_comets_swept_total 1"), "{text}");

    // An empty list is a discovery outage, not every comet dying: nothing is swept.
    listed.set(&[]);
    tokio::time::sleep(grace * 2).await;
    assert_eq!(store.servers_by_keys(&keys[2..]).await.unwrap(), [Some("blip".into()), Some("live".into())]);
    shutdown.cancel();
    sweeper.await.unwrap();
}

fn metrics_text(logic: &Logic) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    logic.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}
