//! Pod manifests for `husk pod run FILE`: several apps in one VM, sharing
//! volumes (rkt's pod model). TOML, or JSON with the same fields (a file
//! whose first non-blank character is `{` is read as JSON).
//!
//! ```toml
//! name = "pipeline"        # optional; default <first app>-<6 hex digits>
//! memory = "512m"          # RAM for all apps together (default 256m)
//! cpus = 2                 # vCPUs (default: 1)
//! exit = "all"             # "all": the pod ends when every app has exited;
//!                          # "first": when the first does (the rest are stopped)
//! grace_seconds = 10       # SIGTERM → SIGKILL grace when stopping
//! jail = true              # false: the VMM runs without its jail (like --no-jail)
//! cgroup_parent = "/husk"  # the host cgroup the VMM's own goes under (like --cgroup-parent)
//! log_opts = { max-size = "10m", max-file = 3, console-rate = "32k" }   # like --log-opt
//!
//! [[volumes]]
//! name = "shared"          # no `host`: an empty directory living with the pod
//! size = "64m"             # its size limit (default 256m; empty-dir volumes only)
//! [[volumes]]
//! name = "out"
//! host = "/srv/out"        # a host directory (must exist)
//! read_only = false
//!
//! [[apps]]
//! name = "producer"
//! image = "busybox"
//! command = ["sh", "-c", "echo hello > /data/msg"]   # replaces the image's Cmd
//! entrypoint = ["/bin/sh"] # optional: replaces the image's Entrypoint
//! env = ["GREETING=hi"]
//! workdir = "/"
//! user = "1000:1000"
//! memory = "64m"           # memory.max of this app
//! cpus = 0.5               # cpu.max of this app
//! pids = 100               # pids.max of this app
//! rootfs_size = "256m"     # its root file system (default 512m)
//! mounts = [{ volume = "shared", path = "/data" }]
//! cap_add = ["NET_ADMIN"]  # as --cap-add (docker's 14 by default); cap_drop = ["ALL"] as --cap-drop
//! security_opt = ["no-new-privileges", "seccomp=profile.json"]  # as --security-opt (relative
//!                          # to the manifest's directory)
//! read_only = true         # as --read-only
//! tmpfs = ["/run:16m"]     # as --tmpfs
//! privileged = false       # as --privileged
//! ```
//!
//! Unknown fields are errors (a typo must not be ignored silently).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::spec::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    exit: Option<ExitPolicy>,
    #[serde(default)]
    grace_seconds: Option<u64>,
    #[serde(default)]
    jail: Option<bool>,
    #[serde(default)]
    cgroup_parent: Option<String>,
    #[serde(default)]
    volumes: Vec<VolumeEntry>,
    #[serde(default)]
    apps: Vec<AppEntry>,
    /// `user` (the default), `user:host-loopback`, `tap` or `none` (as `--network`).
    #[serde(default)]
    network: Option<String>,
    /// Published ports, as `-p` (`"8080:80"`, `"127.0.0.1:53:53/udp"`).
    #[serde(default)]
    ports: Vec<String>,
    /// Name servers, as `--dns`.
    #[serde(default)]
    dns: Vec<String>,
    /// `NAME:IP` entries, as `--add-host`.
    #[serde(default)]
    add_hosts: Vec<String>,
    /// As `--hostname`.
    #[serde(default)]
    hostname: Option<String>,
    /// As `--log-opt KEY=VALUE` (docker's `log-opts` in daemon.json).
    #[serde(default)]
    log_opts: std::collections::BTreeMap<String, OptValue>,
}

/// A `log_opts` value: a string, or a number (`max-file = 3`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OptValue {
    Text(String),
    Number(u64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeEntry {
    name: String,
    #[serde(default)]
    host: Option<PathBuf>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    size: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    name: String,
    image: String,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    pids: Option<u64>,
    #[serde(default)]
    rootfs_size: Option<String>,
    #[serde(default)]
    mounts: Vec<AppMount>,
    /// As `--cap-add`, `--cap-drop`, `--security-opt`, `--read-only`,
    /// `--tmpfs`, `--privileged` (docker compose's names).
    #[serde(default)]
    cap_add: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    security_opt: Vec<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    tmpfs: Vec<String>,
    #[serde(default)]
    privileged: bool,
}

/// Largest manifest read.
const MAX_MANIFEST: u64 = 1 << 20;

/// Reads and checks a manifest; relative host paths are relative to the
/// manifest's directory.
pub fn load(path: &Path) -> Result<PodRequest, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_MANIFEST + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_MANIFEST {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses manifest text (TOML or JSON).
pub fn parse(text: &str, base: &Path) -> Result<PodRequest, String> {
    let file: File = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.message().to_owned())?
    };
    into_request(file, base)
}

fn size(field: &str, text: Option<&String>, default: u64) -> Result<u64, String> {
    match text {
        Some(t) => parse_size(t).map_err(|e| format!("{field}: {e}")),
        None => Ok(default),
    }
}

fn into_request(file: File, base: &Path) -> Result<PodRequest, String> {
    if file.apps.is_empty() {
        return Err("a pod needs at least one [[apps]] entry".into());
    }
    if let Some(n) = &file.name {
        if !valid_name(n) {
            return Err(format!("name {n:?}: use letters, digits, '_', '.', '-'"));
        }
    }
    let mut volumes = Vec::new();
    for v in file.volumes {
        if !valid_name(&v.name) {
            return Err(format!("volume name {:?} is not valid", v.name));
        }
        if volumes.iter().any(|o: &Volume| o.name == v.name) {
            return Err(format!("volume {:?} is declared twice", v.name));
        }
        let size = match (&v.host, &v.size) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "volume {:?}: size applies to empty-dir volumes only (no host)",
                    v.name
                ))
            }
            (None, s) => Some(size(
                &format!("volume {:?} size", v.name),
                s.as_ref(),
                super::volumes::DEFAULT_VOLUME_SIZE,
            )?),
            (Some(_), None) => None,
        };
        let host = match v.host {
            Some(h) => {
                let h = if h.is_relative() { base.join(h) } else { h };
                if !h.is_dir() {
                    return Err(format!(
                        "volume {:?}: host directory {} does not exist",
                        v.name,
                        h.display()
                    ));
                }
                Some(h)
            }
            None => None,
        };
        volumes.push(Volume {
            name: v.name,
            host,
            read_only: v.read_only,
            size,
        });
    }
    let mut apps: Vec<App<String>> = Vec::new();
    for a in file.apps {
        if !valid_name(&a.name) {
            return Err(format!("app name {:?} is not valid", a.name));
        }
        if apps.iter().any(|o| o.name == a.name) {
            return Err(format!("app {:?} is declared twice", a.name));
        }
        for m in &a.mounts {
            if !volumes.iter().any(|v| v.name == m.volume) {
                return Err(format!(
                    "app {:?} mounts volume {:?}, which is not declared",
                    a.name, m.volume
                ));
            }
            if !m.path.starts_with('/') {
                return Err(format!(
                    "app {:?}: mount path {:?} must be absolute",
                    a.name, m.path
                ));
            }
        }
        if let Some(c) = a.cpus {
            parse_cpus(&c.to_string()).map_err(|e| format!("app {:?} cpus: {e}", a.name))?;
        }
        use super::security::{self, Names};
        let security = security::parse(&security::Request {
            cap_add: &a.cap_add,
            cap_drop: &a.cap_drop,
            privileged: a.privileged,
            security_opt: &a.security_opt,
            read_only: a.read_only,
            tmpfs: &a.tmpfs,
            mounts: &a.mounts,
            base,
            names: Names::MANIFEST,
        })
        .map_err(|e| format!("app {:?} {e}", a.name))?;
        apps.push(App {
            memory: a
                .memory
                .as_ref()
                .map(|m| parse_size(m).map_err(|e| format!("app {:?} memory: {e}", a.name)))
                .transpose()?,
            rootfs_size: size("rootfs_size", a.rootfs_size.as_ref(), DEFAULT_ROOTFS_SIZE)?,
            name: a.name,
            image: a.image,
            entrypoint: a.entrypoint,
            command: a.command,
            env: a.env,
            workdir: a.workdir,
            user: a.user,
            tty: false,
            stdin: false,
            cpus: a.cpus,
            pids: a.pids,
            mounts: a.mounts,
            security,
        });
    }
    let cpus = match file.cpus {
        Some(c) => parse_cpus(&c.to_string()).map_err(|e| format!("cpus: {e}"))?,
        None => 1.0,
    };
    let network = crate::net::NetworkConfig::from_strings(
        file.network.as_deref(),
        &file.ports,
        &file.dns,
        &file.add_hosts,
        file.hostname,
    )?;
    let mut logs = super::logs::LogOpts::default();
    for (key, value) in &file.log_opts {
        let value = match value {
            OptValue::Text(t) => t.clone(),
            OptValue::Number(n) => n.to_string(),
        };
        logs.set(key, &value)
            .map_err(|e| format!("log_opts.{key}: {e}"))?;
    }
    Ok(PodRequest {
        network,
        logs,
        name: file.name,
        apps,
        volumes,
        memory: size("memory", file.memory.as_ref(), DEFAULT_MEMORY)?,
        vcpus: vcpus_for(cpus),
        exit_policy: file.exit.unwrap_or_default(),
        stop_grace_ms: file
            .grace_seconds
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(DEFAULT_STOP_GRACE_MS),
        auto_remove: false,
        no_jail: file.jail == Some(false),
        no_seccomp: false,
        cgroup_parent: file.cgroup_parent,
        require_tpm: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        name = "pipe"
        memory = "128m"
        exit = "first"
        [[volumes]]
        name = "shared"
        [[apps]]
        name = "a"
        image = "busybox"
        command = ["sh", "-c", "echo hi > /data/x"]
        mounts = [{ volume = "shared", path = "/data" }]
        [[apps]]
        name = "b"
        image = "busybox"
        memory = "64m"
        cpus = 0.5
        mounts = [{ volume = "shared", path = "/data", read_only = true }]
    "#;

    #[test]
    fn toml_and_json_agree() {
        let t = parse(TOML, Path::new("/")).unwrap();
        assert_eq!(t.name.as_deref(), Some("pipe"));
        assert_eq!(t.memory, 128 * MIB);
        assert_eq!(t.exit_policy, ExitPolicy::First);
        assert_eq!(t.apps.len(), 2);
        assert_eq!(t.apps[1].memory, Some(64 * MIB));
        assert!(t.apps[1].mounts[0].read_only);
        let json = r#"{"apps":[{"name":"a","image":"busybox","command":["true"]}]}"#;
        let j = parse(json, Path::new("/")).unwrap();
        assert_eq!(j.apps[0].command, Some(vec!["true".to_string()]));
        assert_eq!(j.exit_policy, ExitPolicy::All);
        assert_eq!(j.memory, DEFAULT_MEMORY);
        assert!(!j.no_jail && !t.no_jail, "jailed unless asked");
        let free = r#"{"jail":false,"apps":[{"name":"a","image":"busybox"}]}"#;
        assert!(parse(free, Path::new("/")).unwrap().no_jail);
        assert_eq!(t.cgroup_parent, None);
        let cg = "cgroup_parent = \"/pods\"\n[[apps]]\nname = \"a\"\nimage = \"b\"";
        assert_eq!(
            parse(cg, Path::new("/")).unwrap().cgroup_parent.as_deref(),
            Some("/pods")
        );
    }

    #[test]
    fn mistakes_are_reported() {
        let bad = |text: &str, want: &str| {
            let e = parse(text, Path::new("/")).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad("name = \"x\"", "at least one");
        bad(
            "[[apps]]\nname = \"a\"\nimage = \"b\"\ncolour = 1",
            "colour",
        );
        bad(
            "[[apps]]\nname = \"a\"\nimage = \"b\"\nmounts = [{volume = \"v\", path = \"/d\"}]",
            "not declared",
        );
        bad(
            "[[volumes]]\nname = \"v\"\nhost = \"/no/such/dir\"\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            "does not exist",
        );
        bad(
            "[[apps]]\nname = \"a\"\nimage = \"b\"\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            "twice",
        );
        bad(
            "memory = \"lots\"\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            "memory",
        );
        bad("{\"apps\": 3}", "invalid type");
        bad(
            "[[volumes]]\nname = \"v\"\nsize = \"lots\"\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            "volume \"v\" size",
        );
        bad(
            "[[volumes]]\nname = \"v\"\nhost = \"/\"\nsize = \"1m\"\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            "empty-dir volumes only",
        );
    }

    #[test]
    fn log_opts_map_to_the_flags_settings() {
        let t = parse(
            "log_opts = { max-size = \"1m\", max-file = 2, console-rate = \"4k\" }\n\
             [[apps]]\nname = \"a\"\nimage = \"b\"",
            Path::new("/"),
        )
        .unwrap();
        let mut flags = super::super::logs::LogOpts::default();
        flags
            .apply_flags(&[
                "max-size=1m".into(),
                "max-file=2".into(),
                "console-rate=4k".into(),
            ])
            .unwrap();
        assert_eq!(t.logs, flags);
        let j = parse(
            r#"{"log_opts":{"max-file":"4"},"apps":[{"name":"a","image":"b"}]}"#,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(j.logs.max_file, 4);
        let e = parse(
            "log_opts = { max-file = 0 }\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.starts_with("log_opts.max-file: "), "{e}");
    }

    #[test]
    fn per_app_security() {
        use crate::pod::security::tests::{ProfileDir, DENY_UNAME};
        let files = ProfileDir::new("manifest-sec", &[("p.json", DENY_UNAME)]);
        let dir = files.path();
        let t = parse(
            "[[volumes]]\nname = \"v\"\n\
             [[apps]]\nname = \"a\"\nimage = \"b\"\ncap_drop = [\"ALL\"]\ncap_add = [\"net_admin\"]\n\
             security_opt = [\"no-new-privileges\", \"seccomp=p.json\"]\nread_only = true\n\
             tmpfs = [\"/run:16m\"]\nmounts = [{ volume = \"v\", path = \"/data\" }]\n\
             [[apps]]\nname = \"b\"\nimage = \"b\"\nprivileged = true",
            dir,
        )
        .unwrap();
        let a = &t.apps[0].security;
        assert_eq!(a.capabilities, ["CAP_NET_ADMIN"]);
        assert!(a.no_new_privileges && a.read_only && !a.privileged);
        assert_eq!(a.seccomp_name(), dir.join("p.json").display().to_string());
        assert_eq!(a.tmpfs[0].size, 16 * MIB);
        let b = &t.apps[1].security;
        assert!(b.privileged && b.to_spec().unwrap().seccomp.is_none());
        let bad = |app: &str, want: &str| {
            let text =
                format!("[[volumes]]\nname = \"v\"\n[[apps]]\nname = \"a\"\nimage = \"b\"\n{app}");
            let e = parse(&text, dir).unwrap_err();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        };
        bad(
            "cap_add = [\"SYS_FLY\"]",
            "app \"a\" cap_add SYS_FLY: unknown capability",
        );
        bad(
            "security_opt = [\"label=x\"]",
            "app \"a\" security_opt label=x: unknown option",
        );
        bad(
            "security_opt = [\"seccomp=none.json\"]",
            "app \"a\" security_opt seccomp=none.json: ",
        );
        bad("tmpfs = [\"data\"]", "app \"a\" tmpfs data: ");
        bad(
            "tmpfs = [\"/data\"]\nmounts = [{ volume = \"v\", path = \"/data\" }]",
            "app \"a\" tmpfs /data: a volume is mounted there too",
        );
        bad("read_only = \"yes\"", "invalid type");
    }

    #[test]
    fn volume_sizes() {
        let t = parse(
            "[[volumes]]\nname = \"d\"\n[[volumes]]\nname = \"s\"\nsize = \"8m\"\n\
             [[volumes]]\nname = \"h\"\nhost = \"/\"\n[[apps]]\nname = \"a\"\nimage = \"b\"",
            Path::new("/"),
        )
        .unwrap();
        let sizes: Vec<_> = t.volumes.iter().map(|v| v.size).collect();
        assert_eq!(
            sizes,
            [
                Some(super::super::volumes::DEFAULT_VOLUME_SIZE),
                Some(8 * MIB),
                None
            ]
        );
    }
}
