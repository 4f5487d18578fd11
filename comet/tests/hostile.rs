//! Hostile clients against an in-process comet (issue #15 item 4; `support`): one address over
//! `admission.max_per_ip` is told so (op 6 on TCP, 429 on the HTTP port) while other addresses
//! are not affected; slowloris clients (a WebSocket upgrade head, a long-poll body trickled a
//! byte at a time, sockets that never authenticate) are each cut off by the handshake timeout
//! and counted, while a connected client keeps receiving its pushes.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use goim_api::frame::decode_stream;
use goim_api::{Frame, Op};
use goim_test_support::{Client, Transport, eventually, json_token};
use serde_json::Value;
use support::{LOGIC_HEARTBEAT, WAIT, login, push_room, sample, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from`.
async fn dial_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    sock.connect(to).await.unwrap()
}

/// Reads packets from a raw goim TCP stream until one arrives (or the stream ends).
async fn read_packet(s: &mut TcpStream) -> Option<Frame> {
    let mut buf = BytesMut::new();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(f) = decode_stream(&mut buf, 1 << 20).unwrap() {
                return Some(f);
            }
            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    })
    .await
    .expect("a packet or the end within the wait")
}

/// Everything until the server closes (within the wait), as text.
async fn read_to_end(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("the server closes");
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade_request(host: SocketAddr) -> String {
    format!(
        "GET /sub HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test]
async fn one_address_holds_at_most_max_per_ip_connections_and_is_told_so() {
    let s = start_with(
        |c| {
            c.admission.max_per_ip = 3;
            c.admission.retry_min = Duration::from_millis(300);
            c.admission.retry_jitter = Duration::from_millis(200);
        },
        LOGIC_HEARTBEAT,
    )
    .await;
    let tcp = s.addr(Transport::Tcp);
    let ws = s.addr(Transport::Ws);

    // Three from 127.0.0.1 get in.
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(login(&s, Transport::Tcp, 10 + i, &format!("ip-{i}"), "live://ip", &[1000]).await);
    }

    // The fourth on TCP: op 6 before it even authenticates, then the end of the stream.
    let mut c = Client::connect(Transport::Tcp, tcp).await.unwrap();
    let f = c.recv_timeout(WAIT).await.unwrap().expect("a refusal, not a silent close");
    assert_eq!(f.op, Op::DisconnectReply.code());
    let v: Value = serde_json::from_slice(&f.body).unwrap();
    assert_eq!(v["reason"], "too_many_connections", "{v}");
    let ms = v["reconnect_after_ms"].as_u64().expect("a reconnect hint");
    assert!((300..=500).contains(&ms), "{ms}");
    assert!(c.recv_timeout(WAIT).await.unwrap().is_none(), "closed after the refusal");

    // On the HTTP port: 429 with Retry-After, before the request is read.
    let mut raw = TcpStream::connect(ws).await.unwrap();
    raw.write_all(upgrade_request(ws).as_bytes()).await.unwrap();
    let resp = read_to_end(&mut raw).await;
    assert!(resp.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{resp}");
    assert!(resp.contains("\r\nRetry-After: 1\r\n"), "{resp}");
    assert!(resp.contains("\"reason\"") || resp.contains("too_many_connections"), "{resp}");

    // Another address is not affected.
    let mut other = dial_from("127.0.0.2", tcp).await;
    let auth = Frame {
        ver: 1,
        op: Op::Auth.code(),
        seq: 1,
        body: json_token(20, "ip-other", "live://ip", &[1000]).into(),
    };
    other.write_all(&auth.to_bytes()).await.unwrap();
    assert_eq!(read_packet(&mut other).await.expect("auth reply").op, Op::AuthReply.code());

    // A closed connection frees its place.
    drop(held.pop());
    let got_in = eventually(WAIT, || async {
        let mut c = Client::connect(Transport::Tcp, tcp).await.unwrap();
        c.login(13, "ip-again", "live://ip", &[1000]).await.is_ok()
    })
    .await;
    assert!(got_in, "a place freed by a closed connection is taken again");

    // The ones held still receive.
    push_room(&s, "live://ip", 1000, b"still here");
    for c in &mut held {
        assert_eq!(&c.recv_op(1000, WAIT).await.unwrap().body[..], b"still here");
    }
    let m = s.metrics();
    assert!(sample(&m, "goim_comet_admission_refused_total{reason=\"per_ip\"}") >= 2.0, "{m}");
}

/// How long after `start` the server closed `s` (reading and dropping whatever it sent).
async fn closed_after(mut s: TcpStream, start: Instant, trickle: Option<&'static [u8]>) -> Duration {
    let mut buf = [0u8; 1024];
    let mut next = 0;
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(200)), if trickle.is_some() => {
                let bytes = trickle.unwrap();
                if s.write_all(&bytes[next % bytes.len()..][..1]).await.is_err() {
                    return start.elapsed();
                }
                next += 1;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "a slow client was never cut off");
    }
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_by_the_handshake_timeout_and_do_not_hurt_others() {
    const EACH: usize = 100;
    let timeout = Duration::from_secs(1);
    let s = start_with(|c| c.protocol.handshake_timeout = timeout, LOGIC_HEARTBEAT).await;
    let (tcp, ws) = (s.addr(Transport::Tcp), s.addr(Transport::Ws));
    let mut watcher = login(&s, Transport::Ws, 1, "watcher", "live://slow", &[1000]).await;

    let start = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..EACH {
        // An upgrade head that never ends.
        let mut c = TcpStream::connect(ws).await.unwrap();
        c.write_all(b"GET /sub HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.spawn(
            async move { ("request_head", closed_after(c, start, Some(b"X-Slow: aaaaaaaa\r\n")).await) },
        );
        // A long-poll auth body trickled a byte at a time.
        let mut c = TcpStream::connect(ws).await.unwrap();
        c.write_all(b"POST /poll/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n").await.unwrap();
        slow.spawn(async move { ("request_body", closed_after(c, start, Some(b"{")).await) });
        // TCP sockets that never send the auth packet.
        let c = TcpStream::connect(tcp).await.unwrap();
        slow.spawn(async move { ("auth_packet", closed_after(c, start, None).await) });
        // WebSocket upgrades that never send the auth packet.
        let mut c = TcpStream::connect(ws).await.unwrap();
        c.write_all(upgrade_request(ws).as_bytes()).await.unwrap();
        slow.spawn(async move { ("auth_packet", closed_after(c, start, None).await) });
    }

    // Meanwhile the connected client gets every push.
    for i in 0..10 {
        let body = format!("push-{i}");
        push_room(&s, "live://slow", 1000, body.as_bytes());
        assert_eq!(watcher.recv_op(1000, WAIT).await.unwrap().body, body.as_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut latest = Duration::ZERO;
    let mut n = 0;
    while let Some(r) = slow.join_next().await {
        let (stage, after) = r.unwrap();
        assert!(after < timeout * 4, "a {stage} slowloris lasted {after:?} against a {timeout:?} timeout");
        latest = latest.max(after);
        n += 1;
    }
    assert_eq!(n, 4 * EACH);
    let m = s.metrics();
    let count =
        |stage: &str| sample(&m, &format!("goim_comet_handshake_timeouts_total{{stage=\"{stage}\"}}"));
    println!(
        "{n} slowloris connections cut off, the last {latest:?} after they started (timeout {timeout:?}); \
         counted: request_head {}, request_body {}, auth_packet {}",
        count("request_head"),
        count("request_body"),
        count("auth_packet")
    );
    assert_eq!(count("request_head"), EACH as f64, "{m}");
    assert_eq!(count("request_body"), EACH as f64, "{m}");
    assert_eq!(count("auth_packet"), 2.0 * EACH as f64, "{m}");
    // Still fine after them.
    push_room(&s, "live://slow", 1000, b"after");
    assert_eq!(&watcher.recv_op(1000, WAIT).await.unwrap().body[..], b"after");
}
