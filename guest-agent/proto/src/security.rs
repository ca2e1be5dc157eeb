//! How a container's processes are confined inside the guest: capabilities,
//! `no_new_privs`, a seccomp profile, a read-only root and tmpfs mounts
//! (issue 13, docker's `--cap-add`, `--security-opt`, `--read-only`,
//! `--tmpfs`, `--privileged`).
//!
//! The host resolves what the user asked for (capability names, the OCI
//! seccomp profile with its `includes`/`excludes` by capability and
//! architecture, system call names) into the plain numbers below; the
//! agent compiles the profile to BPF and applies the rest to every process
//! of the container, its first one and each `exec`.
//!
//! Every field has a serde default, and a [`ContainerSpec`](crate::ContainerSpec)
//! without `security` gets [`SecuritySpec::default`]: docker's capabilities
//! and no profile (the agent's own host-boundary guard still applies).

use serde::{Deserialize, Serialize};

/// Docker's default capabilities (moby `oci/caps/defaults.go`, also
/// podman's): CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE,
/// SETFCAP, as capability numbers (mask 0xa80425fb).
pub const DEFAULT_CAPABILITIES: [u8; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

fn default_capabilities() -> Vec<u8> {
    DEFAULT_CAPABILITIES.to_vec()
}

/// The confinement of one container's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    /// Capability numbers the processes keep in their bounding set (run
    /// as root, also their permitted and effective sets); every other one
    /// is dropped. Ignored with `privileged`.
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<u8>,
    /// Every capability and no seccomp filter at all (not even the agent's
    /// guard), `/sys` writable: the app may do whatever root in the guest
    /// can. The VM stays the boundary.
    #[serde(default)]
    pub privileged: bool,
    /// `PR_SET_NO_NEW_PRIVS`: exec never grants privileges (set-id bits
    /// and file capabilities are ignored).
    #[serde(default)]
    pub no_new_privileges: bool,
    /// The seccomp profile, resolved for x86-64; `None` (`seccomp=unconfined`):
    /// only the agent's guard. Ignored with `privileged`.
    #[serde(default)]
    pub seccomp: Option<SeccompProfile>,
    /// Mount the container's root file system read-only (its /proc, /dev,
    /// /tmp, volumes and `tmpfs` stay as they are).
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// tmpfs mounts of the container's own, after its volumes.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsSpec>,
}

impl Default for SecuritySpec {
    fn default() -> Self {
        SecuritySpec {
            capabilities: default_capabilities(),
            privileged: false,
            no_new_privileges: false,
            seccomp: None,
            read_only_rootfs: false,
            tmpfs: Vec::new(),
        }
    }
}

/// A tmpfs mounted into a container (`--tmpfs PATH[:SIZE]`). Always
/// `nosuid,nodev`; its pages count against the container's memory limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSpec {
    /// Absolute path inside the container, created if missing (resolved
    /// inside the container's root, as a volume's).
    pub destination: String,
    /// Size limit in bytes.
    pub size: u64,
    /// Mode of its root directory (default 1777, as /tmp).
    #[serde(default)]
    pub mode: Option<u32>,
    /// Programs on it may be executed (default: `noexec`, as docker's).
    #[serde(default)]
    pub exec: bool,
    #[serde(default)]
    pub read_only: bool,
}

/// A seccomp profile with its names resolved: what the agent compiles.
/// For each system call the rules that name it are tried in order; the
/// first whose conditions all hold gives the action; a call no rule
/// matches gets `default_action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProfile {
    pub default_action: SeccompAction,
    #[serde(default)]
    pub rules: Vec<SeccompRule>,
}

/// One rule: these x86-64 system call numbers, under these conditions
/// (all of them: AND), get this action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompRule {
    pub syscalls: Vec<u32>,
    pub action: SeccompAction,
    #[serde(default)]
    pub args: Vec<SeccompArg>,
}

/// What a seccomp filter answers (`SECCOMP_RET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompAction {
    Allow,
    /// Fail with this errno.
    Errno(u16),
    KillThread,
    KillProcess,
    /// SIGSYS.
    Trap,
    /// Notify a ptrace tracer with this value (ENOSYS without one).
    Trace(u16),
    /// Allow, and log.
    Log,
}

/// A condition on argument `index` (0–5), compared as 64 bits:
/// `arg OP value`, or for `masked_eq` `arg & value == value_two`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompArg {
    pub index: u8,
    pub op: SeccompOp,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
}

/// libseccomp's comparisons (`SCMP_CMP_*`), unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

/// Absolute, no `..`, no NUL, not `/` itself: a mount destination the
/// agent can resolve without surprises (`.` and `//` are harmless and
/// allowed). The host checks requests with it, the agent again.
pub fn plain_absolute(path: &str) -> bool {
    use std::path::{Component, Path};
    let p = Path::new(path);
    path.starts_with('/')
        && !path.contains('\0')
        && !p.components().any(|c| c == Component::ParentDir)
        && p.components().any(|c| matches!(c, Component::Normal(_)))
}

/// Most BPF instructions the kernel takes in one filter (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// An upper bound on the instructions the agent's compiler emits for
/// `profile` with its guard rules (guest-agent/src/container/seccomp.rs):
/// its fixed head and tail, the guard's rules, 5 per number (the
/// binary-search dispatch and a shared return), and per rule with
/// conditions 8 per condition plus 2. The host checks a profile against
/// [`MAX_INSTRUCTIONS`] with it before a pod exists; the agent's tests
/// check the compiler against it.
pub fn instruction_bound(profile: &SeccompProfile) -> usize {
    const FIXED: usize = 16;
    const GUARD: usize = 32;
    let mut numbers = std::collections::BTreeSet::new();
    let mut rules = 0;
    for r in &profile.rules {
        numbers.extend(r.syscalls.iter().copied());
        if !r.args.is_empty() {
            rules += r.syscalls.len() * (2 + 8 * r.args.len());
        }
    }
    FIXED + GUARD + 5 * numbers.len() + rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask() {
        let mask: u64 = DEFAULT_CAPABILITIES.iter().map(|&c| 1u64 << c).sum();
        assert_eq!(mask, 0xa80425fb);
    }

    #[test]
    fn missing_fields_get_the_defaults() {
        let s: SecuritySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(s, SecuritySpec::default());
        let rule: SeccompRule =
            serde_json::from_str(r#"{"syscalls":[41],"action":{"errno":1}}"#).unwrap();
        assert_eq!(rule.action, SeccompAction::Errno(1));
        assert!(rule.args.is_empty());
    }
}
