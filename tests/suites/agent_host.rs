//! Tier 2 (root): hako-agent as a host process in a private mount namespace, driven over a
//! Unix socket by the generated ttrpc clients: health and version, guest details, sandbox
//! create (a tmpfs storage) and destroy, busybox containers (output, exit codes 3/0/143/137,
//! exec, stdin), bad requests answered with clear statuses, garbage on the socket survived,
//! and a clean exit with the socket, containers and cgroups gone. A second agent, in a network
//! namespace of its own, configures a veth by MAC (name, MTU, address), a default route and a
//! permanent neighbour through the network RPCs; one in the host's namespace refuses them. A
//! third, started with a deny list, refuses those RPCs by name and serves the rest. This host's cgroups are v1
//! (DESIGN.md); in the VM the same code runs on v2.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hako_agent_api::API_MAJOR;
use hako_agent_api::agent::{
    ContainerRequest, CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest,
    ExecProcessRequest, GetOOMEventRequest, GuestDetailsRequest, ProcessRequest,
    RemoveContainerRequest, SetGuestDateTimeRequest, SignalProcessRequest, Storage,
    TtyWinResizeRequest, UpdateContainerRequest, WriteStreamRequest,
};
use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_agent_api::health::CheckRequest;
use hako_agent_api::health::health_check_response::ServingStatus;
use hako_rootfs_builder::bundle;
use hako_tests::agent::{self, Clients};
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::Failed;

const RPC: Duration = Duration::from_secs(10);

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        clean_cgroups();
    }
}

fn start_agent() -> Result<Agent, Failed> {
    start_agent_in(false, &[])
}

/// The agent in a private mount namespace and, with `own_net`, a network namespace of its
/// own (where it may change interfaces and routes); `extra` arguments follow.
fn start_agent_in(own_net: bool, extra: &[&str]) -> Result<Agent, Failed> {
    let bin = fixtures::workspace_binary("hako-agent")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("agent.sock");
    // A private mount namespace: the agent's mounts never reach the host's.
    let mut unshare = vec!["--mount", "--propagation", "private"];
    if own_net {
        unshare.push("--net");
    }
    unshare.push("--");
    let child = Command::new("unshare")
        .args(&unshare)
        .arg(&bin)
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args(["--log", "info", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--shared-dir")
        .arg(dir.path().join("shared"))
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    Ok(Agent { child, dir })
}

fn code_of(e: &ttrpc::Error) -> Option<ttrpc::Code> {
    match e {
        ttrpc::Error::RpcStatus(s) => Some(s.code()),
        _ => None,
    }
}

fn mounted_in(pid: u32, path: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&path.display().to_string()))
}

async fn exercise(a: &mut Agent) -> Result<(), String> {
    let socket = a.dir.path().join("agent.sock");
    let Clients { health, agent } = agent::connect_unix(&socket, Duration::from_secs(30)).await?;
    let ctx = || agent::ctx(RPC);

    let r = health
        .check(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Check: {e}"))?;
    if r.status.enum_value() != Ok(ServingStatus::SERVING) {
        return Err(format!("Check answered {r:?}"));
    }
    let v = health
        .version(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Version: {e}"))?;
    if v.api_major != API_MAJOR || v.agent_version.is_empty() {
        return Err(format!("Version answered {v:?}"));
    }
    let d = agent
        .guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .map_err(|e| format!("GuestDetails: {e}"))?;
    if d.init || d.kernel_release.is_empty() || d.memory_bytes == 0 || d.cpus == 0 {
        return Err(format!("GuestDetails answered {d:?}"));
    }
    let e = agent
        .set_guest_date_time(ctx(), &SetGuestDateTimeRequest::new())
        .await
        .err()
        .ok_or("SetGuestDateTime changed a host's clock")?;
    if code_of(&e) != Some(ttrpc::Code::FAILED_PRECONDITION) {
        return Err(format!("SetGuestDateTime outside a VM: {e}"));
    }

    // Garbage on a second connection must not take the agent down.
    let mut raw = std::os::unix::net::UnixStream::connect(&socket).map_err(|e| e.to_string())?;
    raw.write_all(&[0xff; 64]).map_err(|e| e.to_string())?;
    drop(raw);

    let mnt = a.dir.path().join("mnt");
    let storage = |mount_point: String| {
        let mut s = Storage::new();
        s.driver = "tmpfs".into();
        s.source = "tmpfs".into();
        s.fstype = "tmpfs".into();
        s.options = vec!["size=1m".into()];
        s.mount_point = mount_point;
        s
    };
    let mut bad = CreateSandboxRequest::new();
    bad.sandbox_id = "sb".into();
    bad.storages
        .push(storage(format!("{}/../escape", mnt.display())));
    let e = agent
        .create_sandbox(ctx(), &bad)
        .await
        .err()
        .ok_or("a `..` mount point was accepted")?;
    if code_of(&e) != Some(ttrpc::Code::INVALID_ARGUMENT) || !e.to_string().contains("..") {
        return Err(format!("a `..` mount point: {e}"));
    }
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "sb".into();
    req.hostname = "pod".into();
    req.storages.push(storage(mnt.display().to_string()));
    agent
        .create_sandbox(ctx(), &req)
        .await
        .map_err(|e| format!("CreateSandbox: {e}"))?;
    let pid = a.child.id();
    if !mounted_in(pid, &mnt) {
        return Err("the tmpfs storage is not mounted in the agent's namespace".into());
    }
    if mounted_in(std::process::id(), &mnt) {
        return Err("the agent's mount leaked into the host's namespace".into());
    }
    let e = agent
        .create_sandbox(ctx(), &req)
        .await
        .err()
        .ok_or("a second CreateSandbox succeeded")?;
    if code_of(&e) != Some(ttrpc::Code::ALREADY_EXISTS) {
        return Err(format!("a second CreateSandbox: {e}"));
    }
    let mut c = ContainerRequest::new();
    c.container_id = "none".into();
    if agent.start_container(ctx(), &c).await.is_ok() {
        return Err("StartContainer of an unknown container succeeded".into());
    }
    health
        .check(ctx(), &CheckRequest::new())
        .await
        .map_err(|e| format!("Check after garbage: {e}"))?;

    containers(a, &agent).await?;

    let mut destroy = DestroySandboxRequest::new();
    destroy.power_off = true;
    agent
        .destroy_sandbox(ctx(), &destroy)
        .await
        .map_err(|e| format!("DestroySandbox: {e}"))?;
    Ok(())
}

async fn wait(agent: &AgentServiceClient, id: &str, exec_id: &str) -> Result<i32, String> {
    let mut r = ProcessRequest::new();
    r.container_id = id.into();
    r.exec_id = exec_id.into();
    Ok(agent
        .wait_process(agent::ctx(RPC), &r)
        .await
        .map_err(|e| format!("WaitProcess {id}: {e}"))?
        .status)
}

async fn create_and_start(
    a: &Agent,
    agent: &AgentServiceClient,
    id: &str,
    args: &[&str],
) -> Result<(), String> {
    create_and_start_spec(a, agent, id, args, |_| {}).await
}

async fn remove(agent: &AgentServiceClient, id: &str) -> Result<(), String> {
    let mut r = RemoveContainerRequest::new();
    r.container_id = id.into();
    agent
        .remove_container(agent::ctx(RPC), &r)
        .await
        .map_err(|e| format!("RemoveContainer {id}: {e}"))?;
    Ok(())
}

const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

async fn signal(
    agent: &AgentServiceClient,
    id: &str,
    exec_id: &str,
    sig: u32,
) -> Result<(), String> {
    let mut r = SignalProcessRequest::new();
    r.container_id = id.into();
    r.exec_id = exec_id.into();
    r.signal = sig;
    agent
        .signal_process(agent::ctx(RPC), &r)
        .await
        .map_err(|e| format!("SignalProcess {id}: {e}"))?;
    Ok(())
}

async fn containers(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    // Output on both streams and an exit code.
    create_and_start(
        a,
        agent,
        "c-out",
        &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
    )
    .await?;
    let out = agent::read_to_end(agent, "c-out", "", false).await?;
    let err = agent::read_to_end(agent, "c-out", "", true).await?;
    let status = wait(agent, "c-out", "").await?;
    if (out.as_str(), err.as_str(), status) != ("hello\n", "oops\n", 3) {
        return Err(format!(
            "c-out: stdout {out:?} stderr {err:?} status {status}"
        ));
    }
    if wait(agent, "c-out", "").await? != 3 {
        return Err("a second WaitProcess lost the status".into());
    }
    remove(agent, "c-out").await?;

    // A long-running container: exec into it, stdin, then SIGTERM (143).
    create_and_start(a, agent, "c-long", &["sleep", "1000"]).await?;
    let mut exec = ExecProcessRequest::new();
    exec.container_id = "c-long".into();
    exec.exec_id = "e1".into();
    exec.process_json = bundle::process_json(&["cat"]).into_bytes();
    agent
        .exec_process(agent::ctx(RPC), &exec)
        .await
        .map_err(|e| format!("ExecProcess: {e}"))?;
    let mut w = WriteStreamRequest::new();
    w.container_id = "c-long".into();
    w.exec_id = "e1".into();
    w.data = b"through stdin".to_vec();
    agent
        .write_stdin(agent::ctx(RPC), &w)
        .await
        .map_err(|e| format!("WriteStdin: {e}"))?;
    let mut close = ProcessRequest::new();
    close.container_id = "c-long".into();
    close.exec_id = "e1".into();
    agent
        .close_stdin(agent::ctx(RPC), &close)
        .await
        .map_err(|e| format!("CloseStdin: {e}"))?;
    let echoed = agent::read_to_end(agent, "c-long", "e1", false).await?;
    let st = wait(agent, "c-long", "e1").await?;
    if (echoed.as_str(), st) != ("through stdin", 0) {
        return Err(format!("exec cat: {echoed:?} status {st}"));
    }
    // SIGTERM kills an exec'd process (143); a container's init is PID 1 of its namespace and
    // ignores SIGTERM without a handler, as under runc, so it gets SIGKILL (137).
    exec.exec_id = "e2".into();
    exec.process_json = bundle::process_json(&["sleep", "1000"]).into_bytes();
    agent
        .exec_process(agent::ctx(RPC), &exec)
        .await
        .map_err(|e| format!("ExecProcess e2: {e}"))?;
    signal(agent, "c-long", "e2", SIGTERM).await?;
    let st = wait(agent, "c-long", "e2").await?;
    if st != 143 {
        return Err(format!("SIGTERM gave status {st}, expected 143"));
    }
    cgroup_ops(agent, "c-long").await?;
    signal(agent, "c-long", "", SIGKILL).await?;
    let st = wait(agent, "c-long", "").await?;
    if st != 137 {
        return Err(format!("SIGKILL gave status {st}, expected 137"));
    }
    remove(agent, "c-long").await?;

    // A terminal: resized before start, output through the pty, no separate stderr.
    terminal_container(a, agent).await?;

    // A per-container storage: mounted before the container, gone after it.
    storage_container(a, agent).await?;

    // The rest of the OCI process and Linux settings, applied by libcontainer.
    full_spec(a, agent).await?;

    // A pod: a member joins its sandbox container's UTS/IPC namespaces; host namespace
    // paths in its spec (here a CNI netns) are fitted to the guest.
    pod(a, agent).await?;

    // A memory limit the process exceeds: killed (137) and an OOM event for the container.
    oom_container(a, agent).await?;

    // A container still running when the sandbox is destroyed.
    create_and_start(a, agent, "c-left", &["sleep", "1000"]).await?;
    // A process without a terminal cannot be resized.
    let mut resize = TtyWinResizeRequest::new();
    resize.container_id = "c-left".into();
    resize.rows = 10;
    resize.columns = 10;
    let e = agent.tty_win_resize(agent::ctx(RPC), &resize).await.err();
    if e.as_ref().and_then(code_of) != Some(ttrpc::Code::FAILED_PRECONDITION) {
        return Err(format!("resizing a process without a terminal: {e:?}"));
    }

    // An oversize message (ttrpc's limit is 4 MiB) is refused and the agent lives on.
    let mut huge = CreateContainerRequest::new();
    huge.container_id = "c-huge".into();
    huge.oci_spec_json = vec![b' '; 5 << 20];
    if agent.create_container(agent::ctx(RPC), &huge).await.is_ok() {
        return Err("a 5 MiB request was accepted".into());
    }

    // Bad requests.
    let code = |r: Result<_, ttrpc::Error>| r.err().as_ref().and_then(code_of);
    let mut dup = CreateContainerRequest::new();
    dup.container_id = "c-left".into();
    dup.oci_spec_json = bundle::spec_json("rootfs", &["true"], "/x").into_bytes();
    if code(agent.create_container(agent::ctx(RPC), &dup).await)
        != Some(ttrpc::Code::ALREADY_EXISTS)
    {
        return Err("a duplicate container id was not refused".into());
    }
    let mut bad = CreateContainerRequest::new();
    bad.container_id = "c-bad".into();
    bad.oci_spec_json = b"{not json".to_vec();
    if code(agent.create_container(agent::ctx(RPC), &bad).await)
        != Some(ttrpc::Code::INVALID_ARGUMENT)
    {
        return Err("a malformed spec was not refused as invalid".into());
    }
    bad.oci_spec_json = bundle::spec_json("../../../etc", &["true"], "/x").into_bytes();
    if code(agent.create_container(agent::ctx(RPC), &bad).await)
        != Some(ttrpc::Code::INVALID_ARGUMENT)
    {
        return Err("a root path climbing out was not refused".into());
    }
    if code(
        agent
            .start_container(agent::ctx(RPC), &{
                let mut r = ContainerRequest::new();
                r.container_id = "nope".into();
                r
            })
            .await,
    ) != Some(ttrpc::Code::NOT_FOUND)
    {
        return Err("an unknown container was not NOT_FOUND".into());
    }
    Ok(())
}

/// Writes a busybox rootfs for container `id` in the share and returns its spec running `args`.
fn spec_for(a: &Agent, id: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    bundle::busybox_rootfs(&a.dir.path().join("shared").join(id).join("rootfs"))?;
    let cgroup = format!("/{}/{id}", test_cgroup());
    serde_json::from_str(&bundle::spec_json("rootfs", args, &cgroup)).map_err(|e| e.to_string())
}

async fn create(
    agent: &AgentServiceClient,
    id: &str,
    spec: &serde_json::Value,
    storages: Vec<Storage>,
) -> Result<(), String> {
    let mut req = CreateContainerRequest::new();
    req.container_id = id.into();
    req.oci_spec_json = spec.to_string().into_bytes();
    req.storages = storages;
    agent
        .create_container(agent::ctx(RPC), &req)
        .await
        .map_err(|e| format!("CreateContainer {id}: {e}"))?;
    Ok(())
}

async fn start(agent: &AgentServiceClient, id: &str) -> Result<(), String> {
    let mut req = ContainerRequest::new();
    req.container_id = id.into();
    agent
        .start_container(agent::ctx(RPC), &req)
        .await
        .map_err(|e| format!("StartContainer {id}: {e}"))?;
    Ok(())
}

/// Creates and starts a container from a spec the test edits first.
async fn create_and_start_spec(
    a: &Agent,
    agent: &AgentServiceClient,
    id: &str,
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<(), String> {
    let mut spec = spec_for(a, id, args)?;
    edit(&mut spec);
    create(agent, id, &spec, Vec::new()).await?;
    start(agent, id).await
}

/// A spec using user/groups, capabilities, rlimits, a read-only root, sysctl, seccomp, and
/// bind, sysfs and mqueue mounts; the container reports what it sees.
async fn full_spec(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    let host_dir = a.dir.path().join("bind-src");
    std::fs::create_dir_all(&host_dir).map_err(|e| e.to_string())?;
    std::fs::write(host_dir.join("hello"), "from the host\n").map_err(|e| e.to_string())?;
    let script = "id; grep CapEff /proc/self/status; ulimit -n; cat /proc/sys/kernel/msgmax; \
                  cat /data/hello; ls /sys/kernel >/dev/null && echo sysfs; \
                  grep -q ' /dev/mqueue mqueue' /proc/mounts && echo mqueue; \
                  touch /rootfile 2>/dev/null || echo read-only-root; \
                  mkdir /tmp/x 2>/dev/null || echo mkdir-denied";
    create_and_start_spec(a, agent, "c-full", &["sh", "-c", script], |spec| {
        spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]});
        spec["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]
        });
        spec["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 321}]);
        spec["root"]["readonly"] = true.into();
        spec["linux"]["sysctl"] = serde_json::json!({"kernel.msgmax": "4242"});
        spec["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            mounts.push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
            mounts.push(serde_json::json!({"destination": "/data", "type": "bind",
                "source": host_dir.display().to_string(), "options": ["rbind", "ro"]}));
            mounts.push(serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid", "noexec", "nodev"]}));
            mounts.push(serde_json::json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}));
        }
    })
    .await?;
    let out = agent::read_to_end(agent, "c-full", "", false).await?;
    let status = wait(agent, "c-full", "").await?;
    for want in [
        "uid=1000 gid=1000 groups=2000",
        "CapEff:\t0000000000000000",
        "\n321\n",
        "4242",
        "from the host",
        "sysfs",
        "mqueue",
        "read-only-root",
        "mkdir-denied",
    ] {
        if !out.contains(want) {
            return Err(format!(
                "the full-spec container's output lacks {want:?}: {out:?} (status {status})"
            ));
        }
    }
    remove(agent, "c-full").await
}

async fn pod(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    create_and_start_spec(a, agent, "pod-pause", &["sleep", "1000"], |spec| {
        spec["hostname"] = "podhost".into();
        spec["annotations"] = serde_json::json!({"io.kubernetes.cri.container-type": "sandbox"});
    })
    .await?;
    create_and_start_spec(a, agent, "pod-app", &["hostname"], |spec| {
        spec["hostname"] = "ignored".into();
        spec["annotations"] = serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod-pause"
        });
        spec["linux"]["namespaces"] = serde_json::json!([
            {"type": "pid"}, {"type": "mount"},
            {"type": "network", "path": "/var/run/netns/cni-host-only"},
            {"type": "ipc", "path": "/proc/1/ns/ipc"},
            {"type": "uts", "path": "/proc/1/ns/uts"}
        ]);
    })
    .await?;
    let out = agent::read_to_end(agent, "pod-app", "", false).await?;
    let status = wait(agent, "pod-app", "").await?;
    if out != "podhost\n" || status != 0 {
        return Err(format!("pod member: hostname {out:?}, status {status}"));
    }
    remove(agent, "pod-app").await?;
    remove(agent, "pod-pause").await
}

async fn storage_container(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    let id = "c-vol";
    let spec = spec_for(a, id, &["sh", "-c", "echo data > /vol/f && cat /vol/f"])?;
    let vol = a.dir.path().join("shared").join(id).join("rootfs/vol");
    let mut s = Storage::new();
    s.driver = "tmpfs".into();
    s.source = "tmpfs".into();
    s.mount_point = vol.display().to_string();
    create(agent, id, &spec, vec![s]).await?;
    if !mounted_in(a.child.id(), &vol) {
        return Err("the container's storage is not mounted".into());
    }
    start(agent, id).await?;
    let out = agent::read_to_end(agent, id, "", false).await?;
    let status = wait(agent, id, "").await?;
    if out != "data\n" || status != 0 {
        return Err(format!("storage container: {out:?} status {status}"));
    }
    remove(agent, id).await?;
    if mounted_in(a.child.id(), &vol) {
        return Err("the container's storage was left mounted".into());
    }
    Ok(())
}

async fn oom_container(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    let id = "c-oom";
    create_and_start_spec(
        a,
        agent,
        id,
        &[
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        ],
        |spec| spec["linux"]["resources"] = serde_json::json!({"memory": {"limit": 16 << 20}}),
    )
    .await?;
    let event = agent
        .get_oom_event(
            agent::ctx(Duration::from_secs(60)),
            &GetOOMEventRequest::new(),
        )
        .await
        .map_err(|e| format!("GetOOMEvent: {e}"))?;
    let status = wait(agent, id, "").await?;
    if event.container_id != id || status != 137 {
        return Err(format!(
            "OOM: event for {:?}, status {status}",
            event.container_id
        ));
    }
    remove(agent, id).await
}

async fn terminal_container(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    let id = "c-tty";
    let mut spec = spec_for(a, id, &["sh", "-c", "stty size; echo on-a-tty >&2"])?;
    spec["process"]["terminal"] = serde_json::Value::Bool(true);
    create(agent, id, &spec, Vec::new()).await?;
    let mut resize = TtyWinResizeRequest::new();
    resize.container_id = id.into();
    resize.rows = 30;
    resize.columns = 100;
    agent
        .tty_win_resize(agent::ctx(RPC), &resize)
        .await
        .map_err(|e| format!("TtyWinResize: {e}"))?;
    start(agent, id).await?;
    let out = agent::read_to_end(agent, id, "", false).await?;
    let err = agent::read_to_end(agent, id, "", true).await?;
    let status = wait(agent, id, "").await?;
    if !out.contains("30 100\r\n") || !out.contains("on-a-tty") || !err.is_empty() || status != 0 {
        return Err(format!(
            "terminal container: out {out:?} err {err:?} status {status}"
        ));
    }
    remove(agent, id).await?;
    terminal_exec_with_long_ids(a, agent).await
}

/// An exec with a terminal where the container's and the exec's ids are 64 characters, as
/// Docker's, podman's and CRI's are: the exec's console socket path in the bundle is longer
/// than a socket address holds.
async fn terminal_exec_with_long_ids(a: &Agent, agent: &AgentServiceClient) -> Result<(), String> {
    let id = "a".repeat(64);
    let exec_id = "b".repeat(64);
    create_and_start(a, agent, &id, &["sleep", "1000"]).await?;
    let mut process: serde_json::Value =
        serde_json::from_str(&bundle::process_json(&["sh", "-c", "echo exec-on-a-tty"]))
            .map_err(|e| e.to_string())?;
    process["terminal"] = serde_json::Value::Bool(true);
    let mut exec = ExecProcessRequest::new();
    exec.container_id = id.clone();
    exec.exec_id = exec_id.clone();
    exec.process_json = process.to_string().into_bytes();
    agent
        .exec_process(agent::ctx(RPC), &exec)
        .await
        .map_err(|e| format!("ExecProcess with a terminal and 64-character ids: {e}"))?;
    let out = agent::read_to_end(agent, &id, &exec_id, false).await?;
    let status = wait(agent, &id, &exec_id).await?;
    if !out.contains("exec-on-a-tty\r\n") || status != 0 {
        return Err(format!("terminal exec: out {out:?} status {status}"));
    }
    signal(agent, &id, "", SIGKILL).await?;
    wait(agent, &id, "").await?;
    remove(agent, &id).await
}

/// ListProcesses, StatsContainer, UpdateContainer, Pause/ResumeContainer on a running one.
async fn cgroup_ops(agent: &AgentServiceClient, id: &str) -> Result<(), String> {
    let mut c = ContainerRequest::new();
    c.container_id = id.into();
    let pids = agent
        .list_processes(agent::ctx(RPC), &c)
        .await
        .map_err(|e| format!("ListProcesses: {e}"))?
        .pids;
    if pids.is_empty() {
        return Err("ListProcesses found no process".into());
    }
    let mut u = UpdateContainerRequest::new();
    u.container_id = id.into();
    u.resources_json = br#"{"pids": {"limit": 50}}"#.to_vec();
    agent
        .update_container(agent::ctx(RPC), &u)
        .await
        .map_err(|e| format!("UpdateContainer: {e}"))?;
    let stats = agent
        .stats_container(agent::ctx(RPC), &c)
        .await
        .map_err(|e| format!("StatsContainer: {e}"))?;
    if stats.pids.current == 0 || stats.pids.limit != 50 || stats.memory.usage_bytes == 0 {
        return Err(format!("StatsContainer answered {stats:?}"));
    }
    u.resources_json = b"{nope".to_vec();
    let e = agent.update_container(agent::ctx(RPC), &u).await.err();
    if e.as_ref().and_then(code_of) != Some(ttrpc::Code::INVALID_ARGUMENT) {
        return Err(format!("malformed resources: {e:?}"));
    }
    agent
        .pause_container(agent::ctx(RPC), &c)
        .await
        .map_err(|e| format!("PauseContainer: {e}"))?;
    agent
        .resume_container(agent::ctx(RPC), &c)
        .await
        .map_err(|e| format!("ResumeContainer: {e}"))?;
    Ok(())
}

fn test_cgroup() -> String {
    format!("hako-test-{}", std::process::id())
}

/// Removes this run's parent cgroups (libcontainer removes only the containers' own) and
/// returns any container cgroup that was left in them.
fn clean_cgroups() -> Vec<String> {
    let mut left = Vec::new();
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return left;
    };
    for c in controllers.flatten() {
        let parent = c.path().join(test_cgroup());
        if let Ok(children) = std::fs::read_dir(&parent) {
            for child in children.flatten().filter(|e| e.path().is_dir()) {
                left.push(child.path().display().to_string());
                // Processes a failed run left in the test's own cgroups go with them.
                let procs = std::fs::read_to_string(child.path().join("cgroup.procs"));
                for pid in procs.unwrap_or_default().split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
                std::thread::sleep(Duration::from_millis(100));
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
    left
}

fn agent_serves_and_cleans_up() -> Result<(), Failed> {
    let mut a = start_agent()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(exercise(&mut a))?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = a.child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the agent did not exit after DestroySandbox".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!("the agent exited with {status}").into());
    }
    if a.dir.path().join("agent.sock").exists() {
        return Err("the agent left its socket behind".into());
    }
    let left = clean_cgroups();
    if !left.is_empty() {
        return Err(format!("cgroups left behind: {left:?}").into());
    }
    Ok(())
}

/// Runs `ip ARGS` in the agent's network namespace; returns its output.
fn ip_in(pid: u32, args: &[&str]) -> Result<String, String> {
    let o = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip"])
        .args(args)
        .output()
        .map_err(|e| format!("nsenter ip {args:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The network RPCs against a veth pair in the agent's own network namespace: the interface
/// found by MAC, renamed, given MTU and address; a default route via a gateway; a permanent
/// neighbour; the listings; bad requests; and an agent in the host's namespace refusing.
async fn network(a: &Agent, host_agent: &Agent) -> Result<(), String> {
    use hako_agent_api::agent::{
        ARPNeighbor, AddARPNeighborsRequest, IPAddress, Interface, ListInterfacesRequest,
        ListRoutesRequest, Route, Routes, UpdateInterfaceRequest, UpdateRoutesRequest,
    };
    let pid = a.child.id();
    ip_in(
        pid,
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    )?;
    ip_in(pid, &["link", "set", "v0", "address", "02:00:00:00:88:02"])?;
    ip_in(pid, &["link", "set", "v1", "up"])?;
    let Clients { agent, .. } =
        agent::connect_unix(&a.dir.path().join("agent.sock"), Duration::from_secs(30)).await?;
    let ctx = || agent::ctx(RPC);

    let addr = |ip: &str, prefix| {
        let mut a = IPAddress::new();
        a.address = ip.into();
        a.prefix_len = prefix;
        a
    };
    let mut want = Interface::new();
    want.name = "eth0".into();
    want.hw_addr = "02:00:00:00:88:02".into();
    want.mtu = 1400;
    want.ip_addresses.push(addr("10.88.0.2", 24));
    let mut req = UpdateInterfaceRequest::new();
    req.interface = Some(want.clone()).into();
    let got = agent
        .update_interface(ctx(), &req)
        .await
        .map_err(|e| format!("UpdateInterface: {e}"))?;
    if got.name != "eth0"
        || got.mtu != 1400
        || !got
            .ip_addresses
            .iter()
            .any(|a| a.address == "10.88.0.2" && a.prefix_len == 24)
    {
        return Err(format!("UpdateInterface answered {got:?}"));
    }
    let shown = ip_in(pid, &["addr", "show", "eth0"])?;
    if !shown.contains("mtu 1400") || !shown.contains("10.88.0.2/24") {
        return Err(format!("ip addr show eth0: {shown}"));
    }

    let mut route = Route::new();
    route.dest = "default".into();
    route.gateway = "10.88.0.1".into();
    route.device = "eth0".into();
    let mut routes = Routes::new();
    routes.routes.push(route);
    let mut req = UpdateRoutesRequest::new();
    req.routes = Some(routes).into();
    let listed = agent
        .update_routes(ctx(), &req)
        .await
        .map_err(|e| format!("UpdateRoutes: {e}"))?;
    if !listed
        .routes
        .iter()
        .any(|r| r.dest == "default" && r.gateway == "10.88.0.1" && r.device == "eth0")
    {
        return Err(format!("UpdateRoutes answered {listed:?}"));
    }
    let shown = ip_in(pid, &["route"])?;
    if !shown.contains("default via 10.88.0.1 dev eth0") {
        return Err(format!("ip route: {shown}"));
    }

    let mut n = ARPNeighbor::new();
    n.to_ip = Some(addr("10.88.0.1", 32)).into();
    n.device = "eth0".into();
    n.ll_addr = "02:00:00:00:88:01".into();
    let mut req = AddARPNeighborsRequest::new();
    req.neighbors.push(n);
    agent
        .add_arp_neighbors(ctx(), &req)
        .await
        .map_err(|e| format!("AddARPNeighbors: {e}"))?;
    let shown = ip_in(pid, &["neigh", "show", "dev", "eth0"])?;
    if !shown.contains("10.88.0.1 lladdr 02:00:00:00:88:01 PERMANENT") {
        return Err(format!("ip neigh: {shown}"));
    }

    let all = agent
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .map_err(|e| format!("ListInterfaces: {e}"))?;
    if !all
        .interfaces
        .iter()
        .any(|i| i.name == "eth0" && i.hw_addr == "02:00:00:00:88:02")
    {
        return Err(format!("ListInterfaces answered {all:?}"));
    }
    agent
        .list_routes(ctx(), &ListRoutesRequest::new())
        .await
        .map_err(|e| format!("ListRoutes: {e}"))?;

    // Bad requests: an unknown MAC, a bad address.
    let mut missing = want.clone();
    missing.hw_addr = "02:00:00:00:88:99".into();
    let mut req = UpdateInterfaceRequest::new();
    req.interface = Some(missing).into();
    let e = agent.update_interface(ctx(), &req).await.err();
    if e.as_ref().and_then(code_of) != Some(ttrpc::Code::NOT_FOUND) {
        return Err(format!("an unknown MAC answered {e:?}"));
    }
    let mut bad = want.clone();
    bad.ip_addresses = vec![addr("10.88.0.300", 24)];
    let mut req = UpdateInterfaceRequest::new();
    req.interface = Some(bad).into();
    let e = agent.update_interface(ctx(), &req).await.err();
    if e.as_ref().and_then(code_of) != Some(ttrpc::Code::INVALID_ARGUMENT) {
        return Err(format!("a bad address answered {e:?}"));
    }

    // An agent in the host's network namespace leaves it alone.
    let Clients { agent: host, .. } = agent::connect_unix(
        &host_agent.dir.path().join("agent.sock"),
        Duration::from_secs(30),
    )
    .await?;
    let e = host
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .err();
    if e.as_ref().and_then(code_of) != Some(ttrpc::Code::FAILED_PRECONDITION) {
        return Err(format!("a host-namespace agent answered {e:?}"));
    }
    Ok(())
}

fn agent_configures_its_network() -> Result<(), Failed> {
    let a = start_agent_in(true, &[])?;
    let host = start_agent_in(false, &[])?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(network(&a, &host))?;
    Ok(())
}

/// An agent started with a deny list (what `agent.deny=` gives a guest's agent) refuses those
/// RPCs with PERMISSION_DENIED naming them, and serves the rest: a container runs, is
/// signalled, waited for and removed, and the sandbox is destroyed.
async fn policy(a: &Agent) -> Result<(), String> {
    let socket = a.dir.path().join("agent.sock");
    let Clients { agent, .. } = agent::connect_unix(&socket, Duration::from_secs(30)).await?;
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "sb".into();
    agent
        .create_sandbox(agent::ctx(RPC), &req)
        .await
        .map_err(|e| format!("CreateSandbox: {e}"))?;
    create_and_start(a, &agent, "c-pol", &["sleep", "1000"]).await?;
    let mut exec = ExecProcessRequest::new();
    exec.container_id = "c-pol".into();
    exec.exec_id = "e1".into();
    exec.process_json = bundle::process_json(&["true"]).into_bytes();
    let denied = |what: &str, e: Option<ttrpc::Error>| match e {
        Some(e)
            if code_of(&e) == Some(ttrpc::Code::PERMISSION_DENIED)
                && e.to_string().contains(what)
                && e.to_string().contains("policy") =>
        {
            Ok(())
        }
        other => Err(format!("{what} under a deny list answered {other:?}")),
    };
    denied(
        "ExecProcess",
        agent.exec_process(agent::ctx(RPC), &exec).await.err(),
    )?;
    let mut c = ContainerRequest::new();
    c.container_id = "c-pol".into();
    denied(
        "StatsContainer",
        agent.stats_container(agent::ctx(RPC), &c).await.err(),
    )?;
    // Not denied: answered (an unknown container's ListProcesses is NOT_FOUND, not denied).
    agent
        .guest_details(agent::ctx(RPC), &GuestDetailsRequest::new())
        .await
        .map_err(|e| format!("GuestDetails (allowed): {e}"))?;
    signal(&agent, "c-pol", "", SIGKILL).await?;
    let st = wait(&agent, "c-pol", "").await?;
    if st != 137 {
        return Err(format!("SIGKILL gave status {st}, expected 137"));
    }
    remove(&agent, "c-pol").await?;
    let mut destroy = DestroySandboxRequest::new();
    destroy.power_off = true;
    agent
        .destroy_sandbox(agent::ctx(RPC), &destroy)
        .await
        .map_err(|e| format!("DestroySandbox: {e}"))?;
    Ok(())
}

fn agent_enforces_its_policy() -> Result<(), Failed> {
    let a = start_agent_in(false, &["--deny", "ExecProcess,StatsContainer"])?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(policy(&a))?;
    let left = clean_cgroups();
    if !left.is_empty() {
        return Err(format!("cgroups left behind: {left:?}").into());
    }
    Ok(())
}

fn net_prerequisites() -> Result<(), Skip> {
    prerequisites()?;
    require::program("nsenter")?;
    require::program("ip")
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::program("unshare")
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        require::trial(
            "agent_host_serves_health_sandbox_and_cleans_up",
            prerequisites,
            agent_serves_and_cleans_up,
        ),
        require::trial(
            "agent_host_enforces_its_rpc_policy",
            prerequisites,
            agent_enforces_its_policy,
        ),
        require::trial(
            "agent_host_configures_its_network",
            net_prerequisites,
            agent_configures_its_network,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
