//! The pod's network inside the guest: `eth0` up with the address and
//! default route the host sends (`ConfigureNetwork`), and the files every
//! container gets as `/etc/resolv.conf` and `/etc/hosts`.
//!
//! Why ioctls: the guest has no `ip` binary and no DHCP client (the host
//! knows the addresses before boot: see the host's `net` module), and the
//! classic `SIOCSIF*`/`SIOCADDRT` requests on an `AF_INET` socket set one
//! IPv4 address, its netmask, the MTU, the link flags and a default route
//! with a handful of calls and no netlink message building. IPv6 works
//! the same way on an `AF_INET6` socket ([`ipv6`]).
//!
//! Containers share the guest's network namespace (all apps of a pod
//! reach each other on localhost, as in a Kubernetes pod); they get the
//! files below bind-mounted read-only by the host's container spec.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use husk_proto::{InterfaceSpec, NetworkSpec};

mod ipv6;

/// Where the agent writes the pod's `resolv.conf`, `hosts` and `hostname`.
pub const NET_DIR: &str = "/run/husk/net";

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

fn ip(what: &'static str, s: &str) -> Result<Ipv4Addr, NetError> {
    s.parse().map_err(|_| NetError::Invalid {
        what,
        value: s.to_owned(),
    })
}

fn valid_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Applies `spec`: validates everything first, then the files, the
/// hostname, loopback and the interface.
pub fn configure(spec: &NetworkSpec) -> Result<(), NetError> {
    if !valid_name(&spec.hostname) || spec.hostname.len() > 64 {
        return Err(NetError::Invalid {
            what: "hostname",
            value: spec.hostname.clone(),
        });
    }
    let dns: Vec<Ipv4Addr> = spec
        .dns
        .iter()
        .map(|d| ip("DNS server", d))
        .collect::<Result<_, _>>()?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    hosts.push_str(&format!("127.0.1.1\t{}\n", spec.hostname));
    for (name, addr) in &spec.hosts {
        if !valid_name(name) {
            return Err(NetError::Invalid {
                what: "host name",
                value: name.clone(),
            });
        }
        hosts.push_str(&format!("{}\t{name}\n", ip("host address", addr)?));
    }
    if let Some(i) = &spec.interface {
        check_interface(i)?;
    }
    let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    std::fs::create_dir_all(NET_DIR).map_err(io_err(format!("cannot create {NET_DIR}")))?;
    for (file, text) in [
        ("resolv.conf", resolv),
        ("hosts", hosts),
        ("hostname", format!("{}\n", spec.hostname)),
    ] {
        let path = format!("{NET_DIR}/{file}");
        std::fs::write(&path, text).map_err(io_err(format!("cannot write {path}")))?;
    }
    // SAFETY: sethostname reads `len` bytes from a valid buffer.
    if unsafe { libc::sethostname(spec.hostname.as_ptr().cast(), spec.hostname.len()) } != 0 {
        return Err(io_err("sethostname")(io::Error::last_os_error()));
    }
    let sock = inet_socket()?;
    set_up(&sock, "lo")?;
    if let Some(i) = &spec.interface {
        apply_interface(&sock, i)?;
    }
    Ok(())
}

fn check_interface(i: &InterfaceSpec) -> Result<(), NetError> {
    let name_ok = (1..libc::IFNAMSIZ).contains(&i.name.len())
        && i.name.bytes().all(|b| b.is_ascii_alphanumeric());
    if !name_ok {
        return Err(NetError::Invalid {
            what: "interface name",
            value: i.name.clone(),
        });
    }
    ip("address", &i.address)?;
    if i.prefix_len > 32 {
        return Err(NetError::Invalid {
            what: "prefix length",
            value: i.prefix_len.to_string(),
        });
    }
    if let Some(g) = &i.gateway {
        ip("gateway", g)?;
    }
    if let Some(v6) = &i.ipv6 {
        ipv6::check(v6)?;
    }
    if i.mtu != 0 && !(68..=65535).contains(&i.mtu) {
        return Err(NetError::Invalid {
            what: "MTU",
            value: i.mtu.to_string(),
        });
    }
    Ok(())
}

fn inet_socket() -> Result<OwnedFd, NetError> {
    dgram_socket(libc::AF_INET, "socket(AF_INET)")
}

/// A datagram socket of `family`, for the configuration ioctls.
pub(crate) fn dgram_socket(family: libc::c_int, what: &str) -> Result<OwnedFd, NetError> {
    // SAFETY: socket(2) with integer arguments; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_err(what)(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; every bit
    // pattern is a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// `ioctl(sock, req, arg)`; `T` must be the structure `req` takes.
pub(crate) fn ioctl<T>(
    sock: &OwnedFd,
    req: libc::c_ulong,
    arg: &mut T,
    what: String,
) -> Result<(), NetError> {
    let arg: *mut T = arg;
    // SAFETY: `arg` is a live, exclusive pointer to the structure `req`
    // expects (each caller passes the ifreq or rtentry of its request).
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, arg.cast::<libc::c_void>()) } < 0 {
        return Err(io_err(what)(io::Error::last_os_error()));
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), NetError> {
    let mut r = ifreq(name);
    ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        &mut r,
        format!("cannot read {name}'s flags"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut r,
        format!("cannot bring {name} up"),
    )
}

fn apply_interface(sock: &OwnedFd, i: &InterfaceSpec) -> Result<(), NetError> {
    let name = i.name.as_str();
    let addr: Ipv4Addr = i.address.parse().expect("checked");
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(i.prefix_len))
            .unwrap_or(0),
    );
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(
        sock,
        libc::SIOCSIFADDR,
        &mut r,
        format!("cannot set {name}'s address"),
    )?;
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_netmask = sockaddr(mask);
    ioctl(
        sock,
        libc::SIOCSIFNETMASK,
        &mut r,
        format!("cannot set {name}'s netmask"),
    )?;
    if i.mtu != 0 {
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_mtu = i.mtu as libc::c_int;
        ioctl(
            sock,
            libc::SIOCSIFMTU,
            &mut r,
            format!("cannot set {name}'s MTU"),
        )?;
    }
    match &i.ipv6 {
        Some(_) => ipv6::prepare(name)?,
        None => ipv6::disable(name),
    }
    set_up(sock, name)?;
    if let Some(v6) = &i.ipv6 {
        ipv6::apply(name, v6)?;
    }
    if let Some(gw) = &i.gateway {
        let gw: Ipv4Addr = gw.parse().expect("checked");
        // SAFETY: rtentry is plain data; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        let mut dev: Vec<u8> = name.bytes().chain(std::iter::once(0)).collect();
        rt.rt_dev = dev.as_mut_ptr().cast();
        ioctl(
            sock,
            libc::SIOCADDRT,
            &mut rt,
            format!("cannot add the default route via {gw}"),
        )?;
        announce(gw);
    }
    Ok(())
}

/// Makes the guest's first frame now: an empty UDP datagram to the
/// gateway's discard port (passt delivers it to the host's loopback, port
/// 9). Before it, the guest resolves the gateway with ARP, and that is the
/// point: passt learns the guest's MAC only from the guest's own frames,
/// and until then addresses frames to a MAC the guest drops, so a pod that
/// only serves (published ports) and never sent anything was unreachable.
/// Best effort: a failure only delays that learning to the pod's first
/// outbound packet.
fn announce(gw: Ipv4Addr) {
    if let Ok(s) = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = s.send_to(&[], (gw, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_refused_before_anything_changes() {
        let mut spec = NetworkSpec {
            hostname: "bad host".into(),
            ..Default::default()
        };
        assert!(matches!(
            configure(&spec),
            Err(NetError::Invalid {
                what: "hostname",
                ..
            })
        ));
        spec.hostname = "pod".into();
        spec.dns = vec!["1.2.3".into()];
        assert!(matches!(configure(&spec), Err(NetError::Invalid { .. })));
        spec.dns.clear();
        spec.hosts = vec![("a b".into(), "1.2.3.4".into())];
        assert!(matches!(configure(&spec), Err(NetError::Invalid { .. })));
        spec.hosts.clear();
        let mut i = InterfaceSpec {
            name: "eth0".into(),
            address: "10.0.2.15".into(),
            prefix_len: 33,
            gateway: None,
            mtu: 0,
            ipv6: None,
        };
        assert!(check_interface(&i).is_err());
        i.prefix_len = 24;
        check_interface(&i).unwrap();
        i.name = "eth0/../x".into();
        assert!(check_interface(&i).is_err());
    }
}
