//! The client protocol where it meets logic, over real TCP and WebSocket sockets against the
//! embedded server: the room online count logic sums, and a key's new connection keeping its
//! session in logic's store. The rest of the protocol (comet alone) is tested in
//! `comet/tests/protocol.rs`.

mod support;

use goim_api::Op;
use goim_test_support::client::{op6_reason, packet};
use support::*;

#[tokio::test]
async fn heartbeat_reply_carries_the_room_online_count() {
    let s = start().await;
    for t in BOTH {
        let mut a = login(&s, t, 1, "a", "live://hb", &[]).await;
        a.send(&packet(1, Op::Heartbeat, 9, b"")).await.unwrap();
        let reply = a.recv_op(Op::HeartbeatReply.code(), WAIT).await.unwrap();
        assert_eq!((reply.seq, &reply.body[..]), (9, &1i32.to_be_bytes()[..]), "{t:?}");
        let _b = login(&s, t, 2, "b", "live://hb", &[]).await;
        // The count is the cluster's, refreshed every online.renew_interval (100 ms here).
        let mut last = 0;
        for _ in 0..50 {
            last = a.heartbeat().await.unwrap();
            if last == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(last, 2, "{t:?}");
        drop(_b);
        drop(a);
        // Let both leave before the next transport joins the same room.
        assert!(eventually(WAIT, || async { s.comet().room_online("live://hb") == 0 }).await);
    }
}

#[tokio::test]
async fn the_same_key_connecting_again_replaces_the_old_connection() {
    let s = start().await;
    for t in BOTH {
        let mut old = login(&s, t, 5, "dup", "", &[1000]).await;
        let mut new = login(&s, t, 5, "dup", "", &[1000]).await;
        let (seen, _) = old.until_closed(WAIT).await.unwrap();
        assert_eq!(op6_reason(seen.last().unwrap()), "kicked", "{t:?}");
        push_ok(&s, "/goim/push/keys?operation=1000&keys=dup", b"to-new").await;
        let got = new.recv_op(1000, WAIT).await.unwrap();
        assert_eq!(&got.body[..], b"to-new");
        // The old connection's teardown must not have removed the new one's session.
        push_ok(&s, "/goim/push/mids?operation=1000&mids=5", b"by-mid").await;
        let got = new.recv_op(1000, WAIT).await.unwrap();
        assert_eq!(&got.body[..], b"by-mid", "{t:?}");
    }
}
