//! End to end: the real agent as /init of a real guest under the real
//! `husk vm`, driven over virtio-vsock with the real client (issue: "The
//! guest agent"). One guest boot runs every case (tests/src/bin/agent_e2e.rs):
//! mount a virtio-fs share of image blobs, unpack with digest verification
//! (and refuse a tampered blob), run containers (hostname, PID namespace,
//! exit code, a read-write share bound into a container read-write and
//! read-only, Docker's default capabilities (mount refused), a TTY
//! container (ttyname, stdin EOF), stdin round trip, exec into a running one, from the same and from a
//! second connection, stop with SIGTERM),
//! cgroup v2 OOM and pids.max in the pure-v2 guest, and a clean shutdown
//! that powers the guest off (`husk vm` exits 0).

use std::path::Path;
use std::process::Command;

use husk_tests::{artifact, in_testbed_guests, run, Scratch};

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn agent_serves_a_real_guest_over_vsock() {
    if !Path::new("/usr/bin/busybox").exists() {
        panic!("/usr/bin/busybox is missing: apt-get install busybox-static");
    }
    let scratch = Scratch::new("agent-e2e");
    let dir = scratch.path();
    // The testbed sees build/ (where the scratch dir is) but not the target dir.
    let driver = dir.join("agent_e2e");
    std::fs::copy(env!("CARGO_BIN_EXE_agent_e2e"), &driver).unwrap();
    let image = dir.join("image");
    let made = run(Command::new(&driver).arg("image").arg(&image));
    assert_eq!(made.status, 0, "{}", made.output);
    // The read-write volume the driver binds into a container (volume-bind).
    std::fs::create_dir_all(dir.join("vol")).unwrap();

    let script = format!(
        "{husk} vm --kernel {kernel} --initrd {initrd} --mem 512 --vcpus 2 \
         --vsock {d}/v.sock --share img={image}:ro --share vol={d}/vol --cmdline quiet >{d}/vm.log 2>&1 </dev/null &\n\
         vm=$!\n\
         timeout 600 {driver} drive {d}/v.sock {image}; rc=$?\n\
         wait $vm; echo \"vm-exit $?\"\n\
         cat {d}/vm.log\n\
         exit $rc\n",
        husk = artifact("husk").display(),
        kernel = artifact("vmlinux").display(),
        initrd = artifact("initramfs.cpio").display(),
        d = dir.display(),
        image = image.display(),
        driver = driver.display(),
    );
    let script_path = dir.join("run.sh");
    std::fs::write(&script_path, script).unwrap();
    let out = in_testbed_guests(&[dir], &["sh", &script_path.display().to_string()], 900);
    for case in [
        "connect",
        "mount-share",
        "unpack",
        "digest-mismatch-refused",
        "container-run",
        "remove",
        "volume-bind",
        "capabilities-dropped",
        "tty-container",
        "stdin-and-exec",
        "exec-from-second-connection",
        "stop",
        "oom-reported",
        "pids-max-enforced",
        "shutdown",
    ] {
        assert!(
            out.has_line(&format!("case {case} ok")),
            "case {case} did not pass:\n{}",
            out.output
        );
    }
    assert!(out.has_line("husk-agent: ready cpus=2"), "{}", out.output);
    assert!(
        out.has_line("vm-exit 0"),
        "guest did not power off cleanly:\n{}",
        out.output
    );
    assert_eq!(out.status, 0, "{}", out.output);
}
