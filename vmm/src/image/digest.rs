//! Content digests: only `sha256:<64 lowercase hex>` is accepted, the one
//! algorithm every registry and `docker save` uses; anything else is refused
//! rather than stored unverified.

use sha2::{Digest as _, Sha256};

use super::ImageError;

/// The hex part of a valid `sha256:<hex>` digest.
pub fn hex_of(digest: &str) -> Result<&str, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ImageError::Malformed(format!("unsupported digest {digest:?}")))?;
    if is_hex64(hex) {
        Ok(hex)
    } else {
        Err(ImageError::Malformed(format!(
            "malformed digest {digest:?}"
        )))
    }
}

/// Whether `s` is exactly 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `sha256:<hex>` of `bytes`.
pub fn of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// `sha256:<hex>` of the file at `path`, read in pieces (layers can be large).
pub fn of_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks `bytes` against `expected`.
pub fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), ImageError> {
    hex_of(expected)?;
    let actual = of(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_hex64() {
        let good = of(b"x");
        assert!(hex_of(&good).is_ok());
        assert!(hex_of(&good.to_uppercase()).is_err());
        assert!(hex_of("sha512:abcd").is_err());
        assert!(hex_of("sha256:abc").is_err());
        assert!(hex_of(&format!("{good}0")).is_err());
        assert_eq!(
            of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verify_reports_both_digests() {
        let err = verify("layer", b"abc", &of(b"abd")).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }));
        assert!(err.to_string().contains(&of(b"abc")));
        assert!(verify("layer", b"abc", &of(b"abc")).is_ok());
    }

    #[test]
    fn file_digest_is_the_bytes_digest() {
        let p = std::env::temp_dir().join(format!("husk-digest-{}", std::process::id()));
        std::fs::write(&p, b"some layer").unwrap();
        assert_eq!(of_file(&p).unwrap(), of(b"some layer"));
        std::fs::remove_file(&p).unwrap();
        assert!(of_file(&p).is_err());
    }
}
