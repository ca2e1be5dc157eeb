//! The policy file, `containers-policy.json(5)`:
//!
//! ```json
//! {"default": [{"type": "insecureAcceptAnything"}],
//!  "transports": {"docker": {"reg.io/app": [{"type": "sigstoreSigned", "keyPath": "/k.pub"}]}}}
//! ```
//!
//! Parsed strictly, as containers/image does: an unknown field or an
//! unknown requirement type is an error naming the file, never something
//! skipped (a skipped requirement would admit what the author meant to
//! refuse). Requirements husk cannot evaluate (`sigstoreSigned` with
//! `fulcio` or `rekorPublicKey*`, `signedIdentity` `remapIdentity`) are
//! refused when the file is read, for the same reason. `signedBy` (GPG
//! simple signing) takes `keyType: GPGKeys` only.
//!
//! Only the `docker` transport's scopes apply to what husk pulls; other
//! transports' requirements are parsed (and so checked) but never used.
//! Scopes are looked up as containers/image does: the image's full name
//! (`reg.io/ns/app:tag` or `@digest`), then `reg.io/ns/app`, `reg.io/ns`,
//! `reg.io`, `*.io`, then the transport's `""` scope, then `default`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::identity::SignedIdentity;
use super::key::{self, PublicKey};
use super::TrustError;
use crate::image::reference::{self, Ref};

/// The largest policy file read.
pub const MAX_POLICY: u64 = 1 << 20;
/// The largest GPG keyring read.
pub const MAX_KEYRING: u64 = 1 << 20;
/// The system-wide policy, shared with podman and skopeo.
pub const SYSTEM_POLICY: &str = "/etc/containers/policy.json";

/// Where a key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Path(PathBuf),
    /// The PEM bytes (`keyData` is their base64).
    Data(Vec<u8>),
}

impl KeySource {
    /// Reads the key (its form only: see [`super::key`]).
    pub fn load(&self) -> Result<PublicKey, TrustError> {
        match self {
            KeySource::Path(p) => key::read_file(p),
            KeySource::Data(pem) => PublicKey::from_pem(pem).map_err(|message| TrustError::Key {
                what: "keyData".into(),
                message,
            }),
        }
    }

    /// The bytes of a keyring (`signedBy`), at most [`MAX_KEYRING`].
    pub fn keyring_bytes(&self) -> Result<Vec<u8>, TrustError> {
        match self {
            KeySource::Path(p) => {
                super::read_bounded(p, MAX_KEYRING).map_err(|e| TrustError::Key {
                    what: p.display().to_string(),
                    message: e.to_string(),
                })
            }
            KeySource::Data(d) => Ok(d.clone()),
        }
    }

    /// How a `signedBy` record names a keyring: `keyring sha256:<hex of its
    /// bytes>` (see [`super::admission`] for why not key fingerprints).
    pub fn keyring_id(&self) -> Result<String, TrustError> {
        use sha2::{Digest as _, Sha256};
        let hex: String = Sha256::digest(self.keyring_bytes()?)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(format!("keyring sha256:{hex}"))
    }

    fn describe_keyring(&self) -> String {
        match self {
            KeySource::Path(p) => p.display().to_string(),
            KeySource::Data(_) => "keyData".into(),
        }
    }

    fn describe(&self) -> String {
        match self {
            KeySource::Path(p) => p.display().to_string(),
            KeySource::Data(pem) => PublicKey::from_pem(pem)
                .map(|k| k.fingerprint())
                .unwrap_or_else(|_| "keyData".into()),
        }
    }
}

/// One requirement; every requirement of a scope must accept an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    /// GPG "simple signing": a signature in the registry's lookaside
    /// storage by a key of any of the keyrings `keys`.
    SignedBy {
        keys: Vec<KeySource>,
        identity: SignedIdentity,
    },
    /// A cosign-format signature by any of `keys`.
    SigstoreSigned {
        keys: Vec<KeySource>,
        identity: SignedIdentity,
    },
}

impl Requirement {
    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            Requirement::InsecureAcceptAnything => "insecureAcceptAnything".into(),
            Requirement::Reject => "reject".into(),
            Requirement::SignedBy { keys, identity } => format!(
                "signedBy GPG keys in {} ({})",
                keys.iter()
                    .map(KeySource::describe_keyring)
                    .collect::<Vec<_>>()
                    .join(" or "),
                identity.describe()
            ),
            Requirement::SigstoreSigned { keys, identity } => format!(
                "sigstoreSigned by {} ({})",
                keys.iter()
                    .map(KeySource::describe)
                    .collect::<Vec<_>>()
                    .join(" or "),
                identity.describe()
            ),
        }
    }
}

/// Where the policy in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// No file: accept everything, warning on each unsigned pull.
    BuiltIn,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub source: Source,
    pub default: Vec<Requirement>,
    /// transport → scope → requirements.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// `<root>/policy.json`: husk's own policy, the one `husk trust` edits.
pub fn own_path(root: &Path) -> PathBuf {
    root.join("policy.json")
}

impl Policy {
    /// The built-in default.
    pub fn builtin() -> Policy {
        Policy {
            source: Source::BuiltIn,
            default: vec![Requirement::InsecureAcceptAnything],
            transports: BTreeMap::new(),
        }
    }

    /// The policy in force: `<root>/policy.json`, else the system's, else
    /// the built-in default.
    pub fn load(root: &Path) -> Result<Policy, TrustError> {
        for path in [own_path(root), PathBuf::from(SYSTEM_POLICY)] {
            match path.try_exists() {
                Ok(true) => return Policy::load_file(&path),
                Ok(false) => {}
                Err(e) => return Err(TrustError::io(format!("cannot read {}", path.display()))(e)),
            }
        }
        Ok(Policy::builtin())
    }

    /// The policy in the file `path`.
    pub fn load_file(path: &Path) -> Result<Policy, TrustError> {
        let bytes = super::read_bounded(path, MAX_POLICY).map_err(|e| TrustError::Policy {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Policy::parse(&bytes, path)
    }

    /// Parses a policy document; `path` names it in errors. A relative
    /// `keyPath` is read from the working directory, as containers/image does.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Policy, TrustError> {
        let err = |message: String| TrustError::Policy {
            path: path.display().to_string(),
            message,
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let (default, transports) = parse_value(&v).map_err(err)?;
        Ok(Policy {
            source: Source::File(path.to_path_buf()),
            default,
            transports,
        })
    }

    /// The built-in default's one-line warning, when it admitted the image
    /// `name` (manifest `digest`) unsigned: said once per pull or import.
    pub fn warn_if_unsigned_by_default(
        &self,
        root: &Path,
        name: &str,
        digest: &str,
        admitted: &super::Admission,
    ) {
        if self.source == Source::BuiltIn && admitted.signatures.is_empty() {
            eprintln!(
                "husk: warning: no trust policy ({} or {SYSTEM_POLICY}): {name} ({digest}) accepted unsigned",
                own_path(root).display(),
            );
        }
    }

    /// The requirements for the image `r` pulled from a registry, and the
    /// scope they were found under (`default` when none matched).
    pub fn requirements_for(&self, r: &Ref) -> (String, &[Requirement]) {
        if let Some(scopes) = self.transports.get("docker") {
            for s in docker_scopes(r) {
                if let Some(reqs) = scopes.get(&s) {
                    return (s, reqs);
                }
            }
            if let Some(reqs) = scopes.get("") {
                return ("docker default".into(), reqs);
            }
        }
        ("default".into(), &self.default)
    }
}

/// Checks a whole policy document; returns its default and transports.
type Parsed = (
    Vec<Requirement>,
    BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
);

pub(super) fn parse_value(v: &Value) -> Result<Parsed, String> {
    let top = v.as_object().ok_or("the policy is not a JSON object")?;
    if let Some(k) = top.keys().find(|k| *k != "default" && *k != "transports") {
        return Err(format!("unknown field {k:?}"));
    }
    let default = requirements(top.get("default").ok_or("\"default\" is missing")?)
        .map_err(|e| format!("default: {e}"))?;
    let mut transports = BTreeMap::new();
    if let Some(t) = top.get("transports") {
        let t = t.as_object().ok_or("\"transports\" is not an object")?;
        for (name, scopes) in t {
            let scopes = scopes
                .as_object()
                .ok_or_else(|| format!("transport {name:?} is not an object"))?;
            let mut parsed = BTreeMap::new();
            for (scope, reqs) in scopes {
                let reqs = requirements(reqs)
                    .map_err(|e| format!("transport {name} scope {scope:?}: {e}"))?;
                parsed.insert(scope.clone(), reqs);
            }
            transports.insert(name.clone(), parsed);
        }
    }
    Ok((default, transports))
}

fn requirements(v: &Value) -> Result<Vec<Requirement>, String> {
    let list = v.as_array().ok_or("not a list of requirements")?;
    if list.is_empty() {
        return Err("the list of requirements is empty".into());
    }
    list.iter().map(requirement).collect()
}

fn requirement(v: &Value) -> Result<Requirement, String> {
    let obj = v.as_object().ok_or("a requirement is not an object")?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a requirement has no type")?;
    let only = |allowed: &[&str]| match obj
        .keys()
        .find(|k| *k != "type" && !allowed.contains(&k.as_str()))
    {
        Some(k) => Err(format!("{ty}: unknown field {k:?}")),
        None => Ok(()),
    };
    let identity = || match obj.get("signedIdentity") {
        None => Ok(SignedIdentity::MatchRepoDigestOrExact),
        Some(i) => SignedIdentity::from_json(i),
    };
    match ty {
        "insecureAcceptAnything" => only(&[]).map(|()| Requirement::InsecureAcceptAnything),
        "reject" => only(&[]).map(|()| Requirement::Reject),
        "signedBy" => {
            only(&[
                "keyType",
                "keyPath",
                "keyPaths",
                "keyData",
                "signedIdentity",
            ])?;
            match obj.get("keyType").and_then(Value::as_str) {
                Some("GPGKeys") => {}
                Some(other) => return Err(format!("signedBy: unsupported keyType {other:?}")),
                None => return Err("signedBy: keyType is missing".into()),
            }
            let keys = keys(obj, ty, &["keyPath", "keyPaths", "keyData"])?;
            Ok(Requirement::SignedBy {
                keys,
                identity: identity()?,
            })
        }
        "sigstoreSigned" => {
            for unsupported in ["fulcio", "rekorPublicKeyPath", "rekorPublicKeyData", "pki"] {
                if obj.contains_key(unsupported) {
                    return Err(format!(
                        "sigstoreSigned: {unsupported} is not supported by husk (use keyPath or keyData)"
                    ));
                }
            }
            only(&[
                "keyPath",
                "keyPaths",
                "keyData",
                "keyDatas",
                "signedIdentity",
            ])?;
            let keys = keys(obj, ty, &["keyPath", "keyPaths", "keyData", "keyDatas"])?;
            Ok(Requirement::SigstoreSigned {
                keys,
                identity: identity()?,
            })
        }
        other => Err(format!("unknown requirement type {other:?}")),
    }
}

/// The keys of a signed requirement: exactly one of `fields` must be set.
fn keys(obj: &Map<String, Value>, ty: &str, fields: &[&str]) -> Result<Vec<KeySource>, String> {
    let set: Vec<&&str> = fields.iter().filter(|f| obj.contains_key(**f)).collect();
    if set.len() != 1 {
        return Err(format!(
            "{ty}: exactly one of {} must be set",
            fields.join(", ")
        ));
    }
    let field = *set[0];
    let value = &obj[field];
    let path = |v: &Value| -> Result<KeySource, String> {
        let p = v
            .as_str()
            .ok_or_else(|| format!("{ty}: {field} is not a string"))?;
        Ok(KeySource::Path(PathBuf::from(p)))
    };
    let data = |v: &Value| -> Result<KeySource, String> {
        let b = v
            .as_str()
            .ok_or_else(|| format!("{ty}: {field} is not a string"))?;
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(KeySource::Data)
            .map_err(|_| format!("{ty}: {field} is not base64"))
    };
    let list =
        |one: &dyn Fn(&Value) -> Result<KeySource, String>| -> Result<Vec<KeySource>, String> {
            let items = value
                .as_array()
                .ok_or_else(|| format!("{ty}: {field} is not a list"))?;
            if items.is_empty() {
                return Err(format!("{ty}: {field} is empty"));
            }
            items.iter().map(one).collect()
        };
    match field {
        "keyPath" => Ok(vec![path(value)?]),
        "keyData" => Ok(vec![data(value)?]),
        "keyPaths" => list(&path),
        _ => list(&data),
    }
}

/// The scopes an image is looked up under, most specific first
/// (containers/image's `DockerReferenceIdentity` and
/// `DockerReferenceNamespaces`).
pub fn docker_scopes(r: &Ref) -> Vec<String> {
    let mut out = vec![r.name.clone()];
    let mut name = r.repository.as_str();
    loop {
        out.push(name.to_string());
        match name.rfind('/') {
            Some(i) => name = &name[..i],
            None => break,
        }
    }
    // `name` is now the registry host[:port]; wildcards drop the port.
    let mut host = name.split(':').next().unwrap_or(name);
    if host.starts_with('[') {
        return out;
    }
    while let Some(i) = host.find('.') {
        host = &host[i + 1..];
        out.push(format!("*.{host}"));
    }
    out
}

/// Whether `scope` is a docker scope in the form the lookup compares with:
/// a fully qualified name (with or without tag/digest), a registry
/// `host[:port]`, a namespace `host/ns`, or `*.domain`. containers/image
/// accepts any string (one that is not normalised simply never matches);
/// `husk trust` refuses such scopes instead.
pub fn valid_docker_scope(scope: &str) -> bool {
    if let Some(domain) = scope.strip_prefix("*.") {
        return !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
    }
    if reference::parse_exact(scope).is_ok_and(|r| r.name == scope) {
        return true;
    }
    // A registry or a namespace: fully qualified once a component is added.
    let probe = format!("{scope}/x");
    reference::parse_exact(&probe).is_ok_and(|r| r.name == probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Policy, TrustError> {
        Policy::parse(s.as_bytes(), Path::new("/p.json"))
    }

    #[test]
    fn strict_parsing() {
        let ok = r#"{"default":[{"type":"reject"}],"transports":{
            "docker":{"reg.io/app":[{"type":"sigstoreSigned","keyPath":"/k.pub",
                "signedIdentity":{"type":"matchRepository"}}]},
            "docker-daemon":{"":[{"type":"insecureAcceptAnything"}]},
            "atomic":{"x":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/g.gpg"}]}}}"#;
        let p = parse(ok).unwrap();
        assert_eq!(p.default, [Requirement::Reject]);
        for (bad, why) in [
            ("{", "not valid JSON"),
            (r#"{"transports":{}}"#, "\"default\" is missing"),
            (r#"{"default":[]}"#, "empty"),
            (
                r#"{"default":[{"type":"whatever"}]}"#,
                "unknown requirement type \"whatever\"",
            ),
            (
                r#"{"default":[{"type":"reject","x":1}]}"#,
                "unknown field \"x\"",
            ),
            (
                r#"{"default":[{"type":"reject"}],"extra":1}"#,
                "unknown field \"extra\"",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned"}]}"#,
                "exactly one of",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyData":"AA=="}]}"#,
                "exactly one of",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyData":"!!"}]}"#,
                "base64",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","fulcio":{}}]}"#,
                "not supported",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyPath":"/a"}]}"#,
                "keyType",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a":[{"type":"x"}]}}}"#,
                "transport docker scope \"a\"",
            ),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("policy /p.json: "), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn longest_match_scope_lookup() {
        let p = parse(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
            "reg.io:5000/ns/app:1":[{"type":"insecureAcceptAnything"}],
            "reg.io:5000/ns":[{"type":"sigstoreSigned","keyPath":"/k"}],
            "*.io":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/g"}],
            "":[{"type":"reject"}]}}}"#,
        )
        .unwrap();
        let scope = |s: &str| p.requirements_for(&reference::parse(s).unwrap()).0;
        assert_eq!(scope("reg.io:5000/ns/app:1"), "reg.io:5000/ns/app:1");
        assert_eq!(scope("reg.io:5000/ns/app:2"), "reg.io:5000/ns");
        assert_eq!(scope("reg.io:5000/ns/deeper/app"), "reg.io:5000/ns");
        assert_eq!(scope("other.io/x"), "*.io");
        assert_eq!(scope("localhost:5000/x"), "docker default");
        assert_eq!(
            docker_scopes(&reference::parse("a.b.io:1/n/x:t").unwrap()),
            [
                "a.b.io:1/n/x:t",
                "a.b.io:1/n/x",
                "a.b.io:1/n",
                "a.b.io:1",
                "*.b.io",
                "*.io"
            ]
        );
    }

    #[test]
    fn scope_forms() {
        for good in [
            "reg.io",
            "127.0.0.1:5000",
            "reg.io/ns",
            "reg.io/ns/app:1",
            "*.example.com",
        ] {
            assert!(valid_docker_scope(good), "{good}");
        }
        for bad in ["busybox", "library/busybox", "", "*.", "reg.io/Bad", "a b"] {
            assert!(!valid_docker_scope(bad), "{bad}");
        }
    }
}
