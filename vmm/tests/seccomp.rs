//! hako-vmm's seccomp filters in real processes (tier 1: no KVM, no root). This binary runs
//! itself as a child per case with `HAKO_SECCOMP_CASE` set; the child installs the VMM's
//! filters exactly as hako-vmm does before its guest runs, then tries the case:
//! - what the VMM does keeps working: threads (clone3 falls back to clone), Unix sockets;
//! - a forbidden call (an AF_INET socket, fork, execve) stops the process with
//!   `EXIT_SECCOMP_VIOLATION`, and stderr names the call; posix_spawn (which blocks signals
//!   around its clone) is stopped by SIGSYS itself;
//! - per-thread allow lists: a vCPU thread opening a file, making an ioctl that is not
//!   KVM's (named with its request) or signalling another process (its own it may), a virtio-fs worker making a Unix
//!   socket, a vsock worker opening a file or making an ioctl but FIONBIO (which it may) are
//!   stopped with the thread's kind named, while a virtio-fs worker started (through the
//!   spawner) at a vCPU thread's request does its file work: the worker gets its own list,
//!   not the narrower one of the vCPU that asked for it.

use std::process::Command;

use hako_vmm::seccomp::{Profile, confine};
use hako_vmm::threads;
use hako_vmm_api::control::EXIT_SECCOMP_VIOLATION;

const CASE: &str = "HAKO_SECCOMP_CASE";

fn child(case: &str) -> ! {
    if let Err(e) = hako_vmm::seccomp::install() {
        eprintln!("install: {e}");
        std::process::exit(90);
    }
    match case {
        "allowed" => {
            let t = std::thread::spawn(|| 7).join();
            let dir = tempfile::tempdir().expect("temp dir");
            let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s"));
            let pair = std::os::unix::net::UnixDatagram::pair();
            println!("thread {t:?} unix {} pair {}", unix.is_ok(), pair.is_ok());
        }
        "inet" => {
            let r = std::net::TcpListener::bind("127.0.0.1:0");
            println!("bound an AF_INET socket: {r:?}");
        }
        "fork" => {
            // SAFETY: fork in a process whose other threads hold no locks we use after it;
            // the child, if any, exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::process::exit(0);
            }
            println!("forked: {pid}");
        }
        "exec" => {
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: a NUL-terminated path and a NULL-terminated argv that outlive the call.
            let rc = unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
            println!("execv returned {rc}");
        }
        "spawn" => {
            let r = Command::new("/bin/true").status();
            println!("started a program: {r:?}");
        }
        "vcpu-open" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Vcpu);
                std::fs::File::open("/etc/hostname").is_ok()
            })
            .join();
            println!("a vCPU thread opened a file: {r:?}");
        }
        "fs-socket" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Fs);
                std::os::unix::net::UnixDatagram::unbound().is_ok()
            })
            .join();
            println!("a virtio-fs worker made a socket: {r:?}");
        }
        "vsock-open" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Vsock);
                std::fs::File::open("/etc/hostname").is_ok()
            })
            .join();
            println!("a vsock worker opened a file: {r:?}");
        }
        "vsock-ioctl" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Vsock);
                let a = std::os::unix::net::UnixDatagram::unbound().expect("socket");
                // FIONBIO is the one ioctl the vsock worker may make.
                eprintln!("nonblocking: {}", a.set_nonblocking(true).is_ok());
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one c_int through the pointer.
                unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&a), libc::FIONREAD, &mut n) }
            })
            .join();
            println!("a vsock worker made a FIONREAD ioctl: {r:?}");
        }
        "vcpu-ioctl" => {
            let a = std::os::unix::net::UnixDatagram::unbound().expect("socket");
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                let mut n: libc::c_int = 0;
                let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
                // SAFETY: FIONREAD writes one c_int through the pointer.
                unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }
            })
            .join();
            println!("a vCPU thread made a FIONREAD ioctl: {r:?}");
        }
        "vcpu-kill-other" => {
            // SAFETY: getppid has no arguments.
            let parent = unsafe { libc::getppid() };
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                // Signal 0: nothing is sent even where it is allowed.
                // SAFETY: integer arguments.
                unsafe { libc::syscall(libc::SYS_tgkill, parent, parent, 0) }
            })
            .join();
            println!("a vCPU thread signalled another process: {r:?}");
        }
        "vcpu-kill-own" => {
            // SAFETY: getpid and gettid have no arguments.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                // SAFETY: integer arguments; signal 0 sends nothing.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) }
            })
            .join();
            println!("own tgkill: {r:?}");
        }
        "worker-from-vcpu" => {
            threads::start_spawner().expect("spawner");
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("f");
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                let worker = threads::spawn("fs-worker", Profile::Fs, move || {
                    std::fs::write(&path, b"hello")?;
                    let back = std::fs::read(&path)?;
                    Ok::<_, std::io::Error>(back)
                })
                .expect("spawning a worker from a vCPU");
                worker.join().expect("worker").expect("file work")
            })
            .join()
            .expect("vcpu thread");
            println!("worker file work: {}", String::from_utf8_lossy(&r));
        }
        other => println!("unknown case {other}"),
    }
    std::process::exit(0)
}

fn run(case: &str) -> std::process::Output {
    let me = std::env::current_exe().expect("current exe");
    Command::new(me)
        .env(CASE, case)
        .output()
        .expect("running the child")
}

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        child(&case);
    }
    let mut failed = Vec::new();
    let o = run("allowed");
    let out = String::from_utf8_lossy(&o.stdout);
    println!("allowed: {:?} {out:?}", o.status);
    if o.status.code() != Some(0) || !out.contains("thread Ok(7) unix true pair true") {
        failed.push(format!(
            "allowed calls: {:?} {out:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let o = run("vcpu-kill-own");
    let out = String::from_utf8_lossy(&o.stdout);
    println!("vcpu-kill-own: {:?} {out:?}", o.status);
    if o.status.code() != Some(0) || !out.contains("own tgkill: Ok(0)") {
        failed.push(format!(
            "vcpu-kill-own: {:?} {out:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let o = run("worker-from-vcpu");
    let out = String::from_utf8_lossy(&o.stdout);
    println!("worker-from-vcpu: {:?} {out:?}", o.status);
    if o.status.code() != Some(0) || !out.contains("worker file work: hello") {
        failed.push(format!(
            "worker-from-vcpu: {:?} {out:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    for (case, name) in [
        ("inet", "main thread made a forbidden system call: socket"),
        ("fork", "main thread made a forbidden system call: clone"),
        ("exec", "forbidden system call: execve"),
        (
            "vcpu-open",
            "the vcpu thread made a forbidden system call: openat",
        ),
        (
            "vcpu-ioctl",
            "the vcpu thread made a forbidden system call: ioctl (16) request 0x0000541b",
        ),
        (
            "vcpu-kill-other",
            "the vcpu thread made a forbidden system call: tgkill (234)",
        ),
        (
            "fs-socket",
            "the virtio-fs worker thread made a forbidden system call: socket",
        ),
        (
            "vsock-open",
            "the virtio-vsock worker thread made a forbidden system call: openat",
        ),
        (
            "vsock-ioctl",
            "nonblocking: true\nhako-vmm: seccomp: the virtio-vsock worker thread made a forbidden system call: ioctl",
        ),
    ] {
        let o = run(case);
        let err = String::from_utf8_lossy(&o.stderr);
        println!("{case}: {:?} {err:?}", o.status);
        let named = err.contains(name);
        if o.status.code() != Some(i32::from(EXIT_SECCOMP_VIOLATION))
            || !named
            || !o.stdout.is_empty()
        {
            failed.push(format!(
                "{case}: {:?}, stdout {:?}, stderr {err:?}",
                o.status,
                String::from_utf8_lossy(&o.stdout)
            ));
        }
    }
    // posix_spawn blocks every signal around its clone, so the kernel's SIGSYS cannot reach
    // the handler and kills the process by the signal instead: stopped, without the message.
    let o = run("spawn");
    println!("spawn: {:?}", o.status);
    let by_sigsys = std::os::unix::process::ExitStatusExt::signal(&o.status) == Some(libc::SIGSYS);
    if !(by_sigsys || o.status.code() == Some(i32::from(EXIT_SECCOMP_VIOLATION)))
        || !o.stdout.is_empty()
    {
        failed.push(format!(
            "spawn: {:?}, stdout {:?}",
            o.status,
            String::from_utf8_lossy(&o.stdout)
        ));
    }
    if !failed.is_empty() {
        eprintln!("FAILED:\n{}", failed.join("\n"));
        std::process::exit(1);
    }
    println!("seccomp: 13 cases ok");
}
