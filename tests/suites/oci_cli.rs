//! The `hako` OCI CLI against runc: the same lifecycle and error-path checks run with both
//! binaries (runc first, so every assertion is known to hold for the reference runtime).
//! Error paths need no VM; the lifecycle boots one sandbox VM under hako.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hako_rootfs_builder::bundle;
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::{Arguments, Failed};

/// One runtime under test: its binary, a state root, and (for hako) its config.
struct Runtime {
    name: &'static str,
    bin: PathBuf,
    root: PathBuf,
    config: Option<PathBuf>,
}

impl Runtime {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root).args(args);
        if let Some(cfg) = &self.config {
            c.env("HAKO_CONFIG", cfg);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Result<Output, Failed> {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{} {args:?}: {e}", self.name).into())
    }

    fn status_of(&self, id: &str) -> Result<String, Failed> {
        let o = self.run(&["state", id])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .map_err(|e| format!("{} state {id}: {e}: {}", self.name, show(&o)))?;
        Ok(v["status"].as_str().unwrap_or_default().to_owned())
    }
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn expect_fail(rt: &Runtime, args: &[&str], needle: &str) -> Result<(), Failed> {
    let o = rt.run(args)?;
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    if o.status.success() || !err.contains(needle) {
        return Err(format!(
            "{} {args:?} should fail saying {needle:?}: {}",
            rt.name,
            show(&o)
        )
        .into());
    }
    Ok(())
}

fn expect_ok(rt: &Runtime, args: &[&str]) -> Result<Output, Failed> {
    let o = rt.run(args)?;
    if !o.status.success() {
        return Err(format!("{} {args:?}: {}", rt.name, show(&o)).into());
    }
    Ok(o)
}

fn write_bundle(dir: &Path, args: &[&str]) -> Result<(), Failed> {
    bundle::write_busybox_bundle(Path::new("/bin/busybox"), dir, args, "/hako-oci-test")?;
    Ok(())
}

/// The container's pid presents the container's root file system (what `podman cp` of a
/// running container writes through): a file written under `/proc/<pid>/root` is in the
/// container and not on the host, and the /proc there is no procfs of the host's. Under hako,
/// whose tree there the guest writes, nothing in the pid's mount namespace runs (a root tool
/// entering it, as `podman cp` does, would run what the guest put there) and its /proc is
/// empty.
fn the_pid_shows_the_container(rt: &Runtime, id: &str, pid: u32) -> Result<(), Failed> {
    let name = format!("hako-marker-{}", rt.name);
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    std::fs::write(root.join(&name), "copied in\n")
        .map_err(|e| format!("{}: writing through /proc/{pid}/root: {e}", rt.name))?;
    if Path::new("/").join(&name).exists() {
        let _ = std::fs::remove_file(Path::new("/").join(&name));
        return Err(format!(
            "{}: a write through the pid's root reached the host's /",
            rt.name
        )
        .into());
    }
    let o = rt.run(&["exec", id, "cat", &format!("/{name}")])?;
    if String::from_utf8_lossy(&o.stdout) != "copied in\n" {
        return Err(format!(
            "{}: the container does not see the file: {}",
            rt.name,
            show(&o)
        )
        .into());
    }
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::metadata("/").map_err(|e| e.to_string())?;
    if let Ok(m) = std::fs::metadata(root.join("proc/1/root"))
        && (m.dev(), m.ino()) == (host.dev(), host.ino())
    {
        return Err(format!("{}: /proc/{pid}/root/proc/1/root is the host's /", rt.name).into());
    }
    if rt.name == "hako" {
        let listed = std::fs::read_dir(root.join("proc"))
            .map(|d| d.count())
            .map_err(|e| e.to_string())?;
        if listed != 0 {
            return Err(format!("hako: /proc in the pid's root lists {listed} entries").into());
        }
        let o = Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args(["/bin/busybox", "true"])
            .output()
            .map_err(|e| format!("nsenter: {e}"))?;
        if o.status.success() {
            return Err(
                "hako: a program of the container's tree ran in the pid's mount namespace".into(),
            );
        }
    }
    Ok(())
}

/// Waits until `file` ends with `tail`.
fn wait_for_output(file: &Path, tail: &str, limit: Duration) -> Result<(), Failed> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.ends_with(tail) {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("{} is {text:?}, not ending with {tail:?}", file.display()).into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reaps `pid` (a child of ours, as this process is a subreaper) once it ends.
fn reap(pid: u32, limit: Duration) -> Result<nix::sys::wait::WaitStatus, Failed> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let start = Instant::now();
    loop {
        match waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(WaitPidFlag::WNOHANG),
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Ok(status),
            Err(e) => return Err(format!("waiting for {pid}: {e}").into()),
        }
        if start.elapsed() > limit {
            return Err(format!("process {pid} still runs after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Error paths: unknown id, bad bundle, bad config.json, bad signal.
fn error_paths(rt: &Runtime, work: &Path) -> Result<(), Failed> {
    expect_fail(rt, &["state", "nope"], "does not exist")?;
    expect_fail(rt, &["start", "nope"], "does not exist")?;
    expect_fail(rt, &["kill", "nope", "KILL"], "does not exist")?;
    expect_fail(rt, &["delete", "nope"], "does not exist")?;
    let missing = work.join("missing");
    expect_fail(
        rt,
        &["create", "--bundle", &missing.display().to_string(), "e1"],
        "missing",
    )?;
    let bad = work.join("bad");
    std::fs::create_dir_all(bad.join("rootfs")).map_err(|e| e.to_string())?;
    std::fs::write(bad.join("config.json"), "{ not json").map_err(|e| e.to_string())?;
    let log = work.join(format!("{}-errors.log", rt.name));
    let log_arg = log.display().to_string();
    let o = rt.run(&[
        "--log",
        &log_arg,
        "--log-format",
        "json",
        "create",
        "--bundle",
        &bad.display().to_string(),
        "e2",
    ])?;
    if o.status.success() {
        return Err(format!("{}: a bad config.json was accepted", rt.name).into());
    }
    // What containerd's runc shim (Docker) shows: the last error's msg in the JSON log.
    let last = json_log(rt, &log)?.pop();
    if last
        .as_ref()
        .is_none_or(|l| l["level"] != "error" || l["msg"].as_str().is_none_or(str::is_empty))
    {
        return Err(format!("{}: the JSON log's last line is {last:?}", rt.name).into());
    }
    if rt.run(&["state", "e2"])?.status.success() {
        return Err(format!("{}: a failed create left container e2", rt.name).into());
    }
    if rt.name == "hako" {
        // A namespace of a host process cannot be joined from a VM: refused, not ignored.
        let ns = work.join("join-ns");
        write_bundle(&ns, &["true"])?;
        let config = ns.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        spec["linux"]["namespaces"] = serde_json::json!([
            {"type": "mount"}, {"type": "pid"}, {"type": "ipc", "path": "/proc/1/ns/ipc"}
        ]);
        std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
        expect_fail(
            rt,
            &["create", "--bundle", &ns.display().to_string(), "e3"],
            "cannot join a host process's namespaces",
        )?;
    }
    Ok(())
}

/// The lines of a `--log-format json` log, each of which must be a JSON object with a level
/// and a msg, as runc writes them (containerd's runc shim cannot read the error otherwise).
fn json_log(rt: &Runtime, log: &Path) -> Result<Vec<serde_json::Value>, Failed> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .filter(|v| v["level"].is_string() && v["msg"].is_string())
                .ok_or_else(|| format!("{}: a JSON log line is {line:?}", rt.name).into())
        })
        .collect()
}

fn wait_gone(pid: u32, limit: Duration) -> Result<(), Failed> {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("process {pid} still runs after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The hook kinds the lifecycle's bundle has, and the status each is given on its stdin.
const HOOKS: [(&str, &str); 4] = [
    ("createRuntime", "creating"),
    ("prestart", "creating"),
    ("poststart", "created"),
    ("poststop", "stopped"),
];

/// The container's root file system as Docker and podman give it by default: an overlay they
/// mounted, outside the bundle, named by an absolute `root.path`. Unmounted on drop.
struct CallerOverlay(PathBuf);

impl CallerOverlay {
    fn mount(dir: &Path, lower: &Path) -> Result<Self, Failed> {
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let o = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("mounting the overlay: {}", show(&o)).into());
        }
        Ok(Self(merged))
    }
}

impl Drop for CallerOverlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The lifecycle's bundle: `args` on an overlay root at an absolute `root.path` (Docker's
/// and podman's default), with a hook of every kind the runtime runs on the host, each by
/// a path that exists only on the host and writing its stdin to `<work>/<runtime>-<kind>.json`.
fn write_hooked_bundle(
    rt: &Runtime,
    work: &Path,
    args: &[&str],
) -> Result<(PathBuf, CallerOverlay), Failed> {
    let b = work.join(format!("bundle-{}", rt.name));
    write_bundle(&b, args)?;
    let overlay = CallerOverlay::mount(
        &work.join(format!("overlay-{}", rt.name)),
        &b.join("rootfs"),
    )?;
    let hook = work.join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\ncat > \"$1\"\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let config = b.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    spec["root"]["path"] = overlay.0.display().to_string().into();
    for (kind, _) in HOOKS {
        let out = work.join(format!("{}-{kind}.json", rt.name));
        spec["hooks"][kind] = serde_json::json!([{
            "path": hook, "args": ["hook.sh", out], "timeout": 120
        }]);
    }
    std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
    Ok((b, overlay))
}

/// Each hook ran once, on the host, with the container's id and the status of its moment.
fn check_hooks(rt: &Runtime, work: &Path, id: &str) -> Result<(), Failed> {
    for (kind, status) in HOOKS {
        let out = work.join(format!("{}-{kind}.json", rt.name));
        let state: serde_json::Value = std::fs::read(&out)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| format!("{}: the {kind} hook did not run on the host", rt.name))?;
        if state["id"] != id || state["status"] != status {
            return Err(format!("{}: the {kind} hook was given {state}", rt.name).into());
        }
    }
    Ok(())
}

/// create → state → duplicate → start → ps/list → exec → pause/resume → update → events →
/// kill → stopped → kill again fails → delete → gone; as Docker calls a runtime: a state root
/// as long as Docker's (under the work directory), a 64-character id, the root file system on
/// an overlay the caller mounted, prestart/createRuntime/poststart/poststop hooks, and the
/// bundle's config.json unreadable between create and start (runc keeps what create read).
fn lifecycle(rt: &Runtime, work: &Path, boot: Duration) -> Result<(), Failed> {
    let (b, _overlay) = write_hooked_bundle(
        rt,
        work,
        &[
            "sh",
            "-c",
            "trap 'echo got USR1' USR1; trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 1; done",
        ],
    )?;
    let b = b.display().to_string();
    let pid_file = work.join(format!("{}.pid", rt.name));
    let out_file = work.join(format!("{}.out", rt.name));
    let id = &"0123456789abcdef".repeat(4);
    // The container keeps the stdio it was created with: files, so nothing waits on them.
    let err_file = work.join(format!("{}.err", rt.name));
    let pid_arg = pid_file.display().to_string();
    // As conmon and containerd's runc shim: the container's pid is reparented to us, and its
    // exit status is the container's.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| e.to_string())?;
    // As containerd's runc shim calls it; the monitor's lines go there too.
    let log = work.join(format!("{}.log", rt.name));
    let log_arg = log.display().to_string();
    let status = rt
        .cmd(&[
            "--log",
            &log_arg,
            "--log-format",
            "json",
            "create",
            "--bundle",
            &b,
            "--pid-file",
            &pid_arg,
            id,
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&err_file).map_err(|e| e.to_string())?)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "{} create: {status}: {}",
            rt.name,
            std::fs::read_to_string(&err_file).unwrap_or_default()
        )
        .into());
    }
    let result = (|| -> Result<(), Failed> {
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("pid file: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("pid file: {e}"))?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(format!("{}: pid {pid} from the pid file does not run", rt.name).into());
        }
        let s = rt.status_of(id)?;
        if s != "created" {
            return Err(format!("{}: state after create is {s:?}", rt.name).into());
        }
        expect_fail(rt, &["create", "--bundle", &b, id], "exist")?;
        // `start` needs nothing from the bundle (exec does: runc reads its process
        // defaults there).
        let config = Path::new(&b).join("config.json");
        let created = std::fs::read(&config).map_err(|e| e.to_string())?;
        std::fs::write(&config, "{ edited after create").map_err(|e| e.to_string())?;
        expect_ok(rt, &["start", id])?;
        std::fs::write(&config, created).map_err(|e| e.to_string())?;
        let s = rt.status_of(id)?;
        if s != "running" {
            return Err(format!("{}: state after start is {s:?}", rt.name).into());
        }
        let o = expect_ok(rt, &["list"])?;
        if !String::from_utf8_lossy(&o.stdout).contains("running") {
            return Err(format!("{} list: {}", rt.name, show(&o)).into());
        }
        expect_ok(rt, &["ps", id])?;
        let o = rt.run(&["exec", id, "sh", "-c", "echo exec-out; exit 4"])?;
        if o.status.code() != Some(4) || String::from_utf8_lossy(&o.stdout) != "exec-out\n" {
            return Err(format!("{} exec: {}", rt.name, show(&o)).into());
        }
        expect_ok(rt, &["pause", id])?;
        let s = rt.status_of(id)?;
        if s != "paused" {
            return Err(format!("{}: state after pause is {s:?}", rt.name).into());
        }
        expect_ok(rt, &["resume", id])?;
        expect_ok(rt, &["update", "--pids-limit", "200", id])?;
        let o = expect_ok(rt, &["events", "--stats", id])?;
        if rt.name == "hako" && !String::from_utf8_lossy(&o.stdout).contains("\"limit\":200") {
            return Err(
                format!("hako: the pids limit did not reach the guest: {}", show(&o)).into(),
            );
        }
        if !String::from_utf8_lossy(&o.stdout).contains("\"stats\"") {
            return Err(format!("{} events --stats: {}", rt.name, show(&o)).into());
        }
        the_pid_shows_the_container(rt, id, pid)?;
        expect_ok(rt, &["kill", id, "USR1"])?;
        wait_for_output(&out_file, "got USR1\n", boot)?;
        // A signal sent to the pid reaches the container's init, whose status the pid ends
        // with.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(|e| e.to_string())?;
        let status = reap(pid, boot)?;
        if status != nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid as i32), 3) {
            return Err(format!("{}: the pid ended {status:?}, not with 3", rt.name).into());
        }
        let start = Instant::now();
        while rt.status_of(id)? != "stopped" {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("{}: not stopped after its init exited", rt.name).into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        expect_fail(rt, &["kill", id, "KILL"], "not running")?;
        Ok(())
    })();
    let del = rt.run(&["delete", "--force", id])?;
    result?;
    if !del.status.success() {
        return Err(format!("{} delete: {}", rt.name, show(&del)).into());
    }
    expect_fail(rt, &["state", id], "does not exist")?;
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    if out != "ready\ngot USR1\ngot TERM\n" {
        return Err(format!("{}: the container's output was {out:?}", rt.name).into());
    }
    json_log(rt, &log)?;
    check_hooks(rt, work, id)
}

/// hako only: a monitor killed with SIGKILL leaves a container that `state` reports stopped
/// and `delete` removes with its VM, mounts and directory.
fn crashed_monitor(rt: &Runtime, work: &Path, boot: Duration) -> Result<(), Failed> {
    let b = work.join("bundle-crash");
    write_bundle(&b, &["sleep", "100000"])?;
    let id = "crash";
    let status = rt
        .cmd(&["create", "--bundle", &b.display().to_string(), id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("create: {status}").into());
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rt.root.join(id).join("container.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let monitor = record["monitor_pid"].as_u64().ok_or("no monitor pid")?;
    let sandbox: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rt.root.join(id).join("vm").join("state.json"))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let vmm = sandbox["vmm_pid"].as_u64().ok_or("no vmm pid")? as u32;
    Command::new("kill")
        .args(["-9", &monitor.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    wait_gone(monitor as u32, boot)?;
    let s = rt.status_of(id)?;
    if s != "stopped" {
        return Err(format!("state after the monitor died is {s:?}").into());
    }
    expect_ok(rt, &["delete", id])?;
    wait_gone(vmm, Duration::from_secs(30))?;
    if rt.root.join(id).exists() {
        return Err("delete left the container's directory".into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&*rt.root.to_string_lossy()) {
        return Err("delete left a mount".into());
    }
    Ok(())
}

/// SIGKILL of the container's pid ends the container, as for runc's init: its state turns
/// `stopped` and `delete` leaves nothing.
fn killed_pid(rt: &Runtime, work: &Path, boot: Duration) -> Result<(), Failed> {
    let b = work.join(format!("bundle-killed-{}", rt.name));
    write_bundle(&b, &["sleep", "100000"])?;
    let id = "killed";
    let pid_file = work.join(format!("killed-{}.pid", rt.name));
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| e.to_string())?;
    let o = rt
        .cmd(&[
            "run",
            "--detach",
            "--bundle",
            &b.display().to_string(),
            "--pid-file",
            &pid_file.display().to_string(),
            id,
        ])
        // Not a pipe: the container keeps its stdio, and nothing would see its end.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !o.success() {
        return Err(format!("{} run --detach: {o}", rt.name).into());
    }
    let result = (|| -> Result<(), Failed> {
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("pid file: {e}"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        reap(pid, boot)?;
        let start = Instant::now();
        while rt.status_of(id)? != "stopped" {
            if start.elapsed() > boot {
                return Err(format!("{}: not stopped after its pid was killed", rt.name).into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })();
    let del = rt.run(&["delete", "--force", id])?;
    result?;
    if !del.status.success() {
        return Err(format!("{} delete: {}", rt.name, show(&del)).into());
    }
    if rt.root.join(id).exists() {
        return Err(format!("{}: delete left the container's directory", rt.name).into());
    }
    Ok(())
}

fn runtimes(work: &Path) -> Result<Vec<Runtime>, Failed> {
    let hako = fixtures::workspace_binary("hako")?;
    let config = work.join("hako.toml");
    // Sandboxes resume the shared template (booted once per test run).
    fixtures::templated_runtime_config(&hako, &config)?;
    Ok(vec![
        Runtime {
            name: "runc",
            bin: PathBuf::from("runc"),
            root: work.join("runc-root/var/run/docker/runtime-runc/moby"),
            config: None,
        },
        Runtime {
            name: "hako",
            bin: hako,
            root: work.join("hako-root/var/run/docker/runtime-runc/moby"),
            config: Some(config),
        },
    ])
}

fn both(test: fn(&Runtime, &Path) -> Result<(), Failed>) -> Result<(), Failed> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    for rt in runtimes(work.path())? {
        test(&rt, work.path())?;
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::program("runc")?;
    require::program("/bin/busybox")
}

fn vm_prerequisites() -> Result<(), Skip> {
    prerequisites()?;
    require::kvm()?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        require::trial("oci_error_paths_match_runc", prerequisites, || {
            both(error_paths)
        }),
        require::trial("oci_lifecycle_matches_runc", vm_prerequisites, || {
            both(|rt, work| lifecycle(rt, work, hako_tests::boot::vm_deadline()))
        }),
        require::trial(
            "oci_killed_pid_ends_the_container",
            vm_prerequisites,
            || both(|rt, work| killed_pid(rt, work, hako_tests::boot::vm_deadline())),
        ),
        require::trial(
            "oci_crashed_monitor_is_cleaned_up",
            vm_prerequisites,
            || {
                let work = tempfile::tempdir().map_err(|e| e.to_string())?;
                let all = runtimes(work.path())?;
                let hako = all.iter().find(|r| r.name == "hako").ok_or("no hako")?;
                crashed_monitor(hako, work.path(), hako_tests::boot::vm_deadline())
            },
        ),
        require::trial("oci_features_is_json", prerequisites, || {
            let hako = fixtures::workspace_binary("hako")?;
            let o = Command::new(hako)
                .arg("features")
                .output()
                .map_err(|e| e.to_string())?;
            let v: serde_json::Value =
                serde_json::from_slice(&o.stdout).map_err(|e| format!("features: {e}"))?;
            if v["ociVersionMax"].as_str().is_none() || !o.status.success() {
                return Err(format!("features: {}", show(&o)).into());
            }
            Ok(())
        }),
    ];
    libtest_mimic::run(&args, trials).exit()
}
