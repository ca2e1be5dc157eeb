//! Share configuration: `TAG=HOSTDIR[:ro|:rw][:cache=never|auto|always]`.
//!
//! A [`ShareSpec`] is typed data: the pod code builds it directly and hands it to the VMM as
//! is (security review F12: a host path that ended in `:rw` used to be re-parsed as an option
//! when pods passed shares as `--share` strings). The string form exists only for the
//! `husk vm --share` flag, and parsing it is a pure function.
//!
//! Touching the host file system is one separate step, [`ShareSpec::open`]: it opens the root
//! directory once (see [`super::root`]) and that open is the whole validation, so what is
//! checked is exactly what is served.
//!
//! Options are read from the right: `/data:ro` is the directory `/data`, read-only. Any `:` left
//! in the host path after the options are peeled off is refused: `/d:ro:rw` could mean the
//! directory `/d:ro` or a mistake, and the flag has no way to say which. Pods (typed specs) share
//! such directories as they are.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use fuse_backend_rs::passthrough::CachePolicy;

use super::root::ShareRoot;

/// Longest tag the virtio-fs config space can carry (`tag[36]`, not NUL terminated when full).
pub const MAX_TAG_LEN: usize = 36;

/// Errors from parsing or resolving a share description.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    /// No `=` between tag and host directory.
    #[error("share `{0}` is not of the form TAG=HOSTDIR[:ro]")]
    MissingEquals(String),
    /// Tag is empty.
    #[error("share `{0}` has an empty tag")]
    EmptyTag(String),
    /// Tag longer than the config field.
    #[error("share tag `{0}` is longer than {MAX_TAG_LEN} bytes")]
    TagTooLong(String),
    /// Tag with characters a guest `mount -t virtiofs TAG` or the kernel command line would mangle.
    #[error("share tag `{0}` may only contain letters, digits, '.', '_' and '-'")]
    BadTagChar(String),
    /// Host directory is empty.
    #[error("share `{0}` has an empty host directory")]
    EmptyPath(String),
    /// `:` left in the host directory of a `--share` string.
    #[error("share `{0}`: a host directory containing ':' cannot be given as TAG=HOSTDIR")]
    ColonInPath(String),
    /// Unknown cache mode.
    #[error("unknown cache mode `{0}` (expected never, auto or always)")]
    BadCacheMode(String),
    /// Two shares with one tag.
    #[error("share tag `{0}` is given twice")]
    DuplicateTag(String),
    /// Host directory cannot be resolved.
    #[error("share `{tag}`: host directory {path} cannot be opened: {reason}")]
    HostDir {
        /// Share tag.
        tag: String,
        /// Path as given.
        path: PathBuf,
        /// OS error text (kept as text so the error stays `PartialEq` for tests).
        reason: String,
    },
    /// Host path is not a directory.
    #[error("share `{tag}`: {path} is not a directory")]
    NotADirectory {
        /// Share tag.
        tag: String,
        /// Path as given.
        path: PathBuf,
    },
    /// A component of the host path is a symlink.
    #[error("share `{tag}`: {path} has a symbolic link in it (share the real path{real})")]
    Symlink {
        /// Share tag.
        tag: String,
        /// Path as given.
        path: PathBuf,
        /// `: /the/real/path` when it can be found, else empty.
        real: String,
    },
}

/// How much the guest kernel may cache, named as virtiofsd users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// No data cache (direct I/O), no attribute/dentry cache: for directories the host changes
    /// while the guest runs and both sides must see each other at once.
    Never,
    /// Close-to-open consistency with short (1 s) attribute/dentry timeouts: the default for
    /// volumes, which the host may also touch.
    #[default]
    Auto,
    /// Keep data across opens and cache attributes/dentries for a day: only for content nobody
    /// changes behind the guest's back, such as the content-addressed image store.
    Always,
}

impl CacheMode {
    /// The fuse-backend-rs policy for this mode.
    pub fn policy(self) -> CachePolicy {
        match self {
            CacheMode::Never => CachePolicy::Never,
            CacheMode::Auto => CachePolicy::Auto,
            CacheMode::Always => CachePolicy::Always,
        }
    }

    /// Entry and attribute timeout handed to the guest with every lookup/getattr reply.
    pub fn timeout(self) -> std::time::Duration {
        match self {
            CacheMode::Never => std::time::Duration::ZERO,
            CacheMode::Auto => std::time::Duration::from_secs(1),
            CacheMode::Always => std::time::Duration::from_secs(86_400),
        }
    }
}

impl FromStr for CacheMode {
    type Err = ShareError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(CacheMode::Never),
            "auto" => Ok(CacheMode::Auto),
            "always" => Ok(CacheMode::Always),
            other => Err(ShareError::BadCacheMode(other.to_string())),
        }
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheMode::Never => "never",
            CacheMode::Auto => "auto",
            CacheMode::Always => "always",
        })
    }
}

/// One host directory exported to the guest under a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    /// The tag the guest mounts (`mount -t virtiofs TAG /mnt`).
    pub tag: String,
    /// Host directory: no component may be a symlink (see [`super::root`]).
    pub host_dir: PathBuf,
    /// Refuse every modifying request with `EROFS`.
    pub read_only: bool,
    /// Guest cache mode. `:ro` does not change it: read-only for the guest says nothing about
    /// whether the host changes the directory, so only an explicit `cache=always` (or the pod
    /// code for its immutable image store) turns on long-lived caching.
    pub cache: CacheMode,
}

impl ShareSpec {
    /// Parses `TAG=HOSTDIR[:ro|:rw][:cache=MODE]` without touching the file system.
    pub fn parse(arg: &str) -> Result<ShareSpec, ShareError> {
        let (tag, rest) = arg
            .split_once('=')
            .ok_or_else(|| ShareError::MissingEquals(arg.to_string()))?;
        validate_tag(tag, arg)?;

        let mut path = rest;
        let mut read_only = None;
        let mut cache = None;
        // Peel known options off the right end; anything else belongs to the path.
        while let Some((head, opt)) = path.rsplit_once(':') {
            match opt {
                "ro" | "rw" if read_only.is_none() => read_only = Some(opt == "ro"),
                _ if opt.starts_with("cache=") && cache.is_none() => {
                    cache = Some(opt["cache=".len()..].parse::<CacheMode>()?)
                }
                _ => break,
            }
            path = head;
        }
        if path.is_empty() {
            return Err(ShareError::EmptyPath(arg.to_string()));
        }
        if path.contains(':') {
            return Err(ShareError::ColonInPath(tag.to_string()));
        }
        Ok(ShareSpec {
            tag: tag.to_string(),
            host_dir: PathBuf::from(path),
            read_only: read_only.unwrap_or(false),
            cache: cache.unwrap_or_default(),
        })
    }

    /// Parses every `--share` argument and refuses duplicate tags.
    pub fn parse_all<S: AsRef<str>>(args: &[S]) -> Result<Vec<ShareSpec>, ShareError> {
        let mut out: Vec<ShareSpec> = Vec::with_capacity(args.len());
        for arg in args {
            let spec = ShareSpec::parse(arg.as_ref())?;
            if out.iter().any(|s| s.tag == spec.tag) {
                return Err(ShareError::DuplicateTag(spec.tag));
            }
            out.push(spec);
        }
        Ok(out)
    }

    /// Opens the host directory once (no symlink in any component, a directory): the share's
    /// validation and the descriptor its server keeps. Call before the guest runs.
    pub fn open(self) -> Result<OpenShare, ShareError> {
        match ShareRoot::open(&self.host_dir) {
            Ok(root) => Ok(OpenShare { spec: self, root }),
            Err(e) => Err(self.open_error(e)),
        }
    }

    /// Checks typed specs as [`ShareSpec::parse_all`] checks strings (tags valid and unique),
    /// then opens each one.
    pub fn open_all(specs: Vec<ShareSpec>) -> Result<Vec<OpenShare>, ShareError> {
        ShareSpec::check_tags(&specs)?;
        specs.into_iter().map(ShareSpec::open).collect()
    }

    /// Checks the tags of typed specs as [`ShareSpec::parse_all`] checks strings: each valid,
    /// none given twice.
    pub fn check_tags<'a>(
        specs: impl IntoIterator<Item = &'a ShareSpec>,
    ) -> Result<(), ShareError> {
        let mut seen = std::collections::HashSet::new();
        for spec in specs {
            validate_tag(&spec.tag, &spec.tag)?;
            if !seen.insert(spec.tag.as_str()) {
                return Err(ShareError::DuplicateTag(spec.tag.clone()));
            }
        }
        Ok(())
    }

    fn open_error(&self, e: std::io::Error) -> ShareError {
        let (tag, path) = (self.tag.clone(), self.host_dir.clone());
        match e.raw_os_error() {
            Some(libc::ELOOP) => {
                let real = path
                    .canonicalize()
                    .map(|p| format!(": {}", p.display()))
                    .unwrap_or_default();
                ShareError::Symlink { tag, path, real }
            }
            Some(libc::ENOTDIR) if path.exists() => ShareError::NotADirectory { tag, path },
            _ => ShareError::HostDir {
                tag,
                path,
                reason: e.to_string(),
            },
        }
    }
}

/// A share whose root directory is open: what a share's server is built from.
#[derive(Debug)]
pub struct OpenShare {
    /// What was asked for.
    pub spec: ShareSpec,
    /// The root directory, held for the life of the share.
    pub root: ShareRoot,
}

fn validate_tag(tag: &str, arg: &str) -> Result<(), ShareError> {
    if tag.is_empty() {
        return Err(ShareError::EmptyTag(arg.to_string()));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(ShareError::TagTooLong(tag.to_string()));
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ShareError::BadTagChar(tag.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tag: &str, dir: &str, ro: bool, cache: CacheMode) -> ShareSpec {
        ShareSpec {
            tag: tag.into(),
            host_dir: dir.into(),
            read_only: ro,
            cache,
        }
    }

    #[test]
    fn parses_plain_ro_rw_and_cache() {
        use CacheMode::*;
        let cases = [
            ("data=/srv/data", spec("data", "/srv/data", false, Auto)),
            ("data=/srv/data:ro", spec("data", "/srv/data", true, Auto)),
            ("data=/srv/data:rw", spec("data", "/srv/data", false, Auto)),
            (
                "img=/var/lib/husk/blobs:ro:cache=always",
                spec("img", "/var/lib/husk/blobs", true, Always),
            ),
            (
                "v=rel/dir:cache=never:ro",
                spec("v", "rel/dir", true, Never),
            ),
            ("v=/x=y", spec("v", "/x=y", false, Auto)),
        ];
        for (arg, want) in cases {
            assert_eq!(ShareSpec::parse(arg), Ok(want), "{arg}");
        }
    }

    #[test]
    fn refuses_malformed_shares() {
        let bad = [
            ("noequals", ShareError::MissingEquals("noequals".into())),
            ("=/dir", ShareError::EmptyTag("=/dir".into())),
            ("t=", ShareError::EmptyPath("t=".into())),
            ("t=:ro", ShareError::EmptyPath("t=:ro".into())),
            (
                "t=/d:cache=sometimes",
                ShareError::BadCacheMode("sometimes".into()),
            ),
            ("a b=/d", ShareError::BadTagChar("a b".into())),
            ("a/b=/d", ShareError::BadTagChar("a/b".into())),
            ("é=/d", ShareError::BadTagChar("é".into())),
            (
                "0123456789012345678901234567890123456=/d",
                ShareError::TagTooLong("0123456789012345678901234567890123456".into()),
            ),
        ];
        for (arg, want) in bad {
            assert_eq!(ShareSpec::parse(arg), Err(want), "{arg}");
        }
        // Exactly 36 bytes fits the config field.
        assert!(ShareSpec::parse("012345678901234567890123456789012345=/d").is_ok());
    }

    #[test]
    fn colon_left_in_the_path_is_refused() {
        // F12: `/d:ro:rw` used to share `/d:ro` read-write; a `:` that is not an option is now
        // an error instead of a guess, in any position.
        for arg in [
            "t=/d:ro:rw",
            "t=/a:b/c:ro",
            "t=/a:b",
            "t=/srv/x:rw:cache=auto:ro",
        ] {
            assert_eq!(
                ShareSpec::parse(arg),
                Err(ShareError::ColonInPath("t".into())),
                "{arg}"
            );
        }
    }

    #[test]
    fn duplicate_tags_are_refused() {
        assert_eq!(
            ShareSpec::parse_all(&["a=/x", "b=/y", "a=/z:ro"]),
            Err(ShareError::DuplicateTag("a".into()))
        );
        assert_eq!(ShareSpec::parse_all(&["a=/x", "b=/y"]).unwrap().len(), 2);
    }

    #[test]
    fn open_checks_the_host_directory() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let p = dir.as_path().to_str().unwrap().to_string();
        let ok = ShareSpec::parse(&format!("t={p}/./"))
            .unwrap()
            .open()
            .unwrap();
        assert_eq!(ok.root.path(), dir.as_path());

        let missing = ShareSpec::parse(&format!("t={p}/missing")).unwrap().open();
        assert!(matches!(missing, Err(ShareError::HostDir { .. })));

        std::fs::write(dir.as_path().join("file"), b"x").unwrap();
        let file = ShareSpec::parse(&format!("t={p}/file")).unwrap().open();
        assert!(matches!(file, Err(ShareError::NotADirectory { .. })));

        std::fs::create_dir(dir.as_path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.as_path().join("link")).unwrap();
        let link = ShareSpec::parse(&format!("t={p}/link")).unwrap().open();
        let err = link.unwrap_err();
        assert!(matches!(err, ShareError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{p}/real")), "{err}");
    }

    #[test]
    fn typed_specs_are_checked_like_strings() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let d = dir.as_path().to_str().unwrap();
        let typed = |tag: &str| spec(tag, d, false, CacheMode::Auto);
        assert_eq!(
            ShareSpec::open_all(vec![typed("a"), typed("a")]).unwrap_err(),
            ShareError::DuplicateTag("a".into())
        );
        assert_eq!(
            ShareSpec::open_all(vec![typed("a b")]).unwrap_err(),
            ShareError::BadTagChar("a b".into())
        );
        assert_eq!(
            ShareSpec::open_all(vec![typed("a"), typed("b")])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn cache_modes_map_to_policies() {
        assert_eq!(CacheMode::Never.policy(), CachePolicy::Never);
        assert_eq!(CacheMode::Auto.policy(), CachePolicy::Auto);
        assert_eq!(CacheMode::Always.policy(), CachePolicy::Always);
        assert!(CacheMode::Never.timeout().is_zero());
        assert!(CacheMode::Always.timeout() > CacheMode::Auto.timeout());
        for m in [CacheMode::Never, CacheMode::Auto, CacheMode::Always] {
            assert_eq!(m.to_string().parse::<CacheMode>(), Ok(m));
        }
    }
}
