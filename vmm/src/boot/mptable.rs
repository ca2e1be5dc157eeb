//! The Intel MultiProcessor Specification 1.4 table.
//!
//! Linux uses the ACPI MADT when it has ACPI; the MP table is what an SMP
//! guest kernel built without ACPI (or booted with `acpi=off`) uses to find
//! its CPUs and the IOAPIC. Written by hand because no maintained rust-vmm
//! crate generates it (Firecracker and Cloud Hypervisor each keep their
//! own); the layout follows the specification: a floating pointer
//! structure, then the configuration table with, in order, one processor
//! entry per vCPU, the ISA bus, the IOAPIC, one I/O interrupt entry per
//! IOAPIC pin and the two local interrupt entries (ExtINT on LINT0, NMI on
//! LINT1). Both structures carry byte checksums that sum to zero.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{IOAPIC_ADDR, IRQ_MAX, LAPIC_ADDR, MPTABLE_SIZE, MPTABLE_START};

/// Errors from writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// More vCPUs than 8-bit APIC IDs (and the IOAPIC's ID after them) allow.
    #[error("the MP table holds at most {max} CPUs, {requested} requested")]
    TooManyCpus {
        /// Limit.
        max: u8,
        /// Request.
        requested: u32,
    },
    /// The table does not fit its reserved area.
    #[error("the MP table ({0} bytes) does not fit its reserved area")]
    TooLarge(usize),
    /// Guest memory does not cover the table area.
    #[error("cannot write the MP table into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Largest vCPU count: APIC IDs 0..N-1, and the IOAPIC takes ID N.
pub const MAX_CPUS: u8 = 254;

const SPEC_REV: u8 = 4;
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6 (as KVM's CPUID reports for its default models).
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and on-chip APIC feature flags.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const BUS_ID_ISA: u8 = 0;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The IOAPIC's ID: the first one after the CPUs' local APIC IDs.
pub fn ioapic_id(num_cpus: u8) -> u8 {
    num_cpus
}

/// Builds the floating pointer and configuration table as they should sit
/// at `base`.
pub fn build(num_cpus: u32, base: u64) -> Result<Vec<u8>, MptableError> {
    let cpus = u8::try_from(num_cpus)
        .ok()
        .filter(|n| (1..=MAX_CPUS).contains(n))
        .ok_or(MptableError::TooManyCpus {
            max: MAX_CPUS,
            requested: num_cpus,
        })?;
    let ioapic = ioapic_id(cpus);
    let table_addr = base + FLOATING_LEN as u64;

    let mut t = Vec::with_capacity(FLOATING_LEN + HEADER_LEN + 20 * usize::from(cpus) + 256);
    // Floating pointer structure.
    t.extend_from_slice(b"_MP_");
    t.extend_from_slice(&(table_addr as u32).to_le_bytes());
    t.push(1); // length in 16-byte units
    t.push(SPEC_REV);
    t.push(0); // checksum, below
    t.extend_from_slice(&[0; 5]); // feature bytes: a configuration table is present
    let fp_sum = checksum(&t[..FLOATING_LEN]);
    t[10] = fp_sum;

    // Configuration table header; length, checksum and count are patched in.
    let h = t.len();
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&[0, 0]); // base table length
    t.push(SPEC_REV);
    t.push(0); // checksum
    t.extend_from_slice(b"HUSK    "); // OEM id
    t.extend_from_slice(b"MICROVM     "); // product id
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&0u16.to_le_bytes()); // entry count
    t.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.push(0); // extended table checksum
    t.push(0); // reserved
    debug_assert_eq!(t.len() - h, HEADER_LEN);

    let mut count: u16 = 0;
    for cpu in 0..cpus {
        t.push(ENTRY_PROCESSOR);
        t.push(cpu); // local APIC ID
        t.push(LAPIC_VERSION);
        t.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 });
        t.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        t.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        t.extend_from_slice(&[0; 8]);
        count += 1;
    }
    t.extend_from_slice(&[ENTRY_BUS, BUS_ID_ISA]);
    t.extend_from_slice(b"ISA   ");
    count += 1;
    t.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    t.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX as u8 {
        // Conforming polarity and trigger (flags 0): ISA defaults.
        t.extend_from_slice(&[
            ENTRY_IOINT,
            INT_TYPE_INT,
            0,
            0,
            BUS_ID_ISA,
            irq,
            ioapic,
            irq,
        ]);
        count += 1;
    }
    // LINT0 of every CPU is ExtINT, LINT1 of every CPU (0xff) is NMI.
    t.extend_from_slice(&[ENTRY_LINT, INT_TYPE_EXTINT, 0, 0, BUS_ID_ISA, 0, 0xff, 0]);
    t.extend_from_slice(&[ENTRY_LINT, INT_TYPE_NMI, 0, 0, BUS_ID_ISA, 0, 0xff, 1]);
    count += 2;

    let len = (t.len() - h) as u16;
    t[h + 4..h + 6].copy_from_slice(&len.to_le_bytes());
    t[h + 34..h + 36].copy_from_slice(&count.to_le_bytes());
    let sum = checksum(&t[h..]);
    t[h + 7] = sum;
    Ok(t)
}

/// Writes the MP table at [`MPTABLE_START`].
pub fn write_mptable<M: GuestMemory>(mem: &M, num_cpus: u32) -> Result<(), MptableError> {
    let table = build(num_cpus, MPTABLE_START)?;
    if table.len() as u64 > MPTABLE_SIZE {
        return Err(MptableError::TooLarge(table.len()));
    }
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn entries(table: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut i = FLOATING_LEN + HEADER_LEN;
        while i < table.len() {
            let len = if table[i] == ENTRY_PROCESSOR { 20 } else { 8 };
            out.push(&table[i..i + len]);
            i += len;
        }
        out
    }

    fn check(cpus: u32) {
        let t = build(cpus, MPTABLE_START).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap());
        assert_eq!(u64::from(ptr), MPTABLE_START + 16);
        let h = &t[16..];
        assert_eq!(&h[..4], b"PCMP");
        let len = u16::from_le_bytes([h[4], h[5]]) as usize;
        assert_eq!(len, h.len());
        assert_eq!(sum(h), 0, "configuration table checksum");
        let e = entries(&t);
        let count = u16::from_le_bytes([h[34], h[35]]) as usize;
        assert_eq!(count, e.len());
        let cpus_seen: Vec<_> = e.iter().filter(|x| x[0] == ENTRY_PROCESSOR).collect();
        assert_eq!(cpus_seen.len(), cpus as usize);
        for (i, c) in cpus_seen.iter().enumerate() {
            assert_eq!(c[1] as usize, i, "APIC IDs are 0..N-1");
            assert_eq!(c[3] & CPU_BOOTSTRAP != 0, i == 0, "only CPU 0 is the BSP");
            assert_eq!(c[3] & CPU_ENABLED, CPU_ENABLED);
        }
        let ioapic: Vec<_> = e.iter().filter(|x| x[0] == ENTRY_IOAPIC).collect();
        assert_eq!(ioapic.len(), 1);
        assert_eq!(ioapic[0][1], cpus as u8);
        assert_eq!(
            u32::from_le_bytes(ioapic[0][4..8].try_into().unwrap()),
            IOAPIC_ADDR as u32
        );
        let ints = e.iter().filter(|x| x[0] == ENTRY_IOINT).count();
        assert_eq!(ints, IRQ_MAX as usize + 1);
        assert_eq!(e.iter().filter(|x| x[0] == ENTRY_LINT).count(), 2);
    }

    #[test]
    fn one_cpu() {
        check(1);
    }

    #[test]
    fn many_cpus() {
        check(2);
        check(8);
        check(MAX_CPUS as u32);
    }

    #[test]
    fn cpu_count_limits() {
        assert!(matches!(build(0, 0), Err(MptableError::TooManyCpus { .. })));
        assert!(matches!(
            build(255, 0),
            Err(MptableError::TooManyCpus { .. })
        ));
    }

    #[test]
    fn written_where_linux_scans() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_mptable(&mem, 4).unwrap();
        let mut magic = [0u8; 4];
        mem.read_slice(&mut magic, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&magic, b"_MP_");
        assert_eq!(MPTABLE_START % 16, 0);
        assert!((0xf0000..0x100000).contains(&MPTABLE_START));
    }
}
