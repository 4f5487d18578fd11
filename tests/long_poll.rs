//! HTTP long-polling across the tiers: a token logic rejects, pushes of every kind through
//! logic's push API (room pushes through job's batching, in order), and the root binary's demo
//! assets on comet's HTTP port. The comet-only long-poll tests (poll, send, expiry, a kick, the
//! stop) are in `comet/tests/long_poll.rs`.

mod support;

use goim_api::Frame;
use goim_test_support::json_token;
use goim_test_support::long_poll::Poller;
use support::*;

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

#[tokio::test]
async fn a_rejected_token_gets_401_and_no_session() {
    let s = start_with(|c| {
        c.logic.auth.mode = goim_logic::config::AuthMode::Jwt;
        c.logic.auth.jwt.secret = Some("k".into());
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/poll/auth", s.addrs.websocket[0]))
        .body(json_token(1, "k", "", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "auth_failed");
    assert_eq!(s.comet().long_poll_sessions(), 0);
}

#[tokio::test]
async fn pushes_of_every_kind_reach_a_long_poll_session_in_order() {
    let s = start().await;
    let p = Poller::open(s.addrs.websocket[0], 31, "lp31", "live://lp", &[1000]).await;
    push_ok(&s, "/goim/push/keys?operation=1000&keys=lp31", b"key").await;
    push_ok(&s, "/goim/push/mids?operation=1000&mids=31", b"mid").await;
    push_ok(&s, "/goim/push/room?operation=1000&type=live&room=lp", b"room").await;
    push_ok(&s, "/goim/push/all?operation=1000", b"all").await;
    let got = p.collect(4, WAIT).await;
    let mut bodies: Vec<String> = got.iter().map(text).collect();
    // Room pushes may wait for their batch (up to 20 ms), so they may arrive after later pushes of
    // other kinds; within each kind the order holds (see nothing_pushed_between_polls_is_lost).
    bodies.sort();
    assert_eq!(bodies, ["all", "key", "mid", "room"]);
    assert!(got.iter().all(|f| f.op == 1000), "packets as a TCP client reads them");
    // Key and broadcast pushes have goim's header; mid and room pushes carry their position.
    let header =
        |body: &str| got.iter().find(|f| text(f) == body).map(|f| (f.ver & 1, f.ver > 1, f.seq)).unwrap();
    assert_eq!(header("key"), (1, false, 0));
    assert_eq!(header("all"), (1, false, 0));
    assert_eq!(header("mid"), (1, true, 1), "the user's stream, offset 1");
    assert_eq!(header("room"), (0, true, 1), "the room's stream, offset 1");
}

#[tokio::test]
async fn nothing_pushed_between_polls_is_lost() {
    let s = start().await;
    let p = Poller::open(s.addrs.websocket[0], 32, "lp32", "live://gap", &[]).await;
    for round in 0..5 {
        for i in 0..10 {
            let body: &'static [u8] = Box::leak(format!("{round}-{i}").into_bytes().into_boxed_slice());
            push_ok(&s, "/goim/push/room?operation=1000&type=live&room=gap", body).await;
        }
        // No poll is waiting while these arrive; they wait in the session.
        let got = p.collect(10, WAIT).await;
        let want: Vec<String> = (0..10).map(|i| format!("{round}-{i}")).collect();
        assert_eq!(got.iter().map(text).collect::<Vec<_>>(), want);
    }
}

#[tokio::test]
async fn the_demo_page_and_client_are_served_at_the_root() {
    let s = start().await;
    let base = format!("http://{}", s.addrs.websocket[0]);
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("goim"));
    let js = reqwest::get(format!("{base}/goim.js")).await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("export"));
    assert_eq!(reqwest::get(format!("{base}/nope")).await.unwrap().status(), 404);
}
