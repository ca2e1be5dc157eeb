//! Where GPG signatures are: the "lookaside" storage of
//! `containers-registries.d(5)`, YAML files that podman and skopeo read too:
//!
//! ```yaml
//! docker:
//!   reg.io/ns:
//!     lookaside: file:///var/lib/containers/sigstore
//! default-docker:
//!   lookaside: https://sigs.example.com
//! ```
//!
//! The directory is `<root>/registries.d`, else `/etc/containers/registries.d`;
//! every `*.yaml` in it is read (a scope defined twice is an error, as in
//! containers/image). The lookaside for an image is that of the most
//! specific scope that has one (the scopes of [`super::policy::docker_scopes`]),
//! else `default-docker`'s. `sigstore` is the older name of `lookaside`;
//! the `-staging` (write) keys and `use-sigstore-attachments` are not
//! needed to read and are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::policy::docker_scopes;
use super::TrustError;
use crate::image::reference::Ref;

/// The system-wide directory.
pub const SYSTEM_DIR: &str = "/etc/containers/registries.d";
/// The largest configuration file read.
const MAX_FILE: u64 = 1 << 20;

/// `<root>/registries.d` if it exists, else the system's.
pub fn dir(root: &Path) -> PathBuf {
    let own = root.join("registries.d");
    if own.is_dir() {
        own
    } else {
        PathBuf::from(SYSTEM_DIR)
    }
}

/// The lookaside base URL for `r`, if any configuration names one.
pub fn lookaside_for(dir: &Path, r: &Ref) -> Result<Option<String>, TrustError> {
    let mut default = None;
    let mut scopes: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(TrustError::io(format!("cannot read {}", dir.display()))(e)),
    };
    files.sort();
    for file in files {
        let err = |message: String| TrustError::Policy {
            path: file.display().to_string(),
            message,
        };
        let text = super::read_bounded(&file, MAX_FILE).map_err(|e| err(e.to_string()))?;
        let text = String::from_utf8(text).map_err(|_| err("not UTF-8 text".into()))?;
        let docs =
            YamlLoader::load_from_str(&text).map_err(|e| err(format!("not valid YAML: {e}")))?;
        for doc in docs {
            if let Some(d) = doc["default-docker"].as_hash() {
                if default.is_some() {
                    return Err(err("default-docker is defined twice".into()));
                }
                default = Some(lookaside(d));
            }
            if let Some(docker) = doc["docker"].as_hash() {
                for (scope, config) in docker {
                    let scope = scope
                        .as_str()
                        .ok_or_else(|| err("a docker scope is not a string".into()))?;
                    let url = config.as_hash().map(lookaside).unwrap_or(None);
                    if scopes.insert(scope.to_string(), url).is_some() {
                        return Err(err(format!("docker scope {scope:?} is defined twice")));
                    }
                }
            }
        }
    }
    for scope in docker_scopes(r) {
        if let Some(Some(url)) = scopes.get(&scope) {
            return Ok(Some(url.clone()));
        }
    }
    Ok(default.flatten())
}

/// A namespace's `lookaside` (or its older name, `sigstore`).
fn lookaside(config: &yaml_rust2::yaml::Hash) -> Option<String> {
    ["lookaside", "sigstore"].iter().find_map(|k| {
        config
            .get(&Yaml::String((*k).to_string()))
            .and_then(Yaml::as_str)
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference;

    #[test]
    fn most_specific_lookaside_wins() {
        let d = std::env::temp_dir().join(format!("husk-regd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("a.yaml"),
            "default-docker:\n  lookaside: file:///default\ndocker:\n  reg.io/ns:\n    sigstore: file:///ns\n  reg.io:\n    use-sigstore-attachments: true\n",
        )
        .unwrap();
        std::fs::write(
            d.join("b.yaml"),
            "docker:\n  other.io:\n    lookaside: https://o\n",
        )
        .unwrap();
        std::fs::write(d.join("ignored.txt"), "not: [yaml").unwrap();
        let look = |s: &str| lookaside_for(&d, &reference::parse(s).unwrap()).unwrap();
        assert_eq!(look("reg.io/ns/app:1").as_deref(), Some("file:///ns"));
        assert_eq!(look("reg.io/app:1").as_deref(), Some("file:///default"));
        assert_eq!(look("other.io/x").as_deref(), Some("https://o"));
        std::fs::write(
            d.join("c.yaml"),
            "docker:\n  other.io:\n    lookaside: file:///x\n",
        )
        .unwrap();
        assert!(lookaside_for(&d, &reference::parse("x.io/y").unwrap()).is_err());
        std::fs::write(d.join("c.yaml"), "docker: [").unwrap();
        let e = lookaside_for(&d, &reference::parse("x.io/y").unwrap()).unwrap_err();
        assert!(e.to_string().contains("c.yaml"), "{e}");
        assert_eq!(
            lookaside_for(&d.join("none"), &reference::parse("x.io/y").unwrap()).unwrap(),
            None
        );
    }
}
