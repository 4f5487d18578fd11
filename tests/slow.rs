//! A client that stops reading is disconnected as slow; nobody else notices.

mod support;

use std::time::Duration;

use goim_test_support::Transport;
use support::*;

const N: usize = 1500;

fn big_body() -> &'static [u8] {
    Box::leak(vec![b'x'; 4000].into_boxed_slice())
}

/// Connections ended, over every reason.
fn disconnects(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("goim_comet_disconnects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn slow_server() -> goim::Embedded {
    start_with(|c| {
        c.comet.outbox.capacity = 8;
        c.comet.outbox.max_bytes = 64 * 1024;
        c.comet.protocol.write_timeout = Duration::from_millis(500);
    })
    .await
}

#[tokio::test]
async fn a_slow_client_is_disconnected_without_blocking_its_room() {
    let s = slow_server().await;
    let mut stalled = login(&s, Transport::Tcp, 1, "stalled", "live://s", &[]).await;
    let mut reader = login(&s, Transport::Ws, 2, "reader", "live://s", &[]).await;
    let body = big_body();
    let reading = tokio::spawn(async move {
        for _ in 0..N {
            let f = reader.recv_op(1000, Duration::from_secs(20)).await.expect("every push arrives");
            assert_eq!(f.body.len(), 4000);
        }
    });
    for _ in 0..N {
        push_ok(&s, "/goim/push/room?operation=1000&type=live&room=s", body).await;
    }
    reading.await.unwrap();
    // The stalled client's socket holds what it was sent before it overflowed, then ends.
    let (seen, _) = stalled.until_closed(Duration::from_secs(20)).await.unwrap();
    assert!(seen.len() < N, "the stalled client was cut off, not fed everything");
    // comet counts a disconnect once the connection is over, after the client saw its end: it
    // lingers (up to a second) for the client to close its side after op 6. So wait until both
    // connections are counted, whatever the reasons, rather than read the metrics at once (the
    // reader's, closed when its task ended, is `client_closed`); closing ours ends the linger.
    drop(stalled);
    let both_counted =
        eventually(Duration::from_secs(10), || async { disconnects(&metrics(&s).await) == 2.0 }).await;
    let m = metrics(&s).await;
    assert!(both_counted, "{m}");
    assert_eq!(sample(&m, "goim_comet_disconnects_total{reason=\"slow\"}"), 1.0, "{m}");
    assert!(sample(&m, "goim_comet_slow_consumers_total") >= 1.0, "{m}");
}

#[tokio::test]
async fn a_slow_key_does_not_cost_the_other_keys_of_the_same_request() {
    let s = slow_server().await;
    let _stalled = login(&s, Transport::Tcp, 1, "k-stalled", "", &[1000]).await;
    let mut reader = login(&s, Transport::Tcp, 2, "k-reader", "", &[1000]).await;
    let body = big_body();
    let reading = tokio::spawn(async move {
        for _ in 0..N {
            reader.recv_op(1000, Duration::from_secs(20)).await.expect("every push arrives");
        }
    });
    for _ in 0..N {
        // The stalled key comes first: goim would abort the request at it once its queue is full.
        push_ok(&s, "/goim/push/keys?operation=1000&keys=k-stalled&keys=k-reader", body).await;
    }
    reading.await.unwrap();
    // The stalled connection ends after its write timeout; then it is counted.
    let counted = eventually(Duration::from_secs(10), || async {
        sample(&metrics(&s).await, "goim_comet_disconnects_total{reason=\"slow\"}") == 1.0
    })
    .await;
    assert!(counted, "{}", metrics(&s).await);
}
