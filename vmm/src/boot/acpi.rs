//! ACPI tables: RSDP → XSDT → {FADT → {DSDT, FACS}, MADT}.
//!
//! The guest learns its CPUs and interrupt controllers from the MADT, and
//! how to power itself off from the FADT and the `\_S5_` object in the
//! DSDT: `poweroff` writes SLP_TYP|SLP_EN to the PM1a control register, an
//! I/O port that the VMM's ACPI PM device turns into "guest powered off".
//!
//! Why not hardware-reduced ACPI (what Firecracker and Cloud Hypervisor
//! use): on x86 Linux drops the legacy PIC in that mode, so ISA IRQs are no
//! longer mapped, and every device interrupt must then be declared as an
//! ACPI device in the DSDT. husk declares its serial port by convention
//! (COM1, IRQ 4) and its virtio-mmio devices on the kernel command line,
//! which only works with legacy IRQ routing. So the platform keeps the PIC
//! (in KVM) and exposes the minimal fixed ACPI hardware instead: PM1a
//! event (status/enable) and control registers, an SCI line that never
//! fires, and a reset register. No SMI command port: the platform is always
//! in ACPI mode.
//!
//! The tables are built with rust-vmm's `acpi_tables` crate; only the two
//! MADT entries it lacks for x86 (interrupt source override, local APIC
//! NMI) are declared here.
//!
//! Guest kernels need CONFIG_PCI for ACPI to load the DSDT at all (without
//! it ACPICA fails "During Region initialization" and poweroff is not
//! available); see kernel-config/.

use acpi_tables::aml::{Name, Package, Path};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use zerocopy::{Immutable, IntoBytes};

use super::layout::{ACPI_SIZE, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR};

/// Errors from writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// More vCPUs than the MADT's 8-bit APIC IDs allow.
    #[error("ACPI tables hold at most 254 CPUs, {0} requested")]
    TooManyCpus(u32),
    /// The tables do not fit their reserved area.
    #[error("ACPI tables ({0} bytes) do not fit their reserved area")]
    TooLarge(u64),
    /// Guest memory does not cover the table area.
    #[error("cannot write the ACPI tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

const OEM_ID: [u8; 6] = *b"HUSK  ";
const OEM_TABLE_ID: [u8; 8] = *b"HUSKVM  ";
const OEM_REVISION: u32 = 1;

/// SLP_TYP value of `\_S5_` (soft off); the value is ours to choose.
pub const S5_SLEEP_TYPE: u8 = 5;
/// Bit position of SLP_TYP in PM1 control.
pub const SLP_TYP_SHIFT: u16 = 10;
/// SLP_EN bit of PM1 control.
pub const SLP_EN: u16 = 1 << 13;
/// SCI_EN bit of PM1 control: the platform is in ACPI mode.
pub const SCI_EN: u16 = 1;
/// Value the guest writes to the reset register.
pub const RESET_VALUE: u8 = 1;
/// Offsets in the PM I/O block (see devices::acpi_pm).
pub const PM1_EVT_OFFSET: u16 = 0;
/// PM1 event block length: status and enable, 16 bits each.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control register offset.
pub const PM1_CNT_OFFSET: u16 = 4;
/// PM1 control block length.
pub const PM1_CNT_LEN: u8 = 2;
/// Reset register offset.
pub const RESET_OFFSET: u16 = 6;
/// Ports the PM block spans.
pub const PM_BLOCK_LEN: u16 = 8;
/// The SCI: ISA IRQ 9 as on a PC (level, active low). Nothing raises it.
pub const SCI_IRQ: u16 = 9;

// IA-PC boot architecture flags: no VGA, no MSI, no CMOS RTC (the guest
// takes wall-clock time from kvmclock).
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// MADT interrupt source override (type 2): ISA IRQ `source` is GSI `gsi`.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: u32,
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// MADT local APIC NMI (type 4): which LINT pin carries NMIs.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    r#type: u8,
    length: u8,
    processor_uid: u8,
    flags: u16,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

fn bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    aml.to_aml_bytes(&mut v);
    v
}

/// The DSDT: just `Name (\_S5_, Package () { 5, 5 })`. Devices are declared
/// on the kernel command line, so nothing else needs AML.
pub fn dsdt() -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let s5 = Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE]),
    );
    sdt.append_slice(&bytes(&s5));
    sdt.as_slice().to_vec()
}

/// The FADT: PM1a event and control blocks and the reset register in the
/// I/O block at `pm_port`, SCI on IRQ 9, no SMI command port.
pub fn fadt(dsdt_addr: u64, facs_addr: u64, pm_port: u16) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_64(facs_addr)
        .flag(Flags::Wbinvd)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    b.sci_int = SCI_IRQ.into();
    b.pm1a_evt_blk = u32::from(pm_port + PM1_EVT_OFFSET).into();
    b.pm1_evt_len = PM1_EVT_LEN;
    b.pm1a_cnt_blk = u32::from(pm_port + PM1_CNT_OFFSET).into();
    b.pm1_cnt_len = PM1_CNT_LEN;
    b.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        (pm_port + RESET_OFFSET).into(),
    );
    b.reset_value = RESET_VALUE;
    b.iapc_boot_arch =
        (IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT).into();
    bytes(&b.finalize())
}

/// The MADT: one local APIC per vCPU (APIC ID = index), the IOAPIC with the
/// ID after them, the usual PC override IRQ 0 → GSI 2 and NMI on LINT1.
pub fn madt(num_cpus: u32) -> Result<Vec<u8>, AcpiError> {
    let cpus = u8::try_from(num_cpus)
        .ok()
        .filter(|n| (1..=254).contains(n))
        .ok_or(AcpiError::TooManyCpus(num_cpus))?;
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR as u32),
    );
    for cpu in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(cpus, IOAPIC_ADDR as u32, 0));
    madt.add_structure(InterruptSourceOverride {
        r#type: 2,
        length: 10,
        bus: 0,
        source: 0,
        gsi: 2,
        flags: 0,
    });
    madt.add_structure(LocalApicNmi {
        r#type: 4,
        length: 6,
        processor_uid: 0xff,
        flags: 0,
        lint: 1,
    });
    let mut table = bytes(&madt);
    // Flags: PCAT_COMPAT (a dual 8259 PIC is present: KVM's). The crate
    // leaves the field 0, so set it and fix the checksum.
    table[40] |= 1;
    table[9] = table[9].wrapping_sub(1);
    Ok(table)
}

/// Builds all tables for placement at `base`; returns (offset, bytes) pairs,
/// the RSDP first at offset 0.
pub fn build(num_cpus: u32, pm_port: u16, base: u64) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let align = |x: u64| (x + 15) & !15;
    let mut tables = Vec::new();
    let mut next = align(Rsdp::len() as u64);
    let xsdt_off = next;
    // XSDT with two entries: header + 2 × 8 bytes.
    next = align(next + 36 + 16);
    let facs_off = (next + 63) & !63; // FACS must be 64-byte aligned
    let facs = bytes(&FACS::new());
    next = align(facs_off + facs.len() as u64);
    let dsdt = dsdt();
    let dsdt_off = next;
    next = align(next + dsdt.len() as u64);
    let fadt = fadt(base + dsdt_off, base + facs_off, pm_port);
    let fadt_off = next;
    next = align(next + fadt.len() as u64);
    let madt = madt(num_cpus)?;
    let madt_off = next;
    next += madt.len() as u64;
    if next > ACPI_SIZE {
        return Err(AcpiError::TooLarge(next));
    }
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(base + fadt_off);
    xsdt.add_entry(base + madt_off);
    tables.push((0, bytes(&Rsdp::new(OEM_ID, base + xsdt_off))));
    tables.push((xsdt_off, bytes(&xsdt)));
    tables.push((facs_off, facs));
    tables.push((dsdt_off, dsdt));
    tables.push((fadt_off, fadt));
    tables.push((madt_off, madt));
    Ok(tables)
}

/// Writes the tables at [`ACPI_START`]; returns the RSDP address.
pub fn write_acpi_tables<M: GuestMemory>(
    mem: &M,
    num_cpus: u32,
    pm_port: u16,
) -> Result<u64, AcpiError> {
    for (off, table) in build(num_cpus, pm_port, ACPI_START)? {
        mem.write_slice(&table, GuestAddress(ACPI_START + off))
            .map_err(AcpiError::Write)?;
    }
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn len_field(t: &[u8]) -> usize {
        u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize
    }

    #[test]
    fn every_table_checksums_to_zero() {
        for cpus in [1, 2, 64, 254] {
            let tables = build(cpus, 0x600, ACPI_START).unwrap();
            let (_, rsdp) = &tables[0];
            assert_eq!(&rsdp[..8], b"RSD PTR ");
            assert_eq!(sum(&rsdp[..20]), 0);
            assert_eq!(sum(rsdp), 0);
            for (_, t) in &tables[1..] {
                assert_eq!(len_field(t), t.len(), "{:?}", &t[..4]);
                if &t[..4] == b"FACS" {
                    continue; // the one table without a checksum
                }
                assert_eq!(sum(t), 0, "{:?}", std::str::from_utf8(&t[..4]));
            }
        }
    }

    #[test]
    fn xsdt_points_at_fadt_and_madt() {
        let tables = build(2, 0x600, ACPI_START).unwrap();
        let find = |sig: &[u8]| {
            tables
                .iter()
                .find(|(_, t)| &t[..4] == sig)
                .map(|(o, t)| (ACPI_START + o, t.clone()))
                .unwrap()
        };
        let (xsdt_addr, xsdt) = find(b"XSDT");
        let rsdp = &tables[0].1;
        assert_eq!(
            u64::from_le_bytes(rsdp[24..32].try_into().unwrap()),
            xsdt_addr
        );
        let e: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(e, vec![find(b"FACP").0, find(b"APIC").0]);
        // FADT: X_DSDT at offset 140, flags at 112, sleep control GAS at 244.
        let (_, fadt) = find(b"FACP");
        assert_eq!(
            u64::from_le_bytes(fadt[140..148].try_into().unwrap()),
            find(b"DSDT").0
        );
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_eq!(
            flags & (1 << 20),
            0,
            "not hardware-reduced: legacy IRQs stay"
        );
        let u32_at = |o: usize| u32::from_le_bytes(fadt[o..o + 4].try_into().unwrap());
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI");
        assert_eq!(u32_at(48), 0, "no SMI command port: always in ACPI mode");
        assert_eq!((u32_at(56), fadt[88]), (0x600, 4), "PM1a event block");
        assert_eq!((u32_at(64), fadt[89]), (0x604, 2), "PM1a control block");
        assert_eq!(fadt[116], 1, "reset register in I/O space");
        assert_eq!(
            u64::from_le_bytes(fadt[120..128].try_into().unwrap()),
            0x606
        );
        assert_eq!(fadt[128], RESET_VALUE);
        let facs = find(b"FACS").0;
        assert_eq!(facs % 64, 0);
        assert_eq!(u64::from_le_bytes(fadt[132..140].try_into().unwrap()), facs);
    }

    #[test]
    fn dsdt_declares_s5() {
        let d = dsdt();
        let pos = d.windows(4).position(|w| w == b"_S5_").unwrap();
        assert_eq!(d[pos - 1], 0x08);
        // NameOp, "_S5_", PackageOp, PkgLength, NumElements=2, 2 × (BytePrefix, 5)
        assert_eq!(
            &d[pos + 4..pos + 11],
            &[0x12, 6, 2, 0x0a, S5_SLEEP_TYPE, 0x0a, S5_SLEEP_TYPE]
        );
    }

    #[test]
    fn madt_lists_cpus_ioapic_and_override() {
        let m = madt(3).unwrap();
        assert_eq!(&m[..4], b"APIC");
        assert_eq!(m[40] & 1, 1, "PCAT_COMPAT");
        assert_eq!(m.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        assert_eq!(
            u32::from_le_bytes(m[36..40].try_into().unwrap()),
            LAPIC_ADDR as u32
        );
        let mut i = 44;
        let mut lapics = Vec::new();
        let mut kinds = Vec::new();
        while i < m.len() {
            let (t, l) = (m[i], m[i + 1] as usize);
            kinds.push(t);
            if t == 0 {
                lapics.push((m[i + 2], m[i + 3], m[i + 4] & 1));
            }
            if t == 1 {
                assert_eq!(m[i + 2], 3, "IOAPIC ID follows the CPUs");
            }
            if t == 2 {
                assert_eq!(
                    (
                        m[i + 3],
                        u32::from_le_bytes(m[i + 4..i + 8].try_into().unwrap())
                    ),
                    (0, 2)
                );
            }
            i += l;
        }
        assert_eq!(i, m.len());
        assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        assert_eq!(kinds, vec![0, 0, 0, 1, 2, 4]);
        assert!(madt(0).is_err());
        assert!(madt(255).is_err());
    }

    #[test]
    fn written_at_acpi_start() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(write_acpi_tables(&mem, 2, 0x600).unwrap(), ACPI_START);
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(ACPI_START)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }
}
