//! KVM state: the VM, its vCPUs and their initial CPUID, MSRs and registers.
//! The only part of husk that talks to KVM (through kvm-ioctls).

pub mod cpuid;
pub mod memory;
pub mod msr;
pub mod probe;
pub mod regs;
pub mod vcpu;
pub mod vm;
