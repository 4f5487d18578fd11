//! Stopping: every client is told (op 6 "shutdown") and the process exits within its grace period.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goim_api::Op;
use goim_test_support::{Client, Transport};
use support::*;

fn op6(f: &goim_api::Frame) -> serde_json::Value {
    assert_eq!(f.op, Op::DisconnectReply.code(), "{f:?}");
    serde_json::from_slice(&f.body).unwrap()
}

#[tokio::test]
async fn stopping_tells_every_client_with_a_jittered_reconnect_hint() {
    let s = start().await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let t = if i % 2 == 0 { Transport::Tcp } else { Transport::Ws };
        clients.push(login(&s, t, i, &format!("s{i}"), "live://1", &[]).await);
    }
    assert!(s.stop().await, "stopped within the grace period");
    let mut hints = Vec::new();
    for c in &mut clients {
        let (seen, _) = c.until_closed(WAIT).await.unwrap();
        let v = op6(seen.last().expect("op 6 before the close"));
        assert_eq!(v["reason"], "shutdown");
        hints.push(v["reconnect_after_ms"].as_u64().unwrap());
    }
    hints.sort();
    hints.dedup();
    assert!(hints.len() > 1, "reconnect hints are spread, not all equal: {hints:?}");
}

#[tokio::test]
async fn pushes_accepted_before_stop_are_delivered_before_op_6() {
    // The first push goes out at once; the next two follow it within `max_delay`, so they wait
    // in their batch (up to a second) and are still inside job when stop begins.
    let s = start_with(|c| c.job.room.max_delay = Duration::from_secs(1)).await;
    let mut c = login(&s, Transport::Ws, 1, "drain", "live://d", &[]).await;
    for body in [&b"one"[..], b"two", b"three"] {
        push_ok(&s, "/goim/push/room?operation=1000&type=live&room=d", body).await;
    }
    assert!(s.stop().await);
    let (seen, _) = c.until_closed(WAIT).await.unwrap();
    let bodies: Vec<&[u8]> = seen.iter().map(|f| &f.body[..]).collect();
    assert_eq!(&bodies[..3], &[&b"one"[..], b"two", b"three"]);
    assert_eq!(op6(&seen[3])["reason"], "shutdown");
}

#[tokio::test]
async fn after_stop_nothing_listens() {
    let s = start().await;
    let tcp = s.addrs.tcp[0];
    assert!(s.stop().await);
    match tokio::net::TcpStream::connect(tcp).await {
        Err(_) => {}
        // A connect to a free loopback port can pick that same port as its source and connect
        // to itself (TCP simultaneous open); that is not a listener.
        Ok(c) => assert_eq!(c.local_addr().unwrap(), c.peer_addr().unwrap(), "something still listens"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn sigterm_sends_op_6_to_every_client_and_exits_within_the_grace_period() {
    let (tcp, ws, http, admin) = (free_port(), free_port(), free_port(), free_port());
    let mut file = tempfile();
    write!(
        file.1,
        "[admin]\naddr = \"127.0.0.1:{admin}\"\n[shutdown]\ngrace = \"3s\"\n\
         [comet.tcp]\nbind = [\"127.0.0.1:{tcp}\"]\n[comet.websocket]\nbind = [\"127.0.0.1:{ws}\"]\n\
         [logic.http]\naddr = \"127.0.0.1:{http}\"\n"
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_goim"))
        .arg("--config")
        .arg(&file.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut clients = Vec::new();
    for (i, (t, port)) in [(Transport::Tcp, tcp), (Transport::Ws, ws)].into_iter().enumerate() {
        let mut c = None;
        for _ in 0..100 {
            if let Ok(conn) = Client::connect(t, addr(port)).await {
                c = Some(conn);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut c = c.expect("the binary listens");
        c.login(i as i64, &format!("sig{i}"), "", &[]).await.unwrap();
        clients.push(c);
    }
    let started = Instant::now();
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    for c in &mut clients {
        let (seen, _) = c.until_closed(WAIT).await.unwrap();
        assert_eq!(op6(seen.last().expect("op 6"))["reason"], "shutdown");
    }
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running long after the grace period");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_file(&file.0);
}

#[test]
fn invalid_configuration_exits_64_naming_the_field() {
    let mut file = tempfile();
    write!(file.1, "[comet.outbox]\ncapacity = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_goim")).arg("--config").arg(&file.0).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outbox.capacity"), "{out:?}");
    let _ = std::fs::remove_file(&file.0);
}

#[test]
fn print_config_shows_the_embedded_defaults_as_toml() {
    let out = Command::new(env!("CARGO_BIN_EXE_goim")).arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = goim::Config::parse(&text).expect("printed config parses back");
    assert_eq!(parsed, goim::Config::default());
}

/// The embedded binary is loaded like the tiers: the file over the embedded defaults, then the
/// `GOIM_*` overrides (it used to ignore the environment).
#[test]
fn the_embedded_binary_takes_environment_overrides_over_its_file() {
    let mut file = tempfile();
    write!(file.1, "[comet]\nmax_connections = 5\n[logic.http]\naddr = \"127.0.0.1:3999\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_goim"))
        .arg("--config")
        .arg(&file.0)
        .arg("--print-config")
        .env("GOIM_COMET__MAX_CONNECTIONS", "7")
        .env("GOIM_COMET__DRAIN__RATE", "9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = goim::Config::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.comet.max_connections, 7, "the override wins over the file");
    assert_eq!(printed.comet.drain.rate, 9);
    assert_eq!(printed.logic.http.addr, "127.0.0.1:3999", "the file still applies");
    assert_eq!(
        printed.logic.auth.mode,
        goim::Config::default().logic.auth.mode,
        "over the embedded defaults"
    );

    // A bad override is refused like a bad file, naming the key; --check-config says so too.
    for args in [&["--print-config"][..], &["--check-config"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_goim"))
            .args(args)
            .env("GOIM_COMET__OUTBOX__CAPACITY", "0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("comet.outbox.capacity"), "{out:?}");
    }
    let ok = Command::new(env!("CARGO_BIN_EXE_goim")).arg("--check-config").output().unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let _ = std::fs::remove_file(&file.0);
}

/// Every connection is a file: a binary started with a low soft limit (systemd's 1024, here 256)
/// raises it to the hard limit before it serves.
#[tokio::test]
async fn the_binary_raises_its_open_files_limit_to_the_hard_limit() {
    let (tcp, ws, http, admin) = (free_port(), free_port(), free_port(), free_port());
    let mut file = tempfile();
    write!(
        file.1,
        "[admin]\naddr = \"127.0.0.1:{admin}\"\n[comet.tcp]\nbind = [\"127.0.0.1:{tcp}\"]\n\
         [comet.websocket]\nbind = [\"127.0.0.1:{ws}\"]\n[logic.http]\naddr = \"127.0.0.1:{http}\"\n"
    )
    .unwrap();
    let child = Command::new("bash")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_goim"))
        .arg(&file.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = support::process::Proc::adopt("goim", child);
    assert!(support::process::ready(admin).await, "goim never became ready");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proc.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (soft, hard) = (nums[0], nums[1]);
    assert!(hard > 256, "the hard limit here is {hard}: nothing to raise to");
    assert_eq!(soft, hard, "started with a soft limit of 256: {line}");
    assert!(proc.terminate().success(), "goim exit status");
    let _ = std::fs::remove_file(&file.0);
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("goim-test-{}-{n}.toml", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    (path, f)
}
