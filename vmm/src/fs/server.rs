//! One FUSE server per share, and the thread setup every thread serving it needs.
//!
//! The server is fuse-backend-rs's `api::server::Server` (request decoding, reply encoding) over
//! [`ConfinedFs`] (policy) over `PassthroughFs` (the host file system). The same server is driven
//! by two transports: `/dev/fuse` on the host ([`super::host_mount`], for conformance tests and
//! benchmarks) and the virtio-fs device's descriptor chains in a VM.

use std::io;
use std::sync::Arc;

use caps::{CapSet, Capability};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{Config, PassthroughFs};
use vm_memory::bitmap::BitmapSlice;

use super::budget::{fd_limits, FdBudget, FdPool};
use super::confined::ConfinedFs;
use super::share::{OpenShare, ShareSpec};

/// Errors from building a share's server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// fuse-backend-rs refused to build the passthrough (e.g. no /proc/self/fd).
    #[error("share `{tag}`: cannot create the passthrough file system")]
    Passthrough {
        /// Share tag.
        tag: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Thread setup failed.
    #[error("cannot isolate the file server thread")]
    Thread(#[source] io::Error),
}

/// The FUSE server of one share.
pub type FsServer<S = ()> = Server<Arc<ConfinedFs<S>>>;

/// A share's server and its policy layer.
pub struct ShareServer<S: BitmapSlice + Send + Sync + 'static = ()> {
    spec: ShareSpec,
    fs: Arc<ConfinedFs<S>>,
    server: Arc<FsServer<S>>,
}

impl<S: BitmapSlice + Send + Sync + 'static> ShareServer<S> {
    /// Builds the server for an opened share, holding at most what `budget` allows.
    pub fn new(share: OpenShare, budget: FdBudget) -> Result<Self, ServerError> {
        let OpenShare { spec, root } = share;
        let timeout = spec.cache.timeout();
        let cfg = Config {
            // Never the configured path: the held root through /proc/self/fd (see
            // `super::root`), re-resolved at every INIT and DESTROY without a guest being able
            // to change what it names.
            root_dir: root.passthrough_path(),
            cache_policy: spec.cache.policy(),
            entry_timeout: timeout,
            attr_timeout: timeout,
            // The passthrough imports the root itself when the guest sends INIT, and validates
            // names only in this mode (under fuse-backend-rs's Vfs it leaves that to the Vfs).
            do_import: true,
            xattr: true,
            // O_PATH descriptors, not file handles: open_by_handle_at needs
            // CAP_DAC_READ_SEARCH (which the VMM's jail drops) and can open any inode of the
            // host file system given a handle; descriptors are bounded by our budget instead.
            inode_file_handles: false,
            // Writeback caching lets the guest kernel own file sizes and O_APPEND; unsafe when
            // the host may touch the directory too, and pointless on read-only shares.
            writeback: false,
            ..Config::default()
        };
        let passthrough =
            PassthroughFs::<S>::new(cfg).map_err(|source| ServerError::Passthrough {
                tag: spec.tag.clone(),
                source,
            })?;
        let fs = Arc::new(
            ConfinedFs::new(passthrough, root, spec.read_only, budget)
                .with_negative_timeout(timeout),
        );
        let server = Arc::new(Server::new(fs.clone()));
        Ok(ShareServer { spec, fs, server })
    }

    /// The share this server exports.
    pub fn spec(&self) -> &ShareSpec {
        &self.spec
    }

    /// The FUSE protocol server; hand it to a transport.
    pub fn server(&self) -> &Arc<FsServer<S>> {
        &self.server
    }

    /// The policy layer (descriptor accounting, read-only flag).
    pub fn fs(&self) -> &Arc<ConfinedFs<S>> {
        &self.fs
    }
}

/// Prepares the calling thread to serve FUSE requests. Call it first thing on every thread
/// that calls `Server::handle_message`.
///
/// - `unshare(CLONE_FS)`: the passthrough sets `umask(0)` when it imports the root (the guest
///   has already applied its own umask); with a private fs context that only affects this
///   thread, not the VMM's other files.
/// - drops `CAP_FSETID` and `CAP_MKNOD` from this thread's effective and permitted sets:
///   without `CAP_FSETID` the kernel itself clears set-id bits when the guest writes to or
///   chowns a file, and keeps `chmod` from setting set-gid on files outside the caller's groups;
///   without `CAP_MKNOD` no device node can be created even if a request slipped past
///   [`ConfinedFs`]. Capabilities are per thread, so the rest of the VMM keeps them. The
///   passthrough's temporary uid switch cannot bring them back, because it only restores
///   capabilities from the permitted set. A jailed VMM ([`crate::jail`]) has neither in any
///   set already; this drop is what holds without the jail (`--no-jail`, host mounts).
pub fn prepare_server_thread() -> Result<(), ServerError> {
    // SAFETY: unshare(CLONE_FS) only affects the calling thread's fs context; return checked.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(ServerError::Thread(io::Error::last_os_error()));
    }
    for cap in [Capability::CAP_FSETID, Capability::CAP_MKNOD] {
        for set in [CapSet::Effective, CapSet::Permitted] {
            caps::drop(None, set, cap).map_err(|e| ServerError::Thread(io::Error::other(e)))?;
        }
    }
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, which is a valid rlimit; return checked.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads `want`, a valid rlimit; return checked.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(want.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// The budgets of one VMM's shares, one per call: the soft `RLIMIT_NOFILE` raised to the hard
/// limit, then the fixed bounds of [`super::budget`], every share drawing from one pool for the
/// pod.
pub fn share_budget_source() -> impl FnMut() -> FdBudget {
    let nofile = raise_nofile_limit().unwrap_or(1024);
    let (per_share, per_pod) = fd_limits(nofile);
    let pool = FdPool::new(per_pod);
    move || FdBudget::pooled(per_share, pool.clone())
}

/// `shares` budgets from one [`share_budget_source`].
pub fn share_budgets(shares: usize) -> Vec<FdBudget> {
    let mut next = share_budget_source();
    (0..shares).map(|_| next()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::budget::{FD_PER_POD, FD_PER_SHARE};

    #[test]
    fn a_vmm_gets_the_fixed_bounds_and_one_pool() {
        let budgets = share_budgets(3);
        assert_eq!(budgets.len(), 3);
        for b in &budgets {
            assert!(b.max() <= FD_PER_SHARE, "{}", b.max());
        }
        assert!(budgets[0].admit_node(7));
        assert_eq!(budgets[1].pool().used(), 1, "one pool for the pod");
        assert!(budgets[1].pool().max() <= FD_PER_POD);
    }
}
