//! The agent API policy's vocabulary, shared by the runtime (which writes it on the guest
//! kernel command line) and the agent (which enforces it): which RPCs exist, which the
//! runtime needs for every sandbox, and how a deny list is spelt.
//!
//! A sandbox's agent answers a denied RPC with `PERMISSION_DENIED`; the guest cannot change
//! the list (the kernel command line is the host's). Only the host may call at all: the agent
//! accepts vsock connections from the host's CID only ([`VMADDR_CID_HOST`]).

use std::collections::BTreeSet;

/// The host's vsock context ID: the only peer the agent serves.
pub const VMADDR_CID_HOST: u32 = 2;

/// Every AgentService RPC, by its ttrpc method name.
pub const AGENT_RPCS: &[&str] = &[
    "CreateSandbox",
    "DestroySandbox",
    "GuestDetails",
    "SetGuestDateTime",
    "CreateContainer",
    "StartContainer",
    "RemoveContainer",
    "PauseContainer",
    "ResumeContainer",
    "UpdateContainer",
    "StatsContainer",
    "ListProcesses",
    "ExecProcess",
    "WaitProcess",
    "SignalProcess",
    "WriteStdin",
    "ReadStdout",
    "ReadStderr",
    "CloseStdin",
    "TtyWinResize",
    "GetOOMEvent",
    "UpdateInterface",
    "UpdateRoutes",
    "ListInterfaces",
    "ListRoutes",
    "AddARPNeighbors",
];

/// What the runtime calls for every sandbox and container (lifecycle, I/O, OOM events, the
/// clock after a template resume, the pod's network): a policy cannot deny these.
pub const REQUIRED_RPCS: &[&str] = &[
    "CreateSandbox",
    "DestroySandbox",
    "SetGuestDateTime",
    "CreateContainer",
    "StartContainer",
    "RemoveContainer",
    "WaitProcess",
    "SignalProcess",
    "WriteStdin",
    "ReadStdout",
    "ReadStderr",
    "CloseStdin",
    "GetOOMEvent",
    "UpdateInterface",
    "UpdateRoutes",
    "AddARPNeighbors",
];

/// The guest kernel command-line option carrying the denied RPCs, comma-separated.
pub const DENY_OPTION: &str = "agent.deny=";

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Not an AgentService RPC.
    Unknown(String),
    /// The runtime needs it for every sandbox.
    Required(String),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(rpc) => write!(
                f,
                "{rpc:?} is not an agent RPC (known: {})",
                AGENT_RPCS.join(", ")
            ),
            Self::Required(rpc) => write!(
                f,
                "{rpc} cannot be denied: the runtime needs it for every sandbox"
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// The RPCs a sandbox's agent refuses, from an optional allow list (everything else is
/// denied) and a deny list. Errors name an unknown RPC or a required one left out.
pub fn denied_rpcs(
    allow: Option<&[String]>,
    deny: &[String],
) -> Result<BTreeSet<String>, PolicyError> {
    for rpc in allow.unwrap_or_default().iter().chain(deny) {
        if !AGENT_RPCS.contains(&rpc.as_str()) {
            return Err(PolicyError::Unknown(rpc.clone()));
        }
    }
    let mut denied: BTreeSet<String> = deny.iter().cloned().collect();
    if let Some(allow) = allow {
        denied.extend(
            AGENT_RPCS
                .iter()
                .filter(|rpc| !allow.iter().any(|a| a == *rpc))
                .map(|rpc| (*rpc).to_owned()),
        );
    }
    if let Some(rpc) = denied.iter().find(|r| REQUIRED_RPCS.contains(&r.as_str())) {
        return Err(PolicyError::Required(rpc.clone()));
    }
    Ok(denied)
}

/// The kernel command-line option for a deny list (None when nothing is denied).
pub fn deny_option(denied: &BTreeSet<String>) -> Option<String> {
    (!denied.is_empty()).then(|| {
        format!(
            "{DENY_OPTION}{}",
            denied.iter().cloned().collect::<Vec<_>>().join(",")
        )
    })
}

/// The deny list an option's value names (empty names are skipped).
pub fn parse_deny_list(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_deny_list_round_trips_through_the_command_line() {
        let denied = denied_rpcs(None, &names(&["ExecProcess", "TtyWinResize"])).unwrap();
        let option = deny_option(&denied).unwrap();
        assert_eq!(option, "agent.deny=ExecProcess,TtyWinResize");
        let value = option.strip_prefix(DENY_OPTION).unwrap();
        assert_eq!(parse_deny_list(value), denied);
        assert_eq!(deny_option(&BTreeSet::new()), None);
        assert_eq!(
            parse_deny_list(" ,ExecProcess,,"),
            denied_rpcs(None, &names(&["ExecProcess"])).unwrap()
        );
    }

    #[test]
    fn an_allow_list_denies_everything_else() {
        let allow = names(REQUIRED_RPCS);
        let denied = denied_rpcs(Some(&allow), &[]).unwrap();
        assert!(denied.contains("ExecProcess"));
        assert!(denied.contains("GuestDetails"));
        assert_eq!(denied.len(), AGENT_RPCS.len() - REQUIRED_RPCS.len());
        assert!(denied_rpcs(None, &[]).unwrap().is_empty());
    }

    #[test]
    fn unknown_and_required_rpcs_are_refused_by_name() {
        let e = denied_rpcs(None, &names(&["Exec"])).unwrap_err();
        assert_eq!(e, PolicyError::Unknown("Exec".into()));
        assert!(e.to_string().contains("ExecProcess"), "{e}");
        assert_eq!(
            denied_rpcs(None, &names(&["WaitProcess"])).unwrap_err(),
            PolicyError::Required("WaitProcess".into())
        );
        // An allow list that leaves out a required RPC is refused too.
        let e = denied_rpcs(Some(&names(&["CreateSandbox"])), &[]).unwrap_err();
        assert!(matches!(e, PolicyError::Required(_)), "{e}");
    }

    #[test]
    fn every_required_rpc_is_an_agent_rpc() {
        for rpc in REQUIRED_RPCS {
            assert!(AGENT_RPCS.contains(rpc), "{rpc}");
        }
    }
}
