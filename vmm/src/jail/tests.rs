use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::*;

fn spec() -> JailSpec {
    JailSpec {
        binds: vec!["/run/husk/pods/abc".into()],
        proc_self: true,
        keep_caps: vmm::VMM_CAPS.to_vec(),
        nofile: vmm::VMM_NOFILE,
        nproc: None,
        user_ns: None,
        rootless: None,
        keep_fds: vec![7, 3, 9, 3],
    }
}

#[test]
fn accepts_a_plain_spec() {
    spec().check().unwrap();
}

#[test]
fn refuses_binds_it_cannot_place() {
    for (path, why) in [
        ("run/x", "not an absolute path"),
        ("/run/../etc", "`.` or `..` in the path"),
        ("/", "the whole host root would be in the jail"),
        ("/proc/1", "/proc in the jail is its own"),
    ] {
        let mut s = spec();
        s.binds = vec![PathBuf::from(path)];
        let e = s.check().unwrap_err();
        assert!(
            matches!(&e, JailError::BadBind { why: w, .. } if *w == why),
            "{path}: {e}"
        );
        assert!(e.to_string().starts_with("jail: cannot bind "), "{e}");
    }
    let mut s = spec();
    s.binds.push("/run/husk/pods/abc".into());
    assert!(s.check().is_err(), "twice");
    let mut s = spec();
    s.keep_fds.push(-1);
    assert_eq!(
        s.check().unwrap_err().to_string(),
        "jail: -1 is not a descriptor"
    );
}

/// The harness runs tests on threads, so a jail applied here is refused before it changes
/// anything (not root: refused for that).
#[test]
fn refuses_a_process_that_cannot_jail_itself() {
    let e = spec().apply().unwrap_err().to_string();
    assert!(e.ends_with("(--no-jail runs the VMM without it)"), "{e}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(e.contains("threads run"), "{e}");
    } else {
        assert!(e.contains("needs root"), "{e}");
    }
}

#[test]
fn binds_parents_first() {
    let mut s = spec();
    s.binds = vec!["/a/b/c".into(), "/a".into(), "/x/y".into()];
    let order: Vec<_> = s
        .bind_order()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(order, ["/a", "/x/y", "/a/b/c"]);
}

#[test]
fn closes_everything_but_stdio_and_the_kept() {
    assert_eq!(spec().kept_fds(), [0, 1, 2, 3, 7, 9]);
    assert_eq!(
        spec().close_ranges(),
        [(4, 6), (8, 8), (10, u32::MAX)],
        "gaps and the tail"
    );
    let mut s = spec();
    s.keep_fds.clear();
    assert_eq!(s.close_ranges(), [(3, u32::MAX)]);
}

#[test]
fn the_vmm_keeps_the_fs_servers_capabilities_and_fd_pool() {
    use caps::Capability::*;
    let bits: u64 = vmm::VMM_CAPS.iter().map(|c| c.bitmask()).sum();
    // What /proc/PID/status shows as CapEff and CapBnd of a jailed VMM.
    assert_eq!(bits, 0xcb);
    for gone in [
        CAP_SYS_ADMIN,
        CAP_MKNOD,
        CAP_FSETID,
        CAP_SETFCAP,
        CAP_DAC_READ_SEARCH,
    ] {
        assert!(!vmm::VMM_CAPS.contains(&gone), "{gone}");
    }
    let (per_share, per_pod) = crate::fs::budget::fd_limits(vmm::VMM_NOFILE);
    assert_eq!(
        (per_share, per_pod),
        (crate::fs::FD_PER_SHARE, crate::fs::FD_PER_POD)
    );
}

/// Tier 2 (root, no KVM): a forked child jails itself and reports what it sees; the parent
/// checks it from outside too. Skipped (with a line saying so) when not root.
#[test]
fn a_forked_child_ends_up_jailed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let bound = dir.as_path().join("sock");
    std::fs::create_dir(&bound).unwrap();
    let kept = std::fs::File::open("/dev/null").unwrap();
    let dropped = std::fs::File::open("/dev/null").unwrap();
    let s = JailSpec {
        binds: vec![bound.clone()],
        proc_self: true,
        keep_caps: vmm::VMM_CAPS.to_vec(),
        nofile: vmm::VMM_NOFILE,
        nproc: None,
        user_ns: None,
        rootless: None,
        keep_fds: vec![kept.as_raw_fd()],
    };
    let (kept_fd, dropped_fd) = (kept.as_raw_fd(), dropped.as_raw_fd());
    assert!(
        super::userns_tests::in_child(|| child_checks(&s, &bound, kept_fd, dropped_fd)),
        "the jailed child's checks failed (see its line above)"
    );
    assert!(
        bound.join("made-inside").exists(),
        "the bind is the host directory"
    );
}

fn child_checks(
    s: &JailSpec,
    bound: &std::path::Path,
    kept: i32,
    dropped: i32,
) -> Result<(), String> {
    s.apply().map_err(|e| crate::report::error_line(&e))?;
    let root: Vec<String> = std::fs::read_dir("/")
        .map_err(|e| e.to_string())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let first = bound
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let mut want = vec!["proc".to_owned(), first];
    want.sort();
    want.dedup();
    let mut got = root.clone();
    got.sort();
    if got != want {
        return Err(format!("root holds {got:?}, not {want:?}"));
    }
    std::fs::write(bound.join("made-inside"), b"x").map_err(|e| format!("bind: {e}"))?;
    if std::fs::write("/new", b"x").is_ok() {
        return Err("the root is writable".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    for want in [
        "CapEff:\t00000000000000cb",
        "CapBnd:\t00000000000000cb",
        "CapInh:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        if !status.contains(want) {
            return Err(format!("no {want:?} in /proc/self/status"));
        }
    }
    if std::fs::read_dir("/proc/self/fd")
        .map_err(|e| e.to_string())?
        .count()
        == 0
    {
        return Err("no /proc/self/fd".into());
    }
    // SAFETY: fcntl(F_GETFD) on descriptor numbers only.
    let open = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    if !open(kept) || open(dropped) {
        return Err(format!(
            "kept {kept} open: {}, dropped {dropped} open: {}",
            open(kept),
            open(dropped)
        ));
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    // The VMM's bound, or this host's lower hard limit when it cannot be raised.
    if lim.rlim_cur != lim.rlim_max || lim.rlim_max > vmm::VMM_NOFILE {
        return Err(format!("RLIMIT_NOFILE {} {}", lim.rlim_cur, lim.rlim_max));
    }
    Ok(())
}
