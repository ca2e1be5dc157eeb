//! The jail's limits, descriptors and capabilities: the steps after the root is built.
//!
//! Capabilities go through the `caps` crate for the effective, permitted, inheritable and
//! ambient sets; the bounding set is cut with `prctl(PR_CAPBSET_DROP)` over every index the
//! kernel knows (until `PR_CAPBSET_READ` says `EINVAL`), so a capability newer than the crate's
//! list is dropped too.

use std::io;

use caps::{CapSet, Capability, CapsHashSet};

use super::JailError;

/// Refuses, in one line, a process that cannot jail itself: not root (unless `rootless`, when
/// it makes a user namespace first), or with more than one thread (`unshare(CLONE_NEWNS)`
/// refuses a process whose threads share its file system context, and capabilities changed
/// here would not reach threads already running).
pub fn ensure_able(rootless: bool) -> Result<(), JailError> {
    if !rootless {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(JailError::Unable(
                "the VMM jail needs root to make its namespaces and mounts".into(),
            ));
        }
        match caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN) {
            Ok(true) => {}
            _ => {
                return Err(JailError::Unable(
                    "the VMM jail needs CAP_SYS_ADMIN to make its namespaces and mounts".into(),
                ))
            }
        }
    }
    let threads = thread_count();
    if threads != Some(1) {
        let n = threads.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
        return Err(JailError::Unable(format!(
            "the VMM jails itself before it starts threads, but {n} threads run"
        )));
    }
    Ok(())
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

fn set_rlimit(
    resource: libc::__rlimit_resource_t,
    value: u64,
    what: &str,
) -> Result<(), JailError> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads a valid rlimit; return checked.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(JailError::last_os(format!("set {what} to {value}")));
    }
    Ok(())
}

/// `RLIMIT_CORE` 0, `RLIMIT_NPROC` `nproc` if given, and `RLIMIT_NOFILE` `nofile` (soft and
/// hard). A host that keeps
/// husk below `nofile` (a lower hard limit and no `CAP_SYS_RESOURCE` to raise it) gets its
/// hard limit instead: the share budgets follow the process limit ([`crate::fs::budget`]).
pub fn set_limits(nofile: u64, nproc: Option<u64>) -> Result<(), JailError> {
    set_rlimit(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    if let Some(n) = nproc {
        set_rlimit(libc::RLIMIT_NPROC, n, "RLIMIT_NPROC")?;
    }
    if set_rlimit(libc::RLIMIT_NOFILE, nofile, "RLIMIT_NOFILE").is_ok() {
        return Ok(());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit; return checked.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(JailError::last_os("read RLIMIT_NOFILE"));
    }
    log::info!(
        "jail: RLIMIT_NOFILE stays at this host's hard limit {} (below {nofile})",
        lim.rlim_max
    );
    set_rlimit(
        libc::RLIMIT_NOFILE,
        lim.rlim_max.min(nofile),
        "RLIMIT_NOFILE",
    )
}

/// Closes every descriptor in the `[first, last]` ranges.
pub fn close_fds(ranges: &[(u32, u32)]) -> Result<(), JailError> {
    for &(first, last) in ranges {
        // SAFETY: close_range on descriptor numbers only; what the ranges cover is owned by
        // no Rust object the caller uses or drops afterwards (the contract of
        // `JailSpec::keep_fds`); return checked.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } != 0 {
            return Err(JailError::last_os(format!(
                "close descriptors {first} to {last} (close_range: needs Linux 5.9)"
            )));
        }
    }
    Ok(())
}

fn caps_error(step: &str) -> impl FnOnce(caps::errors::CapsError) -> JailError + '_ {
    move |e| JailError::Step {
        step: step.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

/// Cuts every capability set to `keep`, then sets `no_new_privs` and makes the process
/// non-dumpable.
pub fn drop_privileges(keep: &[Capability]) -> Result<(), JailError> {
    let keep_bits: u64 = keep.iter().map(|c| c.bitmask()).fold(0, |a, b| a | b);
    for index in 0..64u32 {
        // SAFETY: prctl(PR_CAPBSET_READ) takes integers only.
        let present =
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, index as libc::c_ulong, 0, 0, 0) };
        if present < 0 {
            break; // EINVAL: past the kernel's last capability
        }
        if present == 1 && keep_bits & (1 << index) == 0 {
            // SAFETY: prctl(PR_CAPBSET_DROP) takes integers only; return checked.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, index as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(JailError::last_os(format!(
                    "drop capability {index} from the bounding set"
                )));
            }
        }
    }
    let keep: CapsHashSet = keep.iter().copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(caps_error("clear the ambient capabilities"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(caps_error("clear the inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &keep)
        .map_err(caps_error("reduce the effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(caps_error("reduce the permitted capabilities"))?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only; return checked.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(JailError::last_os("set no_new_privs"));
    }
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only; return checked.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(JailError::last_os("make the process non-dumpable"));
    }
    Ok(())
}

/// The parent-death signal the caller armed (`PR_SET_PDEATHSIG`) and its parent at the time.
///
/// The kernel clears that signal whenever the process's credentials change (a new user
/// namespace, other ids, capabilities that are not a subset of the old ones), which the jail's
/// steps do; a pod's VMM, which arms it to die with its supervisor, then outlived a supervisor
/// killed with SIGKILL. [`ParentDeath::restore`] arms it again once the ids are final.
#[derive(Debug, Clone, Copy)]
pub struct ParentDeath {
    signal: libc::c_int,
    parent: libc::pid_t,
}

impl ParentDeath {
    /// What is armed now (signal 0: nothing).
    pub fn save() -> ParentDeath {
        let mut signal: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer, which is valid.
        unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int) };
        // SAFETY: getppid() has no preconditions.
        let parent = unsafe { libc::getppid() };
        ParentDeath { signal, parent }
    }

    /// Arms the saved signal again; if the parent died meanwhile (while it was cleared), sends
    /// it now, as the kernel would have.
    pub fn restore(self) -> Result<(), JailError> {
        if self.signal == 0 {
            return Ok(());
        }
        match crate::process::die_with_parent(self.signal, self.parent) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // SAFETY: raise() sends a signal to this thread; the caller asked for it.
                unsafe { libc::raise(self.signal) };
                Ok(())
            }
            Err(source) => Err(JailError::Step {
                step: "arm the parent-death signal again".into(),
                source,
            }),
            Ok(()) => Ok(()),
        }
    }
}
