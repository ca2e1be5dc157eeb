//! The seccomp filter of app processes (security review F11).
//!
//! Only the agent may talk to the host: the host side of virtio-vsock is
//! the pod's supervisor, and nothing in the guest but the agent's own
//! connection is meant to reach it. A root app could otherwise open
//! `AF_VSOCK` sockets to the host (CID 2) and speak to whatever listens
//! there. Namespaces do not help: vsock is not network-namespaced. So every
//! app process — a container's first process and every `exec` — runs under
//! a small deny-list filter, installed as the last step before exec (after
//! `no_new_privs`, which a filter needs without CAP_SYS_ADMIN):
//!
//! - `socket(AF_VSOCK, …)` fails with `EPERM`;
//! - `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with
//!   `EPERM` (what a kernel with `kernel.io_uring_disabled=2` answers, which
//!   io_uring users already handle): io_uring opens sockets
//!   (`IORING_OP_SOCKET`) without the `socket` system call, past the filter.
//!
//! Everything else is allowed: this is a narrow guard for the host
//! boundary, not a general system-call policy (Docker's default profile is
//! broader; the VM is the isolation boundary here). The same numbers are
//! denied in their x32 form (bit 30 set), which shares the x86-64 audit
//! architecture; a system call of any other architecture (32-bit `int
//! 0x80`, where `socketcall` could open a socket) kills the process, as
//! seccompiler's architecture check does — the guest kernel builds neither
//! IA32 emulation nor x32, so no app meets it.
//!
//! The filter is compiled once per process start by seccompiler (the BPF
//! compiler Firecracker uses) before the fork; the child only makes the
//! `seccomp` system call on the ready program.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use seccompiler::{
    sock_filter, BackendError, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// A compiled filter, ready to install (shared: it is only read).
pub type Program = Arc<[sock_filter]>;

/// The errno a denied call fails with.
pub const DENIED_ERRNO: i32 = libc::EPERM;

/// x32 system calls are the x86-64 numbers with this bit set.
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// The app filter (see the module doc).
pub fn app_filter() -> Result<Program, BackendError> {
    let vsock = || -> Result<Vec<SeccompRule>, BackendError> {
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::AF_VSOCK as u64,
        )?])?])
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for base in [0, X32_SYSCALL_BIT] {
        rules.insert(base + libc::SYS_socket, vsock()?);
        for nr in [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            // An empty rule list matches the call whatever its arguments.
            rules.insert(base + nr, Vec::new());
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(DENIED_ERRNO as u32),
        TargetArch::x86_64,
    )?;
    let program: Vec<sock_filter> = filter.try_into()?;
    Ok(program.into())
}

/// `struct sock_fprog` (linux/filter.h) for seccompiler's instructions.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// Installs `program` on the calling thread. Needs `no_new_privs` (or
/// CAP_SYS_ADMIN). Only a system call: safe between fork and exec.
pub fn install(program: &[sock_filter]) -> io::Result<()> {
    let prog = SockFprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `prog` and the
    // `len` instructions it points to, which outlive the call; the kernel
    // copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const SockFprog,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_of(ret: libc::c_long) -> Option<i32> {
        (ret < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    fn socket(domain: libc::c_int) -> Option<i32> {
        // SAFETY: socket() with integer arguments; a descriptor it returns
        // is closed right away.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: closing the descriptor we just got.
            unsafe { libc::close(fd) };
        }
        errno_of(fd as libc::c_long)
    }

    fn io_uring_setup() -> Option<i32> {
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup with 1 entry and a zeroed params block of
        // the kernel's size (it writes into it); a ring it returns is closed.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
        if fd >= 0 {
            // SAFETY: closing the ring's descriptor we just got.
            unsafe { libc::close(fd as libc::c_int) };
        }
        errno_of(fd)
    }

    /// The filter on a thread of its own (seccomp and no_new_privs are
    /// per thread; the thread ends with the test): AF_VSOCK and io_uring
    /// are refused with EPERM, other sockets still work. On this host
    /// AF_VSOCK may work or fail with EAFNOSUPPORT without the filter,
    /// never with EPERM.
    #[test]
    fn vsock_and_io_uring_are_denied() {
        let program = app_filter().unwrap();
        assert!(socket(libc::AF_VSOCK) != Some(libc::EPERM));
        std::thread::spawn(move || {
            // SAFETY: prctl with integer arguments, on this thread only.
            let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            assert_eq!(nnp, 0);
            install(&program).unwrap();
            assert_eq!(socket(libc::AF_VSOCK), Some(libc::EPERM));
            assert_eq!(io_uring_setup(), Some(libc::EPERM));
            assert_eq!(socket(libc::AF_UNIX), None);
            assert_eq!(socket(libc::AF_INET), None);
        })
        .join()
        .unwrap();
        // The test process itself is unfiltered.
        assert!(socket(libc::AF_VSOCK) != Some(libc::EPERM));
    }
}
