//! Fetching an image's cosign-format signatures from its registry: the
//! manifest tagged `sha256-<hex of the manifest digest>.sig` in the same
//! repository, whose layers are the signed payloads (with the signature
//! itself in each layer's annotations). This is where cosign attaches them
//! and where `skopeo copy --sign-by-sigstore-private-key` writes them when
//! `use-sigstore-attachments` is on.
//!
//! A registry is untrusted, so everything is bounded before it is read:
//! the signature manifest to [`MAX_SIGNATURE_MANIFEST`], the number of
//! signatures to [`MAX_SIGNATURES`], each payload to [`MAX_PAYLOAD`] (and
//! to its descriptor's size and digest). Past a bound the image is refused
//! (the caller turns the reason into a refusal), never partly considered.
//! Only this one tag is ever asked for, so a repository with any number of
//! other signature tags costs nothing.

use serde::Deserialize;

use super::distribution::Registry;
use super::manifest::{Descriptor, OCI_MANIFEST};
use super::{digest, ImageError};
use crate::trust::sigstore::Signature;

/// The largest signature manifest read (a real one with one signature is
/// under 1 KiB).
pub const MAX_SIGNATURE_MANIFEST: u64 = 256 << 10;
/// The most signatures considered for one image.
pub const MAX_SIGNATURES: usize = 64;
/// The largest signed payload read (a real one is ~300 bytes).
pub const MAX_PAYLOAD: u64 = 64 << 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    layers: Vec<Descriptor>,
}

/// The signatures the registry holds for `manifest_digest`: the outer
/// error is the registry failing, the inner one why the signatures cannot
/// be considered at all (a refusal).
pub async fn fetch(
    reg: &Registry,
    manifest_digest: &str,
) -> Result<Result<Vec<Signature>, String>, ImageError> {
    let tag = format!("sha256-{}.sig", digest::hex_of(manifest_digest)?);
    let (bytes, stated) = match reg.manifest_capped(&tag, MAX_SIGNATURE_MANIFEST).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Ok(Err(format!(
                "the signature manifest {tag} is larger than the limit of {MAX_SIGNATURE_MANIFEST} bytes"
            )))
        }
        Err(ImageError::NotInRegistry(_)) => return Ok(Ok(Vec::new())),
        Err(e) => return Err(e),
    };
    if let Some(stated) = stated.filter(|s| s.starts_with("sha256:")) {
        if digest::of(&bytes) != stated {
            return Ok(Err(format!(
                "the signature manifest {tag} does not match its digest {stated}"
            )));
        }
    }
    let m: SigManifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            return Ok(Err(format!(
                "the signature manifest {tag} is malformed: {e}"
            )))
        }
    };
    if m.schema_version != 2 || m.media_type.as_deref().is_some_and(|t| t != OCI_MANIFEST) {
        return Ok(Err(format!(
            "the signature manifest {tag} is not an OCI image manifest"
        )));
    }
    if m.layers.len() > MAX_SIGNATURES {
        return Ok(Err(format!(
            "the registry holds {} signatures for it, more than the {MAX_SIGNATURES} husk considers",
            m.layers.len()
        )));
    }
    let mut out = Vec::new();
    for layer in m.layers {
        if digest::hex_of(&layer.digest).is_err() {
            return Ok(Err(format!(
                "a signature has a malformed digest {:?}",
                layer.digest
            )));
        }
        if layer.size > MAX_PAYLOAD {
            return Ok(Err(format!(
                "a signature payload of {} bytes is larger than the limit of {MAX_PAYLOAD}",
                layer.size
            )));
        }
        let Some(payload) = reg.small_blob(&layer.digest, layer.size).await? else {
            return Ok(Err(format!(
                "the signature payload {} is larger than its descriptor says",
                layer.digest
            )));
        };
        if digest::of(&payload) != layer.digest {
            return Ok(Err(format!(
                "the signature payload {} does not match its digest",
                layer.digest
            )));
        }
        out.push(Signature {
            media_type: layer.media_type,
            payload,
            annotations: layer.annotations,
        });
    }
    Ok(Ok(out))
}
