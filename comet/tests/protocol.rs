//! The client protocol over real TCP and WebSocket sockets, against an in-process comet whose
//! logic only accepts goim's JSON token (`support::JsonLogic`). Pushes go straight to
//! [`Comet::push_keys`] and [`Comet::broadcast_room`] (`support::push_key`, `push_room`), as
//! job's dispatch calls them. The timeout tests run on paused time. What needs logic's behaviour
//! (the cluster's online count, routing by user) stays in the root crate's `tests/protocol.rs`.
//!
//! [`Comet::push_keys`]: goim_comet::Comet::push_keys
//! [`Comet::broadcast_room`]: goim_comet::Comet::broadcast_room

mod support;

use std::time::Duration;

use bytes::Bytes;
use goim_api::{Frame, Op};
use goim_test_support::client::{op6_reason, packet};
use goim_test_support::{Client, Closed, Transport, json_token};
use support::*;

#[tokio::test]
async fn auth_reply_echoes_ver_and_seq_with_an_empty_body() {
    let s = start().await;
    for t in BOTH {
        let mut c = Client::connect(t, s.addr(t)).await.unwrap();
        let token = json_token(1, "", "live://1", &[1000]);
        c.send(&Frame { ver: 3, op: 7, seq: 41, body: Bytes::from(token) }).await.unwrap();
        let reply = c.recv_timeout(WAIT).await.unwrap().unwrap();
        assert_eq!((reply.ver, reply.op, reply.seq, reply.body.len()), (3, 8, 41, 0), "{t:?}");
    }
}

#[tokio::test]
async fn change_room_echoes_the_body_and_moves_the_connection() {
    let s = start().await;
    for t in BOTH {
        let mut c = login(&s, t, 1, "k", "live://old", &[]).await;
        c.send(&packet(1, Op::ChangeRoom, 5, b"live://new")).await.unwrap();
        let reply = c.recv_op(Op::ChangeRoomReply.code(), WAIT).await.unwrap();
        assert_eq!((reply.seq, &reply.body[..]), (5, &b"live://new"[..]));
        push_room(&s, "live://old", 1000, b"to-old");
        push_room(&s, "live://new", 1000, b"to-new");
        let got = c.recv_op(1000, WAIT).await.unwrap();
        assert_eq!(&got.body[..], b"to-new", "{t:?}: the old room's push must not arrive");
    }
}

#[tokio::test]
async fn sub_and_unsub_echo_their_body_and_change_what_key_pushes_reach() {
    let s = start().await;
    for t in BOTH {
        let mut c = login(&s, t, 1, "sub", "", &[1000]).await;
        c.send(&packet(1, Op::Sub, 2, b"1001,1002")).await.unwrap();
        let r = c.recv_op(Op::SubReply.code(), WAIT).await.unwrap();
        assert_eq!(&r.body[..], b"1001,1002");
        c.send(&packet(1, Op::Unsub, 3, b"1000")).await.unwrap();
        let r = c.recv_op(Op::UnsubReply.code(), WAIT).await.unwrap();
        assert_eq!(&r.body[..], b"1000");
        push_key(&s, "sub", 1000, b"unsubscribed");
        push_key(&s, "sub", 1001, b"subscribed");
        let got = c.recv_timeout(WAIT).await.unwrap().unwrap();
        assert_eq!((got.op, &got.body[..]), (1001, &b"subscribed"[..]), "{t:?}");
    }
}

#[tokio::test]
async fn uplink_ops_are_echoed_with_an_empty_body() {
    let s = start().await;
    for t in BOTH {
        let mut c = login(&s, t, 1, "up", "", &[]).await;
        c.send(&packet(2, Op::SendMsg, 77, b"hello")).await.unwrap();
        let r = c.recv_timeout(WAIT).await.unwrap().unwrap();
        assert_eq!((r.ver, r.op, r.seq, r.body.len()), (2, 4, 77, 0), "{t:?}");
    }
}

#[tokio::test]
async fn a_first_packet_other_than_auth_gets_op_6_protocol_and_a_close() {
    let s = start().await;
    for t in BOTH {
        let mut c = Client::connect(t, s.addr(t)).await.unwrap();
        c.send(&packet(1, Op::Heartbeat, 1, b"")).await.unwrap();
        let (seen, _) = c.until_closed(WAIT).await.unwrap();
        assert_eq!(seen.len(), 1, "{t:?}: only op 6 before the close");
        assert_eq!(op6_reason(&seen[0]), "protocol");
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_authenticates_is_closed_after_the_handshake_timeout() {
    let s = start_with(|c| c.protocol.handshake_timeout = Duration::from_millis(300), LOGIC_HEARTBEAT).await;
    for t in BOTH {
        let mut c = Client::connect(t, s.addr(t)).await.unwrap();
        let (seen, _) = c.until_closed(WAIT).await.unwrap();
        assert_eq!(op6_reason(&seen[0]), "protocol", "{t:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_missing_heartbeat_closes_the_connection_after_the_session_timeout() {
    let s = start_with(|_| {}, Duration::from_millis(400)).await;
    for t in BOTH {
        let mut c = login(&s, t, 1, "quiet", "", &[]).await;
        let (seen, _) = c.until_closed(WAIT).await.unwrap();
        assert_eq!(op6_reason(seen.last().unwrap()), "heartbeat_timeout", "{t:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_connection_alive_past_the_timeout() {
    let s = start_with(|_| {}, Duration::from_millis(400)).await;
    let mut c = login(&s, Transport::Tcp, 1, "beat", "", &[]).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.heartbeat().await.expect("still connected");
    }
}

#[tokio::test]
async fn malformed_packets_close_only_that_connection_and_are_counted() {
    let s = start().await;
    let mut good = login(&s, Transport::Tcp, 9, "good", "", &[1000]).await;
    let cases: [(&str, Vec<u8>); 3] = [
        ("header length 15", vec![0, 0, 0, 16, 0, 15, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0, 0, 16, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1]),
        ("oversized length", vec![0, 0, 0x20, 0, 0, 16, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1]),
    ];
    for t in BOTH {
        for (what, bytes) in &cases {
            let mut c = login(&s, t, 1, &format!("bad-{t:?}"), "", &[]).await;
            c.send_raw(Bytes::from(bytes.clone())).await.unwrap();
            let (seen, _) = c.until_closed(WAIT).await.unwrap();
            assert_eq!(op6_reason(seen.last().unwrap()), "protocol", "{t:?} {what}");
        }
    }
    // A WebSocket message whose packLen claims more than the message holds.
    let mut c = login(&s, Transport::Ws, 1, "short", "", &[]).await;
    c.send_raw(Bytes::from_static(&[0, 0, 0, 40, 0, 16, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 1, 2])).await.unwrap();
    let (seen, _) = c.until_closed(WAIT).await.unwrap();
    assert_eq!(op6_reason(seen.last().unwrap()), "protocol");

    let m = s.metrics();
    let bad = sample(&m, "goim_comet_bad_input_total{transport=\"tcp\"}")
        + sample(&m, "goim_comet_bad_input_total{transport=\"ws\"}");
    assert_eq!(bad, 7.0, "{m}");
    push_key(&s, "good", 1000, b"still here");
    assert_eq!(&good.recv_op(1000, WAIT).await.unwrap().body[..], b"still here");
}

#[tokio::test]
async fn a_websocket_upgrade_on_another_path_gets_404() {
    let s = start().await;
    let err = Client::ws(&format!("ws://{}/other", s.websocket)).await.err().unwrap();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
}

#[tokio::test]
async fn websocket_pings_get_pongs() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/sub", s.websocket)).await.unwrap();
    let auth = Frame { ver: 1, op: 7, seq: 1, body: Bytes::from(json_token(1, "p", "", &[])) };
    ws.send(Message::Binary(auth.to_bytes())).await.unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    let mut saw_pong = false;
    while let Ok(Some(msg)) = tokio::time::timeout(WAIT, ws.next()).await {
        if let Message::Pong(p) = msg.unwrap() {
            assert_eq!(&p[..], b"are you there");
            saw_pong = true;
            break;
        }
    }
    assert!(saw_pong);
}

#[tokio::test(start_paused = true)]
async fn a_closed_websocket_gets_a_close_frame_after_op_6() {
    let s = start_with(|c| c.protocol.handshake_timeout = Duration::from_millis(200), LOGIC_HEARTBEAT).await;
    let mut c = Client::connect(Transport::Ws, s.websocket).await.unwrap();
    let (_, closed) = c.until_closed(WAIT).await.unwrap();
    assert_eq!(closed, Closed::Close(1002));
}
