//! Mounts one share's FUSE server on a host directory through `/dev/fuse`, exactly the server a
//! guest would get over virtio-fs, until SIGINT/SIGTERM. Used by `scripts/bench-fs.sh` and for
//! poking at a share by hand. Needs root.
//!
//! `fs_mount HOSTDIR MOUNTPOINT [--ro] [--cache never|auto|always] [--threads N] [--count-ops]`
//!
//! `--count-ops` counts the FUSE requests by opcode; on SIGUSR1 the counts since the last
//! SIGUSR1 are printed as one `fs_mount: ops LOOKUP=n CREATE=n ...` line on stdout and reset,
//! so a benchmark can read the round trips per operation of exactly the phase it measured.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::api::server::MetricsHook;
use husk_vmm::fs::host_mount::HostMount;
use husk_vmm::fs::{CacheMode, ShareServer, ShareSpec};

fn usage() -> ExitCode {
    eprintln!(
        "usage: fs_mount HOSTDIR MOUNTPOINT [--ro] [--cache never|auto|always] [--threads N] \
         [--count-ops]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return usage();
    }
    let (mut read_only, mut cache, mut threads) = (false, CacheMode::Auto, 2usize);
    let mut counter = None;
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--ro", _) => read_only = true,
            ("--count-ops", _) => counter = Some(Arc::new(OpCounter::default())),
            ("--cache", Some(v)) => match v.parse() {
                Ok(m) => {
                    cache = m;
                    it.next();
                }
                Err(e) => {
                    eprintln!("fs_mount: {e}");
                    return ExitCode::from(2);
                }
            },
            ("--threads", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => {
                    threads = n;
                    it.next();
                }
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let spec = ShareSpec {
        tag: "bench".into(),
        host_dir: PathBuf::from(&args[0]),
        read_only,
        cache,
    };
    let share = match spec.open() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fs_mount: {e}");
            return ExitCode::from(2);
        }
    };
    let set = block_stop_signals();
    let budget = husk_vmm::fs::share_budgets(1).remove(0);
    let server = match ShareServer::<()>::new(share, budget) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fs_mount: {e}");
            return ExitCode::from(1);
        }
    };
    let hook = counter
        .clone()
        .map(|c| c as husk_vmm::fs::host_mount::RequestHook);
    let mount = match HostMount::mount_with_hook(
        server.server().clone(),
        std::path::Path::new(&args[1]),
        threads,
        false,
        hook,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fs_mount: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "fs_mount: {} mounted on {} (cache={cache}, ro={read_only}, threads={threads})",
        server.spec().host_dir.display(),
        mount.mountpoint().display()
    );
    let _ = std::io::stdout().flush();
    loop {
        let mut sig = 0;
        // SAFETY: `set` is a valid sigset and `sig` a valid out pointer.
        unsafe { libc::sigwait(&set, &mut sig) };
        if sig != libc::SIGUSR1 {
            break;
        }
        if let Some(c) = &counter {
            println!("fs_mount: ops {}", c.take());
            let _ = std::io::stdout().flush();
        }
    }
    drop(mount);
    ExitCode::SUCCESS
}

/// FUSE requests by opcode (index: opcode; the last slot collects unknown ones).
struct OpCounter([AtomicU64; 64]);

impl Default for OpCounter {
    fn default() -> Self {
        OpCounter(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl OpCounter {
    /// `NAME=count` for every opcode seen since the last call, and a reset.
    fn take(&self) -> String {
        let mut out = Vec::new();
        for (op, n) in self.0.iter().enumerate() {
            let n = n.swap(0, Ordering::Relaxed);
            if n > 0 {
                // Opcode 0 does not exist (and `Opcode::from` has no variant for it).
                let name = match op {
                    0 => "0".to_string(),
                    _ => format!("{:?}", Opcode::from(op as u32)).to_uppercase(),
                };
                out.push(format!("{name}={n}"));
            }
        }
        out.join(" ")
    }
}

impl MetricsHook for OpCounter {
    fn collect(&self, ih: &InHeader) {
        let slot = (ih.opcode as usize).min(self.0.len() - 1);
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn release(&self, _oh: Option<&OutHeader>) {}
}

/// Blocks SIGINT/SIGTERM/SIGUSR1 (before any worker exists, so they inherit the mask) and returns the
/// set for sigwait.
fn block_stop_signals() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` points to writable sigset_t storage.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
        // SAFETY: `set` was initialised by sigemptyset.
        unsafe { libc::sigaddset(set.as_mut_ptr(), sig) };
    }
    // SAFETY: sigemptyset initialised every byte of the set.
    let set = unsafe { set.assume_init() };
    // SAFETY: `set` is a valid sigset; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}
