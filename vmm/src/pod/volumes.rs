//! Empty-dir volumes on the host (security review F6): each one is a tmpfs
//! of its own, with a size and an inode limit, mounted at its directory
//! under `$HUSK_ROOT/pods/<id>/volumes/<name>` when the pod is made.
//!
//! Without a limit, an app (or a hostile guest, through virtio-fs) could
//! fill the file system that holds the image store and every other pod's
//! state. Of the ways to bound a directory, a tmpfs per volume is the one
//! that needs nothing of the host's file system: project quotas exist only
//! on XFS and ext4 mounted with `prjquota`, and a loop-mounted image needs a
//! loop device and a file system tool, and leaves an image file to clean up
//! after a crash. A tmpfs enforces both limits itself (`ENOSPC` inside the
//! pod when either is reached), costs nothing until written, and its pages
//! are charged to the memory cgroup of the process that writes them (the
//! pod's VMM), not to the store's disk. Its contents live in host memory
//! (or swap), which suits a scratch volume that ends with its pod.
//!
//! The mount: source `husk-volume`, `nosuid,nodev`, `size=<size>`,
//! `nr_inodes=<size / 16 KiB, at least 1024>`, `uid` and `gid` the root of the pod's host id
//! range ([`super::ids`]: its jailed VMM's root, so the volume is the pod's on the host
//! too), `mode=1777`: writable by every
//! user *inside the pod* (an app that runs as a non-root user must be able
//! to use its scratch volume, as with Kubernetes' emptyDir, which is 0777),
//! sticky like /tmp so apps of different users cannot remove each other's
//! files. On the host it stays private: it sits under the pod's directory,
//! which is 0700 (security review F7), so no other host user can reach it. The size comes
//! from the manifest's `size` (default [`DEFAULT_VOLUME_SIZE`]). Mounting
//! needs CAP_SYS_ADMIN: where it fails the pod is not made, with one line
//! saying why (exit 125), rather than run with a volume that has no limit.
//!
//! The tmpfs is unmounted (lazily: the VMM may still hold files open) when
//! the pod ends, and again, for a pod whose supervisor died without doing
//! so (kill -9), whenever its directory is removed (`husk rm`, `husk gc`,
//! `--rm`, a pod that failed to start): [`release`].

use std::io;
use std::path::Path;

use super::spec::{Volume, MIB};
use super::state::PodDir;
use super::PodError;
use crate::jail::userns::IdRange;

/// Size limit of an empty-dir volume without a `size`.
pub const DEFAULT_VOLUME_SIZE: u64 = 256 * MIB;
/// One inode per this many bytes of the size limit...
const BYTES_PER_INODE: u64 = 16 << 10;
/// ...but at least this many (a small volume still holds many small files).
const MIN_INODES: u64 = 1024;
/// The mount source, to tell husk's volumes apart in /proc/self/mountinfo.
pub const MOUNT_SOURCE: &str = "husk-volume";

fn cstr(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The inode limit of a volume of `size` bytes.
pub fn inode_limit(size: u64) -> u64 {
    (size / BYTES_PER_INODE).max(MIN_INODES)
}

/// The tmpfs mount options of a volume of `size` bytes, its root owned by the root of the
/// pod's id range `ids` (host root without one).
pub fn mount_options(size: u64, ids: Option<IdRange>) -> String {
    let owner = ids.map_or(0, |r| r.base);
    format!(
        "size={size},nr_inodes={},mode=1777,uid={owner},gid={owner}",
        inode_limit(size)
    )
}

/// Mounts a size-limited tmpfs at the directory of each of `volumes` that
/// is an empty-dir one (the directories exist). On failure, what was
/// mounted is unmounted again.
pub fn mount_all(pod: &PodDir, volumes: &[Volume], ids: Option<IdRange>) -> Result<(), PodError> {
    for v in volumes.iter().filter(|v| v.host.is_none()) {
        let size = v.size.unwrap_or(DEFAULT_VOLUME_SIZE);
        let dir = pod.volume_dir(&v.name);
        if let Err(e) = mount_tmpfs(&dir, size, ids) {
            release(&pod.path);
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) => {
                    ": empty-dir volumes are size-limited tmpfs mounts, which need root (CAP_SYS_ADMIN)"
                }
                _ => "",
            };
            return Err(PodError::Volume(format!(
                "volume {:?}: cannot enforce its size limit ({e}){hint}",
                v.name
            )));
        }
    }
    Ok(())
}

fn mount_tmpfs(dir: &Path, size: u64, ids: Option<IdRange>) -> io::Result<()> {
    let target = cstr(dir)?;
    let options = std::ffi::CString::new(mount_options(size, ids))?;
    let source = std::ffi::CString::new(MOUNT_SOURCE)?;
    // SAFETY: mount with valid C strings; `options` is the tmpfs data
    // string, read by the kernel during the call.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts whatever is mounted on the pod's volume directories (lazily:
/// a VMM that still runs keeps its files until it exits). Best effort:
/// where nothing is mounted, or this process may not unmount (it could not
/// have mounted either), there is nothing to do.
pub fn release(pod_path: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_path.join("volumes")) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(target) = cstr(&entry.path()) else {
            continue;
        };
        // A directory may carry more than one mount (stacked): take them all.
        loop {
            // SAFETY: umount2 with a valid C string and flags; no symlink
            // is followed.
            let ret =
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
            if ret < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOENT | libc::EPERM)
                ) {
                    log::warn!("cannot unmount {}: {e}", entry.path().display());
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::state::PodStore;

    #[test]
    fn limits_and_options() {
        assert_eq!(inode_limit(DEFAULT_VOLUME_SIZE), 16384);
        assert_eq!(inode_limit(MIB), MIN_INODES);
        assert_eq!(inode_limit(0), MIN_INODES);
        assert_eq!(
            mount_options(64 * MIB, None),
            "size=67108864,nr_inodes=4096,mode=1777,uid=0,gid=0"
        );
        let ids = IdRange::per_pod(1 << 30);
        assert_eq!(
            mount_options(MIB, ids),
            "size=1048576,nr_inodes=1024,mode=1777,uid=1073741824,gid=1073741824"
        );
    }

    fn mounted_under(dir: &Path) -> Vec<String> {
        let dir = dir.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
            .map(str::to_owned)
            .collect()
    }

    /// As root: each empty-dir volume gets its own tmpfs with the limits
    /// (writing past the size fails with ENOSPC, past the inodes too), a
    /// host volume none; removing the pod unmounts them, also after a
    /// supervisor that never released them.
    #[test]
    fn volumes_are_limited_and_released() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let root = std::env::temp_dir().join(format!("husk-volumes-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = PodStore::open(&root).unwrap();
        let pod = store.create(Some("v"), "x").unwrap();
        let volumes = [
            Volume {
                name: "small".into(),
                host: None,
                read_only: false,
                size: Some(MIB),
            },
            Volume {
                name: "host".into(),
                host: Some(root.clone()),
                read_only: false,
                size: None,
            },
        ];
        std::fs::create_dir_all(pod.volume_dir("small")).unwrap();
        mount_all(&pod, &volumes, None).unwrap();
        let mounts = mounted_under(&pod.path);
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        assert!(
            mounts[0].contains(" - tmpfs husk-volume ") && mounts[0].contains("nosuid,nodev"),
            "{}",
            mounts[0]
        );
        let small = pod.volume_dir("small");
        let big = std::fs::write(small.join("big"), vec![1u8; 2 * MIB as usize]);
        assert_eq!(
            big.unwrap_err().raw_os_error(),
            Some(libc::ENOSPC),
            "the size limit"
        );
        std::fs::remove_file(small.join("big")).unwrap();
        let made = (0..2 * MIN_INODES)
            .map(|i| std::fs::write(small.join(i.to_string()), b""))
            .find_map(Result::err);
        assert_eq!(
            made.and_then(|e| e.raw_os_error()),
            Some(libc::ENOSPC),
            "the inode limit"
        );
        store.remove(&pod).unwrap();
        assert!(mounted_under(&pod.path).is_empty());
        assert!(!pod.path.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Drops CAP_SYS_ADMIN from the calling thread's effective set
    /// (capabilities are per thread).
    fn drop_sys_admin_here() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget fills the two data words of version 3.
        let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(got, 0);
        const CAP_SYS_ADMIN: u32 = 21;
        data[0].effective &= !(1 << CAP_SYS_ADMIN);
        // SAFETY: capset of this thread from the words just read.
        let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(set, 0);
    }

    /// A volume that cannot be mounted fails the pod with one line (exit
    /// 125) and leaves no mount of the others behind; without
    /// CAP_SYS_ADMIN the line says that is why.
    #[test]
    fn unenforceable_limits_are_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let root =
            std::env::temp_dir().join(format!("husk-volumes-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = PodStore::open(&root).unwrap();
        let pod = store.create(Some("r"), "x").unwrap();
        let volume = |name: &str| Volume {
            name: name.into(),
            host: None,
            read_only: false,
            size: None,
        };
        let volumes = [volume("a"), volume("b")];
        std::fs::create_dir_all(pod.volume_dir("a")).unwrap();
        // "b" has no directory: "a" is mounted, then undone.
        let e = mount_all(&pod, &volumes, None).unwrap_err();
        assert_eq!(e.kind(), crate::failure::Failure::Runtime);
        assert!(
            e.to_string()
                .starts_with("volume \"b\": cannot enforce its size limit"),
            "{e}"
        );
        assert!(mounted_under(&pod.path).is_empty());
        std::fs::create_dir_all(pod.volume_dir("b")).unwrap();
        let (pod2, volumes2) = (pod.clone(), volumes.clone());
        let e = std::thread::spawn(move || {
            drop_sys_admin_here();
            mount_all(&pod2, &volumes2, None)
        })
        .join()
        .unwrap()
        .unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with("volume \"a\": cannot enforce its size limit")
                && line.contains("CAP_SYS_ADMIN")
                && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(e.kind(), crate::failure::Failure::Runtime);
        assert!(mounted_under(&pod.path).is_empty());
        store.remove(&pod).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
