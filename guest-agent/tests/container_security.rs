//! The confinement a container request chooses (issue 13), on the host as
//! root through the real agent server: capabilities, `no_new_privs`, a
//! seccomp profile (compiled by the agent, installed before the uid switch
//! when there is no `no_new_privs`), a read-only root with tmpfs mounts, a
//! privileged container; and `exec` getting the same as the first process.
//! The default profile itself is resolved by the host and tested end to end
//! (tests/guest/harden-e2e.sh).

mod common;

use std::fs;

use common::containers::*;
use common::Server;
use husk_agent_client::Session;
use husk_proto::{
    ContainerSpec, ErrorKind, ExitStatus, SeccompAction, SeccompProfile, SeccompRule, SecuritySpec,
    TmpfsSpec,
};

/// Runs `script` in running container `id` as `user`; stdout, stderr, status.
fn sh_as(s: &Session, id: &str, user: Option<&str>, script: &str) -> (String, String, ExitStatus) {
    output(&exec_as(s, id, user, &["/bin/sh", "-c", script]).unwrap())
}

/// `Key:\tvalue` lines of /proc/self/status for these keys, as `Key value`.
const STATUS: &str =
    "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr '\\t' ' '";

/// Starts container `id` with `security`, waiting until it runs.
fn start(
    s: &Session,
    id: &str,
    root: &std::path::Path,
    security: SecuritySpec,
) -> husk_agent_client::Process {
    let sp = ContainerSpec {
        security,
        ..spec(id, root, "echo ready; exec sleep 600")
    };
    let p = create(s, sp).unwrap();
    stdout_until_ready(&p);
    p
}

/// This process's bounding set: all a privileged container can have here
/// (a test host may run without some capabilities).
fn own_bounding_set() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    line.split_whitespace().nth(1).unwrap().to_owned()
}

/// Docker's default set by default, as root (effective = bounding) and as
/// another user (nothing effective, the same bounding set); the set a
/// request names; a privileged container's every capability without any
/// filter; each `exec` the same as the first process.
#[test]
fn capabilities_and_no_new_privs() {
    need_root!();
    let Some(root) = rootfs() else { return };
    let srv = Server::start();
    let s = srv.session();

    let p = start(&s, "dflt", &root, SecuritySpec::default());
    let (out, _, _) = sh_as(&s, "dflt", None, STATUS);
    assert_eq!(
        out,
        "CapInh: 0000000000000000\nCapPrm: 00000000a80425fb\nCapEff: 00000000a80425fb\n\
         CapBnd: 00000000a80425fb\nCapAmb: 0000000000000000\nNoNewPrivs: 0\nSeccomp: 2\n"
    );
    let (out, _, _) = sh_as(&s, "dflt", Some("1000"), STATUS);
    assert!(out.contains("CapEff: 0000000000000000\n"), "{out}");
    assert!(out.contains("CapBnd: 00000000a80425fb\n"), "{out}");
    stop_and_remove(&s, &p, "dflt");

    // Only CHOWN and KILL, no_new_privs.
    let locked = SecuritySpec {
        capabilities: vec![0, 5],
        no_new_privileges: true,
        ..SecuritySpec::default()
    };
    let p = start(&s, "locked", &root, locked);
    let (out, _, _) = sh_as(&s, "locked", None, STATUS);
    assert!(out.contains("CapEff: 0000000000000021\n"), "{out}");
    assert!(out.contains("CapBnd: 0000000000000021\n"), "{out}");
    assert!(out.contains("NoNewPrivs: 1\n"), "{out}");
    stop_and_remove(&s, &p, "locked");

    let none = SecuritySpec {
        capabilities: Vec::new(),
        ..SecuritySpec::default()
    };
    let p = start(&s, "none", &root, none);
    let (out, err, status) = sh_as(&s, "none", None, &format!("{STATUS}; chown 1000 /tmp"));
    assert!(out.contains("CapEff: 0000000000000000\n"), "{out}");
    assert!(out.contains("CapBnd: 0000000000000000\n"), "{out}");
    assert_ne!(status, ExitStatus::Code(0), "chown without CAP_CHOWN");
    assert!(err.contains("Operation not permitted"), "{err}");
    stop_and_remove(&s, &p, "none");

    let privileged = SecuritySpec {
        privileged: true,
        capabilities: Vec::new(),
        ..SecuritySpec::default()
    };
    let p = start(&s, "priv", &root, privileged);
    let (out, _, _) = sh_as(
        &s,
        "priv",
        None,
        &format!("{STATUS}; grep ' /sys ' /proc/mounts"),
    );
    let full = own_bounding_set();
    assert!(out.contains(&format!("CapEff: {full}\n")), "{out}");
    assert!(out.contains(&format!("CapBnd: {full}\n")), "{out}");
    assert!(out.contains("Seccomp: 0\n"), "{out}");
    assert!(out.contains(" sysfs rw,"), "/sys writable: {out}");
    stop_and_remove(&s, &p, "priv");
}

/// A profile of the request's own: `mkdir` fails with the errno it names,
/// in the first process and in an exec, for root and (no no_new_privs: the
/// filter goes in before the uid switch) for another user; `hostname` is
/// not in it and works. The guard still refuses what it refuses.
#[test]
fn a_profile_of_the_requests_own() {
    need_root!();
    let Some(root) = rootfs() else { return };
    let srv = Server::start();
    let s = srv.session();
    let deny_mkdir = SecurityProfile::deny(&[libc::SYS_mkdir, libc::SYS_mkdirat], libc::EXDEV);
    let sp = ContainerSpec {
        security: SecuritySpec {
            seccomp: Some(deny_mkdir.0),
            ..SecuritySpec::default()
        },
        ..spec(
            "prof",
            &root,
            "mkdir /tmp/d 2>&1; echo ready; exec sleep 600",
        )
    };
    let p = create(&s, sp).unwrap();
    let first = stdout_until_ready(&p);
    assert!(first.contains("Invalid cross-device link"), "{first}");
    for user in [None, Some("1000")] {
        let (out, err, _) = sh_as(&s, "prof", user, "mkdir /tmp/e || echo refused; hostname");
        assert!(err.contains("Invalid cross-device link"), "{user:?}: {err}");
        assert_eq!(out, "refused\nbox\n", "{user:?}");
    }
    stop_and_remove(&s, &p, "prof");

    // A profile the agent cannot compile is refused, nothing started.
    let bad = SecuritySpec {
        seccomp: Some(SeccompProfile {
            default_action: SeccompAction::Allow,
            rules: vec![SeccompRule {
                syscalls: vec![0x4000_0000],
                action: SeccompAction::Trap,
                args: Vec::new(),
            }],
        }),
        ..SecuritySpec::default()
    };
    let e = refused(create(
        &s,
        ContainerSpec {
            security: bad,
            ..spec("bad", &root, "true")
        },
    ));
    assert_eq!(e.kind, ErrorKind::BadRequest);
}

/// A profile that denies one call with one errno, allowing the rest.
struct SecurityProfile(SeccompProfile);

impl SecurityProfile {
    fn deny(nrs: &[libc::c_long], errno: i32) -> SecurityProfile {
        SecurityProfile(SeccompProfile {
            default_action: SeccompAction::Allow,
            rules: vec![SeccompRule {
                syscalls: nrs.iter().map(|&n| n as u32).collect(),
                action: SeccompAction::Errno(errno as u16),
                args: Vec::new(),
            }],
        })
    }
}

/// `--read-only` and `--tmpfs`: the root refuses writes (/tmp and the
/// tmpfs do not), the tmpfs has its size, mode and nosuid,nodev,noexec,
/// and an exec sees the same.
#[test]
fn read_only_root_with_tmpfs() {
    need_root!();
    let Some(root) = rootfs() else { return };
    let srv = Server::start();
    let s = srv.session();
    let security = SecuritySpec {
        read_only_rootfs: true,
        tmpfs: vec![
            TmpfsSpec {
                destination: "/scratch".into(),
                size: 1 << 20,
                mode: None,
                exec: false,
                read_only: false,
            },
            TmpfsSpec {
                destination: "/new/deep".into(),
                size: 4096 * 16,
                mode: Some(0o700),
                exec: true,
                read_only: true,
            },
        ],
        ..SecuritySpec::default()
    };
    let p = start(&s, "ro", &root, security);
    let (out, err, _) = sh_as(
        &s,
        "ro",
        None,
        "touch /x || echo root-refused; \
         echo hi > /scratch/f && cat /scratch/f; \
         touch /tmp/t && echo tmp-ok; \
         head -c 2000000 /dev/zero > /scratch/big || echo scratch-full; \
         touch /new/deep/x || echo deep-ro; \
         stat -c %a /scratch /new/deep; \
         grep -E ' /scratch | /new/deep ' /proc/mounts",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..7],
        [
            "root-refused",
            "hi",
            "tmp-ok",
            "scratch-full",
            "deep-ro",
            "1777",
            "700"
        ],
        "{out}\n{err}"
    );
    assert!(err.contains("Read-only file system"), "{err}");
    let scratch = lines[7].split(' ').nth(3).unwrap();
    let deep = lines[8].split(' ').nth(3).unwrap();
    for o in ["rw", "nosuid", "nodev", "noexec", "size=1024k"] {
        assert!(scratch.split(',').any(|x| x == o), "{o} in {scratch}");
    }
    for o in ["ro", "nosuid", "nodev", "size=64k"] {
        assert!(deep.split(',').any(|x| x == o), "{o} in {deep}");
    }
    assert!(!deep.split(',').any(|x| x == "noexec"), "{deep}");
    stop_and_remove(&s, &p, "ro");

    // A tmpfs whose path climbs out is refused before anything starts.
    let e = refused(create(
        &s,
        ContainerSpec {
            security: SecuritySpec {
                tmpfs: vec![TmpfsSpec {
                    destination: "/a/../../etc".into(),
                    size: 4096,
                    mode: None,
                    exec: false,
                    read_only: false,
                }],
                ..SecuritySpec::default()
            },
            ..spec("climb", &root, "true")
        },
    ));
    assert_eq!(e.kind, ErrorKind::BadRequest, "{e:?}");
}
