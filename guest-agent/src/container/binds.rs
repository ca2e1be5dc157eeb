//! Bind mounts into a container (volumes), done by the container init.
//!
//! Two phases, because a source is a guest path and a destination a path in
//! the container. Before `pivot_root` each source is cloned into a detached
//! mount tree (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`) and given its
//! attributes in one step for the whole tree (`mount_setattr`: nosuid,
//! nodev, private, and read-only for submounts too, which a classic
//! `MS_REMOUNT | MS_BIND` cannot do). After the container's own file systems
//! are mounted, each tree is attached with `move_mount` onto a descriptor of
//! its destination, resolved and created inside the container's root with
//! `openat2(RESOLVE_IN_ROOT)`: an image's symlink (`data -> /`,
//! `data -> ../../..`) cannot aim the mount outside the root, and nothing is
//! looked up by path again between the resolution and the mount.
//! `--tmpfs` mounts are made detached too ([`detach_tmpfs`]) and attached
//! the same way.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use husk_proto::{MountSpec, TmpfsSpec};

use crate::rooted::Root;

/// A source cloned and configured, not yet attached anywhere.
pub struct Detached {
    tree: OwnedFd,
    is_dir: bool,
    pub destination: String,
}

fn ret_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful call returned a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

fn ret_unit(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Clones `m.source` (with its submounts) into a detached tree with the
/// container's attributes. Must run in the container's mount namespace
/// before `pivot_root`, while guest paths still resolve.
pub fn detach(m: &MountSpec) -> io::Result<Detached> {
    let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if m.read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    clone_tree(Path::new(&m.source), set, true, m.destination.clone())
}

/// Clones the guest's device node `/dev/<name>` for the container's /dev
/// (a `nodev` tmpfs, where a node of its own would not open): the clone
/// keeps device access and is read-only, so the app can use the node but
/// not chmod or chown the guest's (writing to a device is not a write to
/// the file system, and works on a read-only mount). Refuses anything but
/// a character device.
pub fn detach_device(name: &str) -> io::Result<Detached> {
    use std::os::unix::fs::FileTypeExt;
    let path = Path::new("/dev").join(name);
    let set = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
    let d = clone_tree(&path, set, false, path.display().to_string())?;
    let meta = std::fs::File::from(d.tree.try_clone()?).metadata()?;
    if !meta.file_type().is_char_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a character device", path.display()),
        ));
    }
    Ok(d)
}

/// `fsconfig` commands (linux/mount.h).
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// A new tmpfs for the container (`--tmpfs`), made detached with the mount
/// API (`fsopen`, `fsconfig`, `fsmount`), so it is attached like a volume:
/// onto its destination resolved inside the container's root.
pub fn detach_tmpfs(t: &TmpfsSpec) -> io::Result<Detached> {
    // SAFETY: fsopen with a static C string and flags; returns a new fd or -1.
    let fs =
        ret_fd(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 1 as libc::c_uint) })?;
    let mode = format!("{:o}", t.mode.unwrap_or(0o1777));
    for (key, value) in [("size", t.size.to_string()), ("mode", mode)] {
        let key = CString::new(key).map_err(|_| io::ErrorKind::InvalidInput)?;
        let value = CString::new(value).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: fsconfig on our fs context with two valid C strings.
        ret_unit(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: fsconfig(FSCONFIG_CMD_CREATE) on our fs context, no pointers.
    ret_unit(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if !t.exec {
        attrs |= libc::MOUNT_ATTR_NOEXEC;
    }
    if t.read_only {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    // SAFETY: fsmount of our created fs context with integer flags; returns
    // a new fd of the detached mount or -1.
    let tree = ret_fd(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })?;
    Ok(Detached {
        tree,
        is_dir: true,
        destination: t.destination.clone(),
    })
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the mount at `path` alone (not its
/// submounts), keeping its other attributes.
pub fn set_attrs(path: &Path, attrs: u64) -> io::Result<()> {
    let path = crate::sys::cstr(path)?;
    // SAFETY: mount_attr is plain data; zeroed means "change nothing".
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = attrs;
    // SAFETY: a valid C string, `attr` valid for `size` bytes.
    ret_unit(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            0 as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

/// `open_tree(OPEN_TREE_CLONE)` of `source` (recursively: with its
/// submounts), with the mount attributes `set` and private propagation.
fn clone_tree(
    source: &Path,
    set: u64,
    recursive: bool,
    destination: String,
) -> io::Result<Detached> {
    let source = crate::sys::cstr(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: open_tree with a valid C string and flags; returns a new fd or -1.
    let tree = ret_fd(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            flags as libc::c_uint,
        )
    })?;
    // SAFETY: mount_attr is plain data; zeroed means "change nothing".
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = set;
    attr.propagation = libc::MS_PRIVATE;
    let empty = c"";
    // SAFETY: the tree fd is ours, the path is an empty C string (with
    // AT_EMPTY_PATH: the fd itself), `attr` is valid for `size` bytes.
    ret_unit(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    let is_dir = std::fs::File::from(tree.try_clone()?).metadata()?.is_dir();
    Ok(Detached {
        tree,
        is_dir,
        destination,
    })
}

/// Attaches `d` at its destination inside `root` (the container's `/`).
pub fn attach(d: &Detached, root: &Root) -> io::Result<()> {
    let target = resolve_or_create(root, Path::new(&d.destination), d.is_dir)?;
    let empty = c"";
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both fds are ours and the paths empty C strings (the flags
    // make the fds themselves source and target).
    ret_unit(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            d.tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            flags as libc::c_uint,
        )
    })
}

/// An `O_PATH` descriptor of `dest` inside `root`, creating missing
/// components (directories; the last one an empty file unless `is_dir`).
/// Every prefix is resolved from the root with `RESOLVE_IN_ROOT`, and a
/// component is created relative to its already resolved parent.
fn resolve_or_create(root: &Root, dest: &Path, is_dir: bool) -> io::Result<OwnedFd> {
    let names: Vec<&OsStr> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut parent = root.fd().try_clone()?;
    let mut prefix = PathBuf::new();
    for (i, name) in names.iter().enumerate() {
        prefix.push(name);
        let want_dir = is_dir || i + 1 < names.len();
        let flags = libc::O_PATH | if want_dir { libc::O_DIRECTORY } else { 0 };
        match root.open_in(&prefix, flags) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        create_at(&parent, name, want_dir)?;
        parent = root.open_in(&prefix, flags)?;
    }
    Ok(parent)
}

/// Creates `name` in directory `dir` (no symlink followed); an entry that
/// appeared meanwhile is left for the caller's next lookup to judge.
fn create_at(dir: &OwnedFd, name: &OsStr, as_dir: bool) -> io::Result<()> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let ret = if as_dir {
        // SAFETY: mkdirat with our directory fd and a valid C string.
        unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) }
    } else {
        // SAFETY: openat with our directory fd, a valid C string and flags
        // that never follow a symlink; the fd is closed right after.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own; closing it once.
            unsafe { libc::close(fd) };
        }
        fd.min(0)
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}
