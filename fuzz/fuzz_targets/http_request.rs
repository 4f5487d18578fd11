//! Fuzzes the HTTP request-head parser of comet's HTTP port (every WebSocket upgrade, long-poll
//! and demo request starts there) and the WebSocket upgrade check over what it parses. Besides
//! "no panic", it checks what the port's read loop relies on: a complete head parses the same
//! from exactly its own bytes, and none of its prefixes is an error or complete (the port parses
//! a growing buffer after each read, so a head split across reads must not fail or end early).

#![no_main]

use goim_comet::fuzz::{Request, parse_request, websocket_accept};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((req, len))) = parse_request(data) else {
        return;
    };
    assert!(len > 0 && len <= data.len(), "the head lies within the input");
    let Ok(Some((again, again_len))) = parse_request(&data[..len]) else {
        panic!("a head parses from exactly its own bytes");
    };
    assert_eq!(again_len, len);
    assert_eq!(summary(&again), summary(&req));
    // The prefixes a read of the first byte's size would leave (every one, for short heads).
    let step = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    for cut in (1..len).step_by(step) {
        assert!(
            matches!(parse_request(&data[..cut]), Ok(None)),
            "a prefix of a valid head ({cut} of {len} bytes) needs more bytes"
        );
    }
    // What the HTTP port asks of a request.
    let _ = (req.path(), req.query("sid"), req.query("timeout"), req.query("ack"), req.wants_close());
    let _ = (req.header("cookie"), req.header("content-length"), req.header("transfer-encoding"));
    if let Ok(accept) = websocket_accept(&req) {
        assert_eq!(accept.len(), 28, "a base64 SHA-1 is 28 characters");
        assert_eq!(req.method, "GET");
    }
});

fn summary(r: &Request) -> (u8, &str, &str, &[(String, String)]) {
    (r.version, &r.method, &r.target, &r.headers)
}
