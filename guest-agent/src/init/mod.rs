//! The agent as the guest's PID 1: boot sequence, signals, shutdown.
//!
//! Boot: take over signals, move onto a tmpfs root, mount the pseudo file
//! systems and cgroup2, attach stdio to /dev/console, print the readiness line
//! `husk-agent: ready cpus=<N> mem_mib=<MiB>`, then act on the command-line
//! flags (`husk.poweroff`, `husk.reboot`, `husk.panic`) or serve requests on vsock.
//!
//! A boot step that fails is printed as one line and the guest is *reset*
//! rather than powered off: the VMM then exits with status 3 ("guest
//! requested a reset") instead of 0, which is the only failure signal there is
//! until the agent can report over vsock.
//!
//! Signals (see `crate::signals`): SIGCHLD reaps; SIGTERM, SIGINT
//! (Ctrl-Alt-Del) and SIGPWR stop every process (SIGTERM, grace period,
//! SIGKILL), sync and power off.

mod cmdline;
mod mounts;

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

pub use cmdline::Flags;
pub use mounts::MountError;

use crate::reaper::Reaper;
use crate::{cgroup, console, shutdown, signals, sys};

/// The vsock port the agent listens on unless `husk.vsock_port=` says otherwise.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

/// A boot step that failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot take over signal handling")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot open /dev/console")]
    Console(#[source] io::Error),
    #[error("cannot read the kernel command line")]
    Cmdline(#[source] io::Error),
    #[error("cannot read the CPU count")]
    Cpus(#[source] io::Error),
    #[error("cannot read MemTotal from /proc/meminfo")]
    Meminfo(#[source] io::Error),
}

/// Runs the agent as PID 1. Never returns: the guest ends by power-off, reset
/// or (with `husk.panic`) by PID 1 exiting.
pub fn run() -> ! {
    let reaper = Arc::new(Reaper::new());
    let flags = match boot(&reaper) {
        Ok(flags) => flags,
        Err(e) => {
            console::line(format_args!("boot failed: {}", console::chain(&e)));
            shutdown::reset();
        }
    };
    if flags.panic {
        console::line(format_args!("husk.panic: exiting PID 1"));
        sys::sync();
        std::process::exit(1);
    }
    if flags.poweroff {
        console::line(format_args!("husk.poweroff: powering off"));
        shutdown::stop_all_processes(&reaper, shutdown::DEFAULT_GRACE);
        shutdown::power_off();
    }
    if flags.reboot {
        console::line(format_args!("husk.reboot: resetting"));
        shutdown::stop_all_processes(&reaper, shutdown::DEFAULT_GRACE);
        shutdown::reset();
    }
    let port = flags.vsock_port.unwrap_or(DEFAULT_VSOCK_PORT);
    crate::server::serve_guest(reaper.clone(), port);
    console::line(format_args!("agent server stopped: powering off"));
    shutdown::stop_all_processes(&reaper, shutdown::DEFAULT_GRACE);
    shutdown::power_off();
}

/// The boot sequence up to and including the readiness line.
fn boot(reaper: &Arc<Reaper>) -> Result<Flags, InitError> {
    take_signals(reaper)?;
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting at once. Refused
    // inside a PID namespace (host tests): harmless.
    let _ = sys::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF);
    mounts::reroot_onto_tmpfs()?;
    mounts::mount_all()?;
    attach_console()?;
    match cgroup::enable_controllers(Path::new(cgroup::ROOT), &cgroup::CONTROLLERS) {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) => console::line(format_args!(
            "cgroup v2 controllers unavailable: {}; containers run without those limits",
            missing.join(" ")
        )),
        Err(e) => console::line(format_args!(
            "cgroup v2 unusable ({}); containers run without limits",
            console::chain(&e)
        )),
    }
    let flags = Flags::from_system().map_err(InitError::Cmdline)?;
    let cpus = sys::online_cpus().map_err(InitError::Cpus)?;
    let mem_mib = mem_total_kib().map_err(InitError::Meminfo)? / 1024;
    console::out(format_args!("ready cpus={cpus} mem_mib={mem_mib}"));
    Ok(flags)
}

fn take_signals(reaper: &Arc<Reaper>) -> Result<(), InitError> {
    let stop_reaper = reaper.clone();
    signals::start(reaper, move |sig| {
        console::line(format_args!(
            "{}: stopping all processes and powering off",
            sys::signal_name(sig)
        ));
        shutdown::stop_all_processes(&stop_reaper, shutdown::DEFAULT_GRACE);
        shutdown::power_off();
    })
    .map_err(InitError::Signals)
}

/// Points stdin, stdout and stderr at /dev/console unless they are open
/// already. The kernel opens the console for init only if the initramfs has
/// the node; otherwise it is opened here, on devtmpfs. (A host test running
/// the agent as PID 1 of a PID namespace keeps its own stdio this way.)
fn attach_console() -> Result<(), InitError> {
    // SAFETY: F_GETFD on a descriptor number only inspects our fd table.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return Ok(());
    }
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(InitError::Console)?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `console` stays open
        // for the call and the old descriptors are ours to replace.
        if unsafe { libc::dup2(console.as_raw_fd(), fd) } < 0 {
            return Err(InitError::Console(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// MemTotal from /proc/meminfo, in KiB.
fn mem_total_kib() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    parse_mem_total_kib(&meminfo)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemTotal line"))
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    let rest = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    rest.trim().strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_parsed_in_kib() {
        let m = "MemTotal:         123904 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total_kib(m), Some(123904));
        assert_eq!(parse_mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total_kib("MemTotal: lots\n"), None);
    }
}
