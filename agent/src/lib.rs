//! The Hako agent: PID 1 of the sandbox VM (or a host process in tests), serving the agent API
//! over ttrpc. See docs/ARCHITECTURE.md for the module tree.
#![deny(unsafe_code)]

pub mod config;
pub mod container;
pub mod entropy;
pub mod init;
pub mod io;
pub mod logging;
pub mod network;
pub mod process;
pub mod sandbox;
pub mod server;
pub mod storage;

/// The agent's version, reported by `--version` and the Version RPC.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One line that says what this agent build is and what it serves.
pub fn banner() -> String {
    format!(
        "hako-agent {VERSION} (API {}.{} on vsock port {}, shared fs tag {})",
        hako_agent_api::API_MAJOR,
        hako_agent_api::API_MINOR,
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
