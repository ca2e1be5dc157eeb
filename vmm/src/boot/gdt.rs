//! The boot GDT and IDT, and the segment registers that go with them.
//!
//! The 64-bit Linux boot protocol asks for flat descriptors at selector 0x10
//! (code, execute/read) and 0x18 (data, read/write). We add a TSS at 0x20
//! because KVM (VMX) refuses to enter a guest whose TR is unusable. The IDT
//! is a single empty entry: the kernel installs its own before it enables
//! interrupts, and until then any exception becomes a triple fault that the
//! VMM reports as such instead of looping.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{GDT_ADDR, IDT_ADDR};

/// Errors from writing the descriptor tables.
#[derive(Debug, thiserror::Error)]
pub enum GdtError {
    /// Guest memory does not cover the GDT or IDT.
    #[error("cannot write the boot GDT/IDT into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Selector of the 64-bit code segment (boot protocol `__BOOT_CS`).
pub const CODE_SELECTOR: u16 = 0x10;
/// Selector of the data segment (boot protocol `__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;
/// Selector of the task state segment.
pub const TSS_SELECTOR: u16 = 0x20;

/// Builds one 8-byte descriptor. `flags` holds the access byte in bits 0..8
/// and the G/DB/L/AVL nibble in bits 12..16, as in the descriptor itself.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, null, code64, data, TSS.
pub fn boot_gdt() -> [u64; 5] {
    [
        0,
        0,
        gdt_entry(0xa09b, 0, 0xfffff), // code: present, DPL0, exec/read, L=1, G=1
        gdt_entry(0xc093, 0, 0xfffff), // data: present, DPL0, read/write, DB=1, G=1
        gdt_entry(0x808b, 0, 0xfffff), // TSS: present, busy 64-bit TSS, G=1
    ]
}

/// Decodes descriptor `entry` at GDT index `index` into KVM's segment form.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let limit_raw = ((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff);
    let g = ((entry >> 55) & 1) as u8;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            ((limit_raw << 12) | 0xfff) as u32
        } else {
            limit_raw as u32
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// Where the descriptor tables ended up, for the vCPU's special registers.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorTables {
    /// Code segment (CS).
    pub code: kvm_segment,
    /// Data segment (DS, ES, FS, GS, SS).
    pub data: kvm_segment,
    /// Task register.
    pub tss: kvm_segment,
    /// GDT base and limit.
    pub gdt: (u64, u16),
    /// IDT base and limit.
    pub idt: (u64, u16),
}

/// Writes the GDT and the empty IDT and returns the segment registers.
pub fn write_descriptor_tables<M: GuestMemory>(mem: &M) -> Result<DescriptorTables, GdtError> {
    let gdt = boot_gdt();
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(GdtError::Write)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(GdtError::Write)?;
    let at = |sel: u16| segment_from_gdt(gdt[usize::from(sel / 8)], sel / 8);
    Ok(DescriptorTables {
        code: at(CODE_SELECTOR),
        data: at(DATA_SELECTOR),
        tss: at(TSS_SELECTOR),
        gdt: (GDT_ADDR, (gdt.len() * 8 - 1) as u16),
        idt: (IDT_ADDR, 7),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn encodes_flat_segments() {
        // Well-known encodings of flat 4 GiB descriptors.
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xabcde),
            0x120a_9334_5678_bcde
        );
    }

    #[test]
    fn decodes_what_it_encodes() {
        let seg = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 2);
        assert_eq!(seg.selector, 0x10);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(
            (seg.type_, seg.present, seg.s, seg.l, seg.g, seg.db),
            (0xb, 1, 1, 1, 1, 0)
        );
        assert_eq!(seg.unusable, 0);
        // Not present (access byte 0x13): unusable.
        let seg = segment_from_gdt(gdt_entry(0x0013, 0x1234_5678, 0xabcde), 3);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.unusable, 1);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn tables_land_in_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let t = write_descriptor_tables(&mem).unwrap();
        assert_eq!(t.code.selector, CODE_SELECTOR);
        assert_eq!(t.data.selector, DATA_SELECTOR);
        assert_eq!(t.tss.selector, TSS_SELECTOR);
        assert_eq!(t.gdt, (GDT_ADDR, 39));
        assert_eq!(t.idt, (IDT_ADDR, 7));
        let code: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 0x10)).unwrap();
        assert_eq!(code, 0x00af_9b00_0000_ffff);
        let data: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 0x18)).unwrap();
        assert_eq!(data, 0x00cf_9300_0000_ffff);
        let null: u64 = mem.read_obj(GuestAddress(GDT_ADDR)).unwrap();
        assert_eq!(null, 0);
    }

    #[test]
    fn too_small_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        assert!(write_descriptor_tables(&mem).is_err());
    }
}
