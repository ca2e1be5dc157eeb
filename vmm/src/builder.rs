//! The one place that wires a VM together: guest memory, kernel, initramfs,
//! command line, boot tables, legacy devices, virtio-mmio devices, vCPUs
//! and the event loop. Every other module receives only what it needs.
//!
//! [`run`] is the VMM's one entry: it takes a [`PreparedVm`] (a typed
//! [`crate::vm_config::VmConfig`], checked, with its files open) and runs
//! the VM to its end. Inside: [`VmBuilder::new`] (creates the VM, memory,
//! platform devices and loads the kernel), one [`VmBuilder::add_device`] per
//! configured device (each a virtio-mmio transport, placed in slot order),
//! then [`VmBuilder::start`] (writes the command line and boot tables,
//! starts the vCPUs) and [`RunningVm::wait`] on the VMM thread.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::SubscriberOps;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::load_cmdline;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::{acpi, cmdline, gdt, layout, loader, mptable, paging, params};
use crate::devices::acpi_pm::{AcpiPm, ACPI_PM_PORTS};
use crate::devices::bus::{Bus, BusError, SharedDevice};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_PORTS};
use crate::devices::legacy::{Cmos, CMOS_BASE, CMOS_PORTS};
use crate::devices::serial::{SerialDevice, COM1_BASE, UART_PORTS};
use crate::devices::virtio::fs::VirtioFs;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::{HostBackend, Net, StreamBackend, TapBackend};
use crate::devices::virtio::vsock::unix::MuxerError;
use crate::devices::virtio::vsock::{Vsock, VsockMuxer};
use crate::event_loop::{ConsoleInput, ExitWatcher, Subscriber, VmmEventManager};
use crate::exit::{ExitReason, ExitSignal};
use crate::failure::Failure;
use crate::fs::{share_budget_source, FdBudget, OpenShare, ShareServer};
use crate::seccomp::{self, Filters, Program, ThreadKind};
use crate::vm_config::{
    NetBackendFd, NetSpec, PreparedDevice, PreparedVm, VmConfig, VsockSpec, MIB,
};
use crate::vstate::vcpu::{self, Vcpu};
use crate::vstate::vm::Vm;
use crate::vstate::{cpuid, msr, regs};

/// Errors from building or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// KVM refused something.
    #[error(transparent)]
    Vm(#[from] crate::vstate::vm::VmError),
    /// Guest memory could not be mapped.
    #[error("cannot map {0} MiB of guest memory")]
    Memory(u64, #[source] vm_memory::mmap::FromRangesError),
    /// Kernel or initramfs problem.
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    /// Command line problem.
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    /// Writing the command line into guest memory failed.
    #[error("cannot write the kernel command line into guest memory")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
    /// Zero page.
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    /// GDT/IDT.
    #[error(transparent)]
    Gdt(#[from] gdt::GdtError),
    /// Page tables.
    #[error(transparent)]
    Paging(#[from] paging::PagingError),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// ACPI tables.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// Device placement.
    #[error("cannot place a device on the bus")]
    Bus(#[from] BusError),
    /// An EventFd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The vsock device's host socket.
    #[error(transparent)]
    VsockSocket(#[from] MuxerError),
    /// A device could not be set up.
    #[error("cannot set up the {what} device: {source}")]
    Device {
        /// Which device.
        what: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// More vCPUs than KVM allows.
    #[error("{requested} vCPUs is more than the {max} KVM allows here")]
    TooManyVcpus {
        /// Asked for.
        requested: u32,
        /// KVM's limit.
        max: usize,
    },
    /// All virtio-mmio slots (one per free IRQ) are taken.
    #[error("no free virtio-mmio slot: at most {0} devices")]
    NoVirtioSlot(u32),
    /// The event loop could not be set up or run.
    #[error("event loop failure: {0:?}")]
    EventLoop(event_manager::Error),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    /// The seccomp filters could not be compiled or set up.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// Register setup.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// The VMM could not jail itself.
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    /// MSR setup.
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
    /// KVM_SET_CPUID2 failed.
    #[error("cannot set CPUID of vCPU {0}")]
    SetCpuid(u32, #[source] kvm_ioctls::Error),
}

impl BuildError {
    /// Whether the error comes from what the user gave us (a usage error)
    /// rather than from the host or KVM (exit status 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            BuildError::Loader(_)
                | BuildError::Cmdline(_)
                | BuildError::VsockSocket(_)
                | BuildError::NoVirtioSlot(_)
                | BuildError::TooManyVcpus { .. }
        )
    }
}

/// Where a virtio-mmio device was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioSlot {
    /// Guest-physical base of its 4 KiB register window.
    pub base: u64,
    /// Its interrupt line (GSI).
    pub irq: u32,
}

/// Offset of QueueNotify in the virtio-mmio register window.
pub const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

/// A VM being assembled.
pub struct VmBuilder {
    config: VmConfig,
    vm: Vm,
    mem: GuestMemoryMmap,
    pio: Bus,
    mmio: Bus,
    exit: Arc<ExitSignal>,
    cmdline: Cmdline,
    cmdline_capacity: usize,
    kernel: loader::LoadedKernel,
    initrd: Option<(u64, u32)>,
    event_manager: VmmEventManager,
    virtio_count: u32,
    /// The compiled seccomp filters (`None`: `--no-seccomp`).
    seccomp: Option<Filters>,
}

impl std::fmt::Debug for VmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Maps a device's set-up error to [`BuildError::Device`] naming `what`.
fn device_error<E>(what: &str) -> impl FnOnce(E) -> BuildError + '_
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |e| BuildError::Device {
        what: what.to_owned(),
        source: e.into(),
    }
}

fn eventfd() -> Result<EventFd, BuildError> {
    EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)
}

impl VmBuilder {
    /// Creates the VM and its memory, loads kernel and initramfs, and puts
    /// the platform devices (serial, i8042, ACPI PM, CMOS) on the PIO bus.
    fn new(
        kvm: kvm_ioctls::Kvm,
        config: VmConfig,
        probe: loader::KernelProbe,
        initrd_file: Option<(std::fs::File, u64)>,
        console: Option<std::fs::File>,
        cmdline: Cmdline,
        cmdline_capacity: usize,
    ) -> Result<Self, BuildError> {
        // Compiled before any thread that installs one starts.
        let seccomp = if config.seccomp {
            Some(Filters::build(seccomp::Mode::from_env())?)
        } else {
            eprintln!("husk: warning: seccomp filters are off (--no-seccomp): the VMM may make any system call");
            None
        };
        crate::trace::phase("seccomp-compiled");
        let vm = Vm::new(kvm)?;
        let max_vcpus = vm.max_vcpus();
        if config.vcpus as usize > max_vcpus {
            return Err(BuildError::TooManyVcpus {
                requested: config.vcpus,
                max: max_vcpus,
            });
        }
        let mem_bytes = config.mem_bytes;
        let ranges: Vec<(GuestAddress, usize)> = layout::ram_ranges(mem_bytes)
            .into_iter()
            .map(|(a, l)| (a, l as usize))
            .collect();
        let mem = crate::vstate::memory::guest_memory(&ranges)
            .map_err(|e| BuildError::Memory(mem_bytes / MIB, e))?;
        vm.set_memory(&mem)?;
        vm.setup_irqchip()?;
        crate::trace::phase("vm-and-memory");

        let mut kernel_file = probe.file;
        let kernel = loader::load_kernel(&mem, &mut kernel_file, probe.format, &config.kernel)?;
        let initrd = match (initrd_file, &config.initrd) {
            (Some((mut f, size)), Some(path)) => Some(loader::load_initrd(
                &mem,
                &mut f,
                size,
                path,
                layout::low_mem_end(mem_bytes),
                &kernel,
            )?),
            _ => None,
        };
        crate::trace::phase("kernel-and-initrd-loaded");
        let exit = ExitSignal::new().map_err(BuildError::EventFd)?;
        let mut event_manager = VmmEventManager::new().map_err(BuildError::EventLoop)?;
        event_manager.add_subscriber(Arc::new(Mutex::new(ExitWatcher(exit.clone()))));

        let mut pio = Bus::new();
        // Serial console on COM1, IRQ 4 through an irqfd.
        let serial_irq = eventfd()?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)?;
        let rx_ready = eventfd()?;
        let (out, input): (Box<dyn Write + Send>, bool) = match console {
            None => (Box::new(std::io::stdout()), true),
            Some(f) => (Box::new(f), false),
        };
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            serial_irq,
            rx_ready.try_clone().map_err(BuildError::EventFd)?,
            out,
        )));
        pio.insert(serial.clone(), COM1_BASE, UART_PORTS)?;
        if input {
            event_manager.add_subscriber(Arc::new(Mutex::new(ConsoleInput::new(
                std::io::stdin(),
                serial,
                rx_ready,
            ))));
        }
        pio.insert(
            Arc::new(Mutex::new(I8042::new(exit.clone()))),
            I8042_BASE,
            I8042_PORTS,
        )?;
        pio.insert(
            Arc::new(Mutex::new(AcpiPm::new(exit.clone()))),
            u64::from(layout::ACPI_SLEEP_PORT),
            ACPI_PM_PORTS,
        )?;
        pio.insert(Arc::new(Mutex::new(Cmos::default())), CMOS_BASE, CMOS_PORTS)?;

        Ok(VmBuilder {
            config,
            vm,
            mem,
            pio,
            mmio: Bus::new(),
            exit,
            cmdline,
            cmdline_capacity,
            kernel,
            initrd,
            event_manager,
            virtio_count: 0,
            seccomp,
        })
    }

    /// Guest memory, for devices that access queues and buffers.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The VM's exit signal, for devices that must end the VM.
    pub fn exit_signal(&self) -> Arc<ExitSignal> {
        self.exit.clone()
    }

    /// The vsock device, bridged to Unix sockets at `spec.uds`, with its
    /// event handler on the VMM thread's loop.
    fn add_vsock(&mut self, spec: &VsockSpec) -> Result<VirtioMmioSlot, BuildError> {
        let what = "virtio-vsock";
        let muxer = VsockMuxer::new(spec.cid, &spec.uds)?;
        let vsock = Arc::new(Mutex::new(
            Vsock::new(spec.cid, muxer).map_err(device_error(what))?,
        ));
        let wiring = MmioTransport::new(self.mem.clone(), vsock.clone())
            .map_err(device_error(what))?
            .into_wiring()
            .map_err(device_error(what))?;
        let slot = self.add_virtio_mmio_device(wiring.device, &wiring.queue_evts, &wiring.irq)?;
        self.add_subscriber(vsock);
        Ok(slot)
    }

    /// The virtio-net device on its stream backend, with its event handler
    /// on the VMM thread's loop.
    fn add_net(&mut self, spec: &NetSpec) -> Result<VirtioMmioSlot, BuildError> {
        let what = "virtio-net";
        let backend = match &spec.backend {
            NetBackendFd::Stream(fd) => HostBackend::Stream(
                StreamBackend::new(fd.0.try_clone().map_err(device_error(what))?)
                    .map_err(device_error(what))?,
            ),
            NetBackendFd::Tap(fd) => HostBackend::Tap(
                TapBackend::new(fd.0.try_clone().map_err(device_error(what))?)
                    .map_err(device_error(what))?,
            ),
        };
        let net = Arc::new(Mutex::new(
            Net::new(spec.mac, spec.mtu, backend).map_err(device_error(what))?,
        ));
        let wiring = MmioTransport::new(self.mem.clone(), net.clone())
            .map_err(device_error(what))?
            .into_wiring()
            .map_err(device_error(what))?;
        let slot = self.add_virtio_mmio_device(wiring.device, &wiring.queue_evts, &wiring.irq)?;
        self.add_subscriber(net);
        Ok(slot)
    }

    /// A virtio-fs device serving `share`; its requests are served on the
    /// device's own thread, not on the event loop.
    fn add_share(
        &mut self,
        share: OpenShare,
        budget: FdBudget,
    ) -> Result<VirtioMmioSlot, BuildError> {
        let what = &format!("virtio-fs {}", share.spec.tag);
        let server = ShareServer::new(share, budget).map_err(device_error(what))?;
        let fs = Arc::new(Mutex::new(
            VirtioFs::new(server, self.seccomp.as_ref().map(|f| f.fs.clone()))
                .map_err(device_error(what))?,
        ));
        let wiring = MmioTransport::new(self.mem.clone(), fs)
            .map_err(device_error(what))?
            .into_wiring()
            .map_err(device_error(what))?;
        self.add_virtio_mmio_device(wiring.device, &wiring.queue_evts, &wiring.irq)
    }

    /// Adds a virtio-mmio transport: puts `device` in the next free 4 KiB
    /// MMIO slot, makes a guest write of queue index `i` to QueueNotify
    /// (base + 0x50) signal `queue_notify[i]` (ioeventfd with datamatch, no
    /// exit to user space), makes a write to `irq` raise the slot's GSI
    /// (irqfd), and declares the device on the kernel command line
    /// (`virtio_mmio.device=4K@0x...:IRQ`).
    pub fn add_virtio_mmio_device(
        &mut self,
        device: SharedDevice,
        queue_notify: &[EventFd],
        irq: &EventFd,
    ) -> Result<VirtioMmioSlot, BuildError> {
        let max = layout::VIRTIO_IRQS.len() as u32;
        let gsi = *layout::VIRTIO_IRQS
            .get(self.virtio_count as usize)
            .ok_or(BuildError::NoVirtioSlot(max))?;
        let base = layout::virtio_mmio_addr(self.virtio_count);
        cmdline::add_virtio_mmio(
            &mut self.cmdline,
            self.cmdline_capacity,
            base,
            layout::VIRTIO_MMIO_SLOT_SIZE,
            gsi,
        )?;
        self.mmio
            .insert(device, base, layout::VIRTIO_MMIO_SLOT_SIZE)?;
        for (queue, evt) in queue_notify.iter().enumerate() {
            self.vm
                .register_ioeventfd(evt, base + VIRTIO_MMIO_QUEUE_NOTIFY, queue as u32)?;
        }
        self.vm.register_irqfd(irq, gsi)?;
        self.virtio_count += 1;
        Ok(VirtioMmioSlot { base, irq: gsi })
    }

    /// Adds an event source to the VMM thread's loop.
    fn add_subscriber(&mut self, subscriber: Subscriber) {
        self.event_manager.add_subscriber(subscriber);
    }

    /// The command line as it stands (devices included).
    pub fn cmdline(&self) -> String {
        cmdline::to_string(&self.cmdline)
    }

    /// Writes the command line, zero page and boot tables, creates and
    /// starts the vCPUs.
    pub fn start(self) -> Result<RunningVm, BuildError> {
        let mem = &self.mem;
        let vcpus = self.config.vcpus;
        let mem_bytes = self.config.mem_bytes;
        load_cmdline(mem, GuestAddress(layout::CMDLINE_ADDR), &self.cmdline)
            .map_err(BuildError::CmdlineWrite)?;
        let cmdline_len = cmdline::to_string(&self.cmdline).len() as u32;
        let tables = gdt::write_descriptor_tables(mem)?;
        let cr3 = paging::write_identity_map(mem)?;
        mptable::write_mptable(mem, vcpus)?;
        let rsdp = acpi::write_acpi_tables(mem, vcpus, layout::ACPI_SLEEP_PORT)?;
        let zero_page = params::build_zero_page(&params::ZeroPageConfig {
            mem_bytes,
            cmdline: (layout::CMDLINE_ADDR, cmdline_len),
            initrd: self.initrd,
            setup_header: self.kernel.setup_header,
            rsdp: Some(rsdp),
        })?;
        params::write_zero_page(mem, &zero_page)?;
        crate::trace::phase("boot-tables");

        vcpu::install_kick_handler()?;
        let supported = self.vm.supported_cpuid()?;
        let caps = self.vm.cpuid_caps();
        let pio = Arc::new(self.pio);
        let mmio = Arc::new(self.mmio);
        let stop = Arc::new(AtomicBool::new(false));
        let mut ready = Vec::with_capacity(vcpus as usize);
        for id in 0..vcpus {
            let fd = self.vm.create_vcpu(u64::from(id))?;
            let mut entries = supported.as_slice().to_vec();
            cpuid::fixup(&mut entries, id, vcpus, caps);
            let cpuid = kvm_bindings::CpuId::from_entries(&entries)
                .map_err(|_| BuildError::SetCpuid(id, kvm_ioctls::Error::new(libc::E2BIG)))?;
            fd.set_cpuid2(&cpuid)
                .map_err(|e| BuildError::SetCpuid(id, e))?;
            msr::set_boot_msrs(&fd)?;
            regs::setup_common(&fd)?;
            if id == 0 {
                regs::setup_boot_cpu(&fd, self.kernel.entry, &tables, cr3)?;
            }
            let before_first_run: Option<Box<dyn FnOnce() + Send>> =
                if id == 0 && self.config.boot_trace {
                    let guest: Vec<(usize, usize)> = mem
                        .iter()
                        .map(|r| (r.as_ptr() as usize, r.len() as usize))
                        .collect();
                    Some(Box::new(move || crate::trace::report_first_run(&guest)))
                } else {
                    None
                };
            ready.push(Vcpu {
                id,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: self.exit.clone(),
                stop: stop.clone(),
                before_first_run,
                seccomp: self.seccomp.as_ref().map(|f| f.vcpu.clone()),
            });
        }
        crate::trace::phase("vcpus-set-up");
        let mut threads = Vec::with_capacity(ready.len());
        for v in ready {
            match v.spawn() {
                Ok(t) => threads.push(t),
                Err(e) => {
                    vcpu::stop_all(&stop, threads);
                    return Err(e.into());
                }
            }
        }
        Ok(RunningVm {
            _vm: self.vm,
            _mem: self.mem,
            event_manager: self.event_manager,
            exit: self.exit,
            stop,
            threads,
            seccomp: self.seccomp.map(|f| f.vmm),
        })
    }
}

/// Whether the VMM jails itself ([`crate::jail`]) before it builds the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jail {
    /// Jailed: the default for pods and `husk vm`; in a user namespace of its own if given
    /// (a pod's), else as host root with the jail's few capabilities.
    On(Option<crate::jail::vmm::UserNs>),
    /// Not jailed (`--no-jail`): the VMM keeps the caller's privileges.
    Off,
}

/// Builds the VM of `prepared` and starts it: the VMM's one entry. With
/// [`Jail::On`] the process jails itself first, once `/dev/kvm` is open
/// and before anything of the VM (and so any guest input) exists.
pub fn start(prepared: PreparedVm, jail: Jail) -> Result<RunningVm, BuildError> {
    crate::trace::phase("prepared");
    let kvm = Vm::open_kvm()?;
    if let Jail::On(user_ns) = &jail {
        let started = std::time::Instant::now();
        crate::jail::vmm::enter(&prepared, kvm.as_raw_fd(), user_ns.as_ref())?;
        log::info!(
            "jail: set up in {:.2} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let PreparedVm {
        config,
        kernel,
        initrd,
        console,
        cmdline,
        cmdline_capacity,
        devices,
    } = prepared;
    let mut builder = VmBuilder::new(
        kvm,
        config,
        kernel,
        initrd,
        console,
        cmdline,
        cmdline_capacity,
    )?;
    let mut next_budget = share_budget_source();
    for device in devices {
        match device {
            PreparedDevice::Vsock(spec) => builder.add_vsock(&spec)?,
            PreparedDevice::Fs(share) => builder.add_share(share, next_budget())?,
            PreparedDevice::Net(spec) => builder.add_net(&spec)?,
        };
    }
    crate::trace::phase("devices");
    log::debug!(
        "kernel command line: {} (defaults: {})",
        builder.cmdline(),
        cmdline::DEFAULT_CMDLINE
    );
    builder.start()
}

/// Runs the VM of `prepared` until it ends, and says why it ended.
pub fn run(prepared: PreparedVm, jail: Jail) -> Result<ExitReason, BuildError> {
    Ok(start(prepared, jail)?.wait())
}

/// Runs the VM of `prepared` as the body of a VMM process: prints one line
/// on stderr saying why it ended and returns the process's exit status
/// ([`ExitReason::exit_code`], or the status of [`Failure::Usage`] or
/// [`Failure::Runtime`] when it could not be built or jailed).
pub fn run_to_status(prepared: PreparedVm, jail: Jail) -> i32 {
    match run(prepared, jail) {
        Ok(reason) => {
            eprintln!("husk: {}", reason.message());
            reason.exit_code()
        }
        Err(e) => {
            eprintln!("husk: {}", crate::report::error_line(&e));
            if e.is_bad_input() {
                Failure::Usage.exit_status()
            } else {
                Failure::Runtime.exit_status()
            }
        }
    }
}

/// A started VM; [`RunningVm::wait`] runs its event loop until it ends.
pub struct RunningVm {
    // Kept alive until the vCPUs are stopped: KVM maps this memory.
    _vm: Vm,
    _mem: GuestMemoryMmap,
    event_manager: VmmEventManager,
    exit: Arc<ExitSignal>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The VMM thread's filter, installed by [`RunningVm::wait`].
    seccomp: Option<Program>,
}

impl std::fmt::Debug for RunningVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningVm").finish_non_exhaustive()
    }
}

impl RunningVm {
    /// Installs the VMM thread's seccomp filter (every other thread is
    /// started by now), runs the event loop on this thread until the VM
    /// ends, stops every vCPU thread and returns why the VM ended.
    pub fn wait(mut self) -> ExitReason {
        if let Some(program) = self.seccomp.take() {
            if let Err(e) = seccomp::install(ThreadKind::Vmm, &program) {
                self.exit.request(ExitReason::Error(e.to_string()));
            }
        }
        let reason = loop {
            if let Some(r) = self.exit.reason() {
                break r;
            }
            if let Err(e) = self.event_manager.run() {
                break ExitReason::Error(format!("event loop failure: {e:?}"));
            }
        };
        vcpu::stop_all(&self.stop, std::mem::take(&mut self.threads));
        reason
    }
}
