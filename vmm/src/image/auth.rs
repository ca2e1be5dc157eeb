//! Registry credentials from docker/podman `auth.json` files:
//! `{"auths": {"host:port": {"auth": "base64(user:pass)"}}}` (or separate
//! `username`/`password` fields).
//!
//! Lookup order: `--creds FILE` alone when given (it must exist); else the
//! first of `$REGISTRY_AUTH_FILE`, `$HUSK_ROOT/auth.json` (the store root),
//! `~/.docker/config.json` that has an entry for the registry. No entry
//! anywhere means anonymous access (with a bearer token if the registry
//! asks for one, see `distribution`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::ImageError;

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, <redacted>)", self.user)
    }
}

/// The files searched, in order, when no `--creds` is given.
fn default_files(store_root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        files.push(PathBuf::from(f));
    }
    files.push(store_root.join("auth.json"));
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
}

/// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub).
pub fn lookup(
    explicit: Option<&Path>,
    store_root: &Path,
    registry: &str,
) -> Result<Option<Basic>, ImageError> {
    if let Some(file) = explicit {
        let text = std::fs::read(file).map_err(|e| {
            ImageError::Usage(format!("cannot read credentials {}: {e}", file.display()))
        })?;
        return find(&text, file, registry);
    }
    for file in default_files(store_root) {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        if let Some(b) = find(&text, &file, registry)? {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The keys an auth file may use for `registry`: the host itself, or a URL
/// of it (`https://host/v1/`); Docker Hub also goes by `index.docker.io`.
fn matches(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    host == registry
        || (registry == "docker.io" && matches!(host, "index.docker.io" | "registry-1.docker.io"))
}

fn find(text: &[u8], file: &Path, registry: &str) -> Result<Option<Basic>, ImageError> {
    let bad = |why: String| ImageError::Usage(format!("credentials {}: {why}", file.display()));
    let parsed: AuthFile = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let Some((_, entry)) = parsed.auths.iter().find(|(k, _)| matches(k, registry)) else {
        return Ok(None);
    };
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Basic {
            user: user.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| bad(format!("the auth of {registry} is not base64: {e}")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| bad(format!("the auth of {registry} is not UTF-8")))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| bad(format!("the auth of {registry} is not user:password")))?;
    Ok(Some(Basic {
        user: user.to_string(),
        password: password.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn finds_by_host_and_url() {
        let f = Path::new("auth.json");
        let text = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},
            "https://index.docker.io/v1/":{{"auth":"{}"}},
            "other:1":{{"username":"u","password":"p"}}}}}}"#,
            b64("alice:s3:cret"),
            b64("bob:pw")
        );
        let a = find(text.as_bytes(), f, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((a.user.as_str(), a.password.as_str()), ("alice", "s3:cret"));
        assert_eq!(
            find(text.as_bytes(), f, "docker.io").unwrap().unwrap().user,
            "bob"
        );
        assert_eq!(
            find(text.as_bytes(), f, "other:1")
                .unwrap()
                .unwrap()
                .password,
            "p"
        );
        assert!(find(text.as_bytes(), f, "127.0.0.1:5001")
            .unwrap()
            .is_none());
        assert!(find(b"{", f, "x").is_err());
        assert!(find(br#"{"auths":{"x":{"auth":"!!"}}}"#, f, "x").is_err());
        assert!(!format!("{a:?}").contains("s3"));
    }

    #[test]
    fn explicit_file_must_exist() {
        let err = lookup(
            Some(Path::new("/nonexistent/auth.json")),
            Path::new("/"),
            "x",
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::failure::Failure::Usage);
    }
}
