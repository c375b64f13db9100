//! Termination signals as VMM events: SIGTERM, SIGINT and SIGHUP are blocked in every thread
//! and taken by one thread with sigwait(2), which tells the VMM thread to stop.
#![allow(unsafe_code)]

use std::sync::mpsc::Sender;

use crate::vmm::VmmEvent;

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own; all-zero bytes are
    // a valid starting value for the plain-data type.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the stop signals in the calling thread; threads it spawns afterwards inherit the
/// mask. Call before creating any other thread.
pub fn block_stop_signals() -> std::io::Result<()> {
    let set = stop_set();
    // SAFETY: pthread_sigmask reads a valid sigset_t and may write nothing (null old set).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Starts the thread that turns a stop signal into `VmmEvent::Signal`.
pub fn watch(events: Sender<VmmEvent>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            crate::seccomp::confine(crate::seccomp::Profile::Signals);
            let set = stop_set();
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: sigwait reads a valid sigset_t and writes one c_int we own.
                let rc = unsafe { libc::sigwait(&set, &mut signal) };
                if rc != 0 {
                    continue;
                }
                if events.send(VmmEvent::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}
