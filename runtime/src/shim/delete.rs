//! The `delete` action: containerd runs it (in the bundle directory) when a shim is gone
//! without deleting its task. It removes what the task left: the bundle's rootfs mount and,
//! if the task was a sandbox, its VMM, mounts and state directory.

use std::path::Path;
use std::time::SystemTime;

use containerd_shim::protos::api::DeleteResponse;

use super::events::timestamp;
use crate::config::Config;
use crate::sandbox::watchers::SANDBOX_DIED;

pub fn delete(id: &str, bundle: &Path) -> DeleteResponse {
    let rootfs = bundle.join("rootfs");
    if rootfs.exists()
        && let Err(e) = crate::host::share::unmount_tree(&rootfs, true)
    {
        tracing::warn!("{e:#}");
    }
    // The root the sandbox was made under (a CRI handler's ConfigPath may name another
    // than the shim's config), recorded in the bundle.
    let root = super::options::recorded_root(bundle).unwrap_or_else(|| {
        Config::load()
            .unwrap_or_else(|e| {
                tracing::warn!("{e}; cleaning up under the default root");
                Config::default()
            })
            .runtime
            .root
    });
    if crate::sandbox::clean_up_leftover(&root, id) {
        tracing::info!(
            sandbox_id = id,
            "cleaned up a sandbox left by a stopped shim"
        );
    }
    let mut resp = DeleteResponse::new();
    resp.exit_status = SANDBOX_DIED;
    resp.exited_at = Some(timestamp(SystemTime::now())).into();
    resp
}
