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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Descriptor accounting for one share.
#[derive(Debug)]
pub struct FdBudget {
    max: usize,
    nodes: Mutex<HashMap<u64, u64>>,
    handles: AtomicUsize,
}

impl FdBudget {
    /// A budget of `max` descriptors (nodes + open handles).
    pub fn new(max: usize) -> Self {
        FdBudget {
            max,
            nodes: Mutex::new(HashMap::new()),
            handles: AtomicUsize::new(0),
        }
    }

    /// Configured maximum.
    pub fn max(&self) -> usize {
        self.max
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
        if nodes.len() + self.handles.load(Ordering::Acquire) >= self.max {
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
            }
        }
    }

    /// Reserves a descriptor for an open handle; false when the budget is exhausted.
    pub fn reserve_handle(&self) -> bool {
        let nodes = self.lock();
        let handles = self.handles.fetch_add(1, Ordering::AcqRel);
        if nodes.len() + handles >= self.max {
            self.handles.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Returns a handle descriptor (after RELEASE, or when an open that reserved one failed).
    pub fn release_handle(&self) {
        // Never wrap below zero, even if a caller releases more than it reserved.
        let _ = self
            .handles
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| h.checked_sub(1));
    }

    /// Forgets everything (FUSE DESTROY / a new INIT).
    pub fn clear(&self) {
        self.lock().clear();
        self.handles.store(0, Ordering::Release);
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
}
