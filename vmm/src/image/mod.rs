//! The local image store: content-addressed blobs, a name → manifest index,
//! and the ways images come in (`husk pull`, `husk import`) and go (`husk
//! rmi`, `husk gc`).
//!
//! Layout under `<root>/images/`:
//! ```text
//! blobs/sha256/<hex>   manifests, configs and layers, each named by its digest, mode 0444
//! tmp/                 blobs being written (hashed while written; renamed into blobs/ once verified)
//! index.json           name → manifest digest; replaced atomically, under index.lock
//! index.lock           flock: serialises index updates between husk processes
//! ingest.lock          flock: shared while a pull/import/link runs, exclusive for gc
//! ```
//! The root (when husk makes it), `images/` and its directories are 0700,
//! its files 0600 ([`crate::private`]); an older store is tightened when
//! opened.
//! An image exists once its name is in `index.json`, and that entry is
//! written last, after every blob it needs is verified and in place: a pull
//! or import that fails (or is killed) half way leaves at worst unreferenced
//! blobs and temp files, which `gc` removes, never a visible image.
//!
//! The host parses manifests and configs only (bounded to [`manifest::MAX_JSON`]
//! bytes); layer tarballs are copied and hashed, never opened: they are
//! unpacked inside the guest.

pub mod aci;
mod auth;
mod blobs;
mod check;
pub(crate) mod digest;
mod distribution;
mod import;
mod index;
mod lookaside;
mod manifest;
mod pull;
pub mod reference;
mod registry;
mod signatures;

use std::path::{Path, PathBuf};

use husk_proto::{ImageConfig, LayerSpec};

pub use aci::import_here as import_aci_here;
pub use blobs::GcReport;
pub use import::import;
pub use index::Entry as IndexEntry;
pub use pull::{answer_line as pull_answer_line, import_aci, pull, PullOptions};
pub use registry::pull_here;

use crate::failure::Failure;
use blobs::Blobs;
use index::Index;

/// What went wrong with an image operation. Each variant is one kind of
/// failure ([`ImageError::kind`]).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not in the local store.
    #[error("image not found: {0}")]
    NotFound(String),
    /// The registry does not have it (manifest or repository unknown), or
    /// an index has no linux/amd64 image.
    #[error("{0}")]
    NotInRegistry(String),
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    /// Other bad input: a missing file, an ambiguous id, conflicting flags.
    #[error("{0}")]
    Usage(String),
    /// The registry could not be reached, refused us, or failed.
    #[error("registry {registry}: {message}")]
    Registry {
        registry: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A manifest, config, index or archive is malformed or unsupported.
    #[error("{0}")]
    Malformed(String),
    /// The pull helper process failed; `kind` is what it said failed.
    #[error("{message}")]
    Helper { kind: Failure, message: String },
    /// The trust policy could not be read, or refused the image.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    /// The store or an input file could not be read or written.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// What kind of failure this is (its exit status: [`Failure::exit_status`]).
    pub fn kind(&self) -> Failure {
        match self {
            ImageError::NotFound(_) | ImageError::NotInRegistry(_) => Failure::ImageNotFound,
            ImageError::BadReference { .. } | ImageError::Usage(_) => Failure::Usage,
            ImageError::Registry { .. } => Failure::Registry,
            ImageError::DigestMismatch { .. } | ImageError::Malformed(_) => Failure::Integrity,
            ImageError::Io { .. } => Failure::Runtime,
            ImageError::Helper { kind, .. } => *kind,
            ImageError::Trust(e) => e.kind(),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let what = what.into();
        move |source| ImageError::Io { what, source }
    }
}

/// A stored image, as `husk run` needs it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Image {
    /// The canonical name it is stored under (`docker.io/library/busybox:latest`),
    /// or its manifest digest when it has no name.
    pub name: String,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
    /// Entrypoint, Cmd, Env, WorkingDir and User from the OCI config.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerSpec>,
    /// Sum of the layer sizes (compressed, as stored).
    pub size: u64,
    /// The config's `created` time (RFC 3339), if it has one.
    pub created: Option<String>,
    /// `sha256:…` of the image config blob.
    pub config_digest: String,
    /// How the trust policy admitted it at pull time (`None`: never
    /// verified, e.g. imported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<crate::trust::Admission>,
}

impl Image {
    /// The short id `husk images` shows: 12 hex digits of the manifest digest.
    pub fn short_id(&self) -> &str {
        let hex = self
            .manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.manifest_digest);
        &hex[..hex.len().min(12)]
    }
}

/// One name of the index with its image, or why the image cannot be
/// loaded ([`Store::list_each`]).
pub type Listed = (String, Result<Image, ImageError>);

/// The image store under one root directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    blobs: Blobs,
    index: Index,
}

impl Store {
    /// `$HUSK_ROOT` if set, else `/var/lib/husk` as root, else
    /// `$XDG_DATA_HOME/husk` (`~/.local/share/husk`).
    pub fn default_root() -> PathBuf {
        if let Some(root) = std::env::var_os("HUSK_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(root);
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/husk");
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(xdg).join("husk");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/husk")
    }

    /// Opens (creating if needed) the store under `root/images/`. `root/pods/`
    /// belongs to the pod side and is never touched here.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        let dir = root.join("images");
        crate::private::create_dir_all(&dir)
            .map_err(ImageError::io(format!("cannot create {}", dir.display())))?;
        Ok(Store {
            blobs: Blobs::open(&dir)?,
            index: Index::open(&dir)?,
            dir,
        })
    }

    /// The store's own directory (`root/images`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks up a local image by `name[:tag]` (docker-style normalisation),
    /// `name@sha256:…`, a full `sha256:<hex>` manifest digest, or a unique
    /// hex prefix of at least 12 digits of one.
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let entries = self.index.read()?;
        let (name, digest) = index::lookup(&entries, reference)?;
        let admission = entries.get(&name).and_then(|e| e.admission.clone());
        self.load_with(&name, &digest, admission)
    }

    /// Every stored image, by name.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        self.list_each()?
            .into_iter()
            .map(|(_, image)| image)
            .collect()
    }

    /// Every name in the index with its image, or why that image cannot be
    /// loaded (a manifest or config gone or corrupt): a listing shows the
    /// others and names the damaged one (`husk images`); only an
    /// unreadable index fails the whole.
    pub fn list_each(&self) -> Result<Vec<Listed>, ImageError> {
        let entries = self.index.read()?;
        Ok(entries
            .iter()
            .map(|(name, e)| {
                let image = self.load_with(name, &e.digest, e.admission.clone());
                (name.clone(), image)
            })
            .collect())
    }

    /// Removes the names `reference` resolves to (one name, or every name of
    /// an image given by digest or id); returns them. Blobs stay until `gc`.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>, ImageError> {
        self.index.update(|entries| {
            let (name, digest) = index::lookup(entries, reference)?;
            let names = if index::is_name_lookup(entries, reference, &name) {
                vec![name]
            } else {
                index::names_of(entries, &digest)
            };
            for n in &names {
                entries.remove(n);
            }
            Ok(names)
        })
    }

    /// Hard-links (copies across file systems) the image's layer blobs into
    /// `dest/sha256/<hex>`, the OCI `blobs/` shape the agent reads. Only this
    /// image's layers: a pod's guest never sees other images' blobs.
    pub fn link_layers(&self, image: &Image, dest: &Path) -> Result<(), ImageError> {
        let _ingest = self.blobs.lock_shared()?;
        let dir = dest.join("sha256");
        crate::private::create_dir_all(dest)
            .and_then(|()| crate::private::create_dir_all(&dir))
            .map_err(ImageError::io(format!("cannot create {}", dir.display())))?;
        for layer in &image.layers {
            self.blobs.link_into(&layer.digest, &dir)?;
        }
        Ok(())
    }

    /// Removes blobs no stored image references, and leftover temp files of
    /// interrupted pulls/imports; waits for running ones to finish first.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let _ingest = self.blobs.lock_exclusive()?;
        let entries = self.index.read()?;
        let mut keep = std::collections::HashSet::new();
        for e in entries.values() {
            keep.insert(e.digest.clone());
            // A manifest that cannot be read keeps only itself; its image
            // fails to resolve anyway.
            if let Ok(m) = self.read_manifest(&e.digest) {
                keep.insert(m.config.digest.clone());
                keep.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
        }
        self.blobs.sweep(&keep)
    }

    /// Records each `(name, manifest digest)`, in one atomic index update:
    /// the last step of a pull or import. `admission` is the trust
    /// policy's record for a pull (`None` for an import).
    pub(crate) fn tag(
        &self,
        pairs: &[(String, String)],
        admission: Option<&crate::trust::Admission>,
    ) -> Result<(), ImageError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.index.update(|entries| {
            for (name, digest) in pairs {
                entries.insert(
                    name.clone(),
                    IndexEntry {
                        digest: digest.clone(),
                        added: now,
                        admission: admission.cloned(),
                    },
                );
            }
            Ok(())
        })
    }

    pub(crate) fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    pub(crate) fn read_manifest(&self, digest: &str) -> Result<manifest::Manifest, ImageError> {
        let bytes = self.blobs.read_json(digest)?;
        manifest::Manifest::parse(&bytes, digest)
    }

    /// The image config manifest `m` names, parsed.
    pub(crate) fn read_config(
        &self,
        m: &manifest::Manifest,
    ) -> Result<manifest::ConfigFile, ImageError> {
        let bytes = self.blobs.read_json(&m.config.digest)?;
        manifest::ConfigFile::parse(&bytes, &m.config.digest)
    }

    /// The stored image `name` (which must map to `digest`), with its
    /// admission record.
    pub(crate) fn load(&self, name: &str, digest: &str) -> Result<Image, ImageError> {
        let admission = self
            .index
            .read()?
            .get(name)
            .filter(|e| e.digest == digest)
            .and_then(|e| e.admission.clone());
        self.load_with(name, digest, admission)
    }

    /// Builds the [`Image`] for an index entry from its stored manifest and config.
    fn load_with(
        &self,
        name: &str,
        digest: &str,
        admission: Option<crate::trust::Admission>,
    ) -> Result<Image, ImageError> {
        let m = self.read_manifest(digest)?;
        let config = self.read_config(&m)?;
        let layers: Vec<LayerSpec> = m
            .layers
            .iter()
            .map(|l| LayerSpec {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                unpacked_size: None,
            })
            .collect();
        Ok(Image {
            name: name.to_string(),
            manifest_digest: digest.to_string(),
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            created: config.created.clone(),
            config: config.image_config(),
            config_digest: m.config.digest.clone(),
            admission,
        })
    }
}
