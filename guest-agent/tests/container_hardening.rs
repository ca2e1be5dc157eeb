//! What root inside a container may not do (security review F11), on the
//! host as root through the real agent server: use device nodes of its own
//! (every writable file system nodev, /dev's usual nodes bound in
//! read-only), and open AF_VSOCK sockets or io_uring rings (seccomp). The
//! confinement a request chooses (issue 13; `security.rs` beside this file)
//! is tested in `container_security.rs`.

mod common;

use std::path::Path;

use common::containers::*;
use common::Server;
use husk_proto::ExitStatus;

/// Runs `script` in running container `id`; its stdout.
fn exec_sh(s: &husk_agent_client::Session, id: &str, script: &str) -> String {
    let (out, err, status) = output(&exec_in(s, id, &["/bin/sh", "-c", script]).unwrap());
    assert_eq!(status, ExitStatus::Code(0), "stdout {out} stderr {err}");
    out
}

/// No device node of the app's own opens: mknod works (docker's
/// CAP_MKNOD), but every file system the app can write is `nodev` (its
/// root, /tmp, /dev), so neither a node it made nor one that appears in its
/// /dev anyway (made here, from outside, as host root) opens. The usual
/// nodes work and cannot be chmod'ed (they are the guest's, bound read-only).
#[test]
fn container_dev_has_no_device_nodes_of_its_own() {
    need_root!();
    let Some(root) = rootfs() else { return };
    let srv = Server::start();
    let s = srv.session();
    let p = start_ready(&s, "devs", &root, "echo ready; exec sleep 600");
    let probe = std::ffi::CString::new(format!("/proc/{}/root/dev/probe", p.pid)).unwrap();
    // SAFETY: mknod with a valid C string and integer mode/device.
    let made = unsafe { libc::mknod(probe.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
    let out = exec_sh(
        &s,
        "devs",
        "for n in /tmp/n /n /dev/kmsg; do mknod $n c 1 3 && echo made; \
           (echo x > $n) 2>/dev/null && echo opened || echo refused; done; \
         (echo x > /dev/probe) 2>/dev/null && echo probe-opened || echo probe-refused; \
         echo x > /dev/null && echo null-ok; \
         head -c 8 /dev/urandom | wc -c; head -c 5 /dev/zero | wc -c; \
         chmod 600 /dev/null 2>/dev/null && echo chmod-done || echo chmod-refused; \
         grep -E ' / | /dev tmpfs ' /proc/mounts",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..11],
        [
            "made",
            "refused",
            "made",
            "refused",
            "made",
            "refused",
            "probe-refused",
            "null-ok",
            "8",
            "5",
            "chmod-refused"
        ],
        "{out}"
    );
    for line in &lines[11..] {
        let opts = line.split(' ').nth(3).unwrap_or_default();
        assert!(opts.split(',').any(|o| o == "nodev"), "not nodev: {out}");
    }
    assert_eq!(lines.len(), 13, "{out}");
    stop_and_remove(&s, &p, "devs");
}

/// Reports how `socket(AF_VSOCK)` and `io_uring_setup` went (shared with
/// the pod e2e suite).
const PROBE_PY: &str = include_str!("../../tests/guest/no-vsock-probe.py");

/// Every app process runs under the seccomp filter: /proc says so for the
/// first process and an exec'd one, and (where this host has python3, which
/// the container gets through read-only binds of /usr) AF_VSOCK sockets and
/// io_uring rings are refused with EPERM inside while the same probe opens
/// a vsock socket (or gets EAFNOSUPPORT) outside.
#[test]
fn apps_cannot_open_vsock_or_io_uring() {
    need_root!();
    let Some(root) = rootfs() else { return };
    let srv = Server::start();
    let s = srv.session();
    let python = Path::new("/usr/bin/python3").exists();
    let mut sp = spec(
        "nosock",
        &root,
        "grep '^Seccomp:' /proc/self/status; echo ready; exec sleep 600",
    );
    if python {
        sp.mounts = vec![
            bind(Path::new("/usr"), "/usr", true),
            bind(Path::new("/usr/lib"), "/lib", true),
        ];
        if Path::new("/usr/lib64").is_dir() {
            sp.mounts
                .push(bind(Path::new("/usr/lib64"), "/lib64", true));
        }
    }
    let p = create(&s, sp).unwrap();
    let first = stdout_until_ready(&p);
    assert!(first.starts_with("Seccomp:\t2\n"), "{first}");
    let out = exec_sh(&s, "nosock", "grep '^Seccomp:' /proc/self/status");
    assert_eq!(out, "Seccomp:\t2\n");
    if python {
        let outside = std::process::Command::new("/usr/bin/python3")
            .args(["-S", "-c", PROBE_PY])
            .output()
            .unwrap();
        let outside = String::from_utf8_lossy(&outside.stdout).into_owned();
        assert!(
            outside.starts_with("vsock opened") || outside.starts_with("vsock EAFNOSUPPORT"),
            "{outside}"
        );
        let inside = exec_sh(
            &s,
            "nosock",
            &format!("/usr/bin/python3 -S -c \"{PROBE_PY}\""),
        );
        assert_eq!(inside, "vsock EPERM io_uring EPERM\n");
    } else {
        eprintln!("vsock probe skipped: no /usr/bin/python3");
    }
    stop_and_remove(&s, &p, "nosock");
}
