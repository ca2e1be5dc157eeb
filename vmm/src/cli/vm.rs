//! `husk vm`: boot a raw VM.
//!
//! The flags become a typed [`VmConfig`], which is checked and prepared
//! (files opened) before any KVM work; errors name the flag at fault. The
//! VMM runs in this process, jailed ([`crate::jail`]) unless `--no-jail`.

use std::path::PathBuf;

use clap::Args;

use super::error_line;
use crate::builder::Jail;
use crate::devices::virtio::net::MacAddr;
use crate::devices::virtio::vsock::DEFAULT_GUEST_CID;
use crate::failure::Failure;
use crate::fs::{ShareError, ShareSpec};
use crate::net::NetworkMode;
use crate::vm_config::{
    ConfigError, ConsoleOutput, DeviceSpec, Field, HostLimits, NetBackendFd, NetSpec, SharedFd,
    VmConfig, VsockSpec, MIB,
};

/// Arguments of `husk vm`.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// Guest kernel: an uncompressed ELF vmlinux or a bzImage (x86_64).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initramfs (newc cpio, optionally compressed if the kernel supports it).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Appended to the default kernel command line
    /// "console=ttyS0 reboot=k panic=-1 pci=off"; " -- " starts init's arguments.
    #[arg(long, value_name = "STR", default_value = "")]
    pub cmdline: String,
    /// Do not start from the default kernel command line: --cmdline is all of it.
    #[arg(long)]
    pub no_default_cmdline: bool,
    /// Guest memory in MiB (at least 64, at most the host's MemTotal).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub mem: u64,
    /// Number of vCPUs (1 to 254, and no more than KVM allows).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    /// Console: "stdio" (output to stdout, input from stdin) or a file to write the output to.
    #[arg(long, value_name = "stdio|PATH", default_value = "stdio")]
    pub console: String,
    /// Print launch → first KVM_RUN time and resident memory to stderr
    /// (also enabled by HUSK_BOOT_TRACE=1).
    #[arg(long)]
    pub boot_trace: bool,
    /// Add a virtio-vsock device whose host side is this Unix socket path:
    /// host clients connect and send "CONNECT <port>\n"; guest connections
    /// to CID 2 port P go to PATH_P.
    #[arg(long, value_name = "PATH")]
    pub vsock: Option<PathBuf>,
    /// The guest's vsock CID (3 to 4294967294).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GUEST_CID, requires = "vsock")]
    pub cid: u64,
    /// Share a host directory over virtio-fs (repeatable):
    /// TAG=HOSTDIR[:ro][:cache=never|auto|always]. The guest mounts it with
    /// "mount -t virtiofs TAG DIR"; :ro refuses every write with EROFS.
    #[arg(long = "share", value_name = "TAG=HOSTDIR[:ro][:cache=MODE]")]
    pub shares: Vec<String>,
    /// Network: "none" (no interface), "user" (a virtio-net interface on
    /// user-mode networking through passt; the guest configures 10.0.2.15/24
    /// via 10.0.2.2 itself) or "tap:NAME" (a virtio-net interface on the
    /// host's TAP device NAME, with offloads; as Firecracker's host_dev_name
    /// and QEMU's `-netdev tap,ifname=`, the device and its addresses are the
    /// caller's to make, e.g. `ip tuntap add NAME mode tap`; root only).
    #[arg(long, value_name = "none|user|tap:NAME", default_value = "none")]
    pub net: String,
    /// Run the VMM without its jail (as root in the host's namespaces,
    /// with every capability): for debugging only.
    #[arg(long)]
    pub no_jail: bool,
    /// Run the VMM's threads without their seccomp filters (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
}

impl VmArgs {
    /// The typed configuration these flags describe. Only `--share`
    /// strings are parsed here; everything else is checked by
    /// [`VmConfig::check`].
    pub fn to_config(&self) -> Result<VmConfig, ShareError> {
        let mut devices = Vec::new();
        if let Some(uds) = &self.vsock {
            devices.push(DeviceSpec::Vsock(VsockSpec {
                cid: self.cid,
                uds: uds.clone(),
            }));
        }
        let shares = ShareSpec::parse_all(&self.shares)?;
        devices.extend(shares.into_iter().map(DeviceSpec::Fs));
        let console = match self.console.as_str() {
            "stdio" | "-" => ConsoleOutput::Stdio,
            path => ConsoleOutput::File(PathBuf::from(path)),
        };
        Ok(VmConfig {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline_extra: self.cmdline.clone(),
            default_cmdline: !self.no_default_cmdline,
            mem_bytes: self.mem.saturating_mul(MIB),
            vcpus: self.vcpus,
            console,
            boot_trace: self.boot_trace || crate::trace::enabled(),
            seccomp: !self.no_seccomp,
            devices,
        })
    }
}

/// The `husk vm` flag that sets `field`.
fn flag(field: Field) -> &'static str {
    match field {
        Field::Kernel => "--kernel",
        Field::Initrd => "--initrd",
        Field::Cmdline => "--cmdline",
        Field::Memory => "--mem",
        Field::Vcpus => "--vcpus",
        Field::Console => "--console",
        Field::VsockCid => "--cid",
        Field::VsockPath => "--vsock",
        Field::Share => "--share",
        Field::Net => "--net",
    }
}

/// `err` in one line, led by the flag at fault unless it names itself.
fn describe(err: &ConfigError) -> String {
    if err.names_itself() {
        error_line(err)
    } else {
        format!("{} {}", flag(err.field()), error_line(err))
    }
}

/// Starts passt for `--net user` and adds the interface to `config`.
/// passt is left to itself: it quits once the VMM's end of the socket
/// closes (passt's `--fd` implies `--one-off`), and the jailed VMM could
/// not signal or reap it.
fn add_user_net(config: &mut VmConfig) -> Result<(), String> {
    let mac = MacAddr::from_seed(format!("vm-{}", std::process::id()).as_bytes());
    let log = std::env::temp_dir().join(format!("husk-vm-passt-{}.log", std::process::id()));
    // `husk vm` is the developer's tool: its guest reaches the host's
    // loopback at the gateway (pods do only with user:host-loopback).
    let (passt, socket) = crate::net::passt::start(&crate::net::passt::PasstOptions {
        ports: &[],
        pod_mac: mac,
        log: &log,
        map_gw: true,
        cgroup: None,
    })
    .map_err(|e| error_line(&e))?;
    std::mem::forget(passt);
    config.devices.push(DeviceSpec::Net(NetSpec {
        mac,
        mtu: crate::net::MTU,
        backend: NetBackendFd::Stream(SharedFd(std::sync::Arc::new(socket))),
    }));
    Ok(())
}

/// `husk vm --net`: what the VM's interface is connected to.
#[derive(Debug, PartialEq, Eq)]
enum VmNet {
    None,
    User,
    /// The host's TAP device of this name.
    Tap(String),
}

impl VmNet {
    fn parse(s: &str) -> Result<VmNet, String> {
        if let Some(name) = s.strip_prefix("tap:") {
            // IFNAMSIZ is 16 with the NUL; the kernel refuses '/', ':' and
            // whitespace in interface names.
            let bad = |c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control();
            if name.is_empty()
                || name.len() > 15
                || name.contains(bad)
                || name == "."
                || name == ".."
            {
                return Err(format!(
                    "{s:?}: tap:NAME needs an interface name of 1 to 15 bytes"
                ));
            }
            return Ok(VmNet::Tap(name.to_owned()));
        }
        match s.parse::<NetworkMode>() {
            Ok(NetworkMode::None) => Ok(VmNet::None),
            Ok(NetworkMode::User) => Ok(VmNet::User),
            _ => Err(format!("{s:?}: use none, user or tap:NAME")),
        }
    }
}

/// Opens the host's TAP device `name` and adds the interface to `config`.
fn add_tap_net(config: &mut VmConfig, name: &str) -> Result<(), String> {
    let fd = crate::net::tap::attach::open_tap(name).map_err(|e| e.to_string())?;
    let mac = MacAddr::from_seed(format!("vm-tap-{name}").as_bytes());
    config.devices.push(DeviceSpec::Net(NetSpec {
        mac,
        mtu: crate::net::tap::MTU,
        backend: NetBackendFd::Tap(SharedFd(std::sync::Arc::new(fd))),
    }));
    Ok(())
}

/// Runs `husk vm`; returns the exit status.
pub fn run(args: VmArgs) -> i32 {
    crate::trace::phase("arguments-parsed");
    let net = match VmNet::parse(&args.net) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("husk: --net {e}");
            return Failure::Usage.exit_status();
        }
    };
    let mut config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("husk: {}", describe(&ConfigError::from(e)));
            return Failure::Usage.exit_status();
        }
    };
    let host = HostLimits::of_host();
    if let Err(e) = config.check(&host) {
        eprintln!("husk: {}", describe(&e));
        return Failure::Usage.exit_status();
    }
    let added = match &net {
        VmNet::None => Ok(()),
        VmNet::User => add_user_net(&mut config),
        VmNet::Tap(name) => add_tap_net(&mut config, name),
    };
    if let Err(e) = added {
        eprintln!("husk: --net {}: {e}", args.net);
        return Failure::Runtime.exit_status();
    }
    let prepared = config.prepare(&host);
    let jail = if args.no_jail {
        super::warn_no_jail();
        Jail::Off
    } else {
        Jail::On(None)
    };
    match prepared {
        Ok(vm) => crate::builder::run_to_status(vm, jail),
        Err(e) => {
            eprintln!("husk: {}", describe(&e));
            Failure::Usage.exit_status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> VmArgs {
        VmArgs {
            kernel: "k".into(),
            initrd: None,
            cmdline: String::new(),
            no_default_cmdline: false,
            mem: 256,
            vcpus: 1,
            console: "stdio".into(),
            boot_trace: false,
            vsock: None,
            cid: DEFAULT_GUEST_CID,
            shares: Vec::new(),
            net: "none".into(),
            no_jail: false,
            no_seccomp: false,
        }
    }

    const HOST: HostLimits = HostLimits {
        mem_bytes: Some(1024 * MIB),
        max_vcpus: None,
    };

    fn refused(a: &VmArgs) -> String {
        describe(&a.to_config().unwrap().check(&HOST).unwrap_err())
    }

    #[test]
    fn flags_become_one_typed_config() {
        let mut a = args();
        a.vsock = Some("/run/v.sock".into());
        a.shares = vec!["data=/srv:ro".into(), "vol0=/x".into()];
        a.console = "/tmp/x.log".into();
        let second = ShareSpec::parse("vol0=/x").unwrap();
        let c = a.to_config().unwrap();
        assert_eq!(c.mem_bytes, 256 * MIB);
        assert_eq!(c.console, ConsoleOutput::File("/tmp/x.log".into()));
        assert!(c.default_cmdline);
        assert_eq!(c.devices.len(), 3);
        assert!(matches!(&c.devices[0], DeviceSpec::Vsock(v) if v.cid == DEFAULT_GUEST_CID));
        assert!(matches!(&c.devices[1], DeviceSpec::Fs(s) if s.tag == "data" && s.read_only));
        assert_eq!(c.devices[2], DeviceSpec::Fs(second));
        c.check(&HOST).unwrap();
    }

    #[test]
    fn errors_name_husk_vm_flags() {
        let mut a = args();
        a.mem = 63;
        assert_eq!(
            refused(&a),
            "--mem 63 MiB is too small: a guest needs at least 64 MiB"
        );
        a.mem = 4096;
        assert_eq!(
            refused(&a),
            "--mem 4096 MiB is more than this host's 1024 MiB of memory"
        );
        let mut a = args();
        a.vcpus = 0;
        assert_eq!(refused(&a), "--vcpus must be at least 1");
        a.vcpus = 255;
        assert!(refused(&a).starts_with("--vcpus 255 is more than the 254"));
        let mut a = args();
        a.console = String::new();
        assert_eq!(refused(&a), "--console needs \"stdio\" or a file path");
        let mut a = args();
        a.vsock = Some("/tmp/v.sock".into());
        for cid in [0, 1, 2, u64::from(u32::MAX)] {
            a.cid = cid;
            assert!(refused(&a).starts_with(&format!("--cid {cid} is reserved")));
        }
    }

    #[test]
    fn a_huge_memory_flag_does_not_overflow() {
        let mut a = args();
        a.mem = u64::MAX;
        assert!(refused(&a).contains("more than this host's"));
    }

    #[test]
    fn host_memory_is_read() {
        assert!(crate::vm_config::host_mem_bytes().unwrap() > 0);
    }

    #[test]
    fn net_values_are_parsed_or_refused_in_one_line() {
        assert_eq!(VmNet::parse("none"), Ok(VmNet::None));
        assert_eq!(VmNet::parse("user"), Ok(VmNet::User));
        assert_eq!(VmNet::parse("tap:hb0"), Ok(VmNet::Tap("hb0".into())));
        for bad in [
            "tap",
            "tap:",
            "tap:a/b",
            "tap:a b",
            "tap:0123456789abcdef",
            "bridge",
        ] {
            let e = VmNet::parse(bad).unwrap_err();
            assert!(!e.contains('\n') && e.contains(bad), "{bad}: {e}");
        }
    }
}
