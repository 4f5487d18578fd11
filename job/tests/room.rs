//! Room pushes: batching, ordering, fan-out of one encoded batch, and flushing on the way out.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use goim_job::{Config, RoomConfig};
use harness::{Answer, Call, Harness, packets, room_msg};

const MS: Duration = Duration::from_millis(1);

fn room_calls(h: &Harness) -> Vec<(String, String, Vec<u8>, Duration)> {
    h.calls()
        .into_iter()
        .filter_map(|(call, _, at)| match call {
            Call::Room { server, room, batch } => Some((server, room, batch.to_vec(), at)),
            _ => None,
        })
        .collect()
}

fn bodies(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(|i| format!("m{i}"))
}

#[tokio::test(start_paused = true)]
async fn a_lone_room_message_flushes_at_once_and_is_acked_only_after_dispatch() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.comets.script("c1", [Answer::Delay(5 * MS)]);
    h.push(room_msg("live://1", "hello")).await;
    h.settle().await;
    assert!(h.acks().is_empty(), "acked before the comet accepted the batch");

    tokio::time::sleep(6 * MS).await;
    let calls = room_calls(&h);
    assert_eq!(calls.len(), 1);
    let (server, room, batch, at) = &calls[0];
    assert_eq!((server.as_str(), room.as_str()), ("c1", "live://1"));
    assert_eq!(batch, &packets(1000, ["hello".to_string()]));
    assert_eq!(*at, 5 * MS, "flushed at once (answered after the comet's 5 ms), not after max_delay");
    assert_eq!(h.acks(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_room_pushed_once_a_second_flushes_every_message_at_once() {
    let h = Harness::start(Config::default(), &["c1"]);
    for i in 0..3 {
        h.push(room_msg("live://1", format!("m{i}"))).await;
        h.settle().await;
        let calls = room_calls(&h);
        assert_eq!(calls.len(), i + 1, "message {i} flushed without waiting");
        assert_eq!(calls[i].3, i as u32 * 1000 * MS);
        tokio::time::sleep(1000 * MS).await;
    }
    assert_eq!(h.acks(), [0, 1, 2]);
    assert_eq!(h.metric("goim_job_room_batches_flushed_total"), 3.0);
}

#[tokio::test(start_paused = true)]
async fn a_burst_right_after_a_flush_waits_for_max_delay_as_one_batch() {
    let h = Harness::start(Config::default(), &["c1"]);
    for body in bodies(0..5) {
        h.push(room_msg("live://1", body)).await;
    }
    h.settle().await;
    assert_eq!(room_calls(&h).len(), 1, "only the first message, which found the room idle, is out");
    assert_eq!(h.acks(), [0]);

    tokio::time::sleep(19 * MS).await;
    assert_eq!(room_calls(&h).len(), 1, "the rest waits for max_delay after the first flush");
    tokio::time::sleep(2 * MS).await;
    let calls = room_calls(&h);
    assert_eq!(calls.len(), 2, "five messages, two flushes");
    assert_eq!((calls[1].2.clone(), calls[1].3), (packets(1000, bodies(1..5)), 20 * MS));
    assert_eq!(h.acks(), [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_twenty_after_a_flush_goes_at_once_as_one_batch_of_exactly_those_packets_in_order() {
    let h = Harness::start(Config::default(), &["c1"]);
    for body in bodies(0..21) {
        h.push(room_msg("live://1", body)).await;
    }
    h.settle().await;

    let calls = room_calls(&h);
    assert_eq!(calls.len(), 2, "the idle room's first message, then one batch, not {}", calls.len());
    assert_eq!(calls[0].2, packets(1000, bodies(0..1)));
    assert_eq!(calls[1].2, packets(1000, bodies(1..21)));
    assert!(calls[1].3 < MS, "a full batch does not wait for max_delay (flushed at {:?})", calls[1].3);
    assert_eq!(h.acks(), (0..21).collect::<Vec<_>>());
    assert_eq!(h.metric("goim_job_room_batches_flushed_total"), 2.0);
    assert_eq!(h.metric("goim_job_room_batch_packets_sum"), 21.0);
    assert_eq!(h.metric("goim_job_messages_consumed_total{kind=\"room\"}"), 21.0);
}

#[tokio::test(start_paused = true)]
async fn room_order_is_kept_across_batches_even_when_an_earlier_flush_is_slower() {
    let h = Harness::start(Config::default(), &["c1"]);
    // The first batch takes 10 ms to be accepted; the second is full while it is still in flight.
    h.comets.script("c1", [Answer::Delay(10 * MS)]);
    for body in bodies(0..45) {
        h.push(room_msg("live://1", body)).await;
    }
    tokio::time::sleep(50 * MS).await;

    let calls = room_calls(&h);
    let sizes: Vec<usize> =
        calls.iter().map(|c| goim_api::frame::split_packets(c.2.clone().into()).count()).collect();
    assert_eq!(sizes, [1, 20, 20, 4]);
    let received: Vec<u8> = calls.iter().flat_map(|c| c.2.clone()).collect();
    assert_eq!(received, packets(1000, bodies(0..45)), "packets arrive in push order");
    assert_eq!(h.acks(), (0..45).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn rooms_are_batched_separately() {
    let h = Harness::start(Config::default(), &["c1"]);
    for i in 0..6 {
        let room = if i % 2 == 0 { "live://even" } else { "live://odd" };
        h.push(room_msg(room, format!("m{i}"))).await;
    }
    tokio::time::sleep(25 * MS).await;

    let mut calls = room_calls(&h);
    calls.sort_by(|a, b| (&a.1, a.3).cmp(&(&b.1, b.3)));
    let got: Vec<(&str, Vec<u8>)> = calls.iter().map(|c| (c.1.as_str(), c.2.clone())).collect();
    let batch = |room, bodies: &[&str]| (room, packets(1000, bodies.iter().map(|b| b.to_string())));
    assert_eq!(
        got,
        [
            batch("live://even", &["m0"]),
            batch("live://even", &["m2", "m4"]),
            batch("live://odd", &["m1"]),
            batch("live://odd", &["m3", "m5"]),
        ],
        "each room: its first message alone, then its own burst"
    );
}

#[tokio::test(start_paused = true)]
async fn one_encoded_batch_goes_to_every_server() {
    let h = Harness::start(Config::default(), &["c1", "c2", "c3"]);
    h.push(room_msg("live://1", "m")).await;
    h.settle().await;

    let calls: Vec<Call> = h.calls().into_iter().map(|(call, _, _)| call).collect();
    let mut servers: Vec<&str> = calls.iter().map(Call::server).collect();
    servers.sort();
    assert_eq!(servers, ["c1", "c2", "c3"]);
    let first = calls[0].bytes();
    for call in &calls {
        assert_eq!(call.bytes().as_ptr(), first.as_ptr(), "every server gets the same buffer, not a copy");
        assert_eq!(call.bytes(), first);
    }
    assert_eq!(h.acks(), [0], "acked once every server accepted");
}

#[tokio::test(start_paused = true)]
async fn tracking_a_room_past_max_rooms_pending_flushes_the_oldest_at_once() {
    let config =
        Config { room: RoomConfig { max_rooms_pending: 2, ..RoomConfig::default() }, ..Config::default() };
    let h = Harness::start(config, &["c1"]);
    h.push(room_msg("a", "1")).await;
    h.push(room_msg("b", "2")).await;
    h.push(room_msg("a", "3")).await;
    h.settle().await;
    assert_eq!(room_calls(&h).len(), 2, "a's and b's first messages; a's second waits");

    h.push(room_msg("c", "4")).await;
    h.settle().await;
    let calls = room_calls(&h);
    let got: Vec<(&str, bool)> = calls[2..].iter().map(|c| (c.1.as_str(), c.3 < MS)).collect();
    assert_eq!(got, [("a", true), ("c", true)], "the oldest room's batch flushed early, then c's message");
    assert_eq!(calls[2].2, packets(1000, ["3".to_string()]));
    assert_eq!(h.acks(), [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn room_deliveries_are_acked_only_after_the_batch_holding_them_was_accepted() {
    let h = Harness::start(Config::default(), &["c1", "c2"]);
    h.comets.script("c2", [Answer::Delay(30 * MS)]);
    h.push(room_msg("live://1", "a")).await;
    h.push(room_msg("live://1", "b")).await;
    tokio::time::sleep(29 * MS).await;
    assert!(h.acks().is_empty(), "acked while c2 had not yet accepted the batch");

    tokio::time::sleep(2 * MS).await;
    assert_eq!(h.acks(), [0, 1]);
    let calls = h.calls();
    let last_answer = calls.iter().map(|c| c.2).max().unwrap();
    assert_eq!(last_answer, 30 * MS, "c2 answered a's batch 30 ms after its flush, then b's behind it");
    let acked_after = h.events().iter().position(|e| matches!(e, harness::Event::Acked(_))).unwrap();
    assert_eq!(acked_after, 2, "both comets answered before the first ack");
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_pending_batches_without_waiting_for_their_deadline() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.push(room_msg("a", "1")).await;
    h.push(room_msg("b", "2")).await;
    h.push(room_msg("a", "3")).await;
    h.push(room_msg("b", "4")).await;
    h.push(room_msg("a", "5")).await;
    h.settle().await;
    assert_eq!(room_calls(&h).len(), 2, "only each room's first message is out");

    let (result, h) = h.stop().await;
    result.expect("shutdown is not an error");
    let mut calls = room_calls(&h);
    calls.sort_by(|a, b| a.1.cmp(&b.1));
    let got: Vec<(&str, Vec<u8>)> = calls.iter().map(|c| (c.1.as_str(), c.2.clone())).collect();
    let batch = |room, bodies: &[&str]| (room, packets(1000, bodies.iter().map(|b| b.to_string())));
    assert_eq!(got, [batch("a", &["1"]), batch("a", &["3", "5"]), batch("b", &["2"]), batch("b", &["4"])]);
    assert!(calls.iter().all(|c| c.3 < MS), "flushed at shutdown, not at the deadline");
    let mut acks = h.acks();
    acks.sort();
    assert_eq!(acks, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_closed_queue_flushes_everything_and_run_returns() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.push(room_msg("a", "1")).await;
    h.push(room_msg("a", "2")).await;
    let (result, h) = h.close().await;
    result.expect("a closed queue is not an error");
    let calls = room_calls(&h);
    assert_eq!(calls.len(), 2, "the first at once, the second when the queue closed");
    assert!(calls.iter().all(|c| c.3 < MS));
    assert_eq!(h.acks(), [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_room_flush_with_no_comets_is_counted_and_acked() {
    let h = Harness::start(Config::default(), &[]);
    h.push(room_msg("a", "1")).await;
    tokio::time::sleep(25 * MS).await;
    assert!(h.calls().is_empty());
    assert_eq!(h.acks(), [0]);
    assert_eq!(h.metric("goim_job_dropped_total{kind=\"room\",reason=\"no_comets\"}"), 1.0);
}
