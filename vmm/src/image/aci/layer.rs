//! One pass over an ACI: its `manifest` is kept (bounded), its `rootfs/`
//! is re-emitted as an uncompressed tar layer with `rootfs/` taken off every
//! path, and anything else refuses the whole image.
//!
//! The archive is read as a stream (gzip, bzip2 and xz by their magic
//! numbers, through flate2, bzip2 and liblzma, the xz decoder's memory
//! capped at [`MAX_XZ_MEMORY`]) with the tar crate in raw
//! mode: GNU long names and pax headers are read here, each bounded
//! ([`MAX_EXTENSION`]), because the crate's own handling reads them whole
//! whatever their size. Entry data is copied through, never held. Nothing
//! is written to the host but the layer blob (in the store's tmp/, named
//! only once the whole archive passed); files are never created from it:
//! the layer is unpacked in the guest, like any other (which refuses
//! traversal and link escapes again).
//!
//! Refused: absolute paths and `..` components; entries other than
//! `manifest` and `rootfs[/…]`; a second `manifest`, or one that is not a
//! regular file or is larger than [`MAX_MANIFEST`]; hard links whose
//! target is not under `rootfs/`; symbolic links whose relative target
//! climbs above the rootfs (an absolute target is a path in the container,
//! as in any image); device nodes (a container's /dev is made by the
//! runtime, and a node in an image is a way to reach host devices); sparse
//! files and pax `size` records (files over 8 GiB). Dropped: pax records
//! other than path, linkpath, uid, gid (extended attributes among them).

use std::io::{self, Read, Write};

use tar::{EntryType, Header, PaxExtensions};

use super::manifest::MAX_MANIFEST;
use crate::image::blobs::BlobWriter;
use crate::image::ImageError;

/// The largest GNU long name or pax header read.
pub const MAX_EXTENSION: u64 = 64 << 10;
/// The most memory the xz decoder may take (`xz -9` needs 65 MiB; a
/// hostile header could ask for gigabytes).
pub const MAX_XZ_MEMORY: u64 = 128 << 20;

/// What one pass found.
pub struct Converted {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The layer, not yet stored.
    pub layer: BlobWriter,
    /// `sha256:` of the layer (uncompressed: it is also the diff id).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

fn bad(message: String) -> ImageError {
    ImageError::Malformed(format!("hostile or malformed ACI: {message}"))
}

/// The archive's bytes, decompressed by their magic number.
pub fn decompress<'a>(mut input: impl io::BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            // An xz header names the dictionary the decoder allocates: cap it.
            let stream = liblzma::stream::Stream::new_stream_decoder(
                MAX_XZ_MEMORY,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        _ => Box::new(input),
    })
}

/// Writes into the blob being made (which hashes and counts what it gets).
struct LayerSink {
    blob: BlobWriter,
    failed: Option<ImageError>,
}

impl Write for LayerSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.blob.write(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                self.failed = Some(e);
                Err(io::Error::other("cannot write the layer"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `path` (as bytes from the archive) as clean relative components; an
/// absolute path or a `..` is refused.
fn components(path: &[u8]) -> Result<Vec<String>, ImageError> {
    let text = std::str::from_utf8(path).map_err(|_| {
        bad(format!(
            "the path {:?} is not UTF-8",
            String::from_utf8_lossy(path)
        ))
    })?;
    if text.starts_with('/') {
        return Err(bad(format!("the absolute path {text:?}")));
    }
    let mut out = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad(format!("the path {text:?} climbs out with \"..\""))),
            c if c.contains('\0') => return Err(bad(format!("the path {text:?} holds a NUL"))),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Reads an extension entry's data, refusing more than [`MAX_EXTENSION`].
fn read_extension(entry: &mut impl Read, size: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    if size > MAX_EXTENSION {
        return Err(bad(format!(
            "a {what} of {size} bytes (the limit is {MAX_EXTENSION})"
        )));
    }
    let mut buf = Vec::new();
    entry
        .take(MAX_EXTENSION)
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("cannot read a {what}: {e}")))?;
    while buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(buf)
}

/// Extension records that apply to the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
}

impl Pending {
    fn pax(&mut self, data: &[u8]) -> Result<(), ImageError> {
        for ext in PaxExtensions::new(data) {
            let ext = ext.map_err(|e| bad(format!("a malformed pax record: {e}")))?;
            let number = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| bad("a malformed pax uid/gid".into()))
            };
            match ext.key_bytes() {
                b"path" => self.path = Some(ext.value_bytes().to_vec()),
                b"linkpath" => self.link = Some(ext.value_bytes().to_vec()),
                b"uid" => self.uid = Some(number()?),
                b"gid" => self.gid = Some(number()?),
                b"size" => {
                    return Err(bad(
                        "a pax size record (files over 8 GiB are not supported)".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Converts the (decompressed) ACI `input` into a layer written to `layer`.
pub fn convert(input: impl Read, layer: BlobWriter) -> Result<Converted, ImageError> {
    let sink = LayerSink {
        blob: layer,
        failed: None,
    };
    let mut out = tar::Builder::new(sink);
    let mut manifest = None;
    let mut pending = Pending::default();
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar: {e}")))?
        .raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable tar: {e}")))?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let size = entry.size();
        match kind {
            EntryType::GNULongName => {
                pending.path = Some(read_extension(&mut entry, size, "GNU long name")?);
                continue;
            }
            EntryType::GNULongLink => {
                pending.link = Some(read_extension(&mut entry, size, "GNU long link")?);
                continue;
            }
            EntryType::XHeader => {
                let data = read_extension(&mut entry, size, "pax header")?;
                pending.pax(&data)?;
                continue;
            }
            EntryType::XGlobalHeader => {
                read_extension(&mut entry, size, "pax global header")?;
                continue;
            }
            _ => {}
        }
        let ext = std::mem::take(&mut pending);
        let raw_path = ext.path.unwrap_or_else(|| entry.path_bytes().into_owned());
        let parts = components(&raw_path)?;
        let shown = parts.join("/");
        match parts.first().map(String::as_str) {
            Some("manifest") if parts.len() == 1 => {
                if manifest.is_some() {
                    return Err(bad("a second manifest".into()));
                }
                if !kind.is_file() {
                    return Err(bad("the manifest is not a regular file".into()));
                }
                if size > MAX_MANIFEST {
                    return Err(bad(format!(
                        "a manifest of {size} bytes (the limit is {MAX_MANIFEST})"
                    )));
                }
                let mut buf = Vec::new();
                (&mut entry)
                    .take(MAX_MANIFEST)
                    .read_to_end(&mut buf)
                    .map_err(|e| bad(format!("cannot read the manifest: {e}")))?;
                manifest = Some(buf);
                continue;
            }
            Some("rootfs") => {}
            _ => return Err(bad(format!("{shown:?} lies outside rootfs/"))),
        }
        let inner = parts[1..].join("/");
        if inner.is_empty() {
            if !kind.is_dir() {
                return Err(bad("rootfs is not a directory".into()));
            }
            continue;
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(header.mode().map_err(|e| bad(format!("{shown}: {e}")))?);
        // An empty owner field (the tar crate's own writer leaves it so)
        // reads as root, as GNU tar reads it.
        h.set_uid(ext.uid.unwrap_or_else(|| header.uid().unwrap_or(0)));
        h.set_gid(ext.gid.unwrap_or_else(|| header.gid().unwrap_or(0)));
        h.set_mtime(header.mtime().unwrap_or(0));
        let written = match kind {
            EntryType::Regular | EntryType::Continuous => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                out.append_data(&mut h, &inner, &mut entry)
            }
            EntryType::Directory | EntryType::Fifo => {
                h.set_size(0);
                out.append_data(&mut h, &inner, io::empty())
            }
            EntryType::Symlink | EntryType::Link => {
                let target = ext
                    .link
                    .or_else(|| entry.link_name_bytes().map(|t| t.into_owned()))
                    .ok_or_else(|| bad(format!("the link {shown:?} has no target")))?;
                let target = link_target(&parts, &target, kind == EntryType::Link)?;
                h.set_size(0);
                out.append_link(&mut h, &inner, &target)
            }
            EntryType::Char | EntryType::Block => {
                return Err(bad(format!("the device node {shown:?}")))
            }
            other => {
                return Err(bad(format!(
                    "{shown:?} is of an unsupported kind ({other:?})"
                )))
            }
        };
        if let Err(e) = written {
            return Err(match out.get_mut().failed.take() {
                Some(store_error) => store_error,
                None => bad(format!("{shown}: {e}")),
            });
        }
    }
    let manifest = manifest.ok_or_else(|| bad("it has no manifest".into()))?;
    let finish = out.into_inner();
    let sink = match finish {
        Ok(s) => s,
        Err(e) => return Err(bad(format!("cannot finish the layer: {e}"))),
    };
    Ok(Converted {
        manifest,
        digest: sink.blob.digest_so_far(),
        size: sink.blob.written(),
        layer: sink.blob,
    })
}

/// The target of the link at archive path `link` (components, starting
/// with `rootfs`) as the layer records it. A hard link names an archive
/// path, which must lie under `rootfs/`; a symbolic link's relative
/// target may not climb above the rootfs.
fn link_target(link: &[String], target: &[u8], hard: bool) -> Result<String, ImageError> {
    let text = String::from_utf8_lossy(target);
    let escape = || {
        bad(format!(
            "the link {:?} points out of rootfs/ ({text:?})",
            link.join("/")
        ))
    };
    if hard {
        let parts = components(target).map_err(|_| escape())?;
        if parts.len() < 2 || parts[0] != "rootfs" {
            return Err(escape());
        }
        return Ok(parts[1..].join("/"));
    }
    if text.is_empty() || text.contains('\0') {
        return Err(escape());
    }
    if text.starts_with('/') {
        return Ok(text.into_owned());
    }
    // Resolve lexically from the link's directory, inside rootfs.
    let mut depth = link.len().saturating_sub(2) as i64;
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(escape());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(text.into_owned())
}
