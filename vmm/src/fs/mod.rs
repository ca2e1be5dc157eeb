//! virtio-fs shares: an in-process FUSE server per shared host directory.
//!
//! Pieces, from the outside in:
//! - [`share`]: `TAG=HOSTDIR[:ro][:cache=MODE]` parsing and validation (pure, tested).
//! - [`server`]: one [`ShareServer`] per share = fuse-backend-rs `Server` (FUSE decoding and
//!   encoding) over [`ConfinedFs`] (our policy) over fuse-backend-rs `PassthroughFs` (the host
//!   directory). Also the per-thread setup every serving thread runs.
//! - [`confined`]: the policy layer: read-only shares, no device nodes, no set-id bits, xattr
//!   namespaces, and the descriptor budget ([`budget`]).
//! - [`host_mount`]: the same server mounted on the host through `/dev/fuse`, for conformance
//!   tests and benchmarks.
//!
//! # Cache modes
//! `never` / `auto` / `always` as virtiofsd users know them (see [`CacheMode`]). Defaults: a
//! `--share` is `auto`, read-only or not, because `:ro` limits the guest, not the host; the pod
//! code shares its content-addressed (immutable) image store with `cache=always`, and pod volumes
//! with `auto`.
//!
//! # Security decisions
//! Written up in [`confined`] and [`server::prepare_server_thread`]; in short: the passthrough's
//! `O_PATH` + `openat(O_NOFOLLOW)` resolution confines names to the share, `.`/`..` lookups and
//! file-handle (`open_by_handle_at`) inodes are off, writes are refused on read-only shares before
//! they reach the host, device nodes and set-id bits are never created (checked in the layer and,
//! per serving thread, by dropping `CAP_MKNOD`/`CAP_FSETID`), and each share has its own server,
//! inode map and descriptor budget.

pub mod budget;
pub mod confined;
pub mod host_mount;
pub mod server;
pub mod share;

pub use confined::ConfinedFs;
pub use server::{
    default_fd_budget, fd_budget_per_share, prepare_server_thread, FsServer, ServerError,
    ShareServer,
};
pub use share::{CacheMode, ShareError, ShareSpec};

#[cfg(test)]
mod tests;
