//! Path resolution confined to a directory, for untrusted trees.
//!
//! Image layers and container root file systems are attacker-controlled: a
//! symlink `etc -> /` or `x -> ../../..` must never make the agent touch a
//! file outside the tree. `openat2(2)` with `RESOLVE_IN_ROOT` resolves every
//! component as if the directory were `/` (absolute symlinks and `..` stay
//! inside), atomically in the kernel, and `RESOLVE_NO_MAGICLINKS` refuses
//! `/proc/*/fd`-style jumps. Every operation then works on the final name
//! relative to an already-resolved parent descriptor (`*at` calls with
//! `AT_SYMLINK_NOFOLLOW`), so a symlink planted in between is never followed.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `openat2(2)`: `path` relative to `dir`, resolved under `resolve` rules.
pub fn openat2(
    dir: &OwnedFd,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = resolve;
    loop {
        // SAFETY: `c` and `how` are valid for the call and `size` matches
        // the struct passed; the result is a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the lookup; the kernel asks to retry.
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

/// The resolution rules for untrusted trees (see the module doc).
pub const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// A directory every lookup is confined to.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` (trusted: chosen by the agent) as the root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = File::open(path)?;
        let meta = fd.metadata()?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "root is not a directory",
            ));
        }
        Ok(Root { fd: fd.into() })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens `rel` inside the root.
    pub fn open_in(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        openat2(&self.fd, rel, flags, 0, IN_ROOT)
    }

    /// Opens directory `rel` inside the root (for `*at` calls).
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return self.fd.try_clone();
        }
        self.open_in(rel, libc::O_PATH | libc::O_DIRECTORY)
    }

    /// Reads regular file `rel` inside the root, refusing more than `limit` bytes.
    pub fn read_file(&self, rel: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let fd = self.open_in(rel, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        let mut out = Vec::new();
        file.take(limit + 1).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("husk-rooted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "inside\n").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", dir.join("rel")).unwrap();
        let root = Root::open(&dir).unwrap();
        // Both escapes land on the root's own etc/passwd.
        for p in ["abs/passwd", "rel/passwd", "../etc/passwd", "/etc/passwd"] {
            let got = root.read_file(Path::new(p), 100).unwrap();
            assert_eq!(got, b"inside\n", "{p}");
        }
        assert!(root.read_file(Path::new("etc/passwd"), 3).is_err());
        std::os::unix::fs::symlink("/proc/self/root/etc", dir.join("magic")).unwrap();
        // IN_ROOT resolves it inside the root, where /proc/self does not exist.
        assert!(root.read_file(Path::new("magic/passwd"), 100).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
