//! Identity page tables for entering the kernel in long mode.
//!
//! The 64-bit boot protocol wants the kernel, the zero page and the command
//! line identity-mapped. One PML4 entry → one PDPT entry → 512 2 MiB pages
//! maps the first 1 GiB, which covers all of them (the initramfs may sit
//! higher: the kernel reaches it through its own page tables).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{PDPT_ADDR, PD_ADDR, PML4_ADDR};

/// Errors from writing the page tables.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// Guest memory does not cover the page-table pages.
    #[error("cannot write the boot page tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes PML4, PDPT and PD; returns the value for CR3.
pub fn write_identity_map<M: GuestMemory>(mem: &M) -> Result<u64, PagingError> {
    let w = |val: u64, addr: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(PagingError::Write)
    };
    w(PDPT_ADDR | PRESENT_RW, PML4_ADDR)?;
    w(PD_ADDR | PRESENT_RW, PDPT_ADDR)?;
    // One write for the whole directory rather than 512 small ones.
    let mut pd = [0u8; 512 * 8];
    for (i, chunk) in pd.chunks_exact_mut(8).enumerate() {
        let entry = ((i as u64) << 21) | PRESENT_RW | PAGE_SIZE_2M;
        chunk.copy_from_slice(&entry.to_le_bytes());
    }
    mem.write_slice(&pd, GuestAddress(PD_ADDR))
        .map_err(PagingError::Write)?;
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn maps_first_gib_with_2m_pages() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(write_identity_map(&mem).unwrap(), PML4_ADDR);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        let pdpt: u64 = mem.read_obj(GuestAddress(PDPT_ADDR)).unwrap();
        assert_eq!(pdpt, PD_ADDR | 3);
        let first: u64 = mem.read_obj(GuestAddress(PD_ADDR)).unwrap();
        assert_eq!(first, 0x83);
        let last: u64 = mem.read_obj(GuestAddress(PD_ADDR + 511 * 8)).unwrap();
        assert_eq!(last, (511u64 << 21) | 0x83);
        // Only one PML4/PDPT entry: the rest stays not-present.
        let pml4_1: u64 = mem.read_obj(GuestAddress(PML4_ADDR + 8)).unwrap();
        assert_eq!(pml4_1, 0);
    }
}
