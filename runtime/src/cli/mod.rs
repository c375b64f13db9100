//! The `hako` command line: runc-compatible OCI runtime commands (each container in its own
//! sandbox VM, owned by a per-container monitor) and admin commands (`check`).

pub mod check;
pub mod client;
pub mod console;
pub mod control;
pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod logging;
pub mod monitor;
pub mod stand_in;
pub mod state;
pub mod template;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// `hako`: Hako's OCI runtime and admin commands.
#[derive(Debug, Parser)]
#[command(
    name = "hako",
    version,
    about = "Hako: containers in KVM micro-VMs (runc-compatible)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// runc's global flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Where container state lives.
    #[arg(long, global = true, default_value = "/run/hako")]
    pub root: PathBuf,
    /// Log file (errors are written there as well as to stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Hako's config file (default: $HAKO_CONFIG, else /etc/hako/config.toml). Tools that
    /// do not pass the environment on (podman/conmon) can pass this with
    /// `--runtime-flag config=PATH`.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Accepted for runc compatibility: cgroups are managed inside each sandbox VM (cgroup
    /// v2, cgroupfs), so the host's cgroup manager does not apply.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
}

impl Global {
    pub fn load_config(&self) -> anyhow::Result<crate::config::Config> {
        Ok(crate::config::Config::load_from(self.config.as_deref())?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell whether this host can run Hako sandboxes, and why not.
    Check(check::CheckArgs),
    /// Create a container (its sandbox VM boots; the process waits for `start`).
    Create(create::CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Create and start a container; unless detached, wait and exit with its status.
    Run(create::RunArgs),
    /// Print a container's OCI state.
    State { id: String },
    /// Send a signal (name or number, default TERM) to a container's init (or all).
    Kill {
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Delete a container (and its sandbox VM).
    Delete {
        id: String,
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Run a process in a running container.
    Exec(exec::ExecArgs),
    /// List a container's processes (PIDs inside its sandbox).
    Ps {
        id: String,
        #[arg(long, short = 'f', value_enum, default_value = "table")]
        format: control::Format,
    },
    /// List containers.
    List {
        #[arg(long, short = 'f', value_enum, default_value = "table")]
        format: control::Format,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Freeze a container's processes.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resource limits.
    Update(control::UpdateArgs),
    /// Print a container's statistics (once with --stats, else every --interval).
    Events {
        id: String,
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Print the OCI features document.
    Features,
    /// Manage sandbox templates (snapshots of a booted VM that sandboxes resume from).
    Template {
        #[command(subcommand)]
        command: template::TemplateCommand,
    },
    /// (internal) The per-container monitor started by `create`.
    #[command(hide = true)]
    Monitor(monitor::MonitorArgs),
    /// (internal) The host process that stands in for the container's init (`create`).
    #[command(hide = true)]
    StandIn(stand_in::StandInArgs),
    /// (internal) Waits for a detached exec and exits with its status.
    #[command(hide = true)]
    ExecWait(exec::ExecWaitArgs),
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?}")),
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Create(a) => create::create(g, a),
        Command::Start { id } => control::start(g, id),
        Command::Run(a) => create::run(g, a),
        Command::State { id } => state::state(g, id),
        Command::Kill { id, signal, all } => control::kill(g, id, signal, *all),
        Command::Delete { id, force } => delete::delete(g, id, *force),
        Command::Exec(a) => exec::exec(g, a),
        Command::Ps { id, format } => control::ps(g, id, *format),
        Command::List { format, quiet } => state::list(g, *format, *quiet),
        Command::Pause { id } => control::pause(g, id, false),
        Command::Resume { id } => control::pause(g, id, true),
        Command::Update(a) => control::update(g, a),
        Command::Events {
            id,
            stats,
            interval,
        } => control::events(g, id, *stats, *interval),
        Command::Features => features::features(),
        Command::Template { command } => template::run(g, command),
        Command::Monitor(a) => {
            let config = g.load_config()?;
            let code = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(monitor::run(config, &g.root, a))
                .inspect_err(|e| monitor::record_failure(&g.root, &a.id, e))?;
            Ok(u8::try_from(code).unwrap_or(255))
        }
        Command::ExecWait(a) => exec::exec_wait(g, a),
        Command::StandIn(a) => stand_in::run(g, a),
    }
}

pub use logging::{init_logging, report_error};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_style_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "hako",
            "--root",
            "/run/x",
            "--log",
            "/tmp/l",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--no-new-keyring",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.global.root, PathBuf::from("/run/x"));
        assert!(matches!(cli.command, Command::Create(ref a) if a.id == "c1" && a.no_new_keyring));
        let cli = Cli::try_parse_from(["hako", "kill", "c1", "KILL", "--all"]).unwrap();
        assert!(
            matches!(cli.command, Command::Kill { ref signal, all: true, .. } if signal == "KILL")
        );
        let cli = Cli::try_parse_from([
            "hako",
            "exec",
            "--detach",
            "--pid-file",
            "/p",
            "-e",
            "A=b",
            "c1",
            "sh",
            "-c",
            "x",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Exec(ref a) if a.args == ["sh", "-c", "x"]));
        assert!(Cli::try_parse_from(["hako", "delete", "--force", "c1"]).is_ok());
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("5h").is_err());
    }
}
