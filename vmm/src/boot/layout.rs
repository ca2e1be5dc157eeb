//! The guest-physical memory map of a husk microVM (x86_64).
//!
//! Everything the VMM writes into guest memory before the first instruction
//! lives at a fixed address chosen here, so that the boot-table writers, the
//! e820 map and the tests agree on one picture:
//!
//! ```text
//! 0x0000_0500  GDT (5 entries), then a one-entry IDT at 0x540
//! 0x0000_7000  zero page (struct boot_params)
//! 0x0000_8000  boot stack (grows down from 0x8ff0)
//! 0x0000_9000  PML4, PDPT at 0xa000, PD at 0xb000 (identity map of 1 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  end of usable base memory (the rest up to 1 MiB is reserved)
//! 0x000e_0000  ACPI tables (RSDP first), up to 0xeffff
//! 0x000f_0000  MP table (floating pointer first), up to 0xfffff
//! 0x0010_0000  high memory: bzImage protected-mode code at code32_start,
//!              vmlinux at its own physical address (16 MiB)
//!   ...        initramfs at the top of low memory
//! 0xd000_0000  32-bit MMIO gap: virtio-mmio devices, 4 KiB each (IRQs 5-8, 10-15)
//! 0xfec0_0000  IOAPIC;  0xfee0_0000 local APIC
//! 0x1_0000_0000  RAM above 4 GiB when the guest has more than the gap allows
//! ```

use vm_memory::GuestAddress;

/// GDT location (boot protocol selectors 0x10 code and 0x18 data live in it).
pub const GDT_ADDR: u64 = 0x500;
/// IDT location: one empty entry, so any exception escalates to a triple fault.
pub const IDT_ADDR: u64 = 0x540;
/// The zero page handed to the kernel in `rsi`.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 table.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// Page directory (512 × 2 MiB pages = the first 1 GiB).
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line we ever reserve room for (x86 COMMAND_LINE_SIZE is 2048;
/// newer setup headers may ask for more, the space up to the EBDA is free).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// End of usable base memory; above it sits what a PC has as EBDA and ROMs.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (RSDP at the start: Linux also scans 0xe0000..0xfffff for it).
pub const ACPI_START: u64 = 0xe0000;
/// Bytes reserved for the ACPI tables.
pub const ACPI_SIZE: u64 = 0x10000;
/// MP table (floating pointer at the start: Linux scans 0xf0000..0xfffff).
pub const MPTABLE_START: u64 = 0xf0000;
/// Bytes reserved for the MP table.
pub const MPTABLE_SIZE: u64 = 0x10000;
/// First byte of high memory (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap: guest RAM below 4 GiB ends here.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// IOAPIC register window.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC register window.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// virtio-mmio devices: first slot (the start of the MMIO gap).
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
/// Each virtio-mmio device gets one 4 KiB slot.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x1000;
/// Legacy IRQs used by the platform: serial on 4.
pub const SERIAL_IRQ: u32 = 4;
/// IRQs for virtio-mmio devices, in slot order. Devices declared on the
/// kernel command line name a Linux IRQ number, and only the ISA range
/// 0..=15 is identity-mapped to IOAPIC pins (higher GSIs get dynamic
/// numbers), so the free ISA lines are used: not 0-2 (timer, keyboard,
/// cascade), 3-4 (serial ports) or 9 (the ACPI SCI).
pub const VIRTIO_IRQS: [u32; 10] = [5, 6, 7, 8, 10, 11, 12, 13, 14, 15];
/// Last IOAPIC pin (the in-kernel IOAPIC has 24).
pub const IRQ_MAX: u32 = 23;
/// TSS for KVM's real-mode emulation on Intel (three pages below the BIOS).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// I/O port of the ACPI sleep control/status register (hardware-reduced ACPI).
pub const ACPI_SLEEP_PORT: u16 = 0x600;

/// The RAM ranges of a guest with `mem_bytes` of memory: everything below
/// the MMIO gap first, the remainder from 4 GiB up.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, u64)> {
    let low = mem_bytes.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if mem_bytes > low {
        ranges.push((GuestAddress(MMIO_GAP_END), mem_bytes - low));
    }
    ranges
}

/// End (exclusive) of guest RAM below 4 GiB.
pub fn low_mem_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

/// Guest-physical address of virtio-mmio slot `index`.
pub fn virtio_mmio_addr(index: u32) -> u64 {
    VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SLOT_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guest_is_split_around_the_gap() {
        let mem = 4u64 << 30;
        let r = ram_ranges(mem);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(r[1], (GuestAddress(MMIO_GAP_END), mem - MMIO_GAP_START));
        assert_eq!(r[0].1 + r[1].1, mem);
    }

    #[test]
    fn fixed_areas_do_not_overlap() {
        let areas = [
            (GDT_ADDR, 5 * 8),
            (IDT_ADDR, 8),
            (ZERO_PAGE_ADDR, 0x1000),
            (BOOT_STACK_POINTER - 0x800, 0x800),
            (PML4_ADDR, 0x3000),
            (CMDLINE_ADDR, CMDLINE_MAX_SIZE as u64),
            (ACPI_START, ACPI_SIZE),
            (MPTABLE_START, MPTABLE_SIZE),
        ];
        for (i, a) in areas.iter().enumerate() {
            for b in &areas[i + 1..] {
                assert!(
                    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                    "{a:x?} overlaps {b:x?}"
                );
            }
        }
        const {
            assert!(CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
            assert!(MPTABLE_START + MPTABLE_SIZE <= HIMEM_START);
        }
        assert!(virtio_mmio_addr(VIRTIO_IRQS.len() as u32) < IOAPIC_ADDR);
        assert!(!VIRTIO_IRQS.contains(&SERIAL_IRQ));
        assert!(VIRTIO_IRQS.iter().all(|i| (5..16).contains(i) && *i != 9));
    }
}
