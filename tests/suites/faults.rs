//! Fault injection through the `hako` OCI CLI: each trial makes one thing go wrong while a
//! sandbox is being created and checks that `hako create` fails with an error naming what is
//! wrong, and that the leak checker (`hako_tests::leaks`) finds no mount, process, state entry
//! tap or host cgroup left under the state root (after `hako delete --force` where the failure left a
//! container behind, as runc's users would run it). A missing kernel, no usable /dev/kvm, a
//! guest that never answers, a full disk under the state root, and kill -9 of hako-vmm and of
//! the monitor while the VM boots. Then a soak: `HAKO_SOAK_CYCLES` (default 4) create/delete
//! cycles, each killing (-9) at a random moment one of hako-vmm, the monitor, the `hako create`
//! client or a `hako delete --force` (or nobody), with the leak checker after each cycle; its
//! sandboxes resume the test run's template. None waits for a cold boot to finish, so the
//! suite is quick even where guests take a minute to boot. And a hostile rewrite of a live
//! sandbox's share before `hako delete --force` (moved container directory, symlinks to a
//! host mount point and a host directory), and the same rewrite while the guest creates a
//! container that then fails there: the host mount and files stay, nothing is left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hako_rootfs_builder::bundle;
use hako_runtime::state::{ContainerRecord, SandboxState};
use hako_tests::leaks::Leaks;
use hako_tests::require::{self, Skip};
use hako_tests::{fixtures, netns};
use libtest_mimic::{Arguments, Failed};

/// A state root, a bundle and a config for one trial.
struct Case {
    hako: PathBuf,
    work: tempfile::TempDir,
}

impl Case {
    fn new(config: &str) -> Result<Self, Failed> {
        Self::with_args(config, &["sleep", "1000"])
    }

    /// A case whose container runs `args`.
    fn with_args(config: &str, args: &[&str]) -> Result<Self, Failed> {
        let hako = fixtures::workspace_binary("hako")?;
        // The VMM hako finds next to itself: built now, never a stale one.
        fixtures::workspace_binary("hako-vmm")?;
        // Short: the VMM's socket paths live under the root (108-byte limit).
        let work = tempfile::Builder::new()
            .prefix("hf")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        std::fs::write(work.path().join("hako.toml"), config).map_err(|e| e.to_string())?;
        bundle::write_busybox_bundle(
            Path::new("/bin/busybox"),
            &work.path().join("b"),
            args,
            "/hako-fault-test",
        )?;
        Ok(Self { hako, work })
    }

    fn root(&self) -> PathBuf {
        self.work.path().join("r")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.hako);
        c.env("HAKO_CONFIG", self.work.path().join("hako.toml"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn create(&self) -> Command {
        let bundle = self.work.path().join("b").display().to_string();
        self.cmd(&["create", "--bundle", &bundle, "c"])
    }

    /// Starts `hako create` with its stderr in a file, not a pipe: a created container's
    /// monitor inherits it and would hold a pipe open after `create` ends.
    fn spawn_create(&self) -> Result<Child, Failed> {
        let err = std::fs::File::create(self.work.path().join("create.err"))
            .map_err(|e| e.to_string())?;
        self.create()
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| e.to_string().into())
    }

    /// Waits (10 minutes at most) for a `create` from [`Self::spawn_create`] to end; its
    /// status and stderr.
    fn finish(&self, mut child: Child) -> Result<Output, Failed> {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if start.elapsed() > Duration::from_secs(600) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("hako create did not end within 10 minutes".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr =
            std::fs::read(self.work.path().join("create.err")).map_err(|e| e.to_string())?;
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr,
        })
    }

    fn create_output(&self) -> Result<Output, Failed> {
        let child = self.spawn_create()?;
        self.finish(child)
    }

    /// `hako create` must fail, its error containing each of `needles` (any case).
    fn expect_create_fails(&self, o: &Output, needles: &[&str]) -> Result<(), Failed> {
        let err = String::from_utf8_lossy(&o.stderr);
        let lower = err.to_lowercase();
        if o.status.success() {
            return Err(format!("create succeeded: {}", String::from_utf8_lossy(&o.stdout)).into());
        }
        for n in needles {
            if !lower.contains(&n.to_lowercase()) {
                return Err(format!("create's error does not say {n:?}: {err}").into());
            }
        }
        eprintln!("create failed as expected: {}", err.trim());
        Ok(())
    }

    /// `hako delete --force c` if the container is there (as a user would after a failure).
    fn delete_if_left(&self) -> Result<(), String> {
        if !self.root().join("c").exists() {
            return Ok(());
        }
        let o = self
            .cmd(&["delete", "--force", "c"])
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "delete --force: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// Deletes what a failure left, then checks nothing is left.
    fn no_leaks(&self) -> Result<(), Failed> {
        self.delete_if_left()
            .map_err(|e| format!("after the failure: {e}"))?;
        let left = Leaks::settle(&self.root(), Duration::from_secs(30));
        if !left.is_empty() {
            return Err(format!("left behind: {left:?}").into());
        }
        Ok(())
    }
}

/// A trial that failed early (a create that should have failed and did not) leaves no
/// container running.
impl Drop for Case {
    fn drop(&mut self) {
        if let Err(e) = self.delete_if_left() {
            eprintln!("cleaning up {}: {e}", self.root().display());
        }
    }
}

fn cold_config(extra: &str) -> Result<String, Failed> {
    let kernel = fixtures::kernel().map_err(|s| s.to_string())?;
    let image = fixtures::agent_image()?;
    Ok(format!(
        "[vm]\nkernel = {kernel:?}\nimage = {image:?}\n{extra}"
    ))
}

fn missing_kernel() -> Result<(), Failed> {
    let image = fixtures::agent_image()?;
    let c = Case::new(&format!(
        "[vm]\nkernel = \"/nonexistent/vmlinux\"\nimage = {image:?}\n"
    ))?;
    let o = c.create_output()?;
    c.expect_create_fails(&o, &["/nonexistent/vmlinux"])?;
    c.no_leaks()
}

fn no_kvm() -> Result<(), Failed> {
    let c = Case::new(&cold_config("")?)?;
    // /dev/kvm hidden behind /dev/null in a mount namespace of this command only.
    let bundle = c.work.path().join("b").display().to_string();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind /dev/null /dev/kvm && exec \"$0\" \"$@\"")
        .arg(&c.hako)
        .arg("--root")
        .arg(c.root())
        .args(["create", "--bundle", &bundle, "c"])
        .env("HAKO_CONFIG", c.work.path().join("hako.toml"))
        .stdin(Stdio::null());
    let o = cmd.output().map_err(|e| e.to_string())?;
    c.expect_create_fails(&o, &["/dev/kvm"])?;
    c.no_leaks()
}

fn silent_guest() -> Result<(), Failed> {
    // The probe image boots but never serves the agent API.
    let kernel = fixtures::kernel().map_err(|s| s.to_string())?;
    let image = fixtures::probe_image()?;
    let c = Case::new(&format!(
        "[runtime]\nagent_timeout_secs = 3\n[vm]\nkernel = {kernel:?}\nimage = {image:?}\n"
    ))?;
    let started = Instant::now();
    let o = c.create_output()?;
    c.expect_create_fails(&o, &["no agent", "after 3s"])?;
    if started.elapsed() > Duration::from_secs(60) {
        return Err(format!(
            "create took {:?} with a 3 s agent timeout",
            started.elapsed()
        )
        .into());
    }
    c.no_leaks()
}

fn full_disk() -> Result<(), Failed> {
    let c = Case::new(&cold_config("")?)?;
    let root = c.root();
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    netns::run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "tmpfs",
            &root.display().to_string(),
        ],
    )?;
    let result = (|| {
        // Fill it: the next file written under the root finds no space.
        let _ = std::fs::write(root.join("filler"), vec![0u8; 512 * 1024]);
        let o = c.create_output()?;
        c.expect_create_fails(&o, &["no space left"])?;
        std::fs::remove_file(root.join("filler")).map_err(|e| e.to_string())?;
        c.no_leaks()
    })();
    let _ = netns::run("umount", &["-l", &root.display().to_string()]);
    result
}

/// Starts `hako create` and waits for the sandbox's VMM to run; returns the create process
/// and the VMM's and monitor's pids.
fn create_until_vmm_runs(c: &Case) -> Result<(Child, u32, u32), Failed> {
    let child = c.spawn_create()?;
    let dir = c.root().join("c");
    let start = Instant::now();
    loop {
        let vmm = SandboxState::load(&dir.join("vm"))
            .map(|s| s.vmm_pid)
            // The state is first written with 0, before the VMM starts.
            .ok()
            .filter(|p| *p != 0);
        let monitor = ContainerRecord::load(&dir)
            .map(|r| r.monitor_pid)
            .ok()
            .filter(|p| *p != 0);
        if let (Some(vmm), Some(monitor)) = (vmm, monitor) {
            return Ok((child, vmm, monitor));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("no VMM started within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kill -9 of one process: never 0 or 1 (`kill -9 0` would kill this test's process group,
/// which a soak once did when it read a VMM pid before the VMM started).
fn kill9(pid: u32) -> Result<(), Failed> {
    if pid <= 1 {
        return Err(format!("refusing to kill -9 {pid}").into());
    }
    netns::run("kill", &["-9", &pid.to_string()])?;
    Ok(())
}

/// Kills (-9) the process `victim` picks from (VMM, monitor) while the VM boots; `create`
/// must fail saying `needle`.
fn killed_while_booting(victim: fn(u32, u32) -> u32, needle: &str) -> Result<(), Failed> {
    let c = Case::new(&cold_config("")?)?;
    let (child, vmm, monitor) = create_until_vmm_runs(&c)?;
    kill9(victim(vmm, monitor))?;
    let o = c.finish(child)?;
    c.expect_create_fails(&o, &[needle])?;
    c.no_leaks()
}

fn vmm_killed_while_booting() -> Result<(), Failed> {
    killed_while_booting(|vmm, _| vmm, "hako-vmm ended: killed by signal 9 (SIGKILL)")
}

fn monitor_killed_while_booting() -> Result<(), Failed> {
    killed_while_booting(|_, monitor| monitor, "monitor")
}

/// Kills (-9) hako-vmm while it resumes the run's template: `create` fails saying so, nothing
/// is left, and the template stays for the next sandbox (a kill says nothing against it; the
/// runtime once removed it and booted cold, so every later sandbox booted cold too).
fn vmm_killed_while_resuming() -> Result<(), Failed> {
    let (config, template) = templated_config()?;
    let c = Case::new(&config)?;
    let (child, vmm, _) = create_until_vmm_runs(&c)?;
    kill9(vmm)?;
    let o = c.finish(child)?;
    c.expect_create_fails(&o, &["hako-vmm ended: killed by signal 9 (SIGKILL)"])?;
    c.no_leaks()?;
    template_kept(&template)
}

/// A host mount (a small tmpfs holding `keep`) and a host file (`victim`) in the trial's
/// directory: what a rewritten share points the runtime at. Unmounted when dropped.
struct Sentinel {
    mount: PathBuf,
    victim: PathBuf,
}

impl Sentinel {
    fn new(c: &Case) -> Result<Self, Failed> {
        let mount = c.work.path().join("sentinel");
        let victim = c.work.path().join("victim");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        std::fs::write(&victim, "victim\n").map_err(|e| e.to_string())?;
        let target = mount.display().to_string();
        netns::run(
            "mount",
            &["-t", "tmpfs", "-o", "size=64k", "sentinel", &target],
        )?;
        let s = Self { mount, victim };
        std::fs::write(s.mount.join("keep"), "keep\n").map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// The host mount is still there, and both files unchanged.
    fn untouched(&self) -> Result<(), Failed> {
        let info = std::fs::read("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let needle = format!(" {} ", self.mount.display());
        if !String::from_utf8_lossy(&info)
            .lines()
            .any(|l| l.contains(&needle))
        {
            return Err("the host mount the share's symlink pointed at was unmounted".into());
        }
        for (file, want) in [
            (self.mount.join("keep"), "keep\n"),
            (self.victim.clone(), "victim\n"),
        ] {
            if std::fs::read_to_string(&file).unwrap_or_default() != want {
                return Err(format!("{} changed", file.display()).into());
            }
        }
        Ok(())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = netns::run("umount", &["-l", &self.mount.display().to_string()]);
    }
}

/// Rewrites container `c`'s directory in its sandbox's share as a compromised hako-vmm
/// could (the guest's view is read-only): the directory moved aside with its binds, a
/// symlink to the host mount point where its root's bind was, and its `mounts` a symlink to
/// a host directory.
fn rewrite_share(c: &Case, sentinel: &Sentinel) -> Result<(), Failed> {
    let staging = c.root().join("c/vm/staging");
    let moved = std::fs::rename(staging.join("c"), staging.join("aside"));
    moved.map_err(|e| format!("moving the container's directory aside: {e}"))?;
    std::fs::create_dir(staging.join("c")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&sentinel.mount, staging.join("c/rootfs"))
        .map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(c.work.path(), staging.join("c/mounts"))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A hostile rewrite of a live sandbox's share ([`rewrite_share`]), then `hako delete
/// --force`: the CLI's real teardown unmounts its own binds (by identity), leaves the host
/// mount and file alone, and leaves nothing behind.
fn share_rewritten_before_delete() -> Result<(), Failed> {
    let (config, template) = templated_config()?;
    let c = Case::new(&config)?;
    let sentinel = Sentinel::new(&c)?;
    let o = c.create_output()?;
    if !o.status.success() {
        return Err(format!("create: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    rewrite_share(&c, &sentinel)?;
    let o = c
        .cmd(&["delete", "--force", "c"])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("delete --force: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    sentinel.untouched()?;
    c.no_leaks()?;
    template_kept(&template)
}

/// The share rewritten ([`rewrite_share`]) while the guest creates the container, which then
/// fails in the guest (its root is gone from the guest's view; were it not, its program
/// does not exist): `hako create`'s own undo of the
/// container's binds and of the sandbox leaves the host mount and file alone and leaves
/// nothing behind. The rewrite is made as soon as the container's root is bound in the
/// share, and must precede the failure (else the trial fails as proving nothing).
fn share_rewritten_before_a_failed_create() -> Result<(), Failed> {
    let (config, template) = templated_config()?;
    let c = Case::with_args(&config, &["/no/such/program"])?;
    let sentinel = Sentinel::new(&c)?;
    let mut child = c.spawn_create()?;
    let rootfs = c.root().join("c/vm/staging/c/rootfs");
    let needle = format!(" {} ", rootfs.display());
    let start = Instant::now();
    loop {
        let info = std::fs::read("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&info)
            .lines()
            .any(|l| l.contains(&needle))
        {
            break;
        }
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            let o = c.finish(child)?;
            return Err(format!(
                "create ended before the container's root was bound: {}",
                String::from_utf8_lossy(&o.stderr)
            )
            .into());
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the container's root was not bound within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rewrite_share(&c, &sentinel)?;
    if child.try_wait().map_err(|e| e.to_string())?.is_some() {
        return Err("create had already ended when the share was rewritten".into());
    }
    let o = c.finish(child)?;
    // The agent refuses it: the root it was told of is gone in the guest's view (the
    // rewrite) or its program does not exist.
    c.expect_create_fails(&o, &["creating container c in sandbox"])?;
    sentinel.untouched()?;
    c.no_leaks()?;
    template_kept(&template)
}

/// A config whose sandboxes resume the run's template, and that template's directory.
fn templated_config() -> Result<(String, PathBuf), Failed> {
    let hako = fixtures::workspace_binary("hako")?;
    let config = cold_config(&fixtures::template_config())?;
    let probe = Case::new(&config)?;
    let template = fixtures::ensure_template(&hako, &probe.work.path().join("hako.toml"))?;
    Ok((config, template))
}

fn template_kept(template: &Path) -> Result<(), Failed> {
    if template.join("manifest.json").is_file() {
        Ok(())
    } else {
        Err(format!("the template {} was removed", template.display()).into())
    }
}

/// A small xorshift generator: the soak's choices, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    /// The seed: `HAKO_SOAK_SEED`, else the clock; printed so a run can be repeated.
    fn seed() -> u64 {
        let seed = std::env::var("HAKO_SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("soak seed {seed} (HAKO_SOAK_SEED={seed} repeats these choices)");
        seed
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Whose kill -9 a soak cycle injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Victim {
    Vmm,
    Monitor,
    /// The `hako create` client itself (the monitor and VM go on without it).
    Client,
    /// `hako delete --force` halfway (a second one must finish the job).
    Delete,
    Nobody,
}

/// One soak cycle on a fresh state root: `hako create` from the template; after a random
/// delay (during the resume, the agent's connection, the container's creation in the guest,
/// or after it) kill -9 the victim; `hako start` if the container was created; then
/// `hako delete --force` (itself killed halfway for `Victim::Delete`, then run again), and the
/// leak checker. Returns what was found left.
fn soak_cycle(config: &str, rng: &mut Rng) -> Result<Cycle, Failed> {
    let victim = match rng.below(5) {
        0 => Victim::Vmm,
        1 => Victim::Monitor,
        2 => Victim::Client,
        3 => Victim::Delete,
        _ => Victim::Nobody,
    };
    let delay_ms = rng.below(12_000);
    let c = Case::new(config)?;
    let began = Instant::now();
    let (mut child, vmm, monitor) = create_until_vmm_runs(&c)?;
    std::thread::sleep(Duration::from_millis(delay_ms));
    match victim {
        Victim::Vmm => drop(kill9(vmm)),
        Victim::Monitor => drop(kill9(monitor)),
        Victim::Client => drop(kill9(child.id())),
        Victim::Delete | Victim::Nobody => {}
    }
    let created = child.wait().map_err(|e| e.to_string())?.success();
    let create_s = began.elapsed().as_secs_f64();
    if created {
        let _ = c.cmd(&["start", "c"]).output();
    }
    let deleting = Instant::now();
    if victim == Victim::Delete {
        let mut del = c
            .cmd(&["delete", "--force", "c"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        let _ = del.kill();
        let _ = del.wait();
    }
    c.delete_if_left()
        .map_err(|e| format!("{victim:?} after {delay_ms} ms: {e}"))?;
    let delete_s = deleting.elapsed().as_secs_f64();
    let settling = Instant::now();
    let left = Leaks::settle(&c.root(), Duration::from_secs(30));
    Ok(Cycle {
        victim,
        delay_ms,
        left,
        phases: format!(
            "create {create_s:.1} s, start+delete {delete_s:.1} s, settle {:.1} s",
            settling.elapsed().as_secs_f64()
        ),
    })
}

/// What one soak cycle did and found.
struct Cycle {
    victim: Victim,
    delay_ms: u64,
    left: Leaks,
    /// How long its steps took (where a slow soak spends its time).
    phases: String,
}

/// `HAKO_SOAK_CYCLES` (default 4) soak cycles with random kills, spread over
/// `HAKO_SOAK_WORKERS` (default 1) threads that run their cycles side by side (each on its own
/// state root, with its own generator); any leak fails the trial (after all cycles, so the
/// report counts them).
fn soak_random_kills() -> Result<(), Failed> {
    let cycles = env_number("HAKO_SOAK_CYCLES", 4);
    let workers = env_number("HAKO_SOAK_WORKERS", 1).clamp(1, 8);
    let (config, template) = templated_config()?;
    let seed = Rng::seed();
    let started = Instant::now();
    let results: Vec<Result<Vec<(u32, Cycle)>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (config, template) = (&config, &template);
                scope.spawn(move || {
                    // Worker w runs cycles w, w + workers, w + 2 * workers, ...
                    let mut rng =
                        Rng((seed ^ u64::from(w).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
                    let mut done = Vec::new();
                    for i in (w..cycles).step_by(workers as usize) {
                        let cycle = soak_cycle(config, &mut rng).map_err(|e| {
                            format!("cycle {i}: {}", e.message().unwrap_or("failed"))
                        })?;
                        eprintln!(
                            "cycle {i}: {:?} after {} ms: {} ({})",
                            cycle.victim,
                            cycle.delay_ms,
                            if cycle.left.is_empty() {
                                "nothing left"
                            } else {
                                "LEAK"
                            },
                            cycle.phases
                        );
                        done.push((i, cycle));
                        template_kept(template).map_err(|e| {
                            format!("cycle {i}: {}", e.message().unwrap_or("failed"))
                        })?;
                    }
                    Ok(done)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a soak worker panicked".into()))
            })
            .collect()
    });
    let mut kills = std::collections::BTreeMap::<Victim, u32>::new();
    let mut leaks = Vec::new();
    let mut errors = Vec::new();
    let mut ran = 0;
    for result in results {
        match result {
            Ok(done) => {
                for (i, cycle) in done {
                    ran += 1;
                    *kills.entry(cycle.victim).or_default() += 1;
                    if !cycle.left.is_empty() {
                        leaks.push(format!(
                            "cycle {i} ({:?} after {} ms): {:?}",
                            cycle.victim, cycle.delay_ms, cycle.left
                        ));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    eprintln!(
        "soak: {ran} of {cycles} cycles ({workers} side by side) in {:.0} s, kills {kills:?}, leaks {}",
        started.elapsed().as_secs_f64(),
        leaks.len()
    );
    errors.extend(leaks);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n").into())
    }
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::kvm()?;
    require::program("unshare")?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        require::trial("fault_missing_kernel", prerequisites, missing_kernel),
        require::trial("fault_no_kvm", prerequisites, no_kvm),
        require::trial("fault_silent_guest", prerequisites, silent_guest),
        require::trial("fault_full_disk", prerequisites, full_disk),
        require::trial(
            "fault_vmm_killed_while_booting",
            prerequisites,
            vmm_killed_while_booting,
        ),
        require::trial(
            "fault_monitor_killed_while_booting",
            prerequisites,
            monitor_killed_while_booting,
        ),
        require::trial(
            "fault_vmm_killed_while_resuming",
            prerequisites,
            vmm_killed_while_resuming,
        ),
        require::trial(
            "fault_share_rewritten_before_delete",
            prerequisites,
            share_rewritten_before_delete,
        ),
        require::trial(
            "fault_share_rewritten_before_a_failed_create",
            prerequisites,
            share_rewritten_before_a_failed_create,
        ),
        require::trial("fault_soak_random_kills", prerequisites, soak_random_kills),
    ];
    libtest_mimic::run(&args, trials).exit();
}
