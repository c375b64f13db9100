//! Hako's runtime library: the `hako` CLI's commands (`check`, `run`), the agent client, the
//! VM backend and sandbox state; the containerd shim arrives with its issue.
#![deny(unsafe_code)]

pub mod agent_client;
pub mod backend;
pub mod cli;
pub mod sandbox;
