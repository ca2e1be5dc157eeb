//! Everything written into guest memory before the first instruction: the
//! memory map, the kernel and initramfs, the command line, the zero page,
//! the descriptor and page tables, and the MP and ACPI tables.
//!
//! Pure functions over `vm-memory` guest memory, so all of it is unit-tested
//! without /dev/kvm.

pub mod acpi;
pub mod cmdline;
pub mod gdt;
pub mod layout;
pub mod loader;
pub mod mptable;
pub mod paging;
pub mod params;
