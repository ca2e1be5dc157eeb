//! The VMM's jail: what a VMM process keeps once it has opened its files.
//!
//! - Binds: the directory of the vsock socket only (the VMM binds its listener there and
//!   connects to `<socket>_<port>` there for guest-initiated connections), at its own path.
//!   For a pod that is the `vsock/` directory inside its state directory, not the state
//!   directory itself (whose files the supervisor trusts); nothing else of the host is
//!   reachable by path.
//! - `/proc/self`: for the virtio-fs passthrough (see [`super`]).
//! - Capabilities: what the in-process virtio-fs server needs to act for the guest's users
//!   on the host files — virtiofsd's set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID,
//!   SETUID, MKNOD, SETFCAP) less what husk's policy layer never lets a guest use: FSETID and
//!   MKNOD (every serving thread drops them already: set-id bits are cleared by the kernel,
//!   device nodes are refused), SETFCAP (only `user.*` xattrs can be written), and
//!   DAC_READ_SEARCH, which virtiofsd wants for file handles (off here). SETUID and SETGID
//!   are for the passthrough's per-request switch to the guest caller's uid and gid. KVM
//!   needs none once `/dev/kvm` is open: every KVM call is an ioctl on a held descriptor.
//! - `RLIMIT_NOFILE`: the shares' pool ([`FD_PER_POD`]) plus the reserve for the rest of
//!   the VMM ([`FD_RESERVE`]): the share budgets come out at their fixed bounds.
//! - Descriptors: stdio, `/dev/kvm`, and the files [`PreparedVm`] holds (kernel, initramfs,
//!   console, share roots).
//! - User namespace: the pod's own id range when the caller made one ([`super::userns`]);
//!   then `RLIMIT_NPROC` [`VMM_NPROC`] as well.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use caps::Capability;

use super::userns::IdRange;
use super::{JailError, JailSpec};
use crate::fs::budget::{FD_PER_POD, FD_RESERVE};
use crate::vm_config::{ConsoleOutput, PreparedDevice, PreparedVm};

/// The capabilities a jailed VMM keeps.
pub const VMM_CAPS: [Capability; 5] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
];

/// A jailed VMM's `RLIMIT_NOFILE`.
pub const VMM_NOFILE: u64 = (FD_PER_POD + FD_RESERVE) as u64;

/// A jailed VMM's `RLIMIT_NPROC` when it has a uid of its own: its threads are one VMM
/// thread, one per vCPU (at most [`crate::boot::mptable::MAX_CPUS`]) and the virtio-fs
/// workers; this bound covers them with room, and stops a VMM that has been taken over from
/// making processes of its uid without end should its seccomp filter ever let `clone` by.
pub const VMM_NPROC: u64 = 1024;

/// The jail of the VMM that runs `vm` with `kvm` (an open `/dev/kvm`), entering `user_ns`
/// if given.
pub fn spec_for(vm: &PreparedVm, kvm: RawFd, user_ns: Option<RawFd>) -> JailSpec {
    let mut binds = Vec::new();
    let mut keep_fds = vec![kvm, vm.kernel.file.as_raw_fd()];
    keep_fds.extend(vm.initrd.as_ref().map(|(f, _)| f.as_raw_fd()));
    keep_fds.extend(vm.console.as_ref().map(AsRawFd::as_raw_fd));
    // A console descriptor in the configuration (a pod's console pipe) is kept as well:
    // the configuration owns it and closes it when dropped, so the jail must not close
    // it first, or a descriptor opened later with the same number (a vsock socket, an
    // eventfd) would be closed in its place.
    if let ConsoleOutput::Fd(fd) = &vm.config.console {
        keep_fds.push(fd.0.as_raw_fd());
    }
    for device in &vm.devices {
        match device {
            PreparedDevice::Vsock(v) => {
                binds.extend(v.uds.parent().map(|d| d.to_path_buf()));
            }
            PreparedDevice::Fs(share) => keep_fds.push(share.root.as_raw_fd()),
            // The backend's connected socket: the jail's empty network
            // namespace and root leave the VMM no other way to its peer.
            PreparedDevice::Net(n) => keep_fds.push(n.backend.fd().0.as_raw_fd()),
        }
    }
    JailSpec {
        binds,
        proc_self: true,
        keep_caps: VMM_CAPS.to_vec(),
        nofile: VMM_NOFILE,
        nproc: user_ns.map(|_| VMM_NPROC),
        user_ns,
        rootless: None,
        keep_fds,
    }
}

/// The user namespace of a jailed VMM ([`super::userns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNs {
    /// The host ids the namespace maps to.
    pub ids: IdRange,
    /// The tags of the shares served through an idmapped mount: host directories whose
    /// ownership must look to the guest as it is on the host. The other shares belong to the
    /// pod (its blobs, its empty-dir volumes) and are served as they are.
    pub id_mapped: Vec<String>,
}

/// Jails the calling process as the VMM of `prepared` with `kvm` (an open `/dev/kvm`): the
/// shares readied ([`prepare`]), then the spec of [`spec_for`] applied, in the user namespace
/// of `user_ns` if given. The one way a VMM (and the escape tests) jail themselves.
///
/// Rootless (not run by root): `user_ns` cannot be had (mapping a range needs host root), so
/// the process makes a user namespace of its own in which only its own ids are mapped, and
/// builds the same jail inside it ([`JailSpec::rootless`]); no `RLIMIT_NPROC` (it would count
/// every process of the user, not the VMM's).
pub fn enter(prepared: &PreparedVm, kvm: RawFd, user_ns: Option<&UserNs>) -> Result<(), JailError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let mut spec = spec_for(prepared, kvm, None);
        spec.rootless = Some(share_roots(prepared));
        spec.apply()?;
        return Ok(());
    }
    let ns = prepare(prepared, user_ns)?;
    spec_for(prepared, kvm, ns.as_ref().map(AsRawFd::as_raw_fd)).apply()?;
    Ok(())
}

fn share_roots(prepared: &PreparedVm) -> Vec<RawFd> {
    prepared
        .devices
        .iter()
        .filter_map(|d| match d {
            PreparedDevice::Fs(share) => Some(share.root.as_raw_fd()),
            PreparedDevice::Vsock(_) | PreparedDevice::Net(_) => None,
        })
        .collect()
}

/// Readies `prepared`'s shares for the jail and makes the user namespace of `user_ns`, if
/// any, for the jail to enter: every share is served from a private clone of its mount
/// ([`super::mount::private_clone`]: `..` cannot leave it), and the shares `user_ns` lists
/// through clones id-mapped through the namespace.
pub fn prepare(
    prepared: &PreparedVm,
    user_ns: Option<&UserNs>,
) -> Result<Option<OwnedFd>, JailError> {
    let ns = user_ns.map(|u| super::userns::create(u.ids)).transpose()?;
    for device in &prepared.devices {
        let PreparedDevice::Fs(share) = device else {
            continue;
        };
        let id_map = match (&ns, user_ns) {
            (Some(ns), Some(u)) if u.id_mapped.contains(&share.spec.tag) => Some(ns.as_fd()),
            _ => None,
        };
        let what = if id_map.is_some() {
            "an id-mapped"
        } else {
            "a private"
        };
        super::mount::private_clone(share.root.as_raw_fd(), id_map).map_err(|source| {
            JailError::Step {
                step: format!(
                    "serve the share {} from {what} clone of its mount",
                    share.root.path().display()
                ),
                source,
            }
        })?;
    }
    Ok(ns)
}
