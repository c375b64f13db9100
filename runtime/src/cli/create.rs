//! `hako create` and `hako run`: claim the id, start the container's monitor (which boots the
//! sandbox VM and creates the container in it), wait until it is created, start the
//! container's stand-in (the host process callers know as its init), write the pid file, run
//! the prestart/createRuntime hooks. `run` then starts it and, unless detached, waits and
//! exits with its status.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::Value;

use super::Global;
use super::client::{Container, OciStatus, rfc3339};
use crate::config::Config;
use crate::sandbox::StateDir;
use crate::state::ContainerRecord;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The OCI bundle (config.json and the root file system).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Where to write the container's pid: its stand-in, a host process that lives as long
    /// as the container's init and ends with its status.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the terminal's pty master to (process.terminal).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (the container's root is set up in the guest).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (no session keyring is made).
    #[arg(long)]
    pub no_new_keyring: bool,
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container started instead of waiting for it.
    #[arg(long, short = 'd')]
    pub detach: bool,
}

/// The bundle's config, checked enough to name what is wrong before anything starts.
pub fn read_bundle(bundle: &Path) -> anyhow::Result<Value> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let spec: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    if !spec.is_object() {
        bail!(
            "{} is not an OCI runtime config (not an object)",
            path.display()
        );
    }
    if spec.get("ociVersion").and_then(Value::as_str).is_none() {
        bail!("{}: ociVersion is missing", path.display());
    }
    let args = spec.pointer("/process/args").and_then(Value::as_array);
    if args.is_none_or(|a| a.is_empty()) {
        bail!("{}: process.args is missing or empty", path.display());
    }
    crate::sandbox::volumes::host_rootfs(&spec, bundle)
        .with_context(|| format!("{}", path.display()))?;
    for ns in spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let typ = ns.get("type").and_then(Value::as_str).unwrap_or_default();
        // A network namespace path is the caller's network for the container, which the
        // sandbox VM has of its own (docs/CALLERS.md).
        if let (Some(p), false) = (ns.get("path").and_then(Value::as_str), typ == "network") {
            bail!(
                "{}: linux.namespaces: the {typ} namespace {p}: a Hako container runs in a VM of its own and cannot join a host process's namespaces (containers that share namespaces run as one pod, through containerd's CRI)",
                path.display()
            );
        }
    }
    Ok(spec)
}

pub fn create(g: &Global, a: &CreateArgs) -> anyhow::Result<u8> {
    // The stand-in and the monitor outlive us (they are reparented to the nearest
    // subreaper, e.g. conmon, which waits for the stand-in).
    create_container(g, a).map(|_| 0)
}

/// Creates the container; returns its stand-in (our child).
fn create_container(g: &Global, a: &CreateArgs) -> anyhow::Result<std::process::Child> {
    let bundle =
        std::path::absolute(&a.bundle).with_context(|| format!("bundle {}", a.bundle.display()))?;
    crate::sandbox::check_id(&a.id)?;
    let spec = read_bundle(&bundle)?;
    let terminal = spec.pointer("/process/terminal").and_then(Value::as_bool) == Some(true);
    if terminal && a.console_socket.is_none() {
        bail!("process.terminal is set: pass --console-socket (the pty master is sent there)");
    }
    // A bad config is reported now, not by the monitor.
    let config = g.load_config()?;
    let slave = match (&a.console_socket, terminal) {
        (Some(sock), true) => Some(super::console::pty_to_console_socket(sock)?),
        _ => None,
    };
    let dir = StateDir::create(&g.root, &a.id)?;
    let record = ContainerRecord {
        version: 1,
        id: a.id.clone(),
        bundle: bundle.clone(),
        created: rfc3339(SystemTime::now()),
        monitor_pid: 0,
        monitor_start: 0,
        pid: 0,
        pid_start: 0,
        created_in_guest: false,
        exit_status: None,
        annotations: spec
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        owner: String::new(),
        hooks: crate::hooks::of(&spec),
    };
    let skipped = crate::hooks::unsupported(&record.hooks);
    if !skipped.is_empty() {
        tracing::warn!(container_id = %a.id, "hooks not run: {skipped:?} hooks need the container's mount namespace, which is in the guest");
        eprintln!(
            "hako: warning: {skipped:?} hooks are not run: they run in the container's mount namespace, which is in the sandbox VM"
        );
    }
    record.save(&dir.dir)?;
    // From here on start_monitor removes the directory if anything fails.
    let _ = dir.keep();
    start_monitor(g, &config, &bundle, &a.id, slave)?;
    // From here a failure removes the container (monitor, VM, stand-in) again.
    let after = || -> anyhow::Result<std::process::Child> {
        let rootfs = crate::sandbox::volumes::host_rootfs(&spec, &bundle)?;
        let stand_in = super::stand_in::start(g, &a.id, &rootfs)?;
        if let Some(p) = &a.pid_file {
            std::fs::write(p, stand_in.id().to_string())
                .with_context(|| format!("writing the pid file {}", p.display()))?;
        }
        let c = Container::open(&g.root, &a.id)?;
        // As runc: the hooks of create see the container "creating".
        let state = c.state_json(OciStatus::Creating);
        for kind in ["prestart", "createRuntime"] {
            crate::hooks::run(&record.hooks, kind, &state)?;
        }
        Ok(stand_in)
    };
    after().inspect_err(|_| {
        let _ = super::delete::delete(g, &a.id, true);
    })
}

/// Starts `hako monitor` with the container's stdio (ours, or the pty slave) and waits until
/// it has created the container; on failure removes everything and returns its error. The
/// monitor outlives us (it is reparented to the nearest subreaper, e.g. conmon).
fn start_monitor(
    g: &Global,
    config: &Config,
    bundle: &Path,
    id: &str,
    slave: Option<OwnedFd>,
) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the hako binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(&g.root);
    if let Some(log) = &g.log {
        // The monitor's lines join the caller's log in the caller's format.
        cmd.arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg(match g.log_format {
                super::LogFormat::Json => "json",
                super::LogFormat::Text => "text",
            });
    }
    if g.debug {
        cmd.arg("--debug");
    }
    if let Some(c) = &g.config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("monitor").arg("--bundle").arg(bundle);
    if let Some(s) = slave {
        cmd.arg("--terminal");
        let (i, o, e) = (s.try_clone()?, s.try_clone()?, s);
        cmd.stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e));
    }
    cmd.arg(id);
    // Its own process group: a terminal's ^C reaches the container through the guest, not
    // the monitor.
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            super::client::remove_container_dir(&g.root, id);
            return Err(e).context("starting the container monitor");
        }
    };
    let dir = g.root.join(id);
    let deadline = config.agent_timeout() + Duration::from_secs(300);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let error = std::fs::read_to_string(dir.join(super::monitor::ERROR_FILE));
            super::client::remove_container_dir(&g.root, id);
            match error {
                // Bounded and printable: it may quote the guest.
                Ok(e) => bail!("{}", crate::host::vmm_dir::printable(e.trim(), 4096)),
                Err(_) => bail!(
                    "creating container {id} failed (its monitor ended {status}; its error is above or in the --log file)"
                ),
            }
        }
        if ContainerRecord::load(&dir).is_ok_and(|r| r.created_in_guest) {
            return Ok(child);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            super::client::remove_container_dir(&g.root, id);
            bail!("container {id} was not created within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(g: &Global, a: &RunArgs) -> anyhow::Result<u8> {
    let mut stand_in = create_container(g, &a.create)?;
    if let Err(e) = super::control::start(g, &a.create.id) {
        let _ = super::delete::delete(g, &a.create.id, true);
        return Err(e);
    }
    if a.detach {
        return Ok(0);
    }
    // The stand-in ends with the container's status.
    let status = stand_in.wait().context("waiting for the container")?;
    super::delete::delete(g, &a.create.id, true)?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    Ok(u8::try_from(code).unwrap_or(255))
}
