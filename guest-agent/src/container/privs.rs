//! What root inside a container may do: the Docker / OCI default
//! capability set, and `no_new_privs`.
//!
//! The container init itself keeps every capability (it mounts and
//! pivots); the processes it starts for the app, and every `exec`, lose all
//! capabilities outside [`DEFAULT_CAPS`] from their bounding set (so neither
//! a root process nor a set-id or file-capability binary can regain them)
//! and from the ambient set, and run with `PR_SET_NO_NEW_PRIVS`. The
//! inheritable set is emptied once when the agent starts (a thread's set is
//! inherited by the threads and children created after), since inheritable
//! capabilities would otherwise survive a bounding-set drop into an
//! exec'd root process. The list comes from the `caps` crate; the numbers
//! to drop go up to the running kernel's `cap_last_cap`, so capabilities
//! newer than the crate are dropped too.
//!
//! One departure from Docker's set: no `CAP_MKNOD` (security review F11).
//! There is no device cgroup in the guest, so a root app with it could make
//! `/dev/kmsg` or `/dev/ttyS0` and write lines into the guest's console,
//! which the host keeps as the pod's console.log and reads for its
//! diagnostics. Apps get their device nodes from the container init
//! (bind-mounted into a `nodev` /dev, see [`super::init`]) and need no
//! mknod of their own; `mknod` of a FIFO or socket needs no capability.

use caps::{CapSet, Capability};

/// Docker's default capabilities (moby `oci/caps/defaults.go`) less
/// `CAP_MKNOD` (see the module doc).
pub const DEFAULT_CAPS: [Capability; 13] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The highest capability number of the running kernel (the crate's own
/// highest if /proc does not say).
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| caps::all().iter().map(|c| c.index()).max().unwrap_or(40))
}

/// Capability numbers a container process drops from its bounding set.
pub fn caps_to_drop() -> Vec<libc::c_int> {
    (0..=last_cap())
        .filter(|n| !DEFAULT_CAPS.iter().any(|c| c.index() == *n))
        .map(libc::c_int::from)
        .collect()
}

/// Empties the calling thread's inheritable capabilities (see the module
/// doc); call before the agent starts any thread.
pub fn clear_inheritable() -> Result<(), caps::errors::CapsError> {
    caps::clear(None, CapSet::Inheritable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask_without_mknod() {
        let mask: u64 = DEFAULT_CAPS.iter().map(|c| c.bitmask()).sum();
        // Docker's 0xa80425fb less CAP_MKNOD (bit 27).
        assert_eq!(mask, 0xa00425fb);
        let drop = caps_to_drop();
        assert!(drop.contains(&(Capability::CAP_SYS_ADMIN.index() as libc::c_int)));
        assert!(drop.contains(&(Capability::CAP_MKNOD.index() as libc::c_int)));
        assert!(!drop.contains(&(Capability::CAP_CHOWN.index() as libc::c_int)));
    }
}
