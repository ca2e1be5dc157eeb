//! The decision, made twice: when an image is pulled (by the helper, with
//! the signatures the registry holds) and again each time `husk run` boots
//! it (by `husk`, from the record the pull left in the store's index).
//!
//! Every requirement of the image's scope must accept it, as in
//! containers/image: `reject` refuses, `insecureAcceptAnything` accepts,
//! `sigstoreSigned` and `signedBy` accept when at least one signature (a
//! sigstore attachment, or a GPG signature in lookaside storage) verifies
//! with one of their keys, is for the image's manifest digest, and names an
//! identity their `signedIdentity` accepts.
//!
//! The record ([`Admission`]) keeps, for every signature that verified and
//! was for the image's digest, the key's fingerprint (for GPG, the hash of
//! the keyring file: the `husk` binary carries no OpenPGP parser to take a
//! key's fingerprint, and a changed keyring asks for a new pull) and the
//! signed name.
//! That is all the second decision needs: it runs the same rules over the
//! record instead of over the registry, without network and without
//! verifying anything again (the blobs in the store are content-addressed,
//! so the digest the record speaks of is the one that boots). A policy
//! tightened after the pull therefore applies: an image admitted unsigned,
//! or signed by a key the policy no longer names, is refused; a key added
//! later cannot admit an image pulled before it (pull it again).

use serde::{Deserialize, Serialize};

use super::policy::{Policy, Requirement};
use super::TrustError;
use crate::image::reference::{self, Ref};

/// One signature that verified for the image's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedSignature {
    /// `sha256:` of the key's SPKI DER (sigstore), or `keyring sha256:` of
    /// the keyring's bytes (GPG).
    pub key: String,
    /// The docker reference the signature names.
    pub identity: String,
}

/// How an image was admitted, kept with its name in the store's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// For people: `accepted unsigned`, or the requirement and key(s).
    pub admitted_by: String,
    /// The signatures found valid for the image's digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<AcceptedSignature>,
}

/// What the record says of an image that was never verified by a pull
/// (an import, or an image stored before records existed).
pub const UNSIGNED: &str = "accepted unsigned";

/// Which signatures deciding for `reqs` needs: `(sigstore attachments,
/// GPG lookaside signatures)`; none when a `reject` refuses outright.
pub fn needs_signatures(reqs: &[Requirement]) -> (bool, bool) {
    if reqs.iter().any(|r| matches!(r, Requirement::Reject)) {
        return (false, false);
    }
    (
        reqs.iter()
            .any(|r| matches!(r, Requirement::SigstoreSigned { .. })),
        reqs.iter()
            .any(|r| matches!(r, Requirement::SignedBy { .. })),
    )
}

/// The image being decided on.
pub struct Subject<'a> {
    /// Its name, as stored (for messages).
    pub name: &'a str,
    /// Its manifest digest (the top-level one: an index's when pulled by an index).
    pub digest: &'a str,
    /// Its parsed name, if it has one (a nameless import has none).
    pub intended: Option<&'a Ref>,
}

/// Decides on `subject` under `reqs` (found under `scope`). `signed(req)`
/// gives the signatures by the keys of the signed requirement `req` valid
/// for the digest, or why there is none.
pub fn evaluate(
    subject: &Subject<'_>,
    scope: &str,
    reqs: &[Requirement],
    mut signed: impl FnMut(&Requirement) -> Result<Result<Vec<AcceptedSignature>, String>, TrustError>,
) -> Result<Admission, TrustError> {
    let refuse = |req: &Requirement, reason: String| TrustError::Refused {
        image: subject.name.to_string(),
        digest: subject.digest.to_string(),
        requirement: format!("{} (scope {scope})", req.describe()),
        reason,
    };
    let mut all = Vec::new();
    let mut admitting = Vec::new();
    for req in reqs {
        match req {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => {
                return Err(refuse(req, "the policy rejects every image here".into()))
            }
            Requirement::SigstoreSigned { identity, .. }
            | Requirement::SignedBy { identity, .. } => {
                let found = signed(req)?.map_err(|why| refuse(req, why))?;
                let Some(intended) = subject.intended else {
                    return Err(refuse(
                        req,
                        "the image has no name to match a signature".into(),
                    ));
                };
                let ok: Vec<&AcceptedSignature> = found
                    .iter()
                    .filter(|s| identity.matches(intended, &s.identity))
                    .collect();
                let Some(first) = ok.first() else {
                    let names: Vec<&str> = found.iter().map(|s| s.identity.as_str()).collect();
                    return Err(refuse(
                        req,
                        format!(
                            "the signature names {}, which {} does not accept for {}",
                            names.join(", "),
                            identity.describe(),
                            intended.name
                        ),
                    ));
                };
                admitting.push(first.key.clone());
                for s in found {
                    if !all.contains(&s) {
                        all.push(s);
                    }
                }
            }
        }
    }
    admitting.dedup();
    Ok(Admission {
        admitted_by: if admitting.is_empty() {
            UNSIGNED.to_string()
        } else {
            format!("signed by {}", admitting.join(", "))
        },
        signatures: all,
    })
}

/// `husk run`'s check: does `record` (None: never verified) still satisfy
/// the policy in force for the stored image `name` with manifest `digest`?
/// Returns the decision, for the pod's config and its measured launch:
/// `accepted unsigned (scope default)`, `signed by sha256:… (scope reg.io/app)`.
pub fn recheck(
    policy: &Policy,
    name: &str,
    digest: &str,
    record: Option<&Admission>,
) -> Result<String, TrustError> {
    let intended = reference::parse_exact(name)
        .ok()
        .filter(|r| r.tag.is_some() || r.digest.is_some());
    let (scope, reqs) = match &intended {
        Some(r) => policy.requirements_for(r),
        None => ("default".to_string(), policy.default.as_slice()),
    };
    let subject = Subject {
        name,
        digest,
        intended: intended.as_ref(),
    };
    let recorded = record.map(|a| a.signatures.as_slice()).unwrap_or_default();
    evaluate(&subject, &scope, reqs, |req| {
        let mut fingerprints = Vec::new();
        match req {
            Requirement::SigstoreSigned { keys, .. } => {
                for k in keys {
                    fingerprints.push(k.load()?.fingerprint());
                }
            }
            Requirement::SignedBy { keys, .. } => {
                for k in keys {
                    fingerprints.push(k.keyring_id()?);
                }
            }
            _ => {}
        }
        let by: Vec<AcceptedSignature> = recorded
            .iter()
            .filter(|s| fingerprints.contains(&s.key))
            .cloned()
            .collect();
        Ok(if by.is_empty() {
            Err(if recorded.is_empty() {
                "it was stored without a verified signature (pull it again)".to_string()
            } else {
                "none of its verified signatures is by these keys (pull it again)".to_string()
            })
        } else {
            Ok(by)
        })
    })
    .map(|a| format!("{} (scope {scope})", a.admitted_by))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::trust::key::{PublicKey, TEST_PEM};

    fn policy(transport_scope: &str, reqs: &str) -> Policy {
        let text = format!(
            r#"{{"default":[{{"type":"insecureAcceptAnything"}}],
            "transports":{{"docker":{{"{transport_scope}":{reqs}}}}}}}"#
        );
        Policy::parse(text.as_bytes(), Path::new("/p.json")).unwrap()
    }

    fn key_data() -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(TEST_PEM)
    }

    #[test]
    fn a_tightened_policy_applies_to_stored_images() {
        let d = format!("sha256:{}", "b".repeat(64));
        let fp = PublicKey::from_pem(TEST_PEM.as_bytes())
            .unwrap()
            .fingerprint();
        let signed = Admission {
            admitted_by: format!("signed by {fp}"),
            signatures: vec![AcceptedSignature {
                key: fp.clone(),
                identity: "reg.io/app:1".into(),
            }],
        };
        let unsigned = Admission {
            admitted_by: UNSIGNED.into(),
            signatures: vec![],
        };
        let open = Policy::builtin();
        assert!(recheck(&open, "reg.io/app:1", &d, Some(&unsigned)).is_ok());
        assert!(recheck(&open, &d, &d, None).is_ok());
        let strict = policy(
            "reg.io/app",
            &format!(
                r#"[{{"type":"sigstoreSigned","keyData":"{}"}}]"#,
                key_data()
            ),
        );
        assert_eq!(
            recheck(&strict, "reg.io/app:1", &d, Some(&signed)).unwrap(),
            format!("signed by {fp} (scope reg.io/app)")
        );
        assert_eq!(
            recheck(&open, &d, &d, None).unwrap(),
            "accepted unsigned (scope default)"
        );
        let e = recheck(&strict, "reg.io/app:1", &d, Some(&unsigned)).unwrap_err();
        assert_eq!(e.kind(), crate::failure::Failure::Untrusted);
        assert!(
            e.to_string().contains("without a verified signature"),
            "{e}"
        );
        assert!(recheck(&strict, "reg.io/app:1", &d, None).is_err());
        // The same signature does not admit another tag (matchRepoDigestOrExact).
        let e = recheck(&strict, "reg.io/app:2", &d, Some(&signed)).unwrap_err();
        assert!(e.to_string().contains("does not accept"), "{e}");
        // Other scopes are untouched.
        assert!(recheck(&strict, "reg.io/other:1", &d, None).is_ok());
        let rejecting = policy("reg.io", r#"[{"type":"reject"}]"#);
        let e = recheck(&rejecting, "reg.io/app:1", &d, Some(&signed)).unwrap_err();
        assert!(e.to_string().contains("reject (scope reg.io)"), "{e}");
    }

    #[test]
    fn signatures_are_fetched_only_when_they_can_decide() {
        use Requirement::*;
        let s = SigstoreSigned {
            keys: vec![],
            identity: crate::trust::identity::SignedIdentity::MatchExact,
        };
        assert_eq!(needs_signatures(std::slice::from_ref(&s)), (true, false));
        assert_eq!(needs_signatures(&[InsecureAcceptAnything]), (false, false));
        assert_eq!(needs_signatures(&[s, Reject]), (false, false));
    }
}
