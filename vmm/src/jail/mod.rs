//! The VMM jail: privilege separation applied by a process to itself, after it has opened
//! everything it needs and before it reads any input from a guest.
//!
//! A [`JailSpec`] is plain data (which directories to bind, which capabilities and
//! descriptors to keep, the descriptor limit), checked without side effects
//! ([`JailSpec::check`]) and applied once ([`JailSpec::apply`]). The VMM builds its own spec
//! from its [`crate::vm_config::PreparedVm`] ([`vmm::spec_for`]); other entry points (an OCI
//! runtime, a containerd shim) can build theirs the same way.
//!
//! Before it, as root, [`vmm::prepare`] serves every share from a private clone of its mount
//! (`..` cannot leave it: [`mount::private_clone`]) and makes the pod's user namespace, through
//! which host-directory volumes are id-mapped ([`userns`]).
//!
//! What [`JailSpec::apply`] does, in this order, and why:
//! 0. **Rootless only** ([`JailSpec::rootless`]): an ordinary user first makes a user namespace
//!    of its own with only its own ids mapped ([`userns::unshare_own`]); every step below then
//!    runs as that namespace's root, and the share roots are cloned from inside the new mount
//!    namespace ([`mount::reclone_in_own_namespace`]).
//! 1. **Namespaces** ([`mount`]): new mount, UTS, IPC, network and cgroup namespaces in one
//!    `unshare` (the cgroup namespace's root is the pod's host cgroup, joined before).
//!    The VMM uses no network: its vsock host side is path-bound Unix sockets, which are found
//!    through the file system and so work across network namespaces (abstract sockets would
//!    not, and the VMM has none). No pid namespace: `unshare(CLONE_NEWPID)` moves only later
//!    children, so the VMM would have to fork once more and the supervisor would wait for and
//!    kill an intermediate process; and as a namespace's init the VMM would ignore every
//!    default-action signal but SIGKILL, which changes how it dies. What a pid namespace would
//!    add is covered otherwise: with a uid of its own (step 5) the VMM may not signal or trace
//!    another pod's VMM, and its seccomp filter binds `tgkill` to its own pid; `/proc` in the
//!    jail holds only its own directory.
//! 2. **An empty root** ([`mount`]): all mounts made private, then a small tmpfs (no host
//!    directory needed: it is made with the fd-based mount API, `fsopen`/`fsmount`, and
//!    attached over the old root) holding only mount points; `pivot_root` into it and the old
//!    root detached (`MNT_DETACH`), then the root remounted read-only. Into it go, at the same
//!    absolute paths, the directories the spec binds (the VMM's vsock socket directory, so the
//!    configured socket paths still resolve) and, read-only, the process's own `/proc/<pid>`
//!    at `/proc/self`: fuse-backend-rs's passthrough opens `/proc/self/fd` and
//!    `/proc/self/mountinfo` when a share's server is made, re-imports a share root through
//!    `/proc/self/fd/N/.` on every FUSE INIT and DESTROY, and reaches xattrs through
//!    `/proc/self/fd/N`. A whole procfs would show every host process (and, as uid 0,
//!    `/proc/sys`); only this process's own directory is there. Everything else (kernel,
//!    initramfs, console, share roots, `/dev/kvm`) is open before the jail and used by
//!    descriptor.
//! 3. **Limits** ([`privs`]): `RLIMIT_CORE` 0 (no core file with guest memory in it),
//!    `RLIMIT_NOFILE` soft = hard = the spec's bound (raising the hard limit needs the
//!    `CAP_SYS_RESOURCE` dropped below, so it is set first; a host that denies it keeps its
//!    lower hard limit). With a user namespace, `RLIMIT_NPROC` too ([`vmm::VMM_NPROC`]): it counts
//!    per uid, and the VMM's uid is its pod's own (the kernel exempts uid 0, so without a user
//!    namespace it would bound nothing).
//! 4. **Descriptors** ([`privs`]): every descriptor not in the spec's keep list is closed
//!    (`close_range` over the gaps), so nothing the parent had open (its lock files, log
//!    files, pipes to the client) stays reachable from the VMM.
//! 5. **User namespace** ([`userns`]), when the spec has one: the process `setns`es into it
//!    and becomes its root, whose host uid and gid are the pod's own unprivileged range. It
//!    comes after every mount: the mounts above need host root, and the jail's mount
//!    namespace stays owned by the host's user namespace, so the VMM cannot mount anything
//!    afterwards.
//! 6. **Capabilities** ([`privs`]): the bounding set is cut to the kept ones (while
//!    `CAP_SETPCAP` is still effective), the ambient and inheritable sets emptied, the
//!    effective and permitted sets set to the kept ones; then `PR_SET_NO_NEW_PRIVS` and
//!    `PR_SET_DUMPABLE` 0 (no other process of the same uid and capabilities, e.g. another
//!    pod's VMM, may ptrace this one or read its memory).
//! 7. **The parent-death signal** ([`privs::ParentDeath`]): the kernel clears
//!    `PR_SET_PDEATHSIG` whenever the credentials change (steps 0, 5 and 6 do), so the one the
//!    caller armed (a pod's VMM dies with its supervisor) is armed again, and sent at once if
//!    the parent died meanwhile.
//!
//! Every step that fails is reported as one line naming the step and what the jail lacks
//! ([`JailError`]); the caller ends the VMM before any guest code runs.
//!
//! Not here: a pid namespace (see step 1), seccomp ([`crate::seccomp`], installed per thread
//! once the threads exist), host cgroups (the pod's supervisor places the VMM).

pub mod mount;
pub mod privs;
pub mod userns;
pub mod vmm;

#[cfg(test)]
mod escape_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod userns_tests;

use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};

use caps::Capability;

/// What a jail keeps and where it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSpec {
    /// Host directories bound read-write into the jail at their own absolute path.
    pub binds: Vec<PathBuf>,
    /// Bind this process's own `/proc/<pid>` read-only at `/proc/self`.
    pub proc_self: bool,
    /// Capabilities kept in the effective, permitted and bounding sets; every other one is
    /// dropped from all sets.
    pub keep_caps: Vec<Capability>,
    /// `RLIMIT_NOFILE`, soft and hard.
    pub nofile: u64,
    /// `RLIMIT_NPROC`, soft and hard, if set.
    pub nproc: Option<u64>,
    /// A user namespace to enter (a descriptor, kept open through the jail; the caller closes
    /// it afterwards), or none: the process stays host root with the kept capabilities.
    pub user_ns: Option<RawFd>,
    /// Rootless: the process (an ordinary user) first makes a user namespace of its own with
    /// only its own ids mapped ([`userns::unshare_own`]), and these share roots are cloned
    /// privately from inside the jail's mount namespace ([`mount::reclone_in_own_namespace`]);
    /// a root caller clones them before the jail ([`vmm::prepare`]).
    pub rootless: Option<Vec<RawFd>>,
    /// Descriptors kept open (0, 1 and 2 are always kept); every other one is closed, so
    /// the caller must not use or drop any object that owns one of those afterwards (a
    /// pod's VMM never returns to the supervisor's objects it inherited: it `_exit`s).
    pub keep_fds: Vec<RawFd>,
}

/// Why a jail could not be set up: the step, and what the jail lacks.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A bind path the spec cannot use.
    #[error("jail: cannot bind {path}: {why}")]
    BadBind {
        /// The path.
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// A descriptor number that cannot be one.
    #[error("jail: {0} is not a descriptor")]
    BadFd(RawFd),
    /// The process cannot jail itself (not root, or threads already running).
    #[error("jail: {0} (--no-jail runs the VMM without it)")]
    Unable(String),
    /// A system call of one step failed.
    #[error("jail: cannot {step}")]
    Step {
        /// What was being done.
        step: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
}

impl JailError {
    /// A failed step, with the current `errno`.
    pub(crate) fn last_os(step: impl Into<String>) -> JailError {
        JailError::Step {
            step: step.into(),
            source: std::io::Error::last_os_error(),
        }
    }
}

impl JailSpec {
    /// Checks the spec without touching the system: binds are absolute, made of plain
    /// components (no `.`, `..`), not `/` itself, not under `/proc` (the jail's own), and
    /// listed once; descriptors are non-negative.
    pub fn check(&self) -> Result<(), JailError> {
        let mut seen: Vec<&Path> = Vec::new();
        for path in &self.binds {
            let bad = |why| JailError::BadBind {
                path: path.clone(),
                why,
            };
            if !path.is_absolute() {
                return Err(bad("not an absolute path"));
            }
            if path
                .components()
                .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
            {
                return Err(bad("`.` or `..` in the path"));
            }
            if path.parent().is_none() {
                return Err(bad("the whole host root would be in the jail"));
            }
            if path.starts_with("/proc") {
                return Err(bad("/proc in the jail is its own"));
            }
            if seen.contains(&path.as_path()) {
                return Err(bad("bound twice"));
            }
            seen.push(path);
        }
        if let Some(fd) = self
            .keep_fds
            .iter()
            .chain(self.user_ns.as_ref())
            .find(|fd| **fd < 0)
        {
            return Err(JailError::BadFd(*fd));
        }
        Ok(())
    }

    /// The binds in the order they are mounted: parents before their children, so a bind
    /// inside another bind lands on top of it.
    pub fn bind_order(&self) -> Vec<&Path> {
        let mut binds: Vec<&Path> = self.binds.iter().map(PathBuf::as_path).collect();
        binds.sort_by_key(|p| p.components().count());
        binds
    }

    /// The descriptors kept: stdio plus the spec's, sorted, without duplicates.
    pub fn kept_fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = [0, 1, 2]
            .into_iter()
            .chain(self.keep_fds.clone())
            .chain(self.user_ns)
            .collect();
        fds.sort_unstable();
        fds.dedup();
        fds
    }

    /// The `[first, last]` descriptor ranges [`JailSpec::apply`] closes: everything between
    /// and after the kept ones.
    pub fn close_ranges(&self) -> Vec<(u32, u32)> {
        let mut ranges = Vec::new();
        let mut next: u32 = 0;
        for fd in self.kept_fds() {
            let fd = fd as u32;
            if fd > next {
                ranges.push((next, fd - 1));
            }
            next = fd + 1;
        }
        ranges.push((next, u32::MAX));
        ranges
    }

    /// Jails the calling process (see the module documentation for the steps). Call it while
    /// the process has one thread, as root, after every file it needs is open.
    pub fn apply(&self) -> Result<(), JailError> {
        self.check()?;
        privs::ensure_able(self.rootless.is_some())?;
        // The steps below change the process's credentials, which clears it.
        let parent_death = privs::ParentDeath::save();
        if self.rootless.is_some() {
            userns::unshare_own()?;
        }
        mount::enter_namespaces()?;
        for &fd in self.rootless.iter().flatten() {
            mount::reclone_in_own_namespace(fd).map_err(|source| JailError::Step {
                step: format!("clone the share held as descriptor {fd} privately"),
                source,
            })?;
        }
        mount::build_root(self)?;
        privs::set_limits(self.nofile, self.nproc)?;
        privs::close_fds(&self.close_ranges())?;
        if let Some(fd) = self.user_ns {
            // SAFETY: the descriptor is open for the whole call: `kept_fds` keeps it, and the
            // caller owns and closes it after `apply`.
            userns::enter(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
        }
        privs::drop_privileges(&self.keep_caps)?;
        parent_death.restore()
    }
}
