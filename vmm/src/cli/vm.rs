//! `husk vm`: boot a raw VM.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Args;

use super::{print_error, EXIT_RUNTIME, EXIT_USAGE};
use crate::boot::cmdline::DEFAULT_CMDLINE;
use crate::boot::mptable::MAX_CPUS;
use crate::builder::{BuildError, ConsoleOutput, VirtioMmioSlot, VmBuilder, VmConfig};
use crate::devices::virtio::fs::VirtioFs;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::vsock::unix::MuxerError;
use crate::devices::virtio::vsock::{Vsock, VsockMuxer, DEFAULT_GUEST_CID};
use crate::fs::{share_budgets, FdBudget, OpenShare, ShareError, ShareServer, ShareSpec};

/// Smallest guest: a minimal kernel is loaded at 16 MiB and needs its image,
/// bss and early allocations above that, plus the initramfs and its unpacked
/// copy; below 64 MiB real guests fail in confusing ways.
pub const MIN_MEM_MIB: u64 = 64;

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
    /// "console=ttyS0 reboot=k panic=-1"; " -- " starts init's arguments.
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
}

/// Reasons `husk vm` refuses its arguments before touching KVM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmArgsError {
    /// Too little memory.
    #[error("--mem {0} MiB is too small: a guest needs at least {MIN_MEM_MIB} MiB")]
    MemTooSmall(u64),
    /// More memory than the host has.
    #[error("--mem {requested} MiB is more than this host's {host} MiB of memory")]
    MemTooLarge {
        /// Asked for.
        requested: u64,
        /// The host's MemTotal.
        host: u64,
    },
    /// Zero vCPUs.
    #[error("--vcpus must be at least 1")]
    NoVcpus,
    /// Over the VMM's limit.
    #[error("--vcpus {0} is more than the {MAX_CPUS} vCPUs husk supports")]
    TooManyVcpus(u32),
    /// Empty console path.
    #[error("--console needs \"stdio\" or a file path")]
    EmptyConsole,
    /// Reserved or out-of-range vsock CID.
    #[error("--cid {0} is reserved or out of range: use 3 to 4294967294")]
    InvalidCid(u64),
}

/// The host's MemTotal in MiB.
pub fn host_mem_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Checks the arguments that need no file access or KVM.
pub fn validate(args: &VmArgs, host_mem_mib: Option<u64>) -> Result<VmConfig, VmArgsError> {
    if args.mem < MIN_MEM_MIB {
        return Err(VmArgsError::MemTooSmall(args.mem));
    }
    if let Some(host) = host_mem_mib.filter(|h| args.mem > *h) {
        return Err(VmArgsError::MemTooLarge {
            requested: args.mem,
            host,
        });
    }
    if args.vcpus == 0 {
        return Err(VmArgsError::NoVcpus);
    }
    if args.vcpus > u32::from(MAX_CPUS) {
        return Err(VmArgsError::TooManyVcpus(args.vcpus));
    }
    if args.cid < 3 || args.cid >= u64::from(u32::MAX) {
        return Err(VmArgsError::InvalidCid(args.cid));
    }
    let console = match args.console.as_str() {
        "" => return Err(VmArgsError::EmptyConsole),
        "stdio" | "-" => ConsoleOutput::Stdio,
        path => ConsoleOutput::File(PathBuf::from(path)),
    };
    Ok(VmConfig {
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        cmdline_extra: args.cmdline.clone(),
        default_cmdline: !args.no_default_cmdline,
        mem_mib: args.mem,
        vcpus: args.vcpus,
        console,
        boot_trace: args.boot_trace || crate::trace::enabled(),
    })
}

/// Runs `husk vm`; returns the exit status.
pub fn run(args: VmArgs) -> i32 {
    run_with_shares(args, Vec::new())
}

/// Runs `husk vm` with `shares` added to those of `--share`: the pod code's entry, which hands
/// its shares over as typed data so that no host path is re-parsed as a flag (F12).
pub fn run_with_shares(args: VmArgs, shares: Vec<ShareSpec>) -> i32 {
    let config = match validate(&args, host_mem_mib()) {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            return EXIT_USAGE;
        }
    };
    let shares = match open_shares(&args.shares, shares) {
        Ok(s) => s,
        Err(e) => {
            print_error(&e);
            return EXIT_USAGE;
        }
    };
    let mut builder = match VmBuilder::new(config) {
        Ok(b) => b,
        Err(e) => {
            print_error(&e);
            return if e.is_bad_input() {
                EXIT_USAGE
            } else {
                EXIT_RUNTIME
            };
        }
    };
    if let Some(path) = &args.vsock {
        if let Err(e) = add_vsock(&mut builder, path, args.cid) {
            print_error(e.as_ref());
            return if e.is::<MuxerError>() {
                EXIT_USAGE
            } else {
                EXIT_RUNTIME
            };
        }
    }
    let budgets = share_budgets(shares.len());
    for (share, budget) in shares.into_iter().zip(budgets) {
        if let Err(e) = add_share(&mut builder, share, budget) {
            print_error(e.as_ref());
            let no_slot = matches!(e.downcast_ref(), Some(BuildError::NoVirtioSlot(_)));
            return if no_slot { EXIT_USAGE } else { EXIT_RUNTIME };
        }
    }
    log::debug!(
        "kernel command line: {} (defaults: {DEFAULT_CMDLINE})",
        builder.cmdline()
    );
    let vm = match builder.start() {
        Ok(vm) => vm,
        Err(e) => {
            print_error(&e);
            return if e.is_bad_input() {
                EXIT_USAGE
            } else {
                EXIT_RUNTIME
            };
        }
    };
    let reason = vm.wait();
    eprintln!("husk: {}", reason.message());
    reason.exit_code()
}

/// Adds the vsock device, bridged to Unix sockets at `path`, in the next
/// virtio-mmio slot, with its event handler on the VMM thread's loop.
fn add_vsock(builder: &mut VmBuilder, path: &Path, cid: u64) -> anyhow::Result<VirtioMmioSlot> {
    let muxer = VsockMuxer::new(cid, path)?;
    let vsock = Arc::new(Mutex::new(Vsock::new(cid, muxer)?));
    let wiring =
        MmioTransport::new(builder.guest_memory().clone(), vsock.clone())?.into_wiring()?;
    let slot = builder.add_virtio_mmio_device(wiring.device, &wiring.queue_evts, &wiring.irq)?;
    builder.add_subscriber(vsock);
    Ok(slot)
}

/// Parses every `--share`, adds the typed `extra` shares, and opens each root
/// once, before any KVM work (and so before the guest runs), so bad input
/// (malformed or duplicate tag, missing directory, a symlink in the path)
/// fails first and the directories checked are the ones served.
fn open_shares(args: &[String], extra: Vec<ShareSpec>) -> Result<Vec<OpenShare>, ShareError> {
    let mut specs = ShareSpec::parse_all(args)?;
    specs.extend(extra);
    ShareSpec::open_all(specs)
}

/// Adds one virtio-fs device serving `share` in the next virtio-mmio slot. Its
/// requests are served on the device's own thread, not on the event loop.
fn add_share(
    builder: &mut VmBuilder,
    share: OpenShare,
    budget: FdBudget,
) -> anyhow::Result<VirtioMmioSlot> {
    let server = ShareServer::new(share, budget)?;
    let fs = Arc::new(Mutex::new(VirtioFs::new(server)?));
    let wiring = MmioTransport::new(builder.guest_memory().clone(), fs)?.into_wiring()?;
    Ok(builder.add_virtio_mmio_device(wiring.device, &wiring.queue_evts, &wiring.irq)?)
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
        }
    }

    #[test]
    fn accepts_defaults() {
        let c = validate(&args(), Some(1024)).unwrap();
        assert_eq!((c.mem_mib, c.vcpus, c.default_cmdline), (256, 1, true));
        assert_eq!(c.console, ConsoleOutput::Stdio);
    }

    #[test]
    fn refuses_bad_numbers() {
        let mut a = args();
        a.mem = 63;
        assert_eq!(
            validate(&a, None).unwrap_err(),
            VmArgsError::MemTooSmall(63)
        );
        a.mem = 2048;
        assert!(matches!(
            validate(&a, Some(1024)),
            Err(VmArgsError::MemTooLarge { .. })
        ));
        let mut a = args();
        a.vcpus = 0;
        assert_eq!(validate(&a, None).unwrap_err(), VmArgsError::NoVcpus);
        a.vcpus = 255;
        assert_eq!(
            validate(&a, None).unwrap_err(),
            VmArgsError::TooManyVcpus(255)
        );
    }

    #[test]
    fn console_file() {
        let mut a = args();
        a.console = "/tmp/x.log".into();
        assert_eq!(
            validate(&a, None).unwrap().console,
            ConsoleOutput::File("/tmp/x.log".into())
        );
        a.console = String::new();
        assert_eq!(validate(&a, None).unwrap_err(), VmArgsError::EmptyConsole);
    }

    #[test]
    fn vsock_cid_range() {
        let mut a = args();
        for cid in [0, 1, 2, u64::from(u32::MAX)] {
            a.cid = cid;
            assert_eq!(
                validate(&a, None).unwrap_err(),
                VmArgsError::InvalidCid(cid)
            );
        }
        a.cid = 3;
        assert!(validate(&a, None).is_ok());
    }

    #[test]
    fn shares_are_checked_before_the_vm_exists() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let d = dir.as_path().display().to_string();
        let ok = open_shares(
            &[format!("a={d}:ro"), format!("b={d}/./:cache=never")],
            vec![],
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ok[0].spec.read_only && !ok[1].spec.read_only);
        assert_eq!(ok[1].root.path(), dir.as_path());
        let bad = |args: &[String]| open_shares(args, vec![]).unwrap_err();
        assert!(matches!(
            bad(&[format!("t={d}/missing")]),
            ShareError::HostDir { .. }
        ));
        assert_eq!(
            bad(&[format!("t={d}"), format!("t={d}:ro")]),
            ShareError::DuplicateTag("t".into())
        );
        assert!(matches!(
            bad(&[format!("a/b={d}")]),
            ShareError::BadTagChar(_)
        ));
        // Typed shares meet the same checks, together with the flag's.
        let typed = ShareSpec {
            tag: "t".into(),
            host_dir: dir.as_path().into(),
            read_only: false,
            cache: crate::fs::CacheMode::Auto,
        };
        assert_eq!(
            open_shares(&[format!("t={d}")], vec![typed]).unwrap_err(),
            ShareError::DuplicateTag("t".into())
        );
    }

    #[test]
    fn host_memory_is_readable() {
        assert!(host_mem_mib().unwrap() > 0);
    }
}
