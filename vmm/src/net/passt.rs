//! One `passt` per pod: started by the pod's supervisor while the VMM boots, reaped by
//! whoever started it.
//!
//! The VMM and passt are joined by a `socketpair(AF_UNIX, SOCK_STREAM)`:
//! passt gets one end with `--fd` (which also makes it quit once the other
//! end closes: passt's `--one-off`), the VMM the other, already connected,
//! so the jailed VMM (empty network namespace, empty root) needs no socket
//! path and no network. No path also means no other local user can connect
//! to the pod's network in its place.
//!
//! passt runs in the foreground (`-f`) as the supervisor's child, so the
//! supervisor reaps it; it sandboxes itself (as root it drops to `nobody`,
//! then enters namespaces of its own with a seccomp filter). Its options:
//! the fixed addressing of [`super`] (`-a -n -g` for IPv4, `-a -g` for IPv6,
//! `--dns-forward`; no DHCP, DHCPv6 or router advertisements: the agent sets
//! the addresses), a MAC for its own side (`-M`), one `-t`/`-u` per
//! published port (passt then fails if it cannot bind it rather than
//! forwarding a subset), `--no-map-gw` unless the pod may reach the host's
//! loopback (`user:host-loopback`), and `-i lo` when the host has no IPv4 default
//! route (passt otherwise refuses to start: "External interface not
//! usable", as in the testbed, which has no network card). IPv6 (`-a -g`
//! with the fixed IPv6 addresses) only when the host has both default
//! routes ([`HostRoutes::ipv6`]); otherwise `-4`, and the guest gets no IPv6
//! address, so its programs fall back to IPv4 at once.
//!
//! Readiness: with `--fd` passt announces nothing; it has started once its
//! published ports are listening (read from `/proc/net/tcp` and `udp`), or
//! at once when there are none (frames queue in the socket until it reads).
//! If it exits first, its last stderr line (kept in `log`) says why.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    PortSpec, Proto, DNS_FORWARD, GATEWAY, GATEWAY6, GUEST_ADDR, GUEST_ADDR6, GUEST_PREFIX,
};
use crate::devices::virtio::net::MacAddr;

/// The program, found on `PATH` unless `HUSK_PASST` names it.
pub const PASST_ENV: &str = "HUSK_PASST";
/// How long passt may take to bind its ports.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why passt could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// Not installed.
    #[error("user-mode networking (the default) needs passt, which is not installed: apt-get install passt, set ${PASST_ENV}, or use --network none")]
    Missing,
    /// fork/exec or the socket pair failed.
    #[error("cannot start passt: {0}")]
    Spawn(#[source] io::Error),
    /// passt exited during start-up.
    #[error("passt failed to start: {0}")]
    Exited(String),
    /// passt did not bind its ports in time.
    #[error("passt did not bind its ports within {}s", READY_TIMEOUT.as_secs())]
    Timeout,
}

/// A running passt; dropping it stops (SIGTERM) and reaps it.
#[derive(Debug)]
pub struct Passt {
    child: Child,
    /// Whether it carries IPv6 (see [`HostRoutes::ipv6`]): the guest gets
    /// IPv6 addresses only then.
    pub ipv6: bool,
}

impl Passt {
    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Reaps it if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child, which is not reaped yet (so
            // its pid cannot have been reused).
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

/// The program to run: `$HUSK_PASST`, else `passt` on `PATH`, or the
/// `passt.avx2` beside it on a CPU with AVX2: passt started as `passt`
/// re-executes itself as that build there, and starting it directly saves
/// that second `exec` on every pod start.
pub fn find_passt() -> Result<PathBuf, PasstError> {
    if let Some(p) = std::env::var_os(PASST_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PasstError::Missing)
        };
    }
    let passt = super::find_program("passt").ok_or(PasstError::Missing)?;
    let avx2 = passt.with_extension("avx2");
    if std::arch::is_x86_feature_detected!("avx2") && avx2.is_file() {
        return Ok(avx2);
    }
    Ok(passt)
}

/// Which default routes the host has: what passt can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRoutes {
    /// An IPv4 default route (`/proc/net/route`).
    pub v4: bool,
    /// An IPv6 default route that is not a reject route (`/proc/net/ipv6_route`).
    pub v6: bool,
}

impl HostRoutes {
    /// Reads the host's routing tables.
    pub fn read() -> HostRoutes {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        HostRoutes {
            v4: has_default_route4(&read("/proc/net/route")),
            v6: has_default_route6(&read("/proc/net/ipv6_route")),
        }
    }

    /// Whether the pod gets IPv6: passt carries it only from an interface
    /// with an IPv6 default route, and a host without an IPv4 one makes
    /// husk name `lo` as passt's interface (see the module doc), which has
    /// none. A guest with an IPv6 address and no IPv6 behind it would wait
    /// out every AAAA-first connection instead of failing at once.
    pub fn ipv6(self) -> bool {
        self.v4 && self.v6
    }
}

/// Whether `/proc/net/route`'s text has a default route.
fn has_default_route4(table: &str) -> bool {
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
}

/// Whether `/proc/net/ipv6_route`'s text has a usable default route:
/// destination `::/0`, up, not a reject route, not on `lo` (where the
/// kernel keeps its own unreachable default).
fn has_default_route6(table: &str) -> bool {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = f.get(8).and_then(|x| u32::from_str_radix(x, 16).ok());
        f.len() == 10
            && f[0].bytes().all(|b| b == b'0')
            && f[1] == "00"
            && f[9] != "lo"
            && flags.is_some_and(|x| x & RTF_UP != 0 && x & RTF_REJECT == 0)
    })
}

/// The arguments for `ports`, `mac` (passt's own side), passing `fd`, for
/// a host with `routes`; `map_gw`: the gateway address reaches the host's
/// loopback.
pub fn args(
    ports: &[PortSpec],
    mac: MacAddr,
    fd: i32,
    routes: HostRoutes,
    map_gw: bool,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-f",
        "-q",
        "--fd",
        &fd.to_string(),
        "-a",
        &GUEST_ADDR.to_string(),
        "-n",
        &GUEST_PREFIX.to_string(),
        "-g",
        &GATEWAY.to_string(),
        "-M",
        &mac.to_string(),
        "--dns-forward",
        &DNS_FORWARD.to_string(),
        "--no-dhcp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if routes.ipv6() {
        a.extend(["-a", &GUEST_ADDR6.to_string(), "-g", &GATEWAY6.to_string()].map(String::from));
        a.extend(["--no-dhcpv6", "--no-ra"].map(String::from));
    } else {
        a.push("-4".into());
    }
    if !routes.v4 {
        a.extend(["-i".into(), "lo".into()]);
    }
    if !map_gw {
        a.push("--no-map-gw".into());
    }
    for p in ports {
        let flag = match p.proto {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
        };
        let bind = p.host_ip.map(|ip| format!("{ip}/")).unwrap_or_default();
        a.extend([flag.into(), format!("{bind}{}:{}", p.host_port, p.pod_port)]);
    }
    a
}

/// How to start one passt.
#[derive(Debug)]
pub struct PasstOptions<'a> {
    /// Published ports.
    pub ports: &'a [PortSpec],
    /// The pod's MAC; passt's own side uses it with the low bit of its last
    /// byte flipped.
    pub pod_mac: MacAddr,
    /// Where its stderr goes.
    pub log: &'a Path,
    /// Whether the gateway address reaches the host's loopback (`--map-gw`).
    pub map_gw: bool,
    /// The `cgroup.procs` of a cgroup to join before `exec`
    /// ([`super::guard`]), so its sockets are filtered as the pod's.
    pub cgroup: Option<&'a File>,
}

/// Starts passt as `opts` say, and returns it with the VMM's end of the
/// connection.
pub fn start(opts: &PasstOptions) -> Result<(Passt, OwnedFd), PasstError> {
    let (vmm_end, passt_end) = socket_pair()?;
    Ok((spawn(opts, passt_end)?, vmm_end))
}

/// The two ends of a VMM–passt connection: `(VMM's, passt's)`, both
/// close-on-exec. A pod's supervisor gives the VMM its end at the fork and
/// starts passt on the other while the guest boots ([`spawn`]): frames the
/// guest sends before then wait in the socket.
pub fn socket_pair() -> Result<(OwnedFd, OwnedFd), PasstError> {
    let (vmm_end, passt_end) = std::os::unix::net::UnixStream::pair().map_err(PasstError::Spawn)?;
    Ok((OwnedFd::from(vmm_end), OwnedFd::from(passt_end)))
}

/// Starts passt as `opts` say on `passt_end`, the second end of
/// [`socket_pair`], and waits until it is ready.
pub fn spawn(opts: &PasstOptions, passt_end: OwnedFd) -> Result<Passt, PasstError> {
    let PasstOptions {
        ports,
        pod_mac,
        log,
        map_gw,
        cgroup,
    } = *opts;
    let program = find_passt()?;
    let mut host_mac = pod_mac;
    host_mac.0[5] ^= 0x01;
    let fd = passt_end.as_raw_fd();
    let stderr = crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(log)
        .map_err(PasstError::Spawn)?;
    let mut cmd = Command::new(&program);
    let routes = HostRoutes::read();
    cmd.args(args(ports, host_mac, fd, routes, map_gw))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let cgroup_fd = cgroup.map(AsRawFd::as_raw_fd);
    let keep_passt_end = move || {
        // Into the filtered cgroup before any socket exists.
        if let Some(procs) = cgroup_fd {
            // SAFETY: write() of a 1-byte static buffer to a descriptor the child holds.
            if unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        // passt's end must survive exec (the pair is close-on-exec).
        // SAFETY: fcntl with integer arguments on a descriptor the child holds.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // calls write and fcntl, which are async-signal-safe.
    unsafe { cmd.pre_exec(keep_passt_end) };
    let child = cmd.spawn().map_err(PasstError::Spawn)?;
    drop(passt_end);
    let mut passt = Passt {
        child,
        ipv6: routes.ipv6(),
    };
    wait_ready(&mut passt, ports, log)?;
    Ok(passt)
}

/// Waits until every published port is listening, or passt has exited.
fn wait_ready(passt: &mut Passt, ports: &[PortSpec], log: &Path) -> Result<(), PasstError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = passt.try_wait() {
            let why = crate::pod::vm::last_line(log).unwrap_or_else(|| status.to_string());
            return Err(PasstError::Exited(why));
        }
        if ports.iter().all(|p| listening(p.proto, p.host_port)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PasstError::Timeout);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a socket of `proto` is bound to `port` (TCP: listening) in this
/// network namespace.
fn listening(proto: Proto, port: u16) -> bool {
    let (files, state) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], "0A"),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], "07"),
    };
    let want = format!(":{port:04X}");
    files.iter().any(|f| {
        let Ok(mut file) = File::open(f) else {
            return false;
        };
        let mut text = String::new();
        let _ = io::Read::read_to_string(&mut file, &mut text);
        text.lines().skip(1).any(|l| {
            let mut cols = l.split_whitespace();
            let local = cols.nth(1).unwrap_or("");
            let st = cols.nth(1).unwrap_or("");
            local.ends_with(&want) && st == state
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_every_port_and_the_fixed_network() {
        let ports: Vec<PortSpec> = vec![
            "8080:80".parse().unwrap(),
            "127.0.0.1:5353:53/udp".parse().unwrap(),
        ];
        let none = HostRoutes {
            v4: false,
            v6: true,
        };
        let a = args(&ports, MacAddr([2, 0, 0, 0, 0, 1]), 7, none, false).join(" ");
        assert!(a.contains("--no-map-gw"), "{a}");
        assert!(a.contains("--fd 7"), "{a}");
        assert!(a.contains("-a 10.0.2.15 -n 24 -g 10.0.2.2"), "{a}");
        assert!(a.contains("-t 8080:80"), "{a}");
        assert!(a.contains("-u 127.0.0.1/5353:53"), "{a}");
        assert!(a.contains("-i lo") && a.contains("-4"), "{a}");
        let both = HostRoutes { v4: true, v6: true };
        let open = args(&[], MacAddr([2; 6]), 7, both, true).join(" ");
        assert!(!open.contains("-i lo"), "{open}");
        assert!(!open.contains("--no-map-gw"), "{open}");
        assert!(!open.contains("-4"), "{open}");
        assert!(
            open.contains("-a fd00::15 -g fd00::2 --no-dhcpv6 --no-ra"),
            "{open}"
        );
    }

    #[test]
    fn default_routes_are_read_from_the_kernels_tables() {
        let v4 = "Iface\tDestination\tGateway\nhfar0\t00000000\t0200630A\n";
        assert!(has_default_route4(v4));
        assert!(!has_default_route4("Iface\tDestination\nlo\t0000007F\n"));
        let zeros = "00000000000000000000000000000000";
        let via = format!("{zeros} 00 {zeros} 00 fd990000000000000000000000000002 00000400 00000001 00000000 00000003 hfar0\n");
        let reject =
            format!("{zeros} 00 {zeros} 00 {zeros} ffffffff 00000001 00000000 00200200 lo\n");
        let onlink = format!("fd990000000000000000000000000000 40 {zeros} 00 {zeros} 00000100 00000001 00000000 00000001 hfar0\n");
        assert!(has_default_route6(&via));
        assert!(!has_default_route6(&reject));
        assert!(!has_default_route6(&onlink));
    }
}
