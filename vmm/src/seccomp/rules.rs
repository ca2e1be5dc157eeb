//! The allowlists, one per thread kind, as seccompiler rules.
//!
//! Each list holds what that thread calls once the guest can run, found by
//! running the whole e2e suite with the filters in log mode
//! (`HUSK_SECCOMP=log`) and by reading the code each thread runs; each
//! group says why its calls are there. A call with argument rules is
//! allowed only with those arguments (rules are alternatives; the
//! conditions of one rule must all hold).
//!
//! What every thread needs, because Rust's runtime and the C library do it
//! behind any code: the allocator (`brk`, `mmap`, `mremap`, `munmap`,
//! `madvise`, `mprotect` for a new arena), locks and channels (`futex`),
//! the end of a signal handler (`rt_sigreturn`), `write` (log lines on
//! stderr, eventfd signals), and the clock (`clock_gettime`, which the vDSO
//! answers without a system call unless the host's clock source cannot be
//! read from user space).

use std::collections::BTreeMap;

use seccompiler::{Error, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// System call number → the rules allowing it (empty: any arguments).
pub type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// `KVM_RUN`, `_IO(KVMIO, 0x80)`: the one KVM request that changes
/// anything after start.
pub const KVM_RUN: u64 = 0xae80;
/// `KVM_GET_REGS`, `_IOR(KVMIO, 0x81, struct kvm_regs)` (144 bytes): reads
/// the vCPU's registers for the report of a triple fault.
pub const KVM_GET_REGS: u64 = 0x8090_ae81;
/// `KVM_GET_SREGS`, `_IOR(KVMIO, 0x83, struct kvm_sregs)` (312 bytes): the
/// segment and control registers, for the same report.
pub const KVM_GET_SREGS: u64 = 0x8138_ae83;

/// Allows each of `nrs` whatever its arguments.
fn allow(rules: &mut Rules, nrs: &[i64]) {
    for &nr in nrs {
        rules.insert(nr, Vec::new());
    }
}

/// Allows `nr` only when argument `arg` (32-bit) is one of `values`.
fn allow_arg(rules: &mut Rules, nr: i64, arg: u8, values: &[u64]) -> Result<(), Error> {
    let list = rules.entry(nr).or_default();
    for &v in values {
        let cond = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?;
        list.push(SeccompRule::new(vec![cond])?);
    }
    Ok(())
}

/// What any thread of the VMM needs (see the module doc).
fn runtime(rules: &mut Rules) {
    allow(
        rules,
        &[
            libc::SYS_brk,
            libc::SYS_mmap,
            libc::SYS_mremap,
            libc::SYS_munmap,
            libc::SYS_madvise,
            libc::SYS_mprotect,
            libc::SYS_futex,
            libc::SYS_rt_sigreturn,
            libc::SYS_write,
            libc::SYS_clock_gettime,
        ],
    );
}

/// What a thread that ends (returning from its closure) needs: glibc
/// blocks signals, std takes down the thread's signal stack (the stack
/// overflow guard), and the thread exits.
fn thread_end(rules: &mut Rules) {
    allow(
        rules,
        &[
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_exit,
        ],
    );
}

/// `fcntl` requests for descriptor flags: non-blocking sockets and
/// timers (`F_GETFL`/`F_SETFL`), close-on-exec (`F_GETFD`/`F_SETFD`) and
/// std's descriptor duplication (`F_DUPFD_CLOEXEC`).
const FCNTL_FLAGS: &[u64] = &[
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
    libc::F_GETFD as u64,
    libc::F_SETFD as u64,
    libc::F_DUPFD_CLOEXEC as u64,
];

/// A vCPU thread, from its first `KVM_RUN`: runs the guest and the device
/// emulation of its exits (port I/O, MMIO: serial output, virtio
/// registers, the i8042 reset).
pub fn vcpu() -> Result<Rules, Error> {
    let mut r = Rules::new();
    runtime(&mut r);
    thread_end(&mut r);
    // Running the guest: KVM_RUN; every other vCPU request is made before
    // the thread starts, but for two that only read the vCPU's own state,
    // for the report of a triple fault (vstate::vcpu).
    allow_arg(
        &mut r,
        libc::SYS_ioctl,
        1,
        &[KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS],
    )?;
    // Virtio device status writes run on the vCPU that makes them: DRIVER_OK
    // hands the device copies of its queue eventfds (`fcntl` F_DUPFD_CLOEXEC);
    // a reset drains those eventfds (`read`) and drops the copies (`close`).
    // The vCPU's own descriptor and kvm_run mapping also go when the thread
    // ends.
    // Activating the vsock device also hands its queue eventfds to the
    // event loop's epoll set (`epoll_ctl`).
    allow(
        &mut r,
        &[libc::SYS_read, libc::SYS_close, libc::SYS_epoll_ctl],
    );
    allow_arg(&mut r, libc::SYS_fcntl, 1, &[libc::F_DUPFD_CLOEXEC as u64])?;
    Ok(r)
}

/// The VMM thread, from its event loop on: epoll, the vsock device's
/// host side (Unix sockets it accepts and connects, its timer), the VM's
/// end (kicking and joining the vCPU threads, the process's exit).
pub fn vmm() -> Result<Rules, Error> {
    let mut r = Rules::new();
    runtime(&mut r);
    // The event loop.
    allow(
        &mut r,
        &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_read,
        ],
    );
    // vsock: host clients connect to the listening socket; guest
    // connections to the host connect out to Unix sockets (AF_UNIX only).
    allow(
        &mut r,
        &[
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_writev,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_close,
            libc::SYS_timerfd_settime,
        ],
    );
    allow_arg(&mut r, libc::SYS_socket, 0, &[libc::AF_UNIX as u64])?;
    allow_arg(&mut r, libc::SYS_fcntl, 1, FCNTL_FLAGS)?;
    // FIONBIO; TUNSETOFFLOAD: a TAP backend tells the kernel which
    // offloads the guest takes once it has acked its features.
    allow_arg(
        &mut r,
        libc::SYS_ioctl,
        1,
        &[libc::FIONBIO, libc::TUNSETOFFLOAD],
    )?;
    // The VM's end: kick every vCPU out of KVM_RUN (pthread_kill: getpid,
    // tgkill), join it, remove the vsock socket, exit. `tgkill` only within
    // this process (its first argument is `getpid()`): without a pid
    // namespace or a uid of its own, the VMM could otherwise signal any
    // root process, another pod's VMM included. The rules are compiled in
    // the VMM process itself ([`super::Filters::build`], after the jail), so
    // this is its pid.
    allow_arg(
        &mut r,
        libc::SYS_tgkill,
        0,
        &[u64::from(std::process::id())],
    )?;
    allow(
        &mut r,
        &[
            libc::SYS_getpid,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_exit_group,
        ],
    );
    Ok(r)
}

/// A virtio-fs worker: waits on its queues, serves FUSE requests on the
/// share through fuse-backend-rs's passthrough file system (confined to
/// the share with `openat2` and `O_PATH` descriptors).
pub fn fs() -> Result<Rules, Error> {
    let mut r = Rules::new();
    runtime(&mut r);
    thread_end(&mut r);
    // Waiting for queue notifications and commands; an activation adds the
    // queues' eventfds to the worker's epoll set, a reset removes them.
    allow(
        &mut r,
        &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_read,
        ],
    );
    // Looking up, opening and closing files (`dup` for a flush).
    allow(
        &mut r,
        &[
            libc::SYS_dup,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_open_by_handle_at,
            libc::SYS_name_to_handle_at,
            libc::SYS_close,
            libc::SYS_newfstatat,
            libc::SYS_fstat,
            libc::SYS_statx,
            libc::SYS_readlinkat,
            libc::SYS_getdents64,
            libc::SYS_lseek,
            libc::SYS_statfs,
            libc::SYS_fstatfs,
        ],
    );
    allow_arg(&mut r, libc::SYS_fcntl, 1, FCNTL_FLAGS)?;
    // Data: guest reads and writes, flushes, sizes.
    allow(
        &mut r,
        &[
            libc::SYS_pread64,
            libc::SYS_preadv,
            libc::SYS_pwrite64,
            libc::SYS_pwritev,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_ftruncate,
            libc::SYS_fallocate,
        ],
    );
    // Changing the tree and its metadata (read-write shares).
    allow(
        &mut r,
        &[
            libc::SYS_mkdirat,
            libc::SYS_mknodat,
            libc::SYS_unlinkat,
            libc::SYS_renameat2,
            libc::SYS_symlinkat,
            libc::SYS_linkat,
            libc::SYS_fchmod,
            libc::SYS_fchmodat,
            libc::SYS_fchownat,
            libc::SYS_utimensat,
            libc::SYS_umask,
        ],
    );
    // Extended attributes, through /proc/self/fd paths.
    allow(
        &mut r,
        &[
            libc::SYS_getxattr,
            libc::SYS_setxattr,
            libc::SYS_listxattr,
            libc::SYS_removexattr,
            libc::SYS_fgetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_flistxattr,
            libc::SYS_fremovexattr,
        ],
    );
    // The first HashMap the thread makes seeds its keys (std, once per thread).
    allow(&mut r, &[libc::SYS_getrandom]);
    // Creating files as the guest's caller: the passthrough file system
    // switches this thread's uid and gid around a create.
    allow(&mut r, &[libc::SYS_setresuid, libc::SYS_setresgid]);
    Ok(r)
}
