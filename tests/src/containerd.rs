//! A private containerd for end-to-end tests (Debian 12's 1.6, or 2.x from Debian sid, which
//! setup fetches: `scripts/lib/sid-containerd.sh`): its own root, state, sockets and config
//! under a temporary directory, Hako's shim and hako-vmm first on its PATH, the CRI plugin set
//! up with a `hako` runtime handler, and the local busybox images imported. Dropping it stops
//! containerd and removes every shim, VMM, mount and file it left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures;
use crate::require::Skip;

/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "hako-test";
/// The namespace of containerd's CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The busybox image (default command `sh`).
pub const BUSYBOX: &str = "docker.io/library/busybox:hako";
/// The CRI sandbox ("pause") image: busybox sleeping for ever.
pub const PAUSE: &str = "docker.io/library/hako-pause:latest";

/// Which containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 12's containerd 1.6 (task API v2, config version 2).
    Debian12,
    /// containerd 2.x from Debian sid, in `$HAKO_CONTAINERD2_BIN` (config version 2, which
    /// it migrates; its defaults otherwise, e.g. unprivileged ports and ICMP on).
    Sid,
}

impl Release {
    /// The directory holding this release's `containerd` and `ctr`; None for the one on PATH.
    fn bin_dir(self) -> Result<Option<PathBuf>, Skip> {
        match self {
            Self::Debian12 => Ok(None),
            Self::Sid => {
                let dir = std::env::var_os("HAKO_CONTAINERD2_BIN")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        Skip("HAKO_CONTAINERD2_BIN is unset: scripts/setup.sh fetches containerd 2.x from Debian sid and names it in target/hako-env".into())
                    })?;
                if !dir.join("containerd").is_file() || !dir.join("ctr").is_file() {
                    return Err(Skip(format!(
                        "HAKO_CONTAINERD2_BIN={} holds no containerd and ctr",
                        dir.display()
                    )));
                }
                Ok(Some(dir))
            }
        }
    }

    /// This release can run here (its binaries are there).
    pub fn available(self) -> Result<(), Skip> {
        self.bin_dir().map(drop)
    }

    fn program(self, name: &str) -> PathBuf {
        match self.bin_dir() {
            Ok(Some(dir)) => dir.join(name),
            _ => PathBuf::from(name),
        }
    }
}

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub release: Release,
    pub socket: PathBuf,
    /// The runtime root of `ctr` tasks (the shim's config, `$HAKO_CONFIG`).
    pub hako_root: PathBuf,
    /// The runtime root of CRI pods: the `hako` handler's options name another config
    /// (`ConfigPath`), which puts its sandboxes here.
    pub cri_root: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts Debian 12's containerd and imports the images.
    pub fn start() -> Result<Self, String> {
        Self::start_release(Release::Debian12)
    }

    /// Starts containerd `release` and imports the images.
    pub fn start_release(release: Release) -> Result<Self, String> {
        Self::start_in(release, None)
    }

    /// Starts containerd in the network namespace at `netns` (the CNI plugins it runs make
    /// their bridges and veths there, never on the host) with the CNI network `conflist`
    /// and Debian's CNI plugins.
    pub fn start_with_network(
        release: Release,
        netns: &Path,
        conflist: &str,
    ) -> Result<Self, String> {
        Self::start_in(release, Some((netns, conflist)))
    }

    fn start_in(release: Release, network: Option<(&Path, &str)>) -> Result<Self, String> {
        let shim = fixtures::workspace_binary("containerd-shim-hako-v2")?;
        let vmm = fixtures::workspace_binary("hako-vmm")?;
        let bin_dir = shim
            .parent()
            .ok_or("the shim has no directory")?
            .to_path_buf();
        if vmm.parent() != Some(bin_dir.as_path()) {
            return Err("the shim and hako-vmm were built in different places".into());
        }
        let kernel = fixtures::kernel().map_err(|s| s.to_string())?;
        let image = fixtures::agent_image()?;
        let dir = tempfile::Builder::new()
            .prefix("hako-ctd-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let hako_root = d.join("hako");
        let cri_root = d.join("hako-cri");
        let cni_bin = match network {
            Some((_, conflist)) => {
                std::fs::create_dir_all(d.join("cni")).map_err(|e| e.to_string())?;
                std::fs::write(d.join("cni/10-hako-test.conflist"), conflist)
                    .map_err(|e| e.to_string())?;
                PathBuf::from(CNI_PLUGINS)
            }
            None => d.join("cni"),
        };
        std::fs::write(
            d.join("containerd.toml"),
            containerd_config(d, &socket, &cni_bin),
        )
        .map_err(|e| e.to_string())?;
        for (file, root) in [("hako.toml", &hako_root), ("hako-cri.toml", &cri_root)] {
            std::fs::write(
                d.join(file),
                format!(
                    "[runtime]\nroot = {:?}\nlog_level = \"debug\"\n[vm]\nkernel = {:?}\nimage = {:?}\n{}",
                    root,
                    kernel,
                    &image,
                    fixtures::template_config()
                ),
            )
            .map_err(|e| e.to_string())?;
        }
        // Sandboxes resume the shared template (booted once per test run).
        let hako = fixtures::workspace_binary("hako")?;
        fixtures::ensure_template(&hako, &d.join("hako.toml"))?;
        // containerd 2.x's runc shim comes with it.
        let release_dir = release.bin_dir().map_err(|s| s.to_string())?;
        let path = format!(
            "{}:{}{}",
            bin_dir.display(),
            release_dir
                .map(|d| format!("{}:", d.display()))
                .unwrap_or_default(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(d.join("containerd.log")).map_err(|e| e.to_string())?;
        let containerd = release.program("containerd");
        let mut command = match network {
            Some((netns, _)) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", netns.display())).arg(&containerd);
                c
            }
            None => Command::new(&containerd),
        };
        let child = command
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .env("PATH", path)
            .env("HAKO_CONFIG", d.join("hako.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting containerd: {e}"))?;
        let me = Self {
            dir,
            release,
            socket,
            hako_root,
            cri_root,
            child: Some(child),
        };
        let start = Instant::now();
        while me
            .ctr(&["version"])
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "containerd did not answer within 30 s; its log:\n{}",
                    me.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        me.import(BUSYBOX, &["sh"])?;
        me.import(PAUSE, &["sleep", "2147483647"])?;
        Ok(me)
    }

    fn import(&self, name: &str, cmd: &[&str]) -> Result<(), String> {
        let tar = self.dir.path().join("image.tar");
        hako_rootfs_builder::oci_image::write_busybox_image(
            Path::new("/bin/busybox"),
            name,
            cmd,
            &tar,
        )?;
        let tar = tar.display().to_string();
        // The tests' namespace for ctr, and CRI's.
        for ns in [NAMESPACE, CRI_NAMESPACE] {
            let out = Command::new(self.release.program("ctr"))
                .arg("--address")
                .arg(&self.socket)
                .args(["--namespace", ns, "image", "import", &tar])
                .output()
                .map_err(|e| format!("ctr image import: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ctr image import {name} into {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(())
    }

    /// A `ctr` command against this containerd in the test namespace.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.release.program("ctr"));
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Result<Output, String> {
        self.ctr_command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running ctr {args:?}: {e}"))
    }

    /// Starts `ctr events` (every namespace's events, one line each) into a file; the
    /// watcher stops when dropped. containerd's own log does not name every event the same
    /// way in 1.6 and 2.x; its event stream does.
    pub fn watch_events(&self) -> Result<Events, String> {
        let path = self.dir.path().join(format!(
            "events-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let child = Command::new(self.release.program("ctr"))
            .arg("--address")
            .arg(&self.socket)
            .arg("events")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ctr events: {e}"))?;
        // It subscribes as it starts: give it that moment.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Events { child, path })
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of containerd's log (which holds the shims' logs too) containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("containerd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Processes whose command line mentions this containerd's directory (shims, VMMs).
    pub fn leftover_processes(&self) -> Vec<String> {
        let needle = self.dir.path().display().to_string();
        let mut found = Vec::new();
        let me = std::process::id();
        let containerd = self.child.as_ref().map(Child::id);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me || Some(pid) == containerd {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&needle)
                || text.contains("containerd-shim-hako-v2") && text.contains(NAMESPACE)
            {
                found.push(format!("{pid}: {text}"));
            }
        }
        found
    }

    /// Mount points under the Hako roots (sandbox shares) still mounted.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let roots = [&self.hako_root, &self.cri_root].map(|r| r.display().to_string());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| roots.iter().any(|r| m.starts_with(r)))
            .map(str::to_owned)
            .collect()
    }

    /// Host cgroups of sandboxes under the Hako roots still there.
    pub fn leftover_cgroups(&self) -> Vec<String> {
        [&self.hako_root, &self.cri_root]
            .into_iter()
            .flat_map(|r| hako_runtime::sandbox::host_cgroup::left_by_root(r))
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Sandbox state directories left under the Hako roots.
    pub fn leftover_sandboxes(&self) -> Vec<String> {
        [&self.hako_root, &self.cri_root]
            .into_iter()
            .flat_map(|r| Self::sandboxes_in(r))
            .collect()
    }

    /// The sandbox directories under `root`.
    pub fn sandboxes_in(root: &Path) -> Vec<String> {
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// A running `ctr events` (see [`Containerd::watch_events`]).
pub struct Events {
    child: Child,
    path: PathBuf,
}

impl Events {
    /// An event on `topic` (e.g. `/tasks/exit`) was seen.
    pub fn seen(&self, topic: &str) -> bool {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == topic))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for p in self.leftover_processes() {
            if let Some(pid) = p.split(':').next() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            // A shim killed here cannot remove its socket (under /run/containerd/s).
            let mut words = p.split_whitespace();
            while let Some(w) = words.next() {
                if w == "-socket"
                    && let Some(path) = words.next().and_then(|s| s.strip_prefix("unix://"))
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        crate::leaks::unmount_under(self.dir.path());
        // The agent image stays: it is shared (content-addressed) and part of the template key.
    }
}

/// Where Debian's containernetworking-plugins are.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

/// containerd's config (version 2, which containerd 2.x migrates): the CRI plugin with a
/// `runc` and a `hako` handler; `hako`'s options name its own Hako config (`ConfigPath`).
fn containerd_config(d: &Path, socket: &Path, cni_bin: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  level = "debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hako]
      runtime_type = "io.containerd.hako.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hako.options]
        ConfigPath = "{cri_config}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni}"
"#,
        root = d.join("root").display(),
        state = d.join("state").display(),
        socket = socket.display(),
        cni = d.join("cni").display(),
        cni_bin = cni_bin.display(),
        cri_config = d.join("hako-cri.toml").display(),
    )
}
