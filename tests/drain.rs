//! Draining a real `goim-comet` process (with a real `goim-logic` for auth and pushes): `GET
//! /drain` on the admin port and SIGTERM tell every client to go (op 6 `drain`) at the paced
//! rate, readiness turns off and new connections are refused at once, pushes reach the clients
//! not yet told, and `drain.timeout` cuts a slow drain.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use goim_api::frame::split_packets;
use goim_api::{Frame, Op};
use goim_test_support::json_token;
use goim_test_support::{Client, Transport};
use support::process::{Proc, Scratch, binary, free_port, ready};
use support::{eventually, http, sample};

const ROOM: &str = "drain";
const OP: i32 = 1000;
/// `comet.drain.reconnect_min`'s default: every drain hint is at least this.
const DRAIN_MIN_MS: u64 = 1000;

struct Cluster {
    _dir: Scratch,
    _logic: Proc,
    comet: Proc,
    tcp: SocketAddr,
    ws: SocketAddr,
    admin: u16,
    http: u16,
}

/// goim-logic (memory store and queue: it dispatches its pushes to the comet over gRPC) and a
/// goim-comet with `drain` as its `[comet.drain]` table.
async fn cluster(name: &str, drain: &str) -> Cluster {
    let (tcp, ws, comet_grpc, comet_admin) = (free_port(), free_port(), free_port(), free_port());
    let (http_port, logic_grpc, logic_admin) = (free_port(), free_port(), free_port());
    let dir = Scratch::new(name);
    let logic_toml = dir.file(
        "logic.toml",
        &format!(
            "[logic.http]\naddr = \"127.0.0.1:{http_port}\"\n[logic.auth]\nmode = \"json\"\n\
             [grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n[admin]\naddr = \"127.0.0.1:{logic_admin}\"\n\
             [store]\nkind = \"memory\"\n[queue]\nkind = \"memory\"\n[discovery]\nkind = \"static\"\n\
             comets = [{{ server_id = \"comet-1\", addr = \"127.0.0.1:{comet_grpc}\" }}]\n\
             [shutdown]\ngrace = \"5s\"\n"
        ),
    );
    let comet_toml = dir.file(
        "comet.toml",
        &format!(
            "[comet]\nserver_id = \"comet-1\"\ntcp.bind = [\"127.0.0.1:{tcp}\"]\n\
             websocket.bind = [\"127.0.0.1:{ws}\"]\nonline.renew_interval = \"100ms\"\n\
             [comet.drain]\n{drain}\n[grpc]\naddr = \"127.0.0.1:{comet_grpc}\"\n\
             [logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n[admin]\naddr = \"127.0.0.1:{comet_admin}\"\n\
             [shutdown]\ngrace = \"5s\"\n"
        ),
    );
    let logic = Proc::start(binary("goim-logic"), &logic_toml, &[]);
    let comet = Proc::start(binary("goim-comet"), &comet_toml, &[]);
    for admin in [logic_admin, comet_admin] {
        assert!(ready(admin).await, "admin port {admin} never became ready");
    }
    Cluster {
        _dir: dir,
        _logic: logic,
        comet,
        tcp: format!("127.0.0.1:{tcp}").parse().unwrap(),
        ws: format!("127.0.0.1:{ws}").parse().unwrap(),
        admin: comet_admin,
        http: http_port,
    }
}

impl Cluster {
    fn addr(&self, t: Transport) -> SocketAddr {
        match t {
            Transport::Tcp => self.tcp,
            Transport::Ws => self.ws,
        }
    }

    async fn push_room(&self, body: &'static [u8]) {
        let url =
            format!("http://127.0.0.1:{}/goim/push/room?operation={OP}&type=live&room={ROOM}", self.http);
        let r = http(reqwest::Method::POST, url, body, None).await;
        assert_eq!(r.body["code"], serde_json::Value::from(0), "{}", r.raw);
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn metric(&self, prefix: &str) -> f64 {
        sample(&self.admin_get("/metrics").await.1, prefix)
    }

    /// Starts `GET /drain`; resolves to its status, body, and how long it took.
    fn drain(&self) -> tokio::task::JoinHandle<(u16, String, Duration)> {
        let url = format!("http://127.0.0.1:{}/drain", self.admin);
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = reqwest::get(url).await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, body, t0.elapsed())
        })
    }
}

/// What one client saw, with arrival times.
#[derive(Debug, Default)]
struct Seen {
    what: &'static str,
    frames: Vec<(Instant, Frame)>,
    /// When and how the connection (or session) ended; `None`: it did not within the limit.
    closed: Option<(Instant, String)>,
}

impl Seen {
    /// The op-6 packet and when it arrived.
    fn op6(&self) -> Option<(Instant, serde_json::Value)> {
        let (at, f) = self.frames.iter().find(|(_, f)| f.op == Op::DisconnectReply.code())?;
        Some((*at, serde_json::from_slice(&f.body).unwrap()))
    }

    fn got(&self, body: &[u8]) -> bool {
        self.frames.iter().any(|(_, f)| f.op == OP && &f.body[..] == body)
    }

    /// Checks the end: op 6 `drain` is the last packet, with a hint within
    /// `DRAIN_MIN_MS..=DRAIN_MIN_MS + jitter_ms` (the default floor, `comet.drain.reconnect_min`),
    /// and then the connection closed. Returns when op 6 arrived.
    fn check_told(&self, jitter_ms: u64) -> Result<Instant, String> {
        let Some((at, body)) = self.op6() else {
            return Err(format!("{}: closed without op 6: {self:?}", self.what));
        };
        if body["reason"] != "drain" {
            return Err(format!("{}: op 6 reason {body}", self.what));
        }
        match body["reconnect_after_ms"].as_u64() {
            Some(ms) if (DRAIN_MIN_MS..=DRAIN_MIN_MS + jitter_ms).contains(&ms) => {}
            _ => {
                let range = format!("{DRAIN_MIN_MS}..={}", DRAIN_MIN_MS + jitter_ms);
                return Err(format!("{}: reconnect_after_ms out of {range}: {body}", self.what));
            }
        }
        if self.frames.last().map(|(_, f)| f.op) != Some(Op::DisconnectReply.code()) {
            return Err(format!("{}: packets after op 6", self.what));
        }
        if self.closed.is_none() {
            return Err(format!("{}: not closed after op 6", self.what));
        }
        Ok(at)
    }
}

/// A socket client of the room; reads (and counts the `before` push) until the server closes.
async fn socket(
    c: &Cluster,
    t: Transport,
    i: i64,
    before: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Seen> {
    let mut client = Client::connect(t, c.addr(t)).await.expect("connect");
    client.login(i, &format!("k{i}"), &format!("live://{ROOM}"), &[OP]).await.expect("login");
    let what = if t == Transport::Tcp { "tcp" } else { "ws" };
    tokio::spawn(async move {
        let mut seen = Seen { what, ..Default::default() };
        let limit = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            match tokio::time::timeout_at(limit, client.recv_or_close()).await {
                Ok(Ok(Ok(f))) => {
                    if &f.body[..] == b"before" {
                        before.fetch_add(1, Ordering::Relaxed);
                    }
                    seen.frames.push((Instant::now(), f));
                }
                Ok(Ok(Err(how))) => {
                    seen.closed = Some((Instant::now(), format!("{how:?}")));
                    break;
                }
                // A reset after the server's last bytes counts as closed.
                Ok(Err(e)) => {
                    seen.closed = Some((Instant::now(), format!("error {e:#}")));
                    break;
                }
                Err(_) => break,
            }
        }
        seen
    })
}

/// A long-poll session of the room; polls until a poll answer carries op 6, then checks that the
/// session is gone (404).
async fn long_poll(c: &Cluster, i: i64, before: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Seen> {
    let base = format!("http://{}", c.ws);
    let http = reqwest::Client::new();
    let token = json_token(i, &format!("k{i}"), &format!("live://{ROOM}"), &[OP]);
    let r = http.post(format!("{base}/poll/auth")).body(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let sid = v["sid"].as_str().unwrap().to_string();
    tokio::spawn(async move {
        let mut seen = Seen { what: "long_poll", ..Default::default() };
        let end = Instant::now() + Duration::from_secs(90);
        while Instant::now() < end {
            let r = http.get(format!("{base}/poll?sid={sid}&timeout=1")).send().await.unwrap();
            match r.status().as_u16() {
                204 => continue,
                200 => {
                    let body: Bytes = r.bytes().await.unwrap();
                    let at = Instant::now();
                    let mut told = false;
                    for f in split_packets(body) {
                        let f = f.unwrap();
                        if &f.body[..] == b"before" {
                            before.fetch_add(1, Ordering::Relaxed);
                        }
                        told |= f.op == Op::DisconnectReply.code();
                        seen.frames.push((at, f));
                    }
                    if told {
                        let after =
                            http.get(format!("{base}/poll?sid={sid}&timeout=1")).send().await.unwrap();
                        seen.closed = Some((Instant::now(), format!("then HTTP {}", after.status())));
                        assert_eq!(after.status(), 404, "the session ends after its op 6");
                        break;
                    }
                }
                s => {
                    seen.closed = Some((Instant::now(), format!("HTTP {s} without op 6")));
                    break;
                }
            }
        }
        seen
    })
}

/// `n` socket clients (TCP and WebSocket in turn) and `polls` long-poll sessions in the room,
/// each having received a first push (so all are subscribed before the drain).
async fn clients(c: &Cluster, n: i64, polls: i64) -> Vec<tokio::task::JoinHandle<Seen>> {
    let before = Arc::new(AtomicUsize::new(0));
    let mut out = Vec::new();
    for i in 0..n {
        let t = if i % 2 == 0 { Transport::Tcp } else { Transport::Ws };
        out.push(socket(c, t, i, before.clone()).await);
    }
    for i in n..n + polls {
        out.push(long_poll(c, i, before.clone()).await);
    }
    c.push_room(b"before").await;
    let total = (n + polls) as usize;
    let all = eventually(Duration::from_secs(10), || {
        let before = before.clone();
        async move { before.load(Ordering::Relaxed) == total }
    })
    .await;
    assert!(all, "only {} of {total} clients got the first push", before.load(Ordering::Relaxed));
    out
}

/// `key=value` pairs of the `/drain` answer.
fn field(report: &str, key: &str) -> String {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
        .to_string()
}

fn count(report: &str, key: &str) -> usize {
    field(report, key).parse().unwrap()
}

/// The most op-6 arrivals within any `window`.
fn densest(times: &[Instant], window: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..t.len() {
        while t[hi] - t[lo] > window {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_tells_every_client_at_the_paced_rate_while_pushes_still_reach_the_rest() {
    const N: i64 = 200;
    const POLLS: i64 = 4;
    const RATE: f64 = 100.0;
    const JITTER_MS: u64 = 2000;
    let c = cluster("drain", "timeout = \"30s\"\nrate = 100\nreconnect_jitter = \"2s\"").await;
    let tasks = clients(&c, N, POLLS).await;
    let total = (N + POLLS) as usize;
    assert_eq!(c.metric("goim_comet_draining ").await, 0.0);

    let started = Instant::now();
    let first = c.drain();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // At once: out of the Service, no new clients, still alive.
    assert_eq!(c.admin_get("/readyz").await.0, 503, "readiness is off while draining");
    assert_eq!(c.admin_get("/healthz").await.0, 200, "liveness stays on");
    let tcp = Client::connect(Transport::Tcp, c.tcp).await;
    assert!(tcp.is_err(), "a new TCP connection is refused while draining");
    let ws = Client::connect(Transport::Ws, c.ws).await;
    assert!(ws.is_err(), "a new WebSocket is refused while draining");
    let poll = reqwest::Client::new()
        .post(format!("http://{}/poll/auth", c.ws))
        .body(json_token(9999, "late", "live://x", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 503, "a new long-poll session is refused while draining");
    let metrics = c.admin_get("/metrics").await.1;
    assert_eq!(sample(&metrics, "goim_comet_draining "), 1.0);
    let remaining = sample(&metrics, "goim_comet_drain_remaining ");
    assert!(remaining > 0.0 && remaining < total as f64, "drain_remaining mid-drain: {remaining}");

    // A push mid-drain: every client not yet told when it arrives still gets it.
    let second = c.drain();
    c.push_room(b"during").await;
    let pushed = Instant::now();

    let (status, report, took) = first.await.unwrap();
    let (status2, report2, _) = second.await.unwrap();
    assert_eq!((status, status2), (200, 200), "{report} / {report2}");
    assert_eq!(report, report2, "a second GET waits for the same drain");
    let mut told = Vec::new();
    let mut failures = Vec::new();
    let (mut with_push, mut told_late, mut late_without) = (0, 0, 0);
    for t in tasks {
        let seen = t.await.unwrap();
        match seen.check_told(JITTER_MS) {
            Ok(at) => {
                told.push(at);
                let got = seen.got(b"during");
                with_push += usize::from(got);
                // Told well after the push was accepted: it was connected when the push came.
                if at > pushed + Duration::from_millis(500) {
                    told_late += 1;
                    if !got {
                        late_without += 1;
                        failures.push(format!("{}: told at +{:?} without the push", seen.what, at - started));
                    }
                }
                if got {
                    let (push_at, _) = seen.frames.iter().find(|(_, f)| &f.body[..] == b"during").unwrap();
                    assert!(*push_at <= at, "the push came before op 6");
                }
            }
            Err(e) => failures.push(e),
        }
    }
    let spread = told.iter().max().unwrap().duration_since(*told.iter().min().unwrap());
    let ideal = total as f64 / RATE;
    let densest_half_second = densest(&told, Duration::from_millis(500));
    println!(
        "drain of {total} clients ({N} sockets, {POLLS} long-poll) at {RATE}/s: /drain took {took:?} \
         (N/R = {ideal:.2}s), op-6 spread {spread:?}, op 6 seen by {} of {total}, closed without op 6: {}, \
         most op 6 in 500 ms: {densest_half_second}, mid-drain push reached {with_push} ({told_late} told >0.5 s \
         after it, {late_without} of them without it); report: {report}",
        told.len(),
        total - told.len(),
    );
    assert!(failures.is_empty(), "{} clients failed: {failures:#?}", failures.len());
    assert_eq!(count(&report, "drained"), total, "{report}");
    assert_eq!((count(&report, "cut"), count(&report, "left")), (0, 0), "{report}");
    assert_eq!(field(&report, "timed_out"), "false");
    assert!(took.as_secs_f64() >= 0.8 * ideal, "the drain lasted {took:?}, less than 0.8·N/R: a burst");
    assert!(took < Duration::from_secs(30), "finished before the timeout: {took:?}");
    // Evenly spread: at 100/s about 50 per 500 ms; a burst puts nearly all in one window.
    assert!(densest_half_second <= 150, "{densest_half_second} op 6 within 500 ms");
    assert!(told_late > 50, "the push came early enough to test delivery: {told_late}");

    let metrics = c.admin_get("/metrics").await.1;
    assert_eq!(sample(&metrics, "goim_comet_drained_total "), total as f64);
    assert_eq!(sample(&metrics, "goim_comet_drain_remaining "), 0.0);
    let drain_closes = eventually(Duration::from_secs(5), || async {
        c.metric("goim_comet_disconnects_total{reason=\"drain\"}").await == total as f64
    })
    .await;
    assert!(drain_closes, "closes counted under reason drain: {metrics}");

    // SIGTERM after the drain: nothing left, a clean exit.
    let status = tokio::task::spawn_blocking(move || c.comet.terminate()).await.unwrap();
    assert!(status.success(), "goim-comet exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_at_the_rate_and_exits_0() {
    const N: i64 = 60;
    let c = cluster("drain-sigterm", "timeout = \"20s\"\nrate = 40\nreconnect_jitter = \"1s\"").await;
    let tasks = clients(&c, N, 2).await;
    let total = (N + 2) as usize;
    let pid = c.comet.id();
    let admin = c.admin;
    let t0 = Instant::now();
    let exited = tokio::task::spawn_blocking(move || c.comet.terminate());
    // The drain started: readiness is off while the process is still up.
    let off = eventually(Duration::from_secs(1), || async move {
        reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    let status = exited.await.unwrap();
    let took = t0.elapsed();
    let mut told = 0;
    for t in tasks {
        let seen = t.await.unwrap();
        seen.check_told(1000).unwrap_or_else(|e| panic!("{e}"));
        told += 1;
    }
    let ideal = total as f64 / 40.0;
    println!(
        "SIGTERM to goim-comet {pid} with {total} clients at 40/s: exit after {took:?} (N/R = {ideal:.2}s), op 6 drain: {told}"
    );
    assert!(off, "/readyz did not turn 503 after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(told, total);
    assert!(took.as_secs_f64() >= 0.8 * ideal, "SIGTERM to exit took {took:?}: not paced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_tells_the_rest_at_once_and_counts_them() {
    const N: i64 = 40;
    let c = cluster("drain-timeout", "timeout = \"2s\"\nrate = 5\nreconnect_jitter = \"1s\"").await;
    let tasks = clients(&c, N, 2).await;
    let total = (N + 2) as usize;
    let (status, report, took) = c.drain().await.unwrap();
    assert_eq!(status, 200, "{report}");
    let (drained, cut) = (count(&report, "drained"), count(&report, "cut"));
    let mut told = 0;
    for t in tasks {
        let seen = t.await.unwrap();
        seen.check_told(1000).unwrap_or_else(|e| panic!("{e}"));
        told += 1;
    }
    println!("timeout 2s at 5/s with {total} clients: /drain took {took:?}; {report}; op 6 drain: {told}");
    assert_eq!(field(&report, "timed_out"), "true", "{report}");
    assert_eq!(drained + cut, total, "{report}");
    // About 2 s at 5/s: ~11 paced; the rest cut.
    assert!((5..=20).contains(&drained), "{report}");
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_secs(10), "{took:?}");
    assert_eq!(told, total);
    assert_eq!(c.metric("goim_comet_drained_total ").await, total as f64);
    let status = tokio::task::spawn_blocking(move || c.comet.terminate()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn invalid_drain_settings_exit_64_naming_the_field() {
    let dir = Scratch::new("drain-invalid");
    let port = free_port();
    let path = dir.file("comet.toml", &format!("[admin]\naddr = \"127.0.0.1:{port}\"\n"));
    let cases = [
        ("GOIM_COMET__DRAIN__RATE", "0", "comet.drain.rate"),
        ("GOIM_COMET__DRAIN__TIMEOUT", "0s", "comet.drain.timeout"),
        ("GOIM_COMET__DRAIN__RECONNECT_JITTER", "soon", "comet.drain.reconnect_jitter"),
    ];
    for (var, value, field) in cases {
        let out =
            Command::new(binary("goim-comet")).arg("--config").arg(&path).env(var, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}={value}: {stderr}");
        assert!(stderr.contains(field), "{var}={value} did not name {field}: {stderr}");
    }
}
