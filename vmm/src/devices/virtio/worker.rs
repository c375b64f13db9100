//! A device's worker thread and the eventfd that stops it. The worker's closure gets its own
//! copy of the kill eventfd to wait on; when stopped it returns its backend (a file, a muxer)
//! so the device can be activated again after a driver reset.

use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use super::ActivateError;
use crate::seccomp::Profile;

/// A running worker returning `T` when stopped.
pub struct Worker<T> {
    handle: JoinHandle<T>,
    kill: EventFd,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts thread `name` running `body(kill)`; `body` must return once `kill` is readable.
    /// The thread is confined to seccomp `profile` (see `crate::threads`).
    pub fn spawn(
        name: &str,
        profile: Profile,
        body: impl FnOnce(EventFd) -> T + Send + 'static,
    ) -> Result<Self, ActivateError> {
        let kill = EventFd::new(libc::EFD_NONBLOCK).map_err(ActivateError::Worker)?;
        let theirs = kill.try_clone().map_err(ActivateError::Worker)?;
        let handle = crate::threads::spawn(name, profile, move || body(theirs))
            .map_err(ActivateError::Worker)?;
        Ok(Self { handle, kill })
    }

    /// Stops the worker and returns what it hands back; None if it panicked.
    pub fn stop(self) -> Option<T> {
        let _ = self.kill.write(1);
        self.handle.join().ok()
    }
}

/// Stops the device's worker, if one runs, and puts what it hands back into `backend` for the
/// next activation. False when the worker panicked: the backend is lost and the device cannot
/// be activated again.
pub fn stop_into<T: Send + 'static>(
    worker: &mut Option<Worker<T>>,
    backend: &mut Option<T>,
) -> bool {
    match worker.take().map(Worker::stop) {
        None => true,
        Some(Some(b)) => {
            *backend = Some(b);
            true
        }
        Some(None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_worker_hands_its_state_back() {
        let w = Worker::spawn("test-worker", Profile::Block, |kill: EventFd| {
            // Blocks until stopped (the eventfd is non-blocking, so poll it).
            while kill.read().is_err() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            42
        })
        .unwrap();
        assert_eq!(w.stop(), Some(42));
    }
}
