//! The distributed mode with the memory backends (no Redis, no Kafka): the real `goim-logic`,
//! `goim-comet` and `goim-job` binaries on loopback, and job's gRPC dispatch in-process against
//! a real comet gRPC server.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goim_api::{Op, PushMsg};
use goim_job::comet::{ClientConfig, GrpcComets};
use goim_job::discovery::{CometEndpoint, StaticList};
use goim_test_support::{Client, Transport};
use serde_json::Value;
use support::process::{Proc, Scratch, binary, free_port, ready};
use support::{WAIT, eventually, http};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Ports {
    tcp: u16,
    ws: u16,
    comet_grpc: u16,
    comet_admin: u16,
    http: u16,
    logic_grpc: u16,
    logic_admin: u16,
    job_admin: u16,
}

fn configs(dir: &Scratch, p: &Ports) -> (PathBuf, PathBuf, PathBuf) {
    let comets = format!("comets = [{{ server_id = \"comet-1\", addr = \"127.0.0.1:{}\" }}]", p.comet_grpc);
    let logic = dir.file(
        "logic.toml",
        &format!(
            "[logic.http]\naddr = \"127.0.0.1:{}\"\n[logic.auth]\nmode = \"json\"\n[grpc]\naddr = \"127.0.0.1:{}\"\n\
             [admin]\naddr = \"127.0.0.1:{}\"\n[store]\nkind = \"memory\"\n[queue]\nkind = \"memory\"\n\
             [discovery]\nkind = \"static\"\n{comets}\n[shutdown]\ngrace = \"5s\"\n",
            p.http, p.logic_grpc, p.logic_admin
        ),
    );
    // The server id comes from POD_NAME (set below), as on Kubernetes.
    let comet = dir.file(
        "comet.toml",
        &format!(
            "[comet]\ntcp.bind = [\"127.0.0.1:{}\"]\nwebsocket.bind = [\"127.0.0.1:{}\"]\n\
             online.renew_interval = \"100ms\"\n[grpc]\naddr = \"127.0.0.1:{}\"\n[logic_client]\naddrs = [\"127.0.0.1:{}\"]\n\
             [admin]\naddr = \"127.0.0.1:{}\"\n[shutdown]\ngrace = \"5s\"\n",
            p.tcp, p.ws, p.comet_grpc, p.logic_grpc, p.comet_admin
        ),
    );
    // goim-job with the memory queue: refused (below), since logic dispatches that queue itself.
    let job = dir.file(
        "job.toml",
        &format!(
            "[discovery]\nkind = \"static\"\n{comets}\n[queue]\nkind = \"memory\"\n[admin]\naddr = \"127.0.0.1:{}\"\n\
             [shutdown]\ngrace = \"5s\"\n",
            p.job_admin
        ),
    );
    (logic, comet, job)
}

#[tokio::test]
async fn comet_and_logic_run_a_comet_that_authenticates_through_logic_over_grpc() {
    let p = Ports {
        tcp: free_port(),
        ws: free_port(),
        comet_grpc: free_port(),
        comet_admin: free_port(),
        http: free_port(),
        logic_grpc: free_port(),
        logic_admin: free_port(),
        job_admin: free_port(),
    };
    let dir = Scratch::new("distributed");
    let (logic_toml, comet_toml, job_toml) = configs(&dir, &p);
    let logic = Proc::start(binary("goim-logic"), &logic_toml, &[]);
    let comet = Proc::start(binary("goim-comet"), &comet_toml, &[("POD_NAME", "comet-1")]);
    // With the memory queue goim-job is not needed, and refuses to start rather than idle.
    let out = Command::new(binary("goim-job")).arg("--config").arg(&job_toml).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("queue.kind: goim-job consumes Kafka"), "{stderr}");
    for admin in [p.logic_admin, p.comet_admin] {
        assert!(ready(admin).await, "admin port {admin} never became ready");
    }

    // Auth goes comet → logic over gRPC: a good JSON token is accepted, a bad one refused.
    let comet_tcp: SocketAddr = format!("127.0.0.1:{}", p.tcp).parse().unwrap();
    let mut member = Client::connect(Transport::Tcp, comet_tcp).await.unwrap();
    member.login(11, "k11", "live://3", &[1000]).await.unwrap();
    let mut refused = Client::connect(Transport::Tcp, comet_tcp).await.unwrap();
    let reply = refused.auth("not a token").await.unwrap();
    assert_eq!(reply.op, Op::DisconnectReply.code(), "a refused token gets op 6");

    // comet's online reports reach logic over gRPC (gzip) and show in its HTTP API.
    let base = format!("http://127.0.0.1:{}", p.http);
    let counted = eventually(WAIT, || {
        let url = format!("{base}/goim/online/total");
        async move { http(reqwest::Method::GET, url, b"", None).await.body["data"]["conn_count"] == 1 }
    })
    .await;
    assert!(counted, "logic never counted the comet's connection");
    let rooms =
        http(reqwest::Method::GET, format!("{base}/goim/online/room?type=live&rooms=3"), b"", None).await;
    assert_eq!(rooms.body["data"]["3"], Value::from(1), "{}", rooms.raw);
    let nodes = http(reqwest::Method::GET, format!("{base}/goim/nodes/instances"), b"", None).await;
    assert_eq!(
        nodes.body["data"][0]["hostname"], "comet-1",
        "the server id came from POD_NAME: {}",
        nodes.raw
    );

    // With the memory queue, logic dispatches its own pushes to the comet over gRPC.
    let r = http(
        reqwest::Method::POST,
        format!("{base}/goim/push/keys?operation=1000&keys=k11"),
        b"by key",
        None,
    )
    .await;
    assert_eq!(r.body["code"], Value::from(0), "{}", r.raw);
    assert_eq!(&member.recv_op(1000, WAIT).await.unwrap().body[..], b"by key");
    let r = http(
        reqwest::Method::POST,
        format!("{base}/goim/push/room?operation=1000&type=live&room=3"),
        b"to room",
        None,
    )
    .await;
    assert_eq!(r.body["code"], Value::from(0), "{}", r.raw);
    assert_eq!(&member.recv_op(1000, WAIT).await.unwrap().body[..], b"to room");

    // SIGTERM: each exits cleanly; the comet tells its client first.
    assert!(comet.terminate().success(), "goim-comet exit status");
    let (seen, _) = member.until_closed(WAIT).await.unwrap();
    assert!(seen.iter().any(|f| f.op == Op::DisconnectReply.code()), "no op 6 before close: {seen:?}");
    assert!(logic.terminate().success(), "goim-logic exit status");
}

#[test]
fn invalid_configuration_exits_64_naming_the_field_before_binding_anything() {
    // Hold the admin port: a binary that bound before validating would fail with "cannot
    // listen" and exit 1 instead.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = Scratch::new("invalid");
    type Case = (&'static str, String, &'static [(&'static str, &'static str)], &'static str);
    let cases: [Case; 4] = [
        (
            "goim-comet",
            format!("[admin]\naddr = \"127.0.0.1:{port}\"\n"),
            &[("GOIM_COMET__OUTBOX__CAPACITY", "0")],
            "comet.outbox.capacity",
        ),
        ("goim-logic", format!("[admin]\naddr = \"127.0.0.1:{port}\"\n"), &[], "logic.auth.jwt.secret"),
        ("goim-job", format!("[admin]\naddr = \"127.0.0.1:{port}\"\n"), &[], "discovery.comets"),
        ("goim-job", "[job.room]\nbatch = \"twenty\"\n".into(), &[], "job.room.batch"),
    ];
    for (bin, text, env, field) in cases {
        let path = dir.file("bad.toml", &text);
        let out =
            Command::new(binary(bin)).arg("--config").arg(&path).envs(env.iter().copied()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bin}: {stderr}");
        assert!(stderr.contains(field), "{bin} did not name {field}: {stderr}");
    }
    drop(held);
}

#[test]
fn print_config_shows_the_environment_override_and_the_tier_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_goim-comet"))
        .arg("--print-config")
        .env("GOIM_COMET__SERVER_ID", "comet-7")
        .env("GOIM_GRPC__TIMEOUT", "3s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(printed["comet"]["server_id"].as_str(), Some("comet-7"));
    assert_eq!(printed["grpc"]["timeout"].as_str(), Some("3s"));
    assert_eq!(printed["grpc"]["addr"].as_str(), Some("0.0.0.0:3109"));
    assert_eq!(printed["admin"]["addr"].as_str(), Some("0.0.0.0:3100"));
    assert_eq!(printed["logic_client"]["addrs"][0].as_str(), Some("127.0.0.1:3119"));
}

/// `[logic]` in goim-comet and `[comet]` in goim-logic and goim-job were renamed to
/// `[logic_client]` and `[comet_client]` (a table name means one thing in every binary); the
/// old names still load, from a file or an override, with a warning.
#[test]
fn the_old_client_table_names_still_load_with_a_deprecation_warning() {
    let dir = Scratch::new("renamed");
    let comets =
        "[discovery]\nkind = \"static\"\ncomets = [{ server_id = \"c\", addr = \"127.0.0.1:3109\" }]\n";
    let cases = [
        (
            "goim-comet",
            "[logic]\naddrs = [\"10.0.0.9:3119\"]\n".to_owned(),
            "GOIM_LOGIC__TIMEOUT",
            "logic",
            "logic_client",
        ),
        (
            "goim-logic",
            format!("[logic.auth]\nmode = \"json\"\n{comets}[comet]\nmax_message_size = 8192\n"),
            "GOIM_COMET__TIMEOUT",
            "comet",
            "comet_client",
        ),
        (
            "goim-job",
            format!("{comets}[comet]\nmax_message_size = 8192\n"),
            "GOIM_COMET__TIMEOUT",
            "comet",
            "comet_client",
        ),
    ];
    for (bin, text, var, old, new) in cases {
        let file = dir.file(&format!("{bin}.toml"), &text);
        let out = Command::new(binary(bin))
            .arg("--config")
            .arg(&file)
            .arg("--print-config")
            .env(var, "4s")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{bin}: {stderr}");
        assert!(stderr.contains(&format!("[{old}] is the old name of [{new}]")), "{bin}: {stderr}");
        let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(printed[new]["timeout"].as_str(), Some("4s"), "{bin}: the override under the old name");
        if bin == "goim-comet" {
            assert_eq!(printed[new]["addrs"][0].as_str(), Some("10.0.0.9:3119"), "the file's old table");
            assert!(printed["comet"].get("addrs").is_none());
        } else {
            assert_eq!(
                printed[new]["max_message_size"].as_integer(),
                Some(8192),
                "{bin}: the file's old table"
            );
            assert!(!printed.contains_key(old), "{bin}: [{old}] is not printed");
        }
    }
}

#[test]
fn check_config_says_whether_the_binary_would_start_and_binds_nothing() {
    // The admin port is held: a check that bound it would fail on it.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = format!("[admin]\naddr = \"{}\"\n", held.local_addr().unwrap());
    let dir = Scratch::new("check-config");
    let comets =
        "[discovery]\nkind = \"static\"\ncomets = [{ server_id = \"c\", addr = \"127.0.0.1:3109\" }]\n";
    let cases = [
        ("goim-comet", String::new()),
        ("goim-logic", format!("[logic.auth]\nmode = \"json\"\n{comets}")),
        ("goim-job", comets.to_owned()),
    ];
    for (bin, rest) in cases {
        let good = dir.file(&format!("{bin}.toml"), &format!("{admin}{rest}"));
        let out =
            Command::new(binary(bin)).arg("--check-config").arg("--config").arg(&good).output().unwrap();
        assert!(out.status.success(), "{bin}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty(), "{bin} printed on a good check");
        let bad = dir.file(&format!("{bin}-bad.toml"), &format!("adr = \"x\"\n{admin}{rest}"));
        let out = Command::new(binary(bin)).arg("--check-config").arg("--config").arg(&bad).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bin}: {stderr}");
        assert!(stderr.contains("unknown field `adr`"), "{bin}: {stderr}");
    }
    drop(held);
}

#[test]
fn a_secret_of_digits_overrides_a_text_setting_as_text() {
    let dir = Scratch::new("digits");
    let file = dir.file(
        "logic.toml",
        "[discovery]\nkind = \"static\"\ncomets = [{ server_id = \"c\", addr = \"127.0.0.1:3109\" }]\n",
    );
    // What a Kubernetes Secret holding only digits (or `true`) gives the container.
    let out = Command::new(binary("goim-logic"))
        .arg("--print-config")
        .arg("--config")
        .arg(&file)
        .env("GOIM_LOGIC__HTTP__PUSH_TOKEN", "123456")
        .env("GOIM_LOGIC__AUTH__JWT__SECRET", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(printed["logic"]["http"]["push_token"].as_str(), Some("123456"));
    assert_eq!(printed["logic"]["auth"]["jwt"]["secret"].as_str(), Some("true"));
    // A number where a number belongs stays one, and a wrong one is still refused.
    let out = Command::new(binary("goim-logic"))
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .env("GOIM_LOGIC__AUTH__MODE", "json")
        .env("GOIM_GRPC__MAX_MESSAGE_SIZE", "nope")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
}

/// A comet in this process (logic in-process too), serving `goim.comet.Comet` on loopback.
async fn comet_with_grpc() -> (goim_comet::Comet, SocketAddr, SocketAddr) {
    let mut logic_config = goim_logic::Config::default();
    logic_config.auth.mode = goim_logic::config::AuthMode::Json;
    let (queue, _rx) = goim_logic::queue::Memory::channel(16, Duration::from_secs(1));
    let store = Arc::new(goim_logic::MemoryStore::default());
    let logic = Arc::new(goim_logic::Logic::new(logic_config, store, Arc::new(queue)).unwrap());
    let mut config = goim_comet::Config { server_id: "comet-a".into(), ..Default::default() };
    config.tcp.bind = vec!["127.0.0.1:0".into()];
    config.websocket.bind = Vec::new();
    let listeners = goim_comet::Listeners::bind(&config).await.unwrap();
    let tcp = listeners.tcp[0].local_addr().unwrap();
    let comet = goim_comet::Comet::new(
        config,
        Arc::new(goim::port::InProcessLogic(logic)),
        Arc::new(goim_comet::Metrics::default()),
    );
    comet.start(listeners);
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let served = comet.clone();
    tokio::spawn(async move {
        goim_comet::grpc::serve(grpc, served, &Default::default(), CancellationToken::new()).await
    });
    (comet, tcp, grpc_addr)
}

#[tokio::test]
async fn job_dispatches_over_grpc_to_a_real_comet_from_a_static_list() {
    let (comet, tcp, grpc) = comet_with_grpc().await;
    let mut a = Client::connect(Transport::Tcp, tcp).await.unwrap();
    a.login(1, "ka", "live://1", &[1000]).await.unwrap();
    let mut b = Client::connect(Transport::Tcp, tcp).await.unwrap();
    b.login(2, "kb", "live://1", &[1001]).await.unwrap();
    assert!(eventually(WAIT, || async { comet.room_online("live://1") == 2 }).await);

    let discovery = StaticList::new(vec![
        CometEndpoint::up("comet-a", grpc.to_string()),
        // A listed comet that is down: dispatch to it fails and is retried, others still deliver.
        CometEndpoint::up("comet-down", format!("127.0.0.1:{}", free_port())),
    ]);
    let client = ClientConfig { timeout: Duration::from_secs(2), ..ClientConfig::default() };
    let comets = Arc::new(GrpcComets::new(&discovery, client));
    let mut config = goim_job::Config::default();
    config.dispatch.retries = 1;
    let job = goim_job::Job::new(config, comets, goim_job::Metrics::new());
    let (tx, rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { job.run(goim_job::MemoryQueue::new(rx), stop).await }
    });

    tx.send(PushMsg::keys("comet-a", vec!["kb".into()], 1001, Bytes::from_static(b"key"))).await.unwrap();
    assert_eq!(&b.recv_op(1001, WAIT).await.unwrap().body[..], b"key");
    tx.send(PushMsg::room("live://1", 1000, Bytes::from_static(b"room"))).await.unwrap();
    assert_eq!(&a.recv_op(1000, WAIT).await.unwrap().body[..], b"room");
    assert_eq!(&b.recv_op(1000, WAIT).await.unwrap().body[..], b"room");
    tx.send(PushMsg::broadcast(1001, 0, Bytes::from_static(b"all"))).await.unwrap();
    assert_eq!(&b.recv_op(1001, WAIT).await.unwrap().body[..], b"all");

    stop.cancel();
    let done = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}

/// The full goim topology: logic with Redis and Kafka, job consuming Kafka, comet in between.
#[tokio::test]
#[ignore = "needs redis and kafka"]
async fn a_push_flows_logic_to_kafka_to_job_to_comet_across_processes() {
    let redis = std::env::var("GOIM_TEST_REDIS_URL")
        .expect("GOIM_TEST_REDIS_URL is not set; run `scripts/services.sh start` and source its env");
    let brokers = std::env::var("GOIM_TEST_KAFKA_BROKERS")
        .expect("GOIM_TEST_KAFKA_BROKERS is not set; run `scripts/services.sh start` and source its env");
    let tag = format!("{}-{}", std::process::id(), free_port());
    let (topic, server, key) = (format!("goim-dist-{tag}"), format!("comet-{tag}"), format!("key-{tag}"));
    let producer = goim_logic::queue::KafkaConfig {
        brokers: vec![brokers.clone()],
        topic: topic.clone(),
        ..Default::default()
    };
    assert!(goim_logic::queue::ensure_topic(&producer, 2, 1).await.unwrap(), "topic {topic} existed");

    let (tcp, comet_grpc, comet_admin, http_port, logic_grpc, logic_admin, job_admin) =
        (free_port(), free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
    let dir = Scratch::new("kafka");
    let kafka = format!("[kafka]\nbrokers = [\"{brokers}\"]\ntopic = \"{topic}\"\n");
    let logic_toml = dir.file(
        "logic.toml",
        &format!(
            "[logic.http]\naddr = \"127.0.0.1:{http_port}\"\n[logic.auth]\nmode = \"json\"\n\
             [grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n[admin]\naddr = \"127.0.0.1:{logic_admin}\"\n\
             [store]\nkind = \"redis\"\n[store.redis]\nurl = \"{redis}\"\n[queue]\nkind = \"kafka\"\n{kafka}"
        ),
    );
    let comet_toml = dir.file(
        "comet.toml",
        &format!(
            "[comet]\nserver_id = \"{server}\"\ntcp.bind = [\"127.0.0.1:{tcp}\"]\nwebsocket.bind = []\n\
             online.renew_interval = \"100ms\"\n[grpc]\naddr = \"127.0.0.1:{comet_grpc}\"\n\
             [logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n[admin]\naddr = \"127.0.0.1:{comet_admin}\"\n"
        ),
    );
    let job_toml = dir.file(
        "job.toml",
        &format!(
            "[discovery]\nkind = \"static\"\ncomets = [{{ server_id = \"{server}\", addr = \"127.0.0.1:{comet_grpc}\" }}]\n\
             [queue]\nkind = \"kafka\"\n{kafka}group = \"goim-dist-{tag}\"\n[admin]\naddr = \"127.0.0.1:{job_admin}\"\n"
        ),
    );
    let logic = Proc::start(binary("goim-logic"), &logic_toml, &[]);
    let comet = Proc::start(binary("goim-comet"), &comet_toml, &[]);
    let job = Proc::start(binary("goim-job"), &job_toml, &[]);
    for admin in [logic_admin, comet_admin, job_admin] {
        assert!(ready(admin).await, "admin port {admin} never became ready");
    }

    let mut member =
        Client::connect(Transport::Tcp, format!("127.0.0.1:{tcp}").parse().unwrap()).await.unwrap();
    member.login(21, &key, &format!("live://{tag}"), &[1000]).await.unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    let r = http(
        reqwest::Method::POST,
        format!("{base}/goim/push/keys?operation=1000&keys={key}"),
        b"via kafka",
        None,
    )
    .await;
    assert_eq!(r.body["code"], Value::from(0), "{}", r.raw);
    // The consumer group may still be joining: allow for a rebalance.
    let got = member.recv_op(1000, Duration::from_secs(30)).await.unwrap();
    assert_eq!(&got.body[..], b"via kafka");
    let room = format!("{base}/goim/push/room?operation=1000&type=live&room={tag}");
    let r = http(reqwest::Method::POST, room, b"room via kafka", None).await;
    assert_eq!(r.body["code"], Value::from(0), "{}", r.raw);
    assert_eq!(&member.recv_op(1000, WAIT).await.unwrap().body[..], b"room via kafka");

    assert!(comet.terminate().success(), "goim-comet exit status");
    assert!(job.terminate().success(), "goim-job exit status");
    assert!(logic.terminate().success(), "goim-logic exit status");
}
