//! goim-rs, composed: configuration, the in-process ports, the admin listener, and the embedded
//! process that runs comet, logic and job together. Every binary is a thin `main` over
//! [`process`] (command line, config with [`env`] overrides, signal): `goim` over [`embedded`],
//! the distributed ones (`goim-comet`, `goim-logic`, `goim-job`) over [`distributed`].

pub mod admin;
pub mod config;
pub mod distributed;
pub mod embedded;
pub mod env;
pub mod port;
pub mod process;
pub mod signal;
pub mod start;
pub mod stop;
pub mod web;

pub use config::Config;

/// What every binary's `--version` prints after its name: the crate version and the git
/// revision it was built from (build.rs; "unknown" outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GOIM_GIT_REVISION"), ")");
pub use embedded::{Addrs, Embedded};
