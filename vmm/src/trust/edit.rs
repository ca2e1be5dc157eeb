//! `husk trust`: edits of `<root>/policy.json` for people who would rather
//! not write JSON (rkt's `rkt trust`).
//!
//! Edits work on the JSON document itself, so what husk does not model
//! (other transports, their scopes) is kept as written. The file edited
//! must parse strictly before the edit and the result must parse after it;
//! it is replaced atomically (temp file, fsync, rename) under a `flock`, so
//! a reader sees the old or the new policy, never half of one, and two
//! edits at once both land. When `<root>/policy.json` does not exist yet,
//! the first edit starts from the policy in force (the system's
//! `/etc/containers/policy.json`, else the built-in default), so that the
//! edit is the only change in behaviour.
//!
//! Keys are copied into the policy as `keyData` (validated first), so that
//! the policy does not change when a key file is later replaced. A second
//! sigstore key for the same scope turns the requirement's `keyData` into
//! `keyDatas` (either key admits), a form newer containers/image releases
//! read too; a GPG keyring replaces the scope's requirement (export every
//! key the scope should trust into one keyring). A GPG keyring is checked
//! for form only here (armor, or a public-key packet first): the `husk`
//! binary has no OpenPGP parser; `husk-pull` parses it fully.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::key::PublicKey;
use super::policy::{self, own_path, Policy, Requirement, SYSTEM_POLICY};
use super::TrustError;

/// One edit.
#[derive(Debug, Clone)]
pub enum Change {
    /// Require a sigstore signature by the key (PEM) for `scope`.
    AddSigstoreKey { scope: String, pem: Vec<u8> },
    /// Require a GPG signature by a key of the keyring for `scope`.
    AddGpgKey { scope: String, keyring: Vec<u8> },
    /// Set the default: accept anything (true) or reject (false).
    Default { accept: bool },
    /// Remove the docker scope's requirements.
    Remove { scope: String },
}

/// Applies `change` to `<root>/policy.json`; returns the file's path.
pub fn apply(root: &Path, change: &Change) -> Result<PathBuf, TrustError> {
    let path = own_path(root);
    crate::private::create_dir_all(root)
        .map_err(TrustError::io(format!("cannot create {}", root.display())))?;
    let _lock = lock(&root.join("policy.lock"))?;
    let mut doc = current(&path)?;
    edit(&mut doc, change, &path)?;
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| TrustError::Usage(e.to_string()))?;
    // The result must be a policy husk (and so containers/image) reads.
    Policy::parse(&text, &path)?;
    write_atomically(&path, &text)?;
    Ok(path)
}

/// The document to start from (see the module doc).
fn current(path: &Path) -> Result<Value, TrustError> {
    let system = PathBuf::from(SYSTEM_POLICY);
    let from = [path, system.as_path()].into_iter().find(|p| p.exists());
    let Some(from) = from else {
        return Ok(json!({"default": [{"type": "insecureAcceptAnything"}]}));
    };
    let bytes = super::read_bounded(from, policy::MAX_POLICY)
        .map_err(TrustError::io(format!("cannot read {}", from.display())))?;
    Policy::parse(&bytes, from)?;
    serde_json::from_slice(&bytes).map_err(|e| TrustError::Policy {
        path: from.display().to_string(),
        message: e.to_string(),
    })
}

fn edit(doc: &mut Value, change: &Change, path: &Path) -> Result<(), TrustError> {
    let top = doc.as_object_mut().ok_or_else(|| TrustError::Policy {
        path: path.display().to_string(),
        message: "the policy is not a JSON object".into(),
    })?;
    match change {
        Change::Default { accept } => {
            let ty = if *accept {
                "insecureAcceptAnything"
            } else {
                "reject"
            };
            top.insert("default".into(), json!([{ "type": ty }]));
        }
        Change::Remove { scope } => {
            let removed = docker_scopes(top).remove(scope);
            if removed.is_none() {
                return Err(TrustError::Usage(format!(
                    "{} has no docker scope {scope:?} (see husk trust list)",
                    path.display()
                )));
            }
        }
        Change::AddGpgKey { scope, keyring } => {
            check_scope(scope)?;
            if !looks_like_keyring(keyring) {
                return Err(TrustError::Key {
                    what: "file".into(),
                    message: "not an OpenPGP public keyring (gpg --export, armored or not)".into(),
                });
            }
            let data = base64::engine::general_purpose::STANDARD.encode(keyring);
            docker_scopes(top).insert(
                scope.clone(),
                json!([{ "type": "signedBy", "keyType": "GPGKeys", "keyData": data }]),
            );
        }
        Change::AddSigstoreKey { scope, pem } => {
            check_scope(scope)?;
            let key = PublicKey::from_pem(pem).map_err(|message| TrustError::Key {
                what: "file".into(),
                message,
            })?;
            let data = base64::engine::general_purpose::STANDARD.encode(pem);
            let scopes = docker_scopes(top);
            let merged = scopes
                .get_mut(scope)
                .and_then(|reqs| add_key(reqs, &key, &data));
            if merged.is_none() {
                scopes.insert(
                    scope.clone(),
                    json!([{ "type": "sigstoreSigned", "keyData": data }]),
                );
            }
        }
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<(), TrustError> {
    if policy::valid_docker_scope(scope) {
        Ok(())
    } else {
        Err(TrustError::Usage(format!(
            "invalid scope {scope:?}: give a registry (reg.io, 127.0.0.1:5000), a namespace or repository (reg.io/ns/app), an image with its tag, or *.domain"
        )))
    }
}

/// Whether `bytes` look like an OpenPGP public keyring: an armored public
/// key block, or a binary one starting with a public-key packet (tag 6, in
/// the old or the new packet format).
pub fn looks_like_keyring(bytes: &[u8]) -> bool {
    let text_start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    if text_start.is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
        return true;
    }
    match bytes.first() {
        Some(&b) if b & 0xc0 == 0xc0 => b & 0x3f == 6,
        Some(&b) if b & 0xc0 == 0x80 => (b >> 2) & 0x0f == 6,
        _ => false,
    }
}

/// `transports.docker`, made if missing.
fn docker_scopes(top: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let transports = top
        .entry("transports")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    // A non-object `transports` failed the strict parse before any edit.
    let transports = transports.expect("transports parsed as an object");
    transports
        .entry("docker")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("a transport parsed as an object")
}

/// Adds `key` to a scope whose only requirement is a `sigstoreSigned` by
/// `keyData`/`keyDatas`; `None` when the scope has another shape (the caller
/// replaces it).
fn add_key(reqs: &mut Value, key: &PublicKey, data: &str) -> Option<()> {
    let list = reqs.as_array_mut()?;
    if list.len() != 1 {
        return None;
    }
    let req = list[0].as_object_mut()?;
    if req.get("type")?.as_str()? != "sigstoreSigned" {
        return None;
    }
    let mut datas: Vec<Value> = match (req.remove("keyData"), req.remove("keyDatas")) {
        (Some(one), None) => vec![one],
        (None, Some(Value::Array(many))) => many,
        _ => return None,
    };
    let fp = key.fingerprint();
    let known = datas.iter().any(|d| {
        d.as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|pem| PublicKey::from_pem(&pem).ok())
            .is_some_and(|k| k.fingerprint() == fp)
    });
    if !known {
        datas.push(Value::String(data.to_string()));
    }
    if datas.len() == 1 {
        req.insert("keyData".into(), datas.remove(0));
    } else {
        req.insert("keyDatas".into(), Value::Array(datas));
    }
    Some(())
}

/// `husk trust list`: the docker scopes and the default, one per line.
pub fn list(policy: &Policy) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let describe = |reqs: &[Requirement]| {
        reqs.iter()
            .map(Requirement::describe)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    rows.push(("default".into(), describe(&policy.default)));
    if let Some(scopes) = policy.transports.get("docker") {
        for (scope, reqs) in scopes {
            let scope = if scope.is_empty() {
                "docker default".to_string()
            } else {
                scope.clone()
            };
            rows.push((scope, describe(reqs)));
        }
    }
    let source = match &policy.source {
        policy::Source::File(p) => p.display().to_string(),
        policy::Source::BuiltIn => "built-in default (no policy file)".into(),
    };
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
    let mut out = format!("policy: {source}\n{:width$}   REQUIREMENTS\n", "SCOPE");
    for (scope, reqs) in rows {
        out += &format!("{scope:width$}   {reqs}\n");
    }
    out
}

fn lock(path: &Path) -> Result<crate::private::FileLock, TrustError> {
    crate::private::lock_file(path, libc::LOCK_EX)
        .map_err(TrustError::io(format!("cannot lock {}", path.display())))
}

fn write_atomically(path: &Path, text: &[u8]) -> Result<(), TrustError> {
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::private::FILE_MODE)
            .open(&tmp)?;
        f.write_all(text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        TrustError::io(format!("cannot write {}", path.display()))(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::key::TEST_PEM;

    #[test]
    fn edits_keep_the_rest_and_parse() {
        let mut doc = json!({"default":[{"type":"insecureAcceptAnything"}],
            "transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}});
        let p = Path::new("/p.json");
        let add = Change::AddSigstoreKey {
            scope: "reg.io/app".into(),
            pem: TEST_PEM.into(),
        };
        edit(&mut doc, &add, p).unwrap();
        // Adding the same key again changes nothing.
        edit(&mut doc, &add, p).unwrap();
        assert!(doc["transports"]["docker"]["reg.io/app"][0]["keyData"].is_string());
        assert!(doc["transports"]["docker-daemon"].is_object());
        // A second key for the scope: either admits (keyDatas).
        let other = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9mYUyq03SqZKqQviDLCiUzcoWMbo
CVKPqHFlD2qMNbxgoDiKjzrELN8v94njDFg7ZSXGNt9j6gdPsJfBou3dQg==
-----END PUBLIC KEY-----
";
        let add_other = Change::AddSigstoreKey {
            scope: "reg.io/app".into(),
            pem: other.into(),
        };
        edit(&mut doc, &add_other, p).unwrap();
        edit(&mut doc, &add_other, p).unwrap();
        let keys = &doc["transports"]["docker"]["reg.io/app"][0]["keyDatas"];
        assert_eq!(keys.as_array().unwrap().len(), 2, "{doc}");
        let text = serde_json::to_vec(&doc).unwrap();
        match &Policy::parse(&text, p).unwrap().transports["docker"]["reg.io/app"][0] {
            Requirement::SigstoreSigned { keys, .. } => assert_eq!(keys.len(), 2),
            other => panic!("{other:?}"),
        }
        edit(&mut doc, &Change::Default { accept: false }, p).unwrap();
        let text = serde_json::to_vec(&doc).unwrap();
        let policy = Policy::parse(&text, p).unwrap();
        assert_eq!(policy.default, [Requirement::Reject]);
        let shown = list(&policy);
        assert!(shown.contains("reg.io/app"), "{shown}");
        assert!(shown.contains("sigstoreSigned by sha256:"), "{shown}");
        edit(
            &mut doc,
            &Change::Remove {
                scope: "reg.io/app".into(),
            },
            p,
        )
        .unwrap();
        assert!(edit(
            &mut doc,
            &Change::Remove {
                scope: "reg.io/app".into()
            },
            p
        )
        .is_err());
        let bad_scope = Change::AddSigstoreKey {
            scope: "busybox".into(),
            pem: TEST_PEM.into(),
        };
        assert!(matches!(
            edit(&mut doc, &bad_scope, p),
            Err(TrustError::Usage(_))
        ));
        let gpg = Change::AddGpgKey {
            scope: "reg.io/gpg".into(),
            keyring: vec![0x99, 0x01, 0x0d],
        };
        edit(&mut doc, &gpg, p).unwrap();
        assert_eq!(
            doc["transports"]["docker"]["reg.io/gpg"][0]["type"],
            "signedBy"
        );
        let not_gpg = Change::AddGpgKey {
            scope: "reg.io/gpg".into(),
            keyring: TEST_PEM.into(),
        };
        assert!(matches!(
            edit(&mut doc, &not_gpg, p),
            Err(TrustError::Key { .. })
        ));
        let bad_key = Change::AddSigstoreKey {
            scope: "reg.io".into(),
            pem: b"not a key".to_vec(),
        };
        assert!(matches!(
            edit(&mut doc, &bad_key, p),
            Err(TrustError::Key { .. })
        ));
    }
}
