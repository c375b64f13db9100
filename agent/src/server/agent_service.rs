//! AgentService: each RPC unpacks its request, calls the sandbox, and maps the error to a
//! ttrpc status in one place (one mapping per error type).

use std::sync::Arc;

use async_trait::async_trait;
use std::time::Duration;

use hako_agent_api::agent::{
    AddARPNeighborsRequest, ContainerRequest, CreateContainerRequest, CreateSandboxRequest,
    DestroySandboxRequest, Empty, ExecProcessRequest, GetOOMEventRequest, GuestDetailsRequest,
    GuestDetailsResponse, Interface, Interfaces, ListInterfacesRequest, ListProcessesResponse,
    ListRoutesRequest, OOMEvent, ProcessRequest, ReadStreamRequest, ReadStreamResponse,
    RemoveContainerRequest, Routes, SetGuestDateTimeRequest, SignalProcessRequest,
    StatsContainerResponse, TtyWinResizeRequest, UpdateContainerRequest, UpdateInterfaceRequest,
    UpdateRoutesRequest, WaitProcessResponse, WriteStreamRequest, WriteStreamResponse,
};
use hako_agent_api::agent_ttrpc::AgentService;
use ttrpc::r#async::TtrpcContext;

use crate::container::spec::SpecError;
use crate::container::sysctl::SysctlError;
use crate::container::{ContainerError, Containers};
use crate::network::{self, Network, NetworkError};
use crate::process::Process;
use crate::sandbox::{Sandbox, SandboxError};
use crate::storage::StorageError;

pub struct AgentServiceImpl {
    pub sandbox: Arc<Sandbox>,
    pub containers: Arc<Containers>,
}

impl AgentServiceImpl {
    async fn process(&self, id: &str, exec_id: &str) -> ttrpc::Result<Arc<Process>> {
        self.containers
            .process(id, exec_id)
            .await
            .map_err(container_status)
    }

    /// ReadStdout and ReadStderr: up to `len` bytes of one stream, waiting for some.
    async fn read_stream(
        &self,
        req: ReadStreamRequest,
        stderr: bool,
    ) -> ttrpc::Result<ReadStreamResponse> {
        let p = self.process(&req.container_id, &req.exec_id).await?;
        let stream = if stderr { &p.io.stderr } else { &p.io.stdout };
        let mut r = ReadStreamResponse::new();
        r.data = stream.read((req.len as usize).clamp(1, MAX_READ)).await;
        Ok(r)
    }
}

impl AgentServiceImpl {
    /// A netlink connection, if this agent may change the network it is in.
    fn network(&self) -> ttrpc::Result<Network> {
        if !network::allowed(self.sandbox.in_vm()) {
            return Err(network_status(NetworkError::HostNetwork));
        }
        Network::connect().map_err(network_status)
    }
}

/// The ttrpc status for a network error.
fn network_status(e: NetworkError) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match &e {
        NetworkError::Invalid(_) => Code::INVALID_ARGUMENT,
        NetworkError::NoSuchMac(_) | NetworkError::NoSuchName(_) => Code::NOT_FOUND,
        NetworkError::HostNetwork => Code::FAILED_PRECONDITION,
        NetworkError::Socket(_) | NetworkError::Netlink { .. } => Code::INTERNAL,
    };
    to_status(code, &e)
}

/// The removal timeout a request asks for, or the default.
fn remove_timeout(secs: u32) -> Duration {
    match secs {
        0 => DEFAULT_REMOVE_TIMEOUT,
        s => Duration::from_secs(u64::from(s)),
    }
}

/// How long RemoveContainer waits for a killed init when the request gives no timeout.
const DEFAULT_REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest read one ReadStdout/ReadStderr returns.
const MAX_READ: usize = 1 << 20;

/// The ttrpc status for a container error.
fn container_status(e: ContainerError) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match &e {
        ContainerError::Spec(SpecError::RootMissing(_) | SpecError::NoSandbox(_)) => {
            Code::FAILED_PRECONDITION
        }
        ContainerError::Spec(_) | ContainerError::Signal(_) => Code::INVALID_ARGUMENT,
        ContainerError::Storage {
            source:
                StorageError::MountPoint(_) | StorageError::Driver(_) | StorageError::EmptySource { .. },
            ..
        } => Code::INVALID_ARGUMENT,
        ContainerError::Storage { .. } => Code::INTERNAL,
        ContainerError::Exists(_) | ContainerError::ProcessExists { .. } => Code::ALREADY_EXISTS,
        ContainerError::NotFound(_) | ContainerError::ProcessNotFound { .. } => Code::NOT_FOUND,
        ContainerError::Unsupported(_) => Code::UNIMPLEMENTED,
        ContainerError::Sysctl {
            source: SysctlError::Name(_) | SysctlError::NotInVm(_),
            ..
        } => Code::INVALID_ARGUMENT,
        ContainerError::Sysctl { .. } => Code::INTERNAL,
        ContainerError::NoTerminal { .. } => Code::FAILED_PRECONDITION,
        ContainerError::Cgroup {
            source: crate::container::cgroup::CgroupError::Resources(_),
            ..
        } => Code::INVALID_ARGUMENT,
        ContainerError::Runtime { .. } | ContainerError::Cgroup { .. } => Code::INTERNAL,
    };
    to_status(code, &e)
}

/// The ttrpc status for a sandbox error.
fn status(e: SandboxError) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match &e {
        SandboxError::AlreadyCreated(_) => Code::ALREADY_EXISTS,
        SandboxError::NotInVm(_) => Code::FAILED_PRECONDITION,
        SandboxError::Hostname(_) | SandboxError::DateTime(_) => Code::INVALID_ARGUMENT,
        SandboxError::Storage(
            StorageError::MountPoint(_)
            | StorageError::Driver(_)
            | StorageError::EmptySource { .. },
        ) => Code::INVALID_ARGUMENT,
        SandboxError::Storage(_) | SandboxError::Io { .. } => Code::INTERNAL,
    };
    to_status(code, &e)
}

/// The whole error chain as the status message, so the runtime's error names the root cause.
fn to_status(code: ttrpc::Code, e: &dyn std::error::Error) -> ttrpc::Error {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    tracing::warn!(%msg, "request failed");
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

#[async_trait]
impl AgentService for AgentServiceImpl {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.sandbox.create(req).await.map_err(status)?;
        Ok(Empty::new())
    }

    async fn destroy_sandbox(
        &self,
        _: &TtrpcContext,
        req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        let timeout = remove_timeout(req.timeout_secs);
        self.containers.remove_all(timeout).await;
        self.sandbox.destroy(req).await.map_err(status)?;
        Ok(Empty::new())
    }

    async fn guest_details(
        &self,
        _: &TtrpcContext,
        _: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        Ok(self.sandbox.guest_details())
    }

    async fn set_guest_date_time(
        &self,
        _: &TtrpcContext,
        req: SetGuestDateTimeRequest,
    ) -> ttrpc::Result<Empty> {
        self.sandbox
            .set_date_time(req.sec, req.usec)
            .map_err(status)?;
        Ok(Empty::new())
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .create(&req.container_id, &req.oci_spec_json, &req.storages)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .start(&req.container_id)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let timeout = remove_timeout(req.timeout_secs);
        self.containers
            .remove(&req.container_id, timeout)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .exec(&req.container_id, &req.exec_id, &req.process_json)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: ProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        let p = self.process(&req.container_id, &req.exec_id).await?;
        let mut r = WaitProcessResponse::new();
        r.status = p.wait().await;
        Ok(r)
    }

    async fn signal_process(
        &self,
        _: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .signal(&req.container_id, &req.exec_id, req.signal, req.all)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: WriteStreamRequest,
    ) -> ttrpc::Result<WriteStreamResponse> {
        let p = self.process(&req.container_id, &req.exec_id).await?;
        let io = p.io.clone();
        let data = req.data;
        let written = tokio::task::spawn_blocking(move || io.write_stdin(&data))
            .await
            .map_err(|e| to_status(ttrpc::Code::INTERNAL, &e))?
            .map_err(|e| to_status(ttrpc::Code::FAILED_PRECONDITION, &e))?;
        let mut r = WriteStreamResponse::new();
        r.len = written as u32;
        Ok(r)
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read_stream(req, false).await
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read_stream(req, true).await
    }

    async fn close_stdin(&self, _: &TtrpcContext, req: ProcessRequest) -> ttrpc::Result<Empty> {
        let p = self.process(&req.container_id, &req.exec_id).await?;
        p.io.close_stdin();
        Ok(Empty::new())
    }

    async fn pause_container(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .freeze(&req.container_id, true)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn resume_container(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .freeze(&req.container_id, false)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn update_container(
        &self,
        _: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .update(&req.container_id, req.resources_json)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn stats_container(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        self.containers
            .stats(&req.container_id)
            .await
            .map_err(container_status)
    }

    async fn list_processes(
        &self,
        _: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        let mut r = ListProcessesResponse::new();
        r.pids = self
            .containers
            .pids(&req.container_id)
            .await
            .map_err(container_status)?;
        Ok(r)
    }

    async fn tty_win_resize(
        &self,
        _: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers
            .resize(&req.container_id, &req.exec_id, req.rows, req.columns)
            .await
            .map_err(container_status)?;
        Ok(Empty::new())
    }

    async fn update_interface(
        &self,
        _: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<Interface> {
        let want = req.interface.into_option().unwrap_or_default();
        self.network()?
            .update_interface(&want)
            .await
            .map_err(network_status)
    }

    async fn update_routes(
        &self,
        _: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        let routes = req.routes.into_option().unwrap_or_default().routes;
        let mut r = Routes::new();
        r.routes = self
            .network()?
            .update_routes(&routes)
            .await
            .map_err(network_status)?;
        Ok(r)
    }

    async fn list_interfaces(
        &self,
        _: &TtrpcContext,
        _: ListInterfacesRequest,
    ) -> ttrpc::Result<Interfaces> {
        let mut r = Interfaces::new();
        r.interfaces = self
            .network()?
            .list_interfaces()
            .await
            .map_err(network_status)?;
        Ok(r)
    }

    async fn list_routes(&self, _: &TtrpcContext, _: ListRoutesRequest) -> ttrpc::Result<Routes> {
        let mut r = Routes::new();
        r.routes = self
            .network()?
            .list_routes()
            .await
            .map_err(network_status)?;
        Ok(r)
    }

    async fn add_arp_neighbors(
        &self,
        _: &TtrpcContext,
        req: AddARPNeighborsRequest,
    ) -> ttrpc::Result<Empty> {
        self.network()?
            .add_neighbors(&req.neighbors)
            .await
            .map_err(network_status)?;
        Ok(Empty::new())
    }

    async fn get_oom_event(
        &self,
        _: &TtrpcContext,
        _: GetOOMEventRequest,
    ) -> ttrpc::Result<OOMEvent> {
        let id = self.containers.oom.next().await.ok_or_else(|| {
            to_status(
                ttrpc::Code::UNAVAILABLE,
                &std::io::Error::other("the agent is shutting down"),
            )
        })?;
        let mut r = OOMEvent::new();
        r.container_id = id;
        Ok(r)
    }
}
