//! OCI bundles with a busybox root file system (Debian's busybox-static) and a minimal
//! runtime-spec config like `runc spec` writes: what the README's main job runs in a sandbox
//! and what the agent and runtime tests run as containers.

use std::path::Path;

/// Applets linked into the test root file system.
pub const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "true", "false", "ls", "id", "env", "stty", "tty", "hostname",
];

/// Writes a busybox root file system into `rootfs`.
pub fn busybox_rootfs(rootfs: &Path) -> Result<(), String> {
    busybox_rootfs_from(Path::new("/bin/busybox"), rootfs)
}

/// Writes a root file system holding `busybox` and its applet links into `rootfs`.
pub fn busybox_rootfs_from(busybox: &Path, rootfs: &Path) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", rootfs.display());
    for dir in ["bin", "proc", "dev", "tmp", "etc", "sys"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(|e| err("mkdir", e))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox")).map_err(|e| err("copying busybox", e))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .map_err(|e| err("linking an applet", e))?;
    }
    Ok(())
}

/// A runtime-spec config: `args` as root in `/`, new PID/mount/IPC/UTS namespaces, /proc, a
/// tmpfs /dev with devpts (for terminals), the cgroup at `cgroups_path`. `rootfs` is relative to the bundle.
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
    {{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}},
    {{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}}
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

/// Writes a whole bundle: `<dir>/rootfs` and `<dir>/config.json` running `args`.
pub fn write_busybox_bundle(
    busybox: &Path,
    dir: &Path,
    args: &[&str],
    cgroups_path: &str,
) -> Result<(), String> {
    busybox_rootfs_from(busybox, &dir.join("rootfs"))?;
    std::fs::write(
        dir.join("config.json"),
        spec_json("rootfs", args, cgroups_path),
    )
    .map_err(|e| format!("writing {}/config.json: {e}", dir.display()))
}

/// An OCI process (for exec) running `args`.
pub fn process_json(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{{"terminal": false, "user": {{"uid": 0, "gid": 0}}, "args": [{}], "env": ["PATH=/bin"], "cwd": "/"}}"#,
        args.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_valid_json_with_the_args_and_cgroup() {
        let v: serde_json::Value =
            serde_json::from_str(&spec_json("rootfs", &["sh", "-c", "echo \"hi\""], "/x/y"))
                .unwrap();
        assert_eq!(v["process"]["args"][2], "echo \"hi\"");
        assert_eq!(v["linux"]["cgroupsPath"], "/x/y");
        assert_eq!(v["root"]["path"], "rootfs");
        let p: serde_json::Value = serde_json::from_str(&process_json(&["cat"])).unwrap();
        assert_eq!(p["args"][0], "cat");
    }

    #[test]
    fn bundle_has_busybox_and_applets() {
        // Any file stands in for busybox: the bundle copies it and links the applets to it.
        let dir = tempfile::tempdir().unwrap();
        let busybox = dir.path().join("fake-busybox");
        std::fs::write(&busybox, b"#!/bin/sh\n").unwrap();
        let bundle = dir.path().join("bundle");
        write_busybox_bundle(&busybox, &bundle, &["true"], "/t").unwrap();
        assert!(bundle.join("rootfs/bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(bundle.join("config.json").is_file());
    }
}
