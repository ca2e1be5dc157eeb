//! Zero-copy placement of file contents in guest memory.
//!
//! Copying a 9 MiB vmlinux and a few MiB of initramfs into guest memory
//! costs milliseconds of page faults and memcpy before the first guest
//! instruction, and makes all of it resident. Where a file range and its
//! guest address are congruent modulo the page size, husk instead maps the
//! file's pages over that part of guest RAM, private and copy-on-write: the
//! guest sees the same bytes, pages come from the page cache when first
//! touched, and a guest write copies only that page. The VMM's own memory
//! and start-up time no longer grow with the kernel's size.
//!
//! What callers must know: bytes of the first and last page outside the
//! range come from the file too, so [`map_file_range`] zeroes them (they
//! were zero before, in anonymous guest RAM); and the file should not change
//! while the VM runs (pages not yet touched would show the new content),
//! which holds for build artifacts like kernels and initramfs images.

use std::fs::File;
use std::os::fd::AsRawFd;

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};

/// Why a range could not be mapped (callers fall back to copying).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileMapError {
    /// File offset and guest address differ within a page.
    #[error("file offset {offset:#x} and guest address {addr:#x} are not congruent modulo the page size")]
    Unaligned {
        /// File offset.
        offset: u64,
        /// Guest address.
        addr: u64,
    },
    /// The range is not inside one guest memory region.
    #[error("guest range {addr:#x}+{len:#x} is not inside one memory region")]
    OutOfRegion {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// mmap refused.
    #[error("mmap of the file over guest memory failed (errno {0})")]
    Mmap(i32),
    /// Zeroing the bytes around the range failed.
    #[error("cannot clear guest memory around a mapped file range")]
    Clear,
}

const PAGE: u64 = 4096;

/// Page-granular span `[start, end)` covering `[addr, addr + len)`.
pub fn page_span(addr: u64, len: u64) -> (u64, u64) {
    (addr & !(PAGE - 1), (addr + len).div_ceil(PAGE) * PAGE)
}

/// Checks that `len` bytes at file `offset` can be mapped at guest `addr`.
pub fn check_congruent(offset: u64, addr: u64) -> Result<(), FileMapError> {
    if offset % PAGE == addr % PAGE {
        Ok(())
    } else {
        Err(FileMapError::Unaligned { offset, addr })
    }
}

/// Maps `len` bytes of `file` at `offset` to guest `addr` (private,
/// copy-on-write) and zeroes the rest of the first and last pages.
pub fn map_file_range<M: GuestMemory>(
    mem: &M,
    file: &File,
    offset: u64,
    addr: u64,
    len: u64,
) -> Result<(), FileMapError> {
    if len == 0 {
        return Ok(());
    }
    check_congruent(offset, addr)?;
    let (start, end) = page_span(addr, len);
    let out = || FileMapError::OutOfRegion { addr, len };
    let region = mem.find_region(GuestAddress(start)).ok_or_else(out)?;
    let region_start = region.start_addr().0;
    if end - region_start > region.len() {
        return Err(out());
    }
    let host = mem
        .get_host_address(GuestAddress(start))
        .map_err(|_| out())?;
    let file_start = offset - (addr - start);
    // SAFETY: [host, host + (end - start)) lies inside one guest memory
    // region's mapping (checked above), which `mem` owns and keeps mapped;
    // MAP_FIXED replaces those pages with a private mapping of the same size
    // and protection, so the region stays valid for vm-memory and KVM (whose
    // MMU notifiers see the change). No Rust references into guest memory
    // exist: it is only accessed through volatile copies.
    let ret = unsafe {
        libc::mmap(
            host as *mut libc::c_void,
            (end - start) as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            file_start as libc::off_t,
        )
    };
    if ret == libc::MAP_FAILED {
        return Err(FileMapError::Mmap(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // The page parts outside the range hold neighbouring file bytes: clear.
    let zeros = [0u8; PAGE as usize];
    let head = (addr - start) as usize;
    if head > 0 {
        mem.write_slice(&zeros[..head], GuestAddress(start))
            .map_err(|_| FileMapError::Clear)?;
    }
    let tail = (end - (addr + len)) as usize;
    if tail > 0 {
        mem.write_slice(&zeros[..tail], GuestAddress(addr + len))
            .map_err(|_| FileMapError::Clear)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::GuestMemoryMmap;

    fn temp_file(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "husk-filemap-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn spans_and_congruence() {
        assert_eq!(page_span(0x1000, 0x1000), (0x1000, 0x2000));
        assert_eq!(page_span(0x1010, 0x10), (0x1000, 0x2000));
        assert_eq!(page_span(0x1ff0, 0x20), (0x1000, 0x3000));
        assert!(check_congruent(0x200000, 0x1000000).is_ok());
        assert!(check_congruent(0x3e00, 0x100000).is_err());
    }

    #[test]
    fn maps_bytes_and_clears_around_them() {
        // File: 3 pages of 0xAB; map 5000 bytes from offset 0x1010 at
        // guest 0x10010.
        let file = temp_file(&vec![0xab; 3 * 4096]);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40000)]).unwrap();
        mem.write_slice(&[0x11; 16], GuestAddress(0x10000)).unwrap();
        map_file_range(&mem, &file, 0x1010, 0x10010, 5000).unwrap();
        let mut buf = vec![0u8; 0x3000];
        mem.read_slice(&mut buf, GuestAddress(0x10000)).unwrap();
        assert!(buf[..0x10].iter().all(|b| *b == 0), "head cleared");
        assert!(buf[0x10..0x10 + 5000].iter().all(|b| *b == 0xab));
        assert!(
            buf[0x10 + 5000..0x2000].iter().all(|b| *b == 0),
            "tail cleared"
        );
        // Copy-on-write: guest writes do not reach the file.
        mem.write_slice(&[1, 2, 3], GuestAddress(0x10020)).unwrap();
        let mut back = [0u8; 3];
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut back, 0x1020).unwrap();
        assert_eq!(back, [0xab; 3]);
        // Memory outside the span is untouched.
        let mut after = [0xffu8; 16];
        mem.read_slice(&mut after, GuestAddress(0x12000)).unwrap();
        assert_eq!(after, [0; 16]);
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let file = temp_file(&[1; 4096]);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        assert!(matches!(
            map_file_range(&mem, &file, 0x10, 0x1000, 16),
            Err(FileMapError::Unaligned { .. })
        ));
        assert!(matches!(
            map_file_range(&mem, &file, 0, 0xf000, 0x2000),
            Err(FileMapError::OutOfRegion { .. })
        ));
        assert!(map_file_range(&mem, &file, 0, 0x1000, 0).is_ok());
    }
}
