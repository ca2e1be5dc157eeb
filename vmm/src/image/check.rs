//! `husk check` on the image store: every blob against its digest, every
//! image against the blobs its manifest names, and the debris an
//! interrupted pull, import or index update leaves.
//!
//! Checked, and what `--repair` does:
//! - each file in `tmp/`: a blob or scratch file of a pull or import that
//!   was killed (the check holds the exclusive ingest lock, so none is being
//!   written): removed;
//! - each `index.json.<pid>` whose process is gone: an index update killed
//!   between its write and its rename: removed;
//! - each file in `blobs/sha256/`: its name must be a digest and (unless
//!   `--quick`) its content must hash to it; a blob that does not is
//!   removed, since nothing can use it: the guest refuses it, and a later
//!   pull or import skips a digest already present, so only removing it
//!   lets a retry store it again;
//! - each image in `index.json`: its manifest must be present, intact and
//!   parse, and its config and layers be present, intact, of the sizes the
//!   manifest gives, the config parse. An image that fails is untagged
//!   (every name of it): it could never run, and `husk images` leaves it
//!   out with a warning;
//!   its good blobs stay until `husk gc`, and a pull or import brings it
//!   back whole.
//!
//! Reported only: an `index.json` that cannot be read (the names it held
//! cannot be rebuilt from the blobs: move it aside by hand). Blobs no image
//! uses are counted, not damage: `husk gc` removes them.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use super::{digest, ImageError, Store};
use crate::check::{Action, Finding, Totals};
use crate::private::FileLock;

impl Store {
    /// Takes the store's exclusive ingest lock, as `gc` does: waits for
    /// running pulls, imports and layer links, and keeps new ones out.
    pub fn lock_ingest(&self) -> Result<FileLock, ImageError> {
        self.blobs.lock_exclusive()
    }

    /// Removes every name of the image with manifest `digest`; returns them.
    pub fn untag_digest(&self, digest: &str) -> Result<Vec<String>, ImageError> {
        self.index.update(|entries| {
            let names = super::index::names_of(entries, digest);
            for n in &names {
                entries.remove(n);
            }
            Ok(names)
        })
    }

    /// Checks the store (see the module doc); `quick` skips hashing. The
    /// caller holds [`Store::lock_ingest`].
    pub fn check(&self, quick: bool) -> Result<(Vec<Finding>, Totals), ImageError> {
        let mut findings = leftovers(self.blobs.tmp_dir(), &self.dir)?;
        let mut totals = Totals::default();
        let (present, corrupt) = self.check_blobs(quick, &mut findings, &mut totals)?;
        let entries = match self.index.read() {
            Ok(entries) => entries,
            Err(e) => {
                findings.push(Finding::keep(
                    "image index",
                    crate::report::error_line(&e),
                    "the names it held cannot be rebuilt from the blobs: move index.json aside by hand",
                ));
                return Ok((findings, totals));
            }
        };
        let mut images: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, e) in &entries {
            images.entry(&e.digest).or_default().push(name);
        }
        let mut used = HashSet::new();
        for (digest, names) in images {
            totals.images += 1;
            used.insert(digest.to_string());
            if let Some(problem) = self.image_problem(digest, &corrupt, &mut used) {
                findings.push(Finding::fix(
                    format!("image {}", names.join(", ")),
                    problem,
                    Action::Untag(digest.to_string()),
                    "untag it (its intact blobs go on husk gc)",
                ));
            }
        }
        totals.unused_blobs = present.difference(&used).count();
        Ok((findings, totals))
    }

    /// Checks each file under `blobs/sha256/`; returns the digests present
    /// and those whose content does not match.
    fn check_blobs(
        &self,
        quick: bool,
        findings: &mut Vec<Finding>,
        totals: &mut Totals,
    ) -> Result<(HashSet<String>, HashSet<String>), ImageError> {
        let dir = self.blobs.dir();
        let listing =
            fs::read_dir(dir).map_err(ImageError::io(format!("cannot list {}", dir.display())))?;
        let (mut present, mut corrupt) = (HashSet::new(), HashSet::new());
        for entry in listing.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            if !digest::is_hex64(&name) || !regular {
                findings.push(Finding::fix(
                    path.display().to_string(),
                    "not a blob: not a regular file named by a sha256 digest",
                    Action::RemoveFile(path),
                    "remove it",
                ));
                continue;
            }
            totals.blobs += 1;
            let digest = format!("sha256:{name}");
            if !quick {
                match digest::of_file(&path) {
                    Ok(actual) if actual == digest => {}
                    Ok(actual) => {
                        findings.push(Finding::fix(
                            format!("blob {digest}"),
                            format!(
                                "its content does not match its digest (it hashes to {actual})"
                            ),
                            Action::RemoveFile(path),
                            "remove it",
                        ));
                        corrupt.insert(digest);
                        continue;
                    }
                    Err(e) => {
                        findings.push(Finding::keep(
                            format!("blob {digest}"),
                            format!("cannot be read: {e}"),
                            "an I/O error: check the file system",
                        ));
                        corrupt.insert(digest);
                        continue;
                    }
                }
            }
            present.insert(digest);
        }
        Ok((present, corrupt))
    }

    /// What is wrong with the image whose manifest is `digest`, if anything;
    /// adds the blobs it names to `used`.
    fn image_problem(
        &self,
        digest: &str,
        corrupt: &HashSet<String>,
        used: &mut HashSet<String>,
    ) -> Option<String> {
        if corrupt.contains(digest) {
            return Some(format!("its manifest {digest} is corrupt"));
        }
        let m = match self.read_manifest(digest) {
            Ok(m) => m,
            Err(e) => return Some(crate::report::error_line(&e)),
        };
        let parts =
            std::iter::once(("config", &m.config)).chain(m.layers.iter().map(|l| ("layer", l)));
        let mut problem = None;
        for (what, d) in parts {
            used.insert(d.digest.clone());
            if problem.is_some() {
                continue;
            }
            let path = match self.blobs.path(&d.digest) {
                Ok(p) => p,
                Err(e) => {
                    problem = Some(crate::report::error_line(&e));
                    continue;
                }
            };
            problem = if corrupt.contains(&d.digest) {
                Some(format!("its {what} {} is corrupt", d.digest))
            } else {
                match fs::metadata(&path) {
                    Err(_) => Some(format!("its {what} {} is missing", d.digest)),
                    Ok(md) if md.len() != d.size => Some(format!(
                        "its {what} {} has {} bytes, the manifest says {}",
                        d.digest,
                        md.len(),
                        d.size
                    )),
                    Ok(_) => None,
                }
            };
        }
        problem.or_else(|| {
            self.read_config(&m)
                .err()
                .map(|e| crate::report::error_line(&e))
        })
    }
}

/// The temp files of interrupted writes: everything in `tmp/` (the caller
/// holds the exclusive ingest lock), and each `index.json.<pid>` in
/// `store_dir` whose process is gone.
fn leftovers(tmp: &Path, store_dir: &Path) -> Result<Vec<Finding>, ImageError> {
    let mut found = Vec::new();
    let listing =
        fs::read_dir(tmp).map_err(ImageError::io(format!("cannot list {}", tmp.display())))?;
    for entry in listing.flatten() {
        found.push(Finding::fix(
            entry.path().display().to_string(),
            "left by an interrupted pull or import",
            Action::RemoveFile(entry.path()),
            "remove it",
        ));
    }
    let listing = fs::read_dir(store_dir).map_err(ImageError::io(format!(
        "cannot list {}",
        store_dir.display()
    )))?;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("index.json.")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::pod::state::process_start_time(pid).is_none() {
            found.push(Finding::fix(
                entry.path().display().to_string(),
                "left by an interrupted index update",
                Action::RemoveFile(entry.path()),
                "remove it",
            ));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Repair;
    use std::os::unix::fs::PermissionsExt;

    /// A store under a fresh directory with one image of one layer, named
    /// `t:1`; returns (store, manifest digest, layer digest).
    fn store_with_image(name: &str) -> (Store, String, String) {
        let root = std::env::temp_dir().join(format!("husk-check-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let store = Store::open(&root).unwrap();
        let layer = b"not really a tarball, never opened on the host".to_vec();
        let layer_digest = digest::of(&layer);
        let config = br#"{"created":"2024-01-01T00:00:00Z","config":{"Cmd":["sh"]}}"#;
        let config_digest = digest::of(config);
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let mdigest = digest::of(m.as_bytes());
        let b = &store.blobs;
        b.put_bytes("layer", &layer, &layer_digest).unwrap();
        b.put_bytes("config", config, &config_digest).unwrap();
        b.put_bytes("manifest", m.as_bytes(), &mdigest).unwrap();
        store
            .tag(&[("docker.io/library/t:1".into(), mdigest.clone())], None)
            .unwrap();
        (store, mdigest, layer_digest)
    }

    fn check(store: &Store, quick: bool) -> Vec<Finding> {
        let _ingest = store.lock_ingest().unwrap();
        store.check(quick).unwrap().0
    }

    /// Overwrites a blob (they are 0444) with `bytes`.
    fn overwrite(store: &Store, digest: &str, bytes: &[u8]) {
        let p = store.blobs.path(digest).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, bytes).unwrap();
    }

    #[test]
    fn a_whole_store_is_clean() {
        let (store, ..) = store_with_image("clean");
        let _ingest = store.lock_ingest().unwrap();
        let (found, totals) = store.check(false).unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(
            (totals.images, totals.blobs, totals.unused_blobs),
            (1, 3, 0)
        );
    }

    #[test]
    fn a_corrupt_layer_is_found_by_hash_and_its_image_untagged() {
        let (store, mdigest, layer) = store_with_image("corrupt");
        let mut bytes = fs::read(store.blobs.path(&layer).unwrap()).unwrap();
        bytes[3] ^= 1;
        overwrite(&store, &layer, &bytes);
        // Same size: --quick cannot see it.
        assert!(check(&store, true).is_empty());
        let found = check(&store, false);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].problem.contains("does not match its digest"));
        assert!(matches!(
            &found[0].repair,
            Repair::Do {
                action: Action::RemoveFile(_),
                ..
            }
        ));
        assert_eq!(found[1].subject, "image docker.io/library/t:1");
        assert!(
            found[1].problem.contains("is corrupt"),
            "{}",
            found[1].problem
        );
        assert!(
            matches!(&found[1].repair, Repair::Do { action: Action::Untag(d), .. } if *d == mdigest)
        );
    }

    #[test]
    fn a_truncated_manifest_or_short_layer_is_found_without_hashing() {
        let (store, mdigest, layer) = store_with_image("short");
        overwrite(&store, &layer, b"short");
        let found = check(&store, true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].problem.contains("bytes, the manifest says"),
            "{}",
            found[0].problem
        );
        let m = fs::read(store.blobs.path(&mdigest).unwrap()).unwrap();
        overwrite(&store, &mdigest, &m[..m.len() / 2]);
        let found = check(&store, true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].problem.contains("malformed"),
            "{}",
            found[0].problem
        );
    }

    #[test]
    fn a_missing_blob_and_debris_are_found() {
        let (store, _, layer) = store_with_image("debris");
        fs::remove_file(store.blobs.path(&layer).unwrap()).unwrap();
        fs::write(store.blobs.tmp_dir().join("123.0"), b"half a layer").unwrap();
        fs::write(store.blobs.dir().join("junk"), b"x").unwrap();
        // A dead writer's index temp file is debris; a live one's is not.
        fs::write(store.dir().join(format!("index.json.{}", i32::MAX)), b"{").unwrap();
        fs::write(
            store
                .dir()
                .join(format!("index.json.{}", std::process::id())),
            b"{",
        )
        .unwrap();
        let found = check(&store, false);
        let problems: Vec<&str> = found.iter().map(|f| f.problem.as_str()).collect();
        assert_eq!(found.len(), 4, "{problems:?}");
        assert!(problems.contains(&"left by an interrupted pull or import"));
        assert!(problems.contains(&"left by an interrupted index update"));
        assert!(problems.iter().any(|p| p.starts_with("not a blob")));
        assert!(problems.iter().any(|p| p.contains("is missing")));
    }

    #[test]
    fn an_unreadable_index_is_reported_not_repaired() {
        let (store, ..) = store_with_image("index");
        fs::write(store.dir().join("index.json"), b"{\"images\":").unwrap();
        let found = check(&store, false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(matches!(found[0].repair, Repair::Cannot(_)));
    }

    #[test]
    fn untag_removes_every_name_of_the_image() {
        let (store, mdigest, _) = store_with_image("untag");
        store
            .tag(&[("docker.io/library/t:2".into(), mdigest.clone())], None)
            .unwrap();
        let names = store.untag_digest(&mdigest).unwrap();
        assert_eq!(names.len(), 2);
        assert!(store.list().unwrap().is_empty());
    }
}
