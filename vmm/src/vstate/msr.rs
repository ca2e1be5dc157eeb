//! The model-specific registers a 64-bit Linux guest expects at entry.
//!
//! The same set a PC firmware leaves behind (and Firecracker sets): syscall
//! and sysenter MSRs cleared, TSC at zero, fast string operations enabled
//! and MTRRs on with write-back as the default memory type. Some KVM hosts
//! list an MSR yet refuse to set it (the PVM host refuses 0x10a, see
//! docs/test-environment.md 4b), so writes go through [`set_boot_msrs`],
//! which skips and reports refused entries instead of failing the boot.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors from setting MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The MSR list could not be built.
    #[error("cannot build the MSR list")]
    List,
    /// KVM_SET_MSRS itself failed.
    #[error("KVM_SET_MSRS failed")]
    Set(#[source] kvm_ioctls::Error),
}

pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WRBACK: u64 = 6;

/// The boot MSRs and their values.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets `entries`, in order. KVM_SET_MSRS stops at the first MSR it refuses
/// and returns how many it set; that one is skipped and the rest retried.
/// Returns the indices of refused MSRs.
pub fn set_msrs_skipping_refused(
    vcpu: &VcpuFd,
    entries: &[kvm_msr_entry],
) -> Result<Vec<u32>, MsrError> {
    let mut refused = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let msrs = Msrs::from_entries(rest).map_err(|_| MsrError::List)?;
        let done = vcpu.set_msrs(&msrs).map_err(MsrError::Set)?;
        if done >= rest.len() {
            break;
        }
        refused.push(rest[done].index);
        rest = &rest[done + 1..];
    }
    Ok(refused)
}

/// Sets [`boot_msrs`] on `vcpu`, logging any the host refuses.
pub fn set_boot_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    for index in set_msrs_skipping_refused(vcpu, &boot_msrs())? {
        log::warn!("KVM refused to set MSR {index:#x}; left at its reset value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_values() {
        let m = boot_msrs();
        let get = |i| m.iter().find(|e| e.index == i).map(|e| e.data);
        assert_eq!(get(MSR_IA32_MISC_ENABLE), Some(1));
        assert_eq!(get(MSR_MTRR_DEF_TYPE), Some(0x806));
        assert_eq!(get(MSR_LSTAR), Some(0));
        assert_eq!(get(MSR_IA32_TSC), Some(0));
        assert_eq!(m.len(), 11);
    }
}
