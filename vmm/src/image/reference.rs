//! Image references, normalised the way docker does (`busybox` is
//! `docker.io/library/busybox:latest`; `127.0.0.1:5000/x` keeps its
//! registry), and the "may this registry be spoken to in plain HTTP" rule.
//!
//! The grammar is the distribution project's (reference/regexp.go),
//! written out by hand rather than taken from oci-spec: oci-spec's parser
//! is built on `regex`, ~600 KB of code that would sit in the `husk`
//! binary, which every pod's VMM runs (its RSS is a measured target). The
//! pull helper builds its registry URLs from a [`Ref`].

use std::net::IpAddr;

use super::digest;
use super::ImageError;

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The canonical full name: `registry/repository[:tag][@digest]`.
    pub name: String,
    /// `registry/path`, without tag or digest.
    pub repository: String,
    /// The registry host[:port], as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path in the registry (`library/busybox`).
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

const MAX_NAME: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`: DNS-ish labels, an IPv4 address, or `[IPv6]`.
fn domain_ok(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Parses and normalises `s`; a reference with neither tag nor digest gets
/// the tag `latest`, as docker pulls it.
pub fn parse(s: &str) -> Result<Ref, ImageError> {
    parse_with(s, true)
}

/// Parses and normalises `s` without adding a default tag: a name-only
/// reference keeps `tag == None`. Signature identities are compared this
/// way (a signature for `repo` is not one for `repo:latest`).
pub fn parse_exact(s: &str) -> Result<Ref, ImageError> {
    parse_with(s, false)
}

fn parse_with(s: &str, default_tag: bool) -> Result<Ref, ImageError> {
    let bad = |reason: &str| ImageError::BadReference {
        reference: s.to_string(),
        reason: reason.to_string(),
    };
    if s.is_empty() || s.trim() != s {
        return Err(bad("empty or surrounded by spaces"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("only sha256 digests are supported"))?;
            if !digest::is_hex64(hex) {
                return Err(bad("a digest is sha256: and 64 lowercase hex digits"));
            }
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            if !tag_ok(tag) {
                return Err(bad("invalid tag"));
            }
            (&rest[..last_slash + i], Some(tag.to_string()))
        }
        None => (rest, None),
    };
    // docker's splitDockerDomain: the first component is a registry if it
    // has a `.` or `:`, is `localhost`, or has upper case.
    let (mut registry, mut path) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), remainder.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if registry == "index.docker.io" {
        registry = "docker.io".into();
    }
    if registry == "docker.io" && !path.contains('/') {
        path = format!("library/{path}");
    }
    if !domain_ok(&registry) {
        return Err(bad("invalid registry host"));
    }
    if !path.split('/').all(path_component_ok) {
        return Err(bad(
            "repository names are lower-case letters, digits and . _ - separators",
        ));
    }
    let repository = format!("{registry}/{path}");
    if repository.len() > MAX_NAME {
        return Err(bad("name longer than 255 characters"));
    }
    let tag = if default_tag && tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    let mut full = repository.clone();
    if let Some(t) = &tag {
        full = format!("{full}:{t}");
    }
    if let Some(d) = &digest {
        full = format!("{full}@{d}");
    }
    Ok(Ref {
        name: full,
        repository,
        registry,
        path,
        tag,
        digest,
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
        let r = parse(&format!("127.0.0.1:5000/a/b-c.d__e:v1.0@{d}")).unwrap();
        assert_eq!(r.path, "a/b-c.d__e");
        assert_eq!(r.name, format!("127.0.0.1:5000/a/b-c.d__e:v1.0@{d}"));
        assert_eq!(parse("[::1]:5000/x").unwrap().registry, "[::1]:5000");
        assert_eq!(parse("docker.io/busybox").unwrap().path, "library/busybox");
        assert_eq!(parse("a---b").unwrap().path, "library/a---b");
        let exact = parse_exact("busybox").unwrap();
        assert_eq!(exact.name, "docker.io/library/busybox");
        assert_eq!(exact.tag, None);
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
            "x.io/A/b",
            "a/-b",
            "a__-b",
            "a/b_",
            "[::1/x",
            "h:port/x",
            "-h.io/x",
            "x:-tag",
        ] {
            assert!(
                matches!(parse(bad), Err(ImageError::BadReference { .. })),
                "{bad:?} parsed"
            );
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(parse_name(&format!("busybox@{d}")).is_err());
        assert!(parse_name("busybox:1").is_ok());
        assert!(parse(&format!("busybox@sha256:{}", "A".repeat(64))).is_err());
        assert!(parse(&format!("x.io/{}", "a".repeat(260))).is_err());
        // docker reads an upper-case first component as a registry host.
        assert_eq!(parse("UPPER/case").unwrap().registry, "UPPER");
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
