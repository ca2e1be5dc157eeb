//! Pod networking on the host: the network a pod asks for (`--network`,
//! `-p`, `--dns`, `--add-host`), the fixed addressing of the user-mode
//! network, and the `passt` process that serves it ([`passt`]).
//!
//! Why fixed addresses: passt copies the host's address and default route
//! by default, which differs per host and does not exist at all on a host
//! without a network card (the testbed; passt then refuses to start). The
//! guest has no DHCP client (the agent configures `eth0` from what the host
//! sends over the agent protocol), so the host must know the addresses
//! before boot. Every pod therefore gets the same private network, as
//! slirp and podman's rootless networking do:
//! - the pod: [`GUEST_ADDR`]/[`GUEST_PREFIX`], default route via [`GATEWAY`];
//! - [`GATEWAY`] is the host's side of the link. Only with
//!   `--network user:host-loopback` does passt map connections to it onto the
//!   host's loopback (its `--map-gw`); by default it gets `--no-map-gw`, so a
//!   pod cannot reach services that listen on the host's loopback, and the
//!   host-side filter of [`guard`] also keeps it from the host's other
//!   addresses and from link-local ones (as root);
//! - [`DNS_FORWARD`] answers DNS by forwarding to the host's first resolver
//!   (`--dns-forward`), unless the pod was given `--dns` servers;
//! - IPv6 the same way, [`GUEST_ADDR6`]/[`GUEST_PREFIX6`] via [`GATEWAY6`],
//!   when the host has default routes for both IPv4 and IPv6
//!   ([`passt::HostRoutes::ipv6`]); otherwise the pod has no IPv6 address
//!   (as on an IPv4-only LAN), so its programs use IPv4 at once. Name
//!   servers stay IPv4 ([`DNS_FORWARD`] answers AAAA queries too).
//!   `--network tap` pods have no IPv6 ([`tap`]).
//!
//! The seam for TAP and CNI: [`NetworkMode`] grows variants, and each ends
//! in a descriptor the VMM's virtio-net device reads frames from
//! ([`crate::vm_config::NetSpec`]); the device does not know which.

mod command;
pub mod guard;
pub mod passt;
pub mod tap;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The pod's address on the user-mode network.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Its prefix length.
pub const GUEST_PREFIX: u8 = 24;
/// The gateway, which is the host (see the module doc).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS address the pod uses unless given `--dns`.
pub const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The pod's IPv6 address on the user-mode network: in the unique-local
/// `fd00::/64` that slirp4netns also uses, with the same last digits as
/// [`GUEST_ADDR`].
pub const GUEST_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x15);
/// Its prefix length.
pub const GUEST_PREFIX6: u8 = 64;
/// The IPv6 gateway, the host's side of the link like [`GATEWAY`].
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The pod's MTU: Ethernet's 1500, not passt's own default of 65520 (one
/// TCP segment per frame). Measured in the testbed with Debian 12's passt
/// (`scripts/bench-net.sh`, README "Benchmarks"), 65520 was faster guest →
/// host but slower host → guest, for QEMU's virtio-net on the same passt as
/// much as for husk's, so it is not taken while one direction loses.
///
/// It once stalled TCP: the stream backend ran frames that had waited for the
/// socket together in one write, and this passt loses its place in the
/// stream when a frame reaches it in more than two of the kernel's pieces
/// (see [`crate::devices::virtio::net::stream`]); with 64 KiB frames that
/// was frequent. The backend now writes one frame per write, as qemu does,
/// and bulk transfers at 65520 run (unit tests pin the write boundaries).
pub const MTU: u16 = 1500;

/// How a pod is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// User-mode networking through passt: the default, as it needs no host
    /// configuration and no privileges (Podman's rootless default too).
    #[default]
    User,
    /// A TAP device on a host bridge with NAT ([`tap`]): kernel speed,
    /// offloads; root only.
    Tap,
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NetworkMode::None),
            "user" => Ok(NetworkMode::User),
            "tap" => Ok(NetworkMode::Tap),
            _ => Err(format!("{s:?}: use user, user:host-loopback, tap or none")),
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkMode::None => "none",
            NetworkMode::User => "user",
            NetworkMode::Tap => "tap",
        })
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One published port: `[HOSTIP:]HOSTPORT:PODPORT[/tcp|/udp]` (docker's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// The host address to bind (all addresses if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The port in the pod.
    pub pod_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?}: {why} (use [HOSTIP:]HOSTPORT:PODPORT[/tcp|/udp])");
        let (ports, proto) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, pod) = match parts.as_slice() {
            [h, p] => (None, *h, *p),
            [ip, h, p] => (Some(*ip), *h, *p),
            _ => return Err(bad("expected two or three fields")),
        };
        let host_ip = ip
            .map(|ip| {
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| bad("not an IPv4 address"))
            })
            .transpose()?;
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad("a port is 1 to 65535")),
        };
        Ok(PortSpec {
            host_ip,
            host_port: port(host)?,
            pod_port: port(pod)?,
            proto,
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(f, "{ip}:{}->{}/{proto}", self.host_port, self.pod_port)
    }
}

/// A pod's network, as configured (kept in the pod's config).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The backend.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Published ports (user mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// DNS servers for the containers' resolv.conf (default: [`DNS_FORWARD`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Extra `/etc/hosts` lines: name, address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// The pod's hostname (default: the pod's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--network user:host-loopback`: the pod may reach the host's loopback
    /// at [`GATEWAY`] (off by default: see the module doc).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_loopback: bool,
}

/// Why a network setting is refused.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A published port with `--network none`.
    #[error("-p needs --network user or tap (the pod has no network)")]
    PortsWithoutNetwork,
    /// The same host port twice.
    #[error("host port {0} is published twice")]
    DuplicatePort(String),
    /// The host port is taken.
    #[error("host port {port} is already in use")]
    PortInUse {
        /// The port, as `IP:PORT/PROTO`.
        port: String,
    },
    /// The host port cannot be bound for another reason.
    #[error("cannot bind host port {port}: {source}")]
    PortBind {
        /// The port, as `IP:PORT/PROTO`.
        port: String,
        /// Why.
        source: std::io::Error,
    },
    /// `--hostname` malformed.
    #[error("--hostname {0:?}: use 1 to 63 letters, digits, '-' and '.'")]
    BadHostname(String),
    /// `--add-host` malformed.
    #[error("--add-host {0:?}: use NAME:IPV4")]
    BadHost(String),
}

/// Parses a `--network` value: `none`, `user`, `user:host-loopback` or `tap`.
pub fn parse_mode(text: &str) -> Result<(NetworkMode, bool), String> {
    let (mode, option) = match text.split_once(':') {
        Some((m, o)) => (m, Some(o)),
        None => (text, None),
    };
    let mode = mode
        .parse::<NetworkMode>()
        .map_err(|e| format!("--network {e}"))?;
    match (mode, option) {
        (_, None) => Ok((mode, false)),
        (NetworkMode::User, Some("host-loopback")) => Ok((mode, true)),
        (_, Some(o)) => Err(format!(
            "--network {text:?}: unknown option {o:?} (the one option is user:host-loopback)"
        )),
    }
}

/// Parses `NAME:IP` (`--add-host`).
pub fn parse_add_host(s: &str) -> Result<(String, Ipv4Addr), NetError> {
    let (name, ip) = s
        .split_once(':')
        .ok_or_else(|| NetError::BadHost(s.into()))?;
    let ok_name = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match (ok_name, ip.parse()) {
        (true, Ok(ip)) => Ok((name.to_owned(), ip)),
        _ => Err(NetError::BadHost(s.into())),
    }
}

impl NetworkConfig {
    /// Parses the user's strings (flags or manifest fields); the one-line
    /// error names the setting. `mode` absent: [`NetworkMode::default`].
    pub fn from_strings(
        mode: Option<&str>,
        ports: &[String],
        dns: &[String],
        hosts: &[String],
        hostname: Option<String>,
    ) -> Result<NetworkConfig, String> {
        let (mode, host_loopback) = match mode {
            None => (NetworkMode::default(), false),
            Some(text) => parse_mode(text)?,
        };
        let ports = ports
            .iter()
            .map(|p| p.parse::<PortSpec>().map_err(|e| format!("-p {e}")))
            .collect::<Result<_, _>>()?;
        let dns = dns
            .iter()
            .map(|d| {
                d.parse()
                    .map_err(|_| format!("--dns {d:?}: not an IPv4 address"))
            })
            .collect::<Result<_, _>>()?;
        let hosts = hosts
            .iter()
            .map(|h| parse_add_host(h).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let c = NetworkConfig {
            mode,
            ports,
            dns,
            hosts,
            hostname,
            host_loopback,
        };
        c.check().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Checks what needs no host access.
    pub fn check(&self) -> Result<(), NetError> {
        if self.mode == NetworkMode::None && !self.ports.is_empty() {
            return Err(NetError::PortsWithoutNetwork);
        }
        if let Some(h) = &self.hostname {
            let ok = (1..=63).contains(&h.len())
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(NetError::BadHostname(h.clone()));
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            if self.ports[..i]
                .iter()
                .any(|q| q.host_port == p.host_port && q.proto == p.proto)
            {
                return Err(NetError::DuplicatePort(p.to_string()));
            }
        }
        Ok(())
    }

    /// Refuses a published port that cannot be bound on this host now (in
    /// use, or privileged): the early, one-line refusal before anything of
    /// the pod starts. passt binds the ports itself a moment later; a port
    /// taken in between makes passt exit, which is reported too.
    pub fn check_ports_free(&self) -> Result<(), NetError> {
        for p in &self.ports {
            let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let addr = (ip, p.host_port);
            let r = match p.proto {
                Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
                Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(NetError::PortInUse {
                        port: format!("{ip}:{}/{}", p.host_port, proto_name(p.proto)),
                    })
                }
                Err(source) => {
                    return Err(NetError::PortBind {
                        port: format!("{ip}:{}/{}", p.host_port, proto_name(p.proto)),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

/// The path of program `name` on `PATH` or in the usual system directories
/// (root's tools such as `nft` and `ip` live in the sbin ones, often off a
/// user's `PATH`).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The host's IPv4 name servers (`/etc/resolv.conf`; none if unreadable).
pub fn host_resolvers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| guard::resolvers(&t))
        .unwrap_or_default()
}

/// Where the agent keeps the files every container gets as its
/// `/etc/resolv.conf` and `/etc/hosts` (the agent's `net::NET_DIR`).
pub const GUEST_NET_DIR: &str = "/run/husk/net";

/// What the agent applies for `net` (`ConfigureNetwork`): `eth0` on the
/// user-mode network's fixed addresses (IPv6 too when `ipv6`: passt
/// carries it), on the TAP pod's leased address
/// (`tap`), or loopback only; `hostname`; the name servers (`--dns`, else
/// [`DNS_FORWARD`] in user mode and the TAP network's) and extra hosts.
pub fn guest_spec(
    net: &NetworkConfig,
    hostname: &str,
    tap: Option<&tap::TapNetwork>,
    ipv6: bool,
) -> husk_proto::NetworkSpec {
    let interface = |address: Ipv4Addr, prefix_len, gateway: Ipv4Addr, mtu: u16| {
        Some(husk_proto::InterfaceSpec {
            name: "eth0".into(),
            address: address.to_string(),
            prefix_len,
            gateway: Some(gateway.to_string()),
            mtu: u32::from(mtu),
            ipv6: None,
        })
    };
    let (interface, default_dns) = match (net.mode, tap) {
        (NetworkMode::User, _) => {
            let mut i = interface(GUEST_ADDR, GUEST_PREFIX, GATEWAY, MTU);
            if let Some(i) = i.as_mut().filter(|_| ipv6) {
                i.ipv6 = Some(husk_proto::Ipv6Spec {
                    address: GUEST_ADDR6.to_string(),
                    prefix_len: GUEST_PREFIX6,
                    gateway: Some(GATEWAY6.to_string()),
                });
            }
            (i, vec![DNS_FORWARD])
        }
        (NetworkMode::Tap, Some(t)) => (
            interface(t.record.addr, tap::PREFIX, tap::GATEWAY, tap::MTU),
            t.dns.clone(),
        ),
        _ => (None, Vec::new()),
    };
    let dns: Vec<String> = if net.dns.is_empty() {
        &default_dns
    } else {
        &net.dns
    }
    .iter()
    .map(ToString::to_string)
    .collect();
    husk_proto::NetworkSpec {
        interface,
        hostname: hostname.to_owned(),
        dns,
        hosts: net
            .hosts
            .iter()
            .map(|(n, ip)| (n.clone(), ip.to_string()))
            .collect(),
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_in_docker_syntax() {
        let p: PortSpec = "8080:80".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.pod_port, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p: PortSpec = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.proto, Proto::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:5353->53/udp");
        for bad in [
            "80",
            "0:80",
            "80:70000",
            "a:80",
            "1.2.3:80:80",
            "80:80/sctp",
            "::80:80",
            "",
        ] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_hosts_and_checks() {
        assert_eq!("user".parse::<NetworkMode>(), Ok(NetworkMode::User));
        assert!("bridge"
            .parse::<NetworkMode>()
            .unwrap_err()
            .contains("use user, user:host-loopback, tap or none"));
        assert_eq!(parse_mode("user"), Ok((NetworkMode::User, false)));
        assert_eq!(
            parse_mode("user:host-loopback"),
            Ok((NetworkMode::User, true))
        );
        assert!(parse_mode("none:host-loopback")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_mode("user:everything").is_err());
        assert_eq!(NetworkMode::default(), NetworkMode::User);
        assert_eq!(
            parse_add_host("db.local:10.0.2.2").unwrap(),
            ("db.local".into(), GATEWAY)
        );
        assert!(parse_add_host("x y:1.2.3.4").is_err());
        assert!(parse_add_host("x:1.2.3").is_err());
        let mut c = NetworkConfig {
            mode: NetworkMode::None,
            ports: vec!["8080:80".parse().unwrap()],
            ..Default::default()
        };
        assert!(matches!(c.check(), Err(NetError::PortsWithoutNetwork)));
        c.mode = NetworkMode::User;
        c.check().unwrap();
        c.ports.push("127.0.0.1:8080:81".parse().unwrap());
        assert!(matches!(c.check(), Err(NetError::DuplicatePort(_))));
    }

    #[test]
    fn a_port_in_use_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = NetworkConfig {
            mode: NetworkMode::User,
            ports: vec![format!("127.0.0.1:{port}:80").parse().unwrap()],
            ..Default::default()
        };
        let e = c.check_ports_free().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("host port 127.0.0.1:{port}/tcp is already in use")
        );
        drop(l);
        c.check_ports_free().unwrap();
    }
}
