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
pub use embedded::{Addrs, Embedded};
