//! The name → manifest index, `index.json`. Readers read it without a lock
//! (it is only ever replaced by `rename`, so they see the old or the new
//! file, never a mix); writers take `flock(index.lock)`, read, modify, write
//! a temp file, fsync, and rename it over the old one, so two husk
//! processes tagging at once both land.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blobs::flock;
use super::digest;
use super::reference;
use super::ImageError;

/// One stored name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `sha256:…` of the image manifest.
    pub digest: String,
    /// When the name was stored (seconds since the epoch).
    #[serde(default)]
    pub added: u64,
    /// How the trust policy admitted it when it was pulled (`None`: never
    /// verified, e.g. imported); `husk run` checks it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<crate::trust::Admission>,
}

/// Every stored name, sorted.
pub type Entries = BTreeMap<String, Entry>;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File_ {
    version: u32,
    images: Entries,
}

#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    lock: PathBuf,
}

impl Index {
    pub fn open(store_dir: &Path) -> Result<Index, ImageError> {
        Ok(Index {
            path: store_dir.join("index.json"),
            lock: store_dir.join("index.lock"),
        })
    }

    /// The current entries (empty when no image was ever stored).
    pub fn read(&self) -> Result<Entries, ImageError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entries::new()),
            Err(e) => {
                return Err(ImageError::io(format!(
                    "cannot read {}",
                    self.path.display()
                ))(e))
            }
        };
        let f: File_ = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::Malformed(format!("{} is corrupt: {e}", self.path.display()))
        })?;
        Ok(f.images)
    }

    /// Applies `change` under the index lock and replaces the file
    /// atomically; nothing is written when `change` fails.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut Entries) -> Result<R, ImageError>,
    ) -> Result<R, ImageError> {
        let _lock = flock(&self.lock, libc::LOCK_EX)?;
        let mut entries = self.read()?;
        let result = change(&mut entries)?;
        let text = serde_json::to_vec_pretty(&File_ {
            version: 1,
            images: entries,
        })
        .map_err(|e| ImageError::Malformed(format!("cannot encode the index: {e}")))?;
        let tmp = self
            .path
            .with_extension(format!("json.{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(crate::private::FILE_MODE)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::io(format!("cannot write {}", self.path.display()))(e)
        })?;
        Ok(result)
    }
}

/// Finds `reference` among `entries`: `(name, manifest digest)`.
///
/// Tried in order: the name as normalised (`busybox` →
/// `docker.io/library/busybox:latest`), a full `sha256:<hex>` digest, a
/// `name@sha256:…` whose digest is stored under that repository, and a hex
/// prefix of at least 12 digits that matches exactly one image.
pub fn lookup(entries: &Entries, reference: &str) -> Result<(String, String), ImageError> {
    let not_found = || ImageError::NotFound(reference.to_string());
    if let Some(hex) = reference.strip_prefix("sha256:") {
        if !digest::is_hex64(hex) {
            return Err(ImageError::BadReference {
                reference: reference.to_string(),
                reason: "a digest is sha256: and 64 lowercase hex digits".into(),
            });
        }
        return by_digest(entries, reference, |_| true).ok_or_else(not_found);
    }
    let parsed = reference::parse(reference);
    if let Ok(r) = &parsed {
        if let Some(e) = entries.get(&r.name) {
            return Ok((r.name.clone(), e.digest.clone()));
        }
        if let Some(d) = &r.digest {
            let repo = &r.repository;
            if let Some(found) = by_digest(entries, d, |n| reference::repository_of(n) == repo) {
                return Ok(found);
            }
        }
    }
    if reference.len() >= 12
        && reference.len() <= 64
        && reference.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let prefix = format!("sha256:{}", reference.to_ascii_lowercase());
        let mut hits: Vec<(&String, &Entry)> = entries
            .iter()
            .filter(|(_, e)| e.digest.starts_with(&prefix))
            .collect();
        hits.dedup_by(|a, b| a.1.digest == b.1.digest);
        let digests: std::collections::BTreeSet<&str> =
            hits.iter().map(|(_, e)| e.digest.as_str()).collect();
        match digests.len() {
            0 => {}
            1 => return Ok((hits[0].0.clone(), hits[0].1.digest.clone())),
            _ => {
                return Err(ImageError::Usage(format!(
                    "image id {reference} is ambiguous: give more digits"
                )))
            }
        }
    }
    match parsed {
        Ok(_) => Err(not_found()),
        Err(e) => Err(e),
    }
}

/// Every name of the image with manifest `digest`.
pub fn names_of(entries: &Entries, digest: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, e)| e.digest == digest)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Whether `reference` named `name` itself (rather than a digest or id).
pub fn is_name_lookup(entries: &Entries, reference: &str, name: &str) -> bool {
    !reference.starts_with("sha256:")
        && entries.contains_key(name)
        && reference::parse(reference).is_ok_and(|r| r.name == name)
}

/// The first name (sorted) with manifest `digest` that `want` accepts; a
/// name that is the digest itself (a nameless import) loses to real names.
fn by_digest(
    entries: &Entries,
    digest: &str,
    want: impl Fn(&str) -> bool,
) -> Option<(String, String)> {
    let mut hits: Vec<&String> = entries
        .iter()
        .filter(|(n, e)| e.digest == digest && want(n))
        .map(|(n, _)| n)
        .collect();
    hits.sort_by_key(|n| n.starts_with("sha256:"));
    hits.first().map(|n| ((*n).clone(), digest.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Entries {
        let mut e = Entries::new();
        let d1 = format!("sha256:{}", "ab".repeat(32));
        let d2 = format!("sha256:abababababab{}", "cd".repeat(26));
        e.insert(
            "docker.io/library/busybox:latest".into(),
            Entry {
                digest: d1.clone(),
                added: 0,
                admission: None,
            },
        );
        e.insert(
            "127.0.0.1:5000/app:v1".into(),
            Entry {
                digest: d2.clone(),
                added: 0,
                admission: None,
            },
        );
        e.insert(
            d2.clone(),
            Entry {
                digest: d2,
                added: 0,
                admission: None,
            },
        );
        e
    }

    #[test]
    fn lookups() {
        let e = entries();
        let d1 = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            lookup(&e, "busybox").unwrap().0,
            "docker.io/library/busybox:latest"
        );
        assert_eq!(lookup(&e, "library/busybox:latest").unwrap().1, d1);
        assert_eq!(
            lookup(&e, "127.0.0.1:5000/app:v1").unwrap().0,
            "127.0.0.1:5000/app:v1"
        );
        assert_eq!(
            lookup(&e, &d1).unwrap().0,
            "docker.io/library/busybox:latest"
        );
        assert_eq!(lookup(&e, &format!("busybox@{d1}")).unwrap().1, d1);
        assert!(matches!(
            lookup(&e, &format!("alpine@{d1}")),
            Err(ImageError::NotFound(_))
        ));
        // A 12-digit prefix shared by two images is ambiguous; a longer one is not.
        assert!(matches!(
            lookup(&e, "abababababab"),
            Err(ImageError::Usage(_))
        ));
        assert_eq!(lookup(&e, "ababababababab").unwrap().1, d1);
        let d2 = e["127.0.0.1:5000/app:v1"].digest.clone();
        // A digest with a real name resolves to the name.
        assert_eq!(lookup(&e, &d2).unwrap().0, "127.0.0.1:5000/app:v1");
        assert!(matches!(lookup(&e, "alpine"), Err(ImageError::NotFound(_))));
        assert!(matches!(
            lookup(&e, "sha256:xyz"),
            Err(ImageError::BadReference { .. })
        ));
        assert!(matches!(
            lookup(&e, "Bad Name"),
            Err(ImageError::BadReference { .. })
        ));
    }

    #[test]
    fn update_is_all_or_nothing() {
        let d = std::env::temp_dir().join(format!("husk-index-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let idx = Index::open(&d).unwrap();
        let dg = digest::of(b"m");
        idx.update(|e| {
            e.insert(
                "a".into(),
                Entry {
                    digest: dg.clone(),
                    added: 1,
                    admission: None,
                },
            );
            Ok(())
        })
        .unwrap();
        let err = idx.update(|e| {
            e.insert(
                "b".into(),
                Entry {
                    digest: dg.clone(),
                    added: 1,
                    admission: None,
                },
            );
            Err::<(), _>(ImageError::Malformed("no".into()))
        });
        assert!(err.is_err());
        let now = idx.read().unwrap();
        assert_eq!(now.keys().collect::<Vec<_>>(), ["a"]);
        // No temp file is left beside the index.
        let names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n == "index.json" || n == "index.lock"),
            "{names:?}"
        );
    }

    #[test]
    fn concurrent_updates_all_land() {
        let d = std::env::temp_dir().join(format!("husk-index-conc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let dg = digest::of(b"m");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let d = d.clone();
                let dg = dg.clone();
                std::thread::spawn(move || {
                    let idx = Index::open(&d).unwrap();
                    for j in 0..10 {
                        idx.update(|e| {
                            e.insert(
                                format!("n{i}-{j}"),
                                Entry {
                                    digest: dg.clone(),
                                    added: 0,
                                    admission: None,
                                },
                            );
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Index::open(&d).unwrap().read().unwrap().len(), 80);
    }
}
