//! A CNI pod network for end-to-end tests and benchmarks, kept off the host: containerd runs
//! in a network namespace the test makes (`nsenter --net`), so the CNI plugins it calls
//! (Debian's bridge + host-local) make their bridge and veths there. The bridge's side of
//! that namespace (the gateway address) stands for "the host" or "another node" in checks.

use std::path::Path;

use crate::containerd::{Containerd, Release};
use crate::netns::Netns;

/// A bridge network `<subnet>.0/24` (gateway `<subnet>.1`) with the given MTU.
pub fn bridge_conflist(bridge: &str, subnet: &str, mtu: u32, ipam_dir: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "hako-test",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "mtu": {mtu},
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{subnet}.0/24"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}"#,
        ipam = ipam_dir.display()
    )
}

/// containerd in a namespace of its own with a CNI bridge network. Dropping it stops
/// containerd, then deletes the namespace (with the bridge) and the empty `k8s.io` cgroup
/// parents containerd made for runc pods (it never removes them), if they were not there
/// before.
pub struct CniContainerd {
    pub containerd: Containerd,
    pub ns: Netns,
    /// The bridge's address: a server bound here is "outside the pod".
    pub gateway: String,
    _ipam: tempfile::TempDir,
    cgroup_parents_were_there: bool,
}

/// containerd's CRI cgroup parent, in every cgroup v1 hierarchy.
fn cri_cgroup_parents() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("k8s.io"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the empty directories under and at `dir`, deepest first (a cgroup with a process
/// stays).
fn remove_empty_cgroups(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_cgroups(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for CniContainerd {
    fn drop(&mut self) {
        if !self.cgroup_parents_were_there {
            for p in cri_cgroup_parents() {
                remove_empty_cgroups(&p);
            }
        }
    }
}

impl CniContainerd {
    /// containerd `release` in a namespace `prefix` names, on the network `<subnet>.0/24`.
    pub fn start(release: Release, prefix: &str, subnet: &str, mtu: u32) -> Result<Self, String> {
        let cgroup_parents_were_there = !cri_cgroup_parents().is_empty();
        let ns = Netns::create(prefix)?;
        let ipam = tempfile::tempdir().map_err(|e| e.to_string())?;
        let conflist = bridge_conflist("hkbr0", subnet, mtu, ipam.path());
        let containerd = Containerd::start_with_network(release, &ns.path(), &conflist)?;
        Ok(Self {
            containerd,
            ns,
            gateway: format!("{subnet}.1"),
            _ipam: ipam,
            cgroup_parents_were_there,
        })
    }
}
