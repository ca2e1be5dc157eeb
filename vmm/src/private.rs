//! The modes of what husk keeps on disk (security review F7): directories
//! 0700 and files 0600, owned by the user husk runs as, whether the store
//! is root's (`/var/lib/husk`) or a user's (`$XDG_DATA_HOME/husk`). Pod
//! directories hold the apps' environment (secrets included), their output
//! and the guest's console; the image store holds what was pulled with
//! private credentials. Nothing there needs to be read or traversed by
//! another user: the VMM, the virtio-fs servers and the pull helper run as
//! the same user as the `husk` that starts them. Blobs stay 0444 (read-only
//! is what keeps a pod's hard link from changing the store's copy), behind
//! their 0700 directories.
//!
//! Modes are set explicitly at each creation rather than through a process
//! umask, because the VMM's virtio-fs server creates files for the guest in
//! volumes with the modes the guest asks for.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of husk's directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of husk's files (other than blobs).
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) with [`DIR_MODE`]; an existing
/// `path` that others could enter is tightened to it, so a store made by
/// an older husk is closed on its next use.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Creates the new directory `path` with [`DIR_MODE`] (fails if it exists).
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)
}

/// A held `flock`, released when it is dropped (the file closes).
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

/// Opens `path` (created with [`FILE_MODE`] if missing) and takes
/// `flock(op)` on it (`LOCK_EX` or `LOCK_SH`), waiting for it. The one
/// lock primitive of the image store, the pod store, the trust policy and
/// the TAP network.
pub fn lock_file(path: &Path, op: libc::c_int) -> io::Result<FileLock> {
    let file = file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    flock(&file, op)?;
    Ok(FileLock { _file: file })
}

/// `flock(file, op)`, retried when a signal interrupts it: for a file that
/// is both the lock and the data (the lock goes with the file's last fd).
pub fn flock(file: &std::fs::File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor the caller holds; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Options that create files with [`FILE_MODE`].
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}
