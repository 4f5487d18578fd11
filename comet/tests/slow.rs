//! A client that stops reading is disconnected as slow; nobody else notices. Against an
//! in-process comet (`support`) that the test pushes into directly; on paused time, so the write
//! timeout and the linger after op 6 pass at once.
//!
//! The pushes keep pace with the reading client ([`Pace`]): pushed into the comet directly, as
//! fast as a loop can, they would overflow the reader's small outbox too, and the test is that
//! the stalled client is the only slow one.

mod support;

use std::sync::Arc;
use std::time::Duration;

use goim_api::frame::encode_push;
use goim_test_support::{Transport, eventually};
use support::*;
use tokio::sync::Semaphore;

const N: usize = 1500;
/// Pushes the reading client may be behind by: well inside its outbox (8 packets, 64 KiB).
const AHEAD: usize = 4;

fn big_body() -> Vec<u8> {
    vec![b'x'; 4000]
}

/// Keeps the pusher at most [`AHEAD`] pushes ahead of the reading client: the pusher takes a
/// permit before each push, the reader gives one back for each push it receives.
#[derive(Clone)]
struct Pace(Arc<Semaphore>);

impl Pace {
    fn new() -> Pace {
        Pace(Arc::new(Semaphore::new(AHEAD)))
    }

    async fn before_push(&self) {
        self.0.acquire().await.expect("never closed").forget();
    }

    fn received(&self) {
        self.0.add_permits(1);
    }
}

/// Connections ended, over every reason.
fn disconnects(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("goim_comet_disconnects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn slow_server() -> Server {
    start_with(
        |c| {
            c.outbox.capacity = 8;
            c.outbox.max_bytes = 64 * 1024;
            c.protocol.write_timeout = Duration::from_millis(500);
        },
        LOGIC_HEARTBEAT,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_slow_client_is_disconnected_without_blocking_its_room() {
    let s = slow_server().await;
    let mut stalled = login(&s, Transport::Tcp, 1, "stalled", "live://s", &[]).await;
    let mut reader = login(&s, Transport::Ws, 2, "reader", "live://s", &[]).await;
    let body = big_body();
    let pace = Pace::new();
    let reading = tokio::spawn({
        let pace = pace.clone();
        async move {
            for _ in 0..N {
                let f = reader.recv_op(1000, Duration::from_secs(20)).await.expect("every push arrives");
                assert_eq!(f.body.len(), 4000);
                pace.received();
            }
        }
    });
    for _ in 0..N {
        pace.before_push().await;
        push_room(&s, "live://s", 1000, &body);
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
        eventually(Duration::from_secs(10), || async { disconnects(&s.metrics()) == 2.0 }).await;
    let m = s.metrics();
    assert!(both_counted, "{m}");
    assert_eq!(sample(&m, "goim_comet_disconnects_total{reason=\"slow\"}"), 1.0, "{m}");
    assert!(sample(&m, "goim_comet_slow_consumers_total") >= 1.0, "{m}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_key_does_not_cost_the_other_keys_of_the_same_request() {
    let s = slow_server().await;
    let _stalled = login(&s, Transport::Tcp, 1, "k-stalled", "", &[1000]).await;
    let mut reader = login(&s, Transport::Tcp, 2, "k-reader", "", &[1000]).await;
    let body = big_body();
    let pace = Pace::new();
    let reading = tokio::spawn({
        let pace = pace.clone();
        async move {
            for _ in 0..N {
                reader.recv_op(1000, Duration::from_secs(20)).await.expect("every push arrives");
                pace.received();
            }
        }
    });
    // The stalled key comes first: goim would abort the request at it once its queue is full.
    let keys = ["k-stalled".to_owned(), "k-reader".to_owned()];
    for _ in 0..N {
        pace.before_push().await;
        s.comet.push_keys(&keys, 1000, encode_push(1000, &body)).expect("a push to two keys");
    }
    reading.await.unwrap();
    // The stalled connection ends after its write timeout; then it is counted.
    let counted = eventually(Duration::from_secs(10), || async {
        sample(&s.metrics(), "goim_comet_disconnects_total{reason=\"slow\"}") == 1.0
    })
    .await;
    assert!(counted, "{}", s.metrics());
}
