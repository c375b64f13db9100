//! `containerd-shim-hako-v2`: containerd's task API (v2 and v3, on containerd-shim 0.11's
//! protos) for Hako sandboxes. One shim process serves one sandbox (a pod, or a lone container).

pub mod bootstrap;
pub mod convert;
pub mod delete;
pub mod events;
pub mod info;
pub mod options;
pub mod serve;
pub mod start;
pub mod task;

use std::io::Write;

/// The runtime name containerd knows Hako by (`--runtime io.containerd.hako.v2`).
pub const RUNTIME_ID: &str = "io.containerd.hako.v2";

/// The shim binary's main: `-info`, `-version`, and the actions `start` and `delete`;
/// without an action it serves.
pub async fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if info::asked(args.iter().cloned()) {
        match info::answer(std::io::stdin()) {
            Ok(bytes) => exit_with_output(&bytes),
            Err(e) => fail(&e),
        }
    }
    let flags = match containerd_shim::parse(&args[1.min(args.len())..]) {
        Ok(f) => f,
        Err(e) => fail(&e),
    };
    if flags.version {
        exit_with_output(format!("{RUNTIME_ID} {}\n", env!("CARGO_PKG_VERSION")).as_bytes());
    }
    match flags.action.as_str() {
        "start" => match start::start(&flags).await {
            Ok(reply) => exit_with_output(&reply),
            Err(e) => fail(&format!("{e:#}")),
        },
        "delete" => {
            use containerd_shim::protos::protobuf::Message;
            let bundle = match flags.bundle.as_str() {
                "" => std::env::current_dir().unwrap_or_default(),
                b => b.into(),
            };
            match delete::delete(&flags.id, &bundle).write_to_bytes() {
                Ok(bytes) => exit_with_output(&bytes),
                Err(e) => fail(&e),
            }
        }
        "" => {
            if let Err(e) = serve::serve(&flags).await {
                fail(&format!("{e:#}"));
            }
            std::process::exit(0);
        }
        other => fail(&format!("unknown action {other:?}")),
    }
}

fn exit_with_output(bytes: &[u8]) -> ! {
    let mut out = std::io::stdout();
    let code = match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code);
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("{RUNTIME_ID}: {e}");
    std::process::exit(1);
}
