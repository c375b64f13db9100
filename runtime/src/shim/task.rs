//! containerd's Task service (API v2). Each RPC unpacks its request, asks the sandbox, and
//! turns the answer into the response and events containerd expects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    Status as TaskStatus, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::ttrpc::{self, Result as TtrpcResult};
use hako_agent_api::agent::{
    ContainerRequest, ProcessRequest, SignalProcessRequest, TtyWinResizeRequest,
    UpdateContainerRequest,
};

use super::events::{Publisher, timestamp};
use super::start::{PodRole, pod_role};
use crate::agent_client::ctx;
use crate::config::Config;
use crate::error::ShimError;
use crate::hooks;
use crate::io::Stdio;
use crate::sandbox::container::{Container, Process, Status};
use crate::sandbox::idmapped_rootfs::{self, SnapshotMount};
use crate::sandbox::{GuestSetup, RootfsMount, Sandbox, StateDir, sizing};

const RPC: Duration = Duration::from_secs(120);

pub struct TaskService {
    config: Config,
    events: Arc<Publisher>,
    exit: Arc<ExitSignal>,
    /// The sandbox this shim serves, once its first container is created. Held only to
    /// read or replace it: other RPCs (State, above all) must answer while a sandbox boots.
    sandbox: std::sync::Mutex<Option<Arc<Sandbox>>>,
    /// Serialises Create (and so the boot) and the sandbox's removal.
    lifecycle: tokio::sync::Mutex<()>,
    /// The sandbox's teardown: None before it began, false while it runs, true once done.
    /// It runs in its own task, so a caller's deadline (containerd gives Delete 10 s where
    /// a guest takes longer to power off) cannot cancel it half-way.
    stopped: tokio::sync::watch::Sender<Option<bool>>,
    /// The sandbox directory's name under the root: the sandbox id for the shim, a short
    /// fixed name for the CLI's monitor (socket paths must stay under 108 bytes).
    dir_name: Option<String>,
    /// Whether this service runs the containers' OCI hooks (the containerd shim: runc
    /// would have, under containerd's runc shim).
    host_hooks: bool,
}

type Result<T> = std::result::Result<T, ShimError>;

impl TaskService {
    pub fn new(config: Config, events: Arc<Publisher>, exit: Arc<ExitSignal>) -> Self {
        Self {
            config,
            events,
            exit,
            sandbox: std::sync::Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
            dir_name: None,
            stopped: tokio::sync::watch::Sender::new(None),
            host_hooks: true,
        }
    }

    /// Leaves the OCI hooks to the caller (the CLI runs them, with runc's state: the
    /// monitor's pid).
    pub fn without_hooks(mut self) -> Self {
        self.host_hooks = false;
        self
    }

    /// Starts tearing the sandbox down (once) in a task of its own.
    fn begin_stop(&self, sandbox: Arc<Sandbox>) {
        self.set_slot(None);
        let began = self.stopped.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(false);
                true
            } else {
                false
            }
        });
        if began {
            let done = self.stopped.clone();
            tokio::spawn(async move {
                sandbox.stop().await;
                done.send_replace(Some(true));
            });
        }
    }

    /// Waits until a teardown that began has finished (at once if none began).
    pub async fn wait_stopped(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s != Some(false)).await;
    }

    /// Names the sandbox directory `name` instead of after the sandbox id.
    pub fn with_dir_name(mut self, name: &str) -> Self {
        self.dir_name = Some(name.into());
        self
    }

    fn slot(&self) -> Option<Arc<Sandbox>> {
        self.sandbox.lock().ok().and_then(|s| s.clone())
    }

    fn set_slot(&self, sandbox: Option<Arc<Sandbox>>) {
        if let Ok(mut s) = self.sandbox.lock() {
            *s = sandbox;
        }
    }

    async fn current(&self) -> Result<Arc<Sandbox>> {
        self.slot()
            .ok_or_else(|| ShimError::NotFound("this shim has no sandbox yet".into()))
    }

    async fn container(&self, id: &str) -> Result<(Arc<Sandbox>, Arc<Container>)> {
        let sandbox = self.current().await?;
        let c = sandbox
            .container(id)
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))?;
        Ok((sandbox, c))
    }

    async fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<Sandbox>, Arc<Process>)> {
        let (sandbox, c) = self.container(id).await?;
        let p = c
            .process(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("process {id}/{exec_id} not found")))?;
        Ok((sandbox, p))
    }

    fn pid(&self, sandbox: &Sandbox) -> u32 {
        self.events
            .task_pid
            .store(sandbox.vmm_pid, std::sync::atomic::Ordering::Relaxed);
        sandbox.vmm_pid
    }

    async fn do_create(&self, req: &CreateTaskRequest) -> Result<u32> {
        let bundle = PathBuf::from(&req.bundle);
        let spec = read_spec(&bundle)?;
        let stdio = Stdio {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            namespace: self.events.namespace().into(),
        };
        stdio
            .check()
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        self.create_in_sandbox(req, &bundle, spec, stdio).await
    }

    async fn create_in_sandbox(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        spec: serde_json::Value,
        stdio: Stdio,
    ) -> Result<u32> {
        let _lifecycle = self.lifecycle.lock().await;
        let sandbox = match (pod_role(&spec), self.slot()) {
            (PodRole::Sandbox, None) => {
                // A CRI handler's ConfigPath, else the shim's own config.
                let config = super::options::sandbox_config(req.options.as_ref(), &self.config)
                    .map_err(|e| {
                        ShimError::InvalidArgument(format!("{:#}", anyhow::Error::from(e)))
                    })?;
                let size = sizing::size(&spec, &config.vm);
                let name = self.dir_name.as_deref().unwrap_or(&req.id);
                let dir = StateDir::create(&config.runtime.root, name)
                    .map_err(|e| ShimError::AlreadyExists(format!("{e:#}")))?;
                if self.dir_name.is_none() {
                    super::options::record_root(bundle, &config.runtime.root);
                }
                // A root file system the caller mounted already (podman's overlay, Docker's
                // overlay2, a directory; wherever root.path names) is bound as it is: the
                // VMM's user namespace depends on whether it can be id-mapped. containerd's
                // snapshot mounts are made to fit below.
                let premounted = match req.rootfs.is_empty() {
                    true => Some(
                        crate::sandbox::volumes::host_rootfs(&spec, bundle)
                            .map_err(|e| ShimError::InvalidArgument(format!("{e:#}")))?,
                    ),
                    false => None,
                };
                let sandbox = Sandbox::boot(
                    &config,
                    dir,
                    &req.id,
                    size,
                    &GuestSetup::from_spec(&spec),
                    premounted.as_deref(),
                    Arc::new(self.events.clone()),
                )
                .await?;
                self.set_slot(Some(sandbox.clone()));
                sandbox
            }
            (PodRole::Sandbox, Some(s)) => {
                return Err(ShimError::AlreadyExists(format!(
                    "this shim already serves sandbox {}; {} cannot start another",
                    s.id, req.id
                )));
            }
            (PodRole::Member(want), Some(s)) if s.id == want => s,
            (PodRole::Member(want), _) => {
                return Err(ShimError::NotFound(format!(
                    "sandbox {want} of container {} is not served by this shim",
                    req.id
                )));
            }
        };
        let rootfs = mount_rootfs(&sandbox, &req.id, bundle, &req.rootfs).await;
        let created = match rootfs {
            Ok(rootfs) => {
                let created = sandbox
                    .create_container(&req.id, bundle, spec, rootfs, stdio)
                    .await;
                if created.is_err() && rootfs.mounted {
                    crate::sandbox::rootfs::unbind(&bundle.join("rootfs"));
                }
                created.map_err(ShimError::from)
            }
            Err(e) => Err(e),
        };
        // As runc does at create: the createRuntime and prestart hooks, on the host.
        let created = match created {
            Ok(c) if self.host_hooks => {
                let state = self.hook_state(&sandbox, &c, "creating");
                let skipped = hooks::unsupported(&c.hooks);
                if !skipped.is_empty() {
                    tracing::warn!(container_id = %c.id, "hooks not run: {skipped:?} hooks need the container's mount namespace, which is in the guest");
                }
                // In runc's order.
                match hooks::run_async(&c.hooks, &["prestart", "createRuntime"], state).await {
                    Ok(()) => Ok(c),
                    Err(e) => {
                        if let Err(e) = sandbox.remove_container(&c).await {
                            tracing::warn!(container_id = %c.id, "{e:#}");
                        }
                        Err(ShimError::FailedPrecondition(format!("{e:#}")))
                    }
                }
            }
            other => other,
        };
        if let Err(e) = created {
            if sandbox.id == req.id {
                self.begin_stop(sandbox);
                self.wait_stopped().await;
            }
            return Err(e);
        }
        Ok(self.pid(&sandbox))
    }

    /// The OCI state a container's hooks get: its task pid (the sandbox's hako-vmm).
    fn hook_state(&self, sandbox: &Sandbox, c: &Container, status: &str) -> serde_json::Value {
        hooks::state(&c.id, status, self.pid(sandbox), &c.bundle, &c.annotations)
    }

    /// Runs a container's hooks of `kind` after the fact (poststart, poststop): a failure is
    /// logged, the container goes on (the OCI spec's rule, and runc's).
    async fn after_hooks(&self, sandbox: &Sandbox, c: &Container, kind: &'static str) {
        if !self.host_hooks {
            return;
        }
        let status = if kind == "poststart" {
            "created"
        } else {
            "stopped"
        };
        let state = self.hook_state(sandbox, c, status);
        if let Err(e) = hooks::run_async(&c.hooks, &[kind], state).await {
            tracing::warn!(container_id = %c.id, "{e:#}");
        }
    }

    /// Task.Create: the sandbox (booted by its first container) creates the container.
    pub async fn create_task(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        tracing::info!(container_id = %req.id, bundle = %req.bundle, "create");
        let pid = self.do_create(&req).await?;
        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut io = TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        ev.io = Some(io).into();
        ev.pid = pid;
        self.events
            .publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(ev))
            .await;
        let mut resp = CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    /// Task.Delete: an exec's record, or a container (and, for the sandbox's own, the VM).
    pub async fn delete_task(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let (sandbox, container) = self.container(&req.id).await?;
        let process = container.process(&req.exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("process {}/{} not found", req.id, req.exec_id))
        })?;
        let (_, code, at) = status_of(process.status());
        if matches!(process.status(), Status::Running | Status::Paused) {
            return Err(ShimError::FailedPrecondition(format!(
                "process {}/{} is still running",
                req.id, req.exec_id
            )));
        }
        let pid = self.pid(&sandbox);
        let at = timestamp(at.unwrap_or_else(std::time::SystemTime::now));
        if req.exec_id.is_empty() {
            let _lifecycle = self.lifecycle.lock().await;
            sandbox
                .remove_container(&container)
                .await
                .map_err(|e| ShimError::FailedPrecondition(format!("{e:#}")))?;
            self.after_hooks(&sandbox, &container, "poststop").await;
            if sandbox.id == req.id {
                // Shutdown (or the monitor) waits for it to finish.
                self.begin_stop(sandbox.clone());
            }
            let mut ev = TaskDelete::new();
            ev.container_id = req.id.clone();
            ev.id = req.id.clone();
            ev.pid = pid;
            ev.exit_status = code;
            ev.exited_at = Some(at.clone()).into();
            self.events
                .publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(ev))
                .await;
        } else if let Ok(mut execs) = container.execs.lock() {
            execs.remove(&req.exec_id);
        }
        let mut resp = DeleteResponse::new();
        resp.pid = pid;
        resp.exit_status = code;
        resp.exited_at = Some(at).into();
        Ok(resp)
    }

    /// Pause (freeze) or Resume: the state moves first, back again if the agent fails.
    async fn freeze(&self, id: &str, pause: bool) -> Result<Empty> {
        let (sandbox, c) = self.container(id).await?;
        let (from, to) = if pause {
            (Status::Running, Status::Paused)
        } else {
            (Status::Paused, Status::Running)
        };
        c.init
            .transition(from, to)
            .map_err(|e| ShimError::FailedPrecondition(e.to_string()))?;
        let mut r = ContainerRequest::new();
        r.container_id = id.into();
        let done = if pause {
            sandbox.agent.pause_container(ctx(RPC), &r).await
        } else {
            sandbox.agent.resume_container(ctx(RPC), &r).await
        };
        if let Err(e) = done {
            let _ = c.init.transition(to, from);
            return Err(agent_err(if pause {
                "PauseContainer"
            } else {
                "ResumeContainer"
            })(e));
        }
        if pause {
            let mut ev = TaskPaused::new();
            ev.container_id = id.into();
            self.events
                .publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(ev))
                .await;
        } else {
            let mut ev = TaskResumed::new();
            ev.container_id = id.into();
            self.events
                .publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(ev))
                .await;
        }
        Ok(Empty::new())
    }

    /// Sends `signal` to a process (with `all`, to every process of the container).
    pub async fn signal(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<Empty> {
        let (sandbox, process) = self.process(id, exec_id).await?;
        if matches!(process.status(), Status::Stopped { .. }) {
            return Err(ShimError::NotFound(format!(
                "process {id}/{exec_id} already finished"
            )));
        }
        let mut r = SignalProcessRequest::new();
        r.container_id = id.to_owned();
        r.exec_id = exec_id.to_owned();
        r.signal = signal;
        r.all = all;
        sandbox
            .agent
            .signal_process(ctx(RPC), &r)
            .await
            .map_err(agent_err("SignalProcess"))?;
        Ok(Empty::new())
    }

    /// The agent of this shim's sandbox, once it runs (for the `hako` CLI's monitor).
    pub fn agent(&self) -> Option<hako_agent_api::agent_ttrpc::AgentServiceClient> {
        self.slot().map(|s| s.agent.clone())
    }

    /// A process of this shim's sandbox (for the `hako` CLI's monitor).
    pub async fn process_of(&self, id: &str, exec_id: &str) -> Result<Arc<Process>> {
        Ok(self.process(id, exec_id).await?.1)
    }
}

fn read_spec(bundle: &Path) -> Result<serde_json::Value> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| ShimError::InvalidArgument(format!("reading {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ShimError::InvalidArgument(format!("{} is not JSON: {e}", path.display())))
}

/// Mounts containerd's rootfs mounts (the snapshot) on `<bundle>/rootfs`, id-mapped to the
/// sandbox VMM's user namespace when it runs in one; nothing if there were none (the
/// bundle's rootfs is already there).
async fn mount_rootfs(
    sandbox: &Arc<Sandbox>,
    id: &str,
    bundle: &Path,
    mounts: &[containerd_shim::protos::api::Mount],
) -> Result<RootfsMount> {
    if mounts.is_empty() {
        return Ok(RootfsMount::default());
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(|e| ShimError::Internal(anyhow::anyhow!("creating {}: {e}", target.display())))?;
    if sandbox.vmm_user().is_some() {
        let mounts: Vec<SnapshotMount> = mounts
            .iter()
            .map(|m| SnapshotMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let (sandbox, scratch) = (sandbox.clone(), sandbox.dir.join("layers").join(id));
        let done = tokio::task::spawn_blocking(move || {
            let user = sandbox.vmm_user().context("the VMM's user namespace")?;
            idmapped_rootfs::mount(&mounts, &target, &scratch, user)
        })
        .await
        .map_err(|e| ShimError::Internal(anyhow::anyhow!("mounting the rootfs: {e}")))?;
        done.map_err(|e| ShimError::Internal(e.context("mounting the rootfs")))?;
        return Ok(RootfsMount {
            mounted: true,
            id_mapped: true,
        });
    }
    for m in mounts {
        containerd_shim::util::mount_rootfs(m, &target)
            .await
            .map_err(|e| {
                ShimError::Internal(anyhow::anyhow!(
                    "mounting the {} rootfs on {}: {e}",
                    m.type_,
                    target.display()
                ))
            })?;
    }
    Ok(RootfsMount {
        mounted: true,
        id_mapped: false,
    })
}

fn status_of(s: Status) -> (TaskStatus, u32, Option<std::time::SystemTime>) {
    match s {
        Status::Created => (TaskStatus::CREATED, 0, None),
        Status::Running => (TaskStatus::RUNNING, 0, None),
        Status::Paused => (TaskStatus::PAUSED, 0, None),
        Status::Stopped { code, at } => (TaskStatus::STOPPED, code, Some(at)),
    }
}

fn agent_err(what: &str) -> impl FnOnce(ttrpc::Error) -> ShimError + '_ {
    move |e| ShimError::Internal(anyhow::anyhow!("{what}: {e}"))
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        Ok(self.create_task(req).await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let (sandbox, process) = self.process(&req.id, &req.exec_id).await?;
        sandbox
            .start(process)
            .await
            .map_err(|e| ShimError::FailedPrecondition(format!("{e:#}")))?;
        let pid = self.pid(&sandbox);
        if req.exec_id.is_empty()
            && let Some(c) = sandbox.container(&req.id)
        {
            self.after_hooks(&sandbox, &c, "poststart").await;
        }
        if req.exec_id.is_empty() {
            let mut ev = TaskStart::new();
            ev.container_id = req.id.clone();
            ev.pid = pid;
            self.events
                .publish(topics::TASK_START_EVENT_TOPIC, Box::new(ev))
                .await;
        } else {
            let mut ev = TaskExecStarted::new();
            ev.container_id = req.id.clone();
            ev.exec_id = req.exec_id.clone();
            ev.pid = pid;
            self.events
                .publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(ev))
                .await;
        }
        let mut resp = StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        Ok(self.delete_task(req).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let (sandbox, _) = self.container(&req.id).await?;
        let mut r = ContainerRequest::new();
        r.container_id = req.id.clone();
        let got = sandbox
            .agent
            .list_processes(ctx(RPC), &r)
            .await
            .map_err(agent_err("ListProcesses"))?;
        let mut resp = PidsResponse::new();
        for pid in got.pids {
            let mut p = ProcessInfo::new();
            p.pid = u32::try_from(pid).unwrap_or_default();
            resp.processes.push(p);
        }
        Ok(resp)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        Ok(self.freeze(&req.id, true).await?)
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        Ok(self.freeze(&req.id, false).await?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        Ok(self
            .signal(&req.id, &req.exec_id, req.signal, req.all)
            .await?)
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let (_, c) = self.container(&req.id).await?;
        if !matches!(c.init.status(), Status::Running) {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is {}; exec needs it running",
                req.id,
                c.init.status().name()
            ))
            .into());
        }
        let stdio = Stdio {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            namespace: self.events.namespace().into(),
        };
        stdio
            .check()
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        {
            let mut execs = c
                .execs
                .lock()
                .map_err(|_| ShimError::Internal(anyhow::anyhow!("exec table poisoned")))?;
            if execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists(format!(
                    "exec {} already exists in {}",
                    req.exec_id, req.id
                ))
                .into());
            }
            execs.insert(
                req.exec_id.clone(),
                Process::new(&req.id, &req.exec_id, stdio, spec),
            );
        }
        let mut ev = TaskExecAdded::new();
        ev.container_id = req.id.clone();
        ev.exec_id = req.exec_id.clone();
        self.events
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(ev))
            .await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let (sandbox, _) = self.process(&req.id, &req.exec_id).await?;
        let mut r = TtyWinResizeRequest::new();
        r.container_id = req.id.clone();
        r.exec_id = req.exec_id.clone();
        r.rows = req.height;
        r.columns = req.width;
        sandbox
            .agent
            .tty_win_resize(ctx(RPC), &r)
            .await
            .map_err(agent_err("TtyWinResize"))?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let (sandbox, process) = self.process(&req.id, &req.exec_id).await?;
        if req.stdin {
            // What the client wrote before closing is forwarded first.
            if let Some(c) = process.copies.lock().await.as_mut() {
                c.stdin_done(Duration::from_secs(5)).await;
            }
            let mut r = ProcessRequest::new();
            r.container_id = req.id.clone();
            r.exec_id = req.exec_id.clone();
            if let Err(e) = sandbox.agent.close_stdin(ctx(RPC), &r).await {
                tracing::debug!(container_id = %req.id, "CloseStdin: {e}");
            }
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let (sandbox, _) = self.container(&req.id).await?;
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| ShimError::InvalidArgument("update without resources".into()))?;
        let mut r = UpdateContainerRequest::new();
        r.container_id = req.id.clone();
        r.resources_json = resources;
        sandbox
            .agent
            .update_container(ctx(RPC), &r)
            .await
            .map_err(agent_err("UpdateContainer"))?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let (_, process) = self.process(&req.id, &req.exec_id).await?;
        let (code, at) = process.wait().await;
        let mut resp = WaitResponse::new();
        resp.exit_status = code;
        resp.exited_at = Some(timestamp(at)).into();
        Ok(resp)
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let (sandbox, _) = self.container(&req.id).await?;
        let mut r = ContainerRequest::new();
        r.container_id = req.id.clone();
        let stats = sandbox
            .agent
            .stats_container(ctx(RPC), &r)
            .await
            .map_err(agent_err("StatsContainer"))?;
        let mut resp = StatsResponse::new();
        resp.stats = Some(super::convert::metrics_any(&stats)).into();
        Ok(resp)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let (sandbox, c) = self.container(&req.id).await?;
        let process = c.process(&req.exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("process {}/{} not found", req.id, req.exec_id))
        })?;
        let (status, code, at) = status_of(process.status());
        let mut resp = StateResponse::new();
        resp.id = req.id.clone();
        resp.exec_id = req.exec_id.clone();
        resp.bundle = c.bundle.display().to_string();
        resp.pid = self.pid(&sandbox);
        resp.status = status.into();
        resp.stdin = process.stdio.stdin.clone();
        resp.stdout = process.stdio.stdout.clone();
        resp.stderr = process.stdio.stderr.clone();
        resp.terminal = process.stdio.terminal;
        resp.exit_status = code;
        resp.exited_at = at.map(timestamp).into();
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        if let Ok(s) = self.current().await {
            resp.task_pid = self.pid(&s);
        }
        resp.version = env!("CARGO_PKG_VERSION").into();
        Ok(resp)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        let _lifecycle = self.lifecycle.lock().await;
        match self.slot() {
            Some(s) if !s.containers().is_empty() && !req.now => {
                tracing::debug!("shutdown refused: containers remain");
                return Ok(Empty::new());
            }
            Some(s) => self.begin_stop(s),
            None => {}
        }
        // Answered at once: containerd gives Shutdown a few seconds (3 s by default) and,
        // past them, reports the shim leaked and cleans up through `delete`, which kills
        // hako-vmm. The clean stop (the guest's power-off) goes on, and a task of its own
        // ends the shim when it is done.
        // containerd removes the bundle (this shim's working directory, with the `address`
        // file naming its socket) once Shutdown returns: the socket is found now and removed
        // at the end (containerd-shim looks for the file only then).
        let socket = std::fs::read_to_string("address")
            .ok()
            .and_then(|a| a.trim().strip_prefix("unix://").map(PathBuf::from));
        let mut rx = self.stopped.subscribe();
        let exit = self.exit.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s != Some(false)).await;
            if let Some(path) = socket
                && std::fs::symlink_metadata(&path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(&path);
            }
            exit.signal();
        });
        Ok(Empty::new())
    }
}
