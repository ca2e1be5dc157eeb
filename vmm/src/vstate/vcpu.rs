//! vCPU threads: one per vCPU, each looping on KVM_RUN and dispatching
//! port I/O and MMIO exits to the buses.
//!
//! Stopping: the VMM thread sets the shared stop flag and sends each vCPU
//! thread [`kick_signal`]. The handler sets `immediate_exit` in that
//! thread's `kvm_run`, so a vCPU that was about to enter KVM_RUN returns at
//! once and one inside it returns with EINTR; either way the loop sees the
//! flag and the thread ends. No thread is left inside KVM_RUN when the VMM
//! exits.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_regs, kvm_run, kvm_sregs, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::bus::Bus;
use crate::exit::{ExitReason, ExitSignal};
use crate::seccomp::{self, Program, ThreadKind};

/// Errors from starting vCPU threads.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The thread could not be spawned.
    #[error("cannot start the thread for vCPU {0}")]
    Spawn(u32, #[source] std::io::Error),
}

/// Real-time signal used to kick vCPUs out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

thread_local! {
    // This thread's kvm_run, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's own kvm_run mapping, set
            // by the vCPU loop before its first KVM_RUN and valid while the
            // thread owns its VcpuFd; a signal handler interrupting that
            // thread may write the flag, which KVM reads on entry.
            unsafe { (*run).immediate_exit = 1 };
        }
    });
}

/// Installs the kick handler (once per process, before vCPUs start).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::Signal)
}

/// A vCPU ready to run in its own thread.
pub struct Vcpu {
    /// Index (= APIC ID).
    pub id: u32,
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Where the end of the VM is reported.
    pub exit: Arc<ExitSignal>,
    /// Set by the VMM thread to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Run once right before the first KVM_RUN (the boot trace).
    pub before_first_run: Option<Box<dyn FnOnce() + Send>>,
    /// The vCPU thread's seccomp filter, installed right before the first
    /// KVM_RUN (after the hook above).
    pub seccomp: Option<Program>,
}

/// What one exit means for the loop.
enum Next {
    Continue,
    Exit(ExitReason),
    /// KVM_EXIT_SHUTDOWN: the loop reads the vCPU's state for the report
    /// (the exit borrows the vCPU, so [`handle_exit`] cannot).
    TripleFault,
}

fn handle_exit(exit: VcpuExit<'_>, pio: &Bus, mmio: &Bus, id: u32) -> Next {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !pio.read(u64::from(port), data) {
                // Nothing there: an open bus reads as all ones.
                data.fill(0xff);
            }
            Next::Continue
        }
        VcpuExit::IoOut(port, data) => {
            pio.write(u64::from(port), data);
            Next::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            if !mmio.read(addr, data) {
                data.fill(0);
            }
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            mmio.write(addr, data);
            Next::Continue
        }
        // With the in-kernel LAPIC, HLT is handled inside KVM; if it ever
        // reaches us there is nothing to do but enter again.
        VcpuExit::Hlt => Next::Continue,
        VcpuExit::Shutdown => Next::TripleFault,
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => Next::Exit(ExitReason::PowerOff),
            KVM_SYSTEM_EVENT_RESET => Next::Exit(ExitReason::Reset),
            KVM_SYSTEM_EVENT_CRASH => {
                Next::Exit(ExitReason::Error(format!("vCPU {id}: guest crashed")))
            }
            other => Next::Exit(ExitReason::Error(format!(
                "vCPU {id}: unexpected system event {other}"
            ))),
        },
        VcpuExit::FailEntry(reason, cpu) => Next::Exit(ExitReason::Error(format!(
            "vCPU {id}: KVM could not enter the guest (hardware reason {reason:#x} on host CPU {cpu})"
        ))),
        VcpuExit::InternalError => Next::Exit(ExitReason::Error(format!(
            "vCPU {id}: KVM internal error (emulation failure)"
        ))),
        other => Next::Exit(ExitReason::Error(format!(
            "vCPU {id}: unhandled exit {other:?}"
        ))),
    }
}

impl Vcpu {
    /// Starts the vCPU's thread.
    pub fn spawn(self) -> Result<JoinHandle<()>, VcpuError> {
        let id = self.id;
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || self.run())
            .map_err(|e| VcpuError::Spawn(id, e))
    }

    fn run(mut self) {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run_ptr));
        if let Some(hook) = self.before_first_run.take() {
            hook();
        }
        if let Some(program) = self.seccomp.take() {
            if let Err(e) = seccomp::install(ThreadKind::Vcpu, &program) {
                // Never run the guest unfiltered when a filter was asked for.
                self.exit
                    .request(ExitReason::Error(format!("vCPU {}: {e}", self.id)));
                return;
            }
        }
        let reason = loop {
            if self.stop.load(Ordering::Acquire) {
                break None;
            }
            let next = match self.fd.run() {
                Ok(exit) => handle_exit(exit, &self.pio, &self.mmio, self.id),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // Kicked (or a spurious signal): clear immediate_exit so
                    // a spurious kick does not keep us out of the guest.
                    self.fd.set_kvm_immediate_exit(0);
                    Next::Continue
                }
                Err(e) => Next::Exit(ExitReason::Error(format!(
                    "vCPU {}: KVM_RUN failed: {e}",
                    self.id
                ))),
            };
            match next {
                Next::Continue => {}
                Next::Exit(r) => break Some(r),
                Next::TripleFault => break Some(ExitReason::TripleFault(self.fault_state())),
            }
        };
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
        if let Some(r) = reason {
            self.exit.request(r);
        }
    }

    /// Where the vCPU was when it triple-faulted ([`fault_state`]); None
    /// when KVM will not say.
    fn fault_state(&self) -> Option<String> {
        let regs = self.fd.get_regs().ok()?;
        let sregs = self.fd.get_sregs().ok()?;
        fault_state(self.id, &regs, &sregs)
    }
}

/// The state of vCPU `id` after a triple fault, in one line: the
/// instruction (CS:RIP), stack, flags and the control registers that say
/// which mode and page tables it ran with. None for the architectural reset
/// state (CS 0xf000, RIP 0xfff0): on AMD, KVM reinitialises the vCPU on a
/// shutdown intercept (the VMCB is undefined after one), so what it reads
/// back there is not where the guest was, and the report names the fault
/// alone. Intel keeps the state.
fn fault_state(id: u32, regs: &kvm_regs, sregs: &kvm_sregs) -> Option<String> {
    if sregs.cs.selector == 0xf000 && regs.rip == 0xfff0 {
        return None;
    }
    Some(format!(
        "vCPU {id} at {:04x}:{:x}, RSP {:x}, RFLAGS {:x}, CR0 {:x}, CR2 {:x}, CR3 {:x}, \
         CR4 {:x}, EFER {:x}",
        sregs.cs.selector,
        regs.rip,
        regs.rsp,
        regs.rflags,
        sregs.cr0,
        sregs.cr2,
        sregs.cr3,
        sregs.cr4,
        sregs.efer
    ))
}

/// Stops all vCPU threads and waits for them.
pub fn stop_all(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for t in &threads {
        // A thread that already ended cannot be signalled; that is fine.
        let _ = t.kill(kick_signal());
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_state_names_where_the_vcpu_was_unless_kvm_reset_it() {
        let mut regs = kvm_regs {
            rip: 0x100_0078,
            rsp: 0x8ff0,
            rflags: 0x10002,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0xe000_0011,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        };
        sregs.cs.selector = 0x10;
        assert_eq!(
            fault_state(0, &regs, &sregs).as_deref(),
            Some(
                "vCPU 0 at 0010:1000078, RSP 8ff0, RFLAGS 10002, CR0 e0000011, CR2 0, CR3 9000, \
                 CR4 20, EFER 500"
            )
        );
        // What AMD's KVM reads back after a shutdown intercept: the reset state.
        regs.rip = 0xfff0;
        sregs.cs.selector = 0xf000;
        assert_eq!(fault_state(0, &regs, &sregs), None);
    }
}
