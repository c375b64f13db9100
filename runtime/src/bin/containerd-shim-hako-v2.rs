//! `containerd-shim-hako-v2`: containerd's shim for Hako sandboxes.

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("containerd-shim-hako-v2: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(hako_runtime::shim::main());
}
