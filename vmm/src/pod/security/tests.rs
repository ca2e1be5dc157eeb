use super::*;
use husk_proto::{SeccompAction, SeccompOp};

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Parses flags as `husk run` would (relative profiles from `base`).
fn flags(
    cap_add: &[&str],
    cap_drop: &[&str],
    privileged: bool,
    opts: &[&str],
    tmpfs: &[&str],
    base: &Path,
) -> Result<AppSecurity, String> {
    let (a, d, o, t) = (
        strings(cap_add),
        strings(cap_drop),
        strings(opts),
        strings(tmpfs),
    );
    parse(&Request {
        cap_add: &a,
        cap_drop: &d,
        privileged,
        security_opt: &o,
        read_only: false,
        tmpfs: &t,
        mounts: &[],
        base,
        names: Names::FLAGS,
    })
}

/// A directory of seccomp profile files for one test, removed when
/// dropped (also when the test fails half-way).
pub(crate) struct ProfileDir(std::path::PathBuf);

impl ProfileDir {
    /// `$TMPDIR/husk-<tag>-<pid>` with `files` (name, JSON text) in it.
    pub(crate) fn new(tag: &str, files: &[(&str, &str)]) -> ProfileDir {
        let dir = std::env::temp_dir().join(format!("husk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        ProfileDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ProfileDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A profile that answers `uname` with EPERM and allows the rest.
pub(crate) const DENY_UNAME: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO"}]}"#;

fn simple(cap_add: &[&str], cap_drop: &[&str]) -> Result<AppSecurity, String> {
    flags(cap_add, cap_drop, false, &[], &[], Path::new("/"))
}

#[test]
fn docker_default_capabilities() {
    let d = AppSecurity::default();
    assert_eq!(
        d.capabilities,
        strings(&[
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_RAW",
            "CAP_SYS_CHROOT",
            "CAP_MKNOD",
            "CAP_AUDIT_WRITE",
            "CAP_SETFCAP"
        ])
    );
    let spec = d.to_spec().unwrap();
    assert_eq!(spec.capabilities, husk_proto::DEFAULT_CAPABILITIES);
    assert!(!spec.no_new_privileges && !spec.read_only_rootfs && !spec.privileged);
    assert_eq!(simple(&[], &[]).unwrap(), d);
    // A config without the field (an older husk's) gets the defaults.
    let old: AppSecurity = serde_json::from_str("{}").unwrap();
    assert_eq!(old, d);
}

#[test]
fn cap_add_and_drop_follow_docker() {
    let s = simple(&["sys_admin", "CAP_SYS_PTRACE"], &["mknod", "NET_RAW"]).unwrap();
    assert!(s.capabilities.contains(&"CAP_SYS_ADMIN".into()));
    assert!(s.capabilities.contains(&"CAP_SYS_PTRACE".into()));
    assert!(!s.capabilities.contains(&"CAP_MKNOD".into()));
    assert!(!s.capabilities.contains(&"CAP_NET_RAW".into()));
    assert_eq!(s.capabilities.len(), 14);
    // In number order, whatever the order given.
    let numbers = s.to_spec().unwrap().capabilities;
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    assert!(simple(&[], &["ALL"]).unwrap().capabilities.is_empty());
    assert_eq!(
        simple(&["chown"], &["all"]).unwrap().capabilities,
        ["CAP_CHOWN"]
    );
    let all = simple(&["ALL"], &["sys_module"]).unwrap().capabilities;
    assert_eq!(all.len(), caps::all().len() - 1);
    assert!(!all.contains(&"CAP_SYS_MODULE".into()));
    let p = flags(&[], &["ALL"], true, &[], &[], Path::new("/")).unwrap();
    assert_eq!(p.capabilities.len(), caps::all().len());
    assert!(p.to_spec().unwrap().seccomp.is_none());
    assert_eq!(p.seccomp_name(), "unconfined (privileged)");

    let e = simple(&["SYS_FLY"], &[]).unwrap_err();
    assert_eq!(e, "--cap-add SYS_FLY: unknown capability \"CAP_SYS_FLY\"");
    let e = simple(&[], &["nope"]).unwrap_err();
    assert!(e.starts_with("--cap-drop nope: unknown capability"), "{e}");
}

#[test]
fn security_opts() {
    let s = |opts: &[&str]| flags(&[], &[], false, opts, &[], Path::new("/"));
    assert!(s(&["no-new-privileges"]).unwrap().no_new_privileges);
    assert!(s(&["no-new-privileges=true"]).unwrap().no_new_privileges);
    assert!(s(&["no-new-privileges:true"]).unwrap().no_new_privileges);
    assert!(!s(&["no-new-privileges=false"]).unwrap().no_new_privileges);
    assert_eq!(
        s(&["seccomp=unconfined"]).unwrap().seccomp,
        Seccomp::Unconfined
    );
    assert_eq!(
        s(&["seccomp=unconfined"]).unwrap().seccomp_name(),
        "unconfined"
    );
    assert!(s(&["seccomp=unconfined"])
        .unwrap()
        .to_spec()
        .unwrap()
        .seccomp
        .is_none());
    for (opt, want) in [
        (
            "apparmor=unconfined",
            "--security-opt apparmor=unconfined: unknown option",
        ),
        ("label=disable", "unknown option"),
        ("bogus", "--security-opt bogus: unknown option"),
        ("no-new-privileges=maybe", "expected true or false"),
        ("seccomp=", "expected seccomp=PROFILE.json"),
        (
            "seccomp=/no/such/profile.json",
            "/no/such/profile.json: No such file",
        ),
    ] {
        let e = s(&[opt]).unwrap_err();
        assert!(e.contains(want), "{opt}: {e:?} should contain {want:?}");
        assert!(!e.contains('\n'));
    }
}

#[test]
fn profile_files() {
    let files = ProfileDir::new(
        "sec",
        &[
            ("deny-uname.json", DENY_UNAME),
            ("broken.json", r#"{"defaultAction": "#),
        ],
    );
    let dir = files.path();
    let s = flags(&[], &[], false, &["seccomp=deny-uname.json"], &[], dir).unwrap();
    let want = dir.join("deny-uname.json").display().to_string();
    assert_eq!(s.seccomp_name(), want);
    let spec = s.to_spec().unwrap().seccomp.unwrap();
    assert_eq!(spec.default_action, SeccompAction::Allow);
    assert_eq!(spec.rules[0].syscalls, [63]);
    assert_eq!(spec.rules[0].action, SeccompAction::Errno(1));
    // Kept whole in the config (a detached supervisor reads it back).
    let back: AppSecurity = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let e = flags(&[], &[], false, &["seccomp=broken.json"], &[], dir).unwrap_err();
    assert!(
        e.contains("broken.json: not a usable seccomp profile: EOF"),
        "{e}"
    );
}

#[test]
fn the_shipped_profile_is_podmans_and_fits() {
    let p = default_profile();
    assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
    assert_eq!(p.default_errno_ret, Some(38));
    let d = AppSecurity::default().to_spec().unwrap().seccomp.unwrap();
    assert_eq!(d.default_action, SeccompAction::Errno(libc::ENOSYS as u16));
    let action_of = |nr: i64, caps: &[&str]| {
        let mut sec = AppSecurity::default();
        sec.capabilities.extend(strings(caps));
        let r = sec.to_spec().unwrap().seccomp.unwrap();
        r.rules
            .iter()
            .find(|r| r.syscalls.contains(&(nr as u32)) && r.args.is_empty())
            .map(|r| r.action)
    };
    assert_eq!(action_of(libc::SYS_read, &[]), Some(SeccompAction::Allow));
    assert_eq!(
        action_of(libc::SYS_swapon, &[]),
        Some(SeccompAction::Errno(1))
    );
    assert_eq!(
        action_of(libc::SYS_io_uring_setup, &[]),
        None,
        "default: ENOSYS"
    );
    // Gated by capability: allowed with it, EPERM without.
    assert_eq!(
        action_of(libc::SYS_sethostname, &[]),
        Some(SeccompAction::Errno(1))
    );
    assert_eq!(
        action_of(libc::SYS_sethostname, &["CAP_SYS_ADMIN"]),
        Some(SeccompAction::Allow)
    );
    assert_eq!(action_of(libc::SYS_chroot, &[]), Some(SeccompAction::Allow));
    // personality only for the values it lists.
    let personality: Vec<_> = d
        .rules
        .iter()
        .filter(|r| r.syscalls == [libc::SYS_personality as u32])
        .map(|r| (r.args[0].op, r.args[0].value))
        .collect();
    assert_eq!(personality.len(), 5);
    assert!(personality.contains(&(SeccompOp::Eq, 8)));
    // The README's figure: 311 of the guest kernel's 375 x86-64 calls are
    // allowed outright with the default capabilities.
    let allowed: BTreeSet<u32> = d
        .rules
        .iter()
        .filter(|r| r.action == SeccompAction::Allow && r.args.is_empty())
        .flat_map(|r| r.syscalls.iter().copied())
        .collect();
    assert_eq!(
        (allowed.len(), super::syscalls_x86_64::SYSCALLS.len()),
        (311, 375)
    );
    let n = husk_proto::security::instruction_bound(&d);
    println!(
        "figure default-profile-syscalls {}",
        d.rules.iter().map(|r| r.syscalls.len()).sum::<usize>()
    );
    println!("figure default-profile-instruction-bound {n}");
}

#[test]
fn tmpfs_specs() {
    let t = |specs: &[&str]| flags(&[], &[], false, &[], specs, Path::new("/"));
    let s = t(&["/scratch", "/run:16m", "/x:size=1g,mode=700,ro,exec"]).unwrap();
    assert_eq!(s.tmpfs[0].size, DEFAULT_TMPFS_SIZE);
    assert_eq!(s.tmpfs[1].size, 16 * MIB);
    assert_eq!(
        (
            s.tmpfs[2].size,
            s.tmpfs[2].mode,
            s.tmpfs[2].read_only,
            s.tmpfs[2].exec
        ),
        (1 << 30, Some(0o700), true, true)
    );
    let spec = s.to_spec().unwrap();
    assert_eq!(spec.tmpfs[1].destination, "/run");
    assert_eq!(
        s.summary()["tmpfs"][1],
        "/run:size=16777216,mode=1777,rw,noexec,nosuid,nodev"
    );
    for (bad, want) in [
        ("scratch", "is not an absolute path"),
        ("/", "is not an absolute path"),
        ("/a/../b", "is not an absolute path"),
        ("/s:lots", "neither a size"),
        ("/s:size=0", "size"),
        ("/s:mode=999", "octal mode"),
        ("/s:suid", "not allowed"),
        ("/s:uid=0", "unknown option"),
    ] {
        let e = t(&[bad]).unwrap_err();
        assert!(e.starts_with(&format!("--tmpfs {bad}: ")), "{e}");
        assert!(e.contains(want), "{bad}: {e:?} should contain {want:?}");
    }
    assert!(t(&["/a", "/a/"]).unwrap_err().contains("mounted twice"));
    let mounts = [AppMount {
        volume: "v".into(),
        path: "/data".into(),
        read_only: false,
    }];
    let s = t(&["/data/"]).unwrap();
    assert!(s
        .check_mounts(&mounts, Names::FLAGS)
        .unwrap_err()
        .contains("a volume"));
    assert!(t(&["/data/tmp"])
        .unwrap()
        .check_mounts(&mounts, Names::FLAGS)
        .is_ok());
}

#[test]
fn inspect_summary() {
    let s = flags(
        &[],
        &["ALL"],
        false,
        &["no-new-privileges"],
        &["/t:1m"],
        Path::new("/"),
    )
    .unwrap();
    let v = s.summary();
    assert_eq!(v["capabilities"], serde_json::json!([]));
    assert_eq!(v["seccomp"], "default");
    assert_eq!(v["no_new_privileges"], true);
    assert_eq!(v["read_only_rootfs"], false);
    assert_eq!(v["privileged"], false);
}
