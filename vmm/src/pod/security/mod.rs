//! What an app runs with inside the guest (issue 13): docker's defaults —
//! its 14 capabilities, no `no_new_privs`, a writable root — with podman's
//! default seccomp profile (docker's format and semantics; how the two
//! profiles differ: vmm/profiles/README.md), and the flags that change
//! them: `--cap-add`,
//! `--cap-drop` (`ALL` included), `--security-opt seccomp=PROFILE.json|unconfined`,
//! `--security-opt no-new-privileges`, `--read-only`, `--tmpfs PATH[:SIZE]`
//! and `--privileged`; in a manifest the per-app `cap_add`, `cap_drop`,
//! `security_opt`, `read_only`, `tmpfs` and `privileged` (docker compose's
//! names).
//!
//! Everything is checked when the pod is requested (a bad capability,
//! option, tmpfs or profile is one line and status 125 before anything is
//! made) and kept in the app's config ([`AppSecurity`]); when the app is
//! started the supervisor resolves it into the agent's
//! [`husk_proto::SecuritySpec`], which the agent applies to the app's first
//! process and every `husk exec` into it. This is defence in depth behind
//! the guest kernel: the VM is the boundary between a pod and the host.
//!
//! The default profile is `vmm/profiles/seccomp-default.json`, Debian's
//! copy of podman's (containers/common 0.50.1, Apache-2.0; see the README
//! beside it).

pub mod profile;
mod syscalls_x86_64;

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use caps::Capability;
use husk_proto::{SecuritySpec, TmpfsSpec, DEFAULT_CAPABILITIES};
use serde::{Deserialize, Serialize};

use super::spec::{parse_size, AppMount, MIB};
use profile::{OciProfile, MAX_PROFILE_BYTES};

/// The default seccomp profile (see the module doc).
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../../../profiles/seccomp-default.json");

/// Size of a `--tmpfs` without one (docker's documented example; its pages
/// count against the app's memory limit either way).
pub const DEFAULT_TMPFS_SIZE: u64 = 64 * MIB;

/// The default profile, parsed once.
pub fn default_profile() -> &'static OciProfile {
    static PROFILE: OnceLock<OciProfile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        OciProfile::parse(DEFAULT_PROFILE_JSON).expect("the shipped seccomp profile parses")
    })
}

/// Which seccomp profile an app runs under.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// [`DEFAULT_PROFILE_JSON`].
    #[default]
    Default,
    /// No profile (`seccomp=unconfined`): only the agent's vsock/io_uring guard.
    Unconfined,
    /// A profile file, as read when the pod was made.
    Custom { path: String, profile: OciProfile },
}

/// A tmpfs of the app's (`--tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub exec: bool,
    #[serde(default)]
    pub read_only: bool,
}

fn default_capability_names() -> Vec<String> {
    DEFAULT_CAPABILITIES
        .iter()
        .filter_map(|&n| caps::all().into_iter().find(|c| c.index() == n))
        .map(|c| c.to_string())
        .collect()
}

/// What an app runs with, as its config keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecurity {
    /// Every capability, no seccomp filter, /sys writable (`--privileged`).
    #[serde(default)]
    pub privileged: bool,
    /// The capabilities its processes keep (`CAP_...`, in number order).
    #[serde(default = "default_capability_names")]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub seccomp: Seccomp,
    /// A read-only root file system (`--read-only`).
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
}

impl Default for AppSecurity {
    fn default() -> Self {
        AppSecurity {
            privileged: false,
            capabilities: default_capability_names(),
            no_new_privileges: false,
            seccomp: Seccomp::Default,
            read_only: false,
            tmpfs: Vec::new(),
        }
    }
}

/// How the user named the settings, for error lines: the flags of
/// `husk run` or a manifest's fields.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub cap_add: &'static str,
    pub cap_drop: &'static str,
    pub security_opt: &'static str,
    pub tmpfs: &'static str,
}

impl Names {
    pub const FLAGS: Names = Names {
        cap_add: "--cap-add",
        cap_drop: "--cap-drop",
        security_opt: "--security-opt",
        tmpfs: "--tmpfs",
    };
    pub const MANIFEST: Names = Names {
        cap_add: "cap_add",
        cap_drop: "cap_drop",
        security_opt: "security_opt",
        tmpfs: "tmpfs",
    };
}

/// The settings as the user gave them.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub cap_add: &'a [String],
    pub cap_drop: &'a [String],
    pub privileged: bool,
    pub security_opt: &'a [String],
    pub read_only: bool,
    pub tmpfs: &'a [String],
    /// The app's volume mounts (a tmpfs may not share a path with one).
    pub mounts: &'a [AppMount],
    /// What a relative profile path is relative to.
    pub base: &'a Path,
    pub names: Names,
}

/// `sys_admin`, `CAP_SYS_ADMIN` → `CAP_SYS_ADMIN`; `all` → `ALL`.
fn normalize_cap(flag: &str, text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&name)
        .map(|c| c.to_string())
        .map_err(|_| format!("{flag} {text}: unknown capability {name:?}"))
}

/// docker's rules (moby `caps.TweakCapabilities`): `--cap-add ALL` is every
/// capability but those dropped; `--cap-drop ALL` is only those added;
/// otherwise the defaults less the dropped plus the added.
fn capabilities(req: &Request) -> Result<Vec<String>, String> {
    let all: Vec<String> = {
        let mut v: Vec<Capability> = caps::all().into_iter().collect();
        v.sort_by_key(|c| c.index());
        v.into_iter().map(|c| c.to_string()).collect()
    };
    let add = req
        .cap_add
        .iter()
        .map(|c| normalize_cap(req.names.cap_add, c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = req
        .cap_drop
        .iter()
        .map(|c| normalize_cap(req.names.cap_drop, c))
        .collect::<Result<Vec<_>, _>>()?;
    if req.privileged {
        return Ok(all);
    }
    let is = |list: &[String], c: &str| list.iter().any(|x| x == c);
    let chosen: BTreeSet<String> = if is(&add, "ALL") {
        all.iter().filter(|c| !is(&drop, c)).cloned().collect()
    } else if is(&drop, "ALL") {
        add.into_iter().collect()
    } else {
        default_capability_names()
            .into_iter()
            .filter(|c| !is(&drop, c))
            .chain(add)
            .collect()
    };
    Ok(all.into_iter().filter(|c| chosen.contains(c)).collect())
}

/// Go's `strconv.ParseBool`, as docker reads `no-new-privileges=VALUE`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Reads a seccomp profile file.
fn read_profile(path: &Path) -> Result<OciProfile, String> {
    let bytes = crate::trust::read_bounded(path, MAX_PROFILE_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    OciProfile::parse(text)
        .map_err(|e| format!("{}: not a usable seccomp profile: {e}", path.display()))
}

/// One `--security-opt`, applied to `sec`.
fn security_opt(opt: &str, req: &Request, sec: &mut AppSecurity) -> Result<(), String> {
    let flag = req.names.security_opt;
    let known = "husk knows seccomp=PROFILE.json|unconfined and no-new-privileges[=true|false]";
    let (key, value) = match opt.split_once('=') {
        Some(kv) => kv,
        None if opt == "no-new-privileges" => ("no-new-privileges", "true"),
        // docker's older `key:value` form.
        None => opt
            .split_once(':')
            .ok_or_else(|| format!("{flag} {opt}: unknown option ({known})"))?,
    };
    match key {
        "no-new-privileges" => {
            sec.no_new_privileges =
                parse_bool(value).ok_or_else(|| format!("{flag} {opt}: expected true or false"))?;
        }
        "seccomp" if value == "unconfined" => sec.seccomp = Seccomp::Unconfined,
        "seccomp" if value.is_empty() => {
            return Err(format!(
                "{flag} {opt}: expected seccomp=PROFILE.json or seccomp=unconfined"
            ))
        }
        "seccomp" => {
            let path = std::path::absolute(req.base.join(value))
                .map_err(|e| format!("{flag} {opt}: {e}"))?;
            let profile = read_profile(&path).map_err(|e| format!("{flag} {opt}: {e}"))?;
            sec.seccomp = Seccomp::Custom {
                path: path.display().to_string(),
                profile,
            };
        }
        _ => return Err(format!("{flag} {opt}: unknown option ({known})")),
    }
    Ok(())
}

/// `PATH[:SIZE]`, or docker's `PATH:OPTIONS` (`size=64m,mode=1777,ro,exec`).
fn tmpfs(spec: &str, flag: &str) -> Result<Tmpfs, String> {
    let bad = |why: String| format!("{flag} {spec}: {why}");
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !husk_proto::security::plain_absolute(path) {
        return Err(bad(format!(
            "{path:?} is not an absolute path without `..` (and not /)"
        )));
    }
    let mut t = Tmpfs {
        path: path.to_owned(),
        size: DEFAULT_TMPFS_SIZE,
        mode: None,
        exec: false,
        read_only: false,
    };
    for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", s)) => t.size = parse_size(s).map_err(|e| bad(format!("size {e}")))?,
            Some(("mode", m)) => {
                t.mode = Some(
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|&m| m <= 0o7777)
                        .ok_or_else(|| bad(format!("mode {m:?} is not an octal mode")))?,
                )
            }
            Some(_) => return Err(bad(format!("unknown option {opt:?}"))),
            None => match opt {
                "ro" => t.read_only = true,
                "rw" => t.read_only = false,
                "exec" => t.exec = true,
                "noexec" => t.exec = false,
                "nosuid" | "nodev" => {}
                "suid" | "dev" => {
                    return Err(bad(format!(
                        "{opt:?} is not allowed (tmpfs mounts are nosuid,nodev)"
                    )))
                }
                size => {
                    t.size = parse_size(size).map_err(|_| {
                        bad(format!(
                            "{opt:?} is neither a size (64m) nor an option (size=, mode=, ro, rw, exec, noexec)"
                        ))
                    })?
                }
            },
        }
    }
    Ok(t)
}

/// The same path, for comparing mount points (`/a/b/` is `/a/b`).
fn same_path(a: &str, b: &str) -> bool {
    Path::new(a).components().eq(Path::new(b).components())
}

/// Checks and records what an app asked for.
pub fn parse(req: &Request) -> Result<AppSecurity, String> {
    let mut sec = AppSecurity {
        privileged: req.privileged,
        capabilities: capabilities(req)?,
        read_only: req.read_only,
        ..AppSecurity::default()
    };
    for opt in req.security_opt {
        security_opt(opt, req, &mut sec)?;
    }
    for spec in req.tmpfs {
        let t = tmpfs(spec, req.names.tmpfs)?;
        if sec.tmpfs.iter().any(|o| same_path(&o.path, &t.path)) {
            return Err(format!(
                "{} {spec}: {} is mounted twice",
                req.names.tmpfs, t.path
            ));
        }
        sec.tmpfs.push(t);
    }
    // Resolving now finds what only the final capabilities decide (a
    // profile too large for the kernel).
    sec.to_spec()
        .map_err(|e| format!("{} seccomp: {e}", req.names.security_opt))?;
    sec.check_mounts(req.mounts, req.names)?;
    Ok(sec)
}

impl AppSecurity {
    /// Refuses a tmpfs at the same place as one of the app's volumes.
    fn check_mounts(&self, mounts: &[AppMount], names: Names) -> Result<(), String> {
        for t in &self.tmpfs {
            if mounts.iter().any(|m| same_path(&m.path, &t.path)) {
                return Err(format!(
                    "{} {}: a volume is mounted there too",
                    names.tmpfs, t.path
                ));
            }
        }
        Ok(())
    }

    /// The capability numbers of [`Self::capabilities`].
    fn capability_numbers(&self) -> Result<Vec<u8>, String> {
        self.capabilities
            .iter()
            .map(|c| {
                Capability::from_str(c)
                    .map(|c| c.index())
                    .map_err(|_| format!("unknown capability {c:?}"))
            })
            .collect()
    }

    /// The profile in force, if any.
    fn profile(&self) -> Option<&OciProfile> {
        match (&self.seccomp, self.privileged) {
            (_, true) | (Seccomp::Unconfined, _) => None,
            (Seccomp::Default, false) => Some(default_profile()),
            (Seccomp::Custom { profile, .. }, false) => Some(profile),
        }
    }

    /// What the agent applies.
    pub fn to_spec(&self) -> Result<SecuritySpec, String> {
        let seccomp = self
            .profile()
            .map(|p| p.resolve(&self.capabilities))
            .transpose()?;
        Ok(SecuritySpec {
            capabilities: self.capability_numbers()?,
            privileged: self.privileged,
            no_new_privileges: self.no_new_privileges,
            seccomp,
            read_only_rootfs: self.read_only,
            tmpfs: self
                .tmpfs
                .iter()
                .map(|t| TmpfsSpec {
                    destination: t.path.clone(),
                    size: t.size,
                    mode: t.mode,
                    exec: t.exec,
                    read_only: t.read_only,
                })
                .collect(),
        })
    }

    /// The seccomp profile's name: `default`, `unconfined` or the file's path.
    pub fn seccomp_name(&self) -> String {
        match (&self.seccomp, self.privileged) {
            (_, true) => "unconfined (privileged)".into(),
            (Seccomp::Default, _) => "default".into(),
            (Seccomp::Unconfined, _) => "unconfined".into(),
            (Seccomp::Custom { path, .. }, _) => path.clone(),
        }
    }

    /// What `husk inspect` shows for the app.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "privileged": self.privileged,
            "capabilities": self.capabilities,
            "seccomp": self.seccomp_name(),
            "no_new_privileges": self.no_new_privileges,
            "read_only_rootfs": self.read_only,
            "tmpfs": self.tmpfs.iter().map(|t| {
                let mut opts = vec![format!("size={}", t.size)];
                opts.push(format!("mode={:o}", t.mode.unwrap_or(0o1777)));
                opts.push(if t.read_only { "ro" } else { "rw" }.into());
                opts.push(if t.exec { "exec" } else { "noexec" }.into());
                opts.push("nosuid,nodev".into());
                format!("{}:{}", t.path, opts.join(","))
            }).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
#[path = "tests.rs"]
pub(crate) mod tests;
