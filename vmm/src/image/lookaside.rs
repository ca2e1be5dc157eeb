//! Reading GPG signatures from lookaside storage (`registries.d`,
//! [`crate::trust::registries_d`]): `<base>/<repository path>@sha256=<hex>/signature-<n>`
//! for n = 1, 2, … until one is missing, as containers/image lays them out.
//!
//! Only `file://` storage is read so far; an `http(s)://` lookaside is
//! refused with a clear reason rather than treated as "no signatures".
//! Bounded like the sigstore attachments: at most [`MAX_SIGNATURES`] files
//! of at most [`MAX_SIGNATURE`] bytes each.

use std::path::PathBuf;

use super::digest;
use super::reference::Ref;
use super::ImageError;

/// The most signatures considered for one image.
pub const MAX_SIGNATURES: usize = 64;
/// The largest signature file read.
pub const MAX_SIGNATURE: u64 = 64 << 10;

/// The signature files for `manifest_digest` of `r` under `base`: the outer
/// error is a failure to read, the inner one why they cannot be considered.
pub fn fetch(
    base: &str,
    r: &Ref,
    manifest_digest: &str,
) -> Result<Result<Vec<Vec<u8>>, String>, ImageError> {
    let Some(path) = base.strip_prefix("file://") else {
        return Ok(Err(format!(
            "lookaside storage {base} is not a file:// URL, the only kind husk reads yet"
        )));
    };
    let dir = PathBuf::from(format!(
        "{path}/{}@sha256={}",
        r.path,
        digest::hex_of(manifest_digest)?
    ));
    let mut out = Vec::new();
    for n in 1..=MAX_SIGNATURES + 1 {
        let file = dir.join(format!("signature-{n}"));
        match crate::trust::read_bounded(&file, MAX_SIGNATURE) {
            Ok(bytes) if n <= MAX_SIGNATURES => out.push(bytes),
            Ok(_) => {
                return Ok(Err(format!(
                    "the lookaside storage holds more than the {MAX_SIGNATURES} signatures husk considers"
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Ok(Err(format!("{}: {e}", file.display())))
            }
            Err(e) => return Err(ImageError::io(format!("cannot read {}", file.display()))(e)),
        }
    }
    Ok(Ok(out))
}
