//! The container init: `husk-agent container-init`, PID 1 of a container.
//!
//! The agent starts it (a fresh exec of its own binary, so it runs
//! single-threaded) in new mount, PID, UTS and IPC namespaces and the
//! container's cgroup. It reads its [`InitConfig`] from fd 3, switches to the
//! container's root with `pivot_root`, mounts /proc, /sys, /dev, /dev/pts,
//! /dev/shm and /tmp, then the volumes and `--tmpfs` mounts, makes its root
//! `nodev` (and read-only with `--read-only`), sets the hostname, then
//! starts the app (with the container's capabilities, [`super::privs`],
//! `no_new_privs` if asked, and its seccomp filter, [`super::seccomp`])
//! and stays as a minimal init: it forwards signals to
//! the app and reaps every orphan of the container, so no zombie survives.
//! When the app exits it writes `code N` / `signal N` to fd 4 and exits; the
//! kernel then kills whatever is left in the namespace.
//!
//! The container's /dev is a `nodev` tmpfs (security review F11), and so is
//! every other file system the app can write (its root, /tmp, /dev/shm,
//! volumes, tmpfs mounts): a device node made with CAP_MKNOD does not
//! open, so it cannot reach the guest's console or memory through one. The
//! usual nodes (null, zero, full, random, urandom, tty) are the guest's
//! own, cloned read-only before `pivot_root` and bind-mounted in
//! ([`binds::detach_device`]).
//!
//! With a TTY the init opens the app's terminal from the container's own
//! devpts (so the app finds it under /dev/pts) and keeps the master open;
//! the agent copies it with `pidfd_getfd`.
//!
//! Protocol on fd 4 (one line each): `started <pid>` once the app runs
//! (`started <pid> <master fd>` with a TTY), or `error <message>` if setup
//! failed; later the final status line.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::Path;
use std::process::Stdio;

use husk_proto::{MountSpec, SecuritySpec, TtySize};
use serde::{Deserialize, Serialize};

use super::binds;
use crate::reaper::{Exit, Reaper};
use crate::rooted::Root;
use crate::supervise::{spawn, tty, Ids, Launch};
use crate::sys;

/// Descriptor the agent passes the configuration on.
pub const CONFIG_FD: i32 = 3;
/// Descriptor the init reports on.
pub const STATUS_FD: i32 = 4;

/// What the agent tells the container init.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub rootfs: String,
    pub hostname: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rlimits: Vec<(i32, u64, u64)>,
    pub tty: bool,
    #[serde(default)]
    pub tty_size: Option<TtySize>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// What the app runs with; its seccomp profile is left out, as the
    /// agent sends it compiled (`seccomp`).
    #[serde(default)]
    pub security: SecuritySpec,
    /// The app's filter, compiled by the agent (`None`: privileged).
    #[serde(default, with = "super::seccomp::wire")]
    pub seccomp: Option<super::seccomp::Program>,
}

#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("cannot read the configuration")]
    Config(#[source] io::Error),
    #[error("malformed configuration")]
    ConfigJson(#[source] serde_json::Error),
    #[error("{what}")]
    Setup {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] spawn::SpawnError),
}

fn setup_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Setup { what, source }
}

/// Entry point of `husk-agent container-init`; returns the exit code.
pub fn main() -> i32 {
    // SAFETY: fd 4 was placed by the agent for us; we take ownership once.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    for fd in [CONFIG_FD, STATUS_FD] {
        // SAFETY: F_SETFD on our own descriptors: keep them from the app.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let signals = forwardable_signals();
    let set = sys::SigSet::of(&signals);
    let reaper = Reaper::new();
    let app = match set
        .block()
        .map_err(setup_err("cannot block signals"))
        .and_then(|()| setup_and_start(&reaper))
    {
        Ok(app) => app,
        Err(e) => {
            let _ = writeln!(status, "error {}", crate::console::chain(&e));
            return 127;
        }
    };
    // The terminal master stays open here for the container's life: the
    // agent copies it with pidfd_getfd after reading this line.
    let (pid, exit, master) = app;
    let _ = match &master {
        Some(m) => writeln!(status, "started {pid} {}", m.as_raw_fd()),
        None => writeln!(status, "started {pid}"),
    };
    detach_stdio();
    for &sig in &signals {
        let _ = sys::install_noop_handler(sig);
    }
    loop {
        let sig = match set.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig == libc::SIGCHLD {
            reaper.reap();
            if let Ok(e) = exit.try_recv() {
                let line = match e {
                    Exit::Code(c) => format!("code {c}"),
                    Exit::Signal(s) => format!("signal {s}"),
                };
                let _ = writeln!(status, "{line}");
                return 0;
            }
        } else {
            let _ = sys::kill(pid, sig);
        }
    }
}

/// Signals the init catches: everything but SIGKILL and SIGSTOP (which
/// cannot be caught) in the classic range.
pub fn forwardable_signals() -> Vec<libc::c_int> {
    (1..32)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
        .collect()
}

/// The app's pid, its exit, and its terminal's master (with a TTY).
type Started = (i32, std::sync::mpsc::Receiver<Exit>, Option<OwnedFd>);

fn setup_and_start(reaper: &Reaper) -> Result<Started, InitError> {
    // SAFETY: fd 3 was placed by the agent for us; we take ownership once.
    let config_file = unsafe { File::from_raw_fd(CONFIG_FD) };
    let mut text = Vec::new();
    config_file
        .take(1 << 20)
        .read_to_end(&mut text)
        .map_err(InitError::Config)?;
    let cfg: InitConfig = serde_json::from_slice(&text).map_err(InitError::ConfigJson)?;
    let security = &cfg.security;
    // Nothing we mount may propagate back to the guest.
    sys::mount(
        "none",
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(setup_err("cannot make mounts private"))?;
    // Volumes are guest paths: take hold of them before the guest's tree goes.
    let binds = cfg
        .mounts
        .iter()
        .map(|m| {
            binds::detach(m).map_err(setup_err(format!("cannot clone mount source {}", m.source)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let devices = DEVICES
        .iter()
        .map(|name| {
            binds::detach_device(name).map_err(setup_err(format!("cannot clone /dev/{name}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    enter_root(Path::new(&cfg.rootfs))?;
    mount_inside(security.privileged)?;
    let root = Root::open(Path::new("/")).map_err(setup_err("cannot open the new root"))?;
    for d in &devices {
        binds::attach(d, &root).map_err(setup_err(format!("cannot mount {}", d.destination)))?;
    }
    // A terminal from the container's own devpts: the app finds it as
    // /dev/pts/N (ttyname works), which one from the agent's could not be.
    let pty = if cfg.tty {
        let master = tty::open_ptmx(root.fd(), Path::new("dev/pts/ptmx"))
            .map_err(setup_err("cannot open /dev/pts/ptmx"))?;
        Some(
            tty::pair_from_ptmx(master, cfg.tty_size)
                .map_err(setup_err("cannot open a terminal"))?,
        )
    } else {
        None
    };
    // Volumes and tmpfs mounts, shallowest destination first (as docker
    // sorts them), so `--tmpfs /data` does not hide `-v ...:/data/in`.
    let mut extra: Vec<(&binds::Detached, &str)> = binds.iter().map(|b| (b, "a volume")).collect();
    let tmpfs = security
        .tmpfs
        .iter()
        .map(|t| {
            binds::detach_tmpfs(t).map_err(setup_err(format!(
                "cannot make a tmpfs for {}",
                t.destination
            )))
        })
        .collect::<Result<Vec<_>, _>>()?;
    extra.extend(tmpfs.iter().map(|t| (t, "a tmpfs")));
    extra.sort_by_key(|(d, _)| Path::new(&d.destination).components().count());
    for (d, what) in extra {
        binds::attach(d, &root).map_err(setup_err(format!(
            "cannot mount {what} at {}",
            d.destination
        )))?;
    }
    // The root itself last: nodev always (so a node made with CAP_MKNOD
    // does not open, see `privs`), read-only with `--read-only` (its mount
    // points exist by now).
    let mut attrs = libc::MOUNT_ATTR_NODEV;
    if security.read_only_rootfs {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    binds::set_attrs(Path::new("/"), attrs)
        .map_err(setup_err("cannot set the root's mount flags"))?;
    if let Some(name) = &cfg.hostname {
        // SAFETY: `name` is valid for `len` bytes.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
            return Err(setup_err("cannot set the hostname")(
                io::Error::last_os_error(),
            ));
        }
    }
    let launch = Launch {
        args: cfg.args,
        env: cfg.env,
        cwd: Some(cfg.cwd),
        ids: Ids {
            uid: cfg.uid,
            gid: cfg.gid,
            groups: cfg.groups,
        },
        rlimits: cfg.rlimits,
        ctty: cfg.tty,
        drop_caps: super::privs::drops_for(security),
        no_new_privs: security.no_new_privileges,
        seccomp: cfg.seccomp,
        ..Launch::default()
    };
    let (stdio, master) = match pty {
        Some((master, slave)) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(setup_err("cannot dup the terminal"));
            let stdio = [
                Stdio::from(dup(&slave)?),
                Stdio::from(dup(&slave)?),
                Stdio::from(slave),
            ];
            (stdio, Some(master))
        }
        None => ([Stdio::inherit(), Stdio::inherit(), Stdio::inherit()], None),
    };
    let (pid, exit) = spawn::spawn(launch, stdio, reaper)?;
    Ok((pid, exit, master))
}

/// Makes `rootfs` the root of this (already private) mount namespace
/// (`pivot_root`), with the old root detached: nothing outside stays reachable.
fn enter_root(rootfs: &Path) -> Result<(), InitError> {
    // pivot_root needs the new root to be a mount point.
    sys::mount(
        &rootfs.to_string_lossy(),
        rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(setup_err(format!("cannot bind {}", rootfs.display())))?;
    std::env::set_current_dir(rootfs).map_err(setup_err("cannot enter the root"))?;
    let dot =
        CString::new(".").map_err(|_| setup_err("nul")(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: pivot_root with two valid C strings; "." for both stacks the
    // old root on top of the new one, to be detached next.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } < 0 {
        return Err(setup_err("pivot_root failed")(io::Error::last_os_error()));
    }
    // SAFETY: umount2 with a valid C string and flags.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(setup_err("cannot detach the old root")(
            io::Error::last_os_error(),
        ));
    }
    std::env::set_current_dir("/").map_err(setup_err("cannot enter /"))?;
    Ok(())
}

/// The guest's device nodes every container gets (Docker's set, less the
/// console).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The container's pseudo file systems, inside its (already pivoted) root;
/// /sys is writable only for a privileged container (as docker's).
fn mount_inside(privileged: bool) -> Result<(), InitError> {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let noexec = nosuid_nodev | libc::MS_NOEXEC;
    let sys_ro = if privileged { 0 } else { libc::MS_RDONLY };
    let mounts: [(&str, &str, libc::c_ulong, Option<&str>); 7] = [
        ("proc", "/proc", noexec, None),
        ("sysfs", "/sys", noexec | sys_ro, None),
        (
            "tmpfs",
            "/dev",
            nosuid_nodev | libc::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
        (
            "devpts",
            "/dev/pts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        ("tmpfs", "/dev/shm", noexec, Some("mode=1777,size=65536k")),
        ("mqueue", "/dev/mqueue", noexec, None),
        ("tmpfs", "/tmp", nosuid_nodev, Some("mode=1777")),
    ];
    for (fstype, target, flags, data) in mounts {
        let _ = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(target);
        let res = sys::mount(fstype, Path::new(target), Some(fstype), flags, data);
        if let Err(e) = res {
            // A kernel without POSIX message queues still runs containers.
            if fstype == "mqueue" {
                continue;
            }
            return Err(setup_err(format!("cannot mount {fstype} on {target}"))(e));
        }
        if target == "/dev" {
            make_links()?;
        }
    }
    Ok(())
}

/// The usual symlinks of /dev (the nodes are bound in later).
fn make_links() -> Result<(), InitError> {
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, link).map_err(setup_err(format!("cannot create {link}")))?;
    }
    Ok(())
}

/// After the app started: let go of its stdio, so the pipes reach end of
/// file as soon as the app and its descendants close them.
fn detach_stdio() {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto our standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
