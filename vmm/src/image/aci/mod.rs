//! `husk import FILE.aci`: App Container Images (rkt's format), checked
//! against the trust policy and stored as a one-layer OCI image.
//!
//! Where it runs, and why: in the `husk-pull` helper, not in `husk`.
//! Unlike an OCI or docker archive, whose layers are copied into the store
//! unopened, an ACI's root file system is the archive itself (`manifest`
//! beside `rootfs/`), so storing it as a layer means reading every tar
//! header and rewriting every path. The design keeps layer tarballs out of
//! the `husk` binary (also every pod's VMM, whose memory is a target, and
//! which must not carry a tar parser fed by image authors), and keeps the
//! OpenPGP code a `.aci.asc` needs in the helper already. The helper reads
//! the archive as a stream with bounded memory ([`layer`]) and never
//! creates a file from it: the layer is unpacked in the guest, like any.
//!
//! Trust (rkt's `rkt trust` semantics expressed in `containers-policy.json`):
//! the image's name, `name:version` from its manifest ([`manifest`]), is
//! looked up in the policy's `docker` scopes, the same lookup `husk run`
//! repeats for every stored image. Under that scope:
//! - `signedBy`: `FILE.aci.asc`, a detached armored GPG signature over the
//!   ACI file as it is (compressed or not), must verify with one of the
//!   requirement's keyrings; a missing `.asc` refuses the image. The
//!   signature covers the manifest, so the signed identity is the
//!   manifest's name, matched by the requirement's `signedIdentity`.
//! - `sigstoreSigned`: refused (an ACI has no place for a sigstore signature).
//! - `reject` refuses; `insecureAcceptAnything` accepts, ignoring any
//!   `.asc` (as containers/image ignores signatures there); the built-in
//!   default accepts with a warning, as for a pull.
//!
//! When a `.asc` exists, the ACI is first copied into the store's tmp/ and
//! everything is read from that private copy, so the bytes converted are
//! the bytes verified even if the file changes meanwhile.
//!
//! `--tag NAME` does not rename an ACI: it states the name the caller
//! expects, and an ACI whose manifest names itself otherwise is refused
//! (rkt's check that a fetched image is the one asked for). Nothing is
//! stored before the whole archive passed and the policy admitted it.

pub mod layer;
pub mod manifest;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::manifest::OCI_MANIFEST;
use super::{digest, reference, Image, ImageError, Store};
use crate::trust::admission::{self, AcceptedSignature, Subject};
use crate::trust::policy::{Policy, Requirement};
use crate::trust::simple_signing::GpgVerifier;
use manifest::AciManifest;

/// The largest `.aci.asc` read (a real one is under 1 KB).
pub const MAX_SIGNATURE: u64 = 64 << 10;
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Imports the ACI at `path` (in this process: the helper's side).
pub fn import_here(
    store: &Store,
    path: &Path,
    tag: Option<&str>,
    policy_file: Option<&Path>,
) -> Result<Image, ImageError> {
    let expected = tag.map(reference::parse).transpose()?;
    let root = store.dir().parent().unwrap_or(store.dir());
    let policy = match policy_file {
        Some(p) => Policy::load_file(p)?,
        None => Policy::load(root)?,
    };
    let file = open_regular(path)?;
    let asc_path = PathBuf::from(format!("{}.asc", path.display()));
    let signature = read_signature(&asc_path)?;
    let _ingest = store.blobs().lock_shared()?;
    // With a signature to check, work from a private copy (module doc).
    let (source, _copy) = match &signature {
        Some(_) => {
            let (mut copy, guard) = store.blobs().scratch("aci")?;
            io::copy(&mut BufReader::new(file), &mut copy)
                .map_err(ImageError::io(format!("cannot copy {}", path.display())))?;
            (copy, Some(guard))
        }
        None => (file, None),
    };
    let bad_data =
        |e: io::Error| ImageError::Malformed(format!("{}: cannot decompress: {e}", path.display()));
    (&source)
        .rewind()
        .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
    let input = layer::decompress(BufReader::new(&source)).map_err(bad_data)?;
    let converted = layer::convert(input, store.blobs().made_writer("ACI layer")?)?;
    let m = AciManifest::parse(&converted.manifest)?;
    let r = m.reference()?;
    if let Some(want) = &expected {
        if want.name != r.name {
            return Err(ImageError::Malformed(format!(
                "the ACI names itself {}, not {}",
                r.name, want.name
            )));
        }
    }
    let config = serde_json::to_vec(&m.oci_config(&converted.digest)).expect("JSON encodes");
    let config_digest = digest::of(&config);
    let oci_manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": OCI_LAYER_TAR, "size": converted.size, "digest": converted.digest}],
    });
    let bytes = serde_json::to_vec(&oci_manifest).expect("JSON encodes");
    let manifest_digest = digest::of(&bytes);

    // Decide before anything is stored.
    let (scope, reqs) = policy.requirements_for(&r);
    let subject = Subject {
        name: &r.name,
        digest: &manifest_digest,
        intended: Some(&r),
    };
    let admitted = admission::evaluate(&subject, &scope, reqs, |req| match req {
        Requirement::SignedBy { keys, .. } => {
            let Some(sig) = &signature else {
                return Ok(Err(format!("no detached signature {}", asc_path.display())));
            };
            let verifier = GpgVerifier::new(keys)?;
            let reopen = || -> io::Result<Box<dyn Read>> {
                let mut f = source.try_clone()?;
                f.rewind()?;
                Ok(Box::new(BufReader::new(f)))
            };
            Ok(verifier.verify_detached(sig, reopen).map(|key| {
                vec![AcceptedSignature {
                    key,
                    identity: r.name.clone(),
                }]
            }))
        }
        Requirement::SigstoreSigned { .. } => {
            Ok(Err("an ACI carries no sigstore signature".into()))
        }
        _ => Ok(Ok(Vec::new())),
    })?;

    converted.layer.commit_made()?;
    store
        .blobs()
        .put_bytes("image config", &config, &config_digest)?;
    store
        .blobs()
        .put_bytes("image manifest", &bytes, &manifest_digest)?;
    store.tag(
        &[(r.name.clone(), manifest_digest.clone())],
        Some(&admitted),
    )?;
    policy.warn_if_unsigned_by_default(root, &r.name, &manifest_digest, &admitted);
    store.load(&r.name, &manifest_digest)
}

/// Opens `path` for reading if it is a regular file (a FIFO or a device
/// opens at once, without blocking, and is refused).
fn open_regular(path: &Path) -> Result<File, ImageError> {
    let (file, meta) = super::import::open_input(path)?;
    if !meta.is_file() {
        return Err(ImageError::Usage(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// The `.aci.asc` beside the ACI, if there is one (at most [`MAX_SIGNATURE`]).
fn read_signature(path: &Path) -> Result<Option<Vec<u8>>, ImageError> {
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(ImageError::Usage(m)) if m.ends_with("no such file or directory") => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    file.take(MAX_SIGNATURE + 1)
        .read_to_end(&mut buf)
        .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
    if buf.len() as u64 > MAX_SIGNATURE {
        return Err(ImageError::Malformed(format!(
            "{}: larger than {MAX_SIGNATURE} bytes, not a signature",
            path.display()
        )));
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests;
