//! Initial register state: 64-bit long mode with paging, the kernel's
//! entry point in `rip` and the zero page in `rsi`, as the 64-bit boot
//! protocol wants; a sane FPU; and the local APIC's LINT0/LINT1 wired as a
//! PC's (ExtINT from the PIC, NMI).

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;

use crate::boot::gdt::DescriptorTables;
use crate::boot::layout::{BOOT_STACK_POINTER, ZERO_PAGE_ADDR};

/// Errors from setting registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// KVM_SET_REGS failed.
    #[error("cannot set general-purpose registers")]
    SetRegs(#[source] kvm_ioctls::Error),
    /// KVM_GET_SREGS or KVM_SET_SREGS failed.
    #[error("cannot set special registers")]
    Sregs(#[source] kvm_ioctls::Error),
    /// KVM_SET_FPU failed.
    #[error("cannot set FPU state")]
    Fpu(#[source] kvm_ioctls::Error),
    /// KVM_GET_LAPIC or KVM_SET_LAPIC failed.
    #[error("cannot set up the local APIC")]
    Lapic(#[source] kvm_ioctls::Error),
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// General-purpose registers at the kernel's 64-bit entry.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2, // bit 1 is always set
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    }
}

/// Special registers for long mode with the boot GDT and page tables.
pub fn long_mode_sregs(mut sregs: kvm_sregs, tables: &DescriptorTables, cr3: u64) -> kvm_sregs {
    sregs.gdt.base = tables.gdt.0;
    sregs.gdt.limit = tables.gdt.1;
    sregs.idt.base = tables.idt.0;
    sregs.idt.limit = tables.idt.1;
    sregs.cs = tables.code;
    sregs.ds = tables.data;
    sregs.es = tables.data;
    sregs.fs = tables.data;
    sregs.gs = tables.data;
    sregs.ss = tables.data;
    sregs.tr = tables.tss;
    sregs.cr3 = cr3;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// FPU control word and MXCSR at their power-on defaults.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

fn lapic_reg(regs: &[std::os::raw::c_char; 1024], off: usize) -> u32 {
    let b: [u8; 4] = std::array::from_fn(|i| regs[off + i] as u8);
    u32::from_le_bytes(b)
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], off: usize, val: u32) {
    for (i, b) in val.to_le_bytes().into_iter().enumerate() {
        regs[off + i] = b as std::os::raw::c_char;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 delivers ExtINT (the PIC), LINT1 delivers NMI.
pub fn configure_lint(lapic: &mut kvm_lapic_state) {
    let lvt0 = lapic_reg(&lapic.regs, APIC_LVT0);
    set_lapic_reg(
        &mut lapic.regs,
        APIC_LVT0,
        with_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = lapic_reg(&lapic.regs, APIC_LVT1);
    set_lapic_reg(
        &mut lapic.regs,
        APIC_LVT1,
        with_delivery_mode(lvt1, APIC_MODE_NMI),
    );
}

/// Sets the boot vCPU's registers (application processors wait for INIT/SIPI
/// in the in-kernel LAPIC and need only the LAPIC and FPU set up).
pub fn setup_boot_cpu(
    vcpu: &VcpuFd,
    entry: u64,
    tables: &DescriptorTables,
    cr3: u64,
) -> Result<(), RegsError> {
    let sregs = vcpu.get_sregs().map_err(RegsError::Sregs)?;
    vcpu.set_sregs(&long_mode_sregs(sregs, tables, cr3))
        .map_err(RegsError::Sregs)?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(RegsError::SetRegs)?;
    Ok(())
}

/// FPU and LAPIC set-up common to all vCPUs.
pub fn setup_common(vcpu: &VcpuFd) -> Result<(), RegsError> {
    vcpu.set_fpu(&boot_fpu()).map_err(RegsError::Fpu)?;
    let mut lapic = vcpu.get_lapic().map_err(RegsError::Lapic)?;
    configure_lint(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(RegsError::Lapic)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::gdt::write_descriptor_tables;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn entry_registers() {
        let r = boot_regs(0x100_0000);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0000, ZERO_PAGE_ADDR, BOOT_STACK_POINTER, 2)
        );
    }

    #[test]
    fn long_mode_bits() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let t = write_descriptor_tables(&mem).unwrap();
        let s = long_mode_sregs(kvm_sregs::default(), &t, 0x9000);
        assert_eq!(s.cr3, 0x9000);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.cs.selector, s.cs.l), (0x10, 1));
        assert_eq!(s.ss.selector, 0x18);
        assert_eq!(s.tr.selector, 0x20);
        assert_eq!(s.idt.limit, 7);
    }

    #[test]
    fn lint_delivery_modes() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l.regs, APIC_LVT0, 0x0001_0700);
        set_lapic_reg(&mut l.regs, APIC_LVT1, 0x0001_0000);
        configure_lint(&mut l);
        assert_eq!(lapic_reg(&l.regs, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&l.regs, APIC_LVT1), 0x0001_0400);
        assert_eq!(boot_fpu().fcw, 0x37f);
    }
}
