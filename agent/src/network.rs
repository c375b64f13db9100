//! The guest's network: the RPCs' netlink work lives in [`hako_agent_api::netlink`] (shared
//! with the runtime, which reads the pod's network with it); what is the agent's own is the
//! rule of when it may change a network at all.
//!
//! Outside a VM the agent changes a network only in a network namespace of its own (see
//! [`allowed`]), so host tests run it in one.

pub use hako_agent_api::netlink::{Network, NetworkError};

/// True when changing this process's network cannot touch the host's: in a VM, or in a
/// network namespace of its own: not its parent's, nor PID 1's where that can be read
/// (containers often hide PID 1's).
pub fn allowed(in_vm: bool) -> bool {
    if in_vm {
        return true;
    }
    let ns = |p: &str| std::fs::read_link(p).ok();
    let Some(me) = ns("/proc/self/ns/net") else {
        return false;
    };
    let parent = ns(&format!(
        "/proc/{}/ns/net",
        std::os::unix::process::parent_id()
    ));
    let init = ns("/proc/1/ns/net");
    parent.is_some_and(|p| p != me) && init.is_none_or(|i| i != me)
}
