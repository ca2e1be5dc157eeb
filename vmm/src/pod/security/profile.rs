//! OCI seccomp profiles (the JSON docker's `--security-opt seccomp=FILE`
//! and podman's `containers.conf` read) and their resolution for one app.
//!
//! A profile is a default action and a list of entries, each naming system
//! calls, an action (`SCMP_ACT_*`, with `errnoRet`), argument conditions
//! (`SCMP_CMP_*`) and `includes`/`excludes` by capability, architecture and
//! minimum kernel. Resolution does what moby's and containers/common's
//! `seccomp` packages do before they hand the profile to libseccomp:
//!
//! - an entry whose `includes.caps` are not all in the app's capabilities,
//!   or one of whose `excludes.caps` is, is left out; likewise by
//!   architecture (the guest is `amd64`) and by `minKernel` (the guest's
//!   kernel is [`GUEST_KERNEL`]);
//! - names are looked up in the guest kernel's x86-64 table; a name it does
//!   not have (another architecture's call, a newer one) is skipped, as
//!   runc does;
//! - conditions of one entry must all hold (AND), except when two of them
//!   test the same argument: then each is a rule of its own (OR), runc's
//!   rule for profiles written before it combined conditions;
//! - ERRNO and TRACE without `errnoRet` answer EPERM.
//!
//! The result ([`husk_proto::SeccompProfile`]) is compiled by the agent;
//! [`instruction_bound`] tells beforehand whether the kernel will take it.

use std::collections::BTreeSet;

use husk_proto::security::{instruction_bound, MAX_INSTRUCTIONS};
use husk_proto::{SeccompAction, SeccompArg, SeccompOp, SeccompProfile, SeccompRule};
use serde::{Deserialize, Serialize};

use super::syscalls_x86_64::SYSCALLS;

/// The guest kernel's version, for `minKernel` (scripts/build-kernel.sh
/// builds Debian's linux-source-6.12).
pub const GUEST_KERNEL: (u32, u32) = (6, 12);

/// The architecture name profiles use for x86-64 (Go's `GOARCH`).
const ARCH: &str = "amd64";

/// An OCI seccomp profile, as read (unknown fields such as `comment`,
/// `defaultErrno` or `listenerPath` are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciProfile {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<OciSyscall>>,
}

/// One entry of `syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The single-name form of older profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<OciArg>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<OciFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<OciFilter>,
}

/// `includes` / `excludes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// One argument condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// Largest profile file read.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

fn action(name: &str, errno_ret: Option<u32>) -> Result<SeccompAction, String> {
    let errno = || -> Result<u16, String> {
        match errno_ret {
            None => Ok(libc::EPERM as u16),
            Some(e) if (1..4096).contains(&e) => Ok(e as u16),
            Some(e) => Err(format!("errnoRet {e} is not an errno (1 to 4095)")),
        }
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno()?),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno()?),
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err("action SCMP_ACT_NOTIFY is not supported (no seccomp agent)".into())
        }
        other => return Err(format!("unknown action {other:?}")),
    })
}

fn op(name: &str) -> Result<SeccompOp, String> {
    Ok(match name {
        "SCMP_CMP_EQ" => SeccompOp::Eq,
        "SCMP_CMP_NE" => SeccompOp::Ne,
        "SCMP_CMP_LT" => SeccompOp::Lt,
        "SCMP_CMP_LE" => SeccompOp::Le,
        "SCMP_CMP_GT" => SeccompOp::Gt,
        "SCMP_CMP_GE" => SeccompOp::Ge,
        "SCMP_CMP_MASKED_EQ" => SeccompOp::MaskedEq,
        other => return Err(format!("unknown comparison {other:?}")),
    })
}

/// `"4.8"` → (4, 8).
fn kernel_version(text: &str) -> Result<(u32, u32), String> {
    let mut parts = text.trim().split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        (Some(a), None) if !text.contains('.') => Ok((a, 0)),
        _ => Err(format!("minKernel {text:?} is not a version such as 4.8")),
    }
}

/// The x86-64 number of system call `name`.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

impl OciProfile {
    /// Reads a profile from JSON, checking everything resolution does not
    /// depend on the app for (actions, comparisons, indexes, errnos,
    /// versions), so a mistake is found before any pod is made.
    pub fn parse(text: &str) -> Result<OciProfile, String> {
        let p: OciProfile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        action(&p.default_action, p.default_errno_ret)
            .map_err(|e| format!("defaultAction: {e}"))?;
        for (i, s) in p.syscalls.iter().flatten().enumerate() {
            let at = |e: String| format!("syscalls[{i}]: {e}");
            if s.names.as_ref().is_none_or(Vec::is_empty) && s.name.is_none() {
                return Err(at("no names".into()));
            }
            action(&s.action, s.errno_ret).map_err(at)?;
            for a in s.args.iter().flatten() {
                op(&a.op).map_err(at)?;
                if a.index > 5 {
                    return Err(at(format!("argument index {} (0 to 5)", a.index)));
                }
            }
            for f in [&s.includes, &s.excludes].into_iter().flatten() {
                if let Some(k) = &f.min_kernel {
                    kernel_version(k).map_err(at)?;
                }
            }
        }
        Ok(p)
    }

    /// The profile for an app with capabilities `caps` (names such as
    /// `CAP_SYS_ADMIN`), as the agent compiles it (see the module doc).
    pub fn resolve(&self, caps: &[String]) -> Result<SeccompProfile, String> {
        let has = |c: &String| caps.iter().any(|k| k.eq_ignore_ascii_case(c));
        let mut rules = Vec::new();
        for s in self.syscalls.iter().flatten() {
            let inc = s.includes.clone().unwrap_or_default();
            let exc = s.excludes.clone().unwrap_or_default();
            if !inc.caps.iter().flatten().all(has) || exc.caps.iter().flatten().any(has) {
                continue;
            }
            if inc
                .arches
                .as_ref()
                .is_some_and(|a| !a.is_empty() && !a.iter().any(|x| x == ARCH))
                || exc.arches.iter().flatten().any(|x| x == ARCH)
            {
                continue;
            }
            if let Some(k) = &inc.min_kernel {
                if kernel_version(k)? > GUEST_KERNEL {
                    continue;
                }
            }
            if let Some(k) = &exc.min_kernel {
                if kernel_version(k)? <= GUEST_KERNEL {
                    continue;
                }
            }
            let syscalls: Vec<u32> = s
                .names
                .iter()
                .flatten()
                .chain(&s.name)
                .filter_map(|n| syscall_number(n))
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .collect();
            if syscalls.is_empty() {
                continue;
            }
            let act = action(&s.action, s.errno_ret)?;
            let args = s
                .args
                .iter()
                .flatten()
                .map(|a| {
                    Ok(SeccompArg {
                        index: a.index as u8,
                        op: op(&a.op)?,
                        value: a.value,
                        value_two: a.value_two,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let indexes: BTreeSet<u8> = args.iter().map(|a| a.index).collect();
            if indexes.len() == args.len() {
                rules.push(SeccompRule {
                    syscalls,
                    action: act,
                    args,
                });
            } else {
                for a in args {
                    rules.push(SeccompRule {
                        syscalls: syscalls.clone(),
                        action: act,
                        args: vec![a],
                    });
                }
            }
        }
        let resolved = SeccompProfile {
            default_action: action(&self.default_action, self.default_errno_ret)?,
            rules,
        };
        let n = instruction_bound(&resolved);
        if n > MAX_INSTRUCTIONS {
            return Err(format!(
                "the profile needs up to {n} BPF instructions; the kernel takes {MAX_INSTRUCTIONS}"
            ));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_resolve_on_x86_64_only() {
        assert_eq!(syscall_number("socket"), Some(41));
        assert_eq!(syscall_number("_sysctl"), Some(156));
        assert_eq!(syscall_number("mseal"), Some(462));
        assert_eq!(syscall_number("chown32"), None);
        assert_eq!(syscall_number("arm_fadvise64_64"), None);
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }

    #[test]
    fn includes_excludes_and_repeated_indexes() {
        let p = OciProfile::parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
              {"names":["chroot"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_CHROOT"]}},
              {"names":["chroot"],"action":"SCMP_ACT_ERRNO","excludes":{"caps":["CAP_SYS_CHROOT"]}},
              {"names":["arch_prctl"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","x32"]}},
              {"names":["cacheflush"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm64"]}},
              {"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64"]}},
              {"names":["mseal"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"6.10"}},
              {"names":["getpid"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"7.1"}},
              {"name":"personality","action":"SCMP_ACT_ALLOW","args":[
                {"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
              {"names":["socket","chown32"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[
                {"index":0,"value":16,"op":"SCMP_CMP_EQ"},{"index":2,"value":9,"op":"SCMP_CMP_EQ"}]}
            ]}"#,
        )
        .unwrap();
        let with = p.resolve(&caps(&["CAP_SYS_CHROOT"])).unwrap();
        let without = p.resolve(&[]).unwrap();
        assert_eq!(with.default_action, SeccompAction::Errno(38));
        let first = |r: &SeccompProfile| (r.rules[0].syscalls.clone(), r.rules[0].action);
        assert_eq!(first(&with), (vec![161], SeccompAction::Allow));
        assert_eq!(first(&without), (vec![161], SeccompAction::Errno(1)));
        let names: Vec<Vec<u32>> = with.rules.iter().map(|r| r.syscalls.clone()).collect();
        // chroot, arch_prctl, mseal, personality twice (one rule per
        // condition on argument 0), socket (chown32 is not x86-64's).
        assert_eq!(
            names,
            [
                vec![161],
                vec![158],
                vec![462],
                vec![135],
                vec![135],
                vec![41]
            ]
        );
        let socket = with.rules.last().unwrap();
        assert_eq!(socket.action, SeccompAction::Errno(22));
        assert_eq!(socket.args.len(), 2);
        assert_eq!(with.rules[3].args.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |text: &str, want: &str| {
            let e = OciProfile::parse(text).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad("{", "EOF");
        bad("3", "invalid type");
        bad(r#"{"syscalls":[]}"#, "defaultAction");
        bad(r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "unknown action");
        bad(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            "NOTIFY",
        );
        bad(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0]: argument index 7",
        );
        bad(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_LIKE"}]}]}"#,
            "unknown comparison",
        );
        bad(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#,
            "errnoRet 70000",
        );
        bad(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}"#,
            "no names",
        );
        // Too many conditional rules for one filter.
        let entries: Vec<String> = (0..300)
            .map(|i| format!(r#"{{"names":["read","write"],"action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":{i},"op":"SCMP_CMP_EQ"}}]}}"#))
            .collect();
        let huge = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
            entries.join(",")
        );
        let e = OciProfile::parse(&huge).unwrap().resolve(&[]).unwrap_err();
        assert!(e.contains("BPF instructions"), "{e}");
    }
}
