//! virtio-fs shares: an in-process FUSE server per shared host directory.
//!
//! Pieces, from the outside in:
//! - [`share`]: the typed [`ShareSpec`], `TAG=HOSTDIR[:ro][:cache=MODE]` parsing for the flag
//!   (pure, tested), and opening a share ([`OpenShare`]).
//! - [`root`]: the share's root directory, opened once without following symlinks and held.
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
//! Written up in [`root`], [`confined`], [`budget`] and [`server::prepare_server_thread`]; in
//! short: each share root is opened once by descriptor and never resolved by path again, the
//! passthrough's `O_PATH` + `openat(O_NOFOLLOW)` resolution confines names to the share,
//! `.`/`..` lookups and file-handle (`open_by_handle_at`) inodes are off, writes are refused on
//! read-only shares before they reach the host, device nodes and set-id bits are never created
//! (checked in the layer and, per serving thread, by dropping `CAP_MKNOD`/`CAP_FSETID`), and each
//! share has its own server, inode map and descriptor budget, drawn from one fixed pool per pod.

pub mod budget;
pub mod confined;
pub mod host_mount;
pub mod root;
pub mod server;
pub mod share;

pub use budget::{FdBudget, FdPool, FD_PER_POD, FD_PER_SHARE};
pub use confined::ConfinedFs;
pub use root::ShareRoot;
pub use server::{
    prepare_server_thread, share_budget_source, share_budgets, FsServer, ServerError, ShareServer,
};
pub use share::{CacheMode, OpenShare, ShareError, ShareSpec};

#[cfg(test)]
mod tests;
