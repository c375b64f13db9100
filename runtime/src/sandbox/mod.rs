//! Sandboxes on the host. [`StateDir`] is the one-shot directory `hako run` uses; [`Sandbox`]
//! is a long-lived sandbox (the shim's pod): its VM, its agent connection, its containers and
//! the order they are made and torn down in.

pub mod container;
pub mod guest_spec;
pub mod host_cgroup;
pub mod id_range;
pub mod idmapped_rootfs;
pub mod rootfs;
pub mod sizing;
pub mod volumes;
pub mod watchers;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::agent::{
    ContainerRequest, CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest,
    ExecProcessRequest, RemoveContainerRequest, SetGuestDateTimeRequest,
};
use hako_agent_api::agent_ttrpc::AgentServiceClient;

use self::container::{Container, Process, Status};
use self::host_cgroup::{HostCgroup, Limits};
use self::id_range::{IdRange, VmmUser};
use self::sizing::VmSize;
use self::watchers::EventSink;
use crate::agent_client::{self, ctx};
use crate::backend::find_vmm;
use crate::backend::vm::{Vm, VmPaths, VmSpec, describe_exit, random_cid};
use crate::config::{Config, UserNamespaceMode};
use crate::host::share::Share;
use crate::io::Copies;
use crate::network::PodNetwork;
use crate::state::SandboxState;
use crate::template;

/// Deadline of the agent RPCs that make or remove containers and processes: generous, since
/// their guest kernel work takes tens of seconds where it is emulated and a loaded host slows
/// it further (milliseconds on real KVM).
pub(crate) const RPC: Duration = Duration::from_secs(600);

/// `<root>/<id>/` and what is in it; removed (after unmounting, by identity) when dropped.
pub struct StateDir {
    pub dir: PathBuf,
    cgroup: Option<HostCgroup>,
    kept: bool,
}

impl StateDir {
    /// Creates `<root>/<id>`; refuses an id already in use.
    pub fn create(root: &Path, id: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let dir = root.join(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(Self {
                dir,
                cgroup: None,
                kept: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "container {id:?} already exists ({} is in use)",
                    dir.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }

    /// Hands the directory over to a longer-lived owner (nothing is removed on drop).
    pub fn keep(mut self) -> PathBuf {
        self.kept = true;
        self.dir.clone()
    }

    /// Records the sandbox's host cgroup, removed at teardown (after its VMM is gone).
    pub fn cgroup(&mut self, cgroup: HostCgroup) {
        self.cgroup = Some(cgroup);
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Some(cg) = self.cgroup.take() {
            cg.remove();
        }
        remove_sandbox_dir(&self.dir);
    }
}

/// How a container's root file system came to `<bundle>/rootfs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootfsMount {
    /// The runtime mounted it (containerd's snapshot) and unmounts it with the container.
    pub mounted: bool,
    /// Its files already show the VMM's ids (layers id-mapped): its bind into the share
    /// must not map them again.
    pub id_mapped: bool,
}

/// What the pod's sandbox spec says about the guest as a whole.
#[derive(Debug, Clone, Default)]
pub struct GuestSetup {
    pub hostname: String,
    /// The pod's network namespace (CNI's), carried into the VM.
    pub netns: Option<PathBuf>,
    /// The pod's resolv.conf lines, for the guest's own resolver.
    pub dns: Vec<String>,
}

impl GuestSetup {
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        Self {
            hostname: spec
                .get("hostname")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            netns: crate::network::namespace_path(spec),
            dns: guest_spec::resolv_conf(spec),
        }
    }
}

/// A long-lived sandbox: one VM, its agent, its containers.
pub struct Sandbox {
    pub id: String,
    pub dir: PathBuf,
    pub paths: VmPaths,
    /// The tree hako-vmm exports to the guest; only `host::share` touches it.
    share: Arc<Share>,
    pub vmm_pid: u32,
    pub agent: AgentServiceClient,
    pub events: Arc<dyn EventSink>,
    vm: Mutex<Vm>,
    /// The taps wired into the pod's network namespace, if any.
    network: Option<crate::network::Wiring>,
    /// hako-vmm's host cgroup, if any.
    host_cgroup: Option<HostCgroup>,
    /// hako-vmm's user namespace and host ids, when it runs in one: containers' binds are
    /// id-mapped to it.
    vmm_user: Option<VmmUser>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    stopping: AtomicBool,
}

impl Sandbox {
    /// In `dir` (`<root>/<id>/`, made by [`StateDir::create`]), starts the VM (with the pod
    /// network `setup` names carried in, if any), waits for its agent (up to the configured
    /// deadline) and creates the sandbox in the guest. On failure nothing is left behind and
    /// the error names the console log.
    pub async fn boot(
        config: &Config,
        dir: StateDir,
        id: &str,
        size: VmSize,
        setup: &GuestSetup,
        premounted_rootfs: Option<&Path>,
        events: Arc<dyn EventSink>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut spec = vm_spec(config, size)?;
        let mut dir = dir;
        // Its staging side is a shared mount, so the containers bound into it after hako-vmm
        // started reach the jail (whose mounts are slaves) through the read-only side.
        let share = Share::create(&dir.dir).with_context(|| format!("sandbox {id}: its share"))?;
        crate::host::vmm_dir::make(&dir.dir, crate::backend::vm::VMM_DIR)
            .with_context(|| format!("sandbox {id}: hako-vmm's directory"))?;
        if config.vm.jail {
            let root = dir.dir.join("jail");
            std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
            spec.jail = Some(root);
            let fallback = match config.vm.user_namespace {
                UserNamespaceMode::Off => None,
                UserNamespaceMode::Auto => Some(true),
                UserNamespaceMode::Required => Some(false),
            };
            // A root file system mounted by the caller on a file system that cannot be
            // id-mapped (podman's overlay driver) would not be readable by a VMM in a user
            // namespace: such a sandbox's VMM stays root, or fails if required.
            let unmappable = premounted_rootfs.and_then(rootfs::cannot_be_id_mapped);
            let fallback = match (fallback, unmappable) {
                (Some(true), Some(why)) => {
                    tracing::warn!(
                        sandbox_id = id,
                        "hako-vmm runs as root: the container's root file system {why}"
                    );
                    None
                }
                (Some(false), Some(why)) => {
                    bail!(
                        "sandbox {id}: the container's root file system {why}, and [vm] user_namespace = \"required\""
                    )
                }
                (fallback, _) => fallback,
            };
            if let Some(fallback) = fallback {
                let range = IdRange::take(Path::new(id_range::LOCK_DIR))
                    .with_context(|| format!("sandbox {id}: host ids for its VMM"))?;
                spec.jail_user = Some((Arc::new(range), fallback));
            }
        }
        if config.vm.host_cgroup {
            let limits = Limits::for_vm(
                spec.vcpus,
                spec.memory_mib,
                config.vm.host_overhead_memory_mib,
            );
            let cgroup = HostCgroup::create(&dir.dir, limits)
                .with_context(|| format!("sandbox {id}: its host cgroup"))?;
            dir.cgroup(cgroup.clone());
            spec.host_cgroup = Some(cgroup);
        }
        let mut state = SandboxState::new(id);
        state.host_cgroup = spec.host_cgroup.clone();
        state.save(&dir.dir)?;
        let network = match &setup.netns {
            Some(ns) => PodNetwork::attach(ns)
                .with_context(|| format!("sandbox {id}: carrying the pod network in"))?,
            None => None,
        };
        if let Some(n) = &network {
            spec.netns = Some(n.netns.clone());
            spec.net = n.vmm_devices();
            state.network = Some(n.wiring());
        }
        let booted = Self::boot_vm(
            config,
            dir,
            id,
            size,
            setup,
            spec,
            network.as_ref(),
            state,
            (share, events),
        )
        .await;
        if booted.is_err()
            && let Some(n) = &network
        {
            n.wiring().detach();
        }
        booted
    }

    #[allow(clippy::too_many_arguments)]
    async fn boot_vm(
        config: &Config,
        dir: StateDir,
        id: &str,
        size: VmSize,
        setup: &GuestSetup,
        spec: VmSpec,
        network: Option<&PodNetwork>,
        state: SandboxState,
        (share, events): (Arc<Share>, Arc<dyn EventSink>),
    ) -> anyhow::Result<Arc<Self>> {
        let paths = VmPaths::under(&dir.dir);
        state.save(&dir.dir)?;
        // Templates hold VMs without network devices (a guest's NICs are fixed at boot):
        // a sandbox with a pod network boots cold.
        let template = if config.template.enabled && spec.net.is_empty() {
            let found = template::find(&config.template.dir, &spec).unwrap_or_else(|e| {
                tracing::warn!(sandbox_id = id, "looking for a template: {e:#}");
                None
            });
            if found.is_none() && config.template.auto_create {
                template::create_in_background(config, size);
            }
            found
        } else {
            None
        };
        let started = std::time::Instant::now();
        let launch = |snapshot: Option<PathBuf>| {
            let (spec, paths, state_dir) = (spec.clone(), paths.clone(), dir.dir.clone());
            let mut state = state.clone();
            async move {
                let mut vm = match &snapshot {
                    Some(t) => Vm::restore(&spec, paths.clone(), t)?,
                    None => Vm::start(&spec, paths.clone())?,
                };
                state.vmm_pid = vm.pid();
                state.save(&state_dir)?;
                tracing::info!(
                    sandbox_id = id,
                    vmm_pid = vm.pid(),
                    vcpus = spec.vcpus,
                    memory_mib = spec.memory_mib,
                    template = ?snapshot,
                    "sandbox VM started"
                );
                let resumed = snapshot.is_some();
                let connected =
                    match connect(&mut vm, config.agent_timeout(), id, setup, resumed).await {
                        Ok(agent) => match network {
                            Some(n) => n.configure_guest(&agent).await.map(|()| agent),
                            None => Ok(agent),
                        },
                        Err(e) => Err(e),
                    };
                // Known by now: the VMM entered its user namespace (or stayed root) before
                // it started the guest.
                let connected = connected.and_then(|agent| {
                    let userns = vm.user_namespace()?;
                    let user = match (&spec.jail_user, userns) {
                        (Some((range, _)), Some(ns)) => {
                            Some(VmmUser::new(ns, range.first(), range.first()))
                        }
                        (Some((range, _)), None) => {
                            tracing::warn!(
                                sandbox_id = id,
                                "hako-vmm runs as root, not as host uid {}: this host cannot \
                                 give its jail a user namespace (its log says why)",
                                range.first()
                            );
                            None
                        }
                        (None, _) => None,
                    };
                    Ok((agent, user))
                });
                match connected {
                    Ok((agent, userns)) => Ok((vm, agent, userns)),
                    Err(e) => {
                        let words = vm.last_words(15);
                        let killed = vm
                            .ended_within(Duration::from_millis(500))
                            .and_then(|s| s.signal());
                        drop(vm);
                        Err(LaunchFailure {
                            error: e.context(format!("sandbox {id}: {words}")),
                            vmm_killed: killed.is_some(),
                        })
                    }
                }
            }
        };
        let (vm, agent, userns) = match template {
            Some(t) => match launch(Some(t.dir.clone())).await {
                Ok(started) => started,
                // A VMM killed by a signal (kill -9, the OOM killer, its seccomp filter) says
                // nothing against the template, which other sandboxes go on resuming; this
                // sandbox fails as a cold boot would.
                Err(f) if f.vmm_killed => return Err(f.error),
                Err(f) => {
                    // A template that cannot be resumed is never tried again: remove it,
                    // clear what the failed VMM left, and boot cold.
                    tracing::warn!(
                        sandbox_id = id,
                        template = %t.dir.display(),
                        "resuming the template failed; removing it and booting cold: {:#}",
                        f.error
                    );
                    template::remove_dir(&t.dir);
                    if config.template.auto_create {
                        template::create_in_background(config, size);
                    }
                    paths.remove_sockets();
                    launch(None).await.map_err(|f| f.error)?
                }
            },
            None => launch(None).await.map_err(|f| f.error)?,
        };
        tracing::info!(
            sandbox_id = id,
            ms = started.elapsed().as_millis() as u64,
            "sandbox agent ready"
        );
        let dir_path = dir.keep();
        let sandbox = Arc::new(Self {
            id: id.into(),
            dir: dir_path,
            vmm_pid: vm.pid(),
            paths,
            share,
            agent,
            events,
            vm: Mutex::new(vm),
            network: state.network.clone(),
            host_cgroup: state.host_cgroup.clone(),
            vmm_user: userns,
            containers: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        });
        watchers::watch_vmm(sandbox.clone());
        watchers::watch_oom(sandbox.clone());
        Ok(sandbox)
    }

    pub fn containers(&self) -> Vec<Arc<Container>> {
        self.containers
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn container(&self, id: &str) -> Option<Arc<Container>> {
        self.containers.lock().ok()?.get(id).cloned()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// hako-vmm's user namespace and host ids, when it runs in one.
    pub fn vmm_user(&self) -> Option<&VmmUser> {
        self.vmm_user.as_ref()
    }

    pub fn vmm_exited(&self) -> Option<ExitStatus> {
        self.vm.lock().ok()?.exited().ok().flatten()
    }

    /// Shares the container's root and volumes into the guest and creates it there.
    pub async fn create_container(
        &self,
        id: &str,
        bundle: &Path,
        mut spec: serde_json::Value,
        rootfs: RootfsMount,
        stdio: crate::io::Stdio,
    ) -> anyhow::Result<Arc<Container>> {
        if self.container(id).is_some() {
            bail!("container {id:?} already exists in sandbox {}", self.id);
        }
        stdio.check()?;
        let userns = self.vmm_user.as_ref().map(VmmUser::ns);
        let hooks = crate::hooks::of(&spec);
        let annotations = spec.get("annotations").cloned().unwrap_or_default();
        let part = volumes::share(&mut spec, bundle, &self.share, id, userns, rootfs.id_mapped)?;
        guest_spec::fit(&mut spec);
        let mut req = CreateContainerRequest::new();
        req.container_id = id.into();
        req.oci_spec_json = serde_json::to_vec(&spec)?;
        self.agent
            .create_container(ctx(RPC), &req)
            .await
            .with_context(|| format!("creating container {id} in sandbox {}", self.id))?;
        let container = Arc::new(Container {
            id: id.into(),
            bundle: bundle.into(),
            rootfs_mounted: rootfs.mounted,
            share: Mutex::new(Some(part)),
            init: Process::new(id, "", stdio, Vec::new()),
            execs: Mutex::new(HashMap::new()),
            hooks,
            annotations,
        });
        if let Ok(mut m) = self.containers.lock() {
            m.insert(id.into(), container.clone());
        }
        self.save_state();
        Ok(container)
    }

    /// Starts a container's init process or one of its execs, with its stdio wired up.
    pub async fn start(self: &Arc<Self>, process: Arc<Process>) -> anyhow::Result<()> {
        process.transition(Status::Created, Status::Running)?;
        // The agent buffers output until it is read, so copies may start after the process:
        // an init process exists since CreateContainer, an exec only once ExecProcess ran.
        let copies = || {
            Copies::start(
                &self.agent,
                &process.container_id,
                &process.exec_id,
                &process.stdio,
            )
        };
        // Held until the copies exist: a CloseIO that comes while the process starts (ctr of
        // containerd 2.x sends it as soon as its stdin ends) waits for them, and so closes the
        // guest's stdin only after what was written is forwarded.
        let mut slot = process.copies.lock().await;
        if process.exec_id.is_empty() {
            *slot = Some(copies());
        }
        let started = if process.exec_id.is_empty() {
            let mut req = ContainerRequest::new();
            req.container_id = process.container_id.clone();
            self.agent.start_container(ctx(RPC), &req).await
        } else {
            let mut req = ExecProcessRequest::new();
            req.container_id = process.container_id.clone();
            req.exec_id = process.exec_id.clone();
            req.process_json = process.spec_json.clone();
            self.agent.exec_process(ctx(RPC), &req).await
        };
        if let Err(e) = started {
            if let Some(c) = slot.as_mut() {
                c.close();
            }
            drop(slot);
            process.exited(255);
            return Err(e).with_context(|| {
                format!(
                    "starting {}{}{}",
                    process.container_id,
                    if process.exec_id.is_empty() { "" } else { "/" },
                    process.exec_id
                )
            });
        }
        if !process.exec_id.is_empty() {
            *slot = Some(copies());
        }
        drop(slot);
        watchers::watch_exit(self.clone(), process);
        Ok(())
    }

    /// Removes a stopped (or never started) container: from the guest, then its binds and
    /// root file system on the host.
    pub async fn remove_container(&self, container: &Container) -> anyhow::Result<()> {
        if matches!(container.init.status(), Status::Running | Status::Paused) {
            bail!("container {} is still running; kill it first", container.id);
        }
        if self.vmm_exited().is_none() {
            let mut req = RemoveContainerRequest::new();
            req.container_id = container.id.clone();
            req.timeout_secs = 10;
            if let Err(e) = self.agent.remove_container(ctx(RPC), &req).await {
                tracing::warn!(container_id = %container.id, "removing in the guest: {e}");
            }
        }
        unshare(container);
        if container.rootfs_mounted {
            rootfs::unbind(&container.bundle.join("rootfs"));
        }
        if let Ok(mut m) = self.containers.lock() {
            m.remove(&container.id);
        }
        self.save_state();
        Ok(())
    }

    /// Powers the guest off (forcibly if it does not go within the grace), then removes every
    /// mount and the state directory.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.vmm_exited().is_none() {
            let mut req = DestroySandboxRequest::new();
            req.power_off = true;
            req.timeout_secs = 5;
            let destroyed = tokio::time::timeout(
                Duration::from_secs(10),
                self.agent.destroy_sandbox(ctx(RPC), &req),
            )
            .await;
            if !matches!(destroyed, Ok(Ok(_))) {
                tracing::warn!(sandbox_id = %self.id, "the agent did not power the guest off; stopping the VM");
            }
        }
        // A guest whose containers are all gone holds nothing worth more patience.
        let mut ended = None;
        for _ in 0..200 {
            ended = self.vmm_exited();
            if ended.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Ok(mut vm) = self.vm.lock() {
            // A VMM ends by itself with 0 when its guest powers off. Anything else (its
            // seccomp filter stopped it, it crashed, it was killed) is worth an error: the
            // guest's containers may have lost data, and a filter that stops a VMM doing its
            // normal work is a bug.
            if let Some(status) = ended.filter(|s| !s.success()) {
                tracing::error!(
                    sandbox_id = %self.id,
                    "hako-vmm ended badly ({}); {}",
                    describe_exit(status),
                    vm.last_words(5)
                );
            }
            vm.kill();
        }
        for c in self.containers() {
            unshare(&c);
            if c.rootfs_mounted {
                rootfs::unbind(&c.bundle.join("rootfs"));
            }
        }
        if let Some(n) = &self.network {
            n.detach();
        }
        if let Some(cg) = &self.host_cgroup {
            cg.remove();
        }
        remove_sandbox_dir(&self.dir);
        tracing::info!(sandbox_id = %self.id, "sandbox stopped");
    }

    fn save_state(&self) {
        let mut state = SandboxState::new(&self.id);
        state.vmm_pid = self.vmm_pid;
        state.network = self.network.clone();
        state.host_cgroup = self.host_cgroup.clone();
        state.containers = self
            .containers
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Err(e) = state.save(&self.dir) {
            tracing::warn!(sandbox_id = %self.id, "{e:#}");
        }
    }
}

/// Undoes a container's part of the share (its binds, by identity, and its directory).
fn unshare(container: &Container) {
    let part = container.share.lock().ok().and_then(|mut p| p.take());
    if let Some(part) = part
        && let Err(e) = part.remove()
    {
        tracing::warn!(container_id = %container.id, "{e:#}");
    }
}

/// Why a sandbox's VM did not come up: the error, and whether its hako-vmm was killed by a
/// signal (which a template is not to blame for).
struct LaunchFailure {
    error: anyhow::Error,
    vmm_killed: bool,
}

impl From<anyhow::Error> for LaunchFailure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            error,
            vmm_killed: false,
        }
    }
}

/// What a sandbox VM is made of under `config`, sized `size`.
pub fn vm_spec(config: &Config, size: VmSize) -> anyhow::Result<VmSpec> {
    Ok(VmSpec {
        vmm: find_vmm(config.vm.vmm.as_deref())?,
        kernel: existing(config.kernel(), "guest kernel (vm.kernel)")?,
        image: existing(config.image(), "agent image (vm.image)")?,
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        cpu_profile: config.vm.cpu_profile,
        cmdline: config.cmdline(),
        guest_cid: random_cid(),
        netns: None,
        net: Vec::new(),
        jail: None,
        jail_user: None,
        host_cgroup: None,
    })
}

/// Waits for the agent and creates the sandbox in the guest. A guest resumed from a
/// template first gets the time (its clock stopped when the template was made); every guest
/// gets fresh entropy from the host.
async fn connect(
    vm: &mut Vm,
    deadline: Duration,
    id: &str,
    setup: &GuestSetup,
    resumed: bool,
) -> anyhow::Result<AgentServiceClient> {
    let uds = vm.paths.vsock.clone();
    let client = match agent_client::connect_hybrid(&uds, AGENT_API_PORT, deadline, || {
        matches!(vm.exited(), Ok(None))
    })
    .await
    {
        Ok(c) => c,
        // Say how the VMM ended when it did (killed, a refused system call, a bad config).
        Err(e) => match vm.exited() {
            Ok(Some(status)) => anyhow::bail!("{e} (hako-vmm ended: {})", describe_exit(status)),
            _ => anyhow::bail!(e),
        },
    };
    if resumed {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut t = SetGuestDateTimeRequest::new();
        t.sec = now.as_secs() as i64;
        t.usec = i64::from(now.subsec_micros());
        client
            .agent
            .set_guest_date_time(ctx(RPC), &t)
            .await
            .context("SetGuestDateTime")?;
    }
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = id.into();
    req.hostname = setup.hostname.clone();
    req.dns = setup.dns.clone();
    req.entropy = host_entropy();
    req.storages.push(hako_agent_api::shared_fs_storage());
    client
        .agent
        .create_sandbox(ctx(RPC), &req)
        .await
        .context("CreateSandbox")?;
    Ok(client.agent)
}

/// 64 bytes from the host's RNG for the guest's (empty if unreadable: the guest then keeps
/// its own).
fn host_entropy() -> Vec<u8> {
    let mut b = vec![0u8; 64];
    match std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
    {
        Ok(()) => b,
        Err(e) => {
            tracing::warn!("reading /dev/urandom for the guest: {e}");
            Vec::new()
        }
    }
}

fn existing(path: PathBuf, what: &str) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{what} {} does not exist (set it in /etc/hako/config.toml or $HAKO_CONFIG)",
            path.display()
        )
    }
}

/// Unmounts everything under a sandbox directory (each mount checked by its id) and removes
/// it, crossing no mount point that is left and following no symlink.
pub fn remove_sandbox_dir(dir: &Path) {
    if let Err(e) = crate::host::share::remove_dir(dir) {
        tracing::warn!("{e:#}");
    }
}

/// Cleans up after a sandbox whose shim is gone: kills its hako-vmm (if the recorded pid
/// still is that VMM), unmounts and removes `<root>/<id>`. Returns whether there was one.
pub fn clean_up_leftover(root: &Path, id: &str) -> bool {
    let dir = root.join(id);
    if !dir.is_dir() {
        return false;
    }
    let state = SandboxState::load(&dir).ok();
    if let Some(state) = &state
        && state.vmm_pid > 0
        && is_our_vmm(state.vmm_pid, &dir)
    {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(state.vmm_pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{}", state.vmm_pid)).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some(state) = state {
        if let Some(n) = state.network {
            n.detach();
        }
        if let Some(cg) = state.host_cgroup {
            cg.remove();
        }
    }
    remove_sandbox_dir(&dir);
    true
}

/// The process `pid` is a hako-vmm whose config lives in `dir` (pids get reused).
fn is_our_vmm(pid: u32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&cmdline);
    text.contains("hako-vmm") && text.contains(&*dir.to_string_lossy())
}

/// Checks a container or sandbox id (it names directories): runc's `[A-Za-z0-9_+.-]+`, not
/// `.` or `..`, at most 1024 bytes.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if id.is_empty() || id.len() > 1024 || !ok_chars || id == "." || id == ".." {
        bail!("invalid container id {id:?}: use letters, digits and _+.-");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_are_refused() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
