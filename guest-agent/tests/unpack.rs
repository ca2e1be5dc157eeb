//! Image unpack on real directories: multi-layer images built here (gzip,
//! zstd, plain tar) with whiteouts, opaque directories, links, modes,
//! ownership, mtimes and xattrs; hostile archives; digest, size and
//! decompression-bomb refusals. Root is needed for ownership and tmpfs.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use husk_agent::unpack::{unpack, UnpackError};
use husk_proto::{LayerSpec, SpecialFiles, UnpackSpec};
use sha2::{Digest, Sha256};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Builds one layer's tar stream.
struct Layer(tar::Builder<Vec<u8>>);

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes `name` raw into the header (no validation: hostile names too).
fn raw_name(h: &mut tar::Header, name: &str) {
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
}

fn raw_link(h: &mut tar::Header, link: &str) {
    let old = h.as_old_mut();
    old.linkname = [0; 100];
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
}

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }
    fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        raw_name(&mut h, name);
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }
    fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.file_owned(name, mode, data, 0, 0)
    }
    fn file_owned(mut self, name: &str, mode: u32, data: &[u8], uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        raw_name(&mut h, name);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = header(kind, 0o777, 0);
        raw_name(&mut h, name);
        raw_link(&mut h, target);
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, name, target)
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, name, target)
    }
    fn special(mut self, kind: tar::EntryType, name: &str) -> Self {
        let mut h = header(kind, 0o644, 0);
        raw_name(&mut h, name);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }
    fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        self.0.append_pax_extensions([(key, value)]).unwrap();
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A blob directory and a rootfs under one scratch directory.
struct Image {
    dir: PathBuf,
    layers: Vec<LayerSpec>,
}

impl Image {
    fn new(name: &str) -> Image {
        let dir = common::scratch(name);
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        Image {
            dir,
            layers: Vec::new(),
        }
    }

    fn add_blob(&mut self, blob: &[u8], media_type: &str) -> &mut LayerSpec {
        let hex: String = Sha256::digest(blob)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        fs::write(self.dir.join("blobs/sha256").join(&hex), blob).unwrap();
        self.layers.push(LayerSpec {
            digest: format!("sha256:{hex}"),
            media_type: media_type.into(),
            size: blob.len() as u64,
            unpacked_size: None,
        });
        self.layers.last_mut().unwrap()
    }

    fn add(&mut self, tar: Vec<u8>, media_type: &str) -> &mut LayerSpec {
        let blob = match media_type {
            GZIP => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tar).unwrap();
                e.finish().unwrap()
            }
            ZSTD => zstd::encode_all(&tar[..], 3).unwrap(),
            _ => tar,
        };
        self.add_blob(&blob, media_type)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn spec(&self) -> UnpackSpec {
        UnpackSpec {
            blob_dir: self.dir.join("blobs").display().to_string(),
            layers: self.layers.clone(),
            rootfs: self.rootfs().display().to_string(),
            ..Default::default()
        }
    }

    fn unpack(&self) -> Result<husk_proto::UnpackReport, UnpackError> {
        unpack(&self.spec())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn multi_layer_image_with_whiteouts_links_and_metadata() {
    need_root!();
    let mut img = Image::new("layers");
    let l1 = Layer::new()
        .dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .symlink("lib", "/usr/lib")
        .file_owned("usr/lib/libc.so", 0o755, b"elf", 1000, 1001)
        .hardlink("usr/lib/libc-link.so", "usr/lib/libc.so")
        .dir("etc/", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/gone", 0o644, b"deleted by layer 2")
        .dir("var/", 0o755)
        .dir("var/opq/", 0o750)
        .file("var/opq/old1", 0o644, b"old")
        .dir("var/opq/old-dir/", 0o755)
        .file("var/opq/old-dir/deep", 0o644, b"old")
        .xattr("SCHILY.xattr.user.husk", b"tagged")
        .file("etc/tagged", 0o600, b"x")
        .special(tar::EntryType::Fifo, "run-fifo")
        .symlink("etc/link-to-dir", "/var")
        .finish();
    img.add(l1, GZIP);
    let l2 = Layer::new()
        .file("etc/.wh.gone", 0o644, b"")
        .file("var/opq/.wh..wh..opq", 0o644, b"")
        .file("var/opq/new", 0o644, b"new")
        // Through the absolute symlink `lib -> /usr/lib`: lands in usr/lib.
        .file("lib/added.so", 0o644, b"via symlink")
        .finish();
    img.add(l2, ZSTD);
    let l3 = Layer::new()
        // A symlink replaced by a directory, and a file by a directory.
        .dir("etc/link-to-dir/", 0o700)
        .file("etc/link-to-dir/inside", 0o644, b"in the new dir")
        .dir("etc/passwd/", 0o755)
        .finish();
    img.add(l3, TAR);

    let report = img.unpack().unwrap();
    assert_eq!(report.layers, 3);
    assert!(report.entries >= 20, "{report:?}");
    let r = img.rootfs();

    let meta = fs::metadata(r.join("usr/lib/libc.so")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(meta.mtime(), 1_600_000_000);
    assert_eq!(meta.nlink(), 2, "hard link shares the inode");
    assert_eq!(fs::read_link(r.join("lib")).unwrap(), Path::new("/usr/lib"));
    assert_eq!(
        fs::read(r.join("usr/lib/added.so")).unwrap(),
        b"via symlink"
    );
    assert!(!r.join("etc/gone").exists(), "whiteout applied");
    let mut opq: Vec<_> = fs::read_dir(r.join("var/opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    opq.sort();
    assert_eq!(opq, vec!["new"], "opaque dir keeps only the upper layer");
    assert_eq!(
        fs::metadata(r.join("var/opq"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    assert!(fs::symlink_metadata(r.join("etc/link-to-dir"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read(r.join("etc/link-to-dir/inside")).unwrap(),
        b"in the new dir"
    );
    assert!(fs::metadata(r.join("etc/passwd")).unwrap().is_dir());
    assert!(r.join("var").is_dir() && !r.join("var/inside").exists());
    let ft = fs::symlink_metadata(r.join("run-fifo"))
        .unwrap()
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft));
    assert_eq!(
        fs::metadata(r.join("usr")).unwrap().mtime(),
        1_600_000_000,
        "directory mtimes are set after their contents"
    );
    // xattrs where the file system allows (tmpfs/ext4 allow user.*).
    let x = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "user.husk"])
        .arg(r.join("etc/tagged"))
        .output();
    if let Ok(x) = x {
        if x.status.success() {
            assert_eq!(x.stdout, b"tagged");
        }
    }
}

/// Unpacks one hostile layer; returns the error and checks nothing was
/// written to `outside` and the rootfs was wiped.
fn refuse(name: &str, build: impl FnOnce(&Path) -> Layer) -> UnpackError {
    let mut img = Image::new(name);
    let outside = img.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "secret").unwrap();
    let layer = build(&outside).finish();
    img.add(layer, GZIP);
    let err = img.unpack().expect_err("hostile layer accepted");
    let mut names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["secret"],
        "{name}: something was written outside"
    );
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
    assert!(is_empty(&img.rootfs()), "{name}: rootfs not wiped");
    err
}

fn assert_hostile(e: &UnpackError) {
    assert!(matches!(e, UnpackError::Hostile { .. }), "{e}");
}

#[test]
fn hostile_archives_are_refused() {
    need_root!();
    assert_hostile(&refuse("dotdot", |_| {
        Layer::new().file("a/../../outside/x", 0o644, b"x")
    }));
    assert_hostile(&refuse("abs", |o| {
        Layer::new().file(&format!("{}/x", o.display()), 0o644, b"x")
    }));
    assert_hostile(&refuse("hardlink-dotdot", |_| {
        Layer::new().hardlink("x", "../outside/secret")
    }));
    assert_hostile(&refuse("hardlink-abs", |o| {
        Layer::new().hardlink("x", &format!("{}/secret", o.display()))
    }));
    assert_hostile(&refuse("device", |_| {
        Layer::new().special(tar::EntryType::Char, "dev/evil")
    }));
    assert_hostile(&refuse("setuid", |_| {
        Layer::new().file("bin/su", 0o4755, b"x")
    }));
    assert_hostile(&refuse("whiteout-dotdot", |_| {
        Layer::new().file("a/.wh...", 0o644, b"")
    }));
}

#[test]
fn symlink_escapes_stay_inside_the_root() {
    need_root!();
    // Symlinks pointing outside (absolute and relative) are kept as links
    // but resolved inside the root: writes through them land in the rootfs.
    let mut img = Image::new("symlinks");
    let outside = img.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "secret").unwrap();
    let o = outside.display().to_string();
    let rel = o.trim_start_matches('/');
    // The same directories inside the root, so the links resolve there.
    let mut layer = Layer::new();
    let mut acc = String::new();
    for c in rel.split('/') {
        acc.push_str(c);
        acc.push('/');
        layer = layer.dir(&acc, 0o755);
    }
    let layer = layer
        .symlink("abs", &o)
        .file("abs/pwned", 0o644, b"x")
        .symlink("rel", "../../../../../../../../..")
        .file(&format!("rel/{rel}/pwned2"), 0o644, b"y")
        .symlink("d", "/")
        .dir("d/", 0o755)
        .file("d/f", 0o644, b"in d")
        .finish();
    img.add(layer, GZIP);
    img.unpack().unwrap();
    let names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["secret"], "outside untouched");
    let inside = img.rootfs().join(rel);
    assert_eq!(fs::read(inside.join("pwned")).unwrap(), b"x");
    assert_eq!(fs::read(inside.join("pwned2")).unwrap(), b"y");
    assert!(fs::symlink_metadata(img.rootfs().join("d"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read(img.rootfs().join("d/f")).unwrap(), b"in d");

    // A hard link through a symlink resolves inside too: the outside file
    // it names does not exist there, so the layer is refused.
    assert_hostile(&refuse("hardlink-via-symlink", |o| {
        Layer::new()
            .symlink("abs", &o.display().to_string())
            .hardlink("stolen", "abs/secret")
    }));
    // A member under a dangling absolute symlink is refused, not created outside.
    assert_hostile(&refuse("dangling", |o| {
        Layer::new()
            .symlink("abs", &o.display().to_string())
            .file("abs/pwned", 0o644, b"x")
    }));
}

#[test]
fn strip_policy_drops_setuid_bits_and_devices() {
    need_root!();
    let mut img = Image::new("strip");
    let layer = Layer::new()
        .file("bin/su", 0o4755, b"x")
        .special(tar::EntryType::Block, "dev/sda")
        .finish();
    img.add(layer, GZIP);
    let mut spec = img.spec();
    spec.special_files = SpecialFiles::Strip;
    let report = unpack(&spec).unwrap();
    assert_eq!(report.stripped, 2);
    let mode = fs::metadata(img.rootfs().join("bin/su"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert!(!img.rootfs().join("dev/sda").exists());
}

#[test]
fn digest_and_size_mismatches_are_refused() {
    need_root!();
    let mut img = Image::new("digest");
    let layer = Layer::new().file("a", 0o644, b"hello").finish();
    img.add(layer.clone(), GZIP);
    // Same name, different content: the digest no longer matches.
    let hex = img.layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_owned();
    let path = img.dir.join("blobs/sha256").join(&hex);
    let mut blob = fs::read(&path).unwrap();
    let last = blob.len() - 10;
    blob[last] ^= 0xff;
    fs::write(&path, &blob).unwrap();
    // The decoder trips over the flipped byte first; the agent still
    // reports the root cause: the blob is not the one the manifest names.
    let err = img.unpack().unwrap_err();
    assert!(matches!(err, UnpackError::Digest { .. }), "{err}");
    assert!(is_empty(&img.rootfs()));

    // Trailing bytes after a valid gzip stream: inflates fine, digest differs.
    let mut img = Image::new("digest2");
    img.add(layer.clone(), GZIP);
    let hex = img.layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_owned();
    let path = img.dir.join("blobs/sha256").join(&hex);
    let mut blob = fs::read(&path).unwrap();
    blob.extend_from_slice(b"junk");
    fs::write(&path, &blob).unwrap();
    img.layers[0].size = blob.len() as u64;
    let err = img.unpack().unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Digest { .. } | UnpackError::Decompress { .. }
        ),
        "{err}"
    );

    // Declared size differs from the blob.
    let mut img = Image::new("size");
    img.add(layer, GZIP).size -= 1;
    let err = img.unpack().unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Size { .. } | UnpackError::Decompress { .. }
        ),
        "{err}"
    );
}

#[test]
fn decompression_bombs_are_refused() {
    need_root!();
    let mut img = Image::new("bomb");
    let zeros = vec![0u8; 8 << 20];
    let layer = Layer::new().file("zeros", 0o644, &zeros).finish();
    drop(zeros);
    img.add(layer, ZSTD).unpacked_size = Some(1 << 20);
    assert!(img.layers[0].size < 1 << 20, "the blob is small");
    let err = img.unpack().unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(is_empty(&img.rootfs()));
    // The whole-image limit applies too.
    img.layers[0].unpacked_size = None;
    let mut spec = img.spec();
    spec.max_unpacked_bytes = Some(2 << 20);
    let err = unpack(&spec).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
}

#[test]
fn corrupt_and_truncated_layers_fail_cleanly() {
    need_root!();
    let mut img = Image::new("corrupt");
    img.add_blob(b"this is not gzip at all", GZIP);
    let err = img.unpack().unwrap_err();
    assert!(matches!(err, UnpackError::Decompress { .. }), "{err}");

    let mut img = Image::new("truncated");
    let mut layer = Layer::new().file("big", 0o644, &[7u8; 5000]).finish();
    layer.truncate(1024 + 512);
    img.add(layer, TAR);
    let err = img.unpack().unwrap_err();
    assert!(matches!(err, UnpackError::Tar { .. }), "{err}");

    let mut img = Image::new("missing");
    img.add_blob(b"x", TAR);
    fs::remove_dir_all(img.dir.join("blobs/sha256")).unwrap();
    fs::create_dir_all(img.dir.join("blobs/sha256")).unwrap();
    let err = img.unpack().unwrap_err();
    assert!(matches!(err, UnpackError::Blob { .. }), "{err}");

    let mut spec = Image::new("badspec").spec();
    spec.layers.push(LayerSpec {
        digest: "md5:00".into(),
        media_type: GZIP.into(),
        size: 1,
        unpacked_size: None,
    });
    assert!(matches!(unpack(&spec).unwrap_err(), UnpackError::Spec(_)));
}

#[test]
fn tmpfs_limit_is_enforced() {
    need_root!();
    let mut img = Image::new("tmpfs");
    let layer = Layer::new()
        .file("big", 0o644, &vec![1u8; 3 << 20])
        .finish();
    img.add(layer, ZSTD);
    let mut spec = img.spec();
    spec.tmpfs_size = Some(1 << 20);
    let err = unpack(&spec).unwrap_err();
    assert!(matches!(err, UnpackError::Apply { .. }), "{err}");
    // The tmpfs was unmounted: the directory is the plain, empty one again.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&spec.rootfs), "tmpfs left mounted");
    spec.tmpfs_size = Some(8 << 20);
    unpack(&spec).unwrap();
    assert_eq!(
        fs::metadata(img.rootfs().join("big")).unwrap().len(),
        3 << 20
    );
    let c = std::ffi::CString::new(spec.rootfs.clone()).unwrap();
    // SAFETY: umount2 with a valid C string.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}
