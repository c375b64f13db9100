//! The containers of the sandbox: created with libcontainer from the OCI spec the runtime
//! sends, their init and exec processes, and their teardown. One lock per container;
//! libcontainer's blocking calls run on the agent's container worker thread, under the fork
//! lock the orphan reaper also takes (it must not reap libcontainer's intermediate processes).
//! A container whose init has ended is removed by the agent itself (its cgroup directories
//! and libcontainer's state directory) unless it has poststop hooks: libcontainer's delete
//! would build a whole cgroup manager (on v1, two hardened procfs reads per controller) to
//! remove one directory per hierarchy.

pub mod cgroup;
pub mod copy_up;
pub mod home;
pub mod oom;
pub mod premount;
pub mod spec;
pub mod sysctl;
pub mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::signal::Signal;

use crate::io::{ChildStdio, ProcessIo};
use crate::process::Process;
use crate::process::tty::{self, ConsoleSocket};
use crate::storage::{self, StorageError};
use hako_agent_api::agent::Storage;
use spec::{PodRole, SpecError};

/// Errors of container requests.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("container {id:?}: mounting a storage")]
    Storage {
        id: String,
        #[source]
        source: StorageError,
    },
    #[error("container {id:?}")]
    Cgroup {
        id: String,
        #[source]
        source: cgroup::CgroupError,
    },
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("process {exec_id:?} of container {id:?} does not exist")]
    ProcessNotFound { id: String, exec_id: String },
    #[error("process {exec_id:?} of container {id:?} already exists")]
    ProcessExists { id: String, exec_id: String },
    #[error("container {id:?}: the pod's network sysctls")]
    Sysctl {
        id: String,
        #[source]
        source: sysctl::SysctlError,
    },
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    #[error("process {exec_id:?} of container {id:?} has no terminal")]
    NoTerminal { id: String, exec_id: String },
    #[error("signal {0} is not a valid signal number")]
    Signal(u32),
    #[error("container {id:?}: {what}")]
    Runtime {
        id: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn runtime(
    id: &str,
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ContainerError {
    let id = id.to_owned();
    move |source| ContainerError::Runtime { id, what, source }
}

/// One container and its processes.
pub struct Entry {
    id: String,
    role: PodRole,
    /// Storages mounted for this container, unmounted when it is removed.
    mounts: Mutex<Vec<PathBuf>>,
    /// The spec's mounts the agent made in the container's root itself, unmounted first.
    root_mounts: Mutex<premount::RootMounts>,
    /// The OOM watcher, stopped when the container goes.
    oom_watch: tokio::task::JoinHandle<()>,
    bundle: PathBuf,
    /// linux.cgroupsPath as libcontainer applied it.
    cgroup: PathBuf,
    /// The spec has poststop hooks (or Intel RDT): only libcontainer's delete runs those.
    libcontainer_delete: bool,
    /// The spec has poststart hooks: libcontainer's start runs (and waits for) them.
    poststart_hooks: bool,
    inner: Arc<Mutex<Container>>,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

/// Where containers live in the guest.
#[derive(Debug, Clone)]
pub struct Layout {
    /// libcontainer's state (`<state_dir>/<id>`) and the bundles (config.json, in
    /// `<state_dir>/.<id>`: no id starts with a dot, so the two never meet). Each path is a
    /// component shorter than under subdirectories: libcontainer resolves both with realpath(3).
    pub state_dir: PathBuf,
    /// The shared file system; container `<id>` has its files under `<shared_dir>/<id>/`.
    pub shared_dir: PathBuf,
    /// Where the pod's network sysctls are written (`/proc/sys` in the VM, whose network
    /// namespace is the pod's: `sysctl.rs`); None for an agent run as a host process, which
    /// refuses them rather than change its host's.
    pub pod_sysctls: Option<PathBuf>,
}

impl Layout {
    /// Container `id`'s bundle directory (its config.json, exec process files and consoles).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state_dir.join(format!(".{id}"))
    }

    /// Where container `id`'s root is bound for libcontainer: `<state_dir>-<id>`, beside the
    /// state directory (one component below `/` in a guest), a name of the agent's own that no
    /// image names. None when the state directory has no name (`/`).
    pub fn root_bind(&self, id: &str) -> Option<PathBuf> {
        let name = self.state_dir.file_name()?;
        let mut short = name.to_owned();
        short.push("-");
        short.push(id);
        Some(self.state_dir.with_file_name(short))
    }
}

pub struct Containers {
    pub oom: oom::OomEvents,
    layout: Layout,
    fork_lock: Arc<Mutex<()>>,
    worker: worker::Worker,
    hierarchies: cgroup::Hierarchies,
    map: tokio::sync::Mutex<HashMap<String, Arc<Entry>>>,
    /// Numbers the execs' console sockets: a socket named after its exec id (up to 128
    /// characters) would pass a socket address's length even through a descriptor path.
    consoles: std::sync::atomic::AtomicU64,
}

/// A libcontainer builder for container `id` (state under `root`) with the process's pipes,
/// or the console socket its terminal's master is sent to.
fn builder(
    id: String,
    root: PathBuf,
    stdio: ChildSide,
) -> Result<ContainerBuilder, libcontainer::error::LibcontainerError> {
    let b = ContainerBuilder::new(id, SyscallType::Linux)
        .with_executor(DefaultExecutor {})
        .with_root_path(root)?;
    Ok(match stdio {
        ChildSide::Pipes(child) => b
            .with_stdin(child.stdin)
            .with_stdout(child.stdout)
            .with_stderr(child.stderr),
        ChildSide::Console(path) => b.with_console_socket(Some(path)),
    })
}

/// What libcontainer gets for a process's streams.
enum ChildSide {
    Pipes(ChildStdio),
    Console(PathBuf),
}

/// The agent's side while the process is being made: pipes ready, or a terminal whose
/// master is still to arrive over the console socket.
enum AgentSide {
    Pipes(Arc<ProcessIo>),
    Terminal(std::thread::JoinHandle<std::io::Result<std::os::fd::OwnedFd>>),
}

/// Unmounts what it holds unless taken (a failed create leaves no mount behind).
struct MountGuard(Vec<PathBuf>);

impl Drop for MountGuard {
    fn drop(&mut self) {
        storage::unmount_all(&mut self.0);
    }
}

/// Where the cgroup file systems are mounted (the agent's and the containers').
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long a process may take to send its terminal after it is created.
const TERMINAL_TIMEOUT: Duration = Duration::from_secs(120);

/// Sets up a process's streams: pipes, or (`terminal`) a console socket at `socket`.
fn prepare_stdio(terminal: bool, socket: PathBuf) -> std::io::Result<(AgentSide, ChildSide)> {
    if !terminal {
        let (io, child) = ProcessIo::pipes()?;
        return Ok((AgentSide::Pipes(io), ChildSide::Pipes(child)));
    }
    let console = ConsoleSocket::bind(&socket)?;
    let receiver = std::thread::Builder::new()
        .name("console-socket".into())
        .spawn(move || console.receive(TERMINAL_TIMEOUT))?;
    Ok((AgentSide::Terminal(receiver), ChildSide::Console(socket)))
}

/// The process's streams once it exists (a terminal's master is waited for off the async
/// runtime; pipes are ready).
async fn finish_stdio(side: AgentSide) -> Result<std::io::Result<Arc<ProcessIo>>, ContainerError> {
    match side {
        AgentSide::Pipes(io) => Ok(Ok(io)),
        AgentSide::Terminal(receiver) => {
            blocking(move || {
                let master = receiver
                    .join()
                    .map_err(|_| std::io::Error::other("the console socket thread panicked"))??;
                ProcessIo::terminal(master)
            })
            .await
        }
    }
}

/// Waits for a terminal's master off the async runtime (it may take up to TERMINAL_TIMEOUT,
/// so not on the container worker).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContainerError::Runtime {
            id: String::new(),
            what: "a blocking task failed",
            source: Box::new(e),
        })
}

/// Milliseconds since `t` to a tenth, for the phase timings of the lifecycle log lines.
fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

impl Containers {
    /// Starts the container worker and reads, once, what does not change in a sandbox: where
    /// the cgroup hierarchies are, and libcontainer's hardened procfs handle (pathrs caches
    /// one per process; opened here, every later container process inherits it instead of
    /// mounting and checking a procfs of its own).
    pub fn new(layout: Layout, fork_lock: Arc<Mutex<()>>) -> std::io::Result<Self> {
        if let Err(e) = pathrs::procfs::ProcfsHandle::new() {
            tracing::warn!(error = %e, "opening a procfs handle for libcontainer");
        }
        let hierarchies = cgroup::Hierarchies::detect(Path::new(CGROUP_ROOT), || {
            std::fs::read("/proc/self/mountinfo")
        });
        tracing::debug!(?hierarchies, "cgroup hierarchies");
        // The parent of every container's bundle and libcontainer state, made once.
        std::fs::create_dir_all(&layout.state_dir)?;
        Ok(Self {
            oom: oom::OomEvents::default(),
            layout,
            fork_lock,
            worker: worker::Worker::start()?,
            hierarchies,
            map: tokio::sync::Mutex::new(HashMap::new()),
            consoles: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Runs a blocking libcontainer call on the container worker.
    async fn on_worker<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ContainerError> {
        self.worker
            .run(f)
            .await
            .map_err(|e| runtime(id, "handing a call to the container worker")(Box::new(e)))
    }

    /// libcontainer's root: its state of container `<id>` is in `<root>/<id>`.
    fn youki_root(&self) -> PathBuf {
        self.layout.state_dir.clone()
    }

    async fn get(&self, id: &str) -> Result<Arc<Entry>, ContainerError> {
        self.map
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(id.to_owned()))
    }

    /// Creates a container (state "created": its init waits for StartContainer).
    pub async fn create(
        &self,
        id: &str,
        spec_json: &[u8],
        storages: &[Storage],
    ) -> Result<(), ContainerError> {
        spec::check_id(id)?;
        let t0 = Instant::now();
        let mut map = self.map.lock().await;
        if map.contains_key(id) {
            return Err(ContainerError::Exists(id.to_owned()));
        }
        // Mounted first (the spec's root or mounts may be on them); undone if creation fails.
        let mut mounts = MountGuard(Vec::new());
        for s in storages {
            let target = storage::mount_storage(s).map_err(|source| ContainerError::Storage {
                id: id.to_owned(),
                source,
            })?;
            mounts.0.push(target);
        }
        let storage_ms = ms(t0);
        let t = Instant::now();
        let mut spec = spec::parse(spec_json)?;
        let root = spec::resolve_root(&mut spec, &self.layout.shared_dir.join(id))?;
        let cgroup = spec::cgroups_path(&mut spec, id);
        let role = spec::pod_role(&spec);
        let sandbox_init = match &role {
            PodRole::Member(sandbox) => Some(
                map.get(sandbox)
                    .filter(|e| e.role == PodRole::Sandbox && e.init.exited().is_none())
                    .map(|e| e.init.pid.as_raw())
                    .ok_or_else(|| SpecError::NoSandbox(sandbox.clone()))?,
            ),
            _ => None,
        };
        spec::fit_namespaces(&mut spec, sandbox_init);
        let net_sysctls = sysctl::take_pod_net_sysctls(&mut spec);
        if !net_sysctls.is_empty() {
            let written = match &self.layout.pod_sysctls {
                Some(proc_sys) => sysctl::write_all(proc_sys, &net_sysctls),
                None => Err(sysctl::SysctlError::NotInVm(
                    net_sysctls.iter().map(|(k, _)| k.clone()).collect(),
                )),
            };
            written.map_err(|source| ContainerError::Sysctl {
                id: id.to_owned(),
                source,
            })?;
        }
        let spec_ms = ms(t);
        let t = Instant::now();
        // Before premount takes mounts out of the spec: HOME must see them all.
        home::set_home(&mut spec, &root);
        // Undone (dropped) if creation fails from here on.
        let short = self.layout.root_bind(id);
        let root_mounts = premount::premount(&mut spec, &root, short.as_deref());
        let rootfs_ms = ms(t);
        let t = Instant::now();
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        let poststart_hooks = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.poststart().as_ref())
            .is_some_and(|p| !p.is_empty());
        let libcontainer_delete = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.poststop().as_ref())
            .is_some_and(|p| !p.is_empty())
            || spec
                .linux()
                .as_ref()
                .and_then(|l| l.intel_rdt().as_ref())
                .is_some();
        let bundle = self.layout.bundle(id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| runtime(id, "creating its bundle")(Box::new(e)))?;
        let json = serde_json::to_vec(&spec)
            .map_err(|e| runtime(id, "writing config.json")(Box::new(e)))?;
        std::fs::write(bundle.join("config.json"), json)
            .map_err(|e| runtime(id, "writing config.json")(Box::new(e)))?;
        let (agent_side, child) = prepare_stdio(terminal, bundle.join("console.sock"))
            .map_err(|e| runtime(id, "setting up its stdio")(Box::new(e)))?;
        let bundle_ms = ms(t);
        let t = Instant::now();
        let (cid, root, lock, b) = (
            id.to_owned(),
            self.youki_root(),
            self.fork_lock.clone(),
            bundle.clone(),
        );
        let container = self
            .on_worker(id, move || {
                let _forking = lock.lock().unwrap_or_else(|p| p.into_inner());
                builder(cid, root, child).and_then(|builder| {
                    builder
                        .as_init(b)
                        .with_systemd(false)
                        .with_detach(true)
                        .build()
                })
            })
            .await?
            .map_err(|e| runtime(id, "creating it with libcontainer")(Box::new(e)))?;
        // libcontainer's part: clone, cgroup, namespaces, root file system, up to the init
        // waiting for StartContainer.
        let libcontainer_ms = ms(t);
        let pid = container.pid().ok_or_else(|| {
            runtime(id, "reading its init pid")("libcontainer reported no pid".into())
        })?;
        let io = finish_stdio(agent_side)
            .await?
            .map_err(|e| runtime(id, "receiving its terminal")(Box::new(e)))?;
        let init = Process::watch(pid, io)
            .map_err(|e| runtime(id, "watching its init process")(Box::new(e)))?;
        let mounts = std::mem::take(&mut mounts.0);
        let counter = self
            .hierarchies
            .oom_counter(&cgroup)
            .unwrap_or_else(|| oom::counter_file(Path::new(CGROUP_ROOT), &cgroup));
        let oom_watch = self.oom.watch(id.to_owned(), counter);
        map.insert(
            id.to_owned(),
            Arc::new(Entry {
                id: id.to_owned(),
                role,
                oom_watch,
                mounts: Mutex::new(mounts),
                root_mounts: Mutex::new(root_mounts),
                bundle,
                cgroup,
                libcontainer_delete,
                poststart_hooks,
                inner: Arc::new(Mutex::new(container)),
                init: Arc::new(init),
                execs: Mutex::new(HashMap::new()),
            }),
        );
        // The phases in one line (no extra write): in a guest whose kernel work is emulated
        // they show where a container's creation goes (hako-bench-guest-create reads them).
        tracing::info!(
            container_id = id,
            pid = pid.as_raw(),
            storage_ms,
            spec_ms,
            rootfs_ms,
            bundle_ms,
            libcontainer_ms,
            total_ms = ms(t0),
            "container created"
        );
        Ok(())
    }

    /// Starts the container's process.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let e = self.get(id).await?;
        let inner = e.inner.clone();
        let t = Instant::now();
        // Without poststart hooks, libcontainer's start is a few file operations and one
        // message to the init waiting on its notify socket: done here, it saves the hand-off
        // to the worker and back (~6 calls: a thread wake, an eventfd each way, and the
        // timer ttrpc arms when a request does not finish in its first poll). A container
        // busy on the worker (its lock taken) starts there, after that call.
        let inline = if e.poststart_hooks {
            None
        } else {
            match inner.try_lock() {
                Ok(mut c) => Some(c.start()),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner().start()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        };
        let started = match inline {
            Some(r) => r,
            None => {
                self.on_worker(id, move || {
                    inner.lock().unwrap_or_else(|p| p.into_inner()).start()
                })
                .await?
            }
        };
        started.map_err(|err| runtime(id, "starting it")(Box::new(err)))?;
        tracing::info!(container_id = id, exec_ms = ms(t), "container started");
        Ok(())
    }

    /// The init process (`exec_id` "") or an exec.
    pub async fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, ContainerError> {
        let e = self.get(id).await?;
        if exec_id.is_empty() {
            return Ok(e.init.clone());
        }
        e.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::ProcessNotFound {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            })
    }

    /// Sends a signal to a process, or (`all`) to every process of the container.
    pub async fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ContainerError> {
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or(ContainerError::Signal(signal))?;
        let e = self.get(id).await?;
        if exec_id.is_empty() || all {
            if e.init.exited().is_some() && !all {
                return Ok(());
            }
            let inner = e.inner.clone();
            self.on_worker(id, move || {
                inner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .kill(sig, all)
            })
            .await?
            .map_err(|err| runtime(id, "signalling it")(Box::new(err)))?;
            return Ok(());
        }
        let p = self.process(id, exec_id).await?;
        if p.exited().is_none() {
            nix::sys::signal::kill(p.pid, sig)
                .map_err(|err| runtime(id, "signalling a process")(Box::new(err)))?;
        }
        Ok(())
    }

    /// Runs another process in the container (OCI process JSON).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
    ) -> Result<(), ContainerError> {
        let e = self.get(id).await?;
        if exec_id.is_empty()
            || e.execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(exec_id)
        {
            return Err(ContainerError::ProcessExists {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        }
        spec::check_id(exec_id)?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(process_json).map_err(SpecError::Parse)?;
        let terminal = process.terminal() == Some(true);
        let path = e.bundle.join(format!("exec-{exec_id}.json"));
        std::fs::write(&path, process_json)
            .map_err(|err| runtime(id, "writing the exec's process.json")(Box::new(err)))?;
        let n = self
            .consoles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = e.bundle.join(format!("console-{n}.sock"));
        let (agent_side, child) = prepare_stdio(terminal, socket)
            .map_err(|err| runtime(id, "setting up the exec's stdio")(Box::new(err)))?;
        let (cid, root, lock) = (id.to_owned(), self.youki_root(), self.fork_lock.clone());
        let pid = self
            .on_worker(id, move || {
                let _forking = lock.lock().unwrap_or_else(|p| p.into_inner());
                builder(cid, root, child).and_then(|builder| {
                    builder
                        .as_tenant()
                        .with_process(Some(path))
                        .with_detach(true)
                        .build()
                })
            })
            .await?
            .map_err(|err| runtime(id, "executing a process")(Box::new(err)))?;
        let io = finish_stdio(agent_side)
            .await?
            .map_err(|err| runtime(id, "receiving the exec's terminal")(Box::new(err)))?;
        let p = Process::watch(pid, io)
            .map_err(|err| runtime(id, "watching an exec")(Box::new(err)))?;
        e.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(exec_id.to_owned(), Arc::new(p));
        tracing::info!(
            container_id = id,
            exec_id,
            pid = pid.as_raw(),
            "exec started"
        );
        Ok(())
    }

    /// Sets the window size of a process's terminal.
    pub async fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), ContainerError> {
        let p = self.process(id, exec_id).await?;
        let Some(tty) = p.io.tty.as_ref() else {
            return Err(ContainerError::NoTerminal {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        };
        let (rows, columns) = (
            u16::try_from(rows).unwrap_or(u16::MAX),
            u16::try_from(columns).unwrap_or(u16::MAX),
        );
        tty::resize(std::os::fd::AsFd::as_fd(tty), rows, columns)
            .map_err(|err| runtime(id, "resizing its terminal")(Box::new(err)))
    }

    /// Freezes (`true`) or thaws every process of the container.
    pub async fn freeze(&self, id: &str, frozen: bool) -> Result<(), ContainerError> {
        let e = self.get(id).await?;
        let inner = e.inner.clone();
        self.on_worker(id, move || {
            let mut c = inner.lock().unwrap_or_else(|p| p.into_inner());
            if frozen { c.pause() } else { c.resume() }
        })
        .await?
        .map_err(|err| {
            runtime(id, if frozen { "pausing it" } else { "resuming it" })(Box::new(err))
        })
    }

    /// The container's processes, its statistics, or new resource limits (its cgroup).
    pub async fn pids(&self, id: &str) -> Result<Vec<i32>, ContainerError> {
        let e = self.get(id).await?;
        let (path, cid) = (e.cgroup.clone(), id.to_owned());
        self.on_worker(id, move || cgroup::pids(&path, &cid))
            .await?
            .map_err(|source| ContainerError::Cgroup {
                id: id.to_owned(),
                source,
            })
    }

    pub async fn stats(
        &self,
        id: &str,
    ) -> Result<hako_agent_api::agent::StatsContainerResponse, ContainerError> {
        let e = self.get(id).await?;
        let (path, cid) = (e.cgroup.clone(), id.to_owned());
        self.on_worker(id, move || cgroup::stats(&path, &cid))
            .await?
            .map_err(|source| ContainerError::Cgroup {
                id: id.to_owned(),
                source,
            })
    }

    pub async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), ContainerError> {
        let e = self.get(id).await?;
        let (path, cid) = (e.cgroup.clone(), id.to_owned());
        self.on_worker(id, move || cgroup::update(&path, &cid, &resources_json))
            .await?
            .map_err(|source| ContainerError::Cgroup {
                id: id.to_owned(),
                source,
            })
    }

    /// Kills whatever still runs, waits up to `timeout` for the init, deletes the container.
    pub async fn remove(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let e = self.get(id).await?;
        let t = Instant::now();
        if e.init.exited().is_none() {
            let inner = e.inner.clone();
            let _ = self
                .on_worker(id, move || {
                    inner
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .kill(Signal::SIGKILL, true)
                })
                .await?;
            if tokio::time::timeout(timeout, e.init.wait()).await.is_err() {
                tracing::warn!(container_id = id, "init did not exit after SIGKILL");
            }
        }
        let dirs = self.hierarchies.dirs(&e.cgroup);
        match dirs {
            Some(dirs) if e.init.exited().is_some() && !e.libcontainer_delete => {
                let state = self.youki_root().join(id);
                let remove_state = move || {
                    remove_state_dir(&state).map_err(|err| cgroup::CgroupError::Op {
                        what: "removing libcontainer's state directory",
                        path: state.display().to_string(),
                        source: Box::new(err),
                    })
                };
                // Most often each directory goes with one rmdir (the container's processes
                // are gone) and the state with a few unlinks: done here, without the hand-off
                // to the worker and back. A populated cgroup (processes to kill, an rmdir
                // retried with back-off) goes to the worker.
                let left = cgroup::remove_empty(&dirs);
                let removed = if left.is_empty() {
                    remove_state()
                } else {
                    self.on_worker(id, move || {
                        cgroup::remove(&left)?;
                        remove_state()
                    })
                    .await?
                };
                removed.map_err(|err| runtime(id, "deleting it")(Box::new(err)))?;
            }
            _ => {
                let inner = e.inner.clone();
                self.on_worker(id, move || {
                    inner.lock().unwrap_or_else(|p| p.into_inner()).delete(true)
                })
                .await?
                .map_err(|err| runtime(id, "deleting it")(Box::new(err)))?;
            }
        }
        e.oom_watch.abort();
        e.root_mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unmount();
        storage::unmount_all(&mut e.mounts.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = remove_dir_of(&e.bundle, &["config.json"]);
        self.map.lock().await.remove(id);
        tracing::info!(container_id = %e.id, remove_ms = ms(t), "container removed");
        Ok(())
    }

    /// Removes every container (DestroySandbox).
    pub async fn remove_all(&self, timeout: Duration) {
        let ids: Vec<String> = self.map.lock().await.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.remove(&id, timeout).await {
                tracing::warn!(container_id = %id, error = %e, "removing at teardown");
            }
        }
    }
}

/// Removes libcontainer's state directory of a container (state.json, its config, the notify
/// socket); one that is already gone is removed.
fn remove_state_dir(dir: &Path) -> std::io::Result<()> {
    remove_dir_of(dir, &["state.json", "youki_config.json", "notify.sock"])
}

/// Removes directory `dir` holding (usually) just `files`: each unlinked by name and the
/// directory removed, a handful of calls where walking it costs a dozen; anything else in it
/// is found by the rmdir and the whole tree removed. A directory already gone is removed.
fn remove_dir_of(dir: &Path, files: &[&str]) -> std::io::Result<()> {
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    for f in files {
        let _ = gone(std::fs::remove_file(dir.join(f)));
    }
    match gone(std::fs::remove_dir(dir)) {
        Ok(()) => Ok(()),
        Err(_) => gone(std::fs::remove_dir_all(dir)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_removed_whatever_else_it_holds_and_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("config.json"), "{}").unwrap();
        remove_dir_of(&plain, &["config.json", "absent"]).unwrap();
        assert!(!plain.exists());

        let more = dir.path().join("more");
        std::fs::create_dir_all(more.join("sub")).unwrap();
        std::fs::write(more.join("config.json"), "{}").unwrap();
        std::fs::write(more.join("exec-1.json"), "{}").unwrap();
        std::fs::write(more.join("sub/x"), "x").unwrap();
        remove_dir_of(&more, &["config.json"]).unwrap();
        assert!(!more.exists());

        remove_dir_of(&dir.path().join("never"), &["config.json"]).unwrap();
    }
}
