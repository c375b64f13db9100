//! Tier 4 (KVM, root, containerd): Hako's shim under a private containerd 1.6, driven with
//! `ctr`. Every task is a real sandbox VM; guests boot slowly where kernel mode is emulated,
//! so each trial boots one VM and checks several things in it. After every trial nothing
//! may be left: no sandbox directories, mounts, shims, VMMs or host cgroups. SIGKILL of a
//! running sandbox's VMM and of its shim each end with containerd seeing the task exit.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hako_runtime::state::SandboxState;
use hako_tests::containerd::{BUSYBOX, Containerd, Release};
use hako_tests::cri::Cri;
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::{Arguments, Failed};

#[path = "containerd/start_protocol.rs"]
mod start_protocol;

const RUNTIME: &str = "io.containerd.hako.v2";

/// How long a sandbox may take to boot and run its container here (tens of seconds on hosts
/// that emulate guest kernel mode; far less on real KVM).
fn boot_deadline() -> Duration {
    hako_tests::boot::vm_deadline()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until `ctr task ls` shows `id` with `status` (RUNNING, STOPPED, PAUSED).
fn wait_status(ctd: &Containerd, id: &str, status: &str, limit: Duration) -> Result<(), Failed> {
    let start = Instant::now();
    loop {
        let o = ctd.ctr(&["task", "ls"])?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if text
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains(status))
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "task {id} not {status} after {limit:?}; `ctr task ls`:\n{text}\ncontainerd log:\n{}",
                ctd.log_tail(40)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Nothing of any sandbox is left (given a few seconds for shims to exit).
fn nothing_left(ctd: &Containerd) -> Result<(), Failed> {
    let start = Instant::now();
    loop {
        let procs = ctd.leftover_processes();
        let mounts = ctd.leftover_mounts();
        let dirs = ctd.leftover_sandboxes();
        let cgroups = ctd.leftover_cgroups();
        if procs.is_empty() && mounts.is_empty() && dirs.is_empty() && cgroups.is_empty() {
            return vmms_ended_well(ctd);
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "left behind: processes {procs:?}, mounts {mounts:?}, sandbox dirs {dirs:?}, host cgroups {cgroups:?}"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// No sandbox's hako-vmm ended but by its guest's power-off (the runtime logs any other
/// end at stop: a seccomp filter that stopped it, a crash), except those the trials kill
/// with SIGKILL on purpose.
fn vmms_ended_well(ctd: &Containerd) -> Result<(), Failed> {
    let bad: Vec<String> = ctd
        .log_lines("hako-vmm ended badly")
        .into_iter()
        .filter(|l| !l.contains("killed by signal 9"))
        .collect();
    if !bad.is_empty() {
        return Err(format!("a sandbox's hako-vmm ended badly: {bad:?}").into());
    }
    // containerd gives the shim's Shutdown a few seconds; past them it reports the shim
    // leaked and cleans up through the shim binary's `delete`, which kills hako-vmm.
    let late: Vec<String> = ctd
        .log_lines("might be leaked")
        .into_iter()
        .filter(|l| l.contains("deadline exceeded"))
        .collect();
    if late.is_empty() {
        Ok(())
    } else {
        Err(format!("the shim's Shutdown overran containerd's deadline: {late:?}").into())
    }
}

fn ctr_run(ctd: &Containerd, extra: &[&str], id: &str, args: &[&str]) -> Command {
    let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
    all.extend_from_slice(extra);
    all.push(BUSYBOX);
    all.push(id);
    all.extend_from_slice(args);
    ctd.ctr_command(&all)
}

/// One sandbox: output and exit code of `ctr run`, exec (output, status, stdin), ps,
/// metrics, pause/resume, and kill with a signal the container handles.
fn run_exec_kill(ctd: &Containerd) -> Result<(), Failed> {
    let script = "echo started; trap 'echo got TERM; exit 5' TERM; while true; do sleep 1; done";
    let mut run: Child = ctr_run(ctd, &[], "c1", &["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ctr run: {e}"))?;
    let result = (|| -> Result<(), Failed> {
        wait_status(ctd, "c1", "RUNNING", boot_deadline())?;

        let o = ctd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "c1",
            "sh",
            "-c",
            "echo exec-out; echo exec-err >&2; exit 4",
        ])?;
        if o.status.code() != Some(4)
            || String::from_utf8_lossy(&o.stdout) != "exec-out\n"
            || !String::from_utf8_lossy(&o.stderr).contains("exec-err")
        {
            return Err(format!("exec e1: {}", out(&o)).into());
        }

        vmm_unprivileged_and_owners_kept(ctd, "c1")?;

        let mut exec = ctd
            .ctr_command(&["task", "exec", "--exec-id", "e2", "c1", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ctr task exec (stdin): {e}"))?;
        if let Some(mut stdin) = exec.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(b"through stdin\n")
                .map_err(|e| format!("exec stdin: {e}"))?;
        }
        let o = exec.wait_with_output().map_err(|e| e.to_string())?;
        if !o.status.success() || String::from_utf8_lossy(&o.stdout) != "through stdin\n" {
            return Err(format!("exec e2 (cat, stdin): {}", out(&o)).into());
        }

        let o = ctd.ctr(&["task", "ps", "c1"])?;
        if !o.status.success() || String::from_utf8_lossy(&o.stdout).lines().count() < 2 {
            return Err(format!("ctr task ps: {}", out(&o)).into());
        }
        let o = ctd.ctr(&["task", "metrics", "c1"])?;
        let text = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() || !text.contains("memory") {
            return Err(format!("ctr task metrics: {}", out(&o)).into());
        }

        let o = ctd.ctr(&["task", "pause", "c1"])?;
        if !o.status.success() {
            return Err(format!("ctr task pause: {}", out(&o)).into());
        }
        wait_status(ctd, "c1", "PAUSED", Duration::from_secs(60))?;
        let o = ctd.ctr(&["task", "resume", "c1"])?;
        if !o.status.success() {
            return Err(format!("ctr task resume: {}", out(&o)).into());
        }
        wait_status(ctd, "c1", "RUNNING", Duration::from_secs(60))?;

        let o = ctd.ctr(&["task", "kill", "--signal", "SIGTERM", "c1"])?;
        if !o.status.success() {
            return Err(format!("ctr task kill: {}", out(&o)).into());
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = ctd.ctr(&["task", "kill", "--signal", "SIGKILL", "c1"]);
    }
    let status = wait_child(&mut run, boot_deadline())?;
    let mut stdout = String::new();
    if let Some(mut s) = run.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    result?;
    if stdout != "started\ngot TERM\n" {
        return Err(format!("the container's output was {stdout:?}").into());
    }
    if status != Some(5) {
        return Err(format!("ctr run returned {status:?}, not the container's 5").into());
    }
    let o = ctd.ctr(&["task", "kill", "c1"])?;
    if o.status.success() {
        return Err("killing a deleted task succeeded".into());
    }
    nothing_left(ctd)
}

/// The sandbox `id`'s hako-vmm runs as an unprivileged host uid (one of the runtime's
/// ranges), and what the container writes into its root file system (containerd's overlay
/// snapshot, mounted over id-mapped layers) lands in the snapshot's upper directory with the
/// owners it gave: root's as root's, uid 1000's as 1000's.
fn vmm_unprivileged_and_owners_kept(ctd: &Containerd, id: &str) -> Result<(), Failed> {
    use hako_runtime::sandbox::id_range::{FIRST_ID, RANGE, SLOTS};
    use std::os::unix::fs::MetadataExt;
    let pid = SandboxState::load(&ctd.hako_root.join(id))
        .map_err(|e| format!("{e:#}"))?
        .vmm_pid;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if uid < FIRST_ID
        || !(uid - FIRST_ID).is_multiple_of(RANGE)
        || (uid - FIRST_ID) / RANGE >= SLOTS
    {
        return Err(format!("sandbox {id}'s hako-vmm {pid} runs as uid {uid}").into());
    }
    let o = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "owners",
        id,
        "sh",
        "-c",
        "echo r > /by-root && echo u > /by-1000 && chown 1000:1000 /by-1000 && cat /etc/passwd > /dev/null",
    ])?;
    if !o.status.success() {
        return Err(format!("writing files in the container: {}", out(&o)).into());
    }
    let snapshots = ctd
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    let find = |name: &str| -> Result<(u32, u32), String> {
        for e in std::fs::read_dir(&snapshots)
            .map_err(|e| format!("{}: {e}", snapshots.display()))?
            .flatten()
        {
            if let Ok(m) = std::fs::metadata(e.path().join("fs").join(name)) {
                return Ok((m.uid(), m.gid()));
            }
        }
        Err(format!("{name} is in no snapshot's upper directory"))
    };
    for (name, want) in [("by-root", (0, 0)), ("by-1000", (1000, 1000))] {
        let got = find(name)?;
        if got != want {
            return Err(format!("{name} is owned by {got:?} on the host, not {want:?}").into());
        }
    }
    eprintln!("sandbox {id}: hako-vmm runs as uid {uid}; the container's files keep their owners");
    Ok(())
}

fn wait_child(child: &mut Child, limit: Duration) -> Result<Option<i32>, Failed> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(s.code());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return Err(format!("ctr did not return within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `ctr run -t`: the container's stdio is a terminal (ctr itself runs under `script` so it
/// has one to pass on).
fn run_with_tty(ctd: &Containerd) -> Result<(), Failed> {
    let ctr = ctr_run(ctd, &["-t"], "c2", &["sh", "-c", "tty; exit 2"]);
    let mut line: Vec<String> = vec![ctr.get_program().to_string_lossy().into_owned()];
    line.extend(ctr.get_args().map(|a| a.to_string_lossy().into_owned()));
    let o = Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("script: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !text.contains("/dev/pts/") || o.status.code() != Some(2) {
        return Err(format!(
            "ctr run -t: {}\ncontainerd log:\n{}",
            out(&o),
            ctd.log_tail(30)
        )
        .into());
    }
    nothing_left(ctd)
}

/// `ctr run -d` of a sleeping busybox task `id` in its own sandbox, until it is RUNNING.
fn run_sleeper(ctd: &Containerd, id: &str) -> Result<(), Failed> {
    let o = ctd.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        BUSYBOX,
        id,
        "sleep",
        "100000",
    ])?;
    if !o.status.success() {
        return Err(format!("ctr run -d: {}", out(&o)).into());
    }
    wait_status(ctd, id, "RUNNING", boot_deadline())
}

/// SIGKILL of a running sandbox's VMM: containerd sees the task exit and deleting it
/// cleans up everything.
fn vmm_killed(ctd: &Containerd) -> Result<(), Failed> {
    run_sleeper(ctd, "c3")?;
    let events = ctd.watch_events()?;
    let pid = SandboxState::load(&ctd.hako_root.join("c3"))
        .map_err(|e| format!("{e:#}"))?
        .vmm_pid;
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    wait_status(ctd, "c3", "STOPPED", Duration::from_secs(60))?;
    let o = ctd.ctr(&["task", "rm", "c3"])?;
    if !o.status.success() {
        return Err(format!("ctr task rm: {}", out(&o)).into());
    }
    let o = ctd.ctr(&["container", "rm", "c3"])?;
    if !o.status.success() {
        return Err(format!("ctr container rm: {}", out(&o)).into());
    }
    if !events.seen("/tasks/exit") {
        return Err("containerd never got a TaskExit".into());
    }
    drop(events);
    nothing_left(ctd)
}

/// SIGKILL of a running sandbox's shim: containerd finds the shim dead, runs the shim
/// binary's `delete` (which kills the VMM and removes its mounts, cgroup and state), and
/// publishes the task's exit; nothing is left.
fn shim_killed(ctd: &Containerd) -> Result<(), Failed> {
    run_sleeper(ctd, "c4")?;
    let events = ctd.watch_events()?;
    kill_shim(ctd, "c4")?;
    let start = Instant::now();
    while !events.seen("/tasks/exit") {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "containerd never got a TaskExit after the shim died; its log:\n{}",
                ctd.log_tail(40)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(events);
    gone_with_its_shim(ctd, "c4")
}

/// A running sandbox's share rewritten as a compromised hako-vmm could (the guest's view is
/// read-only): the container's directory moved aside with its binds, a symlink to a host
/// mount point where its root file system's bind was, and `mounts` a symlink to a host
/// directory. Killing and removing the task through containerd runs the shim's removal and
/// stop, which undo the shim's own binds (by mount id) and nothing else: the host mount
/// and file stay, and nothing is left.
fn share_rewritten_under_the_shim(ctd: &Containerd) -> Result<(), Failed> {
    let sentinel = ctd.dir.path().join("sentinel");
    let victim = ctd.dir.path().join("victim");
    std::fs::create_dir(&sentinel).map_err(|e| e.to_string())?;
    std::fs::write(&victim, "victim\n").map_err(|e| e.to_string())?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "sentinel"])
        .arg(&sentinel)
        .status()
        .map_err(|e| e.to_string())?;
    if !mounted.success() {
        return Err("mounting the sentinel tmpfs failed".into());
    }
    let result = (|| -> Result<(), Failed> {
        std::fs::write(sentinel.join("keep"), "keep\n").map_err(|e| e.to_string())?;
        run_sleeper(ctd, "c5")?;
        let staging = ctd.hako_root.join("c5").join("staging");
        std::fs::rename(staging.join("c5"), staging.join("aside"))
            .map_err(|e| format!("moving the container's directory aside: {e}"))?;
        std::fs::create_dir(staging.join("c5")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(&sentinel, staging.join("c5/rootfs"))
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(ctd.dir.path(), staging.join("c5/mounts"))
            .map_err(|e| e.to_string())?;
        let o = ctd.ctr(&["task", "kill", "-s", "SIGKILL", "c5"])?;
        if !o.status.success() {
            return Err(format!("ctr task kill: {}", out(&o)).into());
        }
        wait_status(ctd, "c5", "STOPPED", Duration::from_secs(120))?;
        for args in [["task", "rm", "c5"], ["container", "rm", "c5"]] {
            let o = ctd.ctr(&args)?;
            if !o.status.success() {
                return Err(format!("ctr {}: {}", args.join(" "), out(&o)).into());
            }
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let point = format!(" {} ", sentinel.display());
        if !info.lines().any(|l| l.contains(&point)) {
            return Err("the host mount the share's symlink pointed at was unmounted".into());
        }
        for (file, want) in [
            (sentinel.join("keep"), "keep\n"),
            (victim.clone(), "victim\n"),
        ] {
            if std::fs::read_to_string(&file).unwrap_or_default() != want {
                return Err(format!("{} changed", file.display()).into());
            }
        }
        nothing_left(ctd)
    })();
    let _ = Command::new("umount").arg("-l").arg(&sentinel).status();
    result
}

/// kill -9 of the shim of task `id`.
fn kill_shim(ctd: &Containerd, id: &str) -> Result<(), Failed> {
    let shims: Vec<String> = ctd
        .leftover_processes()
        .into_iter()
        .filter(|p| p.contains("containerd-shim-hako-v2") && p.contains(&format!("-id {id} ")))
        .collect();
    let [shim] = shims.as_slice() else {
        return Err(format!("expected one shim for {id}, found {shims:?}").into());
    };
    let pid = shim.split(':').next().unwrap_or_default().to_owned();
    eprintln!("killing the shim {shim}");
    Command::new("kill")
        .args(["-9", &pid])
        .status()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// After its shim died, task `id` is not RUNNING, its container record can be removed, and
/// nothing of its sandbox is left.
fn gone_with_its_shim(ctd: &Containerd, id: &str) -> Result<(), Failed> {
    let o = ctd.ctr(&["task", "ls"])?;
    let tasks = String::from_utf8_lossy(&o.stdout).into_owned();
    if tasks
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"))
    {
        return Err(format!("{id} still RUNNING after its shim died:\n{tasks}").into());
    }
    // The task may already be gone (containerd deletes a dead shim's task); the container
    // record is the user's to remove.
    let _ = ctd.ctr(&["task", "rm", id]);
    let o = ctd.ctr(&["container", "rm", id])?;
    if !o.status.success() {
        return Err(format!("ctr container rm: {}", out(&o)).into());
    }
    nothing_left(ctd)
}

/// SIGKILL of a sandbox's shim while its task is being created (its VM resumed, the guest
/// making the container): `ctr run` fails, containerd cleans up through the shim binary's
/// `delete`, no task is left RUNNING, and nothing else is left.
fn shim_killed_while_creating(ctd: &Containerd) -> Result<(), Failed> {
    let mut run = ctd
        .ctr_command(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            BUSYBOX,
            "c5",
            "sleep",
            "100000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("ctr run: {e}"))?;
    let sandbox = ctd.hako_root.join("c5");
    let start = Instant::now();
    // The VMM is running once the state names it (it is first written with 0).
    while SandboxState::load(&sandbox).map_or(true, |s| s.vmm_pid == 0) {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = run.kill();
            return Err("no sandbox VMM for c5 within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Into the agent's connection and the container's creation in the guest.
    std::thread::sleep(Duration::from_secs(2));
    if let Err(e) = kill_shim(ctd, "c5") {
        let _ = run.kill();
        return Err(e);
    }
    match wait_child(&mut run, Duration::from_secs(120))? {
        Some(0) => return Err("ctr run -d succeeded though its shim was killed".into()),
        code => eprintln!("ctr run ended with {code:?}, as it should"),
    }
    gone_with_its_shim(ctd, "c5")
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    require::root()?;
    require::program("containerd")?;
    require::program("ctr")?;
    require::program("script")?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

/// OCI hooks through the shim, as Docker 28 and nerdctl give them: a spec (`ctr run --config`)
/// with a hook of each kind the runtime runs, each by a path that exists only on the host; the
/// container runs (its hooks never reach the guest) and each hook ran once on the host with
/// the task's state (as runc gives it: `creating` at create, `created` for poststart).
fn run_with_hooks(ctd: &Containerd) -> Result<(), Failed> {
    let dir = ctd.dir.path().join("hooked");
    hako_rootfs_builder::bundle::write_busybox_bundle(
        std::path::Path::new("/bin/busybox"),
        &dir,
        &["sh", "-c", "echo hooked"],
        "/hako-hooks",
    )?;
    let hook = ctd.dir.path().join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\ncat > \"$1\"\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let config = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    spec["root"]["path"] = dir.join("rootfs").display().to_string().into();
    let kinds = [
        ("createRuntime", "creating"),
        ("prestart", "creating"),
        ("poststart", "created"),
        ("poststop", "stopped"),
    ];
    for (kind, _) in kinds {
        spec["hooks"][kind] = serde_json::json!([{"path": hook, "args": ["hook.sh", dir.join(format!("{kind}.json"))]}]);
    }
    std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
    let o = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--config",
        &config.display().to_string(),
        "hk",
    ])?;
    if !o.status.success() || String::from_utf8_lossy(&o.stdout) != "hooked\n" {
        return Err(format!("ctr run --config (with hooks): {}", out(&o)).into());
    }
    for (kind, status) in kinds {
        let state: serde_json::Value = std::fs::read(dir.join(format!("{kind}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| format!("the {kind} hook did not run on the host"))?;
        if state["id"] != "hk" || state["status"] != status {
            return Err(format!("the {kind} hook was given {state}").into());
        }
    }
    nothing_left(ctd)
}

/// One end-to-end check against a running containerd.
type Check = fn(&Containerd) -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    // Each trial starts its own containerd (cheap) and boots one sandbox.
    let ready = prerequisites();
    let trial_on = |release: Release, name: &str, f: Check| {
        let ready = ready.clone().and_then(|()| release.available());
        require::trial(
            name,
            move || ready,
            move || {
                let ctd = Containerd::start_release(release)?;
                let r = f(&ctd);
                if r.is_err() {
                    eprintln!("containerd log (last lines):\n{}", ctd.log_tail(60));
                }
                r
            },
        )
    };
    // The same trials against containerd 1.6 (Debian 12) and 2.x (Debian sid), the 2.x
    // ones named `containerd2_*`.
    let all: [(&str, Check); 8] = [
        ("ctr_run_exec_kill_in_one_sandbox", run_exec_kill),
        ("ctr_run_with_a_tty", run_with_tty),
        ("ctr_run_with_oci_hooks", run_with_hooks),
        ("vmm_killed_under_a_running_task", vmm_killed),
        ("shim_killed_under_a_running_task", shim_killed),
        ("shim_killed_while_creating", shim_killed_while_creating),
        (
            "share_rewritten_under_the_shim",
            share_rewritten_under_the_shim,
        ),
        ("cri_pod_with_two_containers", cri_pod),
    ];
    // The start protocols need no containerd and no VM.
    let mut trials = vec![
        require::trial("shim_start_protocol_containerd_2_3", require::root, || {
            start_protocol::containerd_2_3("hako-start-v3")
        }),
        require::trial("shim_start_protocol_legacy", require::root, || {
            start_protocol::legacy("hako-start-v2")
        }),
    ];
    for (name, f) in all {
        trials.push(trial_on(Release::Debian12, name, f));
        trials.push(trial_on(Release::Sid, &format!("containerd2_{name}"), f));
    }
    libtest_mimic::run(&args, trials).exit()
}

/// Kubernetes CRI: a pod with `runtime_handler: hako` is one sandbox VM; two containers run
/// in it, ExecSync and ContainerStats reach them, their output reaches the CRI logs, and
/// stopping and removing the pod leaves nothing.
fn cri_pod(ctd: &Containerd) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let logs = ctd.dir.path().join("pod-logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut cri = Cri::connect(&ctd.socket, &logs).await?;
        let pod_config = cri.pod_config("pod1");
        let pod = cri.run_pod(&pod_config, "hako").await?;
        let result = async {
            let c1 = cri
                .start_container(
                    &pod,
                    &pod_config,
                    "c1",
                    BUSYBOX,
                    &["sh", "-c", "echo hello-from-c1; sleep 100000"],
                )
                .await?;
            let c2 = cri
                .start_container(
                    &pod,
                    &pod_config,
                    "c2",
                    BUSYBOX,
                    &["sh", "-c", "echo hello-from-c2; sleep 100000"],
                )
                .await?;
            // One sandbox, under the root of the config the handler's ConfigPath names.
            let sandboxes = Containerd::sandboxes_in(&ctd.cri_root);
            if sandboxes != vec![pod.clone()] || !ctd.leftover_sandboxes().eq(&sandboxes) {
                return Err(format!(
                    "the pod's containers are in sandboxes {sandboxes:?} under {}, not one ({pod}); all: {:?}",
                    ctd.cri_root.display(),
                    ctd.leftover_sandboxes()
                ));
            }
            let r = cri
                .exec_sync(&c1, &["sh", "-c", "echo exec-sync; exit 3"])
                .await?;
            if r.exit_code != 3 || String::from_utf8_lossy(&r.stdout) != "exec-sync\n" {
                return Err(format!(
                    "ExecSync: exit {} stdout {:?} stderr {:?}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout),
                    String::from_utf8_lossy(&r.stderr)
                ));
            }
            // Both containers see one guest: the same kernel boot id.
            let a = cri
                .exec_sync(&c1, &["cat", "/proc/sys/kernel/random/boot_id"])
                .await?;
            let b = cri
                .exec_sync(&c2, &["cat", "/proc/sys/kernel/random/boot_id"])
                .await?;
            if a.stdout.is_empty() || a.stdout != b.stdout {
                return Err(format!(
                    "the two containers are not in one VM: boot ids {:?} / {:?}",
                    String::from_utf8_lossy(&a.stdout),
                    String::from_utf8_lossy(&b.stdout)
                ));
            }
            let (mem, _cpu) = cri.stats(&c1).await?;
            if mem == 0 {
                return Err("ContainerStats reported no memory in use".into());
            }
            for (name, want) in [("c1", "hello-from-c1"), ("c2", "hello-from-c2")] {
                let log =
                    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
                if !log.contains(want) {
                    return Err(format!("{name}.log lacks {want:?}: {log:?}"));
                }
            }
            cri.stop_and_remove_container(&c2).await?;
            Ok(())
        }
        .await;
        let removed = cri.stop_and_remove_pod(&pod).await;
        result?;
        removed
    })?;
    nothing_left(ctd)
}
