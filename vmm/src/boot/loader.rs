//! Kernel and initramfs loading.
//!
//! Two kernel formats are accepted, both entered directly in 64-bit mode
//! (no firmware, no PVH): an uncompressed ELF `vmlinux`, entered at its ELF
//! entry point, and a `bzImage`, whose protected-mode part is loaded at
//! `code32_start` and entered at its 64-bit entry (`code32_start + 0x200`).
//! This module picks the format, checks the image is one we can boot, and
//! places the initramfs. Both are copied into guest RAM (linux-loader for
//! the kernel). Mapping their pages copy-on-write from the page cache
//! instead saved the copy (milliseconds) but cost more than it saved: a
//! file mapping breaks the guest RAM's 2 MiB pages into 4 KiB ones
//! (vstate::memory), and the kernel's first touch of each of them is then a
//! stage-2 fault. In the nested testbed, as on any host that runs husk
//! inside a VM (CI runners in clouds), each fault is an exit through two
//! hypervisors: launch -> agent ready took 1.71 s mapped against 1.40 s
//! copied (5 interleaved runs each). Firecracker copies too.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::cmdline::ELF_CMDLINE_CAPACITY;
use super::layout::HIMEM_START;

/// Errors from loading the kernel or the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {path}")]
    KernelRead {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither an x86_64 ELF nor a bzImage.
    #[error("{path} is neither an x86_64 ELF vmlinux nor a bzImage")]
    NotAKernel {
        /// The file.
        path: String,
    },
    /// A bzImage that cannot be entered in 64-bit mode.
    #[error("{path} is a bzImage without a 64-bit entry point (boot protocol {version:#x})")]
    No64BitEntry {
        /// The file.
        path: String,
        /// Its boot protocol version.
        version: u16,
    },
    /// linux-loader refused the image or it does not fit in guest memory.
    #[error("cannot load kernel {path} into guest memory")]
    KernelLoad {
        /// The file.
        path: String,
        /// linux-loader's reason.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initramfs file cannot be opened or read.
    #[error("cannot read initramfs {path}")]
    InitrdRead {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs does not fit between the kernel and the end of low memory.
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory above the kernel")]
    InitrdTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// Copying the initramfs into guest memory failed.
    #[error("cannot copy initramfs {path} into guest memory")]
    InitrdCopy {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// The kernel image formats husk boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF vmlinux.
    Elf,
    /// Compressed bzImage with a 64-bit entry point.
    BzImage,
}

const XLF_KERNEL_64: u16 = 1;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 2;
/// Offset of the 64-bit entry point from the start of a bzImage's
/// protected-mode code.
const BZ_ENTRY_64_OFFSET: u64 = 0x200;

/// Recognizes the format from the first bytes of the file.
pub fn detect_format(head: &[u8], path: &str) -> Result<KernelFormat, LoaderError> {
    let not_a_kernel = || LoaderError::NotAKernel {
        path: path.to_string(),
    };
    if head.starts_with(b"\x7fELF") {
        // 64-bit, little endian, EM_X86_64.
        let ok = head.len() >= 20 && head[4] == 2 && head[5] == 1 && head[18..20] == [0x3e, 0];
        return if ok {
            Ok(KernelFormat::Elf)
        } else {
            Err(not_a_kernel())
        };
    }
    if head.len() < 0x218 || head[0x1fe..0x200] != [0x55, 0xaa] || &head[0x202..0x206] != b"HdrS" {
        return Err(not_a_kernel());
    }
    let version = u16::from_le_bytes([head[0x206], head[0x207]]);
    let xloadflags = if version >= 0x020c && head.len() >= 0x238 {
        u16::from_le_bytes([head[0x236], head[0x237]])
    } else {
        0
    };
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoaderError::No64BitEntry {
            path: path.to_string(),
            version,
        });
    }
    Ok(KernelFormat::BzImage)
}

/// Where the kernel landed and what it told us about itself.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The image format.
    pub format: KernelFormat,
    /// 64-bit entry point (guest-physical).
    pub entry: u64,
    /// First byte past everything the kernel occupies while it starts
    /// (image, bss and, for a bzImage, its `init_size`).
    pub end: u64,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
    /// Highest address the initramfs may end at (inclusive).
    pub initrd_addr_max: u64,
}

/// Command line capacity (with the NUL) a kernel accepts, from its first
/// bytes: a bzImage's setup header says (`cmdline_size`, protocol 2.06+),
/// an ELF vmlinux has none and gets x86's COMMAND_LINE_SIZE.
pub fn cmdline_capacity(head: &[u8], format: KernelFormat) -> usize {
    match format {
        KernelFormat::Elf => ELF_CMDLINE_CAPACITY,
        KernelFormat::BzImage => {
            let version = u16::from_le_bytes([head[0x206], head[0x207]]);
            if version >= 0x0206 && head.len() >= 0x23c {
                u32::from_le_bytes([head[0x238], head[0x239], head[0x23a], head[0x23b]]) as usize
                    + 1
            } else {
                256
            }
        }
    }
}

/// A kernel file, opened and recognized but not loaded yet.
#[derive(Debug)]
pub struct KernelProbe {
    /// The open file, rewound.
    pub file: File,
    /// Its format.
    pub format: KernelFormat,
    /// Command line capacity including the NUL.
    pub cmdline_capacity: usize,
}

/// Opens the kernel and checks its format without loading it, so bad input
/// is refused before a VM exists.
pub fn probe_kernel(path: &Path) -> Result<KernelProbe, LoaderError> {
    let name = path.display().to_string();
    let read_err = |source| LoaderError::KernelRead {
        path: name.clone(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = [0u8; 0x240];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(read_err)? {
            0 => break,
            k => n += k,
        }
    }
    let format = detect_format(&head[..n], &name)?;
    let cmdline_capacity = cmdline_capacity(&head[..n], format);
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    Ok(KernelProbe {
        file,
        format,
        cmdline_capacity,
    })
}

/// Loads the kernel into guest memory.
pub fn load_kernel<M: GuestMemory>(
    mem: &M,
    file: &mut File,
    format: KernelFormat,
    path: &Path,
) -> Result<LoadedKernel, LoaderError> {
    let load_err = |source| LoaderError::KernelLoad {
        path: path.display().to_string(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    match format {
        KernelFormat::Elf => {
            let res = Elf::load(mem, None, file, himem).map_err(load_err)?;
            Ok(LoadedKernel {
                format,
                entry: res.kernel_load.0,
                end: res.kernel_end,
                setup_header: None,
                initrd_addr_max: u64::from(u32::MAX),
            })
        }
        KernelFormat::BzImage => {
            let res = BzImage::load(mem, None, file, himem).map_err(load_err)?;
            let hdr = res.setup_header.unwrap_or_default();
            let load = res.kernel_load.0;
            let init_end = load + u64::from(hdr.init_size);
            let initrd_addr_max = if hdr.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
                u64::MAX
            } else if hdr.version >= 0x0203 {
                u64::from(hdr.initrd_addr_max)
            } else {
                0x37ff_ffff
            };
            Ok(LoadedKernel {
                format,
                entry: load + BZ_ENTRY_64_OFFSET,
                end: res.kernel_end.max(init_end),
                setup_header: Some(hdr),
                initrd_addr_max,
            })
        }
    }
}

/// Where an initramfs of `size` bytes goes: page-aligned, as high as low
/// memory and the kernel's `initrd_addr_max` allow, above the kernel.
pub fn initrd_placement(size: u64, low_mem_end: u64, kernel: &LoadedKernel) -> Option<u64> {
    let limit = low_mem_end.min(kernel.initrd_addr_max.saturating_add(1));
    let addr = limit.checked_sub(size)? & !0xfff;
    (addr >= kernel.end).then_some(addr)
}

/// Opens the initramfs (what the CLI validates).
pub fn open_initrd(path: &Path) -> Result<(File, u64), LoaderError> {
    let read_err = |source| LoaderError::InitrdRead {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok((file, meta.len()))
}

/// Copies the initramfs into guest memory; returns its address and size.
pub fn load_initrd<M: GuestMemory>(
    mem: &M,
    file: &mut File,
    size: u64,
    path: &Path,
    low_mem_end: u64,
    kernel: &LoadedKernel,
) -> Result<(u64, u32), LoaderError> {
    let name = || path.display().to_string();
    let size32 =
        u32::try_from(size).map_err(|_| LoaderError::InitrdTooLarge { path: name(), size })?;
    let addr = initrd_placement(size, low_mem_end, kernel)
        .ok_or_else(|| LoaderError::InitrdTooLarge { path: name(), size })?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, size as usize)
        .map_err(|source| LoaderError::InitrdCopy {
            path: name(),
            source,
        })?;
    Ok((addr, size32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bz_head(version: u16, xloadflags: u16) -> Vec<u8> {
        let mut h = vec![0u8; 0x240];
        h[0x1fe] = 0x55;
        h[0x1ff] = 0xaa;
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        h[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        h
    }

    #[test]
    fn cmdline_capacity_from_the_header() {
        let mut h = bz_head(0x020f, 3);
        h[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        assert_eq!(cmdline_capacity(&h, KernelFormat::BzImage), 2048);
        assert_eq!(
            cmdline_capacity(&bz_head(0x0205, 3), KernelFormat::BzImage),
            256
        );
        assert_eq!(cmdline_capacity(&[], KernelFormat::Elf), 2048);
    }

    #[test]
    fn recognizes_formats() {
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        elf.resize(20, 0);
        elf[18] = 0x3e;
        assert_eq!(detect_format(&elf, "k").unwrap(), KernelFormat::Elf);
        assert_eq!(
            detect_format(&bz_head(0x020f, 3), "k").unwrap(),
            KernelFormat::BzImage
        );
    }

    #[test]
    fn refuses_other_files() {
        let mut elf32 = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0];
        elf32.resize(20, 0);
        elf32[18] = 0x03;
        assert!(matches!(
            detect_format(&elf32, "k"),
            Err(LoaderError::NotAKernel { .. })
        ));
        let mut arm = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        arm.resize(20, 0);
        arm[18] = 0xb7;
        assert!(detect_format(&arm, "k").is_err());
        assert!(detect_format(b"#!/bin/sh\necho hi\n", "k").is_err());
        assert!(detect_format(&[], "k").is_err());
        assert!(matches!(
            detect_format(&bz_head(0x020b, 0), "k"),
            Err(LoaderError::No64BitEntry {
                version: 0x020b,
                ..
            })
        ));
    }

    fn kernel(end: u64, initrd_addr_max: u64) -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x100_0000,
            end,
            setup_header: None,
            initrd_addr_max,
        }
    }

    #[test]
    fn initrd_goes_high_and_aligned() {
        let k = kernel(0x200_0000, u64::from(u32::MAX));
        assert_eq!(
            initrd_placement(0x1800, 0x1000_0000, &k),
            Some(0x1000_0000 - 0x2000)
        );
        // Capped by initrd_addr_max.
        let k = kernel(0x200_0000, 0x7ff_ffff);
        assert_eq!(initrd_placement(0x1000, 0x1000_0000, &k), Some(0x7ff_f000));
        // Would overlap the kernel.
        assert_eq!(initrd_placement(0xf00_0000, 0x1000_0000, &k), None);
        assert_eq!(initrd_placement(u64::MAX, 0x1000_0000, &k), None);
    }
}
