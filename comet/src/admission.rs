//! Admission control, what keeps a storm of clients or one hostile address from hurting the
//! clients already connected: a limit on the connections one IP address may hold, a token
//! bucket on the auth attempts this comet forwards to logic, and a bound on the auth requests in
//! flight to logic at once. Configured by `[comet.admission]`.
//!
//! A client refused by the first two is told so (op 6 with a jittered `reconnect_after_ms`, or
//! HTTP 429 with `Retry-After` on the HTTP port), never left hanging; one that finds every auth
//! slot taken waits for one, within its handshake timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::AdmissionConfig;

/// The admission state one comet shares among its listeners.
pub struct Admission {
    per_ip: Arc<PerIp>,
    bucket: Option<Mutex<TokenBucket>>,
    /// One permit per auth request in flight to logic.
    auth_slots: Semaphore,
}

impl Admission {
    pub fn new(config: &AdmissionConfig) -> Admission {
        Admission {
            per_ip: Arc::new(PerIp { max: config.max_per_ip, counts: Mutex::new(HashMap::new()) }),
            bucket: (config.auth_rate > 0)
                .then(|| Mutex::new(TokenBucket::new(config.auth_rate, config.auth_burst, Instant::now()))),
            auth_slots: Semaphore::new(config.auth_in_flight),
        }
    }

    /// Counts a new connection from `ip`; `None` when that address already holds
    /// `max_per_ip`. The connection holds the guard for its life.
    pub fn enter(&self, ip: IpAddr) -> Option<IpGuard> {
        self.per_ip.enter(ip)
    }

    /// Takes a token for one auth attempt; `false` when the bucket is empty (the attempt is
    /// refused, not queued).
    pub fn try_auth(&self) -> bool {
        match &self.bucket {
            None => true,
            Some(b) => b.lock().take(Instant::now()),
        }
    }

    /// Waits for one of the `auth_in_flight` slots; hold it while logic answers.
    pub async fn auth_slot(&self) -> SemaphorePermit<'_> {
        // Never closed: `acquire` cannot fail.
        self.auth_slots.acquire().await.expect("the auth slots are never closed")
    }

    /// Addresses holding at least one connection now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.per_ip.counts.lock().len()
    }
}

/// Open connections per client address. An address with none has no entry, so the map holds
/// only the addresses connected now.
struct PerIp {
    /// 0: no limit (the map is still kept, for the count of addresses).
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpGuard> {
        if self.max == 0 {
            return Some(IpGuard { per_ip: None, ip });
        }
        let mut counts = self.counts.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpGuard { per_ip: Some(self.clone()), ip })
    }
}

/// One connection counted against its address; dropping it gives the place back.
pub struct IpGuard {
    per_ip: Option<Arc<PerIp>>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let Some(per_ip) = &self.per_ip else { return };
        let mut counts = per_ip.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Starts full.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(rate), burst, tokens: burst, at: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(max_per_ip: usize, auth_rate: u32, auth_burst: u32) -> AdmissionConfig {
        AdmissionConfig { max_per_ip, auth_rate, auth_burst, ..AdmissionConfig::default() }
    }

    #[test]
    fn the_bucket_starts_full_refills_at_its_rate_and_never_saves_more_than_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10, t0);
        assert_eq!((0..20).filter(|_| b.take(t0)).count(), 10, "a full bucket gives its burst");
        // 100/s: 5 tokens after 50 ms.
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!((0..20).filter(|_| b.take(t1)).count(), 5);
        // An hour idle saves up the burst, not 360,000 tokens.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 10);
        // Over a second of steady demand it gives the rate.
        let mut given = 0;
        for ms in 1..=1000 {
            let now = t2 + Duration::from_millis(ms);
            given += (0..5).filter(|_| b.take(now)).count();
        }
        // (99 when the hundred refills of 0.1 add up to a hair under 10 tokens in floating point.)
        assert!((99..=100).contains(&given), "{given}");
    }

    #[test]
    fn a_rate_of_zero_admits_every_attempt() {
        let a = Admission::new(&config(0, 0, 0));
        assert!((0..100_000).all(|_| a.try_auth()));
    }

    #[test]
    fn one_address_holds_at_most_max_per_ip_and_a_closed_connection_frees_its_place() {
        let a = Admission::new(&config(2, 0, 0));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let g1 = a.enter(x).expect("first");
        let g2 = a.enter(x).expect("second");
        assert!(a.enter(x).is_none(), "the third from one address is refused");
        let other = a.enter(y).expect("another address is not affected");
        assert_eq!(a.addresses(), 2);
        drop(g1);
        let g3 = a.enter(x).expect("a place freed by a closed connection");
        drop((g2, g3, other));
        assert_eq!(a.addresses(), 0, "addresses with no connection leave the map");
    }

    #[test]
    fn no_per_ip_limit_keeps_no_map() {
        let a = Admission::new(&config(0, 0, 0));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let guards: Vec<_> = (0..1000).map(|_| a.enter(ip).expect("no limit")).collect();
        assert_eq!(a.addresses(), 0);
        drop(guards);
    }

    #[tokio::test]
    async fn auth_slots_bound_the_requests_in_flight() {
        let a = Admission { auth_slots: Semaphore::new(2), ..Admission::new(&config(0, 0, 0)) };
        let s1 = a.auth_slot().await;
        let _s2 = a.auth_slot().await;
        assert_eq!(a.auth_slots.available_permits(), 0);
        let third = tokio::time::timeout(Duration::from_millis(50), a.auth_slot()).await;
        assert!(third.is_err(), "a third request waits while two are in flight");
        drop(s1);
        let _s3 = tokio::time::timeout(Duration::from_secs(5), a.auth_slot()).await.expect("a freed slot");
    }
}
