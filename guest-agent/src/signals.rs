//! The signal thread: SIGCHLD reaps, stop signals run a callback.
//!
//! The signals are blocked in the calling thread before any other thread
//! exists (threads inherit the mask) and taken with `sigwaitinfo` on one
//! thread, so no code runs in signal-handler context. Empty handlers are
//! installed too: PID 1 only receives signals it handles.

use std::io;
use std::sync::Arc;

use crate::reaper::Reaper;
use crate::{console, sys};

/// Signals that ask the agent to stop everything.
pub const STOP: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGPWR];

const HANDLED: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGHUP,
    libc::SIGQUIT,
];

/// Blocks the handled signals and starts the thread; `on_stop` runs (on
/// that thread) for SIGTERM, SIGINT and SIGPWR.
pub fn start<F>(reaper: &Arc<Reaper>, on_stop: F) -> io::Result<()>
where
    F: Fn(libc::c_int) + Send + 'static,
{
    let set = sys::SigSet::of(&HANDLED);
    set.block()?;
    for sig in HANDLED {
        sys::install_noop_handler(sig)?;
    }
    let reaper = reaper.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let sig = match set.wait() {
                Ok(sig) => sig,
                Err(e) => {
                    console::line(format_args!("sigwaitinfo failed: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            if sig == libc::SIGCHLD {
                reaper.reap();
            } else if STOP.contains(&sig) {
                on_stop(sig);
            } else {
                console::line(format_args!("ignoring {}", sys::signal_name(sig)));
            }
        })?;
    Ok(())
}
