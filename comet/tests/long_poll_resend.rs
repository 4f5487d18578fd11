//! The long-poll cursor: a poll response that did not reach its client is sent again, a response
//! that did is never sent twice, and `ack` lets a client ask for the resend itself. Against an
//! in-process comet (`support`); pushes go straight to its keys. Paused time: the polls that wait
//! out their timeout answer at once.

mod support;

use std::time::Duration;

use goim_api::Frame;
use goim_api::frame::split_packets;
use goim_test_support::{eventually, json_token};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SEQ: &str = "x-goim-poll-seq";

struct Poller {
    base: String,
    sid: String,
    key: String,
    /// Kept-alive connections; `None`: a new connection for every poll.
    http: Option<reqwest::Client>,
}

/// One poll's answer.
struct Answer {
    status: u16,
    seq: Option<u64>,
    frames: Vec<Frame>,
}

impl Answer {
    fn bodies(&self) -> Vec<String> {
        self.frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f.body[..f.body.len().min(10)]).into_owned())
            .collect()
    }
}

impl Poller {
    async fn open(s: &Server, mid: i64, key: &str) -> Poller {
        let base = format!("http://{}", s.websocket);
        let resp = reqwest::Client::new()
            .post(format!("{base}/poll/auth"))
            .body(json_token(mid, key, "", &[1000]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        let sid = v["sid"].as_str().unwrap().to_string();
        Poller { base, sid, key: key.into(), http: Some(reqwest::Client::new()) }
    }

    async fn poll(&self, timeout_s: f64, ack: Option<u64>) -> Answer {
        let mut url = format!("{}/poll?sid={}&timeout={timeout_s}", self.base, self.sid);
        if let Some(a) = ack {
            url.push_str(&format!("&ack={a}"));
        }
        let http = self
            .http
            .clone()
            .unwrap_or_else(|| reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap());
        let resp = http.get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        let seq = resp.headers().get(SEQ).map(|v| v.to_str().unwrap().parse().unwrap());
        let body = resp.bytes().await.unwrap();
        let frames =
            if status == 200 { split_packets(body).collect::<Result<_, _>>().unwrap() } else { vec![] };
        Answer { status, seq, frames }
    }

    /// The request line of a poll, for a raw socket.
    fn request(&self) -> String {
        format!("GET /poll?sid={}&timeout=5 HTTP/1.1\r\nHost: goim\r\n\r\n", self.sid)
    }
}

/// Pushes the messages numbered `range`, `size` bytes each, to `key`, and waits until comet
/// queued them all.
async fn push_numbered(s: &Server, key: &str, range: std::ops::Range<usize>, size: usize) {
    let before = sample(&s.metrics(), "goim_comet_queued_total{");
    let n = range.len();
    for i in range {
        let mut body = format!("msg-{i:06}").into_bytes();
        body.resize(size.max(body.len()), b'.');
        push_key(s, key, 1000, &body);
    }
    let want = before + n as f64;
    assert!(
        eventually(WAIT, || async { sample(&s.metrics(), "goim_comet_queued_total{") >= want }).await,
        "pushes queued"
    );
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("msg-{i:06}")).collect()
}

fn resends(s: &Server) -> f64 {
    sample(&s.metrics(), "goim_comet_long_poll_resends_total")
}

#[tokio::test(start_paused = true)]
async fn a_poll_cut_off_mid_response_is_answered_again_by_the_next_poll() {
    // 200 pushes of 60 KB: a 12 MB response, more than the kernel buffers of a client that reads
    // only the head, so the server is still writing when the client resets the connection.
    const N: usize = 200;
    let s = start_with(|c| c.outbox.max_bytes = 16 << 20, LOGIC_HEARTBEAT).await;
    let p = Poller::open(&s, 41, "rs41").await;
    push_numbered(&s, &p.key, 0..N, 60 << 10).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = socket.connect(s.websocket).await.unwrap();
    raw.write_all(p.request().as_bytes()).await.unwrap();
    // Read the head only (a byte at a time, so nothing of the body is taken).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(raw.read(&mut b).await.unwrap(), 1, "head ended early: {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("X-Goim-Poll-Seq: 1\r\n"), "{head}");
    // Closing with unread bytes in the receive buffer resets the connection: the server's write
    // of the rest fails.
    drop(raw);

    let again = p.poll(5.0, None).await;
    assert_eq!((again.status, again.seq), (200, Some(1)), "the same response, the same seq");
    assert_eq!(again.bodies(), numbered(0..N), "every packet of the lost response, in order");
    assert_eq!(resends(&s), 1.0);
    // It was written this time: the next poll has nothing (no duplicate).
    let after = p.poll(0.3, None).await;
    assert_eq!((after.status, after.seq), (204, None));
    assert_eq!(resends(&s), 1.0);
}

#[tokio::test(start_paused = true)]
async fn polls_that_are_written_deliver_every_push_exactly_once_with_rising_seqs() {
    let s = start().await;
    // Kept-alive connections, and a new connection for every poll (where the next poll may
    // arrive before the task that wrote the last one reports).
    for (mid, fresh) in [(42, false), (43, true)] {
        let mut p = Poller::open(&s, mid, &format!("rs{mid}")).await;
        if fresh {
            p.http = None;
        }
        let mut got = Vec::new();
        let mut seqs = Vec::new();
        for round in 0..5 {
            push_numbered(&s, &p.key, round * 20..(round + 1) * 20, 0).await;
            let end = tokio::time::Instant::now() + WAIT;
            while got.len() < (round + 1) * 20 && tokio::time::Instant::now() < end {
                let a = p.poll(1.0, None).await;
                assert!(a.status == 200 || a.status == 204, "poll status {}", a.status);
                seqs.extend(a.seq);
                got.extend(a.bodies());
            }
        }
        let extra = p.poll(0.3, None).await;
        assert_eq!(extra.status, 204, "nothing sent twice: {:?}", extra.bodies());
        assert_eq!(got, numbered(0..100), "fresh connections: {fresh}");
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "one seq per response with packets");
    }
    assert_eq!(resends(&s), 0.0);
}

#[tokio::test(start_paused = true)]
async fn an_older_ack_resends_the_last_response_and_the_last_seq_acknowledges_it() {
    let s = start().await;
    let p = Poller::open(&s, 44, "rs44").await;
    push_numbered(&s, &p.key, 0..3, 0).await;
    let first = p.poll(1.0, None).await;
    assert_eq!((first.status, first.seq), (200, Some(1)));
    assert_eq!(first.bodies(), numbered(0..3));

    // Written, but the client says it has only seq 0: the same response again, before anything new.
    push_numbered(&s, &p.key, 3..4, 0).await;
    let again = p.poll(1.0, Some(0)).await;
    assert_eq!((again.status, again.seq), (200, Some(1)));
    assert_eq!(again.bodies(), numbered(0..3));
    assert_eq!(resends(&s), 1.0);

    let next = p.poll(1.0, Some(1)).await;
    assert_eq!((next.status, next.seq), (200, Some(2)));
    assert_eq!(next.bodies(), numbered(3..4));
    let empty = p.poll(0.2, Some(2)).await;
    assert_eq!((empty.status, empty.seq), (204, None));
    assert_eq!(resends(&s), 1.0);

    assert_eq!(p.poll(0.1, Some(3)).await.status, 400, "an ack ahead of the last seq");
    assert_eq!(p.poll(0.1, None).await.status, 204, "the session survives a bad ack");
    let url = format!("{}/poll?sid={}&ack=x", p.base, p.sid);
    assert_eq!(reqwest::get(url).await.unwrap().status(), 400);
}

#[tokio::test(start_paused = true)]
async fn a_reset_before_the_head_is_read_keeps_the_packets_for_an_acking_client() {
    // An acking client: whatever happened to the connection, ack decides. Here the server's
    // write may even have succeeded into the kernel; the client never read it and says so.
    let s = start().await;
    let p = Poller::open(&s, 45, "rs45").await;
    push_numbered(&s, &p.key, 0..2, 0).await;
    let mut raw = tokio::net::TcpStream::connect(s.websocket).await.unwrap();
    raw.write_all(p.request().as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(raw);
    let again = p.poll(1.0, Some(0)).await;
    assert_eq!((again.status, again.seq), (200, Some(1)));
    assert_eq!(again.bodies(), numbered(0..2));
}
