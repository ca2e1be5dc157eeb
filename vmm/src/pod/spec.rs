//! What a pod is made of: its apps, volumes and sizes, as written to the
//! pod's `config.json` when it is created, and the sizing rules that turn
//! them into a VM.
//!
//! The config pins each app's image by manifest digest and carries the
//! image config and layer list resolved at creation time, so a pod keeps
//! running the image it was created with even if the name is re-tagged or
//! removed from the store (the pod holds hard links to its layer blobs).

use std::path::PathBuf;

use husk_proto::{ImageConfig, LayerSpec};
use serde::{Deserialize, Serialize};

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// Default memory limit of a pod (`--memory`): the RAM its apps may use.
/// Docker's default is unlimited, which a VM cannot be; 256 MiB runs
/// typical small services and costs nothing until the guest touches it.
pub const DEFAULT_MEMORY: u64 = 256 * MIB;
/// Default size limit of each app's root file system (a tmpfs in guest RAM).
pub const DEFAULT_ROOTFS_SIZE: u64 = 512 * MIB;
/// Guest RAM for the kernel, the agent and page tables, on top of the
/// apps' memory and root file systems.
pub const VM_OVERHEAD: u64 = 96 * MIB;
/// Default grace period between SIGTERM and SIGKILL when a pod is stopped
/// (Docker's `docker stop` default).
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// When a pod ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitPolicy {
    /// When every app has exited (rkt's default).
    #[default]
    All,
    /// When the first app exits: the others are stopped (SIGTERM, grace, SIGKILL).
    First,
}

/// A volume of the pod: a host directory shared over virtio-fs, or (no
/// `host`) an empty directory in the pod's state directory that lives as
/// long as the pod (Kubernetes' `emptyDir`), for apps to share files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    #[serde(default)]
    pub host: Option<PathBuf>,
    #[serde(default)]
    pub read_only: bool,
    /// Size limit of an empty-dir volume, bytes (`None`: the default,
    /// [`super::volumes::DEFAULT_VOLUME_SIZE`]; host volumes have none).
    #[serde(default)]
    pub size: Option<u64>,
}

/// A volume mounted into one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMount {
    /// The pod volume's name.
    pub volume: String,
    /// Absolute path inside the app's container.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The image an app runs, pinned when the pod was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedImage {
    /// The reference the user gave.
    pub reference: String,
    /// The name it was stored under.
    pub name: String,
    pub manifest_digest: String,
    /// The trust policy's decision that admitted it when the pod was made:
    /// `accepted unsigned` or `signed by …`, and the policy scope (an older
    /// husk's pod has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted: Option<String>,
    pub config: ImageConfig,
    pub layers: Vec<LayerSpec>,
}

/// One app (container) of a pod. `I` is how its image is known: a
/// reference as the user wrote it while the pod is being made
/// (`App<String>`), the pinned image once it is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App<I = PinnedImage> {
    /// Unique in the pod: `[A-Za-z0-9_.-]{1,64}` (the container id in the guest).
    pub name: String,
    pub image: I,
    /// Replaces the image's Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE`, added to (and overriding) the image's Env.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// `uid[:gid]` or a user name known to the image.
    #[serde(default)]
    pub user: Option<String>,
    /// Run on a pseudo terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open (attached runs stream the terminal's stdin to it).
    #[serde(default)]
    pub stdin: bool,
    /// memory.max of the app's cgroup, bytes.
    #[serde(default)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs (cpu.max quota/period), e.g. 0.5.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// pids.max.
    #[serde(default)]
    pub pids: Option<u64>,
    /// Size limit of the app's root file system, bytes.
    pub rootfs_size: u64,
    #[serde(default)]
    pub mounts: Vec<AppMount>,
    /// Capabilities, seccomp, no_new_privs, read-only root, tmpfs mounts
    /// (docker's defaults in a config without the field).
    #[serde(default)]
    pub security: super::security::AppSecurity,
}

impl<I> App<I> {
    /// The same app with its image known another way.
    pub fn with_image<J>(self, image: J) -> App<J> {
        App {
            name: self.name,
            image,
            entrypoint: self.entrypoint,
            command: self.command,
            env: self.env,
            workdir: self.workdir,
            user: self.user,
            tty: self.tty,
            stdin: self.stdin,
            memory: self.memory,
            cpus: self.cpus,
            pids: self.pids,
            rootfs_size: self.rootfs_size,
            mounts: self.mounts,
            security: self.security,
        }
    }
}

/// A pod to be made: apps name their images by reference.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRequest {
    pub name: Option<String>,
    pub apps: Vec<App<String>>,
    pub volumes: Vec<Volume>,
    /// Bytes.
    pub memory: u64,
    pub vcpus: u32,
    pub exit_policy: ExitPolicy,
    pub stop_grace_ms: u64,
    /// Remove the pod's directory when it ends (`--rm`).
    pub auto_remove: bool,
    /// Run the VMM without its jail (`--no-jail`).
    pub no_jail: bool,
    /// Run the VMM without its seccomp filters (`--no-seccomp`).
    pub no_seccomp: bool,
    /// The host cgroup parent asked for (`--cgroup-parent`, the manifest's
    /// `cgroup_parent`); `None`: the default ([`super::cgroup::plan`]).
    pub cgroup_parent: Option<String>,
    /// The pod's network (`--network`, `-p`, `--dns`, `--add-host`, `--hostname`).
    pub network: crate::net::NetworkConfig,
    /// Log caps and the console's rate (`--log-opt`, the manifest's `log_opts`).
    pub logs: super::logs::LogOpts,
    /// Refuse the pod unless its launch is measured into a TPM (`--require-tpm`).
    pub require_tpm: bool,
}

/// Whether a jailed pod's VMM runs in a user namespace ([`crate::jail::userns`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserNsChoice {
    /// In its own, mapped to this host range.
    Mapped(crate::jail::userns::IdRange),
    /// As host root with the jail's few capabilities, for this reason (a host volume whose
    /// file system cannot be id-mapped).
    HostRoot(String),
    /// Rootless husk: in one of its own with only the caller's ids mapped.
    CallerOnly,
}

/// A pod: what `config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodConfig {
    pub id: String,
    pub name: String,
    pub apps: Vec<App>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Memory for the apps, bytes (the VM gets this plus each app's rootfs
    /// size plus [`VM_OVERHEAD`]).
    pub memory: u64,
    pub vcpus: u32,
    #[serde(default)]
    pub exit_policy: ExitPolicy,
    pub stop_grace_ms: u64,
    /// Remove the pod's directory when it ends (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Run the VMM without its jail (`--no-jail`). A config without the
    /// field (an older husk's) is jailed.
    #[serde(default)]
    pub no_jail: bool,
    /// Run the VMM without its seccomp filters (`--no-seccomp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_seccomp: bool,
    /// A jailed VMM's user namespace: its host id range, or why it has none. A config
    /// without the field (an older husk's, or `--no-jail`) has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ns: Option<UserNsChoice>,
    /// The cgroup (below the cgroup2 mount) under which the VMM's own host
    /// cgroup is made ([`super::cgroup`]); `None`: no host cgroup (cgroups
    /// cannot be used here, or an older husk made the pod).
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// The pod's network. A config without it (an older husk's) has none.
    #[serde(default)]
    pub network: crate::net::NetworkConfig,
    /// Log caps and the console's rate. A config without it (an older
    /// husk's) has raw, unrotated logs ([`super::logs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<super::logs::LogOpts>,
    /// The pod is refused unless its launch is measured into a TPM
    /// (`--require-tpm`; [`crate::measure`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tpm: bool,
    /// Seconds since the epoch.
    pub created: u64,
}

impl PodConfig {
    /// Guest RAM in MiB: the apps' memory, their root file systems (tmpfs
    /// pages live in guest RAM) and the kernel's and agent's share. The host
    /// only backs what the guest touches.
    pub fn vm_mem_mib(&self) -> u64 {
        let rootfs: u64 = self.apps.iter().map(|a| a.rootfs_size).sum();
        (self.memory + rootfs + VM_OVERHEAD).div_ceil(MIB)
    }

    /// The app named `name`, or the first app if `name` is `None`.
    pub fn app(&self, name: Option<&str>) -> Option<&App> {
        match name {
            Some(n) => self.apps.iter().find(|a| a.name == n),
            None => self.apps.first(),
        }
    }
}

/// Whether `name` is a valid app or pod name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Parses a size as Docker does: a number of bytes with an optional unit
/// `b`, `k`, `m`, `g` (powers of 1024; `kb`/`kib` and upper case accepted).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use b, k, m or g)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 512m or 1g"))?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 50) as f64 {
        return Err(format!("{text:?}: size out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a CPU count (`--cpus 1.5`): positive, at most 254.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= 254.0 => Ok(n),
        _ => Err(format!(
            "{text:?}: expected a number of CPUs such as 1 or 0.5"
        )),
    }
}

/// vCPUs for a pod whose apps together may use `cpus` CPUs.
pub fn vcpus_for(cpus: f64) -> u32 {
    (cpus.ceil() as u32).clamp(1, 254)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m"), Ok(512 * MIB));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1m").is_err());
        assert!(parse_size("12x").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn cpus_and_names() {
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("lots").is_err());
        assert_eq!(vcpus_for(0.5), 1);
        assert_eq!(vcpus_for(2.1), 3);
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
