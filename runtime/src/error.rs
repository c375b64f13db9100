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
            ShimError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
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
}
