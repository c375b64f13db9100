//! `hako-bench-agent [RUNS]`: container create + start + first output through hako-agent (as a
//! host process, over its Unix socket, in a private mount namespace) against `runc run` of the
//! same busybox bundle, side by side in one run; prints the medians and the ratio. Never
//! asserts. Needs root, runc, unshare and busybox-static.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hako_agent_api::agent::{ContainerRequest, CreateContainerRequest, RemoveContainerRequest};
use hako_rootfs_builder::bundle;
use hako_tests::{agent, repo_root};

const ARGS: &[&str] = &["echo", "first-output"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `runc run` of a fresh bundle: spawn → the first line of output.
fn runc_once(dir: &Path, n: usize) -> Result<f64> {
    let b = dir.join(format!("runc-{n}"));
    bundle::write_busybox_bundle(
        Path::new("/bin/busybox"),
        &b,
        ARGS,
        &format!("/hako-bench/runc-{n}"),
    )
    .map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(dir.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&b)
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

/// Through the agent: CreateContainer → StartContainer → the first output, then removal.
async fn agent_once(client: &agent::Clients, shared: &Path, n: usize) -> Result<f64> {
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
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id;
    client.agent.remove_container(agent::ctx(rpc), &rm).await?;
    Ok(t)
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let agent_bin = repo_root().join("target/release/hako-agent");
    if !agent_bin.is_file() {
        bail!("{} is missing: run scripts/setup.sh", agent_bin.display());
    }
    let dir = tempfile::tempdir()?;
    let shared = dir.path().join("shared");
    let socket = dir.path().join("agent.sock");
    let mut agent_proc = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&agent_bin)
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args(["--log", "warn", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--shared-dir")
        .arg(&shared)
        .spawn()
        .context("starting the agent")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let client = agent::connect_unix(&socket, Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        let (mut runc, mut hako) = (Vec::new(), Vec::new());
        for n in 0..runs {
            let r = runc_once(dir.path(), n)?;
            let h = agent_once(&client, &shared, n).await?;
            eprintln!("run {}: runc run {r:7.1} ms   hako-agent {h:7.1} ms", n + 1);
            runc.push(r);
            hako.push(h);
        }
        anyhow::Ok((median(runc), median(hako)))
    });
    let _ = agent_proc.kill();
    let _ = agent_proc.wait();
    // The containers' own cgroups are gone; their parent is this benchmark's to remove.
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.flatten() {
            let _ = std::fs::remove_dir(c.path().join("hako-bench"));
        }
    }
    let (runc, hako) = result?;
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
