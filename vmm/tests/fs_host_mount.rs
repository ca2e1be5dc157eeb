//! Conformance tests of the virtio-fs server mounted on the host through `/dev/fuse`: the same
//! `ShareServer` a guest talks to, driven by the host kernel's FUSE client with real system
//! calls. Needs root (mount(2)); without it every test prints why and returns.
//!
//! Escape tests must make sure the *server* is what is tested: on a host mount the host kernel
//! itself follows symlinks in the host namespace (as a guest kernel does in the guest's), so the
//! race test resolves with `openat2(RESOLVE_NO_SYMLINKS)`, and symlink tests use the calls that
//! act on the link itself (lchown, lsetxattr, utimensat(AT_SYMLINK_NOFOLLOW)).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use husk_vmm::fs::host_mount::HostMount;
use husk_vmm::fs::{share_budgets, CacheMode, ShareServer, ShareSpec};
use vmm_sys_util::tempdir::TempDir;

/// A mounted share. Field order is drop order: unmount before the directories go.
struct Share {
    mount: HostMount,
    _mnt: TempDir,
    backing: TempDir,
}

impl Share {
    fn mnt(&self) -> &Path {
        self.mount.mountpoint()
    }
    fn host(&self) -> &Path {
        self.backing.as_path()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn share(read_only: bool, setup: impl FnOnce(&Path)) -> Option<Share> {
    if !is_root() {
        eprintln!("skipping: host-mounted FUSE tests need root (mount(2) on /dev/fuse)");
        return None;
    }
    let backing = TempDir::new().unwrap();
    setup(backing.as_path());
    let mnt = TempDir::new().unwrap();
    let spec = ShareSpec {
        tag: "t".into(),
        host_dir: backing.as_path().to_path_buf(),
        read_only,
        cache: CacheMode::Auto,
    }
    .open()
    .unwrap();
    let server = ShareServer::<()>::new(spec, share_budgets(1).remove(0)).unwrap();
    let mount = HostMount::mount(server.server().clone(), mnt.as_path(), 2, false).unwrap();
    Some(Share {
        mount,
        _mnt: mnt,
        backing,
    })
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn last_errno(ret: i64) -> i32 {
    if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    } else {
        0
    }
}

fn setxattr(p: &Path, name: &str, value: &[u8], follow: bool) -> i32 {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let (v, len) = (value.as_ptr().cast(), value.len());
    let r = if follow {
        // SAFETY: both strings are NUL terminated and `v` is valid for `len` bytes.
        unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v, len, 0) }
    } else {
        // SAFETY: as above.
        unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v, len, 0) }
    };
    last_errno(r.into())
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 256];
    // SAFETY: strings are NUL terminated and `buf` is valid for its length.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

fn mknod(p: &Path, mode: u32, dev: u64) -> i32 {
    let c = cpath(p);
    // SAFETY: `c` is NUL terminated; return checked.
    last_errno(unsafe { libc::mknod(c.as_ptr(), mode, dev) }.into())
}

#[test]
fn basic_file_operations() {
    let Some(s) = share(false, |_| {}) else {
        return;
    };
    let (m, h) = (s.mnt(), s.host());

    fs::write(m.join("a"), b"hello world").unwrap();
    assert_eq!(
        fs::read(h.join("a")).unwrap(),
        b"hello world",
        "host sees the write"
    );
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "hello world");

    let f = OpenOptions::new().write(true).open(m.join("a")).unwrap();
    f.write_all_at(b"HELLO", 0).unwrap();
    f.set_len(8).unwrap();
    drop(f);
    assert_eq!(fs::read(m.join("a")).unwrap(), b"HELLO wo");
    OpenOptions::new()
        .append(true)
        .open(m.join("a"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    assert_eq!(fs::read(h.join("a")).unwrap(), b"HELLO wo!");

    // rename, including over an existing file
    fs::write(m.join("b"), b"old b").unwrap();
    fs::rename(m.join("a"), m.join("b")).unwrap();
    assert!(!m.join("a").exists());
    assert_eq!(fs::read(m.join("b")).unwrap(), b"HELLO wo!");
    fs::create_dir_all(m.join("d1/d2")).unwrap();
    fs::rename(m.join("b"), m.join("d1/d2/c")).unwrap();
    assert_eq!(fs::read(h.join("d1/d2/c")).unwrap(), b"HELLO wo!");

    // hard link and symlink
    fs::hard_link(m.join("d1/d2/c"), m.join("hl")).unwrap();
    assert_eq!(fs::metadata(m.join("hl")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(h.join("hl")).unwrap().ino(),
        fs::metadata(h.join("d1/d2/c")).unwrap().ino()
    );
    std::os::unix::fs::symlink("d1/d2/c", m.join("sl")).unwrap();
    assert_eq!(
        fs::read_link(m.join("sl")).unwrap(),
        PathBuf::from("d1/d2/c")
    );
    assert_eq!(fs::read(m.join("sl")).unwrap(), b"HELLO wo!");

    // unlink, rmdir
    fs::remove_file(m.join("hl")).unwrap();
    fs::remove_file(m.join("sl")).unwrap();
    fs::remove_dir_all(m.join("d1")).unwrap();
    assert_eq!(fs::read_dir(h).unwrap().count(), 0);
    assert_eq!(errno_of(fs::remove_dir(m.join("nope"))), libc::ENOENT);
}

#[test]
fn readdir_of_ten_thousand_entries() {
    let Some(s) = share(false, |h| {
        fs::create_dir(h.join("big")).unwrap();
        for i in 0..10_000 {
            File::create(h.join(format!("big/f{i:05}"))).unwrap();
        }
    }) else {
        return;
    };
    let mut names: Vec<String> = fs::read_dir(s.mnt().join("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10_000);
    assert_eq!(names[0], "f00000");
    assert_eq!(names[9_999], "f09999");
    names.dedup();
    assert_eq!(names.len(), 10_000, "no duplicates across readdir batches");
}

#[test]
fn chmod_chown_and_xattrs() {
    let Some(s) = share(false, |h| fs::write(h.join("f"), b"x").unwrap()) else {
        return;
    };
    let (m, h) = (s.mnt(), s.host());
    fs::set_permissions(m.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(h.join("f")).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(m.join("f"), Some(1234), Some(5678)).unwrap();
    let meta = fs::metadata(h.join("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));

    assert_eq!(setxattr(&m.join("f"), "user.husk", b"value", true), 0);
    assert_eq!(
        getxattr(&m.join("f"), "user.husk").as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        getxattr(&h.join("f"), "user.husk").as_deref(),
        Some(&b"value"[..])
    );
    let c = cpath(&m.join("f"));
    let mut list = vec![0u8; 256];
    // SAFETY: `c` is NUL terminated and `list` is valid for its length.
    let n = unsafe { libc::listxattr(c.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    assert!(n > 0);
    assert!(list[..n as usize]
        .split(|b| *b == 0)
        .any(|x| x == b"user.husk"));
    let name = CString::new("user.husk").unwrap();
    // SAFETY: both strings are NUL terminated.
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) }, 0);
    assert_eq!(getxattr(&h.join("f"), "user.husk"), None);
    // File capabilities could make a host binary privileged: refused (a well-formed
    // vfs_cap_data v2 granting CAP_SYS_ADMIN, so the kernel passes it on to the server).
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 21, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(
        setxattr(&m.join("f"), "security.capability", &cap, true),
        libc::EPERM
    );
    assert_eq!(setxattr(&m.join("f"), "trusted.x", b"1", true), libc::EPERM);
    assert_eq!(getxattr(&h.join("f"), "security.capability"), None);
}

#[test]
fn mmap_read() {
    let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let Some(s) = share(false, move |h| fs::write(h.join("m"), &data).unwrap()) else {
        return;
    };
    let f = File::open(s.mnt().join("m")).unwrap();
    let len = expected.len();
    use std::os::fd::AsRawFd;
    // SAFETY: maps `len` bytes of an open file read-only; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    // SAFETY: `p` maps `len` readable bytes until munmap below.
    let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec();
    // SAFETY: `p`/`len` are exactly what mmap returned.
    unsafe { libc::munmap(p, len) };
    assert_eq!(mapped, expected);
}

#[test]
fn sparse_file_beyond_4gib() {
    let Some(s) = share(false, |_| {}) else {
        return;
    };
    let off: u64 = 5 << 30;
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(s.mnt().join("sparse"))
        .unwrap();
    f.write_all_at(b"tail", off).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, off).unwrap();
    assert_eq!(&buf, b"tail");
    f.read_exact_at(&mut buf, 1 << 32).unwrap();
    assert_eq!(buf, [0; 4], "the hole reads as zeros");
    drop(f);
    let meta = fs::metadata(s.host().join("sparse")).unwrap();
    assert_eq!(meta.len(), off + 4);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "file stays sparse on the host"
    );
    assert_eq!(fs::metadata(s.mnt().join("sparse")).unwrap().len(), off + 4);
}

#[test]
fn concurrent_writers() {
    let Some(s) = share(false, |_| {}) else {
        return;
    };
    const CHUNK: usize = 256 * 1024;
    let shared = Arc::new(
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(s.mnt().join("shared"))
            .unwrap(),
    );
    let workers: Vec<_> = (0..4u8)
        .map(|t| {
            let (shared, own) = (shared.clone(), s.mnt().join(format!("own{t}")));
            std::thread::spawn(move || {
                let block = vec![b'a' + t; CHUNK];
                for i in 0..4 {
                    shared
                        .write_all_at(
                            &block[..CHUNK / 4],
                            (t as usize * CHUNK + i * CHUNK / 4) as u64,
                        )
                        .unwrap();
                }
                let mut f = File::create(own).unwrap();
                for _ in 0..4 {
                    f.write_all(&block).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    drop(shared);
    let all = fs::read(s.host().join("shared")).unwrap();
    assert_eq!(all.len(), 4 * CHUNK);
    for t in 0..4u8 {
        assert!(all[t as usize * CHUNK..(t as usize + 1) * CHUNK]
            .iter()
            .all(|b| *b == b'a' + t));
        let own = fs::read(s.host().join(format!("own{t}"))).unwrap();
        assert_eq!(own.len(), 4 * CHUNK);
        assert!(own.iter().all(|b| *b == b'a' + t));
    }
}

#[test]
fn read_only_share_refuses_writes_with_erofs() {
    let Some(s) = share(true, |h| {
        fs::write(h.join("f"), b"keep").unwrap();
        fs::create_dir(h.join("d")).unwrap();
    }) else {
        return;
    };
    let (m, h) = (s.mnt(), s.host());
    let rofs = libc::EROFS;
    assert_eq!(fs::read(m.join("f")).unwrap(), b"keep");
    assert_eq!(errno_of(File::create(m.join("new"))), rofs);
    assert_eq!(
        errno_of(OpenOptions::new().write(true).open(m.join("f"))),
        rofs
    );
    assert_eq!(
        errno_of(OpenOptions::new().append(true).open(m.join("f"))),
        rofs
    );
    assert_eq!(errno_of(fs::create_dir(m.join("nd"))), rofs);
    assert_eq!(errno_of(fs::remove_file(m.join("f"))), rofs);
    assert_eq!(errno_of(fs::remove_dir(m.join("d"))), rofs);
    assert_eq!(errno_of(fs::rename(m.join("f"), m.join("g"))), rofs);
    assert_eq!(errno_of(fs::hard_link(m.join("f"), m.join("g"))), rofs);
    assert_eq!(errno_of(std::os::unix::fs::symlink("f", m.join("g"))), rofs);
    assert_eq!(
        errno_of(fs::set_permissions(
            m.join("f"),
            fs::Permissions::from_mode(0o777)
        )),
        rofs
    );
    assert_eq!(
        errno_of(std::os::unix::fs::chown(m.join("f"), Some(1), None)),
        rofs
    );
    assert_eq!(mknod(&m.join("p"), libc::S_IFIFO | 0o644, 0), rofs);
    assert_eq!(setxattr(&m.join("f"), "user.x", b"1", true), rofs);
    let c = cpath(&m.join("f"));
    // SAFETY: `c` is NUL terminated.
    let r = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_eq!(last_errno(r.into()), rofs);
    // access(W_OK) is answered by the kernel itself under default_permissions; the
    // request-level tests check the server's EROFS for it.
    assert_eq!(fs::read(h.join("f")).unwrap(), b"keep");
    assert_eq!(fs::metadata(h.join("f")).unwrap().mode() & 0o777, 0o644);
    assert_eq!(fs::read_dir(h).unwrap().count(), 2);
}

#[test]
fn no_device_nodes_and_no_set_id_bits() {
    let Some(s) = share(false, |_| {}) else {
        return;
    };
    let (m, h) = (s.mnt(), s.host());
    assert_eq!(
        mknod(&m.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
        libc::EPERM
    );
    assert_eq!(
        mknod(&m.join("sda"), libc::S_IFBLK | 0o666, libc::makedev(8, 0)),
        libc::EPERM
    );
    assert_eq!(mknod(&m.join("fifo"), libc::S_IFIFO | 0o644, 0), 0);
    assert!(!h.join("null").exists() && !h.join("sda").exists());

    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o4755)
        .open(m.join("suid"))
        .unwrap();
    drop(f);
    assert_eq!(fs::metadata(h.join("suid")).unwrap().mode() & 0o7000, 0);
    for mode in [0o4755, 0o2755, 0o6777] {
        fs::set_permissions(m.join("suid"), fs::Permissions::from_mode(mode)).unwrap();
        let got = fs::metadata(h.join("suid")).unwrap().mode() & 0o7777;
        assert_eq!(got, mode & 0o777, "chmod {mode:o} gave {got:o}");
    }
    fs::DirBuilder::new()
        .mode(0o2775)
        .create(m.join("sgid"))
        .unwrap();
    assert_eq!(fs::metadata(h.join("sgid")).unwrap().mode() & 0o7000, 0);
}

#[test]
fn symlinks_and_hardlinks_do_not_reach_outside() {
    let outside = TempDir::new().unwrap();
    let secret = outside.as_path().join("secret");
    fs::write(&secret, b"secret").unwrap();
    let Some(s) = share(false, |_| {}) else {
        return;
    };
    let (m, h) = (s.mnt(), s.host());
    let before = fs::metadata(&secret).unwrap();

    // Absolute symlink created by the "guest": operations on the link act on the link.
    std::os::unix::fs::symlink(&secret, m.join("abs")).unwrap();
    assert_eq!(fs::read_link(h.join("abs")).unwrap(), secret);
    std::os::unix::fs::lchown(m.join("abs"), Some(4242), Some(4242)).unwrap();
    assert_ne!(setxattr(&m.join("abs"), "user.x", b"1", false), 0);
    let c = cpath(&m.join("abs"));
    let times = [libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    }; 2];
    // SAFETY: `c` is NUL terminated and `times` holds two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    let after = fs::metadata(&secret).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mtime()),
        (before.uid(), before.gid(), before.mtime())
    );
    assert_eq!(getxattr(&secret, "user.x"), None);
    assert_eq!(fs::symlink_metadata(h.join("abs")).unwrap().uid(), 4242);

    // A hard link to a file outside the share cannot be made through it.
    assert_eq!(errno_of(fs::hard_link(&secret, m.join("hl"))), libc::EXDEV);
    // File handles on the mount carry FUSE node ids, which only index the server's own table:
    // forged ones never open the outside file.
    assert_no_forged_handle_opens(m, &secret);
    assert_eq!(fs::read(&secret).unwrap(), b"secret");
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; 128],
}

fn assert_no_forged_handle_opens(m: &Path, secret: &Path) {
    use std::os::fd::{AsRawFd, FromRawFd};
    fs::write(m.join("probe"), b"probe").unwrap();
    let c = cpath(&m.join("probe"));
    let mut hdl = Handle {
        bytes: 128,
        kind: 0,
        data: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `c` is NUL terminated and `hdl` is a file_handle with 128 bytes of room.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            &mut hdl as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    if r != 0 {
        return; // no handles at all on this kernel: nothing to forge
    }
    let root = File::open(m).unwrap();
    let host_ino = fs::metadata(secret).unwrap().ino();
    let mut opened = 0;
    for id in [host_ino, 0, 2, 3, 7, 1 << 32, u64::MAX]
        .into_iter()
        .chain(10..40)
    {
        let mut forged = Handle {
            bytes: hdl.bytes,
            kind: hdl.kind,
            data: hdl.data,
        };
        forged.data[..4].copy_from_slice(&((id >> 32) as u32).to_ne_bytes());
        forged.data[4..8].copy_from_slice(&(id as u32).to_ne_bytes());
        // SAFETY: `forged` is a file_handle of `bytes` bytes; the fd is checked before use.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                root.as_raw_fd(),
                &forged as *const Handle,
                libc::O_RDONLY,
            )
        };
        if fd >= 0 {
            opened += 1;
            // SAFETY: `fd` was just returned by open_by_handle_at and is owned here.
            let mut f = unsafe { File::from_raw_fd(fd as i32) };
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            assert_ne!(buf, b"secret", "forged handle {id} opened the outside file");
        }
    }
    eprintln!("forged file handles: {opened} of 37 opened something inside the share");
}

#[test]
fn symlink_swap_race_through_the_mount() {
    let outside = TempDir::new().unwrap();
    let Some(s) = share(false, |h| fs::create_dir(h.join("d")).unwrap()) else {
        return;
    };
    let m = s.mnt().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (m, out, stop) = (m.clone(), outside.as_path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::rename(m.join("d"), m.join("real"));
                let _ = std::os::unix::fs::symlink(&out, m.join("d"));
                let _ = fs::remove_file(m.join("d"));
                let _ = fs::rename(m.join("real"), m.join("d"));
            }
        })
    };
    let root = File::open(&m).unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let (mut created, mut tries) = (0, 0);
    while Instant::now() < deadline {
        tries += 1;
        if openat2_create(&root, &format!("d/f{tries}")) {
            created += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let escaped: Vec<_> = fs::read_dir(outside.as_path()).unwrap().collect();
    assert!(escaped.is_empty(), "escaped: {escaped:?}");
    eprintln!("swap race: {tries} attempts, {created} files created inside the share");
    assert!(tries > 100);
}

/// openat2(O_CREAT, RESOLVE_NO_SYMLINKS): the host kernel never follows a symlink itself, so a
/// file can only land outside if the server followed one.
fn openat2_create(dir: &File, rel: &str) -> bool {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    let how = OpenHow {
        flags: (libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC) as u64,
        mode: 0o644,
        resolve: RESOLVE_NO_SYMLINKS,
    };
    let c = CString::new(rel).unwrap();
    // SAFETY: `c` is NUL terminated and `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by openat2 and is owned here.
        unsafe { libc::close(fd as i32) };
        true
    } else {
        false
    }
}

#[test]
fn share_root_is_the_mount_root() {
    // Listing the mount shows the share, not its host parent; `..` of the mount is the host's
    // business (the request-level tests check that the server refuses `..` lookups).
    let Some(s) = share(false, |h| fs::write(h.join("only"), b"").unwrap()) else {
        return;
    };
    let names: Vec<_> = fs::read_dir(s.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("only")]);
    let mut buf = String::new();
    File::open(s.mnt().join("only"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert!(buf.is_empty());
}
