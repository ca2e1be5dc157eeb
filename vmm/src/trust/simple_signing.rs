//! GPG "simple signing" (`signedBy`), as `skopeo copy --sign-by` and
//! podman make it: an OpenPGP signed message (normally compressed, with a
//! one-pass signature) whose literal data is a JSON payload of the same
//! shape as sigstore's, with `critical.type` `atomic container signature`.
//! The signatures live outside the registry, in the "lookaside" storage
//! `registries.d` names ([`super::registries_d`]).
//!
//! Verified with rPGP (pure Rust; the `husk` binary never links it): the
//! keyring a requirement names (`keyPath`, binary or armored, or `keyData`)
//! is parsed; a signature counts when it verifies with a primary key or a
//! subkey of one of its keys; only then is the payload parsed, strictly.
//! Not checked, unlike gpgme under containers/image: key expiry and
//! revocation. A record names the keyring by the hash of its bytes
//! ([`super::policy::KeySource::keyring_id`]).
//!
//! Only the `husk-pull` helper uses this module.

use std::io::Read;

use pgp::composed::{Deserializable, Message, SignedPublicKey, StandaloneSignature};
use pgp::packet::{PublicKey, PublicSubkey};
use pgp::types::{Fingerprint, KeyDetails, KeyId};

/// A key a detached signature may be checked with.
enum Attempt<'a> {
    Primary(&'a PublicKey),
    Sub(&'a PublicSubkey),
}

use super::policy::KeySource;
use super::sigstore::{parse_payload, Claims};
use super::TrustError;

/// `critical.type` of a GPG simple-signing payload.
const PAYLOAD_TYPE: &str = "atomic container signature";
/// The largest payload read out of a signature (a real one is ~300 bytes).
pub const MAX_PAYLOAD: u64 = 64 << 10;

/// The keyrings of one `signedBy` requirement.
pub struct GpgVerifier {
    rings: Vec<(String, Vec<SignedPublicKey>)>,
}

impl GpgVerifier {
    /// Reads and parses every keyring of `sources`.
    pub fn new(sources: &[KeySource]) -> Result<GpgVerifier, TrustError> {
        let mut rings = Vec::new();
        for source in sources {
            let what = match source {
                KeySource::Path(p) => p.display().to_string(),
                KeySource::Data(_) => "keyData".into(),
            };
            let bytes = source.keyring_bytes()?;
            let bad = |message: &str| TrustError::Key {
                what: what.clone(),
                message: message.into(),
            };
            let armored = bytes
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN PGP"));
            let parsed: Vec<_> = if armored {
                SignedPublicKey::from_armor_many(&bytes[..])
                    .map_err(|_| bad("not an OpenPGP public keyring"))?
                    .0
                    .collect()
            } else {
                SignedPublicKey::from_bytes_many(&bytes[..])
                    .map_err(|_| bad("not an OpenPGP public keyring"))?
                    .collect()
            };
            let keys = parsed
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("not an OpenPGP public keyring"))?;
            if keys.is_empty() {
                return Err(bad("holds no OpenPGP public key"));
            }
            rings.push((source.keyring_id()?, keys));
        }
        Ok(GpgVerifier { rings })
    }

    /// Verifies a detached, ASCII-armored signature (an ACI's `.aci.asc`,
    /// as `gpg --armor --detach-sign` writes it) over the bytes `data`
    /// gives, read once per key the signature names (normally once).
    /// Returns the id of the keyring that verified it; the error is why
    /// it does not count.
    pub fn verify_detached(
        &self,
        signature: &[u8],
        mut data: impl FnMut() -> std::io::Result<Box<dyn Read>>,
    ) -> Result<String, String> {
        let not_signature = || "the .asc file is not an armored OpenPGP signature".to_string();
        let (sig, _) =
            StandaloneSignature::from_armor_single(signature).map_err(|_| not_signature())?;
        let issuers: Vec<KeyId> = sig.signature.issuer().into_iter().cloned().collect();
        let fingerprints: Vec<Fingerprint> = sig
            .signature
            .issuer_fingerprint()
            .into_iter()
            .cloned()
            .collect();
        let named = |k: &dyn KeyDetails| {
            issuers.contains(&k.key_id()) || fingerprints.contains(&k.fingerprint())
        };
        for (id, keys) in &self.rings {
            for key in keys {
                let mut attempts = Vec::new();
                if named(&key.primary_key) {
                    attempts.push(Attempt::Primary(&key.primary_key));
                }
                attempts.extend(
                    key.public_subkeys
                        .iter()
                        .filter(|s| named(&s.key))
                        .map(|s| Attempt::Sub(&s.key)),
                );
                for k in attempts {
                    let reader = data().map_err(|e| format!("cannot read the signed file: {e}"))?;
                    let ok = match k {
                        Attempt::Primary(p) => sig.signature.verify(p, reader).is_ok(),
                        Attempt::Sub(s) => sig.signature.verify(s, reader).is_ok(),
                    };
                    if ok {
                        return Ok(id.clone());
                    }
                }
            }
        }
        Err("the signature does not verify with the policy's GPG keys".into())
    }

    /// Verifies one signature file; the error is why it does not count.
    pub fn verify(&self, signature: &[u8]) -> Result<Claims, String> {
        let not_signed = || "a signature is not an OpenPGP signed message".to_string();
        let msg = Message::from_bytes(signature).map_err(|_| not_signed())?;
        let mut msg = msg.decompress().map_err(|_| not_signed())?;
        if !matches!(msg, Message::SignedOnePass { .. } | Message::Signed { .. }) {
            return Err(not_signed());
        }
        let mut payload = Vec::new();
        (&mut msg)
            .take(MAX_PAYLOAD + 1)
            .read_to_end(&mut payload)
            .map_err(|_| not_signed())?;
        if payload.len() as u64 > MAX_PAYLOAD {
            return Err(format!(
                "a signed payload is larger than the limit of {MAX_PAYLOAD} bytes"
            ));
        }
        let ring = self
            .rings
            .iter()
            .find(|(_, keys)| {
                keys.iter().any(|k| {
                    msg.verify(k).is_ok() || k.public_subkeys.iter().any(|s| msg.verify(s).is_ok())
                })
            })
            .map(|(id, _)| id.clone())
            .ok_or_else(|| "no signature verifies with the policy's GPG keys".to_string())?;
        let (manifest_digest, docker_reference) = parse_payload(&payload, PAYLOAD_TYPE)?;
        Ok(Claims {
            manifest_digest,
            docker_reference,
            key: ring,
        })
    }
}
