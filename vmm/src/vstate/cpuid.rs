//! Per-vCPU CPUID, derived from `KVM_GET_SUPPORTED_CPUID`.
//!
//! KVM reports what it can virtualize; each vCPU then needs its own
//! identity and a topology that matches the MP/ACPI tables (N cores in one
//! package, one thread per core, APIC ID = vCPU index), and the guest must
//! see that it runs on a hypervisor so it uses kvmclock and paravirtual
//! features. Pure functions over the entry list, unit-tested without KVM.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: the local APIC timer has TSC-deadline mode.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 EDX: multi-threading (more than one logical processor per package).
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// KVM's hypervisor signature leaf.
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// Topology level types in leaves 0xB / 0x1F ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` items (ceil(log2 n)).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| [e.ebx, e.edx, e.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163])
}

/// What the host's KVM offers beyond its supported CPUID list.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCaps {
    /// KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates TSC-deadline
    /// mode. KVM does not list it in KVM_GET_SUPPORTED_CPUID; without it the
    /// guest calibrates its LAPIC timer against the PIT, which is unreliable
    /// under nested virtualization ("APIC timer disabled due to verification
    /// failure") and slow everywhere.
    pub tsc_deadline: bool,
}

/// Rewrites `entries` (KVM's supported list) for vCPU `cpu` of `count`.
pub fn fixup(entries: &mut Vec<kvm_cpuid_entry2>, cpu: u32, count: u32, caps: HostCaps) {
    let apic_id = cpu;
    let core_bits = bits_for(count);
    let amd = is_amd(entries);
    let mut has_signature = false;
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count.min(255) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if caps.tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            4 => {
                // Cache parameters: cores per package in EAX[31:26]; caches
                // up to L2 are private to a core, L3 is shared by all.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            0xb | 0x1f => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = count;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0xa => {
                // No virtual PMU: the guest must not program counters the
                // VMM neither sets up nor migrates.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            KVM_SIGNATURE_LEAF => {
                has_signature = true;
                e.eax = e.eax.max(KVM_SIGNATURE_LEAF + 1);
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
            }
            0x8000_0008 if amd => {
                // AMD: number of cores - 1 and the APIC ID bits for cores.
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | ((count - 1) & 0xff);
            }
            0x8000_001e if amd => {
                // Extended APIC ID, compute unit = core, one node.
                e.eax = apic_id;
                e.ebx = (e.ebx & !0xffff) | (apic_id & 0xff);
                e.ecx &= !0x7ff;
            }
            _ => {}
        }
    }
    if !has_signature {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_SIGNATURE_LEAF,
            eax: KVM_SIGNATURE_LEAF + 1,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if matches!(function, 4 | 0xb | 0x1f) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// A synthetic Intel-like supported list, as KVM would report it.
    fn intel() -> Vec<kvm_cpuid_entry2> {
        vec![
            // "GenuineIntel"
            entry(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            entry(1, 0, [0x806f8, 0xff_ff_08_00, 0x0000_0001, 0x1789_fbff]),
            entry(4, 0, [0x1c00_4121, 0, 0, 0]), // L1d
            entry(4, 3, [0x1c03_c163, 0, 0, 0]), // L3
            entry(0xa, 0, [0x0704_0102, 0, 0, 0]),
            entry(0xb, 0, [1, 2, 0x100, 7]),
            entry(0xb, 1, [4, 16, 0x201, 7]),
            entry(0x1f, 2, [0, 0, 2, 7]),
            entry(0x8000_0008, 0, [0x3030, 0, 0xabcd, 0]),
        ]
    }

    fn find(e: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *e.iter().find(|x| x.function == f && x.index == i).unwrap()
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = intel();
        fixup(&mut e, 3, 4, HostCaps { tsc_deadline: true });
        let l1 = find(&e, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size and brand kept");
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(l1.ecx & 1, 1, "supported features kept");
        assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);

        let mut e = intel();
        fixup(&mut e, 0, 1, HostCaps::default());
        let l1 = find(&e, 1, 0);
        assert_eq!(l1.ebx >> 24, 0);
        assert_eq!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0, "only when KVM has it");
    }

    #[test]
    fn topology_leaves_describe_n_cores() {
        let mut e = intel();
        fixup(&mut e, 2, 3, HostCaps::default());
        let smt = find(&e, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        let core = find(&e, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        let end = find(&e, 0x1f, 2);
        assert_eq!((end.eax, end.ebx, end.ecx & 0xff00, end.edx), (0, 0, 0, 2));
        let l1d = find(&e, 4, 0);
        assert_eq!(l1d.eax >> 26, 2);
        assert_eq!((l1d.eax >> 14) & 0xfff, 0);
        assert_eq!(l1d.eax & 0x3fff, 0x0121, "cache description kept");
        let l3 = find(&e, 4, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 2);
    }

    #[test]
    fn pmu_is_hidden_and_signature_present() {
        let mut e = intel();
        fixup(&mut e, 0, 1, HostCaps::default());
        let pmu = find(&e, 0xa, 0);
        assert_eq!([pmu.eax, pmu.ebx, pmu.ecx, pmu.edx], [0; 4]);
        let sig = find(&e, KVM_SIGNATURE_LEAF, 0);
        let mut name = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            name.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        assert!(sig.eax > KVM_SIGNATURE_LEAF);
        // Not duplicated when KVM already lists it.
        fixup(&mut e, 0, 1, HostCaps::default());
        assert_eq!(
            e.iter()
                .filter(|x| x.function == KVM_SIGNATURE_LEAF)
                .count(),
            1
        );
    }

    #[test]
    fn intel_leaves_reserved_on_amd_stay_untouched() {
        let mut e = intel();
        fixup(&mut e, 1, 2, HostCaps::default());
        assert_eq!(find(&e, 0x8000_0008, 0).ecx, 0xabcd);
    }

    #[test]
    fn amd_core_count_leaves() {
        let mut e = intel();
        // "AuthenticAMD"
        e[0] = entry(0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]);
        e.push(entry(0x8000_001e, 0, [0, 0x100, 0x0, 0]));
        fixup(&mut e, 5, 6, HostCaps::default());
        let ext = find(&e, 0x8000_0008, 0);
        assert_eq!(ext.ecx & 0xff, 5);
        assert_eq!((ext.ecx >> 12) & 0xf, 3);
        let topo = find(&e, 0x8000_001e, 0);
        assert_eq!(topo.eax, 5);
        assert_eq!(topo.ebx & 0xff, 5);
    }

    #[test]
    fn bit_counts() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5)
            ],
            [0, 1, 2, 2, 3]
        );
        assert_eq!(bits_for(254), 8);
    }
}
