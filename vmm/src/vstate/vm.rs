//! The KVM VM: `/dev/kvm`, the VM file descriptor, guest memory slots, the
//! in-kernel interrupt controllers and PIT, and the irqfd/ioeventfd
//! registrations through which devices (which never see KVM) interrupt the
//! guest and receive its notifications.

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::layout::KVM_TSS_ADDR;

/// Errors from creating or configuring the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm cannot be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The kernel speaks another KVM API.
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    /// KVM lacks a capability husk needs.
    #[error("KVM lacks the {0} capability")]
    MissingCap(&'static str),
    /// KVM_CREATE_VM failed.
    #[error("cannot create a KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("cannot register guest memory slot {slot} with KVM")]
    SetMemory {
        /// The slot.
        slot: u32,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_SET_TSS_ADDR failed.
    #[error("cannot set the TSS address")]
    Tss(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("cannot create the in-kernel interrupt controllers")]
    Irqchip(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_PIT2 failed.
    #[error("cannot create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("cannot read KVM's supported CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {id}")]
    CreateVcpu {
        /// The vCPU index.
        id: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_IRQFD failed.
    #[error("cannot register an irqfd for GSI {gsi}")]
    Irqfd {
        /// The interrupt line.
        gsi: u32,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_IOEVENTFD failed.
    #[error("cannot register an ioeventfd at {addr:#x}")]
    Ioeventfd {
        /// The MMIO address.
        addr: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// An open KVM VM.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").finish_non_exhaustive()
    }
}

impl Vm {
    /// Opens /dev/kvm (before the VMM's jail, which has no /dev).
    pub fn open_kvm() -> Result<Kvm, VmError> {
        Kvm::new().map_err(VmError::OpenKvm)
    }

    /// Checks the API and the capabilities husk relies on of an open
    /// /dev/kvm ([`Vm::open_kvm`]), and creates an empty VM.
    pub fn new(kvm: Kvm) -> Result<Self, VmError> {
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(VmError::ApiVersion(api));
        }
        for (cap, name) in [
            (Cap::Irqchip, "IRQCHIP"),
            (Cap::Irqfd, "IRQFD"),
            (Cap::Ioeventfd, "IOEVENTFD"),
            (Cap::UserMemory, "USER_MEMORY"),
            (Cap::ImmediateExit, "IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Vm { kvm, fd })
    }

    /// Capabilities that change the guest's CPUID.
    pub fn cpuid_caps(&self) -> crate::vstate::cpuid::HostCaps {
        crate::vstate::cpuid::HostCaps {
            tsc_deadline: self.kvm.check_extension(Cap::TscDeadlineTimer),
        }
    }

    /// Most vCPUs KVM supports in one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// Registers every region of `mem` as a KVM memory slot.
    pub fn set_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // caller keeps alive (in the running VM) for as long as the VM
            // exists, and slots never overlap because regions do not.
            unsafe { self.fd.set_user_memory_region(desc) }
                .map_err(|source| VmError::SetMemory { slot, source })?;
        }
        Ok(())
    }

    /// In-kernel PIC + IOAPIC + LAPICs and PIT (speaker port dummied), and
    /// the TSS pages KVM needs on Intel.
    pub fn setup_irqchip(&self) -> Result<(), VmError> {
        self.fd
            .set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(VmError::Tss)?;
        self.fd.create_irq_chip().map_err(VmError::Irqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(VmError::Pit)?;
        Ok(())
    }

    /// KVM's supported CPUID list.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::Cpuid)
    }

    /// Creates vCPU `id`.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(id)
            .map_err(|source| VmError::CreateVcpu { id, source })
    }

    /// Makes a write to `evt` raise interrupt line `gsi` in the guest.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::Irqfd { gsi, source })
    }

    /// Makes a 4-byte guest write of `datamatch` at MMIO `addr` signal
    /// `evt` inside KVM, without a vCPU exit to user space.
    pub fn register_ioeventfd(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| VmError::Ioeventfd { addr, source })
    }
}
