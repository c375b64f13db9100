//! hako-vmm's seccomp filters in real processes (tier 1: no KVM, no root). This binary runs
//! itself as a child per case with `HAKO_SECCOMP_CASE` set; the child installs the VMM's
//! filters exactly as hako-vmm does before its guest runs, then tries the case:
//! - what the VMM does keeps working: threads (clone3 falls back to clone), Unix sockets;
//! - a forbidden call (an AF_INET socket, fork, execve) stops the process with
//!   `EXIT_SECCOMP_VIOLATION`, and stderr names the call; posix_spawn (which blocks signals
//!   around its clone) is stopped by SIGSYS itself.

use std::process::Command;

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
    for (case, name) in [
        ("inet", "socket (not AF_UNIX)"),
        ("fork", "clone (of a process)"),
        ("exec", "execve"),
    ] {
        let o = run(case);
        let err = String::from_utf8_lossy(&o.stderr);
        println!("{case}: {:?} {err:?}", o.status);
        let named = err.contains(&format!("forbidden system call: {name}"));
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
    println!("seccomp: 5 cases ok");
}
