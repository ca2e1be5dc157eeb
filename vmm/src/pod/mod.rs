//! Pods: one or more apps (containers) from OCI images, in one microVM.
//!
//! rkt's pod model on a VM per pod: the host makes the pod's state
//! directory ([`state`]), pins each app's image and links its layer blobs
//! there ([`spec`]), starts the pod's VMM as a child process with the blobs
//! and the pod's volumes shared over virtio-fs ([`vm`]), and drives the
//! in-guest agent over vsock: unpack, create containers, stream output,
//! collect exit statuses, power off ([`supervisor`]). There is no daemon:
//! the supervising process is the `husk run` in the foreground, or a
//! detached `husk pod supervise` for `-d`; the other commands (`ps`, `logs`,
//! `stop`, `exec`) read the pod directory or connect to the agent through
//! the pod's vsock socket. Multi-app pods come from manifests
//! ([`manifest`]). Empty-dir volumes are size-limited tmpfs mounts on the
//! host ([`volumes`]). Each pod's VMM runs in a host cgroup of its own
//! ([`cgroup`]). What the apps and the guest console print is logged with
//! size caps and rotation ([`logs`]). What each app runs with inside the
//! guest (capabilities, seccomp, `no_new_privs`, read-only root, tmpfs
//! mounts) is chosen and checked here and applied by the agent
//! ([`security`]).

pub mod attach;
pub mod cgroup;
pub mod check;
pub mod create;
pub mod ids;
pub mod logs;
pub mod manifest;
pub mod output;
pub mod security;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod vm;
pub mod vmm_process;
pub mod volumes;

use std::io;
use std::path::{Path, PathBuf};

use crate::failure::Failure;
use crate::image::ImageError;

/// Why a pod operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a valid husk state file: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("invalid name {0:?}: use letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)")]
    BadName(String),
    #[error("the name {0:?} is already in use by another pod")]
    NameInUse(String),
    #[error("no such pod: {0}")]
    NoSuchPod(String),
    #[error("{0:?} matches more than one pod: give more of its id, or its name")]
    Ambiguous(String),
    #[error("pod {0} is not running")]
    NotRunning(String),
    #[error("pod {pod} is still running: stop it first (or use --force)")]
    StillRunning { pod: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Usage(String),
    /// A network setting refused, or a published port that is taken.
    #[error(transparent)]
    Network(#[from] crate::net::NetError),
    #[error("cannot run VMs here: {0}")]
    NoKvm(String),
    #[error("cannot find the guest {what}: {why}")]
    GuestArtifacts { what: &'static str, why: String },
    #[error("the pod's VM failed: {0}")]
    Vmm(String),
    #[error("the pod's agent failed: {0}")]
    Agent(String),
    /// The guest found an image blob that does not match its digest.
    #[error("{0}")]
    Integrity(String),
    /// A detached pod failed to start; its supervisor recorded why.
    #[error("{reason}")]
    Detached { reason: String, kind: Failure },
    /// An empty-dir volume whose size limit cannot be enforced here.
    #[error("{0}")]
    Volume(String),
    /// The pod's host cgroup: a bad or missing parent, or a write that failed.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The launch could not be measured as required ([`crate::measure`]).
    #[error(transparent)]
    Measure(#[from] crate::measure::MeasureError),
    #[error("app {app}: {message}")]
    AppStart {
        app: String,
        message: String,
        /// Cannot invoke (126) or not found (127) when the agent says so.
        kind: Failure,
    },
}

impl PodError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: io::Error) -> PodError {
        PodError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// What kind of failure this is (its exit status: [`Failure::exit_status`]).
    pub fn kind(&self) -> Failure {
        match self {
            PodError::BadName(_)
            | PodError::NameInUse(_)
            | PodError::Usage(_)
            | PodError::Network(_) => Failure::Usage,
            PodError::NoSuchPod(_)
            | PodError::Ambiguous(_)
            | PodError::NotRunning(_)
            | PodError::StillRunning { .. } => Failure::PodNotFound,
            PodError::Image(e) => e.kind(),
            PodError::Measure(e) => e.kind(),
            PodError::NoKvm(_) => Failure::NoKvm,
            PodError::Integrity(_) => Failure::Integrity,
            PodError::AppStart { kind, .. } | PodError::Detached { kind, .. } => *kind,
            PodError::Cgroup(e) if e.is_usage() => Failure::Usage,
            PodError::Io { .. }
            | PodError::Corrupt { .. }
            | PodError::GuestArtifacts { .. }
            | PodError::Vmm(_)
            | PodError::Volume(_)
            | PodError::Cgroup(_)
            | PodError::Agent(_) => Failure::Runtime,
        }
    }
}
