//! Image unpack inside the guest: layers from the blob share into a rootfs.
//!
//! Pipeline: each layer has a producer thread that reads the blob, hashes
//! every byte (SHA-256) and counts it against the declared size, inflates it
//! (gzip through zlib-rs, or zstd) and hands the tar stream on in chunks
//! over a bounded channel. The applier consumes layers strictly in order;
//! up to [`LOOKAHEAD`] layers decompress concurrently, and the applier
//! overlaps with decompression. Memory stays bounded by the channels.
//!
//! A layer's digest is known only once its blob has been read to the end,
//! so a mismatch is reported after that layer has been applied: the unpack
//! then fails and the rootfs is wiped (its tmpfs unmounted, or its contents
//! removed), so nothing half-verified is ever used.

pub mod apply;
pub mod tar;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use husk_proto::{LayerSpec, UnpackReport, UnpackSpec};
use sha2::{Digest, Sha256};

use crate::rooted::Root;
use apply::{Applier, ApplyError};
use tar::{TarError, TarReader};

/// Layers decompressing at once (the one being applied included).
pub const LOOKAHEAD: usize = 3;
/// Size of one chunk of tar stream between threads.
const CHUNK: usize = 256 << 10;
/// Chunks buffered per layer (CHUNK × this = look-ahead memory per layer).
const CHANNEL_CHUNKS: usize = 16;

/// An unpack that failed; the rootfs has been wiped.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("bad unpack request: {0}")]
    Spec(String),
    #[error("cannot read blob {digest}")]
    Blob {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is {actual} bytes, the manifest says {declared}")]
    Size {
        digest: String,
        declared: u64,
        actual: u64,
    },
    #[error("blob {digest} does not match its digest (its content hashes to sha256:{actual})")]
    Digest { digest: String, actual: String },
    #[error("cannot decompress layer {digest}")]
    Decompress {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} inflates past its limit of {limit} bytes")]
    TooLarge { digest: String, limit: u64 },
    #[error("layer {digest} is not a valid tar archive")]
    Tar {
        digest: String,
        #[source]
        source: TarError,
    },
    #[error("layer {digest} is hostile: member {path:?}: {reason}")]
    Hostile {
        digest: String,
        path: String,
        reason: &'static str,
    },
    #[error("cannot apply member {path:?} of layer {digest}")]
    Apply {
        digest: String,
        path: String,
        #[source]
        source: ApplyError,
    },
    #[error("cannot prepare the rootfs {path}")]
    Rootfs {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the rootfs {0} is not empty")]
    NotEmpty(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression(media_type: &str) -> Option<Compression> {
    let base = media_type
        .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
        .or_else(|| media_type.strip_prefix("application/vnd.oci.image.layer.v1."));
    match base {
        Some("tar") => Some(Compression::None),
        Some("tar+gzip") => Some(Compression::Gzip),
        Some("tar+zstd") => Some(Compression::Zstd),
        _ => match media_type {
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            _ => None,
        },
    }
}

/// `sha256:<64 lowercase hex>` → the hex part.
fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a blob, hashing and counting every byte, refusing past `declared`.
struct HashingReader {
    file: File,
    hasher: Sha256,
    count: u64,
    declared: u64,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read one byte past the declared size at most, to detect a longer blob.
        let room = (self.declared + 1).saturating_sub(self.count);
        let want = buf.len().min(room.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Err(io::Error::other("blob is longer than declared"));
        }
        let n = self.file.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.declared {
            return Err(io::Error::other("blob is longer than declared"));
        }
        Ok(n)
    }
}

enum Chunk {
    Data(Vec<u8>),
    /// The producer finished: the layer's verdict and its unpacked size.
    End(Result<u64, UnpackError>),
}

/// Produces one layer's tar stream into `tx` (see the module doc).
fn produce(
    layer: LayerSpec,
    blob: PathBuf,
    limit: Option<u64>,
    tx: SyncSender<Chunk>,
    recycled: Receiver<Vec<u8>>,
) {
    let result = produce_inner(&layer, &blob, limit, &tx, &recycled);
    let _ = tx.send(Chunk::End(result));
}

fn produce_inner(
    layer: &LayerSpec,
    blob: &Path,
    limit: Option<u64>,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) -> Result<u64, UnpackError> {
    let digest = layer.digest.clone();
    let blob_err = |source| UnpackError::Blob {
        digest: digest.clone(),
        source,
    };
    let file = File::open(blob).map_err(blob_err)?;
    let mut hashed = HashingReader {
        file,
        hasher: Sha256::new(),
        count: 0,
        declared: layer.size,
    };
    let kind = compression(&layer.media_type).unwrap_or(Compression::None);
    let mut produced: u64 = 0;
    let streamed: Result<(), UnpackError> = 'stream: {
        let mut decoder: Box<dyn Read + '_> = match kind {
            Compression::None => Box::new(&mut hashed),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(CHUNK, &mut hashed),
            )),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                    CHUNK,
                    &mut hashed,
                ))
                .map_err(|source| UnpackError::Decompress {
                    digest: digest.clone(),
                    source,
                })?,
            ),
        };
        loop {
            // Chunks come back from the applier once consumed: no
            // allocation or zeroing per chunk in the steady state.
            let mut buf = recycled.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            while filled < CHUNK {
                match decoder.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        break 'stream Err(UnpackError::Decompress {
                            digest: digest.clone(),
                            source,
                        })
                    }
                }
            }
            if filled == 0 {
                break 'stream Ok(());
            }
            produced += filled as u64;
            if let Some(limit) = limit.filter(|&l| produced > l) {
                break 'stream Err(UnpackError::TooLarge {
                    digest: digest.clone(),
                    limit,
                });
            }
            buf.truncate(filled);
            if tx.send(Chunk::Data(buf)).is_err() {
                return Ok(produced); // the applier gave up; its error wins
            }
        }
    };
    if let Err(e) = streamed {
        // A blob that fails to decompress may simply be corrupt: if the
        // rest of it does not hash to its digest, that is the error to
        // report (the content is not what the manifest names), not the
        // decoder's complaint about it.
        if matches!(e, UnpackError::Decompress { .. })
            && io::copy(&mut hashed, &mut io::sink()).is_ok()
        {
            let actual = hex(&hashed.hasher.clone().finalize());
            if Some(actual.as_str()) != digest_hex(&digest) {
                return Err(UnpackError::Digest { digest, actual });
            }
        }
        return Err(e);
    }
    // Hash whatever follows the compressed stream too: the digest covers the blob.
    io::copy(&mut hashed, &mut io::sink()).map_err(|source| UnpackError::Decompress {
        digest: digest.clone(),
        source,
    })?;
    if hashed.count != layer.size {
        return Err(UnpackError::Size {
            digest,
            declared: layer.size,
            actual: hashed.count,
        });
    }
    let actual = hex(&hashed.hasher.finalize());
    if Some(actual.as_str()) != digest_hex(&digest) {
        return Err(UnpackError::Digest { digest, actual });
    }
    Ok(produced)
}

/// The consumer end of a layer's channel, as a `Read` of its tar stream.
struct ChannelReader {
    rx: Receiver<Chunk>,
    /// Consumed chunks go back to the producer for reuse.
    recycle: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    end: Option<Result<u64, UnpackError>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.end.is_some() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(v)) => {
                    let used = std::mem::replace(&mut self.cur, v);
                    let _ = self.recycle.send(used);
                    self.pos = 0;
                }
                Ok(Chunk::End(r)) => self.end = Some(r),
                Err(_) => return Err(io::Error::other("layer producer vanished")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChannelReader {
    /// Reads to the end of the stream and returns the producer's verdict.
    fn verdict(&mut self) -> Result<u64, UnpackError> {
        let mut sink = [0u8; 8192];
        loop {
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(UnpackError::Decompress {
                        digest: String::new(),
                        source: e,
                    })
                }
            }
        }
        self.end.take().unwrap_or(Ok(0))
    }
}

fn validate(spec: &UnpackSpec) -> Result<(), UnpackError> {
    let bad = |m: String| Err(UnpackError::Spec(m));
    if !spec.rootfs.starts_with('/') || !spec.blob_dir.starts_with('/') {
        return bad("rootfs and blob_dir must be absolute paths".into());
    }
    for l in &spec.layers {
        if digest_hex(&l.digest).is_none() {
            return bad(format!(
                "digest {:?} is not sha256:<64 hex digits>",
                l.digest
            ));
        }
        if compression(&l.media_type).is_none() {
            return bad(format!("unsupported layer media type {:?}", l.media_type));
        }
    }
    Ok(())
}

/// The source name of the tmpfs an unpack mounts at its rootfs: how
/// [`release_rootfs`] recognises a mount the agent made (and never
/// unmounts anything else, such as a share holding a prepared rootfs).
pub const ROOTFS_TMPFS: &str = "husk-rootfs";

/// Unescapes a /proc/self/mountinfo path (`\040` for a space, etc.).
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `mountinfo` shows an unpack tmpfs mounted at `path`.
fn has_rootfs_tmpfs(mountinfo: &str, path: &Path) -> bool {
    mountinfo.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (Some(head), Some(tail)) = (halves.next(), halves.next()) else {
            return false;
        };
        let point = head.split(' ').nth(4).map(unescape_mountinfo);
        let mut tail = tail.split(' ');
        point.as_deref() == Some(&*path.to_string_lossy())
            && tail.next() == Some("tmpfs")
            && tail.next() == Some(ROOTFS_TMPFS)
    })
}

/// Unmounts the unpack tmpfs at `rootfs`, if one is mounted there, so its
/// pages return to the guest (once no mount namespace holds it any more).
/// Returns whether there was one. `rootfs` must be canonical.
pub fn release_rootfs(rootfs: &Path) -> io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    if !has_rootfs_tmpfs(&info, rootfs) {
        return Ok(false);
    }
    let c = crate::sys::cstr(rootfs)?;
    // SAFETY: umount2 with a valid C string and flags.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Mounts the size-limited tmpfs (if asked) and checks the rootfs is empty.
/// Returns whether a tmpfs was mounted.
fn prepare_rootfs(spec: &UnpackSpec) -> Result<bool, UnpackError> {
    let path = Path::new(&spec.rootfs);
    let err = |source| UnpackError::Rootfs {
        path: spec.rootfs.clone(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    if std::fs::read_dir(path).map_err(err)?.next().is_some() {
        return Err(UnpackError::NotEmpty(spec.rootfs.clone()));
    }
    if let Some(size) = spec.tmpfs_size {
        crate::sys::mount(
            ROOTFS_TMPFS,
            path,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&format!("size={size},mode=0755")),
        )
        .map_err(err)?;
        return Ok(true);
    }
    Ok(false)
}

fn wipe_rootfs(spec: &UnpackSpec, mounted: bool) {
    let path = Path::new(&spec.rootfs);
    if mounted {
        if let Ok(c) = crate::sys::cstr(path) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

/// Unpacks `spec.layers` in order into `spec.rootfs`.
pub fn unpack(spec: &UnpackSpec) -> Result<UnpackReport, UnpackError> {
    validate(spec)?;
    let mounted = prepare_rootfs(spec)?;
    let result = unpack_layers(spec);
    if result.is_err() {
        wipe_rootfs(spec, mounted);
    }
    result
}

fn unpack_layers(spec: &UnpackSpec) -> Result<UnpackReport, UnpackError> {
    let root = Root::open(Path::new(&spec.rootfs)).map_err(|source| UnpackError::Rootfs {
        path: spec.rootfs.clone(),
        source,
    })?;
    let mut applier = Applier::new(root, spec.special_files);
    let mut report = UnpackReport::default();
    type Started = Option<(Receiver<Chunk>, Sender<Vec<u8>>)>;
    let mut started: Vec<Started> = Vec::new();
    let start = |i: usize, started: &mut Vec<Started>| {
        let layer = spec.layers[i].clone();
        let hex = digest_hex(&layer.digest).unwrap_or_default();
        let blob = Path::new(&spec.blob_dir).join("sha256").join(hex);
        let limit = match (layer.unpacked_size, spec.max_unpacked_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
        let (recycle, recycled) = channel();
        let spawned = std::thread::Builder::new()
            .name(format!("layer-{i}"))
            .spawn(move || produce(layer, blob, limit, tx, recycled));
        started.push(spawned.ok().map(|_| (rx, recycle)));
    };
    for i in 0..spec.layers.len() {
        while started.len() < spec.layers.len() && started.len() < i + LOOKAHEAD {
            start(started.len(), &mut started);
        }
        let digest = spec.layers[i].digest.clone();
        let (rx, recycle) = started[i].take().ok_or_else(|| UnpackError::Decompress {
            digest: digest.clone(),
            source: io::Error::other("cannot start a decompression thread"),
        })?;
        let mut reader = ChannelReader {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
            end: None,
        };
        applier.begin_layer();
        let applied = apply_layer(&mut applier, &mut reader, &digest);
        let unpacked = match applied {
            Ok(()) => reader.verdict().map_err(|e| fill_digest(e, &digest))?,
            // A stream cut short by the producer (bad digest, corrupt
            // compression, too large) shows up here as a tar or read error:
            // the producer's verdict is then the real cause. (A refused
            // member needs no verdict: the layer is hostile either way.)
            Err(e @ UnpackError::Hostile { .. }) => return Err(e),
            Err(e) => match reader.verdict() {
                Err(v) => return Err(fill_digest(v, &digest)),
                Ok(_) => return Err(e),
            },
        };
        applier.end_layer().map_err(|source| UnpackError::Apply {
            digest: digest.clone(),
            path: String::new(),
            source,
        })?;
        report.layers += 1;
        report.compressed_bytes += spec.layers[i].size;
        report.unpacked_bytes += unpacked;
        if let Some(max) = spec
            .max_unpacked_bytes
            .filter(|&m| report.unpacked_bytes > m)
        {
            return Err(UnpackError::TooLarge { digest, limit: max });
        }
    }
    report.entries = applier.stats.entries;
    report.stripped = applier.stats.stripped;
    Ok(report)
}

fn fill_digest(e: UnpackError, digest: &str) -> UnpackError {
    match e {
        UnpackError::Decompress { digest: d, source } if d.is_empty() => UnpackError::Decompress {
            digest: digest.to_owned(),
            source,
        },
        other => other,
    }
}

fn apply_layer(
    applier: &mut Applier,
    reader: &mut ChannelReader,
    digest: &str,
) -> Result<(), UnpackError> {
    let mut tar = TarReader::new(reader);
    let tar_err = |source| UnpackError::Tar {
        digest: digest.to_owned(),
        source,
    };
    while let Some(header) = tar.next_header().map_err(tar_err)? {
        let mut body = tar.body();
        if let Err(e) = applier.apply(&header, &mut body) {
            let path = String::from_utf8_lossy(&header.path).into_owned();
            return Err(match e {
                ApplyError::Read(source) => UnpackError::Tar {
                    digest: digest.to_owned(),
                    source: if source.kind() == io::ErrorKind::UnexpectedEof {
                        TarError::Truncated
                    } else {
                        TarError::Io(source)
                    },
                },
                ApplyError::Hostile { reason } => UnpackError::Hostile {
                    digest: digest.to_owned(),
                    path,
                    reason,
                },
                source => UnpackError::Apply {
                    digest: digest.to_owned(),
                    path,
                    source,
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rootfs_tmpfs_in_mountinfo() {
        let info = "22 1 0:20 / /run rw - tmpfs tmpfs rw\n\
                    40 22 0:40 / /run/c\\0401 rw,nosuid - tmpfs husk-rootfs rw,size=1k\n\
                    41 22 0:41 / /run/share rw - virtiofs img rw\n";
        assert!(has_rootfs_tmpfs(info, Path::new("/run/c 1")));
        assert!(!has_rootfs_tmpfs(info, Path::new("/run/c")));
        assert!(!has_rootfs_tmpfs(info, Path::new("/run/share")));
        assert!(!has_rootfs_tmpfs(info, Path::new("/run")));
        assert!(!has_rootfs_tmpfs("garbage\n - \n", Path::new("/")));
    }

    #[test]
    fn media_types_and_digests() {
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+bzip2"),
            None
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(digest_hex(&d).is_some());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(digest_hex("sha512:00").is_none());
        assert!(digest_hex(&format!("sha256:{}/..", "a".repeat(61))).is_none());
    }
}
