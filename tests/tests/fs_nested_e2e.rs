//! End to end, security review F1: a share whose root lies two levels below another,
//! read-write share's root (`--share a=APP --share d=APP/web/data`, as `-v /srv/app:/a
//! -v /srv/app/web/data:/d` makes) must keep serving the directory it was started with.
//!
//! A raw guest (the real guest kernel with a busybox test initramfs, not the agent) mounts both
//! shares, renames `web` away through `a`, puts a symlink to a host directory the test made
//! (`HOST`, holding `data/secret`) in its place, and then makes the inner share import its root
//! again in two ways:
//! 1. unmount and mount `d` again (FUSE DESTROY, then INIT);
//! 2. unmount `d`, unbind and rebind its virtio-mmio device through sysfs (a device reset and
//!    a new driver instance), mount again.
//!
//! After each, the guest looks for `secret` and creates a file. At df579e2 each import
//! re-opened `APP/web/data` by path, so the guest saw `HOST/data/secret` and its files landed
//! in `HOST/data`; now neither may happen, and the files land in the original directory (which
//! the rename moved to `APP/web.old/data`).
//!
//! Everything runs in ONE testbed session; the guest reports `NESTED <key> <value>` lines.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use husk_tests::{artifact, in_testbed, repo_root, run, Outcome, Scratch};

/// `husk vm` exit status when the guest resets (`reboot -f` with `reboot=k`).
const EXIT_RESET: i32 = 3;

/// The guest's /init; `@HOST@` is replaced by the host directory the symlink points to.
const GUEST_INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "NESTED $*"; }
check() {
    say "$1-list $(ls /mnt/d | tr '\n' ' ')"
    if [ -e /mnt/d/secret ]; then say "$1-secret seen"; else say "$1-secret unseen"; fi
    if touch "/mnt/d/planted-$1" 2>/tmp/err; then say "$1-create ok"; else say "$1-create failed: $(cat /tmp/err)"; fi
}
mkdir -p /mnt/a /mnt/d
mount -t virtiofs a /mnt/a && say mount-a ok
mount -t virtiofs d /mnt/d && say mount-d ok
check before
mv /mnt/a/web /mnt/a/web.old && ln -s @HOST@ /mnt/a/web && say swap ok

umount /mnt/d && mount -t virtiofs d /mnt/d && say remount ok
check remount

umount /mnt/d
plat=""
for t in /sys/fs/virtiofs/*/tag; do
    [ "$(cat "$t")" = d ] && plat=$(basename "$(dirname "$(readlink -f "${t%/tag}/device")")")
done
say reset-device "${plat:-unknown}"
drv=/sys/bus/platform/drivers/virtio-mmio
if [ -n "$plat" ] && echo "$plat" > $drv/unbind 2>/tmp/err && echo "$plat" > $drv/bind 2>>/tmp/err; then
    say reset ok
else
    say reset "failed: $(cat /tmp/err) $(ls $drv 2>&1 | tr '\n' ' ')"
fi
mount -t virtiofs d /mnt/d && say remount-after-reset ok
check reset
umount /mnt/d
umount /mnt/a
say done
reboot -f -n
"#;

/// The test initramfs: static busybox and the shell /init above.
fn make_initramfs(dir: &Path, host: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let init = dir.join("init.sh");
    fs::write(
        &init,
        GUEST_INIT.replace("@HOST@", &host.display().to_string()),
    )
    .unwrap();
    let cpio = dir.join("nested.cpio");
    let out = run(Command::new("python3")
        .arg(repo_root().join("scripts/mkinitramfs.py"))
        .arg(&cpio)
        .args([
            "dir:/bin",
            "file:/bin/busybox:/bin/busybox:0755",
            "slink:/bin/sh:busybox",
            "dir:/dev",
            "nod:/dev/console:c:5:1",
            "dir:/proc",
            "dir:/sys",
            "dir:/tmp:1777",
            "dir:/mnt",
        ])
        .arg(format!("file:/init:{}:0755", init.display())));
    assert_eq!(out.status, 0, "mkinitramfs: {}", out.output);
    cpio
}

struct Suite {
    testbed: Outcome,
    vm: Outcome,
    lines: HashMap<String, String>,
    /// Names in the host directory the symlink pointed to, after the run.
    host_names: Vec<String>,
    /// Names in the inner share's real root (moved to `app/web.old/data`), after the run.
    inner_names: Vec<String>,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn suite() -> &'static Suite {
    static SUITE: OnceLock<Suite> = OnceLock::new();
    SUITE.get_or_init(|| {
        let scratch = Scratch::new("fs-nested-e2e");
        let dir = scratch.path().to_path_buf();
        let (app, host) = (dir.join("app"), dir.join("host"));
        fs::create_dir_all(app.join("web/data")).unwrap();
        fs::write(app.join("web/data/inside"), "the inner share\n").unwrap();
        fs::create_dir_all(host.join("data")).unwrap();
        fs::write(host.join("data/secret"), "a host file\n").unwrap();
        let cpio = make_initramfs(&dir, &host);
        let (husk, vmlinux) = (artifact("husk"), artifact("vmlinux"));
        let script = format!(
            "timeout 300 {husk} vm --kernel {vmlinux} --initrd {cpio} --mem 256 \
             --cmdline quiet --share a={app} --share d={app}/web/data \
             >{d}/vm.out 2>&1 </dev/null; echo $? >{d}/vm.status\n",
            husk = husk.display(),
            vmlinux = vmlinux.display(),
            cpio = cpio.display(),
            app = app.display(),
            d = dir.display(),
        );
        let script_path = dir.join("run.sh");
        fs::write(&script_path, script).unwrap();
        let testbed = in_testbed(&[&dir], &["bash", &script_path.display().to_string()]);
        let vm = Outcome {
            status: fs::read_to_string(dir.join("vm.status"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(-1),
            output: fs::read_to_string(dir.join("vm.out"))
                .unwrap_or_else(|_| "(the VM did not run)".into()),
        };
        let lines = vm
            .output
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').split_once("NESTED "))
            .filter_map(|(_, rest)| rest.split_once(' ').or(Some((rest, ""))))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        println!("husk vm exited {}:\n{}", vm.status, vm.output);
        let host_names = names(&host.join("data"));
        let inner_names = names(&app.join("web.old/data"));
        drop(scratch);
        Suite {
            testbed,
            vm,
            lines,
            host_names,
            inner_names,
        }
    })
}

/// The guest's value for `key`; fails with the whole story when it never said it.
fn said(key: &str) -> &'static str {
    let s = suite();
    match s.lines.get(key) {
        Some(v) => v,
        None => panic!(
            "the guest never reported {key:?}. VM exit {}, output:\n{}\ntestbed exit {}:\n{}",
            s.vm.status, s.vm.output, s.testbed.status, s.testbed.output
        ),
    }
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn the_guest_makes_the_swap_and_runs_to_the_end() {
    assert_eq!(said("mount-a"), "ok");
    assert_eq!(said("mount-d"), "ok");
    assert_eq!(said("before-secret"), "unseen");
    assert_eq!(said("swap"), "ok");
    said("done");
    let vm = &suite().vm;
    assert_eq!(vm.status, EXIT_RESET, "{}", vm.output);
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn a_remount_keeps_the_inner_share_on_its_own_root() {
    assert_eq!(said("remount"), "ok");
    assert_eq!(said("remount-secret"), "unseen");
    assert_eq!(said("remount-create"), "ok");
    let s = suite();
    assert!(
        !s.host_names.contains(&"planted-remount".to_string()),
        "{:?}",
        s.host_names
    );
    assert!(
        s.inner_names.contains(&"planted-remount".to_string()),
        "{:?}",
        s.inner_names
    );
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn a_device_reset_keeps_the_inner_share_on_its_own_root() {
    assert_eq!(said("reset"), "ok", "unbind/bind of the virtio-mmio device");
    assert_eq!(said("remount-after-reset"), "ok");
    assert_eq!(said("reset-secret"), "unseen");
    assert_eq!(said("reset-create"), "ok");
    let s = suite();
    assert_eq!(
        s.host_names,
        ["secret"],
        "nothing was created in the host directory"
    );
    assert!(
        s.inner_names.contains(&"planted-reset".to_string()),
        "{:?}",
        s.inner_names
    );
}
