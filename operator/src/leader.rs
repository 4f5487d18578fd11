//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one runs the controller (kube-rs has none built in, kube-rs/kube#485; the lease
//! crates that exist target older kube releases).
//!
//! The protocol is client-go's `leaderelection` on a Lease, with optimistic concurrency: every
//! write is a `replace` carrying the `resourceVersion` that was read, so of two replicas that
//! read the same Lease only one write succeeds (the other gets 409 and reads again).
//!
//! - **Standing by** ([`Elector::acquire`]): every retry period, read the Lease. It may be taken
//!   when it is missing (create it), has no holder (released), or its `renewTime +
//!   leaseDurationSeconds` has passed (the holder died).
//! - **Leading** ([`Elector::hold`]): every retry period, renew (`renewTime = now`). When no
//!   renewal has succeeded for the renew deadline, or the Lease names someone else, leadership is
//!   lost: the caller must stop reconciling at once (the binary exits non-zero and its pod
//!   restarts and stands by again, as controller-runtime does).
//! - **Releasing** ([`Elector::release`]): on a clean shutdown the holder clears
//!   `holderIdentity` (and sets `leaseDurationSeconds: 1`), so a standby takes over at its next
//!   retry instead of waiting for the lease to expire.
//!
//! Durations ([`Timing`]; the binary reads them from `GOIM_OPERATOR_LEASE_DURATION` (default
//! `15s`), `GOIM_OPERATOR_RENEW_DEADLINE` (`10s`), `GOIM_OPERATOR_RETRY_PERIOD` (`2s`), each
//! written as [`parse_duration`] accepts: `"15s"`, `"500ms"`, `"1m"` or bare seconds) must satisfy
//! lease duration > renew deadline > retry period > 0. The lease duration is written to the
//! Lease rounded up to whole seconds.
//!
//! Why two replicas never reconcile at once: a leader stops at most `renew deadline` after the
//! start of its last successful renewal, while a standby waits until `lease duration` after the
//! `renewTime` that renewal wrote. The gap, lease duration − renew deadline, is the margin for a
//! slow exit and for clock skew between the replicas' nodes (expiry compares the Lease's
//! `renewTime` with the standby's wall clock).

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long a lease lasts and how often it is tried and renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits after the last renewal before it takes the lease.
    pub lease_duration: Duration,
    /// How long a leader keeps reconciling without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a standby tries to take the lease and a leader renews it.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// lease duration > renew deadline > retry period > 0.
    pub fn validate(&self) -> Result<(), Error> {
        let order = [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
            ("zero", Duration::ZERO),
        ];
        for pair in order.windows(2) {
            let ((longer, l), (shorter, s)) = (pair[0], pair[1]);
            if l <= s {
                return Err(Error::Order { longer, longer_value: l, shorter, shorter_value: s });
            }
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: whole seconds, rounded up.
    fn lease_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// Which Lease, who we are, and the [`Timing`].
#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    /// Unique per process: a restarted process is a new candidate, never the old holder.
    pub identity: String,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a duration (write e.g. \"15s\", \"500ms\", \"1m\" or seconds)")]
    BadDuration(String),
    /// Which [`Timing`] field must be longer than which (`shorter` may be `"zero"`).
    #[error("{longer} ({longer_value:?}) must be longer than {shorter} ({shorter_value:?})")]
    Order { longer: &'static str, longer_value: Duration, shorter: &'static str, shorter_value: Duration },
    /// An environment variable (named) holds no duration.
    #[error("{var}: {text:?} is not a duration (write e.g. \"15s\", \"500ms\", \"1m\" or seconds)")]
    BadSetting { var: String, text: String },
    #[error("lease api: {0}")]
    Kube(#[from] kube::Error),
}

/// `"15s"`, `"500ms"`, `"1.5s"`, `"2m"`, `"1h"`, or bare seconds (`"15"`).
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let bad = || Error::BadDuration(text.to_owned());
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// What a Lease lets a candidate do, at some instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The candidate holds it: renew.
    Renew,
    /// Nobody holds it (never held, released, or expired): take it.
    Take,
    /// Another holds it until `until`.
    Held { holder: String, until: Timestamp },
}

/// Pure: may `identity` have the Lease whose spec is `spec` at `now`? A Lease that names a
/// holder but no `renewTime` (or `acquireTime`) or no duration counts as expired, as in
/// client-go.
pub fn judge(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Verdict {
    let Some(spec) = spec else { return Verdict::Take };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Verdict::Take;
    }
    if holder == identity {
        return Verdict::Renew;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Verdict::Take;
    };
    let lasts = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0)));
    match renewed.0.checked_add(lasts) {
        Ok(until) if until > now => Verdict::Held { holder: holder.to_owned(), until },
        _ => Verdict::Take,
    }
}

/// Why a leader stopped being one. The caller must stop reconciling at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The Lease names another holder.
    TakenBy(String),
    /// No renewal succeeded within the renew deadline.
    Deadline { last_error: Option<String> },
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::TakenBy(holder) => write!(f, "the lease is now held by {holder}"),
            Lost::Deadline { last_error: Some(e) } => write!(f, "no renewal within the renew deadline: {e}"),
            Lost::Deadline { last_error: None } => write!(f, "no renewal within the renew deadline"),
        }
    }
}

/// Proof of holding the lease: when the last successful renewal started.
#[derive(Debug)]
pub struct Leadership {
    renewed: Instant,
}

/// The outcome of one read-then-write of the Lease.
#[derive(Debug)]
enum Attempt {
    /// We hold it now (taken or renewed).
    Holding,
    /// Someone else holds it.
    Held { holder: String, until: Timestamp },
    /// Someone wrote it between our read and our write; read again next time.
    Conflict,
}

/// Stands by for, holds and releases one Lease. Holds no state of its own: the Lease is the
/// state, and [`Leadership`] the holder's deadline.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
}

impl Elector {
    pub fn new(client: Client, config: Config) -> Elector {
        Elector { api: Api::namespaced(client, &config.namespace), config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Returns once this process holds the lease, trying every retry period. Cancel-safe: drop
    /// the future to stop standing by.
    pub async fn acquire(&self) -> Leadership {
        let timing = self.config.timing;
        let mut seen: Option<String> = None;
        loop {
            let started = Instant::now();
            match tokio::time::timeout(timing.renew_deadline, self.attempt()).await {
                Ok(Ok(Attempt::Holding)) => return Leadership { renewed: started },
                Ok(Ok(Attempt::Held { holder, until })) => {
                    if seen.as_ref() != Some(&holder) {
                        info!(holder = %holder, until = %until, "the lease is held by another replica; standing by");
                        seen = Some(holder);
                    }
                }
                Ok(Ok(Attempt::Conflict)) => debug!("lost a race for the lease; trying again"),
                Ok(Err(e)) => warn!(error = %e, "cannot read or take the lease"),
                Err(_) => warn!("taking the lease timed out"),
            }
            tokio::time::sleep_until(started + timing.retry_period).await;
        }
    }

    /// Renews the lease every retry period; returns only when leadership is lost. Cancel-safe.
    pub async fn hold(&self, leadership: &mut Leadership) -> Lost {
        let timing = self.config.timing;
        let mut last_error = None;
        let mut attempted = Instant::now();
        loop {
            let deadline = leadership.renewed + timing.renew_deadline;
            tokio::time::sleep_until((attempted + timing.retry_period).min(deadline)).await;
            attempted = Instant::now();
            if attempted >= deadline {
                return Lost::Deadline { last_error };
            }
            match tokio::time::timeout_at(deadline, self.attempt()).await {
                Ok(Ok(Attempt::Holding)) => {
                    leadership.renewed = attempted;
                    last_error = None;
                }
                Ok(Ok(Attempt::Held { holder, .. })) => return Lost::TakenBy(holder),
                Ok(Ok(Attempt::Conflict)) => debug!("the lease changed while renewing; reading it again"),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot renew the lease");
                    last_error = Some(e.to_string());
                }
                Err(_) => return Lost::Deadline { last_error: Some("renewal timed out".into()) },
            }
        }
    }

    /// Gives the lease up so that a standby takes it at its next try. `Ok(false)`: it was no
    /// longer ours (or gone), nothing written.
    pub async fn release(&self, _leadership: Leadership) -> Result<bool, Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(false) };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the Lease and, when [`judge`] allows, writes us in as the holder (create when
    /// missing, else replace under the resourceVersion that was read).
    async fn attempt(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let (mut lease, verdict) = match self.api.get_opt(&self.config.name).await? {
            Some(lease) => {
                let verdict = judge(lease.spec.as_ref(), &self.config.identity, now);
                (lease, verdict)
            }
            None => {
                let meta = ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                };
                (Lease { metadata: meta, spec: None }, Verdict::Take)
            }
        };
        let created = lease.metadata.resource_version.is_none();
        let spec = lease.spec.get_or_insert_with(Default::default);
        match verdict {
            Verdict::Held { holder, until } => return Ok(Attempt::Held { holder, until }),
            Verdict::Take => {
                let previous = spec.holder_identity.as_deref().unwrap_or_default();
                if !previous.is_empty() {
                    info!(previous = %previous, "taking over an expired lease");
                }
                let transitions = spec.lease_transitions.unwrap_or(0);
                spec.lease_transitions = Some(if created { 0 } else { transitions.saturating_add(1) });
                spec.acquire_time = Some(MicroTime(now));
            }
            Verdict::Renew => {}
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.config.timing.lease_seconds());
        spec.renew_time = Some(MicroTime(now));
        let written = if created {
            self.api.create(&PostParams::default(), &lease).await
        } else {
            self.api.replace(&self.config.name, &PostParams::default(), &lease).await
        };
        match written {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: duration,
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_or_released_lease_may_be_taken() {
        assert_eq!(judge(None, "me", at(0)), Verdict::Take);
        assert_eq!(judge(Some(&lease(None, Some(0), Some(15))), "me", at(0)), Verdict::Take);
        assert_eq!(judge(Some(&lease(Some(""), Some(0), Some(15))), "me", at(0)), Verdict::Take);
    }

    #[test]
    fn another_holder_keeps_the_lease_until_renew_time_plus_duration() {
        let held = lease(Some("other"), Some(0), Some(15));
        assert_eq!(judge(Some(&held), "me", at(14)), Verdict::Held { holder: "other".into(), until: at(15) });
        assert_eq!(judge(Some(&held), "me", at(15)), Verdict::Take, "expired at exactly renew + duration");
        assert_eq!(judge(Some(&held), "me", at(100)), Verdict::Take);
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_expired() {
        assert_eq!(judge(Some(&lease(Some("me"), Some(0), Some(15))), "me", at(1)), Verdict::Renew);
        assert_eq!(judge(Some(&lease(Some("me"), Some(0), Some(15))), "me", at(100)), Verdict::Renew);
    }

    #[test]
    fn a_holder_without_renew_time_or_duration_counts_as_expired() {
        assert_eq!(judge(Some(&lease(Some("other"), None, Some(15))), "me", at(0)), Verdict::Take);
        assert_eq!(judge(Some(&lease(Some("other"), Some(0), None)), "me", at(0)), Verdict::Take);
        let mut acquired_only = lease(Some("other"), None, Some(15));
        acquired_only.acquire_time = Some(MicroTime(at(0)));
        assert!(matches!(judge(Some(&acquired_only), "me", at(1)), Verdict::Held { .. }));
    }

    #[test]
    fn a_released_lease_written_by_release_is_free_at_once() {
        // What `release` writes: no holder, one second.
        let released = lease(None, Some(0), Some(1));
        assert_eq!(judge(Some(&released), "me", at(0)), Verdict::Take);
    }

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration(" 1h ").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "fast", "10 parsecs", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn timing_must_order_lease_over_deadline_over_retry() {
        assert!(Timing::default().validate().is_ok());
        let s = Duration::from_secs;
        let t = |l, d, r| Timing { lease_duration: s(l), renew_deadline: s(d), retry_period: s(r) };
        assert!(t(4, 3, 1).validate().is_ok());
        let e = t(10, 10, 2).validate().unwrap_err().to_string();
        assert_eq!(e, "lease_duration (10s) must be longer than renew_deadline (10s)");
        assert!(t(15, 2, 2).validate().is_err(), "retry must be below the deadline");
        assert!(t(15, 10, 0).validate().is_err(), "retry must be above zero");
    }

    #[test]
    fn lease_seconds_round_up() {
        let t = Timing { lease_duration: Duration::from_millis(4500), ..Timing::default() };
        assert_eq!(t.lease_seconds(), 5);
        assert_eq!(Timing::default().lease_seconds(), 15);
    }
}
