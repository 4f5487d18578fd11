//! The body of every benchmark push: when it was sent, which step of a scenario it belongs to,
//! and its sequence number, as `t=<unix nanos> s=<step> i=<seq>`.
//!
//! Plain ASCII with no quotes, so it passes unchanged through goim (bytes), nchan (a WebSocket
//! text message) and socket.io (a JSON string), and the receiver finds it with a byte scan. All
//! processes run on one machine and read the same clock, so `now - t` at the receiver is the
//! push → receive latency.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Unix time of sending, in nanoseconds.
    pub sent: u64,
    pub step: u32,
    pub seq: u64,
}

pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Stamp {
    pub fn now(step: u32, seq: u64) -> Stamp {
        Stamp { sent: unix_nanos(), step, seq }
    }

    pub fn encode(&self) -> String {
        format!("t={} s={} i={}", self.sent, self.step, self.seq)
    }

    /// Finds a stamp anywhere in `body` (it may be wrapped, as in socket.io's `42["m","t=.."]`).
    pub fn find(body: &[u8]) -> Option<Stamp> {
        let at = find(body, b"t=")?;
        let rest = &body[at + 2..];
        let (sent, rest) = number(rest)?;
        let rest = rest.strip_prefix(b" s=")?;
        let (step, rest) = number(rest)?;
        let rest = rest.strip_prefix(b" i=")?;
        let (seq, _) = number(rest)?;
        Some(Stamp { sent, step: u32::try_from(step).ok()?, seq })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((n, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_found_inside_a_socketio_event() {
        let s = Stamp { sent: 1_700_000_000_123_456_789, step: 3, seq: 42 };
        let wrapped = format!("42[\"m\",\"{}\"]", s.encode());
        assert_eq!(Stamp::find(wrapped.as_bytes()), Some(s));
        assert_eq!(Stamp::find(s.encode().as_bytes()), Some(s));
    }

    #[test]
    fn bodies_without_a_stamp_are_ignored() {
        assert_eq!(Stamp::find(b"{\"test\":1}"), None);
        assert_eq!(Stamp::find(b"t=12 s=x i=1"), None);
        assert_eq!(Stamp::find(b"t="), None);
    }
}
