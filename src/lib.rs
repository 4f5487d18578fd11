//! goim-rs, composed: configuration, the in-process ports, the admin listener, and the embedded
//! process that runs comet, logic and job together. The `goim` binary is a thin `main` over this.
//! The distributed binaries (`goim-comet`, `goim-logic`, `goim-job`) are thin `main`s over
//! [`process`] (command line, config with [`env`] overrides, signal) and [`distributed`].

pub mod admin;
pub mod config;
pub mod distributed;
pub mod embedded;
pub mod env;
pub mod port;
pub mod process;
pub mod signal;
pub mod web;

pub use config::Config;

/// What every binary's `--version` prints after its name: the crate version and the git
/// revision it was built from (build.rs; "unknown" outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GOIM_GIT_REVISION"), ")");
pub use embedded::{Addrs, Embedded};
