//! Tier 4 (KVM): `hako run` (create + start + wait, through the per-container monitor) runs a
//! busybox bundle in its own sandbox VM: the container's stdout and stderr arrive, stdin
//! reaches it, the exit status is the container's, and the state directory and its mounts are
//! gone afterwards. A second run with the same id while the first is still there is refused.
//! While it runs, its hako-vmm sits in a host cgroup of its own (under this process's), limited
//! to the guest's memory plus the VMM's overhead, and runs as an unprivileged host uid (the
//! root of a user namespace mapping 65536 ids from one of the runtime's ranges, its id-range
//! lock held); the cgroup is gone afterwards and the range's lock free. The file the container
//! writes as root into its root file system (bound into the share, id-mapped, after the VMM
//! started) is root's on the host.

use std::io::Write;
use std::process::{Command, Stdio};

use hako_rootfs_builder::bundle;
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::Failed;

fn hako_run_runs_a_container_in_a_vm() -> Result<(), Failed> {
    let hako = fixtures::workspace_binary("hako")?;
    let vmm = fixtures::workspace_binary("hako-vmm")?;
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::agent_image()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bundle_dir = dir.path().join("bundle");
    let script =
        "read line; echo \"out: $line\"; echo to-stderr >&2; echo guest > /by-guest; exit 3";
    bundle::write_busybox_bundle(
        std::path::Path::new("/bin/busybox"),
        &bundle_dir,
        &["sh", "-c", script],
        "/hako/run-test",
    )?;
    let root = dir.path().join("run");
    let config = dir.path().join("hako.toml");
    std::fs::write(
        &config,
        format!("[vm]\nvmm = {vmm:?}\nkernel = {kernel:?}\nimage = {image:?}\n"),
    )
    .map_err(|e| e.to_string())?;
    let hako_run = || {
        let mut cmd = Command::new(&hako);
        cmd.arg("--root")
            .arg(&root)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle_dir)
            .arg("run-test")
            .env("HAKO_CONFIG", &config);
        cmd
    };
    let mut child = hako_run()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting hako run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(b"through stdin\n")
            .map_err(|e| format!("writing stdin: {e}"))?;
    }
    // While it boots, the same id is taken.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let dup = hako_run()
        .output()
        .map_err(|e| format!("second hako run: {e}"))?;
    let cgroup = vmm_in_its_cgroup(&root.join("run-test/vm"), (256 + 128) << 20);
    let vmm_dir = is_bounded_tmpfs(&root.join("run-test/vm/vmm"), 8 << 20)
        .and_then(|()| is_bounded_tmpfs(&root.join("run-test/vm"), 16 << 20));
    let user = cgroup
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|(_, pid)| vmm_user(pid, &root.join("run-test/vm")));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for hako run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- hako run stdout ---\n{stdout}--- stderr ---\n{stderr}---");
    if !String::from_utf8_lossy(&dup.stderr).contains("already exists") || dup.status.success() {
        return Err(format!(
            "a second run with the same id was not refused: {:?} {}",
            dup.status,
            String::from_utf8_lossy(&dup.stderr)
        )
        .into());
    }
    if stdout != "out: through stdin\n" {
        return Err(format!("the container's stdout was {stdout:?}").into());
    }
    if !stderr.contains("to-stderr") {
        return Err("the container's stderr did not arrive".into());
    }
    if out.status.code() != Some(3) {
        return Err(format!(
            "hako run exited {:?}, expected the container's 3",
            out.status
        )
        .into());
    }
    vmm_dir.map_err(|e| format!("hako-vmm's directory: {e}"))?;
    let (cgroup, _) = cgroup.map_err(|e| format!("the VMM's host cgroup: {e}"))?;
    eprintln!("hako-vmm ran in {cgroup}");
    let (uid, slot) = user.map_err(|e| format!("the VMM's user: {e}"))?;
    eprintln!("hako-vmm ran as host uid {uid} (range {slot})");
    // The range's lock is free again, and no process is left in the range.
    if hako_runtime::sandbox::id_range::slots_of_live_processes().contains(&slot) {
        return Err(format!("a process still runs with an id of range {slot}").into());
    }
    let path = format!("{}/{slot}", hako_runtime::sandbox::id_range::LOCK_DIR);
    let lock =
        std::fs::File::open(&path).map_err(|e| format!("the id range's lock file {path}: {e}"))?;
    // SAFETY: flock on an open descriptor, with flags.
    let free = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } == 0;
    if !free {
        return Err(format!("id range lock {path} is still held after the sandbox ended").into());
    }
    let written = bundle_dir.join("rootfs/by-guest");
    let meta = std::fs::metadata(&written)
        .map_err(|e| format!("the container's file {}: {e}", written.display()))?;
    let owner = (
        std::os::unix::fs::MetadataExt::uid(&meta),
        std::os::unix::fs::MetadataExt::gid(&meta),
    );
    if owner != (0, 0) {
        return Err(format!(
            "the file the container wrote as root is owned by {owner:?} on the host"
        )
        .into());
    }
    let left = hako_runtime::sandbox::host_cgroup::left_by_root(&root);
    if !left.is_empty() {
        return Err(format!("host cgroups left behind: {left:?}").into());
    }
    if root.join("run-test").exists() {
        return Err("the sandbox's state directory was left behind".into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&root.display().to_string()) {
        return Err("a mount under the sandbox's state directory was left behind".into());
    }
    Ok(())
}

/// The running VMM's host uid (and gid, the same) and its id range: the root of a user
/// namespace mapping one of the runtime's ranges, whose lock is held. Its jail shows its own
/// directory of the sandbox (`vmm/`: its sockets) and the share, not the runtime's files.
fn vmm_user(pid: &str, sandbox: &std::path::Path) -> Result<(u32, u32), String> {
    use hako_runtime::sandbox::id_range::{FIRST_ID, RANGE, SLOTS};
    // It enters its jail first thing; give it the moment after its start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        if status.contains("NoNewPrivs:\t1") || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let (uids, gids) = (field("Uid:"), field("Gid:"));
    let uid = uids.first().copied().unwrap_or(0);
    if uids.len() != 4 || uids.iter().any(|u| *u != uid) || gids != uids {
        return Err(format!(
            "hako-vmm {pid} runs as uids {uids:?} gids {gids:?}"
        ));
    }
    if uid < FIRST_ID
        || !(uid - FIRST_ID).is_multiple_of(RANGE)
        || (uid - FIRST_ID) / RANGE >= SLOTS
    {
        return Err(format!(
            "hako-vmm {pid} runs as uid {uid}, outside the runtime's ranges"
        ));
    }
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
    let map: Vec<&str> = map.split_whitespace().collect();
    if map != ["0", &uid.to_string(), &RANGE.to_string()] {
        return Err(format!("hako-vmm {pid}'s uid map is {map:?}"));
    }
    let seen = |p: &str| {
        std::path::Path::new(&format!("/proc/{pid}/root"))
            .join(sandbox.strip_prefix("/").unwrap_or(sandbox))
            .join(p)
            .exists()
    };
    // The control socket comes a moment after the jail.
    while !seen("vmm/control.sock") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (p, want) in [
        ("vmm/control.sock", true),
        ("shared", true),
        ("state.json", false),
        ("vm.json", false),
        ("vmm.log", false),
    ] {
        if seen(p) != want {
            return Err(format!(
                "in hako-vmm {pid}'s jail, {p} is {}",
                if want { "missing" } else { "visible" }
            ));
        }
    }
    Ok((uid, (uid - FIRST_ID) / RANGE))
}

/// Waits for the sandbox's VMM and checks it is in every directory of its recorded host
/// cgroup, whose memory limit is `memory_bytes`. Returns the directories and the VMM's pid.
fn vmm_in_its_cgroup(
    sandbox: &std::path::Path,
    memory_bytes: u64,
) -> Result<(String, String), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let state = loop {
        let text = std::fs::read_to_string(sandbox.join("state.json")).unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if state["vmm_pid"].as_u64().unwrap_or(0) > 0 {
            break state;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "no VMM recorded in {}/state.json: {text}",
                sandbox.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let pid = state["vmm_pid"].to_string();
    let dirs: Vec<std::path::PathBuf> = state["host_cgroup"]["dirs"]
        .as_array()
        .ok_or_else(|| format!("no host cgroup recorded: {state}"))?
        .iter()
        .filter_map(|d| d.as_str().map(std::path::PathBuf::from))
        .collect();
    if dirs.is_empty() {
        return Err(format!("no host cgroup recorded: {state}"));
    }
    let mut limited = false;
    for dir in &dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if !procs.lines().any(|l| l == pid) {
            return Err(format!(
                "hako-vmm {pid} is not in {}: {procs:?}",
                dir.display()
            ));
        }
        for file in ["memory.limit_in_bytes", "memory.max"] {
            if let Ok(v) = std::fs::read_to_string(dir.join(file)) {
                if v.trim() != memory_bytes.to_string() {
                    return Err(format!(
                        "{}/{file} is {v:?}, not {memory_bytes}",
                        dir.display()
                    ));
                }
                limited = true;
            }
        }
    }
    if !limited {
        return Err(format!("no memory limit in {dirs:?}"));
    }
    Ok((format!("{dirs:?}"), pid))
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    require::root()?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    require::run_one(
        "vm_hako_run_runs_a_container_and_cleans_up",
        prerequisites,
        hako_run_runs_a_container_in_a_vm,
    );
}

/// The sandbox directory and hako-vmm's writable directory in it are each a tmpfs of their
/// own, no larger than the runtime's caps: whatever a compromised VMM writes there (its
/// files, its log) stays off the state root's file system.
fn is_bounded_tmpfs(dir: &std::path::Path, max: u64) -> Result<(), String> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let start = std::time::Instant::now();
    let st = loop {
        match nix::sys::statfs::statfs(dir) {
            Ok(st) => break st,
            Err(e) if start.elapsed() > std::time::Duration::from_secs(30) => {
                return Err(format!("statfs {}: {e}", dir.display()));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let parent = nix::sys::statfs::statfs(dir.parent().unwrap_or(dir))
        .map_err(|e| format!("statfs of its parent: {e}"))?;
    let size = st.blocks() * st.block_size() as u64;
    if st.filesystem_type().0 != TMPFS_MAGIC || size > max || st.files() > 4096 {
        return Err(format!(
            "{} is a file system of type {:#x}, {size} bytes, {} inodes (parent's type {:#x}); \
             expected a tmpfs of at most {max} bytes and 4096 inodes",
            dir.display(),
            st.filesystem_type().0,
            st.files(),
            parent.filesystem_type().0
        ));
    }
    Ok(())
}
