//! What root inside a container may do: its capabilities (docker's default
//! set unless the request says otherwise, [`husk_proto::DEFAULT_CAPABILITIES`]).
//!
//! The container init itself keeps every capability (it mounts and
//! pivots); the processes it starts for the app, and every `exec`, lose
//! every capability outside the container's set from their bounding set
//! (so neither a root process nor a set-id or file-capability binary can
//! regain them) and from the ambient set. A root app then has exactly that
//! set as its permitted and effective capabilities; another user has none,
//! as with docker. The inheritable set is emptied once when the agent
//! starts (a thread's set is inherited by the threads and children created
//! after), since inheritable capabilities would otherwise survive a
//! bounding-set drop into an exec'd root process. The numbers to drop go up
//! to the running kernel's `cap_last_cap`, so capabilities newer than the
//! `caps` crate are dropped too.
//!
//! CAP_MKNOD is in docker's set: a root app can make device nodes, but
//! none of them opens, because every file system of a container that it
//! can write is mounted `nodev` (its root, /dev, /tmp, /dev/shm, volumes,
//! tmpfs mounts: [`super::init`]), which is what docker's device cgroup
//! achieves. So it still cannot reach `/dev/kmsg` or `/dev/ttyS0` to write
//! lines into the guest's console, which the host keeps as the pod's
//! console.log (security review F11).

use caps::CapSet;

/// The highest capability number of the running kernel (the crate's own
/// highest if /proc does not say).
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| caps::all().iter().map(|c| c.index()).max().unwrap_or(40))
}

/// Capability numbers a container process drops from its bounding set to
/// keep only `keep`.
pub fn caps_to_drop(keep: &[u8]) -> Vec<libc::c_int> {
    (0..=last_cap())
        .filter(|n| !keep.contains(n))
        .map(libc::c_int::from)
        .collect()
}

/// What each process of a container with `security` drops from its
/// bounding set: nothing when privileged, else whatever is outside its
/// capabilities. The init's app and every `exec` get the same.
pub fn drops_for(security: &husk_proto::SecuritySpec) -> Vec<libc::c_int> {
    if security.privileged {
        Vec::new()
    } else {
        caps_to_drop(&security.capabilities)
    }
}

/// Empties the calling thread's inheritable capabilities (see the module
/// doc); call before the agent starts any thread.
pub fn clear_inheritable() -> Result<(), caps::errors::CapsError> {
    caps::clear(None, CapSet::Inheritable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability;
    use husk_proto::DEFAULT_CAPABILITIES;

    #[test]
    fn docker_default_set_is_kept() {
        let named = [
            Capability::CAP_CHOWN,
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_FSETID,
            Capability::CAP_FOWNER,
            Capability::CAP_MKNOD,
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
        let mut numbers: Vec<u8> = named.iter().map(|c| c.index()).collect();
        numbers.sort();
        assert_eq!(numbers, DEFAULT_CAPABILITIES);
        let drop = caps_to_drop(&DEFAULT_CAPABILITIES);
        let has = |c: Capability| drop.contains(&libc::c_int::from(c.index()));
        assert!(has(Capability::CAP_SYS_ADMIN));
        assert!(!has(Capability::CAP_MKNOD));
        assert!(!has(Capability::CAP_CHOWN));
        assert_eq!(drop.len() + 14, usize::from(last_cap()) + 1);
        assert!(caps_to_drop(&[]).contains(&0));
    }
}
