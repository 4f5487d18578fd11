//! goim's HTTP API over a real socket: every endpoint, gin's binding rules, the envelope byte for
//! byte, and pushes landing on a real in-process queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goim_api::{Connect, Online, PushKind, PushMsg};
use goim_logic::config::AuthMode;
use goim_logic::{Config, Logic, MemoryStore, queue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Server {
    base: String,
    logic: Arc<Logic>,
    rx: mpsc::Receiver<PushMsg>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

fn config() -> Config {
    let mut config = Config::default();
    config.auth.mode = AuthMode::Json;
    config.http.max_body = 64;
    config
}

async fn start(config: Config) -> Server {
    let (queue, rx) = queue::Memory::channel(16, Duration::from_millis(200));
    let logic = Arc::new(Logic::new(config, Arc::new(MemoryStore::default()), Arc::new(queue)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(goim_logic::serve(listener, logic.clone(), shutdown.clone()));
    Server { base, logic, rx, shutdown, served, client: reqwest::Client::new() }
}

struct Reply {
    status: u16,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Server {
    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Reply { status, body: response.text().await.unwrap(), headers }
    }

    async fn post(&self, path_and_query: &str, body: &'static str) -> Reply {
        self.send(self.client.post(format!("{}{path_and_query}", self.base)).body(body)).await
    }

    async fn get(&self, path_and_query: &str) -> Reply {
        self.send(self.client.get(format!("{}{path_and_query}", self.base))).await
    }

    async fn connect(&self, server: &str, token: &str) {
        let req = Connect {
            server: server.into(),
            cookie: String::new(),
            token: Bytes::copy_from_slice(token.as_bytes()),
        };
        self.logic.connect(req).await.unwrap();
    }

    async fn report(&self, server: &str, rooms: &[(&str, i32)], conns: i64, ips: i64) {
        let room_count = rooms.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        self.logic
            .renew_online(Online { server: server.into(), room_count, conn_count: conns, ip_count: ips })
            .await
            .unwrap();
    }

    fn assert_nothing_published(&mut self) {
        assert!(self.rx.try_recv().is_err(), "a push was published");
    }
}

const OK: &str = r#"{"code":0,"message":""}"#;

fn assert_reply(reply: &Reply, status: u16, body: &str) {
    assert_eq!((reply.status, reply.body.as_str()), (status, body));
    assert_eq!(reply.headers["content-type"], "application/json; charset=utf-8");
}

#[tokio::test]
async fn push_keys_publishes_one_push_msg_per_comet_with_goims_fields() {
    let mut s = start(config()).await;
    s.connect("comet-a", r#"{"key":"k1"}"#).await;
    s.connect("comet-b", r#"{"key":"k2"}"#).await;
    s.connect("comet-a", r#"{"key":"k3"}"#).await;
    let reply = s.post("/goim/push/keys?operation=1000&keys=k1&keys=k2&keys=k3&keys=unknown", "hello").await;
    assert_reply(&reply, 200, OK);
    let a = s.rx.recv().await.unwrap();
    let b = s.rx.recv().await.unwrap();
    assert_eq!(
        a,
        PushMsg::keys("comet-a", vec!["k1".into(), "k3".into()], 1000, Bytes::from_static(b"hello"))
    );
    assert_eq!(b, PushMsg::keys("comet-b", vec!["k2".into()], 1000, Bytes::from_static(b"hello")));
    assert_eq!((a.partition_key(), b.partition_key()), ("k1".to_string(), "k2".to_string()));
    s.assert_nothing_published();
}

#[tokio::test]
async fn push_keys_does_not_split_commas_and_takes_operation_as_optional() {
    let mut s = start(config()).await;
    s.connect("comet-a", r#"{"key":"a,b"}"#).await;
    s.connect("comet-a", r#"{"key":"a"}"#).await;
    assert_reply(&s.post("/goim/push/keys?keys=a%2Cb", "x").await, 200, OK);
    let msg = s.rx.recv().await.unwrap();
    assert_eq!((msg.keys, msg.operation), (vec!["a,b".to_string()], 0));
}

#[tokio::test]
async fn push_keys_without_keys_is_code_minus_400_with_a_message() {
    let mut s = start(config()).await;
    assert_reply(
        &s.post("/goim/push/keys?operation=1", "x").await,
        200,
        r#"{"code":-400,"message":"no keys to push to"}"#,
    );
    s.assert_nothing_published();
}

#[tokio::test]
async fn a_non_numeric_operation_is_an_http_400_binding_error() {
    let mut s = start(config()).await;
    for path in [
        "/goim/push/keys?operation=abc&keys=k",
        "/goim/push/mids?operation=1x&mids=1",
        "/goim/push/all?operation=9999999999",
    ] {
        let reply = s.post(path, "x").await;
        assert_eq!(reply.status, 400, "{path}");
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["code"], -400, "{path}");
        assert!(json["message"].as_str().unwrap().starts_with("operation: "), "{path}: {}", reply.body);
        assert!(json.get("data").is_none());
    }
    s.assert_nothing_published();
}

#[tokio::test]
async fn push_mids_reaches_every_device_and_rejects_non_numeric_mids() {
    let mut s = start(config()).await;
    s.connect("comet-a", r#"{"mid":1,"key":"phone"}"#).await;
    s.connect("comet-b", r#"{"mid":2,"key":"web"}"#).await;
    assert_reply(&s.post("/goim/push/mids?operation=7&mids=1&mids=2", "m").await, 200, OK);
    let mut got = [s.rx.recv().await.unwrap(), s.rx.recv().await.unwrap()];
    got.sort_by(|a, b| a.server.cmp(&b.server));
    // Each user's first push: offset 1 of its stream; the rest is goim's message.
    for msg in &mut got {
        assert_eq!(msg.position.take().map(|p| p.offset), Some(1));
    }
    assert_eq!(got[0], PushMsg::keys("comet-a", vec!["phone".into()], 7, Bytes::from_static(b"m")));
    assert_eq!(got[1], PushMsg::keys("comet-b", vec!["web".into()], 7, Bytes::from_static(b"m")));

    let reply = s.post("/goim/push/mids?operation=7&mids=1&mids=two", "m").await;
    assert_reply(&reply, 400, r#"{"code":-400,"message":"mids: \"two\" is not a valid integer"}"#);
    // Commas are not split: "1,2" is not an integer.
    assert_eq!(s.post("/goim/push/mids?operation=7&mids=1,2", "m").await.status, 400);
    s.assert_nothing_published();
}

#[tokio::test]
async fn push_room_publishes_a_room_message_keyed_by_type_and_room() {
    let mut s = start(config()).await;
    assert_reply(&s.post("/goim/push/room?operation=1000&type=live&room=1000", "r").await, 200, OK);
    let mut msg = s.rx.recv().await.unwrap();
    assert_eq!(msg.position.take().map(|p| p.offset), Some(1), "the room's first position");
    assert_eq!(msg, PushMsg::room("live://1000", 1000, Bytes::from_static(b"r")));
    assert_eq!(msg.partition_key(), "live://1000");
}

#[tokio::test]
async fn push_room_requires_a_non_zero_operation_a_type_and_a_room() {
    let mut s = start(config()).await;
    for (query, field) in [
        ("type=live&room=1", "operation"),
        ("operation=0&type=live&room=1", "operation"),
        ("operation=1&room=1", "type"),
        ("operation=1&type=live&room=", "room"),
    ] {
        let reply = s.post(&format!("/goim/push/room?{query}"), "r").await;
        assert_reply(&reply, 400, &format!(r#"{{"code":-400,"message":"{field} is required"}}"#));
    }
    s.assert_nothing_published();
}

#[tokio::test]
async fn push_all_publishes_a_broadcast_with_speed_and_requires_operation() {
    let mut s = start(config()).await;
    assert_reply(&s.post("/goim/push/all?operation=1001&speed=100", "b").await, 200, OK);
    let msg = s.rx.recv().await.unwrap();
    assert_eq!(
        (msg.kind, msg.operation, msg.speed, msg.msg.as_ref()),
        (PushKind::Broadcast, 1001, 100, &b"b"[..])
    );
    assert_eq!(msg.partition_key(), "1001");
    assert_reply(
        &s.post("/goim/push/all?speed=1", "b").await,
        400,
        r#"{"code":-400,"message":"operation is required"}"#,
    );
    s.assert_nothing_published();
}

#[tokio::test]
async fn the_body_is_forwarded_verbatim_whatever_its_content_type() {
    let mut s = start(config()).await;
    let body: &'static [u8] = b"\x00\xff{\"not\": json";
    let req = s
        .client
        .post(format!("{}/goim/push/all?operation=5", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    assert_eq!(s.send(req).await.status, 200);
    assert_eq!(s.rx.recv().await.unwrap().msg.as_ref(), body);
}

#[tokio::test]
async fn a_body_over_max_body_is_refused_with_413_and_the_envelope() {
    let mut s = start(config()).await;
    assert_eq!(s.post("/goim/push/all?operation=1", "x".repeat(64).leak()).await.status, 200);
    s.rx.recv().await.unwrap();
    let reply = s.post("/goim/push/all?operation=1", "x".repeat(65).leak()).await;
    assert_reply(&reply, 413, r#"{"code":-413,"message":"message body exceeds 64 bytes"}"#);
    s.assert_nothing_published();
}

#[tokio::test]
async fn a_chunked_body_over_max_body_is_refused_with_413() {
    let mut s = start(config()).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = "y".repeat(40);
    let request = format!(
        "POST /goim/push/all?operation=1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         28\r\n{chunk}\r\n28\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.ends_with(r#"{"code":-413,"message":"message body exceeds 64 bytes"}"#), "{response}");
    s.assert_nothing_published();
}

#[tokio::test]
async fn a_push_the_queue_refuses_is_code_minus_500_with_a_clear_message() {
    let mut s = start(config()).await;
    s.rx.close();
    let reply = s.post("/goim/push/all?operation=1", "x").await;
    assert_reply(&reply, 200, r#"{"code":-500,"message":"push queue is closed, logic is shutting down"}"#);
}

#[tokio::test]
async fn push_endpoints_need_the_bearer_token_when_one_is_configured() {
    let mut config = config();
    config.http.push_token = Some("s3cret".into());
    let mut s = start(config).await;
    let unauthorized = r#"{"code":-401,"message":"missing or wrong bearer token"}"#;
    for path in [
        "/goim/push/keys?keys=k",
        "/goim/push/mids?mids=1",
        "/goim/push/room?operation=1&type=a&room=b",
        "/goim/push/all?operation=1",
    ] {
        let url = format!("{}{path}", s.base);
        let missing = s.send(s.client.post(&url).body("x")).await;
        assert_reply(&missing, 401, unauthorized);
        assert_eq!(missing.headers["www-authenticate"], "Bearer");
        let wrong = s.send(s.client.post(&url).bearer_auth("s3cre").body("x")).await;
        assert_reply(&wrong, 401, unauthorized);
        let basic = s.send(s.client.post(&url).basic_auth("s3cret", None::<&str>).body("x")).await;
        assert_eq!(basic.status, 401, "{path}");
    }
    s.assert_nothing_published();
    let ok = s
        .send(s.client.post(format!("{}/goim/push/all?operation=1", s.base)).bearer_auth("s3cret").body("x"))
        .await;
    assert_reply(&ok, 200, OK);
    assert_eq!(s.rx.recv().await.unwrap().kind, PushKind::Broadcast);
    // Queries stay open.
    assert_eq!(s.get("/goim/online/total").await.status, 200);
}

#[tokio::test]
async fn online_top_returns_goims_top_list() {
    let s = start(config()).await;
    assert_reply(
        &s.get("/goim/online/top?type=live&limit=5").await,
        200,
        r#"{"code":0,"message":"","data":[]}"#,
    );
    s.report("comet-a", &[("live://1", 3), ("live://2", 7), ("chat://3", 9)], 19, 4).await;
    s.report("comet-b", &[("live://1", 2)], 2, 1).await;
    assert_reply(
        &s.get("/goim/online/top?type=live&limit=5").await,
        200,
        r#"{"code":0,"message":"","data":[{"room_id":"2","count":7},{"room_id":"1","count":5}]}"#,
    );
    assert_reply(
        &s.get("/goim/online/top?type=live&limit=1").await,
        200,
        r#"{"code":0,"message":"","data":[{"room_id":"2","count":7}]}"#,
    );
}

#[tokio::test]
async fn online_top_requires_a_type_and_a_positive_limit() {
    let s = start(config()).await;
    for (query, message) in [
        ("limit=5", "type is required"),
        ("type=live", "limit is required"),
        ("type=live&limit=0", "limit is required"),
        ("type=live&limit=-1", "limit must be positive"),
        ("type=live&limit=ten", "limit: \\\"ten\\\" is not a valid integer"),
    ] {
        let reply = s.get(&format!("/goim/online/top?{query}")).await;
        assert_reply(&reply, 400, &format!(r#"{{"code":-400,"message":"{message}"}}"#));
    }
}

#[tokio::test]
async fn online_room_counts_repeated_rooms_with_zero_for_unknown() {
    let s = start(config()).await;
    s.report("comet-a", &[("live://1000", 100)], 100, 10).await;
    s.report("comet-b", &[("live://1000", 1), ("live://2000", 200)], 201, 20).await;
    assert_reply(
        &s.get("/goim/online/room?type=live&rooms=2000&rooms=1000&rooms=3000").await,
        200,
        r#"{"code":0,"message":"","data":{"1000":101,"2000":200,"3000":0}}"#,
    );
    assert_reply(
        &s.get("/goim/online/room?type=live").await,
        400,
        r#"{"code":-400,"message":"rooms is required"}"#,
    );
    assert_reply(
        &s.get("/goim/online/room?rooms=1").await,
        400,
        r#"{"code":-400,"message":"type is required"}"#,
    );
}

#[tokio::test]
async fn online_total_sums_connections_and_ips_of_live_comets() {
    let s = start(config()).await;
    assert_reply(
        &s.get("/goim/online/total").await,
        200,
        r#"{"code":0,"message":"","data":{"conn_count":0,"ip_count":0}}"#,
    );
    s.report("comet-a", &[], 30, 3).await;
    s.report("comet-b", &[], 12, 2).await;
    assert_reply(
        &s.get("/goim/online/total").await,
        200,
        r#"{"code":0,"message":"","data":{"conn_count":42,"ip_count":5}}"#,
    );
}

#[tokio::test]
async fn a_new_connection_shows_in_the_counts_as_soon_as_its_comet_reports() {
    let s = start(config()).await;
    s.report("comet-a", &[("live://1", 1)], 1, 1).await;
    assert!(s.get("/goim/online/room?type=live&rooms=1").await.body.contains(r#""1":1"#));
    s.report("comet-a", &[("live://1", 2)], 2, 1).await;
    assert!(s.get("/goim/online/room?type=live&rooms=1").await.body.contains(r#""1":2"#));
}

#[tokio::test]
async fn nodes_weighted_returns_goims_nodes_reply() {
    let s = start(config()).await;
    let default = r#"{"code":0,"message":"","data":{"domain":"conn.goim.io","tcp_port":3101,"ws_port":3102,"wss_port":3103,"heartbeat":240,"nodes":["conn.goim.io"],"backoff":{"max_delay":300,"base_delay":3,"factor":1.8,"jitter":0.3},"heartbeat_max":2}}"#;
    assert_reply(&s.get("/goim/nodes/weighted?platform=web").await, 200, default);
    s.report("comet-busy", &[], 90, 9).await;
    s.report("comet-idle", &[], 10, 9).await;
    let web = s.get("/goim/nodes/weighted?platform=web").await;
    assert!(web.body.contains(r#""nodes":["comet-idle.goim.io","comet-busy.goim.io"]"#), "{}", web.body);
    let other = s.get("/goim/nodes/weighted").await;
    assert!(other.body.contains(r#""nodes":["comet-idle","comet-busy"]"#), "{}", other.body);
}

#[tokio::test]
async fn nodes_instances_lists_each_comet_in_goims_instance_shape() {
    let s = start(config()).await;
    assert_reply(&s.get("/goim/nodes/instances").await, 200, r#"{"code":0,"message":"","data":[]}"#);
    s.report("comet-a", &[], 5, 2).await;
    let reply = s.get("/goim/nodes/instances").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let instance = &json["data"][0];
    let keys: Vec<&str> = instance.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want =
        ["region", "zone", "env", "appid", "hostname", "addrs", "version", "latest_timestamp", "metadata"];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(instance["hostname"], "comet-a");
    assert_eq!(instance["metadata"], serde_json::json!({"conn_count": "5", "ip_count": "2"}));
    assert!(reply.body.contains(r#""region":"","zone":"","env":"","appid":"goim.comet","hostname":"comet-a","addrs":[],"version":"","latest_timestamp":"#));
}

#[tokio::test]
async fn cors_preflight_and_responses_allow_only_configured_origins() {
    let mut config = config();
    config.http.cors_origins = vec!["http://localhost:3102".into()];
    config.http.push_token = Some("t".into());
    let s = start(config).await;
    let preflight = s
        .send(
            s.client
                .request(reqwest::Method::OPTIONS, format!("{}/goim/push/room", s.base))
                .header("origin", "http://localhost:3102")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization,content-type"),
        )
        .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.headers["access-control-allow-origin"], "http://localhost:3102");
    let methods = preflight.headers["access-control-allow-methods"].to_str().unwrap().to_string();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let allowed = preflight.headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    let get = s
        .send(s.client.get(format!("{}/goim/online/total", s.base)).header("origin", "http://localhost:3102"))
        .await;
    assert_eq!(get.headers["access-control-allow-origin"], "http://localhost:3102");
    let other = s
        .send(s.client.get(format!("{}/goim/online/total", s.base)).header("origin", "http://evil.example"))
        .await;
    assert_eq!(other.status, 200);
    assert!(other.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_cors_origins_no_cors_headers_are_sent() {
    let s = start(config()).await;
    let get = s
        .send(s.client.get(format!("{}/goim/online/total", s.base)).header("origin", "http://localhost:3102"))
        .await;
    assert!(get.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let s = start(config()).await;
    assert_eq!(s.get("/goim/push").await.status, 404);
    assert_eq!(s.get("/goim/online/totals").await.status, 404);
}

#[tokio::test]
async fn serve_returns_once_shutdown_is_cancelled() {
    let s = start(config()).await;
    assert_eq!(s.get("/goim/online/total").await.status, 200);
    s.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), s.served).await.expect("serve did not stop");
    result.unwrap().unwrap();
    assert!(s.client.get(format!("{}/goim/online/total", s.base)).send().await.is_err(), "still accepting");
}
