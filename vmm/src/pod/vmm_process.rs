//! The pod's VMM process: forked from the supervisor, without exec.
//!
//! The VMM runs the same code as `husk vm` ([`crate::builder::run_to_status`]
//! on a [`PreparedVm`]: checked and with its files open before the fork), in a process of
//! its own — its death is visible to the supervisor, which records why, and
//! it is jailed on its own ([`crate::jail`]). Forking without exec spares a second
//! program start (dynamic loading, faulting in the binary), which is the
//! largest host-side cost of `husk run` after the CLI's own start: about
//! 0.2 s of a 3 s pod run in the nested testbed, ~2 ms on hardware.
//!
//! Forking a Rust process is safe only while it has one thread (a lock held
//! by another thread at the fork stays held forever in the child): the
//! supervisor forks before it starts any thread. The child first moves itself
//! into the pod's host cgroup ([`crate::pod::cgroup::join`]: before any thread
//! and before the jail, whose cgroup namespace is rooted where it is then),
//! then puts every signal back to its default and unblocks them (it must not run the
//! supervisor's handlers), leaves the terminal's process group (a Ctrl-C
//! reaches the supervisor, which forwards it to the app), dies with the
//! supervisor (`PR_SET_PDEATHSIG`), and `_exit`s with the VMM's status.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::builder::Jail;
use crate::vm_config::PreparedVm;

/// A forked VMM, reaped through `waitpid`.
#[derive(Debug)]
pub struct VmmProcess {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl VmmProcess {
    /// Forks and runs `vm` in the child, its stderr to `stderr` and its
    /// stdin and stdout on /dev/null, in the cgroup whose `cgroup.procs` is
    /// `cgroup` (if any). Call only while this process has a single thread.
    /// This process keeps nothing of `vm`: its descriptors are closed here
    /// once the child has its copies.
    pub fn fork(
        vm: PreparedVm,
        stderr: &File,
        jail: Jail,
        cgroup: Option<&File>,
    ) -> io::Result<VmmProcess> {
        ensure_single_thread()?;
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        // SAFETY: getpid() has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the caller guarantees this process has one thread, so the
        // child gets a consistent copy of all memory and locks.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => child(vm, stderr, &null, parent, jail, cgroup),
            pid => Ok(VmmProcess { pid, status: None }),
        }
    }

    /// The VMM's pid.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    fn wait_flags(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            let mut raw = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r == self.pid {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_flags(libc::WNOHANG)
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.wait_flags(0)?
            .ok_or_else(|| io::Error::other("waitpid returned no status"))
    }
}

/// Refuses while this process has more than one thread: a fork then could
/// hand the child a lock another thread holds, forever.
fn ensure_single_thread() -> io::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork the VMM from a process with {threads} threads"
        )));
    }
    Ok(())
}

/// The child's side of the fork: set up, run the VMM, `_exit`.
fn child(
    vm: PreparedVm,
    stderr: &File,
    null: &File,
    parent: libc::pid_t,
    jail: Jail,
    cgroup: Option<&File>,
) -> ! {
    if let Some(procs) = cgroup {
        if let Err(e) = crate::pod::cgroup::join(procs) {
            use std::io::Write;
            let _ = writeln!(
                &*stderr,
                "husk: cgroup: cannot move the VMM into its cgroup: {e}"
            );
            // SAFETY: _exit ends the process without running anything of ours.
            unsafe { libc::_exit(crate::failure::Failure::Runtime.exit_status()) };
        }
    }
    if crate::process::die_with_parent(libc::SIGKILL, parent).is_err() {
        // The supervisor died before PDEATHSIG was armed.
        // SAFETY: _exit ends the process without running anything of ours.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: setpgid(0, 0) makes this process a group leader; integers only.
    unsafe { libc::setpgid(0, 0) };
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: restoring a signal's default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
    let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset writes into the set we own.
    unsafe { libc::sigemptyset(&mut none) };
    // SAFETY: unblocks every signal; valid pointer, no old set wanted.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) };
    for (from, to) in [
        (null.as_raw_fd(), libc::STDIN_FILENO),
        (null.as_raw_fd(), libc::STDOUT_FILENO),
        (stderr.as_raw_fd(), libc::STDERR_FILENO),
    ] {
        // SAFETY: dup2 between descriptors this process holds.
        unsafe { libc::dup2(from, to) };
    }
    // The jail (on by default) closes every descriptor inherited from the
    // supervisor but stdio and `vm`'s; `stderr` and `null` are never used
    // again (nor dropped: this process ends in `_exit`).
    let code = crate::builder::run_to_status(vm, jail);
    // SAFETY: _exit skips the supervisor's atexit handlers and buffered
    // output that this copy of the process must not flush twice.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_while_another_thread_runs() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let err = ensure_single_thread().unwrap_err();
        assert!(err.to_string().contains("threads"), "{err}");
        drop(tx);
        let _ = other.join();
    }
}
