//! The zero page (`struct boot_params`) handed to the kernel in `rsi`.
//!
//! It carries the e820 memory map, where the command line and initramfs
//! are, where the RSDP is, and — for a bzImage — the kernel's own setup
//! header, which the 64-bit entry point reads back (e.g. `init_size`).

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{
    ACPI_START, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START, ZERO_PAGE_ADDR,
};

/// Errors from building or writing the zero page.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// Guest memory does not cover the zero page.
    #[error("cannot write the zero page into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
    /// Guest memory is too small to hold anything above 1 MiB.
    #[error("guest memory of {0:#x} bytes ends below 1 MiB")]
    MemoryTooSmall(u64),
}

/// e820 entry type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 entry type: reserved.
pub const E820_RESERVED: u32 = 2;

const BOOT_FLAG: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader id: we are not one of the registered ones.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Linux's default alignment for a relocatable kernel (16 MiB).
const KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// What the zero page must say.
#[derive(Debug, Clone, Copy)]
pub struct ZeroPageConfig {
    /// Total guest RAM in bytes.
    pub mem_bytes: u64,
    /// Command line address and length (without the NUL).
    pub cmdline: (u64, u32),
    /// Initramfs address and size, if any.
    pub initrd: Option<(u64, u32)>,
    /// The setup header of a bzImage; `None` for an ELF vmlinux.
    pub setup_header: Option<setup_header>,
    /// Address of the ACPI RSDP, if tables were written.
    pub rsdp: Option<u64>,
}

/// The e820 map for a guest with `mem_bytes` of RAM: base memory, the
/// reserved BIOS area (where the ACPI and MP tables are), RAM from 1 MiB to
/// the MMIO gap and, for large guests, RAM above 4 GiB.
pub fn e820_map(mem_bytes: u64) -> Result<Vec<boot_e820_entry>, ParamsError> {
    if mem_bytes <= HIMEM_START {
        return Err(ParamsError::MemoryTooSmall(mem_bytes));
    }
    let entry = |addr: u64, size: u64, type_: u32| boot_e820_entry { addr, size, type_ };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    let low_end = mem_bytes.min(MMIO_GAP_START);
    map.push(entry(HIMEM_START, low_end - HIMEM_START, E820_RAM));
    if mem_bytes > low_end {
        map.push(entry(MMIO_GAP_END, mem_bytes - low_end, E820_RAM));
    }
    Ok(map)
}

/// Builds the zero page.
pub fn build_zero_page(cfg: &ZeroPageConfig) -> Result<boot_params, ParamsError> {
    let mut params = boot_params::default();
    match cfg.setup_header {
        Some(hdr) => params.hdr = hdr,
        None => {
            // An ELF vmlinux has no setup header: give the kernel the fields
            // it checks, as a boot loader would.
            params.hdr.boot_flag = BOOT_FLAG;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
        }
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = cfg.cmdline.0 as u32;
    params.hdr.cmdline_size = cfg.cmdline.1;
    if let Some((addr, size)) = cfg.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size;
    }
    if let Some(rsdp) = cfg.rsdp {
        params.acpi_rsdp_addr = rsdp;
    }
    let map = e820_map(cfg.mem_bytes)?;
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = *entry;
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page at [`ZERO_PAGE_ADDR`].
pub fn write_zero_page<M: GuestMemory>(mem: &M, params: &boot_params) -> Result<(), ParamsError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(ParamsError::Write)
}

/// Default RSDP address for [`ZeroPageConfig::rsdp`].
pub const RSDP_ADDR: u64 = ACPI_START;

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn cfg(mem_bytes: u64) -> ZeroPageConfig {
        ZeroPageConfig {
            mem_bytes,
            cmdline: (0x20000, 42),
            initrd: Some((0x0f00_0000, 0x12345)),
            setup_header: None,
            rsdp: Some(RSDP_ADDR),
        }
    }

    fn ram_total(map: &[boot_e820_entry]) -> u64 {
        map.iter()
            .filter(|e| e.type_ == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn e820_for_small_guest() {
        let mem = 256u64 << 20;
        let map = e820_map(mem).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(
            (map[0].addr, map[0].size, map[0].type_),
            (0, 0x9fc00, E820_RAM)
        );
        assert_eq!({ map[1].type_ }, E820_RESERVED);
        assert_eq!(map[1].addr + map[1].size, HIMEM_START);
        assert_eq!((map[2].addr, map[2].addr + map[2].size), (HIMEM_START, mem));
        // Only the legacy hole between 0x9fc00 and 1 MiB is not RAM.
        assert_eq!(ram_total(&map), mem - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn e820_splits_around_the_mmio_gap() {
        let mem = 6u64 << 30;
        let map = e820_map(mem).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!({ map[3].addr }, 1 << 32);
        assert_eq!({ map[3].size }, mem - MMIO_GAP_START);
        assert_eq!(ram_total(&map), mem - (HIMEM_START - EBDA_START));
        // Entries are sorted and disjoint.
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
    }

    #[test]
    fn e820_exactly_at_the_gap_has_no_high_range() {
        assert_eq!(e820_map(MMIO_GAP_START).unwrap().len(), 3);
        assert_eq!(e820_map(MMIO_GAP_START + 4096).unwrap().len(), 4);
    }

    #[test]
    fn tiny_memory_is_refused() {
        assert!(matches!(
            e820_map(0x8_0000),
            Err(ParamsError::MemoryTooSmall(_))
        ));
    }

    #[test]
    fn zero_page_for_elf() {
        let p = build_zero_page(&cfg(256 << 20)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x0f00_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x12345);
        assert_eq!({ p.acpi_rsdp_addr }, RSDP_ADDR);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].addr }, HIMEM_START);
    }

    #[test]
    fn zero_page_keeps_the_bzimage_header() {
        let mut hdr = setup_header {
            version: 0x020f,
            init_size: 0x123_4000,
            loadflags: 1,
            ..Default::default()
        };
        hdr.header = HDRS_MAGIC;
        let p = build_zero_page(&ZeroPageConfig {
            setup_header: Some(hdr),
            initrd: None,
            ..cfg(128 << 20)
        })
        .unwrap();
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.init_size }, 0x123_4000);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn zero_page_is_written_at_its_address() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let p = build_zero_page(&cfg(256 << 20)).unwrap();
        write_zero_page(&mem, &p).unwrap();
        let back: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        assert_eq!(back.e820_entries, 3);
        assert_eq!({ back.hdr.cmd_line_ptr }, 0x20000);
        // 0x1f1: setup header offset in the zero page; 0x202: "HdrS".
        let magic: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x202)).unwrap();
        assert_eq!(magic, HDRS_MAGIC);
        let e820_count: u8 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x1e8)).unwrap();
        assert_eq!(e820_count, 3);
    }
}
