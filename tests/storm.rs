//! A reconnect storm (issue #15 item 4): 15,000 clients connect at once to one comet in front of
//! one logic, real `goim-comet` and `goim-logic` processes on loopback (memory store). Admission
//! control holds logic to the comet's auth rate: clients over it get op 6 `rate_limited` with a
//! jittered `reconnect_after_ms`, come back after it, and every one of them gets in. Meanwhile 200
//! clients connected before the storm receive numbered room pushes at 50/s: every push exactly
//! once and in order, none of them disconnected. The times are printed (the storm's length, the
//! clients' time to get in, logic's auth p99 from its histogram, push latency before and during
//! the storm); they are figures, not assertions.
//!
//! The storm clients live in this test's process, which may hold 20,000 open files: 15,000
//! storm clients and 200 watchers fit, as do the 15,200 server sockets in comet's.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use goim_api::Op;
use goim_test_support::json_token;
use goim_test_support::{Client, Transport};
use serde_json::Value;
use support::process::{Proc, Scratch, admin_metrics as metrics, binary, free_port, ready};
use support::{http, sample};

const STORM: usize = 15_000;
const WATCHERS: usize = 200;
const ROOM: &str = "live://storm";
/// The comet's admission settings: a bucket well under what logic could take, so the limit is
/// what shapes the storm.
const AUTH_RATE: u32 = 3000;
const AUTH_BURST: u32 = 1000;
const AUTH_IN_FLIGHT: usize = 64;
/// Pushes to the room, one every 20 ms.
const PUSH_EVERY: Duration = Duration::from_millis(20);
/// How long the whole storm may take before the test gives up (a bound, not a measurement).
const STORM_LIMIT: Duration = Duration::from_secs(180);

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// The `q` quantile's bucket bound of a Prometheus histogram, from its cumulative buckets.
fn histogram_quantile(text: &str, name: &str, q: f64) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) else { continue };
        let (le, count) = rest.split_once("\"} ").expect("bucket line");
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
        buckets.push((le, count.trim().parse().unwrap()));
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    let bound = buckets.iter().find(|(_, c)| *c >= q * total).map(|b| b.0).unwrap_or(f64::NAN);
    (bound, total)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What one storm client went through.
struct Visit {
    /// Held open until the end.
    _client: Client,
    /// From the storm's start to its auth reply.
    took: Duration,
    attempts: u32,
    rate_limited: u32,
}

/// Connects and authenticates, doing what op 6 says: wait `reconnect_after_ms`, then again.
/// Errors of its own (a refused TCP connect, a reset) are retried after 100 ms and counted.
async fn storm_client(addr: SocketAddr, i: usize, t0: Instant, errors: Arc<AtomicU64>) -> Visit {
    let token = json_token(5_000_000 + i as i64, &format!("storm-{i}"), "live://storm-only", &[1000]);
    let (mut attempts, mut rate_limited) = (0, 0);
    loop {
        attempts += 1;
        let mut c = match Client::connect(Transport::Tcp, addr).await {
            Ok(c) => c,
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match c.auth(&token).await {
            Ok(f) if f.op == Op::AuthReply.code() => {
                return Visit { _client: c, took: t0.elapsed(), attempts, rate_limited };
            }
            Ok(f) if f.op == Op::DisconnectReply.code() => {
                let v: Value = serde_json::from_slice(&f.body).expect("op 6 is JSON");
                let reason = v["reason"].as_str().unwrap_or_default().to_string();
                assert!(
                    reason == "rate_limited" || reason == "unavailable",
                    "client {i}: refused for {v} (only the auth rate or a busy logic may refuse it)"
                );
                rate_limited += u32::from(reason == "rate_limited");
                let after = v["reconnect_after_ms"].as_u64().unwrap_or_else(|| panic!("no hint in {v}"));
                drop(c);
                tokio::time::sleep(Duration::from_millis(after)).await;
            }
            Ok(f) => panic!("client {i}: op {} in reply to auth", f.op),
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What one watcher received: (number, phase, latency in µs) per push, in arrival order.
type Received = Vec<(u64, u8, u64)>;

/// Before, during and after the storm: the phase each push is sent in.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;
const STOP: u8 = 3;

/// One watcher: reads the numbered pushes (`n phase micros`) until the `end` push. Returns
/// (number, phase, latency in µs) for each, in arrival order.
async fn watch(mut c: Client) -> Received {
    let mut got = Vec::new();
    loop {
        let f = c.recv_op(1000, Duration::from_secs(30)).await.expect("a watcher stays connected and fed");
        let text = std::str::from_utf8(&f.body).expect("utf-8 body");
        if text == "end" {
            return got;
        }
        let mut parts = text.split(' ').map(|p| p.parse::<u64>().expect("`n phase micros` body"));
        let (n, phase, sent) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        got.push((n, phase as u8, unix_micros().saturating_sub(sent)));
    }
}

/// The side that must not notice the storm, on a thread and runtime of its own (so the
/// storm clients in this process cannot starve it): the watchers, and the pusher sending to
/// their room every [`PUSH_EVERY`] until `phase` is [`STOP`]. Returns what each watcher got and
/// how many pushes were sent.
fn observe(
    addr: SocketAddr,
    http_port: u16,
    phase: Arc<AtomicU8>,
    ready: std::sync::mpsc::Sender<()>,
) -> (Vec<Received>, u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut watchers = Vec::new();
        for i in 0..WATCHERS {
            let mut c = Client::connect(Transport::Tcp, addr).await.unwrap();
            c.login(i as i64 + 1, &format!("watcher-{i}"), ROOM, &[1000]).await.unwrap();
            watchers.push(tokio::spawn(watch(c)));
        }
        ready.send(()).unwrap();
        let url = format!("http://127.0.0.1:{http_port}/goim/push/room?operation=1000&type=live&room=storm");
        let push = |body: String| {
            let url = url.clone();
            async move {
                let r = http(reqwest::Method::POST, url, body.clone(), None).await;
                assert_eq!(r.body["code"], Value::from(0), "push {body}: {}", r.raw);
            }
        };
        let mut n = 0;
        let mut tick = tokio::time::interval(PUSH_EVERY);
        loop {
            tick.tick().await;
            let now = phase.load(Ordering::Acquire);
            if now == STOP {
                break;
            }
            n += 1;
            push(format!("{n} {now} {}", unix_micros())).await;
        }
        push("end".into()).await;
        let mut got = Vec::new();
        for w in watchers {
            got.push(w.await.unwrap());
        }
        (got, n)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_15000_clients_all_get_in_and_connected_clients_keep_their_pushes() {
    goim::process::raise_open_files();
    let dir = Scratch::new("storm");
    let (http_port, logic_grpc, logic_admin) = (free_port(), free_port(), free_port());
    let (tcp, ws, grpc, comet_admin) = (free_port(), free_port(), free_port(), free_port());
    let logic_toml = dir.file(
        "logic.toml",
        &format!(
            "[logic.http]\naddr = \"127.0.0.1:{http_port}\"\n[logic.auth]\nmode = \"json\"\n[grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n\
             [admin]\naddr = \"127.0.0.1:{logic_admin}\"\n[store]\nkind = \"memory\"\n[queue]\nkind = \"memory\"\n\
             [discovery]\nkind = \"static\"\ncomets = [{{ server_id = \"storm-comet\", addr = \"127.0.0.1:{grpc}\" }}]\n\
             [shutdown]\ngrace = \"5s\"\n"
        ),
    );
    let comet_toml = dir.file(
        "comet.toml",
        &format!(
            "[comet]\nserver_id = \"storm-comet\"\ntcp.bind = [\"127.0.0.1:{tcp}\"]\nwebsocket.bind = [\"127.0.0.1:{ws}\"]\n\
             [comet.admission]\nauth_rate = {AUTH_RATE}\nauth_burst = {AUTH_BURST}\nauth_in_flight = {AUTH_IN_FLIGHT}\n\
             retry_min = \"200ms\"\nretry_jitter = \"3s\"\n\
             [grpc]\naddr = \"127.0.0.1:{grpc}\"\n[logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n\
             [admin]\naddr = \"127.0.0.1:{comet_admin}\"\n[shutdown]\ngrace = \"5s\"\n"
        ),
    );
    let logic = Proc::start(binary("goim-logic"), &logic_toml, &[]);
    let comet = Proc::start(binary("goim-comet"), &comet_toml, &[]);
    for admin in [logic_admin, comet_admin] {
        assert!(ready(admin).await, "admin port {admin} never became ready");
    }
    let addr: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();

    // The watchers and their pushes, from before the storm until after it.
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let observer = {
        let phase = phase.clone();
        std::thread::spawn(move || observe(addr, http_port, phase, ready_tx))
    };
    tokio::task::spawn_blocking(move || ready.recv().expect("the watchers connect")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The storm: every client at once.
    phase.store(DURING, Ordering::Release);
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..STORM {
        tasks.spawn(storm_client(addr, i, t0, errors.clone()));
    }
    let mut visits = Vec::with_capacity(STORM);
    let mut in_flight_max = 0.0f64;
    let mut sampled = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::Instant::now() + STORM_LIMIT;
    while visits.len() < STORM {
        tokio::select! {
            v = tasks.join_next() => visits.push(v.expect("a storm task").expect("a storm client")),
            _ = sampled.tick() => {
                let m = metrics(comet_admin).await;
                in_flight_max = in_flight_max.max(sample(&m, "goim_comet_auth_in_flight"));
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("{} of {STORM} storm clients got in within {STORM_LIMIT:?}", visits.len());
            }
        }
    }
    let storm_took = t0.elapsed();
    phase.store(AFTER, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase.store(STOP, Ordering::Release);
    let (got, pushed) =
        tokio::task::spawn_blocking(move || observer.join().expect("the observer")).await.unwrap();

    // Every watcher: each push exactly once, in order.
    let (mut before, mut during) = (Vec::new(), Vec::new());
    for (i, got) in got.into_iter().enumerate() {
        let numbers: Vec<u64> = got.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(
            numbers,
            (1..=pushed).collect::<Vec<_>>(),
            "watcher {i}: pushes missing, twice or out of order"
        );
        for (_, phase, us) in got {
            match phase {
                BEFORE => before.push(us),
                DURING => during.push(us),
                _ => {}
            }
        }
    }
    before.sort_unstable();
    during.sort_unstable();

    let cm = metrics(comet_admin).await;
    let lm = metrics(logic_admin).await;
    let refused = sample(&cm, "goim_comet_admission_refused_total{reason=\"auth_rate\"}");
    let told: u64 = visits.iter().map(|v| u64::from(v.rate_limited)).sum();
    let mut took: Vec<u64> = visits.iter().map(|v| v.took.as_millis() as u64).collect();
    took.sort_unstable();
    let max_attempts = visits.iter().map(|v| v.attempts).max().unwrap_or(0);
    let (logic_p99, logic_count) = histogram_quantile(&lm, "goim_logic_connect_duration_seconds", 0.99);
    let (logic_p50, _) = histogram_quantile(&lm, "goim_logic_connect_duration_seconds", 0.50);
    println!(
        "storm: {STORM} clients in {storm_took:.2?} (auth_rate {AUTH_RATE}/s, burst {AUTH_BURST}, {AUTH_IN_FLIGHT} in \
         flight); time to get in p50 {} ms, p99 {} ms, max {} ms; attempts max {max_attempts}; op 6 rate_limited \
         told {told} times (comet counted {refused}); client-side errors {}; auth in flight at most {in_flight_max} \
         (sampled); logic auth p50 <= {logic_p50} s, p99 <= {logic_p99} s over {logic_count} auths",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().copied().unwrap_or(0),
        errors.load(Ordering::Relaxed),
    );
    println!(
        "watchers: {WATCHERS} x {pushed} pushes, all delivered once and in order; push latency before the storm \
         p50 {} us, p99 {} us ({} samples); during it p50 {} us, p99 {} us ({} samples)",
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        before.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.len(),
    );

    assert_eq!(visits.len(), STORM);
    assert!(refused > 0.0, "the storm never reached the auth rate, so this tested nothing:\n{cm}");
    assert_eq!(told as f64, refused, "every refusal reached its client as op 6 rate_limited");
    assert!(
        in_flight_max <= AUTH_IN_FLIGHT as f64,
        "auth requests in flight {in_flight_max} > {AUTH_IN_FLIGHT}"
    );
    assert!(!during.is_empty(), "no push was sent during the storm");
    // The watchers have left (the observer ended); every storm client is still held, and no
    // one was dropped for falling behind or going silent.
    assert_eq!(sample(&cm, "goim_comet_connections{transport=\"tcp\"}"), STORM as f64, "{cm}");
    for reason in ["slow", "heartbeat_timeout", "write_failed"] {
        let n = sample(&cm, &format!("goim_comet_disconnects_total{{reason=\"{reason}\"}}"));
        assert_eq!(n, 0.0, "{n} connections ended as {reason}:\n{cm}");
    }
    assert!(logic_count >= (STORM + WATCHERS) as f64, "{lm}");
    drop(visits);
    assert!(comet.terminate().success(), "goim-comet exit status");
    assert!(logic.terminate().success(), "goim-logic exit status");
}
