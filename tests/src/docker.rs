//! A private Docker daemon for end-to-end tests, of either release setup fetches (never
//! installed): Debian 12's docker.io 20.10 (`$HAKO_DOCKER_ROOT`), with `hako` registered as a
//! runc-compatible runtime as its docs say (`daemon.json` `runtimes`), and Debian sid's
//! docker.io 28 (`$HAKO_DOCKER28_ROOT`, its client `$HAKO_DOCKER28_CLI`) over sid's
//! containerd 2.x (`$HAKO_CONTAINERD2_BIN`), which runs Hako's shim
//! (`--runtime io.containerd.hako.v2`). Each has its own data root, exec root, socket and
//! managed containerd under a temporary directory, overlay2 storage (Docker's default). Its
//! networking is off (`bridge: none`, no iptables): the host's network is not the tests' to
//! change, so containers run with `--network none`. A busybox image is imported. Dropping it
//! stops the daemon and removes every process, mount and file it left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures;
use crate::require::Skip;

/// The image the tests run: busybox, imported from a root file system.
pub const BUSYBOX: &str = "busybox:hako";

/// The Docker releases the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 12's docker.io 20.10 with its own containerd (the machine's 1.6).
    Docker20,
    /// Debian sid's docker.io 28 over sid's containerd 2.x.
    Docker28,
}

/// `$var`, a directory setup names in target/hako-env, holding `file`.
fn fetched(var: &str, file: &str, what: &str) -> Result<PathBuf, Skip> {
    let root = std::env::var_os(var)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Skip(format!(
                "{var} is unset: scripts/setup.sh fetches {what} and names it in target/hako-env"
            ))
        })?;
    if !root.join(file).is_file() {
        return Err(Skip(format!("{var}={} holds no {file}", root.display())));
    }
    Ok(root)
}

impl Release {
    /// (dockerd, docker, the containerd directory to put first on dockerd's PATH).
    fn programs(self) -> Result<(PathBuf, PathBuf, Option<PathBuf>), Skip> {
        match self {
            Self::Docker20 => {
                let root = fetched(
                    "HAKO_DOCKER_ROOT",
                    "usr/sbin/dockerd",
                    "Docker 20.10 (Debian 12's docker.io)",
                )?;
                let client = fetched("HAKO_DOCKER_ROOT", "usr/bin/docker", "Docker 20.10")?;
                Ok((
                    root.join("usr/sbin/dockerd"),
                    client.join("usr/bin/docker"),
                    None,
                ))
            }
            Self::Docker28 => {
                let what = "Docker 28 (Debian sid's docker.io and docker-cli)";
                let root = fetched("HAKO_DOCKER28_ROOT", "usr/sbin/dockerd", what)?;
                let client = fetched("HAKO_DOCKER28_CLI", "usr/bin/docker", what)?;
                let containerd = fetched(
                    "HAKO_CONTAINERD2_BIN",
                    "containerd",
                    "containerd 2.x from Debian sid",
                )?;
                Ok((
                    root.join("usr/sbin/dockerd"),
                    client.join("usr/bin/docker"),
                    Some(containerd),
                ))
            }
        }
    }

    /// Whether setup fetched this release.
    pub fn available(self) -> Result<(), Skip> {
        self.programs().map(drop)
    }
}

pub struct Docker {
    pub dir: tempfile::TempDir,
    socket: PathBuf,
    client: PathBuf,
    child: Option<Child>,
}

impl Docker {
    pub fn start(release: Release) -> Result<Self, String> {
        let (dockerd, client, containerd) = release.programs().map_err(|s| s.to_string())?;
        let hako = fixtures::workspace_binary("hako")?;
        // Hako's shim and hako-vmm, for containerd to find on its PATH.
        let shim = fixtures::workspace_binary("containerd-shim-hako-v2")?;
        let bin_dir = shim.parent().ok_or("the shim's directory")?.to_owned();
        let dir = tempfile::Builder::new()
            .prefix("hako-docker-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let d = dir.path();
        let hako_config = d.join("hako.toml");
        fixtures::templated_runtime_config(&hako, &hako_config)?;
        let socket = d.join("docker.sock");
        let daemon = serde_json::json!({
            "runtimes": {"hako": {"path": hako, "runtimeArgs": ["--config", hako_config]}},
            "bridge": "none",
            "iptables": false,
            "ip-masq": false,
            "data-root": d.join("data"),
            "exec-root": d.join("exec"),
            "pidfile": d.join("docker.pid"),
            "hosts": [format!("unix://{}", socket.display())],
        });
        std::fs::write(d.join("daemon.json"), daemon.to_string()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("dockerd.log")).map_err(|e| e.to_string())?;
        let mut path: Vec<PathBuf> = vec![bin_dir];
        path.extend(containerd);
        path.extend(dockerd.parent().map(Path::to_owned));
        path.extend(client.parent().map(Path::to_owned));
        let path = std::env::join_paths(path.into_iter().chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
        let child = Command::new(&dockerd)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .env("PATH", path)
            // The shim's config (containerd passes its environment on to shims).
            .env("HAKO_CONFIG", &hako_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let me = Self {
            socket,
            client,
            child: Some(child),
            dir,
        };
        let start = Instant::now();
        while !me.run(&["info"]).is_ok_and(|o| o.status.success()) {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "dockerd did not answer within 60 s; its log:\n{}",
                    me.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        me.import_busybox()?;
        Ok(me)
    }

    fn import_busybox(&self) -> Result<(), String> {
        let rootfs = self.dir.path().join("busybox-rootfs");
        hako_rootfs_builder::bundle::busybox_rootfs_from(Path::new("/bin/busybox"), &rootfs)?;
        let tar = self.dir.path().join("busybox.tar");
        let o = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        if !o.status.success() {
            return Err(format!("tar: {}", String::from_utf8_lossy(&o.stderr)));
        }
        let tar = tar.display().to_string();
        let o = self.run(&["import", &tar, BUSYBOX])?;
        if !o.status.success() {
            return Err(format!(
                "docker import: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(())
    }

    /// A `docker` command against this daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.client);
        c.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Result<Output, String> {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running docker {args:?}: {e}"))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Processes whose command line mentions this daemon's directory (its containerd, shims,
    /// Hako's monitors and VMMs), but the daemon.
    pub fn leftover_processes(&self) -> Vec<(u32, String)> {
        let daemon = self.child.as_ref().map(Child::id);
        crate::leaks::processes_naming(&self.dir.path().display().to_string())
            .into_iter()
            .filter(|(pid, _)| Some(*pid) != daemon)
            .collect()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for (pid, _) in self.leftover_processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(200));
        crate::leaks::unmount_under(self.dir.path());
    }
}
