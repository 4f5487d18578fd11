//! Fuzzes the parsing of comet's long-poll requests: `GET /poll?sid=S&timeout=secs&ack=seq`
//! as the HTTP port reads it, from arbitrary bytes taken both as a whole request head and as the
//! bare query values (denser: the fuzzer reaches the number parsing sooner). Besides "no panic",
//! it checks that a poll never waits longer than the configured limit and that an `ack` is
//! refused exactly when it is not a number.

#![no_main]

use std::time::Duration;

use goim_comet::fuzz::{parse_request, poll_query};
use libfuzzer_sys::fuzz_target;

/// comet's default `long_poll.poll_timeout`, and a limit of zero.
const MAX_WAITS: [Duration; 2] = [Duration::from_secs(30), Duration::ZERO];

fuzz_target!(|data: &[u8]| {
    // As a request: a head the port would route to `/poll`.
    if let Ok(Some((req, _))) = parse_request(data) {
        check(req.query("timeout"), req.query("ack"));
    }
    // As the values alone: `timeout`, a NUL, then `ack` (no `ack` without the NUL).
    let text = String::from_utf8_lossy(data);
    let (wait, ack) = match text.split_once('\0') {
        Some((w, a)) => (Some(w), Some(a)),
        None => (Some(&*text), None),
    };
    check(wait, ack);
    check(None, wait);
});

fn check(wait: Option<&str>, ack: Option<&str>) {
    for max in MAX_WAITS {
        match poll_query(wait, ack, max) {
            Ok((waits, acked)) => {
                assert!(waits <= max, "a poll waits at most the limit");
                assert_eq!(acked, ack.map(|a| a.parse::<u64>().unwrap()), "the ack as sent");
            }
            Err(_) => assert!(ack.is_some_and(|a| a.parse::<u64>().is_err()), "only a bad ack is refused"),
        }
    }
}
