//! Measured launch: before a pod's VM starts, what it will run is measured
//! into a TPM 2.0 PCR and logged, so that a remote party can learn from the
//! TPM (a quote of the PCR) and the log what this host launched.
//!
//! **What is measured**, in this order, one event each: the pod's config
//! (`config.json`, as written: apps, pinned image digests, the admission
//! decisions, volumes, limits, network), the guest kernel and the
//! initramfs (the files the VMM will load, hashed through the very
//! descriptors it is handed), the kernel command line (the final one, the
//! virtio-mmio device declarations included), and for each app its image's
//! manifest digest with the trust policy's decision that admitted it at
//! this launch (`NAME@sha256:… signed by sha256:… (scope reg.io/app)`).
//! The digest of an event is SHA-256 (of the file, or of the text).
//!
//! **Where**: PCR 15 of the SHA-256 bank by default (`pcr` in
//! `$HUSK_ROOT/measure.json`). PCRs 0–7 belong to firmware, 8–9 to boot
//! loaders and the kernel's initrd, 10 to IMA, 11–14 to systemd-stub and
//! shim; 16 (debug) and 23 (application support) would be free, but
//! software at locality 0 may reset them (TPM2_PCR_Reset), so a pod that
//! took the host over could erase its own launch from them and replay a
//! clean log. PCR 15 cannot be reset short of a host reboot; systemd uses
//! it only on hosts booted through a measured unified kernel image
//! (machine id, root file system: `systemd-pcrmachine`, `systemd-pcrfs`,
//! at boot), and then the log's first record after a reset carries the
//! value husk found (`base`) for a verifier to explain with systemd's log.
//!
//! **The log** ([`log`]): `$HUSK_ROOT/measurements.log`, one per store,
//! which is the host's one when its pods run from one store (root's
//! `/var/lib/husk`). Append-only, one JSON record per line in the shape of
//! TCG's canonical event log, written under an exclusive `flock` (so
//! concurrent pods neither interleave lines nor extend out of the log's
//! order) and synced (`fdatasync`) before the VM starts. The TPM is
//! extended first, then the record is written: a crash between the two
//! leaves the PCR ahead of the log, which `husk attest --verify` reports.
//!
//! **The TPM** ([`tpm`]): `$HUSK_TPM`, else `tpm` in `measure.json`, else
//! `/dev/tpmrm0` if it exists. No TPM: the launch is logged all the same,
//! without the `tpm` part, and `husk run` warns once per pod (unless the
//! TPM was set to `none`, the operator's choice of a log alone);
//! `--require-tpm` (or `"require_tpm": true`) refuses the pod instead
//! (status 119, before anything of it exists).
//!
//! **Out of the VMM**: this runs in the pod's supervisor before it forks
//! the VMM, and adds no crate to the `husk` binary (the TPM commands are
//! marshalled here; SHA-256 is the `sha2` the image store already links).
//! The kernel and initramfs digests are cached per file identity (device,
//! inode, size, modification and change times, like IMA's per-inode
//! cache), since hashing 20 MB on every `husk run` would cost more than the
//! launch's budget of 5 ms.

pub mod log;
pub mod tpm;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::failure::Failure;
use log::{Appender, Content, Digest, Extended, Record, CONTENT_TYPE};
use tpm::{Address, Epoch, Tpm};

/// The PCR husk extends unless told otherwise (see the module doc).
pub const DEFAULT_PCR: u32 = 15;
/// husk's measured-launch settings, in the store's root.
pub const CONFIG_FILE: &str = "measure.json";
/// The measurement log, in the store's root.
pub const LOG_FILE: &str = "measurements.log";
/// The cache of file digests, in the store's root.
const CACHE_FILE: &str = "measure-cache.json";
/// The environment variable naming the TPM (see [`tpm`]).
pub const TPM_ENV: &str = "HUSK_TPM";
/// The TPM husk uses when nothing names one, if it exists.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";
/// The longest log `husk attest` reads.
pub const MAX_LOG: u64 = 256 << 20;

/// What went wrong measuring, or checking a measurement.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The launch must be measured into a TPM and cannot be.
    #[error("the pod's launch cannot be measured into a TPM, which {by} requires: {why}")]
    Refused { by: String, why: String },
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    /// `husk attest --verify` without a TPM.
    #[error("no TPM to verify the measurement log against: {0}")]
    NoTpm(String),
    /// The log does not account for the TPM's PCR, or was altered.
    #[error("{0}")]
    Mismatch(String),
}

impl MeasureError {
    pub fn kind(&self) -> Failure {
        match self {
            MeasureError::Config { .. } => Failure::Usage,
            MeasureError::Refused { .. } => Failure::Untrusted,
            MeasureError::Mismatch(_) => Failure::Integrity,
            MeasureError::Io { .. } | MeasureError::Tpm(_) | MeasureError::NoTpm(_) => {
                Failure::Runtime
            }
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MeasureError + '_ {
        move |source| MeasureError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// `measure.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    tpm: Option<String>,
    pcr: Option<u32>,
    require_tpm: Option<bool>,
}

/// Where and how launches are measured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The TPM (or [`Address::None`]).
    pub tpm: Address,
    /// Why there is none, when nothing named one (`None` with
    /// [`Address::None`]: the operator said `none`, and launches are
    /// logged without a warning).
    pub no_tpm_why: Option<String>,
    pub pcr: u32,
    /// `measure.json` asks for a TPM.
    pub require_tpm: bool,
    pub log: PathBuf,
    pub config: PathBuf,
    cache: PathBuf,
}

impl Settings {
    /// The settings of the store at `root`: `measure.json` (if any), with
    /// `$HUSK_TPM` over its `tpm`.
    pub fn load(root: &Path) -> Result<Settings, MeasureError> {
        let config = root.join(CONFIG_FILE);
        let bad = |message: String| MeasureError::Config {
            path: config.clone(),
            message,
        };
        let file: ConfigFile = match crate::trust::read_bounded(&config, 64 << 10) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(bad(e.to_string())),
        };
        let pcr = file.pcr.unwrap_or(DEFAULT_PCR);
        if pcr >= tpm::PCR_COUNT {
            return Err(bad(format!("pcr {pcr}: a TPM has PCRs 0 to 23")));
        }
        let env = std::env::var(TPM_ENV).ok().filter(|s| !s.is_empty());
        let (tpm, no_tpm_why) = match (env, file.tpm) {
            (Some(a), _) => (
                Address::parse(&a).map_err(|e| MeasureError::Config {
                    path: PathBuf::from(format!("${TPM_ENV}")),
                    message: e,
                })?,
                None,
            ),
            (None, Some(a)) => (Address::parse(&a).map_err(bad)?, None),
            (None, None) if Path::new(DEFAULT_DEVICE).exists() => {
                (Address::Device(DEFAULT_DEVICE.into()), None)
            }
            (None, None) => (
                Address::None,
                Some(format!(
                    "no {DEFAULT_DEVICE}, and neither ${TPM_ENV} nor {CONFIG_FILE} names a TPM"
                )),
            ),
        };
        Ok(Settings {
            tpm,
            no_tpm_why,
            pcr,
            require_tpm: file.require_tpm.unwrap_or(false),
            log: root.join(LOG_FILE),
            config,
            cache: root.join(CACHE_FILE),
        })
    }

    /// Opens the TPM: `Err(why)` when there is none to use.
    pub fn open_tpm(&self) -> Result<Tpm, String> {
        match Tpm::open(&self.tpm) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(self
                .no_tpm_why
                .clone()
                .unwrap_or_else(|| format!("the TPM is set to none ({})", self.config.display()))),
            Err(e) => Err(crate::report::error_line(&e)),
        }
    }

    /// Opens the TPM and reads which PCR lifetime it is in: `Err(why)`
    /// when there is none to use.
    fn open_at_epoch(&self) -> Result<(Tpm, Epoch), String> {
        let mut tpm = self.open_tpm()?;
        let epoch = tpm.epoch().map_err(|e| crate::report::error_line(&e))?;
        Ok((tpm, epoch))
    }

    /// Checks, before a pod is made, that its launch can be measured as
    /// `required` (by `--require-tpm`) or the settings ask: a refusal if
    /// a TPM is required and cannot be reached, else a warning (once) if
    /// there is none. `measured_here`: this process measures the launch
    /// next (a foreground pod's supervisor); then a TPM that is not
    /// required is not opened here, but once, by [`measure`], which warns
    /// if it cannot be used (a TPM that is not configured at all is warned
    /// about here, which costs no I/O).
    pub fn precheck(
        &self,
        pod: &str,
        required: bool,
        measured_here: bool,
    ) -> Result<(), MeasureError> {
        let required = self.required_by(required);
        if required.is_none() && measured_here && self.tpm != Address::None {
            return Ok(());
        }
        match self.open_at_epoch() {
            Ok(_) => Ok(()),
            Err(why) => {
                if let Some(by) = required {
                    return Err(MeasureError::Refused { by, why });
                }
                self.warn_no_tpm(pod, &why);
                Ok(())
            }
        }
    }

    /// The one-line warning of a launch logged but not measured into a
    /// TPM, at most once per process (a `husk run` is one pod); none when
    /// the operator set the TPM to `none`.
    pub fn warn_no_tpm(&self, pod: &str, why: &str) {
        if self.tpm == Address::None && self.no_tpm_why.is_none() {
            return;
        }
        if WARNED.swap(true, Ordering::Relaxed) {
            return;
        }
        let line = format!(
            "warning: pod {pod}'s launch is logged in {} but not measured into a TPM: {why}",
            self.log.display()
        );
        eprintln!("husk: {}", crate::cli::escape::escape(&line));
    }

    fn required_by(&self, flag: bool) -> Option<String> {
        if flag {
            Some("--require-tpm".into())
        } else if self.require_tpm {
            Some(format!("{} (require_tpm)", self.config.display()))
        } else {
            None
        }
    }
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// One thing to measure.
#[derive(Debug, Clone)]
pub struct Event {
    /// `pod-config`, `kernel`, `initramfs`, `cmdline`, `image`.
    pub kind: &'static str,
    pub app: Option<String>,
    pub data: String,
    pub digest: [u8; 32],
}

impl Event {
    /// A file measured by its content, read through `file` (see
    /// [`file_digest`]); its `data` is `path`.
    pub fn file(
        settings: &Settings,
        kind: &'static str,
        file: &File,
        path: &Path,
    ) -> Result<Event, MeasureError> {
        Ok(Event {
            kind,
            app: None,
            data: path.display().to_string(),
            digest: file_digest(settings, file, path)?,
        })
    }

    /// A text measured as itself.
    pub fn text(kind: &'static str, app: Option<String>, data: String) -> Event {
        let digest = sha256(data.as_bytes());
        Event {
            kind,
            app,
            data,
            digest,
        }
    }
}

/// A pod launch to measure.
#[derive(Debug)]
pub struct Launch<'a> {
    pub pod: &'a str,
    pub pod_name: &'a str,
    pub events: Vec<Event>,
    /// `--require-tpm` (the pod's config says it).
    pub require_tpm: bool,
}

/// How a launch was measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event extended into the TPM and logged.
    Extended { events: usize },
    /// Logged only: why there was no TPM.
    Logged { why: String },
}

/// Measures `launch`: under the log's lock, each event is extended into
/// the PCR (when there is a TPM) and appended to the log; the log is synced
/// before this returns. Without a TPM, or when it fails part-way, the rest
/// is logged without it, unless a TPM is required: then the launch is
/// refused (what was measured before stays logged, as it was extended).
pub fn measure(settings: &Settings, launch: Launch<'_>) -> Result<Outcome, MeasureError> {
    let required = settings.required_by(launch.require_tpm);
    let mut log = Appender::open(&settings.log).map_err(MeasureError::io(&settings.log))?;
    let (mut tpm, mut why) = match settings.open_at_epoch() {
        Ok(opened) => (Some(opened), None),
        Err(w) => (None, Some(w)),
    };
    if let (Some(by), Some(w)) = (&required, &why) {
        return Err(MeasureError::Refused {
            by: by.clone(),
            why: w.clone(),
        });
    }
    let now = crate::pod::state::now_secs();
    let count = launch.events.len();
    for event in launch.events {
        let mut extended = None;
        if let Some((t, epoch)) = tpm.as_mut() {
            let epoch = *epoch;
            // The PCR's value before the first extension of an epoch, or
            // after records that were not extended.
            let continues = log.last().is_some_and(|r| {
                r.pcr == settings.pcr && r.tpm.as_ref().is_some_and(|x| x.epoch() == epoch)
            });
            let base = if continues {
                Ok(None)
            } else {
                t.read_pcr(settings.pcr).map(|v| Some(log::hex(&v)))
            };
            match base.and_then(|b| t.extend(settings.pcr, &event.digest).map(|()| b)) {
                Ok(base) => {
                    extended = Some(Extended {
                        reset_count: epoch.reset_count,
                        restart_count: epoch.restart_count,
                        base,
                    })
                }
                Err(e) => {
                    let w = crate::report::error_line(&e);
                    if let Some(by) = &required {
                        let _ = log.sync();
                        return Err(MeasureError::Refused {
                            by: by.clone(),
                            why: w,
                        });
                    }
                    why = Some(w);
                    tpm = None;
                }
            }
        }
        let record = Record {
            recnum: 0,
            pcr: settings.pcr,
            digests: vec![Digest {
                hash_alg: "sha256".into(),
                digest: log::hex(&event.digest),
            }],
            content_type: CONTENT_TYPE.into(),
            content: Content {
                event: event.kind.into(),
                pod: launch.pod.into(),
                pod_name: launch.pod_name.into(),
                app: event.app,
                data: event.data,
                time: now,
            },
            tpm: extended,
        };
        log.append(record)
            .map_err(MeasureError::io(&settings.log))?;
    }
    log.sync().map_err(MeasureError::io(&settings.log))?;
    Ok(match why {
        None => Outcome::Extended { events: count },
        Some(why) => Outcome::Logged { why },
    })
}

/// A file's identity for the digest cache: what changes when its content can have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    id: Identity,
    sha256: String,
}

/// The most files the cache remembers (a kernel and an initramfs or two).
const CACHE_ENTRIES: usize = 16;

/// The SHA-256 of the open file `file` (`path` for messages), read with
/// `pread` so its offset stays where the loader expects it. Cached per
/// identity in the store (see the module doc); a file that changes while
/// it is hashed is refused.
pub fn file_digest(
    settings: &Settings,
    file: &File,
    path: &Path,
) -> Result<[u8; 32], MeasureError> {
    let err = MeasureError::io(path);
    let meta = file.metadata().map_err(err)?;
    let id = Identity::of(&meta);
    let key = format!("{}:{}", id.dev, id.ino);
    let mut cache: BTreeMap<String, Cached> = crate::trust::read_bounded(&settings.cache, 64 << 10)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(c) = cache.get(&key).filter(|c| c.id == id) {
        if let Some(d) = log::from_hex(&c.sha256) {
            return Ok(d);
        }
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut off = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, off)
            .map_err(MeasureError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    drop(buf);
    let after = file.metadata().map_err(MeasureError::io(path))?;
    if Identity::of(&after) != id || off != id.size {
        return Err(MeasureError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("the file changed while it was measured"),
        });
    }
    let digest: [u8; 32] = h.finalize().into();
    // Over the cap, other files' entries make room: never the one just made.
    let excess = (cache.len() + 1).saturating_sub(CACHE_ENTRIES);
    let stale: Vec<String> = cache
        .keys()
        .filter(|k| **k != key)
        .take(excess)
        .cloned()
        .collect();
    for k in stale {
        cache.remove(&k);
    }
    cache.insert(
        key,
        Cached {
            id,
            sha256: crate::image::digest::hex(&digest),
        },
    );
    // Best effort: a cache that cannot be written costs the next launch a hash.
    if let Ok(bytes) = serde_json::to_vec(&cache) {
        let _ = crate::pod::state::write_atomic(&settings.cache, &bytes);
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            tpm: Address::None,
            no_tpm_why: Some("no TPM in this test".into()),
            pcr: DEFAULT_PCR,
            require_tpm: false,
            log: dir.join(LOG_FILE),
            config: dir.join(CONFIG_FILE),
            cache: dir.join(CACHE_FILE),
        }
    }

    #[test]
    fn file_digests_are_cached_by_identity() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let s = settings(dir.as_path());
        let path = dir.as_path().join("kernel");
        std::fs::write(&path, b"kernel one").unwrap();
        let d1 = file_digest(&s, &File::open(&path).unwrap(), &path).unwrap();
        assert_eq!(d1, <[u8; 32]>::from(Sha256::digest(b"kernel one")));
        assert!(s.cache.exists());
        // Cached: the answer comes from the cache (a forged entry for the
        // same identity shows it is read).
        let text = std::fs::read_to_string(&s.cache).unwrap();
        std::fs::write(&s.cache, text.replace(&log::hex(&d1), &"ab".repeat(32))).unwrap();
        assert_eq!(
            file_digest(&s, &File::open(&path).unwrap(), &path).unwrap(),
            [0xab; 32]
        );
        // Rewritten in place, same size: the change time moved, hashed again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, b"kernel two").unwrap();
        let d2 = file_digest(&s, &File::open(&path).unwrap(), &path).unwrap();
        assert_eq!(d2, <[u8; 32]>::from(Sha256::digest(b"kernel two")));
        // A corrupt cache is ignored.
        std::fs::write(&s.cache, b"{not json").unwrap();
        assert_eq!(
            file_digest(&s, &File::open(&path).unwrap(), &path).unwrap(),
            d2
        );
    }

    #[test]
    fn without_a_tpm_the_launch_is_logged_or_refused() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let s = settings(dir.as_path());
        let launch = |require_tpm| Launch {
            pod: "0123",
            pod_name: "web",
            events: vec![
                Event::text("cmdline", None, "console=ttyS0".into()),
                Event::text(
                    "image",
                    Some("web".into()),
                    "x@sha256:00 accepted unsigned (scope default)".into(),
                ),
            ],
            require_tpm,
        };
        let out = measure(&s, launch(false)).unwrap();
        assert!(matches!(out, Outcome::Logged { ref why } if why.contains("no TPM in this test")));
        let (records, bad) = log::read_all(&s.log, MAX_LOG).unwrap();
        assert_eq!((records.len(), bad), (2, 0));
        assert!(records.iter().all(|r| r.tpm.is_none()));
        assert_eq!(records[1].content.app.as_deref(), Some("web"));
        let e = measure(&s, launch(true)).unwrap_err();
        assert_eq!(e.kind(), Failure::Untrusted);
        assert!(e.to_string().contains("--require-tpm"), "{e}");
        let strict = Settings {
            require_tpm: true,
            ..s.clone()
        };
        let e = measure(&strict, launch(false)).unwrap_err();
        assert!(e.to_string().contains("require_tpm"), "{e}");
        // Refusals add nothing to the log.
        assert_eq!(log::read_all(&s.log, MAX_LOG).unwrap().0.len(), 2);
    }

    #[test]
    fn an_unreachable_tpm_refuses_early_or_is_left_to_the_measurement() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let s = Settings {
            tpm: Address::Unix(dir.as_path().join("no-swtpm.sock")),
            no_tpm_why: None,
            ..settings(dir.as_path())
        };
        // Required: refused before the pod is made, wherever it is measured.
        for measured_here in [false, true] {
            let e = s.precheck("web", true, measured_here).unwrap_err();
            assert_eq!(e.kind(), Failure::Untrusted, "{e}");
            assert!(e.to_string().contains("cannot reach the TPM"), "{e}");
        }
        // Not required, measured by this process: the measurement finds the
        // TPM unreachable and logs the launch without it (and warns).
        s.precheck("web", false, true).unwrap();
        let launch = Launch {
            pod: "0123",
            pod_name: "web",
            events: vec![Event::text("cmdline", None, "console=ttyS0".into())],
            require_tpm: false,
        };
        let out = measure(&s, launch).unwrap();
        assert!(
            matches!(out, Outcome::Logged { ref why } if why.contains("cannot reach the TPM")),
            "{out:?}"
        );
    }

    #[test]
    fn settings_come_from_measure_json_and_the_environment() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let root = dir.as_path();
        std::fs::write(
            root.join(CONFIG_FILE),
            br#"{"tpm":"swtpm:host=127.0.0.1,port=2321","pcr":14,"require_tpm":true}"#,
        )
        .unwrap();
        // Not through HUSK_TPM: the tests of this process share the environment.
        if std::env::var_os(TPM_ENV).is_none() {
            let s = Settings::load(root).unwrap();
            assert_eq!(s.tpm, Address::Tcp("127.0.0.1".into(), 2321));
            assert_eq!((s.pcr, s.require_tpm), (14, true));
        }
        for bad in [
            r#"{"pcr":24}"#,
            r#"{"colour":"blue"}"#,
            r#"{"tpm":"tcp:1"}"#,
            "[1",
        ] {
            std::fs::write(root.join(CONFIG_FILE), bad).unwrap();
            let e = Settings::load(root).unwrap_err();
            assert_eq!(e.kind(), Failure::Usage, "{bad}: {e}");
        }
    }
}
