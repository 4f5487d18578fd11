//! Pushes through logic's HTTP API reach exactly the right clients, over both transports.

mod support;

use std::time::Duration;

use goim_test_support::Transport;
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_key_push_reaches_that_key_only() {
    let s = start().await;
    let mut a = login(&s, Transport::Tcp, 1, "ka", "", &[1000]).await;
    let mut b = login(&s, Transport::Ws, 2, "kb", "", &[1000]).await;
    push_ok(&s, "/goim/push/keys?operation=1000&keys=kb", b"for b").await;
    push_ok(&s, "/goim/push/keys?operation=1000&keys=ka&keys=kb", b"for both").await;
    assert_eq!(&b.recv_op(1000, WAIT).await.unwrap().body[..], b"for b");
    assert_eq!(&b.recv_op(1000, WAIT).await.unwrap().body[..], b"for both");
    assert_eq!(&a.recv_op(1000, WAIT).await.unwrap().body[..], b"for both", "a got b's push first");
}

#[tokio::test]
async fn tcp_pushes_are_raw_packets_and_websocket_pushes_are_wrapped_in_op_9() {
    let s = start().await;
    let mut tcp = login(&s, Transport::Tcp, 1, "raw-t", "", &[1000]).await;
    let mut ws = login(&s, Transport::Ws, 1, "raw-w", "", &[1000]).await;
    // A key push has goim's header: ver 1, seq 0.
    push_ok(&s, "/goim/push/keys?operation=1000&keys=raw-t&keys=raw-w", b"hi").await;
    let t = tcp.recv_timeout(WAIT).await.unwrap().unwrap();
    assert_eq!((t.ver, t.op, t.seq, &t.body[..]), (1, 1000, 0, &b"hi"[..]));
    assert_eq!(tcp.raw_messages, 0);
    let w = ws.recv_timeout(WAIT).await.unwrap().unwrap();
    assert_eq!((w.ver, w.op, w.seq, &w.body[..]), (1, 1000, 0, &b"hi"[..]));
    assert_eq!(ws.raw_messages, 1, "the push came as one op-9 message");
    // A mid push carries its position in the user's stream (odd ver, seq the offset), the same
    // on both transports.
    push_ok(&s, "/goim/push/mids?operation=1000&mids=1", b"pos").await;
    let t = tcp.recv_timeout(WAIT).await.unwrap().unwrap();
    let w = ws.recv_timeout(WAIT).await.unwrap().unwrap();
    assert_eq!((t.ver, t.seq), (w.ver, w.seq));
    assert_eq!(
        goim_api::Position::from_header(t.ver, t.seq).map(|p| (p.0, p.2)),
        Some((goim_api::Stream::User, 1))
    );
}

#[tokio::test]
async fn a_mid_push_reaches_every_device_of_that_user() {
    let s = start().await;
    let mut phone = login(&s, Transport::Tcp, 42, "phone", "", &[1000]).await;
    let mut web = login(&s, Transport::Ws, 42, "web", "", &[1000]).await;
    let mut other = login(&s, Transport::Tcp, 43, "other", "", &[1000]).await;
    push_ok(&s, "/goim/push/mids?operation=1000&mids=42", b"to 42").await;
    push_ok(&s, "/goim/push/mids?operation=1000&mids=43", b"to 43").await;
    assert_eq!(&phone.recv_op(1000, WAIT).await.unwrap().body[..], b"to 42");
    assert_eq!(&web.recv_op(1000, WAIT).await.unwrap().body[..], b"to 42");
    assert_eq!(&other.recv_op(1000, WAIT).await.unwrap().body[..], b"to 43");
}

#[tokio::test]
async fn room_pushes_reach_every_member_in_push_order() {
    let s = start().await;
    let mut members = Vec::new();
    for (i, t) in [Transport::Tcp, Transport::Ws, Transport::Tcp, Transport::Ws].into_iter().enumerate() {
        members.push(login(&s, t, i as i64, &format!("m{i}"), "live://7", &[]).await);
    }
    let mut outsider = login(&s, Transport::Tcp, 9, "out", "live://8", &[]).await;
    const N: usize = 100;
    for i in 0..N {
        let body: &'static [u8] = Box::leak(format!("{i}").into_bytes().into_boxed_slice());
        push_ok(&s, "/goim/push/room?operation=1000&type=live&room=7", body).await;
    }
    push_ok(&s, "/goim/push/room?operation=1000&type=live&room=8", b"other room").await;
    for m in &mut members {
        for i in 0..N {
            let f = m.recv_op(1000, WAIT).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&f.body), i.to_string(), "out of order");
        }
    }
    assert_eq!(&outsider.recv_op(1000, WAIT).await.unwrap().body[..], b"other room");
}

#[tokio::test]
async fn room_pushes_ignore_accepts_but_key_mid_and_broadcast_pushes_respect_them() {
    let s = start().await;
    let mut c = login(&s, Transport::Ws, 5, "acc", "live://a", &[1001]).await;
    push_ok(&s, "/goim/push/keys?operation=1000&keys=acc", b"key-1000").await;
    push_ok(&s, "/goim/push/mids?operation=1000&mids=5", b"mid-1000").await;
    push_ok(&s, "/goim/push/all?operation=1000", b"all-1000").await;
    push_ok(&s, "/goim/push/room?operation=1000&type=live&room=a", b"room-1000").await;
    push_ok(&s, "/goim/push/all?operation=1001", b"all-1001").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(String::from_utf8_lossy(&c.recv_timeout(WAIT).await.unwrap().unwrap().body).into_owned());
    }
    got.sort();
    assert_eq!(got, ["all-1001", "room-1000"]);
}

#[tokio::test]
async fn a_broadcast_reaches_every_accepting_connection_even_when_paced() {
    let s = start().await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let t = if i % 2 == 0 { Transport::Tcp } else { Transport::Ws };
        clients.push(login(&s, t, i, &format!("b{i}"), "", &[1000]).await);
    }
    push_ok(&s, "/goim/push/all?operation=1000&speed=1000", b"everyone").await;
    for c in &mut clients {
        assert_eq!(&c.recv_op(1000, WAIT).await.unwrap().body[..], b"everyone");
    }
}

#[tokio::test]
async fn online_counts_reflect_a_new_connection_within_a_second() {
    let s = start_with(|c| c.comet.online.renew_interval = Duration::from_secs(1)).await;
    let _a = login(&s, Transport::Tcp, 1, "o1", "live://1000", &[]).await;
    let _b = login(&s, Transport::Ws, 2, "o2", "live://1000", &[]).await;
    let _c = login(&s, Transport::Ws, 3, "o3", "live://2000", &[]).await;
    let counted = eventually(Duration::from_millis(1100), || async {
        get(&s, "/goim/online/room?type=live&rooms=1000&rooms=2000").await.body["data"]
            == json!({"1000": 2, "2000": 1})
    })
    .await;
    assert!(counted, "{}", get(&s, "/goim/online/room?type=live&rooms=1000&rooms=2000").await.raw);
    let top = get(&s, "/goim/online/top?type=live&limit=1").await;
    assert_eq!(top.body["data"], json!([{"room_id": "1000", "count": 2}]), "{}", top.raw);
    let total = get(&s, "/goim/online/total").await;
    assert_eq!(total.body["data"]["conn_count"], 3, "{}", total.raw);
}

#[tokio::test]
async fn bad_push_parameters_get_http_400_with_goims_envelope() {
    let s = start().await;
    for path in [
        "/goim/push/room?operation=0&type=live&room=1",
        "/goim/push/room?operation=1000&room=1",
        "/goim/push/all?operation=x",
        "/goim/push/mids?operation=1000&mids=abc",
    ] {
        let r = push(&s, path, b"m").await;
        assert_eq!(r.status, 400, "{path}: {}", r.raw);
        assert_eq!(r.body["code"], -400, "{path}: {}", r.raw);
        assert!(r.body["message"].is_string(), "{path}: {}", r.raw);
    }
}

#[tokio::test]
async fn a_configured_bearer_token_protects_the_push_api() {
    let s = start_with(|c| c.logic.http.push_token = Some("sekret".into())).await;
    let url = format!("http://{}/goim/push/all?operation=1000", s.addrs.http);
    let none = http(reqwest::Method::POST, url.clone(), b"m", None).await;
    let wrong = http(reqwest::Method::POST, url.clone(), b"m", Some("nope")).await;
    let right = http(reqwest::Method::POST, url, b"m", Some("sekret")).await;
    assert_eq!((none.status, wrong.status, right.status), (401, 401, 200));
    assert_eq!(right.body["code"], 0);
    // Queries stay open.
    assert_eq!(get(&s, "/goim/online/total").await.status, 200);
}

#[tokio::test]
async fn a_push_acknowledged_by_the_api_is_counted_through_to_the_comet() {
    let s = start().await;
    let mut c = login(&s, Transport::Tcp, 1, "count", "live://c", &[1000]).await;
    push_ok(&s, "/goim/push/room?operation=1000&type=live&room=c", b"x").await;
    c.recv_op(1000, WAIT).await.unwrap();
    let m = metrics(&s).await;
    assert!(sample(&m, "goim_comet_queued_total{kind=\"room\"}") >= 1.0, "{m}");
    assert_eq!(sample(&m, "goim_comet_connections{transport=\"tcp\"}"), 1.0, "{m}");
    assert!(m.contains("goim_job_"), "job metrics are exported: {m}");
    assert!(m.contains("goim_logic_"), "logic metrics are exported: {m}");
}
