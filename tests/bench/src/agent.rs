//! `hako-bench-agent [RUNS]`: container create + start + first output through hako-agent (as a
//! host process, over its Unix socket, in a private mount namespace) against `runc run` of the
//! same busybox bundle, side by side in one run; prints the medians and the ratio.
//!
//! `hako-bench-agent --syscalls [--strace-log DIR]`: the system calls of one busybox
//! container's whole lifecycle (create, start, first output, exit, remove), counted with
//! `strace -f -c`. For hako-agent, strace attaches to the running agent (following its
//! threads and children) around the lifecycle only, so the agent's start-up is not counted;
//! it is measured twice: seeing the guest's cgroups (v2 alone, mounted in the agent's private
//! mount namespace) and this host's (v1 here, as the agent's host tests run). For `runc run`,
//! the whole command (its start-up included: that is what runc costs per container). Prints
//! the totals and the top calls of each. With `--strace-log`, the full traces with stacks
//! (`-k`) are kept in DIR, for finding where calls come from. `HAKO_BENCH_AGENT` names
//! another agent binary (a baseline build).
//!
//! Never asserts. Needs root, runc, unshare and busybox-static (and strace for `--syscalls`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hako_agent_api::agent::{
    ContainerRequest, CreateContainerRequest, ProcessRequest, RemoveContainerRequest,
};
use hako_rootfs_builder::bundle;
use hako_tests::{agent, repo_root};

const ARGS: &[&str] = &["echo", "first-output"];
/// How many calls of each side the syscall report lists.
const TOP: usize = 12;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A fresh busybox bundle for `runc run` number `n`.
fn runc_bundle(dir: &Path, n: usize) -> Result<PathBuf> {
    let b = dir.join(format!("runc-{n}"));
    bundle::write_busybox_bundle(
        Path::new("/bin/busybox"),
        &b,
        ARGS,
        &format!("/hako-bench/runc-{n}"),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(b)
}

/// `runc run` of bundle `b` (under `prefix`, e.g. strace): spawn → the first line of output;
/// then waits for it to end.
fn runc_run(dir: &Path, b: &Path, n: usize, prefix: &[String]) -> Result<f64> {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("runc");
            c
        }
        None => Command::new("runc"),
    };
    let start = Instant::now();
    let mut child = cmd
        .arg("--root")
        .arg(dir.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(b)
        .arg(format!("bench-{n}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting runc")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("runc stdout")?).read_line(&mut line)?;
    let t = start.elapsed().as_secs_f64() * 1e3;
    let status = child.wait()?;
    if line.trim() != "first-output" || !status.success() {
        bail!("runc printed {line:?} and ended {status}");
    }
    Ok(t)
}

/// Through the agent: CreateContainer → StartContainer → the first output (timed), then
/// (`wait`) its exit status, and removal.
async fn agent_once(client: &agent::Clients, shared: &Path, n: usize, wait: bool) -> Result<f64> {
    let id = format!("bench-{n}");
    bundle::busybox_rootfs(&shared.join(&id).join("rootfs")).map_err(anyhow::Error::msg)?;
    let rpc = Duration::from_secs(60);
    let start = Instant::now();
    let mut create = CreateContainerRequest::new();
    create.container_id = id.clone();
    create.oci_spec_json =
        bundle::spec_json("rootfs", ARGS, &format!("/hako-bench/{id}")).into_bytes();
    client
        .agent
        .create_container(agent::ctx(rpc), &create)
        .await?;
    let mut c = ContainerRequest::new();
    c.container_id = id.clone();
    client.agent.start_container(agent::ctx(rpc), &c).await?;
    let mut r = hako_agent_api::agent::ReadStreamRequest::new();
    r.container_id = id.clone();
    r.len = 4096;
    let first = client.agent.read_stdout(agent::ctx(rpc), &r).await?;
    let t = start.elapsed().as_secs_f64() * 1e3;
    if !String::from_utf8_lossy(&first.data).starts_with("first-output") {
        bail!("the agent's container printed {:?}", first.data);
    }
    if wait {
        let mut w = ProcessRequest::new();
        w.container_id = id.clone();
        let status = client.agent.wait_process(agent::ctx(rpc), &w).await?.status;
        if status != 0 {
            bail!("the agent's container exited {status}");
        }
    }
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id;
    client.agent.remove_container(agent::ctx(rpc), &rm).await?;
    Ok(t)
}

/// One side's system calls: the total and each call's count, largest first.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    total: u64,
    calls: Vec<(String, u64)>,
}

/// The last `strace -c` summary table in `text` (`% time seconds usecs/call calls [errors]
/// syscall` rows, then a `total` row).
fn parse_summary(text: &str) -> Counts {
    let table = text
        .rfind("% time")
        .map_or("", |at| text.get(at..).unwrap_or(""));
    let mut counts = Counts::default();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].starts_with('-') {
            continue;
        }
        let (Ok(n), Some(name)) = (f[3].parse::<u64>(), f.last()) else {
            continue;
        };
        if *name == "total" {
            counts.total = n;
        } else {
            counts.calls.push(((*name).to_owned(), n));
        }
    }
    counts
        .calls
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// strace's options: count (`-c`), or (`log`) count and keep the trace with stacks (`-C -k`).
fn strace_args(out: &Path, log: bool) -> Vec<String> {
    let mode = if log {
        ["-C", "-k"].as_slice()
    } else {
        &["-c"]
    };
    let mut a = vec!["strace".to_owned(), "-f".to_owned()];
    a.extend(mode.iter().map(|s| (*s).to_owned()));
    a.extend(["-S".into(), "calls".into(), "-o".into()]);
    a.push(out.display().to_string());
    a
}

/// strace attached to a running process and its threads (and following its children).
struct Attached {
    strace: Child,
    out: PathBuf,
}

impl Attached {
    /// Attaches and returns once strace says it has (so nothing after is missed).
    fn to(pid: u32, out: &Path, log: bool) -> Result<Self> {
        let args = strace_args(out, log);
        let mut strace = Command::new(&args[0])
            .args(&args[1..])
            .arg("-p")
            .arg(pid.to_string())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting strace (apt-get install strace)")?;
        let mut err = BufReader::new(strace.stderr.take().context("strace stderr")?);
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                bail!("strace ended before attaching to {pid}");
            }
            if line.contains("attached") {
                break;
            }
        }
        // Keep draining its messages so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Ok(Self {
            strace,
            out: out.to_owned(),
        })
    }

    /// Detaches (SIGINT) and reads the summary.
    fn finish(mut self) -> Result<Counts> {
        let status = Command::new("kill")
            .args(["-INT", &self.strace.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("could not stop strace");
        }
        self.strace.wait()?;
        Ok(parse_summary(&std::fs::read_to_string(&self.out)?))
    }
}

/// Which cgroups the agent sees.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cgroups {
    /// The guest's: cgroup v2 alone at /sys/fs/cgroup (mounted in the agent's private mount
    /// namespace over the host's layout; the host's mounts are not touched).
    Guest,
    /// The host's, as the agent's host tests see them (v1 on this machine).
    Host,
}

/// A hako-agent as a host process in a private mount namespace (`unshare` execs it, so the
/// child's pid is the agent's), with its files in a directory of its own (as deep as the
/// guest's /run/hako: path lengths change the count, libcontainer resolves every component).
struct HostAgent {
    proc: Child,
    dir: tempfile::TempDir,
    /// The shared directory and the state directory, each one component below `/` as the
    /// guest's are (`SHARED_FS_MOUNT_POINT`, the agent's `STATE_DIR`): libcontainer resolves
    /// paths under them with realpath(3), one call per component.
    shared: tempfile::TempDir,
    _state: tempfile::TempDir,
}

impl HostAgent {
    fn start(cgroups: Cgroups) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let top = |what: &str| {
            tempfile::Builder::new()
                .prefix(&format!(".hako-bench-{what}-"))
                .tempdir_in("/")
        };
        let (shared, state) = (top("shared")?, top("state")?);
        let agent_bin = std::env::var_os("HAKO_BENCH_AGENT").map_or_else(
            || repo_root().join("target/release/hako-agent"),
            PathBuf::from,
        );
        if !agent_bin.is_file() {
            bail!("{} is missing: run scripts/setup.sh", agent_bin.display());
        }
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"]);
        if cgroups == Cgroups::Guest {
            cmd.args([
                "sh",
                "-c",
                "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"",
                "sh",
            ]);
        }
        let proc = cmd
            .arg(&agent_bin)
            .arg("--listen")
            .arg(format!(
                "unix://{}",
                dir.path().join("agent.sock").display()
            ))
            .args(["--log", "warn", "--state-dir"])
            .arg(state.path())
            .arg("--shared-dir")
            .arg(shared.path())
            .spawn()
            .context("starting the agent")?;
        Ok(Self {
            proc,
            dir,
            shared,
            _state: state,
        })
    }

    fn shared(&self) -> PathBuf {
        self.shared.path().to_owned()
    }

    async fn connect(&self) -> Result<agent::Clients> {
        agent::connect_unix(&self.dir.path().join("agent.sock"), Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// The system calls of one container lifecycle through a fresh agent seeing `cgroups`.
async fn agent_syscalls(dir: &Path, cgroups: Cgroups, log: Option<&Path>) -> Result<Counts> {
    let name = match cgroups {
        Cgroups::Guest => "hako-agent-guest-cgroups.strace",
        Cgroups::Host => "hako-agent-host-cgroups.strace",
    };
    let a = HostAgent::start(cgroups)?;
    let client = a.connect().await?;
    let out = log.unwrap_or(dir).join(name);
    let traced = Attached::to(a.proc.id(), &out, log.is_some())?;
    let lifecycle = agent_once(&client, &a.shared(), 0, true).await;
    let counts = traced.finish()?;
    lifecycle?;
    Ok(counts)
}

/// The same container through `runc run` (its start-up included).
fn runc_syscalls(dir: &Path, log: Option<&Path>) -> Result<Counts> {
    let out = log.unwrap_or(dir).join("runc.strace");
    let b = runc_bundle(dir, 0)?;
    runc_run(dir, &b, 0, &strace_args(&out, log.is_some()))?;
    Ok(parse_summary(&std::fs::read_to_string(out)?))
}

/// Whether this host's /sys/fs/cgroup is cgroup v2 (else v1 or hybrid).
fn host_is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn print_syscalls(columns: &[(String, Counts)]) {
    println!(
        "\nsystem calls of one busybox container's lifecycle (create, start, first output, exit, remove)\n"
    );
    let header: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    println!("| | {} |", header.join(" | "));
    println!("|---{}|", "|---".repeat(columns.len()));
    let totals: Vec<String> = columns.iter().map(|(_, c)| c.total.to_string()).collect();
    println!("| total | {} |", totals.join(" | "));
    for i in 0..TOP {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, c)| {
                c.calls
                    .get(i)
                    .map_or(String::new(), |(name, n)| format!("{name} {n}"))
            })
            .collect();
        println!("| {} | {} |", i + 1, cells.join(" | "));
    }
}

struct Options {
    runs: usize,
    syscalls: bool,
    strace_log: Option<PathBuf>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        runs: 5,
        syscalls: false,
        strace_log: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--syscalls" => o.syscalls = true,
            "--strace-log" => {
                o.strace_log = Some(args.next().context("--strace-log DIR")?.into());
            }
            n => {
                o.runs = n
                    .parse()
                    .with_context(|| format!("unknown argument {n:?}"))?
            }
        }
    }
    Ok(o)
}

/// The syscall report: the agent as in a guest (cgroup v2), the agent with this host's
/// cgroups (the host tests' setup), and runc.
async fn syscall_report(dir: &Path, log: Option<&Path>) -> Result<()> {
    if let Some(log) = log {
        std::fs::create_dir_all(log)?;
    }
    let guest = agent_syscalls(dir, Cgroups::Guest, log).await?;
    let mut columns = vec![("hako-agent, guest cgroups (v2)".to_owned(), guest)];
    if !host_is_v2() {
        let host = agent_syscalls(dir, Cgroups::Host, log).await?;
        columns.push(("hako-agent, this host's cgroups (v1)".to_owned(), host));
    }
    columns.push(("runc run (v1 here)".to_owned(), runc_syscalls(dir, log)?));
    print_syscalls(&columns);
    Ok(())
}

/// Create + start + first output through the agent and with `runc run`, `runs` times each;
/// the medians.
async fn timings(dir: &Path, runs: usize) -> Result<(f64, f64)> {
    let a = HostAgent::start(Cgroups::Host)?;
    let client = a.connect().await?;
    let (mut runc, mut hako) = (Vec::new(), Vec::new());
    for n in 0..runs {
        let b = runc_bundle(dir, n)?;
        let r = runc_run(dir, &b, n, &[])?;
        let h = agent_once(&client, &a.shared(), n, false).await?;
        eprintln!("run {}: runc run {r:7.1} ms   hako-agent {h:7.1} ms", n + 1);
        runc.push(r);
        hako.push(h);
    }
    Ok((median(runc), median(hako)))
}

fn main() -> Result<()> {
    let o = options()?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        if o.syscalls {
            syscall_report(dir.path(), o.strace_log.as_deref()).await?;
            return anyhow::Ok(None);
        }
        timings(dir.path(), o.runs).await.map(Some)
    });
    // The containers' own cgroups are gone; their parent is this benchmark's to remove.
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.flatten() {
            let _ = std::fs::remove_dir(c.path().join("hako-bench"));
        }
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/hako-bench");
    let Some((runc, hako)) = result? else {
        return Ok(());
    };
    let runs = o.runs;
    println!(
        "\ncontainer create + start + first output, {runs} runs each, medians (same busybox bundle, same host)\n"
    );
    println!("| | runc run | hako-agent (host process) | hako / runc |");
    println!("|---|---|---|---|");
    println!(
        "| create+start+first output | {runc:.1} ms | {hako:.1} ms | {:.2}x |",
        hako / runc
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_summaries_parse_with_and_without_errors() {
        let text = "123 execve(...) = 0\n\
% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n\
 40.00    0.000040           1        30         3 openat\n\
 30.00    0.000030           1        45           close\n\
 30.00    0.000030           1        30           read\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.000100           1       105         3 total\n";
        let c = parse_summary(text);
        assert_eq!(c.total, 105);
        assert_eq!(
            c.calls,
            [
                ("close".to_owned(), 45),
                ("openat".to_owned(), 30),
                ("read".to_owned(), 30)
            ]
        );
    }
}
