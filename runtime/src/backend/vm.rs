//! A sandbox VM: hako-vmm spawned with a JSON config in the sandbox's state directory (the
//! shared directory beside it, and `vmm/` for the console log, control socket and hybrid vsock
//! sockets: the one directory hako-vmm may write), and stopped (killed if need be) when the
//! handle goes. hako-vmm can rewrite `vmm/`: the runtime acts on it only through
//! [`VmmDir`](crate::host::vmm_dir::VmmDir), and reads logs by bounded tails.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hako_agent_api::SHARED_FS_TAG;
use hako_vmm_api::{
    ConsoleConfig, ControlReply, ControlRequest, CpuProfile, FsConfig, KernelConfig, MachineConfig,
    NetConfig, VmConfig, VsockConfig,
};

use crate::host::vmm_dir::{self, VmmDir};

/// The most bytes of a control reply read (replies are a line of JSON).
const CONTROL_REPLY_BYTES: u64 = 64 * 1024;

/// The vsock context id of a VM booted cold (one VM per hako-vmm, so any id ≥ 3 serves).
pub const DEFAULT_GUEST_CID: u32 = 3;

/// A fresh vsock context id for one sandbox: VMs resumed from one template must not share
/// one (they would all have the template's). Random in [3, 2^31).
/// How a hako-vmm process ended, in words (its exit statuses are hako-vmm-api's).
pub fn describe_exit(status: ExitStatus) -> String {
    use hako_vmm_api::control::{EXIT_BAD_CONFIG, EXIT_SECCOMP_VIOLATION, EXIT_VMM_ERROR};
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(signal)
            .map(|s| s.as_str())
            .unwrap_or("?");
        return format!("killed by signal {signal} ({name})");
    }
    let code = status.code().unwrap_or(-1);
    let what = match u8::try_from(code) {
        Ok(0) => "the guest powered off",
        Ok(3) => "the guest rebooted",
        Ok(4) => "the guest crashed",
        Ok(5) => "it was stopped",
        Ok(EXIT_VMM_ERROR) => "a VMM error (vmm.log says which)",
        Ok(EXIT_BAD_CONFIG) => "a bad VM configuration",
        Ok(EXIT_SECCOMP_VIOLATION) => "a system call its seccomp filter forbids (vmm.log names it)",
        _ => "an unknown status",
    };
    format!("exit status {code}: {what}")
}

pub fn random_cid() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        return DEFAULT_GUEST_CID + std::process::id() % 1_000_000;
    }
    3 + u32::from_le_bytes(b) % ((1 << 31) - 3)
}

/// What the VM is made of.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub image: PathBuf,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub cpu_profile: CpuProfile,
    /// Extra kernel arguments.
    pub cmdline: String,
    /// The guest's vsock context id.
    pub guest_cid: u32,
    /// The pod network namespace hako-vmm runs in (its taps are there), if any.
    pub netns: Option<PathBuf>,
    /// Its net devices, one per tap.
    pub net: Vec<NetConfig>,
    /// hako-vmm's jail root (an empty directory), when it runs jailed.
    pub jail: Option<PathBuf>,
    /// The host ids a jailed hako-vmm runs as (it inherits the range's lock), and whether
    /// it may stay root where the host cannot do that.
    pub jail_user: Option<(std::sync::Arc<crate::sandbox::id_range::IdRange>, bool)>,
    /// The host cgroup hako-vmm joins before it runs, when there is one.
    pub host_cgroup: Option<crate::sandbox::host_cgroup::HostCgroup>,
}

/// hako-vmm's writable directory, in the sandbox directory.
pub const VMM_DIR: &str = "vmm";

/// Paths of one sandbox's VM, all under its state directory.
#[derive(Debug, Clone)]
pub struct VmPaths {
    /// What hako-vmm writes (console, sockets), apart from the runtime's own files (state,
    /// config, logs): its jail holds this directory, not the sandbox's.
    pub vmm_dir: PathBuf,
    pub config: PathBuf,
    pub console: PathBuf,
    pub control: PathBuf,
    pub vsock: PathBuf,
    pub shared: PathBuf,
    /// hako-vmm's own log (its stderr).
    pub vmm_log: PathBuf,
}

impl VmPaths {
    pub fn under(dir: &Path) -> Self {
        let vmm_dir = dir.join(VMM_DIR);
        Self {
            config: dir.join("vm.json"),
            console: vmm_dir.join("console.log"),
            control: vmm_dir.join("control.sock"),
            // Short: the VMM listens on `<vsock>_<port>` too, and socket paths must stay
            // under 108 bytes with 64-character container ids.
            vsock: vmm_dir.join("vsock"),
            vmm_dir,
            shared: dir.join(crate::host::share::SHARED),
            vmm_log: dir.join("vmm.log"),
        }
    }
}

impl VmPaths {
    /// Removes the sockets a VMM that died left behind (its vsock and control sockets), so
    /// another VMM can take the paths: by name in the VMM directory, never through a symlink.
    pub fn remove_sockets(&self) {
        let dir = match VmmDir::open(&self.vmm_dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        for socket in [&self.vsock, &self.control] {
            if let Err(e) = dir.remove(entry_name(socket)) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// The name in the VMM directory of one of [`VmPaths`]' entries.
fn entry_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or_default()
}

/// The VMM's config for `spec` with everything in `paths`.
pub fn vm_config(spec: &VmSpec, paths: &VmPaths) -> VmConfig {
    VmConfig {
        machine: MachineConfig {
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            cpu_profile: spec.cpu_profile,
        },
        kernel: KernelConfig {
            path: spec.kernel.clone(),
            initrd: Some(spec.image.clone()),
            cmdline: spec.cmdline.clone(),
            boot_protocol: Default::default(),
        },
        console: ConsoleConfig::File(paths.console.clone()),
        control_socket: Some(paths.control.clone()),
        devices: hako_vmm_api::DevicesConfig {
            vsock: Some(VsockConfig {
                guest_cid: spec.guest_cid,
                uds_path: paths.vsock.clone(),
            }),
            fs: vec![FsConfig {
                tag: SHARED_FS_TAG.into(),
                shared_dir: paths.shared.clone(),
                read_only: false,
            }],
            block: Vec::new(),
            net: spec.net.clone(),
        },
        security: hako_vmm_api::SecurityConfig {
            jail: spec.jail.clone().map(|root| hako_vmm_api::JailConfig {
                root,
                user: spec
                    .jail_user
                    .as_ref()
                    .map(|(range, fallback)| range.jail_user(*fallback)),
            }),
            ..Default::default()
        },
    }
}

/// One request on the hako-vmm control socket at `path` (a fresh connection), and its reply.
/// The socket is not reached through a symlink (see [`VmmDir`]).
pub fn control(path: &Path, request: &ControlRequest) -> anyhow::Result<ControlReply> {
    let (dir, name) = VmmDir::open_parent(path)?;
    control_in(&dir, &name, request)
}

/// How long a control request and its reply may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(300);

fn control_in(
    dir: &VmmDir,
    name: &OsStr,
    request: &ControlRequest,
) -> anyhow::Result<ControlReply> {
    use std::io::Read;
    let s = dir
        .connect(name)
        .context("connecting to hako-vmm's control socket")?;
    // A VMM that never answers must not hold the caller forever (a snapshot, the slowest
    // request, writes the guest's memory: minutes at most).
    s.set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .context("setting the control socket's timeouts")?;
    let mut s = s;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    std::io::Write::write_all(&mut s, &line).context("sending a control request")?;
    let mut reply = Vec::new();
    std::io::BufRead::read_until(
        &mut std::io::BufReader::new(s.take(CONTROL_REPLY_BYTES)),
        b'\n',
        &mut reply,
    )
    .context("reading hako-vmm's control reply")?;
    serde_json::from_slice(&reply).with_context(|| {
        format!(
            "hako-vmm replied {:?}",
            vmm_dir::printable(&String::from_utf8_lossy(&reply), 200)
        )
    })
}

/// A running hako-vmm.
pub struct Vm {
    child: Child,
    pub paths: VmPaths,
    /// `paths.vmm_dir`, opened once before hako-vmm started.
    vmm_dir: VmmDir,
}

impl Vm {
    /// Writes the config and starts hako-vmm (its log goes to `vmm.log` at $HAKO_LOG's level,
    /// warn by default).
    pub fn start(spec: &VmSpec, paths: VmPaths) -> anyhow::Result<Self> {
        Self::spawn(spec, paths, None)
    }

    /// Like [`Vm::start`], resuming the snapshot (template) in `snapshot` instead of booting.
    pub fn restore(spec: &VmSpec, paths: VmPaths, snapshot: &Path) -> anyhow::Result<Self> {
        Self::spawn(spec, paths, Some(snapshot))
    }

    fn spawn(spec: &VmSpec, paths: VmPaths, snapshot: Option<&Path>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&paths.vmm_dir)
            .with_context(|| format!("creating {}", paths.vmm_dir.display()))?;
        let vmm_dir = VmmDir::open(&paths.vmm_dir)?;
        let json = serde_json::to_vec_pretty(&vm_config(spec, &paths))?;
        std::fs::write(&paths.config, json)
            .with_context(|| format!("writing {}", paths.config.display()))?;
        let log = std::fs::File::create(&paths.vmm_log)
            .with_context(|| format!("creating {}", paths.vmm_log.display()))?;
        let cgroup_procs = match &spec.host_cgroup {
            Some(cg) => Some(cg.procs_files()?),
            None => None,
        };
        let start = || {
            let mut cmd = Command::new(&spec.vmm);
            if let Some(procs) = cgroup_procs {
                crate::sandbox::host_cgroup::join_on_exec(&mut cmd, procs);
            }
            cmd.arg("--config").arg(&paths.config);
            if let Some(dir) = snapshot {
                cmd.arg("--restore").arg(dir);
            }
            cmd.env(
                "HAKO_LOG",
                std::env::var("HAKO_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| match &spec.host_cgroup {
                Some(cg) => format!(
                    "starting {} in its host cgroup {:?}",
                    spec.vmm.display(),
                    cg.dirs
                ),
                None => format!("starting {}", spec.vmm.display()),
            })
        };
        let child = match &spec.netns {
            Some(netns) => crate::network::run_in_netns(netns, start)?,
            None => start()?,
        };
        Ok(Self {
            child,
            paths,
            vmm_dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// hako-vmm's user namespace, if it runs in one of its own (its jail's), else None.
    /// Asked once the guest runs: the VMM enters it before it builds the VM.
    pub fn user_namespace(&self) -> anyhow::Result<Option<OwnedFd>> {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/proc/{}/ns/user", self.child.id());
        let theirs = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let (t, ours) = (
            theirs
                .metadata()
                .with_context(|| format!("reading {path}"))?,
            std::fs::metadata("/proc/self/ns/user").context("reading /proc/self/ns/user")?,
        );
        Ok(if (t.dev(), t.ino()) == (ours.dev(), ours.ino()) {
            None
        } else {
            Some(theirs.into())
        })
    }

    /// One request on hako-vmm's control socket.
    pub fn control(&self, request: &ControlRequest) -> anyhow::Result<ControlReply> {
        control_in(&self.vmm_dir, entry_name(&self.paths.control), request)
    }

    /// Kills the VMM if it still runs, and reaps it.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The VMM's exit status if it has ended.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The VMM's exit status if it ends within `grace` (a VMM killed while its guest was
    /// being reached is found dead a moment after its sockets closed).
    pub fn ended_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if start.elapsed() < grace => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Waits up to `timeout` for the VMM to end by itself, then kills it.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.ended_within(timeout) {
            return Ok(status);
        }
        self.child.kill().context("killing hako-vmm")?;
        let status = self.child.wait()?;
        bail!("hako-vmm did not stop within {timeout:?}; killed ({status})");
    }

    /// For error messages: the last lines of the guest console and, if hako-vmm logged
    /// anything (a VMM that failed to start says why there), of its log.
    pub fn last_words(&self, lines: usize) -> String {
        last_words(&self.vmm_dir, &self.paths, lines)
    }
}

/// [`Vm::last_words`]: bounded tails (see [`vmm_dir::read_tail`]), the console's read in the
/// VMM directory without following a symlink, neither waiting on a FIFO.
fn last_words(dir: &VmmDir, paths: &VmPaths, lines: usize) -> String {
    let console = match dir.tail(entry_name(&paths.console), lines) {
        Ok(text) if !text.trim().is_empty() => format!(
            "guest console {} ends with:\n{text}",
            paths.console.display()
        ),
        Ok(_) => format!("guest console {} is empty", paths.console.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("guest console {} is empty", paths.console.display())
        }
        Err(e) => format!("guest console unreadable: {:#}", anyhow::Error::new(e)),
    };
    let mut out = console;
    match vmm_dir::tail_of_path(&paths.vmm_log, lines) {
        Ok(log) if !log.trim().is_empty() => out.push_str(&format!(
            "\nhako-vmm's log {} ends with:\n{log}",
            paths.vmm_log.display()
        )),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => out.push_str(&format!(
            "\nhako-vmm's log {} unreadable: {e}",
            paths.vmm_log.display()
        )),
    }
    out
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_exits_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        let seccomp = describe_exit(ExitStatus::from_raw(159 << 8));
        assert!(
            seccomp.starts_with("exit status 159: a system call"),
            "{seccomp}"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(0)),
            "exit status 0: the guest powered off"
        );
    }

    /// A sandbox state directory with its VMM directory, as [`Vm::start`] makes them.
    fn state_dir() -> (tempfile::TempDir, VmPaths, VmmDir) {
        let root = tempfile::tempdir().unwrap();
        let paths = VmPaths::under(root.path());
        std::fs::create_dir(&paths.vmm_dir).unwrap();
        let dir = VmmDir::open(&paths.vmm_dir).unwrap();
        (root, paths, dir)
    }

    #[test]
    fn last_words_refuse_a_symlinked_console() {
        let (root, paths, dir) = state_dir();
        let secret = root.path().join("shadow");
        std::fs::write(&secret, "root:$6$secret-hash:19000::\n").unwrap();
        std::os::unix::fs::symlink(&secret, &paths.console).unwrap();
        let words = last_words(&dir, &paths, 5);
        assert!(!words.contains("secret-hash"), "{words}");
        assert!(words.contains("guest console unreadable"), "{words}");
    }

    #[test]
    fn last_words_do_not_wait_on_a_fifo_console() {
        let (_root, paths, dir) = state_dir();
        nix::unistd::mkfifo(&paths.console, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(last_words(&dir, &paths, 5));
        });
        let words = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("last_words hung on a FIFO console");
        assert!(words.contains("not a regular file"), "{words}");
    }

    #[test]
    fn last_words_of_a_huge_console_are_a_bounded_tail() {
        let (_root, paths, dir) = state_dir();
        let mut console = std::fs::File::create(&paths.console).unwrap();
        let newlines = vec![b'\n'; 1 << 20];
        for _ in 0..20 {
            std::io::Write::write_all(&mut console, &newlines).unwrap();
        }
        // One line of 8 MiB, then the guest's last words.
        std::io::Write::write_all(&mut console, &vec![b'x'; 8 << 20]).unwrap();
        std::io::Write::write_all(&mut console, b"\nKernel panic - not syncing\n").unwrap();
        std::fs::write(&paths.vmm_log, vec![b'y'; 4 << 20]).unwrap();
        let words = last_words(&dir, &paths, 5);
        assert!(words.len() < 4096, "{} bytes of last words", words.len());
        assert!(words.ends_with("…"), "{words}");
        assert!(
            words.contains("ends with:\nKernel panic - not syncing\nhako-vmm's log"),
            "{words}"
        );
    }

    #[test]
    fn control_does_not_follow_a_symlinked_socket() {
        let (root, paths, _dir) = state_dir();
        // What a compromised VMM points its control socket at (containerd's, say).
        let target = root.path().join("containerd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&target).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::os::unix::fs::symlink(&target, &paths.control).unwrap();
        // In a thread: connected to the wrong socket, control would wait for a reply.
        let (tx, rx) = std::sync::mpsc::channel();
        let control_path = paths.control.clone();
        std::thread::spawn(move || {
            let _ =
                tx.send(control(&control_path, &ControlRequest::Shutdown { grace_ms: 0 }).is_err());
        });
        let refused = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(refused, Ok(true), "control went through the symlink");
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the socket a symlink points to was connected"
        );
    }

    #[test]
    fn removing_sockets_removes_links_not_their_targets() {
        let (root, paths, _dir) = state_dir();
        let target = root.path().join("containerd.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&target).unwrap();
        std::os::unix::fs::symlink(&target, &paths.vsock).unwrap();
        let _control = std::os::unix::net::UnixListener::bind(&paths.control).unwrap();
        paths.remove_sockets();
        assert!(std::fs::symlink_metadata(&paths.vsock).is_err());
        assert!(std::fs::symlink_metadata(&paths.control).is_err());
        assert!(target.exists());
    }

    #[test]
    fn config_puts_every_socket_and_log_in_the_state_dir() {
        let paths = VmPaths::under(Path::new("/run/hako/x"));
        let spec = VmSpec {
            vmm: "/usr/bin/hako-vmm".into(),
            kernel: "/k".into(),
            image: "/i".into(),
            vcpus: 1,
            memory_mib: 256,
            cpu_profile: CpuProfile::Conservative,
            cmdline: "quiet".into(),
            guest_cid: 7,
            netns: None,
            net: Vec::new(),
            jail: None,
            jail_user: None,
            host_cgroup: None,
        };
        let c = vm_config(&spec, &paths);
        assert_eq!(
            c.control_socket.as_deref(),
            Some(Path::new("/run/hako/x/vmm/control.sock"))
        );
        assert_eq!(
            c.console,
            ConsoleConfig::File("/run/hako/x/vmm/console.log".into())
        );
        let vsock = c.devices.vsock.unwrap();
        assert_eq!(vsock.uds_path, Path::new("/run/hako/x/vmm/vsock"));
        assert_eq!(paths.config, Path::new("/run/hako/x/vm.json"));
        assert_eq!(c.devices.fs[0].tag, SHARED_FS_TAG);
        assert_eq!(c.kernel.initrd.as_deref(), Some(Path::new("/i")));
    }
}
