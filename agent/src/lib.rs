//! The Hako agent. This foundation holds only what the guest image needs to exist: a binary
//! that identifies itself. The API server, PID 1 duties and containers arrive with the agent
//! issue (see docs/ARCHITECTURE.md).
#![deny(unsafe_code)]

/// The agent's version, reported by `--version` and later by the Version RPC.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One line that says what this agent build is and what it serves.
pub fn banner() -> String {
    format!(
        "hako-agent {VERSION} (API on vsock port {}, shared fs tag {})",
        hako_agent_api::AGENT_API_PORT,
        hako_agent_api::SHARED_FS_TAG
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn banner_names_version_and_port() {
        let b = super::banner();
        assert!(b.contains(super::VERSION));
        assert!(b.contains("1024"));
    }
}
