//! `hako-agent`: as PID 1 of a VM, mounts the basics, reaps orphans, serves the agent API on
//! vsock and powers off when the sandbox is destroyed (or on a fatal error, so the VM never
//! hangs). As a host process (tests), serves on the address given with `--listen`.
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use hako_agent::config::AgentConfig;
use hako_agent::container::{Containers, Layout};
use hako_agent::logging::{self, LogSink};
use hako_agent::sandbox::{Sandbox, Shutdown};
use hako_agent::{init, server};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version") {
        println!("{}", hako_agent::banner());
        return ExitCode::SUCCESS;
    }
    let pid1 = init::is_pid1();
    if pid1 && let Err(e) = init::leave_initramfs().and_then(|()| init::mount_basics()) {
        eprintln!("hako-agent: {:#}", anyhow::Error::from(e));
        init::power_off();
    }
    let config = if pid1 {
        AgentConfig::for_init(&init::kernel_cmdline())
    } else {
        match AgentConfig::from_args(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hako-agent: {e}");
                return ExitCode::from(2);
            }
        }
    };
    match LogSink::open(config.log_port) {
        Ok(sink) => logging::init(&config.log, sink),
        Err(e) => {
            eprintln!("hako-agent: setting up logging: {e}");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!("{}", hako_agent::banner());
    let result = run(&config);
    match (result, config.init) {
        (Ok(Shutdown::PowerOff), _) => init::power_off(),
        (Ok(Shutdown::Exit), false) => ExitCode::SUCCESS,
        (Err(e), false) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        // PID 1 never just exits: that would panic the kernel. End the VM instead.
        (Ok(Shutdown::Exit), true) => init::power_off(),
        (Err(e), true) => {
            tracing::error!("fatal: {e:#}");
            init::power_off()
        }
    }
}

fn run(config: &AgentConfig) -> anyhow::Result<Shutdown> {
    if config.init
        && let Err(e) = init::loopback_up()
    {
        tracing::warn!(error = %e, "bringing up loopback");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let sandbox = Arc::new(Sandbox::new(config.init));
        // Held while libcontainer forks and waits, so the orphan reaper never takes its
        // intermediate processes' statuses.
        let fork_lock = Arc::new(Mutex::new(()));
        let containers = Arc::new(
            Containers::new(
                Layout {
                    state_dir: config.state_dir.clone(),
                    shared_dir: config.shared_dir.clone(),
                    pod_sysctls: config.init.then(|| "/proc/sys".into()),
                },
                fork_lock.clone(),
            )
            .context("starting the container worker")?,
        );
        spawn_signal_watchers(sandbox.clone(), config.init, fork_lock)?;
        server::serve(&config.listen, &config.deny, sandbox, containers)
            .await
            .context("serving the agent API")
    })
}

/// SIGTERM/SIGINT end the service; as PID 1, SIGCHLD reaps orphans.
fn spawn_signal_watchers(
    sandbox: Arc<Sandbox>,
    init: bool,
    fork_lock: Arc<Mutex<()>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping on a signal");
        sandbox.stop();
    });
    if init {
        let mut chld = signal(SignalKind::child()).context("watching SIGCHLD")?;
        tokio::spawn(async move {
            while chld.recv().await.is_some() {
                // Never block the runtime: while libcontainer forks, skip this round; the
                // next SIGCHLD reaps what is left.
                if let Ok(_forking) = fork_lock.try_lock() {
                    init::reap_orphans();
                }
            }
        });
    }
    Ok(())
}
