//! Hako's runtime library: the containerd shim, the `hako` CLI's commands, the configuration,
//! sandboxes (VM, agent client, containers, stdio) and their persisted state.
#![deny(unsafe_code)]

pub mod agent_client;
pub mod backend;
pub mod binary_logger;
pub mod cli;
pub mod config;
pub mod error;
pub mod features;
pub mod hooks;
pub mod host;
pub mod io;
pub mod network;
pub mod sandbox;
pub mod shim;
pub mod state;
pub mod template;
