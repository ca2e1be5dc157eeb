//! From an image config plus request overrides to what actually runs:
//! command line, environment, working directory, user. Pure functions, so
//! the precedence rules (the OCI / Docker ones) are unit-tested.

use husk_proto::{ImageConfig, MountSpec, ProcessSpec, Rlimit, SecuritySpec};

/// A request that cannot be turned into a process.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command: the image has no Entrypoint or Cmd and the request gives none")]
    NoCommand,
    #[error("environment entry {0:?} is not KEY=VALUE")]
    BadEnv(String),
    #[error("unknown rlimit {0:?}")]
    BadRlimit(String),
    #[error("rlimit {0}: soft limit above hard limit")]
    RlimitOrder(String),
    #[error("container id {0:?} is not 1-64 of [A-Za-z0-9_.-]")]
    BadId(String),
    #[error("working directory {0:?} is not absolute")]
    BadCwd(String),
    #[error("mount {which} {path:?} is not an absolute path without `..` (and not /)")]
    BadMount { which: &'static str, path: String },
    #[error("capability number {0} is out of range")]
    BadCapability(u8),
    #[error("tmpfs {0:?}: size must be at least one byte")]
    BadTmpfsSize(String),
    #[error("tmpfs mode {0:o} is not a permission mode (at most 7777)")]
    BadTmpfsMode(u32),
}

/// What to run, after merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
}

/// The PATH a process gets when neither image nor request sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's rules: Entrypoint from the request or the image; Cmd from the
/// request or (only if the entrypoint was not overridden) the image; env of
/// the image, then the request's entries override by key; request cwd/user
/// over the image's.
pub fn merge(image: &ImageConfig, process: &ProcessSpec) -> Result<Resolved, SpecError> {
    let entrypoint = process
        .entrypoint
        .clone()
        .unwrap_or_else(|| image.entrypoint.clone());
    let cmd = match (&process.args, &process.entrypoint) {
        (Some(args), _) => args.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    let env = merge_env(&image.env, &process.env)?;
    let cwd = process
        .cwd
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| image.working_dir.clone());
    let cwd = if cwd.is_empty() { "/".to_owned() } else { cwd };
    if !cwd.starts_with('/') {
        return Err(SpecError::BadCwd(cwd));
    }
    let user = process.user.clone().unwrap_or_else(|| image.user.clone());
    Ok(Resolved {
        args,
        env,
        cwd,
        user,
    })
}

/// `base` overridden key by key by `over`; PATH defaulted if absent.
pub fn merge_env(base: &[String], over: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for entry in base.iter().chain(over) {
        let Some((key, _)) = entry.split_once('=') else {
            return Err(SpecError::BadEnv(entry.clone()));
        };
        if key.is_empty() || entry.contains('\0') {
            return Err(SpecError::BadEnv(entry.clone()));
        }
        out.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        out.push(entry.clone());
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_owned());
    }
    Ok(out)
}

/// `RLIMIT_*` numbers for the request's rlimits.
pub fn rlimits(list: &[Rlimit]) -> Result<Vec<(libc::c_int, u64, u64)>, SpecError> {
    list.iter()
        .map(|r| {
            let n = match r
                .resource
                .to_ascii_lowercase()
                .trim_start_matches("rlimit_")
            {
                "as" => libc::RLIMIT_AS,
                "core" => libc::RLIMIT_CORE,
                "cpu" => libc::RLIMIT_CPU,
                "data" => libc::RLIMIT_DATA,
                "fsize" => libc::RLIMIT_FSIZE,
                "locks" => libc::RLIMIT_LOCKS,
                "memlock" => libc::RLIMIT_MEMLOCK,
                "msgqueue" => libc::RLIMIT_MSGQUEUE,
                "nice" => libc::RLIMIT_NICE,
                "nofile" => libc::RLIMIT_NOFILE,
                "nproc" => libc::RLIMIT_NPROC,
                "rss" => libc::RLIMIT_RSS,
                "rtprio" => libc::RLIMIT_RTPRIO,
                "rttime" => libc::RLIMIT_RTTIME,
                "sigpending" => libc::RLIMIT_SIGPENDING,
                "stack" => libc::RLIMIT_STACK,
                _ => return Err(SpecError::BadRlimit(r.resource.clone())),
            };
            if r.soft > r.hard {
                return Err(SpecError::RlimitOrder(r.resource.clone()));
            }
            Ok((n as libc::c_int, r.soft, r.hard))
        })
        .collect()
}

/// Checks the bind mounts of a container request.
pub fn check_mounts(mounts: &[MountSpec]) -> Result<(), SpecError> {
    for m in mounts {
        for (which, path) in [("source", &m.source), ("destination", &m.destination)] {
            if !husk_proto::security::plain_absolute(path) {
                return Err(SpecError::BadMount {
                    which,
                    path: path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Checks a container's confinement: capability numbers the kernel could
/// know (0-63), tmpfs paths as plain as a mount's, sizes and modes.
pub fn check_security(s: &SecuritySpec) -> Result<(), SpecError> {
    if let Some(&c) = s.capabilities.iter().find(|&&c| c > 63) {
        return Err(SpecError::BadCapability(c));
    }
    for t in &s.tmpfs {
        if !husk_proto::security::plain_absolute(&t.destination) {
            return Err(SpecError::BadMount {
                which: "destination",
                path: t.destination.clone(),
            });
        }
        if t.size == 0 {
            return Err(SpecError::BadTmpfsSize(t.destination.clone()));
        }
        if let Some(m) = t.mode.filter(|&m| m > 0o7777) {
            return Err(SpecError::BadTmpfsMode(m));
        }
    }
    Ok(())
}

/// Container ids name directories and cgroups: keep them plain.
pub fn check_id(id: &str) -> Result<(), SpecError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn docker_precedence() {
        let image = ImageConfig {
            entrypoint: v(&["/entry"]),
            cmd: v(&["default"]),
            env: v(&["A=1", "PATH=/img"]),
            working_dir: "/work".into(),
            user: "app".into(),
        };
        let r = merge(&image, &ProcessSpec::default()).unwrap();
        assert_eq!(r.args, v(&["/entry", "default"]));
        assert_eq!(r.env, v(&["A=1", "PATH=/img"]));
        assert_eq!((r.cwd.as_str(), r.user.as_str()), ("/work", "app"));

        let p = ProcessSpec {
            args: Some(v(&["x"])),
            env: v(&["A=2", "B=3"]),
            ..Default::default()
        };
        let r = merge(&image, &p).unwrap();
        assert_eq!(r.args, v(&["/entry", "x"]));
        assert_eq!(r.env, v(&["PATH=/img", "A=2", "B=3"]));

        // Overriding the entrypoint drops the image's Cmd.
        let p = ProcessSpec {
            entrypoint: Some(v(&["/bin/sh"])),
            ..Default::default()
        };
        assert_eq!(merge(&image, &p).unwrap().args, v(&["/bin/sh"]));

        let bare = ImageConfig::default();
        assert!(matches!(
            merge(&bare, &ProcessSpec::default()),
            Err(SpecError::NoCommand)
        ));
        let r = merge(
            &bare,
            &ProcessSpec {
                args: Some(v(&["true"])),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.env, v(&[DEFAULT_PATH]));
        assert_eq!(r.cwd, "/");
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(
            merge_env(&v(&["NOEQUALS"]), &[]),
            Err(SpecError::BadEnv(_))
        ));
        assert!(matches!(
            merge_env(&v(&["=x"]), &[]),
            Err(SpecError::BadEnv(_))
        ));
        let rl = |name: &str, soft, hard| Rlimit {
            resource: name.into(),
            soft,
            hard,
        };
        assert_eq!(
            rlimits(&[rl("nofile", 10, 20)]).unwrap(),
            vec![(libc::RLIMIT_NOFILE as libc::c_int, 10, 20)]
        );
        assert!(rlimits(&[rl("bogus", 1, 1)]).is_err());
        assert!(rlimits(&[rl("nofile", 2, 1)]).is_err());
        for bad in ["", "..", "a/b", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        check_id("web-1.a_b").unwrap();
    }

    #[test]
    fn mount_paths() {
        let m = |source: &str, destination: &str| MountSpec {
            source: source.into(),
            destination: destination.into(),
            read_only: false,
        };
        check_mounts(&[m("/mnt/vol", "/data"), m("/mnt/f", "/etc/./x//y")]).unwrap();
        for bad in [
            m("mnt/vol", "/data"),
            m("/mnt/../etc", "/data"),
            m("/mnt/vol", "data"),
            m("/mnt/vol", "/data/../../x"),
            m("/mnt/vol", "/"),
            m("/mnt/vol", "//."),
            m("", "/data"),
            m("/mnt/vol", "/da\0ta"),
        ] {
            assert!(check_mounts(std::slice::from_ref(&bad)).is_err(), "{bad:?}");
        }
    }
}
