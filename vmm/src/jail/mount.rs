//! The jail's namespaces and its empty root.
//!
//! The root is a tmpfs made with the fd-based mount API (`fsopen`, `fsmount`: Linux 5.2), so
//! no directory on the host is needed for it: the detached mount is attached over the
//! current root of the (new, private) mount namespace, filled through its descriptor, and
//! pivoted into. While it covers the old root, absolute paths still resolve in the old tree
//! (a lookup starts at the process's root, below the new mount), which is where the bind
//! sources are; bind targets are named through `/proc/self/fd/<root>/...`.
//! The sequence after `pivot_root(".", ".")` (the old root stacked on the new one, then
//! detached from a descriptor of it) is the one runc uses.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::{JailError, JailSpec};

/// Size of the root tmpfs: it holds only directories (mount points).
const ROOT_SIZE: &str = "64k";
/// Inodes of the root tmpfs: one per mount-point directory.
const ROOT_INODES: &str = "64";

/// Flags of the fd-based mount API (linux/mount.h), by their kernel names.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL in a jail constant")
}

fn path_cstring(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| JailError::BadBind {
        path: p.to_owned(),
        why: "NUL in the path",
    })
}

/// Unshares the mount, UTS, IPC, network and cgroup namespaces and makes every mount
/// private, so nothing the jail mounts or unmounts reaches the host. The cgroup namespace's
/// root is the cgroup the process is in (a pod's VMM joins its own before it jails itself).
pub fn enter_namespaces() -> Result<(), JailError> {
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP;
    // SAFETY: unshare takes flags only; return checked.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(JailError::last_os(
            "unshare the mount, UTS, IPC, network and cgroup namespaces",
        ));
    }
    mount(
        None,
        c"/",
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        "make every mount private",
    )
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    step: &str,
) -> Result<(), JailError> {
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is a NUL-terminated string or null, and no data argument is
    // passed; return checked.
    let r = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(JailError::last_os(step));
    }
    Ok(())
}

fn owned(fd: libc::c_long, step: &str) -> Result<OwnedFd, JailError> {
    if fd < 0 {
        return Err(JailError::last_os(step));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached tmpfs mount for the root: `nosuid,nodev,noexec`, tiny, mode 0755.
fn new_root_mount() -> Result<OwnedFd, JailError> {
    let step = "create the jail's root tmpfs (fsopen: needs Linux 5.2)";
    // SAFETY: fsopen with a NUL-terminated file system name and flags; return checked.
    let fs = owned(
        unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) },
        step,
    )?;
    for (key, value) in [
        ("size", ROOT_SIZE),
        ("nr_inodes", ROOT_INODES),
        ("mode", "0755"),
    ] {
        let (k, v) = (cstring(key), cstring(value));
        // SAFETY: fsconfig on our fs context with NUL-terminated key and value; return checked.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r != 0 {
            return Err(JailError::last_os(format!("set the root tmpfs's {key}")));
        }
    }
    // SAFETY: fsconfig(CMD_CREATE) on our fs context, no pointers; return checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r != 0 {
        return Err(JailError::last_os("create the root tmpfs"));
    }
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // SAFETY: fsmount on our fs context with flags only; return checked.
    owned(
        unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) },
        "mount the root tmpfs",
    )
}

/// Makes `rel` (plain components) as directories under `dir`, mode 0755.
fn mkdirs(dir: &OwnedFd, rel: &Path) -> Result<(), JailError> {
    let mut sofar = std::path::PathBuf::new();
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        sofar.push(name);
        let p = path_cstring(&sofar)?;
        // SAFETY: mkdirat relative to our root descriptor with a NUL-terminated path.
        let r = unsafe { libc::mkdirat(dir.as_raw_fd(), p.as_ptr(), 0o755) };
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(JailError::last_os(format!(
                "make the mount point {} in the jail",
                Path::new("/").join(&sofar).display()
            )));
        }
    }
    Ok(())
}

/// Binds `source` (followed if a link) at `target`, then remounts the bind with `extra`
/// flags (`nosuid,nodev,noexec` always; a bind ignores them on the first call), read-only
/// if the source's mount is: the bind never gives the jail more than the host's mount does.
fn bind(source: &CStr, target: &CStr, extra: libc::c_ulong, what: &str) -> Result<(), JailError> {
    // SAFETY: statvfs is plain data, written by statvfs below.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs with a NUL-terminated path and a valid out pointer; return checked.
    if unsafe { libc::statvfs(source.as_ptr(), &mut st) } != 0 {
        return Err(JailError::last_os(format!(
            "find {what} to bind into the jail"
        )));
    }
    let extra = if st.f_flag & libc::ST_RDONLY != 0 {
        extra | libc::MS_RDONLY
    } else {
        extra
    };
    mount(
        Some(source),
        target,
        None,
        libc::MS_BIND,
        &format!("bind {what} into the jail"),
    )?;
    let flags = libc::MS_BIND
        | libc::MS_REMOUNT
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | extra;
    mount(
        None,
        target,
        None,
        flags,
        &format!("restrict the bind of {what}"),
    )
}

/// Builds the jail's root and enters it: see the module documentation.
pub fn build_root(spec: &JailSpec) -> Result<(), JailError> {
    // SAFETY: open with a NUL-terminated path and flags; the result is checked by `owned`.
    let old_root = owned(
        unsafe {
            libc::open(
                c"/".as_ptr(),
                libc::O_DIRECTORY | libc::O_PATH | libc::O_CLOEXEC,
            )
        }
        .into(),
        "open the current root",
    )?;
    let root = new_root_mount()?;
    // SAFETY: move_mount of our detached mount onto "/" (empty source path, flags only);
    // return checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            root.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(JailError::last_os("attach the jail's root tmpfs"));
    }
    let inside = |rel: &Path| -> Result<CString, JailError> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        path_cstring(&Path::new(&format!("/proc/self/fd/{}", root.as_raw_fd())).join(rel))
    };
    if spec.proc_self {
        mkdirs(&root, Path::new("proc/self"))?;
        bind(
            c"/proc/self",
            &inside(Path::new("proc/self"))?,
            libc::MS_RDONLY,
            "/proc/self",
        )?;
    }
    for path in spec.bind_order() {
        mkdirs(&root, path)?;
        let what = path.display().to_string();
        bind(&path_cstring(path)?, &inside(path)?, 0, &what)?;
    }
    pivot(&root, &old_root)?;
    mount(
        None,
        c"/",
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "make the jail's root read-only",
    )
}

/// `pivot_root` into `root` and detaches the old root.
fn pivot(root: &OwnedFd, old_root: &OwnedFd) -> Result<(), JailError> {
    // SAFETY: fchdir to a directory descriptor we own; return checked.
    if unsafe { libc::fchdir(root.as_raw_fd()) } != 0 {
        return Err(JailError::last_os("enter the jail's root"));
    }
    // SAFETY: pivot_root with two NUL-terminated paths; return checked.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        return Err(JailError::last_os(
            "pivot_root into the jail (husk's own root must be a mount point, not the initramfs)",
        ));
    }
    // SAFETY: fchdir to the old root, a directory descriptor we own; return checked.
    if unsafe { libc::fchdir(old_root.as_raw_fd()) } != 0 {
        return Err(JailError::last_os("return to the old root"));
    }
    // SAFETY: umount2 of the current directory, a NUL-terminated path; return checked.
    if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(JailError::last_os("detach the old root"));
    }
    // SAFETY: chdir with a NUL-terminated path; return checked.
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(JailError::last_os("enter the jail's root"));
    }
    Ok(())
}

/// Rootless: [`private_clone`] of the share root `dir`, which was opened in the host's mount
/// namespace, from inside the jail's new one. An ordinary user may clone only mounts of a
/// namespace its own user namespace owns, so the root is opened again by its path (no symlink
/// followed, as [`crate::fs::ShareRoot::open`] does), in the new namespace's copy of the host's
/// mounts, and must be the same directory (device and inode) as the one held.
pub fn reclone_in_own_namespace(dir: RawFd) -> io::Result<()> {
    let path = std::fs::read_link(format!("/proc/self/fd/{dir}"))?;
    let again = crate::fs::ShareRoot::open(&path)?;
    let same = {
        // SAFETY: stat64 is plain data, written by fstat64 below.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        // SAFETY: fstat64 of a descriptor we hold into a valid stat64; return checked.
        if unsafe { libc::fstat64(dir, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        again.is(st.st_dev, st.st_ino)
    };
    if !same {
        return Err(io::Error::other(format!(
            "{} is no longer the directory opened before the jail",
            path.display()
        )));
    }
    // SAFETY: dup3 between two descriptors this process holds; `dir` now names the directory
    // in this namespace's mounts; return checked.
    if unsafe { libc::dup3(again.as_raw_fd(), dir, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    private_clone(dir, None)
}

/// Replaces the directory descriptor `dir` (a share root) with one of a private, detached
/// clone of its mount (submounts included) rooted at that directory, with its ids mapped
/// through `id_map` if given; the descriptor number stays the same.
///
/// Why every jailed share is served that way: a descriptor of a directory on the host's
/// mount reaches the host's whole tree through `..`, whatever the jail's root is (the root
/// only stops `..` at the process's own `/`, and the share root lies outside it). A
/// detached clone has no parent: `..` from its root stays at its root, so code that takes
/// over a virtio-fs worker (which may `openat`) still cannot leave the share. Nobody else can
/// reach the clone by path either: it is in no mount namespace's tree.
pub fn private_clone(dir: RawFd, id_map: Option<std::os::fd::BorrowedFd<'_>>) -> io::Result<()> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: open_tree on a descriptor we hold, with an empty NUL-terminated path and
    // flags; return checked.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, dir, c"".as_ptr(), flags) };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `tree` was just returned by the kernel and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    if let Some(userns) = id_map {
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        // SAFETY: mount_setattr on our detached tree with an empty path, a valid mount_attr
        // and its size; return checked.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: dup3 between two descriptors this process holds; `dir` now names the clone
    // (its old file is closed by the kernel); return checked.
    if unsafe { libc::dup3(tree.as_raw_fd(), dir, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
