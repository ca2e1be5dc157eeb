//! Connecting a VM to a network namespace: a TAP device made inside it and
//! mirrored, both ways, with the namespace's uplink interface by two tc
//! `mirred` redirects. This is the seam the coming containerd/Kubernetes
//! work plugs into: there CNI has already made the namespace and its veth
//! (with the pod's address and MAC), and husk only calls [`attach`] with
//! that namespace and interface, as Kata's "tcfilter" model does. `husk run
//! --network tap` makes its own namespace and veth first
//! ([`super::create`]) and then calls the same function.
//!
//! Why tc mirroring rather than a bridge inside the namespace: it needs no
//! device beyond the TAP, moves frames below the IP stack (the namespace's
//! own stack sees none of the pod's traffic, so its addresses and routes,
//! whatever CNI set, cannot interfere), and keeps GSO frames whole.
//!
//! The TAP is made by a short-lived thread that enters the namespace
//! (`setns` changes only the calling thread's namespace), so it belongs to
//! that namespace; its fd works from any namespace afterwards, which is how
//! the jailed VMM, in an empty network namespace of its own, uses it. It is
//! not persistent: it disappears with the VMM's fd.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{ip, tc, TapError, TAP_NAME};
use crate::devices::virtio::net::NET_HDR_LEN;

/// Makes [`TAP_NAME`] in the network namespace `netns` (a path such as
/// `/run/netns/NAME`), brings it up, mirrors it with `uplink` and returns
/// its fd, opened with `IFF_VNET_HDR` and a 12-byte header.
pub fn attach(netns: &Path, ns_name: &str, uplink: &str) -> Result<OwnedFd, TapError> {
    let ns = File::open(netns).map_err(|e| TapError::io("open network namespace", netns, e))?;
    let fd = std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd, TapError> {
            // SAFETY: setns on an fd we hold; it changes this thread's network
            // namespace only, and the thread ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(TapError::io(
                    "enter network namespace",
                    netns,
                    io::Error::last_os_error(),
                ));
            }
            // The namespace carries no IPv6 (pods have none); without this
            // its stack would send router solicitations on the uplink.
            for conf in ["all", "default"] {
                let p = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                let _ = std::fs::write(p, "1");
            }
            open_tap(TAP_NAME)
        })
        .join()
        .unwrap_or_else(|_| Err(TapError::Command("the TAP thread panicked".into())))
    })?;
    ip(&["-n", ns_name, "link", "set", TAP_NAME, "up"])?;
    for (from, to) in [(uplink, TAP_NAME), (TAP_NAME, uplink)] {
        tc(&["-n", ns_name, "qdisc", "add", "dev", from, "ingress"])?;
        // A u32 filter matching every packet: matchall would do, but not
        // every kernel has it (u32 is older and everywhere).
        tc(&[
            "-n", ns_name, "filter", "add", "dev", from, "ingress", "protocol", "all", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ])?;
    }
    Ok(fd)
}

/// Opens `/dev/net/tun` as TAP device `name` with virtio-net headers, in
/// the calling thread's network namespace: an existing device of that name
/// (a persistent one, `ip tuntap add NAME mode tap`) is attached to,
/// otherwise a new one is made that lasts as long as the fd.
pub fn open_tap(name: &str) -> Result<OwnedFd, TapError> {
    let dev = Path::new("/dev/net/tun");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev)
        .map_err(|e| TapError::io("open", dev, e))?;
    // SAFETY: an all-zero ifreq is a valid value (empty name, zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq we pass, which lives
    // across the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(TapError::io(
            "create TAP device",
            dev,
            io::Error::last_os_error(),
        ));
    }
    let size = NET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer we pass.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
        return Err(TapError::io(
            "set the TAP header size",
            dev,
            io::Error::last_os_error(),
        ));
    }
    Ok(OwnedFd::from(file))
}
