//! A comet killed with `kill -9` (no disconnects reach logic): its users reconnect to another
//! comet and keep getting pushes by user; job (here logic's in-process job, memory queue) stops
//! dispatching to the dead comet as soon as discovery unlists it (a probed static list), and
//! after `discovery.gone_grace` logic drops the routes that still name it. Real `goim-logic`
//! and `goim-comet` processes on loopback; the memory store, and Redis (ignored unless
//! `GOIM_TEST_REDIS_URL` is set by `scripts/services.sh env`).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use goim_test_support::{Client, Transport};
use serde_json::Value;
use support::process::{Proc, Scratch, admin_metrics as metrics, binary, free_port, installed, ready};
use support::{WAIT, http, sample};

const USERS: i64 = 20;
const PROBE: &str = "200ms";
const GRACE: Duration = Duration::from_secs(2);

struct Comet {
    id: String,
    proc: Option<Proc>,
    tcp: SocketAddr,
    admin: u16,
}

/// Every client gets one op-1000 push whose body is `body` (other pushes it may hold are
/// earlier rounds, skipped).
async fn all_receive(clients: &mut [Client], body: &str) {
    for (i, c) in clients.iter_mut().enumerate() {
        loop {
            let f = c.recv_op(1000, WAIT).await.unwrap_or_else(|e| panic!("user {i} missed {body:?}: {e}"));
            if f.body[..] == *body.as_bytes() {
                break;
            }
        }
    }
}

async fn push_mids(base: &str, mids: &[i64], body: &str) {
    let list: Vec<String> = mids.iter().map(|m| format!("mids={m}")).collect();
    let url = format!("{base}/goim/push/mids?operation=1000&{}", list.join("&"));
    let r = http(reqwest::Method::POST, url, body.as_bytes().to_vec(), None).await;
    assert_eq!(r.body["code"], Value::from(0), "{}", r.raw);
}

/// The scenario; `store` is the `[store]` table, `ns` makes ids unique in a shared Redis.
/// Returns the mids and the dead comet's id, for store-specific checks.
async fn a_dead_comets_routes_are_dropped(store: &str, ns: &str) -> (Vec<i64>, String) {
    let dir = Scratch::new("dead-comet");
    let (http_port, logic_grpc, logic_admin) = (free_port(), free_port(), free_port());
    let comets: Vec<(String, u16, u16, u16, u16)> = (1..=2)
        .map(|i| (format!("comet-{i}-{ns}"), free_port(), free_port(), free_port(), free_port()))
        .collect();
    let list: Vec<String> = comets
        .iter()
        .map(|(id, _, _, grpc, _)| format!("{{ server_id = \"{id}\", addr = \"127.0.0.1:{grpc}\" }}"))
        .collect();
    let logic_toml = dir.file(
        "logic.toml",
        &format!(
            "[logic.http]\naddr = \"127.0.0.1:{http_port}\"\n[logic.auth]\nmode = \"json\"\n[grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n\
             [admin]\naddr = \"127.0.0.1:{logic_admin}\"\n{store}\n[queue]\nkind = \"memory\"\n\
             [discovery]\nkind = \"static\"\ncomets = [{}]\nprobe_interval = \"{PROBE}\"\ngone_grace = \"{}s\"\n\
             [shutdown]\ngrace = \"5s\"\n",
            list.join(", "),
            GRACE.as_secs()
        ),
    );
    let logic = Proc::start(binary("goim-logic"), &logic_toml, &[]);
    let mut nodes = Vec::new();
    for (id, tcp, ws, grpc, admin) in &comets {
        let toml = dir.file(
            &format!("{id}.toml"),
            &format!(
                "[comet]\ntcp.bind = [\"127.0.0.1:{tcp}\"]\nwebsocket.bind = [\"127.0.0.1:{ws}\"]\n\
                 online.renew_interval = \"100ms\"\n[grpc]\naddr = \"127.0.0.1:{grpc}\"\n[logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n\
                 [admin]\naddr = \"127.0.0.1:{admin}\"\n[shutdown]\ngrace = \"5s\"\n"
            ),
        );
        let proc = Proc::start(binary("goim-comet"), &toml, &[("POD_NAME", id.as_str())]);
        nodes.push(Comet {
            id: id.clone(),
            proc: Some(proc),
            tcp: format!("127.0.0.1:{tcp}").parse().unwrap(),
            admin: *admin,
        });
    }
    for admin in [logic_admin, nodes[0].admin, nodes[1].admin] {
        assert!(ready(admin).await, "admin port {admin} never became ready");
    }
    let base = format!("http://127.0.0.1:{http_port}");
    let mid0 = i64::from_str_radix(&ns[..6], 16).unwrap() * 100;
    let mids: Vec<i64> = (1..=USERS).map(|i| mid0 + i).collect();
    let (dead, live) = (nodes[0].id.clone(), nodes[1].id.clone());

    // Every user on the comet that will die.
    let mut clients = Vec::new();
    for &mid in &mids {
        let mut c = Client::connect(Transport::Tcp, nodes[0].tcp).await.unwrap();
        c.login(mid, &format!("{ns}-{mid}-a"), "live://1", &[1000]).await.unwrap();
        clients.push(c);
    }
    push_mids(&base, &mids, "before").await;
    all_receive(&mut clients, "before").await;
    let calls = |m: &str, id: &str| sample(m, &format!("goim_job_comet_calls_total{{server=\"{id}\"}}"));
    // The clients may see the push before job records the comet's answer.
    let counted =
        support::eventually(WAIT, || async { calls(&metrics(logic_admin).await, &dead) >= 1.0 }).await;
    assert!(counted, "the push went through {dead}");

    // kill -9: no disconnect reaches logic; each user reconnects to the other comet with a new
    // key (a new device session), so its mid still lists the stale key on the dead comet.
    let status = nodes[0].proc.take().expect("running").kill9();
    assert!(status.code().is_none(), "killed by a signal: {status}");
    let killed = Instant::now();
    for c in &mut clients {
        c.until_closed(WAIT).await.expect("the client sees its comet die");
    }
    let mut clients = Vec::new();
    for &mid in &mids {
        let mut c = Client::connect(Transport::Tcp, nodes[1].tcp).await.unwrap();
        c.login(mid, &format!("{ns}-{mid}-b"), "live://1", &[1000]).await.unwrap();
        clients.push(c);
    }

    // Pushes by user keep reaching everyone while the grace runs and after it. Bounded: the
    // grace is 2 s, the rounds take at least 200 ms each, at most 100 rounds.
    let (mut unlisted_at, mut dropped_at) = (None, None);
    let (mut round, mut last_gone) = (0, -1.0);
    while dropped_at.is_none() && round < 100 {
        round += 1;
        let body = format!("round-{round}");
        push_mids(&base, &mids, &body).await;
        all_receive(&mut clients, &body).await;
        let m = metrics(logic_admin).await;
        if unlisted_at.is_none()
            && sample(&m, "goim_job_dropped_total{kind=\"keys\",reason=\"comet_gone\"}") > 0.0
        {
            unlisted_at = Some(killed.elapsed());
        }
        // Swept: the routes are counted dropped and a whole round went by with no push
        // addressed to the dead comet (a shared Redis may hold other runs' routes too).
        let gone = sample(&m, "goim_job_dropped_total{kind=\"keys\",reason=\"comet_gone\"}");
        if sample(&m, "goim_logic_routes_dropped_total") >= USERS as f64 && gone > 0.0 && gone == last_gone {
            dropped_at = Some(killed.elapsed());
        }
        last_gone = gone;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dropped_at = dropped_at.expect("the dead comet's routes were never dropped");
    let m = metrics(logic_admin).await;
    let (calls_after, gone_after) =
        (calls(&m, &dead), sample(&m, "goim_job_dropped_total{kind=\"keys\",reason=\"comet_gone\"}"));
    let failed = sample(&m, &format!("goim_job_dispatch_failed_total{{kind=\"keys\",server=\"{dead}\"}}"));
    println!(
        "kill -9 {dead}: pushes to it skipped (comet_gone) from {unlisted_at:?} after the kill, its {} routes \
         dropped by {dropped_at:?} (grace {GRACE:?}, probe {PROBE}); calls that failed against the dead \
         address before it was unlisted: {failed}; skipped as gone: {gone_after}",
        sample(&m, "goim_logic_routes_dropped_total")
    );
    assert!(unlisted_at.is_some(), "no push was ever skipped as comet_gone:\n{m}");
    // At least the dead one (a shared Redis may hold online records of other runs' comets).
    assert!(sample(&m, "goim_logic_comets_swept_total") >= 1.0, "{m}");

    // After the sweep: pushes continue, nothing more goes to (or is even addressed to) the dead comet.
    for round in 0..5 {
        let body = format!("after-{round}");
        push_mids(&base, &mids, &body).await;
        all_receive(&mut clients, &body).await;
    }
    let m = metrics(logic_admin).await;
    assert_eq!(calls(&m, &dead), calls_after, "a dispatch went to the dead comet:\n{m}");
    assert_eq!(
        sample(&m, "goim_job_dropped_total{kind=\"keys\",reason=\"comet_gone\"}"),
        gone_after,
        "a push still resolved to the dead comet after its routes were dropped:\n{m}"
    );
    assert!(calls(&m, &live) >= 5.0, "{m}");
    drop(clients);
    assert!(logic.terminate().success(), "goim-logic exit status");
    (mids, dead)
}

#[tokio::test]
async fn a_dead_comets_routes_are_dropped_from_the_memory_store_after_the_grace() {
    a_dead_comets_routes_are_dropped("[store]\nkind = \"memory\"", &namespace()).await;
}

#[tokio::test]
#[ignore = "needs redis (scripts/services.sh start; eval \"$(scripts/services.sh env)\")"]
async fn a_dead_comets_routes_are_dropped_from_redis_after_the_grace() {
    let url = installed("GOIM_TEST_REDIS_URL");
    let ns = namespace();
    let store = format!("[store]\nkind = \"redis\"\n[store.redis]\nurl = \"{url}\"");
    let (mids, dead) = a_dead_comets_routes_are_dropped(&store, &ns).await;

    for mid in mids {
        let stale = redis_cli(&url, &["GET", &format!("key_{ns}-{mid}-a")]);
        assert_eq!(stale, "", "the dead comet's key mapping of {mid} is still there");
        // HGETALL prints field, value, ...: no field names the dead comet (the live key's field
        // may be gone too: the clients disconnected from the live comet before this check).
        let fields = redis_cli(&url, &["HGETALL", &format!("mid_{mid}")]);
        assert!(!fields.lines().any(|l| l == dead), "mid_{mid} still names {dead}: {fields:?}");
    }
    let left = redis_cli(&url, &["EXISTS", &goim_logic::store::routes_key(&dead)]);
    assert_eq!(left, "0", "the dead comet's route set is gone");
}

/// A short unique id, so runs against a shared Redis do not meet.
fn namespace() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:06x}", (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff)
}

/// One redis-cli command against `url`; its output, trimmed.
fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .arg("--raw")
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
