//! Public keys as the policy names them: PEM `PUBLIC KEY` blocks holding a
//! SubjectPublicKeyInfo for an ECDSA P-256 key, the form `cosign
//! generate-key-pair` and `skopeo generate-sigstore-key` write.
//!
//! Read here without any elliptic-curve code, on purpose: the `husk`
//! binary (every pod's VMM) needs a key's fingerprint to check an image's
//! admission record and `husk trust add` wants to refuse a wrong file at
//! once, but neither verifies a signature. So this module checks the
//! form (the PEM label, the SPKI's algorithm and curve identifiers, the
//! point's length) and hashes the DER. Whether the point lies on the curve
//! is checked by [`super::sigstore`] in the pull helper, before any
//! signature is verified with it.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The largest key file read.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// The DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed
/// point: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 04… }.
const SPKI_P256_UNCOMPRESSED: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// The same with a compressed point (02 or 03 and 32 bytes).
const SPKI_P256_COMPRESSED: [u8; 26] = [
    0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x22, 0x00,
];

/// A P-256 public key, as its SPKI DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub der: Vec<u8>,
}

impl PublicKey {
    /// Reads the first PEM block of `pem`, which must be a `PUBLIC KEY`
    /// holding a P-256 SPKI. The error is a short reason.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_string())?;
        let begin = text
            .find("-----BEGIN ")
            .ok_or_else(|| "not a PEM file".to_string())?;
        let rest = &text[begin + "-----BEGIN ".len()..];
        let (label, rest) = rest
            .split_once("-----")
            .ok_or_else(|| "not a PEM file".to_string())?;
        if label != "PUBLIC KEY" {
            return Err(format!(
                "a PEM {label:?} block, not a \"PUBLIC KEY\" (a P-256 public key)"
            ));
        }
        let end = format!("-----END {label}-----");
        let (body, _) = rest
            .split_once(end.as_str())
            .ok_or_else(|| "the PEM block has no END line".to_string())?;
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "the PEM block is not valid base64".to_string())?;
        PublicKey::from_der(der)
    }

    /// Checks that `der` is a P-256 SPKI (form only; see the module doc).
    pub fn from_der(der: Vec<u8>) -> Result<PublicKey, String> {
        let ok = (der.len() == 91 && der.starts_with(&SPKI_P256_UNCOMPRESSED))
            || (der.len() == 59
                && der.starts_with(&SPKI_P256_COMPRESSED)
                && matches!(der[26], 0x02 | 0x03));
        if ok {
            Ok(PublicKey { der })
        } else {
            Err("not an ECDSA P-256 public key".into())
        }
    }

    /// `sha256:<hex>` of the SPKI DER: how records and `husk trust list`
    /// name a key.
    pub fn fingerprint(&self) -> String {
        let hex: String = Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }
}

/// Reads the key file `path`.
pub fn read_file(path: &std::path::Path) -> Result<PublicKey, super::TrustError> {
    let what = path.display().to_string();
    let bytes = super::read_bounded(path, MAX_KEY_FILE).map_err(|e| super::TrustError::Key {
        what: what.clone(),
        message: e.to_string(),
    })?;
    PublicKey::from_pem(&bytes).map_err(|message| super::TrustError::Key { what, message })
}

#[cfg(test)]
/// A P-256 public key made by `openssl ecparam -genkey -name prime256v1 | openssl pkey -pubout`.
pub(crate) const TEST_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErxE01t6UFfdaMM7nyKRU2B6tND9s
BmlhZwYIN/V3HQSpb3lcstcJ25pK5F75xA4LZEZkiOIBSAdCOHkfrrJKuw==
-----END PUBLIC KEY-----
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_pem_and_fingerprint() {
        let k = PublicKey::from_pem(TEST_PEM.as_bytes()).unwrap();
        assert_eq!(k.der.len(), 91);
        assert!(k.fingerprint().starts_with("sha256:"));
        assert_eq!(k.fingerprint().len(), 71);
    }

    #[test]
    fn other_things_are_refused() {
        // An Ed25519 key, a private key, garbage, a truncated block.
        let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(PublicKey::from_pem(ed.as_bytes())
            .unwrap_err()
            .contains("P-256"));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(PublicKey::from_pem(private.as_bytes())
            .unwrap_err()
            .contains("PRIVATE KEY"));
        assert!(PublicKey::from_pem(b"hello").is_err());
        assert!(PublicKey::from_pem(&TEST_PEM.as_bytes()[..60]).is_err());
        assert!(PublicKey::from_pem(&[0xff, 0xfe]).is_err());
    }
}
