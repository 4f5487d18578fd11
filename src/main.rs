//! `goim`: comet, logic and job in one process, with in-memory sessions and queue. Loaded, run
//! and stopped like the tier binaries (`process::main`): defaults, the file, `GOIM_*` overrides.

use std::process::ExitCode;

fn main() -> ExitCode {
    goim::process::main::<goim::Embedded>()
}
