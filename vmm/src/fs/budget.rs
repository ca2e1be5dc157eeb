//! File-descriptor budget of one share.
//!
//! fuse-backend-rs's passthrough keeps one `O_PATH` descriptor per inode the guest holds a
//! lookup reference on (until the guest sends FORGET) and one descriptor per open file or
//! directory handle (until RELEASE). A guest that looks up a million files would otherwise exhaust
//! the VMM process's descriptor table and break its other duties (vsock, console, other shares).
//!
//! The passthrough does not expose its counts, so this mirrors the kernel's own bookkeeping: the
//! number of lookups outstanding per node id (each entry reply adds one, FORGET subtracts its
//! count) and the number of open handles. The number of distinct nodes plus handles is exactly the
//! number of descriptors the share holds (give or take the root and transient opens), and a reply
//! that would exceed the budget is undone and answered with `ENFILE`.
//!
//! # Limits (security review F5)
//! Two fixed bounds, whatever `RLIMIT_NOFILE` allows: [`FD_PER_SHARE`] for each share and
//! [`FD_PER_POD`] for all the shares of one VMM together ([`FdPool`]), so what a guest can pin on
//! the host (descriptors, the host inodes and dentries they keep in cache, the passthrough's
//! inode map: roughly 1-2 KiB per node in all) is bounded per pod, not per host. Each node the
//! guest holds is one it has in its own inode cache, so the numbers are sized for a guest cache,
//! not a file tree: unpacking an image reads a handful of layer blobs, and a build writing tens of
//! thousands of files to a volume fits. Past the bound a guest gets `ENFILE` on LOOKUP, CREATE,
//! MKDIR, OPEN..., nodes and handles it already has keep working, READDIRPLUS degrades to plain
//! names, and every FORGET or RELEASE (the guest kernel evicting its cache, e.g. under memory
//! pressure or `echo 2 > /proc/sys/vm/drop_caches`) gives room back. virtiofsd's default (an
//! RLIMIT_NOFILE of 1,000,000 per daemon) is the reference this stays well under.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Descriptors one share may hold.
pub const FD_PER_SHARE: usize = 32_768;
/// Descriptors all the shares of one VMM (one pod) may hold together.
pub const FD_PER_POD: usize = 65_536;
const _: () = assert!(FD_PER_SHARE <= FD_PER_POD);
/// Descriptors kept back for the rest of the VMM (KVM, eventfds, sockets, console, logs) when a
/// low `RLIMIT_NOFILE` is what bounds the shares.
pub const FD_RESERVE: usize = 1024;
/// Smallest pool even on a tiny `RLIMIT_NOFILE`: below this a guest cannot even untar a small
/// image (the shares then fail with `ENFILE` before the VMM runs out of descriptors).
const FD_FLOOR: usize = 256;

/// The per-share and per-pod bounds for a process whose `RLIMIT_NOFILE` is `nofile`: the fixed
/// bounds above, lowered only when the process limit cannot hold them.
pub fn fd_limits(nofile: u64) -> (usize, usize) {
    let room = usize::try_from(nofile)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE);
    let per_pod = FD_PER_POD.min(room).max(FD_FLOOR);
    (FD_PER_SHARE.min(per_pod), per_pod)
}

/// Descriptors shared by every share of one VMM.
#[derive(Debug)]
pub struct FdPool {
    max: usize,
    used: AtomicUsize,
}

impl FdPool {
    /// A pool of `max` descriptors.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(FdPool {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Configured maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Descriptors currently taken from the pool.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn acquire(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.max).then_some(u + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// Descriptor accounting for one share.
#[derive(Debug)]
pub struct FdBudget {
    max: usize,
    nodes: Mutex<HashMap<u64, u64>>,
    handles: AtomicUsize,
    pool: Arc<FdPool>,
}

impl FdBudget {
    /// A budget of `max` descriptors (nodes + open handles), on its own.
    pub fn new(max: usize) -> Self {
        Self::pooled(max, FdPool::new(max))
    }

    /// A budget of `max` descriptors that also draws each one from `pool`.
    pub fn pooled(max: usize, pool: Arc<FdPool>) -> Self {
        FdBudget {
            max,
            nodes: Mutex::new(HashMap::new()),
            handles: AtomicUsize::new(0),
            pool,
        }
    }

    /// Configured maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The pod's pool this share draws from.
    pub fn pool(&self) -> &Arc<FdPool> {
        &self.pool
    }

    /// Descriptors currently accounted for.
    pub fn used(&self) -> usize {
        self.lock().len() + self.handles.load(Ordering::Acquire)
    }

    /// Whether one more descriptor fits (a cheap pre-check before creating something on disk).
    pub fn has_room(&self) -> bool {
        self.used() < self.max
    }

    /// Records one more lookup reference on `node`. Returns false, recording nothing, when
    /// `node` is new and the budget is exhausted: the caller must undo the lookup.
    pub fn admit_node(&self, node: u64) -> bool {
        let mut nodes = self.lock();
        if let Some(n) = nodes.get_mut(&node) {
            *n = n.saturating_add(1);
            return true;
        }
        if nodes.len() + self.handles.load(Ordering::Acquire) >= self.max || !self.pool.acquire() {
            return false;
        }
        nodes.insert(node, 1);
        true
    }

    /// Drops `count` lookup references on `node` (a FORGET). Unknown nodes are ignored, like
    /// the passthrough ignores them.
    pub fn forget_node(&self, node: u64, count: u64) {
        let mut nodes = self.lock();
        if let Some(n) = nodes.get_mut(&node) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                nodes.remove(&node);
                self.pool.release(1);
            }
        }
    }

    /// Reserves a descriptor for an open handle; false when the budget is exhausted.
    pub fn reserve_handle(&self) -> bool {
        let nodes = self.lock();
        let handles = self.handles.fetch_add(1, Ordering::AcqRel);
        if nodes.len() + handles >= self.max || !self.pool.acquire() {
            self.handles.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Returns a handle descriptor (after RELEASE, or when an open that reserved one failed).
    pub fn release_handle(&self) {
        // Never wrap below zero, even if a caller releases more than it reserved.
        if self
            .handles
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| h.checked_sub(1))
            .is_ok()
        {
            self.pool.release(1);
        }
    }

    /// Forgets everything (FUSE DESTROY / a new INIT).
    pub fn clear(&self) {
        let mut nodes = self.lock();
        let n = nodes.len() + self.handles.swap(0, Ordering::AcqRel);
        nodes.clear();
        self.pool.release(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_handles_share_one_budget() {
        let b = FdBudget::new(3);
        assert!(b.admit_node(10));
        assert!(
            b.admit_node(10),
            "a second lookup of a known node costs nothing"
        );
        assert!(b.reserve_handle());
        assert!(b.admit_node(11));
        assert_eq!(b.used(), 3);
        assert!(!b.admit_node(12), "a new node over budget is refused");
        assert!(!b.reserve_handle(), "a handle over budget is refused");
        assert!(b.admit_node(11), "known nodes are still admitted when full");

        b.forget_node(10, 1);
        assert_eq!(b.used(), 3, "node 10 still has one reference");
        b.forget_node(10, 1);
        assert_eq!(b.used(), 2);
        assert!(b.admit_node(12));

        b.release_handle();
        b.release_handle(); // extra release is ignored
        assert_eq!(b.used(), 2);
        b.forget_node(99, 5); // unknown node is ignored
        b.forget_node(11, u64::MAX);
        assert_eq!(b.used(), 1);
        b.clear();
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn shares_of_one_pod_draw_from_one_pool() {
        let pool = FdPool::new(3);
        let (a, b) = (
            FdBudget::pooled(2, pool.clone()),
            FdBudget::pooled(2, pool.clone()),
        );
        assert!(a.admit_node(1) && a.reserve_handle());
        assert!(!a.admit_node(2), "share cap");
        assert!(b.admit_node(1));
        assert_eq!(pool.used(), 3);
        assert!(!b.admit_node(2), "pod cap, although share b has room");
        assert!(!b.reserve_handle(), "pod cap for handles too");
        a.release_handle();
        assert!(b.reserve_handle(), "a's release made room for b");
        a.forget_node(1, 1);
        assert_eq!(pool.used(), 2);
        b.clear();
        assert_eq!(pool.used(), 0);
        a.release_handle(); // nothing reserved: the pool does not go below zero
        assert_eq!(pool.used(), 0);
    }

    /// F5: at df579e2 a share's budget was (RLIMIT_NOFILE - 1024) / shares, up to 1 Mi per
    /// share, so one pod on a host with the usual hard limit of 1,048,576 could pin about a
    /// million host descriptors (`fd_budget_per_share(1 << 20, 1)` was 1,047,552). The bounds
    /// are now fixed; a low limit only lowers them.
    #[test]
    fn limits_are_fixed_whatever_the_process_limit() {
        for nofile in [1 << 20, 1 << 30, u64::MAX] {
            assert_eq!(fd_limits(nofile), (FD_PER_SHARE, FD_PER_POD), "{nofile}");
        }
        assert_eq!(fd_limits(4096), (3072, 3072));
        assert_eq!(fd_limits(1024), (FD_FLOOR, FD_FLOOR));
    }
}
