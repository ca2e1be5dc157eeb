//! The guest's file-system layout, set up by PID 1 at boot.
//!
//! The initramfs holds nothing but the agent, so every mount point is created
//! here. First the agent moves itself onto a fresh tmpfs root (what
//! `switch_root` does): the initramfs `rootfs` is a mount without a parent and
//! `pivot_root(2)` refuses it, which would rule out `pivot_root` for
//! containers later.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::sys;

/// A boot-time mount or layout step that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}")]
    MkDir {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot move onto the new tmpfs root")]
    Reroot(#[source] io::Error),
}

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
const NOSUID_NODEV_NOEXEC: libc::c_ulong = NOSUID_NODEV | libc::MS_NOEXEC;

struct Mount {
    fstype: &'static str,
    target: &'static str,
    flags: libc::c_ulong,
    data: Option<&'static str>,
}

/// In order: later targets live inside earlier ones.
const MOUNTS: &[Mount] = &[
    Mount {
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: libc::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        fstype: "devpts",
        target: "/dev/pts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
    },
    Mount {
        fstype: "tmpfs",
        target: "/dev/shm",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        fstype: "tmpfs",
        target: "/run",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
    Mount {
        fstype: "cgroup2",
        target: "/sys/fs/cgroup",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
];

fn mkdir(path: &'static str, mode: u32) -> Result<(), MountError> {
    match DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(MountError::MkDir { path, source: e })
        }
        _ => Ok(()),
    }
}

/// Moves `/` onto a new tmpfs (see the module doc).
pub fn reroot_onto_tmpfs() -> Result<(), MountError> {
    const NEW_ROOT: &str = "/.husk-root";
    mkdir(NEW_ROOT, 0o755)?;
    sys::mount(
        "rootfs",
        Path::new(NEW_ROOT),
        Some("tmpfs"),
        0,
        Some("mode=0755"),
    )
    .map_err(|source| MountError::Mount {
        fstype: "tmpfs",
        target: NEW_ROOT,
        source,
    })?;
    std::env::set_current_dir(NEW_ROOT).map_err(MountError::Reroot)?;
    sys::mount(".", Path::new("/"), None, libc::MS_MOVE, None).map_err(MountError::Reroot)?;
    sys::chroot(Path::new(".")).map_err(MountError::Reroot)?;
    std::env::set_current_dir("/").map_err(MountError::Reroot)?;
    Ok(())
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /tmp, /run and the cgroup2
/// hierarchy, creating each mount point first.
pub fn mount_all() -> Result<(), MountError> {
    for m in MOUNTS {
        mkdir(m.target, 0o755)?;
        sys::mount(
            m.fstype,
            Path::new(m.target),
            Some(m.fstype),
            m.flags,
            m.data,
        )
        .map_err(|source| MountError::Mount {
            fstype: m.fstype,
            target: m.target,
            source,
        })?;
    }
    // Programs open /dev/ptmx; with a private devpts instance it must point
    // into it. devtmpfs may already hold a node there: keep it then.
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    Ok(())
}
