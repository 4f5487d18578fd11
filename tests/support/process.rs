//! Child processes on loopback (`goim_test_support::process`), plus what only this crate's tests
//! have: the paths of the tier binaries it builds.

// Each test file uses some of these.
#[allow(unused_imports)]
pub use goim_test_support::process::*;

/// The path of one of our binaries, by name; start one with `Proc::start(binary(name), ..)`.
pub fn binary(name: &str) -> &'static str {
    match name {
        "goim-comet" => env!("CARGO_BIN_EXE_goim-comet"),
        "goim-logic" => env!("CARGO_BIN_EXE_goim-logic"),
        "goim-job" => env!("CARGO_BIN_EXE_goim-job"),
        _ => panic!("no binary {name}"),
    }
}
