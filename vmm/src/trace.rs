//! Start-up tracing for the boot benchmark (`HUSK_BOOT_TRACE=1`).
//!
//! The benchmark needs "launch → first KVM_RUN" and the VMM's resident
//! memory at that moment. `main` records CLOCK_MONOTONIC as its very first
//! action; the boot vCPU calls [`report_first_run`] right before its first
//! KVM_RUN, which prints one line to stderr with: time since `main`, time
//! since the process was created (from /proc/self/stat, clock-tick
//! resolution), CLOCK_REALTIME in ns (so a launcher can subtract its own
//! launch timestamp exactly), VmRSS, how much of it is guest RAM (pages of
//! the guest mapping that are resident, via mincore) and the difference:
//! the VMM's own memory.

use std::sync::atomic::{AtomicU64, Ordering};

static MAIN_START_NS: AtomicU64 = AtomicU64::new(0);

/// The environment variable that turns the trace on.
pub const ENV: &str = "HUSK_BOOT_TRACE";

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock ids used here exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records the start of `main`. Call first thing.
pub fn mark_main_start() {
    MAIN_START_NS.store(clock_ns(libc::CLOCK_MONOTONIC), Ordering::Relaxed);
}

/// Whether `HUSK_BOOT_TRACE` asks for the trace.
pub fn enabled() -> bool {
    std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Milliseconds from process creation to now, at clock-tick resolution.
fn since_process_start_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime), counted after the ")" that ends the comm field.
    let after = stat.rsplit_once(')')?.1;
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let now = clock_ns(libc::CLOCK_BOOTTIME) as f64 / 1e6;
    Some(now - start_ticks as f64 * 1000.0 / hz)
}

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resident bytes of the host mappings `ranges` (address, length).
pub fn resident_bytes(ranges: &[(usize, usize)]) -> u64 {
    const PAGE: usize = 4096;
    let mut total = 0u64;
    let mut vec = vec![0u8; 4096];
    for &(addr, len) in ranges {
        let mut off = 0;
        while off < len {
            let chunk = (len - off).min(vec.len() * PAGE);
            // SAFETY: [addr+off, addr+off+chunk) lies inside a live mapping
            // (guest memory owned by the caller) and `vec` has one byte per
            // page of the chunk.
            let rc = unsafe {
                libc::mincore((addr + off) as *mut libc::c_void, chunk, vec.as_mut_ptr())
            };
            if rc != 0 {
                return total;
            }
            let pages = chunk.div_ceil(PAGE);
            total += vec[..pages].iter().filter(|b| *b & 1 != 0).count() as u64 * PAGE as u64;
            off += chunk;
        }
    }
    total
}

/// Prints the trace line; `guest` are the host mappings of guest RAM.
pub fn report_first_run(guest: &[(usize, usize)]) {
    let now = clock_ns(libc::CLOCK_MONOTONIC);
    let realtime = clock_ns(libc::CLOCK_REALTIME);
    let main_ms = (now - MAIN_START_NS.load(Ordering::Relaxed)) as f64 / 1e6;
    let proc_ms = since_process_start_ms();
    let rss_kib = vm_rss_kib().unwrap_or(0);
    let guest_kib = resident_bytes(guest) / 1024;
    eprintln!(
        "husk: boot-trace first_kvm_run main_ms={main_ms:.3} process_ms={} realtime_ns={realtime} \
         vm_rss_kib={rss_kib} guest_resident_kib={guest_kib} vmm_own_kib={}",
        proc_ms.map_or("?".to_string(), |m| format!("{m:.0}")),
        rss_kib.saturating_sub(guest_kib)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_counts_touched_pages_only() {
        let len = 64 * 4096;
        // SAFETY: anonymous private mapping, checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(resident_bytes(&[(p as usize, len)]), 0);
        // SAFETY: the mapping made above is `len` bytes, readable and writable.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
        for i in [0usize, 5, 63] {
            bytes[i * 4096] = 1;
        }
        assert_eq!(resident_bytes(&[(p as usize, len)]), 3 * 4096);
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(p, len) };
        assert!(vm_rss_kib().unwrap() > 0);
    }
}
