//! Tier 3 (KVM): hako-vmm boots the project's guest kernel with the probe image. Each boot
//! takes about a minute where guest kernel mode is emulated, so the suite boots few VMs and
//! checks several things in each; skip them locally with `--skip vm_`.
//!
//! - reboot: entered through the 64-bit Linux boot protocol (zero page); the probe's markers
//!   on the console, the control API answering while the guest runs (status, pause/resume,
//!   metrics), exit status 3 (guest reset) when the guest reboots, and the control socket gone
//!   afterwards.
//! - stop paths (no full boot): the control API's shutdown without grace, with a grace the
//!   guest lets run out, and SIGTERM each end hako-vmm with status 5 and remove its sockets.
//! - devices and poweroff: entered through PVH with no initrd, its root file system a
//!   virtio-fs share of the probe tree (`rootfstype=virtiofs`) where the guest reads, stats
//!   and lists the host's file and writes its own, checked on the host afterwards; the
//!   kernel banner (loglevel 6); a virtio-blk disk the guest reads
//!   the host's marker from and writes its own to, checked in the image file afterwards;
//!   hybrid vsock both ways (the guest greets a host listener at `<uds>_<port>`; the host
//!   connects with `CONNECT <port>` and has 600 KiB echoed, more than the credit window);
//!   exit status 0 when the guest powers off, and no socket left behind. This VMM runs in its
//!   jail (`security.jail`) as an unprivileged user (`security.jail.user`): while it runs,
//!   its root holds only `dev`, `proc` and the directories of what it was given (no `etc`,
//!   no `usr`), it is the configured host uid/gid in a user namespace mapping 65536 ids
//!   there, its capabilities are the passthrough file system's seven (effective and
//!   bounding; in that namespace only), and no_new_privs is set; the file the guest wrote as
//!   root is root's on the host.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hako_guest_probe::{
    BLK_ARG, BLK_GUEST_MARKER, BLK_HOST_MARKER, FS_ARG, FS_GUEST_CONTENT, FS_GUEST_FILE,
    FS_HOST_CONTENT, FS_HOST_FILE, VSOCK_ARG, VSOCK_GUEST_HELLO, VSOCK_HOST_HELLO,
};
use hako_rootfs_builder::images::{PROBE_DONE_MARKER, PROBE_INIT_MARKER, PROBE_POWEROFF_ARG};
use hako_tests::boot::{self, Boot};
use hako_tests::require::{self, Skip};
use hako_tests::{fixtures, hako_vmm};
use hako_vmm_api::{
    BlockConfig, BootProtocol, ControlReply, ExitReason, FsConfig, JailConfig, JailUser, VmState,
    VsockConfig,
};
use libtest_mimic::{Arguments, Failed};

struct Fixture {
    vmm: PathBuf,
    kernel: PathBuf,
    image: PathBuf,
    dir: tempfile::TempDir,
}

fn fixture() -> Result<Fixture, Failed> {
    Ok(Fixture {
        vmm: fixtures::workspace_binary("hako-vmm")?,
        kernel: fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?,
        image: fixtures::probe_image()?,
        dir: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
    })
}

fn print_console(boot: &Boot) {
    eprintln!(
        "--- console and VMM log ---\n{}--- end ({:.1}s) ---",
        boot.console(),
        boot.elapsed.as_secs_f64()
    );
}

fn expect(boot: &Boot, needle: &str) -> Result<(), Failed> {
    match boot.time_of(needle) {
        Some(_) => Ok(()),
        None => Err(format!("the console never showed {needle:?}").into()),
    }
}

fn expect_exit(boot: &Boot, reason: ExitReason) -> Result<(), Failed> {
    let want = i32::from(reason.exit_code());
    match boot.exit.and_then(|s| s.code()) {
        Some(code) if code == want => Ok(()),
        Some(code) => {
            Err(format!("hako-vmm exited with {code}, expected {want} ({reason:?})").into())
        }
        None => Err("hako-vmm did not exit by itself (killed at the deadline)".into()),
    }
}

fn expect_probe_ran(boot: &Boot) -> Result<(), Failed> {
    expect(boot, PROBE_INIT_MARKER)?;
    expect(boot, "HAKO-GUEST-PROBE: kernel: 6.1")?;
    expect(boot, "HAKO-GUEST-PROBE: spawn: child")?;
    // The conservative CPU profile reached the guest: none of the hidden features is visible.
    expect(boot, "of popcnt/xsave/smap/cx16/avx visible: []")?;
    // Its Intel family-6 signature reached the guest: the kernel copies pages with `rep`.
    expect(boot, "rep_good: true")?;
    expect(boot, "HAKO-GUEST-PROBE: clocksource:")?;
    expect(boot, "kvm-clock")?;
    expect(boot, "HAKO-GUEST-PROBE: ok")?;
    expect(boot, &format!("{PROBE_DONE_MARKER}0"))
}

/// One request on a fresh connection.
fn control(path: &Path, request: &str) -> Result<ControlReply, String> {
    hako_vmm::control_line(path, &format!("{{\"request\":\"{request}\"}}"))
}

/// Drives the control API while the guest boots; returns what went wrong, if anything.
fn exercise_control_api(path: &Path) -> Result<(), String> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("{} never appeared", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = |want: VmState| -> Result<(), String> {
        match control(path, "status")? {
            ControlReply::Status {
                state,
                vcpus: 2,
                memory_mib: 256,
                ..
            } if state == want => Ok(()),
            other => Err(format!(
                "status: expected {want:?} with 2 vCPUs/256 MiB, got {other:?}"
            )),
        }
    };
    state(VmState::Running)?;
    if control(path, "pause")? != ControlReply::Done {
        return Err("pause was not done".into());
    }
    state(VmState::Paused)?;
    if control(path, "resume")? != ControlReply::Done {
        return Err("resume was not done".into());
    }
    state(VmState::Running)?;
    match control(path, "metrics")? {
        ControlReply::Metrics(m) => {
            if !m.devices.contains_key("serial") || !m.vcpu_exits.contains_key("io_out") {
                return Err(format!(
                    "metrics lack the serial device or io_out exits: {m:?}"
                ));
            }
            if m.vcpu_exits.get("intr").copied().unwrap_or(0) == 0 {
                return Err(format!("pausing kicked no vCPU out of KVM_RUN: {m:?}"));
            }
        }
        other => return Err(format!("metrics: {other:?}")),
    }
    match control(path, "bogus")? {
        ControlReply::Error { .. } => Ok(()),
        other => Err(format!("an unknown request got {other:?}")),
    }
}

fn boot_reboots_and_serves_the_control_api() -> Result<(), Failed> {
    let f = fixture()?;
    let mut config = hako_vmm::probe_vm(f.dir.path(), &f.kernel, &f.image, "quiet");
    // This boot takes the 64-bit Linux boot protocol (zero page) and two vCPUs (MP table, the
    // second started by the guest's INIT/SIPI); the other takes PVH with one.
    config.kernel.boot_protocol = BootProtocol::Linux64;
    config.machine.vcpus = 2;
    let cmd = hako_vmm::command(&f.vmm, f.dir.path(), &config).map_err(|e| e.to_string())?;
    let socket = hako_vmm::control_socket(f.dir.path());
    let api = {
        let socket = socket.clone();
        std::thread::spawn(move || exercise_control_api(&socket))
    };
    let boot =
        boot::boot(cmd, boot::vm_deadline()).map_err(|e| format!("starting hako-vmm: {e}"))?;
    print_console(&boot);
    api.join()
        .map_err(|_| "the control API thread panicked")??;
    expect_probe_ran(&boot)?;
    expect(&boot, "entry=Linux64")?;
    expect(&boot, "HAKO-GUEST-PROBE: online cpus: 0-1")?;
    expect_exit(&boot, ExitReason::GuestReset)?;
    if socket.exists() {
        return Err("the control socket was left behind".into());
    }
    if let Some(t) = boot.time_of(PROBE_INIT_MARKER) {
        eprintln!("boot: /init after {:.1}s", t.as_secs_f64());
    }
    Ok(())
}

/// A 1 MiB raw disk with the host's marker at byte 0.
fn test_disk(dir: &Path) -> Result<PathBuf, Failed> {
    let path = dir.join("disk.raw");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..BLK_HOST_MARKER.len()].copy_from_slice(BLK_HOST_MARKER.as_bytes());
    std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

const ROOT_TAG: &str = "hako-root";
const GUEST_PORT: u32 = 1234;
const HOST_PORT: u32 = 52;
const ECHO_BYTES: usize = 600 * 1024;

/// The guest's greeting arrives at `<uds>_<HOST_PORT>`; answer it.
fn answer_guest(listener: UnixListener) -> Result<(), String> {
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line != VSOCK_GUEST_HELLO {
        return Err(format!("the guest said {line:?}"));
    }
    (&stream)
        .write_all(VSOCK_HOST_HELLO.as_bytes())
        .map_err(|e| format!("answer: {e}"))
}

/// Connects through the hybrid socket until the guest listens, then has a payload echoed.
fn echo_through_guest(uds: &Path, stop: &AtomicBool) -> Result<(), String> {
    let payload: Vec<u8> = (0..ECHO_BYTES).map(|i| (i % 251) as u8).collect();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err("the VM ended before the guest accepted a vsock connection".into());
        }
        let Ok(mut s) = UnixStream::connect(uds) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        s.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
            .map_err(|e| format!("CONNECT: {e}"))?;
        let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("reading OK: {e}"))?;
        if line.is_empty() {
            // The guest is not listening yet: the device reset the connection.
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        if !line.starts_with("OK ") {
            return Err(format!("the handshake answered {line:?}"));
        }
        let writer = {
            let mut s = s.try_clone().map_err(|e| e.to_string())?;
            let payload = payload.clone();
            std::thread::spawn(move || {
                s.write_all(&payload)?;
                s.shutdown(std::net::Shutdown::Write)
            })
        };
        let mut back = Vec::new();
        reader
            .read_to_end(&mut back)
            .map_err(|e| format!("reading the echo: {e}"))?;
        writer
            .join()
            .map_err(|_| "writer panicked")?
            .map_err(|e| format!("sending: {e}"))?;
        return if back == payload {
            Ok(())
        } else {
            Err(format!(
                "echo returned {} bytes, not the {} sent",
                back.len(),
                payload.len()
            ))
        };
    }
}

fn boot_with_devices_and_power_off() -> Result<(), Failed> {
    let f = fixture()?;
    let disk = test_disk(f.dir.path())?;
    let uds = f.dir.path().join("vsock.sock");
    let host_listener = UnixListener::bind(format!("{}_{HOST_PORT}", uds.display()))
        .map_err(|e| format!("binding the host port socket: {e}"))?;
    let root = f.dir.path().join("root");
    fixtures::probe_root_dir(&root)?;
    let shared = root.join("hako-fs");
    std::fs::create_dir(&shared).map_err(|e| format!("creating {}: {e}", shared.display()))?;
    std::fs::write(shared.join(FS_HOST_FILE), FS_HOST_CONTENT)
        .map_err(|e| format!("writing the host's file: {e}"))?;
    let cmdline = format!(
        "loglevel=6 {PROBE_POWEROFF_ARG} root={ROOT_TAG} rootfstype=virtiofs rw init=/init \
         {FS_ARG}=/hako-fs {BLK_ARG}=/dev/vda {VSOCK_ARG}={GUEST_PORT},{HOST_PORT}"
    );
    let mut config = hako_vmm::probe_vm(f.dir.path(), &f.kernel, &f.image, &cmdline);
    config.kernel.initrd = None;
    config.devices.fs.push(FsConfig {
        tag: ROOT_TAG.into(),
        shared_dir: root.clone(),
        read_only: false,
    });
    config.devices.block.push(BlockConfig {
        id: "test".into(),
        path: disk.clone(),
        read_only: false,
    });
    config.devices.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    // Outside the directories it binds in (a jail inside one would be bound into itself).
    let jail_root = tempfile::tempdir().map_err(|e| e.to_string())?;
    config.security.jail = Some(JailConfig {
        root: jail_root.path().to_owned(),
        user: Some(JailUser {
            uid: JAIL_ID,
            gid: JAIL_ID,
            count: JailUser::DEFAULT_COUNT,
            fallback_to_root: false,
        }),
    });
    let cmd = hako_vmm::command(&f.vmm, f.dir.path(), &config).map_err(|e| e.to_string())?;
    let jailed = {
        let marker = f.dir.path().display().to_string();
        std::thread::spawn(move || inspect_jail(&marker))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let answering = std::thread::spawn(move || answer_guest(host_listener));
    let echoing = {
        let (uds, stop) = (uds.clone(), stop.clone());
        std::thread::spawn(move || echo_through_guest(&uds, &stop))
    };
    let boot =
        boot::boot(cmd, boot::vm_deadline()).map_err(|e| format!("starting hako-vmm: {e}"))?;
    stop.store(true, Ordering::SeqCst);
    print_console(&boot);
    expect(&boot, "entry=Pvh")?;
    expect(&boot, "Linux version 6.1")?;
    expect(&boot, "HAKO-GUEST-PROBE: virtio: [2, 19, 26]")?;
    expect(
        &boot,
        &format!(
            "fs: root is virtiofs; read {} bytes, wrote, listed [\"{FS_GUEST_FILE}\", \"{FS_HOST_FILE}\"]",
            FS_HOST_CONTENT.len()
        ),
    )?;
    expect(
        &boot,
        "HAKO-GUEST-PROBE: blk: /dev/vda read the host's marker",
    )?;
    expect(
        &boot,
        &format!("vsock-connect: host port {HOST_PORT} answered"),
    )?;
    expect(
        &boot,
        &format!("vsock-echo: echoed {ECHO_BYTES} bytes to cid 2"),
    )?;
    expect_probe_ran(&boot)?;
    echoing.join().map_err(|_| "the echo thread panicked")??;
    if !answering.is_finished() {
        return Err("the guest never connected to the host listener".into());
    }
    answering
        .join()
        .map_err(|_| "the answering thread panicked")??;
    if uds.exists() {
        return Err("the vsock socket was left behind".into());
    }
    let written = std::fs::read_to_string(shared.join(FS_GUEST_FILE))
        .map_err(|e| format!("reading the guest's file on the host: {e}"))?;
    if written != FS_GUEST_CONTENT {
        return Err(format!("the guest's file holds {written:?}").into());
    }
    let owner = std::fs::metadata(shared.join(FS_GUEST_FILE))
        .map(|m| {
            (
                std::os::unix::fs::MetadataExt::uid(&m),
                std::os::unix::fs::MetadataExt::gid(&m),
            )
        })
        .map_err(|e| format!("the guest's file: {e}"))?;
    if owner != (0, 0) {
        return Err(format!(
            "the file the guest wrote as root is owned by {owner:?} on the host, not root's"
        )
        .into());
    }
    let image = std::fs::read(&disk).map_err(|e| format!("reading {}: {e}", disk.display()))?;
    if !image[512..].starts_with(BLK_GUEST_MARKER.as_bytes()) {
        return Err("the guest's write did not reach the disk image".into());
    }
    expect(&boot, "guest powered off")?;
    expect_exit(&boot, ExitReason::GuestPoweroff)?;
    let (status, root) = jailed
        .join()
        .map_err(|_| "the jail inspection panicked")??;
    check_jail(&status, &root)?;
    if std::fs::read_dir(jail_root.path()).map_or(0, |d| d.count()) != 0 {
        return Err("the jail's root shows files on the host's side".into());
    }
    Ok(())
}

/// Waits for the hako-vmm whose command line names `marker`; returns its /proc status and the
/// names at the top of its root.
fn inspect_jail(marker: &str) -> Result<(String, Vec<String>), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if !(cmdline.contains("hako-vmm") && cmdline.contains(marker)) {
                continue;
            }
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            // The jail is entered first thing: wait until it shows.
            if !status.contains("NoNewPrivs:\t1") {
                continue;
            }
            let mut root: Vec<String> = std::fs::read_dir(e.path().join("root"))
                .map_err(|err| format!("listing the VMM's root: {err}"))?
                .flatten()
                .filter_map(|d| d.file_name().into_string().ok())
                .collect();
            root.sort();
            return Ok((status, root));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("no jailed hako-vmm showed up within 60 s".into())
}

/// CAP_CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID.
const PASSTHROUGH_CAPS: &str = "00000000000000df";
/// The host uid and gid of the jailed VMM (outside the runtime's ranges, which start at
/// 0x70000000).
const JAIL_ID: u32 = 0x6ffe_0000;

fn check_jail(status: &str, root: &[String]) -> Result<(), String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    for name in ["CapEff:", "CapPrm:", "CapBnd:"] {
        if field(name) != PASSTHROUGH_CAPS {
            return Err(format!("the jailed VMM's {name} is {}", field(name)));
        }
    }
    let ids = format!("{JAIL_ID}\t{JAIL_ID}\t{JAIL_ID}\t{JAIL_ID}");
    if field("Uid:") != ids || field("Gid:") != ids {
        return Err(format!(
            "the jailed VMM runs as uid {:?} gid {:?}, not {JAIL_ID}",
            field("Uid:"),
            field("Gid:")
        ));
    }
    if !field("Groups:").is_empty() {
        return Err(format!(
            "the jailed VMM keeps supplementary groups {:?}",
            field("Groups:")
        ));
    }
    if field("CapInh:") != "0000000000000000" || field("CapAmb:") != "0000000000000000" {
        return Err("the jailed VMM has inheritable or ambient capabilities".into());
    }
    for must in ["dev", "proc"] {
        if !root.iter().any(|n| n == must) {
            return Err(format!("the jail's root lacks {must}: {root:?}"));
        }
    }
    for never in ["etc", "usr", "bin", "root", "home"] {
        if root.iter().any(|n| n == never) {
            return Err(format!(
                "the jail's root shows the host's {never}: {root:?}"
            ));
        }
    }
    eprintln!("jailed hako-vmm: root {root:?}, uid/gid {JAIL_ID}, capabilities {PASSTHROUGH_CAPS}");
    Ok(())
}

/// Starts hako-vmm (with a vsock device, to check that socket's cleanup too), waits for
/// its control socket, runs `stop`, and returns the exit code, the time from `stop` to exit,
/// and the VMM's log.
fn start_and_stop(
    f: &Fixture,
    name: &str,
    stop: impl FnOnce(&Path, u32) -> Result<(), String>,
) -> Result<(i32, Duration, String), Failed> {
    let dir = f.dir.path().join(name);
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let mut config = hako_vmm::probe_vm(&dir, &f.kernel, &f.image, "quiet");
    let uds = dir.join("vsock.sock");
    config.devices.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    let log = dir.join("vmm.log");
    let mut cmd = hako_vmm::command(&f.vmm, &dir, &config).map_err(|e| e.to_string())?;
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?);
    let mut child = cmd.spawn().map_err(|e| format!("spawning hako-vmm: {e}"))?;
    let socket = hako_vmm::control_socket(&dir);
    let begun = Instant::now();
    while !socket.exists() && begun.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let asked = Instant::now();
    let stopped = stop(&socket, child.id());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name}: hako-vmm did not stop within 30 s").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stopped.map_err(|e| format!("{name}: {e}"))?;
    let took = asked.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for path in [&socket, &uds] {
        if path.exists() {
            return Err(format!("{name}: {} was left behind", path.display()).into());
        }
    }
    Ok((status.code().unwrap_or(-1), took, text))
}

fn stop_paths_exit_5_and_clean_up() -> Result<(), Failed> {
    let f = fixture()?;
    let stopped = ExitReason::Stopped.exit_code() as i32;
    let shutdown = |grace: u64| {
        move |socket: &Path, _pid: u32| {
            let request = format!("{{\"request\":\"shutdown\",\"grace_ms\":{grace}}}");
            let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
            s.write_all(format!("{request}\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(s)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            match serde_json::from_str::<ControlReply>(&line) {
                Ok(ControlReply::Done) => Ok(()),
                other => Err(format!("shutdown answered {other:?}")),
            }
        }
    };
    let (code, took, _) = start_and_stop(&f, "forced", shutdown(0))?;
    if code != stopped || took > Duration::from_secs(5) {
        return Err(format!("shutdown without grace: status {code} after {took:?}").into());
    }
    // This guest has no keyboard driver: Ctrl-Alt-Del goes unanswered and the grace runs out.
    let (code, took, log) = start_and_stop(&f, "graceful", shutdown(1000))?;
    if code != stopped || took < Duration::from_millis(1000) {
        return Err(format!("shutdown with 1 s grace: status {code} after {took:?}").into());
    }
    if !log.contains("did not stop within the grace period") {
        return Err(format!("the log does not say the grace ran out:\n{log}").into());
    }
    let (code, _, _) = start_and_stop(&f, "sigterm", |_, pid| {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill: {status}"))
        }
    })?;
    if code != stopped {
        return Err(format!("SIGTERM: status {code}").into());
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::kvm()?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        require::trial(
            "vm_stop_paths_exit_5_and_clean_up",
            prerequisites,
            stop_paths_exit_5_and_clean_up,
        ),
        require::trial(
            "vm_boot_reboot_exits_3_and_serves_the_control_api",
            prerequisites,
            boot_reboots_and_serves_the_control_api,
        ),
        require::trial(
            "vm_boot_devices_work_and_poweroff_exits_0",
            prerequisites,
            boot_with_devices_and_power_off,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
