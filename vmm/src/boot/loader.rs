//! Kernel and initramfs loading.
//!
//! Two kernel formats are accepted, both entered directly in 64-bit mode
//! (no firmware, no PVH): an uncompressed ELF `vmlinux`, entered at its ELF
//! entry point, and a `bzImage`, whose protected-mode part is loaded at
//! `code32_start` and entered at its 64-bit entry (`code32_start + 0x200`).
//! This module picks the format, checks the image is one we can boot, and
//! places the initramfs. The ELF segments and the initramfs are mapped
//! copy-on-write from the page cache when their layout allows it (see
//! boot::filemap: start-up time and VMM memory then do not grow with their
//! size); otherwise, and for the bzImage payload (whose file offset is not
//! page-aligned), linux-loader copies them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::cmdline::ELF_CMDLINE_CAPACITY;
use super::filemap::{map_file_range, page_span};
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

/// One PT_LOAD segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// File offset.
    pub offset: u64,
    /// Guest-physical address.
    pub paddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zero: bss).
    pub memsz: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// Entry point and loadable segments of an ELF64 image, if they can be
/// mapped page by page: segments at or above 1 MiB, file offset congruent
/// with the address modulo 4 KiB, no two segments sharing a page. `None`
/// means "let linux-loader copy it" (which also reports malformed files).
pub fn mappable_segments(file: &File) -> Option<(u64, Vec<Segment>)> {
    use std::os::unix::fs::FileExt;
    let mut ehdr = [0u8; 64];
    file.read_exact_at(&mut ehdr, 0).ok()?;
    let (entry, phoff) = (u64_at(&ehdr, 24), u64_at(&ehdr, 32));
    let (phentsize, phnum) = (u16_at(&ehdr, 54), u16_at(&ehdr, 56));
    if phentsize != 56 || phnum == 0 || phnum > 64 || entry < HIMEM_START {
        return None;
    }
    let mut phdrs = vec![0u8; 56 * usize::from(phnum)];
    file.read_exact_at(&mut phdrs, phoff).ok()?;
    let mut segs: Vec<Segment> = phdrs
        .chunks_exact(56)
        .filter(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) == 1) // PT_LOAD
        .map(|p| Segment {
            offset: u64_at(p, 8),
            paddr: u64_at(p, 24),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        })
        .filter(|s| s.filesz > 0)
        .collect();
    segs.sort_by_key(|s| s.paddr);
    let ok = !segs.is_empty()
        && segs.iter().all(|s| {
            s.paddr >= HIMEM_START
                && s.memsz >= s.filesz
                && s.paddr.checked_add(s.memsz).is_some()
                && s.offset % 4096 == s.paddr % 4096
        })
        && segs
            .windows(2)
            .all(|w| page_span(w[0].paddr, w[0].memsz).1 <= page_span(w[1].paddr, w[1].filesz).0);
    ok.then_some((entry, segs))
}

fn map_elf<M: GuestMemory>(mem: &M, file: &File) -> Option<LoadedKernel> {
    let (entry, segs) = mappable_segments(file)?;
    let mut end = 0;
    for s in &segs {
        // The whole segment, bss included, must be guest RAM.
        let last = GuestAddress(s.paddr + s.memsz - 1);
        mem.find_region(last)?;
        map_file_range(mem, file, s.offset, s.paddr, s.filesz).ok()?;
        end = end.max(s.paddr + s.memsz);
    }
    Some(LoadedKernel {
        format: KernelFormat::Elf,
        entry,
        end,
        setup_header: None,
        initrd_addr_max: u64::from(u32::MAX),
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
            if let Some(k) = map_elf(mem, file) {
                return Ok(k);
            }
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
    if map_file_range(mem, file, 0, addr, size).is_err() {
        mem.read_exact_volatile_from(GuestAddress(addr), file, size as usize)
            .map_err(|source| LoaderError::InitrdCopy {
                path: name(),
                source,
            })?;
    }
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

    fn elf_file(segments: &[Segment], entry: u64) -> File {
        let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        e.resize(64, 0);
        e[16..18].copy_from_slice(&2u16.to_le_bytes());
        e[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        e[24..32].copy_from_slice(&entry.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for s in segments {
            let mut p = [0u8; 56];
            p[0..4].copy_from_slice(&1u32.to_le_bytes());
            p[8..16].copy_from_slice(&s.offset.to_le_bytes());
            p[16..24].copy_from_slice(&s.paddr.to_le_bytes());
            p[24..32].copy_from_slice(&s.paddr.to_le_bytes());
            p[32..40].copy_from_slice(&s.filesz.to_le_bytes());
            p[40..48].copy_from_slice(&s.memsz.to_le_bytes());
            e.extend_from_slice(&p);
        }
        // Segment contents: byte value = page index + 1.
        let size = segments
            .iter()
            .map(|s| s.offset + s.filesz)
            .max()
            .unwrap_or(0);
        while (e.len() as u64) < size {
            e.push((e.len() / 4096 + 1) as u8);
        }
        // Tests run in parallel threads of one process: a counter keeps
        // their files apart (two layouts can share a first address).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("husk-elf-{}-{n}", std::process::id()));
        std::fs::write(&path, e).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn elf_segments_are_mapped_with_zeroed_bss() {
        use vm_memory::GuestMemoryMmap;
        let segs = [
            Segment {
                offset: 0x1000,
                paddr: 0x100_0000,
                filesz: 0x1800,
                memsz: 0x3000,
            },
            Segment {
                offset: 0x3000,
                paddr: 0x100_4000,
                filesz: 0x800,
                memsz: 0x800,
            },
        ];
        let f = elf_file(&segs, 0x100_0000);
        let (entry, found) = mappable_segments(&f).unwrap();
        assert_eq!((entry, found.as_slice()), (0x100_0000, &segs[..]));
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x200_0000)]).unwrap();
        let k = load_kernel(
            &mem,
            &mut f.try_clone().unwrap(),
            KernelFormat::Elf,
            Path::new("k"),
        )
        .unwrap();
        assert_eq!((k.entry, k.end), (0x100_0000, 0x100_4800));
        let byte = |a: u64| mem.read_obj::<u8>(GuestAddress(a)).unwrap();
        assert_eq!(byte(0x100_0000), 2, "file page 1");
        assert_eq!(byte(0x100_17ff), 3, "file page 2");
        assert_eq!(byte(0x100_1800), 0, "bss after filesz is zero");
        assert_eq!(byte(0x100_2fff), 0);
        assert_eq!(byte(0x100_4000), 4);
        assert_eq!(byte(0x100_4800), 0);
    }

    #[test]
    fn unmappable_layouts_fall_back() {
        // Offset not congruent with the address.
        let f = elf_file(
            &[Segment {
                offset: 0x1010,
                paddr: 0x100_0000,
                filesz: 0x100,
                memsz: 0x100,
            }],
            0x100_0000,
        );
        assert!(mappable_segments(&f).is_none());
        // Below 1 MiB.
        let f = elf_file(
            &[Segment {
                offset: 0x1000,
                paddr: 0x8000,
                filesz: 0x100,
                memsz: 0x100,
            }],
            0x100_0000,
        );
        assert!(mappable_segments(&f).is_none());
        // Two segments sharing a page.
        let f = elf_file(
            &[
                Segment {
                    offset: 0x1000,
                    paddr: 0x100_0000,
                    filesz: 0x100,
                    memsz: 0x100,
                },
                Segment {
                    offset: 0x1200,
                    paddr: 0x100_0200,
                    filesz: 0x100,
                    memsz: 0x100,
                },
            ],
            0x100_0000,
        );
        assert!(mappable_segments(&f).is_none());
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
