//! Content-addressed blobs: `blobs/sha256/<hex>`, written only through
//! [`BlobWriter`], which streams into `tmp/`, hashes while writing, refuses
//! more bytes than announced, fsyncs, and renames into place only when the
//! digest matches. A blob in `blobs/` is therefore always what its name says.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::digest;
use super::manifest::MAX_JSON;
use super::ImageError;

/// What [`super::Store::gc`] freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes they held.
    pub bytes: u64,
}

/// The blob directory of a store.
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
    ingest_lock: PathBuf,
}

pub use crate::private::FileLock;

/// Takes `flock(op)` on `path` (created if missing), waiting for it.
pub fn flock(path: &Path, op: libc::c_int) -> Result<FileLock, ImageError> {
    crate::private::lock_file(path, op).map_err(|source| ImageError::Io {
        what: format!("cannot lock {}", path.display()),
        source,
    })
}

impl Blobs {
    pub fn open(store_dir: &Path) -> Result<Blobs, ImageError> {
        let dir = store_dir.join("blobs/sha256");
        let tmp = store_dir.join("tmp");
        let blobs = store_dir.join("blobs");
        for d in [&blobs, &dir, &tmp] {
            crate::private::create_dir_all(d)
                .map_err(ImageError::io(format!("cannot create {}", d.display())))?;
        }
        Ok(Blobs {
            dir,
            tmp,
            ingest_lock: store_dir.join("ingest.lock"),
        })
    }

    /// Held while blobs are added or linked out: `gc` waits for it.
    pub fn lock_shared(&self) -> Result<FileLock, ImageError> {
        flock(&self.ingest_lock, libc::LOCK_SH)
    }

    /// Held by `gc`: no pull, import or link runs meanwhile.
    pub fn lock_exclusive(&self) -> Result<FileLock, ImageError> {
        flock(&self.ingest_lock, libc::LOCK_EX)
    }

    /// The directory of the blobs (`blobs/sha256`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of blobs being written (`tmp/`).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Path of the blob `digest` (which must be well formed).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join(digest::hex_of(digest)?))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Reads a manifest or config blob, refusing more than [`MAX_JSON`] bytes.
    pub fn read_json(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.path(digest)?;
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ImageError::Malformed(format!("blob {digest} is missing from the store"))
            } else {
                ImageError::io(format!("cannot read {}", path.display()))(e)
            }
        })?;
        let mut buf = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut buf)
            .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        if buf.len() as u64 > MAX_JSON {
            return Err(ImageError::Malformed(format!(
                "blob {digest} is larger than {MAX_JSON} bytes"
            )));
        }
        Ok(buf)
    }

    /// Starts writing the blob `digest`, of `size` bytes if known.
    pub fn writer(
        &self,
        what: &str,
        digest: &str,
        size: Option<u64>,
    ) -> Result<BlobWriter, ImageError> {
        digest::hex_of(digest)?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::private::FILE_MODE)
            .open(&path)
            .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp: path,
            dest: self.path(digest)?,
            dir: self.dir.clone(),
            hasher: Sha256::new(),
            written: 0,
            what: what.to_string(),
            digest: digest.to_string(),
            size,
        })
    }

    /// Starts writing a blob whose digest is not known beforehand (one made
    /// here, like a converted ACI layer): [`BlobWriter::commit_made`] names it
    /// by the digest of what was written.
    pub fn made_writer(&self, what: &str) -> Result<BlobWriter, ImageError> {
        let placeholder = format!("sha256:{}", "0".repeat(64));
        let mut w = self.writer(what, &placeholder, None)?;
        w.digest.clear();
        Ok(w)
    }

    /// Copies `src` in as blob `digest` (verified); skips it if present.
    pub fn put(
        &self,
        what: &str,
        src: &mut dyn Read,
        digest: &str,
        size: Option<u64>,
    ) -> Result<(), ImageError> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut w = self.writer(what, digest, size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io(format!("cannot read {what}"))(e)),
            };
            w.write(&buf[..n])?;
        }
        w.commit()
    }

    /// Stores `bytes` as blob `digest` (verified).
    pub fn put_bytes(&self, what: &str, bytes: &[u8], digest: &str) -> Result<(), ImageError> {
        digest::verify(what, bytes, digest)?;
        self.put(what, &mut &bytes[..], digest, Some(bytes.len() as u64))
    }

    /// Hard-links blob `digest` into `dir` (copying across file systems).
    pub fn link_into(&self, digest: &str, dir: &Path) -> Result<(), ImageError> {
        let src = self.path(digest)?;
        let dest = dir.join(digest::hex_of(digest)?);
        if dest.exists() {
            return Ok(());
        }
        match fs::hard_link(&src, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => fs::copy(&src, &dest)
                .map(drop)
                .map_err(ImageError::io(format!(
                    "cannot copy {} to {}",
                    src.display(),
                    dest.display()
                ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !src.exists() => Err(
                ImageError::Malformed(format!("layer {digest} is missing from the store")),
            ),
            Err(e) => Err(ImageError::io(format!(
                "cannot link {} to {}",
                src.display(),
                dest.display()
            ))(e)),
        }
    }

    /// Removes every blob not in `keep`, and every temp file (the caller
    /// holds the exclusive ingest lock, so none is in use).
    pub fn sweep(&self, keep: &HashSet<String>) -> Result<GcReport, ImageError> {
        let mut report = GcReport::default();
        let listing = fs::read_dir(&self.dir).map_err(ImageError::io(format!(
            "cannot list {}",
            self.dir.display()
        )))?;
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&format!("sha256:{name}")) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(entry.path()).is_ok() {
                report.blobs += 1;
                report.bytes += size;
            }
        }
        if let Ok(listing) = fs::read_dir(&self.tmp) {
            for entry in listing.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(report)
    }

    /// A scratch file in the store's tmp/ (same file system as the blobs),
    /// removed when the guard drops.
    pub fn scratch(&self, tag: &str) -> Result<(File, TempPath), ImageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}.{tag}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
        Ok((file, TempPath(path)))
    }
}

/// A path removed when dropped.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A blob being written; see the module doc. Dropping it without
/// [`BlobWriter::commit`] removes the temp file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    written: u64,
    what: String,
    digest: String,
    size: Option<u64>,
}

impl BlobWriter {
    /// Appends `data`; fails once more than the announced size arrived.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.written += data.len() as u64;
        if let Some(size) = self.size {
            if self.written > size {
                return Err(ImageError::Malformed(format!(
                    "{}: more than the announced {size} bytes",
                    self.what
                )));
            }
        }
        self.hasher.update(data);
        let file = self.file.as_mut().expect("open until commit");
        file.write_all(data).map_err(ImageError::io(format!(
            "cannot write {}",
            self.tmp.display()
        )))
    }

    /// The digest of what was written so far (`sha256:<hex>`).
    pub fn digest_so_far(&self) -> String {
        format!("sha256:{}", digest::hex(&self.hasher.clone().finalize()))
    }

    /// How many bytes were written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Stores a blob begun by [`Blobs::made_writer`] under the digest of
    /// its bytes; returns that digest and the size.
    pub fn commit_made(mut self) -> Result<(String, u64), ImageError> {
        let actual = self.digest_so_far();
        self.dest = self.dir.join(digest::hex_of(&actual)?);
        self.digest.clone_from(&actual);
        let size = self.written;
        self.commit()?;
        Ok((actual, size))
    }

    /// Verifies size and digest, fsyncs, and renames the blob into place.
    pub fn commit(mut self) -> Result<(), ImageError> {
        if let Some(size) = self.size {
            if self.written != size {
                return Err(ImageError::Malformed(format!(
                    "{}: {} bytes, {size} announced",
                    self.what, self.written
                )));
            }
        }
        let actual = format!("sha256:{}", digest::hex(&self.hasher.clone().finalize()));
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                what: self.what.clone(),
                expected: self.digest.clone(),
                actual,
            });
        }
        let file = self.file.take().expect("open until commit");
        let sync = |f: &File| {
            f.set_permissions(fs::Permissions::from_mode(0o444))?;
            f.sync_all()
        };
        sync(&file).map_err(ImageError::io(format!(
            "cannot sync {}",
            self.tmp.display()
        )))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(ImageError::io(format!(
            "cannot store {}",
            self.dest.display()
        )))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("husk-blobs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn tmp_files(dir: &Path) -> usize {
        fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[test]
    fn verified_blob_lands_read_only() {
        let d = scratch_dir("ok");
        let b = Blobs::open(&d).unwrap();
        let dg = digest::of(b"hello");
        b.put("layer", &mut &b"hello"[..], &dg, Some(5)).unwrap();
        let p = b.path(&dg).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert_eq!(tmp_files(&d), 0);
    }

    #[test]
    fn wrong_bytes_leave_nothing() {
        let d = scratch_dir("bad");
        let b = Blobs::open(&d).unwrap();
        let dg = digest::of(b"hello");
        let err = b
            .put("layer", &mut &b"hellp"[..], &dg, Some(5))
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        let err = b
            .put("layer", &mut &b"hello!"[..], &dg, Some(5))
            .unwrap_err();
        assert!(matches!(err, ImageError::Malformed(_)), "{err}");
        let err = b.put("layer", &mut &b"hell"[..], &dg, Some(5)).unwrap_err();
        assert!(matches!(err, ImageError::Malformed(_)), "{err}");
        assert!(!b.contains(&dg));
        assert_eq!(tmp_files(&d), 0);
    }

    #[test]
    fn sweep_keeps_referenced() {
        let d = scratch_dir("sweep");
        let b = Blobs::open(&d).unwrap();
        let keep = digest::of(b"keep");
        let drop_ = digest::of(b"drop");
        b.put_bytes("a", b"keep", &keep).unwrap();
        b.put_bytes("b", b"drop", &drop_).unwrap();
        let (_f, _t) = b.scratch("x").unwrap();
        let r = b.sweep(&HashSet::from([keep.clone()])).unwrap();
        assert_eq!(r, GcReport { blobs: 1, bytes: 4 });
        assert!(b.contains(&keep) && !b.contains(&drop_));
    }

    #[test]
    fn link_into_other_dir() {
        let d = scratch_dir("link");
        let b = Blobs::open(&d).unwrap();
        let dg = digest::of(b"layer");
        b.put_bytes("a", b"layer", &dg).unwrap();
        let dest = d.join("pod");
        fs::create_dir_all(&dest).unwrap();
        b.link_into(&dg, &dest).unwrap();
        b.link_into(&dg, &dest).unwrap();
        assert_eq!(
            fs::read(dest.join(digest::hex_of(&dg).unwrap())).unwrap(),
            b"layer"
        );
    }
}
