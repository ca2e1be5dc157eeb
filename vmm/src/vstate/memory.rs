//! Guest RAM: anonymous mappings at host addresses that agree with their
//! guest addresses modulo 2 MiB.
//!
//! KVM maps a guest page with a 2 MiB page table entry only when the host
//! backs it with a huge page (THP) *and* the guest-physical and host-virtual
//! addresses agree modulo 2 MiB. `mmap` gives no such alignment (Linux
//! before 6.7 places large anonymous mappings at any page boundary), so
//! with vm-memory's plain `MmapRegion::new` the host's huge pages were
//! still mapped into the guest 4 KiB at a time: every first touch of guest
//! memory was a separate stage-2 fault. In the nested testbed, where each
//! such fault is an exit through two hypervisors, launch -> agent ready
//! took 1.60 s unaligned against 1.46 s aligned (5 interleaved runs each;
//! Firecracker's guest memory was 2 MiB-aligned in the same runs). QEMU
//! reserves and aligns its RAM blocks the same way (`qemu_ram_mmap`).
//!
//! The mapping is reserved with 2 MiB to spare, the aligned part mapped
//! read-write over it and the spare ends unmapped; vm-memory then wraps it
//! as a region built on a pointer. It is also marked `MADV_HUGEPAGE`, as
//! QEMU and Cloud Hypervisor mark guest RAM by default, so a host whose THP
//! policy is `madvise` backs it with huge pages too; `never` still wins.
//! The cost is the usual one of THP: a guest that touches one byte of a
//! 2 MiB range makes the host allocate all of it.
//!
//! vm-memory does not unmap a region built on a pointer it did not map, so
//! guest RAM stays mapped for the life of the process. A VMM process runs
//! one VM and exits after it (`husk vm`, a pod's VMM), and devices' worker
//! threads may hold the memory until then: unmapping earlier would be the
//! riskier choice.

use std::io;

use vm_memory::mmap::{FromRangesError, MmapRegionBuilder, MmapRegionError};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// The alignment of every guest RAM mapping (an x86_64 huge page).
pub const HUGE_PAGE: usize = 2 << 20;

/// Protection and flags of guest RAM, as vm-memory's own anonymous regions.
const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

fn mmap_error(e: io::Error) -> FromRangesError {
    FromRangesError::MmapRegion(MmapRegionError::Mmap(e))
}

/// Maps `len` bytes of anonymous memory at a host address congruent with
/// the guest address `gpa` modulo [`HUGE_PAGE`].
fn map_aligned(len: usize, gpa: u64) -> io::Result<*mut u8> {
    let offset = (gpa % HUGE_PAGE as u64) as usize;
    let reserve_len = len
        .checked_add(2 * HUGE_PAGE)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new anonymous mapping, no fixed address; the result is
    // checked. PROT_NONE: it only reserves address space.
    let reserve = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserve_len,
            libc::PROT_NONE,
            FLAGS,
            -1,
            0,
        )
    };
    if reserve == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = reserve as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE) + offset;
    // SAFETY: [aligned, aligned + len) lies inside the reservation just made
    // (aligned - start < 2 * HUGE_PAGE), which nothing else uses; MAP_FIXED
    // replaces that part of it with read-write memory.
    let mapped = unsafe {
        libc::mmap(
            aligned as *mut libc::c_void,
            len,
            PROT,
            FLAGS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        // SAFETY: unmaps exactly the reservation made above.
        unsafe { libc::munmap(reserve, reserve_len) };
        return Err(e);
    }
    let (head, tail_start) = (aligned - start, aligned + len);
    let tail = start + reserve_len - tail_start;
    // The unused ends of the reservation go (page aligned: start and len
    // are, and HUGE_PAGE is a multiple of the page size).
    if head > 0 {
        // SAFETY: [start, aligned) is the unused head of our own reservation.
        unsafe { libc::munmap(reserve, head) };
    }
    if tail > 0 {
        // SAFETY: [aligned + len, start + reserve_len) is its unused tail.
        unsafe { libc::munmap(tail_start as *mut libc::c_void, tail) };
    }
    // SAFETY: madvise on the mapping just made; a hint only.
    if unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) } != 0 {
        log::debug!(
            "madvise(MADV_HUGEPAGE) on guest RAM: {}",
            io::Error::last_os_error()
        );
    }
    Ok(aligned as *mut u8)
}

/// Guest memory with one anonymous mapping per range (`(guest address,
/// length)`, both multiples of the page size), each at a host address that
/// agrees with its guest address modulo 2 MiB and marked `MADV_HUGEPAGE`.
pub fn guest_memory(ranges: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, FromRangesError> {
    let mut regions = Vec::with_capacity(ranges.len());
    for &(addr, len) in ranges {
        let ptr = map_aligned(len, addr.0).map_err(mmap_error)?;
        // SAFETY: [ptr, ptr + len) is the read-write mapping just made, which
        // stays mapped for the life of the process (module doc).
        let region = unsafe { MmapRegionBuilder::new(len).with_raw_mmap_pointer(ptr) }
            .with_mmap_prot(PROT)
            .with_mmap_flags(FLAGS)
            .build()?;
        regions
            .push(GuestRegionMmap::new(region, addr).ok_or(FromRangesError::InvalidGuestRegion)?);
    }
    Ok(GuestMemoryMmap::from_regions(regions)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemory, GuestMemoryRegion};

    #[test]
    fn regions_are_aligned_and_usable() {
        let ranges = [
            (GuestAddress(0), 0x9_f000),
            (GuestAddress(0x10_0000), 6 << 20),
        ];
        let mem = guest_memory(&ranges).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        for r in mem.iter() {
            let gpa = r.start_addr().0 as usize;
            let host = mem.get_host_address(r.start_addr()).unwrap() as usize;
            assert_eq!(host % HUGE_PAGE, gpa % HUGE_PAGE, "region at {gpa:#x}");
            // The kernel's VmFlags "hg": marked MADV_HUGEPAGE.
            let head = format!("{host:x}-");
            let flags = smaps
                .split_once(&head)
                .and_then(|(_, rest)| rest.lines().find(|l| l.starts_with("VmFlags:")))
                .unwrap_or_else(|| panic!("no smaps entry at {host:#x}"));
            assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        }
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x10_0000 + (6 << 20) - 4))
            .unwrap();
        let v: u32 = mem
            .read_obj(GuestAddress(0x10_0000 + (6 << 20) - 4))
            .unwrap();
        assert_eq!(v, 0xdead_beef);
        assert!(mem
            .write_obj(1u8, GuestAddress(0x10_0000 + (6 << 20)))
            .is_err());
    }
}
