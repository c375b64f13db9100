//! OCI bundles for tests: a busybox root file system (from Debian's busybox-static) and a
//! minimal runtime-spec config like `runc spec` writes, with the process and cgroup path
//! each test needs.

use std::path::Path;

/// Applets linked into the test root file system.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "true", "false", "ls", "id", "env",
];

/// Writes a busybox root file system into `rootfs`.
pub fn busybox_rootfs(rootfs: &Path) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", rootfs.display());
    for dir in ["bin", "proc", "dev", "tmp", "etc", "sys"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(|e| err("mkdir", e))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .map_err(|e| err("copying busybox", e))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .map_err(|e| err("linking an applet", e))?;
    }
    Ok(())
}

/// A runtime-spec config: `args` as root in `/`, new PID/mount/IPC/UTS namespaces, /proc and a
/// tmpfs /dev, the cgroup at `cgroups_path`. `rootfs` is relative to the bundle.
pub fn spec_json(rootfs: &str, args: &[&str], cgroups_path: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{{
  "ociVersion": "1.0.2",
  "root": {{"path": "{rootfs}", "readonly": false}},
  "hostname": "hako-test",
  "process": {{
    "terminal": false,
    "user": {{"uid": 0, "gid": 0}},
    "args": [{args}],
    "env": ["PATH=/bin", "TERM=xterm"],
    "cwd": "/",
    "noNewPrivileges": true
  }},
  "mounts": [
    {{"destination": "/proc", "type": "proc", "source": "proc"}},
    {{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}}
  ],
  "linux": {{
    "cgroupsPath": "{cgroups_path}",
    "namespaces": [{{"type": "pid"}}, {{"type": "mount"}}, {{"type": "ipc"}}, {{"type": "uts"}}],
    "maskedPaths": ["/proc/kcore", "/proc/keys"],
    "readonlyPaths": ["/proc/sys"]
  }}
}}"#,
        args = args.join(", ")
    )
}

/// An OCI process (for exec) running `args`.
pub fn process_json(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{{"terminal": false, "user": {{"uid": 0, "gid": 0}}, "args": [{}], "env": ["PATH=/bin"], "cwd": "/"}}"#,
        args.join(", ")
    )
}
