//! The agent's settings: from its command line when it runs as a host process (tests), from
//! the kernel command line's `agent.*` options when it is PID 1 of a VM.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hako_agent_api::policy::{DENY_OPTION, parse_deny_list};
use hako_agent_api::{AGENT_API_PORT, SHARED_FS_MOUNT_POINT};

/// What the agent serves and how it logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// ttrpc listen address: `vsock://-1:<port>` in a VM, `unix://<path>` on a host.
    pub listen: String,
    /// PID 1 of a VM: mount the basics, reap orphans, power off at the end.
    pub init: bool,
    /// tracing filter (`agent.log=` on the kernel command line).
    pub log: String,
    /// Host vsock port for a copy of the logs (`agent.log_port=`; VM only).
    pub log_port: Option<u32>,
    /// Bundles and libcontainer state.
    pub state_dir: PathBuf,
    /// Where container files are shared from the host (container `<id>` under `<id>/`).
    pub shared_dir: PathBuf,
    /// AgentService RPCs this agent refuses (`agent.deny=` on the kernel command line).
    pub deny: BTreeSet<String>,
}

/// Defaults in the guest. One component, as the shared directory's mount point: libcontainer
/// resolves its state and bundle paths with realpath(3), one `readlink` per component.
pub const STATE_DIR: &str = "/hako-state";

/// Errors in the agent's command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "unknown argument {0:?} (usage: hako-agent [--listen unix:///path | vsock://-1:PORT] [--log FILTER] [--deny RPC,...] [--version])"
    )]
    Unknown(String),
    #[error("{0} needs a value")]
    Missing(&'static str),
    #[error("--listen {0:?}: expected unix:///<path> or vsock://<cid>:<port>")]
    Listen(String),
}

impl AgentConfig {
    /// The defaults for PID 1 of a VM, adjusted by `agent.*` options of the kernel command line.
    pub fn for_init(kernel_cmdline: &str) -> Self {
        let mut c = Self {
            listen: format!("vsock://-1:{AGENT_API_PORT}"),
            init: true,
            log: "info".into(),
            log_port: None,
            state_dir: STATE_DIR.into(),
            shared_dir: SHARED_FS_MOUNT_POINT.into(),
            deny: BTreeSet::new(),
        };
        for arg in kernel_cmdline.split_whitespace() {
            if let Some(v) = arg.strip_prefix("agent.log=") {
                c.log = v.to_owned();
            } else if let Some(v) = arg.strip_prefix(DENY_OPTION) {
                c.deny = parse_deny_list(v);
            } else if let Some(v) = arg.strip_prefix("agent.log_port=") {
                c.log_port = v.parse().ok();
            } else if let Some(v) = arg.strip_prefix("agent.port=")
                && v.parse::<u32>().is_ok()
            {
                c.listen = format!("vsock://-1:{v}");
            }
        }
        c
    }

    /// From a host process's arguments (without the program name).
    pub fn from_args(args: &[String]) -> Result<Self, ConfigError> {
        let mut c = Self {
            listen: format!("vsock://-1:{AGENT_API_PORT}"),
            init: false,
            log: "info".into(),
            log_port: None,
            state_dir: STATE_DIR.into(),
            shared_dir: SHARED_FS_MOUNT_POINT.into(),
            deny: BTreeSet::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--listen" => {
                    let v = it.next().ok_or(ConfigError::Missing("--listen"))?;
                    if !(v.starts_with("unix://") || v.starts_with("vsock://")) {
                        return Err(ConfigError::Listen(v.clone()));
                    }
                    c.listen = v.clone();
                }
                "--deny" => {
                    c.deny = parse_deny_list(it.next().ok_or(ConfigError::Missing("--deny"))?)
                }
                "--log" => c.log = it.next().ok_or(ConfigError::Missing("--log"))?.clone(),
                "--state-dir" => {
                    c.state_dir = it.next().ok_or(ConfigError::Missing("--state-dir"))?.into()
                }
                "--shared-dir" => {
                    c.shared_dir = it
                        .next()
                        .ok_or(ConfigError::Missing("--shared-dir"))?
                        .into()
                }
                other => return Err(ConfigError::Unknown(other.to_owned())),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_reads_agent_options_from_the_kernel_command_line() {
        let c = AgentConfig::for_init(
            "console=ttyS0 agent.log=debug agent.port=2000 agent.log_port=1025 agent.deny=ExecProcess,TtyWinResize quiet",
        );
        assert_eq!(
            c.deny.iter().map(String::as_str).collect::<Vec<_>>(),
            ["ExecProcess", "TtyWinResize"]
        );
        assert_eq!(c.log_port, Some(1025));
        assert_eq!(c.listen, "vsock://-1:2000");
        assert_eq!(c.log, "debug");
        assert!(c.init);
        assert_eq!(
            AgentConfig::for_init("agent.port=x").listen,
            "vsock://-1:1024"
        );
    }

    #[test]
    fn host_arguments_are_checked() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = AgentConfig::from_args(&args(&["--listen", "unix:///tmp/a.sock"])).unwrap();
        assert_eq!((c.listen.as_str(), c.init), ("unix:///tmp/a.sock", false));
        assert_eq!(
            AgentConfig::from_args(&args(&["--listen"])),
            Err(ConfigError::Missing("--listen"))
        );
        assert!(matches!(
            AgentConfig::from_args(&args(&["--listen", "tcp://x"])),
            Err(ConfigError::Listen(_))
        ));
        assert!(matches!(
            AgentConfig::from_args(&args(&["--bogus"])),
            Err(ConfigError::Unknown(_))
        ));
    }
}
