//! HTTP long-polling on comet's HTTP port: auth, poll, send, expiry, a kick and the stop, against
//! an in-process comet (`support`); pushes go straight to its keys and rooms. The tests that wait
//! out a poll's timeout or a session's heartbeat timeout run on paused time. What needs logic (a
//! token it rejects, pushes through its push API) or the root binary's demo assets stays in the
//! root crate's `tests/long_poll.rs`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use goim_api::{Frame, Op};
use goim_comet::Disconnect;
use goim_test_support::long_poll::Poller;
use goim_test_support::{Transport, eventually};
use support::*;

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

#[tokio::test(start_paused = true)]
async fn an_empty_poll_answers_204_and_an_unknown_session_404() {
    let s = start().await;
    let p = Poller::open(s.websocket, 1, "lp", "", &[]).await;
    assert_eq!(p.poll(0.2).await.0, 204);
    let stranger = p.for_session("0123");
    assert_eq!(stranger.poll(0.2).await.0, 404);
}

#[tokio::test]
async fn send_answers_heartbeat_change_room_sub_unsub_and_uplink_in_one_request() {
    let s = start().await;
    let p = Poller::open(s.websocket, 33, "lp33", "live://a", &[]).await;
    let f = |op: Op, seq, body: &'static [u8]| Frame {
        ver: 1,
        op: op.code(),
        seq,
        body: Bytes::from_static(body),
    };
    let (status, replies) = p
        .send(&[
            f(Op::Heartbeat, 1, b""),
            f(Op::ChangeRoom, 2, b"live://b"),
            f(Op::Sub, 3, b"1000"),
            f(Op::Unsub, 4, b"1001"),
            f(Op::SendMsg, 5, b"up"),
        ])
        .await;
    assert_eq!(status, 200);
    let ops: Vec<(i32, i32)> = replies.iter().map(|r| (r.op, r.seq)).collect();
    assert_eq!(ops, [(3, 1), (13, 2), (15, 3), (17, 4), (4, 5)]);
    assert_eq!(&replies[0].body[..], &1i32.to_be_bytes());
    assert_eq!(&replies[1].body[..], b"live://b");
    push_key(&s, "lp33", 1000, b"subscribed");
    push_room(&s, "live://b", 1000, b"new room");
    let got = p.collect(2, WAIT).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["subscribed", "new room"]);
}

#[tokio::test]
async fn a_malformed_send_gets_400_and_ends_the_session() {
    let s = start().await;
    let p = Poller::open(s.websocket, 34, "lp34", "", &[]).await;
    let url = format!("{}/poll/send?sid={}", p.base(), p.sid());
    let bad = Bytes::from_static(&[0, 0, 0, 16, 0, 15, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1]);
    let resp = reqwest::Client::new().post(url).body(bad).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(p.poll(0.1).await.0, 404);
    let m = s.metrics();
    assert_eq!(sample(&m, "goim_comet_bad_input_total{transport=\"long_poll\"}"), 1.0, "{m}");
}

#[tokio::test(start_paused = true)]
async fn a_session_that_neither_polls_nor_sends_expires_and_leaves_its_room() {
    let s = start_with(|_| {}, Duration::from_millis(500)).await;
    let p = Poller::open(s.websocket, 35, "lp35", "live://exp", &[]).await;
    assert_eq!(s.comet.room_online("live://exp"), 1);
    assert!(eventually(WAIT, || async { s.comet.room_online("live://exp") == 0 }).await);
    assert_eq!(p.poll(0.1).await.0, 404);
    let m = s.metrics();
    assert_eq!(sample(&m, "goim_comet_disconnects_total{reason=\"heartbeat_timeout\"}"), 1.0, "{m}");
}

#[tokio::test(start_paused = true)]
async fn polling_keeps_a_session_alive_past_its_heartbeat_timeout() {
    let s = start_with(|_| {}, Duration::from_millis(400)).await;
    let p = Poller::open(s.websocket, 36, "lp36", "", &[1000]).await;
    for _ in 0..4 {
        assert_eq!(p.poll(0.3).await.0, 204);
    }
    push_key(&s, "lp36", 1000, b"alive");
    assert_eq!(text(&p.collect(1, WAIT).await[0]), "alive");
}

#[tokio::test]
async fn a_socket_with_the_same_key_kicks_the_long_poll_session_with_op_6() {
    let s = start().await;
    let p = Poller::open(s.websocket, 37, "lp37", "", &[]).await;
    let _socket = login(&s, Transport::Tcp, 37, "lp37", "", &[]).await;
    let (status, frames) = p.poll(1.0).await;
    assert_eq!(status, 200);
    assert_eq!(frames.last().unwrap().op, Op::DisconnectReply.code());
    assert_eq!(p.poll(0.1).await.0, 404);
}

#[tokio::test(start_paused = true)]
async fn stopping_answers_a_waiting_poll_with_op_6_shutdown() {
    let s = start().await;
    let p = Poller::open(s.websocket, 38, "lp38", "", &[]).await;
    let waiting = tokio::spawn(async move { p.poll(10.0).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.comet.stop(Disconnect::Shutdown, WAIT).await);
    let (status, frames) = waiting.await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&frames.last().unwrap().body).unwrap();
    assert_eq!(v["reason"], "shutdown");
}

#[tokio::test]
async fn oversized_and_chunked_bodies_are_refused() {
    let s = start().await;
    let url = format!("http://{}/poll/auth", s.websocket);
    let big = vec![b'x'; 10_000];
    let resp = reqwest::Client::new().post(&url).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))]);
    let resp =
        reqwest::Client::new().post(&url).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    assert_eq!(resp.status(), 411);
}
