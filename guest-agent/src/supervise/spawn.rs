//! Starting one child process with its namespaces, cgroup, ids and limits.
//!
//! `std::process::Command` does the fork, stdio, environment, PATH search
//! and exec-error reporting; everything else happens in its `pre_exec` hook,
//! in the order the kernel needs: join namespaces (the mount namespace
//! changes what paths mean), leave or create others, join the cgroup (before
//! the process can fork), new session and controlling terminal, rlimits,
//! working directory, the capability bounding set (needs CAP_SETPCAP), then
//! supplementary groups, gid and uid (after the uid switch nothing
//! privileged is possible), `no_new_privs`, and an app's seccomp filter
//! last (`container::seccomp`) — or, without `no_new_privs`, the filter
//! before the uid switch, while the child still has CAP_SYS_ADMIN, which
//! installing one then needs. The hook only makes raw
//! system calls on data prepared before the fork, as async-signal safety
//! requires in a multi-threaded parent.
//!
//! PID namespaces apply to the *children* of the caller, so they are entered
//! or created by a short-lived thread (namespaces are per thread) that then
//! forks: the child is born inside.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;

use crate::reaper::{Exit, Reaper};

/// User and groups a process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Where the child's PID namespace comes from.
#[derive(Debug, Default)]
pub enum PidNs {
    #[default]
    Inherit,
    /// A new one; the child is its PID 1.
    New,
    /// An existing one (an open `/proc/<pid>/ns/pid`).
    Join(OwnedFd),
}

/// Everything about a child except its stdio.
#[derive(Debug, Default)]
pub struct Launch {
    /// Program and arguments; the program is searched in the child's PATH.
    pub args: Vec<String>,
    /// The complete environment, `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub ids: Ids,
    /// (RLIMIT_* number, soft, hard).
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    /// Namespaces to join, as (open ns file, CLONE_NEW* type).
    pub setns: Vec<(OwnedFd, libc::c_int)>,
    /// CLONE_NEW* flags to unshare in the child.
    pub unshare: libc::c_int,
    /// A directory to make the child's root (after joining namespaces):
    /// joining a mount namespace alone leaves the child at that
    /// namespace's absolute root, which is not where a container pivoted.
    pub root: Option<OwnedFd>,
    pub pid_ns: PidNs,
    /// An open `cgroup.procs` to join.
    pub cgroup_procs: Option<OwnedFd>,
    /// Make stdin the controlling terminal (TTY processes).
    pub ctty: bool,
    /// Extra descriptors for the child, as (fd, number it gets).
    pub extra_fds: Vec<(OwnedFd, RawFd)>,
    /// Capabilities to drop from the bounding set (container processes;
    /// see `container::privs`). The ambient set is cleared with them.
    pub drop_caps: Vec<libc::c_int>,
    /// Set `PR_SET_NO_NEW_PRIVS`: exec never grants privileges (set-id
    /// bits and file capabilities are ignored).
    pub no_new_privs: bool,
    /// A seccomp filter (app processes; see `container::seccomp`): the
    /// last step after `no_new_privs`, or without it before the uid switch.
    pub seccomp: Option<crate::container::seccomp::Program>,
    /// Signals the child starts with blocked (otherwise none): a container
    /// init must not lose a signal between its exec and its own setup.
    pub blocked_signals: Vec<libc::c_int>,
}

/// A process that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no command given")]
    NoCommand,
    #[error("argument, environment or path contains a NUL byte")]
    Nul,
    #[error("cannot start {program:?}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the PID namespace")]
    PidNs(#[source] io::Error),
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves `fd` to a number >= 100 so `dup2` onto low numbers in the child
/// cannot clobber another source descriptor.
fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Starts the child and registers it with the reaper. Returns its pid (in
/// the agent's PID namespace) and the receiver of its exit.
pub fn spawn(
    launch: Launch,
    stdio: [Stdio; 3],
    reaper: &Reaper,
) -> Result<(i32, Receiver<Exit>), SpawnError> {
    let program = launch.args.first().ok_or(SpawnError::NoCommand)?.clone();
    let exec_err = |source| SpawnError::Exec {
        program: program.clone(),
        source,
    };
    let mut cmd = Command::new(&program);
    cmd.args(&launch.args[1..]).env_clear();
    for entry in &launch.env {
        if let Some((k, v)) = entry.split_once('=') {
            cmd.env(k, v);
        }
    }
    let [stdin, stdout, stderr] = stdio;
    cmd.stdin(stdin).stdout(stdout).stderr(stderr);

    let cwd = launch
        .cwd
        .as_deref()
        .map(CString::new)
        .transpose()
        .map_err(|_| SpawnError::Nul)?;
    let mut extra = Vec::new();
    for (fd, target) in launch.extra_fds {
        extra.push((high_fd(fd).map_err(exec_err)?, target));
    }
    let Launch {
        ids,
        rlimits,
        setns,
        unshare,
        root,
        cgroup_procs,
        ctty,
        pid_ns,
        drop_caps,
        no_new_privs,
        seccomp,
        ..
    } = launch;
    let groups: Vec<libc::gid_t> = ids.groups.clone();
    let child_mask = crate::sys::SigSet::of(&launch.blocked_signals);
    let hook = move || -> io::Result<()> {
        // The agent blocks the signals it waits for; children must start
        // with their own mask (std does not reset it).
        child_mask.set_mask()?;
        for (fd, nstype) in &setns {
            // SAFETY: setns on an open namespace fd we own.
            check(unsafe { libc::setns(fd.as_raw_fd(), *nstype) })?;
        }
        if unshare != 0 {
            // SAFETY: unshare takes integer flags.
            check(unsafe { libc::unshare(unshare) })?;
        }
        if let Some(fd) = &root {
            // SAFETY: fchdir on an open directory fd we own.
            check(unsafe { libc::fchdir(fd.as_raw_fd()) })?;
            // SAFETY: chroot with a static C string.
            check(unsafe { libc::chroot(c".".as_ptr()) })?;
        }
        if let Some(fd) = &cgroup_procs {
            // Writing "0" to cgroup.procs moves the writer itself.
            // SAFETY: writes one byte from a static buffer to an fd we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: setsid takes no arguments; the forked child is never a
        // process-group leader, so it succeeds.
        check(unsafe { libc::setsid() })?;
        if ctty {
            // SAFETY: TIOCSCTTY on our stdin (the PTY slave) with arg 0.
            check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })?;
        }
        for &(resource, soft, hard) in &rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: `lim` is a valid rlimit for the call.
            check(unsafe { libc::setrlimit(resource as _, &lim) })?;
        }
        if let Some(cwd) = &cwd {
            // SAFETY: `cwd` is a valid NUL-terminated string.
            check(unsafe { libc::chdir(cwd.as_ptr()) })?;
        }
        for (fd, target) in &extra {
            // SAFETY: dup2 between descriptors; dup2 clears FD_CLOEXEC on
            // `target`, which is what passes it on.
            check(unsafe { libc::dup2(fd.as_raw_fd(), *target) })?;
        }
        if !drop_caps.is_empty() {
            for &cap in &drop_caps {
                // SAFETY: prctl with integer arguments. EINVAL means the
                // kernel does not know the capability: nothing to drop.
                let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
                if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(io::Error::last_os_error());
                }
            }
            // SAFETY: prctl with integer arguments (clears the ambient set).
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                )
            };
        }
        // Without no_new_privs a filter needs CAP_SYS_ADMIN, which the uid
        // switch takes away from a user other than root: install it while
        // still root (as runc does). The filter then also sees the calls
        // below, which every profile meant for containers allows.
        if !no_new_privs {
            if let Some(program) = &seccomp {
                crate::container::seccomp::install(program)?;
            }
        }
        // SAFETY: `groups` is a valid array of `groups.len()` gids.
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
        // SAFETY: setgid/setuid take integers.
        check(unsafe { libc::setgid(ids.gid) })?;
        // SAFETY: as above.
        check(unsafe { libc::setuid(ids.uid) })?;
        if no_new_privs {
            // SAFETY: prctl with integer arguments.
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
            if let Some(program) = &seccomp {
                crate::container::seccomp::install(program)?;
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec; it only makes raw system
    // calls on data prepared above (no allocation, no locks).
    unsafe { cmd.pre_exec(hook) };

    let _guard = reaper.spawn_guard();
    let child = match pid_ns {
        PidNs::Inherit => cmd.spawn().map_err(exec_err)?,
        PidNs::New | PidNs::Join(_) => std::thread::scope(|s| {
            s.spawn(|| {
                match &pid_ns {
                    // SAFETY: unshare(CLONE_NEWPID) affects only this
                    // thread's future children; the thread ends right after.
                    PidNs::New => check(unsafe { libc::unshare(libc::CLONE_NEWPID) }),
                    PidNs::Join(fd) => {
                        // SAFETY: setns on an open pid namespace fd; like
                        // unshare above it only affects this thread's children.
                        check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWPID) })
                    }
                    PidNs::Inherit => Ok(()),
                }
                .map_err(SpawnError::PidNs)?;
                cmd.spawn().map_err(exec_err)
            })
            .join()
            .unwrap_or_else(|_| Err(SpawnError::PidNs(io::Error::other("spawn thread panicked"))))
        })?,
    };
    let pid = child.id() as i32;
    let exit = reaper.register(pid);
    Ok((pid, exit))
}
