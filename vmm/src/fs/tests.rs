//! Request-level tests of the policy layer: the FileSystem API exactly as the FUSE server calls
//! it, including requests no well-behaved kernel sends (`..` lookups, unknown node ids,
//! `RENAME_WHITEOUT`, device mknod). The host-mounted tests in `vmm/tests/fs_host_mount.rs` cover
//! the same rules through real system calls.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, FsOptions, SetattrValid};
use fuse_backend_rs::api::filesystem::{Context, FileSystem};
use vmm_sys_util::tempdir::TempDir;

use super::{prepare_server_thread, CacheMode, ConfinedFs, FdBudget, ShareServer, ShareSpec};

const ROOT: u64 = 1;

fn ctx() -> Context {
    Context::new()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn share(dir: &Path, ro: bool, max_fds: usize) -> ShareServer {
    prepare_server_thread().unwrap();
    let spec = ShareSpec {
        tag: "t".into(),
        host_dir: dir.to_path_buf(),
        read_only: ro,
        cache: CacheMode::Auto,
    };
    let s = ShareServer::new(spec.open().unwrap(), FdBudget::new(max_fds)).unwrap();
    s.fs().init(FsOptions::empty()).unwrap();
    s
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn zero_stat() -> libc::stat64 {
    // SAFETY: stat64 is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn create_in(mode: u32) -> CreateIn {
    CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
        mode,
        umask: 0,
        fuse_flags: 0,
    }
}

#[test]
fn read_only_share_refuses_every_write() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.as_path().join("f"), b"data").unwrap();
    fs::create_dir(dir.as_path().join("d")).unwrap();
    let s = share(dir.as_path(), true, 1000);
    let fs: &ConfinedFs = s.fs();
    let c = ctx();
    let f = fs.lookup(&c, ROOT, &cs("f")).unwrap().inode;

    let rofs = libc::EROFS;
    assert_eq!(errno(fs.create(&c, ROOT, &cs("n"), create_in(0o644))), rofs);
    assert_eq!(
        errno(fs.mknod(&c, ROOT, &cs("n"), libc::S_IFIFO | 0o644, 0, 0)),
        rofs
    );
    assert_eq!(errno(fs.mkdir(&c, ROOT, &cs("n"), 0o755, 0)), rofs);
    assert_eq!(errno(fs.unlink(&c, ROOT, &cs("f"))), rofs);
    assert_eq!(errno(fs.rmdir(&c, ROOT, &cs("d"))), rofs);
    assert_eq!(
        errno(fs.rename(&c, ROOT, &cs("f"), ROOT, &cs("g"), 0)),
        rofs
    );
    assert_eq!(errno(fs.link(&c, f, ROOT, &cs("g"))), rofs);
    assert_eq!(errno(fs.symlink(&c, &cs("f"), ROOT, &cs("g"))), rofs);
    let valid = SetattrValid::MODE;
    assert_eq!(errno(fs.setattr(&c, f, zero_stat(), None, valid)), rofs);
    assert_eq!(
        errno(fs.setattr(&c, f, zero_stat(), None, SetattrValid::SIZE)),
        rofs
    );
    assert_eq!(errno(fs.setxattr(&c, f, &cs("user.x"), b"1", 0)), rofs);
    assert_eq!(errno(fs.removexattr(&c, f, &cs("user.x"))), rofs);
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_APPEND,
    ] {
        assert_eq!(
            errno(fs.open(&c, f, flags as u32, 0)),
            rofs,
            "flags {flags:#o}"
        );
    }
    assert_eq!(errno(fs.access(&c, f, libc::W_OK as u32)), rofs);

    // Reading still works, and write/fallocate on a read-only handle are refused before the host.
    let (h, _, _) = fs.open(&c, f, libc::O_RDONLY as u32, 0).unwrap();
    let h = h.unwrap();
    assert_eq!(errno(fs.fallocate(&c, f, h, 0, 0, 4096)), rofs);
    fs.release(&c, f, 0, h, false, false, None).unwrap();
    assert_eq!(errno(fs.access(&c, f, libc::R_OK as u32)), 0);
    assert_eq!(fs::read(dir.as_path().join("f")).unwrap(), b"data");
    assert!(dir.as_path().join("d").is_dir());
}

#[test]
fn dot_and_dotdot_lookups_are_refused() {
    let dir = TempDir::new().unwrap();
    fs::create_dir(dir.as_path().join("sub")).unwrap();
    let s = share(dir.as_path(), false, 1000);
    let (fs, c) = (s.fs(), ctx());
    for parent in [ROOT, fs.lookup(&c, ROOT, &cs("sub")).unwrap().inode] {
        assert_eq!(errno(fs.lookup(&c, parent, &cs(".."))), libc::EINVAL);
        assert_eq!(errno(fs.lookup(&c, parent, &cs("."))), libc::EINVAL);
    }
    assert_eq!(errno(fs.lookup(&c, ROOT, &cs("sub/.."))), libc::EINVAL);
    assert_eq!(errno(fs.lookup(&c, ROOT, &cs("/etc"))), libc::EINVAL);
}

#[test]
fn unknown_node_ids_and_handles_are_errors() {
    let dir = TempDir::new().unwrap();
    let s = share(dir.as_path(), false, 1000);
    let (fs, c) = (s.fs(), ctx());
    for node in [0, 2, 12345, u64::MAX] {
        assert_eq!(
            errno(fs.getattr(&c, node, None)),
            libc::EBADF,
            "node {node}"
        );
        assert_eq!(errno(fs.lookup(&c, node, &cs("x"))), libc::EBADF);
        assert_eq!(errno(fs.open(&c, node, 0, 0)), libc::EBADF);
        fs.forget(&c, node, u64::MAX); // must not panic or disturb anything
    }
    assert_eq!(
        errno(fs.release(&c, ROOT, 0, 999, false, false, None)),
        libc::EBADF
    );
    assert_eq!(fs.budget().used(), 0);
}

#[test]
fn no_devices_and_no_set_id_bits() {
    let dir = TempDir::new().unwrap();
    let s = share(dir.as_path(), false, 1000);
    let (fs, c) = (s.fs(), ctx());
    let p = dir.as_path();
    let chr = libc::S_IFCHR | 0o666;
    assert_eq!(
        errno(fs.mknod(&c, ROOT, &cs("null"), chr, 0x0103, 0)),
        libc::EPERM
    );
    assert_eq!(
        errno(fs.mknod(&c, ROOT, &cs("blk"), libc::S_IFBLK | 0o666, 0x0800, 0)),
        libc::EPERM
    );
    assert!(!p.join("null").exists() && !p.join("blk").exists());
    fs.mknod(&c, ROOT, &cs("fifo"), libc::S_IFIFO | 0o644, 0, 0)
        .unwrap();
    assert_eq!(
        fs::metadata(p.join("fifo")).unwrap().mode() & libc::S_IFMT,
        libc::S_IFIFO
    );
    // A whiteout rename would create a 0/0 character device.
    fs.mknod(&c, ROOT, &cs("w"), libc::S_IFREG | 0o644, 0, 0)
        .unwrap();
    let whiteout = libc::RENAME_WHITEOUT;
    assert_eq!(
        errno(fs.rename(&c, ROOT, &cs("w"), ROOT, &cs("w2"), whiteout)),
        libc::EINVAL
    );

    let (e, h, _, _) = fs.create(&c, ROOT, &cs("suid"), create_in(0o6755)).unwrap();
    fs.release(&c, e.inode, 0, h.unwrap(), false, false, None)
        .unwrap();
    fs.mkdir(&c, ROOT, &cs("sgid"), 0o2775, 0).unwrap();
    fs.mknod(&c, ROOT, &cs("m"), libc::S_IFREG | 0o4755, 0, 0)
        .unwrap();
    for name in ["suid", "sgid", "m"] {
        let mode = fs::metadata(p.join(name)).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "{name} has mode {mode:o}");
    }
    let mut attr = zero_stat();
    attr.st_mode = libc::S_IFREG | 0o6755;
    fs.setattr(&c, e.inode, attr, None, SetattrValid::MODE)
        .unwrap();
    assert_eq!(fs::metadata(p.join("suid")).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn xattr_writes_limited_to_user_namespace() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.as_path().join("f"), b"x").unwrap();
    let s = share(dir.as_path(), false, 1000);
    let (fs, c) = (s.fs(), ctx());
    let f = fs.lookup(&c, ROOT, &cs("f")).unwrap().inode;
    for name in [
        "security.capability",
        "trusted.x",
        "security.selinux",
        "system.posix_acl_access",
    ] {
        assert_eq!(
            errno(fs.setxattr(&c, f, &cs(name), b"\x01", 0)),
            libc::EPERM,
            "{name}"
        );
        assert_eq!(
            errno(fs.removexattr(&c, f, &cs(name))),
            libc::EPERM,
            "{name}"
        );
    }
    // A guest asking for a 4 GiB value buffer gets at most the kernel's limit allocated.
    let r = fs.getxattr(&c, f, &cs("user.none"), u32::MAX);
    assert!(r.is_err());
    let _ = fs.listxattr(&c, f, u32::MAX).unwrap();
}

#[test]
fn symlinks_are_never_followed_by_the_server() {
    let outside = TempDir::new().unwrap();
    let target = outside.as_path().join("secret");
    fs::write(&target, b"secret").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    let dir = TempDir::new().unwrap();
    std::os::unix::fs::symlink(&target, dir.as_path().join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", dir.as_path().join("up")).unwrap();
    let s = share(dir.as_path(), false, 1000);
    let (fs, c) = (s.fs(), ctx());

    let e = fs.lookup(&c, ROOT, &cs("abs")).unwrap();
    assert_eq!(
        e.attr.st_mode & libc::S_IFMT,
        libc::S_IFLNK,
        "lookup returns the link itself"
    );
    assert_eq!(
        fs.readlink(&c, e.inode).unwrap(),
        target.as_os_str().as_encoded_bytes()
    );
    assert_eq!(
        errno(fs.open(&c, e.inode, libc::O_RDONLY as u32, 0)),
        libc::EBADF
    );
    let mut attr = zero_stat();
    attr.st_mode = 0o777;
    let _ = fs.setattr(&c, e.inode, attr, None, SetattrValid::MODE);
    let _ = fs.setattr(&c, e.inode, attr, None, SetattrValid::SIZE);
    let _ = fs.setxattr(&c, e.inode, &cs("user.x"), b"1", 0);
    let meta = fs::metadata(&target).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 6);
    assert!(xattr_names(&target).is_empty());
    // Linking the symlink makes another symlink, not a link to the outside file.
    let l = fs.link(&c, e.inode, ROOT, &cs("abs2")).unwrap();
    assert_eq!(l.attr.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(fs::metadata(&target).unwrap().nlink(), 1);
    // A relative link climbing out is also only a name for the guest to interpret.
    let up = fs.lookup(&c, ROOT, &cs("up")).unwrap();
    assert_eq!(errno(fs.lookup(&c, up.inode, &cs("etc"))), libc::ENOTDIR);
    assert_eq!(
        errno(fs.mkdir(&c, up.inode, &cs("x"), 0o755, 0)),
        libc::ENOTDIR
    );
}

fn xattr_names(p: &Path) -> Vec<u8> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is NUL terminated and `buf` is valid for `buf.len()` bytes; return checked.
    let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf
}

#[test]
fn symlink_swap_race_never_escapes() {
    let outside = TempDir::new().unwrap();
    let dir = TempDir::new().unwrap();
    let d = dir.as_path().join("d");
    fs::create_dir(&d).unwrap();
    let s = share(dir.as_path(), false, 100_000);
    let fs = s.fs().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The attacker swaps `d` between a real directory and a symlink to the outside directory.
    let swapper = {
        let (d, out, stop) = (d.clone(), outside.as_path().to_path_buf(), stop.clone());
        let real = dir.as_path().join("real");
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fs::rename(&d, &real);
                let _ = std::os::unix::fs::symlink(&out, &d);
                let _ = fs::remove_file(&d);
                let _ = fs::rename(&real, &d);
            }
        })
    };
    let c = ctx();
    for i in 0..2000 {
        if let Ok(e) = fs.lookup(&c, ROOT, &cs("d")) {
            let name = cs(&format!("f{i}"));
            if let Ok((ce, h, _, _)) = fs.create(&c, e.inode, &name, create_in(0o644)) {
                let _ = fs.release(&c, ce.inode, 0, h.unwrap(), false, false, None);
                fs.forget(&c, ce.inode, 1);
            }
            let _ = fs.mkdir(&c, e.inode, &cs(&format!("m{i}")), 0o755, 0);
            fs.forget(&c, e.inode, 1);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    let escaped: Vec<_> = fs::read_dir(outside.as_path()).unwrap().collect();
    assert!(escaped.is_empty(), "files escaped the share: {escaped:?}");
}

#[test]
fn descriptor_budget_bounds_lookups_and_handles() {
    let dir = TempDir::new().unwrap();
    for i in 0..20 {
        fs::write(dir.as_path().join(format!("f{i:02}")), b"x").unwrap();
    }
    let s = share(dir.as_path(), false, 8);
    let (fs, c) = (s.fs(), ctx());
    let mut nodes = Vec::new();
    for i in 0..8 {
        nodes.push(fs.lookup(&c, ROOT, &cs(&format!("f{i:02}"))).unwrap().inode);
    }
    assert_eq!(errno(fs.lookup(&c, ROOT, &cs("f10"))), libc::ENFILE);
    assert_eq!(errno(fs.opendir(&c, ROOT, 0)), libc::ENFILE);
    assert!(
        fs.lookup(&c, ROOT, &cs("f00")).is_ok(),
        "a known node costs nothing"
    );
    fs.forget(&c, nodes[0], 2);
    let (h, _) = fs.opendir(&c, ROOT, 0).unwrap();
    let h = h.unwrap();
    // readdirplus past the budget still lists every name, but without nodes.
    let mut names = 0;
    let mut with_node = 0;
    let mut offset = 0;
    loop {
        let mut last = None;
        fs.readdirplus(&c, ROOT, h, 4096, offset, &mut |d, e| {
            names += 1;
            if e.inode != 0 {
                with_node += 1;
            }
            last = Some(d.offset);
            Ok(1)
        })
        .unwrap();
        match last {
            Some(o) => offset = o,
            None => break,
        }
    }
    assert_eq!(names, 20);
    assert!(with_node <= 7, "{with_node} nodes handed out");
    assert_eq!(fs.budget().used(), 8);
    fs.releasedir(&c, ROOT, 0, h).unwrap();
    assert_eq!(fs.budget().used(), 7);
}

#[test]
fn bad_open_flags_are_refused() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.as_path().join("f"), b"x").unwrap();
    let s = share(dir.as_path(), false, 1000);
    let (fs, c) = (s.fs(), ctx());
    let f = fs.lookup(&c, ROOT, &cs("f")).unwrap().inode;
    assert_eq!(errno(fs.open(&c, f, libc::O_PATH as u32, 0)), libc::EINVAL);
    let tmp = (libc::O_TMPFILE | libc::O_RDWR) as u32;
    assert_eq!(errno(fs.open(&c, ROOT, tmp, 0)), libc::EINVAL);
    assert_eq!(fs.budget().used(), 1);
}

#[test]
fn repeated_init_drops_inodes_and_handles_with_the_budget() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.as_path().join("f"), b"x").unwrap();
    let s = share(dir.as_path(), false, 4);
    let (fs, c) = (s.fs(), ctx());
    let f = fs.lookup(&c, ROOT, &cs("f")).unwrap().inode;
    let (h, _, _) = fs.open(&c, f, libc::O_RDONLY as u32, 0).unwrap();
    assert_eq!(fs.budget().used(), 2);
    // A second INIT resets the accounting, so it must also close what was accounted: otherwise
    // a guest could repeat lookups + INIT to hold any number of host descriptors.
    fs.init(FsOptions::empty()).unwrap();
    assert_eq!(fs.budget().used(), 0);
    assert_eq!(errno(fs.getattr(&c, f, None)), libc::EBADF);
    assert_eq!(
        errno(fs.release(&c, f, 0, h.unwrap(), false, false, None)),
        libc::EBADF
    );
    assert!(
        fs.getattr(&c, ROOT, None).is_ok(),
        "the root is imported again"
    );
    assert!(fs.lookup(&c, ROOT, &cs("f")).is_ok());
}

#[test]
fn init_negotiates_virtiofsd_flags_and_opens_skip_flush() {
    let dir = TempDir::new().unwrap();
    let s = share(dir.as_path(), false, 100);
    let (fs, c) = (s.fs(), ctx());
    // The server enables the intersection with what the client offers.
    let want = fs.init(FsOptions::all()).unwrap();
    assert!(want.contains(super::confined::INIT_WANTED | FsOptions::DO_READDIRPLUS));
    assert!(!want.contains(FsOptions::WRITEBACK_CACHE | FsOptions::PERFILE_DAX));

    let noflush = 1 << 5;
    let (e, h, opts, _) = fs.create(&c, ROOT, &cs("f"), create_in(0o644)).unwrap();
    assert_ne!(opts.bits() & noflush, 0, "CREATE answers FOPEN_NOFLUSH");
    fs.release(&c, e.inode, 0, h.unwrap(), false, false, None)
        .unwrap();
    let (h, opts, _) = fs.open(&c, e.inode, libc::O_RDONLY as u32, 0).unwrap();
    assert_ne!(opts.bits() & noflush, 0, "OPEN answers FOPEN_NOFLUSH");
    fs.release(&c, e.inode, 0, h.unwrap(), false, false, None)
        .unwrap();
    assert_eq!(
        fs.budget().used(),
        1,
        "the node only, both handles released"
    );
}

/// Whether a lookup found a node (a negative entry, node id 0, is a miss).
fn found(r: std::io::Result<fuse_backend_rs::api::filesystem::Entry>) -> bool {
    matches!(r, Ok(e) if e.inode != 0)
}

/// F1: one share's root lies two levels below another, writable share's root (`app` and
/// `app/web/data`). Through the outer share the guest renames `web` away and puts a symlink to
/// a host directory in its place, then makes the inner share's server import its root again:
/// by INIT (a remount), by DESTROY (an unmount) and by what a device reset calls (`destroy`).
/// At df579e2 each import re-opened `.../app/web/data` by path, following the new symlink, so
/// the inner share then served, and wrote into, `host/data`. Now it keeps the directory it
/// opened before the guest ran (which the rename moved to `app/web.old/data`).
#[test]
fn nested_share_keeps_its_root_when_a_parent_becomes_a_symlink() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.as_path();
    fs::create_dir_all(t.join("app/web/data")).unwrap();
    fs::write(t.join("app/web/data/inside"), b"the inner share").unwrap();
    fs::create_dir_all(t.join("host/data")).unwrap();
    fs::write(t.join("host/data/secret"), b"a host file").unwrap();
    let outer = share(&t.join("app"), false, 1000);
    let inner = share(&t.join("app/web/data"), false, 1000);
    let c = ctx();

    let o = outer.fs();
    o.rename(&c, ROOT, &cs("web"), ROOT, &cs("web.old"), 0)
        .unwrap();
    let target = cs(t.join("host").to_str().unwrap());
    o.symlink(&c, &target, ROOT, &cs("web")).unwrap();
    assert!(
        t.join("app/web/data/secret").exists(),
        "the swap is in place"
    );

    let i: &ConfinedFs = inner.fs();
    let reimports: [(&str, &dyn Fn()); 3] = [
        ("init", &|| {
            i.init(FsOptions::empty()).unwrap();
        }),
        ("destroy", &|| i.destroy()),
        ("destroy+init", &|| {
            i.destroy();
            i.init(FsOptions::empty()).unwrap();
        }),
    ];
    for (how, reimport) in reimports {
        reimport();
        assert!(
            !found(i.lookup(&c, ROOT, &cs("secret"))),
            "{how}: sees the host dir"
        );
        assert!(
            found(i.lookup(&c, ROOT, &cs("inside"))),
            "{how}: lost its own root"
        );
        let name = format!("planted-{how}");
        let (e, h, _, _) = i.create(&c, ROOT, &cs(&name), create_in(0o644)).unwrap();
        i.release(&c, e.inode, 0, h.unwrap(), false, false, None)
            .unwrap();
        assert!(
            !t.join("host/data").join(&name).exists(),
            "{how}: wrote to the host dir"
        );
        assert!(t.join("app/web.old/data").join(&name).exists(), "{how}");
    }
}

/// The check behind the F1 fix fails closed: a passthrough whose root is not the share's root
/// (by device and inode) serves nothing, neither after INIT nor after DESTROY.
#[test]
fn a_root_that_is_not_the_share_root_is_never_served() {
    use fuse_backend_rs::passthrough::{Config, PassthroughFs};
    prepare_server_thread().unwrap();
    let tmp = TempDir::new().unwrap();
    let t = tmp.as_path();
    fs::create_dir_all(t.join("share")).unwrap();
    fs::create_dir_all(t.join("other")).unwrap();
    fs::write(t.join("other/secret"), b"x").unwrap();
    let cfg = Config {
        root_dir: t.join("other").to_str().unwrap().to_string(),
        do_import: true,
        ..Config::default()
    };
    let root = super::ShareRoot::open(&t.join("share")).unwrap();
    let fs = ConfinedFs::<()>::new(
        PassthroughFs::new(cfg).unwrap(),
        root,
        false,
        FdBudget::new(100),
    );
    let c = ctx();
    assert_eq!(errno(fs.init(FsOptions::empty())), libc::EIO);
    assert_eq!(errno(fs.lookup(&c, ROOT, &cs("secret"))), libc::EIO);
    assert_eq!(errno(fs.getattr(&c, ROOT, None)), libc::EIO);
    assert_eq!(errno(fs.opendir(&c, ROOT, 0)), libc::EIO);
    fs.destroy();
    assert_eq!(errno(fs.lookup(&c, ROOT, &cs("secret"))), libc::EIO);
    assert_eq!(errno(fs.statfs(&c, ROOT)), libc::EIO);
}

/// F5: all the shares of one VMM draw from one pool, so a guest cannot multiply its descriptor
/// bound by the number of shares; a share at the pod bound answers ENFILE and recovers when
/// another share's nodes are forgotten.
#[test]
fn shares_of_one_vmm_share_one_descriptor_pool() {
    prepare_server_thread().unwrap();
    let tmp = TempDir::new().unwrap();
    let t = tmp.as_path();
    for d in ["a", "b"] {
        fs::create_dir_all(t.join(d)).unwrap();
        for n in 0..4 {
            fs::write(t.join(d).join(format!("f{n}")), b"").unwrap();
        }
    }
    let pool = super::FdPool::new(5);
    let make = |d: &str| {
        let spec = ShareSpec {
            tag: d.into(),
            host_dir: t.join(d),
            read_only: false,
            cache: CacheMode::Never,
        };
        let s: ShareServer =
            ShareServer::new(spec.open().unwrap(), FdBudget::pooled(4, pool.clone())).unwrap();
        s.fs().init(FsOptions::empty()).unwrap();
        s
    };
    let (a, b, c) = (make("a"), make("b"), ctx());
    let a_nodes: Vec<u64> = (0..4)
        .map(|n| {
            a.fs()
                .lookup(&c, ROOT, &cs(&format!("f{n}")))
                .unwrap()
                .inode
        })
        .collect();
    assert_eq!(
        errno(a.fs().open(&c, a_nodes[0], 0, 0)),
        libc::ENFILE,
        "share cap"
    );
    assert!(b.fs().lookup(&c, ROOT, &cs("f0")).is_ok());
    assert_eq!(
        errno(b.fs().lookup(&c, ROOT, &cs("f1"))),
        libc::ENFILE,
        "pod cap"
    );
    assert_eq!(errno(b.fs().opendir(&c, ROOT, 0)), libc::ENFILE, "pod cap");
    a.fs().forget(&c, a_nodes[3], 1);
    assert!(
        b.fs().lookup(&c, ROOT, &cs("f1")).is_ok(),
        "room given back"
    );
    assert_eq!(pool.used(), 5);
    a.fs().destroy();
    assert_eq!(
        pool.used(),
        2,
        "DESTROY returns the share's descriptors to the pool"
    );
}
