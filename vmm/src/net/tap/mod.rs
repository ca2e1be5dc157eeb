//! `--network tap`: kernel-speed networking for root hosts.
//!
//! Each pod gets a network namespace of its own, `husk-<pod id>`, holding a
//! veth (`eth0`, with the pod's MAC) whose peer `hk<pod id>` is a port of
//! the host bridge [`BRIDGE`]; inside, a TAP device mirrored with `eth0`
//! ([`attach`], the seam a CNI-made namespace will use) carries the VM's
//! frames, with checksum and segmentation offloads. The pod's address comes
//! from [`SUBNET`]/[`PREFIX`] (leases under [`STATE_DIR`]); its gateway is the
//! bridge, [`GATEWAY`]; its traffic leaves masqueraded; published ports are
//! DNAT rules. Firecracker leaves all of this to its user; Kata mirrors a
//! CNI veth the same way; Docker's default bridge is the model for the
//! addressing and NAT.
//!
//! Isolation, enforced on the host ([`rules`]): the bridge's ports are
//! isolated (no frame from one pod's port reaches another's), and the host
//! table refuses what a pod opens to the host itself, to another pod through
//! the gateway, to link-local addresses and anything over IPv6. A published
//! port is the only way in. The host keeps `net.ipv4.ip_forward` on once a
//! TAP pod has run (as Docker does; other software may rely on it).
//!
//! Everything added to the host is named after the pod and recorded in its
//! `status.json` ([`TapRecord`]) before it exists: the supervisor removes it
//! when the pod ends, `husk rm`/`gc` after a `kill -9` ([`release`]); the
//! bridge and the host table go with the last TAP pod. All of it is done
//! under one host-wide lock, so pods starting and ending together do not
//! race. The `ip`, `tc` and `nft` programs do the work: their command
//! languages are the stable, documented interface to netlink (Rust's
//! netlink crates are async and cover neither tc actions nor nftables).
//!
//! Left out: IPv6 (the guest kernel has none yet), and hosts whose firewall
//! drops forwarded traffic by default (Docker sets iptables' `FORWARD`
//! policy to `DROP`): there the operator must accept `husk0`'s traffic.

pub mod attach;
pub mod rules;

use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{find_program, PortSpec, Proto};
use crate::devices::virtio::net::MacAddr;

/// The host bridge of TAP pods.
pub const BRIDGE: &str = "husk0";
/// The pods' subnet (Docker uses 172.17/16 and Podman 10.88/16).
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
/// Its prefix length.
pub const PREFIX: u8 = 16;
/// The bridge's address: every TAP pod's gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// The TAP device's name inside a pod's namespace.
pub const TAP_NAME: &str = "tap0";
/// The pods' MTU: Ethernet's (offloads carry 64 KiB segments anyway).
pub const MTU: u16 = 1500;
/// The pod's side of its veth, inside its namespace.
pub const UPLINK: &str = "eth0";
/// Address leases and the host-wide lock (on tmpfs, like the bridge and
/// namespaces it describes: gone after a reboot).
pub const STATE_DIR: &str = "/run/husk/net-tap";

/// What a pod's TAP network consists of, as `status.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapRecord {
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// The host side of the veth.
    pub veth: String,
    /// The pod's nftables table (family `ip`).
    pub table: String,
    /// The pod's address.
    pub addr: Ipv4Addr,
}

/// Why the TAP network could not be set up or taken down.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A file or device operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `ip`, `tc` or `nft` failed.
    #[error("{0}")]
    Command(String),
    /// Every address of the subnet is leased.
    #[error("no free address left in {SUBNET}/{PREFIX}")]
    Exhausted,
    /// The record names something that is not this pod's.
    #[error("status.json's TAP record is not this pod's; left alone")]
    NotThisPod,
    /// A published port is taken.
    #[error("host port {0} is already in use")]
    PortInUse(String),
}

impl TapError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> TapError {
        TapError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// The names of pod `id`'s namespace, veth and table (ids are 12 hex
/// digits, so `hk<id>` fits an interface name's 15 bytes).
pub fn names(id: &str) -> (String, String, String) {
    (
        format!("husk-{id}"),
        format!("hk{id}"),
        rules::pod_table(id),
    )
}

/// Why `--network tap` cannot work on this host, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("--network tap needs root (use --network user)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("--network tap needs /dev/net/tun (modprobe tun)".into());
    }
    for (prog, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
        if find_program(prog).is_none() {
            return Some(format!(
                "--network tap needs {prog} (apt-get install {package})"
            ));
        }
    }
    None
}

/// Runs `prog args` (feeding it `stdin`); a failure is one line naming the command.
fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<(), TapError> {
    let path = find_program(prog).ok_or_else(|| TapError::Command(format!("{prog}: not found")))?;
    super::command::run(&path, args, stdin)
        .map_err(|e| TapError::Command(format!("{prog} {}: {e}", args.join(" "))))
}

fn ip(args: &[&str]) -> Result<(), TapError> {
    run("ip", args, None)
}

fn tc(args: &[&str]) -> Result<(), TapError> {
    run("tc", args, None)
}

fn nft(script: &str) -> Result<(), TapError> {
    run("nft", &["-f", "-"], Some(script))
}

/// Takes the host-wide lock, held while the result lives.
fn host_lock() -> Result<crate::private::FileLock, TapError> {
    let dir = Path::new(STATE_DIR);
    std::fs::create_dir_all(dir.join("leases")).map_err(|e| TapError::io("create", dir, e))?;
    let path = dir.join("lock");
    crate::private::lock_file(&path, libc::LOCK_EX).map_err(|e| TapError::io("lock", &path, e))
}

fn lease_path(addr: Ipv4Addr) -> PathBuf {
    Path::new(STATE_DIR).join("leases").join(addr.to_string())
}

/// Leases the lowest free address to pod `id` and returns its record
/// (nothing else exists yet; the caller saves the record, then calls
/// [`create`]).
pub fn plan(id: &str) -> Result<TapRecord, TapError> {
    let _lock = host_lock()?;
    let base = u32::from(SUBNET);
    let hosts = (1u32 << (32 - u32::from(PREFIX))) - 1;
    for n in 2..hosts {
        let addr = Ipv4Addr::from(base + n);
        let path = lease_path(addr);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                io::Write::write_all(&mut f, id.as_bytes())
                    .map_err(|e| TapError::io("write", &path, e))?;
                let (netns, veth, table) = names(id);
                return Ok(TapRecord {
                    netns,
                    veth,
                    table,
                    addr,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TapError::io("create", &path, e)),
        }
    }
    Err(TapError::Exhausted)
}

/// A pod's TAP network while it runs.
#[derive(Debug)]
pub struct TapNetwork {
    /// What it consists of.
    pub record: TapRecord,
    /// The name servers the pod uses without `--dns` ([`default_dns`]).
    pub dns: Vec<Ipv4Addr>,
    /// The published host ports, held for the pod's life
    /// ([`reserve_ports`]).
    _ports: Vec<OwnedFd>,
}

/// Makes everything `record` names for pod `id` with MAC `mac`: bridge and
/// host table if this is the first TAP pod, namespace, veth, TAP, the
/// port rules. Returns the network and the TAP device's fd, for the VMM.
/// On an error, what was made stays recorded for [`release`].
pub fn create(
    record: &TapRecord,
    mac: MacAddr,
    ports: &[PortSpec],
) -> Result<(TapNetwork, OwnedFd), TapError> {
    let reserved = reserve_ports(ports)?;
    let resolvers = super::host_resolvers();
    let _lock = host_lock()?;
    ensure_bridge(&resolvers)?;
    let ns = record.netns.as_str();
    ip(&["netns", "add", ns])?;
    ip(&[
        "link",
        "add",
        &record.veth,
        "type",
        "veth",
        "peer",
        "name",
        UPLINK,
        "netns",
        ns,
    ])?;
    sysctl(&format!("ipv6/conf/{}/disable_ipv6", record.veth), "1");
    ip(&["link", "set", &record.veth, "master", BRIDGE])?;
    ip(&[
        "link",
        "set",
        "dev",
        &record.veth,
        "type",
        "bridge_slave",
        "isolated",
        "on",
    ])?;
    ip(&["link", "set", &record.veth, "up"])?;
    let mac = mac.to_string();
    ip(&["-n", ns, "link", "set", UPLINK, "address", &mac, "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    let netns_path = Path::new("/run/netns").join(ns);
    let tap = attach::attach(&netns_path, ns, UPLINK)?;
    if !ports.is_empty() {
        nft(&rules::pod_table_script(&record.table, record.addr, ports))?;
    }
    let net = TapNetwork {
        record: record.clone(),
        dns: default_dns(&resolvers),
        _ports: reserved,
    };
    Ok((net, tap))
}

/// Writes `value` to `/proc/sys/net/<key>`, if it exists.
fn sysctl(key: &str, value: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/{key}"), value);
}

/// The bridge, its address and the host table (replaced: the host's
/// resolvers may have changed). Under the host lock.
fn ensure_bridge(dns: &[Ipv4Addr]) -> Result<(), TapError> {
    if !Path::new("/sys/class/net").join(BRIDGE).exists() {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        sysctl(&format!("ipv6/conf/{BRIDGE}/disable_ipv6"), "1");
        ip(&["addr", "add", &format!("{GATEWAY}/{PREFIX}"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
    }
    // Connections from the host's loopback to a published port are routed
    // to the bridge (see rules::host_table).
    sysctl(&format!("ipv4/conf/{BRIDGE}/route_localnet"), "1");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| TapError::io("enable", Path::new("/proc/sys/net/ipv4/ip_forward"), e))?;
    nft(&rules::host_table(dns))
}

/// Binds each published port on the host (refusing one in use) and holds
/// it for the pod's life, so that neither another pod nor another program
/// takes it. The TCP socket listens (a bound socket that does not would let
/// others bind the port too, through `SO_REUSEADDR`), but nothing reaches
/// it: the pod's DNAT rules rewrite every connection to a local address
/// before a socket is looked up.
fn reserve_ports(ports: &[PortSpec]) -> Result<Vec<OwnedFd>, TapError> {
    ports
        .iter()
        .map(|p| {
            let addr = (p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
            let r = match p.proto {
                Proto::Tcp => std::net::TcpListener::bind(addr).map(OwnedFd::from),
                Proto::Udp => std::net::UdpSocket::bind(addr).map(OwnedFd::from),
            };
            r.map_err(|e| match e.kind() {
                io::ErrorKind::AddrInUse => TapError::PortInUse(p.to_string()),
                _ => TapError::Command(format!("cannot bind host port {p}: {e}")),
            })
        })
        .collect()
}

/// Removes what `record` names, whatever of it exists, and the bridge and
/// host table if no TAP pod is left. Checks first that the record is pod
/// `id`'s (a damaged `status.json` cannot make husk delete another's).
pub fn release(record: &TapRecord, id: &str) -> Result<(), TapError> {
    let (netns, veth, table) = names(id);
    if (
        record.netns.as_str(),
        record.veth.as_str(),
        record.table.as_str(),
    ) != (netns.as_str(), veth.as_str(), table.as_str())
    {
        return Err(TapError::NotThisPod);
    }
    let _lock = host_lock()?;
    if find_program("nft").is_some() {
        nft(&rules::delete_pod_table(id))?;
    }
    // The veth first (its peer in the namespace goes with it), then the
    // namespace; a veth that vanishes meanwhile (its namespace's teardown
    // takes it, asynchronously) is not an error.
    let veth_path = Path::new("/sys/class/net").join(&veth);
    if veth_path.exists() {
        if let Err(e) = ip(&["link", "delete", &veth]) {
            if veth_path.exists() {
                return Err(e);
            }
        }
    }
    if Path::new("/run/netns").join(&netns).exists() {
        ip(&["netns", "delete", &netns])?;
    }
    let lease = lease_path(record.addr);
    if std::fs::read_to_string(&lease).is_ok_and(|owner| owner == id) {
        std::fs::remove_file(&lease).map_err(|e| TapError::io("remove", &lease, e))?;
    }
    let leases = Path::new(STATE_DIR).join("leases");
    let any_left = std::fs::read_dir(&leases)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !any_left {
        if find_program("nft").is_some() {
            nft(&rules::delete_host_table())?;
        }
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            ip(&["link", "delete", BRIDGE])?;
        }
    }
    Ok(())
}

/// The name servers a TAP pod uses without `--dns`: the host's
/// `resolvers`, except loopback ones (a pod cannot reach the host's loopback).
pub fn default_dns(resolvers: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    resolvers
        .iter()
        .copied()
        .filter(|a| !a.is_loopback())
        .collect()
}
