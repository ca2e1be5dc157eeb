//! The registry client behind `husk pull`, run in the `husk-pull` helper
//! process (see [`super::pull`] for why): the OCI distribution protocol through oci-client
//! (anonymous, bearer-token and basic auth, manifest and blob fetches), with
//! every byte verified here as it is stored ([`super::blobs::BlobWriter`]).
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

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::manifest::{self, ConfigFile, Descriptor, Document, Manifest, MAX_JSON};
use super::reference::{self, Ref};
use super::{auth, digest, Image, ImageError, PullOptions, Store};

/// The manifest media types we ask for.
const ACCEPT: [&str; 4] = [
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
    let auth = match auth::lookup(opts.credentials_file.as_deref(), root, &r.registry)? {
        Some(b) => RegistryAuth::Basic(b.user, b.password),
        None => RegistryAuth::Anonymous,
    };
    let _ingest = store.blobs().lock_shared()?;
    let _quiet = QuietLibraryLogs::new();
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ImageError::io("cannot start the network runtime"))?;
    let oci = match (&r.tag, &r.digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(r.registry.clone(), r.path.clone(), t.clone(), d.clone())
        }
        (None, Some(d)) => Reference::with_digest(r.registry.clone(), r.path.clone(), d.clone()),
        (t, None) => Reference::with_tag(
            r.registry.clone(),
            r.path.clone(),
            t.clone().unwrap_or_else(|| "latest".into()),
        ),
    };
    let puller = Puller {
        store,
        r: &r,
        oci,
        auth,
        opts,
    };
    let digest = rt.block_on(puller.run())?;
    store.tag(&[(r.name.clone(), digest.clone())])?;
    store.load(&r.name, &digest)
}

struct Puller<'a> {
    store: &'a Store,
    r: &'a Ref,
    oci: Reference,
    auth: RegistryAuth,
    opts: &'a PullOptions,
}

impl Puller<'_> {
    fn client(&self, http: bool) -> Result<Client, ImageError> {
        let mut extra = Vec::new();
        if let Some(ca) = std::env::var_os("HUSK_REGISTRY_CA").filter(|c| !c.is_empty()) {
            let data = std::fs::read(&ca).map_err(|e| {
                ImageError::Usage(format!(
                    "HUSK_REGISTRY_CA {}: {e}",
                    PathBuf::from(&ca).display()
                ))
            })?;
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if http {
                ClientProtocol::HttpsExcept(vec![self.oci.resolve_registry().to_string()])
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: self.opts.insecure,
            extra_root_certificates: extra,
            // Indexes are resolved here, with the index bytes in hand.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        Client::try_from(config).map_err(|e| self.error(e))
    }

    async fn run(&self) -> Result<String, ImageError> {
        let http_ok = self.opts.insecure || reference::is_loopback(&self.r.registry);
        let mut client = self.client(false)?;
        let (bytes, top) = match self.fetch_manifest(&client, &self.oci).await {
            Ok(found) => found,
            Err(Fetch::Transport(first)) if http_ok => {
                client = self.client(true)?;
                match self.fetch_manifest(&client, &self.oci).await {
                    Ok(found) => found,
                    // Plain HTTP did not get a registry's answer either: the
                    // HTTPS failure says more (a TLS server answers HTTP
                    // with a bare 400).
                    Err(Fetch::Transport(_)) => return Err(self.error(first)),
                    Err(Fetch::Other(e)) => return Err(e),
                }
            }
            Err(Fetch::Transport(e)) => return Err(self.error(e)),
            Err(Fetch::Other(e)) => return Err(e),
        };
        let (bytes, manifest_digest, m) = match Document::parse(&bytes, "manifest")? {
            Document::Manifest(m) => (bytes, top, m),
            Document::Index(idx) => {
                let entry = idx.linux_amd64().ok_or_else(|| {
                    ImageError::NotInRegistry(format!(
                        "{}: the image index has no linux/amd64 image",
                        self.r.name
                    ))
                })?;
                let child = self.oci.clone_with_digest(entry.digest.clone());
                let (b, d) = self
                    .fetch_manifest(&client, &child)
                    .await
                    .map_err(|f| f.into_error(self))?;
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
        let config = self.fetch_config(&client, &m.config).await?;
        ConfigFile::parse(&config, "image config")?;
        let bars = if self.opts.progress {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        for l in &m.layers {
            self.fetch_layer(&client, l, &bars).await?;
        }
        // Leave the terminal as it was: the name printed next is the result.
        let _ = bars.clear();
        let blobs = self.store.blobs();
        blobs.put_bytes("image config", &config, &m.config.digest)?;
        blobs.put_bytes("image manifest", &bytes, &manifest_digest)?;
        Ok(manifest_digest)
    }

    /// A manifest or index, bounded and hashed; a by-digest reference must
    /// hash to its digest.
    async fn fetch_manifest(
        &self,
        client: &Client,
        r: &Reference,
    ) -> Result<(Vec<u8>, String), Fetch> {
        let (bytes, _) = client
            .pull_manifest_raw(r, &self.auth, &ACCEPT)
            .await
            .map_err(|e| match e {
                OciDistributionError::RequestError(_) => Fetch::Transport(e),
                OciDistributionError::ServerError { code: 400, .. } => Fetch::Transport(e),
                e => Fetch::Other(self.error(e)),
            })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(Fetch::Other(ImageError::Malformed(format!(
                "{}: the manifest is larger than {MAX_JSON} bytes",
                self.r.name
            ))));
        }
        let actual = digest::of(&bytes);
        if let Some(want) = r.digest() {
            if want != actual {
                return Err(Fetch::Other(ImageError::DigestMismatch {
                    what: format!("manifest of {}", self.r.name),
                    expected: want.to_string(),
                    actual,
                }));
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// The config blob, in memory (≤ [`MAX_JSON`]), verified.
    async fn fetch_config(
        &self,
        client: &Client,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, ImageError> {
        let mut stream = client
            .pull_blob_stream(&self.oci, desc.digest.as_str())
            .await
            .map_err(|e| self.error(e))?;
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.map_err(|e| self.stream_error("image config", e))?);
            if buf.len() as u64 > desc.size.min(MAX_JSON) {
                return Err(ImageError::Malformed(format!(
                    "image config {}: more than the announced {} bytes",
                    desc.digest, desc.size
                )));
            }
        }
        digest::verify("image config", &buf, &desc.digest)?;
        Ok(buf)
    }

    /// Streams one layer into the store (skipped when present).
    async fn fetch_layer(
        &self,
        client: &Client,
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
        let mut stream = client
            .pull_blob_stream(&self.oci, desc.digest.as_str())
            .await
            .map_err(|e| self.error(e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.stream_error(&what, e))?;
            w.write(&chunk)?;
            bar.inc(chunk.len() as u64);
        }
        w.commit()?;
        bar.finish_with_message(format!("{short} done"));
        Ok(())
    }

    /// A failure while a blob streams: oci-client's own digest check
    /// (integrity), else the connection (registry).
    fn stream_error(&self, what: &str, e: std::io::Error) -> ImageError {
        let digest_failed = e
            .get_ref()
            .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
        if digest_failed {
            ImageError::Malformed(format!("{what}: content does not match its digest: {e}"))
        } else {
            self.registry(format!("{what}: transfer failed"), Some(Box::new(e)))
        }
    }

    fn registry(
        &self,
        message: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ImageError {
        ImageError::Registry {
            registry: self.r.registry.clone(),
            message,
            source,
        }
    }

    /// Maps an oci-client error to ours (and so to an exit status).
    fn error(&self, e: OciDistributionError) -> ImageError {
        use OciDistributionError as E;
        let name = &self.r.name;
        let not_found = || ImageError::NotInRegistry(format!("{name}: not found in the registry"));
        match e {
            E::ImageManifestNotFoundError(_) => not_found(),
            E::RegistryError { ref envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|x| &x.code).collect();
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    self.registry(
                        format!("access to {name} denied (wrong or missing credentials?)"),
                        None,
                    )
                } else {
                    self.registry(format!("refused: {envelope}"), None)
                }
            }
            E::ServerError { code: 404, .. } => not_found(),
            E::ServerError { code, message, .. } => self.registry(
                format!(
                    "answered HTTP {code}: {}",
                    message.trim().lines().next().unwrap_or("")
                ),
                None,
            ),
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => self.registry(
                format!("access to {name} denied (wrong or missing credentials?)"),
                None,
            ),
            E::DigestError(_) => {
                ImageError::Malformed(format!("{name}: content does not match its digest: {e}"))
            }
            E::ManifestParsingError(_)
            | E::VersionedParsingError(_)
            | E::UnsupportedMediaTypeError(_)
            | E::UnsupportedSchemaVersionError(_)
            | E::SpecViolationError(_)
            | E::ManifestEncodingError(_)
            | E::JsonError(_) => ImageError::Malformed(format!("{name}: {e}")),
            E::RequestError(re) => {
                let what = if re.is_connect() {
                    "cannot connect"
                } else if re.is_timeout() {
                    "timed out"
                } else {
                    "request failed"
                };
                self.registry(what.to_string(), Some(Box::new(re)))
            }
            other => self.registry(other.to_string(), None),
        }
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

/// A manifest fetch failure: transport ones may be retried in plain HTTP.
enum Fetch {
    Transport(OciDistributionError),
    Other(ImageError),
}

impl Fetch {
    fn into_error(self, p: &Puller<'_>) -> ImageError {
        match self {
            Fetch::Transport(e) => p.error(e),
            Fetch::Other(e) => e,
        }
    }
}
