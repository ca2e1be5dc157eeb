//! `husk import`: `docker save` archives and OCI image layouts (a directory,
//! or a tar of one, optionally gzip-compressed) into the store.
//!
//! Every blob is verified against its digest while it is copied in: OCI
//! blobs against the descriptor that names them, a docker archive's config
//! against its file name and its (uncompressed) layers against the config's
//! `rootfs.diff_ids`; a docker archive's config and compressed layers must
//! be named by their digest (`<hex>.json`, `blobs/sha256/<hex>`), as every
//! `docker save` names them, since nothing else vouches for them. A tar is
//! never unpacked: one pass records where each member's bytes sit, then
//! each blob is read from there straight into the store.
//!
//! A directory is read as untrusted input too (security review F9): each
//! file is opened with `openat2` relative to the directory's descriptor,
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so
//! nothing outside it can be reached (no `..`, no symlink, not even one that
//! stays inside: OCI layouts have none, and a legacy `docker save` tree
//! that uses them can be imported as the tar it came as), and with
//! `O_NONBLOCK`, so a FIFO cannot block the import (which holds the ingest
//! lock, and so `gc`, while it runs); only regular files are read. The
//! path given to `husk import` is opened the same way, without the
//! confinement (it is the caller's own choice).
//!
//! Names: `--tag NAME` wins; else the archive's own — docker `RepoTags`, the
//! OCI annotation `io.containerd.image.name`, or `org.opencontainers.image.ref.name`
//! when that is a full reference (it has a `/`, `:` or `@`). A bare
//! `ref.name` (`latest`, `v1`, as skopeo and `docker save` write it) is only
//! a tag with no repository to go with it, so it names nothing: such an
//! image, like one with no name at all, is stored under its manifest digest
//! — unless the layout is a Docker 25+ `docker save` archive, whose
//! `manifest.json` then lends its `RepoTags`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use serde::Deserialize;

use super::blobs::TempPath;
use super::manifest::{self, ConfigFile, Descriptor, Document, Manifest, MAX_JSON};
use super::{digest, reference, Image, ImageError, Store};

/// Imports the image(s) in `path`, stored under `tag` if given (then
/// `path` must hold exactly one image). Returns them, in archive order.
pub fn import(store: &Store, path: &Path, tag: Option<&str>) -> Result<Vec<Image>, ImageError> {
    let tag = tag.map(reference::parse_name).transpose()?;
    let _ingest = store.blobs().lock_shared()?;
    let mut src = open_source(store, path)?;
    let found = if src.exists("oci-layout")? && src.exists("index.json")? {
        let mut found = import_oci(store, src.as_mut())?;
        if src.exists("manifest.json")? {
            name_from_repo_tags(store, src.as_mut(), &mut found)?;
        }
        found
    } else if src.exists("manifest.json")? {
        import_docker(store, src.as_mut())?
    } else {
        return Err(ImageError::Malformed(format!(
            "{}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json); an ACI must be named *.aci",
            path.display()
        )));
    };
    if found.is_empty() {
        return Err(ImageError::Malformed(format!(
            "{}: holds no image",
            path.display()
        )));
    }
    let mut pairs = Vec::new();
    if let Some(t) = tag {
        if found.len() != 1 {
            return Err(ImageError::Usage(format!(
                "{} holds {} images: --tag names only one",
                path.display(),
                found.len()
            )));
        }
        pairs.push((t.name, found[0].1.clone()));
    } else {
        for (names, d) in &found {
            if names.is_empty() {
                pairs.push((d.clone(), d.clone()));
            }
            pairs.extend(names.iter().map(|n| (n.clone(), d.clone())));
        }
    }
    store.tag(&pairs, None)?;
    pairs.iter().map(|(n, d)| store.load(n, d)).collect()
}

/// Names (canonical) and manifest digest of each image found.
type Found = Vec<(Vec<String>, String)>;

/// An archive file opened for reading, and its size.
type Opened<'a> = Option<(Box<dyn Read + 'a>, u64)>;

/// Where an archive's files come from: a directory or a tar.
trait Source {
    /// The file at archive path `path` and its size; `None` if absent.
    fn open(&mut self, path: &str) -> Result<Opened<'_>, ImageError>;
    fn exists(&mut self, path: &str) -> Result<bool, ImageError> {
        Ok(self.open(path)?.is_some())
    }
}

/// `path` relative, without `.`/empty components; `None` if it climbs (`..`).
fn clean(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// An image directory, by a descriptor of it.
struct DirSource(OwnedFd);

impl Source for DirSource {
    fn open(&mut self, path: &str) -> Result<Opened<'_>, ImageError> {
        let Some(rel) = clean(path).filter(|p| !p.is_empty() && !path.starts_with('/')) else {
            return Err(ImageError::Malformed(format!(
                "archive path {path:?} leaves the archive"
            )));
        };
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat2(&self.0, rel.as_str(), flags, Mode::empty(), how) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => {
                return Err(ImageError::Malformed(format!(
                    "{rel} is (or lies under) a symbolic link: an image directory may hold only directories and regular files"
                )))
            }
            Err(e) => {
                return Err(ImageError::Io {
                    what: format!("cannot open {rel} in the image directory"),
                    source: e.into(),
                })
            }
        };
        let (file, size) = regular_file(fd, &rel)?;
        Ok(Some((Box::new(file), size)))
    }
}

/// `fd` as a `File` if it is a regular file (and its size), else the
/// reason it is refused.
fn regular_file(fd: OwnedFd, name: &str) -> Result<(File, u64), ImageError> {
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(ImageError::io(format!("cannot stat {name}")))?;
    if !meta.is_file() {
        return Err(ImageError::Malformed(format!(
            "{name} is not a regular file"
        )));
    }
    Ok((file, meta.len()))
}

struct TarSource {
    file: File,
    /// Regular members: path → (offset of the data, size).
    members: HashMap<String, (u64, u64)>,
    /// Symlinks and hard links: path → target path (cleaned).
    links: HashMap<String, String>,
    _scratch: Option<TempPath>,
}

impl TarSource {
    fn new(file: File, scratch: Option<TempPath>, name: &Path) -> Result<TarSource, ImageError> {
        let bad = |e: io::Error| {
            ImageError::Malformed(format!("{}: not a readable tar: {e}", name.display()))
        };
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(bad)? {
                let entry = entry.map_err(bad)?;
                let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
                let Some(path) = clean(&raw) else { continue };
                let kind = entry.header().entry_type();
                if kind.is_file() {
                    members.insert(path, (entry.raw_file_position(), entry.size()));
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let Some(target) = entry.link_name().map_err(bad)? else {
                        continue;
                    };
                    let target = target.to_string_lossy().into_owned();
                    let joined = if kind.is_symlink() && !target.starts_with('/') {
                        match path.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{target}"),
                            None => target,
                        }
                    } else {
                        target
                    };
                    if let Some(t) = clean(&joined) {
                        links.insert(path, t);
                    }
                }
            }
        }
        Ok(TarSource {
            file,
            members,
            links,
            _scratch: scratch,
        })
    }
}

impl Source for TarSource {
    fn open(&mut self, path: &str) -> Result<Opened<'_>, ImageError> {
        let Some(mut p) = clean(path) else {
            return Ok(None);
        };
        for _ in 0..16 {
            if let Some(&(offset, size)) = self.members.get(&p) {
                self.file
                    .seek(SeekFrom::Start(offset))
                    .map_err(ImageError::io("cannot read the archive"))?;
                return Ok(Some((Box::new((&self.file).take(size)), size)));
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// Opens the input `path` for reading, without blocking (a FIFO or a
/// device opens at once, for the caller to refuse), and stats it; a
/// missing file is bad usage.
pub(super) fn open_input(path: &Path) -> Result<(File, std::fs::Metadata), ImageError> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::NOENT => {
            ImageError::Usage(format!("{}: no such file or directory", path.display()))
        }
        e => ImageError::io(format!("cannot open {}", path.display()))(e.into()),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(ImageError::io(format!("cannot stat {}", path.display())))?;
    Ok((file, meta))
}

/// A directory, a tar, or a gzip-compressed tar (inflated into the store's
/// tmp/ first, since a tar is read by seeking).
fn open_source(store: &Store, path: &Path) -> Result<Box<dyn Source>, ImageError> {
    let (file, meta) = open_input(path)?;
    if meta.is_dir() {
        return Ok(Box::new(DirSource(file.into())));
    }
    if !meta.is_file() {
        return Err(ImageError::Malformed(format!(
            "{}: neither a directory nor a regular file",
            path.display()
        )));
    }
    let mut file = file;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
    file.rewind()
        .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        let (mut out, guard) = store.blobs().scratch("import")?;
        io::copy(
            &mut flate2::read::MultiGzDecoder::new(BufReader::new(file)),
            &mut out,
        )
        .map_err(|e| ImageError::Malformed(format!("{}: bad gzip data: {e}", path.display())))?;
        out.rewind()
            .map_err(ImageError::io("cannot read the inflated archive"))?;
        return Ok(Box::new(TarSource::new(out, Some(guard), path)?));
    }
    Ok(Box::new(TarSource::new(file, None, path)?))
}

/// Reads a small JSON file of the archive (≤ [`MAX_JSON`]).
fn read_small(src: &mut dyn Source, path: &str) -> Result<Vec<u8>, ImageError> {
    let (r, size) = src
        .open(path)?
        .ok_or_else(|| ImageError::Malformed(format!("the archive lacks {path}")))?;
    if size > MAX_JSON {
        return Err(ImageError::Malformed(format!(
            "{path} is larger than {MAX_JSON} bytes"
        )));
    }
    let mut buf = Vec::new();
    r.take(MAX_JSON)
        .read_to_end(&mut buf)
        .map_err(ImageError::io(format!(
            "cannot read {path} from the archive"
        )))?;
    Ok(buf)
}

fn blob_path(d: &str) -> Result<String, ImageError> {
    Ok(format!("blobs/sha256/{}", digest::hex_of(d)?))
}

/// Copies a described blob from the archive into the store, verifying it.
fn copy_blob(
    store: &Store,
    src: &mut dyn Source,
    desc: &Descriptor,
    what: &str,
) -> Result<(), ImageError> {
    if store.blobs().contains(&desc.digest) {
        return Ok(());
    }
    let path = blob_path(&desc.digest)?;
    let (mut r, _) = src
        .open(&path)?
        .ok_or_else(|| ImageError::Malformed(format!("the archive lacks {path} ({what})")))?;
    store
        .blobs()
        .put(what, &mut r, &desc.digest, Some(desc.size))
}

/// Reads a described manifest/index/config from the archive, verified.
fn read_described(
    src: &mut dyn Source,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, ImageError> {
    if desc.size > MAX_JSON {
        return Err(ImageError::Malformed(format!(
            "{what} is larger than {MAX_JSON} bytes"
        )));
    }
    let bytes = read_small(src, &blob_path(&desc.digest)?)?;
    if bytes.len() as u64 != desc.size {
        return Err(ImageError::Malformed(format!(
            "{what}: {} bytes, {} announced",
            bytes.len(),
            desc.size
        )));
    }
    digest::verify(what, &bytes, &desc.digest)?;
    Ok(bytes)
}

fn import_oci(store: &Store, src: &mut dyn Source) -> Result<Found, ImageError> {
    let index = match Document::parse(&read_small(src, "index.json")?, "index.json")? {
        Document::Index(i) => i,
        Document::Manifest(_) => {
            return Err(ImageError::Malformed(
                "index.json is not an image index".into(),
            ))
        }
    };
    let mut found = Vec::new();
    for entry in &index.manifests {
        let mut names = Vec::new();
        let full = entry
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                entry
                    .annotations
                    .get("org.opencontainers.image.ref.name")
                    .filter(|n| n.contains(['/', ':', '@']))
            });
        if let Some(n) = full {
            names.push(
                reference::parse_name(n)
                    .map_err(|e| ImageError::Malformed(format!("index.json: {e}")))?
                    .name,
            );
        }
        let desc = match entry.media_type.as_str() {
            manifest::OCI_INDEX | manifest::DOCKER_LIST => {
                let bytes = read_described(src, entry, "image index")?;
                match Document::parse(&bytes, "image index")? {
                    Document::Index(i) => i.linux_amd64().cloned().ok_or_else(|| {
                        ImageError::NotInRegistry(format!(
                            "the archive's index {} has no linux/amd64 image",
                            entry.digest
                        ))
                    })?,
                    Document::Manifest(_) => {
                        return Err(ImageError::Malformed(
                            "an index entry is not an index".into(),
                        ))
                    }
                }
            }
            manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST | "" => entry.clone(),
            // Artifacts (signatures, attestations) are not images.
            _ => continue,
        };
        let d = import_manifest(store, src, &desc)?;
        found.push((names, d));
    }
    Ok(found)
}

/// Copies one image manifest, its config and its layers; returns its digest.
fn import_manifest(
    store: &Store,
    src: &mut dyn Source,
    desc: &Descriptor,
) -> Result<String, ImageError> {
    let bytes = read_described(src, desc, "image manifest")?;
    let m = Manifest::parse(&bytes, "image manifest")?;
    let config = read_described(src, &m.config, "image config")?;
    ConfigFile::parse(&config, "image config")?;
    store
        .blobs()
        .put_bytes("image config", &config, &m.config.digest)?;
    for (i, l) in m.layers.iter().enumerate() {
        copy_blob(store, src, l, &format!("layer {}", i + 1))?;
    }
    store
        .blobs()
        .put_bytes("image manifest", &bytes, &desc.digest)?;
    Ok(desc.digest.clone())
}

/// A `docker save` archive of Docker 25 or later is an OCI layout too,
/// with a `manifest.json` beside it. An image the OCI side left nameless
/// takes the `RepoTags` of the manifest.json entry with the same config.
fn name_from_repo_tags(
    store: &Store,
    src: &mut dyn Source,
    found: &mut Found,
) -> Result<(), ImageError> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(&read_small(src, "manifest.json")?)
        .map_err(|e| ImageError::Malformed(format!("manifest.json is malformed: {e}")))?;
    for (names, d) in found.iter_mut().filter(|(n, _)| n.is_empty()) {
        let config = store.read_manifest(d)?.config.digest;
        for e in entries
            .iter()
            .filter(|e| digest_in_path(&e.config).as_deref() == Some(&config))
        {
            for t in e.repo_tags.iter().flatten() {
                let n = reference::parse_name(t)
                    .map_err(|err| ImageError::Malformed(format!("manifest.json: {err}")))?;
                names.push(n.name);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The digest a docker archive path states, as in `blobs/sha256/<hex>` or
/// `<hex>.json`.
fn digest_in_path(path: &str) -> Option<String> {
    let base = path.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    digest::is_hex64(hex).then(|| format!("sha256:{hex}"))
}

fn import_docker(store: &Store, src: &mut dyn Source) -> Result<Found, ImageError> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(&read_small(src, "manifest.json")?)
        .map_err(|e| ImageError::Malformed(format!("manifest.json is malformed: {e}")))?;
    let mut found = Vec::new();
    for e in &entries {
        let config_digest = digest_in_path(&e.config).ok_or_else(|| {
            ImageError::Malformed(format!(
                "manifest.json: the config {:?} is not named by its digest",
                e.config
            ))
        })?;
        let config = read_small(src, &e.config)?;
        digest::verify("image config", &config, &config_digest)?;
        let cfg = ConfigFile::parse(&config, "image config")?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != e.layers.len() {
            return Err(ImageError::Malformed(format!(
                "manifest.json lists {} layers, the config {}",
                e.layers.len(),
                diff_ids.len()
            )));
        }
        store
            .blobs()
            .put_bytes("image config", &config, &config_digest)?;
        let mut layers = Vec::new();
        for (i, (path, diff_id)) in e.layers.iter().zip(&diff_ids).enumerate() {
            layers.push(docker_layer(store, src, path, diff_id, i + 1)?);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::DOCKER_MANIFEST,
            "config": {"mediaType": manifest::DOCKER_CONFIG, "size": config.len(), "digest": config_digest},
            "layers": layers.iter().map(|(t, s, d)| serde_json::json!({"mediaType": t, "size": s, "digest": d})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).expect("a JSON value encodes");
        let d = digest::of(&bytes);
        Manifest::parse(&bytes, "image manifest")?;
        store.blobs().put_bytes("image manifest", &bytes, &d)?;
        let names = e
            .repo_tags
            .iter()
            .flatten()
            .map(|t| {
                reference::parse_name(t)
                    .map(|r| r.name)
                    .map_err(|err| ImageError::Malformed(format!("manifest.json: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        found.push((names, d));
    }
    Ok(found)
}

/// Stores one docker-archive layer; returns (media type, size, digest).
/// An uncompressed layer must hash to its diff id; a compressed one to the
/// digest its path states (with none, it is refused: nothing vouches for it).
fn docker_layer(
    store: &Store,
    src: &mut dyn Source,
    path: &str,
    diff_id: &str,
    n: usize,
) -> Result<(&'static str, u64, String), ImageError> {
    let what = format!("layer {n} ({path})");
    let (r, size) = src
        .open(path)?
        .ok_or_else(|| ImageError::Malformed(format!("the archive lacks {path}")))?;
    let mut r = BufReader::new(r);
    let head = r
        .fill_buf()
        .map_err(ImageError::io(format!("cannot read {path}")))?;
    let media_type = match head {
        [0x1f, 0x8b, ..] => manifest::DOCKER_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        _ => manifest::DOCKER_LAYER_TAR,
    };
    let stated = digest_in_path(path);
    let expected = if media_type == manifest::DOCKER_LAYER_TAR {
        if let Some(s) = stated.as_deref().filter(|s| *s != diff_id) {
            return Err(ImageError::DigestMismatch {
                what,
                expected: diff_id.to_string(),
                actual: s.to_string(),
            });
        }
        diff_id.to_string()
    } else {
        stated.ok_or_else(|| {
            ImageError::Malformed(format!(
                "{what}: a compressed layer must be named by its digest"
            ))
        })?
    };
    store.blobs().put(&what, &mut r, &expected, Some(size))?;
    Ok((media_type, size, expected))
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
