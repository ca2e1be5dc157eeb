//! Mounting a share's server on the host through `/dev/fuse`.
//!
//! Not used to run guests: it exists so the exact server a guest talks to can be exercised by
//! the host kernel's FUSE client with real system calls (conformance tests, `scripts/bench-fs.sh`)
//! without a VM. fuse-backend-rs's `FuseSession` mounts with mount(2) directly when running as
//! root (no `fusermount3` needed) and `nosuid,nodev,noatime,default_permissions,allow_other`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuse_backend_rs::api::server::MetricsHook;
use fuse_backend_rs::transport::{FuseChannel, FuseSession};

use super::server::{prepare_server_thread, FsServer};

/// Errors from mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Session setup or mount(2) failed.
    #[error("cannot mount the share on {path}: {reason}")]
    Session {
        /// Mount point.
        path: PathBuf,
        /// fuse-backend-rs's description (its error type carries no source chain).
        reason: String,
    },
    /// Worker thread could not be started.
    #[error("cannot start a FUSE worker thread")]
    Spawn(#[source] std::io::Error),
}

/// A per-request hook (e.g. an opcode counter), shared by every worker thread.
pub type RequestHook = Arc<dyn MetricsHook + Send + Sync>;

/// A mounted share. Dropping it stops the workers and detaches the mount (`MNT_DETACH`), also
/// when a test panics while holding it.
pub struct HostMount {
    session: FuseSession,
    workers: Vec<JoinHandle<()>>,
    mountpoint: PathBuf,
}

impl HostMount {
    /// Mounts `server` on `mountpoint` and serves it with `threads` worker threads.
    /// `kernel_readonly` adds `MS_RDONLY` to the mount; tests of the server's own read-only
    /// enforcement leave it off so that requests reach the server.
    pub fn mount(
        server: Arc<FsServer>,
        mountpoint: &Path,
        threads: usize,
        kernel_readonly: bool,
    ) -> Result<HostMount, MountError> {
        Self::mount_with_hook(server, mountpoint, threads, kernel_readonly, None)
    }

    /// [`HostMount::mount`], calling `hook` around every request: benchmarks count the FUSE
    /// round trips per operation with it.
    pub fn mount_with_hook(
        server: Arc<FsServer>,
        mountpoint: &Path,
        threads: usize,
        kernel_readonly: bool,
        hook: Option<RequestHook>,
    ) -> Result<HostMount, MountError> {
        let session_err = |e: fuse_backend_rs::transport::Error| MountError::Session {
            path: mountpoint.to_path_buf(),
            reason: e.to_string(),
        };
        let mut session =
            FuseSession::new(mountpoint, "husk", "husk", kernel_readonly).map_err(session_err)?;
        session.mount().map_err(session_err)?;
        let mut mount = HostMount {
            session,
            workers: Vec::new(),
            mountpoint: mountpoint.to_path_buf(),
        };
        for i in 0..threads.max(1) {
            let channel = mount.session.new_channel().map_err(session_err)?;
            let (server, hook) = (server.clone(), hook.clone());
            let worker = std::thread::Builder::new()
                .name(format!("husk-fuse-{i}"))
                .spawn(move || serve(server, channel, hook))
                .map_err(MountError::Spawn)?;
            mount.workers.push(worker);
        }
        Ok(mount)
    }

    /// Where the share is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

fn serve(server: Arc<FsServer>, mut channel: FuseChannel, hook: Option<RequestHook>) {
    if let Err(e) = prepare_server_thread() {
        log::error!("fuse worker: {e}");
        return;
    }
    loop {
        match channel.get_request() {
            Ok(Some((reader, writer))) => {
                if let Err(e) = server.handle_message(
                    reader,
                    writer.into(),
                    None,
                    hook.as_deref().map(|h| h as &dyn MetricsHook),
                ) {
                    // A reply to a request the kernel already dropped (interrupted) fails with
                    // ENOENT; the session goes on. Only a dead device ends the loop.
                    if let fuse_backend_rs::Error::EncodeMessage(ref io) = e {
                        if io.raw_os_error() == Some(libc::ENODEV) {
                            return;
                        }
                    }
                    log::debug!("fuse worker: {e}");
                }
            }
            Ok(None) => return,
            Err(e) => {
                log::debug!("fuse worker stops: {e}");
                return;
            }
        }
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        // Wake the workers first and wait for them: once every /dev/fuse descriptor is closed the
        // kernel aborts the connection, so the unmount cannot wait on a reply nobody sends.
        if let Err(e) = self.session.wake() {
            log::warn!("fuse: cannot wake workers: {e}");
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Err(e) = self.session.umount() {
            log::warn!("fuse: unmount of {} failed: {e}", self.mountpoint.display());
        }
    }
}
