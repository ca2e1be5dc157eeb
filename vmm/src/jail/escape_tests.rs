//! Escape attempts from inside the VMM's jail (issue 11 §4): tier 2, root, no KVM.
//!
//! Why here and how: the jail and the seccomp filters need root but not KVM, so the probe runs
//! in `cargo test` on the host (CI runs it as root; not root, it says so and skips). It is as
//! close to a jailed VMM as a test can be without a guest: the jail comes from
//! [`super::vmm::enter`] over a real [`PreparedVm`] (a vsock device and a share, as a pod
//! has), with a user namespace as a pod's VMM and without as `husk vm`'s; the filters are compiled by [`Filters::build`]
//! after the jail, in the jailed process, and installed by [`seccomp::install`], as
//! `builder::start` does. So when the VMM's jail or filters change, the probe follows: it has
//! no copy of either.
//!
//! Each attempt runs in its own forked child (one jail each), so that a filter's SIGSYS kill
//! counts as "refused" and one attempt cannot prepare the ground for the next. A child exits
//! with 0 when its attempt worked, with the errno when it was refused; the parent also checks
//! the host afterwards: the process standing in for another pod's VMM still runs and is not
//! traced, and no mount appeared over the jail's bind on the host.
//!
//! The attempts run as the `vmm` thread (the event loop, vsock host side) and as a `vcpu`
//! thread (device emulation of exits): the two kinds that read guest input first. The `fs`
//! worker's run is a separate test (the `..` walk it found is why shares are private mount
//! clones).
//! `tgkill-other-vmm` is why the vmm thread's `tgkill` is bound to its own pid
//! ([`crate::seccomp::rules::vmm`]): without a pid namespace or a uid of its own the jailed
//! VMM could signal any root process, and the probe found it did.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::userns::IdRange;
use super::vmm::UserNs;
use crate::fs::{CacheMode, ShareSpec};
use crate::seccomp::{self, Filters, Mode, ThreadKind};
use crate::vm_config::{
    ConsoleOutput, DeviceSpec, HostLimits, PreparedDevice, PreparedVm, VmConfig, VsockSpec, MIB,
};

/// Exit status of a child whose jail could not be set up.
const JAIL_FAILED: i32 = 200;
/// Exit status of a child whose filter could not be built or installed.
const FILTER_FAILED: i32 = 201;

/// What an attempt may aim at, set up by the parent before the fork.
struct Targets {
    /// A process standing in for another pod's VMM.
    victim: libc::pid_t,
    /// The share's root descriptor, which the jailed VMM holds.
    share_fd: RawFd,
    /// The directory the jail binds (the vsock socket's).
    bound: std::ffi::CString,
    /// An abstract Unix socket the test listens on in the host's network namespace.
    abstract_name: Vec<u8>,
}

/// An attempt: `Ok` when it worked (an escape), `Err(errno)` when refused.
type Attempt = fn(&Targets) -> Result<(), i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `Ok` for a non-negative result (closing it if `fd`), else the errno.
fn check(r: libc::c_long, fd: bool) -> Result<(), i32> {
    if r < 0 {
        return Err(errno());
    }
    if fd {
        // SAFETY: closing the descriptor the attempt just got.
        unsafe { libc::close(r as RawFd) };
    }
    Ok(())
}

fn open_at(dir: RawFd, path: &CStr, flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: openat with a NUL-terminated path; the descriptor is closed by `check`.
    check(
        unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC) }.into(),
        true,
    )
}

fn socket_of(family: libc::c_int, kind: libc::c_int, proto: libc::c_int) -> Result<(), i32> {
    // SAFETY: socket takes integers only; the descriptor is closed by `check`.
    check(unsafe { libc::socket(family, kind, proto) }.into(), true)
}

const ATTEMPTS: &[(&str, Attempt)] = &[
    ("read-etc-shadow", |_| {
        open_at(libc::AT_FDCWD, c"/etc/shadow", libc::O_RDONLY)
    }),
    ("open-etc-passwd", |_| {
        open_at(libc::AT_FDCWD, c"/etc/passwd", libc::O_RDONLY)
    }),
    ("open-root-dir", |_| {
        open_at(libc::AT_FDCWD, c"/root", libc::O_RDONLY | libc::O_DIRECTORY)
    }),
    ("open-via-proc-1-root", |_| {
        open_at(libc::AT_FDCWD, c"/proc/1/root/etc/passwd", libc::O_RDONLY)
    }),
    ("open-dotdot-from-share-fd", |t| {
        open_at(
            t.share_fd,
            c"../../../../../../../../etc/passwd",
            libc::O_RDONLY,
        )
    }),
    ("mount-tmpfs", |t| {
        // SAFETY: mount with NUL-terminated strings and no data.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                t.bound.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        check(r.into(), false)
    }),
    ("ptrace-attach-other-vmm", |t| {
        // SAFETY: PTRACE_ATTACH takes a pid and no pointers.
        let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, t.victim, 0, 0) };
        check(r, false)
    }),
    ("kill-other-vmm", |t| {
        // SAFETY: kill takes integers only.
        check(unsafe { libc::kill(t.victim, libc::SIGKILL) }.into(), false)
    }),
    ("tgkill-other-vmm", |t| {
        // SAFETY: tgkill takes integers only.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, t.victim, t.victim, libc::SIGKILL) };
        check(r, false)
    }),
    ("execve-bin-sh", |_| {
        let argv = [
            c"sh".as_ptr(),
            c"-c".as_ptr(),
            c"exit 0".as_ptr(),
            std::ptr::null(),
        ];
        let envp = [std::ptr::null()];
        // SAFETY: NUL-terminated path, NULL-terminated argv and envp of valid strings.
        unsafe { libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Err(errno())
    }),
    ("socket-af-inet", |_| {
        socket_of(libc::AF_INET, libc::SOCK_STREAM, 0)
    }),
    ("socket-af-netlink", |_| {
        socket_of(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
    }),
    ("socket-af-packet", |_| {
        socket_of(libc::AF_PACKET, libc::SOCK_RAW, 0)
    }),
    ("connect-host-abstract-socket", |t| {
        // SAFETY: socket takes integers only.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return Err(errno());
        }
        let (addr, len) = abstract_addr(&t.abstract_name);
        // SAFETY: connect with a valid sockaddr_un of `len` bytes.
        let r = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
        check(r.into(), false)
    }),
];

/// A `sockaddr_un` for the abstract name `name` (without the leading NUL), and its length.
fn abstract_addr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (addr, len as libc::socklen_t)
}

/// How one attempt ended.
enum Verdict {
    /// It worked: an escape.
    Escaped,
    /// Refused with this errno.
    Errno(i32),
    /// Killed by the filter; the handler's line.
    Sigsys(String),
    /// The child could not be made a jailed VMM (or died otherwise).
    Broken(String),
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EACCES => "EACCES",
        libc::EBADF => "EBADF",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EXDEV => "EXDEV",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

/// How a probe child jails itself: as the VMM of `prepared` does ([`super::vmm::enter`]).
struct Jailer<'a> {
    prepared: &'a PreparedVm,
    kvm: RawFd,
    user_ns: Option<UserNs>,
}

/// Forks a child that jails itself with `spec`, builds the filters, installs `kind`'s, makes
/// `attempt` and exits with what it got.
fn attempt_in_child(spec: &Jailer<'_>, kind: ThreadKind, attempt: Attempt, t: &Targets) -> Verdict {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child is single-threaded after the fork (what the jail needs); it makes
    // system calls and allocates (glibc's fork leaves malloc usable in the child), then ends
    // with a raw exit without returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: dup2 of our pipe's write end onto stderr (kept by the jail).
        unsafe { libc::dup2(fds[1], libc::STDERR_FILENO) };
        let code = jailed_attempt(spec, kind, attempt, t);
        // Ends as that kind of thread ends: the VMM thread ends the process, the others only
        // themselves (which ends this single-threaded child too); `exit_group` is not on a
        // vCPU's list.
        let exit = match kind {
            ThreadKind::Vmm => libc::SYS_exit_group,
            _ => libc::SYS_exit,
        };
        // SAFETY: ends the child; nothing runs after it.
        unsafe { libc::syscall(exit, code) };
        unreachable!("exit returned");
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
    let stderr = stderr.trim().to_owned();
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS {
        return Verdict::Sigsys(stderr);
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Verdict::Escaped,
        Some(e) if e < JAIL_FAILED => Verdict::Errno(e),
        _ => Verdict::Broken(format!("status {status:#x}: {stderr}")),
    }
}

/// The child's side: the VMM's order (jail, then filters), then the attempt.
fn jailed_attempt(spec: &Jailer<'_>, kind: ThreadKind, attempt: Attempt, t: &Targets) -> i32 {
    if let Err(e) = super::vmm::enter(spec.prepared, spec.kvm, spec.user_ns.as_ref()) {
        eprintln!("{}", crate::report::error_line(&e));
        return JAIL_FAILED;
    }
    let filters = match Filters::build(Mode::Enforce) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}", crate::report::error_line(&e));
            return FILTER_FAILED;
        }
    };
    let program = match kind {
        ThreadKind::Vmm => filters.vmm,
        ThreadKind::Vcpu => filters.vcpu,
        ThreadKind::Fs => filters.fs,
    };
    if let Err(e) = seccomp::install(kind, &program) {
        eprintln!("{}", crate::report::error_line(&e));
        return FILTER_FAILED;
    }
    match attempt(t) {
        Ok(()) => 0,
        Err(e) => e.clamp(1, JAIL_FAILED - 1),
    }
}

/// A VM as a pod's VMM would have it prepared: a kernel and initramfs, a vsock device in its
/// own directory, a read-only share.
fn prepared_vm(dir: &Path) -> PreparedVm {
    // Enough of an ELF64 x86-64 header for the kernel probe; nothing is loaded.
    let mut kernel = vec![0u8; 64];
    kernel[..6].copy_from_slice(b"\x7fELF\x02\x01");
    kernel[18] = 0x3e;
    std::fs::write(dir.join("vmlinux"), kernel).unwrap();
    std::fs::write(dir.join("initramfs.cpio"), b"070701").unwrap();
    for sub in ["vsock", "share"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    VmConfig {
        kernel: dir.join("vmlinux"),
        initrd: Some(dir.join("initramfs.cpio")),
        cmdline_extra: String::new(),
        default_cmdline: true,
        mem_bytes: 128 * MIB,
        vcpus: 1,
        console: ConsoleOutput::Stdio,
        boot_trace: false,
        seccomp: true,
        devices: vec![
            DeviceSpec::Vsock(VsockSpec {
                cid: 3,
                uds: dir.join("vsock/v.sock"),
            }),
            DeviceSpec::Fs(ShareSpec {
                tag: "blobs".into(),
                host_dir: dir.join("share"),
                read_only: true,
                cache: CacheMode::Always,
            }),
        ],
    }
    .prepare(&HostLimits {
        mem_bytes: None,
        max_vcpus: None,
    })
    .expect("prepare the probe's VM")
}

/// The process standing in for another pod's VMM.
fn victim() -> Child {
    Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("start `sleep` (the other pod's VMM)")
}

/// Whether `pid` is being traced or has stopped.
fn traced(pid: libc::pid_t) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    field("TracerPid:") != "0" || field("State:").starts_with(['t', 'T'])
}

/// Runs every attempt as each of `kinds` against a fresh victim and checks the host after;
/// returns the attempts that worked and what the host shows of them. Prints one line per
/// attempt.
fn attempt_all(kinds: &[ThreadKind], user_ns: bool) -> Vec<String> {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let prepared = prepared_vm(dir.as_path());
    // `/dev/kvm` is only held by the VMM, never used by an attempt: any open file stands in.
    let kvm = std::fs::File::open("/dev/kvm").or_else(|_| std::fs::File::open("/dev/null"));
    let kvm = kvm.expect("open /dev/kvm or /dev/null");
    let spec = Jailer {
        prepared: &prepared,
        kvm: kvm.as_raw_fd(),
        user_ns: user_ns.then(|| UserNs {
            ids: IdRange::per_pod(0x4200_0000).expect("a valid range"),
            id_mapped: Vec::new(),
        }),
    };
    let share_fd = prepared
        .devices
        .iter()
        .find_map(|d| match d {
            PreparedDevice::Fs(share) => Some(share.root.as_raw_fd()),
            PreparedDevice::Vsock(_) | PreparedDevice::Net(_) => None,
        })
        .expect("the probe's VM has a share");
    let bound = dir.as_path().join("vsock");
    // One name per call: the tests run in parallel in one process.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let abstract_name = format!("husk-escape-probe-{}-{call}", std::process::id()).into_bytes();
    let _listener = listen_abstract(&abstract_name);
    let mut victim = victim();
    let targets = Targets {
        victim: victim.id() as libc::pid_t,
        share_fd,
        bound: std::ffi::CString::new(bound.as_os_str().as_encoded_bytes()).unwrap(),
        abstract_name,
    };
    let mut escaped = Vec::new();
    for &kind in kinds {
        for (name, attempt) in ATTEMPTS {
            let how = match attempt_in_child(&spec, kind, *attempt, &targets) {
                Verdict::Escaped => {
                    escaped.push(format!("{kind}/{name}"));
                    "SUCCEEDED".to_owned()
                }
                Verdict::Errno(e) => format!("refused ({})", errno_name(e)),
                Verdict::Sigsys(why) => format!("refused (SIGSYS: {why})"),
                Verdict::Broken(why) => panic!("attempt {name} as the {kind} thread: {why}"),
            };
            let ns = if user_ns { " (user namespace)" } else { "" };
            println!("attempt {name} as the {kind} thread{ns} {how}");
        }
    }
    // The host, untouched: the other pod's VMM runs, untraced; nothing mounted on the host.
    if victim.try_wait().expect("poll the other VMM").is_some() {
        escaped.push("host: the other pod's VMM was killed".into());
    } else if traced(targets.victim) {
        escaped.push("host: the other pod's VMM is traced or stopped".into());
    }
    victim.kill().ok();
    victim.wait().ok();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if mounts.lines().any(|l| l.contains(bound.to_str().unwrap())) {
        escaped.push(format!("host: a mount appeared at {}", bound.display()));
    }
    escaped
}

/// A listening abstract Unix socket in the host's network namespace.
fn listen_abstract(name: &[u8]) -> OwnedFd {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just returned and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = abstract_addr(name);
    // SAFETY: bind our socket to a valid sockaddr_un of `len` bytes.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    // SAFETY: listen takes integers only.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 1) }, 0);
    fd
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: the VMM's jail needs root (tier 2 test)");
    }
    root
}

#[test]
fn every_escape_attempt_from_the_jail_is_refused() {
    if !is_root() {
        return;
    }
    assert_all_refused(&[ThreadKind::Vmm, ThreadKind::Vcpu]);
}

/// Runs every attempt as each of `kinds`, jailed as a pod's VMM (a user namespace of its own)
/// and as `husk vm`'s (host root, few capabilities), and fails on any escape.
fn assert_all_refused(kinds: &[ThreadKind]) {
    for user_ns in [true, false] {
        let escaped = attempt_all(kinds, user_ns);
        assert!(
            escaped.is_empty(),
            "escapes (user namespace: {user_ns}): {escaped:?}"
        );
    }
}

/// The fs worker may `openat`, and holds its share's root by a descriptor: were that a
/// directory of the host's mount, `openat(root, "../../..")` would walk up out of the share to
/// the host's root (the jail's `pivot_root` does not stop a walk that starts outside it), as
/// this test found. The jail serves every share from a private clone of its mount, where `..`
/// stops at the share's root ([`super::mount::private_clone`]).
#[test]
fn the_fs_thread_cannot_leave_its_share() {
    if !is_root() {
        return;
    }
    assert_all_refused(&[ThreadKind::Fs]);
}

/// The jail's set-up time on this host ([`super::vmm::enter`], as the builder times it: the
/// user namespace, the share clones, the spec applied), in a forked child each time; printed
/// as `figure jail-setup-host ...` lines, never asserted.
#[test]
fn figure_the_jails_set_up_time() {
    if !is_root() {
        return;
    }
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let prepared = prepared_vm(dir.as_path());
    let kvm = std::fs::File::open("/dev/kvm").or_else(|_| std::fs::File::open("/dev/null"));
    let kvm = kvm.expect("open /dev/kvm or /dev/null");
    let ids = IdRange::per_pod(0x4300_0000).expect("a valid range");
    let cases = [
        ("root-jail", None),
        ("user-ns", Some(Vec::new())),
        ("user-ns-id-mapped-share", Some(vec!["blobs".to_owned()])),
    ];
    for (name, id_mapped) in cases {
        let spec = Jailer {
            prepared: &prepared,
            kvm: kvm.as_raw_fd(),
            user_ns: id_mapped.map(|id_mapped| UserNs { ids, id_mapped }),
        };
        let mut ms: Vec<f64> = (0..9).map(|_| set_up_in_child(&spec)).collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "figure jail-setup-host {name} median {:.2} ms (min {:.2}, max {:.2}, 9 runs)",
            ms[4], ms[0], ms[8]
        );
    }
}

/// Forks a child that jails itself with `spec` and reports how long that took, in ms.
fn set_up_in_child(spec: &Jailer<'_>) -> f64 {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: as in `attempt_in_child`: the child makes system calls and allocates, then
    // ends with a raw exit without returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: dup2 of our pipe's write end onto stderr (kept by the jail).
        unsafe { libc::dup2(fds[1], libc::STDERR_FILENO) };
        let start = std::time::Instant::now();
        let (line, code) = match super::vmm::enter(spec.prepared, spec.kvm, spec.user_ns.as_ref()) {
            Ok(()) => (format!("{}", start.elapsed().as_secs_f64() * 1000.0), 0),
            Err(e) => (crate::report::error_line(&e), JAIL_FAILED),
        };
        // Straight to descriptor 2 (the pipe): the harness captures `eprintln!`.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        // SAFETY: ends the child; nothing runs after it.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the write end is ours; the child has its own copy.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours alone from here on.
    let mut read_end = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    let mut out = String::new();
    read_end
        .read_to_string(&mut out)
        .expect("read the child's line");
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(status, 0, "the child could not jail itself: {}", out.trim());
    out.trim().parse().expect("the child's set-up time")
}
