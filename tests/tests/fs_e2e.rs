//! End to end: virtio-fs shares in a real guest (issue "virtio-fs: share host directories into
//! the guest"). The real `husk vm --share` boots the real guest kernel with a test initramfs:
//! busybox (static, from the busybox-static package) and a shell /init that mounts a read-only
//! and a read-write share with `mount -t virtiofs`, reads a tree whose checksums the host
//! computed, tries every kind of write on the read-only share, writes files the host then
//! verifies, and ends with `reboot -f` (the VMM exits 3).
//!
//! Like `boot.rs`, everything runs in ONE testbed session; each `#[test]` checks its part.
//! The guest reports on the console as `FSTEST <key> <value>` lines (console bytes are slow in
//! the nested testbed, so it prints checksums, not data).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use husk_tests::{artifact, in_testbed, repo_root, run, Outcome, Scratch};

/// `husk vm` exit status when the guest resets (`reboot -f` with `reboot=k`).
const EXIT_RESET: i32 = 3;
/// Files in `many/` (enough for several READDIRPLUS replies).
const MANY: usize = 300;
const BIG_LEN: usize = (3 << 20) + 17;

const GUEST_INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
say() { echo "FSTEST $*"; }
try() {
    name=$1; shift
    if "$@" 2>/tmp/err; then say "$name allowed"; else say "$name refused: $(cat /tmp/err)"; fi
}
mkdir -p /mnt/ro /mnt/rw
for t in ro rw; do
    if mount -t virtiofs "$t" "/mnt/$t" 2>/tmp/err; then say "mount-$t ok"; else say "mount-$t failed: $(cat /tmp/err)"; fi
done

cd /mnt/ro
for f in a.txt dir/b.bin dir/sub/empty big.bin; do
    say "sum-$f $(sha256sum "$f" | cut -d' ' -f1)"
done
say "many $(ls many | wc -l) $(cat many/* | sha256sum | cut -d' ' -f1)"
say "link $(readlink link)"
say "size-big $(stat -c %s big.bin)"
cd /

try ro-create touch /mnt/ro/new
try ro-mkdir mkdir /mnt/ro/newdir
try ro-unlink rm /mnt/ro/a.txt
try ro-append sh -c 'echo more >> /mnt/ro/a.txt'
try ro-rename mv /mnt/ro/a.txt /mnt/ro/moved
try ro-chmod chmod 600 /mnt/ro/a.txt
try ro-symlink ln -s a.txt /mnt/ro/link2

echo "hello from the guest" > /mnt/rw/hello.txt
mkdir /mnt/rw/sub
dd if=/dev/urandom of=/mnt/rw/sub/random.bin bs=65536 count=20 2>/dev/null
say "rw-random $(sha256sum /mnt/rw/sub/random.bin | cut -d' ' -f1)"
cp /mnt/ro/big.bin /mnt/rw/copy.bin
ln -s hello.txt /mnt/rw/link
echo gone > /mnt/rw/gone.txt && rm /mnt/rw/gone.txt
echo renamed > /mnt/rw/old-name && mv /mnt/rw/old-name /mnt/rw/new-name
echo over > /mnt/rw/target && echo winner > /mnt/rw/src && mv /mnt/rw/src /mnt/rw/target
touch /mnt/rw/setid && chmod 6755 /mnt/rw/setid
try rw-mknod-chr mknod /mnt/rw/null c 1 3
try rw-fifo mkfifo /mnt/rw/fifo
umount /mnt/rw && say "umount-rw ok"
umount /mnt/ro && say "umount-ro ok"
say done
reboot -f -n
"#;

/// Deterministic test data.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    assert_eq!(
        out.status,
        0,
        "sha256sum {}: {}",
        path.display(),
        out.output
    );
    out.output
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The read-only tree, and the `FSTEST` lines the guest must print for it.
fn make_ro_tree(ro: &Path, scratch: &Path) -> Vec<(String, String)> {
    fs::create_dir_all(ro.join("dir/sub")).unwrap();
    fs::create_dir_all(ro.join("many")).unwrap();
    fs::write(ro.join("a.txt"), "hello, virtio-fs\n").unwrap();
    fs::write(ro.join("dir/b.bin"), pattern(200_000, 1)).unwrap();
    fs::write(ro.join("dir/sub/empty"), b"").unwrap();
    fs::write(ro.join("big.bin"), pattern(BIG_LEN, 2)).unwrap();
    std::os::unix::fs::symlink("a.txt", ro.join("link")).unwrap();
    let mut all = Vec::new();
    for i in 0..MANY {
        let data = pattern(100 + i, 10 + i as u32);
        fs::write(ro.join(format!("many/f{i:04}")), &data).unwrap();
        all.extend_from_slice(&data);
    }
    let cat = scratch.join("many.cat");
    fs::write(&cat, all).unwrap();
    let mut want: Vec<(String, String)> = ["a.txt", "dir/b.bin", "dir/sub/empty", "big.bin"]
        .iter()
        .map(|f| (format!("sum-{f}"), sha256(&ro.join(f))))
        .collect();
    want.push(("many".into(), format!("{MANY} {}", sha256(&cat))));
    want.push(("link".into(), "a.txt".into()));
    want.push(("size-big".into(), BIG_LEN.to_string()));
    want
}

/// The test initramfs: static busybox and the shell /init above.
fn make_initramfs(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let init = dir.join("init.sh");
    fs::write(&init, GUEST_INIT).unwrap();
    let cpio = dir.join("fs-test.cpio");
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
    /// The guest's `FSTEST` lines.
    lines: HashMap<String, String>,
    want_ro: Vec<(String, String)>,
    /// What the host finds in the shares after the VM ended (the scratch directory itself is
    /// gone by the time the tests look).
    host: HashMap<&'static str, String>,
}

/// Reads what the checks need from the shares after the run.
fn host_facts(dir: &Path) -> HashMap<&'static str, String> {
    let p = |rel: &str| dir.join(rel);
    let text = |rel: &str| fs::read_to_string(p(rel)).unwrap_or_else(|e| format!("({e})"));
    let exists = |rel: &str| p(rel).symlink_metadata().is_ok().to_string();
    let mode = |rel: &str| {
        fs::symlink_metadata(p(rel))
            .map(|m| format!("{:o}", m.permissions().mode() & 0o7777))
            .unwrap_or_else(|e| format!("({e})"))
    };
    let mut ro_names: Vec<String> = fs::read_dir(p("ro"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ro_names.sort();
    let random = p("rw/sub/random.bin");
    let same_copy = fs::read(p("rw/copy.bin")).ok() == fs::read(p("ro/big.bin")).ok();
    HashMap::from([
        ("ro/a.txt", text("ro/a.txt")),
        ("ro/a.txt mode", mode("ro/a.txt")),
        ("ro names", ro_names.join(" ")),
        ("rw/hello.txt", text("rw/hello.txt")),
        (
            "rw/random len",
            fs::metadata(&random)
                .map(|m| m.len().to_string())
                .unwrap_or_default(),
        ),
        (
            "rw/random sha",
            if random.exists() {
                sha256(&random)
            } else {
                String::new()
            },
        ),
        ("rw/copy same", same_copy.to_string()),
        (
            "rw/link",
            fs::read_link(p("rw/link"))
                .map(|t| t.display().to_string())
                .unwrap_or_else(|e| format!("({e})")),
        ),
        ("rw/gone.txt exists", exists("rw/gone.txt")),
        ("rw/old-name exists", exists("rw/old-name")),
        ("rw/new-name", text("rw/new-name")),
        ("rw/src exists", exists("rw/src")),
        ("rw/target", text("rw/target")),
        ("rw/null exists", exists("rw/null")),
        ("rw/setid mode", mode("rw/setid")),
    ])
}

fn suite() -> &'static Suite {
    static SUITE: OnceLock<Suite> = OnceLock::new();
    SUITE.get_or_init(|| {
        let scratch = Scratch::new("fs-e2e");
        let dir = scratch.path().to_path_buf();
        let (ro, rw) = (dir.join("ro"), dir.join("rw"));
        fs::create_dir_all(&rw).unwrap();
        let want_ro = make_ro_tree(&ro, &dir);
        let cpio = make_initramfs(&dir);
        let (husk, vmlinux) = (artifact("husk"), artifact("vmlinux"));
        let script = format!(
            "timeout 300 {husk} vm --kernel {vmlinux} --initrd {cpio} --mem 256 \
             --cmdline quiet --share ro={ro}:ro:cache=always --share rw={rw} \
             >{d}/vm.out 2>&1 </dev/null; echo $? >{d}/vm.status\n",
            husk = husk.display(),
            vmlinux = vmlinux.display(),
            cpio = cpio.display(),
            ro = ro.display(),
            rw = rw.display(),
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
            .filter_map(|l| l.trim_end_matches('\r').split_once("FSTEST "))
            .filter_map(|(_, rest)| rest.split_once(' ').or(Some((rest, ""))))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Shown with --nocapture (and by libtest for a failing test).
        println!("husk vm exited {}:\n{}", vm.status, vm.output);
        let host = host_facts(&dir);
        drop(scratch);
        Suite {
            testbed,
            vm,
            lines,
            want_ro,
            host,
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

/// A fact about the shares as the host saw them after the run.
fn host(key: &str) -> &'static str {
    &suite().host[key]
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn guest_mounts_both_shares_and_reboots_cleanly() {
    assert_eq!(said("mount-ro"), "ok");
    assert_eq!(said("mount-rw"), "ok");
    assert_eq!(said("umount-rw"), "ok");
    assert_eq!(said("umount-ro"), "ok");
    said("done");
    let vm = &suite().vm;
    assert_eq!(vm.status, EXIT_RESET, "{}", vm.output);
    assert!(!vm.output.contains("panicked"), "{}", vm.output);
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn read_only_tree_reads_back_with_the_host_checksums() {
    for (key, want) in &suite().want_ro {
        assert_eq!(said(key), want, "{key}");
    }
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn read_only_share_refuses_every_write_with_erofs() {
    for op in [
        "ro-create",
        "ro-mkdir",
        "ro-unlink",
        "ro-append",
        "ro-rename",
        "ro-chmod",
        "ro-symlink",
    ] {
        let v = said(op);
        assert!(
            v.starts_with("refused") && v.contains("Read-only file system"),
            "{op}: {v}"
        );
    }
    // And nothing changed on the host.
    assert_eq!(host("ro/a.txt"), "hello, virtio-fs\n");
    assert_eq!(host("ro names"), "a.txt big.bin dir link many");
    assert_eq!(host("ro/a.txt mode"), "644");
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn guest_writes_reach_the_host() {
    assert_eq!(host("rw/hello.txt"), "hello from the guest\n");
    assert_eq!(host("rw/random len"), (20 * 65536).to_string());
    assert_eq!(said("rw-random"), host("rw/random sha"));
    assert_eq!(host("rw/copy same"), "true", "copy of big.bin");
    assert_eq!(host("rw/link"), "hello.txt");
    assert_eq!(host("rw/gone.txt exists"), "false");
    assert_eq!(host("rw/old-name exists"), "false");
    assert_eq!(host("rw/new-name"), "renamed\n");
    assert_eq!(host("rw/src exists"), "false");
    assert_eq!(
        host("rw/target"),
        "winner\n",
        "rename over an existing file"
    );
}

#[test]
#[ignore = "end to end: needs build/ and real KVM (scripts/test.sh runs it)"]
fn read_write_share_creates_no_devices_or_set_id_bits() {
    let v = said("rw-mknod-chr");
    assert!(
        v.starts_with("refused") && v.contains("Operation not permitted"),
        "{v}"
    );
    assert_eq!(host("rw/null exists"), "false");
    assert_eq!(host("rw/setid mode"), "755", "set-id bits must be stripped");
    assert_eq!(said("rw-fifo"), "allowed", "FIFOs are not devices");
}
