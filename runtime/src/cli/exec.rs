//! `hako exec`: runs another process in a running container, through its monitor. Attached,
//! it waits and exits with the process's status; `--detach` leaves a small host process
//! (named by `--pid-file`) that waits for it and exits with its status, as conmon expects.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use containerd_shim::protos::api::{DeleteRequest, ExecProcessRequest, StartRequest, WaitRequest};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use serde_json::Value;

use super::Global;
use super::client::{Container, OciStatus, long_ctx};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// A JSON file with the OCI process to run (instead of ARGS).
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Allocate a terminal (its master goes to --console-socket).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Return once the process started.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Extra environment (KEY=VALUE), repeatable.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    #[arg(long)]
    pub cwd: Option<String>,
    /// uid[:gid]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ExecWaitArgs {
    pub id: String,
    pub exec_id: String,
}

/// The OCI process to run: `--process`, else the container's own process with ARGS and the
/// flags applied.
fn process_json(c: &Container, a: &ExecArgs) -> anyhow::Result<Value> {
    let mut p: Value = if let Some(file) = &a.process {
        serde_json::from_slice(
            &std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{} is not a JSON OCI process", file.display()))?
    } else {
        if a.args.is_empty() {
            bail!("exec needs ARGS or --process");
        }
        let spec = super::create::read_bundle(&c.record.bundle)?;
        let mut p = spec
            .get("process")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        p["args"] = serde_json::json!(a.args);
        p
    };
    if a.tty {
        p["terminal"] = Value::Bool(true);
    }
    if let Some(cwd) = &a.cwd {
        p["cwd"] = Value::String(cwd.clone());
    }
    if let Some(user) = &a.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("--user {user}: not uid[:gid]"))?;
        let gid: u32 = gid
            .parse()
            .with_context(|| format!("--user {user}: not uid[:gid]"))?;
        p["user"] = serde_json::json!({"uid": uid, "gid": gid});
    }
    if !a.env.is_empty() {
        let mut env: Vec<Value> = p
            .get("env")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        env.extend(a.env.iter().map(|e| Value::String(e.clone())));
        p["env"] = Value::Array(env);
    }
    if p.get("cwd").is_none() {
        p["cwd"] = Value::String("/".into());
    }
    Ok(p)
}

pub fn exec(g: &Global, a: &ExecArgs) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, &a.id)?;
    let process = process_json(&c, a)?;
    let terminal = process.get("terminal").and_then(Value::as_bool) == Some(true);
    let me = std::process::id();
    // Keep the pty slave open until the monitor has opened it through /proc.
    let (stdin, stdout, stderr, _slave) = if terminal {
        let sock = a
            .console_socket
            .as_ref()
            .context("--tty needs --console-socket (the pty master is sent there)")?;
        let slave = super::console::pty_to_console_socket(sock)?;
        use std::os::fd::AsRawFd;
        let path = format!("/proc/{me}/fd/{}", slave.as_raw_fd());
        (path.clone(), path, String::new(), Some(slave))
    } else {
        (
            format!("/proc/{me}/fd/0"),
            format!("/proc/{me}/fd/1"),
            format!("/proc/{me}/fd/2"),
            None,
        )
    };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let exec_id = format!("exec-{me}-{nanos}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if c.status().await != OciStatus::Running {
            bail!("container {} is not running", a.id);
        }
        let client = c.client().await?;
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = serde_json::to_vec(&process)?;
        let mut req = ExecProcessRequest::new();
        req.id = a.id.clone();
        req.exec_id = exec_id.clone();
        req.terminal = terminal;
        req.stdin = stdin;
        req.stdout = stdout;
        req.stderr = stderr;
        req.spec = Some(any).into();
        client.exec(long_ctx(), &req).await.context("exec")?;
        let mut start = StartRequest::new();
        start.id = a.id.clone();
        start.exec_id = exec_id.clone();
        client
            .start(long_ctx(), &start)
            .await
            .context("starting the exec")?;
        Ok(())
    })?;
    if a.detach {
        let waiter = spawn_waiter(g, &a.id, &exec_id)?;
        if let Some(p) = &a.pid_file {
            std::fs::write(p, waiter.to_string())
                .with_context(|| format!("writing {}", p.display()))?;
        }
        return Ok(0);
    }
    if let Some(p) = &a.pid_file {
        std::fs::write(p, me.to_string()).with_context(|| format!("writing {}", p.display()))?;
    }
    let code = rt.block_on(wait_exec(&c, &a.id, &exec_id))?;
    Ok(u8::try_from(code).unwrap_or(255))
}

async fn wait_exec(c: &Container, id: &str, exec_id: &str) -> anyhow::Result<u32> {
    let client = c.client().await?;
    let mut wait = WaitRequest::new();
    wait.id = id.into();
    wait.exec_id = exec_id.into();
    let code = client
        .wait(long_ctx(), &wait)
        .await
        .context("waiting for the exec")?
        .exit_status;
    let mut del = DeleteRequest::new();
    del.id = id.into();
    del.exec_id = exec_id.into();
    let _ = client.delete(long_ctx(), &del).await;
    Ok(code)
}

fn spawn_waiter(g: &Global, id: &str, exec_id: &str) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the hako binary")?;
    let child = std::process::Command::new(exe)
        .arg("--root")
        .arg(&g.root)
        .args(["exec-wait", id, exec_id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the exec waiter")?;
    Ok(child.id())
}

/// `hako exec-wait` (internal): waits for a detached exec and exits with its status.
pub fn exec_wait(g: &Global, a: &ExecWaitArgs) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, &a.id)?;
    let code = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wait_exec(&c, &a.id, &a.exec_id))?;
    Ok(u8::try_from(code).unwrap_or(255))
}
