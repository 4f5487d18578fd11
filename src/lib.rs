//! goim-rs, composed: configuration, the in-process ports, the admin listener, and the embedded
//! process that runs comet, logic and job together. The `goim` binary is a thin `main` over this.

pub mod admin;
pub mod config;
pub mod embedded;
pub mod port;

pub use config::Config;
pub use embedded::{Addrs, Embedded};
