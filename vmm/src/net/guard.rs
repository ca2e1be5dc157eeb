//! Host-side isolation of a user-mode pod's network: what passt may connect to.
//!
//! passt makes the pod's outbound connections with ordinary host sockets, so without a
//! filter a pod could reach everything the host can: the host's own services (on loopback
//! and on its addresses), the pods that publish ports there, and link-local services such
//! as a cloud's metadata endpoint (169.254.169.254). The guest cannot be trusted to hold
//! back, and passt (Debian 12's) has no filter of its own, so the rule is enforced by the
//! host's kernel, on passt's sockets:
//!
//! - each pod's passt runs in a cgroup of its own, `<parent>/husk-net-<pod id>` next to the
//!   VMM's (not inside it: passt's memory is not the guest's and must not push the VMM to
//!   its `memory.max`), joined before `exec`, so every socket it creates is tagged with it;
//! - an nftables table per pod, `inet husk_net_<pod id>`, hooks the host's `output` and
//!   rejects a **new** connection (TCP, UDP or ICMP) from a socket of that cgroup to
//!   any address of the host itself (`fib daddr type local`: loopback and every address
//!   on any interface, including other pods' published ports) or to link-local
//!   169.254.0.0/16 and fe80::/10. Replies on connections made *to* the pod (published
//!   ports) are not new, so they pass; connections to the rest of the world pass.
//! - exceptions, both narrow: port 53 of the name servers in the host's
//!   `/etc/resolv.conf` (passt forwards the pod's DNS there, and on many hosts that is a
//!   local resolver such as 127.0.0.53), and, only with `--network user:host-loopback`,
//!   the host's loopback (passt then maps the gateway 10.0.2.2 to it; see [`super`]).
//!
//! Why nftables with `socket cgroupv2` rather than, say, passt in a network namespace of
//! its own: the pod's traffic must leave through the host's own stack (that is what
//! user-mode networking is), and a cgroup match is exact per pod, needs no address or
//! uid husk would have to reserve, and disappears with one `delete table`. The table is
//! written with the `nft` program (Debian's `nftables`): its script syntax is the stable,
//! documented interface; the netlink encoding of the `socket cgroupv2` match is not
//! something to hand-write (the crates that speak nftables' netlink do not cover it).
//!
//! Needs root, a cgroup2 mount at or under `/sys/fs/cgroup` (`nft` resolves the cgroup's
//! path there) and `nft`. Without one of them `husk run` says so in one warning line and
//! the pod runs unfiltered (as rootless pods always do: see the README's Networking).
//!
//! Cleanup: the supervisor deletes the table and the cgroup when the pod ends; both are
//! recorded in `status.json` before they exist ([`GuardRecord`]), so `husk rm`/`gc`
//! remove what a `kill -9`ed supervisor left ([`release`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `nft` looks for the cgroup paths of `socket cgroupv2` matches.
const NFT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The program, found on `PATH` or in the usual sbin directories.
const NFT: &str = "nft";

/// What the guard of a pod consists of, as `status.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardRecord {
    /// The nftables table (family `inet`).
    pub table: String,
    /// passt's cgroup directory.
    pub cgroup: PathBuf,
}

/// Why the guard could not be set up (or taken down).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// `nft` is not installed.
    #[error("the pod network's host-side filter needs nft (apt-get install nftables)")]
    NoNft,
    /// The cgroup2 mount is not where `nft` resolves cgroup paths.
    #[error("the cgroup2 mount {} is not under {NFT_CGROUP_ROOT}, where nft looks", .0.display())]
    Mount(PathBuf),
    /// A cgroup file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `nft` refused the table.
    #[error("nft refused the pod's filter table: {0}")]
    Nft(String),
}

/// The table's name for pod `id` (ids are hex digits: a valid nft identifier).
pub fn table_name(id: &str) -> String {
    format!("husk_net_{id}")
}

/// passt's cgroup's name for pod `id`.
pub fn cgroup_name(id: &str) -> String {
    format!("husk-net-{id}")
}

/// The path of `nft`, if installed.
pub fn find_nft() -> Option<PathBuf> {
    super::find_program(NFT)
}

/// Whether a pod with `net` gets a filter: user-mode networking run by root. Rootless husk
/// cannot write nftables rules in the host's namespace; its pods are unfiltered, as
/// rootless Podman's are (README, Networking).
pub fn wanted(net: &super::NetworkConfig) -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    net.mode == super::NetworkMode::User && unsafe { libc::geteuid() } == 0
}

/// Why a pod that [`wanted`] a filter cannot have one on this host, if it cannot:
/// `has_cgroup` says whether its VMM gets a host cgroup (passt's goes beside it).
pub fn unavailable(has_cgroup: bool) -> Option<String> {
    if !has_cgroup {
        return Some("the pod has no host cgroup".into());
    }
    if find_nft().is_none() {
        return Some(GuardError::NoNft.to_string());
    }
    match crate::pod::cgroup::mount() {
        Ok(m) if m.starts_with(NFT_CGROUP_ROOT) => None,
        Ok(m) => Some(GuardError::Mount(m).to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// The IPv4 name servers of a `resolv.conf` text.
pub fn resolvers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

/// The nft script that makes the table for a passt in the cgroup `cgroup` (its path below
/// [`NFT_CGROUP_ROOT`], `level` components below the cgroup2 root).
pub fn script(
    table: &str,
    cgroup: &Path,
    level: usize,
    resolvers: &[Ipv4Addr],
    host_loopback: bool,
) -> String {
    let mut allow = String::new();
    for r in resolvers {
        allow.push_str(&format!(
            "    ip daddr {r} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        ));
    }
    if host_loopback {
        allow.push_str("    ip daddr 127.0.0.0/8 accept\n    ip6 daddr ::1 accept\n");
    }
    // `add table` then `delete table` makes a re-run start from an empty table, in one
    // transaction (nft applies a script atomically).
    format!(
        "add table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \x20 chain out {{\n\
         \x20   type filter hook output priority filter; policy accept;\n\
         \x20   socket cgroupv2 level {level} \"{}\" ct state new jump deny\n\
         \x20 }}\n\
         \x20 chain deny {{\n\
         {allow}\
         \x20   fib daddr type local reject\n\
         \x20   ip daddr 169.254.0.0/16 reject\n\
         \x20   ip6 daddr fe80::/10 reject\n\
         \x20 }}\n\
         }}\n",
        cgroup.display()
    )
}

/// A pod's guard, set up: passt must join [`NetGuard::procs`] before `exec`.
#[derive(Debug)]
pub struct NetGuard {
    pub record: GuardRecord,
    procs: File,
}

impl NetGuard {
    /// The record of the guard for pod `id` whose cgroups live in `parent` (an absolute
    /// directory on the cgroup2 mount `mount`): what [`NetGuard::create`] will make, to be
    /// saved before it is made.
    pub fn plan(mount: &Path, parent: &Path, id: &str) -> Result<GuardRecord, GuardError> {
        if !mount.starts_with(NFT_CGROUP_ROOT) {
            return Err(GuardError::Mount(mount.to_owned()));
        }
        Ok(GuardRecord {
            table: table_name(id),
            cgroup: parent.join(cgroup_name(id)),
        })
    }

    /// Makes the cgroup and the table of `record` on the cgroup2 mount `mount`. On failure
    /// nothing is left.
    pub fn create(
        record: GuardRecord,
        mount: &Path,
        host_loopback: bool,
    ) -> Result<NetGuard, GuardError> {
        let nft = find_nft().ok_or(GuardError::NoNft)?;
        let io_err = |what, path: &Path| {
            let path = path.to_owned();
            move |source| GuardError::Io { what, path, source }
        };
        let dir = &record.cgroup;
        std::fs::create_dir(dir).map_err(io_err("create", dir))?;
        let made = (|| {
            let procs_path = dir.join("cgroup.procs");
            let procs = OpenOptions::new()
                .write(true)
                .open(&procs_path)
                .map_err(io_err("open", &procs_path))?;
            let below_root = dir.strip_prefix(NFT_CGROUP_ROOT).unwrap_or(dir);
            let level = dir
                .strip_prefix(mount)
                .map_or(0, |p| p.components().count());
            let text = script(
                &record.table,
                below_root,
                level,
                &super::host_resolvers(),
                host_loopback,
            );
            run_nft(&nft, &text)?;
            Ok(procs)
        })();
        match made {
            Ok(procs) => Ok(NetGuard { record, procs }),
            Err(e) => {
                let _ = std::fs::remove_dir(dir);
                Err(e)
            }
        }
    }

    /// passt's cgroup's `cgroup.procs`, open for writing ([`crate::pod::cgroup::join`]).
    pub fn procs(&self) -> &File {
        &self.procs
    }

    /// Removes the table and the cgroup (killing what is left in it).
    pub fn remove(self) -> Result<(), GuardError> {
        drop(self.procs);
        remove(&self.record)
    }
}

/// Feeds `text` to `nft -f -`.
fn run_nft(nft: &Path, text: &str) -> Result<(), GuardError> {
    super::command::run(nft, &["-f", "-"], Some(text)).map_err(GuardError::Nft)
}

/// Deletes the table and passt's cgroup of `record`, whichever still exist.
fn remove(record: &GuardRecord) -> Result<(), GuardError> {
    if let Some(nft) = find_nft() {
        // `destroy table` (nft 1.0.8) would ignore a missing table; 1.0.6 has only
        // `delete`, so make sure it exists first, in the same transaction.
        run_nft(
            &nft,
            &format!("add table inet {0}\ndelete table inet {0}\n", record.table),
        )?;
    }
    crate::pod::cgroup::remove_cgroup_dir(&record.cgroup).map_err(|e| GuardError::Io {
        what: "remove",
        path: record.cgroup.clone(),
        source: io::Error::other(e.to_string()),
    })
}

/// Removes the recorded guard of pod `id`, if it is this pod's (a damaged `status.json`
/// cannot make husk delete another table or cgroup).
pub fn release(record: &GuardRecord, id: &str) -> Result<(), GuardError> {
    let name_ok = record.table == table_name(id)
        && record.cgroup.file_name().and_then(|n| n.to_str()) == Some(&cgroup_name(id));
    if !name_ok {
        return Err(GuardError::Io {
            what: "remove (not this pod's network filter)",
            path: record.cgroup.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    remove(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_rejects_new_connections_to_the_host_and_link_local() {
        let s = script(
            "husk_net_abc",
            Path::new("husk/husk-net-abc"),
            2,
            &[Ipv4Addr::new(127, 0, 0, 53)],
            false,
        );
        assert!(s.starts_with("add table inet husk_net_abc\ndelete table inet husk_net_abc\n"));
        assert!(s.contains("socket cgroupv2 level 2 \"husk/husk-net-abc\" ct state new jump deny"));
        assert!(s.contains("ip daddr 127.0.0.53 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(s.contains("fib daddr type local reject"));
        assert!(s.contains("ip daddr 169.254.0.0/16 reject"));
        assert!(s.contains("ip6 daddr fe80::/10 reject"));
        assert!(!s.contains("127.0.0.0/8 accept"));
        // The exceptions come before the rejections.
        let open = script("t", Path::new("x"), 1, &[], true);
        assert!(open.find("127.0.0.0/8 accept") < open.find("fib daddr"));
    }

    #[test]
    fn name_servers_and_names() {
        let text =
            "# comment\nnameserver 127.0.0.53\nnameserver ::1\nsearch x\nnameserver 10.1.2.3 \n";
        assert_eq!(
            resolvers(text),
            vec![Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(10, 1, 2, 3)]
        );
        assert_eq!(table_name("0a1b"), "husk_net_0a1b");
        let r = NetGuard::plan(
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup/husk"),
            "0a1b",
        )
        .unwrap();
        assert_eq!(r.cgroup, Path::new("/sys/fs/cgroup/husk/husk-net-0a1b"));
        assert!(NetGuard::plan(Path::new("/cg"), Path::new("/cg/husk"), "0a1b").is_err());
        assert!(release(
            &GuardRecord {
                table: "husk_net_other".into(),
                cgroup: r.cgroup
            },
            "0a1b"
        )
        .is_err());
    }
}
