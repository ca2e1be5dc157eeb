use super::*;

/// A classic-BPF interpreter for the instructions the compiler emits, run
/// on a `seccomp_data` made of these values.
fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        let cond = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        match i.code {
            BPF_LD_W_ABS => {
                let k = i.k as usize;
                a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
            }
            BPF_ALU_AND_K => a &= i.k,
            BPF_JA => pc += i.k as usize,
            BPF_JEQ => pc += cond(a == i.k),
            BPF_JGT => pc += cond(a > i.k),
            BPF_JGE => pc += cond(a >= i.k),
            BPF_RET_K => return i.k,
            other => panic!("unexpected opcode {other:#x} at {}", pc - 1),
        }
    }
}

/// What the profile says, read the slow way.
fn reference(p: &SeccompProfile, nr: u32, args: [u64; 6]) -> u32 {
    for rule in &p.rules {
        if !rule.syscalls.contains(&nr) {
            continue;
        }
        let holds = |c: &SeccompArg| {
            let a = args[c.index as usize];
            match c.op {
                SeccompOp::Eq => a == c.value,
                SeccompOp::Ne => a != c.value,
                SeccompOp::Lt => a < c.value,
                SeccompOp::Le => a <= c.value,
                SeccompOp::Gt => a > c.value,
                SeccompOp::Ge => a >= c.value,
                SeccompOp::MaskedEq => a & c.value == c.value_two,
            }
        };
        if rule.args.iter().all(holds) {
            return ret_value(rule.action);
        }
    }
    ret_value(p.default_action)
}

/// xorshift64*: enough randomness for a test, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Values around the edges of the 32-bit halves, or anything.
    fn value(&mut self) -> u64 {
        const EDGES: [u64; 8] = [
            0,
            1,
            40,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0xffff_ffff_0000_0000,
            u64::MAX,
        ];
        match self.below(3) {
            0 => EDGES[self.below(8) as usize],
            1 => EDGES[self.below(8) as usize]
                .wrapping_add(self.below(3))
                .wrapping_sub(1),
            _ => self.next(),
        }
    }
}

const OPS: [SeccompOp; 7] = [
    SeccompOp::Eq,
    SeccompOp::Ne,
    SeccompOp::Lt,
    SeccompOp::Le,
    SeccompOp::Gt,
    SeccompOp::Ge,
    SeccompOp::MaskedEq,
];

fn arg(index: u8, op: SeccompOp, value: u64, value_two: u64) -> SeccompArg {
    SeccompArg {
        index,
        op,
        value,
        value_two,
    }
}

fn rule(syscalls: &[u32], action: SeccompAction, args: Vec<SeccompArg>) -> SeccompRule {
    SeccompRule {
        syscalls: syscalls.to_vec(),
        action,
        args,
    }
}

const X86_64: u32 = AUDIT_ARCH_X86_64;

#[test]
fn every_comparison_agrees_with_the_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        // A few rules on a few numbers, 1-3 conditions each, mixed actions.
        let mut rules = Vec::new();
        for r in 0..(1 + rng.below(4)) {
            let args = (0..(1 + rng.below(3)))
                .map(|_| {
                    arg(
                        rng.below(6) as u8,
                        OPS[rng.below(7) as usize],
                        rng.value(),
                        rng.value(),
                    )
                })
                .collect();
            rules.push(rule(
                &[rng.below(3) as u32],
                SeccompAction::Errno(r as u16 + 1),
                args,
            ));
        }
        let p = SeccompProfile {
            default_action: SeccompAction::Allow,
            rules,
        };
        let prog = compile(&p).unwrap();
        // The host's bound (checked before a pod exists) holds for what
        // the agent really compiles: the profile behind the guard.
        let guarded = SeccompProfile {
            default_action: p.default_action,
            rules: guard_rules().into_iter().chain(p.rules.clone()).collect(),
        };
        let compiled = compile(&guarded).unwrap().len();
        let bound = husk_proto::security::instruction_bound(&p);
        assert!(
            compiled <= bound,
            "round {round}: {compiled} > bound {bound}"
        );
        for _ in 0..200 {
            let nr = rng.below(4) as u32;
            let args = [(); 6].map(|_| rng.value());
            // Make a condition's own value likely to be met exactly.
            let mut args = args;
            if let Some(c) = p
                .rules
                .iter()
                .flat_map(|r| &r.args)
                .nth(rng.below(3) as usize)
            {
                args[c.index as usize] = match rng.below(3) {
                    0 => c.value,
                    1 => c.value_two,
                    _ => c.value.wrapping_add(1),
                };
            }
            assert_eq!(
                run(&prog, X86_64, nr, args),
                reference(&p, nr, args),
                "round {round}: nr {nr} args {args:x?} profile {p:?}"
            );
        }
    }
}

#[test]
fn dispatch_finds_every_number_and_only_those() {
    // Every other number from 0 to 600, half allowed, half EPERM, one
    // with a conditional rule; default ENOSYS.
    let allowed: Vec<u32> = (0..600).step_by(4).collect();
    let denied: Vec<u32> = (2..600).step_by(4).collect();
    let p = SeccompProfile {
        default_action: SeccompAction::Errno(38),
        rules: vec![
            rule(
                &[8],
                SeccompAction::Errno(22),
                vec![arg(2, SeccompOp::Eq, 9, 0)],
            ),
            rule(&allowed, SeccompAction::Allow, vec![]),
            rule(&denied, SeccompAction::Errno(1), vec![]),
        ],
    };
    let prog = compile(&p).unwrap();
    assert!(prog.len() < 1000, "{} instructions", prog.len());
    for nr in 0..700 {
        for third in [0, 9] {
            let args = [0, 0, third, 0, 0, 0];
            assert_eq!(
                run(&prog, X86_64, nr, args),
                reference(&p, nr, args),
                "nr {nr}"
            );
        }
    }
    // Other architectures are killed; x32 numbers get ENOSYS.
    assert_eq!(run(&prog, 0x4000_0003, 0, [0; 6]), RET_KILL_PROCESS);
    assert_eq!(
        run(&prog, X86_64, X32_SYSCALL_BIT | 4, [0; 6]),
        RET_ERRNO | 38
    );
}

#[test]
fn the_first_matching_rule_wins_and_the_guard_comes_first() {
    let allow_socket = SeccompProfile {
        default_action: SeccompAction::Errno(38),
        rules: vec![rule(
            &[libc::SYS_socket as u32],
            SeccompAction::Allow,
            vec![],
        )],
    };
    let security = SecuritySpec {
        seccomp: Some(allow_socket),
        ..SecuritySpec::default()
    };
    let prog = program_for(&security).unwrap().unwrap();
    let socket = |family: u64| {
        run(
            &prog,
            X86_64,
            libc::SYS_socket as u32,
            [family, 1, 0, 0, 0, 0],
        )
    };
    assert_eq!(socket(libc::AF_VSOCK as u64), RET_ERRNO | 1);
    // The family is an int: garbage in the high half does not get past.
    assert_eq!(
        socket(0xdead_0000_0000_0000 | libc::AF_VSOCK as u64),
        RET_ERRNO | 1
    );
    assert_eq!(socket(libc::AF_INET as u64), RET_ALLOW);
    let setup = libc::SYS_io_uring_setup as u32;
    assert_eq!(run(&prog, X86_64, setup, [0; 6]), RET_ERRNO | 1);
    assert_eq!(
        run(&prog, X86_64, libc::SYS_read as u32, [0; 6]),
        RET_ERRNO | 38
    );
    let privileged = SecuritySpec {
        privileged: true,
        ..SecuritySpec::default()
    };
    assert!(program_for(&privileged).unwrap().is_none());
}

/// What the agent compiled is what the container init installs.
#[test]
fn a_program_crosses_to_the_init_unchanged() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Carried(#[serde(with = "wire")] Option<Program>);
    let fields = |p: &[libc::sock_filter]| -> Vec<(u16, u8, u8, u32)> {
        p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
    };
    let sent = program_for(&SecuritySpec::default()).unwrap();
    let json = serde_json::to_string(&Carried(sent.clone())).unwrap();
    let got: Carried = serde_json::from_str(&json).unwrap();
    assert_eq!(fields(&got.0.unwrap()), fields(&sent.unwrap()));
    let none: Carried = serde_json::from_str("null").unwrap();
    assert!(none.0.is_none());
}

#[test]
fn bad_profiles_are_refused() {
    let p = |rules| SeccompProfile {
        default_action: SeccompAction::Allow,
        rules,
    };
    let bad_index = p(vec![rule(
        &[1],
        SeccompAction::Trap,
        vec![arg(6, SeccompOp::Eq, 0, 0)],
    )]);
    assert!(matches!(
        compile(&bad_index),
        Err(CompileError::BadArgIndex(6))
    ));
    let x32 = p(vec![rule(&[X32_SYSCALL_BIT], SeccompAction::Trap, vec![])]);
    assert!(matches!(compile(&x32), Err(CompileError::BadSyscall(_))));
    // 900 numbers with a conditional rule each do not fit in 4096.
    let nrs: Vec<u32> = (0..900).collect();
    let huge = p(vec![rule(
        &nrs,
        SeccompAction::Trap,
        vec![arg(0, SeccompOp::Eq, 1, 0)],
    )]);
    assert!(matches!(compile(&huge), Err(CompileError::TooLarge(_))));
}

fn errno_of(ret: libc::c_long) -> Option<i32> {
    (ret < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn socket(domain: libc::c_int) -> Option<i32> {
    // SAFETY: socket() with integer arguments; a descriptor it returns
    // is closed right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: closing the descriptor we just got.
        unsafe { libc::close(fd) };
    }
    errno_of(fd as libc::c_long)
}

fn io_uring_setup() -> Option<i32> {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup with 1 entry and a zeroed params block of
    // the kernel's size (it writes into it); a ring it returns is closed.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: closing the ring's descriptor we just got.
        unsafe { libc::close(fd as libc::c_int) };
    }
    errno_of(fd)
}

fn getpriority(which: libc::c_long) -> Option<i32> {
    // SAFETY: getpriority with integer arguments (who 0: this process).
    errno_of(unsafe { libc::syscall(libc::SYS_getpriority, which, 0) })
}

/// Runs `check` on a thread of its own with `no_new_privs` and `program`
/// installed (both are per thread: they end with it).
fn under(program: Program, check: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: prctl with integer arguments, on this thread only.
        let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(nnp, 0);
        install(&program).unwrap();
        check();
    })
    .join()
    .unwrap();
}

/// The filters for real, each on a thread of its own (seccomp and
/// no_new_privs are per thread; the thread ends with its test): the guard
/// alone (no profile) refuses AF_VSOCK and io_uring with EPERM while other
/// sockets work; a profile's conditional rule answers its own errno for the
/// argument it names only. On this host AF_VSOCK may work or fail with
/// EAFNOSUPPORT without a filter, never with EPERM.
#[test]
fn installed_filters_answer_as_compiled() {
    assert!(socket(libc::AF_VSOCK) != Some(libc::EPERM));
    let guard_only = program_for(&SecuritySpec {
        seccomp: None,
        ..SecuritySpec::default()
    })
    .unwrap()
    .unwrap();
    under(guard_only, || {
        assert_eq!(socket(libc::AF_VSOCK), Some(libc::EPERM));
        assert_eq!(io_uring_setup(), Some(libc::EPERM));
        assert_eq!(socket(libc::AF_UNIX), None);
        assert_eq!(socket(libc::AF_INET), None);
    });

    let profile = SeccompProfile {
        default_action: SeccompAction::Allow,
        rules: vec![rule(
            &[libc::SYS_getpriority as u32],
            SeccompAction::Errno(libc::EXDEV as u16),
            vec![arg(0, SeccompOp::Eq, libc::PRIO_PGRP as u64, 0)],
        )],
    };
    let program = program_for(&SecuritySpec {
        seccomp: Some(profile),
        ..SecuritySpec::default()
    })
    .unwrap()
    .unwrap();
    under(program, || {
        assert_eq!(
            getpriority(libc::PRIO_PGRP as libc::c_long),
            Some(libc::EXDEV)
        );
        assert_eq!(getpriority(libc::PRIO_PROCESS as libc::c_long), None);
        assert_eq!(socket(libc::AF_VSOCK), Some(libc::EPERM));
    });
    // The test process itself is unfiltered.
    assert!(socket(libc::AF_VSOCK) != Some(libc::EPERM));
    assert_eq!(getpriority(libc::PRIO_PGRP as libc::c_long), None);
}
