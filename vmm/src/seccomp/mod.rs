//! Per-thread seccomp filters for the VMM.
//!
//! The VMM reads guest input (exits, virtqueues) on three kinds of
//! threads, and a guest that finds a bug in that code runs its own code
//! with the VMM's rights. Each kind therefore runs under an allowlist of
//! the system calls it makes once the guest can run ([`rules`]), so such
//! code cannot open files, start programs or reach the network from a
//! vCPU thread, say:
//!
//! - **vcpu**: each vCPU thread installs its filter itself right before its
//!   first `KVM_RUN`;
//! - **vmm**: the VMM thread (the event loop) installs its own once the VM
//!   is built and the vCPUs are started, right before the loop;
//! - **fs**: each virtio-fs worker installs its own when it starts, before
//!   the device can be activated.
//!
//! A filter is per thread and inherited by threads created later, so the
//! VMM thread installs its own last: it starts every other thread first.
//! The programs are compiled to BPF once ([`Filters::build`]) before any of
//! those threads starts; installing is one `seccomp` call.
//!
//! A call outside the list traps (`SECCOMP_RET_TRAP`) rather than killing
//! the process straight away: a small async-signal-safe `SIGSYS` handler
//! writes one line to stderr — `husk: seccomp: the vcpu thread made a
//! forbidden system call 41` — which a pod reports as the VMM's last line,
//! then makes the same call again. The kernel, finding `SIGSYS` blocked in
//! its own handler, then applies the signal's default action: the process
//! dies by signal 31 (SIGSYS) as with `SECCOMP_RET_KILL_PROCESS`, so a
//! violation can never be survived, but says where it happened. A call of
//! another architecture kills the process at once (seccompiler's check).
//!
//! `HUSK_SECCOMP=log` turns every filter into a logging one
//! (`SECCOMP_RET_LOG`: the call runs, the kernel logs "audit: type=1326 …
//! syscall=N"), to find what a change to the VMM now calls;
//! `--no-seccomp` turns them off.

pub mod rules;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::sync::Arc;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Errors from compiling or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused a rule set (a bug in [`rules`]).
    #[error("cannot compile the {0} thread's seccomp filter")]
    Compile(ThreadKind, #[source] seccompiler::Error),
    /// The kernel refused the filter.
    #[error("cannot install the {0} thread's seccomp filter")]
    Install(ThreadKind, #[source] seccompiler::Error),
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the seccomp SIGSYS handler")]
    Handler(#[source] std::io::Error),
}

/// The kinds of VMM thread, each with its own allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The VMM thread: event loop, vsock host side, the VM's end.
    Vmm = 1,
    /// A vCPU thread.
    Vcpu = 2,
    /// A virtio-fs worker.
    Fs = 3,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vmm, ThreadKind::Vcpu, ThreadKind::Fs];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Fs => "fs",
        }
    }

    /// Its allowlist.
    pub fn rules(self) -> Result<rules::Rules, seccompiler::Error> {
        match self {
            ThreadKind::Vmm => rules::vmm(),
            ThreadKind::Vcpu => rules::vcpu(),
            ThreadKind::Fs => rules::fs(),
        }
    }

    fn from_u8(v: u8) -> Option<ThreadKind> {
        ThreadKind::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a call outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Report it and kill the process (the default).
    Enforce,
    /// Let it run and have the kernel log it (`HUSK_SECCOMP=log`).
    Log,
}

impl Mode {
    /// [`Mode::Log`] when `HUSK_SECCOMP=log`, else [`Mode::Enforce`].
    pub fn from_env() -> Mode {
        match std::env::var("HUSK_SECCOMP") {
            Ok(v) if v == "log" => Mode::Log,
            _ => Mode::Enforce,
        }
    }
}

/// One thread kind's compiled program.
pub type Program = Arc<BpfProgram>;

/// The compiled programs of every thread kind.
#[derive(Debug, Clone)]
pub struct Filters {
    /// The VMM thread's.
    pub vmm: Program,
    /// Each vCPU thread's.
    pub vcpu: Program,
    /// Each virtio-fs worker's.
    pub fs: Program,
}

/// Compiles `kind`'s allowlist with `mode`'s action for other calls.
pub fn compile(kind: ThreadKind, mode: Mode) -> Result<BpfProgram, SeccompError> {
    let mismatch = match mode {
        Mode::Enforce => SeccompAction::Trap,
        Mode::Log => SeccompAction::Log,
    };
    let err = |e| SeccompError::Compile(kind, e);
    let rules = kind.rules().map_err(err)?;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| err(e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e.into()))
}

impl Filters {
    /// Compiles every kind's program and, in [`Mode::Enforce`], installs the
    /// process's SIGSYS handler. Call before starting the threads, in the
    /// process that installs them: the vmm thread's list names its pid.
    pub fn build(mode: Mode) -> Result<Filters, SeccompError> {
        if mode == Mode::Log {
            eprintln!(
                "husk: warning: seccomp filters only log forbidden system calls (HUSK_SECCOMP=log)"
            );
        } else {
            install_sigsys_handler()?;
        }
        Ok(Filters {
            vmm: Arc::new(compile(ThreadKind::Vmm, mode)?),
            vcpu: Arc::new(compile(ThreadKind::Vcpu, mode)?),
            fs: Arc::new(compile(ThreadKind::Fs, mode)?),
        })
    }
}

thread_local! {
    // This thread's kind once its filter is installed (0: none), for the
    // SIGSYS handler.
    static KIND: Cell<u8> = const { Cell::new(0) };
}

/// Installs `program` on the calling thread as `kind`'s filter (also sets
/// `no_new_privs`, which a filter needs without CAP_SYS_ADMIN).
pub fn install(kind: ThreadKind, program: &BpfProgram) -> Result<(), SeccompError> {
    KIND.with(|k| k.set(kind as u8));
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Install(kind, e))?;
    #[cfg(feature = "test-utils")]
    test_hook::maybe_violate(kind);
    Ok(())
}

/// The `SIGSYS` handler: see the module doc. Only async-signal-safe work:
/// formatting into a stack buffer, `write`, and the trapped call again.
extern "C" fn handle_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if code != SYS_SECCOMP || ctx.is_null() {
        // Not from a filter (someone sent SIGSYS): nothing to report.
        return;
    }
    // SAFETY: with SA_SIGINFO, `ctx` is the interrupted thread's ucontext.
    let regs = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    // On a trap the kernel puts the call number back into rax; the
    // arguments are still in the argument registers.
    let nr = regs[libc::REG_RAX as usize];
    let kind = KIND.with(|k| ThreadKind::from_u8(k.get()));
    let mut line = Line::default();
    line.push(b"husk: seccomp: the ");
    line.push(kind.map_or("unknown", ThreadKind::name).as_bytes());
    line.push(b" thread made a forbidden system call ");
    line.push_num(nr as u64);
    line.push(b"\n");
    // SAFETY: write(2) from a stack buffer of `len` valid bytes; it is
    // async-signal-safe and on every allowlist.
    unsafe { libc::write(libc::STDERR_FILENO, line.buf.as_ptr().cast(), line.len) };
    // SAFETY: the same call with the same arguments traps again (a filter
    // depends only on the call and its arguments), never runs: the kernel
    // then delivers SIGSYS with its default action, ending the process.
    unsafe {
        libc::syscall(
            nr,
            regs[libc::REG_RDI as usize],
            regs[libc::REG_RSI as usize],
            regs[libc::REG_RDX as usize],
            regs[libc::REG_R10 as usize],
            regs[libc::REG_R8 as usize],
            regs[libc::REG_R9 as usize],
        )
    };
}

/// `si_code` of a SIGSYS raised by a seccomp filter.
const SYS_SECCOMP: libc::c_int = 1;

/// A fixed-size line built without allocating (signal handler).
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: sigaction is plain data; all zeroes is a valid start.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handle_sigsys as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: sigemptyset writes into the mask we own.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: installs a handler that only does async-signal-safe work;
    // `act` is valid for the call and no old action is wanted.
    if unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) } != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes one thread kind break its filter on purpose, to show how a
/// violation is reported (`HUSK_SECCOMP_TEST_VIOLATE=vcpu|vmm|fs`; only in
/// builds with the `test-utils` feature).
#[cfg(feature = "test-utils")]
mod test_hook {
    use super::ThreadKind;

    pub(super) fn maybe_violate(kind: ThreadKind) {
        if std::env::var("HUSK_SECCOMP_TEST_VIOLATE").ok().as_deref() == Some(kind.name()) {
            // SAFETY: socket() takes no pointers; it is on no allowlist with
            // AF_INET, so it traps and never returns.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        }
    }
}
