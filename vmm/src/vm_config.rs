//! One typed description of a VM, checked before anything is forked.
//!
//! `husk vm`'s flags and a pod's configuration both produce a [`VmConfig`];
//! [`VmConfig::prepare`] checks it against this host and opens every file
//! the VM needs (kernel, initramfs, console, share roots), so that
//! - bad input is refused before a VMM process exists, in one line that the
//!   caller words in its own terms ([`ConfigError::field`] says which of the
//!   caller's flags or settings is wrong);
//! - the VMM works from open descriptors only, never from a path it
//!   resolves again later (a share root swapped for a symlink after the
//!   check cannot move the share: F1), which is also what a VMM confined to
//!   an empty root needs;
//! - the builder ([`crate::builder`]) is the only place that turns the
//!   typed device list into devices.
//!
//! Memory travels in bytes, in one field, from the user's size to the
//! guest memory map.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;

use crate::boot::cmdline::{self, CmdlineError};
use crate::boot::layout;
use crate::boot::loader::{self, KernelProbe, LoaderError};
use crate::boot::mptable::MAX_CPUS;
use crate::fs::{OpenShare, ShareError, ShareSpec};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Smallest guest: a minimal kernel is loaded at 16 MiB and needs its image,
/// bss and early allocations above that, plus the initramfs and its unpacked
/// copy; below 64 MiB real guests fail in confusing ways.
pub const MIN_MEM_BYTES: u64 = 64 * MIB;

/// Where the guest's console output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// The VMM's stdout (and console input from its stdin).
    Stdio,
    /// A file, created or truncated (no console input).
    File(PathBuf),
    /// A descriptor already open for writing (no console input): a pod's
    /// console pipe, which its supervisor copies into the rotated, rate-limited
    /// `console.log` ([`crate::pod::logs::console`]).
    Fd(ConsoleFd),
}

/// An open console descriptor, shared so that a configuration stays cheap
/// to clone; equal only to itself.
#[derive(Debug, Clone)]
pub struct ConsoleFd(pub std::sync::Arc<std::os::fd::OwnedFd>);

impl PartialEq for ConsoleFd {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConsoleFd {}

/// A virtio-vsock device bridged to Unix sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockSpec {
    /// The guest's context id (3 to 2^32 - 2).
    pub cid: u64,
    /// Host clients connect here; guest connections to port P go to `<uds>_P`.
    pub uds: PathBuf,
}

/// An open descriptor a device's backend uses, shared so that a
/// configuration stays cheap to clone; equal only to itself.
#[derive(Debug, Clone)]
pub struct SharedFd(pub std::sync::Arc<std::os::fd::OwnedFd>);

impl PartialEq for SharedFd {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedFd {}

/// Where a virtio-net device's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackendFd {
    /// A connected stream socket in qemu's stream framing (passt).
    Stream(SharedFd),
    /// A TAP device opened with `IFF_VNET_HDR` and a 12-byte header
    /// ([`crate::net::tap`]).
    Tap(SharedFd),
}

impl NetBackendFd {
    /// The descriptor, whichever backend it is.
    pub fn fd(&self) -> &SharedFd {
        match self {
            NetBackendFd::Stream(fd) | NetBackendFd::Tap(fd) => fd,
        }
    }
}

/// A virtio-net device. Its backend is already connected when the
/// configuration is made (passt's end of a socket pair, see
/// [`crate::net::passt`], or a TAP device, see [`crate::net::tap`]): the VMM
/// opens nothing for it, which is what its
/// jail, with an empty network namespace and root, allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The guest's MAC address.
    pub mac: crate::devices::virtio::net::MacAddr,
    /// The MTU offered to the guest.
    pub mtu: u16,
    /// The backend.
    pub backend: NetBackendFd,
}

/// A device of the VM, in the order the builder places them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// virtio-vsock.
    Vsock(VsockSpec),
    /// virtio-fs serving a host directory.
    Fs(ShareSpec),
    /// virtio-net.
    Net(NetSpec),
}

/// Everything a VM is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image (ELF vmlinux or bzImage).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Added after the default command line (or all of it, see below).
    pub cmdline_extra: String,
    /// Start from [`cmdline::DEFAULT_CMDLINE`].
    pub default_cmdline: bool,
    /// Guest RAM in bytes, a whole number of MiB.
    pub mem_bytes: u64,
    /// vCPU count.
    pub vcpus: u32,
    /// Console destination.
    pub console: ConsoleOutput,
    /// Print the boot trace line before the first KVM_RUN.
    pub boot_trace: bool,
    /// Run each VMM thread under its seccomp filter (off: `--no-seccomp`).
    pub seccomp: bool,
    /// Devices, in slot order.
    pub devices: Vec<DeviceSpec>,
}

/// What of this host a configuration is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostLimits {
    /// MemTotal in bytes, when known.
    pub mem_bytes: Option<u64>,
    /// KVM's vCPU limit, when /dev/kvm could be asked.
    pub max_vcpus: Option<usize>,
}

impl HostLimits {
    /// Reads /proc/meminfo and asks KVM (a missing /dev/kvm leaves the
    /// vCPU limit unknown: building the VM reports that more clearly).
    pub fn of_host() -> HostLimits {
        HostLimits {
            mem_bytes: host_mem_bytes(),
            max_vcpus: crate::vstate::probe::max_vcpus(),
        }
    }

    /// This host's limits, with KVM's from a probe already made.
    pub fn with_kvm(kvm: &crate::vstate::probe::KvmProbe) -> HostLimits {
        HostLimits {
            mem_bytes: host_mem_bytes(),
            max_vcpus: Some(kvm.max_vcpus),
        }
    }
}

/// The host's MemTotal in bytes.
pub fn host_mem_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Which part of a [`VmConfig`] an error is about, so the caller can name
/// its own flag or setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `kernel`.
    Kernel,
    /// `initrd`.
    Initrd,
    /// `cmdline_extra`.
    Cmdline,
    /// `mem_bytes`.
    Memory,
    /// `vcpus`.
    Vcpus,
    /// `console`.
    Console,
    /// A vsock device's cid.
    VsockCid,
    /// A vsock device's socket path.
    VsockPath,
    /// A share.
    Share,
    /// The network device.
    Net,
}

/// Why a configuration cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Too little memory.
    #[error("{} MiB is too small: a guest needs at least {} MiB", .0 / MIB, MIN_MEM_BYTES / MIB)]
    MemTooSmall(u64),
    /// More memory than the host has.
    #[error("{} MiB is more than this host's {} MiB of memory", .requested / MIB, .host / MIB)]
    MemTooLarge {
        /// Asked for, bytes.
        requested: u64,
        /// The host's MemTotal, bytes.
        host: u64,
    },
    /// Not a whole number of MiB.
    #[error("{0} bytes is not a whole number of MiB")]
    MemUnaligned(u64),
    /// Zero vCPUs.
    #[error("must be at least 1")]
    NoVcpus,
    /// Over the VMM's or KVM's limit.
    #[error("{requested} is more than the {max} vCPUs {by} allows")]
    TooManyVcpus {
        /// Asked for.
        requested: u32,
        /// The limit.
        max: usize,
        /// "husk" or "KVM here".
        by: &'static str,
    },
    /// Empty console path.
    #[error("needs \"stdio\" or a file path")]
    EmptyConsole,
    /// The console file cannot be opened.
    #[error("cannot open console output {path}: {source}")]
    ConsoleOpen {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reserved or out-of-range vsock CID.
    #[error("{0} is reserved or out of range: use 3 to 4294967294")]
    InvalidCid(u64),
    /// Two vsock devices.
    #[error("only one vsock device per VM")]
    TwoVsocks,
    /// Two net devices.
    #[error("only one network interface per VM")]
    TwoNets,
    /// The vsock socket's directory does not exist.
    #[error("the directory of {0} does not exist")]
    VsockDir(String),
    /// Kernel or initramfs unusable.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Command line too long or malformed.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// A share is malformed or its directory unusable.
    #[error(transparent)]
    Share(#[from] ShareError),
}

impl ConfigError {
    /// The part of the configuration at fault.
    pub fn field(&self) -> Field {
        match self {
            ConfigError::MemTooSmall(_)
            | ConfigError::MemTooLarge { .. }
            | ConfigError::MemUnaligned(_) => Field::Memory,
            ConfigError::NoVcpus | ConfigError::TooManyVcpus { .. } => Field::Vcpus,
            ConfigError::EmptyConsole | ConfigError::ConsoleOpen { .. } => Field::Console,
            ConfigError::InvalidCid(_) | ConfigError::TwoVsocks => Field::VsockCid,
            ConfigError::VsockDir(_) => Field::VsockPath,
            ConfigError::Loader(LoaderError::InitrdRead { .. }) => Field::Initrd,
            ConfigError::Loader(_) => Field::Kernel,
            ConfigError::Cmdline(_) => Field::Cmdline,
            ConfigError::Share(_) => Field::Share,
            ConfigError::TwoNets => Field::Net,
        }
    }

    /// Whether the message already says what it is about (loader, command
    /// line and share errors name the file or share), so a caller need not
    /// put its flag name in front.
    pub fn names_itself(&self) -> bool {
        matches!(
            self,
            ConfigError::Loader(_)
                | ConfigError::Cmdline(_)
                | ConfigError::Share(_)
                | ConfigError::ConsoleOpen { .. }
                | ConfigError::VsockDir(_)
        )
    }
}

/// A device whose host side is open.
#[derive(Debug)]
pub enum PreparedDevice {
    /// vsock: the socket is bound by the VMM itself (it is removed when the
    /// VMM ends, so the process that checked the config must not own it);
    /// its path made absolute.
    Vsock(VsockSpec),
    /// virtio-fs with its root held.
    Fs(OpenShare),
    /// virtio-net with its backend's socket.
    Net(NetSpec),
}

/// A checked configuration with every file it needs open: what the VMM
/// process runs ([`crate::builder::run`]).
#[derive(Debug)]
pub struct PreparedVm {
    /// The configuration.
    pub config: VmConfig,
    /// The kernel, open and its format known.
    pub kernel: KernelProbe,
    /// The initramfs, open, and its size.
    pub initrd: Option<(File, u64)>,
    /// The console file, if not stdio.
    pub console: Option<File>,
    /// The kernel command line, without the devices (the builder adds them).
    pub cmdline: Cmdline,
    /// Command line capacity of this kernel (bytes, with the NUL).
    pub cmdline_capacity: usize,
    /// Devices in slot order.
    pub devices: Vec<PreparedDevice>,
}

impl VmConfig {
    /// Checks what needs no file access against `host`.
    pub fn check(&self, host: &HostLimits) -> Result<(), ConfigError> {
        if self.mem_bytes < MIN_MEM_BYTES {
            return Err(ConfigError::MemTooSmall(self.mem_bytes));
        }
        if let Some(h) = host.mem_bytes.filter(|h| self.mem_bytes > *h) {
            return Err(ConfigError::MemTooLarge {
                requested: self.mem_bytes,
                host: h,
            });
        }
        if self.mem_bytes % MIB != 0 {
            return Err(ConfigError::MemUnaligned(self.mem_bytes));
        }
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus > u32::from(MAX_CPUS) {
            return Err(ConfigError::TooManyVcpus {
                requested: self.vcpus,
                max: usize::from(MAX_CPUS),
                by: "husk",
            });
        }
        if let Some(max) = host.max_vcpus.filter(|m| self.vcpus as usize > *m) {
            return Err(ConfigError::TooManyVcpus {
                requested: self.vcpus,
                max,
                by: "KVM here",
            });
        }
        if self.console == ConsoleOutput::File(PathBuf::new()) {
            return Err(ConfigError::EmptyConsole);
        }
        if self
            .devices
            .iter()
            .filter(|d| matches!(d, DeviceSpec::Net(_)))
            .count()
            > 1
        {
            return Err(ConfigError::TwoNets);
        }
        let mut vsocks = self.devices.iter().filter_map(|d| match d {
            DeviceSpec::Vsock(v) => Some(v),
            DeviceSpec::Fs(_) | DeviceSpec::Net(_) => None,
        });
        if let Some(v) = vsocks.next() {
            if vsocks.next().is_some() {
                return Err(ConfigError::TwoVsocks);
            }
            if v.cid < 3 || v.cid >= u64::from(u32::MAX) {
                return Err(ConfigError::InvalidCid(v.cid));
            }
        }
        ShareSpec::check_tags(self.devices.iter().filter_map(|d| match d {
            DeviceSpec::Fs(s) => Some(s),
            DeviceSpec::Vsock(_) | DeviceSpec::Net(_) => None,
        }))?;
        Ok(())
    }

    /// Checks everything and opens what the VM needs, in this order (the
    /// first problem is the one reported): each share's root (see
    /// [`ShareSpec::open`]), the kernel (format and command line capacity),
    /// the initramfs, the console file. Nothing of the VM exists yet.
    pub fn prepare(self, host: &HostLimits) -> Result<PreparedVm, ConfigError> {
        self.check(host)?;
        let mut devices = Vec::with_capacity(self.devices.len());
        for device in &self.devices {
            devices.push(match device {
                DeviceSpec::Vsock(v) => {
                    let dir = v.uds.parent().filter(|d| !d.as_os_str().is_empty());
                    if dir.is_some_and(|d| !d.is_dir()) {
                        return Err(ConfigError::VsockDir(v.uds.display().to_string()));
                    }
                    // Absolute, so that the path means the same inside the VMM's jail,
                    // whose working directory is its root.
                    let uds = std::path::absolute(&v.uds)
                        .map_err(|_| ConfigError::VsockDir(v.uds.display().to_string()))?;
                    PreparedDevice::Vsock(VsockSpec { cid: v.cid, uds })
                }
                DeviceSpec::Fs(s) => PreparedDevice::Fs(s.clone().open()?),
                DeviceSpec::Net(n) => PreparedDevice::Net(n.clone()),
            });
        }
        let kernel = loader::probe_kernel(&self.kernel)?;
        let initrd = self
            .initrd
            .as_deref()
            .map(loader::open_initrd)
            .transpose()?;
        let cmdline_capacity = kernel.cmdline_capacity.min(layout::CMDLINE_MAX_SIZE);
        let cmdline = cmdline::build(cmdline_capacity, self.default_cmdline, &self.cmdline_extra)?;
        let console = match &self.console {
            ConsoleOutput::Stdio => None,
            ConsoleOutput::File(path) => Some(open_console(path)?),
            ConsoleOutput::Fd(fd) => Some(File::from(fd.0.try_clone().map_err(|source| {
                ConfigError::ConsoleOpen {
                    path: "(console pipe)".into(),
                    source,
                }
            })?)),
        };
        Ok(PreparedVm {
            config: self,
            kernel,
            initrd,
            console,
            cmdline,
            cmdline_capacity,
            devices,
        })
    }
}

impl PreparedVm {
    /// The kernel command line the guest will get: [`Self::cmdline`] with
    /// a virtio-mmio declaration per device, in slot order, as the builder
    /// adds them ([`crate::builder::VmBuilder::add_virtio_mmio_device`]).
    pub fn guest_cmdline(&self) -> Result<String, CmdlineError> {
        let mut c = self.cmdline.clone();
        for i in 0..self.devices.len() {
            let gsi = layout::VIRTIO_IRQS.get(i).copied().unwrap_or(0);
            cmdline::add_virtio_mmio(
                &mut c,
                self.cmdline_capacity,
                layout::virtio_mmio_addr(i as u32),
                layout::VIRTIO_MMIO_SLOT_SIZE,
                gsi,
            )?;
        }
        Ok(cmdline::to_string(&c))
    }
}

/// Creates or truncates the console file, private to its user.
fn open_console(path: &Path) -> Result<File, ConfigError> {
    crate::private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| ConfigError::ConsoleOpen {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::CacheMode;

    fn config() -> VmConfig {
        VmConfig {
            kernel: "k".into(),
            initrd: None,
            cmdline_extra: String::new(),
            default_cmdline: true,
            mem_bytes: 256 * MIB,
            vcpus: 1,
            console: ConsoleOutput::Stdio,
            boot_trace: false,
            seccomp: true,
            devices: Vec::new(),
        }
    }

    const HOST: HostLimits = HostLimits {
        mem_bytes: Some(1024 * MIB),
        max_vcpus: Some(8),
    };

    fn share(tag: &str) -> DeviceSpec {
        DeviceSpec::Fs(ShareSpec {
            tag: tag.into(),
            host_dir: "/".into(),
            read_only: true,
            cache: CacheMode::Auto,
        })
    }

    #[test]
    fn accepts_defaults() {
        config().check(&HOST).unwrap();
        config().check(&HostLimits::default()).unwrap();
    }

    #[test]
    fn memory_is_checked_in_bytes_against_the_host() {
        let mut c = config();
        c.mem_bytes = 32 * MIB;
        let e = c.check(&HOST).unwrap_err();
        assert_eq!(e.field(), Field::Memory);
        assert_eq!(
            e.to_string(),
            "32 MiB is too small: a guest needs at least 64 MiB"
        );
        c.mem_bytes = 2048 * MIB;
        assert!(matches!(
            c.check(&HOST),
            Err(ConfigError::MemTooLarge { .. })
        ));
        c.mem_bytes = 100 * MIB + 1;
        assert!(matches!(c.check(&HOST), Err(ConfigError::MemUnaligned(_))));
    }

    #[test]
    fn vcpus_against_husk_and_kvm() {
        let mut c = config();
        c.vcpus = 0;
        assert_eq!(c.check(&HOST).unwrap_err().field(), Field::Vcpus);
        c.vcpus = 255;
        assert!(c
            .check(&HostLimits::default())
            .unwrap_err()
            .to_string()
            .contains("254"));
        c.vcpus = 9;
        let e = c.check(&HOST).unwrap_err().to_string();
        assert_eq!(e, "9 is more than the 8 vCPUs KVM here allows");
    }

    #[test]
    fn devices_are_checked() {
        let mut c = config();
        c.devices = vec![share("a"), share("a")];
        assert_eq!(c.check(&HOST).unwrap_err().field(), Field::Share);
        let vsock = |cid| {
            DeviceSpec::Vsock(VsockSpec {
                cid,
                uds: "/tmp/v.sock".into(),
            })
        };
        c.devices = vec![vsock(2)];
        assert_eq!(c.check(&HOST).unwrap_err().field(), Field::VsockCid);
        c.devices = vec![vsock(3), vsock(4)];
        assert!(matches!(c.check(&HOST), Err(ConfigError::TwoVsocks)));
        c.devices = vec![vsock(3), share("a"), share("b")];
        c.check(&HOST).unwrap();
    }

    #[test]
    fn prepare_opens_nothing_for_a_missing_kernel() {
        let mut c = config();
        c.kernel = "/nonexistent/vmlinux".into();
        let e = c.prepare(&HOST).unwrap_err();
        assert_eq!(e.field(), Field::Kernel);
        assert!(e.names_itself());
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }
}
