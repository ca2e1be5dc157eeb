//! The seccomp filter of app processes: the container's profile (docker's
//! and podman's default unless the user chose another, issue 13) behind
//! the agent's own host-boundary guard (security review F11).
//!
//! **The guard.** Only the agent may talk to the host: the host side of
//! virtio-vsock is the pod's supervisor, and nothing in the guest but the
//! agent's own connection is meant to reach it. A root app could otherwise
//! open `AF_VSOCK` sockets to the host (CID 2) and speak to whatever
//! listens there; namespaces do not help (vsock is not network-namespaced).
//! So, whatever the profile, `socket(AF_VSOCK, …)` and `io_uring_setup`,
//! `io_uring_enter` and `io_uring_register` fail with `EPERM` (io_uring
//! opens sockets with `IORING_OP_SOCKET`, past a filter on `socket`; EPERM
//! is what a kernel with `kernel.io_uring_disabled=2` answers). The guard's
//! rules come first, so a profile cannot allow what it denies; only
//! `--privileged` (every capability: such an app could get past any filter
//! of ours, e.g. by tracing the agent) runs without any filter.
//!
//! **The profile** arrives resolved by the host ([`SeccompProfile`]:
//! system call numbers, actions, argument conditions) and is compiled here
//! to one classic-BPF program. seccompiler (the VMM's compiler) gives one
//! filter a single match action, while an OCI profile mixes them (ALLOW,
//! ERRNO(EPERM), ERRNO(ENOSYS), ERRNO(EINVAL) in docker's and podman's),
//! so the compiler is this module's own:
//!
//! 1. the architecture: anything but x86-64 (32-bit `int 0x80`, where
//!    `socketcall` could open a socket) kills the process — the guest
//!    kernel builds neither IA32 emulation nor x32, so no app meets it;
//!    x32 numbers (bit 30) fail with ENOSYS, as they would in that kernel;
//! 2. the number, found by a binary search over the profile's numbers
//!    (about 9 comparisons for docker's ~370 calls instead of a scan);
//! 3. that number's rules, in order: each condition compares the 64-bit
//!    argument as two 32-bit halves; the first rule whose conditions all
//!    hold returns its action; a rule without conditions always does;
//!    no match: the default action.
//!
//! Calls whose only rule is an unconditional action share one `RET`, so
//! podman's profile compiles to 1,123 instructions (the kernel
//! takes 4,096). The program is built once per container, when the agent
//! creates it (a profile that does not compile refuses the request), and
//! handed to the container init ([`wire`]) and to each `exec`; the child
//! only makes the `seccomp` system call on it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use husk_proto::{SeccompAction, SeccompArg, SeccompOp, SeccompProfile, SeccompRule, SecuritySpec};

/// A compiled filter, ready to install (shared: it is only read).
pub type Program = Arc<[libc::sock_filter]>;

/// The errno the guard answers.
pub const DENIED_ERRNO: i32 = libc::EPERM;

pub use husk_proto::security::MAX_INSTRUCTIONS;

/// x32 system calls are the x86-64 numbers with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

// `struct seccomp_data`: nr, arch, instruction pointer, then six u64 args.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

// Classic BPF opcodes (linux/bpf_common.h).
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_JA: u16 = 0x05;
const BPF_JEQ: u16 = 0x05 | 0x10;
const BPF_JGT: u16 = 0x05 | 0x20;
const BPF_JGE: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// A profile that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("system call number {0} is not an x86-64 one")]
    BadSyscall(u32),
    #[error("argument index {0} is out of range (0 to 5)")]
    BadArgIndex(u8),
    #[error("the profile compiles to {0} BPF instructions; the kernel takes {MAX_INSTRUCTIONS}")]
    TooLarge(usize),
    #[error("internal: jump of {0} instructions in a condition")]
    FarJump(usize),
}

/// The value a filter returns for `action`.
fn ret_value(action: SeccompAction) -> u32 {
    match action {
        SeccompAction::Allow => RET_ALLOW,
        SeccompAction::Errno(e) => RET_ERRNO | u32::from(e),
        SeccompAction::KillThread => RET_KILL_THREAD,
        SeccompAction::KillProcess => RET_KILL_PROCESS,
        SeccompAction::Trap => RET_TRAP,
        SeccompAction::Trace(v) => RET_TRACE | u32::from(v),
        SeccompAction::Log => RET_LOG,
    }
}

/// The guard's rules (see the module doc), put in front of every profile.
pub fn guard_rules() -> Vec<SeccompRule> {
    let deny = SeccompAction::Errno(DENIED_ERRNO as u16);
    vec![
        SeccompRule {
            syscalls: vec![libc::SYS_socket as u32],
            action: deny,
            // The family is an int: its low 32 bits, whatever the high ones.
            args: vec![SeccompArg {
                index: 0,
                op: SeccompOp::MaskedEq,
                value: 0xffff_ffff,
                value_two: libc::AF_VSOCK as u64,
            }],
        },
        SeccompRule {
            syscalls: vec![
                libc::SYS_io_uring_setup as u32,
                libc::SYS_io_uring_enter as u32,
                libc::SYS_io_uring_register as u32,
            ],
            action: deny,
            args: Vec::new(),
        },
    ]
}

/// The filter for a container's processes: `None` for a privileged one;
/// else its profile (everything allowed without one) behind the guard.
pub fn program_for(security: &SecuritySpec) -> Result<Option<Program>, CompileError> {
    if security.privileged {
        return Ok(None);
    }
    let allow_all = SeccompProfile {
        default_action: SeccompAction::Allow,
        rules: Vec::new(),
    };
    let profile = security.seccomp.as_ref().unwrap_or(&allow_all);
    let mut rules = guard_rules();
    rules.extend(profile.rules.iter().cloned());
    let guarded = SeccompProfile {
        default_action: profile.default_action,
        rules,
    };
    Ok(Some(compile(&guarded)?.into()))
}

/// Where a conditional jump goes: the next instruction or a label.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Label(usize),
}

enum Op {
    Stmt(u16, u32),
    Jump(u16, u32, Target, Target),
    /// Unconditional jump (32-bit offset) to a label.
    Goto(usize),
    Label(usize),
}

/// An assembler with labels: conditional jumps reach at most 255
/// instructions ahead, so far targets go through `Goto`.
#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn place(&mut self, l: usize) {
        self.ops.push(Op::Label(l));
    }

    fn load(&mut self, offset: u32) {
        self.ops.push(Op::Stmt(BPF_LD_W_ABS, offset));
    }

    fn ret(&mut self, value: u32) {
        self.ops.push(Op::Stmt(BPF_RET_K, value));
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Jump(code, k, jt, jf));
    }

    /// If `A <code> k`, go to `far` (any distance).
    fn jump_far_if(&mut self, code: u16, k: u32, far: usize) {
        let skip = self.label();
        self.jump(code, k, Target::Next, Target::Label(skip));
        self.ops.push(Op::Goto(far));
        self.place(skip);
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>, CompileError> {
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for op in &self.ops {
            match op {
                Op::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        if pc > MAX_INSTRUCTIONS {
            return Err(CompileError::TooLarge(pc));
        }
        let mut out = Vec::with_capacity(pc);
        for op in self.ops {
            let here = out.len();
            let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
            match op {
                Op::Label(_) => continue,
                Op::Stmt(code, k) => out.push(insn(code, 0, 0, k)),
                Op::Goto(l) => out.push(insn(BPF_JA, 0, 0, (at[l] - here - 1) as u32)),
                Op::Jump(code, k, jt, jf) => {
                    let off = |t| match t {
                        Target::Next => Ok(0),
                        Target::Label(l) => {
                            let d = at[l] - here - 1;
                            u8::try_from(d).map_err(|_| CompileError::FarJump(d))
                        }
                    };
                    out.push(insn(code, off(jt)?, off(jf)?, k));
                }
            }
        }
        Ok(out)
    }
}

/// Emits a test of `arg`: falls through when it holds, goes to `fail`
/// (a nearby label) when not.
fn condition(asm: &mut Asm, arg: &SeccompArg, fail: usize) {
    use Target::{Label, Next};
    let lo = OFF_ARGS + 8 * u32::from(arg.index);
    let hi = lo + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (vh, vl) = split(arg.value);
    let fail = Label(fail);
    let pass = asm.label();
    match arg.op {
        SeccompOp::Eq => {
            asm.load(hi);
            asm.jump(BPF_JEQ, vh, Next, fail);
            asm.load(lo);
            asm.jump(BPF_JEQ, vl, Next, fail);
        }
        SeccompOp::Ne => {
            asm.load(hi);
            asm.jump(BPF_JEQ, vh, Next, Label(pass));
            asm.load(lo);
            asm.jump(BPF_JEQ, vl, fail, Next);
        }
        // Unsigned 64-bit: decided by the high halves unless they are equal.
        SeccompOp::Gt | SeccompOp::Ge => {
            asm.load(hi);
            asm.jump(BPF_JGT, vh, Label(pass), Next);
            asm.jump(BPF_JEQ, vh, Next, fail);
            asm.load(lo);
            let code = if arg.op == SeccompOp::Gt {
                BPF_JGT
            } else {
                BPF_JGE
            };
            asm.jump(code, vl, Next, fail);
        }
        // LT is "not GE", LE "not GT".
        SeccompOp::Lt | SeccompOp::Le => {
            asm.load(hi);
            asm.jump(BPF_JGT, vh, fail, Next);
            asm.jump(BPF_JEQ, vh, Next, Label(pass));
            asm.load(lo);
            let code = if arg.op == SeccompOp::Lt {
                BPF_JGE
            } else {
                BPF_JGT
            };
            asm.jump(code, vl, fail, Next);
        }
        SeccompOp::MaskedEq => {
            let (mh, ml) = (vh, vl);
            let (eh, el) = split(arg.value_two);
            asm.load(hi);
            asm.ops.push(Op::Stmt(BPF_ALU_AND_K, mh));
            asm.jump(BPF_JEQ, eh, Next, fail);
            asm.load(lo);
            asm.ops.push(Op::Stmt(BPF_ALU_AND_K, ml));
            asm.jump(BPF_JEQ, el, Next, fail);
        }
    }
    asm.place(pass);
}

/// Dispatch on the loaded number over `nrs` (sorted): a binary search
/// down to runs of at most 4, each number going to its block.
fn dispatch(asm: &mut Asm, nrs: &[u32], block: &HashMap<u32, usize>, default: usize) {
    if nrs.len() <= 4 {
        for nr in nrs {
            asm.jump_far_if(BPF_JEQ, *nr, block[nr]);
        }
        asm.ops.push(Op::Goto(default));
        return;
    }
    let mid = nrs.len() / 2;
    let upper = asm.label();
    asm.jump_far_if(BPF_JGE, nrs[mid], upper);
    dispatch(asm, &nrs[..mid], block, default);
    asm.place(upper);
    dispatch(asm, &nrs[mid..], block, default);
}

/// One rule of one number: its conditions and action.
type Rule<'a> = (&'a [SeccompArg], SeccompAction);

/// Compiles `profile` (see the module doc).
pub fn compile(profile: &SeccompProfile) -> Result<Vec<libc::sock_filter>, CompileError> {
    // Each number's rules, in profile order.
    let mut per_nr: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for rule in &profile.rules {
        if let Some(a) = rule.args.iter().find(|a| a.index > 5) {
            return Err(CompileError::BadArgIndex(a.index));
        }
        for &nr in &rule.syscalls {
            if nr >= X32_SYSCALL_BIT {
                return Err(CompileError::BadSyscall(nr));
            }
            per_nr
                .entry(nr)
                .or_default()
                .push((&rule.args, rule.action));
        }
    }
    let mut asm = Asm::default();
    let default = asm.label();
    let kill = asm.label();
    let enosys = asm.label();
    asm.load(OFF_ARCH);
    let arch_ok = asm.label();
    asm.jump(
        BPF_JEQ,
        AUDIT_ARCH_X86_64,
        Target::Label(arch_ok),
        Target::Next,
    );
    asm.ops.push(Op::Goto(kill));
    asm.place(arch_ok);
    asm.load(OFF_NR);
    asm.jump_far_if(BPF_JGE, X32_SYSCALL_BIT, enosys);

    // A block per number, except that numbers whose first rule has no
    // condition share one `RET` per action.
    let mut shared: HashMap<SeccompAction, usize> = HashMap::new();
    let mut block: HashMap<u32, usize> = HashMap::new();
    let mut own: Vec<(usize, &Vec<Rule>)> = Vec::new();
    for (&nr, rules) in &per_nr {
        let label = match rules.first() {
            Some(([], action)) => *shared.entry(*action).or_insert_with(|| asm.label()),
            _ => {
                let l = asm.label();
                own.push((l, rules));
                l
            }
        };
        block.insert(nr, label);
    }
    let nrs: Vec<u32> = per_nr.keys().copied().collect();
    dispatch(&mut asm, &nrs, &block, default);

    for (label, rules) in own {
        asm.place(label);
        let mut unconditional = false;
        for (args, action) in rules {
            if args.is_empty() {
                asm.ret(ret_value(*action));
                unconditional = true;
                break;
            }
            let next = asm.label();
            for arg in args.iter() {
                condition(&mut asm, arg, next);
            }
            asm.ret(ret_value(*action));
            asm.place(next);
        }
        if !unconditional {
            asm.ops.push(Op::Goto(default));
        }
    }
    let mut shared: Vec<_> = shared.into_iter().collect();
    shared.sort_by_key(|&(_, l)| l);
    for (action, label) in shared {
        asm.place(label);
        asm.ret(ret_value(action));
    }
    asm.place(default);
    asm.ret(ret_value(profile.default_action));
    asm.place(kill);
    asm.ret(RET_KILL_PROCESS);
    asm.place(enosys);
    asm.ret(RET_ERRNO | libc::ENOSYS as u32);
    asm.finish()
}

/// A compiled program on its way to the container init, which is a fresh
/// exec of the agent and so cannot share the agent's copy: one number per
/// instruction (`code << 48 | jt << 40 | jf << 32 | k`). The agent compiles
/// once, at create, and both the init and every `exec` install that.
pub mod wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Program;

    fn pack(i: &libc::sock_filter) -> u64 {
        u64::from(i.code) << 48 | u64::from(i.jt) << 40 | u64::from(i.jf) << 32 | u64::from(i.k)
    }

    fn unpack(v: u64) -> libc::sock_filter {
        libc::sock_filter {
            code: (v >> 48) as u16,
            jt: (v >> 40) as u8,
            jf: (v >> 32) as u8,
            k: v as u32,
        }
    }

    pub fn serialize<S: Serializer>(p: &Option<Program>, s: S) -> Result<S::Ok, S::Error> {
        p.as_ref()
            .map(|p| p.iter().map(pack).collect::<Vec<u64>>())
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Program>, D::Error> {
        let v: Option<Vec<u64>> = Option::deserialize(d)?;
        Ok(v.map(|v| v.into_iter().map(unpack).collect()))
    }
}

/// Installs `program` on the calling thread. Needs `no_new_privs` or
/// CAP_SYS_ADMIN. Only a system call: safe between fork and exec.
pub fn install(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `prog` and the `len`
    // instructions it points to, which outlive the call; the kernel copies
    // them (and never writes through the pointer).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
