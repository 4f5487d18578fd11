//! Key pushes and broadcasts: where they go, deadlines and retries, acks, back-pressure, shutdown.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goim_api::PushMsg;
use goim_job::{CometError, Config, DispatchConfig};
use harness::{Answer, Call, Event, Harness, packets};
use tokio::sync::Notify;

const MS: Duration = Duration::from_millis(1);

fn keys_msg(server: &str, keys: &[&str], body: &str) -> PushMsg {
    PushMsg::keys(server, keys.iter().map(|k| k.to_string()).collect(), 1001, Bytes::from(body.to_owned()))
}

fn keys_calls(h: &Harness) -> Vec<(String, Result<(), CometError>, Duration)> {
    h.calls()
        .into_iter()
        .filter_map(|(call, result, at)| match call {
            Call::Keys { server, .. } => Some((server, result, at)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_keys_push_goes_only_to_its_server_as_one_encoded_packet() {
    let h = Harness::start(Config::default(), &["c1", "c2"]);
    h.push(keys_msg("c2", &["k1", "k2"], "hi")).await;
    h.settle().await;

    let calls = h.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let Call::Keys { server, keys, op, packet } = &calls[0].0 else { panic!("not a keys push: {calls:?}") };
    assert_eq!(
        (server.as_str(), keys.as_slice(), *op),
        ("c2", &["k1".to_string(), "k2".to_string()][..], 1001)
    );
    assert_eq!(packet.to_vec(), packets(1001, ["hi".to_string()]));
    assert_eq!(h.acks(), [0]);
    assert_eq!(h.metric("goim_job_messages_consumed_total{kind=\"keys\"}"), 1.0);
    assert_eq!(h.metric("goim_job_dispatch_calls_total{kind=\"keys\"}"), 1.0);
    assert_eq!(h.metric("goim_job_dispatch_latency_seconds_count{kind=\"keys\"}"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_keys_push_to_an_unknown_server_is_counted_not_retried_and_acked() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.push(keys_msg("gone", &["k1"], "hi")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(h.comets.started(), 1, "an unknown server is not retried");
    assert_eq!(h.metric("goim_job_dropped_total{kind=\"keys\",reason=\"unknown_server\"}"), 1.0);
    assert_eq!(h.metric("goim_job_dispatch_failed_total{kind=\"keys\",server=\"gone\"}"), 0.0);
    assert_eq!(h.acks(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_keys_push_to_a_comet_gone_from_discovery_is_dropped_at_once_with_its_reason() {
    let h = Harness::start(Config::default(), &["c1", "c2"]);
    h.comets.script("c1", [Answer::Fail(CometError::Gone("c1".into()))]);
    h.push(keys_msg("c1", &["k1"], "stale route")).await;
    h.push(keys_msg("c2", &["k2"], "live route")).await;
    h.settle().await;

    assert_eq!(h.comets.started(), 2, "the gone comet is not retried");
    assert_eq!(h.metric("goim_job_dropped_total{kind=\"keys\",reason=\"comet_gone\"}"), 1.0);
    assert_eq!(h.metric("goim_job_dispatch_failed_total{kind=\"keys\",server=\"c1\"}"), 0.0);
    assert_eq!(h.metric("goim_job_comet_calls_total{server=\"c1\"}"), 0.0);
    assert_eq!(h.metric("goim_job_comet_calls_total{server=\"c2\"}"), 1.0);
    let mut acks = h.acks();
    acks.sort_unstable();
    assert_eq!(acks, [0, 1], "both are acked; the stale one is not redelivered");
}

#[tokio::test(start_paused = true)]
async fn broadcast_speed_is_divided_between_comets_who_share_one_encoded_packet() {
    let h = Harness::start(Config::default(), &["c1", "c2", "c3", "c4"]);
    h.push(PushMsg::broadcast(1002, 100, Bytes::from_static(b"all"))).await;
    h.settle().await;
    h.comets.set_servers(&["c1", "c2", "c3"]);
    h.push(PushMsg::broadcast(1002, 100, Bytes::from_static(b"all"))).await;
    h.settle().await;
    h.push(PushMsg::broadcast(1002, 2, Bytes::from_static(b"all"))).await;
    h.settle().await;
    h.push(PushMsg::broadcast(1002, 0, Bytes::from_static(b"all"))).await;
    h.settle().await;

    let calls: Vec<Call> = h.calls().into_iter().map(|(call, _, _)| call).collect();
    let speeds: Vec<i32> = calls
        .iter()
        .map(|c| match c {
            Call::Broadcast { speed, op: 1002, .. } => *speed,
            other => panic!("not a broadcast of op 1002: {other:?}"),
        })
        .collect();
    assert_eq!(
        speeds,
        [25, 25, 25, 25, 33, 33, 33, 1, 1, 1, 0, 0, 0],
        "paced at each comet's share, at least 1"
    );
    let first = calls[0].bytes();
    assert_eq!(first.to_vec(), packets(1002, ["all".to_string()]));
    assert!(
        calls[..4].iter().all(|c| c.bytes().as_ptr() == first.as_ptr()),
        "one encoding shared by all comets"
    );
    assert_eq!(h.acks(), [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_with_no_comets_is_counted_and_acked() {
    let h = Harness::start(Config::default(), &[]);
    h.push(PushMsg::broadcast(1002, 100, Bytes::from_static(b"all"))).await;
    h.settle().await;

    assert!(h.calls().is_empty());
    assert_eq!(h.metric("goim_job_dropped_total{kind=\"broadcast\",reason=\"no_comets\"}"), 1.0);
    assert_eq!(h.acks(), [0]);
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_comet_is_retried_with_backoff_until_it_accepts() {
    let h = Harness::start(Config::default(), &["c1"]);
    let down = || Answer::Fail(CometError::Unavailable("connection refused".into()));
    h.comets.script("c1", [down(), down()]);
    h.push(keys_msg("c1", &["k1"], "hi")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let calls = keys_calls(&h);
    let times: Vec<Duration> = calls.iter().map(|c| c.2).collect();
    assert_eq!(times, [Duration::ZERO, 50 * MS, 150 * MS], "retried after 50 ms, then 100 ms more");
    assert!(calls[2].1.is_ok());
    assert_eq!(h.acks(), [0]);
    assert_eq!(h.metric("goim_job_dispatch_retries_total{kind=\"keys\"}"), 2.0);
    assert_eq!(h.metric("goim_job_dispatch_failed_total{kind=\"keys\",server=\"c1\"}"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_the_timeout_is_abandoned_and_retried() {
    let config = Config {
        dispatch: DispatchConfig { timeout: Duration::from_secs(2), ..DispatchConfig::default() },
        ..Config::default()
    };
    let h = Harness::start(config, &["c1"]);
    h.comets.script("c1", [Answer::Hang]);
    h.push(keys_msg("c1", &["k1"], "hi")).await;

    tokio::time::sleep(Duration::from_millis(1990)).await;
    assert!(h.acks().is_empty(), "acked before the hung call timed out");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.comets.started(), 2);
    let calls = keys_calls(&h);
    assert_eq!(calls.len(), 1, "the hung call never answered");
    assert_eq!(calls[0].2, Duration::from_millis(2050), "retried 50 ms after the 2 s deadline");
    assert_eq!(h.acks(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_fails_every_retry_is_counted_and_its_delivery_still_acked() {
    let h = Harness::start(Config::default(), &["c1", "c2"]);
    let down = || Answer::Fail(CometError::Unavailable("connection refused".into()));
    h.comets.script("c1", [down(), down(), down(), down(), down()]);
    h.push(PushMsg::broadcast(1002, 0, Bytes::from_static(b"all"))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let c1: Vec<_> = h.calls().into_iter().filter(|c| c.0.server() == "c1").collect();
    assert_eq!(c1.len(), 4, "one call and 3 retries");
    assert!(c1.iter().all(|c| c.1.is_err()));
    assert_eq!(h.metric("goim_job_dispatch_failed_total{kind=\"broadcast\",server=\"c1\"}"), 1.0);
    assert_eq!(h.metric("goim_job_dispatch_failed_total{kind=\"broadcast\",server=\"c2\"}"), 0.0);
    assert_eq!(h.acks(), [0], "the comet is given up on; the push is acked");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_call_is_not_retried() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.comets.script("c1", [Answer::Fail(CometError::Rejected("bad request".into()))]);
    h.push(keys_msg("c1", &["k1"], "hi")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(h.comets.started(), 1);
    assert_eq!(h.metric("goim_job_dispatch_failed_total{kind=\"keys\",server=\"c1\"}"), 1.0);
    assert_eq!(h.acks(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_is_acked_only_after_its_dispatch_completed() {
    let h = Harness::start(Config::default(), &["c1"]);
    let accept = Arc::new(Notify::new());
    h.comets.script("c1", [Answer::Wait(Arc::clone(&accept))]);
    h.push(keys_msg("c1", &["k1"], "a")).await;
    h.push(keys_msg("c1", &["k1"], "b")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.acks().is_empty(), "acked while the comet had not accepted");

    accept.notify_one();
    h.settle().await;
    let events = h.events();
    let order: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::Answered { call: Call::Keys { packet, .. }, .. } => {
                format!("answered {}", &packet[16..].escape_ascii())
            }
            Event::Acked(token) => format!("acked {}", token.offset),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(order, ["answered a", "acked 0", "answered b", "acked 1"]);
}

#[tokio::test(start_paused = true)]
async fn key_pushes_to_one_server_keep_their_order_when_the_first_is_slower() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.comets.script("c1", [Answer::Delay(10 * MS)]);
    for body in ["a", "b", "c"] {
        h.push(keys_msg("c1", &["k1"], body)).await;
    }
    tokio::time::sleep(50 * MS).await;

    let bodies: Vec<Bytes> = h.calls().into_iter().map(|(call, _, _)| call.bytes().slice(16..)).collect();
    assert_eq!(bodies, ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_comet_does_not_hold_up_key_pushes_to_other_comets() {
    let h = Harness::start(Config::default(), &["slow", "fast"]);
    h.comets.script("slow", [Answer::Hang]);
    h.push(keys_msg("slow", &["k1"], "a")).await;
    h.push(keys_msg("fast", &["k2"], "b")).await;
    h.settle().await;

    let calls = keys_calls(&h);
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), calls[0].2), ("fast", Duration::ZERO));
    assert_eq!(h.acks(), [1], "the later push is acked while the earlier one waits");
}

#[tokio::test(start_paused = true)]
async fn the_job_stops_receiving_while_max_in_flight_dispatches_are_pending() {
    let config = Config {
        dispatch: DispatchConfig { max_in_flight: 2, ..DispatchConfig::default() },
        ..Config::default()
    };
    let h = Harness::with_capacity(config, &["c1", "c2"], 1);
    let accept = Arc::new(Notify::new());
    h.comets.script("c1", [Answer::Wait(Arc::clone(&accept))]);
    h.comets.script("c2", [Answer::Hang]);
    h.push(keys_msg("c1", &["k1"], "a")).await;
    h.push(keys_msg("c2", &["k2"], "b")).await;
    h.push(keys_msg("c1", &["k1"], "c")).await; // fills the queue: the job is not taking it
    h.settle().await;
    assert!(
        h.sender().try_send(keys_msg("c1", &["k1"], "d")).is_err(),
        "the job kept receiving past its bound"
    );

    accept.notify_one();
    h.settle().await;
    h.sender().try_send(keys_msg("c1", &["k1"], "d")).expect("a completed dispatch makes room");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_dispatches_in_flight_and_acks_them() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.comets.script("c1", [Answer::Delay(100 * MS)]);
    h.push(keys_msg("c1", &["k1"], "a")).await;
    h.settle().await;

    let (result, h) = h.stop().await;
    result.expect("shutdown is not an error");
    assert_eq!(keys_calls(&h).len(), 1);
    assert_eq!(h.acks(), [0]);
    assert_eq!(h.comets.started(), 1);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_received_after_shutdown() {
    let h = Harness::start(Config::default(), &["c1"]);
    h.shutdown.cancel();
    h.settle().await;
    let _ = h.sender().try_send(keys_msg("c1", &["k1"], "late"));
    let (result, h) = h.stop().await;
    result.expect("shutdown is not an error");
    assert!(h.calls().is_empty());
    assert!(h.acks().is_empty());
}
