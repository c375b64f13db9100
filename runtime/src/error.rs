//! The shim's errors by kind, and the one place they become ttrpc status codes (containerd
//! acts on the code: NotFound after an exit is expected, for instance).

use containerd_shim::protos::ttrpc;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        use ttrpc::Code;
        let code = match &e {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            // An agent that refused by its policy: containerd and the user see that code.
            ShimError::Internal(e) if agent_denied(e) => Code::PERMISSION_DENIED,
            ShimError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

/// Whether the agent refused the request by its RPC policy (PERMISSION_DENIED).
fn agent_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(cause.downcast_ref::<ttrpc::Error>(),
            Some(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::PERMISSION_DENIED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_become_codes() {
        let e: ttrpc::Error = ShimError::NotFound("process c/e1 not found".into()).into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), ttrpc::Code::NOT_FOUND);
                assert_eq!(s.message(), "process c/e1 not found");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agent_policy_refusal_keeps_its_code() {
        let refused = ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::PERMISSION_DENIED,
            "ExecProcess is denied by this sandbox's agent policy",
        ));
        let e = anyhow::Error::from(refused).context("exec e1 in c1");
        match ttrpc::Error::from(ShimError::Internal(e)) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), ttrpc::Code::PERMISSION_DENIED);
                assert!(s.message().contains("agent policy"), "{}", s.message());
            }
            other => panic!("{other:?}"),
        }
    }
}
