//! `signedIdentity`: which name a signature must carry for the image being
//! admitted. The rules are containers/image's (`policy_reference_match.go`),
//! so a policy means the same to husk as to skopeo and podman:
//!
//! - `matchExact`: the signed name equals the image's, tag or digest included;
//! - `matchRepoDigestOrExact` (the default): as `matchExact` for an image
//!   named by tag; for an image named by digest, the same repository is
//!   enough (the digest itself is checked against the signature's);
//! - `matchRepository`: the same repository, whatever tag;
//! - `exactReference` / `exactRepository`: a fixed name or repository,
//!   whatever the image is called.
//!
//! `remapIdentity` (prefix rewriting for mirrors) is not supported: a policy
//! that uses it is refused when read, rather than evaluated differently.
//! A name-only signed reference (no tag, no digest) never matches the exact
//! forms, as in containers/image.

use crate::image::reference::{self, Ref};

/// A `signedIdentity` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(String),
    ExactRepository(String),
}

impl SignedIdentity {
    /// Parses a `signedIdentity` object; the error is a short reason.
    pub fn from_json(v: &serde_json::Value) -> Result<SignedIdentity, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| "signedIdentity is not an object".to_string())?;
        let ty = obj
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| "signedIdentity has no type".to_string())?;
        let only = |allowed: &[&str]| -> Result<(), String> {
            match obj
                .keys()
                .find(|k| *k != "type" && !allowed.contains(&k.as_str()))
            {
                Some(k) => Err(format!("signedIdentity {ty}: unknown field {k:?}")),
                None => Ok(()),
            }
        };
        let string = |field: &str| -> Result<String, String> {
            obj.get(field)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("signedIdentity {ty}: {field} is missing"))
        };
        match ty {
            "matchExact" => only(&[]).map(|()| SignedIdentity::MatchExact),
            "matchRepoDigestOrExact" => only(&[]).map(|()| SignedIdentity::MatchRepoDigestOrExact),
            "matchRepository" => only(&[]).map(|()| SignedIdentity::MatchRepository),
            "exactReference" => {
                only(&["dockerReference"])?;
                let r = string("dockerReference")?;
                let parsed = reference::parse_exact(&r).map_err(|e| e.to_string())?;
                if parsed.tag.is_none() && parsed.digest.is_none() {
                    return Err(format!(
                        "signedIdentity exactReference: {r:?} has neither tag nor digest"
                    ));
                }
                Ok(SignedIdentity::ExactReference(r))
            }
            "exactRepository" => {
                only(&["dockerRepository"])?;
                let r = string("dockerRepository")?;
                reference::parse_exact(&r).map_err(|e| e.to_string())?;
                Ok(SignedIdentity::ExactRepository(r))
            }
            "remapIdentity" => Err("signedIdentity remapIdentity is not supported by husk".into()),
            other => Err(format!("unknown signedIdentity type {other:?}")),
        }
    }

    /// The policy's spelling, for messages.
    pub fn describe(&self) -> String {
        match self {
            SignedIdentity::MatchExact => "matchExact".into(),
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact".into(),
            SignedIdentity::MatchRepository => "matchRepository".into(),
            SignedIdentity::ExactReference(r) => format!("exactReference {r}"),
            SignedIdentity::ExactRepository(r) => format!("exactRepository {r}"),
        }
    }

    /// Whether a signature naming `signed` admits the image `intended`
    /// (normalised, with its tag and/or digest).
    pub fn matches(&self, intended: &Ref, signed: &str) -> bool {
        let Ok(signed) = reference::parse_exact(signed) else {
            return false;
        };
        let name_only = |r: &Ref| r.tag.is_none() && r.digest.is_none();
        let exact = |a: &Ref, b: &Ref| !name_only(a) && !name_only(b) && a.name == b.name;
        match self {
            SignedIdentity::MatchExact => exact(intended, &signed),
            SignedIdentity::MatchRepoDigestOrExact => {
                if name_only(&signed) {
                    false
                } else if intended.tag.is_some() {
                    signed.name == intended.name
                } else if intended.digest.is_some() {
                    signed.repository == intended.repository
                } else {
                    false
                }
            }
            SignedIdentity::MatchRepository => signed.repository == intended.repository,
            SignedIdentity::ExactReference(r) => reference::parse_exact(r)
                .map(|want| exact(&want, &signed))
                .unwrap_or(false),
            SignedIdentity::ExactRepository(r) => reference::parse_exact(r)
                .map(|want| signed.repository == want.repository)
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Ref {
        reference::parse_exact(s).unwrap()
    }

    #[test]
    fn containers_image_rules() {
        let d = format!("sha256:{}", "a".repeat(64));
        let tagged = r("reg.io/app:1");
        let by_digest = r(&format!("reg.io/app@{d}"));
        use SignedIdentity::*;
        assert!(MatchRepoDigestOrExact.matches(&tagged, "reg.io/app:1"));
        assert!(!MatchRepoDigestOrExact.matches(&tagged, "reg.io/app:2"));
        assert!(!MatchRepoDigestOrExact.matches(&tagged, "reg.io/app"));
        assert!(MatchRepoDigestOrExact.matches(&by_digest, "reg.io/app:anything"));
        assert!(!MatchRepoDigestOrExact.matches(&by_digest, "reg.io/other:1"));
        assert!(MatchExact.matches(&tagged, "reg.io/app:1"));
        assert!(!MatchExact.matches(&by_digest, "reg.io/app:1"));
        assert!(MatchRepository.matches(&tagged, "reg.io/app:2"));
        assert!(MatchRepository.matches(&tagged, "reg.io/app"));
        assert!(!MatchRepository.matches(&tagged, "reg.io/other:1"));
        assert!(ExactReference("reg.io/x:7".into()).matches(&tagged, "reg.io/x:7"));
        assert!(!ExactReference("reg.io/x:7".into()).matches(&tagged, "reg.io/app:1"));
        assert!(ExactRepository("reg.io/x".into()).matches(&tagged, "reg.io/x:9"));
        // Docker normalisation applies to the signed name.
        let bb = r("docker.io/library/busybox:1");
        assert!(MatchExact.matches(&bb, "busybox:1"));
        assert!(!MatchExact.matches(&bb, "not a reference"));
    }

    #[test]
    fn parsing() {
        let p = |s: &str| SignedIdentity::from_json(&serde_json::from_str(s).unwrap());
        assert_eq!(
            p(r#"{"type":"matchRepository"}"#),
            Ok(SignedIdentity::MatchRepository)
        );
        assert!(p(r#"{"type":"matchRepository","x":1}"#).is_err());
        assert!(p(r#"{"type":"exactReference","dockerReference":"reg.io/a"}"#).is_err());
        assert!(p(r#"{"type":"exactReference","dockerReference":"reg.io/a:1"}"#).is_ok());
        assert!(
            p(r#"{"type":"remapIdentity","prefix":"a","signedPrefix":"b"}"#)
                .unwrap_err()
                .contains("not supported")
        );
        assert!(p(r#"{"type":"nope"}"#).is_err());
        assert!(p(r#"[]"#).is_err());
    }
}
