//! cosign-format ("sigstore") signatures with a public key, as `cosign sign
//! --key` and `skopeo copy --sign-by-sigstore-private-key` make them: a
//! "simple signing" JSON payload naming the image (its manifest digest and
//! a docker reference), and an ECDSA P-256 / SHA-256 signature of the
//! payload's exact bytes, ASN.1 DER, base64 in the layer annotation
//! `dev.cosignproject.cosign/signature`.
//!
//! The checks and their order are containers/image's
//! (`signature/internal/sigstore_payload.go`): the signature is verified
//! against the key before the payload is parsed at all; the payload is then
//! parsed strictly (exactly the fields of the format, no duplicates, the
//! `critical.type` it must have); the caller checks the digest and the
//! identity ([`super::admission`]). Keys are parsed with p256 (the point
//! must lie on the curve) when the helper loads them.
//!
//! Only the `husk-pull` helper uses this module (see [`super`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature as EcdsaSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

use super::policy::KeySource;
use super::TrustError;

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a sigstore payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// One signature as the registry holds it (untrusted until verified).
#[derive(Debug, Clone)]
pub struct Signature {
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// What a verified payload claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: String,
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// The fingerprint of the key that verified it.
    pub key: String,
}

/// The keys of one requirement, ready to verify with.
pub struct Verifier {
    keys: Vec<(String, VerifyingKey)>,
}

impl Verifier {
    /// Loads and fully parses `keys` (each must be a P-256 point).
    pub fn new(keys: &[KeySource]) -> Result<Verifier, TrustError> {
        let mut out = Vec::new();
        for source in keys {
            let key = source.load()?;
            let vk = VerifyingKey::from_public_key_der(&key.der).map_err(|_| TrustError::Key {
                what: match source {
                    KeySource::Path(p) => p.display().to_string(),
                    KeySource::Data(_) => "keyData".into(),
                },
                message: "not a valid ECDSA P-256 public key (the point is not on the curve)"
                    .into(),
            })?;
            out.push((key.fingerprint(), vk));
        }
        Ok(Verifier { keys: out })
    }

    /// Verifies `sig` with any of the keys, then parses its payload. The
    /// error is why this signature does not count.
    pub fn verify(&self, sig: &Signature) -> Result<Claims, String> {
        if sig.media_type != SIMPLE_SIGNING {
            return Err(format!(
                "a signature has media type {:?}, not {SIMPLE_SIGNING}",
                sig.media_type
            ));
        }
        let b64 = sig
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .ok_or_else(|| format!("a signature has no {SIGNATURE_ANNOTATION} annotation"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "a signature is not valid base64".to_string())?;
        let ecdsa = EcdsaSignature::from_der(&raw)
            .map_err(|_| "a signature is not an ASN.1 ECDSA signature".to_string())?;
        let key = self
            .keys
            .iter()
            .find(|(_, vk)| vk.verify(&sig.payload, &ecdsa).is_ok())
            .map(|(fp, _)| fp.clone())
            .ok_or_else(|| "no signature verifies with the policy's keys".to_string())?;
        let (manifest_digest, docker_reference) = parse_payload(&sig.payload, PAYLOAD_TYPE)?;
        Ok(Claims {
            manifest_digest,
            docker_reference,
            key,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    critical: Critical,
    /// Required, may be null (cosign writes `null`) or an object.
    optional: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    #[serde(rename = "type")]
    ty: String,
    image: Image,
    identity: Identity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    reference: String,
}

/// `(manifest digest, docker reference)` of a (verified) simple-signing
/// payload whose `critical.type` must be `ty` (sigstore's, or GPG's
/// `atomic container signature`: the format is otherwise the same).
pub(super) fn parse_payload(bytes: &[u8], ty: &str) -> Result<(String, String), String> {
    let p: Payload =
        serde_json::from_slice(bytes).map_err(|e| format!("a signed payload is malformed: {e}"))?;
    match &p.optional {
        serde_json::Value::Null => {}
        serde_json::Value::Object(o) => {
            let bad = o.get("creator").is_some_and(|c| !c.is_string())
                || o.get("timestamp").is_some_and(|t| !t.is_number());
            if bad {
                return Err("a signed payload's optional fields are malformed".into());
            }
        }
        _ => return Err("a signed payload's \"optional\" is not an object".into()),
    }
    if p.critical.ty != ty {
        return Err(format!(
            "a signed payload has type {:?}, not {ty:?}",
            p.critical.ty
        ));
    }
    Ok((p.critical.image.digest, p.critical.identity.reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_parsed_strictly() {
        let d = format!("sha256:{}", "a".repeat(64));
        let good = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"reg.io/a:1"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(
            parse_payload(good.as_bytes(), PAYLOAD_TYPE).unwrap(),
            (d.clone(), "reg.io/a:1".to_string())
        );
        let with_optional = good.replace("null", r#"{"creator":"x","timestamp":1,"other":[1]}"#);
        assert!(parse_payload(with_optional.as_bytes(), PAYLOAD_TYPE).is_ok());
        for bad in [
            good.replace(",\"optional\":null", ""),
            good.replace("cosign container image signature", "other"),
            good.replace("\"type\"", "\"extra\":1,\"type\""),
            good.replace("docker-reference", "docker-ref"),
            good.replace("null", r#"{"creator":1}"#),
            good.replace(
                r#""critical":{"#,
                r#""critical":{"type":"cosign container image signature","#,
            ),
            "[]".to_string(),
        ] {
            assert!(
                parse_payload(bad.as_bytes(), PAYLOAD_TYPE).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn signatures_are_refused_before_any_key_is_tried() {
        let v = Verifier { keys: Vec::new() };
        let mut sig = Signature {
            media_type: "text/plain".into(),
            payload: b"{}".to_vec(),
            annotations: BTreeMap::new(),
        };
        assert!(v.verify(&sig).unwrap_err().contains("media type"));
        sig.media_type = SIMPLE_SIGNING.into();
        assert!(v.verify(&sig).unwrap_err().contains("annotation"));
        sig.annotations
            .insert(SIGNATURE_ANNOTATION.into(), "not base64!".into());
        assert!(v.verify(&sig).unwrap_err().contains("base64"));
        sig.annotations
            .insert(SIGNATURE_ANNOTATION.into(), "AAAA".into());
        assert!(v.verify(&sig).unwrap_err().contains("ASN.1"));
    }

    #[test]
    fn an_off_curve_key_is_refused() {
        // The form of a P-256 SPKI, with a point that is not on the curve.
        let pem = crate::trust::key::TEST_PEM;
        let mut der = crate::trust::key::PublicKey::from_pem(pem.as_bytes())
            .unwrap()
            .der;
        let last = der.len() - 1;
        der[last] ^= 1;
        let off_curve = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let err = Verifier::new(&[KeySource::Data(off_curve.into_bytes())])
            .err()
            .unwrap();
        assert!(err.to_string().contains("not on the curve"), "{err}");
        assert!(Verifier::new(&[KeySource::Data(crate::trust::key::TEST_PEM.into())]).is_ok());
    }
}
