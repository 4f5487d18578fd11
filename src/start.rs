//! How every binary starts, in its `start()` (the mirror of [`crate::stop`]), in this order:
//!
//! 1. bind every listener, so that a port in use fails the start before anything runs;
//! 2. build the tier from its settings and its ports (store, queue, discovery, gRPC clients),
//!    registering each part's metrics;
//! 3. spawn its servers and loops, each through [`logged`] onto the tasks that `stop()` waits
//!    for;
//! 4. ready (`/readyz` answers 200) and one "serving" line with every address.
//!
//! A step that fails returns the error: `process::main` logs it and exits 1.

use std::fmt::Display;
use std::future::Future;

use tracing::error;

/// `task`, which runs until its stop token, with its error (if it ends with one) logged under
/// `what` ("admin server", "logic gRPC server", "job").
pub async fn logged<E: Display>(what: &'static str, task: impl Future<Output = Result<(), E>>) {
    if let Err(e) = task.await {
        error!(task = what, error = %e, "ended with an error");
    }
}
