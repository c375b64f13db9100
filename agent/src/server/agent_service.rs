//! AgentService: each RPC unpacks its request, calls the sandbox, and maps the error to a
//! ttrpc status in one place. RPCs not implemented yet answer UNIMPLEMENTED with their name.

use std::sync::Arc;

use async_trait::async_trait;
use hako_agent_api::agent::{
    CreateSandboxRequest, DestroySandboxRequest, Empty, GuestDetailsRequest, GuestDetailsResponse,
    SetGuestDateTimeRequest,
};
use hako_agent_api::agent_ttrpc::AgentService;
use ttrpc::r#async::TtrpcContext;

use crate::sandbox::{Sandbox, SandboxError};
use crate::storage::StorageError;

pub struct AgentServiceImpl {
    pub sandbox: Arc<Sandbox>,
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
    // The whole chain, so the runtime's error names the root cause.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
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
}
