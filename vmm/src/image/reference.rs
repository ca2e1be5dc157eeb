//! Image references, normalised the way docker does (`busybox` is
//! `docker.io/library/busybox:latest`; `127.0.0.1:5000/x` keeps its
//! registry). Parsing is oci-spec's (through oci-client), a port of the
//! distribution project's grammar; this module only adds the canonical
//! string husk stores names under and the "may this registry be spoken to
//! in plain HTTP" rule.

use std::net::IpAddr;

use oci_client::Reference;

use super::ImageError;

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The canonical full name: `registry/repository[:tag][@digest]`.
    pub name: String,
    /// `registry/repository`, without tag or digest.
    pub repository: String,
    /// The registry host[:port], as written (`docker.io` for Docker Hub).
    pub registry: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// The oci-client form, for pulling.
    pub oci: Reference,
}

/// Parses and normalises `s`.
pub fn parse(s: &str) -> Result<Ref, ImageError> {
    let bad = |reason: String| ImageError::BadReference {
        reference: s.to_string(),
        reason,
    };
    if s.trim() != s || s.is_empty() {
        return Err(bad("empty or surrounded by spaces".into()));
    }
    let oci = Reference::try_from(s).map_err(|e| bad(e.to_string()))?;
    // The grammar oci-spec implements lets upper case through in paths;
    // docker's does not (only a registry host may have it).
    if oci.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad("repository names are lower case".into()));
    }
    if let Some(d) = oci.digest() {
        if !d.starts_with("sha256:") {
            return Err(bad("only sha256 digests are supported".into()));
        }
    }
    Ok(Ref {
        name: oci.whole(),
        repository: format!("{}/{}", oci.registry(), oci.repository()),
        registry: oci.registry().to_string(),
        tag: oci.tag().map(str::to_string),
        digest: oci.digest().map(str::to_string),
        oci,
    })
}

/// Parses `s` as a name to store an image under: a name with an optional
/// tag, no digest.
pub fn parse_name(s: &str) -> Result<Ref, ImageError> {
    let r = parse(s)?;
    if r.digest.is_some() {
        return Err(ImageError::BadReference {
            reference: s.to_string(),
            reason: "a name to store an image under takes a tag, not a digest".into(),
        });
    }
    Ok(r)
}

/// `registry/repository` of a stored name (`docker.io/library/busybox:latest`
/// → `docker.io/library/busybox`).
pub fn repository_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

/// The short form `husk images` shows: Docker Hub's prefixes dropped
/// (`docker.io/library/busybox:latest` → `busybox:latest`).
pub fn familiar(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// Whether `registry` (`host[:port]`) is on the loopback: `localhost`, an
/// address in 127.0.0.0/8, or `[::1]`. Decided from the name as written,
/// never from DNS, so a name cannot be made "local" by a resolver.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_normalisation() {
        let r = parse("busybox").unwrap();
        assert_eq!(r.name, "docker.io/library/busybox:latest");
        assert_eq!(r.repository, "docker.io/library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(
            parse("user/app:1.0").unwrap().name,
            "docker.io/user/app:1.0"
        );
        assert_eq!(
            parse("index.docker.io/library/busybox").unwrap().name,
            "docker.io/library/busybox:latest"
        );
        let r = parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/x:latest");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(parse("localhost/a/b:c").unwrap().registry, "localhost");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.name, format!("docker.io/library/busybox@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "busybox:",
            "a//b",
            "busybox@sha256:abc",
            "x:y:z",
            "busybox@md5:00",
        ] {
            assert!(
                matches!(parse(bad), Err(ImageError::BadReference { .. })),
                "{bad:?} parsed"
            );
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(parse_name(&format!("busybox@{d}")).is_err());
        assert!(parse_name("busybox:1").is_ok());
    }

    #[test]
    fn names() {
        assert_eq!(
            repository_of("docker.io/library/busybox:latest"),
            "docker.io/library/busybox"
        );
        assert_eq!(repository_of("127.0.0.1:5000/x:v1"), "127.0.0.1:5000/x");
        assert_eq!(repository_of("127.0.0.1:5000/x"), "127.0.0.1:5000/x");
        assert_eq!(
            repository_of("127.0.0.1:5000/x@sha256:ab"),
            "127.0.0.1:5000/x"
        );
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("127.0.0.1:5000/x:v1"), "127.0.0.1:5000/x:v1");
    }

    #[test]
    fn loopback_rule() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "10.0.0.1:5000",
            "vm:5000",
            "localhost.example.com",
            "128.0.0.1",
            "[::2]:1",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
