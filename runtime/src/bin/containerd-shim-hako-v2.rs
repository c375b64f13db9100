//! `containerd-shim-hako-v2`: the containerd task API shim arrives with the runtime issue.
//! Until then it fails clearly instead of pretending to start a task.
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "containerd-shim-hako-v2 {}: not implemented yet; run `hako check` to see whether this host can run Hako",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::FAILURE
}
