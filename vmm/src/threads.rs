//! Where device worker threads come from. With seccomp on, a new thread inherits its
//! creator's filter, and a device is activated on the vCPU thread whose MMIO write asked for
//! it; a worker started there could never make a call the vCPU's list lacks. So workers are
//! started by one spawner thread, itself confined to the union of the workers' lists, and
//! each worker then narrows itself to its own profile before running its body.

use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use crate::seccomp::{self, Profile};

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: OnceLock<Sender<Job>> = OnceLock::new();

/// Starts the spawner thread. Call it once, after the base seccomp layer and before any
/// device can be activated; without it, [`spawn`] starts threads from the caller.
pub fn start_spawner() -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("spawner".into())
        .spawn(move || {
            seccomp::confine(Profile::Spawner);
            for job in rx {
                job();
            }
        })?;
    if SPAWNER.set(tx).is_err() {
        tracing::warn!("the worker spawner was already started");
    }
    Ok(())
}

/// Starts thread `name`, confined to `profile`, running `body`.
pub fn spawn<T: Send + 'static>(
    name: &str,
    profile: Profile,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    let builder = std::thread::Builder::new().name(name.to_owned());
    let start = move || {
        builder.spawn(move || {
            seccomp::confine(profile);
            body()
        })
    };
    let Some(spawner) = SPAWNER.get() else {
        return start();
    };
    let (reply, started) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply.send(start());
    });
    spawner
        .send(job)
        .map_err(|_| std::io::Error::other("the worker spawner has stopped"))?;
    started
        .recv()
        .map_err(|_| std::io::Error::other("the worker spawner dropped a request"))?
}
