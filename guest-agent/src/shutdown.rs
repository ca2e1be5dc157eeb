//! Ending the guest: stop every process, flush file systems, power off.
//!
//! Only PID 1 may broadcast signals with `kill(-1)`: run anywhere else (the
//! host-side test server) that would hit every process of the machine, so the
//! broadcast is refused there and callers stop their own children instead.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::reaper::Reaper;
use crate::{console, sys};

/// How long processes get between SIGTERM and SIGKILL at shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for SIGKILLed processes to be reaped before going on.
const KILL_WAIT: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(20);

/// Reaps until no child is left or `deadline` passes; true if none is left.
fn reap_until_childless(reaper: &Reaper, deadline: Instant) -> bool {
    loop {
        reaper.reap();
        if reaper.childless() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
}

/// As PID 1: SIGTERM to every process, `grace` to exit, then SIGKILL, then
/// reap them all. Does nothing when not PID 1 (see the module doc).
pub fn stop_all_processes(reaper: &Reaper, grace: Duration) {
    if sys::getpid() != 1 {
        return;
    }
    if sys::kill(-1, libc::SIGTERM).is_err() {
        // ESRCH: nothing but us is running.
        reaper.reap();
        return;
    }
    if reap_until_childless(reaper, Instant::now() + grace) {
        return;
    }
    console::line(format_args!(
        "processes still running after {} s: sending SIGKILL",
        grace.as_secs()
    ));
    let _ = sys::kill(-1, libc::SIGKILL);
    if !reap_until_childless(reaper, Instant::now() + KILL_WAIT) {
        console::line(format_args!("some processes did not exit after SIGKILL"));
    }
}

/// Flushes file systems and powers the machine off (ACPI S5: the VMM exits
/// with status 0). Falls back to a reset (the VMM exits 3) if the kernel
/// refuses, and never returns.
pub fn power_off() -> ! {
    sys::sync();
    let err = sys::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    console::line(format_args!("power off failed ({err}); resetting instead"));
    reset()
}

/// Flushes file systems and resets the machine (with `reboot=k` the VMM sees
/// the i8042 reset and exits with status 3). Never returns.
pub fn reset() -> ! {
    sys::sync();
    let err = sys::reboot(libc::LINUX_REBOOT_CMD_RESTART);
    console::line(format_args!("reset failed: {err}"));
    loop {
        // Nothing left to do; PID 1 must not exit (that panics the kernel).
        sleep(Duration::from_secs(3600));
    }
}
