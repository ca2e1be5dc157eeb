//! One FUSE server per share, and the thread setup every thread serving it needs.
//!
//! The server is fuse-backend-rs's `api::server::Server` (request decoding, reply encoding) over
//! [`ConfinedFs`] (policy) over `PassthroughFs` (the host file system). The same server is driven
//! by two transports: `/dev/fuse` on the host ([`super::host_mount`], for conformance tests and
//! benchmarks) and the virtio-fs device's descriptor chains in a VM.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use caps::{CapSet, Capability};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{Config, PassthroughFs};
use vm_memory::bitmap::BitmapSlice;

use super::confined::ConfinedFs;
use super::share::ShareSpec;

/// Descriptors kept back for the rest of the VMM (KVM, eventfds, sockets, console, logs) when
/// [`fd_budget_per_share`] divides the process limit between shares.
const FD_RESERVE: u64 = 1024;
/// Per-share ceiling: past this the inode map itself (not descriptors) becomes the cost.
const FD_CEILING: u64 = 1 << 20;
/// Per-share floor: below this a guest cannot even untar a small image.
const FD_FLOOR: u64 = 256;

/// Errors from building a share's server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Share root cannot be opened as a directory.
    #[error("share `{tag}`: cannot open root directory {path}")]
    Root {
        /// Share tag.
        tag: String,
        /// Host directory.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
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
    /// Builds the server for `spec` (whose `host_dir` should come from [`ShareSpec::resolve`]),
    /// allowing it at most `max_fds` host descriptors.
    pub fn new(spec: &ShareSpec, max_fds: usize) -> Result<Self, ServerError> {
        let path = spec.host_dir.to_string_lossy().into_owned();
        check_root(&spec.host_dir).map_err(|source| ServerError::Root {
            tag: spec.tag.clone(),
            path: path.clone(),
            source,
        })?;
        let timeout = spec.cache.timeout();
        let cfg = Config {
            root_dir: path,
            cache_policy: spec.cache.policy(),
            entry_timeout: timeout,
            attr_timeout: timeout,
            // The passthrough imports the root itself when the guest sends INIT, and validates
            // names only in this mode (under fuse-backend-rs's Vfs it leaves that to the Vfs).
            do_import: true,
            xattr: true,
            // O_PATH descriptors, not file handles: open_by_handle_at needs
            // CAP_DAC_READ_SEARCH (which the jailer will drop) and can open any inode of the
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
            ConfinedFs::new(passthrough, spec.read_only, max_fds).with_negative_timeout(timeout),
        );
        let server = Arc::new(Server::new(fs.clone()));
        Ok(ShareServer {
            spec: spec.clone(),
            fs,
            server,
        })
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

fn check_root(path: &std::path::Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string; the return value is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
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
///   capabilities from the permitted set.
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

/// Splits a process descriptor limit between `shares` shares, keeping [`FD_RESERVE`] for the
/// rest of the VMM. Pure so the arithmetic is tested.
pub fn fd_budget_per_share(nofile: u64, shares: usize) -> usize {
    let shares = shares.max(1) as u64;
    let per = nofile.saturating_sub(FD_RESERVE) / shares;
    per.clamp(FD_FLOOR, FD_CEILING) as usize
}

/// `raise_nofile_limit` then `fd_budget_per_share`, the usual start-up sequence.
pub fn default_fd_budget(shares: usize) -> usize {
    let nofile = raise_nofile_limit().unwrap_or(1024);
    fd_budget_per_share(nofile, shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_splits_the_limit() {
        assert_eq!(fd_budget_per_share(1_048_576, 2), (1_048_576 - 1024) / 2);
        assert_eq!(fd_budget_per_share(1024, 1), FD_FLOOR as usize);
        assert_eq!(fd_budget_per_share(u64::MAX, 1), FD_CEILING as usize);
        assert_eq!(fd_budget_per_share(9216, 0), 8192);
    }

    #[test]
    fn missing_root_is_an_error() {
        let spec = ShareSpec::parse("t=/nonexistent/husk-share").unwrap();
        let err = ShareServer::<()>::new(&spec, 100).err().unwrap();
        assert!(matches!(err, ServerError::Root { .. }), "{err}");
    }
}
