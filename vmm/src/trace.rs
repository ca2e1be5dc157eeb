//! Start-up tracing for the boot benchmark (`HUSK_BOOT_TRACE=1`).
//!
//! The benchmark needs "launch → first KVM_RUN" and the VMM's resident
//! memory at that moment. `main` records CLOCK_MONOTONIC as its very first
//! action; the boot vCPU calls [`report_first_run`] right before its first
//! KVM_RUN, which prints one line to stderr with: time since `main`, time
//! since the process was created (from /proc/self/stat, clock-tick
//! resolution), CLOCK_REALTIME in ns (so a launcher can subtract its own
//! launch timestamp exactly), VmRSS, how much of it is guest RAM (the Rss
//! of the mappings inside guest memory, from /proc/self/smaps) and the
//! difference: the VMM's own memory. [`phase`] logs the steps before it.

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

/// Milliseconds since [`mark_main_start`] (for phase logs of `husk run`).
pub fn since_main_ms() -> u64 {
    let start = MAIN_START_NS.load(Ordering::Relaxed);
    clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(start) / 1_000_000
}

/// Whether `HUSK_BOOT_TRACE` asks for the trace.
pub fn enabled() -> bool {
    std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Logs (`HUSK_LOG=info`) that the VMM's start-up step `name` is done,
/// with the time since `main`: where launch -> first KVM_RUN goes, as
/// [`crate::pod::supervisor::phase`] does for a pod's start.
pub fn phase(name: &str) {
    log::info!("start-up: {name} at {} ms", since_main_ms());
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

/// Resident KiB of the mappings that lie inside `ranges` (address,
/// length), summed from smaps-format text.
pub fn resident_kib_in(smaps: &str, ranges: &[(usize, usize)]) -> u64 {
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = ranges
                    .iter()
                    .any(|&(base, len)| start >= base && end <= base + len);
                continue;
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// Prints the trace line; `guest` are the host mappings of guest RAM.
pub fn report_first_run(guest: &[(usize, usize)]) {
    let now = clock_ns(libc::CLOCK_MONOTONIC);
    let realtime = clock_ns(libc::CLOCK_REALTIME);
    let main_ms = now.saturating_sub(MAIN_START_NS.load(Ordering::Relaxed)) as f64 / 1e6;
    let proc_ms = since_process_start_ms();
    let rss_kib = vm_rss_kib().unwrap_or(0);
    let guest_kib = std::fs::read_to_string("/proc/self/smaps")
        .map(|t| resident_kib_in(&t, guest))
        .unwrap_or(0);
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
    fn sums_rss_of_guest_mappings_only() {
        let smaps = "\
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                  12 kB
7f0000100000-7f0000200000 rw-p 00000000 08:01 1234   /boot/vmlinux
Rss:                   8 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 100 kB
";
        let guest = [(0x7f00_0000_0000, 0x20_0000)];
        assert_eq!(resident_kib_in(smaps, &guest), 20);
        assert_eq!(resident_kib_in(smaps, &[]), 0);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(vm_rss_kib().unwrap() > 0);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(resident_kib_in(&smaps, &[(0, usize::MAX)]) > 0);
    }
}
