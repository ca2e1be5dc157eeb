//! IPv6 on the pod's interface, from the static settings the host sends.
//!
//! The same classic ioctls as IPv4, on an `AF_INET6` socket: `SIOCSIFADDR`
//! with an `in6_ifreq` adds the address (and its on-link prefix route),
//! `SIOCADDRT` with an `in6_rtmsg` the default route. Before the interface
//! comes up, three sysctls of the interface are turned off:
//! - `accept_dad`: duplicate address detection would keep the address
//!   "tentative", unusable, for about a second on every pod start, and the
//!   link has exactly one other end (passt or the host's TAP), which never
//!   claims the pod's address;
//! - `accept_ra` and `autoconf`: the host already sent the addresses; a
//!   router advertisement must not add a second address or route behind
//!   the host's back.

use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;

use husk_proto::Ipv6Spec;

use super::{dgram_socket, io_err, ioctl, NetError};

fn addr(what: &'static str, s: &str) -> Result<Ipv6Addr, NetError> {
    s.parse().map_err(|_| NetError::Invalid {
        what,
        value: s.to_owned(),
    })
}

/// Refuses a malformed `spec` before anything changes.
pub fn check(spec: &Ipv6Spec) -> Result<(), NetError> {
    addr("IPv6 address", &spec.address)?;
    if spec.prefix_len > 128 {
        return Err(NetError::Invalid {
            what: "IPv6 prefix length",
            value: spec.prefix_len.to_string(),
        });
    }
    if let Some(g) = &spec.gateway {
        addr("IPv6 gateway", g)?;
    }
    Ok(())
}

/// Turns off DAD, router advertisements and autoconfiguration on `name`
/// (see the module doc). Call before the interface comes up.
pub fn prepare(name: &str) -> Result<(), NetError> {
    for knob in ["accept_dad", "accept_ra", "autoconf"] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{knob}");
        std::fs::write(&path, "0").map_err(io_err(format!("cannot write {path}")))?;
    }
    Ok(())
}

/// Turns IPv6 off on `name`, whose network has none (a TAP pod's): no
/// link-local address, no router solicitations to a host that drops them.
/// Best effort: a kernel without IPv6 has nothing to turn off.
pub fn disable(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
}

/// Adds `spec`'s address and default route to `name` (which is up).
pub fn apply(name: &str, spec: &Ipv6Spec) -> Result<(), NetError> {
    let address = addr("IPv6 address", &spec.address)?;
    let index = if_index(name)?;
    let sock = inet6_socket()?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: in6(address),
        ifr6_prefixlen: u32::from(spec.prefix_len),
        ifr6_ifindex: index,
    };
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        &mut req,
        format!("cannot set {name}'s IPv6 address"),
    )?;
    if let Some(gw) = &spec.gateway {
        let gw = addr("IPv6 gateway", gw)?;
        let zero = in6(Ipv6Addr::UNSPECIFIED);
        // Destination ::/0: the default route.
        let mut rt = In6Rtmsg {
            dst: zero,
            src: zero,
            gateway: in6(gw),
            kind: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1,
            info: 0,
            flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
            ifindex: index,
        };
        ioctl(
            &sock,
            libc::SIOCADDRT,
            &mut rt,
            format!("cannot add the IPv6 default route via {gw}"),
        )?;
    }
    Ok(())
}

/// The kernel's `struct in6_rtmsg` (`linux/ipv6_route.h`), which
/// `SIOCADDRT` takes on an `AF_INET6` socket. Declared here because the
/// `libc` crate's copy keeps its fields private.
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

const _: () = assert!(std::mem::size_of::<In6Rtmsg>() == std::mem::size_of::<libc::in6_rtmsg>());

fn in6(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: a.octets(),
    }
}

fn if_index(name: &str) -> Result<libc::c_int, NetError> {
    let c = std::ffi::CString::new(name).map_err(|_| NetError::Invalid {
        what: "interface name",
        value: name.to_owned(),
    })?;
    // SAFETY: if_nametoindex reads the NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io_err(format!("no interface {name}"))(
            std::io::Error::last_os_error(),
        ));
    }
    libc::c_int::try_from(index).map_err(|_| NetError::Invalid {
        what: "interface index",
        value: index.to_string(),
    })
}

fn inet6_socket() -> Result<OwnedFd, NetError> {
    dgram_socket(libc::AF_INET6, "socket(AF_INET6)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_settings_are_refused() {
        let mut s = Ipv6Spec {
            address: "fd00::15".into(),
            prefix_len: 64,
            gateway: Some("fd00::2".into()),
        };
        check(&s).unwrap();
        s.prefix_len = 129;
        assert!(check(&s).is_err());
        s.prefix_len = 64;
        s.gateway = Some("10.0.2.2".into());
        assert!(check(&s).is_err());
        s.gateway = None;
        s.address = "fd00::15/64".into();
        assert!(check(&s).is_err());
    }
}
