//! The registry client behind `husk pull`, run in the `husk-pull` helper
//! process (see [`super::pull`] for why): the OCI distribution protocol
//! (anonymous, bearer-token and basic auth, manifest and blob fetches) over
//! [`super::distribution`], which bounds every body it reads, with every
//! byte verified here as it is stored ([`super::blobs::BlobWriter`]).
//!
//! The HTTP stack (tokio, hyper, rustls) runs on a current-thread runtime
//! built for the call and dropped after it.
//! rustls uses the ring provider, installed here as the process default
//! (reqwest is built without a provider of its own, to avoid aws-lc's C
//! build); roots are the system's, plus the PEM file `$HUSK_REGISTRY_CA`
//! when set (a private or test registry's CA).
//!
//! Transport rule: HTTPS with verified certificates. Plain HTTP is tried,
//! after HTTPS fails to connect or handshake, only for a loopback registry
//! (`localhost`, 127.0.0.0/8, `[::1]`, as written in the reference) or with
//! `--insecure`, which also accepts unverified certificates (docker's
//! "insecure registry").
//!
//! Index / manifest list: resolved to its linux/amd64 image; the image is
//! stored under the reference's name with the image manifest's digest.
//!
//! Trust: the policy ([`crate::trust`]) is read before the registry is
//! contacted (a malformed policy fails the pull at once), and decides on the
//! top-level manifest's digest (the index's, for an index: it pins its
//! images by digest) as soon as that manifest is fetched, before any config
//! or layer is: a refused image stores nothing at all. The decision's
//! record is written with the image's name, the last step of the pull.

use std::path::PathBuf;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::distribution::{self, OpenError, Registry};
use super::manifest::{self, ConfigFile, Descriptor, Document, Manifest, MAX_JSON};
use super::reference::{self, Ref};
use super::{auth, digest, lookaside, signatures, Image, ImageError, PullOptions, Store};
use crate::trust::admission::{self, AcceptedSignature, Subject};
use crate::trust::policy::Policy;
use crate::trust::policy::Requirement;
use crate::trust::sigstore::{Claims, Verifier};
use crate::trust::simple_signing::GpgVerifier;
use crate::trust::Admission;

/// The manifest media types we ask for.
pub(super) const ACCEPT: [&str; 4] = [
    manifest::OCI_MANIFEST,
    manifest::OCI_INDEX,
    manifest::DOCKER_MANIFEST,
    manifest::DOCKER_LIST,
];

/// Pulls `reference` into `store` in this process; the image is named
/// `reference` normalised (`busybox` → `docker.io/library/busybox:latest`).
pub fn pull_here(store: &Store, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
    let r = reference::parse(reference)?;
    let root = store.dir().parent().unwrap_or(store.dir());
    let policy = match &opts.policy_file {
        Some(path) => Policy::load_file(path)?,
        None => Policy::load(root)?,
    };
    let basic = auth::lookup(opts.credentials_file.as_deref(), root, &r.registry)?;
    let extra_roots = match std::env::var_os("HUSK_REGISTRY_CA").filter(|c| !c.is_empty()) {
        Some(ca) => Some(std::fs::read(&ca).map_err(|e| {
            ImageError::Usage(format!(
                "HUSK_REGISTRY_CA {}: {e}",
                PathBuf::from(&ca).display()
            ))
        })?),
        None => None,
    };
    let cfg = distribution::Config {
        name: r.name.clone(),
        registry: registry_host(&r.registry).to_string(),
        repository: r.path.clone(),
        basic,
        insecure: opts.insecure,
        extra_roots,
    };
    let _ingest = store.blobs().lock_shared()?;
    let _quiet = QuietLibraryLogs::new();
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ImageError::io("cannot start the network runtime"))?;
    let puller = Puller {
        store,
        root,
        r: &r,
        opts,
        policy: &policy,
    };
    let (digest, admitted) = rt.block_on(puller.run(&cfg))?;
    store.tag(&[(r.name.clone(), digest.clone())], Some(&admitted))?;
    policy.warn_if_unsigned_by_default(root, &r.name, &digest, &admitted);
    store.load(&r.name, &digest)
}

/// Where the registry `name` is served: Docker Hub's API lives at
/// `registry-1.docker.io`.
fn registry_host(name: &str) -> &str {
    if name == "docker.io" {
        "registry-1.docker.io"
    } else {
        name
    }
}

struct Puller<'a> {
    store: &'a Store,
    root: &'a std::path::Path,
    r: &'a Ref,
    opts: &'a PullOptions,
    policy: &'a Policy,
}

impl Puller<'_> {
    /// Opens the registry over HTTPS, or plain HTTP where allowed.
    async fn open(&self, cfg: &distribution::Config) -> Result<Registry, ImageError> {
        let http_ok = self.opts.insecure || reference::is_loopback(&self.r.registry);
        match Registry::open(cfg, "https").await {
            Ok(reg) => Ok(reg),
            Err(OpenError::Transport(first)) if http_ok => {
                match Registry::open(cfg, "http").await {
                    Ok(reg) => Ok(reg),
                    // Plain HTTP did not get a registry's answer either: the
                    // HTTPS failure says more (a TLS server answers HTTP with a
                    // bare 400).
                    Err(OpenError::Transport(_)) => Err(first),
                    Err(OpenError::Other(e)) => Err(e),
                }
            }
            Err(OpenError::Transport(e) | OpenError::Other(e)) => Err(e),
        }
    }

    /// Pulls; returns the image manifest's digest and how it was admitted.
    async fn run(&self, cfg: &distribution::Config) -> Result<(String, Admission), ImageError> {
        let reg = self.open(cfg).await?;
        let top = self
            .r
            .digest
            .clone()
            .or_else(|| self.r.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let (bytes, top_digest) = self
            .fetch_manifest(&reg, &top, self.r.digest.as_deref())
            .await?;
        let admitted = self.admit(&reg, &top_digest).await?;
        let (bytes, manifest_digest, m) = match Document::parse(&bytes, "manifest")? {
            Document::Manifest(m) => (bytes, top_digest, m),
            Document::Index(idx) => {
                let entry = idx.linux_amd64().ok_or_else(|| {
                    ImageError::NotInRegistry(format!(
                        "{}: the image index has no linux/amd64 image",
                        self.r.name
                    ))
                })?;
                let (b, d) = self
                    .fetch_manifest(&reg, &entry.digest, Some(&entry.digest))
                    .await?;
                if b.len() as u64 != entry.size {
                    return Err(ImageError::Malformed(format!(
                        "image manifest {d}: {} bytes, the index says {}",
                        b.len(),
                        entry.size
                    )));
                }
                let m = Manifest::parse(&b, "image manifest")?;
                (b, d, m)
            }
        };
        let config = self.fetch_config(&reg, &m.config).await?;
        ConfigFile::parse(&config, "image config")?;
        let bars = if self.opts.progress {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        for l in &m.layers {
            self.fetch_layer(&reg, l, &bars).await?;
        }
        // Leave the terminal as it was: the name printed next is the result.
        let _ = bars.clear();
        let blobs = self.store.blobs();
        blobs.put_bytes("image config", &config, &m.config.digest)?;
        blobs.put_bytes("image manifest", &bytes, &manifest_digest)?;
        Ok((manifest_digest, admitted))
    }

    /// The policy's decision on the manifest `digest` (see the module doc).
    async fn admit(&self, reg: &Registry, digest: &str) -> Result<Admission, ImageError> {
        let (scope, reqs) = self.policy.requirements_for(self.r);
        let (need_sigstore, need_gpg) = admission::needs_signatures(reqs);
        let found = if need_sigstore {
            signatures::fetch(reg, digest).await?
        } else {
            Ok(Vec::new())
        };
        let gpg = if need_gpg {
            let dir = crate::trust::registries_d::dir(self.root);
            match crate::trust::registries_d::lookaside_for(&dir, self.r)? {
                Some(base) => lookaside::fetch(&base, self.r, digest)?,
                None => Ok(Vec::new()),
            }
        } else {
            Ok(Vec::new())
        };
        let subject = Subject {
            name: &self.r.name,
            digest,
            intended: Some(self.r),
        };
        let decided = admission::evaluate(&subject, &scope, reqs, |req| match req {
            Requirement::SigstoreSigned { keys, .. } => {
                let verifier = Verifier::new(keys)?;
                Ok(match &found {
                    Ok(sigs) => valid_signatures(sigs, digest, |s| verifier.verify(s)),
                    Err(why) => Err(why.clone()),
                })
            }
            Requirement::SignedBy { keys, .. } => {
                let verifier = GpgVerifier::new(keys)?;
                Ok(match &gpg {
                    Ok(sigs) => valid_signatures(sigs, digest, |s| verifier.verify(s)),
                    Err(why) => Err(why.clone()),
                })
            }
            _ => Ok(Ok(Vec::new())),
        })?;
        Ok(decided)
    }

    /// A manifest or index (bounded by [`distribution`]) and its digest; it
    /// must hash to `want` when given, and to the digest the registry states
    /// for it when it states one.
    async fn fetch_manifest(
        &self,
        reg: &Registry,
        reference: &str,
        want: Option<&str>,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let (bytes, stated) = reg.manifest(reference).await?;
        let actual = digest::of(&bytes);
        let stated = stated.filter(|s| s.starts_with("sha256:"));
        for expected in want.into_iter().chain(stated.as_deref()) {
            if expected != actual {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {}", self.r.name),
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok((bytes, actual))
    }

    /// The config blob, in memory (≤ [`MAX_JSON`]), verified.
    async fn fetch_config(&self, reg: &Registry, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let mut resp = reg.blob(&desc.digest).await?;
        let limit = desc.size.min(MAX_JSON);
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transfer_error(reg, "image config", e))?
        {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(ImageError::Malformed(format!(
                    "image config {}: more than the announced {} bytes (the limit is {MAX_JSON})",
                    desc.digest, desc.size
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        digest::verify("image config", &buf, &desc.digest)?;
        Ok(buf)
    }

    /// Streams one layer into the store (skipped when present); the store's
    /// writer refuses more bytes than the descriptor announces.
    async fn fetch_layer(
        &self,
        reg: &Registry,
        desc: &Descriptor,
        bars: &MultiProgress,
    ) -> Result<(), ImageError> {
        let short = &desc.digest[7..19];
        let bar = bars.add(ProgressBar::new(desc.size));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(short.to_string());
        if self.store.blobs().contains(&desc.digest) {
            bar.finish_with_message(format!("{short} exists"));
            return Ok(());
        }
        let what = format!("layer {}", desc.digest);
        let mut w = self
            .store
            .blobs()
            .writer(&what, &desc.digest, Some(desc.size))?;
        let mut resp = reg.blob(&desc.digest).await?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transfer_error(reg, &what, e))?
        {
            w.write(&chunk)?;
            bar.inc(chunk.len() as u64);
        }
        w.commit()?;
        bar.finish_with_message(format!("{short} done"));
        Ok(())
    }

    /// A failure while a blob streams.
    fn transfer_error(&self, reg: &Registry, what: &str, e: reqwest::Error) -> ImageError {
        match reg.request_error(e) {
            ImageError::Registry {
                registry, source, ..
            } => ImageError::Registry {
                registry,
                message: format!("{what}: transfer failed"),
                source,
            },
            other => other,
        }
    }
}

/// The signatures in `sigs` that `verify` accepts and that are for
/// `digest`, or why there is none (the first signature's reason).
fn valid_signatures<S>(
    sigs: &[S],
    digest: &str,
    verify: impl Fn(&S) -> Result<Claims, String>,
) -> Result<Vec<AcceptedSignature>, String> {
    if sigs.is_empty() {
        return Err("a signature is required, but none exists for this digest".into());
    }
    let mut valid = Vec::new();
    let mut first_reason = None;
    for s in sigs {
        match verify(s) {
            Ok(c) if c.manifest_digest == digest => valid.push(AcceptedSignature {
                key: c.key,
                identity: c.docker_reference,
            }),
            Ok(c) => {
                first_reason.get_or_insert(format!(
                    "the signature is for another digest, {}",
                    c.manifest_digest
                ));
            }
            Err(why) => {
                first_reason.get_or_insert(why);
            }
        }
    }
    if valid.is_empty() {
        Err(first_reason.unwrap_or_default())
    } else {
        Ok(valid)
    }
}

/// rustls-platform-verifier logs every refused certificate at error level,
/// which would print a second (and third: reqwest retries) line beside our
/// own one-line error that already carries the cause. So, unless `HUSK_LOG`
/// asks for debug output, library logging is off while a pull runs.
struct QuietLibraryLogs(log::LevelFilter);

impl QuietLibraryLogs {
    fn new() -> QuietLibraryLogs {
        let prev = log::max_level();
        if prev < log::LevelFilter::Debug {
            log::set_max_level(log::LevelFilter::Off);
        }
        QuietLibraryLogs(prev)
    }
}

impl Drop for QuietLibraryLogs {
    fn drop(&mut self) {
        log::set_max_level(self.0);
    }
}
