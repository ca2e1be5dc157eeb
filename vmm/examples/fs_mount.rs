//! Mounts one share's FUSE server on a host directory through `/dev/fuse`, exactly the server a
//! guest would get over virtio-fs, until SIGINT/SIGTERM. Used by `scripts/bench-fs.sh` and for
//! poking at a share by hand. Needs root.
//!
//! `fs_mount HOSTDIR MOUNTPOINT [--ro] [--cache never|auto|always] [--threads N]`

use std::path::PathBuf;
use std::process::ExitCode;

use husk_vmm::fs::host_mount::HostMount;
use husk_vmm::fs::{default_fd_budget, CacheMode, ShareServer, ShareSpec};

fn usage() -> ExitCode {
    eprintln!(
        "usage: fs_mount HOSTDIR MOUNTPOINT [--ro] [--cache never|auto|always] [--threads N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return usage();
    }
    let (mut read_only, mut cache, mut threads) = (false, CacheMode::Auto, 2usize);
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--ro", _) => read_only = true,
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
    let spec = match spec.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fs_mount: {e}");
            return ExitCode::from(2);
        }
    };
    let set = block_stop_signals();
    let server = match ShareServer::<()>::new(&spec, default_fd_budget(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fs_mount: {e}");
            return ExitCode::from(1);
        }
    };
    let mount = match HostMount::mount(
        server.server().clone(),
        std::path::Path::new(&args[1]),
        threads,
        false,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fs_mount: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "fs_mount: {} mounted on {} (cache={cache}, ro={read_only}, threads={threads})",
        spec.host_dir.display(),
        mount.mountpoint().display()
    );
    let mut sig = 0;
    // SAFETY: `set` is a valid sigset and `sig` a valid out pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    drop(mount);
    ExitCode::SUCCESS
}

/// Blocks SIGINT/SIGTERM (before any worker exists, so they inherit the mask) and returns the
/// set for sigwait.
fn block_stop_signals() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` points to writable sigset_t storage.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `set` was initialised by sigemptyset.
        unsafe { libc::sigaddset(set.as_mut_ptr(), sig) };
    }
    // SAFETY: sigemptyset initialised every byte of the set.
    let set = unsafe { set.assume_init() };
    // SAFETY: `set` is a valid sigset; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}
