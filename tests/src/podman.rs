//! Podman (Debian's 4.3) with private storage for end-to-end tests, run with either runc or
//! hako as its OCI runtime. The flags this host needs (documented in the README):
//! `--cgroup-manager cgroupfs` (no systemd), `--events-backend file` (no journald),
//! `--network none` (Hako's networking comes later), `--cgroup-parent` under a parent this
//! test owns and removes, and `--ulimit nofile/nproc` at or below the host's limits (root here
//! lacks CAP_SYS_RESOURCE, so podman's defaults, above them, cannot be set by runc).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const IMAGE: &str = "docker.io/library/busybox:hako";

pub struct Podman {
    pub dir: tempfile::TempDir,
    /// hako's --root: under the work directory, as long as a caller's may be (socket paths
    /// under it, with podman's 64-character ids, pass 108 bytes).
    pub hako_root: PathBuf,
    /// `runc`, hako, or the wrapper [`Podman::with_hako_config`] writes.
    pub runtime: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    pub fn new(runtime: PathBuf) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("hako-podman-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let hako_root = dir.path().join("run/hako-runtime-root");
        let me = Self {
            hako_root,
            cgroup_parent: format!(
                "/hako-podman-{}-{}",
                std::process::id(),
                dir.path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            dir,
            runtime,
        };
        let tar = me.dir.path().join("busybox.tar");
        hako_rootfs_builder::oci_image::write_busybox_image(
            Path::new("/bin/busybox"),
            IMAGE,
            &["sh"],
            &tar,
        )?;
        let o = me.run(&["load", "-i", &tar.display().to_string()])?;
        if !o.status.success() {
            return Err(format!(
                "podman load: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(me)
    }

    /// `podman` with the private storage and this host's flags.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            // Podman's default storage driver on this file system (overlay, mounted by podman
            // outside the bundle).
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--events-backend", "file", "--runtime"])
            .arg(&self.runtime);
        c.args(args);
        c
    }

    /// Runs hako with `config` and the work directory's root through a wrapper script, as a
    /// user with a non-default config must: conmon passes no environment on, and podman
    /// passes `--runtime-flag`s to create and start but not to the `delete` of its cleanup
    /// (`run --rm` would leave the container under the flagged root).
    pub fn with_hako_config(mut self, config: &Path) -> Result<Self, String> {
        let wrapper = self.dir.path().join("hako-runtime");
        let script = format!(
            "#!/bin/sh\nexec {:?} --config {:?} --root {:?} \"$@\"\n",
            self.runtime, config, self.hako_root
        );
        std::fs::write(&wrapper, script).map_err(|e| e.to_string())?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|e| e.to_string())?;
        self.runtime = wrapper;
        Ok(self)
    }

    pub fn run(&self, args: &[&str]) -> Result<Output, String> {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("podman {args:?}: {e}"))
    }

    /// Flags for `podman run`/`create` on this host.
    pub fn run_flags(&self) -> Vec<String> {
        [
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        // The cgroups podman made on the host for conmon and runc's containers.
        let mut dirs = Vec::new();
        for controller in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let base = controller
                .path()
                .join(self.cgroup_parent.trim_start_matches('/'));
            collect_dirs(&base, &mut dirs);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.path().join("storage"))
            .stderr(Stdio::null())
            .status();
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}
