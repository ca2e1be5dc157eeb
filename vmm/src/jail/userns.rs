//! The VMM's user namespace: the jailed VMM is not host root.
//!
//! A pod's VMM enters a user namespace of its own whose ids `0..count` map to an unprivileged
//! host range `base..base + count` ([`IdRange`]; each pod gets its own range, so two pods'
//! VMMs are different host users). In it the VMM is root *of the namespace*: the capabilities
//! it keeps ([`super::vmm::VMM_CAPS`]) act only on files whose owner and group are mapped into
//! it, and on nothing of the host's (no signal to another user's process, no `CAP_SYS_*`
//! outside). Its uid on the host is `base`.
//!
//! **Ownership on shares** (what the in-process virtio-fs server can do for the guest):
//! - A share husk makes for the pod (an empty-dir volume's tmpfs, owned by the range's root
//!   when mounted) and its files the guest creates belong to the range: a guest uid `u` is host
//!   uid `base + u`. Nobody else on the host owns anything there.
//! - A host directory (`-v /srv/data:/data`) keeps its host ownership through an **idmapped
//!   mount** ([`id_map`]): the VMM serves a private clone of the directory's mount whose ids
//!   are shifted through this namespace, so host uid `k` appears to the guest as `k`, and a
//!   file the guest creates as `u` is stored as host uid `u`, exactly as without a user
//!   namespace. Chosen over the alternatives the issue lists because it keeps the volume's
//!   on-disk ownership what the host's other users expect (libkrun's
//!   `user.containers.override_stat` xattr stores the guest's ownership where only fuse
//!   servers look, and files would belong to the range's root on the host), and over
//!   virtiofsd's capability-trimmed root because the VMM then is not host root at all.
//!   The catch: the file system must support idmapped mounts (Linux 6.1: ext4, xfs, btrfs,
//!   vfat, f2fs; tmpfs from 6.3; not 9p, NFS or FUSE/virtiofs). A pod whose host volume cannot
//!   be id-mapped runs its VMM in the root jail instead (uid 0 with five capabilities,
//!   everything else of the jail unchanged), and `husk run` says so in one line: refusing
//!   would make volumes on those file systems unusable, and silently mapping them would
//!   show every file as `nobody` to the guest (docker's userns-remap behaviour, which its
//!   users work around with `chown`).
//! - Guest ids outside `0..count` cannot be stored (the kernel answers `EINVAL`); host ids
//!   outside the mapping appear as 65534 (`nobody`), as in every user namespace.
//!
//! How the namespace is made: writing a mapping to an unprivileged range needs `CAP_SETUID` in
//! the *parent* namespace, which the process that enters it no longer has. So [`create`] forks
//! a child that unshares a new user namespace and waits; this process (host root) writes the
//! child's `uid_map` and `gid_map`, keeps a descriptor of the namespace
//! (`/proc/<child>/ns/user`) and lets the child exit. That descriptor serves twice: it is the
//! `userns_fd` of the idmapped mounts, and the jail `setns`es into it ([`enter`]) after every
//! mount is made (the jail's mount namespace stays owned by the host's user namespace, so the
//! VMM can make no mount at all afterwards).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::JailError;

/// How many ids a pod's range holds: the 16-bit range that container images assume.
pub const IDS_PER_POD: u32 = 65_536;

/// Ids `0..count` of a user namespace, mapped to host ids `base..base + count`; the same
/// range for users and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// The host id of the namespace's root.
    pub base: u32,
    /// How many ids are mapped.
    pub count: u32,
}

impl IdRange {
    /// A range of [`IDS_PER_POD`] ids from `base`, if it fits in 32 bits and leaves out host
    /// root.
    pub fn per_pod(base: u32) -> Option<IdRange> {
        (base > 0 && base.checked_add(IDS_PER_POD - 1).is_some()).then_some(IdRange {
            base,
            count: IDS_PER_POD,
        })
    }

    /// The `uid_map`/`gid_map` line.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }

    /// The host id of namespace id `inside`, if mapped.
    pub fn host_id(&self, inside: u32) -> Option<u32> {
        (inside < self.count).then(|| self.base + inside)
    }
}

fn last_os(step: impl Into<String>) -> JailError {
    JailError::last_os(step)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own; return checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_os("make a pipe for the user namespace's helper"));
    }
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// The helper child's side: unshare a user namespace, report the errno (0: done) and wait
/// for the parent's byte on `go` (or its end of file). Only async-signal-safe system calls: the parent may have
/// other threads (`husk run` probing volumes).
fn helper(ready: RawFd, go: RawFd) -> ! {
    // SAFETY: unshare takes flags only.
    let errno: i32 = if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
        0
    } else {
        // SAFETY: __errno_location has no preconditions: it returns this thread's errno slot.
        let slot = unsafe { libc::__errno_location() };
        // SAFETY: the slot is valid and aligned for as long as this thread runs.
        unsafe { *slot }
    };
    let bytes = errno.to_ne_bytes();
    // SAFETY: write of a 4-byte buffer we own to our pipe end.
    unsafe { libc::write(ready, bytes.as_ptr().cast(), bytes.len()) };
    let mut b = 0u8;
    // SAFETY: read into a 1-byte buffer we own.
    unsafe { libc::read(go, (&mut b as *mut u8).cast(), 1) };
    // SAFETY: _exit ends the child without running anything of the parent's.
    unsafe { libc::_exit(0) }
}

fn write_map(pid: libc::pid_t, file: &str, line: &str) -> Result<(), JailError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, line).map_err(|source| JailError::Step {
        step: format!("write {path} ({})", line.trim_end()),
        source,
    })
}

/// Makes a user namespace mapping `range` (see the module documentation) and returns a
/// descriptor of it. Needs `CAP_SETUID` and `CAP_SETGID` (host root).
pub fn create(range: IdRange) -> Result<OwnedFd, JailError> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child runs only async-signal-safe system calls and `_exit`s (see `helper`),
    // so forking from a process with other threads is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_os("fork the user namespace's helper"));
    }
    if pid == 0 {
        helper(ready_w.as_raw_fd(), go_r.as_raw_fd());
    }
    drop((ready_w, go_r));
    let result = map_and_hold(pid, &ready_r, range);
    // One byte tells the helper to exit. Not the pipe's end of file: a process forked
    // meanwhile by another thread may hold a copy of `go_w`.
    // SAFETY: write of a 1-byte buffer we own to our pipe end.
    unsafe { libc::write(go_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    drop(go_w);
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    result
}

fn map_and_hold(pid: libc::pid_t, ready: &OwnedFd, range: IdRange) -> Result<OwnedFd, JailError> {
    let mut bytes = [0u8; 4];
    // SAFETY: read into a 4-byte buffer we own from our pipe end.
    let n = unsafe { libc::read(ready.as_raw_fd(), bytes.as_mut_ptr().cast(), 4) };
    if n != 4 {
        return Err(JailError::Unable(
            "the user namespace's helper ended before it reported".into(),
        ));
    }
    let errno = i32::from_ne_bytes(bytes);
    if errno != 0 {
        return Err(JailError::Step {
            step: "make a user namespace (refused to a chrooted process, where user.max_user_namespaces is 0, or without CONFIG_USER_NS: `husk doctor` says which)".into(),
            source: io::Error::from_raw_os_error(errno),
        });
    }
    let line = range.map_line();
    write_map(pid, "uid_map", &line)?;
    write_map(pid, "gid_map", &line)?;
    let path = format!("/proc/{pid}/ns/user");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|source| JailError::Step {
            step: format!("open {path}"),
            source,
        })
}

/// Rootless: moves the calling process into a new user namespace in which it is root, with
/// only its own uid and gid mapped (`0 <uid> 1`): an ordinary user may map nothing else
/// without a set-uid helper (`newuidmap`), which husk does not use. `setgroups` is denied in
/// it, as the kernel requires for an unprivileged gid map. Every namespace the jail makes
/// afterwards is owned by this one, so the process may mount, `pivot_root` and cut its
/// capabilities there; on the host it stays the same ordinary user. Call while the process
/// has one thread.
pub fn unshare_own() -> Result<(), JailError> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    // SAFETY: unshare takes flags only; return checked.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(last_os(
            "make a user namespace as an ordinary user (kernel.unprivileged_userns_clone or user.max_user_namespaces may forbid it)",
        ));
    }
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), &text).map_err(|source| JailError::Step {
            step: format!("write /proc/self/{file} ({})", text.trim_end()),
            source,
        })
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// Enters the user namespace `userns` as its root (host uid and gid: the range's base), with
/// no supplementary groups. Every capability is then one of the namespace's; the jail cuts
/// them right after. Call while the process has one thread.
pub fn enter(userns: BorrowedFd<'_>) -> Result<(), JailError> {
    // SAFETY: setns with a namespace descriptor we hold; return checked.
    if unsafe { libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        return Err(last_os("enter the VMM's user namespace"));
    }
    // SAFETY: setgroups with an empty list (null pointer, size 0); return checked.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(last_os("drop the supplementary groups"));
    }
    // SAFETY: setresgid/setresuid take integers only; return checked.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        return Err(last_os("become group 0 of the VMM's user namespace"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(last_os("become user 0 of the VMM's user namespace"));
    }
    Ok(())
}

/// Replaces the share root descriptor `dir` with one of a private clone of its mount whose
/// ids are mapped through `userns` ([`super::mount::private_clone`]). Fails with `EINVAL`
/// where the file system cannot be id-mapped.
pub fn id_map(dir: RawFd, userns: BorrowedFd<'_>) -> io::Result<()> {
    super::mount::private_clone(dir, Some(userns))
}

/// Whether the directory `dir` can be id-mapped through `userns`: [`id_map`] on a copy of
/// its descriptor, which is then closed.
pub fn can_id_map(dir: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let copy = dir.try_clone_to_owned()?;
    id_map(copy.as_raw_fd(), userns)
}

/// The name of the file system that holds `path`, for messages ("an unknown file system"
/// for one not listed).
pub fn fs_name(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "an unknown file system".into();
    };
    // SAFETY: statfs is plain data, written by statfs below.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs with a NUL-terminated path and a valid out pointer; return checked.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "an unknown file system".into();
    }
    let name = match st.f_type as u64 {
        0x0102_1994 => "tmpfs",
        0x0102_1997 => "9p",
        0x6573_5546 => "FUSE (virtiofs, sshfs...)",
        0x6969 => "NFS",
        0x794c_7630 => "overlayfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0xff53_4d42 | 0xfe53_4d42 => "SMB",
        other => return format!("a file system of type {other:#x}"),
    };
    name.into()
}
