//! Redis restarts empty (no persistence): every route is gone. logic notices the store's epoch
//! changed (`goim_rs_store_epoch`, rewritten by the first reader after the loss) and hands the
//! new one to each comet with its next online report; the comets re-register their sessions at
//! `online.reregister_rate`, and pushes by user reach every client again within seconds rather
//! than at the next `session_renew` (10 minutes). Real `goim-logic` and two `goim-comet`
//! processes, and a `redis-server` of this test's own (`GOIM_TEST_REDIS_SERVER`, from
//! `scripts/services.sh env`; without it the test fails).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use goim_test_support::services::Redis;
use goim_test_support::{Client, Transport};
use serde_json::Value;
use support::process::{Proc, Scratch, accepting, admin_metrics as metrics, binary, free_port, ready};
use support::{WAIT, http, sample};

/// Connections per comet.
const PER_COMET: i64 = 150;
/// How long pushes may take to reach everyone again; the test fails past it. Without the
/// re-registration the routes come back only at `session_renew`.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

async fn push_mids(base: &str, mids: &[i64], body: &str) {
    let list: Vec<String> = mids.iter().map(|m| format!("mids={m}")).collect();
    let url = format!("{base}/goim/push/mids?operation=1000&{}", list.join("&"));
    let r = http(reqwest::Method::POST, url, body.as_bytes().to_vec(), None).await;
    assert_eq!(r.body["code"], Value::from(0), "{}", r.raw);
}

#[tokio::test]
#[ignore = "needs redis-server (scripts/services.sh start; eval \"$(scripts/services.sh env)\")"]
async fn after_redis_restarts_empty_pushes_by_user_reach_every_client_within_seconds() {
    let dir = Scratch::new("redis-restart");
    let mut server = Redis::start(dir.0.clone()).await;
    let redis_port = server.port();
    assert!(accepting(redis_port, Duration::from_secs(10)).await, "redis-server never listened");

    let (http_port, logic_grpc, logic_admin) = (free_port(), free_port(), free_port());
    let comets: Vec<(String, u16, u16, u16)> =
        (1..=2).map(|i| (format!("comet-{i}"), free_port(), free_port(), free_port())).collect();
    let list: Vec<String> = comets
        .iter()
        .map(|(id, _, grpc, _)| format!("{{ server_id = \"{id}\", addr = \"127.0.0.1:{grpc}\" }}"))
        .collect();
    let logic_toml = dir.file(
        "logic.toml",
        &format!(
            "[logic.http]\naddr = \"127.0.0.1:{http_port}\"\n[logic.auth]\nmode = \"json\"\n[grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n\
             [admin]\naddr = \"127.0.0.1:{logic_admin}\"\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"redis://127.0.0.1:{redis_port}/0\"\n\
             [queue]\nkind = \"memory\"\n[discovery]\nkind = \"static\"\ncomets = [{}]\n[shutdown]\ngrace = \"5s\"\n",
            list.join(", ")
        ),
    );
    let logic = Proc::start(binary("goim-logic"), &logic_toml, &[]);
    let mut procs = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut admins = Vec::new();
    for (id, tcp, grpc, admin) in &comets {
        // The defaults that matter here: online.renew_interval 1s, protocol.session_renew 10m.
        let toml = dir.file(
            &format!("{id}.toml"),
            &format!(
                "[comet]\ntcp.bind = [\"127.0.0.1:{tcp}\"]\nwebsocket.bind = []\n[grpc]\naddr = \"127.0.0.1:{grpc}\"\n\
                 [logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n[admin]\naddr = \"127.0.0.1:{admin}\"\n[shutdown]\ngrace = \"5s\"\n"
            ),
        );
        procs.push(Proc::start(binary("goim-comet"), &toml, &[("POD_NAME", id.as_str())]));
        addrs.push(format!("127.0.0.1:{tcp}").parse().unwrap());
        admins.push(*admin);
    }
    for admin in [logic_admin, admins[0], admins[1]] {
        assert!(ready(admin).await, "admin port {admin} never became ready");
    }
    let base = format!("http://127.0.0.1:{http_port}");

    let mut clients = Vec::new();
    let mut mids = Vec::new();
    for (c, addr) in addrs.iter().enumerate() {
        for i in 0..PER_COMET {
            let mid = 1000 * (c as i64 + 1) + i;
            let mut client = Client::connect(Transport::Tcp, *addr).await.unwrap();
            client.login(mid, &format!("k-{mid}"), "live://1", &[1000]).await.unwrap();
            clients.push(client);
            mids.push(mid);
        }
    }
    push_mids(&base, &mids, "before").await;
    for (i, c) in clients.iter_mut().enumerate() {
        let f =
            c.recv_op(1000, WAIT).await.unwrap_or_else(|e| panic!("client {i} missed the first push: {e}"));
        assert_eq!(&f.body[..], b"before");
    }

    // Steady state first: both comets have reported since the clients connected (logic's total
    // sums the reports), so each knows the epoch the sessions were written under.
    let (total, held) = (format!("{base}/goim/online/total"), mids.len());
    let reported = support::eventually(WAIT, || {
        let total = total.clone();
        async move {
            let r = http(reqwest::Method::GET, total, Vec::new(), None).await;
            r.body["data"]["conn_count"] == held
        }
    })
    .await;
    assert!(reported, "the comets never reported their {} connections", mids.len());

    // Redis restarts on the same port with nothing in it.
    server.stop();
    server.run().await;
    assert!(accepting(redis_port, Duration::from_secs(10)).await, "redis-server never came back");
    let restarted = Instant::now();

    // Push rounds to every user until each client got one, or the limit passes. Bounded: at
    // most RECOVERY_LIMIT / 250 ms rounds.
    let mut reached: Vec<Option<Duration>> = vec![None; clients.len()];
    let mut round = 0;
    while reached.iter().any(Option::is_none) && restarted.elapsed() < RECOVERY_LIMIT {
        round += 1;
        // Failing while logic's connections to Redis come back is fine: the next round retries.
        let list: Vec<String> = mids.iter().map(|m| format!("mids={m}")).collect();
        let url = format!("{base}/goim/push/mids?operation=1000&{}", list.join("&"));
        let _ = http(reqwest::Method::POST, url, format!("round-{round}").into_bytes(), None).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (i, c) in clients.iter_mut().enumerate() {
            if reached[i].is_none() && c.recv_op(1000, Duration::from_millis(5)).await.is_ok() {
                reached[i] = Some(restarted.elapsed());
            }
        }
    }
    let missing = reached.iter().filter(|r| r.is_none()).count();
    let last = reached.iter().flatten().max().copied();
    let m: Vec<String> = {
        let mut v = Vec::new();
        for admin in &admins {
            v.push(metrics(*admin).await);
        }
        v
    };
    let reregistered: f64 = m.iter().map(|m| sample(m, "goim_comet_sessions_reregistered_total")).sum();
    println!(
        "redis restarted empty: {} of {} clients reached by a push by user within {last:?} of the restart \
         ({round} rounds of 250 ms); sessions re-registered by the comets: {reregistered}",
        clients.len() - missing,
        clients.len()
    );
    assert_eq!(missing, 0, "{missing} clients got no push within {RECOVERY_LIMIT:?} of the restart");
    assert!(reregistered >= mids.len() as f64, "every session was re-registered: {reregistered}");
    for (admin, m) in admins.iter().zip(&m) {
        assert_eq!(
            sample(m, "goim_comet_store_epoch_changes_total"),
            1.0,
            "comet admin {admin}: one change seen"
        );
    }

    // And delivery is whole again: one more push reaches everyone (earlier rounds skipped).
    push_mids(&base, &mids, "after").await;
    for (i, c) in clients.iter_mut().enumerate() {
        loop {
            let f = c
                .recv_op(1000, WAIT)
                .await
                .unwrap_or_else(|e| panic!("client {i} missed the last push: {e}"));
            if &f.body[..] == b"after" {
                break;
            }
        }
    }
    drop(clients);
    assert!(logic.terminate().success(), "goim-logic exit status");
    drop(server);
}
