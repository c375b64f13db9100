//! hako-vmm's jail and process set-up in real processes (root; the last case also /dev/kvm).
//! This binary runs itself as a child per case with `HAKO_JAIL_CASE` set; the child enters
//! the jail exactly as hako-vmm does (for a config with a 0600 root-owned "kernel", a share
//! and a sandbox directory) and reports what it can do there:
//! - as a user namespace's root: its host uid is the configured one, it reads the root-only
//!   kernel and writes the share through the id-mapped binds (its /proc shows ids 0 mapped
//!   to the configured range), what it writes as its uid 0 or
//!   (switched like the passthrough file system) as uid 1000 lands on the host as uid 0 and
//!   1000, it cannot mount, and its capabilities are the passthrough's seven;
//! - where a bind cannot be id-mapped (a procfs file here), it stays root when the config
//!   allows the fallback, and otherwise fails naming the bind;
//! - either way its /proc shows its own process and no host process (pid 1 here), and it is
//!   in network and IPC namespaces of its own: it cannot reach an abstract Unix socket the
//!   test bound on the host (a host daemon that trusts uid-0 peers, for a VMM that stays root);
//! - the real hako-vmm binary (it opens KVM and makes a VM, but runs no vCPU), stopped while
//!   it opens its console (a FIFO nobody reads) after its set-up: its open-file limit is
//!   bounded (soft = hard), its log (stderr, a file) stays under its cap, and it is not
//!   dumpable, so a process of the same uid and capabilities but without CAP_SYS_PTRACE can
//!   neither open its /proc/<pid>/mem nor read its /proc/<pid>/cwd.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hako_vmm::jail::{self, JailedAs};
use hako_vmm_api::{ConsoleConfig, FsConfig, JailConfig, JailUser, KernelConfig, VmConfig};
use libtest_mimic::{Arguments, Failed, Trial};

const CASE: &str = "HAKO_JAIL_CASE";
const DIR: &str = "HAKO_JAIL_DIR";
/// Host ids of the test's user namespace (the runtime's ranges start at 0x7000_0000).
const ABSTRACT: &str = "HAKO_JAIL_ABSTRACT";
const UID: u32 = 0x6fff_0000;

/// Connects to the abstract Unix socket `name`: "ok" or the error.
fn abstract_connect(name: &[u8]) -> String {
    use std::os::linux::net::SocketAddrExt;
    match std::os::unix::net::SocketAddr::from_abstract_name(name) {
        Ok(addr) => outcome(std::os::unix::net::UnixStream::connect_addr(&addr)),
        Err(e) => format!("bad name: {e}"),
    }
}
const GID: u32 = 0x6fff_0000;

fn config(dir: &Path, kernel: &Path, fallback_to_root: bool) -> VmConfig {
    VmConfig {
        machine: Default::default(),
        kernel: KernelConfig {
            path: kernel.to_owned(),
            initrd: None,
            cmdline: String::new(),
            boot_protocol: Default::default(),
        },
        console: ConsoleConfig::File(dir.join("sb/console.log")),
        control_socket: None,
        devices: hako_vmm_api::DevicesConfig {
            fs: vec![FsConfig {
                tag: "share".into(),
                shared_dir: dir.join("share"),
                read_only: false,
            }],
            ..Default::default()
        },
        security: hako_vmm_api::SecurityConfig {
            seccomp: false,
            jail: Some(JailConfig {
                root: dir.join("jail"),
                user: Some(JailUser {
                    uid: UID,
                    gid: GID,
                    count: JailUser::DEFAULT_COUNT,
                    fallback_to_root,
                }),
            }),
        },
    }
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Switches this thread's effective ids the way fuse-backend-rs's passthrough does.
fn set_effective(uid: u32, gid: u32) -> bool {
    // SAFETY: integer arguments; -1 leaves the real and saved ids alone.
    unsafe {
        libc::syscall(libc::SYS_setresgid, -1, gid, -1) == 0
            && libc::syscall(libc::SYS_setresuid, -1, uid, -1) == 0
    }
}

fn child(case: &str) -> ! {
    let dir = std::path::PathBuf::from(std::env::var(DIR).expect("HAKO_JAIL_DIR"));
    let (kernel, fallback) = match case {
        "user" => (dir.join("kernel"), false),
        "fallback" => (Path::new("/proc/version").to_owned(), true),
        _ => (Path::new("/proc/version").to_owned(), false),
    };
    let config = config(&dir, &kernel, fallback);
    let jail = config.security.jail.clone().expect("a jail");
    match jail::enter(&config, None, &jail) {
        Ok(as_) => println!("jailed={as_:?}"),
        Err(e) => {
            let mut msg = e.to_string();
            let mut s = std::error::Error::source(&e);
            while let Some(src) = s {
                msg.push_str(&format!(": {src}"));
                s = src.source();
            }
            println!("error={msg}");
            std::process::exit(0);
        }
    }
    // As this namespace sees them; its map says which host ids they are.
    println!("uid={}", status_field("Uid:"));
    println!("gid={}", status_field("Gid:"));
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    println!(
        "uid_map={}",
        map.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    println!("groups={}", status_field("Groups:"));
    println!("capeff={}", status_field("CapEff:"));
    println!("read_kernel={}", outcome(std::fs::read(&kernel)));
    println!(
        "write_share={}",
        outcome(std::fs::write(dir.join("share/by-root"), b"0"))
    );
    println!(
        "write_sandbox_dir={}",
        outcome(std::fs::write(dir.join("sb/console.log"), b"log"))
    );
    println!(
        "read_secret_in_share={}",
        outcome(std::fs::read(dir.join("share/secret")))
    );
    let as_1000 = set_effective(1000, 1000)
        && std::fs::write(dir.join("share/open/by-1000"), b"1000").is_ok()
        && set_effective(0, 0);
    println!("write_as_1000={as_1000}");
    let tmpfs = c"tmpfs";
    let target =
        std::ffi::CString::new(dir.join("share").to_string_lossy().as_bytes()).expect("no NUL");
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let rc = unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    println!("mount={}", if rc == 0 { "ok" } else { "refused" });
    println!(
        "proc_self_fd={}",
        outcome(std::fs::read_link("/proc/self/fd/1"))
    );
    let shown = |p: &str| {
        if Path::new(p).exists() {
            "shown"
        } else {
            "hidden"
        }
    };
    // The host's abstract socket (bound by the test before this child started) and the
    // namespaces this process is in now.
    let name = std::env::var(ABSTRACT).unwrap_or_default();
    println!("abstract_socket={}", abstract_connect(name.as_bytes()));
    for ns in ["net", "ipc"] {
        let link = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap_or_default();
        println!("ns_{ns}={}", link.display());
    }
    println!("proc_self={}", shown("/proc/self/status"));
    println!("proc_pid1={}", shown("/proc/1"));
    std::process::exit(0)
}

/// A fresh layout (kernel 0600, share with a 0600 secret, sandbox dir, jail root) and the
/// child's report on it.
fn run(case: &str) -> Result<(tempfile::TempDir, String), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    for sub in ["share", "share/open", "sb", "jail"] {
        std::fs::create_dir(d.join(sub)).map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(d.join("share/open"), std::fs::Permissions::from_mode(0o777))
        .map_err(|e| e.to_string())?;
    std::fs::write(d.join("kernel"), b"not a kernel").map_err(|e| e.to_string())?;
    std::fs::write(d.join("share/secret"), b"s").map_err(|e| e.to_string())?;
    for f in ["kernel", "share/secret"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    // A host daemon's abstract socket: the jail must not reach it.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("hako-jail-test-{}-{case}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    let _listener =
        std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| e.to_string())?;
    if abstract_connect(name.as_bytes()) != "ok" {
        return Err("the test cannot reach its own abstract socket".into());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let o = Command::new(me)
        .env(CASE, case)
        .env(DIR, d)
        .env(ABSTRACT, &name)
        .output()
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    println!("{case}: {:?}\n{out}", o.status);
    if !o.status.success() {
        return Err(format!(
            "the child ended {:?}: {out} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok((dir, out))
}

fn expect_lines(out: &str, lines: &[String]) -> Result<(), Failed> {
    for l in lines {
        if !out.lines().any(|x| x == l) {
            return Err(format!("expected {l:?} in:\n{out}").into());
        }
    }
    Ok(())
}

/// The child reached no host abstract socket and was in network and IPC namespaces other
/// than the test's.
fn apart_from_the_host(out: &str) -> Result<(), Failed> {
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .ok_or_else(|| format!("no {key} in:\n{out}"))
    };
    let reached = line("abstract_socket=")?;
    if !reached.starts_with("error") {
        return Err(format!("the jail reached the host's abstract socket: {reached}").into());
    }
    for ns in ["net", "ipc"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).map_err(|e| e.to_string())?;
        let jailed = line(&format!("ns_{ns}="))?;
        if jailed.is_empty() || Path::new(&jailed) == host {
            return Err(format!("the jail is in the host's {ns} namespace ({jailed:?})").into());
        }
    }
    Ok(())
}

fn owner(path: &Path) -> Result<(u32, u32), Failed> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((m.uid(), m.gid()))
}

fn as_a_user_namespace_root() -> Result<(), Failed> {
    let (dir, out) = run("user")?;
    expect_lines(
        &out,
        &[
            format!("jailed={:?}", JailedAs::User { uid: UID, gid: GID }),
            "uid=0 0 0 0".into(),
            "gid=0 0 0 0".into(),
            format!("uid_map=0 {UID} 65536"),
            "groups=".into(),
            // CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID.
            "capeff=00000000000000df".into(),
            "read_kernel=ok".into(),
            "write_share=ok".into(),
            "write_sandbox_dir=ok".into(),
            "read_secret_in_share=ok".into(),
            "write_as_1000=true".into(),
            "mount=refused".into(),
            "proc_self_fd=ok".into(),
            "proc_self=shown".into(),
            "proc_pid1=hidden".into(),
        ],
    )?;
    apart_from_the_host(&out)?;
    let d = dir.path();
    for (file, ids) in [
        ("share/by-root", (0, 0)),
        ("share/open/by-1000", (1000, 1000)),
        ("sb/console.log", (0, 0)),
    ] {
        let got = owner(&d.join(file))?;
        if got != ids {
            return Err(format!("{file} is owned by {got:?} on the host, not {ids:?}").into());
        }
    }
    if std::fs::read_dir(d.join("jail")).map_or(0, |r| r.count()) != 0 {
        return Err("the jail's root shows files on the host's side".into());
    }
    Ok(())
}

fn stays_root_where_allowed_when_a_bind_cannot_be_id_mapped() -> Result<(), Failed> {
    let (_dir, out) = run("fallback")?;
    expect_lines(
        &out,
        &[
            format!("jailed={:?}", JailedAs::Root),
            "uid=0 0 0 0".into(),
            "uid_map=0 0 4294967295".into(),
            "write_share=ok".into(),
            "mount=refused".into(),
            "proc_self=shown".into(),
            "proc_pid1=hidden".into(),
        ],
    )?;
    apart_from_the_host(&out)
}

fn fails_naming_the_bind_otherwise() -> Result<(), Failed> {
    let (_dir, out) = run("strict")?;
    let line = out
        .lines()
        .find(|l| l.starts_with("error="))
        .ok_or_else(|| format!("no error in:\n{out}"))?;
    if !(line.contains("binding /proc/version") && line.contains("id-mapped mounts")) {
        return Err(format!("the error does not name the bind: {line}").into());
    }
    Ok(())
}

/// The smallest ELF "kernel" the loader takes: a header with its entry at 1 MiB and no
/// segments (no vCPU ever runs it here).
fn empty_elf() -> Vec<u8> {
    let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
    e.resize(16, 0);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&0x10_0000u64.to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // program headers: right after
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 0, 0, 0, 0] {
        e.extend_from_slice(&half.to_le_bytes());
    }
    e
}

const CAP_SYS_PTRACE: libc::c_ulong = 19;

/// Drops CAP_SYS_PTRACE from the bounding set of the process about to exec, so the program
/// runs without it (the test's root keeps its other capabilities).
fn without_ptrace(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and makes one prctl call
    // with integer arguments (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// (soft, hard) of the "Max open files" line of a /proc/<pid>/limits.
fn open_files(limits: &str) -> Option<(String, String)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line["Max open files".len()..].split_whitespace();
    Some((f.next()?.to_owned(), f.next()?.to_owned()))
}

/// Kills and reaps the VMM however the check ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn the_vmm_process_is_not_dumpable_and_bounds_its_open_files() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    std::fs::write(d.join("vmlinux"), empty_elf()).map_err(|e| e.to_string())?;
    let fifo = std::ffi::CString::new(d.join("console.fifo").as_os_str().as_encoded_bytes())
        .map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) } != 0 {
        return Err(format!("mkfifo: {}", std::io::Error::last_os_error()).into());
    }
    let config = VmConfig {
        machine: Default::default(),
        kernel: KernelConfig {
            path: d.join("vmlinux"),
            initrd: None,
            cmdline: String::new(),
            boot_protocol: Default::default(),
        },
        console: ConsoleConfig::File(d.join("console.fifo")),
        control_socket: None,
        devices: Default::default(),
        security: Default::default(),
    };
    let json = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    std::fs::write(d.join("config.json"), json).map_err(|e| e.to_string())?;
    // Its log (stderr) starts just under its cap: the first lines take it past.
    let cap = hako_vmm::capped_log::VMM_LOG_CAP;
    let mut log = std::fs::File::create(d.join("vmm.log")).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut log, &vec![b'x'; cap as usize - 100])
        .map_err(|e| e.to_string())?;
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let hard = hard.rlim_max;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hako-vmm"));
    cmd.arg("--config")
        .arg(d.join("config.json"))
        .env("HAKO_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: in the forked child before exec: one setrlimit with a struct on its stack.
    unsafe {
        cmd.pre_exec(move || {
            // A soft limit below the hard one, as a shell gives; the VMM must bound both.
            let low = libc::rlimit {
                rlim_cur: 256,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let vmm = Reaped(
        without_ptrace(&mut cmd)
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let pid = vmm.0.id();
    let log = || std::fs::read_to_string(d.join("vmm.log")).unwrap_or_default();
    // Blocked in openat (257) on the FIFO: seen three times in a row.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < 3 {
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        seen = if call.starts_with("257 ") {
            seen + 1
        } else {
            0
        };
        if Instant::now() > deadline || !Path::new(&format!("/proc/{pid}/status")).exists() {
            return Err(format!("hako-vmm never reached its console:\n{}", log()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let bounded = hard.min(hako_vmm::process::MAX_OPEN_FILES).to_string();
    let got = open_files(&limits);
    println!("open files {got:?}, expected {bounded} for both");
    if got != Some((bounded.clone(), bounded)) {
        return Err(format!("hako-vmm's open-file limit: {limits}\n{}", log()).into());
    }
    let text = log();
    println!("vmm.log: {} bytes", text.len());
    if text.len() as u64 > cap
        || !text.contains("reached its cap")
        || !text.contains("open-file limit set")
    {
        return Err(format!("hako-vmm's log was not capped: {} bytes", text.len()).into());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let o = without_ptrace(
        Command::new(me)
            .env(CASE, "read-vmm")
            .env(DIR, pid.to_string()),
    )
    .output()
    .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    println!("a reader of the same uid without CAP_SYS_PTRACE: {out}");
    if !(out.starts_with("cwd=error") && out.contains(" mem=error")) {
        return Err(format!("hako-vmm is dumpable: {out}\n{}", log()).into());
    }
    drop(vmm);
    Ok(())
}

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        if case == "read-vmm" {
            let pid = std::env::var(DIR).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
            let mem = std::fs::File::open(format!("/proc/{pid}/mem"));
            println!("cwd={} mem={}", outcome(cwd), outcome(mem));
            std::process::exit(0);
        }
        child(&case);
    }
    let args = Arguments::from_args();
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let trial = |name: &str, f: fn() -> Result<(), Failed>| {
        if root {
            Trial::test(name, f)
        } else {
            eprintln!("SKIP {name}: needs root (mount and user namespaces)");
            Trial::test(name, || Err("skipped: needs root".into())).with_ignored_flag(true)
        }
    };
    let kvm = Path::new("/dev/kvm").exists();
    let vmm_trial = if root && kvm {
        Trial::test(
            "vmm_process_is_not_dumpable_and_bounds_its_open_files",
            the_vmm_process_is_not_dumpable_and_bounds_its_open_files,
        )
    } else {
        eprintln!(
            "SKIP vmm_process_is_not_dumpable_and_bounds_its_open_files: needs root and /dev/kvm"
        );
        Trial::test(
            "vmm_process_is_not_dumpable_and_bounds_its_open_files",
            || Err("skipped: needs root and /dev/kvm".into()),
        )
        .with_ignored_flag(true)
    };
    let trials = vec![
        vmm_trial,
        trial("jail_as_a_user_namespace_root", as_a_user_namespace_root),
        trial(
            "jail_stays_root_where_allowed_when_a_bind_cannot_be_id_mapped",
            stays_root_where_allowed_when_a_bind_cannot_be_id_mapped,
        ),
        trial(
            "jail_fails_naming_the_bind_otherwise",
            fails_naming_the_bind_otherwise,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
