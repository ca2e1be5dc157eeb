//! Tier 2 (root, no KVM): the jail with a user namespace, in a forked child, checked from
//! inside and from the host. Skipped (with a line saying so) when not root, and the
//! id-mapping case where the test directory's file system cannot be id-mapped.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::userns::{self, IdRange};
use super::*;

/// A range well away from any real user's.
fn range() -> IdRange {
    IdRange::per_pod(0x4100_0000).unwrap()
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Forks; the child runs `body` and exits 0 if it returns `Ok`, else prints the error and
/// exits 1. Returns whether the child succeeded.
pub(super) fn in_child(body: impl FnOnce() -> Result<(), String>) -> bool {
    // SAFETY: the test child only makes system calls and allocates (glibc's fork leaves
    // malloc usable), then _exits without returning into the harness.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match body() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("jailed child: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the harness's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn spec(bound: &Path, ns: RawFd, keep: Vec<RawFd>) -> JailSpec {
    JailSpec {
        binds: vec![bound.to_path_buf()],
        proc_self: true,
        keep_caps: vmm::VMM_CAPS.to_vec(),
        nofile: vmm::VMM_NOFILE,
        nproc: Some(vmm::VMM_NPROC),
        user_ns: Some(ns),
        rootless: None,
        keep_fds: keep,
    }
}

fn status_line(key: &str) -> Result<String, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .ok_or_else(|| format!("no {key} in /proc/self/status"))
}

#[test]
fn a_jailed_child_is_root_only_of_its_own_user_namespace() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let bound = dir.as_path().join("sock");
    std::fs::create_dir(&bound).unwrap();
    let r = range();
    std::os::unix::fs::chown(&bound, Some(r.base), Some(r.base)).unwrap();
    // Another "host user's" file the jailed root must not be able to change.
    let foreign = bound.join("foreign");
    std::fs::write(&foreign, b"host").unwrap();
    let ns = userns::create(r).unwrap();
    let s = spec(&bound, ns.as_raw_fd(), vec![]);
    let ok = in_child(|| {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGUSR2 as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        s.apply().map_err(|e| crate::report::error_line(&e))?;
        // The parent-death signal outlives the jail's new ids (which clear it): a pod's VMM
        // still dies with its supervisor.
        let mut armed: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int through a valid pointer.
        unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut armed as *mut libc::c_int) };
        if armed != libc::SIGUSR2 {
            return Err(format!("parent-death signal {armed} after the jail"));
        }
        let map = std::fs::read_to_string("/proc/self/uid_map").map_err(|e| e.to_string())?;
        let map: Vec<&str> = map.split_whitespace().collect();
        if map != ["0", &r.base.to_string(), "65536"] {
            return Err(format!("uid_map {map:?}"));
        }
        for (key, want) in [
            ("Uid:", "0 0 0 0"),
            ("Gid:", "0 0 0 0"),
            ("Groups:", ""),
            ("CapEff:", "00000000000000cb"),
            ("CapBnd:", "00000000000000cb"),
            ("NoNewPrivs:", "1"),
        ] {
            let got = status_line(key)?;
            if got != want {
                return Err(format!("{key} {got:?}, not {want:?}"));
            }
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes a valid rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut lim) };
        if lim.rlim_cur != vmm::VMM_NPROC {
            return Err(format!("RLIMIT_NPROC {}", lim.rlim_cur));
        }
        std::fs::write(bound.join("made-inside"), b"x").map_err(|e| format!("bind: {e}"))?;
        // DAC_OVERRIDE of the namespace does not reach a file of an unmapped owner.
        if std::fs::write(&foreign, b"guest").is_ok() {
            return Err("wrote a host root's 0644 file".into());
        }
        // No capability over the host: the host's (pid 1's) limits cannot be touched.
        // SAFETY: kill with signal 0 only checks permission.
        if unsafe { libc::kill(1, 0) } == 0 {
            return Err("may signal pid 1".into());
        }
        Ok(())
    });
    assert!(ok, "the jailed child's checks failed (see its line above)");
    let made = std::fs::metadata(bound.join("made-inside")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (r.base, r.base),
        "a file the jailed root makes belongs to the range's base on the host"
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), b"host");
}

#[test]
fn an_id_mapped_share_keeps_host_ownership_for_the_jailed_root() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let bound = dir.as_path().join("sock");
    let share = dir.as_path().join("share");
    std::fs::create_dir(&bound).unwrap();
    std::fs::create_dir(&share).unwrap();
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(share.join("owned"), b"x").unwrap();
    std::os::unix::fs::chown(share.join("owned"), Some(1234), Some(4321)).unwrap();
    // A file of a host id past the mapped 0..65536: `nobody` to the VMM, out of its capabilities.
    std::fs::write(share.join("far"), b"far").unwrap();
    std::fs::set_permissions(share.join("far"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(share.join("far"), Some(100_000), Some(100_000)).unwrap();
    let r = range();
    let ns = userns::create(r).unwrap();
    let root_dir = crate::fs::ShareRoot::open(&share).unwrap();
    if let Err(e) = userns::id_map(root_dir.as_raw_fd(), ns.as_fd()) {
        eprintln!(
            "skipped: {} is on {}, which cannot be id-mapped here ({e})",
            share.display(),
            userns::fs_name(&share)
        );
        return;
    }
    let fd = root_dir.as_raw_fd();
    let s = spec(&bound, ns.as_raw_fd(), vec![fd]);
    let ok = in_child(|| {
        s.apply().map_err(|e| crate::report::error_line(&e))?;
        let via = |name: &str| format!("/proc/self/fd/{fd}/{name}");
        let st = std::fs::metadata(via("owned")).map_err(|e| format!("stat: {e}"))?;
        if (st.uid(), st.gid()) != (1234, 4321) {
            return Err(format!("owned is {}:{}", st.uid(), st.gid()));
        }
        let far = std::fs::metadata(via("far")).map_err(|e| format!("stat far: {e}"))?;
        if (far.uid(), far.gid()) != (65534, 65534) {
            return Err(format!("far is {}:{}, not nobody", far.uid(), far.gid()));
        }
        if std::fs::read(via("far")).is_ok() {
            return Err("read a 0600 file of an unmapped host id".into());
        }
        // Host root's 0700 directory is the namespace root's: it may write there.
        std::fs::write(via("new"), b"y").map_err(|e| format!("create: {e}"))?;
        std::fs::write(via("far-owner"), b"z").map_err(|e| format!("create: {e}"))?;
        std::os::unix::fs::chown(via("new"), Some(1000), Some(1000))
            .map_err(|e| format!("chown: {e}"))?;
        // Guest ids past the mapped range cannot be stored.
        match std::os::unix::fs::chown(via("far-owner"), Some(70_000), None) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return Err(format!("chown to 70000: {other:?}, not EINVAL")),
        }
        Ok(())
    });
    assert!(ok, "the jailed child's checks failed (see its line above)");
    let new = std::fs::metadata(share.join("new")).unwrap();
    assert_eq!(
        (new.uid(), new.gid()),
        (1000, 1000),
        "ids the guest sets are stored as they are"
    );
}

#[test]
fn ranges_map_and_refuse_what_they_must() {
    let r = range();
    assert_eq!(r.map_line(), format!("0 {} 65536\n", r.base));
    assert_eq!(r.host_id(0), Some(r.base));
    assert_eq!(r.host_id(65_535), Some(r.base + 65_535));
    assert_eq!(r.host_id(65_536), None);
    assert_eq!(IdRange::per_pod(u32::MAX - 100), None, "past 2^32");
}

/// Rootless: an ordinary user's process (here a child that drops from root to `nobody`, then
/// is made dumpable again as a process that was never root is) builds the same jail inside a
/// user namespace of its own, where only its own ids are mapped.
#[test]
fn an_ordinary_user_jails_itself_in_its_own_user_namespace() {
    if !root() {
        eprintln!("skipped: needs root (to become an ordinary user)");
        return;
    }
    const NOBODY: u32 = 65_534;
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let bound = dir.as_path().join("sock");
    let share = dir.as_path().join("share");
    for d in [&bound, &share] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::fs::set_permissions(dir.as_path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root_dir = crate::fs::ShareRoot::open(&share).unwrap();
    let fd = root_dir.as_raw_fd();
    let s = JailSpec {
        binds: vec![bound.clone()],
        proc_self: true,
        keep_caps: vmm::VMM_CAPS.to_vec(),
        nofile: vmm::VMM_NOFILE,
        nproc: None,
        user_ns: None,
        rootless: Some(vec![fd]),
        keep_fds: vec![fd],
    };
    let ok = in_child(|| {
        // SAFETY: setgroups with an empty list (null pointer, size 0).
        let groups = unsafe { libc::setgroups(0, std::ptr::null()) };
        // SAFETY: setresgid takes integers only.
        let gid = unsafe { libc::setresgid(NOBODY, NOBODY, NOBODY) };
        // SAFETY: setresuid takes integers only.
        let uid = unsafe { libc::setresuid(NOBODY, NOBODY, NOBODY) };
        // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only.
        let dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        if groups != 0 || gid != 0 || uid != 0 || dumpable != 0 {
            return Err(format!(
                "become nobody: {}",
                std::io::Error::last_os_error()
            ));
        }
        s.apply().map_err(|e| crate::report::error_line(&e))?;
        let map = std::fs::read_to_string("/proc/self/uid_map").map_err(|e| e.to_string())?;
        let map: Vec<&str> = map.split_whitespace().collect();
        if map != ["0", "65534", "1"] {
            return Err(format!("uid_map {map:?}"));
        }
        for (key, want) in [("Uid:", "0 0 0 0"), ("CapEff:", "00000000000000cb")] {
            let got = status_line(key)?;
            if got != want {
                return Err(format!("{key} {got:?}, not {want:?}"));
            }
        }
        std::fs::write(bound.join("made-inside"), b"x").map_err(|e| format!("bind: {e}"))?;
        let via = |name: &str| format!("/proc/self/fd/{fd}/{name}");
        std::fs::write(via("new"), b"y").map_err(|e| format!("share: {e}"))?;
        if std::fs::metadata(via("../../../../etc/passwd")).is_ok() {
            return Err("`..` from the share reached the host's /etc".into());
        }
        Ok(())
    });
    assert!(ok, "the jailed child's checks failed (see its line above)");
    for made in [bound.join("made-inside"), share.join("new")] {
        let m = std::fs::metadata(&made).unwrap();
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{}", made.display());
    }
}
