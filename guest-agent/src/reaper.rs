//! Child reaping: the one place in the agent that calls `waitpid`.
//!
//! As PID 1 (or a child subreaper on the host) the agent inherits every
//! orphan, so reaping must be global (`waitpid(-1)`) or zombies pile up. A
//! global reaper races with code that spawns a child and wants its status:
//! the child can exit and be reaped before its pid is known. Spawners therefore
//! hold [`Reaper::spawn_guard`] (a read lock) from before the fork until they
//! have registered the pid; [`Reaper::reap`] takes the write lock, so it never
//! runs in between. Statuses of pids nobody registered (orphans) are dropped.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// Decodes a `waitpid` status word (only called for terminated children).
    pub fn from_wait_status(status: libc::c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }
}

#[derive(Default)]
struct Table {
    waiters: HashMap<libc::pid_t, Sender<Exit>>,
    /// Set when the last `waitpid` said there are no children at all.
    childless: bool,
}

/// The global reaper; one per agent process.
#[derive(Default)]
pub struct Reaper {
    spawn_lock: RwLock<()>,
    table: Mutex<Table>,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Held while forking a child and registering its pid.
    pub fn spawn_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.spawn_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers interest in `pid`'s exit. Call with a spawn guard held.
    pub fn register(&self, pid: libc::pid_t) -> Receiver<Exit> {
        let (tx, rx) = channel();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.waiters.insert(pid, tx);
        table.childless = false;
        rx
    }

    /// Reaps every terminated child without blocking; call on SIGCHLD.
    /// Returns how many were reaped.
    pub fn reap(&self) -> usize {
        let _exclusive = self.spawn_lock.write().unwrap_or_else(|e| e.into_inner());
        let mut reaped = 0;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                reaped += 1;
                let exit = Exit::from_wait_status(status);
                let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = table.waiters.remove(&pid) {
                    // The receiver may be gone (nobody waits any more): fine.
                    let _ = tx.send(exit);
                }
                continue;
            }
            let err = (pid < 0).then(io::Error::last_os_error);
            match err {
                Some(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    self.table
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .childless = true;
                }
                _ => {}
            }
            return reaped;
        }
    }

    /// True when the last reap found no children left at all.
    pub fn childless(&self) -> bool {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .childless
    }

    /// Pids that somebody is still waiting for (live registered children).
    pub fn registered(&self) -> Vec<libc::pid_t> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.waiters.keys().copied().collect()
    }
}
