//! The filters compile, allow what their thread needs and stop the rest:
//! each case installs a filter in a forked child (never in the test
//! process) and looks at how the child ends and what it wrote.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

use super::*;

/// How a forked child ended, and what it wrote to stderr.
struct Outcome {
    status: libc::c_int,
    stderr: String,
}

impl Outcome {
    fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }

    fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }
}

/// Forks; the child installs `kind`'s enforcing filter and the SIGSYS
/// handler, then runs `body` and exits with its result. The child does
/// only system calls (no allocation, no locks) between fork and exit.
fn in_filtered_child(kind: ThreadKind, body: fn() -> i32) -> Outcome {
    let program = compile(kind, Mode::Enforce).expect("compile");
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fork in a test process; the child below makes only system
    // calls and `_exit`s, so no lock held by another thread is needed.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: dup2 of our pipe's write end onto stderr.
        unsafe { libc::dup2(fds[1], libc::STDERR_FILENO) };
        if install_sigsys_handler().is_err() {
            // SAFETY: ends the child without running anything of the parent's.
            unsafe { libc::_exit(100) };
        }
        KIND.with(|k| k.set(kind as u8));
        if seccompiler::apply_filter(&program).is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(101) };
        }
        let code = body();
        // Ends as that kind of thread does: the VMM thread ends the process
        // (`exit_group`), the others only themselves (`exit`, which ends
        // this single-threaded child too).
        let exit = match kind {
            ThreadKind::Vmm => libc::SYS_exit_group,
            _ => libc::SYS_exit,
        };
        // SAFETY: ends the child; nothing runs after it.
        unsafe { libc::syscall(exit, code) };
    }
    // SAFETY: the write end is ours; the child has its own copy.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours alone from here on.
    let mut read_end = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    let mut stderr = String::new();
    read_end.read_to_string(&mut stderr).expect("read stderr");
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    Outcome { status, stderr }
}

fn inet_socket() -> i32 {
    // SAFETY: socket() takes no pointers; a descriptor it returns is closed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: closing the descriptor we just got.
        unsafe { libc::close(fd) };
    }
    0
}

fn assert_trapped(out: &Outcome, kind: ThreadKind, nr: i64) {
    assert_eq!(out.signal(), Some(libc::SIGSYS), "status {:#x}", out.status);
    let want = format!("husk: seccomp: the {kind} thread made a forbidden system call {nr}\n");
    assert_eq!(out.stderr, want);
}

#[test]
fn every_filter_compiles_in_both_modes() {
    for kind in ThreadKind::ALL {
        for mode in [Mode::Enforce, Mode::Log] {
            let program = compile(kind, mode).expect("compile");
            assert!(!program.is_empty() && program.len() < 4096, "{kind}");
        }
    }
}

#[test]
fn per_thread_counts_stay_small() {
    // vCPU ≤ 27 and VMM ≤ 50 as Firecracker's lists; fs ≤ virtiofsd's (~90).
    for (kind, max) in [
        (ThreadKind::Vcpu, 27),
        (ThreadKind::Vmm, 50),
        (ThreadKind::Fs, 90),
    ] {
        let n = kind.rules().expect("rules").len();
        println!("seccomp: {kind} thread allows {n} system calls");
        assert!(n <= max, "{kind}: {n} > {max}");
    }
}

#[test]
fn the_register_reads_are_the_kernels_requests() {
    // _IOR(KVMIO, nr, T): read (2) << 30 | sizeof(T) << 16 | 0xae << 8 | nr.
    let ior = |nr: u64, size: usize| (2 << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
    let regs = std::mem::size_of::<kvm_bindings::kvm_regs>();
    let sregs = std::mem::size_of::<kvm_bindings::kvm_sregs>();
    assert_eq!(rules::KVM_GET_REGS, ior(0x81, regs));
    assert_eq!(rules::KVM_GET_SREGS, ior(0x83, sregs));
}

#[test]
fn vcpu_may_run_the_guest_but_not_open_a_socket() {
    let allowed = in_filtered_child(ThreadKind::Vcpu, || {
        // KVM_RUN on a non-KVM descriptor: allowed, fails with ENOTTY/EBADF.
        // SAFETY: ioctl with an integer request and no argument.
        unsafe { libc::ioctl(libc::STDERR_FILENO, rules::KVM_RUN as _, 0) };
        // The register reads of a triple fault's report: allowed likewise.
        for request in [rules::KVM_GET_REGS, rules::KVM_GET_SREGS] {
            let mut buf = [0u8; 512];
            // SAFETY: the buffer is larger than either struct the request
            // names; on a non-KVM descriptor nothing is written anyway.
            unsafe { libc::ioctl(libc::STDERR_FILENO, request as _, buf.as_mut_ptr()) };
        }
        7
    });
    assert_eq!(allowed.exit_code(), Some(7), "status {:#x}", allowed.status);
    assert_eq!(allowed.stderr, "");

    let socket = in_filtered_child(ThreadKind::Vcpu, inet_socket);
    assert_trapped(&socket, ThreadKind::Vcpu, libc::SYS_socket);

    let other_ioctl = in_filtered_child(ThreadKind::Vcpu, || {
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads an int through the pointer, which is valid.
        unsafe { libc::ioctl(libc::STDERR_FILENO, libc::FIONBIO, &on) };
        0
    });
    assert_trapped(&other_ioctl, ThreadKind::Vcpu, libc::SYS_ioctl);
}

#[test]
fn vmm_may_open_unix_sockets_only() {
    let unix = in_filtered_child(ThreadKind::Vmm, || {
        // SAFETY: socket() takes no pointers; the descriptor is closed.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        // SAFETY: closing the descriptor we just got.
        unsafe { libc::close(fd) };
        if fd >= 0 {
            0
        } else {
            1
        }
    });
    assert_eq!(unix.exit_code(), Some(0), "status {:#x}", unix.status);

    let inet = in_filtered_child(ThreadKind::Vmm, inet_socket);
    assert_trapped(&inet, ThreadKind::Vmm, libc::SYS_socket);
}

#[test]
fn fs_worker_may_open_files_but_not_exec() {
    let open = in_filtered_child(ThreadKind::Fs, || {
        // SAFETY: openat with a NUL-terminated path; the descriptor is closed.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, c"/".as_ptr(), libc::O_PATH) };
        // SAFETY: closing the descriptor we just got.
        unsafe { libc::close(fd) };
        if fd >= 0 {
            0
        } else {
            1
        }
    });
    assert_eq!(open.exit_code(), Some(0), "status {:#x}", open.status);

    let exec = in_filtered_child(ThreadKind::Fs, || {
        let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
        // SAFETY: NUL-terminated path and a NULL-terminated argv; the
        // filter stops the call before the kernel reads them anyway.
        unsafe { libc::execve(argv[0], argv.as_ptr(), std::ptr::null()) };
        0
    });
    assert_trapped(&exec, ThreadKind::Fs, libc::SYS_execve);
}
