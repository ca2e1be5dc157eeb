//! The ACI image manifest (App Container spec, "Image Manifest Schema") and
//! its translation into an OCI image config.
//!
//! Mapping (README, "ACI"):
//! - `name` + the `version` label → the image's name `name:version`
//!   (`name:latest` without a version label), which must be a
//!   registry-style reference (`host/path`), since the trust policy's
//!   `docker` scopes are looked up by it;
//! - `app.exec` → `Entrypoint` (so `husk run IMAGE ARGS` appends ARGS,
//!   as an ACE may), `app.environment` → `Env`, `app.workingDirectory` →
//!   `WorkingDir`, `app.user`/`app.group` → `User` `user:group`,
//!   `app.ports` → `ExposedPorts` (`port/protocol`, each port of a range),
//!   `app.mountPoints` → `Volumes` (their names and `readOnly` kept as
//!   labels `org.appc.mountpoint.<name>`), the `resource/memory` and
//!   `resource/cpu` isolators → labels `org.appc.isolator.<name>` (recorded,
//!   not applied: `husk run --memory/--cpus` set a pod's limits), the
//!   `os`/`arch` labels → `os`/`architecture` (only linux/amd64 runs), the
//!   `created` annotation → `created`, other labels and annotations →
//!   labels `org.appc.label.<name>` / `org.appc.annotation.<name>`.
//! - Refused, because the image would not be what its author meant:
//!   `dependencies` and `pathWhitelist` (no image assembly), `app.user` or
//!   `app.group` given as a file path, `eventHandlers` (no pre-start or
//!   post-stop hooks), other isolators (capabilities, seccomp, …) and
//!   protocols other than tcp/udp/sctp.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::image::reference;
use crate::image::ImageError;

/// The largest manifest read (a real one is a few KB).
pub const MAX_MANIFEST: u64 = 256 << 10;
/// The most ports one image may expose (ranges count each port).
pub const MAX_PORTS: u64 = 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AciManifest {
    pub ac_kind: String,
    pub ac_version: String,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<NameValue>,
    #[serde(default)]
    pub app: Option<App>,
    #[serde(default)]
    pub dependencies: Vec<Value>,
    #[serde(default)]
    pub path_whitelist: Vec<String>,
    #[serde(default)]
    pub annotations: Vec<NameValue>,
}

#[derive(Debug, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub exec: Vec<String>,
    pub user: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub event_handlers: Vec<Value>,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub environment: Vec<NameValue>,
    #[serde(default)]
    pub isolators: Vec<Isolator>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    #[serde(default)]
    pub ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
pub struct Isolator {
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Deserialize)]
pub struct Port {
    pub name: String,
    pub protocol: String,
    pub port: u64,
    #[serde(default)]
    pub count: Option<u64>,
}

fn bad(message: String) -> ImageError {
    ImageError::Malformed(format!("ACI manifest: {message}"))
}

/// AC Identifier: `[a-z0-9]+([-._~/][a-z0-9]+)*`.
fn ac_identifier_ok(s: &str) -> bool {
    !s.is_empty()
        && s.split(['-', '.', '_', '~', '/']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl AciManifest {
    /// Parses and checks a manifest's bytes (at most [`MAX_MANIFEST`]).
    pub fn parse(bytes: &[u8]) -> Result<AciManifest, ImageError> {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(bad(format!("larger than {MAX_MANIFEST} bytes")));
        }
        let m: AciManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid: {e}")))?;
        if m.ac_kind != "ImageManifest" {
            return Err(bad(format!(
                "acKind is {:?}, not \"ImageManifest\"",
                m.ac_kind
            )));
        }
        if m.ac_version.is_empty() {
            return Err(bad("acVersion is empty".into()));
        }
        if !ac_identifier_ok(&m.name) {
            return Err(bad(format!("name {:?} is not an AC identifier", m.name)));
        }
        if let Some(d) = m.dependencies.first() {
            return Err(bad(format!(
                "dependencies are not supported (it needs {})",
                d.get("imageName")
                    .and_then(Value::as_str)
                    .unwrap_or("another image")
            )));
        }
        if !m.path_whitelist.is_empty() {
            return Err(bad("pathWhitelist is not supported".into()));
        }
        for (key, want) in [("os", "linux"), ("arch", "amd64")] {
            if let Some(v) = m.label(key).filter(|v| *v != want) {
                return Err(bad(format!("{key} is {v:?}: only linux/amd64 images run")));
            }
        }
        if let Some(app) = &m.app {
            app.check()?;
        }
        Ok(m)
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// The name the image is stored and judged by: `name:version`, or
    /// `name:latest` without a version label.
    pub fn reference(&self) -> Result<reference::Ref, ImageError> {
        let full = format!(
            "{}:{}",
            self.name,
            self.label("version").unwrap_or("latest")
        );
        match reference::parse_exact(&full) {
            Ok(r) if r.name == full => Ok(r),
            _ => Err(bad(format!(
                "the name {full:?} is not a registry-style image reference (host/path:tag)"
            ))),
        }
    }

    /// The OCI image config (JSON) for this manifest, whose one layer has
    /// the diff id `diff_id`.
    pub fn oci_config(&self, diff_id: &str) -> Value {
        let mut labels = BTreeMap::new();
        labels.insert("org.appc.image.name".to_string(), self.name.clone());
        for l in self
            .labels
            .iter()
            .filter(|l| !matches!(l.name.as_str(), "os" | "arch"))
        {
            labels.insert(format!("org.appc.label.{}", l.name), l.value.clone());
        }
        let mut created = None;
        for a in &self.annotations {
            if a.name == "created" {
                created = Some(a.value.clone());
            } else {
                labels.insert(format!("org.appc.annotation.{}", a.name), a.value.clone());
            }
        }
        let mut config = Map::new();
        if let Some(app) = &self.app {
            app.fill(&mut config, &mut labels);
        }
        config.insert("Labels".into(), json!(labels));
        let mut out = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        if let Some(c) = created {
            out["created"] = json!(c);
        }
        out
    }
}

impl App {
    fn check(&self) -> Result<(), ImageError> {
        match self.exec.first() {
            None => return Err(bad("app.exec is empty".into())),
            Some(e) if !e.starts_with('/') => {
                return Err(bad(format!("app.exec {e:?} is not an absolute path")))
            }
            _ => {}
        }
        for (what, v) in [("user", Some(&self.user)), ("group", self.group.as_ref())] {
            match v {
                Some(v) if v.starts_with('/') => {
                    return Err(bad(format!(
                        "app.{what} {v:?}: a file's owner as the {what} is not supported"
                    )))
                }
                Some(v) if v.is_empty() || v.contains(':') || v.contains('\0') => {
                    return Err(bad(format!("app.{what} {v:?} is not a valid {what}")))
                }
                _ => {}
            }
        }
        if !self.event_handlers.is_empty() {
            return Err(bad("app.eventHandlers are not supported".into()));
        }
        if let Some(w) = &self.working_directory {
            if !w.starts_with('/') || w.contains('\0') {
                return Err(bad(format!(
                    "app.workingDirectory {w:?} is not an absolute path"
                )));
            }
        }
        for e in &self.environment {
            let ok = !e.name.is_empty()
                && !e.name.starts_with(|c: char| c.is_ascii_digit())
                && e.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok || e.value.contains('\0') {
                return Err(bad(format!(
                    "app.environment {:?} is not a valid variable",
                    e.name
                )));
            }
        }
        for i in &self.isolators {
            if !matches!(i.name.as_str(), "resource/memory" | "resource/cpu") {
                return Err(bad(format!(
                    "the isolator {:?} is not supported (only resource/memory and resource/cpu)",
                    i.name
                )));
            }
        }
        for m in &self.mount_points {
            if !m.path.starts_with('/')
                || m.path.split('/').any(|c| c == "..")
                || !ac_identifier_ok(&m.name)
            {
                return Err(bad(format!(
                    "app.mountPoints {:?} ({}) is not valid",
                    m.name, m.path
                )));
            }
        }
        let mut total = 0u64;
        for p in &self.ports {
            let count = p.count.unwrap_or(1);
            if !matches!(p.protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(bad(format!(
                    "app.ports {:?}: protocol {:?} is not supported",
                    p.name, p.protocol
                )));
            }
            if p.port == 0 || count == 0 || p.port + count - 1 > 65535 {
                return Err(bad(format!(
                    "app.ports {:?}: port {} count {count} is out of range",
                    p.name, p.port
                )));
            }
            total += count;
            if total > MAX_PORTS {
                return Err(bad(format!("more than {MAX_PORTS} ports")));
            }
        }
        Ok(())
    }

    fn fill(&self, config: &mut Map<String, Value>, labels: &mut BTreeMap<String, String>) {
        config.insert("Entrypoint".into(), json!(self.exec));
        let env: Vec<String> = self
            .environment
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        config.insert("Env".into(), json!(env));
        if let Some(w) = &self.working_directory {
            config.insert("WorkingDir".into(), json!(w));
        }
        let user = match &self.group {
            Some(g) => format!("{}:{g}", self.user),
            None => self.user.clone(),
        };
        config.insert("User".into(), json!(user));
        let mut ports = Map::new();
        for p in &self.ports {
            for n in p.port..p.port + p.count.unwrap_or(1) {
                ports.insert(format!("{n}/{}", p.protocol), json!({}));
            }
        }
        if !ports.is_empty() {
            config.insert("ExposedPorts".into(), Value::Object(ports));
        }
        let mut volumes = Map::new();
        for m in &self.mount_points {
            volumes.insert(m.path.clone(), json!({}));
            let ro = if m.read_only { " readOnly" } else { "" };
            labels.insert(
                format!("org.appc.mountpoint.{}", m.name),
                format!("{}{ro}", m.path),
            );
        }
        if !volumes.is_empty() {
            config.insert("Volumes".into(), Value::Object(volumes));
        }
        for i in &self.isolators {
            labels.insert(format!("org.appc.isolator.{}", i.name), i.value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app",
      "labels":[{"name":"version","value":"1.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
      "app":{"exec":["/bin/app","-q"],"user":"100","group":"300","workingDirectory":"/w",
        "environment":[{"name":"A","value":"1"}],
        "isolators":[{"name":"resource/memory","value":{"limit":"1G"}}],
        "mountPoints":[{"name":"data","path":"/data","readOnly":true}],
        "ports":[{"name":"http","protocol":"tcp","port":80},{"name":"r","protocol":"udp","port":7000,"count":2}]},
      "annotations":[{"name":"created","value":"2024-01-02T03:04:05Z"},{"name":"authors","value":"me"}]}"#;

    #[test]
    fn maps_to_an_oci_config() {
        let m = AciManifest::parse(FULL.as_bytes()).unwrap();
        assert_eq!(m.reference().unwrap().name, "example.com/app:1.0");
        let c = m.oci_config("sha256:x");
        let cfg = &c["config"];
        assert_eq!(cfg["Entrypoint"], json!(["/bin/app", "-q"]));
        assert_eq!(cfg["Env"], json!(["A=1"]));
        assert_eq!(cfg["WorkingDir"], "/w");
        assert_eq!(cfg["User"], "100:300");
        assert_eq!(
            cfg["ExposedPorts"],
            json!({"80/tcp": {}, "7000/udp": {}, "7001/udp": {}})
        );
        assert_eq!(cfg["Volumes"], json!({"/data": {}}));
        assert_eq!(cfg["Labels"]["org.appc.mountpoint.data"], "/data readOnly");
        assert_eq!(
            cfg["Labels"]["org.appc.isolator.resource/memory"],
            r#"{"limit":"1G"}"#
        );
        assert_eq!(cfg["Labels"]["org.appc.annotation.authors"], "me");
        assert_eq!(c["created"], "2024-01-02T03:04:05Z");
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:x"]));
        let bytes = serde_json::to_vec(&c).unwrap();
        let parsed = crate::image::manifest::ConfigFile::parse(&bytes, "c").unwrap();
        assert_eq!(parsed.image_config().user, "100:300");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let with = |from: &str, to: &str| {
            assert!(FULL.contains(from), "{from}");
            AciManifest::parse(FULL.replacen(from, to, 1).as_bytes())
        };
        for (from, to, why) in [
            ("\"ImageManifest\"", "\"PodManifest\"", "acKind"),
            ("example.com/app", "Example.com/App", "AC identifier"),
            (
                "\"annotations\"",
                "\"dependencies\":[{\"imageName\":\"example.com/base\"}],\"annotations\"",
                "example.com/base",
            ),
            (
                "\"annotations\"",
                "\"pathWhitelist\":[\"/x\"],\"annotations\"",
                "pathWhitelist",
            ),
            ("\"amd64\"", "\"arm64\"", "linux/amd64"),
            ("\"/bin/app\"", "\"bin/app\"", "absolute"),
            ("\"user\":\"100\"", "\"user\":\"/bin/ping\"", "owner"),
            (
                "\"resource/memory\"",
                "\"os/linux/capabilities-retain-set\"",
                "isolator",
            ),
            ("\"protocol\":\"tcp\"", "\"protocol\":\"quic\"", "protocol"),
            ("\"port\":80", "\"port\":65535,\"count\":2", "out of range"),
            ("\"count\":2", "\"count\":5000", "more than"),
            ("{\"name\":\"A\"", "{\"name\":\"A-B\"", "variable"),
            ("\"/data\"", "\"../data\"", "mountPoints"),
            (
                "\"workingDirectory\":\"/w\"",
                "\"workingDirectory\":\"w\"",
                "workingDirectory",
            ),
            (
                "\"app\":{",
                "\"app\":{\"eventHandlers\":[{\"name\":\"pre-start\",\"exec\":[\"/x\"]}],",
                "eventHandlers",
            ),
        ] {
            let e = with(from, to).unwrap_err().to_string();
            assert!(e.contains(why), "{to}: {e}");
        }
        let big = format!("{}{}", FULL, " ".repeat(MAX_MANIFEST as usize));
        assert!(AciManifest::parse(big.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("larger"));
        // A name without a registry host is no registry-style reference.
        let bare = AciManifest::parse(FULL.replace("example.com/app", "app").as_bytes()).unwrap();
        assert!(bare.reference().is_err());
        let untagged = AciManifest::parse(
            FULL.replace("\"value\":\"1.0\"", "\"value\":\"1.0+b\"")
                .as_bytes(),
        )
        .unwrap();
        assert!(untagged.reference().is_err());
    }
}
