//! `goim-job`: the job tier as its own process (distributed mode). See docs/distributed.md.

fn main() -> std::process::ExitCode {
    goim::process::main::<goim::distributed::JobProcess>()
}
