//! Hako's runtime configuration: `/etc/hako/config.toml` (or the file `$HAKO_CONFIG` names),
//! shared by the containerd shim and the `hako` CLI. Every key is optional; the defaults are
//! documented in `docs/CONFIG.md` and checked by [`Config::validate`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use hako_vmm_api::CpuProfile;
use serde::Deserialize;

/// Where the configuration is read from when `$HAKO_CONFIG` is not set.
pub const DEFAULT_PATH: &str = "/etc/hako/config.toml";
/// Where the guest kernel and agent image are looked for when neither the file nor the
/// environment names them.
pub const DEFAULT_SHARE_DIR: &str = "/usr/local/share/hako";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub vm: VmDefaults,
    pub template: TemplateConfig,
    pub agent: AgentPolicyConfig,
    /// Which file this came from (empty for built-in defaults), for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[runtime]`: where state lives, how long to wait, how much to log.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Per-sandbox state directories: `<root>/<sandbox-id>/`.
    pub root: PathBuf,
    /// How long a new sandbox's agent may take to answer (guests boot in about a minute where
    /// kernel mode is emulated; milliseconds on real KVM).
    pub agent_timeout_secs: u64,
    /// tracing filter for the shim and hako-vmm (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: String,
    /// Keep the guest kernel's messages (no `quiet`) and the agent's debug logs in the
    /// sandbox's console log.
    pub debug_console: bool,
}

/// `[vm]`: what each sandbox VM is made of and how big it is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VmDefaults {
    /// hako-vmm binary (default: next to the runtime binary, else on PATH).
    pub vmm: Option<PathBuf>,
    /// Guest kernel (default: $HAKO_KERNEL, else `<share>/vmlinux`).
    pub kernel: Option<PathBuf>,
    /// Guest image holding the agent (default: $HAKO_AGENT_IMAGE, else `<share>/agent.cpio`).
    pub image: Option<PathBuf>,
    /// vCPUs of a sandbox whose containers set no CPU limit.
    pub default_vcpus: u8,
    /// Upper bound on vCPUs, whatever the limits ask.
    pub max_vcpus: u8,
    /// Guest memory (MiB) of a sandbox whose containers set no memory limit.
    pub default_memory_mib: u32,
    /// Added to the containers' memory limit: the guest kernel, the agent and page cache.
    pub overhead_memory_mib: u32,
    /// CPU features the guest sees: `conservative` (works everywhere) or `host`.
    pub cpu_profile: CpuProfile,
    /// Extra guest kernel arguments.
    pub kernel_params: String,
    /// Run each sandbox's hako-vmm in its jail (mount namespace with only its files,
    /// capabilities cut, no_new_privs). Template-making VMMs run without it.
    pub jail: bool,
    /// Whether a jailed hako-vmm runs as an unprivileged host uid/gid (a user namespace with
    /// a range of 65536 host ids of its own per sandbox, its binds id-mapped): `auto` (where
    /// the host can, else uid 0 with a warning), `required` (a sandbox fails where the host
    /// cannot), `off`.
    pub user_namespace: UserNamespaceMode,
    /// Run each sandbox's hako-vmm in a host cgroup of its own (a child of the runtime's),
    /// limited to the VM's memory plus `host_overhead_memory_mib`, its vCPUs plus half a
    /// CPU, and a bounded number of threads.
    pub host_cgroup: bool,
    /// The VMM's own memory beyond the guest's (its threads, virtio-fs, page cache).
    pub host_overhead_memory_mib: u32,
}

/// `[vm] user_namespace`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserNamespaceMode {
    #[default]
    Auto,
    Required,
    Off,
}

/// `[agent]`: the agent API policy of every sandbox (see `hako_agent_api::policy`). The
/// guest's agent refuses the denied RPCs with PERMISSION_DENIED; the runtime's own lifecycle
/// RPCs cannot be denied.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentPolicyConfig {
    /// When set, only these RPCs (and none else) are served; unset serves all.
    pub allow_rpcs: Option<Vec<String>>,
    /// RPCs refused even if allowed, e.g. `["ExecProcess"]` for a production profile.
    pub deny_rpcs: Vec<String>,
}

/// `[template]`: starting sandboxes from a snapshot of a booted VM (`hako template create`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConfig {
    /// Resume sandboxes from a matching template when one exists; boot cold otherwise.
    /// Off by default: sandboxes resumed from one template share its memory pages
    /// (copy-on-write) and start from the same guest state until the runtime reseeds it.
    pub enabled: bool,
    /// Where templates are kept, one directory per key.
    pub dir: PathBuf,
    /// When a sandbox finds no valid template for its make (none yet, a stale or a broken
    /// one), it boots cold and `hako template create` makes one in the background for the
    /// next sandboxes.
    pub auto_create: bool,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/hako/templates"),
            auto_create: true,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/run/hako"),
            agent_timeout_secs: 600,
            log_level: "info".into(),
            debug_console: false,
        }
    }
}

impl Default for VmDefaults {
    fn default() -> Self {
        Self {
            vmm: None,
            kernel: None,
            image: None,
            default_vcpus: 1,
            max_vcpus: 8,
            default_memory_mib: 256,
            overhead_memory_mib: 128,
            cpu_profile: CpuProfile::Conservative,
            kernel_params: String::new(),
            jail: true,
            user_namespace: UserNamespaceMode::Auto,
            host_cgroup: true,
            host_overhead_memory_mib: 128,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            vm: VmDefaults::default(),
            template: TemplateConfig::default(),
            agent: AgentPolicyConfig::default(),
            source: PathBuf::new(),
        }
    }
}

impl Config {
    /// `$HAKO_CONFIG` if set (it must exist), else `/etc/hako/config.toml` if it exists, else
    /// the defaults.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(None)
    }

    /// `explicit` (the `hako --config` flag) if given, else as [`Config::load`].
    pub fn load_from(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(p) = explicit {
            return Self::from_file(p);
        }
        match std::env::var_os("HAKO_CONFIG") {
            Some(p) => Self::from_file(Path::new(&p)),
            None if Path::new(DEFAULT_PATH).exists() => Self::from_file(Path::new(DEFAULT_PATH)),
            None => Ok(Self::default()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        config.source = path.into();
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Refuses values no sandbox could start with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| ConfigError::Invalid {
            path: self.source.clone(),
            what,
        };
        let vm = &self.vm;
        if vm.default_vcpus == 0 || vm.max_vcpus == 0 || vm.default_vcpus > vm.max_vcpus {
            return Err(bad(format!(
                "vm.default_vcpus ({}) must be between 1 and vm.max_vcpus ({})",
                vm.default_vcpus, vm.max_vcpus
            )));
        }
        if vm.default_memory_mib < 64 {
            return Err(bad(format!(
                "vm.default_memory_mib ({}) is below the 64 MiB a guest needs",
                vm.default_memory_mib
            )));
        }
        if vm.user_namespace == UserNamespaceMode::Required && !vm.jail {
            return Err(bad(
                "vm.user_namespace = \"required\" needs vm.jail = true (the user namespace is part of the jail)".into(),
            ));
        }
        if self.runtime.agent_timeout_secs == 0 {
            return Err(bad("runtime.agent_timeout_secs must be above 0".into()));
        }
        if !self.template.dir.is_absolute() {
            return Err(bad(format!(
                "template.dir ({}) must be an absolute path",
                self.template.dir.display()
            )));
        }
        self.denied_rpcs()
            .map_err(|e| bad(format!("agent.allow_rpcs/deny_rpcs: {e}")))?;
        if !self.runtime.root.is_absolute() {
            return Err(bad(format!(
                "runtime.root ({}) must be an absolute path",
                self.runtime.root.display()
            )));
        }
        Ok(())
    }

    /// The RPCs every sandbox's agent refuses.
    pub fn denied_rpcs(
        &self,
    ) -> Result<std::collections::BTreeSet<String>, hako_agent_api::policy::PolicyError> {
        hako_agent_api::policy::denied_rpcs(self.agent.allow_rpcs.as_deref(), &self.agent.deny_rpcs)
    }

    pub fn agent_timeout(&self) -> Duration {
        Duration::from_secs(self.runtime.agent_timeout_secs)
    }

    /// The guest kernel: the file's value, else `$HAKO_KERNEL`, else the shared default.
    pub fn kernel(&self) -> PathBuf {
        artefact(self.vm.kernel.as_ref(), "HAKO_KERNEL", "vmlinux")
    }

    /// The agent image: the file's value, else `$HAKO_AGENT_IMAGE`, else the shared default.
    pub fn image(&self) -> PathBuf {
        artefact(self.vm.image.as_ref(), "HAKO_AGENT_IMAGE", "agent.cpio")
    }

    /// The guest kernel command line's extra arguments.
    pub fn cmdline(&self) -> String {
        let mut parts = Vec::new();
        if !self.runtime.debug_console {
            parts.push("quiet".to_owned());
        } else {
            parts.push("agent.log=debug".to_owned());
        }
        // validate() refused a bad policy; a config that skipped it gets none rather than a
        // guest that refuses what the runtime needs.
        if let Ok(denied) = self.denied_rpcs()
            && let Some(option) = hako_agent_api::policy::deny_option(&denied)
        {
            parts.push(option);
        }
        if !self.vm.kernel_params.is_empty() {
            parts.push(self.vm.kernel_params.clone());
        }
        parts.join(" ")
    }
}

fn artefact(configured: Option<&PathBuf>, var: &str, file: &str) -> PathBuf {
    configured
        .cloned()
        .or_else(|| std::env::var_os(var).map(PathBuf::from))
        .unwrap_or_else(|| Path::new(DEFAULT_SHARE_DIR).join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.validate().is_ok());
        assert_eq!(c.runtime.root, Path::new("/run/hako"));
    }

    #[test]
    fn every_documented_key_parses() {
        let c = Config::parse(
            r#"
            [runtime]
            root = "/run/hako-test"
            agent_timeout_secs = 30
            log_level = "debug"
            debug_console = true
            [vm]
            vmm = "/opt/hako/hako-vmm"
            kernel = "/opt/hako/vmlinux"
            image = "/opt/hako/agent.cpio"
            default_vcpus = 2
            max_vcpus = 4
            default_memory_mib = 512
            overhead_memory_mib = 64
            cpu_profile = "host"
            kernel_params = "console=ttyS0"
            jail = true
            user_namespace = "required"
            host_cgroup = true
            host_overhead_memory_mib = 96
            [agent]
            allow_rpcs = ["CreateSandbox", "DestroySandbox", "SetGuestDateTime", "CreateContainer", "StartContainer", "RemoveContainer", "WaitProcess", "SignalProcess", "WriteStdin", "ReadStdout", "ReadStderr", "CloseStdin", "GetOOMEvent", "UpdateInterface", "UpdateRoutes", "AddARPNeighbors", "ExecProcess", "TtyWinResize", "StatsContainer", "ListProcesses", "UpdateContainer", "PauseContainer", "ResumeContainer", "ListInterfaces", "ListRoutes"]
            deny_rpcs = ["ExecProcess"]
            "#,
        )
        .unwrap();
        assert_eq!(c.vm.default_vcpus, 2);
        assert_eq!(c.vm.cpu_profile, CpuProfile::Host);
        assert_eq!(c.vm.user_namespace, UserNamespaceMode::Required);
        assert_eq!(c.kernel(), Path::new("/opt/hako/vmlinux"));
        assert_eq!(
            c.cmdline(),
            "agent.log=debug agent.deny=ExecProcess,GuestDetails console=ttyS0"
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("[vm]\nvcpus = 2\n").unwrap_err().to_string();
        assert!(e.contains("vcpus"), "{e}");
        let mut c = Config::parse("[vm]\ndefault_vcpus = 9\nmax_vcpus = 8\n").unwrap();
        c.source = "/etc/hako/config.toml".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("default_vcpus") && e.contains("config.toml"),
            "{e}"
        );
        let c = Config::parse("[runtime]\nroot = \"relative\"\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[vm]\njail = false\nuser_namespace = \"required\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("needs vm.jail = true"), "{e}");
        let e = Config::parse("[vm]\nuser_namespace = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("user_namespace") || e.contains("auto"), "{e}");
    }

    #[test]
    fn the_agent_policy_reaches_the_kernel_command_line() {
        let c = Config::parse("[agent]\ndeny_rpcs = [\"ExecProcess\"]\n").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.cmdline(), "quiet agent.deny=ExecProcess");
        assert_eq!(Config::default().cmdline(), "quiet");
        let c = Config::parse("[agent]\ndeny_rpcs = [\"Exec\"]\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("deny_rpcs") && e.contains("\"Exec\""), "{e}");
        let c = Config::parse("[agent]\nallow_rpcs = [\"CreateSandbox\"]\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cannot be denied"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Config::from_file(Path::new("/nonexistent/hako.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/hako.toml"), "{e}");
    }
}
