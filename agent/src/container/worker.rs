//! The thread libcontainer's blocking calls run on: started once with the agent, so a
//! container's lifecycle starts no thread (in a guest each thread start is a dozen emulated
//! system calls, and tokio's blocking pool starts one whenever its idle threads have timed out
//! or not yet gone back to idle). Calls run one at a time, in the order they were sent.

use std::sync::mpsc;

/// A call for the worker.
type Job = Box<dyn FnOnce() + Send>;

/// The worker has ended (its thread could not start, or the agent is going away).
#[derive(Debug, thiserror::Error)]
#[error("the container worker thread has ended")]
pub struct WorkerGone;

/// Runs blocking calls on one long-lived thread.
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

impl Worker {
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("containers".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking call fails only itself (its caller sees WorkerGone).
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` on the worker and waits (asynchronously) for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| WorkerGone)?;
        rx.await.map_err(|_| WorkerGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn calls_run_in_order_on_one_thread_and_a_panic_fails_only_itself() {
        let w = Worker::start().unwrap();
        let first = w.run(|| std::thread::current().id()).await.unwrap();
        assert!(w.run(|| panic!("boom")).await.is_err());
        let second = w.run(|| std::thread::current().id()).await.unwrap();
        assert_eq!(first, second);
        assert_ne!(first, std::thread::current().id());
    }
}
