//! Processes that end with the one that started them.
//!
//! husk starts helpers that must not outlive their caller: a pod's VMM
//! (forked by its supervisor), the `husk-pull` helper (run by `husk pull`
//! or `husk run`). The kernel's parent-death signal does that, with one
//! race that every user must close the same way: a parent that dies before
//! the signal is armed sends nothing, which only a check of the parent
//! afterwards can tell.

use std::io;

/// Arms `signal` to be sent to this process when its parent thread ends
/// (`PR_SET_PDEATHSIG`), then checks that its parent is still `parent`.
/// `ESRCH` when it is not: the parent died before the signal was armed, and
/// the caller should end as the signal would have ended it.
///
/// Only `prctl` and `getppid`: safe between fork and exec.
pub fn die_with_parent(signal: libc::c_int, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only; return checked.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid() has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_that_is_not_ours_is_esrch() {
        // SAFETY: getppid() has no preconditions.
        let parent = unsafe { libc::getppid() };
        let mut before: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int through a valid pointer.
        unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut before as *mut libc::c_int) };
        let wrong = die_with_parent(before, parent + 1).unwrap_err();
        assert_eq!(wrong.raw_os_error(), Some(libc::ESRCH));
        die_with_parent(before, parent).unwrap();
    }
}
