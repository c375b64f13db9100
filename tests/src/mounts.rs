//! A thread with a mount namespace of its own (every mount private), for suites that make
//! mounts as root without any reaching the host's.

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// Runs `f` on a thread that unshared its mount namespace (and file-system attributes) and
/// made every mount private; its mounts vanish with it.
pub fn in_private_mounts<T: Send>(
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
                .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| format!("making / private: {e}"))?;
            f()
        })
        .join()
        .map_err(|_| "the namespaced thread panicked".to_string())?
    })
}
