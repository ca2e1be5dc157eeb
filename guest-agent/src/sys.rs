//! Thin, checked wrappers over the raw Linux calls the agent needs.
//!
//! The agent is PID 1 of a tiny guest and must not depend on anything but the
//! kernel, so it talks to it through `libc` directly. Each wrapper turns the C
//! return convention into `io::Result` and carries its `SAFETY` argument once,
//! so callers stay free of `unsafe`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a path into a C string; a path with an interior NUL is refused.
pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mount(2)`. `data` is the file-system specific option string, if any.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = CString::new(source).map_err(|_| io::ErrorKind::InvalidInput)?;
    let target = cstr(target)?;
    let fstype = fstype
        .map(CString::new)
        .transpose()
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    let data = data
        .map(CString::new)
        .transpose()
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string
    // that outlives the call; the kernel copies them.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })
    .map(drop)
}

/// `chroot(2)`.
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    check(unsafe { libc::chroot(path.as_ptr()) }).map(drop)
}

/// `sync(2)`: flush every file system before the guest goes away.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// `reboot(2)` with one of the `LINUX_REBOOT_CMD_*` / `RB_*` commands.
/// Returns only if the kernel refused.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes a plain integer; on success it does not return.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `getpid(2)`.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented
/// to us instead of to PID 1, so we can reap them when not PID 1 ourselves.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag, no pointers.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// Online CPUs as the C library reports them (it reads
/// /sys/devices/system/cpu/online, so sysfs must be mounted first).
pub fn online_cpus() -> io::Result<u32> {
    // SAFETY: sysconf takes an integer name and has no other effect.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        return Err(io::Error::other(
            "sysconf(_SC_NPROCESSORS_ONLN) gave no CPU count",
        ));
    }
    u32::try_from(n).map_err(|_| io::Error::other("CPU count out of range"))
}

/// A signal set, for masks and `sigwaitinfo`.
pub struct SigSet(libc::sigset_t);

impl SigSet {
    /// The set holding exactly `signals`.
    pub fn of(signals: &[libc::c_int]) -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully
        // before any other use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &sig in signals {
            // SAFETY: `set` is initialised; an invalid number only returns EINVAL.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
        SigSet(set)
    }

    /// Blocks the set in the calling thread; threads spawned later inherit it.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: both pointers are valid for the call (old mask not wanted).
        let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(())
    }

    /// Makes the set the calling thread's whole mask (async-signal-safe).
    pub fn set_mask(&self) -> io::Result<()> {
        // SAFETY: both pointers are valid for the call (old mask not wanted).
        let ret =
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(())
    }

    /// Waits for one signal of the set (which must be blocked) and returns it.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        loop {
            // SAFETY: `self.0` is an initialised set; a null info pointer is allowed.
            let sig = unsafe { libc::sigwaitinfo(&self.0, std::ptr::null_mut()) };
            if sig >= 0 {
                return Ok(sig);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Installs an empty handler for `sig`. PID 1 only receives signals that
/// have a handler (the kernel drops default-action signals sent to init);
/// with the signal also blocked, `sigwaitinfo` picks it up instead.
pub fn install_noop_handler(sig: libc::c_int) -> io::Result<()> {
    extern "C" fn noop(_: libc::c_int) {}
    // SAFETY: sigaction is plain data; zeroed is a valid "no flags, empty mask".
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = noop as extern "C" fn(libc::c_int) as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action` is fully initialised and the handler is async-signal-safe
    // (it does nothing); the old action is not requested.
    check(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) }).map(drop)
}

/// A human-readable name for a signal number, for log lines.
pub fn signal_name(sig: libc::c_int) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local string
    // (never freed by us); we copy it out immediately.
    let ptr = unsafe { libc::strsignal(sig) };
    if ptr.is_null() {
        return format!("signal {sig}");
    }
    // SAFETY: non-null pointers from strsignal are NUL-terminated strings.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both are fresh descriptors owned by nobody else.
    let read = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Duplicates descriptor `fd` of process `pid` into this process
/// (`pidfd_open` + `pidfd_getfd`; the copy is close-on-exec). Needs ptrace
/// rights over `pid`: the agent has them over its own children.
pub fn take_fd(pid: libc::pid_t, fd: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes integers; returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as libc::c_int) };
    // SAFETY: pidfd_getfd takes integers; returns a new fd or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(got as libc::c_int) })
}
