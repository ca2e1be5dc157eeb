//! The JSON documents the host reads: image manifests, image indexes
//! (manifest lists), and image configs, OCI and Docker schema 2 alike.
//!
//! Only the fields husk uses are parsed, into our own small types rather
//! than oci-client's or oci-spec's: those insist on fields that Docker's
//! documents and `docker save` archives leave out or spell differently, and
//! we want every digest checked for form ([`digest::hex_of`]) and every
//! layer media type checked against what the agent can unpack, here, before
//! anything is stored. Every document is bounded to [`MAX_JSON`] bytes.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest;
use super::ImageError;

/// The largest manifest, index or config husk reads.
pub const MAX_JSON: u64 = 4 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Layer media types the agent unpacks (tar, tar+gzip, tar+zstd).
const LAYER_TYPES: [&str; 6] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    DOCKER_LAYER_TAR,
    DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index or manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    pub manifests: Vec<Descriptor>,
}

/// A manifest-shaped document of either kind.
#[derive(Debug)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

fn bounded<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], ImageError> {
    if bytes.len() as u64 > MAX_JSON {
        return Err(ImageError::Malformed(format!(
            "{what} is larger than {MAX_JSON} bytes"
        )));
    }
    Ok(bytes)
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Malformed(format!("{what} is malformed: {e}"))
}

impl Descriptor {
    fn check(&self, what: &str) -> Result<(), ImageError> {
        digest::hex_of(&self.digest)
            .map(drop)
            .map_err(|e| malformed(what, e))
    }
}

impl Document {
    /// Parses a manifest or an index: a document with `manifests` is an index.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
        let v: serde_json::Value =
            serde_json::from_slice(bounded(bytes, what)?).map_err(|e| malformed(what, e))?;
        if v.get("manifests").is_some() {
            let idx: Index = serde_json::from_value(v).map_err(|e| malformed(what, e))?;
            if idx.schema_version != 2 {
                return Err(malformed(what, "schemaVersion is not 2"));
            }
            for m in &idx.manifests {
                m.check(what)?;
            }
            Ok(Document::Index(idx))
        } else {
            Ok(Document::Manifest(Manifest::from_value(v, what)?))
        }
    }
}

impl Manifest {
    /// Parses an image manifest and checks its digests and layer types.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Manifest, ImageError> {
        let v: serde_json::Value =
            serde_json::from_slice(bounded(bytes, what)?).map_err(|e| malformed(what, e))?;
        Manifest::from_value(v, what)
    }

    fn from_value(v: serde_json::Value, what: &str) -> Result<Manifest, ImageError> {
        let m: Manifest = serde_json::from_value(v).map_err(|e| malformed(what, e))?;
        if m.schema_version != 2 {
            return Err(malformed(what, "schemaVersion is not 2"));
        }
        m.config.check(what)?;
        if m.config.size > MAX_JSON {
            return Err(malformed(what, "the config is larger than 4 MiB"));
        }
        for l in &m.layers {
            l.check(what)?;
            if !LAYER_TYPES.contains(&l.media_type.as_str()) {
                return Err(ImageError::Malformed(format!(
                    "{what}: unsupported layer media type {:?}",
                    l.media_type
                )));
            }
        }
        Ok(m)
    }
}

impl Index {
    /// The linux/amd64 entry, the only platform husk's guests run.
    pub fn linux_amd64(&self) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
    }
}

/// The fields of an image config husk applies.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    pub fn parse(bytes: &[u8], what: &str) -> Result<ConfigFile, ImageError> {
        serde_json::from_slice(bounded(bytes, what)?).map_err(|e| malformed(what, e))
    }

    /// What the agent applies.
    pub fn image_config(&self) -> husk_proto::ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        husk_proto::ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: &str) -> String {
        digest::of(x.as_bytes())
    }

    #[test]
    fn manifest_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":5}}]}}"#,
            d("c"),
            d("l")
        );
        assert!(matches!(
            Document::parse(m.as_bytes(), "m").unwrap(),
            Document::Manifest(_)
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d("arm"),
            d("amd")
        );
        match Document::parse(i.as_bytes(), "i").unwrap() {
            Document::Index(idx) => assert_eq!(idx.linux_amd64().unwrap().digest, d("amd")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refused() {
        let foreign = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":5}}]}}"#,
            d("c"),
            d("l")
        );
        assert!(Manifest::parse(foreign.as_bytes(), "m").is_err());
        let bad_digest =
            r#"{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(Manifest::parse(bad_digest.as_bytes(), "m").is_err());
        assert!(Manifest::parse(b"{", "m").is_err());
        let big = vec![b' '; MAX_JSON as usize + 1];
        assert!(Manifest::parse(&big, "m").is_err());
        let v1 = format!(
            r#"{{"schemaVersion":1,"config":{{"digest":"{}","size":1}},"layers":[]}}"#,
            d("c")
        );
        assert!(Manifest::parse(v1.as_bytes(), "m").is_err());
    }

    #[test]
    fn config_fields() {
        let c = br#"{"created":"2024-01-02T03:04:05Z","architecture":"amd64","os":"linux",
            "config":{"Entrypoint":null,"Cmd":["sh"],"Env":["A=1"],"WorkingDir":"/w","User":"1000"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg = ConfigFile::parse(c, "c").unwrap();
        let ic = cfg.image_config();
        assert_eq!(ic.cmd, ["sh"]);
        assert!(ic.entrypoint.is_empty());
        assert_eq!(ic.working_dir, "/w");
        assert_eq!(ic.user, "1000");
        assert_eq!(cfg.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    }
}
