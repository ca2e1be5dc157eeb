//! A share's root directory, opened once and then held by descriptor.
//!
//! fuse-backend-rs's passthrough opens its root by a path string (`Config::root_dir`) on every
//! FUSE INIT and DESTROY, and our device reset calls its DESTROY too. A path is resolved again each
//! time, following symlinks in every component but the last, so a guest with write access to a
//! *parent* of another share's root (nested volumes, `-v /srv/app:/a -v /srv/app/web/data:/d`,
//! or one pod's volume inside another's) could swap that parent for a symlink and have the inner
//! share re-rooted anywhere on the host at its next mount (security review F1).
//!
//! The choice here: open the root once, before the guest runs, with
//! `openat2(O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS)`, so that no component of the configured
//! path may be a symlink (a swapped-in link is refused rather than followed), and keep that
//! descriptor for the life of the share. The passthrough is then handed
//! `/proc/self/fd/N/.`: the VMM's own procfs (which no guest can touch) jumps straight to the held
//! directory, so the path string the passthrough re-resolves no longer names anything a guest can
//! change. After each import the policy layer compares the root the passthrough now holds with
//! this one by device and inode number ([`ShareRoot::is`]) and serves nothing if they differ.
//! Symlinks in a configured path are refused, not resolved at start-up: resolving them would
//! re-open the same hole at pod start (the link may be another tenant's), and the error names the
//! real path to use instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A share's root directory, held open as an `O_PATH` descriptor.
#[derive(Debug)]
pub struct ShareRoot {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    path: PathBuf,
}

impl ShareRoot {
    /// Opens `path` as a directory, refusing symlinks in any of its components (`ELOOP`) and
    /// anything that is not a directory (`ENOTDIR`). A relative path is taken from the current
    /// directory.
    pub fn open(path: &Path) -> io::Result<ShareRoot> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open_how is a plain C struct of integers; all-zero is valid and the fields
        // that matter are set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: `c` is NUL terminated, `how` is a valid open_how and its size is passed;
        // the return value is checked.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat2 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let (dev, ino) = dev_ino(&fd)?;
        Ok(ShareRoot {
            fd,
            dev,
            ino,
            path: std::path::absolute(path)?,
        })
    }

    /// The path the root was opened by (absolute, as configured: for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path to hand fuse-backend-rs as its root: the held descriptor through the VMM's own
    /// `/proc/self/fd`. The trailing `/.` makes the magic link an inner component, which the
    /// passthrough's `O_NOFOLLOW` (last component only) lets the kernel follow.
    pub fn passthrough_path(&self) -> String {
        format!("/proc/self/fd/{}/.", self.fd.as_raw_fd())
    }

    /// Whether a stat's device and inode numbers are this directory's.
    pub fn is(&self, st_dev: u64, st_ino: u64) -> bool {
        st_dev == self.dev && st_ino == self.ino
    }
}

impl AsRawFd for ShareRoot {
    /// The held directory (a jail keeps it open).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for ShareRoot {
    /// The held directory.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn dev_ino(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    // SAFETY: stat64 is plain data, written by fstat64 below.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a valid descriptor and `st` a valid stat64; return checked.
    if unsafe { libc::fstat64(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use vmm_sys_util::tempdir::TempDir;

    #[test]
    fn opens_a_directory_and_names_it_through_proc() {
        let dir = TempDir::new().unwrap();
        let root = ShareRoot::open(dir.as_path()).unwrap();
        let meta = std::fs::metadata(dir.as_path()).unwrap();
        assert!(root.is(meta.dev(), meta.ino()));
        let via_proc = std::fs::metadata(root.passthrough_path()).unwrap();
        assert_eq!((via_proc.dev(), via_proc.ino()), (meta.dev(), meta.ino()));
        assert_eq!(root.path(), dir.as_path());
    }

    #[test]
    fn refuses_symlinks_in_any_component_and_non_directories() {
        let dir = TempDir::new().unwrap();
        let d = dir.as_path();
        std::fs::create_dir_all(d.join("real/inner")).unwrap();
        std::fs::write(d.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        let errno = |p: PathBuf| ShareRoot::open(&p).unwrap_err().raw_os_error();
        assert_eq!(errno(d.join("link/inner")), Some(libc::ELOOP), "middle");
        assert_eq!(errno(d.join("link")), Some(libc::ELOOP), "last");
        assert_eq!(errno(d.join("file")), Some(libc::ENOTDIR));
        assert_eq!(errno(d.join("missing")), Some(libc::ENOENT));
        assert!(ShareRoot::open(&d.join("real/inner")).is_ok());
    }
}
