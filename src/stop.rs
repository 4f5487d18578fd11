//! How every binary stops (the mirror of [`crate::start`]): its steps, listed in order in its
//! `stop()`, each under the shutdown grace period's deadline. A step is a signal (not ready,
//! stop taking requests: done at once) or a wait (bounded by the deadline, or by an earlier
//! point of its own); each is logged with its time and outcome, and the steps that did not
//! finish are named in one warning at the end.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};

/// One stop in progress: the deadline, and the steps that did not finish.
pub struct Stop {
    started: Instant,
    deadline: Instant,
    unfinished: Vec<&'static str>,
}

impl Stop {
    /// A stop that must be over `grace` from now.
    pub fn new(grace: Duration) -> Stop {
        let started = Instant::now();
        Stop { started, deadline: started + grace, unfinished: Vec::new() }
    }

    /// The shutdown grace period's end.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What is left of the grace period.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// A step done at once (a flag, a cancellation).
    pub fn signal(&mut self, step: &'static str, f: impl FnOnce()) {
        f();
        info!(step, at = ?self.started.elapsed(), "stop");
    }

    /// A step that waits, cut at the grace period's end; returns whether it finished (and the
    /// future's own `false` counts as not finished).
    pub async fn wait(&mut self, step: &'static str, f: impl Future<Output = bool>) -> bool {
        let by = self.deadline;
        self.wait_until(step, by, f).await
    }

    /// Like [`Stop::wait`], cut at `by` (or the grace period's end, whichever is first).
    pub async fn wait_until(
        &mut self,
        step: &'static str,
        by: Instant,
        f: impl Future<Output = bool>,
    ) -> bool {
        let done = timeout_at(by.min(self.deadline), f).await.unwrap_or(false);
        self.record(step, done);
        done
    }

    /// A step that bounds itself (it was given [`Stop::remaining`]): awaited to its end.
    pub async fn bounded(&mut self, step: &'static str, f: impl Future<Output = bool>) -> bool {
        let done = f.await;
        self.record(step, done);
        done
    }

    fn record(&mut self, step: &'static str, done: bool) {
        if done {
            info!(step, at = ?self.started.elapsed(), "stop");
        } else {
            warn!(step, at = ?self.started.elapsed(), "stop: step did not finish in time");
            self.unfinished.push(step);
        }
    }

    /// Whether every step finished within the grace period.
    pub fn finish(self) -> bool {
        if !self.unfinished.is_empty() {
            warn!(steps = ?self.unfinished, "shutdown grace period ran out");
        }
        self.unfinished.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_run_in_order_each_cut_at_the_deadline_and_the_unfinished_ones_fail_the_stop() {
        let mut stop = Stop::new(Duration::from_secs(10));
        let mut order = Vec::new();
        stop.signal("first", || order.push("first"));
        assert!(stop.wait("quick", async { true }).await);
        let early = Instant::now() + Duration::from_secs(2);
        // Cut at its own point, 2 s in, not at the deadline.
        assert!(!stop.wait_until("until 2 s", early, std::future::pending()).await);
        assert_eq!(Instant::now(), early);
        // A step that says it failed counts as unfinished.
        assert!(!stop.bounded("failed on its own", async { false }).await);
        // Cut at the deadline, 10 s in; later steps still run (with no time left).
        assert!(!stop.wait("forever", std::future::pending()).await);
        assert_eq!(stop.remaining(), Duration::ZERO);
        assert!(stop.wait("ready at once", async { true }).await, "a ready future still finishes");
        order.push("last");
        assert_eq!(order, ["first", "last"]);
        assert!(!stop.finish());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_whose_steps_all_finish_succeeds() {
        let mut stop = Stop::new(Duration::from_secs(1));
        assert!(
            stop.wait("sleep", async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                true
            })
            .await
        );
        assert!(stop.finish());
    }
}
